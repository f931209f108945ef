"""The compiled decode step (csrc/decode.c): built once per machine with its C compiler, then cached.

Nothing here is required. `library()` returns None, and the torch path runs, when there is no C
compiler, the build fails, the platform is not Linux/macOS, or TIANKONG_NATIVE=0 is set; `reason()`
then says why (`tiankong info` shows it). The build is cached under $XDG_CACHE_HOME/tiankong (or
~/.cache/tiankong) keyed by the source, the compiler, the flags and this CPU, because -march=native
code from one CPU may not run on another; it is written to a temporary name and renamed into
place, so two processes building at once, or one killed mid-build, never leave a broken library.
A failed build leaves its error message beside it, so later processes say why without compiling
again (delete the .failed file to retry).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parent / "csrc" / "decode.c"
HEADERS = [SOURCE.parent / "kernels.h"]  # included by decode.c; part of the cache key
FLAGS = ["-O3", "-march=native", "-std=gnu11", "-fopenmp", "-fPIC", "-shared"]

_lib: ctypes.CDLL | None = None
_reason: str | None = None  # why the library is unavailable, once that is known


class Model(ctypes.Structure):
    """Mirror of decode.c's `Model` (field order and types must match)."""

    _fields_ = [(name, ctypes.c_int) for name in
                ("n_layers", "dim", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab", "window", "bf16")]
    _fields_ += [("eps", ctypes.c_float)]
    _fields_ += [(name, ctypes.POINTER(ctypes.c_void_p)) for name in ("wqkv", "wo", "w13", "w2", "bqkv")]
    _fields_ += [(name, ctypes.c_void_p) for name in ("out", "norm", "inv_freq")]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tiankong" / "native"


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


def _build() -> ctypes.CDLL:
    if sys.platform not in ("linux", "darwin"):
        raise RuntimeError(f"no native decode step on {sys.platform}")
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    parts = [SOURCE.read_text(), *(h.read_text() for h in HEADERS), cc, version, " ".join(FLAGS),
             platform.machine(), _cpu_signature(), torch.__version__]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    target = _cache_dir() / f"decode-{key}.so"
    failed = target.with_suffix(".failed")  # a failed build is not retried by every process
    if failed.exists():
        raise RuntimeError(f"{failed.read_text().strip()} (delete {failed} to try again)")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                                  timeout=300)
            if done.returncode != 0:
                lines = done.stderr.strip().splitlines() or ["(no message)"]
                first = next((ln for ln in lines if "error" in ln), lines[0])
                why = f"compiling {SOURCE.name} with {Path(cc).name} failed: {first}"
                failed.write_text(why + "\n")
                raise RuntimeError(why)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    # torch is imported, so its libgomp is loaded; the library's libgomp.so.1 resolves to that
    # same runtime (one thread pool for both).
    lib = ctypes.CDLL(str(target))
    lib.tk_decode_step.restype = ctypes.c_int
    lib.tk_decode_step.argtypes = [ctypes.POINTER(Model), ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64,
                                   ctypes.c_void_p, ctypes.c_int]
    return lib


def library() -> ctypes.CDLL | None:
    """The built library, or None (see `reason()`). Builds at most once per process."""
    global _lib, _reason
    if _lib is None and _reason is None:
        if os.environ.get("TIANKONG_NATIVE", "1") == "0":
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
