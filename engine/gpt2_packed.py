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

Quantized weights (QTensors: a GGUF file's blocks, `--dtype q8_0`) cannot absorb a norm or the
query scale, so for them nothing is folded (as llama_packed.py keeps the Llama family's): the
LayerNorms' gains and shifts stay vectors, the query scale (GPT-2's may differ by layer) is applied
to the query heads, and q, k and v are three parts of wqkv's rows, each laid out for the step
(repack.place_rows). Prompts then run every linear as one compiled product over the blocks
(tk_matmul), and the KV cache is float16 (kv_cache.kv_dtype).

One-token decode steps are one call into csrc/decode.c; prefill runs here in torch (oneDNN on the
plain weights; float16 ones, an F16 file's, through tk_matmul, as llama_packed.py's). Same forward
signature as GPT2; forward only, under inference mode.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .gpt2 import GPT2, Block
from .kv_cache import KVCache, Runs, attend_runs, sdpa, visible_runs
from .llama_packed import _half_mm, _parts, _quantized_mm, block_mm, head_bytes, place_head
from .native_step import NativeStep, WeightBuffer
from .packed import release_pages, trim_heap
from .quant import QTensor, ggml_types, is_quantized, packed_bytes, weight_of
from .repack import REPACKED, place_rows

_linear = torch.ops.mkldnn._linear_pointwise  # (x, W, bias, "none", [], "") -> x W^T + b; W plain here


class PackedGPT2Block(nn.Module):
    """One block with folded norms (float weights) or unfolded ones (quantized: `quantized` gives the
    weights' layouts, the LayerNorms' gains and shifts and the query scale); weights are views into
    the model's buffer."""

    # Buffers, registered in __init__ (declared for the type checker, as llama_packed.PackedBlock's).
    wqkv: torch.Tensor
    wo: torch.Tensor
    w13: torch.Tensor
    w2: torch.Tensor
    bqkv: torch.Tensor
    bo: torch.Tensor
    b13: torch.Tensor
    b2: torch.Tensor
    attn_norm: torch.Tensor | None
    attn_norm_bias: torch.Tensor | None
    ffn_norm: torch.Tensor | None
    ffn_norm_bias: torch.Tensor | None

    def __init__(self, cfg: ModelConfig, weights: Mapping[str, torch.Tensor], quantized: dict | None = None) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.dim, self.eps = cfg.n_heads, cfg.head_dim, cfg.dim, cfg.norm_eps
        self.approximate = "none" if cfg.activation == "gelu" else "tanh"
        q = quantized or {}
        self.layouts, self.q_scale = q.get("layouts"), q.get("q_scale", 1.0)  # 1: folded into the q rows
        # Each quantized weight's parts as tk_matmul reads them: (n_parts, 2) int32 (ggml type, rows).
        self.parts = {name: _parts(layout) for name, layout in (self.layouts or {}).items()}
        for name in ("wqkv", "bqkv", "wo", "bo", "w13", "b13", "w2", "b2"):
            self.register_buffer(name, weights[name], persistent=False)
        for name in ("attn_norm", "attn_norm_bias", "ffn_norm", "ffn_norm_bias"):  # None where folded
            self.register_buffer(name, q.get(name), persistent=False)

    def _mm(self, x: torch.Tensor, name: str, b: torch.Tensor | None) -> torch.Tensor:
        """x W^T + b for the block's weight `name` (quantized rows: the compiled product over all of
        x's rows at once, reading the blocks as they are)."""
        return block_mm(x, getattr(self, name), self.parts.get(name), b)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return sdpa(q, k, v, mask, self.q_scale)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | Runs | None, kv: torch.Tensor | None, start: int
    ) -> torch.Tensor:
        """x (B, T, D); mask (B, 1, T, S) bool, a decode step's Runs (kv_cache.visible_runs) or None;
        kv: this layer's slice of the KV cache (B, 2 H, max_len, hd), or None."""
        B, T, D = x.shape
        H, hd = self.n_heads, self.head_dim
        h = F.layer_norm(x, (D,), self.attn_norm, self.attn_norm_bias, self.eps)  # or folded into wqkv, bqkv
        qkv = self._mm(h, "wqkv", self.bqkv).view(B, T, 3 * H, hd)
        new_kv = qkv[:, :, H:].transpose(1, 2)  # (B, 2 H, T, hd): keys, then values
        if kv is None:
            kv = new_kv
        else:  # one copy into the cache (rounded to a float16 cache's halves: quantized weights)
            kv[:, :, start : start + T] = new_kv
            kv = kv[:, :, : start + T].to(qkv.dtype)  # attention reads the cached values, as the step does
        y = attend_runs(self._attend, qkv[:, :, :H].transpose(1, 2), kv[:, :H], kv[:, H:], mask)  # (B, H, T, hd)
        x = self._mm(y.transpose(1, 2).reshape(B, T, D), "wo", self.bo).add_(x)
        h = F.layer_norm(x, (D,), self.ffn_norm, self.ffn_norm_bias, self.eps)  # or folded into w13, b13
        act = F.gelu(self._mm(h, "w13", self.b13), approximate=self.approximate)
        return self._mm(act, "w2", self.b2).add_(x)


