"""The sampler's pure stages: functions on (B, V) logits (penalties, temperature, top-k, top-p,
min-p) and on (B, V) probabilities (the inverse-CDF draw), with per-row parameters.

Kept apart from sampling.py so the math reads on its own, without the batch book-keeping that calls
it: `BatchSampler` (sampling.py) holds each row's settings, penalty state and generator, and applies
these functions in SAMPLER_CHAIN's order; its docstring gives the chain's rules (the penalties'
semantics, greedy at temperature 0, what every filter keeps).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_NEG_INF = float("-inf")
_INF = torch.tensor(float("inf"))  # 0-dim: broadcasts in _drop_below


# ---------------------------------------------------------------------------------------------
# Pure stages. Each takes (B, V) float logits and per-row parameters, given as a (B,) or (B, 1)
# tensor or as one number for every row, and returns new (B, V) logits; inputs are not modified.


def _column(x: Tensor | float, like: Tensor) -> Tensor:
    """Per-row parameter as a (B, 1) tensor on like's device (a number applies to every row)."""
    if isinstance(x, Tensor):
        return x.to(device=like.device).reshape(-1, 1)
    return torch.full((like.shape[0], 1), x, device=like.device)


def apply_penalties(
    logits: Tensor,
    seen: Tensor | None,
    counts: Tensor | None,
    repetition: Tensor | float,
    presence: Tensor | float,
    frequency: Tensor | float,
) -> Tensor:
    """Repetition penalty on `seen` (B, V) bool, then presence/frequency on `counts` (B, V).

    Either state may be None to skip that penalty. A penalty of 1 (repetition) or 0 (presence,
    frequency) leaves its row bit-for-bit unchanged.
    """
    out = logits
    if seen is not None:
        rep = _column(repetition, logits).to(logits.dtype)  # (B, 1)
        penalised = torch.where(out < 0, out * rep, out / rep)  # (B, V)
        out = torch.where(seen, penalised, out)
    if counts is not None:
        counts = counts.to(logits.dtype)
        pres = _column(presence, logits).to(logits.dtype)  # (B, 1)
        freq = _column(frequency, logits).to(logits.dtype)  # (B, 1)
        out = out - freq * counts - pres * (counts > 0).to(logits.dtype)
    return out


def apply_temperature(logits: Tensor, temperature: Tensor | float) -> Tensor:
    """logits / T per row; rows with T = 0 are left unchanged (greedy is handled later)."""
    t = _column(temperature, logits).to(logits.dtype)  # (B, 1)
    return logits / torch.where(t > 0, t, torch.ones_like(t))


def _kth_threshold(head: Tensor, k: Tensor) -> Tensor:
    """(B, 1) value of each row's k-th largest logit, -inf where k = 0 (off).

    head: (B, n) the n largest logits per row, descending, with n >= every k that is on.
    k: (B, 1) int; k >= n keeps the whole head.
    """
    idx = k.clamp(1, head.shape[1]) - 1  # (B, 1)
    kth = head.gather(1, idx)  # (B, 1)
    return torch.where(k > 0, kth, torch.full_like(kth, _NEG_INF))


def _top_p_threshold(head: Tensor, lse: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 1) value of the last token top-p keeps (-inf where p >= 1, off), and (B, 1) bool:
    whether that answer is final for the row, i.e. the head was long enough.

    head: (B, n) the largest logits, descending; lse: (B, 1) logsumexp of the whole row, so
    probabilities are normalised over the full vocabulary even when head is truncated.
    A token is kept while the mass of the tokens above it is below p: the token that crosses p is
    kept, the one after it is not. That is transformers' rule (it removes, in ascending order,
    tokens whose cumulative mass is <= 1 - p).
    """
    probs = (head - lse).exp()  # (B, n)
    # float64 running mass, so a long row adds no rounding of its own (MPS has no float64).
    cum = probs.cumsum(dim=-1, dtype=torch.float32 if head.device.type == "mps" else torch.float64)
    # [0.5, 0.3] sums to a hair under 0.8 in float32 and must stop there, as transformers and
    # llama.cpp do (tests/test_peer_cases.py): hence the slack.
    reached = p.to(cum.dtype) - _TOP_P_SLACK  # (B, 1)
    n_keep = (cum < reached).sum(dim=-1, keepdim=True) + 1  # (B, 1): tokens before the crossing, +1
    cut = head.gather(1, n_keep.clamp(max=head.shape[1]) - 1)  # (B, 1)
    off = p >= 1
    # Final when p is reached inside the head, or when the head already ends in filtered tokens
    # (everything still kept is in it).
    complete = off | (cum[:, -1:] >= reached) | (head[:, -1:] == _NEG_INF)
    return torch.where(off, torch.full_like(cut, _NEG_INF), cut), complete


# Running masses within float32's epsilon of p (1.2e-7) count as having reached it: probabilities
# computed in float32 are only that exact, and a smaller mass never changes what is sampled.
_TOP_P_SLACK = torch.finfo(torch.float32).eps

# On CPU p is almost always reached within the first few hundred tokens, so top-p looks at a
# partial head (topk(256): tens of microseconds) first and sorts the whole row only for the rows
# that need more (flat distributions). On accelerators the full sort is cheap and checking would
# force a host sync every step, so top-p sorts once.
_CPU_TOP_P_HEAD = 256


def _sort_descending(x: Tensor) -> Tensor:
    """(B, V) values sorted descending per row.

    On CPU numpy's vectorised sort is ~30x faster than torch.sort here (0.09 vs 3 ms for a
    49k vocabulary row); only the values are needed, not the indices.
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(x.detach().numpy(), axis=-1)[:, ::-1].copy())
    return x.sort(dim=-1, descending=True).values


