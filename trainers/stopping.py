"""Ctrl+C and SIGTERM during training: the first asks for a checkpoint and a clean stop after the
current step (`_StopRequests`), which ends in `TrainingStopped`. Apart from the loop (common.py):
signal handling is its own concern, and the CLI (tui/train_cli.py) catches `TrainingStopped` by name.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable


class TrainingStopped(Exception):
    """Ctrl+C or SIGTERM: the run stopped after a checkpoint at `step`."""

    def __init__(self, step: int, steps: int, out: Path, signal_name: str) -> None:
        super().__init__(f"{signal_name}: stopped at step {step} of {steps}; checkpoint saved in {out}")
        self.step, self.steps, self.out, self.signal_name = step, steps, out, signal_name


class _StopRequests:
    """While training, the first Ctrl+C / SIGTERM asks for a checkpoint and a clean stop after the
    current step; a second Ctrl+C interrupts at once (the last complete checkpoint stays).

    "At once" even inside one long native call: Python runs a signal's handler only between bytecodes,
    and a backward pass over a PPO minibatch is one call of seconds (two presses inside it even merge
    into one). So the C-level handler's wakeup byte (signal.set_wakeup_fd) is read by a watcher thread
    as each signal comes; a second Ctrl+C that the main thread has not turned into KeyboardInterrupt
    within GRACE seconds ends the process there: `farewell()`'s line (what survived, how to go on),
    then exit 130."""

    GRACE = 0.5  # seconds the main thread gets to raise KeyboardInterrupt itself (the tidier exit)

    def __init__(self, announce: bool = True, farewell: Callable[[], str] | None = None) -> None:
        self.announce = announce
        self.farewell = farewell
        self.requested = False
        self.signal_name = ""
        self._old: dict[int, Any] = {}
        self._lock = threading.RLock()  # re-entrant: a signal handler can run inside another, in the main thread
        self._calls = 0  # Python-level handler runs
        self._second = False  # the watcher saw a Ctrl+C after a stop request
        self._interrupted = False  # the main thread raised KeyboardInterrupt
        self._ending = False  # the watcher is ending the process
        self._closed = threading.Event()
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup = -1

    def _request(self, signum: int) -> None:
        """The first stop request, from whichever of handler and watcher sees it first (under the lock)."""
        if not self.requested and self.announce:
            # Said at once: a step can take a while, and silence after Ctrl+C reads as a hang.
            sys.stderr.write(
                f"\n{signal.Signals(signum).name}: stopping after this step to save a checkpoint "
                "(Ctrl+C again stops at once, keeping the last checkpoint)\n"
            )
            sys.stderr.flush()
        if not self.requested:
            self.requested, self.signal_name = True, signal.Signals(signum).name

    def _handle(self, signum: int, frame: Any) -> None:
        with self._lock:
            self._calls += 1
            second = signum == signal.SIGINT and (self._calls >= 2 or self._second)
            if second and not self._ending:
                self._interrupted = True
            self._request(signum)
        if second and not self._ending:
            raise KeyboardInterrupt

    def _watch(self, fd: int) -> None:
        """The watcher thread: one byte per signal, as it arrives (see the class docstring)."""
        seen = 0
        try:
            while not self._closed.is_set():
                data = os.read(fd, 64)
                for signum in data if not self._closed.is_set() else b"":
                    if signum not in (signal.SIGINT, signal.SIGTERM):
                        continue  # another handled signal, or __exit__'s wake-up byte
                    seen += 1
                    with self._lock:
                        self._second = self._second or (seen >= 2 and signum == signal.SIGINT)
                        self._request(signum)
                    if self._second:
                        self._end_unless_handled()
                        return
                if not data:
                    return
        except OSError:
            return
        finally:
            os.close(fd)

    def _end_unless_handled(self) -> None:
        if self._closed.wait(self.GRACE):
            return
        with self._lock:
            if self._interrupted or self._closed.is_set():
                return
            self._ending = True
        # The main thread is inside a native call (see the class docstring): end the process from here.
        # The output folder's lock goes with the process; a checkpoint being written is left unsealed
        # (checkpoints/.step-N.tmp, removed by the next save), so the last complete one stays.
        try:
            note = self.farewell() if self.farewell is not None else "stopped at once"
            show_cursor = "\x1b[?25h" if sys.stderr.isatty() else ""  # a progress bar had hidden it
            sys.stderr.write(f"{show_cursor}\n{note}\n" if note else show_cursor)
            sys.stderr.flush()
        finally:
            os._exit(130)

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
            self._start_watcher()
        return self

    def _start_watcher(self) -> None:
        r, w = os.pipe()
        os.set_blocking(w, False)  # the C handler must never block on it
        try:
            self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except (ValueError, OSError):  # not possible here: the second Ctrl+C waits for Python, as before
            os.close(r), os.close(w)
            return
        self._pipe = (r, w)
        threading.Thread(target=self._watch, args=(r,), name="tiankong-stop-watcher", daemon=True).start()

    def __exit__(self, *exc: Any) -> None:
        self._closed.set()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            r, w = self._pipe
            self._pipe = None
            try:
                os.write(w, b"\0")  # wakes the watcher, which sees _closed and ends
            except BrokenPipeError:
                # The watcher has already left and closed its end (it saw the second Ctrl+C, and the main
                # thread's KeyboardInterrupt within GRACE): nothing to wake. Raised here, the error would
                # replace that KeyboardInterrupt and read as a closed stdout (exit 141, nothing said).
                pass
            os.close(w)  # the watcher closes its end as it leaves (closing it under a blocked read is not safe)
        for sig, old in self._old.items():
            signal.signal(sig, old)
