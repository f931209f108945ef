"""GGUF files (llama.cpp, Ollama, LM Studio) as models: architectures, config and tensors.

The file is read with the `gguf` package (llama.cpp's own reader) once engine/gguf_header.py has
checked its header. What llama.cpp's converter (convert_hf_to_gguf.py) did to the Hugging Face
checkpoint is undone here, so the rest of the engine sees HF names, HF shapes and HF values, and
loads through the same code as a safetensors folder (engine/weights.py, the families' WEIGHT_MAPs):
  - names: one literal table per family, GGUF name -> HF checkpoint name;
  - shapes: GGUF lists dims ne0 first (in_features); numpy views are (out, in) already;
  - llama-arch q/k rows: permuted into llama.cpp's interleaved RoPE pairs (LlamaModel.permute);
    the inverse row order is applied here (rows, so it works on quantized rows too);
  - GPT-2's Conv1D weights: transposed to (out, in) by the converter, given back as (in, out);
  - Gemma's norm gains: stored as 1 + w, given back as w;
  - metadata: `{arch}.embedding_length` etc. -> the config.json a transformers model has, so
    ModelConfig.from_hf_config validates and maps it exactly as for a folder; RoPE divisor tensors
    (Llama 3's rope_freqs, Phi-3's rope_factors_*) become rope_scaling; what llama.cpp hardcodes
    instead of storing (Gemma's layer pattern and query scale) comes from one function per arch.
A split set (NAME-00001-of-0000N.gguf, ...: llama-gguf-split's parts) is one model, given by its
first part as llama.cpp takes it: the metadata is the first part's, the tensors are all parts'
(engine/gguf_split.py checks and maps each part).
Weights are dequantized to float one tensor at a time (gguf.quants.dequantize), or kept in their
blocks as quant.QTensors (keep_quantized) for the compiled decode step.
"""

from __future__ import annotations

import json
import mmap
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .config import ModelConfig
from .errors import ModelLoadError
from .gguf_header import ROPE_DIVISORS, check_header, is_gguf, open_reader, peek, quantization_name
from .gguf_split import open_parts

if TYPE_CHECKING:
    import gguf
    import torch

    from .chat import ChatTemplate
    from .quant import QTensor
    from .tokenizer import HFTokenizer, Tokenizer

__all__ = ["ARCHS", "Arch", "GGUFModel", "check_header", "is_gguf", "peek", "quantization_name"]


def _never_read() -> torch.Tensor:
    """The reader of a tensor no name table maps: checks refuse such a file before any read."""
    raise AssertionError("a GGUF tensor without a model name was read")


