"""Opening the models people already have, from the command line (QA56 findings 6, 11, 12, 14-16):
an error about TIANKONG_MODEL's model names the variable, `tiankong models` says where it looked and
fits the terminal, ORG/NAME@REV:QUANT names a revision's GGUF file, near-miss suggestions are names
as a person types them, and each fix hint fits its problem. The stores are faked as in test_resolve.py.
"""

from __future__ import annotations

import io
import json
import re
import shutil

import pytest
from helpers import cli, one_thread  # noqa: F401 - one_thread applies to this module
from rich.console import Console
from test_resolve import stores, tiny  # noqa: F401 - fixtures
from test_resolve_names import ggufs  # noqa: F401 - a fixture


@pytest.mark.parametrize("command", [["generate", "-p", "hi"], ["info"], ["tokenize", "hi"], ["train", "sft"]])
def test_an_error_about_tiankong_models_model_names_the_variable(stores, monkeypatch, capsys, command):  # noqa: F811
    monkeypatch.setenv("TIANKONG_MODEL", "/nonexistent/dir")
    code, _, err = cli(monkeypatch, capsys, *command)
    assert code == 2 and "/nonexistent/dir" in err and "TIANKONG_MODEL" in err, err
    assert "unset" in err and "--model" in err and len(err.strip().splitlines()) == 1, err
    # Given as --model (the variable set to the same, or to another model): the line is the plain one.
    for env in ("/nonexistent/dir", "tiny-org/Tiny-Llama"):
        monkeypatch.setenv("TIANKONG_MODEL", env)
        code, _, err = cli(monkeypatch, capsys, *command, "--model", "/nonexistent/dir")
        assert code == 2 and "/nonexistent/dir" in err and "TIANKONG_MODEL" not in err, err


# --- 11: `models` says where it looked; a folder named that is not there is a note, not a skip -----


def test_models_with_the_bundled_one_alone_says_where_it_looked(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "OLLAMA_MODELS"):
        monkeypatch.delenv(var, raising=False)
    code, out, err = cli(monkeypatch, capsys, "models", "--format", "json")
    assert code == 0 and [m["name"] for m in json.loads(out)] == ["tiankong-mini"], (out, err)
    (line,) = err.splitlines()
    assert line.startswith("note: ") and "searched" in line, err
    for folder in ("~/.cache/huggingface/hub", "~/.lmstudio/models", "~/.cache/lm-studio/models", "~/.ollama/models"):
        assert folder in line, line
    assert "hf download ORG/NAME" in line
    # Folders the variables name that are not there: notes about the places, then the same line.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "gone-hf"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "gone-ollama"))
    code, out, err = cli(monkeypatch, capsys, "models")
    lines = err.splitlines()
    assert code == 0 and len(lines) == 3 and all(line.startswith("note: ") for line in lines), err
    assert "HF_HUB_CACHE is set" in lines[0] and "OLLAMA_MODELS is set" in lines[1], err
    assert (
        f"Hugging Face cache ({tmp_path / 'gone-hf'})" in lines[2]
        and f"Ollama ({tmp_path / 'gone-ollama'})" in lines[2]
    )


def test_models_with_more_than_the_bundled_one_says_nothing_of_where(stores, monkeypatch, capsys):  # noqa: F811
    code, out, err = cli(monkeypatch, capsys, "models", "--format", "json")
    assert code == 0 and len(json.loads(out)) > 1 and "searched" not in err, err


# --- 14: `models` output fits COLUMNS, a terminal's width, with one size unit ------------------------

LONG_NAME = "qa-org/TinyLlama-Chat-GGUF/F16/TinyLlama-Chat-F16.gguf"  # 54 characters, as QA's


@pytest.fixture
def listed(stores, tiny):  # noqa: F811
    """The fake stores plus a GGUF named as long as QA's, a PyTorch-only repo and a model whose
    ORG/NAME another place takes first (listed with a note)."""
    from test_resolve import SHA, add_snapshot, header_gguf

    snapshot = add_snapshot(stores / "hf" / "hub", "qa-org/TinyLlama-Chat-GGUF", SHA, tiny)
    (snapshot / "config.json").unlink()
    for f in snapshot.iterdir():
        f.unlink()
    header_gguf(snapshot / "F16" / "TinyLlama-Chat-F16.gguf")
    header_gguf(snapshot / "TinyLlama-Chat-Q8_0.gguf")
    binonly = add_snapshot(stores / "hf" / "hub", "qa-org/BinOnly", SHA, tiny)
    (binonly / "model.safetensors").rename(binonly / "pytorch_model.bin")
    shutil.copytree(tiny, stores / ".lmstudio" / "models" / "tiny-org" / "Tiny-Llama")
    return stores


def shown(width: int, terminal: bool = True) -> list[str]:
    from tiankong.engine.model_list import list_models
    from tiankong.tui.cli_inspect import print_models

    out = io.StringIO()
    con = Console(file=out, width=width, force_terminal=terminal, color_system=None, emoji=False)
    print_models(con, list_models())
    return out.getvalue().splitlines()


