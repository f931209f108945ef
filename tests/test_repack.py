"""Quantized rows interleaved eight or sixteen at a time (engine/repack.py, csrc/repack.h,
csrc/repack16.h): the byte layouts round-trip and the compiled tk_repack makes torch's reference
bytes, the interleaved kernels give the plain kernels' products (and the rounded-input reference)
in all three builds (sixteen rows without AVX-512: through the eight-row kernels), for 1-9 input
rows and row counts with an eight-row group and a plain tail after the pairs, through the step's
product (tk_matvec) and the prefill's (tk_matmul); a model's greedy decode is the same with its
weights interleaved (either way) as without.

Tolerances: both kernels compute the same integer dot products of the same 8-bit inputs; only the
float summation order differs (per block of 8 rows against per row), so 1e-5 relative, where a
wrong chunk, row, nibble, fifth bit or offset is off by far more than 1e-2. Whole models differ
as test_quant.check_steps explains (a rounding tie may flip), so their logits are held to that
test's bounds and the greedy tokens must be equal.
"""

from __future__ import annotations

import pytest
import torch
from test_quant import compiled_for, need_native, random_qtensor
from tiny_models import make_model

from tiankong.engine import llama_packed, native, repack
from tiankong.engine.kv_cache import KVCache
from tiankong.engine.model import load_model, prepare_for_inference
from tiankong.engine.quant import QTYPES, X8, X16, pack_rows, round_activations, set_quantized
from tiankong.engine.repack import INTERLEAVED, REPACKED, WIDE, repack_rows, unrepack_rows


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("qtype", INTERLEAVED)
def test_repacking_round_trips_and_keeps_the_tail_plain(qtype, wide):
    gen = torch.Generator().manual_seed(0)
    n, rb = 256, QTYPES[qtype][1] * 8
    parts = [random_qtensor(qtype, 29, n, gen), torch.randn(3, n, generator=gen), random_qtensor(qtype, 5, n, gen)]
    data, layout = pack_rows(parts)
    packed, names = repack_rows(data, layout, n, types=INTERLEAVED, wide=wide)
    kind = "x16" if wide and qtype in WIDE else "x8"  # q6_k: eight rows only (repack16.h)
    assert names == ((f"{qtype}:{kind}", 29), ("float32", 3), (qtype, 5))  # fewer than 8 rows: plain
    if native.library() is not None:  # the compiled tk_repack made it: the torch reference agrees
        reference, same = repack_rows(data, layout, n, native=False, types=INTERLEAVED, wide=wide)
        assert same == names and torch.equal(reference, packed)
    own = data.clone()  # in place: the same bytes, in the tensor given
    assert torch.equal(repack_rows(own, layout, n, in_place=True, types=INTERLEAVED, wide=wide)[0], packed)
    assert torch.equal(own, packed)
    assert packed.shape == data.shape and not torch.equal(packed[: 24 * rb], data[: 24 * rb])
    assert torch.equal(packed[29 * rb :], data[29 * rb :]) and torch.equal(packed[24 * rb :], data[24 * rb :])
    if kind == "x16":  # a pair, then rows 16-23 exactly as eight rows lay them out
        eight = repack_rows(data, layout, n, types=INTERLEAVED, wide=False)[0]
        assert not torch.equal(packed[: 16 * rb], eight[: 16 * rb])
        assert torch.equal(packed[16 * rb : 24 * rb], eight[16 * rb : 24 * rb])
    few = pack_rows([random_qtensor(qtype, 7, n, gen)])[0]  # nothing to interleave: not even a copy
    assert repack_rows(few, ((qtype, 7),), n, types=INTERLEAVED, wide=wide)[0].data_ptr() == few.data_ptr()
    back, plain = unrepack_rows(packed, names, n)
    assert plain == layout and torch.equal(back, data)


