"""The compiled sampler (engine/csrc/sample.h, BatchSampler.draw on CPU) against the torch chain
(BatchSampler.process / sample, itself pinned to closed forms and transformers in test_sampling.py)
and against closed-form distributions."""

from __future__ import annotations

import math
import random

import pytest
import torch
from tiny_models import STORIES

from tiankong.engine import native
from tiankong.engine.events import TokenEvent
from tiankong.engine.sampling import BatchSampler, SamplingParams

CPU = torch.device("cpu")

# One row per rule and their combinations (temperature, top_k, top_p, min_p).
SETTINGS = [
    dict(temperature=0.0),
    dict(temperature=1.0, top_p=1.0),
    dict(temperature=0.7, top_p=0.9),
    dict(temperature=0.3, top_p=0.5),
    dict(temperature=1.0, top_k=40),
    dict(temperature=1.3, top_k=3, top_p=0.8),
    dict(temperature=0.8, top_k=1),
    dict(temperature=0.3, min_p=0.1),
    dict(temperature=0.9, top_k=100, top_p=0.95, min_p=0.05),
    dict(temperature=0.7, top_p=0.9, repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.2),
]


@pytest.fixture()
def lib():
    lib = native.library()
    if lib is None:
        pytest.skip(f"no compiled sampler here: {native.reason()}")
    return lib


def make(settings: list[dict], vocab: int, seed: int = 0) -> BatchSampler:
    params = [SamplingParams(**s, seed=seed + r) for r, s in enumerate(settings)]
    prompts = [[1, 2, 3, 2] for _ in settings]
    return BatchSampler(params, vocab, CPU, prompts)


def reference(monkeypatch, sampler: BatchSampler, logits: torch.Tensor, n: int):
    """The torch chain's draw for the same sampler state (the compiled one switched off)."""
    with monkeypatch.context() as m:
        m.setattr(native, "library", lambda: None)
        return sampler.draw(logits, n)


def kept(d) -> list[int]:
    """The ids row 0 of a draw can sample (its candidates with a nonzero sampling probability)."""
    ids, _, ps = d.top[0]
    return sorted(i for i, p in zip(ids, ps, strict=True) if p > 0)


