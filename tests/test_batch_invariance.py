"""A row's tokens and log-probs are the same bits alone and in a batch, beside longer and shorter
prompts (README: "the same seed and settings give the same text whatever the batch size or the
other prompts in the batch"), for every weight kind and both the compiled step and the torch path.

A short prompt beside a longer one is left-padded; it once read its padding masked (prefill and
every decode step), and the kernels' sums then split its slots by their distance from slot 0:
float32 log-probs moved by ~4e-6, bfloat16 by ~0.04, q8_0's and Q4_0's texts parted after ~40
tokens. Equality here is exact, not approximate.
"""

from __future__ import annotations

import pytest
import torch
from gguf_files import write_gguf
from helpers import one_thread  # noqa: F401 (a fixture: tiny models on a shared box)
from tiny_models import make_model

import tiankong.engine.model_places as places
from tiankong.engine.engine import Engine
from tiankong.engine.events import Finished, TokenEvent
from tiankong.engine.gpt2_packed import PackedGPT2
from tiankong.engine.llama_packed import PackedLlama
from tiankong.engine.packed import pack_linears
from tiankong.engine.sampling import SamplingParams

N = 16  # new tokens per row
# Not greedy: a draw from a distribution, so any change of a log-prob's bits can move the token.
SAMPLED = SamplingParams(temperature=0.9, top_k=40, top_p=0.95, min_p=0.02, max_new_tokens=N, seed=0)


def run(eng: Engine, prompts: list[list[int]], seeds: list[int]) -> list[list[tuple]]:
    """Each row's (token id, log-prob, top-5 log-probs) per token, and its text last."""
    rows: list[list[tuple]] = [[] for _ in prompts]
    params = [SAMPLED.replace(seed=s) for s in seeds]
    for ev in eng.generate(prompts, params, top_logprobs=5):
        if isinstance(ev, TokenEvent):
            rows[ev.row].append((ev.id, ev.logprob, tuple((c.id, c.logprob) for c in ev.candidates)))
        else:
            assert isinstance(ev, Finished)
            rows[ev.row].append(ev.text)
    return rows


def assert_alone_equals_batched(eng: Engine, short: list[int], long: list[int]) -> None:
    """Rows: the short prompt (left-padded), the long one, the short one again with another seed
    (sharing its prefill and, in the step, its cache slots), and one of the short one's length;
    then the short one beside one of its length only, and the long one beside a shorter one."""
    other = [*short[:-2], (short[-2] + 1) % eng.cfg.vocab_size, short[-1]]
    batches = [([short, long, short, other], [1, 2, 3, 1]), ([other, short], [1, 1]), ([short[:3], long], [5, 2])]
    alone: dict[tuple, list[tuple]] = {}
    for prompts, seeds in batches:
        for i, (row, ids, seed) in enumerate(zip(run(eng, prompts, seeds), prompts, seeds, strict=True)):
            if (key := (tuple(ids), seed)) not in alone:
                alone[key] = run(eng, [ids], [seed])[0]
            assert row == alone[key], (
                f"{len(prompts)} rows, row {i}: first difference at token {_first_difference(row, alone[key])}"
            )


def _first_difference(a: list, b: list) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)


@pytest.fixture(scope="module")
def q4_0_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "mini-q4_0.gguf"
    write_gguf(places.bundled_dir(), path, "q4_0")
    return path


@pytest.mark.parametrize(
    "kind",
    ["float32", "float32 torch", "bfloat16", "bfloat16 torch", "q8_0", "q4_0 gguf", "float32 torch, 2 threads"],
)
def test_the_bundled_model_gives_a_row_the_same_bits_alone_and_in_a_batch(kind, q4_0_gguf):
    # torch's attention of one query rounds one row differently from several only with more than
    # one thread (so the torch path attends row by row): that case runs on two.
    threads = 2 if kind.endswith("2 threads") else 1
    kind = kind.removesuffix(", 2 threads")
    dtype = kind.split()[0]
    torch_path = kind.endswith("torch")  # the compiled step off: the packed form's oneDNN path
    if dtype == "q4_0":
        eng = Engine.load(q4_0_gguf)
        assert eng.info()["weight_types"].startswith("q4_0")
    else:
        eng = Engine.load("tiankong-mini", dtype=dtype, pack=not torch_path)
    if torch_path:
        eng.model = PackedLlama(eng.model, native=False)
    assert eng.model.native != torch_path
    short = eng.encode(messages=[{"role": "user", "content": "Hi"}])
    long = eng.encode(messages=[{"role": "user", "content": "Tell me a long story about a cat and a kite, please."}])
    assert len(long) >= len(short) + 10
    torch.set_num_threads(threads)
    try:
        assert_alone_equals_batched(eng, short, long)
    finally:
        torch.set_num_threads(1)  # one_thread's


@pytest.mark.parametrize(
    "arch, overrides, path",
    [
        ("mistral", dict(sliding_window=8), "compiled"),  # windows shorter than the rows
        ("mistral", dict(sliding_window=8), "torch"),
        ("gpt2", {}, "compiled"),
        ("gemma2", {}, "compiled"),  # soft-capped attention, local and global layers
        ("gemma2", {}, "torch"),
        ("gemma3", {}, "compiled"),  # q/k norms, the local layers' own RoPE base
    ],
)
def test_other_families_give_a_row_the_same_bits_alone_and_in_a_batch(tmp_path, arch, overrides, path):
    folder = make_model(tmp_path / arch, arch, **overrides)
    eng = Engine.load(folder, dtype="float32", pack=path == "compiled")
    if path == "torch":
        eng.model = pack_linears(eng.model) if arch == "gemma2" else PackedLlama(eng.model, native=False)
    else:
        assert isinstance(eng.model, (PackedLlama, PackedGPT2)) and eng.model.native
    V = eng.cfg.vocab_size
    short = [(7 * i + 3) % V for i in range(5)]
    long = [(11 * i + 5) % V for i in range(17)]
    assert_alone_equals_batched(eng, short, long)
