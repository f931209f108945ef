"""The Llama family's inference form on CPU: the same function as llama.Llama in fewer ops.

A decode step at batch 1 streams every weight once through a dozen matrix-vector products, and
around them runs a few dozen tiny ops per layer whose cost is almost all fixed overhead (a few
microseconds each, times 30 layers). In the training-shaped modules of llama.py those tiny ops
took a fifth of the step. This form rearranges the weights once, at load, so that each layer
needs about a dozen calls:

- RMSNorm gains are folded into the columns of the matmul that reads the normalised vector:
  (x r g) W^T = (x r) (W diag g)^T, so a norm is one fused call without a weight.
- 1/sqrt(head_dim) is folded into the query rows (and bias), so attention runs with scale 1;
  with Qwen3's per-head q/k RMSNorm, which would cancel it there, into the q-norm gain instead.
  Those norms cannot be folded into any weight (each normalises one head of the projection's
  output), so they run on the fused q/k rows before RoPE, their gains permuted like the rows.
- Query and key rows are permuted within each head from transformers' "rotate half" layout
  (dimension i pairs with i + hd/2) to adjacent pairs (2i, 2i+1). Attention only ever sees
  q . k, which is unchanged when both are permuted alike, and RoPE on adjacent pairs is one
  in-place complex multiply instead of slice, negate, concatenate, two multiplies and an add.
  (Keys therefore sit in the KV cache in this permuted layout; only this module reads them.)
- q/k/v and gate/up are one matmul each.
- Keys and values leave the fused q/k/v row side by side and go into the KV cache, whose
  layers hold them side by side too (kv_cache.py), with one copy.

Quantized weights (QTensors: GGUF files, `--dtype q8_0`) cannot absorb a norm gain or the query
scale, and q/k/v or gate/up may differ in type (a Q4_K_M file mixes q4_k and q6_k), so for them the
gains stay vectors applied after normalising, the query scale is applied to the query heads, and the
fused weights are their parts' rows back to back, each part in its own type (quant.pack_rows);
q/k rows are still reordered into RoPE pairs (a row permutation works on quantized rows). They
decode through the compiled step, which reads the blocks directly. A prompt (and any call of more
than one position) runs the layers here, with every linear one call of the compiled matrix product
on the blocks (tk_matmul: all the prompt's tokens at once, each weight read from memory once) and
norms, RoPE and attention in torch; a prompt fed to the step one position at a time read every
weight once per token.

Two ways to run it. Where the machine can build it (native.py), the weights stay plain (out, in)
matrices (float32 or bfloat16) in one buffer and every one-token decode step is one call into the
compiled step (csrc/decode.c), which does all of the above for all layers in one OpenMP region;
prefill, which is compute-bound, stays here in torch (oneDNN on the plain weights). float16 weights
(an F16 GGUF file's, kept as they are, as llama.cpp keeps them) take the compiled step only: oneDNN
has no float16 products on most CPUs, so their prompts go through tk_matmul as quantized weights'
do, with float32 activations, and decode steps read the halves as the float16 cache's. Otherwise
(no C compiler, or TIANKONG_NATIVE=0) every weight is pre-packed for oneDNN (packed.py) and every
step runs here.

The forward signature is Llama's, so `generate` runs either; tests pin this form's logits to
transformers'. Built by `model.prepare_for_inference`; forward only, under inference mode.
Gemma's form (gemma_packed.PackedGemma) is this one with its gains, blocks and forward swapped in
through the hooks marked so below.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .gemma import Block as GemmaBlock
from .gemma import Gemma
from .kv_cache import KVCache, Runs, attend_runs, build_mask, sdpa, visible_runs
from .llama import Block, Llama
from .native import blocks_matmul
from .native import library as native_lib
from .native import reason as native_reason
from .native_step import NativeStep, WeightBuffer
from .packed import pack_weight, release_pages, trim_heap
from .quant import QTensor, ggml_types, is_quantized, packed_bytes, weight_of
from .repack import REPACKED, place_rows
from .rope import long_rope_applies, long_rope_freqs, rope_attention_factor

# (x, W, bias, "none", [], "") -> x W^T + b, W oneDNN-packed or plain (out, in). Measured on 32
# rows through a 3072 x 576 weight: 250 us packed, 430 us plain (oneDNN reorders it per call),
# 790 us with F.linear.
_linear = torch.ops.mkldnn._linear_pointwise


def _pairs_adjacent(w: torch.Tensor, n_heads: int, head_dim: int, rotary_dim: int = 0) -> torch.Tensor:
    """Rows (n_heads * hd, ...) of a q or k projection, reordered per head from (i, i + rd/2) pairs
    to (2i, 2i + 1) pairs. Works for weights (rows, in) and biases (rows,). rotary_dim rd < hd
    (Phi's partial rotary): only the first rd rows of a head pair up; the rest keep their order
    and get a frequency of 0 (_padded), so RoPE leaves them as they are."""
    return w.view(n_heads, head_dim, *w.shape[1:])[:, _pair_order(head_dim, rotary_dim)].reshape(w.shape)


def _pair_order(head_dim: int, rotary_dim: int = 0) -> torch.Tensor:
    """(hd,) one head's rows in _pairs_adjacent's order: 0, rd/2, 1, rd/2+1, ..., then rd..hd-1."""
    rd = rotary_dim or head_dim
    order = torch.arange(rd).view(2, rd // 2).t().reshape(-1)
    return torch.cat([order, torch.arange(rd, head_dim)])


def _pair_rows(n_heads: int, head_dim: int, rotary_dim: int = 0) -> torch.Tensor:
    """(n_heads * hd,) _pairs_adjacent as an index of rows (w[index] is the same), for gathering
    a weight's rows straight into the step's buffer (torch.index_select(..., out=))."""
    return (torch.arange(n_heads)[:, None] * head_dim + _pair_order(head_dim, rotary_dim)).reshape(-1)


def _padded(inv_freq: torch.Tensor, head_dim: int) -> torch.Tensor:
    """RoPE frequencies (rd/2,) with zeros up to hd/2: the pairs past rd turn by angle 0."""
    return F.pad(inv_freq, (0, head_dim // 2 - inv_freq.shape[0]))


def _parts(layout: tuple) -> tuple[torch.Tensor, int]:
    """quant.pack_rows' layout as tk_matmul reads it: (n_parts, 2) int32, each (ggml type, rows),
    and the rows' sum (the product's width)."""
    parts = [[t, rows] for t, (_, rows) in zip(ggml_types(layout), layout, strict=True)]
    return torch.tensor(parts, dtype=torch.int32), sum(rows for _, rows in parts)


def _half_mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (..., I) W^T in float32 for a float16 W (O, I): tk_matmul, which reads the halves as the
    decode step does (oneDNN has no float16 product on most CPUs; F.linear's is slow)."""
    return _quantized_mm(x, w, (torch.tensor([[_GGML_F16, w.shape[0]]], dtype=torch.int32), w.shape[0]))


