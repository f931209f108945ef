"""The generation worker's loop, shared by the chat and compare screens.

A screen's `@work(thread=True)` worker hands `stream_events` the `Engine.generate` calls to make;
their events come back to it in batches, at most one batch every FRAME_S seconds, which it posts to
the UI. post_message never waits for the UI, so drawing never slows the model down, and a fast
model never floods the event loop.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Sequence

from textual.worker import get_current_worker

from tiankong.engine.errors import TiankongError
from tiankong.engine.events import Event

# The worker hands events to the UI at most this often. Each frame of a streaming answer redraws
# the transcript and the candidates (~10 ms of the UI thread at 200 x 50), which takes a core and
# the GIL from the model: at 30 a second a 135M model streamed ~180 tok/s in tmux, at 15 ~200
# (with app.GIL_SWITCH_S), against 300-340 for the engine alone.
FRAME_S = 1 / 15

Batch = list[tuple[int, Event]]  # (which stream, event), in the order they came


def stream_events(
    start: Callable[[], Sequence[Iterable[Event]]],
    post: Callable[[Batch], None],
    cancel: threading.Event,
    frame_s: float = FRAME_S,
) -> str | None:
    """Run in a thread worker: start() the generate calls and read their streams, one event from
    each in turn (so several engines advance token by token together), calling post(batch) once
    frame_s has passed since the last batch and with what is left at the end. A cancelled worker
    sets `cancel`, so generation stops after the current token.

    -> None when every stream ended, else why generation failed, in one line: a TiankongError's own
    message, or any other exception (a bug) with its type, so that it shows instead of taking the
    playground down.
    """
    worker = get_current_worker()
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
            if worker.is_cancelled:
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
