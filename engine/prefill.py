"""Prefill: the state of a batch of rows, and how their prompts get into its KV cache.

`_Row` and `_Batch` are what a generate call (or the batcher's running batch) steps through.
`_prefill` reads the prompts into a fresh cache (rows with the same prompt share one read) or, for
one row, into its PromptCache (`_prefill_cached`, from the end of the prefix already cached);
`_join` lets rows just prefilled join a running batch (batcher.py); and a long-rope model reads a
row's whole sequence again when it passes the short positions (`_reread_long_rope`).

Kept apart from generate.py, whose loop (draw, events, evict, decode) steps this state one token
at a time: that loop reads without the cache's layout, and batcher.py uses both halves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from .config import ModelConfig
from .context import PromptCache
from .events import Finished, Timing, Usage
from .kv_cache import KVCache, build_mask, kv_dtype
from .sampling import BatchSampler, SamplingParams
from .tokenizer import IncrementalDecoder


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
    t0: float = 0.0  # when its prefill started
    prefill_s: float = 0.0  # seconds from t0 to its first token; 0 until it is drawn
    owner: Any = None  # the batcher's request this row belongs to (batcher.py); None in generate()
    prompt: Sequence[int] = ()  # its prompt's ids (read again at long-rope's switch, _reread_long_rope)

    def finished(self, reason: str, message: str = "") -> Finished:
        decode_s = time.perf_counter() - self.t0 - self.prefill_s
        return _finished(self, reason, self.prefill_s, decode_s, message)


@dataclass
class _Batch:
    """The rows still generating and their tensors (row b of each tensor is rows[b])."""

    rows: list[_Row]
    cache: KVCache
    pad: torch.Tensor  # (B,) left padding per row
    sampler: BatchSampler
    logits: torch.Tensor  # (B, V) for the next token
    slot: int  # next cache slot to write
    why_nonfinite: str | None = None  # worked out once, when a row first has non-finite logits
    padded: bool | None = None  # whether any row is padded (None: not checked since pad changed)


@torch.inference_mode()
def _prefill(
    model: nn.Module,
    cfg: ModelConfig,
    prompts: Sequence[Sequence[int]],
    rows: list[_Row],
    prompt_cache: PromptCache | None,
) -> _Batch:
    """Read the prompts into a fresh KV cache (or the row's PromptCache) -> the batch, holding the
    logits of each prompt's last token."""
    device, dtype = next(model.parameters()).device, kv_dtype(model)  # dtype: the KV cache's
    B, P = len(rows), max(r.prompt_len for r in rows)
    total = P + max(r.max_new for r in rows)
    pad = torch.tensor([P - r.prompt_len for r in rows], device=device)  # (B,)
    sampler = BatchSampler([r.params for r in rows], cfg.vocab_size, device, prompts)
    t0 = time.perf_counter()
    for r in rows:
        r.t0 = t0
    if prompt_cache is not None:
        assert all(list(ids) == list(prompts[0]) for ids in prompts), "a prompt cache serves one prompt"
        cache, logits = _prefill_cached(model, cfg, prompt_cache, prompts[0], total)
        if B > 1:  # one prompt, several rows (a server's n): each row gets a copy of its keys and values
            cache.select(torch.zeros(B, dtype=torch.long, device=device))
            cache.share_prompt([0] * B, P)
            logits = logits.expand(B, -1)
        return _Batch(rows, cache, pad, sampler, logits, P)
    tokens = torch.zeros(B, P, dtype=torch.long)
    for b, ids in enumerate(prompts):
        tokens[b, P - len(ids) :] = torch.as_tensor(list(ids), dtype=torch.long)
    tokens = tokens.to(device)
    positions = (torch.arange(P, device=device)[None] - pad[:, None]).clamp(min=0)  # (B, P)
    cache = KVCache(cfg.n_layers, B, cfg.n_kv_heads, total, cfg.head_dim, dtype, device)
    # Rows with the same prompt (presets side by side) share one prefill: the distinct prompts
    # run into a prompt-sized cache, whose rows then go to every row that has that prompt.
    firsts: dict[tuple[int, ...], int] = {}
    for b, ids in enumerate(prompts):
        firsts.setdefault(tuple(ids), b)
    if len(firsts) == B:
        mask = build_mask(pad, 0, P, P, cfg.sliding_window)
        logits = model(tokens, positions, mask, cache, 0, last_only=True)[:, -1]  # (B, V)
        return _Batch(rows, cache, pad, sampler, logits, P)
    unique = torch.tensor(list(firsts.values()), device=device)  # (U,) one row per prompt
    shared = KVCache(cfg.n_layers, len(firsts), cfg.n_kv_heads, P, cfg.head_dim, dtype, device)
    mask = build_mask(pad[unique], 0, P, P, cfg.sliding_window)
    logits = model(tokens[unique], positions[unique], mask, shared, 0, last_only=True)[:, -1]  # (U, V)
    index = {ids: u for u, ids in enumerate(firsts)}
    which = torch.tensor([index[tuple(ids)] for ids in prompts], device=device)  # (B,)
    cache.kv[:, :, :, :P] = shared.kv.index_select(1, which)  # (n_layers, B, 2 H_kv, P, hd)
    cache.share_prompt(which.tolist(), P)  # the copies are one prompt's bits: the step reads one
    return _Batch(rows, cache, pad, sampler, logits[which], P)  # logits (B, V)


@torch.inference_mode()
def _join(batch: _Batch | None, new: _Batch) -> _Batch:
    """Rows just prefilled (`new`) join the running batch between decode steps (batcher.py).

    All rows write the same cache slot, so the batch that is behind is shifted right by the
    difference: a row's keys carry its own positions (RoPE is applied before caching) and its
    padding grows by the shift, so moving it to later slots changes nothing it computes. Slots left
    of every row's padding are dropped, and the cache is sized to the slots the rows can still write
    (a row writes at most prompt_len + max_new - 1 slots from its padding).
    """
    if batch is None or not batch.rows:
        return new
    slot = max(batch.slot, new.slot)
    shifts = (slot - batch.slot, slot - new.slot)
    rows = batch.rows + new.rows
    pads = [p + shifts[0] for p in batch.pad.tolist()] + [p + shifts[1] for p in new.pad.tolist()]
    lo = min(pads)
    end = max(max(p + r.prompt_len + r.max_new - 1 for p, r in zip(pads, rows, strict=True)), slot + 1)
    L, _, H2, _, hd = batch.cache.kv.shape  # (n_layers, B, 2 H_kv, max_len, hd)
    kv = batch.cache.kv
    cache = KVCache(L, len(rows), H2 // 2, end - lo, hd, kv.dtype, kv.device)
    at = 0
    for part, shift in zip((batch, new), shifts, strict=True):
        first = max(0, lo - shift)  # the part's first slot still needed
        dest = first + shift - lo
        n = len(part.rows)
        cache.kv[:, at : at + n, :, dest : dest + part.slot - first] = part.cache.kv[:, :, :, first : part.slot]
        at += n
    pad = torch.tensor([p - lo for p in pads], device=batch.pad.device)  # (B,)
    sampler = BatchSampler.concat([batch.sampler, new.sampler])
    logits = torch.cat([batch.logits, new.logits.to(batch.logits.dtype)])  # (B, V)
    return _Batch(rows, cache, pad, sampler, logits, slot - lo, batch.why_nonfinite)


def _long_rope_rereads(cfg: ModelConfig, cached: int, total: int) -> bool:
    """Whether the keys of cache slots 0..cached-1 must be read again before a call that fills the
    sequence to `total` tokens. Long-rope's long factors apply to a row once its positions pass
    original_max_position_embeddings (config.long_rope_freqs); transformers' Phi-3 generate then
    drops its cache and reads the whole sequence again with them, and so does tiankong: keys turned
    with the short factors never sit beside long ones."""
    s = cfg.rope_scaling
    return bool(s and s["rope_type"] == "longrope" and 0 < cached <= s["original_max_position_embeddings"] < total)


def _long_rope_rereads_a_row(cfg: ModelConfig, batch: _Batch) -> bool:
    """Whether the next decode step takes a row past long-rope's short positions (each row
    switches on its own: config.long_rope_freqs)."""
    s = cfg.rope_scaling
    if not (s and s["rope_type"] == "longrope"):
        return False
    return any(_long_rope_rereads(cfg, held, held + 1) for held in (batch.slot - batch.pad).tolist())


def _reread_long_rope(model: nn.Module, cfg: ModelConfig, batch: _Batch) -> torch.Tensor:
    """Every row's prompt and answer so far (the newest token last) read again into slots
    0..batch.slot -> the logits (B, V) after the newest token. Rows still within the short
    positions get the same keys again."""
    width, device = batch.slot + 1, batch.pad.device
    tokens = torch.zeros(len(batch.rows), width, dtype=torch.long)
    for b, r in enumerate(batch.rows):
        seq = [*r.prompt, *r.ids]
        assert len(seq) == width - int(batch.pad[b]), "a row's tokens fill its slots"
        tokens[b, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
    positions = (torch.arange(width, device=device)[None] - batch.pad[:, None]).clamp(min=0)  # (B, width)
    mask = build_mask(batch.pad, 0, width, width, cfg.sliding_window)
    batch.cache.share_prompt([], 0)  # each row reads its slots again, on its own
    return model(tokens.to(device), positions, mask, batch.cache, 0, last_only=True)[:, -1]


def _prefill_cached(
    model: nn.Module, cfg: ModelConfig, pc: PromptCache, ids: Sequence[int], total: int
) -> tuple[KVCache, torch.Tensor]:
    """One row's prefill into its PromptCache, from the end of the prefix already cached ->
    (cache, logits (1, V) of the last prompt token)."""
    cache, start = pc.prepare(model, cfg, ids, total)
    if _long_rope_rereads(cfg, start, len(ids)):
        start = 0  # the cached prefix was turned with long-rope's short factors
    device = cache.kv.device
    tokens = torch.as_tensor(list(ids[start:]), dtype=torch.long, device=device)[None]  # (1, T)
    positions = torch.arange(start, len(ids), device=device)[None]  # (1, T)
    mask = build_mask(
        torch.zeros(1, dtype=torch.long, device=device), start, len(ids) - start, len(ids), cfg.sliding_window
    )
    logits = model(tokens, positions, mask, cache, start, last_only=True)[:, -1]
    pc.ids = list(ids)
    return cache, logits


def _finished(r: _Row, reason: str, prefill_s: float, decode_s: float, message: str = "") -> Finished:
    n = len(r.ids)
    rate = (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0
    return Finished(
        r.index,
        r.text,
        reason,
        Usage(r.prompt_len, n),
        Timing(prefill_s, decode_s, rate),
        tuple(r.ids),
        message,
        r.params.seed,
    )
