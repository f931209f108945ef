"""Continuous batching: one decode loop in one thread; requests join between steps, leave when done.

    batcher = Batcher(engine, max_rows=16, max_queue=64)
    req = batcher.submit(ids, [SamplingParams(seed=1)] * 2, top_logprobs=5)   # n = 2 rows
    for ev in req:                                    # TokenEvents, then one Finished per row
        ...
    req.cancel()                                      # from any thread: its rows end "cancelled"
    batcher.close()

A request is one prompt with one SamplingParams per row (OpenAI's `n`). It waits in a bounded
queue (`QueueFull` when that is full) until the running batch has room for all its rows, is then
prefilled and joins the batch (prefill._join; the requests admitted together in one copy of the
running batch) before the next decode step. The batch's KV cache holds ANSWER_ROOM slots past the
rows' prompts and grows as the answers do (_make_room), not each row's max_new at once. Every step
runs generate.py's own stages (_draw, _step_events, _evict, _decode), so a row yields exactly the
events `Engine.generate` would; a row whose request is cancelled (a client gone, a timeout,
shutdown) leaves before the next draw, and its cache row is freed at once.

What the rows read stays behind in a PrefixStore (context.py): a request whose prompt starts with
a stored prompt, or with a finished row's prompt and answer (a chat client sending the whole
conversation again), is prefilled only past that prefix, in one prefill with the other requests
of the same prompt; the others are prefilled together. A prompt longer than `prefill_chunk`
tokens is read a chunk between two decode steps (chunked prefill), so the rows already streaming
slow down while it is read instead of stopping.

Each row draws from its own seeded generator, so a seed gives the same draws whatever else is in
the batch. On the CPU the logits are a lone run's too, bit for bit, whatever the rows beside it
(each row attends over its own slots: tests/test_batch_invariance.py). A prompt read on from a
stored prefix is the exception: its prefill rounds in the last bits as the shorter read does (SDPA
sums a query's scores in another order for another number of queries; tk_matmul's rows do not
move). On float weights that changes a token only where two candidates tie to within float
rounding; on quantized ones each product rounds its input to 8 bits, which turns those last bits
into ~0.02 in the logits (QA62: 135M q8_0, a prompt of 17 read on from 4 or 13 tokens), and a
repeated seeded request can part from its first answer. prefix_bytes=0 reads every prompt whole.

Events reach a request through `sink`, called on the batcher's thread (it must not block); the
default sink queues them for iteration. Nothing here prints or knows about HTTP (tui/serve.py).
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
import time
from typing import Callable, Iterator, Sequence

import torch

from .context import PrefixStore, PromptCache
from .engine import Engine, with_seeds
from .errors import InputError, TiankongError
from .events import Event, Finished, Timing, TokenEvent, Usage
from .generate import _cancelled, _decode, _draw, _evict, _setup_rows, _step_events
from .prefill import _Batch, _join, _prefill, _prefill_cached, _Row, slots_needed
from .request_checks import check_top_logprobs, token_ids
from .sampling import SamplingParams

# A stored prefix shorter than this is not worth prefilling a request apart from the others
# (prompts of at most this many tokens still reuse a full match).
MIN_REUSE = 16

# Answer slots reserved in the batch's KV cache when rows join it; the cache grows as the answers
# do (_make_room). Reserving each row's whole max_new at once, a chat client's default of the rest
# of the context, made every join allocate, fault in and copy a full-context cache for every row:
# 16 such requests at once took 50 s to a first token and 9 GB (2048-token context, 85M model).
ANSWER_ROOM = 64


@dataclasses.dataclass
class _Filling:
    """Requests of one long prompt, read one chunk per decode step; their rows join when it is read."""

    prompt: list[int]
    group: list[tuple[Request, list[_Row]]]
    cache: PromptCache  # holds the prompt's first len(cache.ids) tokens
    size: int  # cache slots its rows need at first: the prompt and min(longest answer, ANSWER_ROOM)

    def requests(self) -> list[Request]:
        return [req for req, _ in self.group]


class QueueFull(TiankongError):
    """The batcher's queue is full; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Request:
    """One prompt's rows in the batcher: iterate it for its events, or give `sink` to submit."""

    def __init__(
        self,
        prompt: list[int],
        params: list[SamplingParams],
        top_logprobs: int,
        sink: Callable[[Event], None] | None,
        wake: Callable[[], None],
    ) -> None:
        self.prompt, self.params, self.top_logprobs = prompt, params, top_logprobs
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._sink = sink or self._queue.put
        self._wake = wake
        self._cancel = threading.Event()
        self.rows_left = len(params)  # rows not finished yet (the batcher's thread writes it)
        self.cached_tokens = 0  # prompt tokens not read again (PrefixStore); set before its first event
        self.done = threading.Event()  # set after the last row's Finished was delivered

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """End every row of this request before its next token (any thread; idempotent)."""
        self._cancel.set()
        self._wake()

    def deliver(self, ev: Event) -> None:
        """Hand one event to the request's sink (the batcher's thread). A sink that fails means its
        consumer is gone (e.g. a closed event loop): the request is cancelled, the loop goes on. A
        finished row is counted before its Finished goes out: a client that has its answer and asks
        again at once finds the row free (serve's --max-queue 0 answered 429 "rows are busy")."""
        finished = isinstance(ev, Finished)
        if finished:
            self.rows_left -= 1
        try:
            self._sink(ev)
        except Exception:  # noqa: BLE001
            self._cancel.set()
        if finished and self.rows_left == 0:
            self.done.set()  # after the last event is out: a waiter on it misses none

    def finish_unstarted(self, reason: str, message: str = "") -> None:
        """End every row of a request that never joined the batch (none has streamed anything)."""
        assert self.rows_left == len(self.params), "rows of this request already ran"
        for i in range(len(self.params)):
            usage, timing = Usage(len(self.prompt), 0), Timing(0.0, 0.0, 0.0)
            self.deliver(Finished(i, "", reason, usage, timing, (), message, self.params[i].seed))

    def __iter__(self) -> Iterator[Event]:
        """The events of the default sink, until every row has finished."""
        left = len(self.params)
        while left:
            ev = self._queue.get()
            left -= isinstance(ev, Finished)
            yield ev


