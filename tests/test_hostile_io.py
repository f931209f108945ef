"""Hostile and broken inputs and outputs (issue 16, items 0, 5, 6 and 7): every case ends with exit
code 2 and one line, or a warning line and a result; nothing stored or written before is changed.

Outputs: a full file system (RLIMIT_FSIZE in a subprocess), a read-only folder (a read-only bind
mount where this process may mount, else os.replace failing with EROFS), a symlink (written
through), a FIFO and a device (refused, never replaced, never hanging), a missing folder.
Prompts: bytes that are not UTF-8, lone surrogates, a prompt too long for the context on line 10, a
prompt of megabytes. The store: re-importing a file, a damaged vote row.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli, read_only_mount

from tiankong.tui.store import DB_NAME, Response, Store, Vote

MODEL = Path(__file__).resolve().parents[1] / "models" / "tiankong-mini"
GEN = ["generate", "-m", MODEL, "--max-new-tokens", "2", "--seed", "1", "--device", "cpu"]


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    err = "".join(x for x in err.splitlines(True) if not x.startswith("loading "))  # generate's log line, if it loaded
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err


def run(args, timeout=120, **kw) -> subprocess.CompletedProcess:
    """`tiankong ARGS` in a child process (for resource limits, FIFOs and stdout devices)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tiankong.tui.cli", *map(str, args)],
        env=env,
        capture_output="stdout" not in kw,
        text=True,
        timeout=timeout,
        **kw,
    )


