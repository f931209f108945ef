"""The generation worker's loop, shared by the chat and compare screens.

A screen's `@work(thread=True)` worker hands `stream_events` the `Engine.generate` calls to make;
their events come back to it in batches, at most one batch every FRAME_S seconds, which it posts to
the UI. post_message never waits for the UI, so drawing never slows the model down, and a fast
model never floods the event loop.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence, TypeVar

from textual.worker import get_current_worker

from tiankong.engine.errors import TiankongError
from tiankong.engine.events import Event

# The worker hands events to the UI at most this often. Each frame of a streaming answer redraws
# the transcript and the candidates (~10 ms of the UI thread at 200 x 50), which takes a core and
# the GIL from the model: at 30 a second a 135M model streamed ~180 tok/s in tmux, at 15 ~200
# (with app.GIL_SWITCH_S), against 300-340 for the engine alone.
FRAME_S = 1 / 15

Batch = list[tuple[int, Event]]  # (which stream, event), in the order they came
T = TypeVar("T")

# The one thread that runs the model in the playground: loading it, and every answer. OpenMP (the
# compiled step's and torch's) keeps a pool of worker threads for each thread that starts parallel
# work, and once the pools hold more threads than there are cores, its workers stop spinning at
# barriers and sleep: a step (~100 barriers) from a second thread took twice as long. Measured on the
# 135M Q4_0 GGUF, 2 cores: loaded on one thread and generating on another, 120-128 tok/s (a step
# 6.8-7.3 ms); both on one thread, 300-364 (2.3-2.8 ms).
_engine_thread: ThreadPoolExecutor | None = None


def on_engine_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) run on the playground's model thread; blocks until it returns."""
    global _engine_thread
    if _engine_thread is None:
        _engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiankong-model")
    return _engine_thread.submit(fn, *args, **kwargs).result()


def stream_events(
    start: Callable[[], Sequence[Iterable[Event]]],
    post: Callable[[Batch], None],
    cancel: threading.Event,
    frame_s: float = FRAME_S,
) -> str | None:
    """Run in a thread worker: start() the generate calls and read their streams (on the model
    thread: on_engine_thread), one event from
    each in turn (so several engines advance token by token together), calling post(batch) once
    frame_s has passed since the last batch and with what is left at the end. A cancelled worker
    sets `cancel`, so generation stops after the current token.

    -> None when every stream ended, else why generation failed, in one line: a TiankongError's own
    message, or any other exception (a bug) with its type, so that it shows instead of taking the
    playground down.
    """
    worker = get_current_worker()
    return on_engine_thread(_stream, start, post, cancel, frame_s, lambda: worker.is_cancelled)


def _stream(
    start: Callable[[], Sequence[Iterable[Event]]],
    post: Callable[[Batch], None],
    cancel: threading.Event,
    frame_s: float,
    cancelled: Callable[[], bool],
) -> str | None:
    """stream_events' loop, on the model thread."""
    batch: Batch = []
    last = time.monotonic()
    error: str | None = None
    try:
        streams = [(s, iter(events)) for s, events in enumerate(start())]
        while streams:
            for entry in list(streams):
                ev = next(entry[1], None)
                if ev is None:
                    streams.remove(entry)
                else:
                    batch.append((entry[0], ev))
            if cancelled():
                cancel.set()
            if batch and time.monotonic() - last >= frame_s:
                post(batch)
                batch, last = [], time.monotonic()
    except Exception as e:
        said = str(e).strip()
        error = (
            said
            if isinstance(e, TiankongError) and said
            else f"{type(e).__name__}: {said}"
            if said
            else type(e).__name__
        )
    if batch:
        post(batch)
    return error