def rows(kind: str, n_rows: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """(n_rows, vocab) logits: flat (a random model's), peaked (a trained one's), integer ties,
    or with -inf entries (a masked vocabulary)."""
    x = torch.randn(n_rows, vocab, generator=gen)
    if kind == "flat":
        return x * 0.5
    if kind == "peaked":
        return x * 4.0
    if kind == "ties":
        return (x * 2).round()
    x[:, ::3] = -math.inf
    return x * 2


@pytest.mark.parametrize("kind", ["flat", "peaked", "ties", "masked"])
def test_whole_distribution_equals_the_torch_chain(lib, monkeypatch, kind):
    """With every token as a candidate, the compiled draw reports each token's sampling probability:
    the kept set must be the torch chain's exactly and the probabilities equal to float32 rounding;
    the model's log-probs and entropy likewise."""
    vocab = 700
    gen = torch.Generator().manual_seed(1)
    logits = rows(kind, len(SETTINGS), vocab, gen)
    ours = make(SETTINGS, vocab).draw(logits, vocab)
    ref = reference(monkeypatch, make(SETTINGS, vocab), logits, vocab)
    assert ours.top is not None and ref.top is not None
    for r in range(len(SETTINGS)):
        ids, lps, ps = (torch.tensor(t) for t in ours.top[r])
        order = ids.argsort()
        ref_ids, _, ref_ps = (torch.tensor(t) for t in ref.top[r])
        ref_ps = ref_ps[ref_ids.argsort()]
        assert torch.equal(ids[order], torch.arange(vocab))
        assert torch.equal(ps[order] > 0, ref_ps > 0), f"row {r} ({SETTINGS[r]}) keeps other tokens"
        torch.testing.assert_close(ps[order], ref_ps, rtol=2e-5, atol=1e-9)
        torch.testing.assert_close(lps[order], torch.log_softmax(logits[r], -1), rtol=0, atol=2e-5)
        assert ours.tokens[r] == ref.tokens[r], f"row {r} ({SETTINGS[r]}) drew another token"
    torch.testing.assert_close(torch.tensor(ours.stats), torch.tensor(ref.stats), rtol=2e-5, atol=2e-5)


def test_top_p_stops_at_the_token_that_crosses_p(lib):
    """[0.5, 0.3, 0.2] with p = 0.8: 0.5 + 0.3 sums to a hair under 0.8 in float32 and must stop
    there (transformers and llama.cpp keep two tokens); ties with the last kept token stay."""
    d = make([dict(temperature=1.0, top_p=0.8)], 3).draw(torch.tensor([[0.5, 0.3, 0.2]]).log(), 3)
    assert kept(d) == [0, 1]
    d = make([dict(temperature=1.0, top_p=0.5)], 4).draw(torch.tensor([[0.4, 0.2, 0.2, 0.2]]).log(), 4)
    assert kept(d) == [0, 1, 2, 3]


def test_top_k_keeps_ties_with_the_kth(lib):
    x = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    d = make([dict(temperature=1.0, top_k=2)], 5).draw(x, 5)
    assert kept(d) == [0, 2, 3]


def test_greedy_takes_the_first_largest_and_candidates_come_largest_first(lib):
    x = torch.tensor([[1.0, 5.0, 2.0, 5.0, 4.0]])
    d = make([dict(temperature=0.0)], 5).draw(x, 3)
    assert d.tokens.tolist() == [1] and d.stats[0][:1] == [1] and d.stats[0][2] == 1.0
    assert d.top is not None and d.top[0][0] == [1, 3, 4] and d.top[0][2] == [1.0, 0.0, 0.0]


def test_frequencies_match_the_closed_form(lib):
    """20,000 draws of one row from p = softmax(x / T) cut by top-k = 4: every kept token's count
    within 5 standard deviations of N p, and the cut ones never drawn."""
    x = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0, -1.0]])
    s = make([dict(temperature=0.8, top_k=4)], 6, seed=7)
    counts = torch.zeros(6)
    n = 20000
    for _ in range(n):
        counts[s.draw(x).tokens[0]] += 1
    p = torch.softmax(x[0, :4] / 0.8, -1)
    sd = (n * p * (1 - p)).sqrt()
    assert ((counts[:4] - n * p).abs() < 5 * sd).all(), (counts, n * p)
    assert counts[4:].sum() == 0


def test_a_large_flat_vocabulary_draws_what_the_torch_chain_draws(lib, monkeypatch):
    """A random model's 49k-token rows put top-p's cut thousands of tokens down (where the compiled
    cut bisects instead of sorting). Same seeds, same tokens, but for draws whose uniform falls
    within rounding of a boundary between two tokens (float32 exponentials differ in the last bit):
    at most 1 % of them, and then the two tokens are neighbours."""
    vocab, n_steps = 49152, 60
    settings = [
        dict(temperature=0.7, top_p=0.9),
        dict(temperature=1.0, top_k=40),
        dict(temperature=0.3, min_p=0.1),
        dict(temperature=0.7, top_k=40, top_p=0.9),  # balanced, the default
        dict(temperature=0.8, top_k=256, top_p=0.95),  # the largest k drawn from its kept set
    ]
    ours, ref = make(settings, vocab), make(settings, vocab)
    gen = torch.Generator().manual_seed(3)
    differ = 0
    for _ in range(n_steps):
        x = torch.randn(len(settings), vocab, generator=gen) * 0.5
        a, b = ours.draw(x, 5), reference(monkeypatch, ref, x, 5)
        assert a.top is not None and b.top is not None and [t[0] for t in a.top] == [t[0] for t in b.top]
        for r in range(len(settings)):
            if a.tokens[r] != b.tokens[r]:
                differ += 1
                lo, hi = sorted((int(a.tokens[r]), int(b.tokens[r])))
                probs = ref.process(x)[r]  # no penalties here: process() reads no state
                assert (probs[lo + 1 : hi] == 0).all(), "the draws differ by more than a boundary"
    assert differ <= n_steps * len(settings) // 100


