"""tiankong in odd environments at run time: no (working) compiler, a cache folder it cannot write,
a terminal or locale that cannot encode Unicode, no terminal for the playground, Ctrl+C on serve
(engine/native.py, tui/cli_env.py)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tiankong.engine import native
from tiankong.engine.errors import InputError
from tiankong.tui import cli_env

CLI = [sys.executable, "-m", "tiankong.tui.cli"]
GENERATE = [*CLI, "generate", "--raw", "-p", "Once", "--max-new-tokens", "2", "--preset", "deterministic"]


def need_native() -> native.Library:
    lib = native.library()
    if lib is None:
        pytest.skip(f"no compiled decode step here: {native.reason()}")
    return lib


def real_library() -> str:
    return need_native()._name


def fake_compiler(tmp_path: Path, works: bool, real: str) -> Path:
    """A C compiler that logs each build to tmp_path/calls and then "builds" by copying the real
    library `real` to its -o (works) or fails with an error line."""
    cc = tmp_path / "fakecc"
    build = (
        f'while [ $# -gt 0 ]; do [ "$1" = -o ] && {{ cp {real} "$2"; exit 0; }}; shift; done\nexit 1\n'
        if works
        else "echo 'decode.c:1:1: error: boom' >&2\nexit 1\n"
    )
    cc.write_text(
        f'#!/bin/sh\n[ "$1" = --version ] && {{ echo fakecc 1.0; exit 0; }}\necho x >> {tmp_path / "calls"}\n{build}'
    )
    cc.chmod(0o755)
    return cc


class Announced(list):
    real = ""


@pytest.fixture
def fresh(monkeypatch):
    """native's per-process state reset (and restored afterwards), builds announced into a list;
    the real library's path as `said.real`."""
    said = Announced()
    said.real = real_library()
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_reason", None)
    monkeypatch.setattr(native, "_announce", said.append)
    return said


def calls(tmp_path: Path) -> int:
    log = tmp_path / "calls"
    return len(log.read_text().splitlines()) if log.exists() else 0


# ---------------------------------------------------------------- the build and its cache


def test_a_failed_build_is_retried_after_an_hour_not_before(tmp_path, monkeypatch, fresh):
    # QA: one failed build (a compiler missing its headers, say) left a .failed file for good: every
    # later process decoded through torch until someone found and deleted it.
    cc = fake_compiler(tmp_path, True, fresh.real)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    version = "fakecc 1.0\n"  # as `fakecc --version` prints it: part of the cache key
    failed = native._cache_dir() / f"decode-{native._build_key(str(cc), version)}.failed"
    failed.parent.mkdir(parents=True)
    failed.write_text("compiling decode.c with fakecc failed: decode.c:1:1: error: boom\n")
    assert native.library() is None and calls(tmp_path) == 0  # a recent failure: not tried again
    assert native.reason() == (
        f"compiling decode.c with fakecc failed: decode.c:1:1: error: boom (tried again in 60 min, "
        f"or at once if you delete {failed})"
    )
    hour_ago = time.time() - native.RETRY_AFTER_S - 1
    os.utime(failed, (hour_ago, hour_ago))
    monkeypatch.setattr(native, "_reason", None)  # a new process
    assert native.library() is not None and native.reason() is None
    assert calls(tmp_path) == 1 and not failed.exists() and fresh == ["once per machine"]


def test_a_failed_build_records_the_compiler_and_is_read_by_the_next_process(tmp_path, monkeypatch, fresh):
    cc = fake_compiler(tmp_path, False, fresh.real)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert native.library() is None
    assert native.reason() == "compiling decode.c with fakecc failed: decode.c:1:1: error: boom"
    (failed,) = (tmp_path / "cache" / "tiankong" / "native").glob("*.failed")
    assert failed.read_text().splitlines()[1:3] == [f"compiler: {cc}", "version: fakecc 1.0"]
    monkeypatch.setattr(native, "_reason", None)
    assert native.library() is None and "tried again in 60 min" in native.reason() and calls(tmp_path) == 1


@pytest.mark.parametrize("cache", ["a-file/x", "/proc/nonexistent/.cache"])
def test_a_cache_folder_that_cannot_be_written_gets_a_build_for_this_process(tmp_path, monkeypatch, fresh, cache):
    # QA: HOME=/proc/nonexistent or XDG_CACHE_HOME=/dev/null/x: "compiled step unavailable: [Errno
    # 20] Not a directory", and the torch path for good. Now the step builds in a temporary folder.
    (tmp_path / "a-file").write_text("x")
    if cache.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    monkeypatch.setenv("CC", str(fake_compiler(tmp_path, True, fresh.real)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / cache))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    assert native.library() is not None and native.reason() is None and calls(tmp_path) == 1
    (how,) = fresh
    assert how.startswith(
        f"for this process only: the build cache {tmp_path / cache}/tiankong/native cannot be written ("
    )
    assert how.endswith("); set XDG_CACHE_HOME to a writable folder to keep it")
    assert list(temp.iterdir()) == []  # the temporary folder went once the library was loaded