# --- architectures -------------------------------------------------------------------------------
# general.architecture -> (config.json architecture, metadata key table, tensor name table,
# q/k rows permuted by llama.cpp's converter). Mistral and SmolLM convert as "llama".
_LLAMA_KEYS = {  # GGUF key after "{arch}." -> config.json key
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "attention.sliding_window": "sliding_window",
}
_GPT2_KEYS = {
    "context_length": "n_positions",
    "embedding_length": "n_embd",
    "block_count": "n_layer",
    "attention.head_count": "n_head",
    "attention.layer_norm_epsilon": "layer_norm_epsilon",
}
_LLAMA_TENSORS = {  # GGUF tensor name -> HF checkpoint name (engine/llama.py WEIGHT_MAP's keys)
    "token_embd.weight": "model.embed_tokens.weight",
    "blk.{}.attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "blk.{}.attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_q.bias": "model.layers.{}.self_attn.q_proj.bias",
    "blk.{}.attn_k.bias": "model.layers.{}.self_attn.k_proj.bias",
    "blk.{}.attn_v.bias": "model.layers.{}.self_attn.v_proj.bias",
    "blk.{}.attn_q_norm.weight": "model.layers.{}.self_attn.q_norm.weight",
    "blk.{}.attn_k_norm.weight": "model.layers.{}.self_attn.k_norm.weight",
    "blk.{}.attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "blk.{}.attn_output.bias": "model.layers.{}.self_attn.o_proj.bias",
    "blk.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GPT2_TENSORS = {  # HF names without the "transformer." prefix, as engine/gpt2.py WEIGHT_MAP has them
    "token_embd.weight": "wte.weight",
    "position_embd.weight": "wpe.weight",
    "blk.{}.attn_norm.weight": "h.{}.ln_1.weight",
    "blk.{}.attn_norm.bias": "h.{}.ln_1.bias",
    "blk.{}.attn_qkv.weight": "h.{}.attn.c_attn.weight",
    "blk.{}.attn_qkv.bias": "h.{}.attn.c_attn.bias",
    "blk.{}.attn_output.weight": "h.{}.attn.c_proj.weight",
    "blk.{}.attn_output.bias": "h.{}.attn.c_proj.bias",
    "blk.{}.ffn_norm.weight": "h.{}.ln_2.weight",
    "blk.{}.ffn_norm.bias": "h.{}.ln_2.bias",
    "blk.{}.ffn_up.weight": "h.{}.mlp.c_fc.weight",
    "blk.{}.ffn_up.bias": "h.{}.mlp.c_fc.bias",
    "blk.{}.ffn_down.weight": "h.{}.mlp.c_proj.weight",
    "blk.{}.ffn_down.bias": "h.{}.mlp.c_proj.bias",
    "output_norm.weight": "ln_f.weight",
    "output_norm.bias": "ln_f.bias",
    "output.weight": "lm_head.weight",
}
_GEMMA_KEYS = {
    **_LLAMA_KEYS,
    "attn_logit_softcapping": "attn_logit_softcapping",
    "final_logit_softcapping": "final_logit_softcapping",
    "rope.freq_base_swa": "rope_local_base_freq",
}
_GEMMA_TENSORS = {  # the Llama names, with Gemma's four norms a layer (engine/gemma.py WEIGHT_MAP's keys)
    **_LLAMA_TENSORS,
    "blk.{}.post_attention_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.ffn_norm.weight": "model.layers.{}.pre_feedforward_layernorm.weight",
    "blk.{}.post_ffw_norm.weight": "model.layers.{}.post_feedforward_layernorm.weight",
}
_PHI3_KEYS = {**_LLAMA_KEYS, "rope.scaling.original_context_length": "original_max_position_embeddings"}
_PHI3_TENSORS = {  # q/k/v and gate/up fused, as in the HF checkpoint (split at load by the Llama table)
    **{k: v for k, v in _LLAMA_TENSORS.items() if k.split(".")[-2] not in ("attn_q", "attn_k", "attn_v", "ffn_gate")},
    "blk.{}.attn_qkv.weight": "model.layers.{}.self_attn.qkv_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.gate_up_proj.weight",
}
# Conv1D weights: HF stores them (in, out), the converter transposed them to (out, in).
_GPT2_CONV1D = frozenset(f"blk.{{}}.{n}.weight" for n in ("attn_qkv", "attn_output", "ffn_up", "ffn_down"))


def _gemma_facts(cfg: dict[str, Any], every: int, layers_27b: int) -> dict[str, Any]:
    """What llama.cpp's Gemma code assumes instead of reading it from the file (llama-model.cpp):
    every `every`th layer global, queries scaled by head_dim ** -0.5, except the 27B (told apart
    by its layer count), which scales by (hidden / heads) ** -0.5."""
    heads, layers = cfg.get("num_attention_heads"), cfg.get("num_hidden_layers")
    big = layers == layers_27b and isinstance(heads, int) and heads > 0
    scalar = cfg.get("hidden_size", 0) // heads if big else cfg.get("head_dim")
    return {"sliding_window_pattern": every, **({"query_pre_attn_scalar": scalar} if scalar else {})}


def _phi3_facts(cfg: dict[str, Any]) -> dict[str, Any]:
    """Phi-3's RoPE over part of each head (rope.dimension_count of head_dim), and sliding_window 0
    for none (the converter's mark of Phi-4)."""
    out: dict[str, Any] = {"sliding_window": cfg.get("sliding_window") or None}
    heads, dims = cfg.get("num_attention_heads"), cfg.pop("rope_dimension_count", None)
    if isinstance(dims, int) and isinstance(heads, int) and heads > 0 and cfg.get("hidden_size"):
        out["partial_rotary_factor"] = dims * heads / cfg["hidden_size"]
    return out