@pytest.mark.parametrize(
    "vocab, scale, ties",
    [(49152, 3.0, False), (3000, 2.0, True), (49152, 0.5, True)],
    ids=["thinned", "ties", "ties-overflow"],
)
def test_top_k_rows_keep_the_torch_chains_set(lib, monkeypatch, vocab, scale, ties):
    """Top-k rows (k <= 256) sample from their kept set, found in one pass that thins its room to
    the running k-th largest. Distinct values (thinned many times), integer logits with hundreds
    of ties at the k-th value, and so many ties (thousands at 0.5-scaled integers) that the room
    overflows and the row goes through the whole vocabulary instead: each time the kept set and
    its probabilities must be the torch chain's."""
    settings = [
        dict(temperature=0.7, top_k=40, top_p=0.9),
        dict(temperature=1.0, top_k=256),
        dict(temperature=0.5, top_k=7),
    ]
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(len(settings), vocab, generator=gen) * scale
    x = x.round() if ties else x
    ours, ref = make(settings, vocab).draw(x, vocab), reference(monkeypatch, make(settings, vocab), x, vocab)
    assert ours.top is not None and ref.top is not None
    for r in range(len(settings)):
        ids, _, ps = (torch.tensor(t) for t in ours.top[r])
        ref_ids, _, ref_ps = (torch.tensor(t) for t in ref.top[r])
        ps, ref_ps = ps[ids.argsort()], ref_ps[ref_ids.argsort()]
        assert torch.equal(ps > 0, ref_ps > 0), f"row {r} ({settings[r]}) keeps other tokens"
        torch.testing.assert_close(ps, ref_ps, rtol=2e-5, atol=1e-9)
    assert ours.tokens.tolist() == ref.tokens.tolist()


def test_top_k_skips_blocks_by_the_unscaled_logit_yet_keeps_each_tie(lib, monkeypatch):
    """The one pass skips a block of 16 whose logits z all lie under the running k-th largest times
    the temperature, before dividing. z = 0.7933669 divided by 0.7 rounds to a quotient y whose
    product y * 0.7 rounds above z again (so a floor of exactly y T would skip it): its second copy,
    after 39 larger values and a copy of itself have set the k-th largest to y, is a tie with the
    cut, and the torch chain keeps it (41 tokens for k = 40)."""
    z, temperature, vocab = 0.7933669, 0.7, 4096
    y = torch.tensor(z) / temperature
    assert torch.tensor(z) < (y.double() * temperature).float(), "no longer a value a floor of y T would skip"
    x = torch.full((1, vocab), -3.0)
    x[0, :39], x[0, 39], x[0, 3000] = 5.0, z, z  # the room fills, thins to the cut y, then its tie
    settings = [dict(temperature=temperature, top_k=40)]
    ours, ref = make(settings, vocab).draw(x, vocab), reference(monkeypatch, make(settings, vocab), x, vocab)
    assert ours.top is not None and ref.top is not None
    assert kept(ours) == kept(ref) == [*range(40), 3000]


def test_a_row_of_nan_gets_nan_stats_and_minus_inf_entries_do_not(lib):
    x = torch.randn(2, 50)
    x[0, 7] = math.nan
    x[1, ::2] = -math.inf
    d = make([dict(temperature=0.7, top_p=0.9)] * 2, 50).draw(x, 2)
    assert all(math.isnan(v) for v in d.stats[0][1:])
    assert all(math.isfinite(v) for v in d.stats[1]) and d.tokens[1] % 2 == 1


