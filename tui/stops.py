"""Stop signals for the commands that write results: SIGTERM (kill, a job scheduler's stop) handled as
Ctrl+C is, so both end with one line saying what was kept. Apart from any one command because
`generate` and the trainers' verdict both use it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a job scheduler's stop) while generating: handled as a Ctrl+C is, exit 143."""


class Stops:
    """While generating: SIGTERM stops the run as Ctrl+C does (Terminated, exit 143), so a kill gets
    the same message (what was kept, what to run) instead of a silent end; and a stop that comes while
    output is written (`held`) waits for the write to end, so the message can say exactly what came
    out. A second stop while waiting (a write blocked on a full pipe) stops at once.

    Only signals left at Python's defaults are taken: a SIGINT ignored (a job started with `&` by a
    script) stays ignored."""

    def __init__(self) -> None:
        self.old: dict[int, Any] = {}
        self.holding = False
        self.pending: int | None = None

    def __enter__(self) -> Stops:
        if threading.current_thread() is threading.main_thread():
            for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
                if signal.getsignal(sig) is default:
                    self.old[sig] = signal.signal(sig, self._stop)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)
        self.old = {}

    def _stop(self, signum: int, frame: Any) -> None:
        if self.holding and self.pending is None:
            self.pending = signum
            return
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A stop signalled inside the block is raised when it ends (a second one at once)."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            self._stop(signum, None)