@dataclass(frozen=True)
class Arch:
    hf_architecture: str
    keys: dict[str, str]
    tensors: dict[str, str]
    permuted_qk: bool = False  # llama.cpp's LlamaModel.permute on q/k rows
    transposed: frozenset[str] = frozenset()
    norm_shift: float = 0.0  # added to every *norm.weight by the converter (Gemma's 1 + w gains)
    facts: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # config values llama.cpp hardcodes


ARCHS: dict[str, Arch] = {
    "llama": Arch("LlamaForCausalLM", _LLAMA_KEYS, _LLAMA_TENSORS, permuted_qk=True),
    "qwen2": Arch("Qwen2ForCausalLM", _LLAMA_KEYS, _LLAMA_TENSORS),
    "qwen3": Arch("Qwen3ForCausalLM", _LLAMA_KEYS, _LLAMA_TENSORS),
    "gemma2": Arch(
        "Gemma2ForCausalLM", _GEMMA_KEYS, _GEMMA_TENSORS, norm_shift=1.0, facts=lambda c: _gemma_facts(c, 2, 46)
    ),
    "gemma3": Arch(
        "Gemma3ForCausalLM", _GEMMA_KEYS, _GEMMA_TENSORS, norm_shift=1.0, facts=lambda c: _gemma_facts(c, 6, 62)
    ),
    "phi3": Arch(
        "Phi3ForCausalLM",
        {**_PHI3_KEYS, "rope.dimension_count": "rope_dimension_count"},
        _PHI3_TENSORS,
        facts=_phi3_facts,
    ),
    "gpt2": Arch("GPT2LMHeadModel", _GPT2_KEYS, _GPT2_TENSORS, transposed=_GPT2_CONV1D),
}


def _hf_row_order(rows: int, heads: int) -> np.ndarray:
    """Row index that undoes llama.cpp's LlamaModel.permute for q or k (rows = heads * head_dim).

    The converter reorders each head's rows (pairs i, i + hd/2 -> 2i, 2i+1):
    w.reshape(heads, 2, hd/2, ...).swapaxes(1, 2); so HF row (h, j, i) sits at GGUF row (h, i, j).
    """
    half = rows // heads // 2
    return np.arange(rows).reshape(heads, half, 2).swapaxes(1, 2).reshape(rows)