def test_generate_streams_the_same_with_and_without_the_compiled_sampler(lib, monkeypatch):
    """The bundled model through Engine.generate, four presets in one batch: the same tokens,
    log-probs, entropies and candidates whichever sampler runs."""
    if not STORIES.is_dir():
        pytest.skip("../shared/models/stories260K is absent")
    from tiankong.engine.engine import Engine

    eng = Engine.load(STORIES)
    prompt = eng.encode("Once upon a time", raw=True)
    # The last two rows penalise what they drew: each draw must record its token for the next.
    settings = [*SETTINGS[:4], SETTINGS[-1], dict(temperature=0.0, repetition_penalty=1.5, frequency_penalty=0.5)]
    params = [SamplingParams(**s, seed=r, max_new_tokens=24) for r, s in enumerate(settings)]

    def run() -> list[TokenEvent]:
        rows = len(params)
        return [ev for ev in eng.generate([prompt] * rows, params, top_logprobs=5) if isinstance(ev, TokenEvent)]

    ours = run()
    with monkeypatch.context() as m:
        m.setattr(native, "library", lambda: None)
        ref = run()
    assert [(e.row, e.id) for e in ours] == [(e.row, e.id) for e in ref]
    for a, b in zip(ours, ref, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=2e-5) and a.entropy == pytest.approx(b.entropy, abs=2e-5)
        assert [c.id for c in a.candidates] == [c.id for c in b.candidates]


def test_every_token_as_a_candidate_comes_sorted_by_the_model(lib):
    """top_logprobs may be the whole vocabulary (the API allows it): the candidates are every token,
    by the model's probability, ties by lower id (one sort: a selection sort was V^2 steps)."""
    vocab = 49152
    x = (torch.randn(1, vocab, generator=torch.Generator().manual_seed(5)) * 3).round()  # many ties
    d = make([dict(temperature=0.7, top_p=0.9)], vocab).draw(x, vocab)
    assert d.top is not None
    ids, lps, _ = d.top[0]
    order = sorted(range(vocab), key=lambda i: (-x[0, i].item(), i))
    assert ids == order
    assert lps == sorted(lps, reverse=True)


def test_penalties_follow_the_state_through_updates_selects_and_joins(lib, monkeypatch):
    """The compiled sampler applies the penalties itself, from the sampler's seen/counts state: at
    every step, through repeated tokens, an update with an inactive row, a select (rows finishing)
    and a concat (rows joining), each row's whole sampling distribution must be the torch chain's
    (apply_penalties, pinned by hand in test_sampling.py), and the penalties must move it."""
    vocab = 50
    pens = [
        dict(temperature=0.7, repetition_penalty=1.3),
        dict(temperature=1.0, presence_penalty=0.5, frequency_penalty=0.2),
        dict(temperature=0.7, top_k=20, repetition_penalty=0.8, presence_penalty=-0.3, frequency_penalty=0.1),
        dict(temperature=0.7),
    ]
    s = make(pens, vocab)
    gen = torch.Generator().manual_seed(3)

    def check(s: BatchSampler) -> None:
        x = torch.randn(len(s), vocab, generator=gen) * 3
        # Drawing records the token: each side draws from its own copy, and the test updates s.
        every = range(len(s))
        ours, ref = s.select(every).draw(x, vocab), reference(monkeypatch, s.select(every), x, vocab)
        assert ours.top is not None and ref.top is not None
        for r in range(len(s)):
            ps = torch.tensor(ours.top[r][2])[torch.tensor(ours.top[r][0]).argsort()]
            ref_ps = torch.tensor(ref.top[r][2])[torch.tensor(ref.top[r][0]).argsort()]
            assert torch.equal(ps > 0, ref_ps > 0), f"row {r} keeps other tokens"
            torch.testing.assert_close(ps, ref_ps, rtol=2e-5, atol=1e-9)
        # Row 0 samples from penalised logits (the prompt's tokens are seen from the start).
        ps0 = torch.tensor(ours.top[0][2])[torch.tensor(ours.top[0][0]).argsort()]
        assert not torch.allclose(ps0, torch.softmax(x[0] / s.params[0].temperature, -1), rtol=1e-3)

    check(s)
    for step in range(12):
        tokens = torch.randint(0, 6, (len(s),), generator=gen)  # few ids: repeats within a row
        active = None if step != 5 else torch.tensor([True, False, True, True])
        s.update(tokens, active)
        check(s)
    s = s.select([2, 0])
    check(s)
    s.update(torch.tensor([7, 7]))
    check(s)
    s = BatchSampler.concat([s, make(pens[1:2], vocab, seed=9)])
    check(s)
    for _ in range(3):
        s.update(torch.randint(0, 8, (len(s),), generator=gen))
        check(s)


