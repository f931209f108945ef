"""Quantized weights kept quantized: llama.cpp's GGUF block formats as torch byte tensors.

A `QTensor` is a 2-D weight (out, in) whose rows are stored exactly as a GGUF file stores them:
each row is in/block_size blocks of the type's bytes, back to back. Rows are independent, so
taking, reordering or concatenating rows (an embedding lookup, the RoPE-pair reordering of q/k
rows) works on the bytes without dequantizing. Block layouts (llama.cpp's ggml-common.h; fp16
scales little-endian):

| type | elements | bytes | layout | value |
| --- | --- | --- | --- | --- |
| q8_0 | 32 | 34 | d fp16, qs int8[32] | d q |
| q4_0 | 32 | 18 | d fp16, qs[16]: element i low nibble, i + 16 high | d (q - 8) |
| q4_1 | 32 | 20 | d fp16, m fp16, qs[16] as q4_0 | d q + m |
| q5_0 | 32 | 22 | d fp16, qh uint32 (bit i: element i's 5th bit), qs[16] as q4_0 | d (q - 16) |
| q5_1 | 32 | 24 | d, m fp16, qh uint32, qs[16] | d q + m |
| q4_k | 256 | 144 | d, dmin fp16, scales[12] (8 6-bit scales, 8 6-bit mins), qs[128] | d sc q - dmin mn |
| q5_k | 256 | 176 | d, dmin fp16, scales[12], qh[32] (5th bits), qs[128] | d sc q - dmin mn |
| q6_k | 256 | 210 | ql[128], qh[64], scales int8[16], d fp16 | d sc (q - 32) |

K-types split a block into sub-blocks (32 elements for q4_k/q5_k, 16 for q6_k), each with its
own integer scale; within 64 elements (q4_k/q5_k) or 128 (q6_k) the low nibbles hold the first
32 and the high nibbles the next (see `_dequantize_*`).

The plain modules hold them through `QLinear` and `QEmbedding`, which dequantize in their
forward (the torch path and GPUs); the compiled decode step reads the blocks directly
(csrc/quant.h). `quantize` makes q8_0, q4_0, q4_1, q5_0 and q5_1 from float weights (gguf-py's numpy port of
llama.cpp's reference quantizers, so the bytes equal llama-quantize's); K-types come only from
GGUF files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelLoadError

# qtype -> (elements per block, bytes per block, ggml type number): the number is also what the
# compiled step's type fields hold (csrc/decode.c), so both speak llama.cpp's numbering.
QTYPES: dict[str, tuple[int, int, int]] = {
    "q8_0": (32, 34, 8),
    "q4_0": (32, 18, 2),
    "q4_1": (32, 20, 3),
    "q5_0": (32, 22, 6),
    "q5_1": (32, 24, 7),
    "q4_k": (256, 144, 12),
    "q5_k": (256, 176, 13),
    "q6_k": (256, 210, 14),
}
QUANTIZABLE = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")  # what `quantize` makes; K-types come from GGUF files
GGML_F32, GGML_BF16 = 0, 30  # the ggml numbers of the step's float weight types
X8 = 256  # added to a type number: rows interleaved 8 at a time (repack.py; a layout names it "<type>:x8")
X16 = 512  # ... 16 at a time (pairs of X8's groups: csrc/repack16.h; a layout names it "<type>:x16")
LAYOUT_FLAGS = {"x8": X8, "x16": X16}


def layout_base(qtype: str) -> tuple[str, int]:
    """A layout part's type name -> (the type, its interleaving flag): "q4_0:x16" -> ("q4_0", X16)."""
    base, _, kind = qtype.partition(":")
    return base, LAYOUT_FLAGS[kind] if kind else 0


def row_bytes(qtype: str, n: int) -> int:
    """Bytes of one row of n elements."""
    block, size, _ = QTYPES[qtype]
    assert n % block == 0, (qtype, n)
    return n // block * size


