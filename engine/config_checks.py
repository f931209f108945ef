"""Checks on the values of a stranger's `config.json`: each number's type and range, each other
value's JSON type, raised as one line naming the field.

Apart from the reading (config_families.py) because every reader calls it, on the top level, on
RoPE settings and on Gemma 3's text_config, and the tables are the one list of what a value may be.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import ModelLoadError, quoted

MAX_LAYERS = 1 << 12  # far beyond any real model (weights.check_checkpoint suggests no more)

# What each config.json value must be: (type, smallest, largest). Checked before anything is built, so
# a hostile or damaged value (a string, null, NaN, 1e300, -4) is one line naming the field instead of a
# torch traceback, a hang or gigabytes allocated. The bounds are far beyond any real model; sizes are
# also checked against the checkpoint's tensor shapes before building (weights.check_checkpoint).
# Floats must be above `smallest`, ints at least it.
_LIMITS: dict[str, tuple[type, float, float]] = {
    "vocab_size": (int, 1, 1 << 24),
    **dict.fromkeys(("hidden_size", "n_embd"), (int, 1, 1 << 17)),
    **dict.fromkeys(("intermediate_size", "n_inner"), (int, 1, 1 << 20)),
    **dict.fromkeys(("num_hidden_layers", "n_layer"), (int, 1, MAX_LAYERS)),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_key_value_heads"), (int, 1, 1 << 12)),
    "head_dim": (int, 1, 1 << 14),
    **dict.fromkeys(
        ("sliding_window", "original_max_position_embeddings"),
        (int, 1, 1 << 27),
    ),
    # a context holds at least a prompt token and an answer token
    **dict.fromkeys(("max_position_embeddings", "n_positions"), (int, 2, 1 << 27)),
    "max_window_layers": (int, 0, 1 << 12),
    "sliding_window_pattern": (int, 1, 1 << 12),
    **dict.fromkeys(("rope_theta", "rope_local_base_freq"), (float, 0, 1e12)),
    "partial_rotary_factor": (float, 0, 1),
    **dict.fromkeys(
        ("query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping", "attention_factor"),
        (float, 0, 1e9),
    ),
    **dict.fromkeys(("rms_norm_eps", "layer_norm_epsilon"), (float, 0, 1)),
    **dict.fromkeys(("factor", "low_freq_factor", "high_freq_factor"), (float, 0, 1e6)),
}
_NULLABLE = {
    *("num_key_value_heads", "head_dim", "n_inner", "sliding_window", "max_window_layers"),
    *("attn_logit_softcapping", "final_logit_softcapping", "attention_factor"),
}
# Values that must be of a JSON type (or null) for config_families.py to read them at all.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "architectures": ((list,), 'a list of names such as ["LlamaForCausalLM"]'),
    "model_type": ((str,), 'a name such as "llama"'),
    **dict.fromkeys(
        (
            *("attention_bias", "use_sliding_window", "tie_word_embeddings", "use_bidirectional_attention"),
            *("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"),
        ),
        ((bool,), "true or false"),
    ),
    **dict.fromkeys(("short_factor", "long_factor"), ((list,), "a list of numbers, one per rotated pair")),
    **dict.fromkeys(("hidden_act", "hidden_activation"), ((str,), 'a name such as "silu"')),
    "layer_types": ((list,), 'a list such as ["full_attention", "full_attention"]'),
    **dict.fromkeys(
        ("rope_scaling", "rope_parameters"),
        ((dict,), 'an object such as {"rope_type": "linear", "factor": 2.0}, or null'),
    ),
}


# The fix for a quantized checkpoint (GPTQ, AWQ, FP8, bitsandbytes, ...): tiankong quantizes at load
# itself, or reads llama.cpp's quantizations.
QUANTIZED_FIX = "use the unquantized model (with --dtype q8_0 or q4_0 to quantize it at load) or a GGUF file of it"


def check_not_quantized(cfg: Mapping[str, Any], where: str = "config.json") -> None:
    """Refuse a checkpoint quantized by a library tiankong does not read. Its tensors are packed
    integers and scales (qweight, qzeros, scales; weight_scale_inv) under names the loader does not
    know, or FP8 weights whose scales would be dropped: without this line the load fails naming
    missing or extra tensors, or loads weights cast without their scales and writes garbage."""
    for key in ("quantization_config", "compression_config"):  # compressed-tensors' older name
        value = cfg.get(key)
        if value is None or value == {}:
            continue
        method = value.get("quant_method") if isinstance(value, Mapping) else None
        if method is None and isinstance(value, Mapping) and (value.get("load_in_4bit") or value.get("load_in_8bit")):
            method = "bitsandbytes"  # older bitsandbytes configs name no quant_method
        name = quoted(method, 40) if isinstance(method, str) and method else "a method it does not name"
        raise ModelLoadError(
            f"{where}: the checkpoint is quantized with {name} ({key}), which tiankong does not read; {QUANTIZED_FIX}"
        )


def _show(value: Any) -> str:
    """A config.json value as a message shows it, cut to 40 characters."""
    text = _spelled(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _spelled(value: Any) -> str:
    """repr, but null, true and false as config.json writes them (not None, True, False)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_spelled(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_spelled(k)}: {_spelled(v)}" for k, v in value.items()) + "}"
    return repr(value)


def check_values(cfg: Mapping[str, Any], where: str = "config.json") -> None:
    """Raise ModelLoadError naming the first value of `cfg` that breaks _LIMITS or _TYPES."""
    for key, (types, want) in _TYPES.items():
        value = cfg.get(key)
        if value is not None and (
            not isinstance(value, types) or key == "architectures" and not all(isinstance(a, str) for a in cfg[key])
        ):
            raise ModelLoadError(f"{where}: {key} is {_show(value)}, but it must be {want}; fix the value")
    for key, (kind, lo, hi) in _LIMITS.items():
        value = cfg.get(key)
        if key not in cfg or value is None and key in _NULLABLE:
            continue
        if kind is int:  # bool is not int here: `true` is no size
            ok, want = type(value) is int and lo <= value <= hi, f"a whole number from {lo} to {hi}"
        else:  # NaN and inf fail the comparison
            ok, want = (
                (type(value) is int or type(value) is float) and lo < value <= hi,
                f"a number above {lo:g} and at most {hi:g}",
            )
        if not ok:
            raise ModelLoadError(f"{where}: {key} is {_show(value)}, but it must be {want}; fix the value")