_GGML_F16 = 1  # ggml's type number of float16 rows (quant.h's T_F16)


def _quantized_mm(x: torch.Tensor, w: torch.Tensor, parts: tuple[torch.Tensor, int]) -> torch.Tensor:
    """x (..., I) W^T for W the uint8 rows of pack_rows (parts: _parts of its layout): the compiled
    matrix product (csrc/decode.c's tk_matmul), which every quantized model has (_init_quantized)."""
    return blocks_matmul(w, *parts, x)


def block_mm(
    x: torch.Tensor, w: torch.Tensor, parts: tuple[torch.Tensor, int] | None, b: torch.Tensor | None
) -> torch.Tensor:
    """x W^T + b for a packed block's weight w: quantized rows (parts: their _parts) and float16
    halves through the compiled product over all of x's rows at once (oneDNN has no float16 product
    on most CPUs), other floats through oneDNN. PackedBlock's and PackedGPT2Block's."""
    if parts is None and w.dtype != torch.float16:
        return _linear(x, w, b, "none", [], "")
    y = _quantized_mm(x, w, parts) if parts is not None else _half_mm(x, w)
    return y if b is None else y.add_(b)


def head_bytes(out: QTensor | torch.Tensor) -> int:
    """The bytes place_head takes from the step's buffer for the vocabulary head `out`."""
    return out.nbytes if isinstance(out, QTensor) else 0


