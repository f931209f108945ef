"""Quantized prefill (csrc/decode.c's tk_matmul under PackedLlama's torch path): the matrix product
against the step's own matrix-vector product and the rounded-input reference, in every build; a
prompt's logits at every position against the compiled step fed one position at a time and
against the torch path on the dequantized weights, with padding, a sliding window and a prompt
continued after cached slots.

Tolerances. tk_matmul runs the step's own row kernels on the same 8-bit inputs, grouped the same
way (four input rows at a time), so each of its outputs equals tk_matvec's bit for bit. Whole
prompts are compared as test_quant.check_steps compares decode steps: the two paths' norms and
sums differ in the last bits, so an input element within an ulp of a rounding tie may round the
other way in one of them and move one product by an 8-bit step (~3e-3 of the logits' scale where
it happens): every position within 1e-2 of the scale, half of them within 1e-4, the same greedy
token everywhere; a wrong row, part, type, mask or position is off by ~1e-1.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_quant import compiled_for, need_native, random_qtensor, rounding_reference
from tiny_models import make_model

from tiankong.engine import native
from tiankong.engine.kv_cache import KVCache, build_mask
from tiankong.engine.model import load_model, prepare_for_inference
from tiankong.engine.quant import QTYPES, pack_rows, round_activations, set_quantized

# A fused weight of five parts (as q/k/v or gate/up are packed when their types differ): rows that
# leave part tiles uneven (37, 5) and a float32 part among the quantized ones.
PARTS = [("q4_k", 40), ("q8_0", 16), ("float32", 5), ("q6_k", 37), ("q5_0", 8)]


def fused_weight(gen: torch.Generator, n: int = 512) -> tuple[list, torch.Tensor, torch.Tensor]:
    """(the parts as QTensors / float tensors, their pack_rows bytes, tk_matmul's (n, 2) parts)."""
    parts = [
        torch.randn(rows, n, generator=gen) if qtype == "float32" else random_qtensor(qtype, rows, n, gen)
        for qtype, rows in PARTS
    ]
    data, layout = pack_rows(parts)
    types = [0 if qtype == "float32" else QTYPES[qtype][2] for qtype, _ in layout]
    return parts, data, torch.tensor([[t, rows] for t, (_, rows) in zip(types, layout, strict=True)], dtype=torch.int32)


def check_matmul(lib, gen) -> None:
    """tk_matmul over the fused weight against the rounded-input reference and, part by part,
    against tk_matvec (bit for bit: the same kernels on the same groups of four rows)."""
    parts, data, spec = fused_weight(gen)
    for T in (1, 3, 4, 5, 33, 131):  # 131: three token blocks of tk_matmul, the last of 3
        x = torch.randn(T, 512, generator=gen)
        y = native.matmul(lib, data, spec, sum(rows for _, rows in PARTS), x)
        assert y.shape == (T, sum(rows for _, rows in PARTS))
        at = 0
        for (qtype, rows), p, (ggml, _) in zip(PARTS, parts, spec.tolist(), strict=True):
            got = y[:, at : at + rows]
            w = p if qtype == "float32" else p.data
            torch.testing.assert_close(got, native.matvec(lib, w.contiguous(), ggml, x), rtol=0, atol=0)
            W = p.double() if qtype == "float32" else p.dequantize().double()
            ref = (x if qtype == "float32" else round_activations(x, qtype)).double() @ W.T
            torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
            at += rows


def test_matmul_equals_the_step_product_and_the_reference():
    need_native()
    check_matmul(native.library(), torch.Generator().manual_seed(10))


@pytest.mark.parametrize("march", ["x86-64", "haswell"])  # plain C; AVX2 without VNNI
def test_matmul_in_the_other_instruction_sets(march):
    check_matmul(compiled_for(march), torch.Generator().manual_seed(11))


def mixed_types(plain: torch.nn.Module) -> None:
    """A Q4_K_M-like mix in place (as test_quant's mixed-types test): q/k/v and gate/up each of
    different types, a float32 down projection, a q4_0 embedding and a q6_k head."""
    gen = torch.Generator().manual_seed(6)
    kinds = dict(wq="q4_k", wk="q5_k", wv="q6_k", wo="q4_1", w1="q8_0", w3="q4_k", w2=None)
    for i, layer in enumerate(plain.layers):
        for name, qtype in kinds.items():
            owner = "attn" if name in ("wq", "wk", "wv", "wo") else "ffn"
            module = getattr(getattr(layer, owner), name)
            if qtype is not None:
                w = random_qtensor(qtype, *module.weight.shape, gen, std=0.05)
                set_quantized(plain, f"layers.{i}.{owner}.{name}.weight", w)
    V, D = plain.output.weight.shape
    set_quantized(plain, "tok_emb.weight", random_qtensor("q4_0", V, D, gen))
    set_quantized(plain, "output.weight", random_qtensor("q6_k", V, D, gen, std=0.05))


def quantized_model(tmp_path, arch: str, qtype: str):
    """(plain quantized model with random norm gains, its config)."""
    if qtype == "mix":  # K-types need rows of 256
        folder = make_model(tmp_path / "m", arch, hidden_size=256, intermediate_size=512)
        plain, cfg = load_model(folder, "cpu", "float32")
        mixed_types(plain)
    else:
        overrides = dict(sliding_window=5) if arch == "mistral" else {}
        plain, cfg = load_model(make_model(tmp_path / "m", arch, **overrides), "cpu", qtype)
    with torch.no_grad():  # gains of 1 leave exact ties in q4_0 embedding rows (127 k / k_max)
        for name, p in plain.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(4))
    return plain, cfg


