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
        assert log.getvalue() == "generating 6/1000 (1%)  0:00:12  eta 0:33:08\n"  # 0.6%, to the nearest
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


def test_the_eta_counts_down_between_items_and_an_item_can_move_the_bar(monkeypatch):
    # QA: PPO's bar sat still for a whole iteration (minutes) with an ETA frozen at its last value.
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    screen = Console(file=io.StringIO(), force_terminal=True, width=120)
    with progress("ppo", 5, console=screen) as advance:
        assert advance._eta() == "eta -"
        now[0] = 10.0
        advance()  # 10 s an item, 4 left
        assert advance._eta() == "eta 0:00:40"
        now[0] = 25.0  # 15 s into the next item: counts down, never below 0
        assert advance._eta() == "eta 0:00:25"
        now[0] = 100.0
        assert advance._eta() == "eta 0:00:00"
        advance.part(0.5, "updates 3/6")
        task = advance.bar.tasks[0]
        assert task.completed == 1.5 and task.fields["info"] == "updates 3/6"
        advance()
        assert advance.bar.tasks[0].completed == 2


def test_a_spinner_shows_slow_setup_on_a_terminal_and_gives_way_to_a_bar(monkeypatch):
    # QA: PPO showed a blank terminal for 30-100 s (models loading, the answer-length probe).
    from tiankong.trainers.progress import status
    from tiankong.tui import generate_input

    screen = io.StringIO()  # the spinner is drawn on the console the trainers' lines are said on
    monkeypatch.setattr(generate_input, "err", Console(file=screen, force_terminal=True, width=80))
    with status("ppo: loading the models and data") as say:
        say("ppo: finding the answer length: 3/32 probe answers")
        # A bar started meanwhile (pretrain's tokenizing) must not fail: rich draws one live display at a time.
        with progress("tokenizing, MB", 2, console=Console(file=io.StringIO(), force_terminal=True)) as advance:
            assert not progress_module._STATUS.is_started  # two live displays on one terminal garble each other
            advance()
    assert "loading the models" in screen.getvalue()
    quiet = io.StringIO()
    monkeypatch.setattr(generate_input, "err", Console(file=quiet, width=80))  # a log
    with status("ppo: loading the models and data") as say:
        say("anything")
    assert quiet.getvalue() == ""  # a log gets the lines the work prints itself


def test_plain_lines_give_the_percentage_to_the_nearest_and_100_only_when_done():
    """QA54: "reward 6/7 (85%)" (85.7% rounded down); to the nearest now, but never 100% before the end."""
    log = io.StringIO()
    with progress("reward", 7, console=Console(file=log, width=200)) as advance:
        advance(steps=6)
    assert log.getvalue().startswith("reward 6/7 (86%)")
    log = io.StringIO()
    with progress("ppo", 200, console=Console(file=log, width=200)) as advance:
        advance(steps=199)
    assert log.getvalue().startswith("ppo 199/200 (99%)")
