"""Small helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import sys

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


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core box: one thread avoids oversubscription (and is ~10x faster there).

    Import it into a test module (`from helpers import one_thread`) to apply it to that module.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
