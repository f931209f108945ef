"""GGUF files written from tiny Hugging Face models, laid out as llama.cpp's converter lays them out.

`write_gguf(hf_folder, path, qtype)` reads a folder tests/tiny_models.py made and writes what
convert_hf_to_gguf.py writes for it: llama.cpp's own HF -> GGUF tensor names (gguf's
TensorNameMap, not tiankong's table), q/k rows of the "llama" architecture permuted into
interleaved RoPE pairs, GPT-2's Conv1D weights transposed, 1-D tensors in F32, matrices in `qtype`
(the converter's --outtype f32/f16/q8_0; q4_0/q4_1/q5_0 as llama-quantize writes them), and the
metadata keys the converter sets. The tokenizer is written by tests/gguf_vocab.py when it exists.

`dequantized_folder(hf_folder, out, qtype)` writes the same HF model with every weight that
write_gguf quantizes replaced by its quantize -> dequantize round trip: the reference a quantized
GGUF must equal.

`llama_cpp_for_quantized()` is llama-cpp-python for tests that evaluate quantized files with it, or a
skip where that would kill the test process (ggml's AMX kernels in a native build on some CPUs).
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import gguf
import numpy as np
import pytest
import torch

QTYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
    "q4_1": gguf.GGMLQuantizationType.Q4_1,
    "q5_0": gguf.GGMLQuantizationType.Q5_0,
}
# transformers architecture -> (GGUF architecture, q/k permuted as llama.cpp's LlamaModel does)
GGUF_ARCHS = {
    "LlamaForCausalLM": (gguf.MODEL_ARCH.LLAMA, True),
    "MistralForCausalLM": (gguf.MODEL_ARCH.LLAMA, True),
    "Qwen2ForCausalLM": (gguf.MODEL_ARCH.QWEN2, False),
    "Qwen3ForCausalLM": (gguf.MODEL_ARCH.QWEN3, False),
    "Gemma2ForCausalLM": (gguf.MODEL_ARCH.GEMMA2, False),
    "Gemma3ForCausalLM": (gguf.MODEL_ARCH.GEMMA3, False),
    "Phi3ForCausalLM": (gguf.MODEL_ARCH.PHI3, False),
    "GPT2LMHeadModel": (gguf.MODEL_ARCH.GPT2, False),
}


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: HF's rotate-half rows -> interleaved RoPE pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_state(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float32) for k, v in load_file(folder / "model.safetensors").items()}


def _gguf_tensors(cfg: dict, state: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array in the GGUF layout) in the converter's order."""
    arch, permuted = GGUF_ARCHS[cfg["architectures"][0]]
    n_layers = cfg.get("num_hidden_layers") or cfg["n_layer"]
    names = gguf.get_tensor_name_map(arch, n_layers)
    out = []
    for name, w in state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")):
            continue  # buffers the converter drops
        if permuted and name.endswith(("q_proj.weight", "q_proj.bias")):
            w = permute(w, cfg["num_attention_heads"], cfg["num_attention_heads"])
        if permuted and name.endswith(("k_proj.weight", "k_proj.bias")):
            w = permute(w, cfg["num_attention_heads"], cfg.get("num_key_value_heads"))
        if arch == gguf.MODEL_ARCH.GPT2 and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            w = w.T.copy()
        if arch in (gguf.MODEL_ARCH.GEMMA2, gguf.MODEL_ARCH.GEMMA3) and name.endswith("norm.weight"):
            w = w + 1  # Gemma2Model/Gemma3Model: the (1 + w) gain stored whole
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new is not None, name
        out.append((new, w))
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rope.get("rope_type") == "llama3":  # LlamaModel.generate_extra_tensors
        out.insert(0, ("rope_freqs.weight", llama3_divisors(cfg, rope)))
    if rope.get("long_factor"):  # Phi3MiniModel.generate_extra_tensors
        out[:0] = [(f"rope_factors_{k}.weight", np.array(rope[f"{k}_factor"], np.float32)) for k in ("long", "short")]
    return out


def llama3_divisors(cfg: dict, rope: dict) -> np.ndarray:
    """The converter's rope_freqs for llama3 scaling: 1 for high frequencies, `factor` for low ones,
    1 / ((1 - smooth) / factor + smooth) between (smooth linear in context / wavelength)."""
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    theta = rope.get("rope_theta") or cfg.get("rope_theta", 10000.0)
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    orig = rope.get("original_max_position_embeddings", 8192)
    wavelength = 2 * math.pi * theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim)
    smooth = (orig / wavelength - low) / (high - low)
    blend = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelength < orig / high, 1.0, np.where(wavelength > orig / low, factor, blend)).astype(np.float32)


