"""Fixtures shared by several test files (pytest finds them here; no test imports another's)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tiankong.tui.store import DB_NAME, Store

# ---------------------------------------------------------------- pytest-xdist (pyproject's addopts)
# The workers' snapshot reports. syrupy 4 leaves its unused-snapshot check out in an xdist worker, and
# a worker alone could not make it: syrupy discovers every snapshot file beside a test file's folder,
# and counts those no test of this worker used. So each worker sends what it used and what it found
# unused, and the controller says (or fails on) what no worker used. Each test file runs whole in one
# worker (--dist loadfile): a snapshot its tests did not use is unused. --snapshot-update deletes
# files: it runs in one process, syrupy's own way (pytest_cmdline_main).


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """--snapshot-update in one process: syrupy deletes the unused snapshots only there."""
    if getattr(config.option, "update_snapshots", False) and getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0


def pytest_configure(config):
    """The xdist controller, before it starts its workers: OpenMP threads (torch's, the compiled
    step's) that wait at a barrier sleep rather than spin (OMP_WAIT_POLICY=PASSIVE, unless set), so
    two workers on two cores do not take each other's time spinning (test_repack ran 2x slower
    beside another worker). It changes how idle threads wait, never what they compute."""
    if not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """A worker sends its syrupy report (after syrupy's own sessionfinish made it); the controller
    fails the run where syrupy would have: unused snapshots without --snapshot-warn-unused."""
    config = session.config
    report = getattr(getattr(config, "_syrupy", None), "report", None)
    if not hasattr(config, "workerinput"):
        parts = config.stash.get(_SNAPSHOT_PARTS, [])
        if parts and _unused(parts) and not config.option.warn_unused_snapshots:
            session.exitstatus |= 1  # syrupy's EXIT_STATUS_FAIL_UNUSED
        return
    if report is None:
        return

    def where(location: str) -> str:
        try:
            return str(Path(location).relative_to(report.base_dir))
        except ValueError:
            return location

    config.workeroutput["snapshots"] = {
        "failed": report.num_failed,
        "passed": report.num_matched,
        "generated": report.num_created,
        "updated": report.num_updated,
        "used": [where(c.location) for c in report.used],
        # location -> the snapshot names in it unused ([]: a file of snapshots no test here names)
        "unused": {where(c.location): _names(c) for c in report.unused} if report.num_unused else {},
    }


_SNAPSHOT_PARTS = pytest.StashKey[list]()


def _names(collection) -> list[str]:
    """The unused snapshots' names in a collection; [] for a file no test names (syrupy's
    SnapshotUnknownCollection, whose one snapshot is a placeholder)."""
    from syrupy.data import SnapshotUnknownCollection

    return [] if isinstance(collection, SnapshotUnknownCollection) else sorted(s.name for s in collection)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller keeps each worker's syrupy report (pytest_sessionfinish above)."""
    if "snapshots" in getattr(node, "workeroutput", {}):
        node.config.stash.setdefault(_SNAPSHOT_PARTS, []).append(node.workeroutput["snapshots"])


def _unused(parts: list[dict]) -> dict[str, list[str]]:
    """The snapshots no worker used: location -> names (a file found unused by one worker and used by
    another, a test file's snapshot folder seen from the other's tests, is used)."""
    used = {location for part in parts for location in part["used"]}
    unused: dict[str, list[str]] = {}
    for part in parts:
        for location, names in part["unused"].items():
            if location not in used or names:
                unused[location] = sorted({*unused.get(location, []), *names})
    return unused