class PackedGPT2(nn.Module):
    """Inference-only GPT-2 with folded norms and plain weights in one buffer, or quantized weights
    kept in their blocks; decode steps compiled."""

    native = True
    norm_weight: torch.Tensor  # (D,): the final LayerNorm's gain (a parameter with quantized weights)
    norm_bias: torch.Tensor  # (D,) buffer: its shift

    def __init__(self, model: GPT2, lib) -> None:
        super().__init__()
        cfg = self.cfg = model.cfg
        self.tok_emb, self.pos_emb = model.tok_emb, model.pos_emb
        self.register_buffer("norm_bias", model.norm.bias.detach(), persistent=False)
        self.quantized = is_quantized(model)
        if self.quantized:
            self._init_quantized(model, lib)
            return
        self.register_buffer("norm_weight", model.norm.weight.detach(), persistent=False)
        if self.norm_weight.dtype == torch.float16:  # float16 weights compute in float32, as the step does
            self.norm_weight, self.norm_bias = self.norm_weight.float(), self.norm_bias.float()
        dt = model.tok_emb.weight.dtype
        D, F_ = cfg.dim, cfg.ffn_dim
        own = WeightBuffer(cfg.vocab_size * D + cfg.n_layers * (4 * D * D + 2 * F_ * D), dt)
        with torch.no_grad():
            self.output, self.tok_emb = own.head(model.output.weight, self.tok_emb)
            self.layers = nn.ModuleList(self._fold_layer(cfg, block, own) for block in model.layers)
        assert own.used == own.data.numel()
        self._native = NativeStep(lib, self, gpt2=True)

    def _init_quantized(self, model: GPT2, lib) -> None:
        """QTensor weights kept in their blocks for the step (see the module docstring): the head,
        each layer's weights as uint8 rows of their types, `wtypes` (n_layers, 7), each layer's query
        scale `layer_q_scale` (n_layers,)."""
        # A float32 parameter first: callers read the activations' dtype from the first parameter,
        # and quantized weights are buffers.
        self.norm_weight = nn.Parameter(model.norm.weight.detach().float(), requires_grad=False)
        self.norm_bias = self.norm_bias.float()
        for name in ("tok_emb", "pos_emb"):  # float32 lookups, as the activations are
            emb = getattr(self, name)
            if isinstance(emb, nn.Embedding) and emb.weight.dtype != torch.float32:
                setattr(self, name, nn.Embedding.from_pretrained(emb.weight.float(), freeze=True))
        out = weight_of(model.output)
        blocks = [b for b in model.layers if isinstance(b, Block)]
        assert len(blocks) == len(model.layers)  # (typed nn.Module by ModuleList)
        matrices = [[weight_of(m) for m in (b.attn.qkv, b.attn.proj, b.mlp.fc, b.mlp.proj)] for b in blocks]
        own = WeightBuffer(sum(packed_bytes(ws) for ws in matrices) + head_bytes(out), torch.uint8)
        self.output, self.out_type, self.out_parts = place_head(out, own, self.cfg.dim)
        packed = [self._pack_layer_quantized(self.cfg, b, ws, own) for b, ws in zip(blocks, matrices, strict=True)]
        assert own.used == own.data.numel(), (own.used, own.data.numel())
        self.layers = nn.ModuleList(block for block, _ in packed)
        self.register_buffer("wtypes", torch.tensor([t for _, t in packed], dtype=torch.int32), persistent=False)
        scales = [b.attn.scale for b in blocks]
        self.register_buffer("layer_q_scale", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self._native = NativeStep(lib, self, gpt2=True)

    @staticmethod
    def _pack_layer_quantized(
        cfg: ModelConfig, block: Block, matrices: list, own: WeightBuffer
    ) -> tuple[PackedGPT2Block, list[int]]:
        """One layer's weights (qkv, proj, fc, mlp proj: QTensors or floats) placed in the step's
        buffer in the order it reads them, and their ggml types as wq, wk, wv, wo, gate, up, down
        (GPT-2's fc is the gate; up, unread, repeats it). q, k and v are three parts of wqkv, laid
        out each on its own, as the Llama family's are."""
        D, F_ = cfg.dim, cfg.ffn_dim
        qkv, proj, fc, down = matrices
        parts = [qkv[i * D : (i + 1) * D] for i in range(3)]  # rows of q, k, v

        def place(ws: list, n: int) -> tuple[torch.Tensor, tuple]:
            return place_rows(ws, own.take(packed_bytes(ws)), n, types=REPACKED)

        (wqkv, l_qkv), (wo, l_o), (w13, l_13), (w2, l_2) = (
            place(parts, D),
            place([proj], D),
            place([fc], D),
            place([down], F_),
        )
        release_pages([w.data if isinstance(w, QTensor) else w for w in matrices], only_file_mapped=True)
        a, m = block.attn, block.mlp
        vectors = dict(
            bqkv=a.qkv.bias, bo=a.proj.bias, b13=m.fc.bias, b2=m.proj.bias,
            attn_norm=block.ln1.weight, attn_norm_bias=block.ln1.bias, ffn_norm=block.ln2.weight, ffn_norm_bias=block.ln2.bias,
        )  # fmt: skip
        f32 = {name: v.detach().float() for name, v in vectors.items()}
        biases = {name: f32.pop(name) for name in ("bqkv", "bo", "b13", "b2")}  # f32: the norms' gains, shifts
        quantized = dict(layouts=dict(wqkv=l_qkv, wo=l_o, w13=l_13, w2=l_2), q_scale=a.scale, **f32)
        weights = dict(wqkv=wqkv, wo=wo, w13=w13, w2=w2, **biases)
        gate = ggml_types(l_13)  # fc's type, the gate's, and the unread up's
        return PackedGPT2Block(cfg, weights, quantized), ggml_types(l_qkv) + ggml_types(l_o) + gate + gate + ggml_types(
            l_2
        )

    @staticmethod
    def _fold_layer(cfg: ModelConfig, block: nn.Module, own) -> PackedGPT2Block:
        assert isinstance(block, Block)  # GPT2.layers holds gpt2.Block (typed as nn.Module by ModuleList)
        a, m = block.attn, block.mlp
        dt, D = a.qkv.weight.dtype, cfg.dim
        bias_dt = torch.float32 if dt == torch.float16 else dt  # folded biases: float32 beside float16 weights

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
            bqkv=bqkv.to(bias_dt),
            wo=own(a.proj.weight.detach()),
            bo=a.proj.bias.detach().to(bias_dt, copy=True),
            w13=own(w13.to(dt)),
            b13=b13.to(bias_dt),
            w2=own(m.proj.weight.detach()),
            b2=m.proj.bias.detach().to(bias_dt, copy=True),
        )
        release_pages([p for p in block.parameters() if p.dim() == 2])
        trim_heap()
        return PackedGPT2Block(cfg, weights)

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The token's and the position's embeddings summed; float16 ones (an F16 file's) in float32,
        as the step and the products compute."""
        x, p = self.tok_emb(tokens), self.pos_emb(positions)
        return x.float() + p.float() if x.dtype == torch.float16 else x + p

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
            return self._native(self._embed(tokens.reshape(-1), positions.reshape(-1)), positions, mask, cache, start)
        x = self._embed(tokens, positions)  # (B, T, D)
        runs = visible_runs(mask, tokens)  # (none from generate: a step with a cache runs above)
        for i, layer in enumerate(self.layers):
            x = layer(x, runs, None if cache is None else cache.kv[i], start)
        if last_only:
            x = x[:, -1:]
        x = F.layer_norm(x, (x.shape[-1],), self.norm_weight, self.norm_bias, self.cfg.norm_eps)
        if hidden:
            return x
        if self.quantized:
            return _quantized_mm(x, self.output, self.out_parts)
        if self.output.dtype == torch.float16 and not last_only:
            return _half_mm(x, self.output)
        if last_only:  # a prompt's last tokens: the step's product, a row's bits at any batch size
            return self._native.head(x.view(x.shape[0], -1)).unsqueeze(1)  # (B, 1, V)
        return _linear(x, self.output, None, "none", [], "")


__all__ = ["PackedGPT2", "PackedGPT2Block"]
