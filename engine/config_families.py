"""From a Hugging Face `config.json` to ModelConfig's fields, one function per architecture family
(Llama/Mistral/Qwen2/Qwen3, Phi-3, Gemma 2/3, GPT-2), and its RoPE settings in either spelling.

`config.json` has changed shape across transformers releases (4.x puts `rope_theta` and
`rope_scaling` at the top level; 5.x nests them in `rope_parameters`; GPT-2 uses its own names
such as `n_embd`). These functions are the one place that knows those spellings; they return
plain dicts, so ModelConfig (config.py) builds itself from them and this module needs no config.
"""

from __future__ import annotations

from typing import Any, Mapping

from .config_checks import _show, check_values
from .errors import ModelLoadError, quoted

# architecture name in config.json -> model family implemented in this package
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "llama",
    "Qwen3ForCausalLM": "llama",
    "Phi3ForCausalLM": "llama",  # q/k/v and gate/up fused in the checkpoint, split at load
    "Gemma2ForCausalLM": "gemma",
    "Gemma3ForCausalLM": "gemma",
    "Gemma3ForConditionalGeneration": "gemma",  # image-text Gemma 3: its text model only
    "GPT2LMHeadModel": "gpt2",
}


# architecture -> model_type: the fallback when config.json has no `architectures`, and what to_hf_config writes
_MODEL_TYPES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Phi3ForCausalLM": "phi3",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3_text",
    "GPT2LMHeadModel": "gpt2",
}

_GELUS = ("gelu_new", "gelu", "gelu_pytorch_tanh", "gelu_fast")  # "gelu" is exact, the others the tanh form

# Defaults of transformers' config classes that differ from the common ones read below.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "Phi3ForCausalLM": {"rms_norm_eps": 1e-5, "max_position_embeddings": 4096},
    "Gemma2ForCausalLM": {"max_position_embeddings": 8192},
    "Gemma3ForCausalLM": {"max_position_embeddings": 131072},
}


def _architecture(cfg: Mapping[str, Any]) -> str:
    """The supported architecture config.json names (or, in older or hand-written configs without
    `architectures`, its model_type).

    Every name listed must be supported: a model_type of "llama" says nothing about the model of a
    folder that names another class (custom code under auto_map, a classifier's score head instead
    of lm_head), and loading it as a Llama would run, or fail on, something else."""
    archs = cfg.get("architectures") or []
    supported = ", ".join(ARCHITECTURES)
    for name in archs:
        if name in ARCHITECTURES:
            continue
        if name.endswith(_CLASSIFIER_SUFFIXES):
            raise ModelLoadError(
                f"{quoted(name)} is a classifier (score head), not a causal LM; use a causal LM "
                f"(tiankong supports {supported})"
            )
        raise ModelLoadError(f"unsupported architecture ({quoted(name)}); tiankong supports {supported}")
    arch = archs[0] if archs else {t: a for a, t in _MODEL_TYPES.items()}.get(cfg.get("model_type", ""))
    if arch is None:
        raise ModelLoadError(
            f"unsupported architecture ({quoted(cfg.get('model_type') or 'none given')}); tiankong supports {supported}"
        )
    return arch


# transformers' heads that score a sequence or its tokens instead of predicting the next token.
_CLASSIFIER_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


