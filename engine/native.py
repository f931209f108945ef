"""The compiled decode step (csrc/decode.c): built once per machine with its C compiler, then cached.

Nothing here is required. `library()` returns None, and the torch path runs, when there is no C
compiler, the build fails, the platform is not Linux/macOS, or TIANKONG_NATIVE=0 is set; `reason()`
then says why (`tiankong info` shows it). The build is cached under $XDG_CACHE_HOME/tiankong (or
~/.cache/tiankong) keyed by the source, the compiler, the flags and this CPU, because -march=native
code from one CPU may not run on another; it is written to a temporary name and renamed into
place, so two processes building at once, or one killed mid-build, never leave a broken library.
A failed build leaves its error message beside it, so later processes say why without compiling
again; it is retried once the message is an hour old (a compiler fixed since, its headers
installed) or at once when the .failed file is deleted. A new compiler or version is a new cache
key, so it is tried at once. Where the cache folder cannot be written (a read-only or missing
home), the step is built into a temporary folder for this process alone.

The engine prints nothing: a caller that wants to say "building…" (it takes seconds) gives
`on_build` a callback, and asks `reason()` afterwards why the step is unavailable.

The model's weights bound to the step (NativeStep, WeightBuffer) are engine/native_step.py; here
are the library and its one-call entry points (matvec, matmul, dequantize_rows, f16_roundtrip, sample).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import platformdirs
import torch

from . import threads
from .errors import InputError, quoted

SOURCE = Path(__file__).resolve().parent / "csrc" / "decode.c"
HEADERS = sorted(SOURCE.parent.glob("*.h"))  # included by decode.c; part of the cache key (every one: a
# header left out of the key would leave an old build in use after it changes)
FLAGS = ["-O3", "-march=native", "-std=gnu11", "-fopenmp", "-fPIC", "-shared"]
RETRY_AFTER_S = 3600  # a failed build is tried again after this long: once an hour, not once a process


class Library(ctypes.CDLL):
    """The compiled step (csrc/decode.c) as ctypes loads it, carrying its Model struct type."""

    Model: type[ctypes.Structure]  # built from tk_model_layout() at load (model_struct)


_lib: Library | None = None
_reason: str | None = None  # why the library is unavailable, once that is known
_announce: Callable[[str], None] | None = None  # on_build's callback


# ctypes for each field kind of decode.c's MODEL_FIELDS.
_KINDS = {
    "INT": ctypes.c_int,
    "FLOAT": ctypes.c_float,
    "PTRS": ctypes.POINTER(ctypes.c_void_p),
    "FPTRS": ctypes.POINTER(ctypes.c_void_p),
    "PTR": ctypes.c_void_p,
    "FPTR": ctypes.c_void_p,
    "IPTR": ctypes.c_void_p,
}


def model_struct(layout: str) -> type[ctypes.Structure]:
    """The ctypes mirror of decode.c's `Model`, built from the library's own description of it
    (tk_model_layout); a layout ctypes would place differently is refused."""
    *fields, size = layout.split(";")
    parsed = [f.split() for f in fields]
    struct = type("Model", (ctypes.Structure,), {"_fields_": [(name, _KINDS[kind]) for name, kind, _ in parsed]})
    placed = [(name, getattr(struct, name).offset) for name, _, _ in parsed]
    if placed != [(name, int(off)) for name, _, off in parsed] or ctypes.sizeof(struct) != int(size.split()[1]):
        raise RuntimeError(f"the compiled step's Model layout ({layout}) does not map onto ctypes")
    return struct


def _cache_dir() -> Path:
    # $XDG_CACHE_HOME/tiankong or ~/.cache/tiankong on Linux, the platform's own elsewhere.
    return Path(platformdirs.user_cache_dir("tiankong", appauthor=False)) / "native"


def _cpu_signature() -> str:
    """The CPU's model and feature flags (Linux), so a cache shared between machines stays correct."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
    return "\n".join(dict.fromkeys(keep))


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build() -> Library:
    """Compile csrc/decode.c (cached by source, compiler, flags, CPU and torch) and load it."""
    if sys.platform not in ("linux", "darwin"):
        raise RuntimeError(f"no native decode step on {sys.platform}")
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    target = _cache_dir() / f"decode-{_build_key(cc, version)}.so"
    if target.exists():  # also from a cache this process cannot write to
        return _load(target)
    failed = target.with_suffix(".failed")  # a failed build is not retried by every process
    _raise_recent_failure(failed)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    except OSError as e:
        return _build_for_this_process(cc, target.parent, e)
    os.close(fd)
    _announced("once per machine")
    about = f"compiler: {cc}\nversion: {(version.strip().splitlines() or ['?'])[0]}"  # for a reader of the file
    _compile(cc, tmp, target, failed, about)
    return _load(target)


