"""One progress display for loops of known length: the trainers' steps and `tiankong generate`'s
prompt file. On a terminal a rich bar; elsewhere (a log file, nohup, CI) a plain line now and then,
so `tail -f` shows the run moving. `status` is a terminal's spinner for work of unknown length.

The bar never takes over sys.stdout or sys.stderr (rich's default does): `generate > out.jsonl`
with stderr on a terminal must still put its records in out.jsonl, not above the bar.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import IO, Any, Callable, Iterator, Mapping

from rich.console import Console
from rich.markup import escape

SHOWN = ("loss", "accuracy", "reward", "kl")  # the metrics written beside the bar
EVERY_S = 10.0  # plain lines: one at least this often while items finish ...
EVERY_PART = 10  # ... and one per tenth of the total done (no more than one a second)


class progress:
    """A progress display with the latest metrics and a true ETA; a no-op when not enabled.

    `with progress(label, total) as advance:` then `advance(metrics)` (or `advance()`) after each
    item. The ETA is the mean time of the items this process ran times the items left (rich's own
    estimate looks at the last 30 s only, which for steps of many seconds is one or two samples).
    done: items already finished (a resumed run); console: where it goes (default stderr: stdout is
    the caller's data, such as records or a run's plots). A console
    that is not an interactive terminal gets plain lines instead of a bar: one every EVERY_S seconds
    or each tenth of the total, and one at the end.
    """

    def __init__(
        self, label: str, total: int, *, done: int = 0, enabled: bool = True, console: Console | None = None
    ) -> None:
        self.label, self.total, self.done, self.enabled, self.console = label, total, done, enabled, console
        self.bar: Any = None  # the rich Progress while a bar is drawn
        self.info = ""  # the latest metrics, as shown
        self.lines: Console | None = None  # the console of plain lines
        self.shown: int | None = None  # the count the last plain line gave

    def __enter__(self) -> progress:
        self.start, self.first = time.monotonic(), self.done
        self.last = self.start  # when the latest item finished
        if not self.enabled:
            return self
        console = self.console or Console(stderr=True)
        if not console.is_terminal or console.is_dumb_terminal:
            self.lines, self.last_line, self.last_part = console, self.start, self._part()
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        if _STATUS is not None:  # rich draws one live display at a time: the bar says more than the spinner
            _STATUS.stop()
        owner = self

        class Eta(ProgressColumn):  # worked out at each redraw: it counts down while a long item runs
            def render(self, task: Any) -> Text:
                return Text(owner._eta())

        self.bar = _Progress(
            TextColumn(f"[bold]{escape(self.label)}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            Eta(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
            redirect_stdout=False,  # stdout is the caller's: records written there stay there
            redirect_stderr=False,
        )
        try:
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.done, info="")
        except BaseException:  # a Ctrl+C as it starts: no __exit__ comes, and its thread drew on below the last line
            self.bar.stop()
            self.bar = None
            raise
        return self

    def __call__(self, row: Mapping[str, float] | None = None, steps: int = 1) -> None:
        """`steps` more items done (one by default); `row`: the latest metrics (those in SHOWN are shown)."""
        if not self.enabled or steps <= 0:
            return
        self.done += steps
        self.last = time.monotonic()
        self.info = "  ".join(f"{k} {v:.4g}" for k, v in (row or {}).items() if k in SHOWN)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, info=self.info)
            return
        now, part = time.monotonic(), self._part()
        if now - self.last_line >= EVERY_S or (part > self.last_part and now - self.last_line >= 1.0):
            self._line()
            self.last_line, self.last_part = now, part

    def note(self, text: str) -> None:
        """Show `text` beside the bar in place of the metrics until the next item (work between items,
        such as a held-out evaluation, that would otherwise look like a stall)."""
        if self.bar is not None:
            self.bar.update(self.task, info=escape(text))

    def part(self, fraction: float, text: str) -> None:
        """The current item is `fraction` (0 to 1) done, at the phase `text`: the bar moves within an
        item of several phases (a PPO iteration's rollouts, then its updates) and says which one runs."""
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done + min(1.0, max(0.0, fraction)), info=escape(text))

    def write(self, text: str) -> None:
        """Write `text` to standard output (and flush): above the bar when the bar is drawn on that
        same terminal, so neither garbles the other; otherwise straight to sys.stdout."""
        if self.bar is not None and _same_terminal(sys.stdout, self.bar.console.file):
            self.bar.console.print(text, end="", markup=False, highlight=False, emoji=False, soft_wrap=True)
        else:
            sys.stdout.write(text)
        sys.stdout.flush()

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.lines is not None:
            if self.shown != self.done:  # where it ended, whether finished or stopped, unless just said
                self._line()
            self.lines = None

    def _part(self) -> int:
        return self.done * EVERY_PART // self.total if self.total > 0 else 0

    def _eta(self) -> str:
        """The mean time of the items finished here times the items left, less the time the current
        item has run so far (so it counts down between items rather than freezing)."""
        if self.done == self.first:
            return "eta -"
        per_item = (self.last - self.start) / (self.done - self.first)
        left = per_item * max(0, self.total - self.done) - (time.monotonic() - self.last)
        return f"eta {_clock(max(0.0, left))}"

    def _line(self) -> None:
        assert self.lines is not None
        pct = f" ({_percent(self.done, self.total)}%)" if self.total > 0 else ""
        elapsed = _clock(time.monotonic() - self.start)
        line = f"{self.label} {self.done}/{self.total}{pct}  {elapsed}  {self._eta()}"
        line += f"  {self.info}" if self.info else ""
        self.shown = self.done
        self.lines.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)


