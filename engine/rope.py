"""RoPE frequencies from a ModelConfig: the checkpoint's scaling (linear, llama3, Phi-3's
long-rope) applied, Gemma's local-layer base, and long-rope's switch to its long factors.

Apart from config.py because this is model arithmetic on torch tensors, which the models call
when they build their buffers; config.py only reads and checks settings.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .config import ModelConfig

if TYPE_CHECKING:  # torch is imported where needed: reading a config needs no torch
    import torch


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
