"""The progress display of the trainers and `tiankong generate`: a bar on a terminal that leaves
sys.stdout and sys.stderr alone, plain lines elsewhere (a log file, nohup, CI)."""

from __future__ import annotations

import io
import sys

from rich.console import Console

from tiankong.trainers import progress as progress_module
from tiankong.trainers.progress import progress


def test_the_bar_leaves_stdout_and_stderr_alone():
    """rich's bar took over sys.stdout and sys.stderr while drawn: `generate > out.jsonl` with stderr on
    a terminal wrote its records above the bar, and a trainer's stderr went to its stdout."""
    before = sys.stdout, sys.stderr
    screen = Console(file=io.StringIO(), force_terminal=True, width=80)
    with progress("generating", 3, console=screen) as advance:
        assert (sys.stdout, sys.stderr) == before
        advance()
    assert (sys.stdout, sys.stderr) == before


def test_plain_lines_in_a_log_every_ten_seconds_and_tenth(monkeypatch):
    """Not a terminal: nothing showed until the end (rich draws no bar there)."""
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    log = io.StringIO()
    with progress("generating", 1000, console=Console(file=log, width=200)) as advance:
        for t in range(5):  # 5 rows in 5 s: under 10 s and under a tenth
            now[0] = float(t)
            advance()
        assert log.getvalue() == ""
        now[0] = 12.0
        advance()
        assert log.getvalue() == "generating 6/1000 (0%)  0:00:12  eta 0:33:08\n"
        for _ in range(94):  # to 100, a tenth, with no time passing: one line a second at most
            advance()
        now[0] = 13.0
        advance()
        assert log.getvalue().splitlines()[-1].startswith("generating 101/1000 (10%)  0:00:13")
    assert log.getvalue().splitlines()[-1].startswith("generating 101/1000 (10%)")  # where it stopped
    assert len(log.getvalue().splitlines()) == 2  # QA: the last line came twice, once more at the end
    log = io.StringIO()
    with progress("generating", 1000, console=Console(file=log, width=200)) as advance:
        now[0] = 30.0
        advance()  # a line (10 s since the start)
        advance()  # none: under a second since
    assert [line.split()[1] for line in log.getvalue().splitlines()] == ["1/1000", "2/1000"]  # the end, said