class GGUFModel:
    """A checked GGUF file (or split set, by its first part): its reader (the first part's), its
    config.json equivalent and its tensors in HF form."""

    def __init__(self, path: str | Path, keep_quantized: bool = False) -> None:
        """keep_quantized: hand the loader quant.QTensors (the file's blocks, rows in HF order) for
        the matrices in a block type engine/quant.py runs (q8_0, q4_0, q4_1, q4_k, q5_k, q6_k),
        instead of float tensors; 1-D tensors and other types are dequantized as always. Such a
        load is packed next (Engine.load), which copies every matrix into the compiled step's
        buffer: so the matrices it can are handed out as they lie in the file's mapping, not copied
        (blocks, and F32 ones, whose rows need no reordering), and the packing reads each once."""

        self.path, self.keep_quantized = Path(path), keep_quantized
        check_header(self.path)
        try:
            self.reader = open_reader(self.path)
        except Exception as e:  # the header was walked already: anything left is a damaged file
            raise ModelLoadError(f"{self.path} is not a usable GGUF file ({type(e).__name__}: {e})"[:300]) from None
        # A split set's parts (engine/gguf_split.py), each mapped by its own reader; the first holds
        # the metadata. One file: [(path, reader)].
        self.parts = open_parts(self.path, self.reader)
        self._part_of = {t.name: part for part in self.parts for t in part[1].tensors}  # tensor -> (path, reader)
        self.all_tensors = [t for _, reader in self.parts for t in reader.tensors]
        self.tensors = {t.name: t for t in self.all_tensors}
        self.arch_name = self.meta("general.architecture")
        if self.arch_name is None:
            raise ModelLoadError(
                f"{self.path} has no general.architecture: not a model file (or damaged); "
                "pass a model's .gguf file (llama.cpp, Ollama, LM Studio)"
            )
        if self.arch_name == "clip":  # llama.cpp's vision projectors (mmproj-*.gguf)
            raise ModelLoadError(
                f"{self.path} is a vision projector (mmproj, architecture clip), not a language model; "
                "pass the model's own .gguf file, which sits beside it"
            )
        if self.arch_name not in ARCHS:
            raise ModelLoadError(
                f"{self.path}: architecture {str(self.arch_name)[:40]!r} in GGUF is not supported yet; "
                f"tiankong reads {', '.join(ARCHS)}"
            )
        self.arch = ARCHS[self.arch_name]

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def meta(self, key: str, default: Any = None) -> Any:
        """A metadata value as Python (str, int, float, bool, list), or default."""
        field = self.reader.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except (UnicodeDecodeError, IndexError, ValueError):
            raise ModelLoadError(f"{self.path}: metadata {key} is damaged; download the file again") from None

    @cached_property
    def hf_config(self) -> dict[str, Any]:
        """The config.json a transformers checkpoint of this model has (from_hf_config validates it)."""
        a, p = self.arch, self.arch_name
        # torch_dtype: what `tiankong info` shows as the checkpoint's type (Q4_K_M, F16, ...)
        kind = quantization_name(self.meta("general.file_type")) or "GGUF"
        cfg: dict[str, Any] = {"architectures": [a.hf_architecture], "torch_dtype": kind}
        for key, hf_key in a.keys.items():
            value = self.meta(f"{p}.{key}")
            if value is not None:
                cfg[hf_key] = value
        # Sizes the tensors fix for certain (GPT-2's converter writes feed_forward_length 4 * n_embd).
        emb = self.tensors.get("token_embd.weight")
        if emb is None:
            raise ModelLoadError(f"{self.path} has no token_embd.weight; it is not a complete model")
        cfg["vocab_size"] = int(emb.shape[1]) if len(emb.shape) == 2 else 0
        down = self.tensors.get("blk.0.ffn_down.weight")  # ne0: its input, the feed-forward size
        if down is not None and len(down.shape) == 2:
            cfg["n_inner" if p == "gpt2" else "intermediate_size"] = int(down.shape[0])
        cfg["tie_word_embeddings"] = "output.weight" not in self.tensors
        cfg.update(self._rope_scaling(cfg))
        if "rope_freqs.weight" in self.tensors:
            cfg["rope_scaling"] = self._llama3_scaling(cfg)
        if "rope_factors_long.weight" in self.tensors:  # Phi-3's long-rope: one divisor per pair
            cfg["rope_scaling"] = dict(
                rope_type="longrope",
                **{f"{k}_factor": self._floats(f"rope_factors_{k}.weight") for k in ("long", "short")},
            )
        if a.facts is not None:
            cfg.update(a.facts(cfg))
        for name, token in (("bos_token_id", "bos"), ("eos_token_id", "eos")):
            value = self.meta(f"tokenizer.ggml.{token}_token_id")
            if isinstance(value, int):
                cfg[name] = value
        return cfg

    def _floats(self, name: str) -> list[float]:
        """A small F32 vector tensor as a list (RoPE factors); one line if it is not one."""
        t = self.tensors.get(name)
        if t is None or t.tensor_type != 0 or len(t.shape) != 1 or int(t.shape[0]) > 1 << 14:
            raise ModelLoadError(f"{self.path}: {name} is missing or not a short F32 vector; download the file again")
        return np.asarray(t.data, dtype=np.float32).tolist()

    def config(self) -> ModelConfig:
        """The ModelConfig, validated as a config.json is; errors name the file and its metadata keys
        (a file's values are no one's to fix by hand: the fix is another file)."""
        cfg = self.hf_config  # its own errors name the file already
        try:
            return ModelConfig.from_hf_config(cfg)
        except ModelLoadError as e:
            problem = str(e).removeprefix("config.json").lstrip(" :").rsplit("; ", 1)[0]
            for hf_key in sorted(set(self.arch.keys.values()), key=len, reverse=True):
                problem = re.sub(rf"\b{hf_key}\b", self.metadata_key(hf_key), problem)
            raise ModelLoadError(
                f"{self.path}: its metadata does not describe a model tiankong can build ({problem}); "
                "the file is damaged or was converted wrongly: use another file"
            ) from None

    def metadata_key(self, hf_key: str) -> str:
        """The GGUF metadata key for a config.json key (num_hidden_layers -> llama.block_count); the
        key itself where the file has none (a value llama.cpp hardcodes, or one read from tensors)."""
        gguf_key = next((k for k, v in self.arch.keys.items() if v == hf_key), None)
        return f"{self.arch_name}.{gguf_key}" if gguf_key else hf_key

    def file_tensor_name(self, hf_name: str) -> str:
        """The file's own name (blk.0.attn_k.weight) for a tensor's Hugging Face name, so errors name
        what gguf-dump shows; the name itself if no table entry makes it."""
        from .weights import NameTable

        return NameTable(self.arch.tensors).checkpoint_name(hf_name)

    def _rope_scaling(self, cfg: dict[str, Any]) -> dict[str, Any]:
        kind = self.meta(f"{self.arch_name}.rope.scaling.type")
        factor = self.meta(f"{self.arch_name}.rope.scaling.factor")
        if kind in (None, "none") or kind == "linear" and factor in (None, 1.0):
            return {}
        scaling: dict[str, Any] = {"rope_type": kind, "factor": factor}
        orig = self.meta(f"{self.arch_name}.rope.scaling.original_context_length")
        if orig is not None:
            scaling["original_max_position_embeddings"] = orig
        return {"rope_scaling": scaling}  # from_hf_config names what it cannot run (yarn, ...)

    def _llama3_scaling(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """transformers' llama3 rope_scaling from the per-frequency divisors llama.cpp's converter
        stored in rope_freqs.weight (1 for high frequencies, `factor` for low ones, a blend between).

        In the blend, 1/f = (1 - s)/factor + s with s = orig/wavelength - low, over (high - low): a line
        in 1/wavelength whose slope and intercept give low and high once orig (the original context,
        8192 unless the file says) is fixed. The factors recomputed from the result must match.
        """
        import torch

        from .config import ModelConfig
        from .rope import rope_inv_freq

        t = self.tensors["rope_freqs.weight"]
        found = np.asarray(t.data, dtype=np.float64).reshape(-1) if t.tensor_type == 0 else np.zeros(0)
        orig = self.meta(f"{self.arch_name}.rope.scaling.original_context_length") or 8192
        theta, heads = float(cfg.get("rope_theta", 10000.0)), cfg.get("num_attention_heads")
        head_dim = cfg.get("head_dim") or (
            cfg.get("hidden_size", 0) // heads if isinstance(heads, int) and heads else 0
        )
        scaling: dict[str, Any] | None = None
        if found.size and found.size * 2 == head_dim and np.isfinite(found).all() and found.min() >= 1:
            factor = float(found.max())
            wavelength = 2 * np.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
            blend = (found > 1 + 1e-6) & (found < factor - 1e-6)
            if factor > 1 and blend.sum() >= 2:
                s = (1 / found[blend] - 1 / factor) / (1 - 1 / factor)  # s = a / wavelength - b
                a, b = np.polyfit(1 / wavelength[blend], s, 1)
                low, high = -b * orig / a, -b * orig / a + orig / a
                scaling = dict(
                    rope_type="llama3",
                    factor=round(factor, 4),
                    low_freq_factor=round(float(low), 4),  # 1.0, not 0.99998: the check below is exact
                    high_freq_factor=round(float(high), 4),
                    original_max_position_embeddings=int(orig),
                )
        if scaling is not None:  # the recovered settings must give back the file's divisors
            base = ModelConfig(head_dim=head_dim, rope_theta=theta, n_heads=1, n_kv_heads=1)
            plain = rope_inv_freq(base).double()
            base.rope_scaling = scaling
            again = plain / rope_inv_freq(base).double()
            if not torch.allclose(again, torch.from_numpy(found), rtol=1e-4):
                scaling = None
        if scaling is None:
            raise ModelLoadError(
                f"{self.path}: rope_freqs.weight holds RoPE divisors that are not Llama 3's scaling; "
                "tiankong cannot run them yet, use the model's Hugging Face folder"
            )
        return scaling

    def tokenizer(self) -> HFTokenizer:
        """The tokenizer rebuilt from tokenizer.ggml.* (engine/gguf_tokenizer.py)."""
        from .gguf_tokenizer import tokenizer_from_gguf

        return tokenizer_from_gguf(self.reader, self.path)

    def chat_template(self, tokenizer: Tokenizer) -> ChatTemplate | None:
        """tokenizer.chat_template compiled for `tokenizer`, or None when the file has none."""
        from .chat import ChatTemplate
        from .gguf_tokenizer import chat_template_from_gguf

        source = chat_template_from_gguf(self.reader, self.path)
        return None if source is None else ChatTemplate.for_tokenizer(source, tokenizer)

    def tokenizer_files(self) -> dict[str, str]:
        """The tokenizer as a Hugging Face folder holds it, for saving this model as one (trainers):
        tokenizer.json (the rebuilt pipeline, BOS rule included), tokenizer_config.json (special
        tokens and the chat template) and generation_config.json (every end-of-generation id)."""
        from .gguf_tokenizer import chat_template_from_gguf

        tok = self.tokenizer()
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            **tok.named_special_tokens,
        }
        template = chat_template_from_gguf(self.reader, self.path)
        if template is not None:
            config["chat_template"] = template
        generation = {"bos_token_id": tok.bos_id, "eos_token_id": sorted(tok.eos_ids)}
        return {
            "tokenizer.json": tok.to_json(),
            "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
            "generation_config.json": json.dumps(generation, indent=2) + "\n",
        }

    def tensor_types(self) -> dict[str, int]:
        """GGML type name -> how many tensors have it (e.g. {"Q4_K": 130, "F32": 61})."""
        out: dict[str, int] = {}
        for t in self.all_tensors:
            out[t.tensor_type.name] = out.get(t.tensor_type.name, 0) + 1
        return out

    def hf_tensors(self) -> Iterator[tuple[str, str, tuple[int, ...], Callable[[], torch.Tensor]]]:
        """(file name, HF name, HF shape, read) for every tensor; read() dequantizes to float32 on CPU.

        Names the table does not know keep their GGUF name, so the loader reports them as unexpected.
        """
        for t, hf_name, shape, transpose in self._entries():
            file = self._part_of[t.name][0].name  # the part that holds it, in a split set
            if transpose is None:
                yield file, hf_name, shape, _never_read  # the loader names it as unexpected
                continue
            yield file, hf_name, shape, self._reader(t, hf_name, shape, transpose)

    def block_types(self) -> dict[str, str]:
        """HF name -> quant type of every tensor whose read() gives a QTensor (keep_quantized), from
        the tensor infos alone (`tiankong info`: the model Engine.load builds, nothing read)."""
        return {
            hf_name: qtype
            for t, hf_name, shape, transpose in self._entries()
            if transpose is not None and (qtype := self.kept_type(t, shape, transpose))
        }

    def _entries(self) -> Iterator[tuple[gguf.ReaderTensor, str, tuple[int, ...], bool | None]]:
        """(tensor, HF name, HF shape, transpose?) for every tensor but the RoPE divisors; transpose
        None for a name no table entry maps (then the name is the file's own)."""
        from .weights import NameTable

        table = NameTable(self.arch.tensors, transposed=self.arch.transposed)
        for t in self.all_tensors:
            if t.name in ROPE_DIVISORS:
                continue  # RoPE divisors (Llama 3, Phi-3): read into the config's rope_scaling
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # (out, in) for a matrix
            hit = table.target(t.name)
            if hit is None:
                yield t, t.name, shape, None
                continue
            hf_name, transpose = hit
            yield t, hf_name, shape[::-1] if transpose else shape, transpose

    def _reader(self, t: gguf.ReaderTensor, hf_name: str, shape: tuple[int, ...], transpose: bool) -> Callable:
        """read() for one tensor: its blocks as a QTensor (keep_quantized), or floats with the
        converter's changes undone (q/k row order, Conv1D transpose, Gemma's + 1 on norm gains)."""
        rows = self._row_order(hf_name, shape)
        read: Callable[[], Any]
        if self.arch.norm_shift and hf_name.endswith("norm.weight"):
            read = lambda: _read(t, rows, transpose) - self.arch.norm_shift  # noqa: E731
        elif self.kept_type(t, shape, transpose):
            read = lambda: _read_blocks(t, rows, shape)  # noqa: E731
        else:  # a matrix packed next can stay in the mapping (see __init__)
            read = lambda: _read(t, rows, transpose, copy=not (self.keep_quantized and len(shape) == 2))  # noqa: E731

        def read_and_release() -> Any:
            out = read()  # a copy's source pages go back; a view's are read (and let go) by the packing
            self._release(t)
            return out

        return read_and_release

    def kept_type(self, t: gguf.ReaderTensor, shape: tuple[int, ...], transpose: bool = False) -> str | None:
        """The quant.QTYPES name of a tensor read as a QTensor (keep_quantized: a matrix in a block
        type the engine runs, not transposed), else None (read as floats)."""
        name = t.tensor_type.name.lower()
        keep = self.keep_quantized and len(shape) == 2 and not transpose and name in _quant_types()
        return name if keep else None

    def _release(self, t: gguf.ReaderTensor) -> None:
        """Unmap the pages of a tensor already copied out (madvise DONTNEED; the page cache keeps
        them, and a later read maps them again). Without it every page read stays resident in the
        process beside the model made from it: an F32 file's load peaked at twice the weights."""
        buf = getattr(self._part_of[t.name][1].data, "_mmap", None)  # its part's numpy.memmap's mmap.mmap
        if buf is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = t.data_offset // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            buf.madvise(mmap.MADV_DONTNEED, start, t.data_offset + t.n_bytes - start)
        except (OSError, ValueError):  # not where this platform allows it: only memory is at stake
            pass

    def _row_order(self, hf_name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The HF row order of a llama-arch q or k weight or bias (see _hf_row_order), else None."""
        kind = hf_name.rsplit(".", 2)[-2]
        if not self.arch.permuted_qk or kind not in ("q_proj", "k_proj"):
            return None
        heads = self.hf_config.get("num_attention_heads")
        if kind == "k_proj":
            heads = self.hf_config.get("num_key_value_heads") or heads
        if not isinstance(heads, int) or heads < 1 or shape[0] % (2 * heads):
            raise ModelLoadError(
                f"{self.path}: {hf_name} has {shape[0]} rows, not a whole number of heads of even size "
                f"for {heads} heads; the metadata does not match the weights"
            )
        return _hf_row_order(shape[0], heads)


def _quant_types() -> dict:
    from .quant import QTYPES

    return QTYPES


def _read_blocks(t: gguf.ReaderTensor, rows: np.ndarray | None, shape: tuple[int, ...]) -> QTensor:
    """One quantized matrix as a QTensor: the file's blocks, not decoded; as they lie in the mapping
    (no copy: the packing copies them into its buffer), or reordered to HF rows (a copy)."""
    import torch

    from .quant import QTensor

    data = t.data if rows is None else t.data[rows]  # (out, bytes per row) uint8
    return QTensor(t.tensor_type.name.lower(), (shape[0], shape[1]), torch.from_numpy(data))


def _read(t: gguf.ReaderTensor, rows: np.ndarray | None, transpose: bool, copy: bool = True) -> torch.Tensor:
    """One tensor as float32 in HF order: rows reordered (on the raw blocks), dequantized, transposed.
    copy=False: an F32 tensor whose rows stay in order is the mapping itself (copy-on-write), not a copy."""
    import gguf
    import torch

    data = t.data if rows is None else t.data[rows]  # (out, bytes or values per row); fancy index copies
    if t.tensor_type == gguf.GGMLQuantizationType.F32:
        out = np.array(data, dtype=np.float32, copy=copy and rows is None)  # rows: data is a copy already
    else:  # a damaged scale decodes to inf or NaN, as in llama.cpp: the engine's non-finite checks see it
        with np.errstate(all="ignore"):
            out = gguf.quants.dequantize(np.asarray(data), t.tensor_type)
    tensor = torch.from_numpy(out)
    return tensor.t() if transpose else tensor