# Columns a bar leaves free at the terminal's right edge: a Ctrl+C echoes "^C" where the bar ends, and
# a bar of the full width then wrapped the terminal's line, so the bar's last frame was drawn a second
# time below the first.
ECHO_ROOM = 2


def _Progress(*columns: Any, **options: Any) -> Any:
    """rich's Progress, drawn ECHO_ROOM columns short of the width it is given (the terminal's at
    each frame, so a resized terminal is followed)."""
    from rich.constrain import Constrain
    from rich.progress import Progress

    class EchoRoom:
        def __init__(self, renderable: Any) -> None:
            self.renderable = renderable

        def __rich_console__(self, console: Any, options: Any) -> Any:
            yield Constrain(self.renderable, max(options.max_width - ECHO_ROOM, 1))

    class Narrower(Progress):
        def get_renderable(self) -> Any:
            return EchoRoom(super().get_renderable())

    return Narrower(*columns, **options)


@contextlib.contextmanager
def status(text: str, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner with `text` on stderr while work of unknown length runs (loading models, PPO's answer
    length probe), so a slow start is not a blank terminal; yields a function that changes the text.
    Only on a terminal: a log gets the lines the work prints itself. Lines printed to stderr meanwhile
    go above the spinner; stdout is left alone (it is the caller's data).

    Drawn on the console the trainers' lines are said on (tui/generate_input.py's `say`): rich hands
    another console the terminal itself (it unwraps the spinner's stderr proxy), so a line said there
    went on after the spinner's text ("...31/32 probe answersppo: auto settings ...")."""
    from tiankong.tui import generate_input

    console = generate_input.err
    if not enabled or not console.is_terminal or console.is_dumb_terminal:
        yield lambda _text: None
        return
    from rich.live import Live
    from rich.spinner import Spinner

    global _STATUS
    spinner = Spinner("dots", text=text)
    with Live(spinner, console=console, transient=True, redirect_stdout=False, redirect_stderr=True) as live:
        _STATUS = live
        try:
            yield lambda new: spinner.update(text=new)
        finally:
            _STATUS = None


_STATUS: Any = None  # the spinner's Live while one is drawn: a bar that starts meanwhile ends it (one live display)


def _same_terminal(a: IO[str], b: IO[str]) -> bool:
    """Whether two streams are the one terminal (stdout and stderr of an interactive shell)."""
    try:
        return a.isatty() and b.isatty() and os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (OSError, ValueError, AttributeError):  # a stream without a file descriptor (captured)
        return False


def _percent(done: int, total: int) -> int:
    """done of total in whole percent, to the nearest (6 of 7 is 86%, not 85%), but 100 only when done
    (199 of 200 is 99%)."""
    return 100 if done >= total else min(99, int(100 * done / total + 0.5))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