def run_prompt(model, cfg, tokens: torch.Tensor, pad: torch.Tensor, split: int, by_steps: bool) -> torch.Tensor:
    """Logits (B, T, V) of every position of left-padded rows: tokens[:, :split] as one prompt and
    the rest as its continuation after those cached slots (two calls), or one position a call."""
    B, T = tokens.shape
    # float32, not the float16 the engine makes for these weights (kv_dtype): the paths compared here
    # write their own keys, and a key whose two float32 versions straddle a rounding tie of halves
    # lands a half-ulp apart for the rest of the prompt (test_quant.check_steps, test_kv_f16 cover
    # the float16 cache, each step reading the same one).
    cache = KVCache(cfg.n_layers, B, cfg.n_kv_heads, T, cfg.head_dim, torch.float32, "cpu")
    positions = (torch.arange(T)[None] - pad[:, None]).clamp(min=0)
    bounds = [(t, t + 1) for t in range(T)] if by_steps else [(0, split), (split, T)]
    out = []
    with torch.inference_mode():
        for a, b in bounds:
            mask = build_mask(pad, a, b - a, b, cfg.sliding_window)
            out.append(model(tokens[:, a:b], positions[:, a:b], mask, cache, a))
    return torch.cat(out, dim=1)


def assert_close_logits(got: torch.Tensor, want: torch.Tensor, pad: torch.Tensor) -> None:
    """Every real (not padding) position: see the module docstring."""
    real = torch.arange(got.shape[1])[None] >= pad[:, None]  # (B, T)
    g, w = got[real], want[real]  # (positions, V)
    errors = ((g - w).abs().amax(-1) / w.abs().amax(-1)).tolist()
    assert torch.equal(g.argmax(-1), w.argmax(-1))
    assert max(errors) < 1e-2, errors
    # half, not all: one flipped tie moves the positions after it too (Qwen2's mixed types on an
    # Intel Xeon: 15 of 21 within 1e-4, the others at ~9e-3); the bound above catches a real error.
    assert sum(e < 1e-4 for e in errors) >= 0.5 * len(errors), errors


@pytest.mark.parametrize(
    ("arch", "qtype"),
    [("llama", "q8_0"), ("qwen2", "q4_0"), ("qwen3", "q8_0"), ("mistral", "q4_0"), ("llama", "mix"), ("qwen2", "mix")],
)
def test_prefill_equals_steps_and_the_dequantized_model(tmp_path, arch, qtype):
    """A 12-position prompt, two rows (one left-padded by 3), prefilled as 8 positions then 4 more
    after the cached ones (Mistral: a window of 5, so old slots drop out): logits at every position
    against the compiled step one position at a time, and against the plain model whose quantized
    layers see their input rounded as the step rounds it."""
    need_native()
    plain, cfg = quantized_model(tmp_path, arch, qtype)
    ref = rounding_reference(plain)
    packed = prepare_for_inference(copy.deepcopy(plain))
    assert packed.quantized and packed.native
    tokens = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(5))
    pad = torch.tensor([0, 3])
    prefill = run_prompt(packed, cfg, tokens, pad, 8, by_steps=False)
    assert_close_logits(prefill, run_prompt(packed, cfg, tokens, pad, 8, by_steps=True), pad)
    assert_close_logits(prefill, run_prompt(ref, cfg, tokens, pad, 8, by_steps=False), pad)