def _snapshot_lines(parts: list[dict], details: bool) -> list[str]:
    """What syrupy's terminal summary says (its SnapshotReport.lines), for the workers' reports together."""

    def count(n: int, what: str) -> str:
        return f"{n} {what.replace('snapshot', 'snapshots') if n != 1 else what}"

    total = {k: sum(p[k] for p in parts) for k in ("failed", "passed", "generated", "updated")}
    said = [count(total[k], f"snapshot {k}.") for k in total if total[k]]
    unused = _unused(parts)
    n = sum(len(names) or 1 for names in unused.values())
    if n:
        said.append(count(n, "snapshot unused."))
    lines = [" ".join(said)]
    if n:
        lines.append("")
        if details:
            for location, names in sorted(unused.items()):
                lines.append(f"Unused {', '.join(names) or 'unknown snapshot collection'} ({location})")
        lines.append("Re-run pytest with --snapshot-update to delete unused snapshots.")
    return lines


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """The controller's snapshot summary, where syrupy's own says nothing under xdist."""
    parts = config.stash.get(_SNAPSHOT_PARTS, [])
    lines = _snapshot_lines(parts, config.option.include_snapshot_details)
    if parts and lines[0]:
        terminalreporter.write_sep("-", "snapshot report summary")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """A training command run in-process sets torch's thread count (--threads, or the count a resumed
    run started on: trainers/cpu_threads.py); the next test starts with the count it had."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _textual_settles_in_short_looks():
    """Textual's pilot waits after every key until the app looks idle: windows of 20 ms until one
    holds under 1 ms of CPU (textual._wait), so each key costs at least 40 ms and over half the
    playground tests' time went to these waits. Windows of 5 ms keep the same share of CPU as the
    sign of idleness; a test that needs the app in some state waits for that state (wait_for),
    never on how long a key press happens to take."""
    from textual import _wait  # (a private module: where a later Textual moves these, nothing changes)

    if not all(hasattr(_wait, name) for name in ("SLEEP_GRANULARITY", "SLEEP_IDLE")):
        yield
        return
    before = _wait.SLEEP_GRANULARITY, _wait.SLEEP_IDLE
    _wait.SLEEP_GRANULARITY, _wait.SLEEP_IDLE = 0.005, 0.005 / 20
    yield
    _wait.SLEEP_GRANULARITY, _wait.SLEEP_IDLE = before


@pytest.fixture
def store(tmp_path):
    """A fresh SQLite store in the test's own data folder."""
    s = Store(tmp_path / "data" / DB_NAME)
    yield s
    s.close()


@pytest.fixture(scope="session")
def bytelevel_folder(tmp_path_factory) -> Path:
    """A GPT-2-style byte-level BPE tokenizer folder saved by transformers."""
    from test_tokenizer import make_bytelevel_folder

    return make_bytelevel_folder(tmp_path_factory.mktemp("bytelevel"))


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory) -> Path:
    """A Llama-style (Metaspace, byte fallback) tokenizer folder saved by transformers."""
    from test_tokenizer import make_llama_folder

    return make_llama_folder(tmp_path_factory.mktemp("llama"))


@contextlib.contextmanager
def _uvicorn(app, **config):
    """Any ASGI app under a real uvicorn on a free port of 127.0.0.1, in a thread -> (port, server)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        yield port, server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def _serving(engine, **overrides):
    """A real `tiankong serve` over `engine`, with ServeConfig fields overridden -> (base URL
    ending /v1, batcher, uvicorn server); stopped on exit."""
    from tiankong.tui.serve import ServeConfig, build_app, new_batcher

    cfg = ServeConfig(**overrides)
    batcher = new_batcher(engine, cfg)
    try:
        app = build_app(engine, batcher, cfg)
        with _uvicorn(app, timeout_graceful_shutdown=cfg.drain_s) as (port, server):
            yield f"http://127.0.0.1:{port}/v1", batcher, server
    finally:
        batcher.close()


@pytest.fixture(scope="session")
def serving():
    """`with serving(engine, **serve_config) as (url, batcher, server):` a live tiankong serve."""
    return _serving


@pytest.fixture(scope="session")
def asgi_server():
    """`with asgi_server(app) as (port, server):` any ASGI app (e.g. a fake of another server)."""
    return _uvicorn
