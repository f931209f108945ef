"""Autoregressive generation: prefill, then one-token decode steps, yielding token events.

A batch holds one row per prompt; each row has its own SamplingParams (so several presets run
side by side in one forward pass), its own seeded generator and its own stopping rules. Rows
are left-padded to a common length so that all rows write the KV cache at the same slot; each
row's positions start at 0 at its first real token, and the mask hides the padding. A finished
row leaves the batch, so the others do not pay for it.

`generate` reads as its stages (gpt-fast's prefill / decode_one_token / decode_n_tokens):
request_checks.py checks the arguments and _setup_rows the prompts' lengths (both when generate is
called, not at the first next()), _prefill reads the prompts, then each step _draw samples every
row, _step_events yields the events and ends rows, _evict drops the finished ones and _decode
feeds the chosen tokens back.

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
from typing import Any, Iterator, Sequence, cast

import torch
from torch import nn

from .config import ModelConfig
from .context import PromptCache
from .errors import InputError
from .events import Candidate, Event, Finished, Timing, TokenEvent, Usage
from .kv_cache import KVCache, build_mask, kv_dtype
from .request_checks import check_cancel, check_params, check_top_logprobs, token_id_lists
from .sampling import BatchSampler, Draw, SamplingParams
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


@dataclass
class _Draw(Draw):
    """The sampler's draw for every row (tokens, stats, top), and which rows drew an EOS token."""

    is_eos: list[bool] = field(default_factory=list)


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

    prompts: token ids per row (already templated; numpy arrays and tensors of ids are taken as
    lists). params: one SamplingParams per row, with its seed set. top_logprobs: how many candidates
    each TokenEvent carries (0 = none). cancel: set it from another thread to stop all rows after the
    current token ("cancelled"). text_of: optional id -> readable text function for candidates
    (defaults to tokenizer.token_text). prompt_cache: for one row, the conversation's cache: the
    prompt's cached prefix is not read again, and the cache holds the prompt and the answer
    afterwards; one call at a time uses it (PromptCache.claim).

    The arguments are checked, and the cache claimed, by this call itself (InputError), not at the
    first next(): the generator comes back already started, before its prefill.
    """
    prompts = token_id_lists(prompts, cfg.vocab_size)
    params = check_params(params, len(prompts))
    top_logprobs = check_top_logprobs(top_logprobs, cfg.vocab_size)
    check_cancel(cancel)
    if prompt_cache is not None and not isinstance(prompt_cache, PromptCache):
        raise InputError(f"prompt_cache must be a PromptCache or None, got a {type(prompt_cache).__name__}")
    rows = _setup_rows(cfg, tokenizer, prompts, params, prompt_cache)
    if not rows:
        return _no_events()
    events = _events(model, cfg, tokenizer, prompts, rows, top_logprobs, cancel, text_of, prompt_cache)
    next(events)  # claims the cache (or raises), then stops inside the try that releases it
    return cast(Iterator[Event], events)


def _no_events() -> Iterator[Event]:
    """The stream of a call with no prompts: a generator like any other (it has close())."""
    yield from ()


def _events(
    model: nn.Module,
    cfg: ModelConfig,
    tokenizer: Tokenizer,
    prompts: list[list[int]],
    rows: list[_Row],
    top_logprobs: int,
    cancel: threading.Event | None,
    text_of,
    prompt_cache: PromptCache | None,
) -> Iterator[Event | None]:
    """generate's loop. It first yields None, which generate() takes: from then on, the generator
    finishing, failing, being closed or being garbage-collected releases the prompt cache (a
    generator that never started would run no `finally`)."""
    if prompt_cache is not None:
        prompt_cache.claim()
    try:
        yield None
        batch = _prefill(model, cfg, prompts, rows, prompt_cache)
        eos = frozenset(tokenizer.eos_ids)
        text_of = text_of or tokenizer.token_text
        while True:
            if cancel is not None and cancel.is_set():
                # Cancelled between tokens: every row keeps exactly what it had streamed.
                for r in batch.rows:
                    yield _cancelled(r)
                return
            draw = _draw(batch, eos, top_logprobs)
            events, keep = _step_events(model, batch, draw, text_of, prompt_cache)
            yield from (ev for _, ev in events)
            if not keep:
                return
            if len(keep) < len(batch.rows):
                _evict(batch, keep, draw)
            _decode(model, cfg, batch, draw.tokens, prompt_cache)
    finally:
        if prompt_cache is not None:
            prompt_cache.release()


def _setup_rows(
    cfg: ModelConfig,
    tokenizer: Tokenizer,
    prompts: Sequence[Sequence[int]],
    params: Sequence[SamplingParams],
    prompt_cache: PromptCache | None,
) -> list[_Row]:
    """Check the request and make one _Row per prompt (none for no prompts)."""
    assert len(prompts) == len(params), "request_checks.check_params matched them"
    if not prompts:
        return []
    if prompt_cache is not None and len(prompts) != 1:
        raise InputError(f"a prompt cache serves one row, not {len(prompts)}")
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
        max_new = min(p.max_new_tokens, ctx - len(ids))
        rows.append(_Row(i, len(ids), p, max_new, IncrementalDecoder(tokenizer, ids), prompt=ids))
    return rows


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


@torch.inference_mode()
def _draw(batch: _Batch, eos: frozenset[int], top_logprobs: int) -> _Draw:
    """Sample the next token of every row from batch.logits, with what the events report."""
    d = batch.sampler.draw(batch.logits, top_logprobs)  # records the tokens for the penalties
    is_eos = [row[0] in eos for row in d.stats]
    now = time.perf_counter()
    for r in batch.rows:
        r.prefill_s = r.prefill_s or now - r.t0
    return _Draw(d.tokens, d.stats, d.top, is_eos)


def _step_events(
    model: nn.Module, batch: _Batch, draw: _Draw, text_of, prompt_cache: PromptCache | None
) -> tuple[list[tuple[_Row, Event]], list[int]]:
    """Each row's TokenEvent for this draw, and Finished for the rows it ends (non-finite logits,
    EOS, a stop string, max tokens or the context), as (row, event) pairs -> (events, rows to keep)."""
    events: list[tuple[_Row, Event]] = []
    keep: list[int] = []
    for b, r in enumerate(batch.rows):
        tok, lp, ps, entropy = draw.stats[b]
        if not math.isfinite(lp):
            # Non-finite logits: every log-prob of the row is NaN. Drop the token, end the row.
            batch.why_nonfinite = batch.why_nonfinite or _nonfinite_reason(model)
            r.text += r.decoder.flush()
            if prompt_cache is not None:
                # Its slots may now hold NaN: masked attention weighs stale slots by 0, and 0 * NaN
                # is NaN, so the next prompt would fail too. Read the next one from scratch.
                prompt_cache.reset()
            message = (
                f"the model's logits are not finite (NaN or inf) at answer token {len(r.ids) + 1}; "
                f"{batch.why_nonfinite}"
            )
            events.append((r, r.finished("error", message)))
            continue
        tok = int(tok)
        r.ids.append(tok)
        piece = "" if draw.is_eos[b] else r.decoder.push(tok)
        if not draw.is_eos[b] and len(r.ids) >= r.max_new:
            # The row's last token: bytes the decoder still holds (a character cut by the length
            # limit) go out with it, so the answer is what was streamed.
            piece += r.decoder.flush()
        cands: tuple[Candidate, ...] = ()
        if draw.top is not None:
            ids_b, lps_b, ps_b = draw.top[b]
            cands = tuple(
                Candidate(i, text_of(i), lp_i, ps_i) for i, lp_i, ps_i in zip(ids_b, lps_b, ps_b, strict=True)
            )
        events.append((r, TokenEvent(r.index, len(r.ids) - 1, tok, piece, lp, ps, entropy, cands)))
        r.text += piece
        reason = _stop_reason(r, piece, draw.is_eos[b])
        if reason is None:
            keep.append(b)
            continue
        events.append((r, r.finished(reason)))
    return events, keep


def _cancelled(r: _Row) -> Finished:
    """End a row between tokens: it keeps exactly what it had streamed."""
    r.prefill_s = r.prefill_s or time.perf_counter() - r.t0
    r.text += r.decoder.flush()
    return r.finished("cancelled")


def _stop_reason(r: _Row, piece: str, is_eos: bool) -> str | None:
    """Why row r ends after its newest piece, or None; a stop string is cut from r.text."""
    if is_eos:
        return "eos"
    if r.params.stop and (cut := _find_stop(r.text, piece, r.params.stop)) is not None:
        r.text = r.text[:cut]
        return "stop"
    if len(r.ids) >= r.max_new:
        return "length" if r.max_new == r.params.max_new_tokens else "context"
    return None


def _evict(batch: _Batch, keep: list[int], draw: _Draw | None = None) -> None:
    """Drop the finished rows from the batch (and from this step's draw), so the others do not pay
    for them; their cache rows are freed at once."""
    batch.rows = [batch.rows[b] for b in keep]
    sel = torch.tensor(keep, device=batch.pad.device)
    batch.cache.select(sel)
    batch.pad, batch.logits, batch.padded = batch.pad[sel], batch.logits[sel.to(batch.logits.device)], None
    batch.sampler = batch.sampler.select(keep)
    if draw is not None:
        draw.tokens = draw.tokens[sel.to(draw.tokens.device)]


@torch.inference_mode()
def _decode(
    model: nn.Module, cfg: ModelConfig, batch: _Batch, chosen: torch.Tensor, prompt_cache: PromptCache | None
) -> None:
    """One decode step: the chosen tokens go in at cache slot batch.slot -> batch.logits of the next."""
    # Few tensor ops here: each lets the GIL go, and in the playground each waits to get it back.
    slot, device = batch.slot, batch.pad.device
    positions = (slot - batch.pad).unsqueeze(1)  # (B, 1)
    if batch.padded is None:
        batch.padded = bool(batch.pad.any())
    mask = build_mask(batch.pad, slot, 1, slot + 1, cfg.sliding_window, batch.padded)
    if _long_rope_rereads_a_row(cfg, batch):
        batch.logits = _reread_long_rope(model, cfg, batch)
    else:
        tokens = chosen.view(-1, 1)  # (B, 1)
        if tokens.device != device:
            tokens = tokens.to(device)
        batch.logits = model(tokens, positions, mask, batch.cache, slot).select(1, -1)
    if prompt_cache is not None:
        prompt_cache.ids.append(int(chosen[0]))  # slot `slot` now holds it
    batch.slot += 1


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


class HeldText:
    """One streamed row's text, held back while a stop string may begin in it (tiankong serve's
    streams and `tiankong generate`'s text stream).

    The engine streams every token's text as it comes and cuts a stop string only from its final
    text (Finished.text, the non-streamed answer). Passing the pieces on would show the stop string,
    or its first tokens, before the answer ends; so `push` gives the text received only once no
    stop string can start in it any more, and `finish` the rest of the engine's final text. What was
    sent is always a prefix of that text, so a stream adds up to the non-streamed answer exactly.
    The text goes out whole tokens at a time, so a chunk's text and its tokens' logprobs stay
    together (a client like remote.py reads each token's text from its chunk).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.held = ""  # received, not sent: a stop string starts, or may start, in it
        self.sent = 0  # characters sent

    def push(self, piece: str) -> str:
        """A token's text came -> the text to send now: all that is held, or "" while a stop string
        may start in it."""
        self.held += piece
        if _may_hold_stop(self.held, self.stops):
            return ""
        text, self.held = self.held, ""
        self.sent += len(text)
        return text

    def finish(self, final: str) -> str:
        """The row ended with `final` (Finished.text) -> what is left to send of it."""
        rest = final[self.sent :]
        self.held, self.sent = "", len(final)
        return rest


def _may_hold_stop(text: str, stops: tuple[str, ...]) -> bool:
    """Whether a stop string is in text, or text ends with the beginning of one (which the next
    tokens may complete)."""
    return any(
        s in text or any(s.startswith(text[i:]) for i in range(max(0, len(text) - len(s) + 1), len(text)))
        for s in stops
    )


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
        r.index,
        r.text,
        reason,
        Usage(r.prompt_len, n),
        Timing(prefill_s, decode_s, rate),
        tuple(r.ids),
        message,
        r.params.seed,
    )


def _nonfinite_reason(model: nn.Module) -> str:
    """Why logits went non-finite: the first weight (in layer order) holding NaN or inf, else the
    likely causes. One pass over the weights, only when a row has failed."""
    role = getattr(model, "weight_role", None)  # a packed model names its fused tensors' parts
    unchecked = False  # quantized blocks are bytes; their scales are not read here
    with torch.inference_mode():
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
            if not t.is_floating_point():
                unchecked = unchecked or t.dtype == torch.uint8
            elif not bool(torch.isfinite(t).all()):
                kind = "NaN" if bool(torch.isnan(t).any()) else "infinite"
                what = role(name) if role is not None else name
                return f"weight {what} holds {kind} values; re-download or re-convert the checkpoint"
    weights = (
        "the unquantized weights are finite (a quantized block's scale may not be)"
        if unchecked
        else ("the weights are finite")
    )
    return (
        f"{weights}, so an activation overflowed (common in float16: try --dtype float32) "
        "or a config value such as rope_theta or rope_scaling is wrong"
    )
