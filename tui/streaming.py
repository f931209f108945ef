"""The generation worker's loop, shared by the chat and compare screens.

A screen's `@work(thread=True)` worker hands `stream_events` the `Engine.generate` calls to make;
they run on the playground's one model thread (on_engine_thread), and their events go to the UI in
batches, at most one batch every FRAME_S seconds. post_message never waits for the UI, and a fast
model never floods the event loop; the UI's drawing still shares the cores and the GIL with the
model, which is why frames are few and the GIL changes hands often (app.GIL_SWITCH_S).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence, TypeVar

from textual.worker import get_current_worker

from tiankong.engine.errors import TiankongError
from tiankong.engine.events import Event

# The worker hands events to the UI at most this often. Each frame of a streaming answer redraws
# the transcript and the candidates (~10 ms of the UI thread at 200 x 50), which takes a core and
# the GIL from the model. In tmux, the 135M Q4_0 GGUF's two 512-token answers (app.GIL_SWITCH_S at
# 0.1 ms): 178 and 120 tok/s at 30 frames a second, 204 and 127-147 at 15; the engine alone 300-340.
FRAME_S = 1 / 15

Batch = list[tuple[int, Event]]  # (which stream, event), in the order they came
T = TypeVar("T")

# The one thread that runs the model in the playground: loading it, and every answer. Textual's
# thread workers come from a pool, so loading could run on one thread and answers on others (seen
# in a profile: asyncio_0, then asyncio_1), and OpenMP (the compiled step's and torch's) keeps a
# pool of worker threads for each thread that starts parallel work. Steps run on a thread other than
# the loading one were, in some runs, twice as slow (135M Q4_0, 2 cores: 6.4-7.2 ms against 2.9-3.4
# on the loading thread; not in every run, and why is not pinned down). bench/tui_stream.py, the app
# as started: 136 tok/s answering on Textual's workers, 184 on this thread (bench/README.md).
_ENGINE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiankong-model")  # started at first use


def on_engine_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) run on the playground's model thread; blocks until it returns."""
    return _ENGINE_THREAD.submit(fn, *args, **kwargs).result()


class Apart:
    """A stream read in its own thread, its events handed to the model thread through a queue: a
    server's stream, whose next() waits on the network. Read in turn with the others, a stalled
    server held every other column of a compare back (and one that broke failed them all)."""

    def __init__(self, events: Iterable[Event]) -> None:
        self.events = events


def stream_events(
    start: Callable[[], Sequence[Iterable[Event] | Apart]],
    post: Callable[[Batch], None],
    cancel: threading.Event,
    frame_s: float = FRAME_S,
) -> dict[int, str]:
    """Run in a thread worker: start() the generate calls and read their streams on the model
    thread (on_engine_thread), one event from each in turn (so several engines advance token by
    token together; an Apart stream is read in a thread of its own), calling post(batch) once
    frame_s has passed since the last batch and with what is left at the end. A cancelled worker
    sets `cancel`, so generation stops after the current token.

    -> why each stream that failed did (by its index in start()'s list; START when start() itself
    failed), in one line: a TiankongError's own message, or any other exception (a bug) with its
    type, so that it shows instead of taking the playground down. A stream that fails ends alone:
    the others go on, and what it streamed before has been posted.
    """
    worker = get_current_worker()
    return on_engine_thread(_stream, start, post, cancel, frame_s, lambda: worker.is_cancelled)


START = -1  # stream_events' key for start() failing: no stream began
_POLL_S = 0.02  # with only Apart streams, the model thread waits on their queue this long at a time


def why(e: BaseException) -> str:
    """An exception in one line: a TiankongError's own message, else its type and message (a bug)."""
    said = str(e).strip()
    if isinstance(e, TiankongError) and said:
        return said
    return f"{type(e).__name__}: {said}" if said else type(e).__name__


def _pump(s: int, events: Iterable[Event], out: queue.Queue) -> None:
    """An Apart stream's thread: (s, event) for each event, (s, why) if it fails, (s, None) at its end."""
    try:
        for ev in events:
            out.put((s, ev))
    except Exception as e:
        out.put((s, why(e)))
    finally:
        out.put((s, None))


def _stream(
    start: Callable[[], Sequence[Iterable[Event] | Apart]],
    post: Callable[[Batch], None],
    cancel: threading.Event,
    frame_s: float,
    cancelled: Callable[[], bool],
) -> dict[int, str]:
    """stream_events' loop, on the model thread."""
    try:
        streams = list(start())
    except Exception as e:
        return {START: why(e)}
    errors: dict[int, str] = {}
    apart: queue.Queue = queue.Queue()
    here = [(s, iter(st)) for s, st in enumerate(streams) if not isinstance(st, Apart)]
    away = {s for s, st in enumerate(streams) if isinstance(st, Apart)}
    for s in away:
        threading.Thread(target=_pump, args=(s, streams[s].events, apart), daemon=True).start()
    batch: Batch = []
    last = time.monotonic()
    while here or away:
        for entry in list(here):
            try:
                ev = next(entry[1], None)
            except Exception as e:
                ev, errors[entry[0]] = None, why(e)
            if ev is None:
                here.remove(entry)
            else:
                batch.append((entry[0], ev))
        _drain(apart, batch, errors, away, wait=not here)
        if cancelled():
            cancel.set()
        if batch and time.monotonic() - last >= frame_s:
            post(batch)
            batch, last = [], time.monotonic()
    if batch:
        post(batch)
    return errors


def _drain(apart: queue.Queue, batch: Batch, errors: dict[int, str], away: set[int], wait: bool) -> None:
    """What the Apart streams' threads have put so far into batch and errors; `away` loses the
    streams that ended. wait: nothing else to read meanwhile, so wait a little for the first."""
    while away:
        try:
            s, item = apart.get(timeout=_POLL_S) if wait else apart.get_nowait()
        except queue.Empty:
            return
        wait = False
        if item is None:
            away.discard(s)
        elif isinstance(item, str):
            errors[s] = item
        else:
            batch.append((s, item))
