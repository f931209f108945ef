"""QA 36 on the trainers: every flag a verdict names is one its own command has (DPO's told to raise
--kl-coef, which `train dpo` lacks), the collapse warning leads with the figure that fired it, and the
trainers' lines wrap between words on a terminal (the terminal's own wrap cut "busy co" / "re") while
staying one line each in a log."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest
import typer
from rich.console import Console

from tiankong.trainers import verdict as V
from tiankong.tui import generate_input
from tiankong.tui.train_cli import TRAINERS, train_app

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def command_flags(name: str) -> set[str]:
    """The long options `tiankong train NAME --help` lists (a hidden one is accepted but not shown)."""
    command = typer.main.get_command(train_app).commands[name]  # type: ignore[attr-defined]
    return {o for p in command.params if not getattr(p, "hidden", False) for o in p.opts + p.secondary_opts} - {
        "-m",
        "-o",
    }


def fake_run(tmp_path, name: str, losses: list[float]) -> SimpleNamespace:
    """What the verdict reads of a finished run: its name, output folder (metrics.jsonl) and settings."""
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    rows = [{"step": i, "loss": x} for i, x in enumerate(losses, 1)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return SimpleNamespace(name=name, out=out, cfg=SimpleNamespace(lr=1e-3, progress=False), auto=None)


def said(v: V.Verdict) -> list[str]:
    return [v.summary, *v.warnings]


def every_verdict_line(tmp_path, name: str) -> list[str]:
    """Each branch of the verdict of `train NAME` that can name a flag, its warnings made to fire."""
    run = fake_run(tmp_path, name, [1.0, 2.0])  # a loss that rose
    lines = said(V.diverged_verdict(run, 1)) + said(V.diverged_verdict(run, 2))
    if name == "reward":
        return lines + said(V.accuracy_verdict(10, 0, None)) + said(V.accuracy_verdict(10, 30, 0.5))
    if name in ("ppo", "dpo"):
        before = {"distinct": 1.0, "at_limit": 0.0, "shared_passage": 0.0}
        after = {"distinct": 0.2, "at_limit": 0.9, "shared_passage": 0.9}
        drift = {"cjk_in_answers": (0.0, 0.5), "latin_in_answers": (0.0, 0.5)}
        return (
            lines
            + V.collapse_warning(name, "score", 1.0, before, after, 64, 1e-3)
            + V.stall_warning("score", 0.0, 1.0, 0.0)
            + V.stall_warning("score", -1.0, 0.1, 1.0)
            + V.drift_warning(name, drift, 1.0, 1e-3)
        )
    return lines + said(V.loss_verdict(run))


@pytest.mark.parametrize("name", list(TRAINERS))
def test_every_flag_a_verdict_names_is_one_its_command_has(tmp_path, name):
    """QA 36: DPO's collapse warning said "raise --kl-coef"; `train dpo --kl-coef 0.5` -> No such option."""
    have = command_flags(name)
    lines = every_verdict_line(tmp_path, name)
    named = {(flag, line) for line in lines for flag in FLAG.findall(line)}
    assert named, lines  # the verdicts name flags: a check of none would pass by itself
    missing = sorted((flag, line) for flag, line in named if flag not in have)
    assert not missing, f"`tiankong train {name}` has no {', '.join(sorted({f for f, _ in missing}))}: {missing}"
    assert {"dpo": "--beta", "ppo": "--kl-coef"}.get(name, "--lr") in {f for f, _ in named}


def test_the_collapse_warning_leads_with_the_shared_passage():
    """QA 36: "the policy collapsed: 100% of answers distinct (before 100%)" read as a contradiction;
    the figure that fired the warning (one 8-token passage in 28% -> 69% of answers) was in the middle."""
    before = {"distinct": 1.0, "at_limit": 0.0, "shared_passage": 0.28}
    after = {"distinct": 1.0, "at_limit": 0.0, "shared_passage": 0.69}
    [warning] = V.collapse_warning("dpo", "implicit reward", 0.5, before, after, 256, 3e-4)
    first = re.search(r"[^:;(,]*\d+%[^;(,]*", warning)  # the first figure, in its words
    assert first and "8-token passage 28% -> 69%" in first.group(), warning
    assert "distinct answers 100% -> 100%" in warning and "--beta" in warning and "--kl-coef" not in warning
    assert V.collapse_warning("dpo", "implicit reward", -0.5, before, after, 256, 3e-4) == []  # no rise
    assert V.collapse_warning("dpo", "implicit reward", 0.5, before, before, 256, 3e-4) == []  # nothing narrowed


