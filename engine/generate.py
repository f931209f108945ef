"""Autoregressive generation: prefill, then one-token decode steps, yielding token events.

A batch holds one row per prompt; each row has its own SamplingParams (so several presets run
side by side in one forward pass), its own seeded generator and its own stopping rules. Rows
are left-padded to a common length so that all rows write the KV cache at the same slot; each
row's positions start at 0 at its first real token, and the mask hides the padding. A finished
row leaves the batch, so the others do not pay for it.

The path of one step (see SAMPLER_CHAIN in sampling.py for the processing order):
    logits (B, V) -> raw log-probs (for the events) -> BatchSampler.process (penalties,
    temperature, top-k, top-p, min-p) -> probs (B, V) -> per-row draw -> TokenEvent per row.

Non-finite logits (NaN or inf weights, a float16 overflow, a bad rope config) make that row's
log-probs NaN; the sampler still returns an index in range, and the row ends with finish_reason
"error" and a one-line message (naming the first weight tensor that is not finite, if any) while
the other rows go on. The check reads the chosen token's log-prob, which is fetched anyway.

A row that stops because the context is full ends with "context", not "length" (the preset's
max_new_tokens). With a PromptCache (context.py), one row reuses the keys and values of the
conversation's earlier turns and prefills only what is new.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from .config import ModelConfig
from .context import PromptCache
from .errors import InputError
from .events import Candidate, Event, Finished, Timing, TokenEvent, Usage
from .kv_cache import KVCache, build_mask
from .sampling import BatchSampler, SamplingParams
from .tokenizer import IncrementalDecoder, Tokenizer


@dataclass
class _Row:
    """Book-keeping for one row of the batch (Python side; tensors live in the batch)."""

    index: int  # position in the caller's request
    prompt_len: int
    params: SamplingParams
    max_new: int  # max_new_tokens, clipped to the context
    decoder: IncrementalDecoder
    ids: list[int] = field(default_factory=list)
    text: str = ""
    first_token_at: float = 0.0


def generate(
    model: nn.Module,
    cfg: ModelConfig,
    tokenizer: Tokenizer,
    prompts: Sequence[Sequence[int]],
    params: Sequence[SamplingParams],
    *,
    top_logprobs: int = 0,
    cancel: threading.Event | None = None,
    text_of=None,
    prompt_cache: PromptCache | None = None,
) -> Iterator[Event]:
    """Generate a continuation for every prompt; yields TokenEvents as they come, one Finished per row.

    prompts: token ids per row (already templated). params: one SamplingParams per row, with its
    seed set. top_logprobs: how many candidates each TokenEvent carries (0 = none). cancel: set it
    from another thread to stop all rows after the current token ("cancelled"). text_of: optional
    id -> readable text function for candidates (defaults to tokenizer.token_text). prompt_cache:
    for one row, the conversation's cache: the prompt's cached prefix is not read again, and the
    cache holds the prompt and the answer afterwards.
    """
    if len(prompts) != len(params):
        raise InputError(f"{len(prompts)} prompts but {len(params)} parameter sets; give one per prompt")
    if not prompts:
        return
    if prompt_cache is not None and len(prompts) != 1:
        raise InputError(f"a prompt cache serves one row, not {len(prompts)}")
    device = next(model.parameters()).device
    ctx = cfg.max_seq_len
    rows: list[_Row] = []
    for i, (ids, p) in enumerate(zip(prompts, params, strict=True)):
        if len(ids) == 0:
            raise InputError("empty prompt: the model has no BOS token to start from; give some text")
        if len(ids) >= ctx:
            raise InputError(
                f"prompt is {len(ids)} tokens but the model's context is {ctx}; shorten it to at most {ctx - 1} tokens"
            )
        assert p.seed is not None, "the caller draws a seed for rows that have none"
        rows.append(_Row(i, len(ids), p, min(p.max_new_tokens, ctx - len(ids)), IncrementalDecoder(tokenizer, ids)))
    text_of = text_of or tokenizer.token_text
    eos = torch.tensor(sorted(tokenizer.eos_ids), dtype=torch.long)
    B, P = len(rows), max(r.prompt_len for r in rows)
    total = P + max(r.max_new for r in rows)

    with torch.inference_mode():
        tokens = torch.zeros(B, P, dtype=torch.long)
        for b, ids in enumerate(prompts):
            tokens[b, P - len(ids) :] = torch.as_tensor(list(ids), dtype=torch.long)
        pad = torch.tensor([P - r.prompt_len for r in rows], device=device)  # (B,)
        positions = (torch.arange(P, device=device)[None] - pad[:, None]).clamp(min=0)  # (B, P)
        dtype = next(model.parameters()).dtype
        cache = KVCache(cfg.n_layers, B, cfg.n_kv_heads, total, cfg.head_dim, dtype, device)
        sampler = BatchSampler([r.params for r in rows], cfg.vocab_size, device, prompts)
        # Rows with the same prompt (presets side by side) share one prefill: the distinct prompts
        # run into a prompt-sized cache, whose rows then go to every row that has that prompt.
        firsts: dict[tuple[int, ...], int] = {}
        for b, ids in enumerate(prompts):
            firsts.setdefault(tuple(ids), b)
        t0 = time.perf_counter()
        if prompt_cache is not None:
            cache, logits = _prefill_cached(model, cfg, prompt_cache, prompts[0], total)
        elif len(firsts) == B:
            mask = build_mask(pad, 0, P, P, cfg.sliding_window)
            logits = model(tokens.to(device), positions, mask, cache, 0, last_only=True)[:, -1]  # (B, V)
        else:
            unique = torch.tensor(list(firsts.values()), device=device)  # (U,) one row per prompt
            shared = KVCache(cfg.n_layers, len(firsts), cfg.n_kv_heads, P, cfg.head_dim, dtype, device)
            mask = build_mask(pad[unique], 0, P, P, cfg.sliding_window)
            logits = model(tokens.to(device)[unique], positions[unique], mask, shared, 0, last_only=True)[:, -1]
            index = {ids: u for u, ids in enumerate(firsts)}
            which = torch.tensor([index[tuple(ids)] for ids in prompts], device=device)  # (B,)
            cache.kv[:, :, :, :P] = shared.kv.index_select(1, which)  # (n_layers, B, 2 H_kv, P, hd)
            logits = logits[which]  # (U, V) -> (B, V)
    slot = P  # next cache slot to write
    t_prefill = 0.0
    why_nonfinite: str | None = None  # worked out once, when a row first has non-finite logits

    while rows:
        if cancel is not None and cancel.is_set():
            # Cancelled between tokens: every row keeps exactly what it had streamed.
            t_prefill = t_prefill or time.perf_counter() - t0
            for r in rows:
                r.text += r.decoder.flush()
                yield _finished(r, "cancelled", t_prefill, time.perf_counter() - t0 - t_prefill)
            return
        with torch.inference_mode():
            logits = logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)  # (B, V), the model's own distribution
            probs = sampler.process(logits)  # (B, V), the sampling distribution
            chosen = sampler.sample(probs)  # (B,)
            sampler.update(chosen)
            chosen_lp = logprobs.gather(1, chosen[:, None])[:, 0]
            chosen_ps = probs.gather(1, chosen[:, None])[:, 0]
            # (B,) nats: -sum p log p as one dot product per row (3x faster than special.entr on a
            # 49k vocabulary); model logits are finite, so no 0 * -inf terms arise (a row whose
            # logits are not has a NaN chosen_lp and ends below).
            entropy = -torch.linalg.vecdot(logprobs.exp(), logprobs)
            stats = torch.stack([chosen.float(), chosen_lp, chosen_ps, entropy], 1).cpu().tolist()
            if top_logprobs:
                top_lp, top_id = logprobs.topk(min(top_logprobs, logprobs.shape[-1]), dim=-1)  # (B, K)
                top_ps = probs.gather(1, top_id)
                top = list(zip(top_id.cpu().tolist(), top_lp.cpu().tolist(), top_ps.cpu().tolist(), strict=True))
            is_eos = torch.isin(chosen.cpu(), eos).tolist()
        now = time.perf_counter()
        if not t_prefill:
            t_prefill = now - t0
        keep: list[int] = []
        for b, r in enumerate(rows):
            if not math.isfinite(stats[b][1]):
                # Non-finite logits: every log-prob of the row is NaN. Drop the token, end the row.
                why_nonfinite = why_nonfinite or _nonfinite_reason(model)
                r.text += r.decoder.flush()
                if prompt_cache is not None:
                    # Its slots may now hold NaN: masked attention weighs stale slots by 0, and 0 * NaN
                    # is NaN, so the next prompt would fail too. Read the next one from scratch.
                    prompt_cache.reset()
                yield _finished(
                    r,
                    "error",
                    t_prefill,
                    time.perf_counter() - t0 - t_prefill,
                    f"the model's logits are not finite (NaN or inf) at answer token {len(r.ids) + 1}; {why_nonfinite}",
                )
                continue
            tok = int(stats[b][0])
            r.ids.append(tok)
            piece = "" if is_eos[b] else r.decoder.push(tok)
            cands: tuple[Candidate, ...] = ()
            if top_logprobs:
                ids_b, lps_b, ps_b = top[b]
                cands = tuple(Candidate(i, text_of(i), lp, ps) for i, lp, ps in zip(ids_b, lps_b, ps_b, strict=True))
            yield TokenEvent(r.index, len(r.ids) - 1, tok, piece, stats[b][1], stats[b][2], stats[b][3], cands)
            r.text += piece
            reason = None
            if is_eos[b]:
                reason = "eos"
            elif r.params.stop and (cut := _find_stop(r.text, piece, r.params.stop)) is not None:
                r.text, reason = r.text[:cut], "stop"
            elif len(r.ids) >= r.max_new:
                reason = "length" if r.max_new == r.params.max_new_tokens else "context"
            if reason is None:
                keep.append(b)
                continue
            if reason in ("length", "context"):
                r.text += r.decoder.flush()
            yield _finished(r, reason, t_prefill, time.perf_counter() - t0 - t_prefill)
        if len(keep) < len(rows):
            if not keep:
                return
            rows = [rows[b] for b in keep]
            sel = torch.tensor(keep, device=device)
            cache.select(sel)
            pad, chosen = pad[sel], chosen[sel.to(chosen.device)]
            sampler = sampler.select(keep)
        with torch.inference_mode():
            # One decode step: the chosen tokens go in at cache slot `slot`.
            positions = (slot - pad)[:, None]  # (B, 1)
            mask = build_mask(pad, slot, 1, slot + 1, cfg.sliding_window)
            logits = model(chosen[:, None].to(device), positions, mask, cache, slot)[:, -1]
            if prompt_cache is not None:
                prompt_cache.ids.append(int(chosen[0]))  # slot `slot` now holds it
        slot += 1


def _prefill_cached(
    model: nn.Module, cfg: ModelConfig, pc: PromptCache, ids: Sequence[int], total: int
) -> tuple[KVCache, torch.Tensor]:
    """One row's prefill into its PromptCache, from the end of the prefix already cached ->
    (cache, logits (1, V) of the last prompt token)."""
    cache, start = pc.prepare(model, cfg, ids, total)
    device = cache.kv.device
    tokens = torch.as_tensor(list(ids[start:]), dtype=torch.long, device=device)[None]  # (1, T)
    positions = torch.arange(start, len(ids), device=device)[None]  # (1, T)
    mask = build_mask(
        torch.zeros(1, dtype=torch.long, device=device), start, len(ids) - start, len(ids), cfg.sliding_window
    )
    logits = model(tokens, positions, mask, cache, start, last_only=True)[:, -1]
    pc.ids = list(ids)
    return cache, logits


def _find_stop(text: str, piece: str, stops: Sequence[str]) -> int | None:
    """Index in `text` where the earliest stop string starts, if the new piece completed one."""
    longest = max(len(s) for s in stops)
    tail_from = max(0, len(text) - len(piece) - longest + 1)
    hits = [i for s in stops if s and (i := text.find(s, tail_from)) >= 0]
    return min(hits) if hits else None


def _finished(r: _Row, reason: str, prefill_s: float, decode_s: float, message: str = "") -> Finished:
    n = len(r.ids)
    rate = (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0
    return Finished(
        r.index, r.text, reason, Usage(r.prompt_len, n), Timing(prefill_s, decode_s, rate), tuple(r.ids), message
    )


def _nonfinite_reason(model: nn.Module) -> str:
    """Why logits went non-finite: the first weight (in layer order) holding NaN or inf, else the
    likely causes. One pass over the weights, only when a row has failed."""
    with torch.inference_mode():
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                kind = "NaN" if bool(torch.isnan(t).any()) else "infinite"
                return f"weight {name} holds {kind} values; re-download or re-convert the checkpoint"
    return (
        "the weights are finite, so an activation overflowed (common in float16: try --dtype float32) "
        "or a config value such as rope_theta or rope_scaling is wrong"
    )
