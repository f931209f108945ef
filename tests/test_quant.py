"""Quantized weights (engine/quant.py, csrc/quant.h): GGUF blocks against gguf-py, the compiled
step's products and decode steps against the torch path on the dequantized weights.

Tolerances. The step quantizes each product's input to 8 bits (blocks of 32, or 256 for K-types,
scale amax / 127), as llama.cpp does, so against the exact product x . w it may differ by at most
sum over blocks of amax(x_block) / 254 * sum |w_block| (each input element moves by at most half
a step). That bound is checked for every kernel. Against the same product on the rounded input
(quant.round_activations) the step's integer arithmetic is exact and only float summation order
differs: 1e-5 relative. Whole decode steps are compared with the torch path whose quantized
layers see their input rounded the same way (a forward pre-hook): logits within 1e-4 and the
same greedy tokens, where a wrong block layout, type, row order or scale is off by ~1e-1.
"""

from __future__ import annotations

import atexit
import copy
import fcntl
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import cli
from tiny_models import STORIES, make_model

from tiankong.engine import native, repack
from tiankong.engine.kv_cache import KVCache, build_mask, kv_dtype
from tiankong.engine.model import load_model, prepare_for_inference
from tiankong.engine.quant import QTYPES, X8, X16, QLinear, QTensor, quantize, round_activations, set_quantized

# Byte offsets of each type's fp16 scale fields (d, and m / dmin where the type has one).
SCALES = {
    "q8_0": [0],
    "q4_0": [0],
    "q4_1": [0, 2],
    "q5_0": [0],
    "q5_1": [0, 2],
    "q4_k": [0, 2],
    "q5_k": [0, 2],
    "q6_k": [208],
}


def need_native() -> None:
    if native.library() is None:
        pytest.skip(f"no compiled decode step here: {native.reason()}")


_BUILDS: dict[str, Any] = {}  # march -> (library, path): decode.c takes seconds to build, so once a test session
_MARCHES = ("x86-64", "haswell")  # every -march a test asks for: the first ask starts all of them, side by side
_PENDING: dict[str, tuple[subprocess.Popen | None, Path, Any, str]] = {}  # march -> (gcc still running, or None
# where another process builds it; its library; the lock held; gcc's temporary output)
_FOLDER: Path | None = None  # where the builds lie (_build_target)


def compiled_for(march: str) -> Any:
    """The compiled step's products (tk_matvec, tk_matmul) for an instruction set: -march=native's
    library as the engine loads it, or decode.c built here with -march=`march` (x86-64: plain C;
    haswell: AVX2 without VNNI), so the paths this CPU does not pick are tested on it too."""
    return _built(march)[0]


def compiled_path(march: str) -> Path:
    """Where compiled_for's library for `march` (not native) lies."""
    assert march != "native"
    return _built(march)[1]


def _built(march: str) -> tuple[Any, Path | None]:
    import ctypes

    need_native()
    if march == "native":
        return native.library(), None
    if platform.machine() != "x86_64" or not shutil.which("gcc"):
        pytest.skip("x86-64 with gcc only")
    if march == "haswell" and "avx2" not in open("/proc/cpuinfo").read():
        pytest.skip("this CPU cannot run AVX2 code")
    if march not in _BUILDS:
        _start_builds(march)
        so = _finish_build(march)
        lib = ctypes.CDLL(str(so))
        for name in ("tk_matvec", "tk_matmul"):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = getattr(native.library(), name).argtypes
        _BUILDS[march] = lib, so
    return _BUILDS[march]


