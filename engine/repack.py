"""Quantized rows interleaved eight or sixteen at a time for the compiled step (csrc/repack.h and
csrc/repack16.h have the layouts).

Why: a product of four input rows (four presets side by side) with rows stored one after another
costs each weight row its own integer dot product, conversion and scale per block and input row.
With eight rows' blocks interleaved, one 256-bit register holds 4 bytes of each of eight rows, so
one dot product against the input's 4 bytes gives eight rows' sums, and the conversion and scale
are paid once per eight rows. Done once at load, on the bytes (exact: a permutation, q8_0's bytes
flipped to w + 128, q5_0's fifth bits and q4_k's 6-bit scales and mins regrouped); a part's rows
past its last multiple of 8 stay plain. Types: q8_0, q4_0, q5_0, q4_k, q6_k (those of Q8_0, Q4_0
and Q4_K_M files); q4_1, q5_1 and q5_k keep one row at a time. A repacked part is named "<type>:x8" in a quant.pack_rows layout, and its ggml type number
carries `X8` (quant.ggml_types), which tells the step to read it this way.

Sixteen rows ("<type>:x16", `X16`): where the compiled library has AVX-512 kernels (tk_x16), each
pair of eight-row groups is stored as one stream, the two groups' blocks side by side area by
area, so that a 512-bit register holds 16 rows and one input broadcast feeds them all (at four
input rows ~20.5 cycles per 8 rows against ~26: repack16.h). A part's last 8 rows past its last
multiple of 16 stay one eight-row group, and rows past its last multiple of 8 stay plain.
"""

from __future__ import annotations

import torch

from .native import library
from .quant import QTYPES, X8, X16, Layout, QTensor, layout_base, pack_rows, row_bytes

INTERLEAVED = ("q8_0", "q4_0", "q5_0", "q4_k", "q6_k")  # the types with an interleaved kernel (repack.h)
# What loading repacks: not q6_k. Its interleaved kernel is 20-35 % faster at four rows, but one row
# must not lose, and it does here by a little. With each half's bits kept together and the next
# blocks asked for, one row streams about as fast as the plain kernel alone (2 threads: 32000 x
# 2048 at 41-50 GB/s against 39-40, 16384 x 5632 at 33-44 against 37-42), but in the 1B Q4_K_M
# model (in one process, taking turns with the plain kernel) one row took 7-14 % longer in 4-5 of
# 6 turns while memory was slow (the same while it was fast), for four rows 3-10 % faster.
# Repacking its q6_k head at load also slowed the first copies into the weights' buffer (1B
# Q4_K_M load 1.6 -> 3-7 s).
REPACKED = ("q8_0", "q4_0", "q5_0", "q4_k")
WIDE = ("q8_0", "q4_0", "q5_0", "q4_k")  # the types with a sixteen-row kernel (repack16.h)
# An eight-row block's areas as (bytes, unit): a pair stores A's unit k, then B's (repack16.h's x16_areas)
X16_AREAS = {
    "q8_0": ((16, 16), (256, 32)),
    "q4_0": ((16, 16), (128, 32)),
    "q5_0": ((16, 16), (32, 32), (128, 32)),
    "q4_k": ((16, 16), (16, 16), (64, 8), (32, 8), (1024, 32)),
}
_GROUPS_AT_ONCE = 4096  # groups of 8 rows per torch pass: bounds the temporaries (~10 bytes per weight byte)


