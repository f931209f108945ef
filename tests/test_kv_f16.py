"""The float16 KV cache of quantized-weight models (kv_cache.kv_dtype, csrc/decode.c's kv_type).

References. The cache's halves against torch's own `.half()` (round to nearest even, subnormals
kept), bit for bit, in every build of the compiled step (AVX-512, AVX2 with F16C, plain C); the
step's new cache slot against `.half()` of the float32 keys and values the same step writes into
a float32 cache holding the same history (so the same computation, bit for bit, up to the
rounding); the step's logits against the torch path (PackedLlama's layers: torch attention over
`.float()` of the cache) reading a copy of the same float16 cache; the plain modules' torch path
(KVCache.update) against the same modules on a float32 cache.
"""

from __future__ import annotations

import ctypes
import math

import pytest
import torch
from test_quant import compiled_for, compiled_path, need_native
from test_quant_prefill import quantized_model
from tiny_models import make_model

from tiankong.engine import native, native_step
from tiankong.engine.context import PrefixStore, PromptCache
from tiankong.engine.kv_cache import KVCache, build_mask, kv_dtype
from tiankong.engine.model import load_model, prepare_for_inference


def special_floats() -> torch.Tensor:
    """float32 values at the edges of half: zeros, subnormals and their ties, the normal range's
    ties (even and odd), the overflow edge (65504 stays, 65520 ties up to inf), inf, NaN."""
    tiny = 2.0**-24  # the smallest half subnormal
    edges = [0.0, -0.0, tiny, tiny / 2, tiny * 1.5, tiny * 2.5, tiny * 0.5001, tiny * 1023, tiny * 1023.5]
    edges += [2.0**-14, 2.0**-14 * (1 - 2**-11), 1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-20, -(1 + 2**-11)]
    edges += [65504.0, 65519.0, 65520.0, 65536.0, 1e10, 1e-10, 1e-30, math.inf, -math.inf, math.nan]
    x = torch.tensor(edges, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    spread = torch.randn(4000, generator=gen) * 2.0 ** torch.randint(-30, 20, (4000,), generator=gen).float()
    raw = (
        torch.randint(-(2**31), 2**31 - 1, (4000,), dtype=torch.int64, generator=gen)
        .to(torch.int32)
        .view(torch.float32)
    )
    return torch.cat([x, -x, spread, raw])


def with_roundtrip(lib):
    lib.tk_f16_roundtrip.restype = None
    lib.tk_f16_roundtrip.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 2
    return lib


@pytest.mark.parametrize("march", ["native", "haswell", "x86-64"])
@pytest.mark.parametrize("portable", [False, True])
def test_half_conversions_equal_torch(march, portable):
    """Each build's conversions (x86-64 has no F16C: plain C; portable: the plain C ones in any
    build) give torch's half bits and widen them back exactly; NaN stays NaN."""
    lib = with_roundtrip(compiled_for(march))
    x = special_floats()
    h, y = native.f16_roundtrip(lib, x, portable)
    want = x.half()
    nan = want.isnan()
    assert torch.equal(h.view(torch.float16).isnan(), nan)
    assert torch.equal(h[~nan], want.view(torch.int16)[~nan])
    assert torch.equal(y[~nan], want.float()[~nan]) and bool(y[nan].isnan().all())


def quantized_step(tmp_path, arch: str, qtype: str):
    """(PackedLlama of quantized weights decoding through the compiled step, its config)."""
    need_native()
    plain, cfg = quantized_model(tmp_path, arch, qtype)
    model = prepare_for_inference(plain)
    assert model.native and model.quantized and kv_dtype(model) == torch.float16
    return model, cfg


def prefilled(model, cfg, tokens: torch.Tensor, pad: torch.Tensor, slots: int) -> KVCache:
    """A float16 cache of `slots` holding the left-padded prompts (the torch path's prefill)."""
    B, P = tokens.shape
    cache = KVCache(cfg.n_layers, B, cfg.n_kv_heads, slots, cfg.head_dim, kv_dtype(model), "cpu")
    positions = (torch.arange(P)[None] - pad[:, None]).clamp(min=0)
    with torch.inference_mode():
        model(tokens, positions, build_mask(pad, 0, P, P, cfg.sliding_window), cache, 0)
    return cache


def torch_path(model, *args) -> torch.Tensor:
    """The model's one-position forward through its torch layers instead of the compiled step."""
    step, model._native = model._native, None
    try:
        with torch.inference_mode():
            return model(*args)
    finally:
        model._native = step


@pytest.mark.parametrize(
    ("arch", "qtype"), [("llama", "q8_0"), ("qwen3", "q4_0"), ("mistral", "q4_0"), ("qwen2", "mix")]
)
def test_step_on_a_float16_cache_equals_the_torch_path(tmp_path, arch, qtype):
    """Eight greedy steps of two rows (one left-padded; Mistral's window of 5 passed): at each, the
    step and the torch path read copies of the same float16 cache. Their logits agree to 1e-4 of
    the scale, as test_quant_prefill's prompts do where no 8-bit rounding of an input flips (both
    run the same products on the same cached halves; only norms, RoPE, attention and SiLU sum
    differently), and the slot each writes holds the same halves but where a value's two float32
    versions straddle a rounding tie (then one half-ulp apart)."""
    model, cfg = quantized_step(tmp_path, arch, qtype)
    B, P, steps = 2, 6, 8
    tokens = torch.randint(0, cfg.vocab_size, (B, P), generator=torch.Generator().manual_seed(5))
    pad = torch.tensor([0, 2])
    cache = prefilled(model, cfg, tokens, pad, P + steps)
    chosen = tokens[:, -1:]
    errors, flips = [], 0
    for slot in range(P, P + steps):
        mask = build_mask(pad, slot, 1, slot + 1, cfg.sliding_window)
        other = KVCache(cfg.n_layers, B, cfg.n_kv_heads, P + steps, cfg.head_dim, torch.float16, "cpu")
        other.kv.copy_(cache.kv)
        args = (chosen, (slot - pad)[:, None], mask)
        with torch.inference_mode():
            got = model(*args, cache, slot)[:, -1]  # (B, V)
        want = torch_path(model, *args, other, slot)[:, -1]
        errors += ((got - want).abs().amax(-1) / want.abs().amax(-1)).tolist()
        new, ref = cache.kv[:, :, :, slot].float(), other.kv[:, :, :, slot].float()  # (n_layers, B, 2 H_kv, hd)
        assert torch.equal(cache.kv[:, :, :, :slot], other.kv[:, :, :, :slot])  # earlier slots untouched
        assert bool(((new - ref).abs() <= ref.abs() * 2**-10).all())  # at most one half-ulp apart
        flips += int((new != ref).sum())
        assert torch.equal(got.argmax(-1), want.argmax(-1))
        chosen = want.argmax(-1)[:, None]
    assert max(errors) < 1e-2, errors  # an 8-bit rounding flipped: ~3e-3 (test_quant_prefill)
    assert sum(e < 1e-4 for e in errors) >= 0.75 * len(errors), errors
    assert flips <= 0.01 * steps * cache.kv[:, :, :, 0].numel(), flips


@pytest.mark.parametrize(("arch", "qtype"), [("llama", "q8_0"), ("qwen2", "mix")])
def test_cache_slot_is_torch_half_of_the_float32_keys(tmp_path, arch, qtype):
    """The same step on the float16 cache and on a float32 copy of it (its halves widened, exactly):
    layer 0's new keys and values, computed alike before anything reads the new slot, are
    `.half()` of the float32 ones bit for bit; every other slot keeps its bytes. Later layers see
    the new slot rounded in one cache and not the other, so only layer 0 is the same computation."""
    model, cfg = quantized_step(tmp_path, arch, qtype)
    B, P = 2, 6
    tokens = torch.randint(0, cfg.vocab_size, (B, P), generator=torch.Generator().manual_seed(7))
    pad = torch.tensor([1, 0])
    cache = prefilled(model, cfg, tokens, pad, P + 1)
    wide = KVCache(cfg.n_layers, B, cfg.n_kv_heads, P + 1, cfg.head_dim, torch.float32, "cpu")
    wide.kv.copy_(cache.kv)
    before = cache.kv.clone()
    args = (tokens[:, -1:], (P - pad)[:, None], build_mask(pad, P, 1, P + 1, cfg.sliding_window))
    with torch.inference_mode():
        narrow_logits, wide_logits = model(*args, cache, P), model(*args, wide, P)
    assert torch.equal(cache.kv[0, :, :, P].view(torch.int16), wide.kv[0, :, :, P].half().view(torch.int16))
    assert torch.equal(cache.kv[:, :, :, :P], before[:, :, :, :P])
    assert bool(wide.kv[0, :, :, P].abs().amax() > 0)  # a slot was written at all
    # The whole step differs from the float32 cache's by the new slot's rounding, which can flip 8-bit
    # roundings downstream: up to 2.2e-2 of the scale (measured over 24 prompts of these models and
    # qwen3 q4_0); reading the halves wrongly (as bfloat16, say) is off by the scale itself.
    assert float((narrow_logits - wide_logits).abs().amax() / wide_logits.abs().amax()) < 5e-2


def test_cache_type_follows_the_weights(tmp_path):
    """One rule (kv_dtype) for every maker of a cache: float16 for quantized weights computing in
    float32, packed or plain, in the prompt cache and the prefix store too; float32 models keep a
    float32 cache (the compiled step writes float32 there: test_native pins those logits to
    transformers), and quantized weights computing in bfloat16 a bfloat16 one."""
    need_native()
    folder = make_model(tmp_path / "m", "llama")
    plain, cfg = load_model(folder, "cpu", "q8_0")
    assert kv_dtype(plain) == torch.float16  # the plain module with QLinear weights (torch path, GPUs)
    model = prepare_for_inference(plain)
    assert kv_dtype(model) == model._native.dtype == torch.float16
    cache, _ = PromptCache().prepare(model, cfg, [1, 2, 3], 8)
    assert cache.kv.dtype == torch.float16
    store = PrefixStore(1 << 20)
    store.put([1, 2, 3], cache.kv[:, 0, :, :3])
    n, kv = store.longest([1, 2, 3, 4])
    assert n == 3 and store.cache_for(model, [1, 2, 3, 4], n, kv, 8).kv.kv.dtype == torch.float16
    dense = prepare_for_inference(load_model(folder, "cpu", "float32")[0])
    assert kv_dtype(dense) == torch.float32 and (not dense.native or dense._native.dtype == torch.float32)
    # Quantized weights computing in bfloat16 (a GPU's auto dtype) keep a bfloat16 cache: already
    # 16-bit, and float16 would add a conversion of every slot each step.
    on_gpu = load_model(folder, "cpu", "q8_0")[0]
    for p in on_gpu.parameters():
        p.data = p.data.to(torch.bfloat16)
    assert kv_dtype(on_gpu) == torch.bfloat16


@pytest.mark.parametrize("arch", ["gpt2", "gemma2", "llama"])
def test_torch_path_on_a_float16_cache(tmp_path, arch):
    """The plain modules with quantized weights (the torch path: no compiled step, GPUs) write halves
    through KVCache.update and attend over them widened: a prompt and two steps on the float16
    cache give layer 0's prompt keys and values as `.half()` of the same run on a float32 cache
    (the same ops before anything reads the cache), and logits within the halves' rounding."""
    plain, cfg = load_model(make_model(tmp_path / "m", arch), "cpu", "q8_0")
    assert kv_dtype(plain) == torch.float16
    B, P = 2, 5
    tokens = torch.randint(0, cfg.vocab_size, (B, P + 2), generator=torch.Generator().manual_seed(3))
    logits, caches = {}, {}
    for dt in (torch.float16, torch.float32):
        cache = caches[dt] = KVCache(cfg.n_layers, B, cfg.n_kv_heads, P + 2, cfg.head_dim, dt, "cpu")
        with torch.inference_mode():
            out = [plain(tokens[:, :P], torch.arange(P).expand(B, P), None, cache, 0)[:, -1]]
            for t in (P, P + 1):
                out.append(plain(tokens[:, t : t + 1], torch.full((B, 1), t), None, cache, t)[:, -1])
        logits[dt] = torch.stack(out)  # (3, B, V)
    assert caches[torch.float16].kv.dtype == torch.float16
    half, wide = caches[torch.float16].kv[0, :, :, :P], caches[torch.float32].kv[0, :, :, :P]
    assert torch.equal(half.view(torch.int16), wide.half().view(torch.int16))
    got, want = logits[torch.float16], logits[torch.float32]
    assert float((got - want).abs().amax() / want.abs().amax()) < 1e-2
    assert torch.equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("march", ["haswell", "x86-64"])
@pytest.mark.parametrize(("arch", "qtype"), [("llama", "q8_0"), ("qwen2", "mix")])
def test_other_builds_read_the_float16_cache_alike(tmp_path, march, arch, qtype):
    """The step built for AVX2 with F16C (haswell) and for plain x86-64 (no F16C: the portable
    conversions) against this machine's build, on copies of the same float16 cache, four steps:
    head_dim 16 (the one-slot-at-a-time kernels, dot_f16 / axpy_f16) and 64 (score_keys and
    weigh_values where the build has them). Their products sum in other orders (8-bit inputs alike),
    so the logits agree as the torch path's do (test_step_on_a_float16_cache_equals_the_torch_path)."""
    model, cfg = quantized_step(tmp_path, arch, qtype)
    other = native_step.NativeStep(native._load(compiled_path(march)), model)  # skips where it cannot run
    B, P, steps = 2, 6, 4
    tokens = torch.randint(0, cfg.vocab_size, (B, P), generator=torch.Generator().manual_seed(9))
    pad = torch.tensor([2, 0])
    cache = prefilled(model, cfg, tokens, pad, P + steps)
    x = model.tok_emb(tokens[:, -1])
    errors = []
    for slot in range(P, P + steps):
        copy = KVCache(cfg.n_layers, B, cfg.n_kv_heads, P + steps, cfg.head_dim, torch.float16, "cpu")
        copy.kv.copy_(cache.kv)
        args = ((slot - pad)[:, None], build_mask(pad, slot, 1, slot + 1, cfg.sliding_window))
        with torch.inference_mode():
            got, want = other(x, *args, copy, slot)[:, -1], model._native(x, *args, cache, slot)[:, -1]
        errors += ((got - want).abs().amax(-1) / want.abs().amax(-1)).tolist()
        x = model.tok_emb(want.argmax(-1))
    assert max(errors) < 1e-2, errors
    assert sum(e < 1e-4 for e in errors) >= 0.75 * len(errors), errors