def place_head(out: QTensor | torch.Tensor, own: WeightBuffer, dim: int) -> tuple[torch.Tensor, int, tuple]:
    """A quantized model's vocabulary head as the step and tk_matmul read it: (the head, its type
    for the step, its parts for tk_matmul). A QTensor's blocks go into the step's buffer `own`, rows
    8 or 16 at a time (V, row bytes), and its file pages back (a tied embedding's lookups fault rows
    back in); a float head stays a float32 (V, D) tensor of its own."""
    if isinstance(out, QTensor):
        head, layout = place_rows([out], own.take(out.nbytes), dim, types=REPACKED)
        release_pages([out.data], only_file_mapped=True)
        head = head.view(out.shape[0], -1)
    else:
        head, layout = out.float().contiguous(), (("float32", out.shape[0]),)
    return head, ggml_types(layout)[0], _parts(layout)


def query_scale(cfg: ModelConfig) -> float:
    """The attention's query scale: 1/sqrt(hd), or Gemma's query_pre_attn_scalar ** -0.5."""
    return 1.0 / math.sqrt(cfg.head_dim) if cfg.attn_scale is None else cfg.attn_scale


def _quantized_q_scale(cfg: ModelConfig, q_norm: bool) -> float:
    """The scale quantized weights apply to the query heads: query_scale, or 1 with Qwen3's q-norm
    (its gain takes it). Long-rope's attention factor is RoPE's magnitude instead (rope_mag)."""
    return 1.0 if q_norm else query_scale(cfg)