class Batcher:
    """Owns the decode loop of one engine in a background thread (see the module docstring).

    max_rows: rows decoded together (the batch's width); max_queue: requests waiting for room;
    prefix_bytes: memory for the keys and values of recent prompts and answers (0: none kept);
    prefill_chunk: prompt tokens read between two decode steps when a prompt is longer.
    """

    def __init__(
        self,
        engine: Engine,
        max_rows: int = 16,
        max_queue: int = 64,
        prefix_bytes: int = 256 << 20,
        prefill_chunk: int = 256,
    ) -> None:
        if max_rows < 1 or max_queue < 0 or prefill_chunk < 1:
            raise InputError(
                f"max_rows and prefill_chunk must be at least 1 and max_queue at least 0, "
                f"got {max_rows}, {prefill_chunk}, {max_queue}"
            )
        self.engine, self.max_rows, self.max_queue = engine, max_rows, max_queue
        self.prefill_chunk = prefill_chunk
        self._filling: collections.deque[_Filling] = collections.deque()  # the batcher's thread only
        self.prefix = PrefixStore(prefix_bytes)  # written and read on the batcher's thread only
        self._cond = threading.Condition()
        self._pending: collections.deque[Request] = collections.deque()
        self._batch: _Batch | None = None
        self._rows = 0  # rows in the running batch (read from any thread)
        self._closing = False  # no new requests
        self._stop = False  # cancel what is left and end the thread
        self._eos = frozenset(engine.tokenizer.eos_ids)
        self._thread = threading.Thread(target=self._loop, name="tiankong-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ any thread

    @property
    def rows(self) -> int:
        """Rows in the running batch or having their prompt read (each holds a KV cache row)."""
        return self._rows

    @property
    def pending(self) -> int:
        """Requests waiting for room in the batch."""
        return len(self._pending)

    def submit(
        self,
        prompt: Sequence[int],
        params: Sequence[SamplingParams],
        *,
        top_logprobs: int = 0,
        sink: Callable[[Event], None] | None = None,
    ) -> Request:
        """Queue one prompt with one SamplingParams per row (rows without a seed get a fresh one).
        Raises InputError for a request that can never run, QueueFull when the queue is full."""
        eng = self.engine
        if not params:
            raise InputError("a request needs at least one row (n >= 1)")
        if len(params) > self.max_rows:
            raise InputError(f"n is {len(params)} but the server runs at most {self.max_rows} rows; lower n")
        top_logprobs = check_top_logprobs(top_logprobs, eng.cfg.vocab_size)
        prompt = token_ids(prompt, eng.cfg.vocab_size)
        if len(prompt) == 0:
            raise InputError("empty prompt: give some text")
        eng.check_fits(prompt)
        for p in params:
            p.validate()
        req = Request(list(prompt), with_seeds(params), top_logprobs, sink, self._wake)
        with self._cond:
            if self._closing:
                raise QueueFull("the server is shutting down", retry_after=5)
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"the queue is full ({len(self._pending)} waiting for a row); retry shortly")
            self._pending.append(req)
            self._cond.notify()
        return req

    def close(self, timeout: float = 0.0) -> None:
        """Stop taking requests; let running and queued rows finish for up to `timeout` seconds,
        then cancel what is left and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        deadline = time.monotonic() + timeout
        while (self._rows or self._pending) and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._cond:
            batch = self._batch  # read once: the loop thread may drop it meanwhile
            for req in list(self._pending) + [r.owner for r in (batch.rows if batch else [])]:
                req.cancel()
            self._stop = True
            self._cond.notify()
        self._thread.join()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # ------------------------------------------------------------------ the batcher's thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and self._batch is None and not self._filling and not self._stop:
                    self._cond.wait()
                if self._stop and self._batch is None:
                    for req in list(self._pending) + [req for f in self._filling for req in f.requests()]:
                        req.finish_unstarted("cancelled")
                    self._pending.clear()
                    self._filling.clear()
                    return
                admitted = self._take_admitted()
            try:
                self._admit(admitted)
                self._fill()
                self._step()
            except Exception as e:  # noqa: BLE001 - a bug or an allocation failure must not kill the loop
                self._fail_all(f"{type(e).__name__}: {e}", admitted)

    def _take_admitted(self) -> list[Request]:
        """Pop the queued requests that fit in the batch, in order (under the lock)."""
        room = self.max_rows - self._count()
        admitted = []
        while self._pending and (self._pending[0].cancelled or len(self._pending[0].params) <= room):
            req = self._pending.popleft()
            if req.cancelled:
                req.finish_unstarted("cancelled")
                continue
            room -= len(req.params)
            admitted.append(req)
        return admitted

    def _admit(self, admitted: list[Request]) -> None:
        """Prefill the admitted requests and join them to the running batch: the requests of a
        prompt that starts with a stored prefix from there (one prefill for all of them), the
        others together; long prompts a chunk at a time (_fill)."""
        same: dict[tuple[int, ...], list[tuple[Request, list[_Row]]]] = {}
        ready: list[tuple[list[tuple[Request, list[_Row]]], PromptCache | None]] = []
        for req in admitted:
            rows = self._rows_of(req)
            if rows:
                same.setdefault(tuple(req.prompt), []).append((req, rows))
        fresh: list[tuple[Request, list[_Row]]] = []
        for key, group in same.items():
            prompt, rows = list(key), [r for _, rs in group for r in rs]
            n, kv = self.prefix.longest(prompt)
            if kv is None or n < min(MIN_REUSE, len(prompt) - 1):
                n, kv = 0, None
            size = len(prompt) + min(max(r.max_new for r in rows), ANSWER_ROOM)
            pc = None if kv is None else self.prefix.cache_for(self.engine.model, prompt, n, kv, size)
            for req, _ in group:
                req.cached_tokens = n
            if len(prompt) - n > self.prefill_chunk:
                self._filling.append(_Filling(prompt, group, pc or PromptCache(), size))
            elif pc is not None:
                ready.append((group, pc))
            else:
                fresh += group
        if fresh:
            ready.append((fresh, None))
        self._prefill_join(ready)
        self._rows = self._count()

    def _fill(self) -> None:
        """Read the next chunk of the oldest long prompt; its rows join once the rest fits in one."""
        if not self._filling:
            return
        f = self._filling[0]
        for req in f.requests():
            if req.cancelled or self._stop:
                req.finish_unstarted("cancelled")
        f.group = [(req, rows) for req, rows in f.group if not (req.cancelled or self._stop)]
        if not f.group:
            self._filling.popleft()
        elif len(f.prompt) - len(f.cache.ids) > self.prefill_chunk:
            upto = len(f.cache.ids) + self.prefill_chunk
            try:
                with torch.inference_mode():
                    _prefill_cached(self.engine.model, self.engine.cfg, f.cache, f.prompt[:upto], f.size)
            except TiankongError as e:
                self._filling.popleft()
                for req in f.requests():
                    req.finish_unstarted("error", str(e))
        else:
            self._filling.popleft()
            self._prefill_join([(f.group, f.cache)])
        self._rows = self._count()

    def _count(self) -> int:
        """Rows holding a KV cache row: in the batch, or having their prompt read."""
        filling = sum(len(rows) for f in self._filling for _, rows in f.group)
        return (len(self._batch.rows) if self._batch else 0) + filling

    def _rows_of(self, req: Request) -> list[_Row]:
        """The request's rows, or none (and the request ended) when it cannot run."""
        eng = self.engine
        try:
            rows = _setup_rows(eng.cfg, eng.tokenizer, [req.prompt] * len(req.params), req.params, None)
        except TiankongError as e:
            req.finish_unstarted("error", str(e))
            return []
        for r in rows:
            r.owner = req
        return rows

    def _prefill_join(self, ready: list[tuple[list[tuple[Request, list[_Row]]], PromptCache | None]]) -> None:
        """Prefill each group's rows (from its PromptCache's prefix: requests of one prompt) and join
        them all to the running batch in one copy (a copy of the batch per group, each a new cache,
        stopped the answers already streaming for as many copies)."""
        eng, parts = self.engine, []
        for group, pc in ready:
            rows = [r for _, rs in group for r in rs]
            try:
                prompts = [req.prompt for req, rs in group for _ in rs]
                part = _prefill(eng.model, eng.cfg, prompts, rows, pc, room=ANSWER_ROOM)
            except TiankongError as e:  # e.g. the KV cache would not fit in memory: those requests fail
                for req, _ in group:
                    req.finish_unstarted("error", str(e))
                continue
            self._remember(part, range(len(rows)))
            parts.append(part)
        if not parts:
            return
        old = self._batch  # the running batch keeps the room it has reserved ahead
        room = ANSWER_ROOM if old is None else max(ANSWER_ROOM, old.cache.max_len - old.slot)
        self._batch = _join([old, *parts], room)
        self._rows = self._count()

    def _remember(self, batch: _Batch, which: Sequence[int] | range) -> None:
        """Store what these rows of the batch hold (their prompt and the answer fed back so far)
        in the prefix store; one entry per request and length."""
        pads, seen = batch.pad.tolist(), set()
        for b in which:
            r = batch.rows[b]
            ids = list(r.prompt) + r.ids[:-1]  # the last drawn token is not fed back yet
            if (id(r.owner), len(ids)) in seen:
                continue
            seen.add((id(r.owner), len(ids)))
            assert batch.slot - pads[b] == len(ids), f"row holds {batch.slot - pads[b]} slots for {len(ids)} ids"
            self.prefix.put(ids, batch.cache.kv[:, b, :, pads[b] : batch.slot])

    def _step(self) -> None:
        """One decode step of the running batch: cancelled rows leave, every other row draws a
        token, finished rows leave, the rest feed their tokens back. Events are delivered after the
        rows they end have left, so a request that sees its Finished sees its row freed."""
        batch, eng = self._batch, self.engine
        if batch is None:
            return
        if any(r.owner.cancelled for r in batch.rows):
            gone = [(r.owner, _cancelled(r)) for r in batch.rows if r.owner.cancelled]
            self._leave(batch, [b for b, r in enumerate(batch.rows) if not r.owner.cancelled])
            self._deliver(gone)
            if self._batch is None:
                return
        k = max(r.owner.top_logprobs for r in batch.rows)
        draw = _draw(batch, self._eos, k)
        events, keep = _step_events(eng.model, batch, draw, eng.token_text, None)
        failed = {id(r) for r, ev in events if isinstance(ev, Finished) and ev.finish_reason == "error"}
        kept = set(keep)
        self._remember(batch, [b for b, r in enumerate(batch.rows) if b not in kept and id(r) not in failed])
        out = []
        for r, ev in events:
            if isinstance(ev, TokenEvent) and len(ev.candidates) > r.owner.top_logprobs:
                ev = dataclasses.replace(ev, candidates=ev.candidates[: r.owner.top_logprobs])
            out.append((r.owner, ev))
        self._leave(batch, keep, draw)
        self._deliver(out)
        if self._batch is not None:
            self._make_room(batch)
            _decode(eng.model, eng.cfg, batch, draw.tokens, None)

    @staticmethod
    def _make_room(batch: _Batch) -> None:
        """A cache slot for this step's tokens: a full cache grows by half the slots it holds (at
        least ANSWER_ROOM), so an answer of n tokens copies its cache O(log n) times, up to the most
        its rows can still write (prefill.slots_needed)."""
        if batch.slot < batch.cache.max_len:
            return
        size = min(slots_needed(batch.pad.tolist(), batch.rows), batch.slot + max(ANSWER_ROOM, batch.slot // 2))
        try:
            batch.cache.grow(size, batch.slot)
        except TiankongError as e:  # every row writes this slot: the batch's answers end here, in words for a server
            raise InputError(
                f"out of memory growing the {len(batch.rows)} running answers' keys and values to {size} slots; "
                "send a smaller max_tokens, or start the server with a smaller --max-rows"
            ) from e

    def _leave(self, batch: _Batch, keep: list[int], draw=None) -> None:
        """Keep only these rows (none: the batch is dropped with its cache)."""
        if not keep:
            self._batch = None
        elif len(keep) < len(batch.rows):
            _evict(batch, keep, draw)
        self._rows = self._count()

    @staticmethod
    def _deliver(events: Sequence[tuple[Request, Event]]) -> None:
        for req, ev in events:
            req.deliver(ev)

    def _fail_all(self, message: str, admitted: list[Request]) -> None:
        """End every row with "error" after an unexpected failure, and drop the batch."""
        rows, self._batch, self._rows = (self._batch.rows if self._batch else []), None, 0
        filling, self._filling = list(self._filling), collections.deque()
        for req in (req for f in filling for req in f.requests()):
            req.finish_unstarted("error", message)
        for r in rows:
            r.owner.deliver(r.finished("error", message))
        for req in admitted:  # failed before joining the batch
            if req.rows_left == len(req.params):
                req.finish_unstarted("error", message)