def test_models_piped_keeps_to_columns_where_it_is_set(listed, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert max(map(len, shown(80, terminal=False))) > 120  # no COLUMNS: a row a model, paths whole
    monkeypatch.setenv("COLUMNS", "80")
    lines = shown(80, terminal=False)
    assert max(map(len, lines)) <= 80 and LONG_NAME in "\n".join(lines), "\n".join(lines)


def test_models_at_120_columns_is_a_table_and_records_indent_their_note(listed, monkeypatch):
    lines = shown(120)
    text = "\n".join(lines)
    assert "┃" in lines[1] and max(map(len, lines)) <= 120, text  # the header row: a table, not records
    assert any(line.startswith(f" {LONG_NAME} ") and "│" in line for line in lines), text
    narrow = shown(80)  # records: the note under its entry, indented as its facts, wrapped between words
    at = next(i for i, line in enumerate(narrow) if line.startswith("lmstudio:tiny-org/Tiny-Llama"))
    note = narrow[at + 3 :][:2]
    assert note[0].startswith("  --model tiny-org/Tiny-Llama takes another model first"), "\n".join(narrow)
    assert note[1].strip() == "lmstudio:tiny-org/Tiny-Llama takes this one" and note[1].startswith("  "), note


def test_models_sizes_are_bytes_for_every_model(listed, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    lines = shown(300, terminal=False)
    cells = [line.split("│") for line in lines if "│" in line]
    rows = {c[0].strip(): c[2].strip() for c in cells if c[0].strip()}  # not a note's line
    assert rows["qa-org/BinOnly"].endswith(" KB") and rows["tiny-org/Tiny-Llama"].endswith(" KB"), rows
    assert all(re.fullmatch(r"\d+(\.\d)? [KMG]?B", size) for size in rows.values()), rows
    assert any("size: the weight files on disk" in line for line in lines)


def test_notes_in_a_terminal_wrap_between_words():
    from tiankong.tui.cli_app import say_lines

    line = "HF_HUB_CACHE is set (/some/where/far), but /some/where/far does not exist, so nothing " * 3
    out = io.StringIO()
    say_lines(Console(file=out, width=80, force_terminal=True, color_system=None), "note", [line.strip()])
    lines = out.getvalue().splitlines()
    assert len(lines) > 1 and all(len(line) <= 80 for line in lines)
    words = set(line.split())
    assert all(w in words | {"note:"} for w in " ".join(lines).split()), lines  # no word broken
    piped = io.StringIO()
    say_lines(Console(file=piped, width=80, color_system=None), "skipped", [line.strip()])
    assert piped.getvalue() == f"skipped: {line.strip()}\n"


# --- 12: ORG/NAME@REV:QUANT is that revision's one GGUF file of that quantization -----------------


def test_a_revision_before_the_quantization_names_that_revisions_file(stores, tiny):  # noqa: F811
    from test_resolve import OLD, SHA, add_snapshot, header_gguf

    from tiankong.engine.errors import ModelLoadError
    from tiankong.engine.resolve import resolve_model

    hub = stores / "hf" / "hub"
    main = add_snapshot(hub, "q-org/Chat-GGUF", SHA, tiny)
    pr = add_snapshot(hub, "q-org/Chat-GGUF", OLD, tiny, ref="refs/pr/1")
    for snapshot in (main, pr):
        for f in snapshot.iterdir():
            f.unlink()
    header_gguf(main / "Chat-Q4_0.gguf")
    header_gguf(main / "Chat-Q8_0.gguf")
    header_gguf(pr / "Chat-Q8_0.gguf")
    assert resolve_model("q-org/Chat-GGUF@refs/pr/1:Q8_0") == pr / "Chat-Q8_0.gguf"
    assert resolve_model("hf.co/q-org/Chat-GGUF@refs/pr/1:q8_0") == pr / "Chat-Q8_0.gguf"
    assert resolve_model("q-org/Chat-GGUF@main:Q8_0") == main / "Chat-Q8_0.gguf"
    assert resolve_model(f"q-org/Chat-GGUF@{OLD[:8]}:Q8_0") == pr / "Chat-Q8_0.gguf"  # a hash prefix
    with pytest.raises(ModelLoadError) as e:
        resolve_model("q-org/Chat-GGUF@refs/pr/1:Q4_0")  # main has one; that revision does not
    assert "q-org/Chat-GGUF@refs/pr/1 (" in str(e.value) and "no .gguf file of quantization Q4_0" in str(e.value)
    assert "--model q-org/Chat-GGUF@refs/pr/1/Chat-Q8_0.gguf" in str(e.value) and "ollama:" not in str(e.value)
    with pytest.raises(ModelLoadError, match=r"not at revision 'v9'; it has: main, refs/pr/1"):
        resolve_model("q-org/Chat-GGUF@v9:Q8_0")


# --- 16: near-miss suggestions are names as a person types them; Ollama's names ignore case --------


def _message(spec: str) -> str:
    from tiankong.engine.errors import ModelLoadError
    from tiankong.engine.resolve import resolve_model

    with pytest.raises(ModelLoadError) as e:
        resolve_model(spec)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_near_misses_suggest_the_name_as_typed(stores, ggufs):  # noqa: F811
    from test_resolve import header_gguf
    from test_resolve_names import ollama_tag

    ollama_tag(stores, ggufs["f32"], "tinyllama", "latest")
    ollama_tag(stores, ggufs["q8_0"], "tinyllama", "q4_0")
    assert "did you mean ollama:tinyllama?" in _message("ollama:tinylama")  # not ollama:tinyllama:q4_0
    assert "did you mean ollama:tinyllama?" in _message("tinylama")
    assert "did you mean ollama:tinyllama:q4_0?" in _message("ollama:tinylama:q4_0")  # a tag typed: kept
    assert "e.g. --model ollama:tinyllama:q4_0" in _message("ollama:tinyllama:q4")  # the closest tag
    lm = stores / ".lmstudio" / "models" / "bartowski" / "TinyLlama-GGUF"
    header_gguf(lm / "TinyLlama-Q4_0.gguf")
    header_gguf(lm / "TinyLlama-Q8_0.gguf")  # two files: listed one by one, the repo suggested
    assert "did you mean lmstudio:bartowski/TinyLlama-GGUF?" in _message("lmstudio:bartowski/TinyLlama")
    assert "did you mean bartowski/TinyLlama-GGUF?" in _message("bartowski/TinyLlama")


def test_a_near_miss_line_says_the_name_once_and_no_download(stores):  # noqa: F811
    line = _message("tiny-org/Tiny-Lama")
    assert line.startswith("no model 'tiny-org/Tiny-Lama': did you mean tiny-org/Tiny-Llama? (searched "), line
    assert line.count("Tiny-Lama") == 1 and "download" not in line and "pass a model folder" not in line, line
    far = _message("tiny-org/Something-Else")  # nothing close: where it looked and how to get one
    assert far.count("Something-Else") == 2 and "`hf download tiny-org/Something-Else`" in far, far


def test_ollama_names_and_tags_ignore_case(stores, ggufs):  # noqa: F811
    from test_resolve_names import ollama_tag

    from tiankong.engine.model_names import display_name
    from tiankong.engine.resolve import resolve_model

    blob = ollama_tag(stores, ggufs["q8_0"], "qwen2.5", "0.5b")
    for spelling in ("ollama:qwen2.5:0.5B", "ollama:Qwen2.5:0.5b", "ollama:library/QWEN2.5:0.5B"):
        found = resolve_model(spelling)
        assert found == blob and display_name(found) == "ollama:qwen2.5:0.5b", spelling  # the store's spelling
    assert "it has no tag '0.5c', only 0.5b" in _message("ollama:qwen2.5:0.5c")


# --- 15: each fix hint fits its problem --------------------------------------------------------------


def test_damaged_store_entries_say_the_fix_that_mends_them(stores, tiny, ggufs):  # noqa: F811
    import os

    from test_resolve import SHA, add_snapshot
    from test_resolve_names import ollama_tag

    from tiankong.engine.model_list import list_models

    hub, lm = stores / "hf" / "hub", stores / ".lmstudio" / "models"
    (lm / "q-org" / "DirNamed-GGUF" / "model-Q8_0.gguf").mkdir(parents=True)  # a folder named *.gguf
    gone = add_snapshot(hub, "q-org/Gone-Config", SHA, tiny)  # config.json's blob deleted
    os.unlink(gone.parent.parent / "blobs" / os.readlink(gone / "config.json").rpartition("/")[2])
    ollama_tag(stores, ggufs["q8_0"], "dirtag", "latest")
    manifests = stores / ".ollama" / "models" / "manifests" / "registry.ollama.ai" / "library"
    (manifests / "dirtag" / "latest").unlink()
    (manifests / "dirtag" / "latest").mkdir()
    (manifests / "badjson" / "q8").parent.mkdir(parents=True)
    (manifests / "badjson" / "q8").write_text("{nope")
    skipped: list[str] = []
    list_models(skipped)
    lines = "\n".join(skipped)

    def line(part: str) -> str:
        (found,) = [s for s in skipped if part in s]
        return found

    assert "the download is damaged" in line("DirNamed-GGUF") and "pass a model folder" not in lines, lines
    assert line("Gone-Config").endswith("download q-org/Gone-Config again (`hf download q-org/Gone-Config`)")
    assert line("dirtag").endswith("run `ollama pull dirtag` to fetch the model again"), lines
    assert line("badjson").endswith("run `ollama pull badjson:q8` to fetch the model again"), lines
    assert "give the path of a real file" not in lines and "re-copy" not in lines and "remove the link" not in lines


def test_info_says_none_for_a_missing_token(stores, monkeypatch, capsys):  # noqa: F811
    import tiankong.engine.model_facts as facts

    real = facts.model_facts
    monkeypatch.setattr(facts, "model_facts", lambda *a: {**real(*a), "bos_id": None})
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, err = cli(monkeypatch, capsys, "info", "--device", "cpu")
    rows = {line.split("│")[0].strip(): line.split("│")[1].strip() for line in out.splitlines() if "│" in line}
    assert code == 0 and rows["bos id"] == "none", out
