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
import struct
import tempfile
from pathlib import Path

import pytest
from helpers import cli, one_thread  # noqa: F401 - one_thread applies to this module
from rich.console import Console
from test_resolve import SHA, add_snapshot, header_gguf, stores, tiny  # noqa: F401 - fixtures
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


# --- QA 35: what `--model` refuses, `models` lists as skipped with the same line --------------------


def _damaged(good: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (a GGUF loading refuses from its header and tensor table alone, words of its line)."""
    import gguf

    from tiankong.engine.gguf_header import check_header

    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(good)
        f.flush()
        check_header(Path(f.name))  # the good file passes
        t = gguf.GGUFReader(f.name).tensors[0]
        at = t.field.offset + 8 + len(bytes(t.field.parts[1]))  # tensor 0's n_dims
        # QA58: a feed_forward_length its blk.0.ffn_down.weight disagrees with (the tiny model's is 96)
        lying = gguf.GGUFReader(f.name, "r+")
        lying.fields["llama.feed_forward_length"].parts[-1][0] = 128
        lying.data.flush()
        del lying
        f.seek(0)
        ffn = f.read()
    n_dims = struct.unpack_from("<I", good, at)[0]
    type_at = at + 4 + 8 * n_dims

    def put(at: int, fmt: str, value: int) -> bytes:
        out = bytearray(good)
        struct.pack_into(fmt, out, at, value)
        return bytes(out)

    arch = good.index(b"llama")  # general.architecture's value (the first "llama" in the file)
    return {
        "truncated data": (good[:-4096], "outside the file"),
        "absurd dims": (put(at + 4, "<Q", 1 << 40), "outside the file"),
        "unknown tensor type": (put(type_at, "<I", 99), "unknown type 99"),
        "unsupported architecture": (good[:arch] + b"mamba" + good[arch + 5 :], "architecture 'mamba'"),
        "lying feed_forward_length": (ffn, "llama.feed_forward_length is 128, but tensor blk.0.ffn_down.weight"),
    }


def test_models_skips_what_model_refuses_with_its_line(stores, ggufs, monkeypatch, capsys):  # noqa: F811
    """QA: truncated data, absurd dims ("1,208,925,819,614,629B params"), an unknown tensor type and
    an unsupported architecture were listed (and their Ollama blobs too); --model refused each."""
    lm = stores / ".lmstudio" / "models" / "bad"
    cases = _damaged(ggufs["f32"].read_bytes())
    for i, (data, _) in enumerate(cases.values()):
        (lm / f"case{i}").mkdir(parents=True)
        (lm / f"case{i}" / "m.gguf").write_bytes(data)
        source = stores / f"case{i}.gguf"
        source.write_bytes(data)
        ollama_tag(stores, source, f"case{i}", "latest")
    skipped: list[str] = []
    names = [m.name for m in list_models(skipped)]
    assert "lm-org/lm-tiny" in names
    for i, (case, (_, words)) in enumerate(cases.items()):
        assert f"bad/case{i}" not in names and f"ollama:case{i}:latest" not in names, (case, names)
        code, _, err = cli(monkeypatch, capsys, "generate", "-m", f"bad/case{i}", "-p", "hi", "-n", "1")
        refusal = err.strip().splitlines()[-1].removeprefix("error: ")
        assert code == 2 and words in refusal, (case, err)
        assert refusal in skipped, (case, refusal, skipped)  # the very line
        blob = [line for line in skipped if line.startswith(f"ollama:case{i}:latest: ")]
        # an Ollama blob is pulled again, not downloaded
        assert len(blob) == 1 and words in blob[0], (case, skipped)
        if "download it again" in refusal:
            assert blob[0].endswith(f"run `ollama pull case{i}` again"), blob
            code, _, err = cli(monkeypatch, capsys, "generate", "-m", f"ollama:case{i}", "-p", "hi", "-n", "1")
            refusal = err.strip().splitlines()[-1]
            assert code == 2 and refusal.endswith(f"run `ollama pull case{i}` again"), (case, err)


def test_models_skips_a_cached_repo_whose_main_ref_is_no_commit_hash(stores, tiny, monkeypatch, capsys):  # noqa: F811
    add_snapshot(stores / "hf" / "hub", "org/BadRef", SHA, tiny)
    ref = stores / "hf" / "hub" / "models--org--BadRef" / "refs" / "main"
    ref.write_text("deadbeef")
    skipped: list[str] = []
    assert not [m for m in list_models(skipped) if m.name.startswith("org/BadRef")]
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", "org/BadRef", "-p", "hi", "-n", "1")
    line = err.strip().splitlines()[-1].removeprefix("error: ")
    assert code == 2 and "does not hold a commit hash" in line and line in skipped, (err, skipped)


def test_a_name_the_cache_refuses_notes_lmstudio_and_the_error_names_it(stores, ggufs, tmp_path, monkeypatch, capsys):  # noqa: F811
    """QA: the HF cache's org/Smol-GGUF holds two GGUF files, LM Studio's one: `models` said
    "--model org/Smol-GGUF takes another model first", but that name took nothing."""
    release = tmp_path / "release"
    release.mkdir()
    for q in ("f32", "q8_0"):
        (release / ggufs[q].name).write_bytes(ggufs[q].read_bytes())
    add_snapshot(stores / "hf" / "hub", "org/Smol-GGUF", SHA, release)
    lm = stores / ".lmstudio" / "models" / "org" / "Smol-GGUF"
    lm.mkdir(parents=True)
    (lm / "smol.gguf").write_bytes(ggufs["f32"].read_bytes())
    listed = {m.name: m for m in list_models()}
    note = listed["lmstudio:org/Smol-GGUF"].note or ""
    assert "org/Smol-GGUF is refused" in note and "takes another model" not in note, note
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", "org/Smol-GGUF", "-p", "hi", "-n", "1")
    assert code == 2 and "holds 2 GGUF files" in err, err
    assert "--model lmstudio:org/Smol-GGUF for LM Studio's" in " ".join(err.split()), err