def _top_k_top_p(
    x: Tensor, k: Tensor | None, p: Tensor | None, head_size: int | None, max_k: int | None = None
) -> Tensor:
    """Top-k then top-p from one descending pass (topk or sort) over the logits.

    x: (B, V); k: (B, 1) long, 0 = off; p: (B, 1) float, >= 1 = off; either may be None.
    head_size: how many of the largest logits to look at first on CPU (the largest k, when every
    top-p row also has a top-k), or None for a small default. max_k: the largest k, if the caller
    knows it (reading it from k is a host sync on accelerators).
    """
    V = x.shape[-1]
    if max_k is None:
        max_k = 0 if k is None else int(k.max())
    max_k = min(max_k, V)
    if p is not None and x.device.type != "cpu":
        n = V
    else:
        n = min(max(_CPU_TOP_P_HEAD if head_size is None else head_size, max_k, 1), V)
    head = x.topk(n, dim=-1).values if n < V else _sort_descending(x)  # (B, n) descending
    y = x
    if max_k and k is not None:  # (max_k > 0 comes with a k)
        kth = _kth_threshold(head, k)  # (B, 1)
        y = _drop_below(x, kth)
        head = _drop_below(head, kth)
    if p is None:
        return y
    lse = _logsumexp(y, head[:, :1])  # (B, 1)
    cut, complete = _top_p_threshold(head, lse, p)
    if n < V:
        # Rows whose mass p lies beyond the head (flat distributions) sort their whole row; y is
        # already top-k filtered, so its sorted row is the complete head.
        rows = (~complete[:, 0]).nonzero()[:, 0]
        if len(rows):
            cut[rows] = _top_p_threshold(_sort_descending(y[rows]), lse[rows], p[rows])[0]
    return _drop_below(y, cut)


def _drop_below(x: Tensor, threshold: Tensor) -> Tensor:
    """x with every value below its row's (B, 1) threshold set to -inf (ties kept).

    Same result as x.masked_fill(x < threshold, -inf), without its per-element branch: on a row
    whose threshold cuts through the middle of its values (a flat distribution) that branch is
    unpredictable, and masked_fill took 150-240 us on 4 x 49k logits against 45 us here.
    min(x, +inf) = x where x - threshold >= 0 (+0 included) and min(x, -inf) = -inf where it is
    negative; a -inf threshold keeps everything, -inf values stay -inf, NaN stays NaN. The
    difference is -0 only for x = -0 at a threshold of +0, a tie: adding +0 makes it +0, kept.
    """
    if x.device.type != "cpu":  # GPU kernels have no such branch
        return x.masked_fill(x < threshold, _NEG_INF)
    return torch.minimum(x, torch.copysign(_INF, (x - threshold) + 0.0))


def _logsumexp(x: Tensor, row_max: Tensor) -> Tensor:
    """(B, 1) log of the sum of exp(x) per row, given each row's (B, 1) maximum (finite).

    log_softmax at the maximum is row_max - logsumexp. On CPU this is several times faster than
    torch.logsumexp or exp().sum() on rows full of -inf, which every filtered row is.
    """
    return row_max - x.log_softmax(dim=-1).amax(dim=-1, keepdim=True)


def top_k_filter(logits: Tensor, k: Tensor | int) -> Tensor:
    """Keep each row's k largest logits and all ties with the k-th; k = 0 is off."""
    k_col = _column(k, logits).long()  # (B, 1)
    max_k = int(k_col.max())
    if max_k == 0:
        return logits
    return _top_k_top_p(logits, k_col, None, head_size=max_k, max_k=max_k)


def top_p_filter(logits: Tensor, p: Tensor | float) -> Tensor:
    """Keep the fewest most likely tokens whose mass reaches p (at least one, plus ties with the
    last one kept); p >= 1 is off."""
    p_col = _column(p, logits).to(logits.dtype)  # (B, 1)
    return _top_k_top_p(logits, None, p_col, head_size=None)


def min_p_filter(logits: Tensor, p: Tensor | float) -> Tensor:
    """Keep tokens with probability >= p * the row's top probability; p = 0 is off."""
    p_col = _column(p, logits).to(logits.dtype)  # (B, 1)
    # prob_i < p * prob_max  <=>  x_i - x_max < log p: softmax's normaliser cancels, so the test
    # runs on the logits (one pass instead of four); p = 0 gives -inf, which keeps everything.
    threshold = logits.amax(dim=-1, keepdim=True) + p_col.log()  # (B, 1); p <= 1 keeps the top token
    return _drop_below(logits, threshold)


def _inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """(B,) index i per row with cum[i-1] <= u * total < cum[i]; u (B,) float64 in [0, 1).

    The cumulative sum is float64 so tokens far down the tail keep their own width; a token with
    probability 0 has zero width and can never be picked.
    """
    work = probs.cpu() if probs.device.type == "mps" else probs  # MPS has no float64
    cum = work.to(torch.float64).cumsum(dim=-1)  # (B, V)
    total = cum[:, -1:]  # (B, 1)
    target = u.to(cum.device).reshape(-1, 1) * total  # (B, 1)
    # u * total may round up to total; the largest value below it still selects the last token
    # with nonzero probability.
    target = torch.minimum(target, torch.nextafter(total, torch.zeros_like(total)))
    idx = torch.searchsorted(cum, target, right=True).squeeze(1)  # (B,)
    # A row of NaN probabilities (non-finite logits) has a NaN target, found past the end: keep it
    # in range, so the caller can look the row up and end it ("error") instead of crashing.
    return idx.clamp_(max=probs.shape[-1] - 1).to(probs.device)


__all__ = ["apply_penalties", "apply_temperature", "min_p_filter", "top_k_filter", "top_p_filter"]
