"""`tiankong models` and `tiankong info` name each model readably at any width (QA findings 3, 7).

`models` in an 80- or 100-column terminal gave the where column 4-11 characters: a snapshot's hash
and path broken every few characters, 15-35 lines a model, the header wrapped (archi/tectu/re).
Piped, rich assumed 80 columns and cut likewise. `info` showed a blob's path cut at 80 columns
(sha256-c089c4443ffee1e25d5ef3f80…) where the name says which model, and no part count for a split
GGUF. The stores are faked as in test_resolve.py.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from helpers import cli, one_thread  # noqa: F401 - one_thread applies to this module
from rich.console import Console
from test_resolve import SHA, header_gguf, stores, tiny  # noqa: F401 - fixtures
from test_resolve_names import ggufs, ollama_tag  # noqa: F401 - fixtures

from tiankong.engine.model_list import human_bytes, list_models
from tiankong.tui.cli_inspect import print_models

LONG = "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF"
FILE = "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"


@pytest.fixture
def many(stores, ggufs):  # noqa: F811 - the fixtures imported above
    """The fake stores plus a real-length GGUF repo holding two quantizations (named REPO/FILE, 80
    characters) and two Ollama tags of a real model."""
    snapshot = stores / "hf" / "hub" / ("models--" + LONG.replace("/", "--")) / "snapshots" / SHA
    header_gguf(snapshot / FILE)
    header_gguf(snapshot / FILE.replace("Q4_K_M", "Q8_0"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(SHA)
    ollama_tag(stores, ggufs["f32"], "tinyllama", "latest")
    ollama_tag(stores, ggufs["q8_0"], "tinyllama", "q8")
    return stores


def shown(width: int) -> list[str]:
    out = io.StringIO()
    print_models(Console(file=out, width=width, force_terminal=True, color_system=None, emoji=False), list_models())
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 100, 200])
def test_models_in_a_terminal_fit_its_width_a_model_in_few_lines(many, width):
    found = list_models()
    lines = shown(width)
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    assert len(lines) <= 2 + 3 * len(found), "\n".join(lines)  # header or title, then <= 3 lines a model
    text = "\n".join(lines)
    for m in found:  # every name whole, on one line, as --model takes it
        assert any(m.name in line for line in lines), (m.name, text)
    assert f"{LONG}/{FILE}" in text and "ollama:tinyllama:q8" in text
    assert (
        text.count("archi") == text.count("architecture") and SHA not in text and "a" * 9 not in text
    )  # no header or hash folded
    assert f"snapshots/{SHA[:8]}…" in text or "…" in text  # the hash cut to 8, or the path in the middle
    assert "~/" in text and str(many) not in text  # home as ~


def test_models_where_keeps_the_file_name_and_cuts_in_the_middle(many):
    def where(width: int, name: str) -> str:
        (row,) = [line for line in shown(width) if f"{name} " in line]  # the table: one row a model
        return row.split("│")[-1].strip()

    room = where(300, f"{LONG}/{FILE}")  # room for the shortened path
    assert room == f"huggingface: ~/hf/hub/models--{LONG.replace('/', '--')}/snapshots/{SHA[:8]}…/{FILE}"
    assert re.fullmatch(r"ollama: ~/\.ollama/models/blobs/sha256-[0-9a-f]{8}…", where(300, "ollama:tinyllama:q8"))
    cut = where(200, f"{LONG}/{FILE}")  # 73 columns: cut in the middle, at a separator
    assert re.fullmatch(rf"huggingface: ~/hf/hub/models--\S+…/{re.escape(FILE)}", cut), cut


def test_middle_cuts_at_a_separator_and_never_splits_a_wide_character():
    from tiankong.tui.cli_inspect import _middle

    path = f"~/a/models--{'x' * 30}/snapshots/12345678…/{FILE}"
    for width in range(len(FILE) + 5, len(path)):  # the file's name whole, the start's 3 cells
        cut = _middle(path, width)
        assert len(cut) == width and re.fullmatch(rf"~/a[^…]*…(/\S+)?/{re.escape(FILE)}", cut), (width, cut)
    assert _middle(path, 20) == "~/a/mo…t-Q4_K_M.gguf"  # too narrow for the name: a third, two thirds
    assert _middle(path, len(path)) == path
    assert _middle("你好世界你好世界你好世界", 9) == "你好…世界"  # 9 cells: 2 + 2, the ellipsis, 2 + 2


def test_models_piped_gives_one_line_a_model_with_whole_paths(many, monkeypatch, capsys):
    # no COLUMNS: rich reads a pipe as 80 columns, no reason to cut paths (a COLUMNS set here would stay
    # in the module-level consoles a first command creates, tui/prefs.py's err, for later tests)
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, err = cli(monkeypatch, capsys, "models")
    assert code == 0, err
    found = list_models()
    rows = [line for line in out.splitlines() if "│" in line]  # the header row has ┃
    assert len(rows) == len(found), out
    for m, row in zip(found, rows, strict=True):
        assert m.name in row and m.path in row, (m, row)


def test_info_names_the_model_first_with_its_path_and_parts(many, monkeypatch, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)  # a pipe: 80 columns
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "ollama:tinyllama:q8")
    assert code == 0, err
    rows = [line.split("│") for line in out.splitlines()]
    assert rows[0][0].strip() == "name" and rows[0][1].strip() == "ollama:tinyllama:q8", out
    assert rows[1][0].strip() == "file"
    path = "".join(r[1].strip() for r in rows[1:] if r[0].strip() in ("file", ""))  # folded, whole
    blob = str(many / ".ollama" / "models" / "blobs")
    assert path.startswith(blob) and len(path) == len(blob) + len("/sha256-") + 64, out
    assert "…" not in out and "parts" not in out  # one file: no parts row
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "ollama:tinyllama:q8", "--format", "json")
    facts = json.loads(out)
    assert (facts["name"], facts["parts"]) == ("ollama:tinyllama:q8", 1)
    assert facts["path"] == facts["folder"] == path  # folder kept for scripts that read it


def test_info_counts_a_split_ggufs_parts(stores, monkeypatch, capsys, tmp_path, tiny):  # noqa: F811
    from test_gguf_split import _cache, write_split

    parts = write_split(tiny, tmp_path / "split" / "tiny-f32.gguf", "f32", 4)
    _cache(stores / "hf" / "hub", "tinyorg/split-GGUF", parts, "F32")
    monkeypatch.delenv("COLUMNS", raising=False)  # a pipe: 80 columns
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "tinyorg/split-GGUF", "--format", "json")
    assert code == 0, err
    facts = json.loads(out)
    assert facts["name"] == f"tinyorg/split-GGUF/F32/{parts[0].name}" and facts["parts"] == len(parts) > 1
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "tinyorg/split-GGUF")
    rows = {line.split("│")[0].strip(): line.split("│")[1].strip() for line in out.splitlines()}
    assert rows["parts"] == str(len(parts)) and rows["name"].startswith("tinyorg/split-GGUF/F32/"), out


def test_sizes_have_one_unit_scale(stores, monkeypatch, capsys):  # noqa: F811
    assert [human_bytes(n) for n in (0, 640, 999, 1000, 40_000, 999_949, 999_950, 4_600_000_000)] == [
        "0 B",
        "640 B",
        "999 B",
        "1.0 KB",
        "40.0 KB",
        "999.9 KB",
        "1.0 MB",
        "4.6 GB",
    ]
    monkeypatch.delenv("COLUMNS", raising=False)  # a pipe: 80 columns
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "tiny-org/Tiny-Llama", "--device", "cpu")
    assert code == 0, err
    rows = {line.split("│")[0].strip(): line.split("│")[1].strip() for line in out.splitlines()}
    code, js, err = cli(monkeypatch, capsys, "info", "-m", "tiny-org/Tiny-Llama", "--device", "cpu", "--format", "json")
    facts = json.loads(js)
    # the tiny model reads ~0.4 MB a token, its float32 cache 2 layers x (K, V) x 2 heads x 16 x 4 bytes
    per_token, kv = facts["bytes_per_token"], facts["layers"] * 2 * facts["kv_heads"] * facts["head_dim"] * 4
    assert 1e3 <= per_token < 1e6 and kv == 512 and facts["kv_cache"].startswith("float32"), facts
    assert rows["bytes per token"] == f"{per_token / 1e3:.1f} KB of weights read per decoded token", out
    assert rows["kv cache"] == "float32, 512 B per token and row", out  # was "0.5 KB" beside "0.4 MB"