@dataclass(frozen=True)
class QTensor:
    """A quantized (out, in) weight: data (out, row_bytes) uint8, each row the type's GGUF blocks."""

    qtype: str
    shape: tuple[int, int]
    data: torch.Tensor

    def __post_init__(self) -> None:
        if self.qtype not in QTYPES:
            raise ModelLoadError(f"unsupported quantization type {self.qtype!r}; supported: {', '.join(QTYPES)}")
        block = QTYPES[self.qtype][0]
        out, n = self.shape
        if n % block:
            raise ModelLoadError(f"a {self.qtype} tensor's rows must be a multiple of {block} elements, not {n}")
        if self.data.dtype != torch.uint8 or tuple(self.data.shape) != (out, row_bytes(self.qtype, n)):
            raise ModelLoadError(
                f"{self.qtype} data of shape {tuple(self.data.shape)} {self.data.dtype} does not hold a "
                f"{out} x {n} weight; expected uint8 ({out}, {row_bytes(self.qtype, n)})"
            )

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    @property
    def ggml_type(self) -> int:
        return QTYPES[self.qtype][2]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (out, in) weight as floats (computed in float32 on the data's device)."""
        out, n = self.shape
        block, size, _ = QTYPES[self.qtype]
        blocks = self.data.reshape(-1, size)  # (out * n / block, size)
        return _DEQUANTIZE[self.qtype](blocks).reshape(out, n).to(dtype)

    def __getitem__(self, rows: slice) -> QTensor:
        """Rows start:stop (a slice of rows, no step) as a QTensor viewing the same bytes: a part of a
        fused tensor (Phi-3's q/k/v, weight_names.WeightTable.split), as a float tensor's rows are."""
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"a QTensor takes a slice of rows, not {rows!r}")
        data = self.data[rows]
        return QTensor(self.qtype, (data.shape[0], self.shape[1]), data)

    def take_rows(self, index: torch.Tensor | list[int]) -> QTensor:
        """The rows `index` (any integer index of rows) as a QTensor of len(index) rows."""
        rows = self.data[torch.as_tensor(index, dtype=torch.long, device=self.data.device)]
        return QTensor(self.qtype, (rows.shape[0], self.shape[1]), rows.contiguous())

    def contiguous(self) -> QTensor:
        return self if self.data.is_contiguous() else QTensor(self.qtype, self.shape, self.data.contiguous())


def cat_rows(parts: list[QTensor]) -> QTensor:
    """Row-wise concatenation of QTensors of one type and width (as torch.cat(dim=0))."""
    assert len({(p.qtype, p.shape[1]) for p in parts}) == 1, [(p.qtype, p.shape) for p in parts]
    data = torch.cat([p.data for p in parts])
    return QTensor(parts[0].qtype, (data.shape[0], parts[0].shape[1]), data)


def meta_qtensor(qtype: str, shape: tuple[int, int]) -> QTensor:
    """A QTensor of that type and shape on the meta device: what a model built for its shapes and
    byte counts holds (`tiankong info`, which reads no weights)."""
    return QTensor(qtype, shape, torch.empty(shape[0], row_bytes(qtype, shape[1]), dtype=torch.uint8, device="meta"))


