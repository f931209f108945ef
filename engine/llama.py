"""The Llama family: Llama 2/3, TinyLlama, SmolLM, Mistral, Qwen2, Qwen3 and Phi-3.

RoPE positions, RMSNorm, SwiGLU feed-forward, grouped-query attention; Qwen2 adds biases on the
q/k/v projections, Qwen3 an RMSNorm on every query and key head before RoPE (cfg.qk_norm), and
Mistral may limit attention to a sliding window (applied by the mask that `generate` builds).
Phi-3 is this model once its fused q/k/v and gate/up tensors are split at load (PHI3_FUSED), with
long-rope (short or long per-pair factors, and a scale on cos and sin) and RoPE over only part of
each head (partial_rotary_factor). Read top-down: attention, feed-forward, block, model, then the
weight table.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache, Runs, attend_runs, build_mask, sdpa, visible_runs
from .rope import long_rope_freqs, rope_attention_factor, rope_buffers
from .weights import embedding


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    # HF checkpoints store q/k in the "rotate half" layout: pairs are (i, i + hd/2), not (2i, 2i+1).
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: x (B, heads, T, hd); cos, sin (B, 1, T, rd). The first rd dims of
    each head turn; the rest (rd < hd: Phi's partial rotary) pass unchanged."""
    rd = cos.shape[-1]
    if rd == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    turned, rest = x[..., :rd], x[..., rd:]
    return torch.cat((turned * cos + rotate_half(turned) * sin, rest), dim=-1)


class RopeModel(Protocol):
    """What rope_tables reads from a model (Llama, Gemma): its config and the buffers of
    config.rope_buffers (inv_freq_long exists only with long-rope)."""

    cfg: ModelConfig
    inv_freq: torch.Tensor
    inv_freq_long: torch.Tensor


def rope_tables(model: RopeModel, positions: torch.Tensor, dtype: torch.dtype, inv_freq: torch.Tensor | None = None):
    """cos, sin (B, 1, T, rd) in `dtype` for positions (B, T), as transformers computes them (in
    float32, times long-rope's attention factor); long-rope's long factors where they apply."""
    cfg = model.cfg
    if inv_freq is None:
        inv_freq = long_rope_freqs(cfg, positions, model.inv_freq, getattr(model, "inv_freq_long", None))
    freqs = positions.float()[..., None] * inv_freq  # (B, T, rd/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, rd)
    scale = rope_attention_factor(cfg)
    cos, sin = (emb.cos(), emb.sin()) if scale == 1.0 else (emb.cos() * scale, emb.sin() * scale)
    return cos.to(dtype), sin.to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, norm: type[RMSNorm] | None = None) -> None:
        """norm: the per-head q/k norm's class when cfg.qk_norm (Gemma 3 passes its (1 + w) one)."""
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=cfg.o_bias)
        # Qwen3: one gain of head_dim shared by all query heads, one by all key heads.
        norm = norm or RMSNorm
        self.q_norm = norm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = norm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | Runs | None,
        cache: KVCache | None,
        layer: int,
        start: int,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        H, H_kv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.wq(x).view(B, T, H, hd)  # (B, T, H, hd)
        k = self.wk(x).view(B, T, H_kv, hd)
        if self.q_norm is not None and self.k_norm is not None:  # Qwen3, Gemma 3 (both)
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, hd), (B, H_kv, T, hd)
        v = self.wv(x).view(B, T, H_kv, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, start, k, v)  # (B, H_kv, S, hd), S = start + T
        y = attend_runs(self.attend, q, k, v, mask)  # a decode step's Runs: each row from its first slot
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """kv_cache.sdpa at 1/sqrt(head_dim); Gemma's layers override it (their scale, soft-capping)."""
        return sdpa(q, k, v, mask)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # Same arithmetic as below in one fused call (a decode step runs 2 norms per layer).
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # Normalise in float32 and scale after casting back, as transformers does (matters in bf16).
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg)

    def forward(self, x, cos, sin, mask, cache, layer, start):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, start)
        return x + self.ffn(self.ffn_norm(x))