def test_no_announcement_when_the_build_is_cached(tmp_path, monkeypatch, fresh):
    monkeypatch.setenv("CC", str(fake_compiler(tmp_path, True, fresh.real)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    native.library()
    monkeypatch.setattr(native, "_lib", None)
    assert native.library() is not None and fresh == ["once per machine"] and calls(tmp_path) == 1


# ---------------------------------------------------------------- what the commands say about it


def test_generate_says_when_it_builds_and_when_it_decodes_through_torch(tmp_path):
    # QA: the first start compiled for 8-12 s with no word, and without the step decoding ran some
    # times slower with no word either (only `tiankong info` said it).
    real = real_library()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "CC": str(fake_compiler(tmp_path, True, real))}
    first, again = (subprocess.run(GENERATE, capture_output=True, text=True, env=env, timeout=300) for _ in range(2))
    assert first.returncode == 0 and json.loads(first.stdout)["text"] is not None, first.stderr
    assert first.stderr.splitlines()[1:] == ["building the compiled decode step (once per machine)…"]
    assert again.returncode == 0 and len(again.stderr.splitlines()) == 1, again.stderr  # loading only
    env.update(CC=str(fake_compiler(tmp_path / "cache", False, real)))  # another compiler: a new key
    broken = subprocess.run(GENERATE, capture_output=True, text=True, env=env, timeout=300)
    assert broken.returncode == 0 and json.loads(broken.stdout)["text"] is not None, broken.stderr
    assert broken.stderr.splitlines()[1:] == [
        "building the compiled decode step (once per machine)…",
        "note: compiled step unavailable (compiling decode.c with fakecc failed: decode.c:1:1: error: boom); "
        "decoding through torch, several times slower; `tiankong info` for details",
    ]
    off = subprocess.run(GENERATE, capture_output=True, text=True, env={**env, "TIANKONG_NATIVE": "0"}, timeout=300)
    assert off.returncode == 0 and len(off.stderr.splitlines()) == 1, off.stderr  # switched off: said by no one


def test_the_decode_notice_is_for_a_cpu_model_without_the_step(monkeypatch):
    monkeypatch.setattr(native, "_reason", "no C compiler found (set CC, or install gcc)")
    monkeypatch.delenv("TIANKONG_NATIVE", raising=False)
    torch_path = SimpleNamespace(device=torch.device("cpu"), decode_path="torch, oneDNN-packed weights; ...")
    assert cli_env.decode_notice(torch_path) == (
        "compiled step unavailable (no C compiler found (set CC, or install gcc)); decoding through torch, "
        "several times slower; `tiankong info` for details"
    )
    assert cli_env.decode_notice(SimpleNamespace(device=torch.device("meta"), decode_path="torch")) is None
    assert cli_env.decode_notice(SimpleNamespace(url="http://x/v1")) is None  # a server
    monkeypatch.setenv("TIANKONG_NATIVE", "0")
    assert cli_env.decode_notice(torch_path) is None


@pytest.mark.parametrize("value", ["banana", "off", "yes", "2"])
def test_a_native_switch_that_is_neither_0_nor_1_is_refused_by_name(monkeypatch, value):
    # Was taken as "on" without a word: TIANKONG_NATIVE=off left the compiled step running.
    monkeypatch.setenv("TIANKONG_NATIVE", value)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_reason", None)
    with pytest.raises(InputError) as error:
        native.library()
    assert str(error.value) == (
        f"TIANKONG_NATIVE is {value!r}; set it to 0 (decode through torch) or 1 (the compiled step, the "
        "default), or unset it"
    )
    for allowed, off in (("0", True), ("1", False), ("", False)):
        monkeypatch.setenv("TIANKONG_NATIVE", allowed)
        assert native.switched_off() is off


# ---------------------------------------------------------------- encodings and arguments


def test_output_that_cannot_encode_unicode_does_not_crash_and_jsonl_stays_utf8(tmp_path):
    # QA: with LANG=C (PYTHONUTF8=0) or PYTHONIOENCODING=latin-1, --help, presets, tokenize and
    # generate died with a UnicodeEncodeError traceback; and `-p 你好` was refused as "not UTF-8".
    c_locale = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    c_locale.pop("PYTHONIOENCODING", None)
    for env in (c_locale, {**os.environ, "PYTHONIOENCODING": "latin-1"}):
        done = subprocess.run([*GENERATE[:6], "你好", *GENERATE[7:]], capture_output=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout.decode("utf-8"))["prompt"] == "你好"  # a pipe gets UTF-8: JSON Lines'


def test_a_terminal_that_cannot_encode_unicode_gets_question_marks_and_a_note():
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "100"}
    proc = subprocess.Popen([*CLI, "--help"], stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out = b""
    while select.select([leader], [], [], 120)[0]:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child is gone: the terminal closed
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(60) == 0, out
    text = out.decode("ascii")
    assert "Traceback" not in text and "?" in text and "Usage" in text  # the help's 填空 as ??
    assert "note: this terminal's encoding is ascii, so characters it cannot show are printed as ?; " in text
    assert "PYTHONIOENCODING=utf-8 shows them" in text


def test_arguments_read_under_an_ascii_locale_are_utf8_again():
    utf8 = "你好".encode()
    escaped = utf8.decode("ascii", "surrogateescape")  # as Python decodes argv under LC_ALL=C
    if os.fsencode(escaped) != utf8:
        pytest.skip("the file system encoding here does not keep the bytes")
    assert cli_env.utf8_args(["-p", escaped, "plain"]) == ["-p", "你好", "plain"]
    latin = b"caf\xe9".decode("ascii", "surrogateescape")  # not UTF-8 either: left for the command to refuse
    assert cli_env.utf8_args([latin]) == [latin]


# ---------------------------------------------------------------- the playground needs a terminal


def test_chat_without_a_terminal_is_refused_in_one_line(tmp_path):
    # QA: `tiankong chat </dev/null >out.txt` wrote escape sequences into the file and ran until killed.
    done = subprocess.run(
        [*CLI, "chat", "--data-dir", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "error: chat needs a terminal; use `tiankong generate` for scripts\n"


def test_each_playground_command_names_itself(monkeypatch):
    monkeypatch.setattr(cli_env, "_is_terminal", lambda stream: stream is sys.stdin)  # stdout redirected
    with pytest.raises(cli_env.InputError, match=r"^compare needs a terminal; use `tiankong generate` for scripts$"):
        cli_env.need_terminal("compare")
    with pytest.raises(cli_env.InputError, match=r"^rank needs a terminal \(you rank with keys on its screen\)"):
        cli_env.need_terminal("rank")
    monkeypatch.setattr(cli_env, "_is_terminal", lambda stream: True)
    cli_env.need_terminal("chat")


# ---------------------------------------------------------------- serve


def test_serve_says_stopped_on_ctrl_c_and_exits_130():
    # QA: Ctrl+C ended serve without a word; its first line nested parentheses.
    need_native()  # built: no "building" line, no notice
    proc = subprocess.Popen([*CLI, "serve", "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stderr.readline(), proc.stderr.readline()]
        assert lines[1].startswith("serving tiankong-mini on http://127.0.0.1:"), lines
        url = lines[1].split(" on ")[1].split(";")[0]
        assert "; decode: " in lines[1] and "((" not in lines[1]
        for _ in range(100):  # up once it answers
            try:
                urllib.request.urlopen(f"{url}/models", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        assert proc.stderr.read() == "stopped (Ctrl+C)\n"
    finally:
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- the playground says it too


def test_the_chat_says_while_the_step_builds_and_when_decoding_is_slower(tmp_path, monkeypatch, fresh, store):
    import asyncio

    from tiny_models import make_model

    import tiankong.tui.app as app_module
    from tiankong.tui.screens.chat import ChatScreen

    monkeypatch.setenv("CC", str(fake_compiler(tmp_path, True, fresh.real)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_announce", None)  # the app installs its own
    states: list[str | None] = []
    status = ChatScreen._status
    monkeypatch.setattr(
        ChatScreen, "_status", lambda self, state=None, **kw: states.append(state) or status(self, state, **kw)
    )
    monkeypatch.setattr(
        app_module, "decode_notice", lambda eng: "compiled step unavailable (why); decoding through torch"
    )
    model = make_model(tmp_path / "tiny-llama", "llama")

    async def go():
        app = app_module.TiankongApp(model, store=store, export_dir=tmp_path, show_timing=False)
        async with app.run_test(size=(100, 32)) as pilot:
            for _ in range(1500):
                if app.engine is not None or app.engine_error is not None:
                    break
                await pilot.pause(0.02)
            await pilot.pause(0.1)
            return app.engine_error, [(n.title, n.message) for n in app._notifications]

    error, notes = asyncio.run(go())
    assert error is None and calls(tmp_path) == 1
    assert "building the compiled decode step (once per machine)…" in states
    assert ("slower decoding", "compiled step unavailable (why); decoding through torch") in notes


def test_the_model_panel_has_a_decode_row():
    # QA: the ctrl+t model panel left out how the model decodes (only `tiankong info` said it).
    from rich.console import Console

    from tiankong.tui.screens.tokens import info_table

    console = Console(width=200, record=True)
    console.print(info_table({"folder": "/a/b", "decode": "torch; compiled step unavailable: no C compiler"}))
    text = console.export_text()
    assert "decode" in text and "compiled step unavailable: no C compiler" in text and "/a/b" not in text


def test_the_license_ships_with_the_package():
    # pyproject declares MIT; the wheel carries the text (PEP 639 license-files).
    root = Path(__file__).resolve().parents[1]
    assert (root / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 the tiankong authors\n")
    assert 'license-files = ["LICENSE"]' in (root / "pyproject.toml").read_text()