def votes(n: int, text: str = "Blue.") -> list[Vote]:
    return [
        Vote(
            None,
            f"prompt {i}",
            [{"role": "user", "content": f"prompt {i}"}],
            [
                Response("A", "m", "balanced", {}, 1, f"{text} {i}", "eos"),
                Response("B", "m", "creative", {}, 2, f"Red. {i}", "eos"),
            ],
            "ranked",
            [0, 1],
            "ann",
            True,
        )
        for i in range(n)
    ]


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A data folder with 20 votes (~6 kB each), set as TIANKONG_DATA_DIR."""
    folder = tmp_path / "data"
    with Store(folder / DB_NAME) as s:
        s.add_votes(votes(20, text="x" * 6000))
    monkeypatch.setenv("TIANKONG_DATA_DIR", str(folder))
    return folder


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ prefs export: where it writes


def test_export_on_a_full_file_system_reports_it_and_keeps_the_old_file(data, tmp_path):
    old = tmp_path / "prefs.jsonl"
    old.write_text("the old export\n")
    limit = 64 * 1024  # the database needs less; the export (~120 kB) fails with EFBIG, as on a full disk
    proc = run(
        ["prefs", "export", "-o", old], preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    )
    one_line_error(proc.returncode, proc.stderr, f"cannot write {old}", "ulimit")
    assert old.read_text() == "the old export\n" and leftovers(tmp_path) == []


def test_export_to_dev_full_is_refused_and_dev_full_stays_a_device(data, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "prefs", "export", "-o", "/dev/full")
    one_line_error(code, err, "/dev/full", "device")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_export_to_stdout_on_dev_full_is_one_line(data):
    with open("/dev/full", "w") as full:
        proc = run(["prefs", "export"], stdout=full, stderr=subprocess.PIPE)
    one_line_error(proc.returncode, proc.stderr, "standard output", "disk is full")


def test_export_writes_through_a_symlink(data, tmp_path, monkeypatch, capsys):
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real.name)
    code, out, err = cli(monkeypatch, capsys, "prefs", "export", "-o", link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == real.name
    assert len(real.read_text().splitlines()) == 20


def test_export_onto_a_fifo_is_refused_without_hanging(data, tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    proc = run(["prefs", "export", "-o", fifo], timeout=60)  # a hang is a TimeoutExpired
    one_line_error(proc.returncode, proc.stderr, "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_export_into_a_read_only_folder_is_one_line(data, tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "prefs.jsonl").write_text("old\n")
    mounted = read_only_mount(ro)
    if not mounted:  # no mounting here: the rename fails as it would on a read-only file system

        def refuse(*a, **k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(os, "replace", refuse)
    try:
        code, out, err = cli(monkeypatch, capsys, "prefs", "export", "-o", ro / "prefs.jsonl")
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
    one_line_error(code, err, "read-only")
    assert (ro / "prefs.jsonl").read_text() == "old\n" and leftovers(ro) == []


# ------------------------------------------------------------------ generate: prompts and -o


def test_generate_over_long_prompt_on_line_10_leaves_the_output_byte_identical(tmp_path, monkeypatch, capsys):
    existing = tmp_path / "existing.jsonl"
    existing.write_bytes(b'{"old": "records"}\n' * 8)
    before = existing.read_bytes()
    src = tmp_path / "prompts.txt"
    src.write_text("".join(f"prompt {i}\n" for i in range(1, 10)) + "word " * 700 + "\n")
    code, out, err = cli(monkeypatch, capsys, *GEN, "--raw", "-i", src, "-o", existing)
    one_line_error(code, err, "line 10", "context")
    assert existing.read_bytes() == before and leftovers(tmp_path) == []


def test_generate_megabyte_prompt_is_refused_before_tokenizing(tmp_path, monkeypatch, capsys):
    src = tmp_path / "huge.txt"
    src.write_text("x" * 20_000_000 + "\n")
    started = time.perf_counter()
    code, out, err = cli(monkeypatch, capsys, *GEN, "--raw", "-i", src)
    one_line_error(code, err, "line 1", "20,000,000 characters")
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize(
    "target, needle", [("missing/out.jsonl", "does not exist"), ("folder", "folder"), ("/dev/full", "device")]
)
def test_generate_output_that_cannot_be_a_file_is_one_line(tmp_path, monkeypatch, capsys, target, needle):
    (tmp_path / "folder").mkdir()
    out_path = target if target.startswith("/") else tmp_path / target
    code, out, err = cli(monkeypatch, capsys, *GEN, "-p", "hi", "-o", out_path)
    one_line_error(code, err, needle)


def test_generate_output_in_a_folder_it_cannot_write_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    # QA: found only after the model loaded and the first batch was generated. No user, root
    # included, may make a file in /sys (sysfs); a read-only bind mount too where this process may mount.
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = read_only_mount(ro)
    try:
        for folder in [Path("/sys"), *([ro] if mounted else [])]:
            if not folder.is_dir():
                continue
            code, out, err = cli(monkeypatch, capsys, *GEN, "-p", "hi", "-o", folder / "out.jsonl")
            one_line_error(code, err, f"cannot write {folder / 'out.jsonl'}: ")
            assert "loading" not in err and out == "" and not (folder / "out.jsonl").exists()
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
    assert list(ro.iterdir()) == []
    ok = tmp_path / "ok"  # where it can write, the probe leaves nothing behind
    ok.mkdir()
    code, out, err = cli(monkeypatch, capsys, *GEN, "-p", "hi", "-o", ok / "out.jsonl")
    assert code == 0 and [x.name for x in ok.iterdir()] == ["out.jsonl"], err


def test_generate_writes_the_output_whole(tmp_path, monkeypatch, capsys):
    dest = tmp_path / "out.jsonl"
    dest.write_text("old\n")
    code, out, err = cli(monkeypatch, capsys, *GEN, "-p", "a", "-p", "b", "-o", dest)
    assert code == 0, err
    assert [json.loads(x)["prompt"] for x in dest.read_text().splitlines()] == ["a", "b"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("raw_prompt", [b"\xff\xfe", b"\xed\xa0\x80", b"ok \xc3"])
def test_generate_prompt_that_is_not_utf8_is_one_line(raw_prompt, monkeypatch, capsys):
    prompt = os.fsdecode(raw_prompt)  # what Python makes of these argv bytes: lone surrogates
    code, out, err = cli(monkeypatch, capsys, *GEN, "--raw", "-p", prompt)
    one_line_error(code, err, "--prompt", "UTF-8")


def test_generate_lone_surrogate_in_a_jsonl_line_names_the_line(tmp_path, monkeypatch, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "fine"}\n{"prompt": "bad \\ud800 escape"}\n')
    code, out, err = cli(monkeypatch, capsys, *GEN, "-i", src)
    one_line_error(code, err, "line 2", "surrogate")


# ------------------------------------------------------------------ the store


def _count(folder: Path) -> int:
    with sqlite3.connect(folder / DB_NAME) as conn:
        return conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]


def test_reimport_reports_duplicates_and_changes_nothing(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "data"
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(5)))
    code, out, err = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", folder)
    assert code == 0 and "imported 5 votes" in err and _count(folder) == 5
    code, out, err = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", folder)
    assert code == 0 and "imported 0 votes" in err and "5 duplicates skipped" in err, err
    assert _count(folder) == 5


def test_imports_before_the_hash_column_are_recognised_after_the_migration(tmp_path):
    from tiankong.tui import store_records, store_schema
    from tiankong.tui.prefs import read_votes

    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(3)))
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as conn:  # a schema-2 database, as an older tiankong left it after an import
        for migration in store_schema.MIGRATIONS[:2]:
            migration(conn)
        conn.execute("PRAGMA user_version = 2")
        conn.executemany(
            "INSERT INTO votes (prompt, conversation, responses, outcome, ranking, rater, blind, "
            "source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [store_records._vote_row(v, "2025-01-01T00:00:00.000000Z")[:9] for v in read_votes(src)],
        )
    conn.close()
    with Store(path) as s:  # migrates: the old imports get their hashes
        assert s.import_votes(read_votes(src)) == (0, 3)
        assert len(s.list_votes(limit=None)) == 3


def test_large_imports_commit_in_batches(tmp_path):
    with Store(tmp_path / DB_NAME) as s:
        commits = []
        s._conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        assert s.import_votes(votes(25), batch_size=10) == (25, 0)
        assert len(commits) == 3  # 10 + 10 + 5: a voter in the playground waits for one batch at most


def test_surrogate_in_an_imported_row_is_one_line(tmp_path, monkeypatch, capsys):
    src = tmp_path / "pairs.jsonl"
    src.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "\\udc80", "chosen": "a", "rejected": "b"}\n'
    )
    code, out, err = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", tmp_path / "data")
    one_line_error(code, err, "line 2", "surrogate", "nothing was imported")


@pytest.mark.parametrize(
    "column, garbage",
    [
        ("responses", "not json at all"),
        ("ranking", "[0, 7]"),
        ("responses", "[1, 2]"),
        ("prompt", b"\xff\xfe not utf-8"),
    ],
)
def test_a_damaged_vote_row_is_skipped_and_named(data, monkeypatch, capsys, column, garbage):
    with sqlite3.connect(data / DB_NAME) as conn:
        value = "CAST(? AS TEXT)" if isinstance(garbage, bytes) else "?"
        conn.execute(f"UPDATE votes SET {column} = {value} WHERE id = 7", (garbage,))
    code, out, err = cli(monkeypatch, capsys, "prefs", "stats", "--format", "json")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) <= 1 and all("id 7" in x for x in lines), err
    report = json.loads(out)
    expected = 19 if column != "prompt" else 20  # stats never read the prompt
    assert report["totals"]["votes"] == expected
    code, out, err = cli(monkeypatch, capsys, "prefs", "export")
    assert code == 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "id 7" in err and "warning" in err, err
    assert len(out.splitlines()) == 19 and 7 not in [json.loads(x)["vote_id"] for x in out.splitlines()]
