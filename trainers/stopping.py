"""Ctrl+C and SIGTERM during training: the first asks for a checkpoint and a clean stop after the
current step (`_StopRequests`), which ends in `TrainingStopped`. Apart from the loop (common.py):
signal handling is its own concern, and the CLI (tui/train_cli.py) catches `TrainingStopped` by name.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any


class TrainingStopped(Exception):
    """Ctrl+C or SIGTERM: the run stopped after a checkpoint at `step`."""

    def __init__(self, step: int, steps: int, out: Path, signal_name: str) -> None:
        super().__init__(f"{signal_name}: stopped at step {step} of {steps}; checkpoint saved in {out}")
        self.step, self.steps, self.out, self.signal_name = step, steps, out, signal_name


class _StopRequests:
    """While training, the first Ctrl+C / SIGTERM asks for a checkpoint and a clean stop after the
    current step; a second Ctrl+C interrupts at once (the last complete checkpoint stays)."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.requested = False
        self.signal_name = ""
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested and self.announce:
            # Said at once: a step can take a while, and silence after Ctrl+C reads as a hang.
            sys.stderr.write(
                f"\n{signal.Signals(signum).name}: stopping after this step to save a checkpoint "
                "(Ctrl+C again stops at once, keeping the last checkpoint)\n"
            )
            sys.stderr.flush()
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
