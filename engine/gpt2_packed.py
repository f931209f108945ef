"""GPT-2's inference form on CPU for the compiled decode step: the same function as gpt2.GPT2.

Built only where the compiled step builds (native.py); elsewhere GPT-2 keeps oneDNN-packed linears
in place (packed.py). The weights are rearranged once, at load, as llama_packed.py does for the
Llama family:

- LayerNorm gain and shift are folded into the matmul that reads the normalised vector:
  W (g n + beta) + b = (W diag g) n + (W beta + b), so a norm is a plain normalisation.
- The attention scale (1/sqrt(head_dim), or as config.json sets it per layer: gpt2.Attention.scale)
  is folded into the query rows and bias, so attention, and the compiled step, run with scale 1.
- Every weight is a plain (out, in) matrix in one buffer, in the order a step reads them; a tied
  head is copied there and lookups read that copy.
- Keys and values leave the fused q/k/v row side by side and go into the KV cache with one copy.

One-token decode steps are one call into csrc/decode.c; prefill runs here in torch (oneDNN on the
plain weights). Same forward signature as GPT2; forward only, under inference mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .gpt2 import GPT2, Block
from .kv_cache import KVCache, Runs, attend_runs, sdpa, visible_runs
from .native_step import NativeStep, WeightBuffer
from .packed import release_pages, trim_heap

_linear = torch.ops.mkldnn._linear_pointwise  # (x, W, bias, "none", [], "") -> x W^T + b; W plain here


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return sdpa(q, k, v, mask, 1.0)  # the scale is folded into q's rows


class PackedGPT2Block(nn.Module):
    """One block with folded norms; weights are views into the model's buffer."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.dim, self.eps = cfg.n_heads, cfg.head_dim, cfg.dim, cfg.norm_eps
        self.approximate = "none" if cfg.activation == "gelu" else "tanh"
        for name in ("wqkv", "bqkv", "wo", "bo", "w13", "b13", "w2", "b2"):
            self.register_buffer(name, weights[name], persistent=False)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | Runs | None, kv: torch.Tensor | None, start: int
    ) -> torch.Tensor:
        """x (B, T, D); mask (B, 1, T, S) bool, a decode step's Runs (kv_cache.visible_runs) or None;
        kv: this layer's slice of the KV cache (B, 2 H, max_len, hd), or None."""
        B, T, D = x.shape
        H, hd = self.n_heads, self.head_dim
        h = F.layer_norm(x, (D,), None, None, self.eps)  # gain and shift live in wqkv, bqkv
        qkv = _linear(h, self.wqkv, self.bqkv, "none", [], "").view(B, T, 3 * H, hd)
        new_kv = qkv[:, :, H:].transpose(1, 2)  # (B, 2 H, T, hd): keys, then values
        if kv is None:
            kv = new_kv
        else:
            kv[:, :, start : start + T] = new_kv
            kv = kv[:, :, : start + T]
        y = attend_runs(_attend, qkv[:, :, :H].transpose(1, 2), kv[:, :H], kv[:, H:], mask)  # (B, H, T, hd)
        x = _linear(y.transpose(1, 2).reshape(B, T, D), self.wo, self.bo, "none", [], "").add_(x)
        h = F.layer_norm(x, (D,), None, None, self.eps)  # gain and shift live in w13, b13
        act = F.gelu(_linear(h, self.w13, self.b13, "none", [], ""), approximate=self.approximate)
        return _linear(act, self.w2, self.b2, "none", [], "").add_(x)


class PackedGPT2(nn.Module):
    """Inference-only GPT-2 with folded norms and plain weights in one buffer; decode steps compiled."""

    native = True
    norm_weight: torch.Tensor  # (D,) buffers: the final LayerNorm's gain and shift
    norm_bias: torch.Tensor

    def __init__(self, model: GPT2, lib) -> None:
        super().__init__()
        cfg = self.cfg = model.cfg
        self.tok_emb, self.pos_emb = model.tok_emb, model.pos_emb
        self.register_buffer("norm_weight", model.norm.weight.detach(), persistent=False)  # (D,)
        self.register_buffer("norm_bias", model.norm.bias.detach(), persistent=False)
        dt = model.tok_emb.weight.dtype
        D, F_ = cfg.dim, cfg.ffn_dim
        own = WeightBuffer(cfg.vocab_size * D + cfg.n_layers * (4 * D * D + 2 * F_ * D), dt)
        with torch.no_grad():
            self.output, self.tok_emb = own.head(model.output.weight, self.tok_emb)
            self.layers = nn.ModuleList(self._fold_layer(cfg, block, own) for block in model.layers)
        assert own.used == own.data.numel()
        self._native = NativeStep(lib, self, gpt2=True)

    @staticmethod
    def _fold_layer(cfg: ModelConfig, block: nn.Module, own) -> PackedGPT2Block:
        assert isinstance(block, Block)  # GPT2.layers holds gpt2.Block (typed as nn.Module by ModuleList)
        a, m = block.attn, block.mlp
        dt, D = a.qkv.weight.dtype, cfg.dim

        def fold(linear: nn.Linear, ln: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
            # In float32: W' = W diag g, b' = b + W beta.
            w = linear.weight.float()
            return w * ln.weight.float(), linear.bias.float() + w @ ln.bias.float()

        wqkv, bqkv = fold(a.qkv, block.ln1)  # (3D, D), (3D,)
        wqkv[:D] *= a.scale
        bqkv[:D] *= a.scale
        w13, b13 = fold(m.fc, block.ln2)  # (F, D), (F,)
        weights = dict(
            wqkv=own(wqkv.to(dt)),
            bqkv=bqkv.to(dt),
            wo=own(a.proj.weight.detach()),
            bo=a.proj.bias.detach().clone(),
            w13=own(w13.to(dt)),
            b13=b13.to(dt),
            w2=own(m.proj.weight.detach()),
            b2=m.proj.bias.detach().clone(),
        )
        release_pages([p for p in block.parameters() if p.dim() == 2])
        trim_heap()
        return PackedGPT2Block(cfg, weights)

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
        """Same contract as GPT2.forward: tokens, positions (B, T) -> logits (B, T or 1, V)."""
        if tokens.shape[1] == 1 and cache is not None and not hidden:
            x = self.tok_emb(tokens.reshape(-1)) + self.pos_emb(positions.reshape(-1))  # (B, D)
            return self._native(x, positions, mask, cache, start)
        x = self.tok_emb(tokens) + self.pos_emb(positions)  # (B, T, D)
        runs = visible_runs(mask, tokens)  # (none from generate: a step with a cache runs above)
        for i, layer in enumerate(self.layers):
            x = layer(x, runs, None if cache is None else cache.kv[i], start)
        if last_only:
            x = x[:, -1:]
        x = F.layer_norm(x, (x.shape[-1],), self.norm_weight, self.norm_bias, self.cfg.norm_eps)
        if hidden:
            return x
        if last_only:  # a prompt's last tokens: the step's product, a row's bits at any batch size
            return self._native.head(x.view(x.shape[0], -1)).unsqueeze(1)  # (B, 1, V)
        return _linear(x, self.output, None, "none", [], "")


__all__ = ["PackedGPT2", "PackedGPT2Block"]
