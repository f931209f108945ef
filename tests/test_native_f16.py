"""float16 weights in the compiled decode step: an F16 GGUF file loads on the CPU as it is (float16,
as llama.cpp keeps it) rather than widened to float32, and a safetensors model given --dtype
float16 decodes through the step too. The step's logits are pinned to the torch path's on the
same weights: the prefill's layers (PackedBlock, float32 activations, tk_matmul on the halves)
over the whole sequence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gguf_files import write_gguf
from helpers import one_thread  # noqa: F401 - one_thread applies to this module
from tiny_models import make_model

from tiankong.engine import native
from tiankong.engine.engine import Engine, load_note
from tiankong.engine.events import Finished
from tiankong.engine.kv_cache import KVCache
from tiankong.engine.model_facts import model_facts
from tiankong.engine.sampling import SamplingParams


@pytest.fixture(autouse=True)
def need_native() -> None:
    if native.library() is None:
        pytest.skip(f"no compiled decode step here: {native.reason()}")


def f16_file(tmp_path: Path, arch: str, **overrides) -> Path:
    rows = {"qwen2": dict(vocab_size=400)}.get(arch, {})  # Qwen's embedding rows past its vocabulary
    return write_gguf(make_model(tmp_path / arch, arch, **rows, **overrides), tmp_path / f"{arch}-f16.gguf", "f16")


def step_against_torch(eng: Engine, kv: torch.dtype) -> None:
    """Each decode step's logits (one token at a time through the compiled step, a `kv` cache) equal
    the torch path's over the whole sequence at once, within float32 rounding."""
    model, cfg = eng.model, eng.cfg
    seq = torch.tensor([eng.encode("Once upon a time there was a little dog who liked to run", raw=True)])
    n = seq.shape[1]
    with torch.inference_mode():
        cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, n, cfg.head_dim, kv, "cpu")
        full = model(seq, torch.arange(n)[None], None, cache, 0)[0]  # the torch path: the layers here
        cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, n, cfg.head_dim, kv, "cpu")
        steps = torch.cat([model(seq[:, i : i + 1], torch.tensor([[i]]), None, cache, i)[0] for i in range(n)])
    assert (steps - full).abs().max() <= 1e-4 * full.abs().max(), ((steps - full).abs().max(), full.abs().max())


@pytest.mark.parametrize(
    "arch, overrides",
    [("llama", dict(tie_word_embeddings=True)), ("qwen2", {}), ("qwen3", {}), ("gemma2", {}), ("gemma3", {})]
    + [("gpt2", {})],
)
def test_an_f16_file_decodes_its_halves_in_the_compiled_step(tmp_path, arch, overrides):
    """QA: an F16 GGUF on the CPU was widened to float32 (twice the file in memory and read per token).
    Gemma (PackedGemma) too: its window of 6 is shorter than the sequence; GPT-2 (PackedGPT2) too."""
    path = f16_file(tmp_path, arch, **overrides)
    eng = Engine.load(path, device="cpu")
    assert eng.dtype == torch.float16 and eng.decode_path.startswith("compiled step"), (eng.dtype, eng.decode_path)
    assert eng.model.output.dtype == torch.float16 and eng.model.layers[0].w13.dtype == torch.float16
    for kv in (torch.float16, torch.float32):  # the engine's cache (float16), and a float32 one
        step_against_torch(eng, kv)
    # Greedy tokens: each one the torch path's choice over everything before it.
    prompt = eng.encode("Once upon a time", raw=True)
    params = [SamplingParams(temperature=0, max_new_tokens=8, seed=0)]
    out = next(ev.token_ids for ev in eng.generate([prompt], params) if isinstance(ev, Finished))
    assert out  # EOS included, where it came
    ids, cfg = torch.tensor([prompt + list(out)]), eng.cfg
    cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, ids.shape[1], cfg.head_dim, torch.float16, "cpu")  # the engine's
    with torch.inference_mode():
        logits = eng.model(ids, torch.arange(ids.shape[1])[None], None, cache, 0)[0]
    assert list(out) == logits[len(prompt) - 1 : -1].argmax(-1).tolist()


def test_an_f16_gpt2_file_gives_transformers_logits_on_its_halves(tmp_path):
    """GPT-2's halves (PackedGPT2: embeddings summed in float32, the prompt's products through
    tk_matmul) against transformers in float32 on the same halves widened, prompt and decode steps
    alike. Folding a LayerNorm's gain into the rows rounds them to halves a second time, as the
    Llama family's F16 rows are: ~1e-3 of the logits' scale (measured 9.4e-4); a dropped shift or
    query scale moves them by tenths."""
    from gguf_files import dequantized_folder, hf_logits

    hf = make_model(tmp_path / "gpt2", "gpt2")
    path = write_gguf(hf, tmp_path / "gpt2-f16.gguf", "f16")
    eng, want = Engine.load(path, device="cpu"), None
    ids = [1, 5, 300, 17, 42, 99, 250, 7, 120, 64, 33, 2]
    want = hf_logits(dequantized_folder(hf, tmp_path / "ref", "f16"), ids)  # (12, V)
    cfg = eng.cfg
    cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, len(ids), cfg.head_dim, torch.float32, "cpu")
    tokens, positions = torch.tensor([ids]), torch.arange(len(ids))[None]
    with torch.inference_mode():
        got = [eng.model(tokens[:, :6], positions[:, :6], None, cache, 0)[0]]
        got += [eng.model(tokens[:, t : t + 1], positions[:, t : t + 1], None, cache, t)[0] for t in range(6, 12)]
    err = (torch.cat(got) - want).abs().max() / want.abs().max()
    assert err < 2e-3, err


def test_info_on_an_f16_file_says_float16_and_its_bytes(tmp_path):
    path = f16_file(tmp_path, "llama", tie_word_embeddings=True)
    facts = model_facts(path, device="cpu")
    widened = Engine.load(path, device="cpu", dtype="float32").info()
    assert facts == Engine.load(path, device="cpu").info()
    assert facts["dtype"] == "float16" and facts["decode"].startswith("compiled step"), facts
    assert facts["bytes_per_token"] * 2 == widened["bytes_per_token"], (facts, widened)
    assert facts["kv_cache"].startswith("float16")
    assert load_note(path, "cpu", "auto") is None  # nothing widened: nothing to say


def test_a_float16_folder_decodes_in_the_compiled_step(tmp_path):
    """A safetensors model given --dtype float16 took the torch path (float16 products in torch)."""
    eng = Engine.load(make_model(tmp_path / "m", "qwen2"), device="cpu", dtype="float16")
    assert eng.dtype == torch.float16 and eng.decode_path.startswith("compiled step"), eng.decode_path
    step_against_torch(eng, torch.float16)


# One weight row at a time; and four (rows4: 4 x 2000 floats of x outgrow L1).
@pytest.mark.parametrize("rows, width", [(1, 200), (5, 2000)])
def test_the_step_product_of_float16_rows_is_the_widened_product(rows, width):
    """The step's product on float16 rows (ggml type 1) against torch's on the same halves widened:
    independent of the torch path above, which reads the halves through the same product."""
    lib = native.library()
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(37, width, generator=g).half(), torch.randn(rows, width, generator=g)
    ours, ref = native.matvec(lib, w, 1, x, n_threads=2), x @ w.float().T
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max(), (ours - ref).abs().max()
