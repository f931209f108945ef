"""Prefill: the state of a batch of rows, and how their prompts get into its KV cache.

`_Row` and `_Batch` are what a generate call (or the batcher's running batch) steps through.
`_prefill` reads the prompts into a fresh cache (rows with the same prompt share one read, and the
prompts of each length are read apart, unpadded: `_read_padded`) or, for one row, into its PromptCache (`_prefill_cached`, from the end of the prefix already cached);
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
    room: int | None = None,
) -> _Batch:
    """Read the prompts into a fresh KV cache (or the row's PromptCache) -> the batch, holding the
    logits of each prompt's last token. room: answer slots to reserve past the prompts (None: the
    longest max_new; the batcher reserves less and grows the cache as the answers grow)."""
    device, dtype = next(model.parameters()).device, kv_dtype(model)  # dtype: the KV cache's
    B, P = len(rows), max(r.prompt_len for r in rows)
    total = P + min(max(r.max_new for r in rows), room or cfg.max_seq_len)
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
    cache = KVCache(cfg.n_layers, B, cfg.n_kv_heads, total, cfg.head_dim, dtype, device)
    # Rows with the same prompt (presets side by side) share one prefill: each distinct prompt is
    # read once, and its keys and values go to every row that has it.
    index: dict[tuple[int, ...], int] = {}
    which = [index.setdefault(tuple(ids), len(index)) for ids in prompts]  # (B,) each row's prompt
    if len(index) == B and not bool(pad.any()):  # one length, every prompt its own: straight in
        tokens = torch.tensor([list(ids) for ids in prompts], dtype=torch.long).to(device)  # (B, P)
        positions = torch.arange(P, device=device).expand(B, P)
        mask = build_mask(pad, 0, P, P, cfg.sliding_window)
        logits = model(tokens, positions, mask, cache, 0, last_only=True)[:, -1]  # (B, V)
        return _Batch(rows, cache, pad, sampler, logits, P)
    groups: list[list[int]] = [[] for _ in index]  # the rows of each distinct prompt
    for b, u in enumerate(which):
        groups[u].append(b)
    logits = _read_padded(model, cfg, list(index), groups, cache, P)  # (U, V)
    cache.share_prompt(which, P)  # a prompt's copies are the same bits: the step reads one
    return _Batch(rows, cache, pad, sampler, logits[torch.tensor(which, device=logits.device)], P)  # (B, V)


def _read_padded(
    model: nn.Module,
    cfg: ModelConfig,
    seqs: Sequence[Sequence[int]],
    groups: Sequence[Sequence[int]],
    cache: KVCache,
    end: int,
) -> torch.Tensor:
    """Read each sequence seqs[u] into the cache rows groups[u], left-padded to `end` (at slots
    end - len .. end - 1) -> the logits (U, V) after each one's last token.

    The sequences of one length run as one batch without padding, into a cache of their own whose
    slots are then copied into place: a row so computes what it computes alone, bit for bit. Read
    left-padded in one call, its attention would run over its padding masked, and the kernels
    split the slots (vector lanes, blocks) by their distance from slot 0, so its sums would come
    out in another order (float32 ~4e-6 nats, bfloat16 ~0.04, q8_0's text parting after ~40
    tokens). The pad tokens' own work is saved too; the price is a call per distinct length.
    """
    device, kv = cache.kv.device, cache.kv
    by_length: dict[int, list[int]] = {}
    for u, ids in enumerate(seqs):
        by_length.setdefault(len(ids), []).append(u)
    logits: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    for n, us in by_length.items():
        tokens = torch.tensor([list(seqs[u]) for u in us], dtype=torch.long).to(device)  # (G, n)
        positions = torch.arange(n, device=device).expand(len(us), n)
        part = KVCache(kv.shape[0], len(us), cache.n_kv_heads, n, kv.shape[-1], kv.dtype, device)
        mask = build_mask(torch.zeros(len(us), dtype=torch.long, device=device), 0, n, n, cfg.sliding_window)
        out = model(tokens, positions, mask, part, 0, last_only=True)[:, -1]  # (G, V)
        src = [g for g, u in enumerate(us) for _ in groups[u]]
        dst = [b for u in us for b in groups[u]]
        kv[:, dst, :, end - n : end] = part.kv[:, src]  # (n_layers, rows, 2 H_kv, n, hd)
        for g, u in enumerate(us):
            logits[u] = out[g]
    return torch.stack(logits)


@torch.inference_mode()
def slots_needed(pads: Sequence[int], rows: Sequence[_Row]) -> int:
    """Cache slots the rows can still write at most: a row writes up to prompt_len + max_new - 1
    slots from its padding."""
    return max(p + r.prompt_len + r.max_new - 1 for p, r in zip(pads, rows, strict=True))


def _join(parts: Sequence[_Batch | None], room: int | None = None) -> _Batch:
    """Batches become one between decode steps: rows just prefilled join the running batch
    (batcher.py), all of them in one copy of it (parts: the running batch first, or None).

    All rows write the same cache slot, so each batch that is behind is shifted right by the
    difference: a row's keys carry its own positions (RoPE is applied before caching) and its
    padding grows by the shift, so moving it to later slots changes nothing it computes. Slots left
    of every row's padding are dropped, and the cache is sized to the slots the rows can still write
    (a row writes at most prompt_len + max_new - 1 slots from its padding), or to `room` slots past
    the current one where that is less (the batcher grows the cache as the answers grow).
    """
    batches = [part for part in parts if part is not None and part.rows]
    assert batches, "a join has rows"
    if len(batches) == 1:
        return batches[0]
    slot = max(part.slot for part in batches)
    shifts = [slot - part.slot for part in batches]
    rows = [r for part in batches for r in part.rows]
    pads = [p + shift for part, shift in zip(batches, shifts, strict=True) for p in part.pad.tolist()]
    lo = min(pads)
    end = max(slots_needed(pads, rows), slot + 1)
    if room is not None:
        end = min(end, slot + room)
    first = batches[0]
    L, _, H2, _, hd = first.cache.kv.shape  # (n_layers, B, 2 H_kv, max_len, hd)
    kv = first.cache.kv
    cache = KVCache(L, len(rows), H2 // 2, end - lo, hd, kv.dtype, kv.device)
    at = 0
    for part, shift in zip(batches, shifts, strict=True):
        begin = max(0, lo - shift)  # the part's first slot still needed
        dest = begin + shift - lo
        n = len(part.rows)
        cache.kv[:, at : at + n, :, dest : dest + part.slot - begin] = part.cache.kv[:, :, :, begin : part.slot]
        at += n
    pad = torch.tensor([p - lo for p in pads], device=first.pad.device)  # (B,)
    sampler = BatchSampler.concat([part.sampler for part in batches])
    logits = torch.cat([part.logits.to(first.logits.dtype) for part in batches])  # (B, V)
    return _Batch(rows, cache, pad, sampler, logits, slot - lo, first.why_nonfinite)


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
    width = batch.slot + 1
    seqs = [[*r.prompt, *r.ids] for r in batch.rows]
    for b, seq in enumerate(seqs):
        assert len(seq) == width - int(batch.pad[b]), "a row's tokens fill its slots"
    batch.cache.share_prompt([], 0)  # each row reads its slots again, on its own
    return _read_padded(model, cfg, seqs, [[b] for b in range(len(seqs))], batch.cache, width)


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
