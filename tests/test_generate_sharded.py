"""`generate` across processes (torchrun, gloo on CPU): 1, 2 and 3 processes write the same records,
and a run killed with SIGKILL part-way resumes without duplicates to the uninterrupted output.

The reference is the one-process run, whose records other tests pin against transformers. Records
are compared without their "timing" field (seconds differ from run to run); everything else, text,
seeds, usage, finish reasons, order, is equal. The kill is a real SIGKILL of the worker processes
once the part files hold some records; where exactly it lands varies, the outcome may not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli, one_thread  # noqa: F401 (one_thread is an autouse fixture)
from tiny_models import make_model

PROMPTS = [
    "Once upon a time",
    '{"prompt": "The quick brown fox", "id": "fox"}',
    "def add(a, b):",
    '{"messages": [{"role": "user", "content": "Name a colour."}]}',
    "Emoji are fun",
    "A language model",
    "Numbers: 123",
]
FLAGS = ["--seed", "11", "--max-new-tokens", "12", "--batch-size", "2", "-n", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("gen") / "m", "llama")


def command(world: int, model, input, output, flags=FLAGS) -> list[str]:
    """`tiankong generate` in one plain process (world 1) or under torchrun with `world` processes."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world)] if world > 1 else []
    return [sys.executable, *launcher, "-m", "tiankong.tui.cli", "generate", "-m", str(model), "-i", str(input)] + [
        "-o",
        str(output),
        *flags,
    ]


def env():
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    e.pop("WORLD_SIZE", None)
    return e


@pytest.fixture
def run(monkeypatch, capsys):
    """run(world, model, input, output, flags): one process is this one (no interpreter to start);
    returns the stderr of a torchrun."""

    def go(world, model, input, output, flags=FLAGS):
        if world == 1:
            code, _, err = cli(monkeypatch, capsys, *command(1, model, input, output, flags)[3:])
            assert code == 0, err
            return
        proc = subprocess.run(command(world, model, input, output, flags), env=env(), capture_output=True, text=True)
        lines = [x for x in proc.stderr.splitlines() if "rank" in x or "rror" in x]
        assert proc.returncode == 0, "\n".join(lines)[-4000:]
        return proc.stderr

    return go


def children(pid: int) -> list[int]:
    """The processes whose parent is pid (Linux /proc)."""
    kids = []
    for name in os.listdir("/proc"):
        try:
            stat = Path("/proc", name, "stat").read_text() if name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(name))
    return kids


def records(path):
    """The file's records without their timing; lines must all be whole JSON records."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "timing"} for x in lines]


def parts(output):
    return sorted(output.parent.glob(output.name + ".part-*"))


def test_one_two_three_processes_write_the_same_records(model, tmp_path, run):
    data = tmp_path / "prompts.txt"
    data.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    outs = {w: tmp_path / f"out{w}.jsonl" for w in (1, 2, 3)}
    said = {w: run(w, model, data, out) for w, out in outs.items()}
    # The progress (rank 0's) counted rank 0's rows as if they were the run's; it says so now.
    # QA: that label ("generating (process 1 of 2: its share of 14 rows)") crushed the numbers at 80
    # columns; a short one, and a line before the bar for what it counts.
    assert "2 processes share the 14 rows to do; the bar counts process 1's 8\nprocess 1/2 8/8 (100%)" in said[2]
    one = records(outs[1])
    assert len(one) == 2 * len(PROMPTS)
    assert [r["seed"] for r in one] == [11, 12] * len(PROMPTS)  # seeds belong to samples, not processes
    assert [r.get("id") for r in one[2:4]] == ["fox", "fox"] and "prompt" not in one[6]  # input order
    assert len({r["text"] for r in one}) > len(PROMPTS)  # real, different answers, not one repeated
    for w in (2, 3):
        assert records(outs[w]) == one, w
        assert not parts(outs[w])  # merged and removed


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds torchrun's workers in /proc")
def test_killed_run_resumes_without_duplicates(model, tmp_path, run, killed=2, resumed=1):
    """Kill both workers of a torchrun (SIGKILL) once rank 0's part holds 2 records (killing the launcher
    alone would not do: its workers run on in their own sessions); then the
    first prompt is edited and a torn line appended to a part, as a kill mid-write leaves. The run
    again, with another number of processes, must redo the edited row, skip the others finished,
    and equal an uninterrupted run on the edited input."""
    flags = ["--seed", "5", "--max-new-tokens", "64", "--batch-size", "1", "--device", "cpu"]
    prompts = [f"Once upon a time {i}" for i in range(16)]
    data, edited = tmp_path / "a.txt", tmp_path / "b.txt"
    data.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    edited.write_text("\n".join(["The dog", *prompts[1:]]) + "\n", encoding="utf-8")
    ref, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    run(1, model, edited, ref, flags)

    proc = subprocess.Popen(
        command(killed, model, data, out, flags),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = out.with_name(out.name + ".part-0")
    deadline = time.monotonic() + 120
    while not (first.exists() and first.read_bytes().count(b"\n") >= 2):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    workers = children(proc.pid)  # torchrun starts each in its own session: kill them, not the group
    assert len(workers) == killed
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=120) != 0  # the launcher sees its workers die and gives up
    assert not out.exists()
    done = [json.loads(x) for p in parts(out) for x in p.read_text(encoding="utf-8").splitlines() if x.endswith("}")]
    assert 2 <= len(done) < len(prompts), "the kill should land part-way"
    assert 0 in {d["row"] for d in done}  # the row whose prompt is edited below had finished
    with first.open("a", encoding="utf-8") as f:
        f.write('{"row": 15, "key": "ab')  # torn: no newline

    run(resumed, model, edited, out, flags)
    got = records(out)
    assert got == records(ref)
    assert len(got) == len(prompts) and got[0]["prompt"] == "The dog"
    assert not parts(out)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    for d in done:  # finished rows were kept, timing and all, not generated again; the edited one was
        assert (lines[d["row"]] == d["out"]) == (d["row"] != 0), d["row"]
