"""Autoregressive generation: prefill, then one-token decode steps, yielding token events.

A batch holds one row per prompt; each row has its own SamplingParams (so several presets run
side by side in one forward pass), its own seeded generator and its own stopping rules. Rows
are left-padded to a common length so that all rows write the KV cache at the same slot; each
row's positions start at 0 at its first real token, and the mask hides the padding. A finished
row leaves the batch, so the others do not pay for it.

`generate` reads as its stages (gpt-fast's prefill / decode_one_token / decode_n_tokens):
request_checks.py checks the arguments and _setup_rows the prompts' lengths (both when generate is
called, not at the first next()), _prefill reads the prompts (prefill.py, with the rows' and the
batch's state), then each step _draw samples every row, _step_events yields the events and ends
rows, _evict drops the finished ones and _decode feeds the chosen tokens back.

The path of one step (see SAMPLER_CHAIN in params.py for the processing order):
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
from pathlib import Path
from typing import Callable, Iterator, Sequence, cast

import torch
from torch import nn

from .config import ModelConfig
from .context import PromptCache, too_long
from .errors import InputError
from .events import Candidate, Event, Finished, TokenEvent
from .kv_cache import build_mask, kv_dtype
from .prefill import _Batch, _long_rope_rereads_a_row, _prefill, _reread_long_rope, _Row
from .request_checks import TokenIds, a_type, check_cancel, check_params, check_top_logprobs, token_id_lists
from .sampling import Draw, SamplingParams
from .tokenizer import IncrementalDecoder, Tokenizer


@dataclass
class _Draw(Draw):
    """The sampler's draw for every row (tokens, stats, top), and which rows drew an EOS token."""

    is_eos: list[bool] = field(default_factory=list)


def generate(
    model: nn.Module,
    cfg: ModelConfig,
    tokenizer: Tokenizer,
    prompts: Sequence[TokenIds],
    params: Sequence[SamplingParams],
    *,
    top_logprobs: int = 0,
    cancel: threading.Event | None = None,
    text_of: Callable[[int], str] | None = None,
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
        raise InputError(f"prompt_cache must be a PromptCache or None, got {a_type(prompt_cache)}")
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
    text_of: Callable[[int], str] | None,
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
        token_text = text_of or tokenizer.token_text
        while True:
            if cancel is not None and cancel.is_set():
                # Cancelled between tokens: every row keeps exactly what it had streamed.
                for r in batch.rows:
                    yield _cancelled(r)
                return
            draw = _draw(batch, eos, top_logprobs)
            events, keep = _step_events(model, batch, draw, token_text, prompt_cache)
            if not keep:
                # The KV cache goes before the last Finished, not when the generator does: a caller
                # may stop reading there and keep the generator (a prompt cache keeps its own).
                del batch, draw
                yield from (ev for _, ev in events)
                return
            yield from (ev for _, ev in events)
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
            raise InputError(
                f"prompts[{i}] is empty; a prompt needs at least one token: pass eng.encode(text, raw=True),"
                " which starts an empty text from the model's BOS token"
            )
        if len(ids) >= ctx:
            raise too_long(len(ids), ctx, p.max_new_tokens)
        assert p.seed is not None, "the caller draws a seed for rows that have none"
        max_new = min(p.max_new_tokens, ctx - len(ids))
        rows.append(_Row(i, len(ids), p, max_new, IncrementalDecoder(tokenizer, ids), prompt=ids))
    return rows


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
    model: nn.Module, batch: _Batch, draw: _Draw, text_of: Callable[[int], str], prompt_cache: PromptCache | None
) -> tuple[list[tuple[_Row, Event]], list[int]]:
    """Each row's TokenEvent for this draw, and Finished for the rows it ends (non-finite logits,
    EOS, a stop string, max tokens or the context), as (row, event) pairs -> (events, rows to keep)."""
    events: list[tuple[_Row, Event]] = []
    keep: list[int] = []
    for b, r in enumerate(batch.rows):
        tok, lp, ps, entropy = draw.stats[b]
        if not math.isfinite(lp):
            # Non-finite logits: every log-prob of the row is NaN. Drop the token, end the row.
            batch.why_nonfinite = batch.why_nonfinite or nonfinite_reason(model)
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
        # On the torch path the thread count stays the same step to step (unlike the compiled step's,
        # threads.py): its bits depend on it (SDPA rounds one row otherwise with two threads), and a
        # seeded row must not depend on how busy the machine is.
        batch.logits = model(tokens, positions, mask, batch.cache, slot).select(1, -1)
    if prompt_cache is not None:
        prompt_cache.ids.append(int(chosen[0]))  # slot `slot` now holds it
    batch.slot += 1


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
        self.stops = (stops,) if isinstance(stops, str) else tuple(stops)  # a lone string is one stop
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


def nonfinite_reason(model: nn.Module) -> str:
    """Why logits went non-finite: the first weight (in layer order) holding NaN or inf, else the
    likely causes. One pass over the weights, only when a row has failed."""
    role = getattr(model, "weight_role", None)  # a packed model names its fused tensors' parts
    unchecked = False  # quantized blocks are bytes; their scales are not read here
    with torch.inference_mode():
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
            if t.is_mkldnn:  # a oneDNN-packed weight (packed.py): isfinite has no kernel for its layout
                t = t.to_dense()
                if name.endswith(".packed"):  # PackedLinear's buffer: name it as the Linear's weight
                    name = name.removesuffix(".packed") + ".weight"
            if not t.is_floating_point():
                unchecked = unchecked or t.dtype == torch.uint8
            elif not bool(torch.isfinite(t).all()):
                kind = "NaN" if bool(torch.isnan(t).any()) else "infinite"
                what = role(name) if role is not None else name
                return f"weight {what} holds {kind} values; re-download or re-convert the checkpoint"
    bad = _nonfinite_scales(getattr(model, "gguf_file", None)) if unchecked else None
    if bad is not None:
        (name, kind), file = bad
        return f"weight {name} of {file} holds {kind} block scales; re-download or re-convert the checkpoint"
    weights = (
        "the unquantized weights are finite (a quantized block's scale may not be)"
        if unchecked
        else ("the weights are finite")
    )
    # Quantized weights computing in float32 keep a float16 KV cache (kv_cache.kv_dtype), where a
    # key or value above 65504 becomes inf though the model's own dtype is float32. Loading the
    # weights as float32 keeps a float32 cache too.
    half_cache = kv_dtype(model) == torch.float16 and next(model.parameters()).dtype == torch.float32
    where = "in the float16 KV cache that quantized weights use" if half_cache else "(common in float16)"
    return (
        f"{weights}, so an activation overflowed {where}: load float32, --dtype float32 or dtype='float32' in Python; "
        "or a config value such as rope_theta or rope_scaling is wrong"
    )


def _nonfinite_scales(file: Path | None) -> tuple[tuple[str, str], str] | None:
    """((tensor, "NaN" or "infinite"), the file's name) for the first tensor of the GGUF `file` (the
    model's, Engine.load sets it) whose block scales are not finite; None without a file, when every
    scale is finite, or when the file can no longer be read (moved or changed since the load)."""
    from .errors import TiankongError
    from .gguf_model import GGUFModel

    if file is None:
        return None
    try:
        found = GGUFModel(file).nonfinite_scales()
    except (TiankongError, OSError, ValueError):
        return None
    return None if found is None else (found, file.name)
