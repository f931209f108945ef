"""Sampling: turn one step of model logits into the next token, per row of a batch.

The chain runs in a fixed, documented order (`SAMPLER_CHAIN`), the same order transformers uses:

    penalties -> temperature -> top_k -> top_p -> min_p -> sample

* penalties: the repetition penalty (transformers semantics, over prompt + generated tokens: a
  seen token's logit is divided by the penalty when positive and multiplied when negative), then
  the presence and frequency penalties (OpenAI semantics, over generated tokens only:
  ``logit -= presence * (count > 0) + frequency * count``).
* temperature 0 means greedy: the row's probabilities are a one-hot on the argmax of the
  penalised logits, and drawing from it consumes no randomness.
* every filter keeps at least one token, keeps all tokens tied with the last kept one, and sets
  the logits it removes to -inf, so filtered tokens get probability exactly 0.

`BatchSampler` holds the per-row settings of one batch as tensors and applies the pure functions
of sampling_stages.py to all rows at once; a stage no row uses is skipped. Each row draws from its
own generator (`Uniforms`: every bit of the seed counts), so a row's tokens depend only on its
seed and its logits, never on which other rows share the batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import native
from .params import SAMPLER_CHAIN, ParamRange, SamplingParams
from .sampling_stages import _inverse_cdf, _top_k_top_p, apply_penalties, apply_temperature, min_p_filter

__all__ = ["SAMPLER_CHAIN", "ParamRange", "SamplingParams", "BatchSampler"]  # params re-exported here


@dataclass
class Draw:
    """One step's token per row of a batch, and what it weighed (BatchSampler.draw), as lists:
    generate reads them once per token."""

    tokens: Tensor  # (B,) int64 on the logits' device
    stats: list[list[float]]  # per row: token, log-prob under the model, probability under sampling, entropy (nats)
    top: (
        list[tuple[list[int], list[float], list[float]]] | None
    )  # per row: the N likeliest ids, log-probs, sampling probs


class Uniforms:
    """A row's float64 uniforms in [0, 1) from its own seeded generator, drawn BLOCK at a time: the
    same numbers in the same order as one torch.rand per draw (the CPU generator fills a tensor in
    order; test_sampling checks it), for two torch calls per BLOCK tokens instead of two per token.

    torch's CPU generator (a Mersenne Twister) keeps only the low 32 bits of its seed, so seeds 0,
    2**32 and 2**63 would draw alike. Seeds below 2**32 keep it (their answers stay what they were);
    the larger ones of SamplingParams' range draw from Python's Mersenne Twister, seeded with every bit."""

    BLOCK = 64

    def __init__(self, seed: int) -> None:
        low = seed < 2**32
        self.generator = torch.Generator().manual_seed(seed) if low else None
        self._wide = None if low else random.Random(seed)  # 53-bit floats, as torch.rand's float64
        self._left: list[float] = []  # the block's undrawn numbers, the next one last

    def next(self) -> float:
        if self._wide is not None:
            return self._wide.random()
        if not self._left:
            self._left = torch.rand(self.BLOCK, generator=self.generator, dtype=torch.float64).tolist()[::-1]
        return self._left.pop()


class BatchSampler:
    """Per-row sampling settings and penalty state for one batch, reused every decode step.

    Per step: ``d = s.draw(logits, n)``, which on CPU is the compiled sampler (csrc/sample.h: the
    same rules without the (B, V) tensors in between) where it is built, and otherwise
    ``probs = s.process(logits); ids = s.sample(probs); s.update(ids)`` and the stats from them.
    Draws use one CPU generator per row (Uniforms), seeded with that row's seed: each draw takes one
    float64 uniform from the row's generator and inverts the row's cumulative distribution (on the
    logits' device), so no probabilities leave the device and a row's draws never depend on the
    other rows. Greedy rows take the argmax and leave their generator untouched.
    """

    def __init__(
        self,
        params: Sequence[SamplingParams],
        vocab_size: int,
        device: torch.device,
        prompt_ids: Sequence[Sequence[int]],
    ) -> None:
        if len(params) == 0 or len(params) != len(prompt_ids):
            raise ValueError(
                f"need one prompt per row and at least one row, got {len(params)} params and {len(prompt_ids)} prompts"
            )
        seeds: list[int] = []
        for row, p in enumerate(params):
            p.validate()
            if p.seed is None:
                raise ValueError(f"row {row} has no seed; draw one before building the sampler")
            seeds.append(p.seed)
        self.params: tuple[SamplingParams, ...] = tuple(params)
        self.vocab_size = vocab_size
        self.device = torch.device(device)
        V = vocab_size

        def column(values: Sequence[float], dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=self.device).reshape(-1, 1)

        self.temperature = column([p.temperature for p in params])  # (B, 1)
        # k >= V keeps everything, the same as off; storing 0 keeps max_k meaningful.
        self.top_k = column([p.top_k if p.top_k < V else 0 for p in params], torch.long)  # (B, 1)
        self.top_p = column([p.top_p for p in params])  # (B, 1)
        self.min_p = column([p.min_p for p in params])  # (B, 1)
        self.repetition = column([p.repetition_penalty for p in params])  # (B, 1)
        self.presence = column([p.presence_penalty for p in params])  # (B, 1)
        self.frequency = column([p.frequency_penalty for p in params])  # (B, 1)
        self.uniforms = [Uniforms(seed) for seed in seeds]

        # Penalty state exists only when some row uses it: (B, V) each.
        self.seen: Tensor | None = None  # prompt + generated tokens, for the repetition penalty
        self.counts: Tensor | None = None  # generated-token counts, for presence/frequency
        if any(p.repetition_penalty != 1 for p in params):
            self.seen = torch.zeros((len(params), V), dtype=torch.bool, device=self.device)
            rows = [r for r, ids in enumerate(prompt_ids) for _ in ids]
            cols = [int(t) for ids in prompt_ids for t in ids]
            if cols:
                r = torch.tensor(rows, dtype=torch.long, device=self.device)
                c = torch.tensor(cols, dtype=torch.long, device=self.device)
                inside = (c >= 0) & (c < V)  # ids the model cannot emit carry no penalty
                self.seen[r[inside], c[inside]] = True
        if any(p.presence_penalty != 0 or p.frequency_penalty != 0 for p in params):
            self.counts = torch.zeros((len(params), V), dtype=torch.float32, device=self.device)
        self._plan()

    def _plan(self) -> None:
        """Decide once which stages run, from the rows' settings (Python values, no syncs)."""
        ps, V = self.params, self.vocab_size
        self._greedy = [p.greedy for p in ps]
        self._greedy_mask = torch.tensor(self._greedy, device=self.device).unsqueeze(1)  # (B, 1)
        self._any_greedy = any(self._greedy)
        self._all_greedy = all(self._greedy)
        self._use_temperature = any(p.temperature not in (0.0, 1.0) for p in ps)
        k_on = [0 < p.top_k < V for p in ps]
        self._max_k = max((p.top_k for p, on in zip(ps, k_on, strict=True) if on), default=0)
        self._use_top_p = any(p.top_p < 1 for p in ps)
        self._use_min_p = any(p.min_p > 0 for p in ps)
        # The compiled sampler's per-row settings, (B,) contiguous each, in _COLUMNS' order.
        self._flat = tuple(getattr(self, name)[:, 0].contiguous() for name in _COLUMNS)
        # Top-p after top-k only looks at the top-k survivors, so when every top-p row also has a
        # top-k, a partial topk(max_k) is enough; otherwise let top-p size its own head.
        self._use_top_k = self._max_k > 0
        if self._use_top_p and not all(on for p, on in zip(ps, k_on, strict=True) if p.top_p < 1):
            self._head: int | None = None
        else:
            self._head = self._max_k

    def __len__(self) -> int:
        return len(self.params)

    def process(self, logits: Tensor) -> Tensor:
        """(B, V) raw logits, any float dtype -> (B, V) float32 sampling probabilities."""
        x = logits.float()  # (B, V); every op below is out of place, so logits stay untouched
        if self.seen is not None or self.counts is not None:
            x = apply_penalties(x, self.seen, self.counts, self.repetition, self.presence, self.frequency)
        greedy_ids = x.argmax(dim=-1, keepdim=True) if self._any_greedy else None  # (B, 1)
        if self._all_greedy:
            assert greedy_ids is not None
            return torch.zeros_like(x).scatter_(1, greedy_ids, 1.0)
        if self._use_temperature:
            x = apply_temperature(x, self.temperature)
        if self._use_top_k or self._use_top_p:
            k = self.top_k if self._use_top_k else None
            p = self.top_p if self._use_top_p else None
            x = _top_k_top_p(x, k, p, self._head, self._max_k)
        if self._use_min_p:
            x = min_p_filter(x, self.min_p)
        probs = x.softmax(dim=-1)  # (B, V) float32, exactly 0 where x = -inf
        if greedy_ids is not None:
            one_hot = torch.zeros_like(probs).scatter_(1, greedy_ids, 1.0)
            probs = torch.where(self._greedy_mask, one_hot, probs)
        return probs

    def draw(self, logits: Tensor, top_logprobs: int = 0) -> Draw:
        """(B, V) raw logits -> each row's token, with its log-prob under the model's own
        distribution, its probability under the sampling distribution and the model's entropy,
        and the top_logprobs likeliest tokens (by the model) with theirs. The tokens are recorded
        in the penalty state (as update), so the next draw penalises them."""
        x = logits if logits.dtype == torch.float32 else logits.float()
        n = min(top_logprobs, x.shape[-1])
        lib = native.library() if x.device.type == "cpu" else None
        if lib is None:
            return self._draw_torch(x, n)
        u = [self._uniform(r) for r in range(len(self))]
        # The penalties are applied inside (as apply_penalties does): a (B, V) torch chain here
        # cost 1.2 ms a step at 4 rows of 49k, four times the draw itself.
        x = x if x.is_contiguous() else x.contiguous()
        ids, vals = native.sample(lib, x, self._flat, u, self.seen, self.counts, n)  # records too
        rows = list(zip(ids.tolist(), vals.tolist(), strict=True))  # (1 + n) ints, (3 + 2 n) floats a row
        stats = [[i[0], *v[:3]] for i, v in rows]
        top = [(i[1:], v[3 : 3 + n], v[3 + n :]) for i, v in rows] if n else None
        return Draw(torch.from_numpy(ids[:, 0]), stats, top)

    def _draw_torch(self, x: Tensor, n: int) -> Draw:
        """draw() through process() and sample(): any device; the reference the compiled one is held to."""
        logprobs = torch.log_softmax(x, dim=-1)  # (B, V), the model's own distribution
        probs = self.process(x)  # (B, V), the sampling distribution
        tokens = self.sample(probs)  # (B,)
        chosen_lp = logprobs.gather(1, tokens[:, None])[:, 0]
        chosen_ps = probs.gather(1, tokens[:, None])[:, 0]
        # (B,) nats: -sum p log p as one dot product per row (3x faster than special.entr on a
        # 49k vocabulary); a -inf logit (p = 0) counts as the lowest float, so 0 * -inf adds no
        # NaN (a NaN logit still makes one, and generate ends that row).
        entropy = -torch.linalg.vecdot(logprobs.exp(), logprobs.clamp(min=torch.finfo(logprobs.dtype).min))
        per_row = torch.stack([chosen_lp, chosen_ps, entropy], 1).tolist()  # (B, 3)
        stats = [[t, *s] for t, s in zip(tokens.tolist(), per_row, strict=True)]
        top = None
        if n:
            top_lp, top_id = logprobs.topk(n, dim=-1)  # (B, n)
            top = list(zip(top_id.tolist(), top_lp.tolist(), probs.gather(1, top_id).tolist(), strict=True))
        self.update(tokens)
        return Draw(tokens, stats, top)

    def _uniform(self, row: int) -> float:
        """The row's next float64 uniform in [0, 1) from its own generator; greedy rows take none (0)."""
        if self._greedy[row]:
            return 0.0
        return self.uniforms[row].next()

    def sample(self, probs: Tensor, rows: Sequence[int] | None = None) -> Tensor:
        """(B, V) probabilities -> (B,) int64 token ids on probs' device.

        Only `rows` (default: all) are drawn; the others get -1 and their uniform streams are not
        advanced.
        """
        batch = probs.shape[0]
        wanted = range(batch) if rows is None else rows
        greedy_rows = [r for r in wanted if self._greedy[r]]
        random_rows = [r for r in wanted if not self._greedy[r]]
        if len(greedy_rows) == batch:
            return probs.argmax(dim=-1)
        out = torch.full((batch,), -1, dtype=torch.long, device=probs.device)
        if greedy_rows:
            idx = torch.tensor(greedy_rows, device=probs.device)
            out[idx] = probs[idx].argmax(dim=-1)
        if random_rows:
            # The only per-row Python loop: one uniform from each row's own generator.
            u = torch.tensor([self._uniform(r) for r in random_rows], dtype=torch.float64)  # (R,)
            if len(random_rows) == batch:
                out = _inverse_cdf(probs, u)
            else:
                idx = torch.tensor(random_rows, device=probs.device)
                out[idx] = _inverse_cdf(probs[idx], u)
        return out

    def update(self, tokens: Tensor, active: Tensor | None = None) -> None:
        """Record the chosen (B,) tokens in the penalty state; rows where active is False skip."""
        if self.seen is None and self.counts is None:
            return
        t = tokens.to(device=self.device, dtype=torch.long).clamp(min=0).unsqueeze(1)  # (B, 1)
        if active is None:
            on = torch.ones_like(t, dtype=torch.bool)
        else:
            on = active.to(device=self.device, dtype=torch.bool).reshape(-1, 1)  # (B, 1)
        # Scatter with a mask instead of indexing active rows: no host sync on the device.
        if self.seen is not None:
            self.seen.scatter_(1, t, self.seen.gather(1, t) | on)
        if self.counts is not None:
            self.counts.scatter_add_(1, t, on.to(self.counts.dtype))

    def select(self, rows: Sequence[int]) -> BatchSampler:
        """A sampler for only these rows, in this order; their uniform streams and state carry over."""
        rows = list(rows)
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        new = object.__new__(BatchSampler)
        new.params = tuple(self.params[r] for r in rows)
        new.vocab_size = self.vocab_size
        new.device = self.device
        for name in _COLUMNS:
            setattr(new, name, getattr(self, name).index_select(0, idx))
        new.seen = None if self.seen is None else self.seen.index_select(0, idx)
        new.counts = None if self.counts is None else self.counts.index_select(0, idx)
        new.uniforms = [self.uniforms[r] for r in rows]
        new._plan()
        return new

    @staticmethod
    def concat(parts: Sequence[BatchSampler]) -> BatchSampler:
        """One sampler for the rows of all parts, in order (rows joining a running batch); their
        uniform streams and penalty state carry over. A part without a penalty state gets zeros: none of
        its rows uses that penalty, so they do not change its rows' draws."""
        assert parts, "nothing to concatenate"
        new = object.__new__(BatchSampler)
        new.params = tuple(p for part in parts for p in part.params)
        new.vocab_size, new.device = parts[0].vocab_size, parts[0].device
        for name in _COLUMNS:
            setattr(new, name, torch.cat([getattr(part, name) for part in parts]))
        for name, dtype in (("seen", torch.bool), ("counts", torch.float32)):
            states = [getattr(part, name) for part in parts]
            if all(s is None for s in states):
                setattr(new, name, None)
                continue
            filled = [
                torch.zeros((len(p), new.vocab_size), dtype=dtype, device=new.device) if s is None else s
                for p, s in zip(parts, states, strict=True)
            ]
            setattr(new, name, torch.cat(filled))
        new.uniforms = [u for part in parts for u in part.uniforms]
        new._plan()
        return new


# The per-row (B, 1) parameter columns of a BatchSampler.
_COLUMNS = ("temperature", "top_k", "top_p", "min_p", "repetition", "presence", "frequency")


__all__ = [
    "SAMPLER_CHAIN",
    "BatchSampler",
    "Draw",
    "ParamRange",
    "SamplingParams",
]
