"""LM Studio's Models Directory (downloadsFolder in its settings.json) as a lookup reads it, when it
is hostile: a folder that cannot be read, a settings file or a folder that cannot be used, a
directory of / or /proc. Every store is faked in tmp through HOME and HF_HUB_CACHE."""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path

import pytest
from helpers import cli, deadline
from test_resolve import _PROBE, as_user

from tiankong.engine import model_places, resolve
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.model_list import list_models
from tiankong.engine.model_places import lmstudio_dirs
from tiankong.engine.resolve import resolve_model

# A GGUF header of nothing (version 3, no tensors, no metadata): listed and resolved, never loaded.
EMPTY_GGUF = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fake home: LM Studio's default folder holds org/tiny (one .gguf file); no other store."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("OLLAMA_MODELS", str(home / "ollama"))
    monkeypatch.chdir(tmp_path)
    tiny = home / ".lmstudio" / "models" / "org" / "tiny"
    tiny.mkdir(parents=True)
    (tiny / "tiny-Q8_0.gguf").write_bytes(EMPTY_GGUF)
    (home / "hf" / "hub").mkdir(parents=True)  # empty stores, there: a folder set and missing is said
    (home / "ollama").mkdir()
    return home


def searched(e: pytest.ExceptionInfo) -> str:
    """The LM Studio folders a not-found line lists as searched (before the notes on its settings)."""
    return str(e.value).partition("LM Studio (")[2].partition(";")[0]


def settings(home: Path, text: str | dict) -> Path:
    path = home / ".lmstudio" / "settings.json"
    path.write_text(json.dumps(text) if isinstance(text, dict) else text)
    return path


# --- 5: a Models Directory that cannot be read hides no other folder's model ----------------------


def test_a_locked_models_directory_hides_no_model_of_the_default_folder(home, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    conf = settings(home, {"downloadsFolder": str(locked)})
    tiny = home / ".lmstudio" / "models" / "org" / "tiny" / "tiny-Q8_0.gguf"
    locked.chmod(0)
    try:
        proc = as_user(sys.executable, "-c", _PROBE, "org/tiny", "lmstudio:org/tiny", "org/tiny:Q8_0", "org/nothere")
        out = proc.stdout.splitlines()
    finally:
        locked.chmod(0o755)
    denied = (
        f"cannot read {locked} (LM Studio's Models Directory, downloadsFolder in {conf}): permission denied; "
        "give your user access to it (chmod, chown), choose another folder in LM Studio (My Models), or use "
        "a model from another place"
    )
    assert out == [
        "listed: tiankong-mini org/tiny",
        f"skipped: {denied}",
        f"resolved: {tiny}",
        f"resolved: {tiny}",
        f"resolved: {tiny}",
        f"error: {denied}",  # held by no place: the folder that could not be read is the likely reason
    ]


# --- 7: the search for a close name stays bounded ---------------------------------------------------


@pytest.fixture
def scans(monkeypatch) -> list[str]:
    """Every folder os.scandir lists from here on."""
    seen: list[str] = []
    real = os.scandir

    def scandir(path="."):
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return seen


@pytest.mark.parametrize("directory", ["/proc", "/"])
def test_a_models_directory_of_proc_or_root_never_walks_into_system_folders(home, scans, directory):
    settings(home, {"downloadsFolder": directory})
    with deadline(30), pytest.raises(ModelLoadError, match="no model 'org/nothere'"):  # was 40 s for /proc
        resolve_model("org/nothere")
    assert scans  # the stores were walked for a close name
    assert not [p for p in scans if p.startswith(("/proc", "/sys", "/dev"))]


def test_proc_as_the_models_directory_is_named_once_and_not_listed_as_searched(home):
    conf = settings(home, {"downloadsFolder": "/proc"})
    skipped: list[str] = []
    assert [m.name for m in list_models(skipped)] == ["tiankong-mini", "org/tiny"]
    assert skipped == [
        f"LM Studio's Models Directory (downloadsFolder in {conf}) is not searched: /proc is a system folder "
        "(pseudo-files, no models); choose the folder again in LM Studio (My Models)"
    ]
    with pytest.raises(ModelLoadError) as e:
        resolve_model("org/nothere")
    assert "/proc" not in searched(e) and "/proc is a system folder" in str(e.value)


def test_the_close_name_walk_gives_up_past_its_entries(home, scans, monkeypatch):
    big = home / ".lmstudio" / "models" / "big"
    for i in range(400):  # 400 repos of 3 subfolders: 1,600 folders to list, each with an entry or two
        for sub in ("a", "b", "c"):
            (big / f"repo{i:03}" / sub).mkdir(parents=True)
    monkeypatch.setattr(resolve, "_SUGGEST_ENTRIES", 300)
    with pytest.raises(ModelLoadError, match="no model 'org/tinyy'"):
        resolve_model("org/tinyy")
    assert len(scans) < 400  # listed whole, the walk lists over 1,600 folders
    # Within the bound, the close name is still suggested.
    shutil.rmtree(big)
    with pytest.raises(ModelLoadError, match="did you mean org/tiny"):
        resolve_model("org/tinyy")


# --- 14: a settings file or Models Directory that cannot be used is said once ------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda home: "junk{", "{conf} is not JSON (Expecting value: line 1 column 1 (char 0)), so"),
        (lambda home: "[1, 2]", "{conf} holds no JSON object, so"),
        (lambda home: " " * (2 << 20), "{conf} is larger than 1 MB, too large for this kind of file, so"),
        (lambda home: _fifo(home / ".lmstudio" / "settings.json"), "{conf} is a FIFO, not a regular file, so"),
        (lambda home: {"downloadsFolder": "models"}, 'downloadsFolder in {conf} is a relative path ("models")'),
        (lambda home: {"downloadsFolder": 7}, "downloadsFolder in {conf} is no folder path (7), so"),
        (
            lambda home: {"downloadsFolder": "~nosuchuser-qa37/models"},
            'downloadsFolder in {conf} names a user this machine does not have ("~nosuchuser-qa37/models")',
        ),
    ],
    ids=["junk", "list", "50mb", "fifo", "relative", "number", "nouser"],
)
def test_a_settings_file_that_cannot_be_used_is_one_skipped_line(home, make, said):
    conf = home / ".lmstudio" / "settings.json"
    made = make(home)
    if made is not None:  # None: make put the file there itself
        settings(home, made)
    skipped: list[str] = []
    with deadline(20):  # a FIFO is never opened for good
        names = [m.name for m in list_models(skipped)]
    assert names == ["tiankong-mini", "org/tiny"]  # the default folder still searched
    assert len(skipped) == 1, skipped
    assert skipped[0].startswith(said.format(conf=conf)), skipped[0]
    assert "LM Studio's Models Directory is not searched" in skipped[0]


