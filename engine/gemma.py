"""The Gemma family: Gemma 2 and Gemma 3 text models.

A Llama-shaped decoder (RoPE, grouped-query attention, gated feed-forward) that differs in enough
places to be a module of its own rather than switches through llama.py:

- embeddings are multiplied by sqrt(hidden size); the output layer reads the embedding (tied);
- RMSNorm scales by (1 + w), in float32, and every block normalises four times: before and after
  attention, before and after the feed-forward (the residual adds the post-normalised output);
- the feed-forward is GeGLU: gelu(tanh form)(gate) * up;
- attention scores are scaled by query_pre_attn_scalar ** -0.5, not head_dim ** -0.5;
- layers are local (a sliding window) or global (cfg.layer_types): `generate` builds full masks
  (cfg.sliding_window is None) and the model narrows them for its local layers;
- Gemma 2 soft-caps attention scores and the final logits: s -> c * tanh(s / c);
- Gemma 3 has Qwen3-style per-head q/k RMSNorms (with the (1 + w) gain) and its local layers
  their own RoPE base (inv_freq_local).

Same forward signature as `llama.Llama`, so generation and training treat it alike. Read
top-down: norm, attention, feed-forward, block, model, then the weight table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache, sdpa, visible_runs
from .llama import WEIGHT_MAP as LLAMA_WEIGHT_MAP
from .llama import Attention as LlamaAttention
from .llama import RMSNorm as LlamaRMSNorm
from .llama import rope_tables
from .rope import rope_buffers
from .weights import embedding


class RMSNorm(LlamaRMSNorm):
    """x / rms(x) * (1 + w), computed in float32 and cast back (transformers' Gemma RMSNorm)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__(dim, eps)
        nn.init.zeros_(self.weight)  # a gain of 1 + 0, as transformers initialises

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = 1.0 + self.weight.float()
        return F.rms_norm(x.float(), (x.shape[-1],), gain, self.eps).to(x.dtype)


def local_mask(mask: torch.Tensor | None, start: int, T: int, S: int, window: int, B: int, device) -> torch.Tensor:
    """The mask of a local layer: `mask` (B, 1, T, S) bool, or None for plain causal attention,
    narrowed to keys fewer than `window` slots before the query (queries at slots start..start+T).
    Slots and positions differ by a row's left padding only, so the distance is the same."""
    q = torch.arange(start, start + T, device=device)[:, None]  # (T, 1)
    k = torch.arange(S, device=device)[None, :]  # (1, S)
    near = (k <= q) & (q - k < window)  # (T, S)
    return near[None, None] if mask is None else mask & near


def softcapped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float, cap: float
) -> torch.Tensor:
    """Attention whose scores s are soft-capped to cap * tanh(s / cap) before the mask (Gemma 2),
    which SDPA cannot do. q (B, H, T, hd); k, v (B, H_kv, S, hd); mask (B, 1, T, S) bool or None
    for causal (the queries being the last T of the S slots) -> (B, H, T, hd)."""
    T, S = q.shape[2], k.shape[2]
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, S, hd)
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, T, S)
    scores = torch.tanh(scores / cap) * cap
    if mask is None:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v


class Attention(LlamaAttention):
    """Llama's attention with Gemma's query scale (query_pre_attn_scalar), its (1 + w) q/k norms
    (Gemma 3) and soft-capped scores (Gemma 2)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, norm=RMSNorm)
        self.scale = cfg.attn_scale if cfg.attn_scale is not None else cfg.head_dim**-0.5  # (SDPA's default)
        self.softcap = cfg.attn_softcap

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.softcap is not None:
            return softcapped_attention(q, k, v, mask, self.scale, self.softcap)
        return sdpa(q, k, v, mask, self.scale)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)  # down
        self.approximate = "none" if cfg.activation == "gelu" else "tanh"  # gelu_pytorch_tanh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x), approximate=self.approximate) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, local: bool) -> None:
        super().__init__()
        self.local = local  # a sliding-window layer (its mask and, in Gemma 3, its RoPE base)
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.post_attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg)
        self.post_ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, cos, sin, mask, cache, layer, start):
        x = x + self.post_attn_norm(self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, start))
        return x + self.post_ffn_norm(self.ffn(self.ffn_norm(x)))


class Gemma(nn.Module):
    inv_freq: torch.Tensor  # (hd/2,) buffers registered in __init__ (config.rope_buffers): global
    inv_freq_local: torch.Tensor  # and local layers' frequencies; long-rope's never (llama.RopeModel)
    inv_freq_long: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = embedding(cfg.vocab_size, cfg.dim)
        kinds = cfg.layer_types or ("full_attention",) * cfg.n_layers
        self.layers = nn.ModuleList(Block(cfg, kinds[i] == "sliding_attention") for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_emb.weight
        for name, freqs in rope_buffers(cfg).items():  # inv_freq (global layers), inv_freq_local
            self.register_buffer(name, freqs.to(self.tok_emb.weight.device), persistent=False)

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        last_only: bool = False,
        hidden: bool = False,
    ) -> torch.Tensor:
        """Same contract as `Llama.forward`: tokens, positions (B, T) -> logits (B, T or 1, V);
        `mask` (B, 1, T, S) bool or None is the global layers' (no window)."""
        cfg = self.cfg
        x = self.tok_emb(tokens)  # (B, T, D)
        # sqrt(D) rounded to float32, then to the weights' dtype, as transformers does (bf16 rounds it).
        x = x * torch.tensor(cfg.dim**0.5).to(x.dtype)
        B, T = tokens.shape
        S = start + T
        local = mask
        if cfg.local_window is not None and S > cfg.local_window:
            local = local_mask(mask, start, T, S, cfg.local_window, B, tokens.device)
        tables = {False: rope_tables(self, positions, x.dtype)}  # (cos, sin), each (B, 1, T, hd)
        tables[True] = tables[False]
        if cfg.local_rope_theta is not None:
            tables[True] = rope_tables(self, positions, x.dtype, self.inv_freq_local)
        # A decode step's masks as each row's run of slots (kv_cache.Runs: its sums as when alone).
        runs = {False: visible_runs(mask, tokens), True: visible_runs(local, tokens)}
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, Block)  # (ModuleList types its items nn.Module)
            cos, sin = tables[layer.local]
            x = layer(x, cos, sin, runs[layer.local], cache, i, start)
        if last_only:
            x = x[:, -1:]
        x = self.norm(x)
        if hidden:
            return x
        logits = self.output(x)
        if cfg.final_softcap is not None:
            logits = torch.tanh(logits / cfg.final_softcap) * cfg.final_softcap
        return logits


# checkpoint tensor name (transformers' naming) -> module name here; "{}" is the layer index.
# Llama's names, and Gemma's post-attention norm is the one transformers' Llama uses before the
# feed-forward: so that row is redefined, and the feed-forward's own norms added.
WEIGHT_MAP: dict[str, str] = {
    **LLAMA_WEIGHT_MAP,
    "model.layers.{}.post_attention_layernorm.weight": "layers.{}.post_attn_norm.weight",
    "model.layers.{}.pre_feedforward_layernorm.weight": "layers.{}.ffn_norm.weight",
    "model.layers.{}.post_feedforward_layernorm.weight": "layers.{}.post_ffn_norm.weight",
}
IGNORED: tuple[str, ...] = ("model.layers.{}.self_attn.rotary_emb.inv_freq",)