def quantize(w: torch.Tensor, qtype: str) -> QTensor:
    """A float (out, in) weight in q8_0, q4_0, q4_1, q5_0 or q5_1 (llama.cpp's reference rounding, via gguf-py)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize as gguf_quantize

    if qtype not in QUANTIZABLE:
        raise ModelLoadError(f"cannot quantize to {qtype!r}; choose one of {', '.join(QUANTIZABLE)}")
    block = QTYPES[qtype][0]
    if w.dim() != 2 or w.shape[1] % block:
        raise ModelLoadError(f"{qtype} needs a 2-D weight with rows a multiple of {block}, not shape {tuple(w.shape)}")
    if w.device.type == "meta":  # a model built for its shapes only (`tiankong info`): nothing to round
        return meta_qtensor(qtype, (w.shape[0], w.shape[1]))
    arr = w.detach().to("cpu", torch.float32).contiguous().numpy()
    data = gguf_quantize(arr, GGMLQuantizationType[qtype.upper()])
    return QTensor(qtype, (w.shape[0], w.shape[1]), torch.from_numpy(np.ascontiguousarray(data)).to(w.device))


def round_activations(x: torch.Tensor, qtype: str) -> torch.Tensor:
    """x (..., n) as the compiled step sees it before a product with a `qtype` weight: rounded to
    8 bits in blocks of 32 (256 for K-types) with scale amax / 127 (csrc/quant.h). For tests."""
    block = 256 if qtype.endswith("_k") else 32
    xb = x.float().reshape(*x.shape[:-1], -1, block)
    d = xb.abs().amax(-1, keepdim=True) / 127
    # x * (1 / d), not x / d: the step's arithmetic, which rounds ties (an embedding row of q4_0
    # values has many: 127 k / k_max) the same way.
    return (torch.round(xb * torch.where(d > 0, 1 / d, 0)) * d).reshape(x.shape)


# --- dequantization: each takes blocks (N, bytes) uint8 -> (N, elements) float32 ---------------


def _f16(b: torch.Tensor) -> torch.Tensor:
    """(N, 2k) little-endian bytes -> (N, k) float32."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(..., n) bytes -> (..., 2n): the n low nibbles, then the n high ones (callers reshape first so
    that the last dimension is the group the layout splits: 16 bytes for q4_0, 32 for q4_k)."""
    return torch.cat([qs & 0xF, qs >> 4], dim=-1)


def _dequantize_q8_0(b: torch.Tensor) -> torch.Tensor:
    return _f16(b[:, :2]) * b[:, 2:].contiguous().view(torch.int8).float()


def _dequantize_q4_0(b: torch.Tensor) -> torch.Tensor:
    return _f16(b[:, :2]) * (_nibbles(b[:, 2:]).float() - 8)


def _dequantize_q4_1(b: torch.Tensor) -> torch.Tensor:
    return _f16(b[:, :2]) * _nibbles(b[:, 4:]).float() + _f16(b[:, 2:4])


def _q5_bits(qh: torch.Tensor) -> torch.Tensor:
    """(N, 4) little-endian uint32 bytes -> (N, 32) fifth bits, bit i for element i, shifted to 16."""
    bits = (qh.long()[:, :, None] >> torch.arange(8, device=qh.device)) & 1  # (N, byte, bit)
    return bits.reshape(-1, 32) << 4


def _dequantize_q5_0(b: torch.Tensor) -> torch.Tensor:
    return _f16(b[:, :2]) * ((_nibbles(b[:, 6:]).long() | _q5_bits(b[:, 2:6])).float() - 16)


def _dequantize_q5_1(b: torch.Tensor) -> torch.Tensor:
    return _f16(b[:, :2]) * (_nibbles(b[:, 8:]).long() | _q5_bits(b[:, 4:8])).float() + _f16(b[:, 2:4])


def _scale_min_k4(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q4_k/q5_k's 12 scale bytes (N, 12) -> (scales, mins) (N, 8) each, 6 bits: sub-blocks 0-3 in
    the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); 4-7 in the nibbles of bytes 8-11 with
    their top 2 bits in the top bits of bytes 0-3 (scales) and 4-7 (mins)."""
    s = s.long()
    lo_sc, lo_mn = s[:, 0:4] & 63, s[:, 4:8] & 63
    hi_sc = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    hi_mn = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return torch.cat([lo_sc, hi_sc], 1).float(), torch.cat([lo_mn, hi_mn], 1).float()


def _dequantize_k4(b: torch.Tensor, qh: torch.Tensor | None, qs: torch.Tensor) -> torch.Tensor:
    """q4_k (qh None) and q5_k: 4 chunks of 64 elements; chunk j's 32 bytes of qs give sub-block 2j
    (low nibbles) and 2j+1 (high nibbles); q5_k's 5th bit of element i of sub-block s is bit s of qh[i]."""
    N = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _scale_min_k4(b[:, 4:16])
    q = _nibbles(qs.reshape(N, 4, 32)).reshape(N, 8, 32).long()  # (N, sub-block, element)
    if qh is not None:
        bits = (qh[:, None, :].long() >> torch.arange(8, device=b.device)[None, :, None]) & 1  # (N, 8, 32)
        q = q | (bits << 4)
    return ((d * sc)[:, :, None] * q - (dmin * mn)[:, :, None]).reshape(N, 256)


def _dequantize_q4_k(b: torch.Tensor) -> torch.Tensor:
    return _dequantize_k4(b, None, b[:, 16:144])


def _dequantize_q5_k(b: torch.Tensor) -> torch.Tensor:
    return _dequantize_k4(b, b[:, 16:48], b[:, 48:176])


