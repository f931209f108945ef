"""A preallocated key/value cache.

All rows of a batch share one write position: prompts are left-padded to the same length, so
after prefill every row's next token goes to the same slot, and a decode step is one tensor write
per layer instead of a Python loop over rows. Padding slots are hidden by the attention mask, and
a row's attention starts at its own first visible slot (`Runs` here, and the compiled step's
ranges), so that a padded row computes the same bits as it does alone.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .packed import HugePagePool
from .quant import is_quantized


def kv_dtype(model: nn.Module) -> torch.dtype:
    """The element type of `model`'s KV cache, the one rule every maker of a cache follows.

    float16 for quantized weights computing in float32 (llama.cpp's default cache type): a float32
    cache would be a fifth of a four-row step's memory traffic at 100 slots and most of it in a
    long chat (SmolLM-135M: 46 KB per token and row, 90 MB of q8_0 weights). Otherwise the dtype
    the model computes in (its parameters'): float32 and bfloat16 models keep their caches, and so
    does a quantized one computing in 16 bits (bfloat16 on a GPU): its cache is half the size
    already, and float16 would only add a conversion of every slot each step.
    """
    quantized = getattr(model, "quantized", None)  # PackedLlama says; a plain model has QLinear modules
    if quantized is None:
        quantized = is_quantized(model)
    compute = next(model.parameters()).dtype
    return torch.float16 if quantized and compute == torch.float32 else compute


# The CPU caches' buffers: kept and handed out again (packed.HugePagePool), so that a new cache
# (every generate call, rows leaving a batch, a request joining one) does not fault its pages in.
# Two free ones at most: a long context's four-row cache can be hundreds of MB.
_BUFFERS = HugePagePool(keep=2)


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed cache buffer; on the CPU in huge pages where the OS has them, from _BUFFERS: a long
    context's decode step streams the whole cache, as it streams the weights."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    return _BUFFERS.zeros(math.prod(shape), dtype).view(shape)


class KVCache(nn.Module):
    """Keys and values of every layer in one buffer (n_layers, B, 2 H_kv, max_len, hd).

    A layer's keys are heads 0..H_kv-1 of its slice and its values heads H_kv..2 H_kv-1, so a
    model that computes keys and values side by side (PackedLlama) writes `kv[layer]` with one
    copy; `update` serves models that compute them apart.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        super().__init__()
        shape, device = (n_layers, batch, 2 * n_kv_heads, max_len, head_dim), torch.device(device)
        need = math.prod(shape) * dtype.itemsize
        free = free_memory(device)
        if free is not None and need > free and device.type == "cpu":
            _BUFFERS.drop_free()  # earlier caches' kept pages count as used
            free = free_memory(device)
        if free is not None and need > free:
            # Checked before allocating: a context of 10^9 positions must fail at once, not after
            # swapping the machine to a halt.
            raise InputError(
                f"the KV cache for {batch} row(s) of {max_len} tokens needs {need / 2**30:.1f} GiB but "
                f"{free / 2**30:.1f} GiB are free; lower max_new_tokens (--max-new-tokens) or the "
                "number of rows (--n)"
            )
        # persistent=False: a cache is scratch space, never part of a checkpoint.
        self.kv: torch.Tensor  # (n_layers, B, 2 H_kv, max_len, hd): the buffer registered here
        self.register_buffer("kv", _zeros(shape, dtype, device), persistent=False)
        self.n_kv_heads, self.max_len = n_kv_heads, max_len
        # Rows prefilled from one prompt hold the same bits in slots 0..shared_len-1; same_row (B,)
        # int32 names, for each row, the first row holding them (itself if none before it does), and
        # the compiled step reads that row's copy there, once for all of them (share_prompt).
        self.same_row: torch.Tensor | None = None
        self.shared_len = 0

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H_kv, T, hd) at positions start..start+T; return slots 0..start+T: views,
        or copies in k's dtype where the cache holds another (a float16 cache of a float32 model)."""
        end = start + k.shape[2]
        assert end <= self.max_len, f"KV cache overflow: {end} > {self.max_len}"
        kv, h = self.kv[layer], self.n_kv_heads  # (B, 2 H_kv, max_len, hd)
        kv[:, :h, start:end] = k  # rounded to the cache's dtype (nearest even)
        kv[:, h:, start:end] = v
        return kv[:, :h, :end].to(k.dtype), kv[:, h:, :end].to(v.dtype)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished rows leave the batch so they cost nothing)."""
        kv = self.kv
        self.kv = torch.index_select(
            kv, 1, rows, out=_zeros((kv.shape[0], len(rows), *kv.shape[2:]), kv.dtype, kv.device)
        )
        if self.same_row is not None:
            self.share_prompt(self.same_row[rows.to(self.same_row.device)].tolist(), self.shared_len)

    def grow(self, max_len: int, filled: int) -> None:
        """Make room for max_len slots, keeping slots 0..filled-1 (and which rows share them): a
        server's batch reserves its answers' slots as they grow (batcher.py), not max_new at once."""
        L, B, H2, _, hd = self.kv.shape
        bigger = KVCache(L, B, H2 // 2, max_len, hd, self.kv.dtype, self.kv.device)  # checks the memory
        bigger.kv[:, :, :, :filled] = self.kv[:, :, :, :filled]
        self.kv, self.max_len = bigger.kv, max_len

    def share_prompt(self, groups: list[int], length: int) -> None:
        """Rows of one group (an int per row) hold the same keys and values in slots 0..length-1."""
        first: dict[int, int] = {}
        same = [first.setdefault(g, b) for b, g in enumerate(groups)]
        if len(first) == len(groups) or length == 0:  # nothing shared
            self.same_row, self.shared_len = None, 0
        else:
            self.same_row, self.shared_len = torch.tensor(same, dtype=torch.int32), length


def build_mask(
    pad: torch.Tensor, q_start: int, q_len: int, kv_len: int, window: int | None = None, padded: bool | None = None
) -> torch.Tensor | None:
    """Boolean attention mask (B, 1, q_len, kv_len): True where a query may attend a key.

    pad: (B,) left-padding per row. Queries sit at slots q_start..q_start+q_len. A key is
    visible if it is not padding, not in the future and (with a sliding window) not too old.
    Returns None when plain causal attention is exact (no padding, no window in reach, and the
    queries start at slot 0 or are one: torch's is_causal aligns a block of queries with the first
    keys, which is wrong for a block prefilled after cached slots). padded: whether any row of pad
    is padded, where the caller knows (a decode step asks every token; the check is a host sync).
    """
    if padded is None:
        padded = bool(pad.any())
    if not padded and (window is None or kv_len <= window) and (q_start == 0 or q_len == 1):
        return None
    q = torch.arange(q_start, q_start + q_len, device=pad.device)[:, None]  # (q_len, 1)
    k = torch.arange(kv_len, device=pad.device)[None, :]  # (1, kv_len)
    allowed = (k <= q)[None] & (k[None] >= pad[:, None, None])  # (B, q_len, kv_len)
    if window is not None:
        allowed &= (q - k < window)[None]
    # A padding query sees no key at all; let it see itself so softmax stays finite (its output is unused).
    allowed |= (k == q)[None]
    return allowed[:, None]


@dataclass(frozen=True)
class Runs:
    """A one-query step's mask on the CPU as the run of slots each row sees: row b sees slots
    firsts[b]..S-1, and attends to them on its own (`attend_runs`).

    A row's padding and a sliding window only ever hide its oldest slots, so what a decode step's
    query sees is one run of slots. Attention over that run alone computes exactly what the row
    computes when it runs alone. Over a left-padded row's whole cache, masked, the kernels would
    split its slots into vector lanes and blocks by their distance from slot 0, and add them in
    another order (float32 ~4e-6 nats, bfloat16 ~0.04 in log-probs); and torch's CPU attention of
    one query rounds differently for one row than for several (~1e-7), so even rows without
    padding need a call each. On other devices the matrix products round by batch size anyway, and
    a call per row would cost a launch each: there the mask stays a mask.
    """

    firsts: tuple[int, ...]  # (B,) each row's first visible slot


def visible_runs(mask: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor | Runs | None:
    """A forward's mask (B or 1, 1, T, S) bool (build_mask) or None, for its tokens (B, T) -> the
    same, or for a one-query step on the CPU its Runs (one host sync; none without a mask). A model's
    forward calls this once, and its layers attend through `attend_runs`."""
    B, T = tokens.shape
    if T != 1 or tokens.device.type != "cpu" or (mask is None and B == 1):
        return mask
    if mask is None:
        return Runs((0,) * B)
    firsts = mask[:, 0, 0].to(torch.uint8).argmax(-1).expand(B)  # (B,) each row's first True
    return Runs(tuple(firsts.tolist()))


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float | None = None
) -> torch.Tensor:
    """Softmax attention of every model here: q (B, H, T, hd); k, v (B, H_kv, S, hd), H a multiple of
    H_kv (grouped queries); mask (B, 1, T, S) bool, or None: causal over the whole sequence (training,
    or one unpadded row); scale None: 1/sqrt(hd) -> (B, H, T, hd)."""
    causal = mask is None and q.shape[2] > 1
    gqa = k.shape[1] != q.shape[1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=gqa)


def attend_runs(
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | Runs | None,
) -> torch.Tensor:
    """attend(q, k, v, mask) -> (B, H, T, hd) for q (B, H, T, hd), k, v (B, H_kv, S, hd); a Runs
    mask is one unmasked call per row over its own slots, as that row makes alone."""
    if not isinstance(mask, Runs):
        return attend(q, k, v, mask)
    y = q.new_empty(*q.shape[:-1], v.shape[-1])
    for b, first in enumerate(mask.firsts):
        y[b : b + 1] = attend(q[b : b + 1], k[b : b + 1, :, first:], v[b : b + 1, :, first:], None)
    return y


def free_memory(device: torch.device) -> int | None:
    """Bytes that a new tensor on `device` can take without swapping; None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