def _build_target(march: str) -> Path:
    """Where decode.c built with -march=`march` lies: beside the engine's own build (native's cache
    folder), named by what it is built from (the sources, gcc's version, the flags), as the engine
    names its own; so the test workers and later test sessions share it while decode.c is the same.
    A temporary folder where that cache cannot be written."""
    global _FOLDER
    if _FOLDER is None:
        try:
            _FOLDER = native._cache_dir()
            _FOLDER.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=_FOLDER).close()
        except OSError:
            _FOLDER = Path(tempfile.mkdtemp(prefix="tiankong-test-builds-"))
            atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
    gcc = _gcc_version()
    parts = [native.SOURCE.read_text(), *(h.read_text() for h in native.HEADERS), gcc, " ".join(_flags(march))]
    return _FOLDER / f"test-decode-{march}-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:16]}.so"


@functools.cache
def _gcc_version() -> str:
    return subprocess.run(["gcc", "--version"], capture_output=True, text=True, timeout=30).stdout


def _flags(march: str) -> list[str]:
    return [f if f != "-march=native" else f"-march={march}" for f in native.FLAGS]


def _start_builds(march: str) -> None:
    """Start gcc for `march` and every other of _MARCHES this CPU runs, unless built or started
    already: two builds at once take the time of one on two cores. Each build holds a lock beside
    its library until the library is in place (written under a temporary name, then renamed): a
    test worker that finds another one building waits for its library (_finish_build)."""
    avx2 = "avx2" in open("/proc/cpuinfo").read()
    wanted = [march, *(m for m in _MARCHES if avx2 or m != "haswell")]
    for m in dict.fromkeys(wanted):
        if m in _BUILDS or m in _PENDING:
            continue
        so = _build_target(m)
        if so.exists():
            continue
        lock = open(so.with_suffix(".lock"), "w")  # held until the build is in place
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another worker builds it
            _PENDING[m] = None, so, lock, ""
            continue
        if so.exists():  # built meanwhile
            lock.close()
            continue
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=so.parent)
        os.close(fd)
        cmd = ["gcc", *_flags(m), str(native.SOURCE), "-o", tmp, "-lm"]
        _PENDING[m] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), so, lock, tmp


def _finish_build(march: str) -> Path:
    """The library of `march` once built: by this process's gcc, or by another process that held its lock."""
    proc, so, lock, tmp = _PENDING.pop(march, (None, _build_target(march), None, ""))
    if lock is not None and proc is None:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other process's build is done (or it failed or ended)
        if not so.exists():  # it did not make it: build here, holding the lock
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=so.parent)
            os.close(fd)
            cmd = ["gcc", *_flags(march), str(native.SOURCE), "-o", tmp, "-lm"]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if proc is not None:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise subprocess.CalledProcessError(proc.returncode, proc.args, stderr=err)
            os.replace(tmp, so)
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if lock is not None:
            lock.close()
    return so


def _end_builds() -> None:
    """At exit: no gcc of this process left writing, no temporary file left."""
    for proc, _, lock, tmp in _PENDING.values():
        if proc is not None:
            proc.communicate()
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if lock is not None:
            lock.close()


atexit.register(_end_builds)


