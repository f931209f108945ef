"""What loading a GGUF file costs that the file does not show, decided from its header alone.

Where the compiled step (csrc/decode.c) runs a file's architecture on the CPU, its quantized blocks
and F16 halves are kept as they are; elsewhere they become floats at load, several times the file
in memory. `keeps_blocks` and `gguf_load_dtype` decide that (Engine.load and model_facts ask here),
`load_note` says it in a line with why and the fix, and `compiled_step_path` gives Engine.decode_path's
words for a model the step decodes.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import ModelLoadError, quoted
from .gguf_model import is_gguf, peek, quantization_name
from .model import dtype_name, resolve_device
from .model_list import human_bytes
from .native import library as native_library
from .native import reason as native_reason
from .native import switched_off as native_switched_off
from .quant import QTYPES, QUANTIZABLE

# GGUF architectures the compiled step runs (Phi-3: fused parts split by rows; Gemma 2/3: PackedGemma;
# GPT-2: PackedGPT2): their blocks stay quantized on the CPU and an F16 file's halves stay halves.
_STEP_ARCHS = ("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "gpt2")


def keeps_blocks(path: Path, device: str | torch.device, dtype: str | torch.dtype | None, pack: bool) -> bool:
    """Whether a GGUF file's quantized matrices stay in their blocks: packed on the CPU, no dtype asked
    for, one of _STEP_ARCHS and the compiled step built. Elsewhere QLinear would dequantize every
    weight on every forward, so they are dequantized once at load instead."""
    if not (pack and dtype in (None, "auto") and resolve_device(device).type == "cpu"):
        return False
    arch = peek(path, ("general.architecture",)).get("general.architecture")
    return arch in _STEP_ARCHS and native_library() is not None


_FLOAT_FILES = ("F32", "F16", "BF16")  # GGUF file types whose weights are floats, not blocks
# Engine.decode_path's words for the compiled step, and for quantized weights on the CPU without it
COMPILED_STEP = "compiled step (csrc/decode.c)"
QUANTIZED_TORCH = "torch, every quantized weight dequantized at each step (several times slower)"


def compiled_step_path(cfg: ModelConfig) -> str:
    """Engine.decode_path's words for a model the compiled step decodes: with long-rope (Phi-3),
    the positions from the original context on run in torch, the step holding the short factors."""
    s = cfg.rope_scaling
    if s and s.get("rope_type") == "longrope":
        return f"{COMPILED_STEP}; from position {s['original_max_position_embeddings']} in torch (long-rope's long factors)"
    return COMPILED_STEP


def _file_kind(path: Path) -> str | None:
    """A GGUF file's general.file_type as people write it (F16, Q4_K_M), or None."""
    return quantization_name(peek(path, ("general.file_type",)).get("general.file_type"))


def gguf_load_dtype(path: Path, keeps_blocks: bool, dtype: str | torch.dtype | None) -> str | torch.dtype | None:
    """The dtype a GGUF file loads in: float16 for an F16 file whose matrices the compiled step reads
    as they are (keeps_blocks: keeps_blocks' answer), as llama.cpp keeps them: half the memory and
    the bytes per token of widening them to float32; else `dtype`. Engine.load and model_facts both
    ask here."""
    if not keeps_blocks:
        return dtype
    head = peek(path, ("general.architecture", "general.file_type"))
    f16 = quantization_name(head.get("general.file_type")) == "F16"
    return "float16" if f16 and head.get("general.architecture") in _STEP_ARCHS else dtype


def load_note(path: Path, device: str | torch.device, dtype: str | torch.dtype | None) -> str | None:
    """A line to say before loading a GGUF file where the load costs what the file does not show
    (from its header: no tensor read), else None. On the CPU: F16 weights that the compiled step
    does not take are widened to float32 (twice the file in memory and read per token), quantized
    blocks it does not take are dequantized to float32 (a Q4_K_M file: ~6.5x its size), each with
    why it does not take them (the decode row's reason: _step_absent) and the fix; a --dtype of
    floats dequantizes blocks the step would keep (_float_dtype_note). A quantized file given
    --dtype q8_0 (etc.) is dequantized and quantized again: a second rounding (llama-quantize
    refuses it without --allow-requantize); said, not refused, since for a file whose blocks are
    dequantized at load anyway (a GPU, no compiled step) it saves memory."""
    dtype = dtype_name(dtype)
    if not is_gguf(path):
        return None
    kind = _file_kind(path)
    if isinstance(dtype, str) and dtype in QUANTIZABLE and kind not in (None, *_FLOAT_FILES):
        return (
            f"note: the file is {kind} already; --dtype {dtype} dequantizes its blocks and rounds them "
            f"again ({dtype} from {kind}: no more exact than {kind}); leave out --dtype to keep the file's own"
        )
    if kind is None or resolve_device(device).type != "cpu":
        return None
    if dtype not in (None, "auto"):
        return _float_dtype_note(path, kind, str(dtype))
    absent = _step_absent(path)
    if absent is None and kind not in _FLOAT_FILES:
        return _widened_halves(path, kind)
    if absent is None or (kind in _FLOAT_FILES and kind != "F16"):
        return None
    why, switch = absent
    if kind == "F16":
        return (
            f"note: the file's F16 weights are widened to float32 on the CPU ({why}): twice the file in memory "
            f"and read per token; {switch + ' to keep the halves; ' if switch else ''}--dtype q8_0 holds them "
            "in about half the file's bytes, --dtype bfloat16 in as many"
        )
    return (
        f"note: the file's {kind} blocks are dequantized to float32 on the CPU ({why}): {_widened(path, 4)}; "
        f"{switch + ' to keep the blocks; ' if switch else ''}--dtype bfloat16 holds them in half that"
    )