@pytest.mark.parametrize("kind", ["file", "fifo", "device"])
def test_a_models_directory_that_is_no_folder_is_said_and_not_listed_as_searched(home, tmp_path, kind):
    place = {"file": tmp_path / "plain", "fifo": tmp_path / "fifo", "device": Path("/dev/zero")}[kind]
    if kind == "file":
        place.write_text("x")
    elif kind == "fifo":
        os.mkfifo(place)
    conf = settings(home, {"downloadsFolder": str(place)})
    what = {"file": "a file", "fifo": "a FIFO", "device": "a device"}[kind]
    skipped: list[str] = []
    with deadline(20):
        assert [m.name for m in list_models(skipped)] == ["tiankong-mini", "org/tiny"]
    assert skipped == [
        f"LM Studio's Models Directory (downloadsFolder in {conf}) is not searched: {place} is {what}, not a "
        "folder; choose the folder again in LM Studio (My Models)"
    ]
    assert place not in lmstudio_dirs()
    with pytest.raises(ModelLoadError) as e:
        resolve_model("org/nothere")
    assert f"LM Studio ({home / '.lmstudio' / 'models'}, " in str(e.value) and str(place) not in searched(e)
    assert f"{place} is {what}, not a folder" in str(e.value)  # why it was not searched


def test_models_prints_the_settings_line_once_on_stderr(home, monkeypatch, capsys):
    conf = settings(home, "junk{")
    code, out, err = cli(monkeypatch, capsys, "models", "--format", "json")
    assert code == 0 and [m["name"] for m in json.loads(out)] == ["tiankong-mini", "org/tiny"]
    assert [line for line in err.splitlines() if line.startswith(("skipped:", "note:"))] == [
        f"note: {conf} is not JSON (Expecting value: line 1 column 1 (char 0)), so LM Studio's Models "
        "Directory is not searched; fix it, or choose the folder again in LM Studio (My Models)"
    ]


def test_a_usable_settings_file_says_nothing(home, tmp_path):
    chosen = tmp_path / "chosen"
    (chosen / "o2" / "m2").mkdir(parents=True)
    (chosen / "o2" / "m2" / "m2.gguf").write_bytes(EMPTY_GGUF)
    settings(home, {"downloadsFolder": str(chosen), "other": 1})
    skipped: list[str] = []
    assert [m.name for m in list_models(skipped)] == ["tiankong-mini", "o2/m2", "org/tiny"]
    assert skipped == []
    assert lmstudio_dirs()[0] == chosen
    assert model_places.lmstudio_origin(chosen) == (
        f"LM Studio's Models Directory, downloadsFolder in {home / '.lmstudio' / 'settings.json'}"
    )