class Llama(nn.Module):
    inv_freq: torch.Tensor  # (rd/2,) buffers registered in __init__ (config.rope_buffers); the long
    inv_freq_long: torch.Tensor  # frequencies only with long-rope

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_emb.weight
        for name, freqs in rope_buffers(cfg).items():  # inv_freq (rd/2,), and inv_freq_long for long-rope
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
        """tokens, positions: (B, T) -> logits (B, T, V), or (B, 1, V) with last_only.

        mask: (B, 1, T, S) bool, True where a query may see a key (S = start + T), or None for
        plain causal attention. cache/start: write keys and values at slots start..start+T.
        hidden=True returns the final normalised hidden states (B, T, D) instead of logits
        (reward and value heads sit on them).
        """
        x = self.tok_emb(tokens)  # (B, T, D)
        window = self.cfg.sliding_window
        if mask is None and window is not None and start + tokens.shape[1] > window:
            # Mistral: keys older than the window are hidden even without padding.
            pad = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
            mask = build_mask(pad, start, tokens.shape[1], start + tokens.shape[1], window)
        cos, sin = rope_tables(self, positions, x.dtype)  # (B, 1, T, rd)
        runs = visible_runs(mask, tokens)  # a decode step's mask as each row's run of slots
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, runs, cache, i, start)
        if last_only:
            x = x[:, -1:]
        x = self.norm(x)
        return x if hidden else self.output(x)


# checkpoint tensor name (transformers' naming) -> module name here; "{}" is the layer index.
WEIGHT_MAP: dict[str, str] = {
    "model.embed_tokens.weight": "tok_emb.weight",
    "model.layers.{}.input_layernorm.weight": "layers.{}.attn_norm.weight",
    "model.layers.{}.self_attn.q_proj.weight": "layers.{}.attn.wq.weight",
    "model.layers.{}.self_attn.k_proj.weight": "layers.{}.attn.wk.weight",
    "model.layers.{}.self_attn.v_proj.weight": "layers.{}.attn.wv.weight",
    "model.layers.{}.self_attn.q_proj.bias": "layers.{}.attn.wq.bias",
    "model.layers.{}.self_attn.k_proj.bias": "layers.{}.attn.wk.bias",
    "model.layers.{}.self_attn.v_proj.bias": "layers.{}.attn.wv.bias",
    "model.layers.{}.self_attn.o_proj.weight": "layers.{}.attn.wo.weight",
    "model.layers.{}.self_attn.o_proj.bias": "layers.{}.attn.wo.bias",
    "model.layers.{}.self_attn.q_norm.weight": "layers.{}.attn.q_norm.weight",
    "model.layers.{}.self_attn.k_norm.weight": "layers.{}.attn.k_norm.weight",
    "model.layers.{}.post_attention_layernorm.weight": "layers.{}.ffn_norm.weight",
    "model.layers.{}.mlp.gate_proj.weight": "layers.{}.ffn.w1.weight",
    "model.layers.{}.mlp.up_proj.weight": "layers.{}.ffn.w3.weight",
    "model.layers.{}.mlp.down_proj.weight": "layers.{}.ffn.w2.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
# Tensors some checkpoints carry that hold nothing we need (recomputed buffers).
IGNORED: tuple[str, ...] = ("model.layers.{}.self_attn.rotary_emb.inv_freq",)


# Phi-3 stores q/k/v and gate/up as one tensor each: checkpoint name -> its parts' names here, in
# row order, with their row counts. Loading splits each into the tensors above and saving joins
# them back (weights.NameTable), so the modules stay Llama's.
def phi3_fused(cfg: ModelConfig) -> dict[str, tuple[tuple[str, int], ...]]:
    q, kv, f = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    attn, mlp = "model.layers.{}.self_attn.", "model.layers.{}.mlp."
    return {
        attn + "qkv_proj.weight": (
            (attn + "q_proj.weight", q),
            (attn + "k_proj.weight", kv),
            (attn + "v_proj.weight", kv),
        ),
        mlp + "gate_up_proj.weight": ((mlp + "gate_proj.weight", f), (mlp + "up_proj.weight", f)),
    }