def random_qtensor(qtype: str, out: int, n: int, gen: torch.Generator, std: float = 1.0) -> QTensor:
    """Random quant bytes with finite fp16 scales, scaled so the weights' std is about `std`: any
    bytes are a valid block, so no quantizer is needed (there is none for K-types)."""
    block, size, _ = QTYPES[qtype]
    data = torch.randint(0, 256, (out, n // block * size), dtype=torch.uint8, generator=gen)
    blocks = data.view(-1, size)
    for scale_std in (1.0, None):  # first unit scales, then rescaled to the wanted std
        if scale_std is None:
            scale_std = std / float(QTensor(qtype, (out, n), data).dequantize().std())
        for at in SCALES[qtype]:
            d = (torch.rand(blocks.shape[0], generator=gen) + 0.5) * scale_std
            blocks[:, at : at + 2] = d.half().view(torch.uint8).view(-1, 2)
    return QTensor(qtype, (out, n), data)


@pytest.mark.parametrize("qtype", list(QTYPES))
def test_dequantize_equals_gguf(qtype):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    w = random_qtensor(qtype, 5, 512, torch.Generator().manual_seed(0))
    ref = dequantize(w.data.numpy(), GGMLQuantizationType[qtype.upper()])
    np.testing.assert_array_equal(w.dequantize().numpy(), ref)
    rows = [4, 0, 0, 2]
    torch.testing.assert_close(w.take_rows(rows).dequantize(), w.dequantize()[rows], rtol=0, atol=0)


@pytest.mark.parametrize("qtype", list(QTYPES))
def test_the_compiled_embedding_lookup_gives_the_torch_dequantizations_bits(qtype, monkeypatch):
    # QEmbedding's lookup on CPU is one compiled call (csrc/dequant.h); quant.py's torch
    # dequantization, held to gguf-py's above, is the reference. Its scales are random bytes too
    # (inf, NaN, subnormal fp16 included), so every bit pattern a file may hold goes through both.
    from tiankong.engine.quant import QEmbedding

    need_native()
    gen = torch.Generator().manual_seed(3)
    for w in (
        random_qtensor(qtype, 9, 512, gen),
        QTensor(
            qtype,
            (9, 512),
            torch.randint(0, 256, (9, 512 // QTYPES[qtype][0] * QTYPES[qtype][1]), dtype=torch.uint8, generator=gen),
        ),
    ):
        ids = torch.tensor([[8, 0, 3], [3, 3, 1]])
        want = w.take_rows(ids.reshape(-1)).dequantize().view(2, 3, 512)
        emb = QEmbedding(w)
        with monkeypatch.context() as m:
            m.setattr(QTensor, "take_rows", lambda *a: pytest.fail("the torch lookup ran"))
            got = emb(ids)
            with pytest.raises(IndexError):
                emb(torch.tensor([9]))
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_1"])
def test_quantize_is_within_half_a_step(qtype):
    """quantize's rounding (llama.cpp's reference, via gguf-py): q8_0 moves each weight by at most
    half its block's step amax / 127 plus the fp16 rounding of that step (2^-11 relative, times
    127 levels), the 4-bit types by at most one step of 16 levels."""
    w = torch.randn(8, 256, generator=torch.Generator().manual_seed(1))
    err = (quantize(w, qtype).dequantize() - w).abs().view(8, -1, 32)
    amax = w.view(8, -1, 32).abs().amax(-1, keepdim=True)
    step = amax / 254 + amax / 2048 if qtype == "q8_0" else 2 * amax / 15
    assert (err <= step * 1.001).all()


def check_products(lib, gen) -> None:
    """Every type's product through tk_matvec against the exact one (the bound) and the rounded one."""
    for qtype, (_, _, ggml) in QTYPES.items():
        kind = 256 if qtype.endswith("_k") else 32
        n = 512 if kind == 256 else 480  # 15 blocks of 32: an odd one at the end
        w = random_qtensor(qtype, 37, n, gen)  # 37 rows: uneven shares between the threads
        W = w.dequantize().double()
        for B in (1, 3, 4, 5):  # one row, a group of three, four, four plus one
            x = torch.randn(B, n, generator=gen)
            y = native.matvec(lib, w.data, ggml, x).double()
            bound = (x.view(B, 1, -1, kind).abs().amax(-1) / 254 * W.abs().view(1, 37, -1, kind).sum(-1)).sum(-1)
            assert ((y - x.double() @ W.T).abs() <= bound * 1.0001 + 1e-5).all(), (qtype, B)
            ref = round_activations(x, qtype).double() @ W.T
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()), msg=f"{qtype} B={B}")


def test_each_kernel_equals_the_dequantized_product():
    need_native()
    check_products(native.library(), torch.Generator().manual_seed(2))


@pytest.mark.parametrize("march", ["x86-64", "haswell"])  # the plain C kernels; AVX2 without VNNI
def test_the_other_instruction_sets_give_the_same_products(march):
    """The compiled step is built with -march=native; the paths this CPU does not pick are built
    here for it (x86-64: no AVX2, so plain C; haswell: AVX2 without VNNI) and checked alike."""
    check_products(compiled_for(march), torch.Generator().manual_seed(3))


def rounding_reference(plain: torch.nn.Module) -> torch.nn.Module:
    """A copy of a plain quantized model whose QLinears see their input rounded as the step does."""
    ref = copy.deepcopy(plain)
    for m in ref.modules():
        if isinstance(m, QLinear):
            m.register_forward_pre_hook(lambda mod, args: (round_activations(args[0], mod.qtype),))
    return ref


def check_steps(plain: torch.nn.Module, cfg, steps: int = 8, kv: torch.dtype = torch.float16) -> None:
    """Prefill and greedy decode of two left-padded rows: the compiled step against the rounding
    torch reference. An input element within an ulp of a rounding tie may round the other way in
    one of the two (their norms and sums differ in the last bits), which moves that product by one
    8-bit step: ~3e-3 of the logits' scale where it happens (measured: one row of 16 in some runs).
    Several such flips in one prompt stay in every later step of their row: 1.1e-2 measured (a
    padded qwen2 q4_0 row, its q/k/v biases random). So: every row within 2e-2 of the scale (the
    rounding itself, unemulated, is ~3e-2; a wrong layout, type or scale more), three in four
    within 1e-4 (a dropped bias leaves none), and the same greedy tokens.

    kv: the caches' type. float32 checks the products alone, as above. float16 is what the engine
    makes for quantized weights (kv_cache.kv_dtype), and a key or value whose two float32 versions
    straddle a rounding tie of halves lands one half-ulp (2^-11 relative) apart in the two caches,
    which moves the next layer's input enough to flip several of its 8-bit roundings: 1.0e-2 to
    1.5e-2 of the scale (measured, a padded qwen3 q4_0 row), and from then on in every step of that
    row. So with float16 each decode step starts from the step's cache (copied into the
    reference's, keys back in rotate-half order), which counts such a flip once, where it is made
    (a flip in the prompt no copy can undo: the same 2e-2 bound)."""
    with torch.no_grad():  # gains of 1 leave exact ties in q4_0 embedding rows (127 k / k_max)
        for name, p in plain.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(4))
    ref = rounding_reference(plain)
    step = prepare_for_inference(plain)
    assert step.native and step.quantized
    B, P = 2, 6
    tokens = torch.randint(0, cfg.vocab_size, (B, P), generator=torch.Generator().manual_seed(5))
    pad = torch.tensor([0, 2])
    assert kv_dtype(step) == kv_dtype(ref) == torch.float16  # the rule for quantized weights, packed or plain
    caches = [KVCache(cfg.n_layers, B, cfg.n_kv_heads, P + steps, cfg.head_dim, kv, "cpu") for _ in "ab"]
    H, hd = cfg.n_kv_heads, cfg.head_dim
    pairs = torch.arange(hd).view(2, hd // 2).t().reshape(-1)  # the step's key element i is the reference's pairs[i]
    if cfg.family == "gpt2":  # no RoPE: its keys in the same order in both
        pairs = torch.arange(hd)
    errors = []  # (step, row) -> max |logit difference| / max |logit|
    with torch.inference_mode():
        positions = (torch.arange(P)[None] - pad[:, None]).clamp(min=0)
        mask = build_mask(pad, 0, P, P, cfg.sliding_window)
        got, want = (
            m(tokens, positions, mask, c, 0, last_only=True)[:, -1] for m, c in zip((step, ref), caches, strict=True)
        )
        for slot in range(P, P + steps):
            errors += ((got - want).abs().amax(-1) / want.abs().amax(-1)).tolist()
            assert torch.equal(got.argmax(-1), want.argmax(-1)), f"slot {slot}"
            chosen, mask = want.argmax(-1)[:, None], build_mask(pad, slot, 1, slot + 1, cfg.sliding_window)
            if kv == torch.float16:
                caches[1].kv[:, :, H:] = caches[0].kv[:, :, H:]
                caches[1].kv[:, :, :H, :, pairs] = caches[0].kv[:, :, :H]
            got, want = (
                m(chosen, (slot - pad)[:, None], mask, c, slot)[:, -1] for m, c in zip((step, ref), caches, strict=True)
            )
    assert max(errors) < 2e-2, errors
    assert sum(e < 1e-4 for e in errors) >= 0.75 * len(errors), errors


@pytest.mark.parametrize("kv", [torch.float16, torch.float32])
@pytest.mark.parametrize("by_layer", [False, True])
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_quantized_gpt2_decode_steps_equal_the_torch_path(tmp_path, qtype, by_layer, kv):
    """GPT-2 with quantized weights through the compiled step (PackedGPT2, nothing folded: LayerNorm
    gains and shifts as vectors, the query scale applied to the query heads), against the plain
    module on the same blocks; by_layer: scale_attn_by_inverse_layer_idx, a query scale per layer."""
    need_native()
    plain, cfg = load_model(make_model(tmp_path / "m", "gpt2", scale_attn_by_inverse_layer_idx=by_layer), "cpu", qtype)
    assert isinstance(plain.layers[0].attn.qkv, QLinear) and cfg.attn_scale_by_layer == by_layer
    with torch.no_grad():  # shifts that matter: the checkpoint's are zeros
        for name, p in plain.named_parameters():
            if name.endswith(("ln1.bias", "ln2.bias")):
                p.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(6))
    check_steps(plain, cfg, kv=kv)


@pytest.mark.parametrize("kv", [torch.float16, torch.float32])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_quantized_decode_steps_equal_the_torch_path(tmp_path, arch, qtype, kv):
    need_native()
    plain, cfg = load_model(make_model(tmp_path / "m", arch), "cpu", qtype)
    assert isinstance(plain.layers[0].attn.wq, QLinear)
    check_steps(plain, cfg, kv=kv)


# Gemma (PackedGemma): (1 + w) gains unfolded, the norms on the branch outputs, GeGLU, Gemma 2's
# soft-caps, local layers' window (6, shorter than the 14 slots) and RoPE base. Left out: Gemma 2
# q4_0 with the float16 cache, where one key landing a half-ulp apart in layer 2 flips 8-bit
# roundings of that layer's next input (91 of its new keys/values move, by up to 0.07) and one
# step's logits by 2.8e-2 of their scale, past check_steps' bound (measured; the steps before and
# after agree to 4e-7); the same model with a float32 cache checks its products.
@pytest.mark.parametrize(
    "arch, qtype, kv",
    [
        ("gemma2", "q8_0", torch.float16),
        ("gemma2", "q8_0", torch.float32),
        ("gemma2", "q4_0", torch.float32),
        ("gemma3", "q8_0", torch.float16),
        ("gemma3", "q8_0", torch.float32),
        ("gemma3", "q4_0", torch.float16),
    ],
)
def test_quantized_gemma_decode_steps_equal_the_torch_path(tmp_path, arch, qtype, kv):
    need_native()
    plain, cfg = load_model(make_model(tmp_path / "m", arch), "cpu", qtype)
    assert isinstance(plain.layers[0].attn.wq, QLinear) and cfg.local_window == 6
    check_steps(plain, cfg, kv=kv)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_mixed_types_decode_steps_equal_the_torch_path(tmp_path, arch):
    """A Q4_K_M-like mix: every type, q/k/v and gate/up of different types (so the step splits
    them), a float32 down projection, a quantized embedding and head."""
    need_native()
    folder = make_model(tmp_path / "m", arch, hidden_size=256, intermediate_size=512)
    plain, cfg = load_model(folder, "cpu", "float32")
    gen = torch.Generator().manual_seed(6)
    kinds = dict(wq="q4_k", wk="q5_k", wv="q6_k", wo="q4_1", w1="q8_0", w3="q4_k", w2=None)
    for i, layer in enumerate(plain.layers):
        for name, qtype in kinds.items():
            module = getattr(layer.attn, name, None) or getattr(layer.ffn, name)
            if qtype is not None:
                owner = "attn" if name in ("wq", "wk", "wv", "wo") else "ffn"
                w = random_qtensor(qtype, *module.weight.shape, gen, std=0.05)
                set_quantized(plain, f"layers.{i}.{owner}.{name}.weight", w)
    V, D = plain.output.weight.shape
    set_quantized(plain, "tok_emb.weight", random_qtensor("q4_0", V, D, gen))
    set_quantized(plain, "output.weight", random_qtensor("q6_k", V, D, gen, std=0.05))
    step_types = prepare_for_inference(copy.deepcopy(plain)).wtypes[0].tolist()
    # ggml's numbers: q4_k, q5_k, q6_k, q4_1, q8_0, q4_k, f32; + X8 or X16: rows interleaved 8 or 16
    # at a time (repack.py: 16 where the library has those kernels)
    x = X16 if repack._wide() else X8
    assert step_types == [12 + x, 13, 14, 3, 8 + x, 12 + x, 0]
    check_steps(plain, cfg)


@pytest.mark.skipif(not STORIES.is_dir(), reason="shared stories260K model folder is absent")
def test_dtype_q8_0_generates_on_the_bundled_model(monkeypatch, capsys):
    """--dtype q8_0 on the real checkpoint: its 172-wide FFN leaves the down projections float32
    (not a multiple of 32), so the step mixes float and quantized weights; info reports both."""
    need_native()
    plain, cfg = load_model(STORIES, "cpu", "q8_0")
    check_steps(plain, cfg, steps=12)
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", STORIES, "--dtype", "q8_0", "--raw", "-p", "Once upon")
    assert code == 0 and out.strip(), err
    code, out, err = cli(monkeypatch, capsys, "info", "-m", STORIES, "--dtype", "q8_0", "--format", "json")
    assert code == 0, err
    assert '"weight_types": "float32 x5, q8_0 x31"' in out and '"decode": "compiled step' in out
    assert '"kv_cache": "float16, 640 B per token and row"' in out  # 5 layers x 2 x 4 kv heads x 8 halves


def test_a_bad_quantized_tensor_is_one_line():
    with pytest.raises(ValueError, match="expected uint8"):
        QTensor("q4_0", (2, 64), torch.zeros(2, 35, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unsupported quantization type"):
        QTensor("q3_k", (2, 256), torch.zeros(2, 110, dtype=torch.uint8))
    with pytest.raises(ValueError, match="cannot quantize"):
        quantize(torch.zeros(2, 256), "q4_k")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux's /proc/self/maps lists the file mappings")
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_folder_quantized_at_load_lets_its_file_go(tmp_path, arch):
    """QA: --dtype q8_0 on a float32 safetensors folder kept the file mapped (its norm gains, biases
    and GPT-2's position embedding were views of the mapping), so every page quantizing read stayed
    resident: the load's memory was float32's. Once loaded, nothing of the model is in the file's
    mapping, which the kernel's list shows gone; a float32 load, whose weights are the mapping, still
    holds it (the check sees a mapping where there is one). Tied weights stay tied."""
    import gc

    folder = make_model(tmp_path / arch, arch, tie_word_embeddings=True)

    def mapped() -> list[str]:
        gc.collect()
        return [line for line in Path("/proc/self/maps").read_text().splitlines() if str(folder) in line]

    model, _ = load_model(folder, device="cpu", dtype="float32")
    assert mapped()
    del model
    assert not mapped()
    model, _ = load_model(folder, device="cpu", dtype="q8_0")
    assert not mapped()
    assert model.output.qdata is model.tok_emb.qdata  # the head is the embedding's blocks
