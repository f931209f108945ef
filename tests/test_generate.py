"""Generation: greedy equals transformers, the KV cache equals recomputation, batching changes nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from tiny_models import STORIES, make_model

from tiankong.engine.engine import Engine
from tiankong.engine.errors import InputError, TiankongError
from tiankong.engine.events import Finished, TokenEvent
from tiankong.engine.generate import HeldText
from tiankong.engine.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, max_new_tokens=24, seed=0)


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    out = {}
    for arch, ov in [("llama", {}), ("mistral", dict(sliding_window=8)), ("qwen2", {}), ("gpt2", {})]:
        out[arch] = Engine.load(make_model(tmp_path_factory.mktemp(arch), arch, **ov), device="cpu", dtype="float32")
    return out


def run(eng, prompts, params, **kw):
    """Collect events: per row, its TokenEvents and its Finished."""
    tokens = {i: [] for i in range(len(prompts))}
    done = {}
    for ev in eng.generate(prompts, params, **kw):
        if isinstance(ev, TokenEvent):
            assert ev.row not in done, "no token after a row finished"
            tokens[ev.row].append(ev)
        else:
            assert isinstance(ev, Finished)
            done[ev.row] = ev
    assert sorted(done) == list(range(len(prompts)))
    return tokens, done


def hf_greedy(folder, ids, n):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = hf.generate(
        torch.tensor([ids]), do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0, eos_token_id=None
    )
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gpt2"])
def test_greedy_matches_transformers(engines, arch):
    eng = engines[arch]
    ids = eng.encode("Once upon a time there was", raw=True)
    n = 24  # with the prompt, past the mistral window of 8
    ref = hf_greedy(eng.folder, ids, n)
    tokens, done = run(eng, [ids], [GREEDY.replace(max_new_tokens=n)])
    ours = [ev.id for ev in tokens[0]]
    # Our run may end early on EOS; up to there it must be the same sequence.
    assert ours == ref[: len(ours)]
    assert done[0].finish_reason == ("eos" if len(ours) < n else "length")
    assert all(ev.p_sample == 1.0 for ev in tokens[0])  # greedy: the choice is certain


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cached_decoding_equals_recomputation(engines, arch):
    eng = engines[arch]
    ids = eng.encode("The quick brown fox", raw=True)
    tokens, _ = run(eng, [ids], [GREEDY.replace(max_new_tokens=16)], top_logprobs=5)
    seq = ids + [ev.id for ev in tokens[0]]
    with torch.no_grad():  # one full forward over everything, no cache
        full = torch.log_softmax(eng.model(torch.tensor([seq]), torch.arange(len(seq))[None])[0].float(), -1)
    for k, ev in enumerate(tokens[0]):
        row = full[len(ids) - 1 + k]
        assert ev.id == int(row.argmax())
        assert ev.logprob == pytest.approx(float(row[ev.id]), abs=1e-4)
        assert [c.id for c in ev.candidates] == row.topk(5).indices.tolist()
        assert ev.entropy == pytest.approx(float(-(row.exp() * row).sum()), abs=1e-4)


def test_batched_equals_one_by_one(engines):
    eng = engines["llama"]
    prompts = [eng.encode(t, raw=True) for t in ("Once", "The quick brown fox jumps over", "def add(a, b):", "A")]
    params = [
        GREEDY.replace(max_new_tokens=12),
        SamplingParams(temperature=0.9, top_p=0.9, max_new_tokens=20, seed=7),
        SamplingParams(temperature=1.2, top_k=20, min_p=0.05, repetition_penalty=1.3, max_new_tokens=8, seed=3),
        SamplingParams(temperature=0.7, presence_penalty=0.5, frequency_penalty=0.5, max_new_tokens=16, seed=11),
    ]
    batched, bdone = run(eng, prompts, params, top_logprobs=3)
    for i, (p, sp) in enumerate(zip(prompts, params, strict=True)):
        alone, adone = run(eng, [p], [sp], top_logprobs=3)
        assert [e.id for e in batched[i]] == [e.id for e in alone[0]]
        assert bdone[i].text == adone[0].text and bdone[i].finish_reason == adone[0].finish_reason
        for a, b in zip(batched[i], alone[0], strict=True):  # the same bits (test_batch_invariance.py)
            assert (a.logprob, a.p_sample, a.candidates) == (b.logprob, b.p_sample, b.candidates)


def test_rows_with_one_prompt_share_its_prefill(engines):
    # Presets side by side: one prefill per distinct prompt (each length in a call of its own,
    # unpadded), and every row as if it ran alone.
    eng = engines["mistral"]
    a, b = eng.encode("Once upon a time there", raw=True), eng.encode("The dog", raw=True)
    prompts = [a, b, a, a]
    params = [
        GREEDY.replace(max_new_tokens=10),
        SamplingParams(temperature=0.9, max_new_tokens=10, seed=1),
        SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=10, seed=2),
        SamplingParams(temperature=1.2, top_k=5, max_new_tokens=10, seed=3),
    ]
    prefill_rows = []
    forward = eng.model.forward

    def spy(tokens, *args, **kw):
        if tokens.shape[1] > 1:
            prefill_rows.append(tokens.shape[0])
        return forward(tokens, *args, **kw)

    eng.model.forward = spy
    try:
        batched, _ = run(eng, prompts, params)
    finally:
        del eng.model.forward
    assert prefill_rows == [1, 1]
    for i, (p, sp) in enumerate(zip(prompts, params, strict=True)):
        alone, _ = run(eng, [p], [sp])
        assert [e.id for e in batched[i]] == [e.id for e in alone[0]], i
        assert [x.logprob for x in batched[i]] == [y.logprob for y in alone[0]], i


def test_seeded_sampling_is_reproducible(engines):
    eng = engines["qwen2"]
    ids = eng.encode("Emoji are fun", raw=True)
    sp = SamplingParams(temperature=1.5, max_new_tokens=20, seed=42)
    a = run(eng, [ids], [sp])[1][0]
    b = run(eng, [ids, ids], [sp, sp.replace(seed=43)])[1]
    assert a.token_ids == b[0].token_ids
    assert b[0].token_ids != b[1].token_ids  # a different seed samples differently at T=1.5


def test_events_are_consistent(engines):
    eng = engines["gpt2"]
    ids = eng.encode("Numbers:", raw=True)
    sp = SamplingParams(temperature=0.8, top_k=5, max_new_tokens=10, seed=1)
    tokens, done = run(eng, [ids], [sp], top_logprobs=8)
    for ev in tokens[0]:
        lps = [c.logprob for c in ev.candidates]
        assert lps == sorted(lps, reverse=True) and len(lps) == 8
        kept = [c for c in ev.candidates if c.p_sample > 0]
        assert len(kept) <= 5  # top-k 5 filtered the rest out
        assert sum(c.p_sample for c in ev.candidates) == pytest.approx(1.0, abs=1e-5)
        assert ev.p_sample > 0 and ev.logprob <= 0 and ev.entropy >= 0
    assert done[0].usage.prompt_tokens == len(ids)
    assert done[0].usage.completion_tokens == len(tokens[0])
    assert done[0].text == "".join(ev.text for ev in tokens[0])


def test_stop_string_and_length(engines):
    eng = engines["llama"]
    ids = eng.encode("Once upon a time", raw=True)
    _, done = run(eng, [ids], [GREEDY.replace(max_new_tokens=20)])
    full = done[0].text
    assert done[0].finish_reason == "length" and len(full) > 6
    stop = full[3:6]  # a stop string that greedy decoding will certainly produce
    _, done = run(eng, [ids], [GREEDY.replace(max_new_tokens=20, stop=(stop,))])
    assert done[0].finish_reason == "stop"
    assert done[0].text == full[: full.index(stop)]


def test_cancel_between_tokens(engines):
    eng = engines["llama"]
    cancel = threading.Event()
    seen = []
    for ev in eng.generate([eng.encode("Once", raw=True)], [GREEDY.replace(max_new_tokens=100)], cancel=cancel):
        seen.append(ev)
        if len(seen) == 3:
            cancel.set()
    assert isinstance(seen[-1], Finished) and seen[-1].finish_reason == "cancelled"
    assert seen[-1].usage.completion_tokens == 3


def test_prompt_longer_than_context(engines):
    eng = engines["gpt2"]
    with pytest.raises(InputError, match="prompt is 300 tokens but the model's context is 256"):
        list(eng.generate([[5] * 300], [GREEDY]))


# ---------------------------------------------------------------- the call's arguments (Python callers)


def test_token_ids_outside_the_vocabulary_are_refused_by_the_call(engines):
    """Not an IndexError from the embedding (or an OverflowError from the tokenizer) at the first
    next(): an InputError from generate() itself, naming the prompt, the index, the id and the range."""
    from tiankong.engine.context import PromptCache

    eng = engines["llama"]
    V, ids = eng.cfg.vocab_size, eng.encode("Once upon", raw=True)
    cache = PromptCache()
    run(eng, [ids], [GREEDY], prompt_cache=cache)
    for bad, at in [(ids + [V], len(ids)), ([ids[0], -1], 1), ([V + 100], 0)]:
        with pytest.raises(InputError) as err:
            eng.generate([ids, bad], [GREEDY, GREEDY])  # never iterated: the call raises
        assert str(err.value).startswith(
            f"prompts[1] has token id {bad[at]} at index {at}, outside the vocabulary [0, {V - 1}]; "
        )
        with pytest.raises(InputError, match=rf"prompts\[0\] has token id {bad[at]} "):
            eng.generate([bad], [GREEDY], prompt_cache=cache)  # past the cached prefix too
    assert not cache.in_use  # a refused call leaves the cache free, and right
    assert run(eng, [ids], [GREEDY], prompt_cache=cache)[1][0].text == run(eng, [ids], [GREEDY])[1][0].text


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda eng, ids: eng.generate(["Once upon"], [GREEDY]),
            r"prompts\[0\] is a str.*eng\.encode\(text, raw=True\)",
        ),
        (lambda eng, ids: eng.generate("Once upon", [GREEDY]), r"prompts is a str.*eng\.encode\(text, raw=True\)"),
        (lambda eng, ids: eng.generate(ids, [GREEDY]), r"prompts\[0\] is one int.*e\.g\. \[ids\]"),
        (lambda eng, ids: eng.generate([[1.0, 2.5]], [GREEDY]), r"prompts\[0\] has a float \(1\.0\) at index 0"),
        (lambda eng, ids: eng.generate([np.array([1.5, 2])], [GREEDY]), r"1-D array of integer token ids"),
        (lambda eng, ids: eng.generate([ids], GREEDY), r"params must be a list .*e\.g\. \[params\]"),
        (lambda eng, ids: eng.generate([ids], [{"temperature": 0.5}]), r"params\[0\] is a dict.*SamplingParams\(\*\*"),
        (lambda eng, ids: eng.generate([ids], [GREEDY, GREEDY]), r"1 prompts but 2 parameter sets"),
        (lambda eng, ids: eng.generate([ids], [GREEDY], top_logprobs=2.5), r"top_logprobs must be an integer.*2\.5"),
        (lambda eng, ids: eng.generate([ids], [GREEDY], top_logprobs="5"), r"top_logprobs must be an integer"),
        (lambda eng, ids: eng.generate([ids], [GREEDY], cancel=True), r"cancel must be a threading\.Event"),
        (lambda eng, ids: eng.generate([ids], [GREEDY], prompt_cache={}), r"prompt_cache must be a PromptCache"),
        # the engine's other public calls: a wrong value is refused, never read as its truth or passed on
        (lambda eng, ids: eng.token_text(-1), r"token id must be an integer of at least 0, got an int \(-1\)"),
        (lambda eng, ids: eng.token_text("a"), r"token id must be an integer of at least 0, got a str"),
        (lambda eng, ids: eng.token_text(10**6), r"token id 1000000 is not in the model's vocabulary of"),
        (lambda eng, ids: eng.fit([{"role": "user", "content": "x"}], "10"), r"max_new_tokens must be an integer"),
        (lambda eng, ids: eng.fit([{"role": "user", "content": "x"}], -5), r"max_new_tokens .* at least 1.*-5"),
        (lambda eng, ids: eng.encode(prompt="hi", raw="no"), r"raw must be True or False, got a str \('no'\)"),
        (lambda eng, ids: eng.encode(messages=[{"role": "bot", "content": "x"}]), r'message 1: "role" is \'bot\''),
        (
            lambda eng, ids: eng.encode(messages=[{"role": "User", "content": "x"}]),
            r"rename it to 'user' \(the roles are system, user and assistant",
        ),
    ],
)
def test_wrong_argument_types_are_one_line_input_errors_from_the_call(engines, call, message):
    eng = engines["llama"]
    with pytest.raises(InputError, match=message) as err:
        call(eng, eng.encode("Once upon", raw=True))  # not iterated: the call itself checks
    assert "\n" not in str(err.value)


def test_load_arguments_empty_prompts_roles_and_held_text(engines, tmp_path):
    eng = engines["llama"]
    folder = eng.folder
    for bad, message in [
        (dict(pack="no"), r"pack must be True or False"),
        (dict(chat_template=5), r"chat_template must be a file path \(str or Path\), got an int"),
        (dict(dtype=torch.int8), r"unknown dtype 'int8'; choose auto, float32"),  # a torch.dtype is checked as its name
        (dict(dtype=torch.float8_e4m3fn), r"unknown dtype 'float8_e4m3fn'"),
    ]:
        with pytest.raises(TiankongError, match=message):
            Engine.load(folder, device="cpu", **bad)
    assert Engine.load(folder, device="cpu", dtype=torch.bfloat16, pack=False).dtype == torch.bfloat16
    # An empty prompt is named, and the fix given (this model has a BOS: encode("") starts from it).
    with pytest.raises(InputError, match=r"prompts\[1\] is empty; .*eng\.encode\(text, raw=True\)"):
        run(eng, [eng.encode("Once", raw=True), []], [GREEDY, GREEDY])
    assert eng.encode("", raw=True) == [eng.tokenizer.bos_id]
    # OpenAI's "developer" is the system message, as serve reads it.
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert eng.encode(messages=[{**system[0], "role": "developer"}, system[1]]) == eng.encode(messages=system)
    # A lone stop string is one stop, not one per character.
    held = HeldText("END")
    assert held.push("Every day") == "Every day" and held.push(" EN") == ""


def test_ids_as_arrays_tensors_and_numpy_ints_are_taken_as_lists(engines):
    eng = engines["llama"]
    ids = eng.encode("Once upon a time", raw=True)
    want = run(eng, [ids], [GREEDY])[1][0].token_ids
    for prompt in (tuple(ids), np.array(ids), torch.tensor(ids), [np.int64(i) for i in ids], list(torch.tensor(ids))):
        assert run(eng, [prompt], [GREEDY])[1][0].token_ids == want
    assert run(eng, np.array([ids, ids]), [GREEDY, GREEDY], top_logprobs=np.int64(2))[1][1].token_ids == want


def test_a_drawn_seed_is_reported_so_the_run_repeats(engines):
    eng = engines["qwen2"]
    ids = eng.encode("Emoji are fun", raw=True)
    unseeded = SamplingParams(temperature=1.5, max_new_tokens=20)
    first = run(eng, [ids, ids], [unseeded, unseeded.replace(seed=7)])[1]
    assert isinstance(first[0].seed, int) and first[1].seed == 7
    again = run(eng, [ids], [unseeded.replace(seed=first[0].seed)])[1][0]
    assert again.token_ids == first[0].token_ids and again.seed == first[0].seed
    assert "Finished.seed" in (Engine.generate.__doc__ or "")


def test_streamed_texts_hold_the_stop_string_and_held_text_keeps_it_out(engines):
    """TokenEvent.text is what each token adds, stop string included; Finished.text drops it. The
    docstrings say so and point to HeldText, which streams exactly Finished.text."""
    from tiankong.engine.events import TokenEvent as TE
    from tiankong.engine.generate import HeldText

    eng = engines["llama"]
    ids = eng.encode("Once upon a time", raw=True)
    full = run(eng, [ids], [GREEDY.replace(max_new_tokens=20)])[1][0].text
    stop = full[3:6]
    params = GREEDY.replace(max_new_tokens=20, stop=(stop,))
    tokens, done = run(eng, [ids], [params])
    streamed, fin = "".join(ev.text for ev in tokens[0]), done[0]
    assert fin.finish_reason == "stop" and streamed.startswith(fin.text) and streamed[len(fin.text) :].startswith(stop)
    held = HeldText(params.stop)
    sent = "".join(held.push(ev.text) for ev in tokens[0]) + held.finish(fin.text)
    assert sent == fin.text
    for doc in (Engine.generate.__doc__, TE.__doc__):
        assert "HeldText" in (doc or "") and "stop string" in (doc or "")


def test_stories260k_greedy_story():
    if not STORIES.exists():
        pytest.skip("../shared is absent")
    eng = Engine.load(STORIES)
    ids = eng.encode("", raw=True)
    assert ids == [1]  # "" means BOS alone
    tokens, done = run(eng, [ids], [GREEDY.replace(max_new_tokens=60)])
    ours = [ev.id for ev in tokens[0]]
    assert ours == hf_greedy(STORIES, ids, 60)[: len(ours)]
    text = done[0].text
    assert "Lily" in text and text.count(" ") > 20  # a story about Lily, in words
    assert text == eng.tokenizer.decode(ours, skip_special_tokens=True)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gpt2"])
def test_packed_inference_layout_equals_transformers(engines, arch):
    # On CPU Engine.load rearranges the weights (folded norm gains and query scale, q/k rows in
    # RoPE-pair order, fused q/k/v and gate/up) and pre-packs every matmul for oneDNN; the logits
    # must still be transformers' own.
    from transformers import AutoModelForCausalLM

    from tiankong.engine.gpt2_packed import PackedGPT2Block
    from tiankong.engine.llama_packed import PackedBlock
    from tiankong.engine.packed import PackedLinear, can_pack

    eng = engines[arch]
    if not can_pack(torch.device("cpu"), torch.float32):
        pytest.skip("this torch build has no oneDNN")
    assert not [m for m in eng.model.modules() if isinstance(m, torch.nn.Linear)]
    if arch == "gpt2" and getattr(eng.model, "native", False):
        # With the compiled decode step: folded LayerNorms, one block per layer.
        assert len([m for m in eng.model.modules() if isinstance(m, PackedGPT2Block)]) == eng.cfg.n_layers
    elif arch == "gpt2":
        # Four matmuls per block (q/k/v, attention output, fc, down) and the vocabulary head.
        assert len([m for m in eng.model.modules() if isinstance(m, PackedLinear)]) == 4 * eng.cfg.n_layers + 1
    else:
        assert len([m for m in eng.model.modules() if isinstance(m, PackedBlock)]) == eng.cfg.n_layers
    hf = AutoModelForCausalLM.from_pretrained(eng.folder, dtype=torch.float32).eval()
    ids = torch.tensor([eng.encode("Once upon a time there was a little dog who", raw=True)])
    with torch.inference_mode():
        ours = eng.model(ids, torch.arange(ids.shape[1])[None])
        ref = hf(ids).logits
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_bfloat16_is_as_close_to_float32_as_transformers_bfloat16(tmp_path, arch):
    # bfloat16 rounds differently in the packed form (gains folded into weights, RoPE in float32),
    # so it cannot equal transformers' bf16 logits bit for bit; it must be no further from the
    # float32 truth than transformers' own bf16 run is.
    from transformers import AutoModelForCausalLM

    from tiankong.engine.packed import can_pack

    if not can_pack(torch.device("cpu"), torch.bfloat16):
        pytest.skip("this CPU or torch build has no oneDNN bfloat16")
    folder = make_model(tmp_path / "m", arch)
    eng = Engine.load(folder, device="cpu", dtype="bfloat16")
    assert eng.dtype == torch.bfloat16 and eng.model.__class__.__name__ == "PackedLlama"
    ids = torch.tensor([eng.encode("Once upon a time there was a little dog who", raw=True)])
    pos = torch.arange(ids.shape[1])[None]
    with torch.inference_mode():
        ours = eng.model(ids, pos).float()
        hf16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()(ids).logits.float()
        ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()(ids).logits
    ours_err, hf_err = (ours - ref).abs(), (hf16 - ref).abs()
    assert ours_err.mean() <= 1.5 * hf_err.mean(), (ours_err.mean(), hf_err.mean())
    assert ours_err.max() <= 1.5 * hf_err.max(), (ours_err.max(), hf_err.max())


def test_unpacked_engine_keeps_plain_modules(tmp_path):
    eng = Engine.load(make_model(tmp_path / "m", "llama"), device="cpu", dtype="float32", pack=False)
    assert eng.model.__class__.__name__ == "Llama"
    assert all(m.__class__.__name__ != "PackedLinear" for m in eng.model.modules())


@pytest.mark.parametrize("stored", ["float32", "bfloat16"])
def test_packing_keeps_a_tied_embedding_intact(tmp_path, stored):
    # Packing gives the pages of packed weights back to the OS (madvise); the tied embedding stays
    # in use, so its rows must still read exactly what the file holds, whether they are a view of the
    # mapped file (float32 checkpoint) or a converted copy in ordinary memory (bfloat16 on disk).
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    folder = make_model(tmp_path / "m", "llama", tie_word_embeddings=True, vocab_size=2048)
    if stored == "bfloat16":
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).save_pretrained(folder)
    eng = Engine.load(folder, device="cpu", dtype="float32")
    want = load_file(folder / "model.safetensors")["model.embed_tokens.weight"].float()
    assert torch.equal(eng.model.tok_emb.weight, want)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([eng.encode("Once upon a time", raw=True)])
    with torch.inference_mode():
        torch.testing.assert_close(
            eng.model(ids, torch.arange(ids.shape[1])[None]), hf(ids).logits, atol=2e-5, rtol=1e-4
        )