def _dequantize_q6_k(b: torch.Tensor) -> torch.Tensor:
    """Two halves of 128 elements, each from 64 bytes of ql and 32 of qh: element l + 32 k of a half
    (k = 0..3) takes ql[l + 32 (k % 2)]'s low (k < 2) or high nibble and bits 2k..2k+1 of qh[l];
    sub-blocks of 16, scales int8."""
    N = b.shape[0]
    ql, qh = b[:, 0:128].long().reshape(N, 2, 2, 32), b[:, 128:192].long().reshape(N, 2, 1, 32)
    sc = b[:, 192:208].contiguous().view(torch.int8).float()  # (N, 16)
    d = _f16(b[:, 208:210])
    low = torch.cat([ql & 0xF, ql >> 4], dim=2)  # (N, half, k, 32): k = 0, 1 low nibbles; 2, 3 high
    high = (qh >> (2 * torch.arange(4, device=b.device)).view(1, 1, 4, 1)) & 3
    q = (low | (high << 4)) - 32  # (N, 2, 4, 32)
    return (d * sc)[:, :, None].mul(q.reshape(N, 16, 16)).reshape(N, 256)


_DEQUANTIZE = {
    "q8_0": _dequantize_q8_0,
    "q4_0": _dequantize_q4_0,
    "q4_1": _dequantize_q4_1,
    "q5_0": _dequantize_q5_0,
    "q5_1": _dequantize_q5_1,
    "q4_k": _dequantize_q4_k,
    "q5_k": _dequantize_q5_k,
    "q6_k": _dequantize_q6_k,
}


# --- modules: the plain model's Linear and Embedding with a QTensor weight ---------------------


