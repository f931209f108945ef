"""Fixtures shared by several test files (pytest finds them here; no test imports another's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiankong.tui.store import DB_NAME, Store


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
