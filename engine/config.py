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

from .errors import ModelLoadError, quoted
from .files import model_file, read_model_object

if TYPE_CHECKING:  # torch is imported where needed: reading a config needs no torch
    import torch

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
    sliding_window: int | None = None  # Mistral, Phi-3: a key is visible only within this many positions
    partial_rotary_factor: float = 1.0  # Phi-3/4: RoPE turns only the first head_dim * this dims of a head
    # Gemma: local (sliding-window) and global layers. generate's masks follow sliding_window, which
    # holds for every layer; so Gemma keeps it None and narrows the mask itself for its local layers.
    layer_types: tuple[str, ...] = ()  # per layer "sliding_attention" or "full_attention"
    local_window: int | None = None  # the window of the "sliding_attention" layers
    local_rope_theta: float | None = None  # Gemma 3: their RoPE base (the global layers' is rope_theta)
    # Gemma: query_pre_attn_scalar ** -0.5 instead of head_dim ** -0.5; GPT-2 with scale_attn_weights false: 1
    attn_scale: float | None = None
    attn_scale_by_layer: bool = False  # GPT-2's scale_attn_by_inverse_layer_idx: layer i's scale / (i + 1)
    attn_softcap: float | None = None  # Gemma 2: attention scores s become c * tanh(s / c)
    final_softcap: float | None = None  # Gemma 2: logits z become c * tanh(z / c)
    # Gemma 3 image-text checkpoints: the text model's tensors sit under "language_model."; the
    # vision tower's are not read, and a save writes the text model alone (Gemma3ForCausalLM).
    text_prefix: str = ""
    tie_embeddings: bool = False  # output layer shares the embedding matrix
    activation: str = "silu"  # SwiGLU gate (llama), "gelu_pytorch_tanh" (gemma's GeGLU) or "gelu_new" (gpt2)
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
        if self.family != "gpt2" and (self.head_dim % 2 or self.rotary_dim % 2 or self.rotary_dim < 2):
            raise ModelLoadError(
                f"config.json: the rotated part of a head ({self.rotary_dim} of {self.head_dim}) must be "
                "even and at least 2 for rotary positions; fix head_dim, hidden_size or partial_rotary_factor"
            )

        if self.rope_scaling and self.rope_scaling.get("rope_type") == "longrope":
            if self.rope_scaling["original_max_position_embeddings"] < 2:  # its log divides
                raise ModelLoadError("config.json: original_max_position_embeddings must be at least 2; fix it")
            for key in ("short_factor", "long_factor"):  # one factor per rotated pair of dims
                f = self.rope_scaling.get(key)
                if not (isinstance(f, list) and len(f) == self.rotary_dim // 2 and all(_positive(x) for x in f)):
                    raise ModelLoadError(
                        f"config.json rope_scaling: {key} must be a list of {self.rotary_dim // 2} positive "
                        "numbers (one per rotated pair of head dims); fix it"
                    )

    def layer_attn_scale(self, layer: int) -> float:
        """The factor on layer `layer`'s (0-based) q.k scores before the softmax."""
        scale = self.head_dim**-0.5 if self.attn_scale is None else self.attn_scale
        return scale / (layer + 1) if self.attn_scale_by_layer else scale

    @property
    def rotary_dim(self) -> int:
        """How many leading dims of each q/k head RoPE turns (all but with Phi's partial rotary)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def positional(self) -> str:
        """How position enters the model, in words (for `tiankong info`)."""
        if self.family == "gpt2":
            return "learned absolute embeddings"
        scaling = f", {self.rope_scaling.get('rope_type', 'scaled')} scaling" if self.rope_scaling else ""
        if self.rotary_dim < self.head_dim:
            scaling += f", {self.rotary_dim} of {self.head_dim} dims"
        local = ""
        if self.local_window is not None:  # Gemma
            theta = f", theta {self.local_rope_theta:g}" if self.local_rope_theta else ""
            local = f"; {self.layer_types.count('sliding_attention')} local layers: window {self.local_window}{theta}"
        return f"rotary (RoPE, theta {self.rope_theta:g}{scaling}){local}"

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> ModelConfig:
        """Map a transformers `config.json` dict to a ModelConfig (4.x and 5.x spellings)."""
        check_values(cfg)
        arch = _architecture(cfg)
        prefix = ""
        if arch == "Gemma3ForConditionalGeneration":
            cfg, arch, prefix = _gemma3_text_part(cfg), "Gemma3ForCausalLM", "language_model."
        family = ARCHITECTURES[arch]
        cfg = {**_DEFAULTS.get(arch, {}), **cfg}  # what transformers' config class assumes when absent
        common: dict[str, Any] = dict(
            architecture=arch,
            family=family,
            torch_dtype=cfg.get("dtype") or cfg.get("torch_dtype"),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
            extra=dict(cfg),
            text_prefix=prefix,
        )
        try:
            if family == "gpt2":
                return cls(**_gpt2_fields(cfg), **common)
            per_family = _gemma_fields(cfg, arch) if family == "gemma" else _llama_fields(cfg, arch)
            return cls(**_decoder_fields(cfg, arch), **per_family, **common)
        except KeyError as e:
            raise ModelLoadError(
                f"config.json lacks {e.args[0]!r}, which {arch} needs; re-save the model with transformers"
            ) from None

    @classmethod
    def from_folder(cls, folder: str | Path) -> ModelConfig:
        if model_file(folder, "config.json") is None:
            raise ModelLoadError(f"no config.json in {folder}; point --model at a Hugging Face model folder")
        return cls.from_hf_config(read_model_object(folder, "config.json"))


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
        ("max_position_embeddings", "n_positions", "sliding_window", "original_max_position_embeddings"),
        (int, 1, 1 << 27),
    ),
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
# Values that must be of a JSON type (or null) for the code above to read them at all.
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


_GELUS = ("gelu_new", "gelu", "gelu_pytorch_tanh", "gelu_fast")  # "gelu" is exact, the others the tanh form


def _positive(x: Any) -> bool:
    return type(x) in (int, float) and 0 < x < 1e6  # NaN fails the comparison


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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


def rope_buffers(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A model's RoPE frequencies by buffer name, float32 on the CPU: "inv_freq" (rotary_dim/2,);
    "inv_freq_long" with long-rope; "inv_freq_local" for Gemma's local layers. Models register
    them when built; load_model and the trainers set them again (built on meta, or cast to bf16)."""
    if cfg.family == "gpt2":
        return {}
    out = {"inv_freq": rope_inv_freq(cfg)}
    if cfg.rope_scaling and cfg.rope_scaling["rope_type"] == "longrope":
        out["inv_freq_long"] = rope_inv_freq(cfg, long=True)
    if cfg.family == "gemma":  # Gemma 2's local layers share the global frequencies
        out["inv_freq_local"] = (
            rope_inv_freq(cfg, theta=cfg.local_rope_theta) if cfg.local_rope_theta else out["inv_freq"]
        )
    return out


def long_rope_applies(cfg: ModelConfig, positions: torch.Tensor) -> bool:
    """Whether any row of a forward call over `positions` (B, T) uses long-rope's long factors
    (see long_rope_freqs)."""
    s = cfg.rope_scaling
    return bool(s and s["rope_type"] == "longrope" and int(positions.max()) >= s["original_max_position_embeddings"])


def long_rope_freqs(
    cfg: ModelConfig, positions: torch.Tensor, short: torch.Tensor, long: torch.Tensor | None
) -> torch.Tensor:
    """The RoPE frequencies of each row of a call over `positions` (B, T): (rd/2,), or (B, 1, rd/2)
    when rows differ. A row takes long-rope's long factors once its own positions pass
    original_max_position_embeddings, as transformers does for one sequence (for a padded batch it
    switches every row at once; here a row's tokens do not depend on the rows beside it, which a
    server's batch needs). Keys already cached keep the rotation they got (generate re-reads them)."""
    s = cfg.rope_scaling
    if long is None or s is None or not long_rope_applies(cfg, positions):
        return short
    rows = positions.amax(dim=1) >= s["original_max_position_embeddings"]  # (B,)
    return long if bool(rows.all()) else long.where(rows[:, None, None], short)


def rope_attention_factor(cfg: ModelConfig) -> float:
    """Long-rope's scale on cos and sin (so on q.k, squared): its attention_factor, else
    sqrt(1 + ln(factor) / ln(original)) with factor = max_position_embeddings / original, as
    transformers computes it; 1 for every other RoPE."""
    s = cfg.rope_scaling
    if not s or s["rope_type"] != "longrope":
        return 1.0
    if s.get("attention_factor") is not None:
        return float(s["attention_factor"])
    orig = s["original_max_position_embeddings"]
    factor = s.get("factor") or cfg.max_seq_len / orig
    return 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(orig))