def _build_key(cc: str, version: str) -> str:
    """What the built library depends on, hashed: sources, compiler and its version, flags, CPU, torch."""
    parts = [
        SOURCE.read_text(),
        *(h.read_text() for h in HEADERS),
        cc,
        version,
        " ".join(FLAGS),
        platform.machine(),
        _cpu_signature(),
        torch.__version__,
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _raise_recent_failure(failed: Path) -> None:
    """Raise the failure a process recorded beside the build in the last RETRY_AFTER_S; an older one
    is tried again (its compiler may have been mended since: headers or libgomp installed)."""
    try:
        why = failed.read_text().splitlines()[0]
        age = time.time() - failed.stat().st_mtime
    except (OSError, IndexError):  # none, unreadable or empty: build
        return
    if age < RETRY_AFTER_S:
        left = max(1, round((RETRY_AFTER_S - age) / 60))
        raise RuntimeError(f"{why} (tried again in {left} min, or at once if you delete {failed})")


def _compile(cc: str, tmp: str, target: Path, failed: Path | None, about: str = "") -> None:
    """Compile into the file `tmp`, renamed to `target`; on an error, write why (and `about` the
    compiler) to `failed`, when given, and raise."""
    try:
        done = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["(no message)"]
            first = next((ln for ln in lines if "error" in ln), lines[0])
            why = f"compiling {SOURCE.name} with {Path(cc).name} failed: {first}"
            if failed is not None:
                with contextlib.suppress(OSError):  # a full disk: this process still says why
                    failed.write_text(f"{why}\n{about}\ntime: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n")
            raise RuntimeError(why)
        os.replace(tmp, target)
        if failed is not None:
            failed.unlink(missing_ok=True)  # an hour-old failure, retried: it is past
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build_for_this_process(cc: str, cache: Path, problem: OSError) -> Library:
    """The build in a temporary folder, when the cache folder cannot be written: this process
    gets the step (and builds it again next time), rather than the torch path for good."""
    where = f"{problem.strerror}: {problem.filename}" if problem.strerror and problem.filename else str(problem)
    fix = "set XDG_CACHE_HOME to a writable folder" if sys.platform == "linux" else "make it writable"
    unwritable = f"the build cache {cache} cannot be written ({where}); {fix}"
    try:
        folder = tempfile.TemporaryDirectory(prefix="tiankong-native-")
    except OSError as e:
        raise RuntimeError(f"{unwritable} (no temporary folder either: {e})") from None
    with folder:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder.name)
        os.close(fd)
        _announced(f"for this process only: {unwritable} to keep it")
        try:
            _compile(cc, tmp, Path(folder.name) / "decode.so", None)
        except RuntimeError as e:
            raise RuntimeError(f"{e} (in a temporary folder: the build cache {cache} cannot be written)") from None
        return _load(Path(folder.name) / "decode.so")  # loaded, the file may go with its folder


def _announced(how: str) -> None:
    """Tell on_build's callback that a build starts now."""
    if _announce is not None:
        # A notice only: a callback that fails (a closing screen) must not cost the process its step.
        with contextlib.suppress(Exception):
            _announce(how)