class QLinear(nn.Module):
    """`y = x W^T + b` with W a QTensor, dequantized on every forward (torch path, GPUs). The bytes
    are the buffer `qdata`, so `.to(device)` and state_dict() carry them."""

    qdata: torch.Tensor  # buffers, registered in __init__ (declared for the type checker)
    bias: torch.Tensor | None

    def __init__(self, weight: QTensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.qtype, (self.out_features, self.in_features) = weight.qtype, weight.shape
        self.register_buffer("qdata", weight.data)
        self.register_buffer("bias", bias)

    @property
    def weight(self) -> QTensor:
        return QTensor(self.qtype, (self.out_features, self.in_features), self.qdata)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.dequantize(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, qtype={self.qtype}"


class QEmbedding(nn.Module):
    """An embedding table held as a QTensor: a lookup dequantizes only the rows it reads."""

    qdata: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, weight: QTensor, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.qtype, (self.num_embeddings, self.embedding_dim) = weight.qtype, weight.shape
        self.dtype = dtype  # of the looked-up vectors
        self.register_buffer("qdata", weight.data)

    @property
    def weight(self) -> QTensor:
        return QTensor(self.qtype, (self.num_embeddings, self.embedding_dim), self.qdata)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens.reshape(-1)
        if (
            self.qdata.device.type == "cpu"
            and ids.dtype == torch.int64
            and ids.is_contiguous()
            and self.qdata.is_contiguous()
        ):
            from . import native  # here, not at the top: the engine's import order stays free of cycles

            lib = native.library()  # the compiled lookup: one call where the torch one is ~20 ops
            if lib is not None:
                rows = native.dequantize_rows(
                    lib, QTYPES[self.qtype][2], self.qdata.view(self.num_embeddings, -1), self.embedding_dim, ids
                )
                return (rows if self.dtype == torch.float32 else rows.to(self.dtype)).view(
                    *tokens.shape, self.embedding_dim
                )
        rows = self.weight.take_rows(ids).dequantize(self.dtype)
        return rows.view(*tokens.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, qtype={self.qtype}"


def set_quantized(model: nn.Module, name: str, weight: QTensor) -> None:
    """Put a QTensor where the plain module has the float weight `name` (e.g. "layers.0.attn.wq.weight",
    "tok_emb.weight"): its nn.Linear becomes a QLinear (keeping its bias), its nn.Embedding a
    QEmbedding. The model may be on the meta device (GGUF loading). A tied head stays tied: when
    the embedding and the head share one weight, both are replaced."""
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if attr != "weight" or not isinstance(owner, (nn.Linear, nn.Embedding, QLinear, QEmbedding)):
        raise ModelLoadError(f"{name} is not the weight of a linear layer or an embedding; it cannot be quantized")
    if tuple(weight.shape) != (owner.weight.shape[0], owner.weight.shape[1]):
        raise ModelLoadError(f"{name} has shape {weight.shape} but the model expects {tuple(owner.weight.shape)}")
    # The module itself, and any other module sharing its weight (a head tied to the embedding). Only
    # an embedding and a head are ever tied, so only they look: a scan of every module for each of a
    # model's ~200 tensors was a quarter of a quantized load.
    tied = []
    if isinstance(owner, (nn.Embedding, QEmbedding)) or is_head_name(owner_name):
        tied = [n for n, m in model.named_modules() if n != owner_name and getattr(m, "weight", None) is owner.weight]
    for module_name in [owner_name, *tied]:
        module = model.get_submodule(module_name)
        parent_name, _, child = module_name.rpartition(".")
        replacement: nn.Module
        if isinstance(module, (nn.Embedding, QEmbedding)):
            replacement = QEmbedding(weight)
        else:
            bias = getattr(module, "bias", None)
            replacement = QLinear(weight, bias.detach() if bias is not None else None)
        setattr(model.get_submodule(parent_name), child, replacement)


def is_head_name(module_name: str) -> bool:
    """Whether a module is a model's vocabulary head by its name (the plain modules' "output",
    transformers' "lm_head")."""
    return module_name.rpartition(".")[2] in ("output", "lm_head")


def quantize_model(model: nn.Module, qtype: str, head_qtype: str | None = None) -> nn.Module:
    """Every nn.Linear and nn.Embedding of `model` quantized to `qtype` in place; the head (a module
    named "output" or "lm_head"), and an embedding tied to it, to `head_qtype` when given (llama.cpp
    also treats a tied embedding as the head). Returns the model. Weights whose rows are not a
    multiple of the block size stay float, and so does GPT-2's position embedding (pos_emb), as
    llama.cpp keeps it in every type: a few rows read once a token, 1.5 % of GPT-2 small."""
    heads = [m.weight for n, m in model.named_modules() if is_head_name(n)]
    for name, module in list(model.named_modules()):
        if not isinstance(module, (nn.Linear, nn.Embedding)) or model.get_submodule(name) is not module:
            continue  # not a float weight, or replaced already (the tied partner of an embedding)
        if name == "pos_emb":
            continue
        head = any(module.weight is w for w in heads)
        qt = head_qtype if head and head_qtype else qtype
        if module.weight.shape[1] % QTYPES[qt][0] == 0:
            set_quantized(model, f"{name}.weight", quantize(module.weight.detach(), qt))
    return model


def is_quantized(model: nn.Module) -> bool:
    """Whether any weight of `model` is a QTensor."""
    return any(isinstance(m, (QLinear, QEmbedding)) for m in model.modules())


def weight_of(module: nn.Module) -> QTensor | torch.Tensor:
    """A linear layer's or embedding's weight: its QTensor, or the float tensor."""
    if isinstance(module, (QLinear, QEmbedding)):
        return module.weight
    weight = module.weight
    assert isinstance(weight, torch.Tensor), type(weight)
    return weight.detach()


# The layout of rows of mixed types stored back to back: each part's (type name, rows).
Layout = tuple[tuple[str, int], ...]


def pack_rows(
    parts: list[QTensor | torch.Tensor],
    out: torch.Tensor | None = None,
    orders: list[torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, Layout]:
    """Row blocks of one width, each quantized or float, back to back as one uint8 tensor (float
    parts as float32 bytes) and its layout: what the compiled step reads for a fused weight (q/k/v,
    gate/up) whose parts differ in type.

    out: a flat uint8 tensor of packed_bytes(parts) to write them into (the compiled step's buffer),
    else a new one. orders: per part, the index of its rows to take in that order (the q/k rows'
    RoPE-pair order), or None for all as they are. Each part goes straight from where it lies (a GGUF
    file's mapping) into its place: gathering or concatenating into a temporary first would fault in
    and fill fresh memory once more per weight (slow on a VM).
    """
    total = packed_bytes(parts)
    out = torch.empty(total, dtype=torch.uint8, device=parts[0].data.device) if out is None else out
    assert out.dtype == torch.uint8 and out.shape == (total,), (out.dtype, out.shape, total)
    layout, at = [], 0
    for p, order in zip(parts, orders or [None] * len(parts), strict=True):
        if isinstance(p, QTensor):
            src, name = p.data, p.qtype  # (rows, row bytes)
        else:  # (rows, n) -> (rows, 4 n) bytes: gathering rows of bytes gathers rows of floats
            src, name = p.detach().float().contiguous().view(torch.uint8), "float32"
        dest = out[at : at + src.numel()].view(src.shape)
        if order is None:
            dest.copy_(src)
        else:
            torch.index_select(src, 0, order, out=dest)
        layout.append((name, p.shape[0]))
        at += src.numel()
    return out, tuple(layout)


def packed_bytes(parts: list[QTensor | torch.Tensor]) -> int:
    """The size of pack_rows(parts)' bytes, without making them (to size a buffer first)."""
    return sum(p.data.numel() if isinstance(p, QTensor) else 4 * p.numel() for p in parts)


def unpack_rows(data: torch.Tensor, layout: Layout, n: int) -> torch.Tensor:
    """pack_rows' bytes as one float32 (rows, n) matrix (plain rows: repack.unrepack_rows first)."""
    assert not any(layout_base(qtype)[1] for qtype, _ in layout), layout
    out, at = [], 0
    for qtype, rows in layout:
        size = rows * (4 * n if qtype == "float32" else row_bytes(qtype, n))
        part = data[at : at + size].view(rows, -1)
        out.append(part.view(torch.float32) if qtype == "float32" else QTensor(qtype, (rows, n), part).dequantize())
        at += size
    return torch.cat(out)


def ggml_types(layout: Layout) -> list[int]:
    """Each part's ggml type number (what the compiled step's type fields hold), plus X8 or X16
    where the part's rows are interleaved (repack.py)."""
    types = []
    for qtype, _ in layout:
        base, flag = layout_base(qtype)
        types.append(GGML_F32 if base == "float32" else QTYPES[base][2] | flag)
    return types


def weight_summary(model: nn.Module) -> dict:
    """A plain model's 2-D weights: count by type ("q4_k", "float32", ...), parameters (quantized
    ones counted by their shape), and the bytes one decode step reads: every linear weight once
    (a tied head once, as the head) plus one embedding row."""
    types: dict[str, int] = {}
    seen: set[int] = set()
    params = per_token = 0
    data: torch.Tensor
    shape: tuple[int, ...]
    for module in model.modules():
        if isinstance(module, (QLinear, QEmbedding)):
            key, data, shape = module.qtype, module.qdata, module.weight.shape
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            key, data, shape = str(module.weight.dtype).removeprefix("torch."), module.weight, module.weight.shape
        else:
            continue
        # A meta tensor (a model built for its shapes, `tiankong info`) has no address: a tied head
        # is the very tensor of its embedding there.
        key_of = id(data) if data.device.type == "meta" else data.data_ptr()
        if key_of in seen:  # a tied head: counted with the embedding, read as the head
            per_token += data.nbytes - data.nbytes // shape[0]
            continue
        seen.add(key_of)
        types[key] = types.get(key, 0) + 1
        params += shape[0] * shape[1]
        embedding = isinstance(module, (nn.Embedding, QEmbedding))
        per_token += data.nbytes // shape[0] if embedding else data.nbytes
    others = sum(p.numel() for p in model.parameters() if p.dim() != 2)  # norm gains, biases
    # a QLinear's bias is a buffer, not a parameter (GPT-2's every linear, Qwen2's q/k/v)
    others += sum(m.bias.numel() for m in model.modules() if isinstance(m, QLinear) and m.bias is not None)
    return dict(types=types, parameters=params + others, bytes_per_token=per_token)


__all__ = [
    "QEmbedding",
    "QLinear",
    "QTYPES",
    "QTensor",
    "QUANTIZABLE",
    "Layout",
    "cat_rows",
    "ggml_types",
    "is_quantized",
    "meta_qtensor",
    "pack_rows",
    "packed_bytes",
    "quantize",
    "round_activations",
    "quantize_model",
    "row_bytes",
    "set_quantized",
    "weight_summary",
    "unpack_rows",
    "weight_of",
    "X8",
    "X16",
    "layout_base",
]
