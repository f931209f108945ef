"""The models people already have, opened offline (QA56): the hub's own address of a repository, a
download that stopped before its weights, a split GGUF with a part missing, LM Studio's settings
that cannot be used, revisions kept in a model's name, a local folder that hides a cached name, and
what `tiankong models` says about damaged cache entries and the places it looked.

The stores are test_resolve.py's fakes (HOME, HF_HUB_CACHE and OLLAMA_MODELS in tmp).
"""

# ruff: noqa: F811 - the fixtures imported from test_resolve are the tests' arguments
from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import pytest
from helpers import cli
from test_resolve import OLD, SHA, add_snapshot, header_gguf, stores, tiny  # noqa: F401 - fixtures used here

from tiankong.engine.errors import ModelLoadError
from tiankong.engine.model_list import list_models
from tiankong.engine.remote import is_remote
from tiankong.engine.resolve import resolve_model


def offline(monkeypatch) -> None:
    """Any look-up of a host name or connection fails the test loudly: the network is never touched."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"the network was used: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- 1. the hub's address of a repository is a name, looked up offline ----------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/tiny-org/Tiny-Llama",
        "http://hf.co/tiny-org/Tiny-Llama",
        "https://www.huggingface.co/tiny-org/Tiny-Llama@v1.0",
        "HTTPS://HF.CO/tiny-org/Tiny-Llama",
    ],
)
def test_hub_addresses_are_cache_names_never_servers(stores, monkeypatch, capsys, url):
    offline(monkeypatch)
    code, out, err = cli(monkeypatch, capsys, "info", "-m", url)
    assert code == 0, err
    assert "models--tiny-org--Tiny-Llama" in out
    monkeypatch.setenv("TIANKONG_MODEL", url)
    code, out, err = cli(monkeypatch, capsys, "generate", "-p", "hi", "-n", "2", "--seed", "1")
    assert code == 0, err


def test_other_https_addresses_stay_servers():
    assert is_remote("https://router.huggingface.co/v1") and is_remote("http://127.0.0.1:8000/v1")
    assert not is_remote("https://huggingface.co/ORG/NAME:Q8_0") and not is_remote("hf.co/ORG/NAME")


# --- 2. a download that stopped before its weights ------------------------------------------------


def test_unfinished_download_says_so_before_loading(stores, monkeypatch, capsys, tiny):
    cache = stores / "hf" / "hub"
    add_snapshot(cache, "part-org/Partial", SHA, tiny)
    repo = cache / "models--part-org--Partial"
    for f in (repo / "snapshots" / SHA).glob("*.safetensors"):
        f.unlink()
    (repo / "blobs" / ("c" * 64 + ".incomplete")).write_bytes(b"\0" * 10)
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "part-org/Partial")
    assert code == 2 and "loading" not in err, err
    line = " ".join(err.split())
    assert "did not finish" in line and "`hf download part-org/Partial`" in line, err
    with pytest.raises(ModelLoadError, match="download part-org/Partial again"):
        resolve_model("part-org/Partial")


# --- 3/4. LM Studio settings that cannot be used are said, in `models` and in a not-found line ------


def test_lmstudio_models_directory_gone_or_settings_unusable_is_said(stores, tmp_path):
    settings = stores / ".lmstudio" / "settings.json"
    gone = tmp_path / "unplugged" / "llms"
    settings.write_text(json.dumps({"downloadsFolder": str(gone)}))
    skipped: list[str] = []
    list_models(skipped)
    assert [line for line in skipped if str(gone) in line and "does not exist" in line], skipped
    with pytest.raises(
        ModelLoadError, match=rf"LM Studio \({re.escape(str(gone))}, .*{re.escape(str(gone))}.*does not exist"
    ):
        resolve_model("my-org/MyModel-GGUF")
    with pytest.raises(ModelLoadError, match=r"LM Studio \(.*does not exist.*\) has no"):
        resolve_model("lmstudio:my-org/MyModel-GGUF")
    settings.write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"LM Studio \(.*settings.json is not JSON"):
        resolve_model("my-org/MyModel-GGUF")
    gone.mkdir(parents=True)  # the drive is back: nothing to say
    settings.write_text(json.dumps({"downloadsFolder": str(gone)}))
    skipped.clear()
    list_models(skipped)
    assert not [line for line in skipped if "LM Studio" in line], skipped


# --- 5. a revision other than main is another model: its name says which ----------------------------


def test_shown_name_keeps_the_revision(stores, monkeypatch, capsys, tiny):
    from tiankong.engine.model_names import display_name

    assert display_name(resolve_model("tiny-org/Tiny-Llama")) == "tiny-org/Tiny-Llama"
    assert display_name(resolve_model("tiny-org/Tiny-Llama@v1.0")) == "tiny-org/Tiny-Llama@v1.0"
    assert display_name(resolve_model(f"tiny-org/Tiny-Llama@{OLD[:8]}")) == "tiny-org/Tiny-Llama@v1.0"
    add_snapshot(stores / "hf" / "hub", "tiny-org/Tiny-Llama", "c" * 40, tiny, ref=None)  # no ref names it
    assert display_name(resolve_model("tiny-org/Tiny-Llama@cccccccc")) == "tiny-org/Tiny-Llama@cccccccccc"
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "tiny-org/Tiny-Llama@v1.0")
    assert code == 0 and "tiny-org/Tiny-Llama@v1.0" in out.splitlines()[0], out


# --- 7. a folder here of a cached model's name, holding no model ------------------------------------


def test_a_local_folder_hiding_a_cached_name_says_how_to_reach_it(stores, tmp_path):
    (tmp_path / "tiny-org" / "Tiny-Llama").mkdir(parents=True)  # the test runs in tmp_path
    with pytest.raises(
        ModelLoadError, match=r"the Hugging Face cache's tiny-org/Tiny-Llama .*--model hf.co/tiny-org/Tiny-Llama"
    ):
        resolve_model("tiny-org/Tiny-Llama")
    assert resolve_model("hf.co/tiny-org/Tiny-Llama").name == SHA
    (tmp_path / "lm-org" / "lm-tiny").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match=r"LM Studio's lm-org/lm-tiny .*--model lmstudio:lm-org/lm-tiny"):
        resolve_model("lm-org/lm-tiny")
    (tmp_path / "no-org" / "nothing").mkdir(parents=True)  # no place has it: the loader's own line later
    assert resolve_model("no-org/nothing") == Path("no-org/nothing")


# --- 8. damaged cache entries: skipped by `models` with the line `--model` gives, which says the fix ---


def test_damaged_cache_entries_are_skipped_naming_the_fix(stores, tiny):
    cache = stores / "hf" / "hub"
    (cache / "models--bad-org--JustADir").mkdir()
    add_snapshot(cache, "bad-org/Gone", SHA, tiny)
    (cache / "models--bad-org--Gone" / "refs" / "main").write_text("d" * 40)  # a snapshot not there
    skipped: list[str] = []
    names = {m.name for m in list_models(skipped)}
    assert "bad-org/JustADir" not in names and "bad-org/Gone" not in names
    for name in ("bad-org/JustADir", "bad-org/Gone"):
        with pytest.raises(ModelLoadError, match=rf"download {name} again \(`hf download {name}`\)") as e:
            resolve_model(name)
        assert str(e.value) in skipped, skipped


# --- 9. every GGUF file a name takes is listed: beside safetensors, and at another revision ----------


def test_models_lists_gguf_beside_weights_and_at_other_revisions(stores, tmp_path, tiny):
    cache = stores / "hf" / "hub"
    source = tmp_path / "mixed"
    shutil.copytree(tiny, source)
    header_gguf(source / "tiny-Q8_0.gguf")
    add_snapshot(cache, "mix-org/Mixed", SHA, source)
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    header_gguf(gguf / "only-Q4_0.gguf")
    add_snapshot(cache, "gg-org/Only-GGUF", OLD, gguf, ref="refs/pr/1")
    header_gguf(gguf / "other-Q8_0.gguf")
    add_snapshot(cache, "gg-org/Only-GGUF", SHA, gguf)
    listed = {m.name: m.path for m in list_models()}
    for name in ("mix-org/Mixed", "mix-org/Mixed/tiny-Q8_0.gguf", "gg-org/Only-GGUF@refs/pr/1"):
        assert name in listed, sorted(listed)
        assert str(resolve_model(name)) == listed[name]
    assert resolve_model("mix-org/Mixed:Q8_0") == resolve_model("mix-org/Mixed/tiny-Q8_0.gguf")


# --- 11. a store folder an environment variable names that is not there ------------------------------


def test_models_says_when_a_set_store_folder_does_not_exist(stores, tmp_path, monkeypatch):
    skipped: list[str] = []
    list_models(skipped)
    assert not [line for line in skipped if "is set" in line], skipped
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "typo-hub"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "unmounted"))
    list_models(skipped)
    for var, folder in (("HF_HUB_CACHE", "typo-hub"), ("OLLAMA_MODELS", "unmounted")):
        assert [line for line in skipped if line.startswith(f"{var} is set") and folder in line], skipped


# --- 13. an Ollama model's architecture is its GGUF header's, as loading reads it ----------------------


def test_ollama_architecture_is_the_headers_not_the_config_blobs(stores):
    ollama = stores / ".ollama" / "models"
    blob = next(p for p in (ollama / "blobs").iterdir() if p.name.startswith("sha256-1"))
    header_gguf(blob, "qwen2")  # the config blob still says model_family llama
    found = {m.name: m for m in list_models()}["ollama:tinyllm:latest"]
    assert found.architecture == "qwen2"
