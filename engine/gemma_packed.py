"""Gemma 2/3's inference form on CPU: the same function as gemma.Gemma, decoded by the compiled step.

PackedLlama's form (llama_packed.py: folded gains, RoPE-pair rows, fused q/k/v and gate/up, one
weight buffer, quantized blocks kept) with what Gemma changes, through PackedLlama's hooks:

- every RMSNorm gain is 1 + w (`_norm_gain`), folded where PackedLlama folds a gain; the query
  scale is query_pre_attn_scalar ** -0.5 (llama_packed.query_scale), folded into the query rows,
  or into Gemma 3's q-norm gain, or (quantized weights) applied to the query heads;
- the norms on the attention and feed-forward outputs normalise a product's output, so their gains
  fold into nothing: each block keeps them as vectors (`post_attn_norm`, `post_ffn_norm`), which the
  step applies before the residual add;
- the gate goes through GELU (tanh form), and Gemma 2's attention scores are soft-capped;
- local (sliding-window) layers: their flags (`local_layers`) and frequencies (`inv_freq_local`,
  Gemma 3's own base) go to the step, which attends over the window and turns by those there;
- the embedding's sqrt(D) and the final logit soft-cap are applied here, around the step.

Decode steps are one call into csrc/decode.c; prompts run the blocks here (float weights through
oneDNN, quantized and float16 ones through tk_matmul), as PackedLlama's do. Built by
`model.prepare_for_inference` where the compiled step builds; without it Gemma keeps the plain
module with oneDNN-packed linears (packed.pack_linears). Forward only, under inference mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .gemma import Block, Gemma, local_mask, softcapped_attention
from .kv_cache import KVCache, sdpa, visible_runs
from .llama_packed import PackedBlock, PackedLlama, _padded
from .native_step import WeightBuffer
from .packed import pack_weight


class PackedGemmaBlock(PackedBlock):
    """PackedBlock with Gemma's output norms, GeGLU and soft-capped attention."""

    post_attn_norm: torch.Tensor | None  # (D,) float32 gains 1 + w, set by PackedGemma._with_post_norms
    post_ffn_norm: torch.Tensor | None

    def __init__(self, cfg: ModelConfig, *args, **kwargs) -> None:
        super().__init__(cfg, *args, **kwargs)
        self.approximate = "none" if cfg.activation == "gelu" else "tanh"  # gelu_pytorch_tanh
        self.softcap = cfg.attn_softcap
        self.register_buffer("post_attn_norm", None, persistent=False)
        self.register_buffer("post_ffn_norm", None, persistent=False)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.softcap is not None:
            return softcapped_attention(q, k, v, mask, self.q_scale, self.softcap)
        return sdpa(q, k, v, mask, self.q_scale)

    def _branch(self, y: torch.Tensor, which: str) -> torch.Tensor:
        gain = self.post_attn_norm if which == "attn" else self.post_ffn_norm
        return F.rms_norm(y.float(), (self.dim,), gain, self.eps).to(y.dtype)  # in float32, as gemma.RMSNorm

    def _gate(self, gate: torch.Tensor) -> torch.Tensor:
        return F.gelu(gate, approximate=self.approximate)


class PackedGemma(PackedLlama):
    """Inference-only Gemma 2/3: PackedLlama's packing with Gemma's gains, blocks and forward."""

    _BLOCK = PackedGemmaBlock
    geglu = True  # the step's feed-forward: gelu(gate) * up
    inv_freq_local: torch.Tensor  # (hd/2,) buffers, registered in _register_extras
    local_layers: torch.Tensor  # (n_layers,) int32, 1 for a local layer

    @staticmethod
    def _norm_gain(weight: torch.Tensor) -> torch.Tensor:
        return 1.0 + weight.detach().float()  # as gemma.RMSNorm computes it

    def _register_extras(self, model: nn.Module) -> None:
        assert isinstance(model, Gemma)
        self.register_buffer("inv_freq_local", _padded(model.inv_freq_local, self.cfg.head_dim), persistent=False)
        local = [int(isinstance(layer, Block) and layer.local) for layer in model.layers]
        self.register_buffer("local_layers", torch.tensor(local, dtype=torch.int32), persistent=False)

    @classmethod
    def _with_post_norms(cls, block: PackedBlock, layer: nn.Module) -> PackedBlock:
        """The block with its layer's gains of the norms on the attention and feed-forward outputs."""
        assert isinstance(layer, Block) and isinstance(block, PackedGemmaBlock)
        block.post_attn_norm = cls._norm_gain(layer.post_attn_norm.weight)
        block.post_ffn_norm = cls._norm_gain(layer.post_ffn_norm.weight)
        return block

    @classmethod
    def _pack_layer(cls, cfg: ModelConfig, layer: nn.Module, own=pack_weight) -> PackedBlock:
        return cls._with_post_norms(super()._pack_layer(cfg, layer, own), layer)

    @classmethod
    def _pack_layer_quantized(
        cls, cfg: ModelConfig, layer: nn.Module, own: WeightBuffer
    ) -> tuple[PackedBlock, list[int]]:
        block, types = super()._pack_layer_quantized(cfg, layer, own)
        return cls._with_post_norms(block, layer), types

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
        """Same contract as Gemma.forward: tokens, positions (B, T) -> logits (B, T or 1, V); `mask`
        (B, 1, T, S) bool or None is the global layers' (no window)."""
        cfg = self.cfg
        x = self.tok_emb(tokens)  # (B, T, D)
        x = x * torch.tensor(cfg.dim**0.5).to(x.dtype)  # rounded as gemma.Gemma rounds it
        B, T = tokens.shape
        if self._native is not None and T == 1 and cache is not None and not hidden:
            return self._softcap(self._native(x.view(B, -1), positions, mask, cache, start))
        if x.dtype == torch.float16:  # float16 weights compute in float32, as the step does
            x = x.float()
        S = start + T
        local = mask
        if cfg.local_window is not None and S > cfg.local_window:
            local = local_mask(mask, start, T, S, cfg.local_window, B, tokens.device)
        freqs = {0: self._freqs(positions, self.inv_freq), 1: self._freqs(positions, self.inv_freq_local)}
        runs = {0: visible_runs(mask, tokens), 1: visible_runs(local, tokens)}  # a decode step's as each row's run
        if cache is not None:
            assert S <= cache.max_len, f"KV cache overflow: {S} > {cache.max_len}"
        for i, (layer, kind) in enumerate(zip(self.layers, self.local_layers.tolist(), strict=True)):
            x = layer(x, freqs[kind], runs[kind], None if cache is None else cache.kv[i], start)
        if last_only:
            x = x[:, -1:]
        x = F.rms_norm(x.float(), (x.shape[-1],), self.norm_weight.float(), cfg.norm_eps).to(x.dtype)
        return x if hidden else self._softcap(self._logits(x, last_only))

    def _softcap(self, logits: torch.Tensor) -> torch.Tensor:
        """Gemma 2's final soft-cap: z -> c tanh(z / c)."""
        cap = self.cfg.final_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap


__all__ = ["PackedGemma", "PackedGemmaBlock"]
