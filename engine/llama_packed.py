"""The Llama family's inference form on CPU: the same function as llama.Llama in fewer ops.

A decode step at batch 1 streams every weight once through a dozen matrix-vector products, and
around them runs a few dozen tiny ops per layer whose cost is almost all fixed overhead (a few
microseconds each, times 30 layers). In the training-shaped modules of llama.py those tiny ops
took a fifth of the step. This form rearranges the weights once, at load, so that each layer
needs about a dozen calls:

- RMSNorm gains are folded into the columns of the matmul that reads the normalised vector:
  (x r g) W^T = (x r) (W diag g)^T, so a norm is one fused call without a weight.
- 1/sqrt(head_dim) is folded into the query rows (and bias), so attention runs with scale 1.
- Query and key rows are permuted within each head from transformers' "rotate half" layout
  (dimension i pairs with i + hd/2) to adjacent pairs (2i, 2i+1). Attention only ever sees
  q . k, which is unchanged when both are permuted alike, and RoPE on adjacent pairs is one
  in-place complex multiply instead of slice, negate, concatenate, two multiplies and an add.
  (Keys therefore sit in the KV cache in this permuted layout; only this module reads them.)
- q/k/v and gate/up are one matmul each, and every weight is pre-packed for oneDNN (packed.py).
- Keys and values leave the fused q/k/v row side by side and go into the KV cache, whose
  layers hold them side by side too (kv_cache.py), with one copy.

The forward signature is Llama's, so `generate` runs either; tests pin this form's logits to
transformers'. Built by `model.prepare_for_inference`; forward only, under inference mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache, build_mask
from .llama import Llama
from .packed import pack_weight, release_pages, trim_heap

_linear = torch.ops.mkldnn._linear_pointwise  # (x, packed W, bias, "none", [], "") -> x W^T + b


def _pairs_adjacent(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Rows (n_heads * hd, ...) of a q or k projection, reordered per head from (i, i + hd/2) pairs
    to (2i, 2i + 1) pairs. Works for weights (rows, in) and biases (rows,)."""
    order = torch.arange(head_dim).view(2, head_dim // 2).t().reshape(-1)  # 0, hd/2, 1, hd/2+1, ...
    return w.view(n_heads, head_dim, *w.shape[1:])[:, order].reshape(w.shape)


class PackedBlock(nn.Module):
    """One transformer block; weights are oneDNN-packed opaque tensors (see module docstring)."""

    def __init__(self, cfg: ModelConfig, wqkv: torch.Tensor, bqkv: torch.Tensor | None, wo: torch.Tensor,
                 w13: torch.Tensor, w2: torch.Tensor) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.dim, self.ffn_dim, self.eps = cfg.dim, cfg.ffn_dim, cfg.norm_eps
        for name, t in (("wqkv", wqkv), ("bqkv", bqkv), ("wo", wo), ("w13", w13), ("w2", w2)):
            self.register_buffer(name, t, persistent=False)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor | None, kv: torch.Tensor | None,
                start: int) -> torch.Tensor:
        """x (B, T, D); freqs (B, T, 1, hd/2) complex64; mask (B, 1, T, S) bool or None;
        kv: this layer's slice of the KV cache (B, 2 H_kv, max_len, hd), or None."""
        B, T, _ = x.shape
        H, H_kv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        h = F.rms_norm(x, (self.dim,), None, self.eps)  # the gain lives in wqkv's columns
        qkv = _linear(h, self.wqkv, self.bqkv, "none", [], "").view(B, T, H + 2 * H_kv, hd)
        # RoPE as one complex multiply, in place, of the q and k heads' pairs (2i, 2i+1) by
        # e^{i pos theta_i}.
        qk = qkv[:, :, : H + H_kv].unflatten(-1, (hd // 2, 2))  # (B, T, H + H_kv, hd/2, 2), a view
        if qkv.dtype == torch.float32:
            torch.view_as_complex(qk).mul_(freqs)
        else:  # no complex bfloat16: rotate in float32
            qk.copy_(torch.view_as_real(torch.view_as_complex(qk.float()) * freqs))
        new_kv = qkv[:, :, H:].transpose(1, 2)  # (B, 2 H_kv, T, hd): keys, then values
        if kv is None:
            kv = new_kv
        else:  # one copy into the cache, then attend over slots 0..start+T
            kv[:, :, start:start + T] = new_kv
            kv = kv[:, :, :start + T]
        y = F.scaled_dot_product_attention(qkv[:, :, :H].transpose(1, 2), kv[:, :H_kv], kv[:, H_kv:],
                                           attn_mask=mask, is_causal=mask is None and T > 1, scale=1.0,
                                           enable_gqa=H_kv != H)  # (B, H, T, hd)
        # The residual adds go in place: measured, oneDNN's fused "add" post-op costs more (~5 us
        # a call) than a separate add.
        x = _linear(y.transpose(1, 2).reshape(B, T, H * hd), self.wo, None, "none", [], "").add_(x)
        h = F.rms_norm(x, (self.dim,), None, self.eps)
        gate_up = _linear(h, self.w13, None, "none", [], "")  # (B, T, 2F)
        act = torch.mul(F.silu(gate_up[..., : self.ffn_dim]), gate_up[..., self.ffn_dim:])
        return _linear(act, self.w2, None, "none", [], "").add_(x)


class PackedLlama(nn.Module):
    """Inference-only Llama/Mistral/Qwen2 with folded, permuted, fused and packed weights."""

    def __init__(self, model: Llama) -> None:
        super().__init__()
        cfg = self.cfg = model.cfg
        self.tok_emb = model.tok_emb  # stays dense: lookups read a few rows
        self.register_buffer("inv_freq", model.inv_freq, persistent=False)  # (hd/2,)
        self.register_buffer("norm_weight", model.norm.weight.detach(), persistent=False)  # (D,)
        with torch.no_grad():
            # The vocabulary head first, while nothing else is packed: packing a tied head reads
            # the whole embedding, whose pages go back right after (lookups need a few rows), so
            # the load's peak memory is not the packed model plus an embedding's worth of pages.
            # Its norm gain is applied to the one vector it reads rather than folded in, which
            # would take one more embedding-sized copy.
            out = model.output.weight.detach()
            self.output = pack_weight(out)
            release_pages([out], only_file_mapped=out.data_ptr() == model.tok_emb.weight.data_ptr())
            # Then layer by layer, handing each layer's checkpoint pages back once its packed copy
            # exists, so that at most one layer is held twice.
            self.layers = nn.ModuleList(self._pack_layer(cfg, layer) for layer in model.layers)

    @staticmethod
    def _pack_layer(cfg: ModelConfig, layer: nn.Module) -> PackedBlock:
        H, H_kv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        a, f = layer.attn, layer.ffn
        dt, scale = a.wq.weight.dtype, 1.0 / math.sqrt(hd)
        # Folding works in float32 (a no-op copy-wise for float32 weights), in place where it can.
        wqkv = torch.cat([_pairs_adjacent(a.wq.weight.float(), H, hd).mul_(scale),
                          _pairs_adjacent(a.wk.weight.float(), H_kv, hd), a.wv.weight.float()])
        wqkv = wqkv.mul_(layer.attn_norm.weight.float()).to(dt)  # (H + 2 H_kv) hd x D
        bqkv = None
        if a.wq.bias is not None:
            bqkv = torch.cat([_pairs_adjacent(a.wq.bias.float(), H, hd).mul_(scale),
                              _pairs_adjacent(a.wk.bias.float(), H_kv, hd), a.wv.bias.float()]).to(dt)
        w13 = torch.cat([f.w1.weight, f.w3.weight]).float().mul_(layer.ffn_norm.weight.float()).to(dt)  # 2F x D
        block = PackedBlock(cfg, pack_weight(wqkv), bqkv, pack_weight(a.wo.weight), pack_weight(w13),
                            pack_weight(f.w2.weight))
        release_pages([p for p in layer.parameters() if p.dim() == 2])
        trim_heap()  # the fused float32 temporaries
        return block

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, start: int = 0, last_only: bool = False,
                hidden: bool = False) -> torch.Tensor:
        """Same contract as Llama.forward: tokens, positions (B, T) -> logits (B, T or 1, V)."""
        x = self.tok_emb(tokens)  # (B, T, D)
        T = tokens.shape[1]
        window = self.cfg.sliding_window
        if mask is None and window is not None and start + T > window:
            pad = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
            mask = build_mask(pad, start, T, start + T, window)
        angles = positions.float()[..., None] * self.inv_freq  # (B, T, hd/2)
        freqs = torch.polar(torch.ones_like(angles), angles)[:, :, None]  # (B, T, 1, hd/2) complex64
        if cache is not None:
            assert start + T <= cache.max_len, f"KV cache overflow: {start + T} > {cache.max_len}"
        for i, layer in enumerate(self.layers):
            x = layer(x, freqs, mask, None if cache is None else cache.kv[i], start)
        if last_only:
            x = x[:, -1:]
        x = F.rms_norm(x, (x.shape[-1],), self.norm_weight, self.cfg.norm_eps)
        return x if hidden else _linear(x, self.output, None, "none", [], "")


__all__ = ["PackedBlock", "PackedLlama"]
