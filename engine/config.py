"""Model configuration: one dataclass for every supported architecture, read from `config.json`.

`config.json` has changed shape across transformers releases (4.x puts `rope_theta` and
`rope_scaling` at the top level; 5.x nests them in `rope_parameters`; `torch_dtype` became
`dtype`; GPT-2 uses its own names such as `n_embd`). `ModelConfig.from_hf_config` is the one
place that knows those spellings, so the model code reads a single, plain set of fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ModelLoadError
from .files import model_file, read_model_object

if TYPE_CHECKING:  # torch is imported where needed: reading a config needs no torch
    import torch

# architecture name in config.json -> model family implemented in this package
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "llama",
    "Qwen3ForCausalLM": "llama",
    "GPT2LMHeadModel": "gpt2",
}


@dataclass
class ModelConfig:
    architecture: str = "LlamaForCausalLM"  # the name from config.json's "architectures"
    family: str = "llama"  # "llama" (RoPE, RMSNorm, SwiGLU) or "gpt2" (learned positions, LayerNorm, GELU)
    vocab_size: int = 32000  # rows of the embedding and the output layer
    dim: int = 4096  # hidden size
    n_layers: int = 32  # transformer blocks
    n_heads: int = 32  # query heads
    n_kv_heads: int = 32  # key/value heads (fewer than n_heads: grouped-query attention)
    head_dim: int = 0  # per-head size; 0 means dim // n_heads
    ffn_dim: int = 11008  # feed-forward hidden size
    norm_eps: float = 1e-5  # RMSNorm / LayerNorm epsilon
    max_seq_len: int = 2048  # context length the model was trained for
    rope_theta: float = 10000.0  # RoPE base
    rope_scaling: dict[str, Any] | None = None  # e.g. {"rope_type": "llama3", "factor": 8.0, ...}
    qkv_bias: bool = False  # Qwen2 has biases on q/k/v projections
    o_bias: bool = False  # attention_bias (Llama, Qwen3): a bias on the output projection too
    qk_norm: bool = False  # Qwen3: an RMSNorm (gain of head_dim) on every q and k head before RoPE
    sliding_window: int | None = None  # Mistral: a key is visible only within this many positions
    tie_embeddings: bool = False  # output layer shares the embedding matrix
    activation: str = "silu"  # SwiGLU gate (llama) or "gelu_new" (gpt2)
    torch_dtype: str | None = None  # dtype the checkpoint was saved in, if it says
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the rest of config.json, for reference

    def __post_init__(self) -> None:
        # Checked before any tensor exists: a bad pair is one line naming the fields, not a torch error.
        heads, hidden = ("n_head", "n_embd") if self.family == "gpt2" else ("num_attention_heads", "hidden_size")
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise ModelLoadError(
                f"config.json: {heads} ({self.n_heads}) must be a multiple of "
                f"num_key_value_heads ({self.n_kv_heads}); fix the values"
            )
        if self.head_dim == 0:
            if self.dim % self.n_heads:
                raise ModelLoadError(
                    f"config.json: {hidden} ({self.dim}) must be divisible by {heads} "
                    f"({self.n_heads}), or head_dim must be given; fix the values"
                )
            self.head_dim = self.dim // self.n_heads
        if self.family == "llama" and self.head_dim % 2:
            raise ModelLoadError(
                f"config.json: the head size ({self.head_dim}) must be even for rotary "
                "positions; fix head_dim or hidden_size"
            )

    @property
    def positional(self) -> str:
        """How position enters the model, in words (for `tiankong info`)."""
        if self.family == "gpt2":
            return "learned absolute embeddings"
        scaling = f", {self.rope_scaling.get('rope_type', 'scaled')} scaling" if self.rope_scaling else ""
        return f"rotary (RoPE, theta {self.rope_theta:g}{scaling})"

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> ModelConfig:
        """Map a transformers `config.json` dict to a ModelConfig (4.x and 5.x spellings)."""
        check_values(cfg)
        archs = cfg.get("architectures") or []
        arch = next((a for a in archs if a in ARCHITECTURES), None)
        if arch is None:
            # Older or hand-written configs may only have model_type.
            by_type = {
                "llama": "LlamaForCausalLM",
                "mistral": "MistralForCausalLM",
                "qwen2": "Qwen2ForCausalLM",
                "qwen3": "Qwen3ForCausalLM",
                "gpt2": "GPT2LMHeadModel",
            }
            arch = by_type.get(cfg.get("model_type", ""))
        if arch is None:
            named = ", ".join(archs) or cfg.get("model_type") or "none given"
            raise ModelLoadError(f"unsupported architecture ({named}); tiankong supports {', '.join(ARCHITECTURES)}")
        family = ARCHITECTURES[arch]
        dtype = cfg.get("dtype") or cfg.get("torch_dtype")
        common = dict(
            architecture=arch,
            family=family,
            torch_dtype=dtype,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
            extra=dict(cfg),
        )
        try:
            if family == "gpt2":
                dim = int(cfg["n_embd"])
                act = cfg.get("activation_function", "gelu_new")
                if act not in ("gelu_new", "gelu", "gelu_pytorch_tanh", "gelu_fast"):
                    raise ModelLoadError(f"unsupported GPT-2 activation {act!r}; expected gelu_new or gelu")
                return cls(
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
                    **common,
                )
            act = cfg.get("hidden_act", "silu")
            if act != "silu":
                raise ModelLoadError(f"unsupported hidden_act {act!r} for {arch}; expected silu")
            rope = _rope_parameters(cfg)
            window = _qwen_window(cfg) if arch.startswith("Qwen") else cfg.get("sliding_window")
            n_heads = int(cfg["num_attention_heads"])
            # Qwen3's head size is its own field (128 when absent), not hidden_size / heads.
            head_dim = cfg.get("head_dim") or (128 if arch == "Qwen3ForCausalLM" else 0)
            return cls(
                vocab_size=int(cfg["vocab_size"]),
                dim=int(cfg["hidden_size"]),
                n_layers=int(cfg["num_hidden_layers"]),
                n_heads=n_heads,
                n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
                head_dim=int(head_dim),
                ffn_dim=int(cfg["intermediate_size"]),
                norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
                rope_theta=float(rope.pop("rope_theta", 10000.0)),
                rope_scaling=rope or None,
                qkv_bias=arch == "Qwen2ForCausalLM" or bool(cfg.get("attention_bias", False)),
                o_bias=arch != "Qwen2ForCausalLM" and bool(cfg.get("attention_bias", False)),
                qk_norm=arch == "Qwen3ForCausalLM",
                sliding_window=int(window) if window else None,
                tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                activation=act,
                **common,
            )
        except KeyError as e:
            raise ModelLoadError(
                f"config.json lacks {e.args[0]!r}, which {arch} needs; re-save the model with transformers"
            ) from None

    @classmethod
    def from_folder(cls, folder: str | Path) -> ModelConfig:
        if model_file(folder, "config.json") is None:
            raise ModelLoadError(f"no config.json in {folder}; point --model at a Hugging Face model folder")
        return cls.from_hf_config(read_model_object(folder, "config.json"))


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
    kind = params.pop("rope_type", None) or params.pop("type", None) or "default"
    if kind == "default":
        return {"rope_theta": params.get("rope_theta", 10000.0)}
    if kind not in ("llama3", "linear"):
        raise ModelLoadError(f"unsupported rope scaling {_show(kind)}; tiankong supports default, linear and llama3")
    if kind == "llama3" and params.get("low_freq_factor", 1.0) == params.get("high_freq_factor", 4.0):
        raise ModelLoadError("config.json rope_scaling: low_freq_factor and high_freq_factor must differ; fix them")
    params["rope_type"] = kind
    return params


# What each config.json value must be: (type, smallest, largest). Checked before anything is built, so
# a hostile or damaged value (a string, null, NaN, 1e300, -4) is one line naming the field instead of a
# torch traceback, a hang or gigabytes allocated. The bounds are far beyond any real model; sizes are
# also checked against the checkpoint's tensor shapes before building (weights.check_checkpoint).
# Floats must be above `smallest`, ints at least it.
_LIMITS: dict[str, tuple[type, float, float]] = {
    "vocab_size": (int, 1, 1 << 24),
    **dict.fromkeys(("hidden_size", "n_embd"), (int, 1, 1 << 17)),
    **dict.fromkeys(("intermediate_size", "n_inner"), (int, 1, 1 << 20)),
    **dict.fromkeys(("num_hidden_layers", "n_layer"), (int, 1, 1 << 12)),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_key_value_heads"), (int, 1, 1 << 12)),
    "head_dim": (int, 1, 1 << 14),
    **dict.fromkeys(
        ("max_position_embeddings", "n_positions", "sliding_window", "original_max_position_embeddings"),
        (int, 1, 1 << 27),
    ),
    "max_window_layers": (int, 0, 1 << 12),
    "rope_theta": (float, 0, 1e12),
    **dict.fromkeys(("rms_norm_eps", "layer_norm_epsilon"), (float, 0, 1)),
    **dict.fromkeys(("factor", "low_freq_factor", "high_freq_factor"), (float, 0, 1e6)),
}
_NULLABLE = {"num_key_value_heads", "head_dim", "n_inner", "sliding_window", "max_window_layers"}
# Values that must be of a JSON type (or null) for the code above to read them at all.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "architectures": ((list,), 'a list of names such as ["LlamaForCausalLM"]'),
    "model_type": ((str,), 'a name such as "llama"'),
    **dict.fromkeys(("attention_bias", "use_sliding_window", "tie_word_embeddings"), ((bool,), "true or false")),
    "layer_types": ((list,), 'a list such as ["full_attention", "full_attention"]'),
    **dict.fromkeys(
        ("rope_scaling", "rope_parameters"),
        ((dict,), 'an object such as {"rope_type": "linear", "factor": 2.0}, or null'),
    ),
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_values(cfg: Mapping[str, Any], where: str = "config.json") -> None:
    """Raise ModelLoadError naming the first value of `cfg` that breaks _LIMITS or _TYPES."""
    for key, (types, want) in _TYPES.items():
        value = cfg.get(key)
        if value is not None and (
            not isinstance(value, types) or key == "architectures" and not all(isinstance(a, str) for a in value)
        ):
            raise ModelLoadError(f"{where}: {key} is {_show(value)}, but it must be {want}; fix the value")
    for key, (kind, lo, hi) in _LIMITS.items():
        value = cfg.get(key)
        if key not in cfg or value is None and key in _NULLABLE:
            continue
        if kind is int:  # bool is not int here: `true` is no size
            ok, want = type(value) is int and lo <= value <= hi, f"a whole number from {lo} to {hi}"
        else:  # NaN and inf fail the comparison
            ok, want = type(value) in (int, float) and lo < value <= hi, f"a number above {lo:g} and at most {hi:g}"
        if not ok:
            raise ModelLoadError(f"{where}: {key} is {_show(value)}, but it must be {want}; fix the value")


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,) for RoPE, with the checkpoint's scaling applied."""
    import torch

    # float32 on purpose: transformers computes it so, and logits parity depends on it. Always on
    # the CPU (callers move it): under a meta-device context these few ops would import ~70 MB of
    # torch's meta kernels, written in Python, for nothing.
    arange = torch.arange(0, cfg.head_dim, 2, dtype=torch.int64, device="cpu")
    inv = 1.0 / (cfg.rope_theta ** (arange.float() / cfg.head_dim))
    s = cfg.rope_scaling
    if not s:
        return inv
    factor = float(s.get("factor", 1.0))
    if s["rope_type"] == "linear":
        return inv / factor
    # llama3: leave high frequencies alone, divide low frequencies by `factor`, blend between.
    low = float(s.get("low_freq_factor", 1.0))
    high = float(s.get("high_freq_factor", 4.0))
    orig = float(s.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv
    low_wavelen, high_wavelen = orig / low, orig / high
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (orig / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


_MODEL_TYPES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "GPT2LMHeadModel": "gpt2",
}


def to_hf_config(cfg: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
    """The config.json transformers expects for `cfg` (the original's other keys are kept)."""
    out = {k: v for k, v in cfg.extra.items() if k not in ("torch_dtype", "dtype", "rope_scaling", "rope_parameters")}
    out.update(
        architectures=[cfg.architecture],
        model_type=_MODEL_TYPES[cfg.architecture],
        vocab_size=cfg.vocab_size,
        tie_word_embeddings=cfg.tie_embeddings,
        torch_dtype=dtype,
    )
    if cfg.bos_token_id is not None:
        out["bos_token_id"] = cfg.bos_token_id
    if cfg.eos_token_id is not None:
        out["eos_token_id"] = cfg.eos_token_id
    if cfg.family == "gpt2":
        out.update(
            n_embd=cfg.dim,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_inner=cfg.ffn_dim,
            n_positions=cfg.max_seq_len,
            layer_norm_epsilon=cfg.norm_eps,
            activation_function=cfg.activation,
        )
        return out
    out.update(
        hidden_size=cfg.dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        intermediate_size=cfg.ffn_dim,
        rms_norm_eps=cfg.norm_eps,
        max_position_embeddings=cfg.max_seq_len,
        hidden_act=cfg.activation,
        rope_theta=cfg.rope_theta,
    )
    if cfg.rope_scaling:  # the 4.x spelling, which transformers 5 still reads
        out["rope_scaling"] = dict(cfg.rope_scaling)
    if cfg.architecture in ("Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        out["use_sliding_window"] = cfg.sliding_window is not None
        if cfg.sliding_window is not None:  # every layer windowed, as tiankong runs it
            out.update(max_window_layers=0, layer_types=["sliding_attention"] * cfg.n_layers)
    if cfg.sliding_window is not None:
        out["sliding_window"] = cfg.sliding_window
    elif cfg.architecture == "MistralForCausalLM":
        out["sliding_window"] = None
    if cfg.architecture in ("LlamaForCausalLM", "Qwen3ForCausalLM"):
        out["attention_bias"] = cfg.qkv_bias
    return out