def _widened_halves(path: Path, kind: str) -> str | None:
    """load_note for a quantized file whose blocks the compiled step keeps: the matrices it holds in
    F16 or BF16 (llama-quantize keeps some, and falls back to F16 for rows its type cannot split),
    which GGUFModel.kept_type reads as floats and the model holds in float32; None where it has none."""
    import gguf

    from .gguf_header import tensor_infos
    from .gguf_split import part_paths

    kept = {number for _, _, number in QTYPES.values()} | {0}  # blocks the step keeps, and F32
    try:
        infos = [info for part in part_paths(path) for info in tensor_infos(part)]
    except ModelLoadError:  # a damaged file: the load says so
        return None
    widened = [
        (name, math.prod(dims), gguf.GGMLQuantizationType(number).name)
        for name, dims, number in infos
        if len(dims) == 2 and number not in kept
    ]
    if not widened:
        return None
    names = ", ".join(name for name, _, _ in widened[:3]) + (
        f" and {len(widened) - 3} more" if len(widened) > 3 else ""
    )
    types = "/".join(sorted({t for _, _, t in widened}))
    more = human_bytes(sum(n for _, n, _ in widened) * 2)  # 4 bytes an element where the file has 2
    what = "matrix" if len(widened) == 1 else "matrices"
    return (
        f"note: the {kind} file holds {len(widened)} {types} {what} ({names}), widened to float32 at load "
        f"(the compiled step keeps only the blocks as they are): {more} more in memory than in the file"
    )


def _step_absent(path: Path) -> tuple[str, str] | None:
    """(why, switch) where the compiled step does not read this GGUF file's blocks and halves on
    the CPU, else None. For an architecture it takes, why is the decode row's reason
    (native.reason(): switched off by TIANKONG_NATIVE=0, no C compiler, a failed build, the last
    two with their fix), and switch the fix for the first ("unset TIANKONG_NATIVE", else ""); for
    another, that no compiled step takes its files."""
    arch = peek(path, ("general.architecture",)).get("general.architecture")
    if arch not in _STEP_ARCHS:
        return f"no compiled step for {quoted(arch, 40)} files", ""
    if native_library() is not None:
        return None
    return f"compiled step unavailable: {native_reason()}", "unset TIANKONG_NATIVE" if native_switched_off() else ""


def _float_dtype_note(path: Path, kind: str, dtype: str) -> str | None:
    """load_note for --dtype float32, bfloat16 or float16 on the CPU: said where leaving --dtype out
    would keep the file's blocks (or F16 halves) for the compiled step, or where bfloat16 would
    halve the float32 it asks for; None where the float it names is the least the file can take
    (blocks no step keeps, in bfloat16) or costs no more than the file (an F16 file in bfloat16)."""
    size = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype)
    if size is None or (kind in _FLOAT_FILES and (kind != "F16" or size == 2)):
        return None
    what, keep = ("F16 weights", "halves") if kind == "F16" else (f"{kind} blocks", "blocks")
    absent = _step_absent(path)
    why, switch = absent or ("", "")
    if absent is None:
        fix = f"leave out --dtype to keep the {keep} (the compiled step reads them as they are)"
    elif switch:  # the step, switched off, would keep them
        fix = f"{switch} and leave out --dtype to keep the {keep} ({why})"
    else:
        fix = ""
    if size == 4:
        fix += f"{'; ' if fix else ''}--dtype bfloat16 holds them in half that"
    return (
        f"note: --dtype {dtype} turns the file's {what} into {dtype} at load: {_widened(path, size)}; {fix}"
        if fix
        else None
    )


def _widened(path: Path, size: int) -> str:
    """The weights of a GGUF file (all its parts) at `size` bytes an element, as a line says them:
    how many bytes, and how many times the file."""
    from .gguf_header import parameter_count
    from .gguf_split import part_paths
    from .model_list import weight_bytes

    counts = [parameter_count(p) for p in part_paths(path)]
    file = weight_bytes(path)
    if None in counts or not file:
        return f"{size} bytes a weight in memory, several times the file"
    n = sum(c for c in counts if c is not None) * size
    return f"about {human_bytes(n)} in memory, {n / file:.1f}x the file"