def _load(target: Path) -> Library:
    """The built library with its Model struct type and its functions' signatures."""
    # torch is imported, so its libgomp is loaded; the library's libgomp.so.1 resolves to that
    # same runtime (one thread pool for both).
    lib = Library(str(target))
    lib.tk_model_layout.restype = ctypes.c_char_p
    lib.Model = model_struct(lib.tk_model_layout().decode())
    lib.tk_matvec.restype = ctypes.c_int
    lib.tk_matvec.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    lib.tk_matvec.argtypes += [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    lib.tk_matmul.restype = ctypes.c_int
    lib.tk_matmul.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.tk_matmul.argtypes += [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    lib.tk_repack.restype = ctypes.c_int
    lib.tk_repack.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.tk_x16.restype = ctypes.c_int
    lib.tk_x16.argtypes = []
    lib.tk_sample.restype = ctypes.c_int
    lib.tk_sample.argtypes = [ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] * 11 + [ctypes.c_int]
    lib.tk_sample.argtypes += [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.tk_dequantize_rows.restype = ctypes.c_int
    lib.tk_dequantize_rows.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p]
    lib.tk_dequantize_rows.argtypes += [ctypes.c_int, ctypes.c_void_p]
    lib.tk_f16_roundtrip.restype = None
    lib.tk_f16_roundtrip.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 2
    lib.tk_decode_step.restype = ctypes.c_int
    lib.tk_decode_step.argtypes = [
        ctypes.POINTER(lib.Model),
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    return lib


def library() -> Library | None:
    """The built library, or None (see `reason()`). Builds at most once per process."""
    global _lib, _reason
    if _lib is None and _reason is None:
        if switched_off():
            _reason = "switched off by TIANKONG_NATIVE=0"
        else:
            try:
                _lib = _build()
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                _reason = str(e)
    return _lib


def reason() -> str | None:
    """Why the native step is unavailable (None when it is available or was never asked for)."""
    return _reason


def switched_off() -> bool:
    """TIANKONG_NATIVE=0: the torch path by the user's choice (nothing to warn them about); 1 or unset:
    the compiled step where it builds. Any other value is an InputError naming both: a typo
    (TIANKONG_NATIVE=off) would otherwise leave the step on without a word."""
    value = os.environ.get("TIANKONG_NATIVE", "1").strip()
    if value not in ("0", "1", ""):
        raise InputError(
            f"TIANKONG_NATIVE is {quoted(value, 40)!r}; set it to 0 (decode through torch) or 1 (the "
            "compiled step, the default), or unset it"
        )
    return value == "0"


def on_build(callback: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Call `callback(how)` just before this process compiles the step, `how` being "once per
    machine", or "for this process only: ..." with why and the fix; returns the callback it replaces
    (None: none). A build takes seconds and happens inside Engine.load (or a first sample), so a
    caller can say what the wait is; the engine itself prints nothing."""
    global _announce
    before, _announce = _announce, callback
    return before


def matvec(lib: Library, w: torch.Tensor, type_: int, x: torch.Tensor, n_threads: int | None = None) -> torch.Tensor:
    """The compiled step's own product y (B, O) = x (B, I) W^T for one weight of ggml type `type_`:
    W float32 (O, I), or uint8 (O, row bytes) of quantized rows; a row of y has the same bits at any
    B. The step's head for a prompt's last tokens (NativeStep.head), tests and bench/quant.py."""
    assert w.is_contiguous() and x.dtype == torch.float32
    x = x.contiguous()
    y = torch.empty(x.shape[0], w.shape[0])
    n_threads = torch.get_num_threads() if n_threads is None else n_threads
    rc = lib.tk_matvec(type_, w.data_ptr(), w.shape[0], x.shape[1], x.data_ptr(), x.shape[0], y.data_ptr(), n_threads)
    if rc != 0:
        raise MemoryError("the compiled matrix-vector product could not allocate its scratch memory")
    return y


def matmul(lib: Library, w: torch.Tensor, parts: torch.Tensor, out_features: int, x: torch.Tensor) -> torch.Tensor:
    """y (..., O) = x (..., I) W^T through tk_matmul, for the rows of quant.pack_rows: w the uint8
    bytes of its parts back to back, parts (n, 2) int32 each part's (ggml type, rows), O =
    out_features the rows' sum. A prompt's tokens through one quantized weight at once (the
    prefill's linears); called ~150 times a prompt, so nothing here makes more tensors than it must."""
    x2 = x.reshape(-1, x.shape[-1])
    if x2.dtype != torch.float32 or not x2.is_contiguous():
        x2 = x2.to(torch.float32).contiguous()  # (T, I)
    y = torch.empty(x2.shape[0], out_features)
    rc = lib.tk_matmul(
        parts.shape[0],
        parts.data_ptr(),
        w.data_ptr(),
        x2.shape[1],
        x2.data_ptr(),
        x2.shape[0],
        y.data_ptr(),
        threads.now(),
    )
    if rc != 0:
        raise MemoryError("the compiled matrix product could not allocate its scratch memory")
    return y.view(*x.shape[:-1], out_features)


def blocks_matmul(w: torch.Tensor, parts: torch.Tensor, out_features: int, x: torch.Tensor) -> torch.Tensor:
    """matmul on this process's library, for the modules made only where it loads (the packed
    Llama/Gemma prompts' quantized and float16 linears, quant.CompiledQLinear)."""
    lib = library()
    assert lib is not None, "made only where the compiled library loads"
    return matmul(lib, w, parts, out_features, x)


def dequantize_rows(lib: Library, type_: int, data: torch.Tensor, n: int, ids: torch.Tensor) -> torch.Tensor:
    """Rows ids (B,) of a quantized weight, `data` its uint8 bytes (rows, row bytes) in ggml type
    `type_` (plain layout, rows of n elements) -> (B, n) float32: quant.py's dequantization, the same
    bits, in one call (csrc/dequant.h; an embedding lookup). An id outside [0, rows) raises
    IndexError, as torch's indexing does."""
    assert data.is_contiguous() and data.dtype == torch.uint8 and ids.dtype == torch.int64 and ids.is_contiguous()
    out = torch.empty(ids.shape[0], n)
    rows = data.shape[0]
    rc = lib.tk_dequantize_rows(type_, data.data_ptr(), rows, n, ids.data_ptr(), ids.shape[0], out.data_ptr())
    if rc == -2:
        raise IndexError(f"index out of range: a row id outside [0, {rows})")
    assert rc == 0, f"the compiled dequantizer does not know ggml type {type_}"
    return out


def f16_roundtrip(lib: Library, x: torch.Tensor, portable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n,) float32 as the compiled step's float16 KV cache stores it and reads it back -> (the
    half bits as int16 (n,), the widened floats (n,)); portable: the plain C conversions (builds
    without F16C) instead of the CPU's. For tests."""
    x = x.to(torch.float32).contiguous()
    h, y = torch.empty(x.shape, dtype=torch.int16), torch.empty_like(x)
    lib.tk_f16_roundtrip(x.data_ptr(), h.data_ptr(), y.data_ptr(), x.numel(), int(portable))
    return h, y


def sample(
    lib: Library,
    logits: torch.Tensor,
    columns: tuple[torch.Tensor, ...],
    u: list[float],
    seen: torch.Tensor | None,
    counts: torch.Tensor | None,
    n_top: int,
) -> tuple[np.ndarray, np.ndarray]:
    """tk_sample (csrc/sample.h): one token per row of logits (B, V) float32, with columns =
    (temperature, top_k, top_p, min_p, repetition, presence, frequency), contiguous (B,) each
    (top_k int64, the rest float32), u the rows' float64 uniforms, and the penalty state, seen
    (B, V) bool and counts (B, V) float32 or None, where the drawn tokens are recorded -> ids
    (B, 1 + n_top) int64 (the token, then the candidates) and vals (B, 3 + 2 n_top) float32 (the
    token's log-prob, sampling prob and the entropy, then the candidates' log-probs, then their
    sampling probs). Called once a decode step, right after the step has streamed the weights
    through the caches, so it makes two numpy arrays (cheaper than tensors) and nothing else."""
    B, V = logits.shape
    assert logits.dtype == torch.float32 and logits.is_contiguous() and columns[1].dtype == torch.int64
    for state, dtype in ((seen, torch.bool), (counts, torch.float32)):
        assert state is None or (state.shape == logits.shape and state.dtype == dtype and state.is_contiguous())
    ids, vals = np.empty((B, 1 + n_top), dtype=np.int64), np.empty((B, 3 + 2 * n_top), dtype=np.float32)
    rc = lib.tk_sample(
        B,
        V,
        logits.data_ptr(),
        *(c.data_ptr() for c in columns[:4]),
        (ctypes.c_double * B)(*u),
        *(c.data_ptr() for c in columns[4:]),
        None if seen is None else seen.data_ptr(),
        None if counts is None else counts.data_ptr(),
        n_top,
        ids.ctypes.data,
        vals.ctypes.data,
        threads.now(),
    )
    if rc != 0:
        raise MemoryError("the compiled sampler could not allocate its scratch memory")
    return ids, vals