class PackedBlock(nn.Module):
    """One transformer block; weights are oneDNN-packed opaque tensors (see module docstring)."""

    # Buffers, registered in __init__ (declared for the type checker: nn.Module's attribute lookup
    # types them Tensor | Module).
    wqkv: torch.Tensor
    wo: torch.Tensor
    w13: torch.Tensor
    w2: torch.Tensor
    bqkv: torch.Tensor | None
    bo: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    attn_norm: torch.Tensor | None
    ffn_norm: torch.Tensor | None

    def __init__(
        self,
        cfg: ModelConfig,
        wqkv: torch.Tensor,
        bqkv: torch.Tensor | None,
        wo: torch.Tensor,
        w13: torch.Tensor,
        w2: torch.Tensor,
        bo: torch.Tensor | None = None,
        q_norm: torch.Tensor | None = None,
        k_norm: torch.Tensor | None = None,
        quantized: dict | None = None,
    ) -> None:
        """q_norm, k_norm: (hd,) float32 gains of Qwen3's per-head norms, in RoPE-pair order (the
        query's carrying 1/sqrt(hd)), or None. quantized: for QTensor weights, which are then uint8
        rows (quant.pack_rows): each weight's layout ("layouts"), the norm gains "attn_norm" and
        "ffn_norm" (D,) float32, and the query scale "q_scale"."""
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.dim, self.ffn_dim, self.eps = cfg.dim, cfg.ffn_dim, cfg.norm_eps
        q = quantized or {}
        self.layouts, self.q_scale = q.get("layouts"), q.get("q_scale", 1.0)
        # Each quantized weight's parts as tk_matmul reads them: (n_parts, 2) int32 (ggml type, rows).
        self.parts = {name: _parts(layout) for name, layout in (self.layouts or {}).items()}
        named = dict(wqkv=wqkv, bqkv=bqkv, wo=wo, bo=bo, w13=w13, w2=w2, q_norm=q_norm, k_norm=k_norm)
        named.update(attn_norm=q.get("attn_norm"), ffn_norm=q.get("ffn_norm"))
        for name, t in named.items():
            self.register_buffer(name, t, persistent=False)

    def _mm(self, x: torch.Tensor, name: str, b: torch.Tensor | None = None) -> torch.Tensor:
        """x W^T + b for the block's weight `name` (quantized rows: the compiled matrix product
        over all of x's rows at once, reading the blocks as they are)."""
        return block_mm(x, getattr(self, name), self.parts.get(name), b)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return sdpa(q, k, v, mask, self.q_scale)

    # Hooks (gemma_packed.PackedGemmaBlock): an attention or feed-forward output y before the
    # residual add, and the gate's activation.
    def _branch(self, y: torch.Tensor, which: str) -> torch.Tensor:
        return y

    def _gate(self, gate: torch.Tensor) -> torch.Tensor:
        return F.silu(gate)

    def forward(
        self,
        x: torch.Tensor,
        freqs: torch.Tensor,
        mask: torch.Tensor | Runs | None,
        kv: torch.Tensor | None,
        start: int,
    ) -> torch.Tensor:
        """x (B, T, D); freqs (B, T, 1, hd/2) complex64; mask (B, 1, T, S) bool, a decode step's Runs
        (kv_cache.visible_runs: each row attends from its own first slot) or None;
        kv: this layer's slice of the KV cache (B, 2 H_kv, max_len, hd) in x's dtype, or float16
        (kv_cache.kv_dtype: quantized weights), or None."""
        B, T, _ = x.shape
        H, H_kv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        h = F.rms_norm(x, (self.dim,), self.attn_norm, self.eps)  # the gain lives in wqkv's columns, or here
        qkv = self._mm(h, "wqkv", self.bqkv).view(B, T, H + 2 * H_kv, hd)
        if self.q_norm is not None:  # Qwen3: RMSNorm over each head, in float32, in place
            for heads, gain in ((qkv[:, :, :H], self.q_norm), (qkv[:, :, H : H + H_kv], self.k_norm)):
                heads.copy_(F.rms_norm(heads.float(), (hd,), gain, self.eps))
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
            kv[:, :, start : start + T] = new_kv  # rounded to a float16 cache's halves (quantized weights)
            kv = kv[:, :, : start + T].to(qkv.dtype)  # attention reads the cached values, as the step does
        y = attend_runs(self._attend, qkv[:, :, :H].transpose(1, 2), kv[:, :H_kv], kv[:, H_kv:], mask)  # (B, H, T, hd)
        # The residual adds go in place: measured, oneDNN's fused "add" post-op costs more (~5 us
        # a call) than a separate add.
        x = self._branch(self._mm(y.transpose(1, 2).reshape(B, T, H * hd), "wo", self.bo), "attn").add_(x)
        h = F.rms_norm(x, (self.dim,), self.ffn_norm, self.eps)
        gate_up = self._mm(h, "w13")  # (B, T, 2F)
        act = torch.mul(self._gate(gate_up[..., : self.ffn_dim]), gate_up[..., self.ffn_dim :])
        return self._branch(self._mm(act, "w2"), "ffn").add_(x)


# What each packed tensor of a block was in the checkpoint, for messages about a weight: the
# packed names (layers.0.w13) are this module's, not the checkpoint's or the GGUF file's.
_PART_ROLES = {
    "wqkv": "attention query/key/value projections, times the attention norm",
    "bqkv": "attention query/key/value biases",
    "wo": "attention output projection",
    "bo": "attention output bias",
    "w13": "feed-forward gate and up projections, times the feed-forward norm",
    "w2": "feed-forward down projection",
    "q_norm": "per-head query norm",
    "k_norm": "per-head key norm",
    "attn_norm": "attention norm",
    "ffn_norm": "feed-forward norm",
    "post_attn_norm": "attention output norm",
    "post_ffn_norm": "feed-forward output norm",
}


