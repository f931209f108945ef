"""Fixtures shared by several test files (pytest finds them here; no test imports another's)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from tiankong.tui.store import DB_NAME, Store


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """A training command run in-process may lower torch's thread count for a busy machine
    (trainers/cpu_threads.py); the next test starts with the count it had."""
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