def _qtype_of(name: str, w: np.ndarray, qtype: str, types: dict[str, str] | None = None) -> gguf.GGMLQuantizationType:
    """The converter's rule: 1-D tensors, norms and position embeddings stay F32; matrices get the
    requested type, or their own in `types` (GGUF name -> qtype: llama-quantize's F16 fallbacks)."""
    if types and name in types:
        return QTYPES[types[name]]
    if w.ndim == 1 or name.endswith("_norm.weight") or name == "position_embd.weight":
        return gguf.GGMLQuantizationType.F32
    return QTYPES[qtype]


def _metadata(writer: gguf.GGUFWriter, cfg: dict, qtype: str) -> None:
    writer.add_name("tiny")
    if cfg["architectures"][0] == "GPT2LMHeadModel":  # GPT2Model.set_gguf_parameters
        writer.add_block_count(cfg["n_layer"])
        writer.add_context_length(cfg["n_ctx"] if "n_ctx" in cfg else cfg["n_positions"])
        writer.add_embedding_length(cfg["n_embd"])
        writer.add_feed_forward_length(4 * cfg["n_embd"])
        writer.add_head_count(cfg["n_head"])
        writer.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    else:  # TextModel.set_gguf_parameters (+ LlamaModel's vocab size and rope dimension count)
        writer.add_block_count(cfg["num_hidden_layers"])
        writer.add_context_length(cfg["max_position_embeddings"])
        writer.add_embedding_length(cfg["hidden_size"])
        writer.add_feed_forward_length(cfg["intermediate_size"])
        writer.add_head_count(cfg["num_attention_heads"])
        writer.add_head_count_kv(cfg["num_key_value_heads"])
        rope = cfg.get("rope_parameters") or {}
        writer.add_rope_freq_base(cfg.get("rope_theta") or rope.get("full_attention", rope).get("rope_theta", 1e4))
        writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        if cfg.get("head_dim") is not None:
            writer.add_key_length(cfg["head_dim"])
            writer.add_value_length(cfg["head_dim"])
        _gemma_metadata(writer, cfg)
        _phi3_metadata(writer, cfg)
        if cfg["architectures"][0] in ("LlamaForCausalLM", "MistralForCausalLM"):
            writer.add_vocab_size(cfg["vocab_size"])
            writer.add_rope_dimension_count(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    writer.add_file_type({"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8}[qtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _gemma_metadata(writer: gguf.GGUFWriter, cfg: dict) -> None:
    """Gemma2Model/Gemma3Model's own keys: soft-caps, the window, the local RoPE base, global scaling."""
    if not cfg["architectures"][0].startswith("Gemma"):
        return
    if cfg.get("attn_logit_softcapping"):
        writer.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
    if cfg.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    writer.add_sliding_window(cfg["sliding_window"])
    rope = cfg.get("rope_parameters") or {}
    if "sliding_attention" in rope:
        writer.add_rope_freq_base_swa(rope["sliding_attention"]["rope_theta"])
    full = rope.get("full_attention") or {}
    if full.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(full["factor"])


def _phi3_metadata(writer: gguf.GGUFWriter, cfg: dict) -> None:
    """Phi3MiniModel's keys: the original context, rotary dims, the window (0: none), the attention factor."""
    if cfg["architectures"][0] != "Phi3ForCausalLM":
        return
    rope = cfg.get("rope_parameters") or {}
    orig = cfg.get("original_max_position_embeddings") or rope["original_max_position_embeddings"]
    writer.add_rope_scaling_orig_ctx_len(orig)
    partial = rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    writer.add_rope_dimension_count(int(partial * cfg["hidden_size"]) // cfg["num_attention_heads"])
    writer.add_sliding_window(cfg.get("sliding_window") or 0)
    if rope.get("long_factor"):
        scale = cfg["max_position_embeddings"] / orig
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0)


def write_gguf(
    hf_folder: Path, path: Path, qtype: str = "f32", tokenizer: bool = True, types: dict[str, str] | None = None
) -> Path:
    """Write the tiny HF model in `hf_folder` as a GGUF file at `path` (see the module docstring);
    types: GGUF name -> qtype for tensors of another type than qtype (a quantized file's F16 ones)."""
    hf_folder, path = Path(hf_folder), Path(path)
    cfg = json.loads((hf_folder / "config.json").read_text())
    arch, _ = GGUF_ARCHS[cfg["architectures"][0]]
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    _metadata(writer, cfg, qtype)
    if tokenizer:
        try:
            from gguf_vocab import add_tokenizer  # tests/gguf_vocab.py (the tokenizer's writer)
        except ImportError:
            pass
        else:
            add_tokenizer(writer, hf_folder)
    for name, w in _gguf_tensors(cfg, _hf_state(hf_folder)):
        kind = _qtype_of(name, w, qtype, types)
        data = gguf.quants.quantize(w, kind) if kind != gguf.GGMLQuantizationType.F32 else w
        writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def dequantized_folder(hf_folder: Path, out: Path, qtype: str, types: dict[str, str] | None = None) -> Path:
    """A copy of the HF folder whose weights went through qtype's quantize -> dequantize round trip
    (in the GGUF layout, so quantization blocks run along the same rows as in the file); types as
    write_gguf's."""
    from safetensors.numpy import save_file

    hf_folder, out = Path(hf_folder), Path(out)
    shutil.copytree(hf_folder, out, dirs_exist_ok=True)
    cfg = json.loads((hf_folder / "config.json").read_text())
    arch, _ = GGUF_ARCHS[cfg["architectures"][0]]
    names = gguf.get_tensor_name_map(arch, cfg.get("num_hidden_layers") or cfg["n_layer"])
    new = {}
    for name, w in _hf_state(hf_folder).items():
        g = names.get_name(name, try_suffixes=(".weight", ".bias"))
        kind = None if g is None else _qtype_of(g, w, qtype, types)
        if kind is None or kind == gguf.GGMLQuantizationType.F32:
            new[name] = w
            continue
        # Conv1D weights are quantized along their GGUF rows, i.e. HF columns.
        t = (
            w.T
            if arch == gguf.MODEL_ARCH.GPT2 and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight"))
            else w
        )
        r = gguf.quants.dequantize(gguf.quants.quantize(np.ascontiguousarray(t), kind), kind)
        new[name] = np.ascontiguousarray(r.T if t is not w else r)
    save_file(new, out / "model.safetensors", metadata={"format": "pt"})
    return out


def hf_logits(folder: Path, ids: list[int]) -> torch.Tensor:
    """transformers' float32 logits (T, V) for one row of ids."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


# llama.cpp evaluating the GGUF file argv[1] on 16 tokens (more than one: ggml's AMX kernels take
# the products of several rows), run in a child process.
LLAMA_CPP_EVAL = (
    "import sys, llama_cpp; llama_cpp.Llama(sys.argv[1], n_ctx=32, n_threads=1, verbose=False).eval(list(range(1, 17)))"
)
LLAMA_CPP_WITHOUT_AMX = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" '
    "pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python"
)


def llama_cpp_for_quantized() -> ModuleType:
    """llama_cpp, for a test that evaluates a quantized GGUF file with it; a skip where it is not
    installed, or where it would die on such a file (the reason names the build that does not)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    if (reason := _llama_cpp_dies_on_quantized()) is not None:
        pytest.skip(reason)
    return llama_cpp


@functools.cache
def _llama_cpp_dies_on_quantized() -> str | None:
    """Why llama.cpp cannot evaluate quantized files here, or None. A native build on a CPU with AMX
    runs ggml's AMX kernels, which die by SIGILL on some machines and take the process along: only
    such a build tries a tiny Q8_0 file (rows of 256, as the AMX kernels take) in a child process."""
    import llama_cpp

    if b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info():
        return None  # no AMX kernels: nothing to try
    from tiny_models import make_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model(Path(tmp) / "hf", "llama", hidden_size=256, intermediate_size=512)
        path = write_gguf(folder, Path(tmp) / "q8_0.gguf", "q8_0")
        code = subprocess.run([sys.executable, "-c", LLAMA_CPP_EVAL, str(path)], capture_output=True).returncode
    if code >= 0:
        return None
    return (
        f"llama.cpp (llama-cpp-python with ggml's AMX kernels) died by {signal.Signals(-code).name} evaluating a "
        f"quantized GGUF; rebuild it without them: {LLAMA_CPP_WITHOUT_AMX}"
    )
