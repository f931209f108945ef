"""llama.cpp's GGUF architectures as tiankong reads them: the table engine/gguf_model.py looks up.

Per general.architecture: the config.json architecture it becomes, its metadata keys and tensor names
as literal tables (GGUF -> config.json key, GGUF -> HF checkpoint name), what llama.cpp's converter
changed (permuted q/k rows, transposed Conv1D weights, Gemma's shifted norm gains) and what llama.cpp
hardcodes instead of storing (one `facts` function per family). Apart from the reader so that adding
an architecture is an entry here, read as data, without the file handling around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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


def arch_of(path: object, name: object) -> Arch:
    """The entry for a file's general.architecture; ModelLoadError (one line) for none, a vision
    projector or one not in the table. GGUFModel and `tiankong models` (which lists such a file as
    skipped, with this line) both ask here."""
    from .errors import ModelLoadError

    if name is None:
        raise ModelLoadError(
            f"{path} has no general.architecture: not a model file (or damaged); "
            "pass a model's .gguf file (llama.cpp, Ollama, LM Studio)"
        )
    if name == "clip":  # llama.cpp's vision projectors (mmproj-*.gguf)
        raise ModelLoadError(
            f"{path} is a vision projector (mmproj, architecture clip), not a language model; "
            "pass the model's own .gguf file, which sits beside it"
        )
    if not isinstance(name, str) or name not in ARCHS:
        raise ModelLoadError(
            f"{path}: architecture {str(name)[:40]!r} in GGUF is not supported yet; tiankong reads {', '.join(ARCHS)}"
        )
    return ARCHS[name]