def _gemma3_text_part(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config.json of the text model inside an image-text Gemma 3 (its text_config; token ids
    and tying from the top level where given), as a Gemma3ForCausalLM's."""
    text = cfg.get("text_config")
    if not isinstance(text, dict):
        raise ModelLoadError("config.json: text_config must be an object for Gemma3ForConditionalGeneration; fix it")
    check_values(text, "config.json text_config")
    top = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "tie_word_embeddings") if cfg.get(k) is not None}
    # transformers' image-text Gemma 3 never soft-caps its logits, whatever text_config says.
    top["final_logit_softcapping"] = None
    return {**text, **top, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text"}


def _gpt2_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    dim = int(cfg["n_embd"])
    act = cfg.get("activation_function", "gelu_new")
    if act not in _GELUS:
        raise ModelLoadError(f"unsupported GPT-2 activation {act!r}; expected gelu_new or gelu")
    return dict(
        vocab_size=int(cfg["vocab_size"]),
        dim=dim,
        n_layers=int(cfg["n_layer"]),
        n_heads=int(cfg["n_head"]),
        n_kv_heads=int(cfg["n_head"]),
        ffn_dim=int(cfg.get("n_inner") or 4 * dim),
        norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
        max_seq_len=int(cfg.get("n_positions", 1024)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        activation=act,
        # GPT2Config's defaults. reorder_and_upcast_attn only changes the order of the same float32
        # products (scale k before q.k), which SDPA's float32 softmax matches: nothing to do.
        attn_scale=None if cfg.get("scale_attn_weights", True) else 1.0,
        attn_scale_by_layer=bool(cfg.get("scale_attn_by_inverse_layer_idx", False)),
    )


def _decoder_fields(cfg: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """The sizes every RoPE decoder (the Llama family, Gemma) spells alike."""
    n_heads = int(cfg["num_attention_heads"])
    # Qwen3's and Gemma's head size is a field of its own (128 and 256 when absent), not hidden_size / heads.
    head_dim = cfg.get("head_dim") or {"Qwen3ForCausalLM": 128}.get(arch, 256 if arch.startswith("Gemma") else 0)
    return dict(
        vocab_size=int(cfg["vocab_size"]),
        dim=int(cfg["hidden_size"]),
        n_layers=int(cfg["num_hidden_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
        head_dim=int(head_dim),
        ffn_dim=int(cfg["intermediate_size"]),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", arch.startswith("Gemma"))),
    )


def _llama_fields(cfg: Mapping[str, Any], arch: str) -> dict[str, Any]:
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ModelLoadError(f"unsupported hidden_act {act!r} for {arch}; expected silu")
    rope = _phi3_rope(cfg) if arch == "Phi3ForCausalLM" else _rope_parameters(cfg)
    window = _qwen_window(cfg) if arch.startswith("Qwen") else cfg.get("sliding_window")
    return dict(
        rope_theta=float(rope.pop("rope_theta")),
        partial_rotary_factor=float(rope.pop("partial_rotary_factor", 1.0)),
        rope_scaling=rope or None,
        qkv_bias=arch == "Qwen2ForCausalLM" or bool(cfg.get("attention_bias", False)),
        o_bias=arch != "Qwen2ForCausalLM" and bool(cfg.get("attention_bias", False)),
        qk_norm=arch == "Qwen3ForCausalLM",
        sliding_window=int(window) if window else None,
        activation=act,
    )


def _phi3_rope(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Phi-3's RoPE as transformers' Phi3Config reads it: "su" and "yarn" mean long-rope;
    original_max_position_embeddings comes from the top level (4096 when absent), over rope_scaling's;
    partial_rotary_factor from the RoPE settings (5.x) or the top level (4.x)."""
    params = {**(cfg.get("rope_parameters") or {}), **(cfg.get("rope_scaling") or {})}
    partial = params.pop("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if (params.get("rope_type") or params.get("type")) in ("su", "yarn", "longrope"):
        params.pop("type", None)
        orig = cfg.get("original_max_position_embeddings", 4096)
        params.update(rope_type="longrope", original_max_position_embeddings=orig)
    rope = _rope_parameters({"rope_theta": cfg.get("rope_theta", 10000.0), "rope_parameters": params})
    check_values({"partial_rotary_factor": partial})
    return {**rope, "partial_rotary_factor": partial}


def _gemma_fields(cfg: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """Gemma 2 and 3 (text): local and global layers, soft-capping, and Gemma 3's q/k norms and the
    local layers' own RoPE base. Defaults are transformers' config classes'."""
    gemma3 = arch == "Gemma3ForCausalLM"
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in _GELUS:
        raise ModelLoadError(f"unsupported hidden_activation {_show(act)} for {arch}; expected gelu_pytorch_tanh")
    if cfg.get("use_bidirectional_attention"):
        raise ModelLoadError(
            "config.json: use_bidirectional_attention (an embedding model) is not supported; use a causal Gemma"
        )
    n = int(cfg["num_hidden_layers"])
    every = cfg.get("sliding_window_pattern") or (6 if gemma3 else 2)  # the nth layer is global
    types = cfg.get("layer_types") or ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(n)]
    if len(types) != n or not set(types) <= {"sliding_attention", "full_attention"}:
        raise ModelLoadError(
            f"config.json: layer_types must give each of the {n} layers sliding_attention or full_attention; fix it"
        )
    rope, local_theta = _gemma_rope(cfg, gemma3)
    window = cfg.get("sliding_window", 4096)
    return dict(
        rope_theta=float(rope.pop("rope_theta")),
        rope_scaling=rope or None,
        local_rope_theta=local_theta,
        layer_types=tuple(types),
        local_window=int(window) if window and "sliding_attention" in types else None,
        attn_scale=float(cfg.get("query_pre_attn_scalar", 256)) ** -0.5,
        # Gemma 3's config has attn_logit_softcapping too, but transformers' Gemma 3 never applies it.
        attn_softcap=None if gemma3 else cfg.get("attn_logit_softcapping", 50.0),
        final_softcap=cfg.get("final_logit_softcapping", None if gemma3 else 30.0),
        qkv_bias=bool(cfg.get("attention_bias", False)),
        o_bias=bool(cfg.get("attention_bias", False)),
        qk_norm=gemma3,
        activation=act,
    )


def _gemma_rope(cfg: Mapping[str, Any], gemma3: bool) -> tuple[dict[str, Any], float | None]:
    """(the global layers' RoPE as _rope_parameters gives it, Gemma 3's local RoPE base or None).
    5.x nests Gemma 3's by layer type; 4.x has rope_theta, rope_scaling and rope_local_base_freq."""
    theta = 1e6 if gemma3 else 10000.0
    nested = cfg.get("rope_parameters") or {}
    if not ("full_attention" in nested or "sliding_attention" in nested):
        local = cfg.get("rope_local_base_freq", 10000.0) if gemma3 else None
        return _rope_parameters({"rope_theta": theta, **cfg}), local
    for kind in ("full_attention", "sliding_attention"):
        check_values({"rope_parameters": nested.get(kind)}, f"config.json rope_parameters.{kind}")
    local = dict(nested.get("sliding_attention") or {})
    if (local.get("rope_type") or local.get("type") or "default") != "default":
        raise ModelLoadError("config.json: RoPE scaling of the sliding_attention layers is not supported; remove it")
    check_values(local, "config.json rope_parameters.sliding_attention")
    rope = _rope_parameters({"rope_theta": theta, "rope_parameters": nested.get("full_attention")})
    return rope, float(local.get("rope_theta", 10000.0))


def _qwen_window(cfg: Mapping[str, Any]) -> int | None:
    """Qwen2/3 list a sliding window but use it only with use_sliding_window, and then only in the
    layers from max_window_layers on (transformers' layer_types). tiankong runs one window for every
    layer or none, so a mix of windowed and full layers is refused rather than run wrong."""
    window = cfg.get("sliding_window")
    if not cfg.get("use_sliding_window", False) or not window:
        return None
    first = cfg.get("max_window_layers")
    first = 28 if first is None else first  # transformers' default
    kinds = cfg.get("layer_types") or [
        "sliding_attention" if i >= first else "full_attention" for i in range(int(cfg["num_hidden_layers"]))
    ]
    if "sliding_attention" not in kinds:
        return None
    if "full_attention" in kinds:
        raise ModelLoadError(
            "config.json: use_sliding_window with full-attention layers among sliding ones is not supported; "
            "set max_window_layers to 0 or use_sliding_window to false"
        )
    return window


def _rope_parameters(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Gather RoPE settings from either spelling; returns {"rope_theta": ..., plus any scaling}."""
    params: dict[str, Any] = {}
    for key in ("rope_parameters", "rope_scaling"):  # transformers 5: theta and scaling together; 4: scaling
        if cfg.get(key) is not None:
            params.update(cfg[key])
    if "rope_theta" in cfg and "rope_theta" not in params:
        params["rope_theta"] = cfg["rope_theta"]
    check_values(params, "config.json rope_scaling")
    params.setdefault("rope_theta", 10000.0)
    kind = params.pop("rope_type", None) or params.pop("type", None) or "default"
    if kind == "default":
        return {"rope_theta": params["rope_theta"]}
    if kind not in ("llama3", "linear", "longrope"):
        raise ModelLoadError(
            f"unsupported rope scaling {_show(kind)}; tiankong supports default, linear, llama3 and longrope"
        )
    if kind == "longrope" and "original_max_position_embeddings" not in params:
        raise ModelLoadError("config.json rope_scaling: longrope needs original_max_position_embeddings; add it")
    if kind == "llama3" and params.get("low_freq_factor", 1.0) == params.get("high_freq_factor", 4.0):
        raise ModelLoadError("config.json rope_scaling: low_freq_factor and high_freq_factor must differ; fix them")
    params["rope_type"] = kind
    return params