class PackedLlama(nn.Module):
    """Inference-only Llama/Mistral/Qwen2/Qwen3 with folded, permuted, fused and packed weights."""

    @staticmethod
    def weight_role(name: str) -> str:
        """A packed tensor's name with what it holds: "layers.1.w13" -> "layers.1.w13 (layer 1's
        feed-forward gate and up projections, times the feed-forward norm)"."""
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "layers" and parts[2] in _PART_ROLES:
            return f"{name} (layer {parts[1]}'s {_PART_ROLES[parts[2]]})"
        return name

    inv_freq: torch.Tensor  # buffers, registered in __init__ (see PackedBlock)
    inv_freq_long: torch.Tensor | None
    norm_weight: torch.Tensor
    _BLOCK: type[PackedBlock] = PackedBlock  # hook: the blocks' class

    @staticmethod
    def _norm_gain(weight: torch.Tensor) -> torch.Tensor:
        """Hook: an RMSNorm's gain from its weight (Gemma's is 1 + w)."""
        return weight.detach()

    def _register_extras(self, model: nn.Module) -> None:
        """Hook: buffers a subclass's step reads, registered before anything is packed."""

    def __init__(self, model: Llama | Gemma, native: bool | None = None) -> None:
        """native: decode steps through the compiled step (native.py) with plain weights; None uses
        it when it builds (weights on CPU, float32, bfloat16 or float16), False never (weights
        packed for oneDNN; not float16, which only the compiled step reads)."""
        super().__init__()
        cfg = self.cfg = model.cfg
        self.tok_emb = model.tok_emb  # stays dense: lookups read a few rows
        # (hd/2,) each, zeros past rotary_dim/2 (so the compiled step reads hd/2 of them too);
        # long-rope's long frequencies run on the torch path only (forward).
        self.register_buffer("inv_freq", _padded(model.inv_freq, cfg.head_dim), persistent=False)
        long = getattr(model, "inv_freq_long", None)
        self.register_buffer("inv_freq_long", None if long is None else _padded(long, cfg.head_dim), persistent=False)
        norm = self._norm_gain(model.norm.weight)  # (D,); float32 where float16 weights compute in float32
        self.register_buffer("norm_weight", norm.float() if norm.dtype == torch.float16 else norm, persistent=False)
        self._register_extras(model)
        self.rope_mag = 1.0  # long-rope's factor where RoPE carries it (quantized weights); else in wqkv's rows
        self.quantized = is_quantized(model)
        if self.quantized:
            self._init_quantized(model)
            return
        w = model.tok_emb.weight
        fits = w.dtype in (torch.float32, torch.bfloat16, torch.float16) and w.device.type == "cpu"
        if native and not fits:
            raise ValueError(
                "the compiled decode step needs float32, bfloat16 or float16 weights on CPU, "
                f"not {w.dtype} on {w.device.type}"
            )
        lib = native_lib() if fits and native is not False else None
        if (native or w.dtype == torch.float16) and lib is None:  # oneDNN packs no float16
            raise ValueError(f"the compiled decode step is unavailable: {native_reason()}")
        packed = lib is None
        with torch.no_grad():
            out = model.output.weight.detach()
            if packed:
                # The vocabulary head first, while nothing else is packed: packing a tied head
                # reads the whole embedding, whose pages go back right after (lookups need a few
                # rows), so the load's peak memory is not the packed model plus an embedding's
                # worth of pages. Its norm gain is applied to the one vector it reads rather than
                # folded in, which would take one more embedding-sized copy.
                self.output = pack_weight(out)
                release_pages([out], only_file_mapped=out.data_ptr() == model.tok_emb.weight.data_ptr())
                own = pack_weight
            else:
                own = WeightBuffer(self._arena_size(cfg), w.dtype)
                self.output, self.tok_emb = own.head(out, self.tok_emb)
            # Then layer by layer, handing each layer's checkpoint pages back once its packed copy
            # exists, so that at most one layer is held twice.
            self.layers = nn.ModuleList(self._pack_layer(cfg, layer, own) for layer in model.layers)
            assert not isinstance(own, WeightBuffer) or own.used == own.data.numel()
        self._native = None if lib is None else NativeStep(lib, self)

    def _init_quantized(self, model: Llama | Gemma) -> None:
        """QTensor weights, kept quantized for the compiled step (see the module docstring): the
        head as its rows, each layer's weights as uint8 rows of their types, `wtypes` (n_layers, 7)."""
        lib = native_lib()
        if lib is None:
            raise ValueError(
                f"quantized weights need the compiled decode step, which is unavailable: {native_reason()}"
            )
        # A parameter, not a buffer: quantized weights are buffers, and callers read the activations'
        # dtype and device from the first parameter (next(model.parameters())).
        gain = self.norm_weight.float()
        del self._buffers["norm_weight"]
        self.norm_weight = nn.Parameter(gain, requires_grad=False)
        if isinstance(self.tok_emb, nn.Embedding) and self.tok_emb.weight.dtype != torch.float32:
            self.tok_emb = nn.Embedding.from_pretrained(self.tok_emb.weight.float(), freeze=True)
        out = weight_of(model.output)
        # The weights the step streams, in one buffer of huge pages (native_step.WeightBuffer): a
        # quantized head, then each layer's packed bytes, each copied once, from where the loader
        # left it (a GGUF file's mapping), into its place, and its rows interleaved there.
        own = WeightBuffer(self._layers_bytes(model) + head_bytes(out), torch.uint8)
        self.output, self.out_type, self.out_parts = place_head(out, own, self.cfg.dim)
        # Long-rope scales the turning part of q and k (transformers: cos and sin times the factor);
        # float weights carry it in their rows (_pack_layer), quantized ones in RoPE's magnitude.
        self.rope_mag = rope_attention_factor(self.cfg)
        self.q_scale = _quantized_q_scale(self.cfg, self.cfg.qk_norm)  # qk_norm: the layers have q/k norms
        packed = [self._pack_layer_quantized(self.cfg, layer, own) for layer in model.layers]
        assert own.used == own.data.numel(), (own.used, own.data.numel())
        self.layers = nn.ModuleList(block for block, _ in packed)
        self.register_buffer(
            "wtypes", torch.tensor([types for _, types in packed], dtype=torch.int32), persistent=False
        )
        self._native = NativeStep(lib, self)

    @staticmethod
    def _layers_bytes(model: Llama | Gemma) -> int:
        """Bytes of the layers' seven weights as pack_rows lays them out."""
        total = 0
        for layer in model.layers:
            assert isinstance(layer, (Block, GemmaBlock))  # (typed nn.Module by ModuleList)
            a, f = layer.attn, layer.ffn
            total += packed_bytes([weight_of(m) for m in (a.wq, a.wk, a.wv, a.wo, f.w1, f.w3, f.w2)])
        return total

    @classmethod
    def _pack_layer_quantized(
        cls, cfg: ModelConfig, layer: nn.Module, own: WeightBuffer
    ) -> tuple[PackedBlock, list[int]]:
        """One layer of QTensor (or float) weights as the compiled step reads them, and the ggml
        types of wq, wk, wv, wo, gate, up, down. Nothing is folded: gains and the query scale stay
        separate; q/k rows (and biases) go into RoPE-pair order."""
        assert isinstance(layer, (Block, GemmaBlock))  # (typed nn.Module by ModuleList)
        H, H_kv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        a, f = layer.attn, layer.ffn

        def rows(w: torch.Tensor, heads: int) -> torch.Tensor:
            return _pairs_adjacent(w.float(), heads, hd, cfg.rotary_dim)

        q_norm = k_norm = None
        if a.q_norm is not None and a.k_norm is not None:  # Qwen3: the query scale goes into the q-norm gain
            q_norm = _pairs_adjacent(cls._norm_gain(a.q_norm.weight).float(), 1, hd).mul(query_scale(cfg))
            k_norm = _pairs_adjacent(cls._norm_gain(a.k_norm.weight).float(), 1, hd)
        D, F = cfg.dim, cfg.ffn_dim
        weights = [weight_of(m) for m in (a.wq, a.wk, a.wv, a.wo, f.w1, f.w3, f.w2)]

        def place(parts: list, n: int, orders: list | None = None) -> tuple[torch.Tensor, tuple]:
            # Into the step's buffer in the order the step reads them, q8_0, q4_0, q5_0 and q4_k
            # parts' rows interleaved 8 or 16 at a time on the way (repack.place_rows; q/k rows gathered
            # into RoPE pairs first).
            return place_rows(parts, own.take(packed_bytes(parts)), n, orders, types=REPACKED)

        pairs = [_pair_rows(H, hd, cfg.rotary_dim), _pair_rows(H_kv, hd, cfg.rotary_dim), None]
        wqkv, l_qkv = place(weights[:3], D, pairs)
        wo, l_o = place(weights[3:4], H * hd)
        w13, l_13 = place(weights[4:6], D)
        w2, l_2 = place(weights[6:], F)
        # Their file pages (a GGUF's mapping) back: copied, they are read no more.
        release_pages([w.data if isinstance(w, QTensor) else w for w in weights], only_file_mapped=True)
        bqkv = None
        if a.wq.bias is not None:  # not scaled: the step scales the query heads after adding it
            bqkv = torch.cat([rows(a.wq.bias, H), rows(a.wk.bias, H_kv), a.wv.bias.float()]).float()
        bo = None if a.wo.bias is None else a.wo.bias.detach().float()
        quantized = dict(
            layouts=dict(wqkv=l_qkv, wo=l_o, w13=l_13, w2=l_2),
            attn_norm=cls._norm_gain(layer.attn_norm.weight).float(),
            ffn_norm=cls._norm_gain(layer.ffn_norm.weight).float(),
            q_scale=_quantized_q_scale(cfg, q_norm is not None),
        )
        block = cls._BLOCK(cfg, wqkv, bqkv, wo, w13, w2, bo, q_norm, k_norm, quantized)
        return block, ggml_types(l_qkv) + ggml_types(l_o) + ggml_types(l_13) + ggml_types(l_2)

    @staticmethod
    def _arena_size(cfg: ModelConfig) -> int:
        """Elements in the compiled step's weight buffer: the head, then per layer wqkv, wo, w13, w2."""
        D, q = cfg.dim, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
        return cfg.vocab_size * D + cfg.n_layers * (q * D + D * cfg.n_heads * cfg.head_dim + 3 * cfg.ffn_dim * D)

    @classmethod
    def _pack_layer(cls, cfg: ModelConfig, layer: nn.Module, own=pack_weight) -> PackedBlock:
        """One layer's folded weights, each handed to `own` (oneDNN packing, or a copy into the
        compiled step's buffer), which returns the weight the block keeps."""
        assert isinstance(layer, (Block, GemmaBlock))  # (typed nn.Module by ModuleList)
        H, H_kv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        a, f = layer.attn, layer.ffn
        dt, scale = a.wq.weight.dtype, query_scale(cfg)
        q_norm = k_norm = None
        if a.q_norm is not None and a.k_norm is not None:  # Qwen3: the query scale moves into the norm's gain, after
            q_norm = _pairs_adjacent(cls._norm_gain(a.q_norm.weight).float(), 1, hd).mul_(scale)
            k_norm = _pairs_adjacent(cls._norm_gain(a.k_norm.weight).float(), 1, hd)
            scale = 1.0

        def rope_rows(w: torch.Tensor, heads: int, out: torch.Tensor | None = None) -> torch.Tensor:
            # Long-rope scales cos and sin, i.e. the rotated dims of q and k: linear, so into their rows.
            if out is None:
                w = _pairs_adjacent(w.float(), heads, hd, cfg.rotary_dim)
            else:  # gathered straight into its place
                w = torch.index_select(w.float(), 0, _pair_rows(heads, hd, cfg.rotary_dim), out=out)
            w.view(heads, hd, -1)[:, : cfg.rotary_dim] *= rope_attention_factor(cfg)
            return w

        # Folding works in float32, in place. Where the step's buffer holds float32, a fused weight
        # is folded in its place there, its parts written in one at a time from the checkpoint's
        # pages: a concatenated copy first would be fresh memory touched twice. Elsewhere it is
        # folded in a float32 matrix that `own` then takes (packs, or rounds to bfloat16 and copies).
        in_place = isinstance(own, WeightBuffer) and own.data.dtype == torch.float32
        D, ffn, q, kv = cfg.dim, cfg.ffn_dim, H * hd, H_kv * hd

        def fused(rows: int) -> torch.Tensor:
            return own.take(rows * D).view(rows, D) if in_place else torch.empty(rows, D, dtype=torch.float32)

        def keep(w: torch.Tensor) -> torch.Tensor:
            return w if in_place else own(w.to(dt))

        # In the order the step reads them (the buffer's order): wqkv, wo, w13, w2. Each element
        # goes through the same float32 operations in the same order whichever way (same bits).
        gain = cls._norm_gain
        attn_gain, ffn_gain = gain(layer.attn_norm.weight).float(), gain(layer.ffn_norm.weight).float()
        wqkv = fused(q + 2 * kv)  # (H + 2 H_kv) hd x D
        rope_rows(a.wq.weight, H, wqkv[:q]).mul_(scale).mul_(attn_gain)
        rope_rows(a.wk.weight, H_kv, wqkv[q : q + kv]).mul_(attn_gain)
        torch.mul(a.wv.weight.float(), attn_gain, out=wqkv[q + kv :])
        wqkv = keep(wqkv)
        bqkv = None
        if a.wq.bias is not None:
            bqkv = torch.cat([rope_rows(a.wq.bias, H).mul_(scale), rope_rows(a.wk.bias, H_kv), a.wv.bias.float()])
            bqkv = bqkv.to(dt)
        wo = own(a.wo.weight)
        w13 = fused(2 * ffn)  # 2F x D
        torch.mul(f.w1.weight.float(), ffn_gain, out=w13[:ffn])
        torch.mul(f.w3.weight.float(), ffn_gain, out=w13[ffn:])
        w13 = keep(w13)
        bo = None if a.wo.bias is None else a.wo.bias.detach().clone()
        w2 = own(f.w2.weight)
        block = cls._BLOCK(cfg, wqkv, bqkv, wo, w13, w2, bo, q_norm, k_norm)
        release_pages([p for p in layer.parameters() if p.dim() == 2])
        trim_heap()  # the fused float32 temporaries
        return block

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
        """Same contract as Llama.forward: tokens, positions (B, T) -> logits (B, T or 1, V)."""
        long = long_rope_applies(self.cfg, positions)  # then torch: the step holds the short frequencies
        if self._native is not None and tokens.shape[1] == 1 and cache is not None and not hidden and not long:
            return self._native(self.tok_emb(tokens.reshape(-1)), positions, mask, cache, start)
        x = self.tok_emb(tokens)  # (B, T, D)
        if x.dtype == torch.float16:  # float16 weights compute in float32, as the step does
            x = x.float()
        T = tokens.shape[1]
        window = self.cfg.sliding_window
        if mask is None and window is not None and start + T > window:
            pad = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
            mask = build_mask(pad, start, T, start + T, window)
        freqs = self._freqs(positions, long_rope_freqs(self.cfg, positions, self.inv_freq, self.inv_freq_long))
        if cache is not None:
            assert start + T <= cache.max_len, f"KV cache overflow: {start + T} > {cache.max_len}"
        runs = visible_runs(mask, tokens)  # a decode step's mask as each row's run of slots
        for i, layer in enumerate(self.layers):
            x = layer(x, freqs, runs, None if cache is None else cache.kv[i], start)
        if last_only:
            x = x[:, -1:]
        x = F.rms_norm(x, (x.shape[-1],), self.norm_weight, self.cfg.norm_eps)
        return x if hidden else self._logits(x, last_only)

    def _freqs(self, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
        """RoPE's e^{i pos theta} for positions (B, T) -> (B, T, 1, hd/2) complex64 (rope_mag its magnitude)."""
        angles = positions.float()[..., None] * inv_freq  # (B, T, hd/2)
        mag = torch.ones_like(angles)
        if self.rope_mag != 1.0:  # on the pairs that turn: those past a partial rotary_dim pass through
            mag = torch.where(inv_freq != 0, self.rope_mag, 1.0).expand_as(angles)
        return torch.polar(mag, angles)[:, :, None]

    def _logits(self, x: torch.Tensor, last_only: bool) -> torch.Tensor:
        """The vocabulary head on the normalised x (B, T, D) -> (B, T, V)."""
        if self.quantized:
            return _quantized_mm(x, self.output, self.out_parts)
        if last_only and self._native is not None:  # a prompt's last tokens: the step's product
            return self._native.head(x.view(x.shape[0], -1)).unsqueeze(1)  # (B, 1, V)
        if self.output.dtype == torch.float16:
            return _half_mm(x, self.output)
        return _linear(x, self.output, None, "none", [], "")

    @property
    def native(self) -> bool:
        """Whether decode steps run through the compiled step."""
        return self._native is not None


__all__ = ["PackedBlock", "PackedLlama"]
