"""Sampling: each stage against closed forms, the chain against transformers, and the sampler's
batch, seed and frequency guarantees."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tiankong.engine.errors import InputError
from tiankong.engine.sampling import SAMPLER_CHAIN, BatchSampler, SamplingParams
from tiankong.engine.sampling_stages import (
    _inverse_cdf,
    apply_penalties,
    apply_temperature,
    min_p_filter,
    top_k_filter,
    top_p_filter,
)

CPU = torch.device("cpu")
INF = float("inf")


def kept(logits: torch.Tensor) -> list[list[int]]:
    """Indices of the tokens a filter left finite, per row."""
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in logits]


def log_probs(*probs: float) -> torch.Tensor:
    """(1, V) logits whose softmax is exactly the given distribution (up to rounding)."""
    return torch.tensor([probs], dtype=torch.float64).log().float()


def sampler(*params: SamplingParams, vocab: int, prompts: list[list[int]] | None = None):
    prompts = prompts if prompts is not None else [[] for _ in params]
    return BatchSampler(list(params), vocab, CPU, prompts)


# --- SamplingParams -----------------------------------------------------------------------------


def test_defaults_and_chain_order():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p) == (0.7, 0, 1.0, 0.0)
    assert (p.repetition_penalty, p.presence_penalty, p.frequency_penalty) == (1.0, 0.0, 0.0)
    assert (p.seed, p.max_new_tokens, p.stop) == (None, 256, ())
    assert SAMPLER_CHAIN == ("penalties", "temperature", "top_k", "top_p", "min_p", "sample")
    assert not p.greedy and SamplingParams(temperature=0).greedy


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", 3.5, "temperature must be in [0, 2], got 3.5"),
        ("temperature", -0.1, "temperature must be in [0, 2], got -0.1"),
        ("temperature", float("nan"), "temperature must be in [0, 2], got nan"),
        ("top_k", -1, "top_k must be in [0, 1000000], got -1"),
        ("top_k", 2.5, "top_k must be an integer in [0, 1000000], got 2.5"),
        ("top_p", 1.5, "top_p must be in [0, 1], got 1.5"),
        ("min_p", -0.5, "min_p must be in [0, 1], got -0.5"),
        ("repetition_penalty", 0.0, "repetition_penalty must be in [0.1, 2], got 0.0"),
        ("presence_penalty", 2.5, "presence_penalty must be in [-2, 2], got 2.5"),
        ("frequency_penalty", -3, "frequency_penalty must be in [-2, 2], got -3.0"),
        ("max_new_tokens", 0, "max_new_tokens must be in [1, 1000000], got 0"),
        ("seed", -1, "seed must be in [0, 18446744073709551615], got -1"),
        ("temperature", "hot", "temperature must be a number in [0, 2], got 'hot'"),
        ("top_k", True, "top_k must be an integer in [0, 1000000], got True"),
    ],
)
def test_validation_names_parameter_range_and_value(field, value, message):
    with pytest.raises(InputError) as err:
        SamplingParams(**{field: value})
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)
    with pytest.raises(InputError, match=field):
        SamplingParams().replace(**{field: value})


def test_replace_validates_and_rejects_unknown_names():
    p = SamplingParams().replace(temperature=1, top_k=40.0, stop=["\n\n"])
    assert p.temperature == 1.0 and isinstance(p.temperature, float)
    assert p.top_k == 40 and isinstance(p.top_k, int)
    assert p.stop == ("\n\n",)
    assert p.validate() is p
    with pytest.raises(InputError, match=r"unknown sampling parameter 'temprature'.*temperature"):
        p.replace(temprature=0.5)
    with pytest.raises(InputError, match="stop must be a list of non-empty strings"):
        p.replace(stop=["ok", ""])


def test_numpy_numbers_are_taken_as_plain_ones():
    """A sweep over np.linspace / np.arange hands in np.float64, np.float32 and np.int64: numbers
    (numbers.Real, numbers.Integral), not floats and ints, and stored as plain ones (to_dict is JSON)."""
    import numpy as np

    p = SamplingParams(
        temperature=np.float32(0.5), top_p=np.float64(0.9), top_k=np.int64(40), seed=np.uint64(7), max_new_tokens=8.0
    )
    assert (p.temperature, p.top_p, p.top_k, p.seed, p.max_new_tokens) == (0.5, 0.9, 40, 7, 8)
    assert [type(v) for v in (p.temperature, p.top_p, p.top_k, p.seed)] == [float, float, int, int]
    json.dumps(p.to_dict())
    with pytest.raises(InputError, match="temperature must be a number"):
        SamplingParams(temperature=np.bool_(True))
    with pytest.raises(InputError, match="top_k must be an integer"):
        SamplingParams(top_k=np.float32(2.5))


def test_ranges_cover_every_numeric_field_and_to_dict_is_json():
    assert set(SamplingParams.RANGES) == {
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repetition_penalty",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "max_new_tokens",
    }
    for lo, hi, description in SamplingParams.RANGES.values():
        assert lo < hi and description
    p = SamplingParams(seed=7, stop=("</s>",))
    d = json.loads(json.dumps(p.to_dict()))
    assert d["stop"] == ["</s>"] and d["seed"] == 7
    assert SamplingParams(**d) == p


# --- pure stages --------------------------------------------------------------------------------


def test_top_k_keeps_k_largest_with_ties():
    logits = torch.tensor([[1.0, 5.0, 3.0, 5.0, 2.0]])
    assert kept(top_k_filter(logits, 1)) == [[1, 3]]  # both tied 5s survive
    assert kept(top_k_filter(logits, 2)) == [[1, 3]]
    assert kept(top_k_filter(logits, 3)) == [[1, 2, 3]]
    assert torch.equal(top_k_filter(logits, 0), logits)  # off
    assert torch.equal(top_k_filter(logits, 99), logits)  # larger than the vocabulary
    rows = logits.repeat(3, 1)
    assert kept(top_k_filter(rows, torch.tensor([0, 1, 4]))) == [
        [0, 1, 2, 3, 4],
        [1, 3],
        [1, 2, 3, 4],
    ]


def test_top_p_keeps_the_token_that_crosses_p():
    # Permuted so the kept set is not just a prefix of the input order.
    probs = [0.05, 0.5, 0.15, 0.3]  # sorted: 0.5 (1), 0.3 (3), 0.15 (2), 0.05 (0)
    logits = log_probs(*probs)
    assert kept(top_p_filter(logits, 0.45)) == [[1]]  # 0.5 already crosses 0.45
    assert kept(top_p_filter(logits, 0.7)) == [[1, 3]]  # 0.5 + 0.3 crosses 0.7
    assert kept(top_p_filter(logits, 0.81)) == [[1, 2, 3]]  # 0.95 crosses 0.81
    assert kept(top_p_filter(logits, 0.96)) == [[0, 1, 2, 3]]
    assert kept(top_p_filter(logits, 0.0)) == [[1]]  # at least one token
    tiny = torch.tensor([[10.0, -200.0, 0.0]])  # softmax of -200 underflows to 0
    assert torch.equal(top_p_filter(tiny, 1.0), tiny)  # p = 1 is off
    rows = logits.repeat(2, 1)
    assert kept(top_p_filter(rows, torch.tensor([0.7, 1.0]))) == [[1, 3], [0, 1, 2, 3]]


def test_top_p_on_a_long_flat_vocabulary_matches_a_full_sort():
    # Flat logits make the partial head used on CPU too short, so the filter must grow it.
    torch.manual_seed(0)
    logits = torch.randn(3, 20_000) * 0.5
    p = torch.tensor([0.9, 0.5, 0.999])
    out = top_p_filter(logits, p)
    probs = logits.double().softmax(-1)
    for row in range(3):
        sorted_probs, order = probs[row].sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass above each token
        expected = sorted(order[before < p[row].item()].tolist())
        assert kept(out[row : row + 1]) == [expected]


def test_minus_zero_ties_plus_zero():
    """-0.0 == +0.0: a -0 logit at a +0 threshold is a tie and stays (the CPU filter's sign trick
    once dropped it; the GPU path and the compiled sampler kept it)."""
    logits = torch.tensor([[-5.0, 0.0, -0.0, -2.0]])
    assert kept(top_k_filter(logits, 1)) == [[1, 2]]
    assert kept(top_p_filter(torch.tensor([[-0.0, 0.0, -9.0]]), 0.3)) == [[0, 1]]
    assert kept(min_p_filter(torch.tensor([[0.0, -0.0, -9.0]]), 0.5)) == [[0, 1]]


def test_min_p_keeps_tokens_above_fraction_of_top():
    logits = log_probs(0.5, 0.3, 0.15, 0.05)
    assert kept(min_p_filter(logits, 0.2)) == [[0, 1, 2]]  # threshold 0.1
    assert kept(min_p_filter(logits, 0.5)) == [[0, 1]]  # threshold 0.25
    assert kept(min_p_filter(logits, 1.0)) == [[0]]
    assert torch.equal(min_p_filter(logits, 0.0), logits)


def test_temperature_is_softmax_of_scaled_logits():
    logits = torch.tensor([[2.0, 1.0, -1.0, 0.5], [2.0, 1.0, -1.0, 0.5]])
    t = torch.tensor([[0.5], [0.0]])
    out = apply_temperature(logits, t)
    assert torch.equal(out[1], logits[1])  # T = 0 is left for the greedy stage
    s = sampler(SamplingParams(temperature=0.5, seed=0), vocab=4)
    probs = s.process(logits[:1])
    z = [math.exp(v / 0.5) for v in logits[0].tolist()]
    expected = torch.tensor([[v / sum(z) for v in z]])
    assert probs.dtype == torch.float32
    assert torch.allclose(probs, expected, atol=1e-7)


def test_penalties_by_hand():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5, 3.0]])
    seen = torch.tensor([[True, True, False, False, False]])
    counts = torch.tensor([[0.0, 0.0, 3.0, 1.0, 0.0]])
    out = apply_penalties(logits, seen, counts, repetition=2.0, presence=0.5, frequency=0.25)
    # 2 / 2, -2 * 2, 1 - 3*0.25 - 0.5, 0.5 - 0.25 - 0.5, untouched
    assert out.tolist() == [[1.0, -4.0, -0.25, -0.25, 3.0]]
    assert torch.equal(apply_penalties(logits, seen, counts, 1.0, 0.0, 0.0), logits)


def test_sampler_tracks_prompt_and_generated_tokens():
    params = SamplingParams(
        temperature=1.0,
        repetition_penalty=2.0,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        seed=0,
    )
    s = sampler(params, params, vocab=5, prompts=[[0, 0, 7], [4]])  # 7 is outside the vocab
    s.update(torch.tensor([2, 1]))
    s.update(torch.tensor([2, 3]), active=torch.tensor([True, False]))  # row 1 is done
    assert s.seen.tolist() == [[True, False, True, False, False], [False, True, False, False, True]]
    assert s.counts.tolist() == [[0, 0, 2, 0, 0], [0, 1, 0, 0, 0]]
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5, 3.0]] * 2)
    probs = s.process(logits)
    # Row 0: token 0 seen -> 1.0; token 2 seen, counted twice -> 1/2 - 0.5 - 0.5 = -0.5.
    expected = torch.tensor([1.0, -2.0, -0.5, 0.5, 3.0]).softmax(-1)
    assert torch.allclose(probs[0], expected, atol=1e-7)


def test_greedy_is_one_hot_on_penalised_argmax_and_consumes_no_randomness():
    logits = torch.tensor([[3.0, 2.9, 0.0, -1.0]])
    s = sampler(SamplingParams(temperature=0, repetition_penalty=1.5, seed=0), vocab=4, prompts=[[0]])
    probs = s.process(logits)
    assert probs.tolist() == [[0.0, 1.0, 0.0, 0.0]]  # 3 / 1.5 = 2 < 2.9
    state = s.uniforms[0].generator.get_state()
    assert s.sample(probs).tolist() == [1]
    assert torch.equal(s.uniforms[0].generator.get_state(), state)


def test_process_leaves_input_alone_and_zeroes_filtered_tokens():
    torch.manual_seed(1)
    logits = torch.randn(2, 300, dtype=torch.bfloat16)
    before = logits.clone()
    s = sampler(SamplingParams(top_k=20, seed=1), SamplingParams(top_p=0.5, seed=2), vocab=300)
    probs = s.process(logits)
    assert torch.equal(logits, before)
    assert probs.dtype == torch.float32
    assert (probs[0] > 0).sum() == 20 and (probs[1] > 0).sum() < 300
    assert torch.allclose(probs.sum(-1), torch.ones(2))


def test_ties_beyond_top_k_stay_in_top_p_mass():
    # top-k 2 keeps 3 and all three 2s; top-p then sees all four (not just the first two).
    logits = torch.tensor([[3.0, 2.0, 2.0, 2.0, 0.0]])
    s = sampler(SamplingParams(temperature=1.0, top_k=2, top_p=0.99, seed=0), vocab=5)
    assert (s.process(logits) > 0).tolist() == [[True, True, True, True, False]]


# --- the chain against transformers -------------------------------------------------------------

CHAIN_SETTINGS = [
    dict(temperature=0.7),
    dict(temperature=1.3, top_k=50, top_p=0.9),
    dict(temperature=0.5, top_p=0.8, min_p=0.05, repetition_penalty=1.2),
    dict(temperature=1.0, top_k=10, min_p=0.1, repetition_penalty=1.1),
    dict(temperature=0.8, top_k=100, top_p=0.95, min_p=0.02, repetition_penalty=0.9),
    dict(temperature=1.5, top_p=0.6),
    dict(temperature=0, repetition_penalty=1.3),
]


def transformers_probs(logits, input_ids, p: SamplingParams) -> torch.Tensor:
    lp = pytest.importorskip("transformers.generation.logits_process")
    chain = lp.LogitsProcessorList()
    if p.repetition_penalty != 1:
        chain.append(lp.RepetitionPenaltyLogitsProcessor(p.repetition_penalty))
    scores = chain(input_ids, logits.clone())
    if p.greedy:
        return torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).float()
    warpers = lp.LogitsProcessorList()
    if p.temperature != 1:
        warpers.append(lp.TemperatureLogitsWarper(p.temperature))
    if p.top_k:
        warpers.append(lp.TopKLogitsWarper(p.top_k))
    if p.top_p < 1:
        warpers.append(lp.TopPLogitsWarper(p.top_p))
    if p.min_p > 0:
        warpers.append(lp.MinPLogitsWarper(p.min_p))
    return warpers(input_ids, scores).softmax(-1)


@pytest.mark.parametrize("settings", CHAIN_SETTINGS)
@pytest.mark.parametrize("vocab", [1000, 8000])
def test_chain_matches_transformers(settings, vocab):
    gen = torch.Generator().manual_seed(vocab)
    batch = 4
    logits = torch.randn(batch, vocab, generator=gen) * 2.5
    input_ids = torch.randint(0, vocab, (batch, 30), generator=gen)
    p = SamplingParams(seed=0, **settings)
    ours = sampler(*[p] * batch, vocab=vocab, prompts=input_ids.tolist()).process(logits)
    reference = transformers_probs(logits, input_ids, p)
    assert torch.equal(ours > 0, reference > 0)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_rows_in_one_batch_equal_rows_alone():
    gen = torch.Generator().manual_seed(3)
    vocab = 2000
    params = [SamplingParams(seed=i, **s) for i, s in enumerate(CHAIN_SETTINGS)]
    prompts = torch.randint(0, vocab, (len(params), 12), generator=gen).tolist()
    logits = torch.randn(len(params), vocab, generator=gen) * 2
    together = sampler(*params, vocab=vocab, prompts=prompts).process(logits)
    for row, p in enumerate(params):
        alone = sampler(p, vocab=vocab, prompts=[prompts[row]]).process(logits[row : row + 1])
        assert torch.equal(together[row : row + 1] > 0, alone > 0)
        assert torch.allclose(together[row : row + 1], alone, atol=1e-7)


# --- drawing ------------------------------------------------------------------------------------


def run(s: BatchSampler, table: torch.Tensor, steps: int, row_of: list[int]) -> list[list[int]]:
    """Generate with logits looked up from the previous token, so the path feeds back."""
    last = [0] * len(row_of)
    out: list[list[int]] = [[] for _ in row_of]
    for _ in range(steps):
        probs = s.process(table[torch.tensor(last)])
        ids = s.sample(probs)
        s.update(ids)
        for i, t in enumerate(ids.tolist()):
            out[i].append(t)
        last = ids.tolist()
    return out


def test_seeded_draws_are_reproducible_and_independent_of_the_batch():
    vocab = 64
    table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0))
    mine = SamplingParams(seed=1234, temperature=1.0, top_p=0.95, repetition_penalty=1.1)
    alone = run(sampler(mine, vocab=vocab), table, 30, [0])[0]
    assert alone == run(sampler(mine, vocab=vocab), table, 30, [0])[0]
    others = [SamplingParams(seed=s, temperature=t) for s, t in [(1, 0.9), (2, 0.0), (3, 1.5)]]
    batch = sampler(others[0], others[1], mine, others[2], vocab=vocab)
    assert run(batch, table, 30, [0, 1, 2, 3])[2] == alone
    assert run(sampler(mine.replace(seed=4321), vocab=vocab), table, 30, [0])[0] != alone


def test_select_keeps_generators_and_state():
    vocab = 50
    logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(5)).repeat(3, 1)
    params = [SamplingParams(seed=s, temperature=1.0, frequency_penalty=0.5) for s in (7, 8, 9)]
    s = sampler(*params, vocab=vocab)
    s.update(s.sample(s.process(logits)))
    ref = sampler(params[2], params[0], vocab=vocab)
    ref.update(ref.sample(ref.process(logits[:2])))
    kept_rows = s.select([2, 0])
    assert len(kept_rows) == 2 and kept_rows.params == (params[2], params[0])
    assert torch.equal(kept_rows.counts, ref.counts)
    for _ in range(5):
        a = kept_rows.sample(kept_rows.process(logits[:2]))
        b = ref.sample(ref.process(logits[:2]))
        assert a.tolist() == b.tolist()
        kept_rows.update(a)
        ref.update(b)


def test_a_rows_uniforms_are_one_torch_rand_per_draw_though_drawn_in_blocks():
    # Seeded answers stay what they were: blocks of Uniforms.BLOCK give torch.rand's numbers in order.
    from tiankong.engine.sampling import Uniforms

    u, g = Uniforms(1234), torch.Generator().manual_seed(1234)
    n = 2 * Uniforms.BLOCK + 5
    assert [u.next() for _ in range(n)] == [torch.rand((), generator=g, dtype=torch.float64).item() for _ in range(n)]


def test_sample_draws_only_the_given_rows():
    s = sampler(*[SamplingParams(seed=i, temperature=1.0) for i in range(3)], vocab=10)
    probs = s.process(torch.zeros(3, 10))
    untouched = s.uniforms[1].generator.get_state()
    ids = s.sample(probs, rows=[0, 2])
    assert ids[1] == -1 and 0 <= ids[0] < 10 and 0 <= ids[2] < 10
    assert torch.equal(s.uniforms[1].generator.get_state(), untouched)


def test_sampling_frequencies_match_the_distribution():
    # Chi-square goodness of fit, 4 degrees of freedom; 18.47 is the 0.1% critical value, and a
    # sampler off by one token or ignoring the weights scores in the thousands.
    target = [0.4, 0.3, 0.15, 0.1, 0.05, 0.0]
    logits = torch.tensor([target]).log()  # last token is -inf
    rows, steps = 200, 50
    s = sampler(*[SamplingParams(seed=i, temperature=1.0) for i in range(rows)], vocab=6)
    counts = torch.zeros(6)
    probs = s.process(logits.repeat(rows, 1))
    for _ in range(steps):
        counts += torch.bincount(s.sample(probs), minlength=6)
    n = rows * steps
    assert counts[5] == 0
    chi2 = sum((counts[i] - n * q) ** 2 / (n * q) for i, q in enumerate(target[:5]))
    assert chi2 < 18.47


def test_inverse_cdf_never_picks_a_zero_probability_token():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    top = 1 - 2.0**-53  # the largest float64 below 1
    assert _inverse_cdf(probs, torch.tensor([top, top], dtype=torch.float64)).tolist() == [1, 1]
    assert _inverse_cdf(probs, torch.tensor([0.0, 0.0], dtype=torch.float64)).tolist() == [0, 1]


def test_sampler_needs_a_seed_per_row():
    with pytest.raises(ValueError, match="seed"):
        sampler(SamplingParams(), vocab=10)


def test_drop_below_equals_masked_fill():
    # The branch-free filter must give exactly masked_fill's result: ties with the threshold kept,
    # -inf thresholds keeping everything, -inf and NaN values passing through.
    from tiankong.engine.sampling_stages import _drop_below

    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1000, generator=g)
    x[0, :10] = float("-inf")
    x[1, 5] = float("nan")
    thr = torch.tensor([[0.3], [float("-inf")], [0.0], [float("inf")], [0.0]])
    thr[4, 0] = x[4, 17]  # an exact tie
    expected = x.masked_fill(x < thr, float("-inf"))
    got = _drop_below(x, thr)
    torch.testing.assert_close(got, expected, equal_nan=True, rtol=0, atol=0)
    assert got[4, 17] == x[4, 17] and torch.isinf(got[3]).all()