def wrapped(screen: io.StringIO, width: int) -> list[str]:
    lines = screen.getvalue().splitlines()
    assert lines and all(len(x) <= width for x in lines), lines
    return lines


def whole_words(lines: list[str], text: str) -> bool:
    """Whether `lines` are `text` broken only at spaces (a word cut in two would gain a space)."""
    return " ".join(x.strip() for x in lines) == " ".join(text.split())


@pytest.fixture
def terminal(monkeypatch):
    """stderr as a 50-column terminal, as `say` sees it."""
    screen = io.StringIO()
    monkeypatch.setattr(generate_input, "err", Console(file=screen, force_terminal=True, width=50, color_system=None))
    return screen


@pytest.fixture
def log(monkeypatch):
    """stderr as a log file: not a terminal, 50 columns wide by its own reckoning."""
    out = io.StringIO()
    monkeypatch.setattr(generate_input, "err", Console(file=out, width=50))
    return out


def thread_note(monkeypatch) -> str:
    """The note a new CPU run says on a 2-core machine whose other programs keep 1.2 cores busy
    (trainers/cpu_threads.py: the run keeps both threads, and the note says fewer may be faster)."""
    import torch

    from tiankong.trainers import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "cores", lambda: [0, 1])
    torch.set_num_threads(2)
    threads, note = cpu_threads.settle(0, 0, hint=True, busy=lambda cpus: 1.2)
    assert threads == 2 and note is not None and "--threads 1 may be" in note
    return note


def test_the_thread_note_wraps_between_words_on_a_terminal(monkeypatch, terminal):
    note = thread_note(monkeypatch)
    generate_input.say(note)  # as the trainer says it once it trains (common.py)
    lines = wrapped(terminal, 50)
    assert len(lines) > 2 and whole_words(lines, note), lines


def test_the_thread_note_in_a_log_stays_one_line(monkeypatch, log):
    note = thread_note(monkeypatch)
    generate_input.say(note)
    assert log.getvalue() == note + "\n"


def test_a_trainers_own_note_wraps_between_words_on_a_terminal(tmp_path, monkeypatch, terminal):
    from pathlib import Path

    from tiankong.trainers.checkpoint import check_output

    monkeypatch.chdir(tmp_path)
    out = Path("runs/stopped")
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text("")  # a --resume of a run stopped before its first save
    assert check_output(out, resume=True, overwrite=False) is False
    lines = wrapped(terminal, 50)
    note = "--resume: runs/stopped holds no checkpoint (the run stopped before its first save); starting from step 0"
    assert len(lines) > 1 and whole_words(lines, note), lines


def test_the_verdict_wraps_between_words_on_a_terminal_and_is_one_line_a_message_in_a_log(
    tmp_path, monkeypatch, capsys
):
    """QA 36: the verdict's words (its summary and each warning with its fix) were printed as one long
    line that the terminal cut mid-word ("went from -" / "0.0648 to 0.377")."""
    from tiankong.tui.train_cli import _print_verdict

    run = fake_run(tmp_path, "sft", [1.25, 1.5, 2.0])
    expected = V.verdict_for(run)
    [warning] = expected.warnings
    for as_terminal in (True, False):
        screen = io.StringIO()
        console = Console(file=screen, force_terminal=as_terminal, width=50, color_system=None)
        monkeypatch.setattr(generate_input, "err", console)
        _print_verdict(run, run.out)
        lines = screen.getvalue().splitlines()
        if as_terminal:
            assert all(len(x) <= 50 for x in lines), lines
            start = next(i for i, x in enumerate(lines) if x.startswith("warning: "))
            end = next(i for i, x in enumerate(lines) if x.startswith("verdict written to"))
            assert end - start > 1 and whole_words(lines[start:end], f"warning: {warning}"), lines
        else:  # a log: one line a message, for `grep warning`
            assert f"warning: {warning}" in lines and f"Verdict (sft): {expected.summary}" in lines, lines
    capsys.readouterr()  # the figures table, drawn to the real stderr
