"""Small helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch


def cli(monkeypatch, capsys, *args):
    """Run `tiankong ARGS` in-process through the console-script entry point; (code, stdout, stderr)."""
    from tiankong.tui.cli import main  # imported here: the CLI pulls in torch and the engine

    monkeypatch.setattr(sys, "argv", ["tiankong", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def imports_torch(code: str, timeout: int = 120) -> bool:
    """Whether running `code` in a fresh interpreter imports torch (it must run without error)."""
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('torch' in sys.modules)\n"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "True"


class DeadlinePassed(BaseException):
    """Not an Exception (nor a TimeoutError, an OSError): no error handler of the code under test
    may turn it into a neat one-line message that passes the test."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail, not hang, when the block runs past `seconds` (the main thread only): SIGALRM interrupts
    even a blocking system call, such as opening a FIFO that no writer will ever open."""

    def expire(signum, frame):
        raise DeadlinePassed(f"still running after {seconds} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core box: one thread avoids oversubscription (and is ~10x faster there).

    Import it into a test module (`from helpers import one_thread`) to apply it to that module.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torchrun(args, timeout=240):
    """`tiankong train ARGS` in two gloo processes (torchrun --standalone); fails the test on error."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tiankong.tui.cli",
        "train",
        *map(str, args),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


MAX_RSS_BYTES = 3 << 29  # 1.5 GiB: generous on a small fixture (importing torch alone is ~0.5 GiB)


def tiankong(*args, timeout=60):
    """`tiankong ARGS` as a subprocess: (exit code, stderr lines, seconds). Every case must end
    within `timeout` seconds and under MAX_RSS_BYTES of peak memory (the child's own rusage)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RUST_BACKTRACE": "0"}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiankong.tui.cli", *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reaps the child with its peak RSS (kB on Linux)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    assert seconds < timeout, f"took {seconds:.0f} s: {args}"
    assert usage.ru_maxrss * 1024 < MAX_RSS_BYTES, f"peak memory {usage.ru_maxrss >> 10} MB: {args}"
    return proc.returncode, err.strip().splitlines(), seconds


def read_only_mount(path) -> bool:
    """Make the folder `path` a read-only bind mount of itself, as a read-only disk is; False where
    this process may not mount (not root, or no mount namespace). Undo with `umount path`."""
    if os.geteuid() != 0:
        return False
    ok = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    if ok and subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", str(path)], capture_output=True)
        return False
    return ok