def test_random_rows_and_settings_keep_the_torch_chains_distribution(lib, monkeypatch):
    """400 random cases: vocabularies of 1 to 1500 (around the vector width and the top-k room),
    1-4 rows of random settings (temperature, top-k, top-p, min-p, the three penalties) over
    flat, peaked, tied, mostly-zero (+0 and -0), partly -inf and NaN-holding logits, three steps
    with the penalty state growing. Every row's whole sampling distribution must be the torch
    chain's: the same kept set, probabilities to float32 rounding; rows the chain finds
    non-finite, non-finite here too. (This found the chain dropping -0.0 ties.)"""
    rng = random.Random(0)
    for case in range(400):
        V = rng.choice([1, 2, 3, 5, 15, 16, 17, 31, 33, 100, 257, 300, 1000, 1500])
        B = rng.randint(1, 4)
        params = [
            SamplingParams(
                temperature=rng.choice([0.0, 0.3, 0.7, 1.0, 1.5]),
                top_k=rng.choice([0, 0, 1, 2, 5, 40, 256, 300]),
                top_p=rng.choice([1.0, 1.0, 0.5, 0.9, 0.95]),
                min_p=rng.choice([0.0, 0.0, 0.05, 0.2]),
                repetition_penalty=rng.choice([1.0, 1.0, 1.3, 0.8]),
                presence_penalty=rng.choice([0.0, 0.0, 0.5, -0.5]),
                frequency_penalty=rng.choice([0.0, 0.0, 0.3]),
                seed=rng.randint(0, 1000),
            )
            for _ in range(B)
        ]
        prompts = [[rng.randrange(V) for _ in range(rng.randint(0, 8))] for _ in range(B)]
        kind = rng.choice(["flat", "peaked", "ties", "zeros", "masked", "nan"])
        gen = torch.Generator().manual_seed(case)
        s = BatchSampler(params, V, CPU, prompts)
        for _ in range(3):
            x = torch.randn(B, V, generator=gen) * (0.5 if kind == "flat" else 4.0)
            x = x.round() if kind == "ties" else (x / 4).round() if kind == "zeros" else x  # zeros: +0 and -0
            if kind == "masked":
                x[torch.rand(B, V, generator=gen) < 0.5] = -math.inf
            if kind == "nan":
                x[0, rng.randrange(V)] = math.nan
            every = range(B)
            ours, ref = s.select(every).draw(x, V), reference(monkeypatch, s.select(every), x, V)
            assert ours.top is not None and ref.top is not None
            for r in range(B):
                what = f"case {case}, row {r}: {params[r]}, {kind} logits, vocabulary {V}"
                if not math.isfinite(ref.stats[r][1]):
                    assert not math.isfinite(ours.stats[r][1]), what
                    continue
                ids, _, ps = (torch.tensor(t) for t in ours.top[r])
                ref_ids, _, ref_ps = (torch.tensor(t) for t in ref.top[r])
                ps, ref_ps = ps[ids.argsort()], ref_ps[ref_ids.argsort()]
                assert torch.equal(ps > 0, ref_ps > 0), what
                torch.testing.assert_close(ps, ref_ps, rtol=2e-5, atol=1e-7, msg=what)
            s.update(torch.tensor([rng.randrange(V) for _ in range(B)]))