def rope_inv_freq(cfg: ModelConfig, long: bool = False, theta: float | None = None) -> torch.Tensor:
    """Inverse frequencies (rotary_dim/2,) for RoPE, with the checkpoint's scaling applied; `long`:
    long-rope's long factors instead of its short ones; `theta`: another base, unscaled (Gemma 3's
    local layers)."""
    import torch

    # float32 on purpose: transformers computes it so, and logits parity depends on it. Always on
    # the CPU (callers move it): under a meta-device context these few ops would import ~70 MB of
    # torch's meta kernels, written in Python, for nothing.
    rd = cfg.rotary_dim
    shape = torch.arange(0, rd, 2, dtype=torch.int64, device="cpu").float() / rd
    base = cfg.rope_theta if theta is None else theta
    inv = 1.0 / (base**shape)
    s = cfg.rope_scaling
    if not s or theta is not None:
        return inv
    if s["rope_type"] == "longrope":  # Phi-3: one divisor per pair, short or long
        ext = torch.tensor(s["long_factor" if long else "short_factor"], dtype=torch.float32, device="cpu")
        return 1.0 / (ext * base**shape)
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
    "Phi3ForCausalLM": "phi3",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3_text",
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
            scale_attn_weights=cfg.attn_scale is None,
            scale_attn_by_inverse_layer_idx=cfg.attn_scale_by_layer,
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
    if cfg.architecture == "Phi3ForCausalLM":  # Phi3Config reads these at the top level first
        out["partial_rotary_factor"] = cfg.partial_rotary_factor
        if cfg.rope_scaling and cfg.rope_scaling["rope_type"] == "longrope":
            out["original_max_position_embeddings"] = cfg.rope_scaling["original_max_position_embeddings"]
    if cfg.family == "gemma":
        out.update(_gemma_hf_config(cfg))
    return out


def _gemma_hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """Gemma's own keys (query_pre_attn_scalar stays as the original config.json gave it, in extra)."""
    out = dict(
        hidden_activation=cfg.activation,
        attention_bias=cfg.qkv_bias,
        layer_types=list(cfg.layer_types),
        sliding_window=cfg.local_window,
        final_logit_softcapping=cfg.final_softcap,
    )
    if cfg.architecture == "Gemma2ForCausalLM":
        out["attn_logit_softcapping"] = cfg.attn_softcap
    if cfg.local_rope_theta is not None:  # the 4.x spelling, which transformers 5 still reads
        out["rope_local_base_freq"] = cfg.local_rope_theta
    return out