@pytest.mark.parametrize("march", ["native", "x86-64", "haswell"])  # VNNI or AVX2 here; plain C; AVX2 alone
def test_interleaved_kernels_equal_the_plain_ones(march):
    lib = compiled_for(march)
    gen = torch.Generator().manual_seed(1)
    # eight rows: one group; a group and a tail of 5; four groups and a tail. Sixteen: a pair; a
    # pair, a group and a tail of 5; two pairs and a group (on two threads: 16 rows, then 24)
    cases = [(q, rows, False) for q in INTERLEAVED for rows in (8, 13, 37)]
    cases += [(q, rows, True) for q in WIDE for rows in (16, 29, 40)]
    for qtype, rows, wide in cases:
        ggml, n = QTYPES[qtype][2], 512 if qtype.endswith("_k") else 480  # 15 blocks of 32: odd
        w = random_qtensor(qtype, rows, n, gen)
        packed, names = repack_rows(w.data, ((qtype, rows),), n, types=INTERLEAVED, wide=wide)
        flag = X16 if wide else X8
        assert names == ((f"{qtype}:{'x16' if wide else 'x8'}", rows),)
        for B in (1, 2, 3, 4, 5, 9):
            x = torch.randn(B, n, generator=gen)
            plain = native.matvec(lib, w.data, ggml, x)
            got = native.matvec(lib, packed.view(rows, -1), ggml | flag, x)
            ref = round_activations(x, qtype).double() @ w.dequantize().double().T
            for y in (got, plain):
                torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
            torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5 * float(plain.abs().max()))
        spec = torch.tensor([[ggml | flag, rows]], dtype=torch.int32)
        for T in (1, 6, 33):  # the prefill's product reads the same layout
            x = torch.randn(T, n, generator=gen)
            want = native.matvec(lib, w.data, ggml, x)
            got = native.matmul(lib, packed, spec, rows, x)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def _greedy(step: torch.nn.Module, cfg, steps: int = 6) -> tuple[list, list]:
    """Four rows (four presets) prefilled and decoded greedily: (tokens, last logits per step)."""
    B, P = 4, 5
    tokens = torch.randint(0, cfg.vocab_size, (B, P), generator=torch.Generator().manual_seed(2))
    cache = KVCache(cfg.n_layers, B, cfg.n_kv_heads, P + steps, cfg.head_dim, torch.float32, "cpu")
    out, logits = [], []
    with torch.inference_mode():
        last = step(tokens, torch.arange(P).expand(B, P), None, cache, 0, last_only=True)[:, -1]
        for slot in range(P, P + steps):
            chosen = last.argmax(-1)[:, None]
            out.append(chosen[:, 0].tolist())
            logits.append(last)
            last = step(chosen, torch.full((B, 1), slot), None, cache, slot)[:, -1]
    return out, logits


# The vocabulary leaves the head a plain tail; head_dim 18 makes k and v 18 rows (two groups and a
# tail each), so q/k/v of one type cannot go through the step as one product (groups misaligned).
SHAPES = {"even": dict(hidden_size=128, intermediate_size=224), "odd heads": dict(num_key_value_heads=1, head_dim=18)}


def _load(folder, qtype: str):
    """The model in qtype: quantized at load, or for K-types (no quantizer) random weights."""
    if not qtype.endswith("_k"):
        return load_model(folder, "cpu", qtype)
    plain, cfg = load_model(folder, "cpu", "float32")
    gen = torch.Generator().manual_seed(3)
    for name, module in list(plain.named_modules()):
        if isinstance(module, torch.nn.Linear) and module.weight.shape[1] % 256 == 0:
            set_quantized(plain, f"{name}.weight", random_qtensor(qtype, *module.weight.shape, gen, std=0.05))
    return plain, cfg


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("qtype", REPACKED)
def test_greedy_decode_is_the_same_with_rows_interleaved(tmp_path, monkeypatch, qtype, shape, wide):
    need_native()
    overrides = (
        SHAPES[shape] if not qtype.endswith("_k") else dict(SHAPES[shape], hidden_size=256, intermediate_size=512)
    )
    folder = make_model(tmp_path / "m", "llama", **overrides)
    plain, cfg = _load(folder, qtype)
    monkeypatch.setattr(repack, "_wide", lambda: wide)  # sixteen rows or eight, whatever this CPU has
    step = prepare_for_inference(plain)
    # every part interleaved (the head: q8_0 or qtype), but "odd heads"' o projection, 72 wide: float32
    flag = X16 if wide else X8
    assert all(t & flag or t == 0 for t in step.wtypes.flatten().tolist()) and step.out_type & flag
    monkeypatch.setattr(llama_packed, "REPACKED", ())  # what loading interleaves: nothing
    unpacked = prepare_for_inference(_load(folder, qtype)[0])
    assert not any(t & (X8 | X16) for t in unpacked.wtypes.flatten().tolist())
    (got, got_logits), (want, want_logits) = _greedy(step, cfg), _greedy(unpacked, cfg)
    assert got == want
    # (step, row) -> max |logit difference| / max |logit|: ~2e-7 (summation order), except where an
    # input element within an ulp of a rounding tie rounds the other way in one of the two (its
    # product moves by an 8-bit step; the cache carries it on): measured 7e-3 to 1.1e-2 in 1-3 of 24
    errors = [
        e
        for a, b in zip(got_logits, want_logits, strict=True)
        for e in ((a - b).abs().amax(-1) / b.abs().amax(-1)).tolist()
    ]
    assert max(errors) < 3e-2, errors
    assert sum(e < 1e-5 for e in errors) >= 0.75 * len(errors), errors
