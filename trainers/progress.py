"""One rich progress bar for loops of known length: the trainers' steps and `tiankong generate`'s
prompt file."""

from __future__ import annotations

import time
from typing import Callable, Mapping

from rich.console import Console

SHOWN = ("loss", "accuracy", "reward", "kl")  # the metrics written beside the bar


class progress:
    """rich progress bar with the latest metrics and a true ETA; a no-op when not enabled.

    `with progress(label, total) as advance:` then `advance(metrics)` (or `advance()`) after each
    item. The ETA is the mean time of the items this process ran times the items left (rich's own
    estimate looks at the last 30 s only, which for steps of many seconds is one or two samples).
    done: items already finished (a resumed run); console: where the bar goes (default stdout).
    """

    def __init__(
        self, label: str, total: int, *, done: int = 0, enabled: bool = True, console: Console | None = None
    ) -> None:
        self.label, self.total, self.done, self.enabled, self.console = label, total, done, enabled, console

    def __enter__(self) -> Callable[..., None]:
        if not self.enabled:
            return lambda row=None: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn(f"[bold]{self.label}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total, completed=self.done, info="", eta="eta -")
        start, first = time.monotonic(), self.done

        def advance(row: Mapping[str, float] | None = None) -> None:
            self.done += 1
            per_item = (time.monotonic() - start) / max(1, self.done - first)
            eta = f"eta {_clock(per_item * (self.total - self.done))}"
            info = "  ".join(f"{k} {v:.4g}" for k, v in (row or {}).items() if k in SHOWN)
            self.bar.update(task, advance=1, info=info, eta=eta)

        return advance

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
