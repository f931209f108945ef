"""Damaged files of models found by name in the Hugging Face cache (QA: models by name).

A cached repo of several GGUF files is refused with a "choose one" hint: it named the first file
by name, a truncated copy `tiankong models` already skipped. A safetensors model cut short was
listed as a normal model, and loading it echoed safetensors' "incomplete metadata, file not fully
covered". The stores are faked as in test_resolve.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import cli, one_thread  # noqa: F401 - one_thread applies to this module
from test_resolve import SHA, add_snapshot, stores, tiny  # noqa: F401 - fixtures
from test_resolve_names import ggufs  # noqa: F401 - fixtures

from tiankong.engine.model_list import list_models


def _choose(err: str) -> str | None:
    """The name a one-line error says to choose."""
    hit = re.search(r"choose one: --model (\S+)", err)
    return hit[1] if hit else None


def _last_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len([line for line in lines if line.startswith("error: ")]) == 1, err
    return lines[-1].removeprefix("error: ")


@pytest.fixture
def thing(stores, ggufs, tmp_path):  # noqa: F811 - the fixtures imported above
    """org/thing-GGUF: a truncated copy (named first), then two whole GGUF files."""
    release = tmp_path / "release"
    release.mkdir()
    whole = ggufs["f32"].read_bytes()
    (release / "thing-broken.gguf").write_bytes(whole[: len(whole) // 2])
    (release / "thing-Q4_0.gguf").write_bytes(whole)
    (release / "thing-Q8_0.gguf").write_bytes(ggufs["q8_0"].read_bytes())
    return add_snapshot(stores / "hf" / "hub", "org/thing-GGUF", SHA, release)


def _rewrite(snapshot: Path, name: str, data: bytes) -> None:
    """A file of the snapshot with new contents (the cache's link to its blob replaced by the file)."""
    (snapshot / name).unlink()
    (snapshot / name).write_bytes(data)


SPECS = ("org/thing-GGUF", "org/thing-GGUF:Q5_K", "org/thing-GGUF/nope.gguf")


def test_choose_one_names_a_file_that_loads_never_a_truncated_one(thing, monkeypatch, capsys):
    skipped: list[str] = []
    listed = {m.name for m in list_models(skipped)}
    assert "org/thing-GGUF/thing-broken.gguf" not in listed  # the listing's own check skips it ...
    assert any("thing-broken.gguf" in line for line in skipped), skipped
    code, _, err = cli(monkeypatch, capsys, "info", "-m", "org/thing-GGUF/thing-broken.gguf")
    assert code == 2, err  # ... and loading refuses it
    for spec in (*SPECS, str(thing)):
        code, _, err = cli(monkeypatch, capsys, "info", "-m", spec)
        choose = _choose(_last_line(err))
        assert code == 2 and choose is not None and "broken" not in choose, (spec, err)
        if spec != str(thing):  # a folder given by its path is answered with a path
            assert choose in listed, (spec, choose, listed)
        code, _, err = cli(monkeypatch, capsys, "info", "-m", choose)
        assert code == 0, (spec, choose, err)  # the name it gives loads


def test_choose_one_names_the_one_whole_file_wherever_it_is_listed(thing, monkeypatch, capsys):
    """Whichever order the folder lists its files in, the hint names the one file that loads."""
    names = ("thing-broken.gguf", "thing-Q4_0.gguf", "thing-Q8_0.gguf")
    whole = (thing / "thing-Q8_0.gguf").read_bytes()
    for good in names:
        for name in names:
            _rewrite(thing, name, whole if name == good else whole[: len(whole) // 3])
        assert [m.name for m in list_models() if m.name.startswith("org/thing-GGUF")] == [f"org/thing-GGUF/{good}"]
        for spec in (*SPECS, str(thing)):
            code, _, err = cli(monkeypatch, capsys, "info", "-m", spec)
            assert code == 2 and (_choose(_last_line(err)) or "").endswith(f"/{good}"), (good, spec, err)


def test_no_usable_file_is_said_in_one_line(thing, monkeypatch, capsys):
    broken = (thing / "thing-broken.gguf").read_bytes()
    for name in ("thing-Q4_0.gguf", "thing-Q8_0.gguf"):
        _rewrite(thing, name, broken)
    assert not [m for m in list_models() if m.name.startswith("org/thing-GGUF")]
    for spec in (*SPECS, str(thing)):
        code, _, err = cli(monkeypatch, capsys, "info", "-m", spec)
        line = _last_line(err)
        assert code == 2 and "choose one" not in line and "none of them is usable" in line, (spec, err)
        assert "download one again" in line, line


@pytest.fixture
def halfst(stores, tiny):  # noqa: F811 - the fixtures imported above
    """org/halfst in the cache, its model.safetensors blob cut short (the header whole)."""
    snapshot = add_snapshot(stores / "hf" / "hub", "org/halfst", SHA, tiny)
    blob = (snapshot / "model.safetensors").resolve()
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    return snapshot / "model.safetensors"


def test_a_truncated_safetensors_model_is_skipped_and_refused_in_our_words(halfst, monkeypatch, capsys):
    from safetensors import SafetensorError, safe_open

    with pytest.raises(SafetensorError, match="incomplete metadata"):  # the reference: safetensors refuses it
        safe_open(halfst, framework="pt")
    with safe_open(Path(str(halfst).replace("org--halfst", "tiny-org--Tiny-Llama")), framework="pt"):
        pass  # the whole file it was cut from is read
    skipped: list[str] = []
    names = [m.name for m in list_models(skipped)]
    assert "org/halfst" not in names and "tiny-org/Tiny-Llama" in names, names
    [note] = [line for line in skipped if line.startswith("org/halfst: ")]
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", "org/halfst", "-p", "hi", "-n", "1")
    line = _last_line(err)
    assert code == 2 and str(halfst) in line and "truncated or corrupt" in line, err
    assert line.endswith("download org/halfst again (`hf download org/halfst`)"), line
    assert "deserializing" not in line and "incomplete metadata" not in line, line  # not safetensors' words
    assert note == f"org/halfst: {line}", (note, line)  # listing skips it with loading's line


def test_a_safetensors_file_past_its_data_or_with_no_header_is_refused(tiny, tmp_path, monkeypatch, capsys):  # noqa: F811
    import shutil

    for case, cut in {"trailing bytes": lambda d: d + bytes(16), "no header": lambda d: d[:6]}.items():
        folder = tmp_path / case.replace(" ", "-")
        shutil.copytree(tiny, folder)
        (folder / "model.safetensors").write_bytes(cut((folder / "model.safetensors").read_bytes()))
        code, _, err = cli(monkeypatch, capsys, "generate", "-m", str(folder), "-p", "hi", "-n", "1")
        line = _last_line(err)
        assert code == 2 and str(folder / "model.safetensors") in line and line.endswith("download it again"), err
