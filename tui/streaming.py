"""The generation worker's loop, shared by the chat and compare screens.

A screen's `@work(thread=True)` worker hands `stream_events` the `Engine.generate` calls to make;
they run on the playground's one model thread (on_engine_thread), and their events go to the UI in
batches, at most one batch every FRAME_S seconds. post_message never waits for the UI, and a fast
model never floods the event loop; the UI's drawing still shares the cores and the GIL with the
model, which is why frames are few and the GIL changes hands often (app.GIL_SWITCH_S).
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


def stream_events(
    start: Callable[[], Sequence[Iterable[Event]]],
    post: Callable[[Batch], None],
    cancel: threading.Event,
    frame_s: float = FRAME_S,
) -> str | None:
    """Run in a thread worker: start() the generate calls and read their streams on the model
    thread (on_engine_thread), one event from each in turn (so several engines advance token by
    token together), calling post(batch) once frame_s has passed since the last batch and with
    what is left at the end. A cancelled worker sets `cancel`, so generation stops after the
    current token.

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
