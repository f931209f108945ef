"""Model configuration: one dataclass for every supported architecture, read from `config.json`.

`config.json` has changed shape across transformers releases (4.x puts `rope_theta` and
`rope_scaling` at the top level; 5.x nests them in `rope_parameters`; `torch_dtype` became
`dtype`; GPT-2 uses its own names such as `n_embd`). `ModelConfig.from_hf_config`, with the
per-family readers in config_families.py, is the one place that knows those spellings, so the model
code reads a single, plain set of fields. The checks on a stranger's values are in config_checks.py,
the RoPE frequencies a config implies in rope.py; `to_hf_config` writes a config.json back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .config_checks import check_not_quantized, check_values
from .config_families import (
    _DEFAULTS,
    _MODEL_TYPES,
    ARCHITECTURES,
    _architecture,
    _decoder_fields,
    _gemma3_text_part,
    _gemma_fields,
    _gpt2_fields,
    _llama_fields,
)
from .errors import ModelLoadError
from .files import model_file, read_model_object


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
        check_not_quantized(cfg)  # first: its other values may be fine, its tensors are not ours
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
            raise ModelLoadError(
                f"no config.json in {folder}; give a Hugging Face model folder (--model DIR, or its path in Python)"
            )
        return cls.from_hf_config(read_model_object(folder, "config.json"))


def _positive(x: Any) -> bool:
    return type(x) in (int, float) and 0 < x < 1e6  # NaN fails the comparison


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