def _interleave(g: torch.Tensor, qtype: str) -> torch.Tensor:
    """(G, blocks, 8 rows, block bytes) plain -> (G, blocks, 8 x block bytes) repacked."""
    G, nblk = g.shape[:2]
    if qtype == "q4_k":
        return _interleave_q4_k(g)
    if qtype == "q6_k":  # d; int8 scales by sub-block; ql, qh bytes in registers (repack.h, x8_q6_k_group)
        ql = g[..., :128].reshape(G, nblk, 8, 2, 2, 8, 4).permute(0, 1, 3, 4, 5, 2, 6).reshape(G, nblk, 1024)
        qh = g[..., 128:192].reshape(G, nblk, 8, 2, 8, 4).permute(0, 1, 3, 4, 2, 5).reshape(G, nblk, 512)
        scales = g[..., 192:208].transpose(2, 3).reshape(G, nblk, 128)
        # each half's ql registers, then its qh registers: read in about the order they are stored
        halves = torch.cat([ql.reshape(G, nblk, 2, 512), qh.reshape(G, nblk, 2, 256)], -1).reshape(G, nblk, 1536)
        return torch.cat([g[..., 208:210].reshape(G, nblk, 16), scales, halves], -1)
    scales = g[..., :2].reshape(G, nblk, 16)  # the 8 rows' fp16 scales
    if qtype == "q8_0":  # 8 chunks of 4 bytes per row, chunk-major; w + 128 is w's sign bit flipped
        return torch.cat(
            [scales, g[..., 2:].reshape(G, nblk, 8, 8, 4).transpose(2, 3).reshape(G, nblk, 256) ^ 0x80], -1
        )
    at = 6 if qtype == "q5_0" else 2
    qs = g[..., at : at + 16].reshape(G, nblk, 8, 4, 4).transpose(2, 3).reshape(G, nblk, 128)
    if qtype == "q4_0":
        return torch.cat([scales, qs], -1)
    # q5_0: qh's bit e (bit e % 8 of byte e // 8) is element e's fifth bit. Row r's byte k gets
    # element 4c + k's in bit c and element 16 + 4c + k's in bit 4 + c.
    qh, k = g[..., 2:6], torch.arange(4, dtype=torch.uint8)
    hx = torch.zeros(G, nblk, 8, 4, dtype=torch.uint8)
    for c in range(4):
        shift = 4 * (c % 2) + k  # element 4c + k lies in byte c // 2 (16 + ...: byte 2 + c // 2)
        hx |= ((qh[..., c // 2, None] >> shift) & 1) << c
        hx |= ((qh[..., 2 + c // 2, None] >> shift) & 1) << (4 + c)
    return torch.cat([scales, hx.reshape(G, nblk, 32), qs], -1)


def _deinterleave(p: torch.Tensor, qtype: str) -> torch.Tensor:
    """_interleave's inverse: (G, blocks, 8 x block bytes) -> (G, blocks, 8 rows, block bytes)."""
    G, nblk = p.shape[:2]
    if qtype == "q4_k":
        return _deinterleave_q4_k(p)
    if qtype == "q6_k":
        halves = p[..., 144:].reshape(G, nblk, 2, 768)
        ql = halves[..., :512].reshape(G, nblk, 2, 2, 8, 8, 4).permute(0, 1, 5, 2, 3, 4, 6).reshape(G, nblk, 8, 128)
        qh = halves[..., 512:].reshape(G, nblk, 2, 8, 8, 4).permute(0, 1, 4, 2, 3, 5).reshape(G, nblk, 8, 64)
        scales = p[..., 16:144].reshape(G, nblk, 16, 8).transpose(2, 3)
        return torch.cat([ql, qh, scales, p[..., :16].reshape(G, nblk, 8, 2)], -1)
    scales = p[..., :16].reshape(G, nblk, 8, 2)
    if qtype == "q8_0":
        return torch.cat(
            [scales, (p[..., 16:] ^ 0x80).reshape(G, nblk, 8, 8, 4).transpose(2, 3).reshape(G, nblk, 8, 32)], -1
        )
    at = 48 if qtype == "q5_0" else 16
    qs = p[..., at:].reshape(G, nblk, 4, 8, 4).transpose(2, 3).reshape(G, nblk, 8, 16)
    if qtype == "q4_0":
        return torch.cat([scales, qs], -1)
    hx, k = p[..., 16:48].reshape(G, nblk, 8, 4), torch.arange(4, dtype=torch.uint8)
    qh = torch.zeros(G, nblk, 8, 4, dtype=torch.uint8)
    for c in range(4):
        shift = 4 * (c % 2) + k
        qh[..., c // 2] |= (((hx >> c) & 1) << shift).sum(-1, dtype=torch.uint8)  # distinct bits: sum is or
        qh[..., 2 + c // 2] |= (((hx >> (4 + c)) & 1) << shift).sum(-1, dtype=torch.uint8)
    return torch.cat([scales, qh, qs], -1)


def _interleave_q4_k(g: torch.Tensor) -> torch.Tensor:
    """q4_k's (G, blocks, 8, 144) -> (G, blocks, 1152): d and dmin of the 8 rows, the 6-bit scales
    and mins regrouped by sub-block (repack.h, x8_q4_k_group), the quants in 32-byte registers."""
    G, nblk = g.shape[:2]
    s = g[..., 4:16]  # 12 bytes a row: 8 scales and 8 mins of 6 bits (quant.h's scale_min_k4)
    sc = torch.cat([s[..., 0:4] & 63, (s[..., 8:12] & 15) | ((s[..., 0:4] >> 6) << 4)], -1)  # (G, nblk, 8 rows, 8)
    mn = torch.cat([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], -1)
    low = ((sc & 15) | ((mn & 15) << 4)).transpose(2, 3).reshape(G, nblk, 64)  # byte 8 sub-block + row
    high = ((sc >> 4) | ((mn >> 4) << 2)).transpose(2, 3)  # (G, nblk, 8 sub-blocks, 8 rows), 4 bits each
    high = (high[:, :, :4] | (high[:, :, 4:] << 4)).reshape(G, nblk, 32)
    qs = g[..., 16:].reshape(G, nblk, 8, 4, 8, 4).permute(0, 1, 3, 4, 2, 5).reshape(G, nblk, 1024)
    return torch.cat([g[..., 0:2].reshape(G, nblk, 16), g[..., 2:4].reshape(G, nblk, 16), low, high, qs], -1)


def _deinterleave_q4_k(p: torch.Tensor) -> torch.Tensor:
    """_interleave_q4_k's inverse (the 12 scale bytes are fully used, so the bytes come back)."""
    G, nblk = p.shape[:2]
    low = p[..., 32:96].reshape(G, nblk, 8, 8).transpose(2, 3)  # (G, nblk, 8 rows, 8 sub-blocks)
    high = p[..., 96:128].reshape(G, nblk, 4, 8)
    high = torch.cat([high & 15, high >> 4], 2).transpose(2, 3)
    sc, mn = (low & 15) | ((high & 3) << 4), (low >> 4) | (((high >> 2) & 3) << 4)
    s = torch.cat(
        [
            sc[..., :4] | ((sc[..., 4:] >> 4) << 6),
            mn[..., :4] | ((mn[..., 4:] >> 4) << 6),
            (sc[..., 4:] & 15) | ((mn[..., 4:] & 15) << 4),
        ],
        -1,
    )
    qs = p[..., 128:].reshape(G, nblk, 4, 8, 8, 4).permute(0, 1, 4, 2, 3, 5).reshape(G, nblk, 8, 128)
    dd = torch.cat([p[..., 0:16].reshape(G, nblk, 8, 2), p[..., 16:32].reshape(G, nblk, 8, 2)], -1)
    return torch.cat([dd, s, qs], -1)


def _pair(p: torch.Tensor, qtype: str) -> torch.Tensor:
    """(P, 2 groups, blocks, 8 x block bytes) eight-row blocks -> (P, blocks, 16 x block bytes)."""
    P, _, nblk, _ = p.shape
    pieces, at = [], 0
    for length, unit in X16_AREAS[qtype]:
        area = p[..., at : at + length].reshape(P, 2, nblk, length // unit, unit)
        pieces.append(area.permute(0, 2, 3, 1, 4).reshape(P, nblk, 2 * length))
        at += length
    return torch.cat(pieces, -1)


def _unpair(p: torch.Tensor, qtype: str) -> torch.Tensor:
    """_pair's inverse: (P, blocks, 16 x block bytes) -> (P, 2, blocks, 8 x block bytes)."""
    P, nblk, _ = p.shape
    pieces, at = [], 0
    for length, unit in X16_AREAS[qtype]:
        area = p[..., 2 * at : 2 * (at + length)].reshape(P, nblk, length // unit, 2, unit)
        pieces.append(area.permute(0, 3, 1, 2, 4).reshape(P, 2, nblk, length))
        at += length
    return torch.cat(pieces, -1)


def _convert_part(part: torch.Tensor, qtype: str, rows: int, n: int, forward: bool, wide: bool) -> torch.Tensor:
    """One part's bytes (rows x row bytes), its full groups of 8 rows (un)interleaved, and with wide
    its pairs of groups (un)paired, into a copy: the reference for the compiled tk_repack, and the
    way back (tests)."""
    size, nblk = QTYPES[qtype][1], n // QTYPES[qtype][0]
    out = part.clone()
    groups = out[: rows // 8 * 8 * nblk * size].view(rows // 8, 8, nblk, size)  # a view of out
    pairs = out[: rows // 16 * 16 * nblk * size].view(rows // 16, 2, nblk, 8 * size) if wide else None
    if pairs is not None and not forward:
        pairs[:] = _unpair(pairs.reshape(-1, nblk, 16 * size).clone(), qtype)
    for g0 in range(0, groups.shape[0], _GROUPS_AT_ONCE):
        g = groups[g0 : g0 + _GROUPS_AT_ONCE]
        if forward:
            g.view(-1, nblk, 8 * size)[:] = _interleave(g.transpose(1, 2), qtype)
        else:
            g.transpose(1, 2)[:] = _deinterleave(g.reshape(-1, nblk, 8 * size).clone(), qtype)
    if pairs is not None and forward:
        pairs.view(-1, nblk, 16 * size)[:] = _pair(pairs.clone(), qtype)
    return out


def _wide() -> bool:
    """Whether loading lays parts out sixteen rows at a time: where the library has those kernels."""
    lib = library()
    return lib is not None and bool(lib.tk_x16())


def _repacked_name(qtype: str, rows: int, wide: bool) -> str:
    """The layout name a part of `rows` rows gets: sixteen rows where asked and it has a pair."""
    return f"{qtype}:x16" if wide and qtype in WIDE and rows >= 16 else f"{qtype}:x8"


def repack_rows(
    data: torch.Tensor,
    layout: Layout,
    n: int,
    in_place: bool = False,
    native: bool = True,
    types: tuple[str, ...] = REPACKED,
    wide: bool | None = None,
) -> tuple[torch.Tensor, Layout]:
    """quant.pack_rows' bytes and layout (rows n wide) with every part of one of `types` (of
    INTERLEAVED) and at least 8 rows interleaved (with wide, those of WIDE sixteen rows at a time;
    None: where the library has the kernels): in a copy (the input may be shared, e.g. with a
    tied embedding; no copy when no part is interleaved), or in_place in data (contiguous).
    Through the compiled tk_repack where there is one (one pass in place: a 1B model loads
    0.1-0.4 s slower, where torch's copies made it 2.5-4 s), else torch's reference (native=False:
    always; tests compare the two)."""
    wide = _wide() if wide is None else wide
    if in_place or not any(qtype in types and rows >= 8 for qtype, rows in layout):
        out = data.reshape(-1)  # (nothing to interleave: no copy either)
    else:
        out = data.reshape(-1).clone()
    lib = library() if native else None
    names, at = [], 0
    for qtype, rows in layout:
        size = rows * (4 * n if qtype == "float32" else row_bytes(qtype, n))
        if qtype in types and rows >= 8:
            part, ggml, name = out[at : at + size], QTYPES[qtype][2], _repacked_name(qtype, rows, wide)
            two = name.endswith(":x16")
            if lib is None or lib.tk_repack(
                ggml, part.data_ptr(), part.data_ptr(), rows, n, two, torch.get_num_threads()
            ):
                part.copy_(_convert_part(part, qtype, rows, n, True, two))
            qtype = name
        names.append((qtype, rows))
        at += size
    return out, tuple(names)


def place_rows(
    parts: list[QTensor | torch.Tensor],
    out: torch.Tensor,
    n: int,
    orders: list[torch.Tensor | None] | None = None,
    types: tuple[str, ...] = REPACKED,
    wide: bool | None = None,
) -> tuple[torch.Tensor, Layout]:
    """repack_rows(*quant.pack_rows(parts, out, orders), n, in_place=True, wide=wide), reading each
    part once: one that is interleaved as it lies (no row order) goes through the compiled
    tk_repack from where it is (a GGUF file's mapping) straight into its place in `out`; the others
    are copied or gathered there (pack_rows) and interleaved in place. So the compiled step's buffer
    is filled in one pass over the weights, not a copy and then a pass over the copy."""
    lib, layout, at, wide = library(), [], 0, _wide() if wide is None else wide
    for p, order in zip(parts, orders or [None] * len(parts), strict=True):
        size = p.nbytes if isinstance(p, QTensor) else 4 * p.numel()
        dest, rows, at = out[at : at + size], p.shape[0], at + size
        direct = isinstance(p, QTensor) and p.qtype in types and rows >= 8 and order is None
        if direct and lib is not None and p.data.is_contiguous() and p.data.device.type == "cpu":
            assert isinstance(p, QTensor)  # (for the type checker: direct says so)
            ggml, name = QTYPES[p.qtype][2], _repacked_name(p.qtype, rows, wide)
            two = name.endswith(":x16")
            if not lib.tk_repack(ggml, p.data.data_ptr(), dest.data_ptr(), rows, n, two, torch.get_num_threads()):
                layout.append((name, rows))
                continue
        layout += repack_rows(*pack_rows([p], dest, [order]), n, in_place=True, types=types, wide=wide)[1]
    return out, tuple(layout)


def unrepack_rows(data: torch.Tensor, layout: Layout, n: int) -> tuple[torch.Tensor, Layout]:
    """repack_rows' inverse: the plain rows and layout."""
    parts, names, at = [], [], 0
    for qtype, rows in layout:
        base, flag = layout_base(qtype)
        size = rows * (4 * n if base == "float32" else row_bytes(base, n))
        part = data.reshape(-1)[at : at + size]
        parts.append(_convert_part(part, base, rows, n, False, flag == X16) if flag else part)
        names.append((base, rows))
        at += size
    return torch.cat(parts), tuple(names)


__all__ = ["INTERLEAVED", "REPACKED", "WIDE", "X8", "X16", "place_rows", "repack_rows", "unrepack_rows"]
