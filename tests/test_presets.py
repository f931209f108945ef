"""Presets: the bundled files match the documented table, and user files override and add."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiankong.engine.errors import InputError
from tiankong.engine.sampling import SamplingParams
from tiankong.presets import (
    DEFAULT_PRESET,
    RECOMMENDED_FIELDS,
    get_preset,
    load_presets,
    user_presets_dir,
)

# The documented table: (temperature range, top_p range) per bundled preset.
TABLE = {
    "balanced": ((0.7, 0.7), (0.9, 0.9)),
    "precise": ((0.2, 0.5), (0.5, 0.8)),
    "creative": ((0.8, 1.2), (0.95, 1.0)),
    "chat": ((0.7, 0.9), (0.9, 0.95)),
    "deterministic": ((0.0, 0.0), (1.0, 1.0)),
}


@pytest.fixture
def no_user_dir(tmp_path: Path) -> Path:
    return tmp_path / "absent"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_presets_match_the_table(no_user_dir):
    presets = load_presets(no_user_dir)
    assert set(presets) == set(TABLE)
    assert DEFAULT_PRESET == "balanced" and DEFAULT_PRESET in presets
    for name, ((t_lo, t_hi), (p_lo, p_hi)) in TABLE.items():
        preset = presets[name]
        assert preset.name == name == preset.source.stem
        assert preset.description and preset.use
        assert t_lo <= preset.params.temperature <= t_hi
        assert p_lo <= preset.params.top_p <= p_hi
        # Where the table gives a range it is the recommended one; a single value (balanced)
        # only has to sit inside its recommended range, checked below with every other value.
        if t_lo < t_hi:
            assert preset.recommended["temperature"] == (t_lo, t_hi)
            assert preset.recommended["top_p"] == (p_lo, p_hi)
        assert set(preset.recommended) == set(RECOMMENDED_FIELDS)
        for field, (lo, hi) in preset.recommended.items():
            assert lo <= getattr(preset.params, field) <= hi, (name, field)


def test_bundled_files_spell_out_every_parameter(no_user_dir):
    for preset in load_presets(no_user_dir).values():
        text = preset.source.read_text(encoding="utf-8")
        for field in RECOMMENDED_FIELDS:
            assert f"\n{field} = " in text.split("[recommended]")[0], (preset.name, field)
            assert f"\n{field} = [" in text.split("[recommended]")[1], (preset.name, field)


def test_deterministic_is_greedy_with_a_fixed_seed(no_user_dir):
    p = get_preset("deterministic", no_user_dir).params
    assert p.greedy and p.seed == 0 and p.top_p == 1.0


def test_user_file_overrides_some_params_and_adds_a_preset(tmp_path):
    # Only one value: the rest comes from the bundled preset of the same name.
    write(tmp_path, "precise.toml", 'name = "precise"\n[params]\ntemperature = 0.4\n')
    write(
        tmp_path,
        "haiku.toml",
        'description = "Short poems."\nuse = "haiku"\n'
        '[params]\ntemperature = 1.1\nstop = ["\\n\\n\\n"]\n'
        "[recommended]\ntemperature = [0.9, 1.3]\n",
    )
    presets = load_presets(tmp_path)
    precise = presets["precise"]
    bundled = get_preset("precise", tmp_path / "absent")
    assert precise.params == bundled.params.replace(temperature=0.4)
    assert precise.description == bundled.description
    assert precise.recommended == bundled.recommended
    assert precise.source == tmp_path / "precise.toml"
    haiku = presets["haiku"]  # the name comes from the file name
    assert haiku.params == SamplingParams(temperature=1.1, stop=("\n\n\n",))
    assert haiku.recommended["temperature"] == (0.9, 1.3)
    assert haiku.recommended["top_k"] == (0, 1_000_000)  # unset: the full allowed range
    assert len(presets) == len(TABLE) + 1


def test_user_presets_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TIANKONG_CONFIG_DIR", str(tmp_path / "tk"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_presets_dir() == tmp_path / "tk" / "presets"
    monkeypatch.setenv("TIANKONG_CONFIG_DIR", "")
    assert user_presets_dir() == tmp_path / "xdg" / "tiankong" / "presets"
    monkeypatch.delenv("TIANKONG_CONFIG_DIR")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_presets_dir() == tmp_path / "home" / ".config" / "tiankong" / "presets"
    write(user_presets_dir(), "x.toml", "[params]\ntop_k = 5\n")
    assert load_presets()["x"].params.top_k == 5  # the default directory is used


def test_unknown_preset_lists_available_names(no_user_dir):
    with pytest.raises(InputError, match=r"preset must be one of balanced, chat, .*got 'fast'"):
        get_preset("fast", no_user_dir)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[params]\ntemperature = 3.5\n", r"\[params\] temperature must be in \[0, 2\], got 3.5"),
        ("[params]\ntop_p = -0.1\n", r"top_p must be in \[0, 1\], got -0.1"),
        ("[params]\ntempreature = 1.0\n", r"unknown sampling parameter 'tempreature'"),
        ("[params\ntemperature = 1\n", r"invalid TOML"),
        ("colour = 'blue'\n", r"unknown key 'colour'"),
        ("temperature = 0.5\n", r"'temperature' is a sampling value; put it under a \[params\] line"),  # QA
        ("params = 3\n", r"\[params\] must be a table"),
        ("description = ''\n", r"description must be a non-empty string"),
        ("[recommended]\ntop_p = [0.5, 1.5]\n", r"top_p must be \[low, high\] with 0 <= low"),
        ("[recommended]\ntop_k = [50, 10]\n", r"top_k must be \[low, high\] with 0 <= low <= high"),
        ("[recommended]\nseed = [0, 1]\n", r"unknown parameter 'seed'"),
    ],
)
def test_invalid_user_files_name_the_file_and_the_problem(tmp_path, text, message):
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(InputError, match=message) as err:
        load_presets(tmp_path)
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)


def test_a_user_file_starting_with_a_byte_order_mark_is_read(tmp_path):
    # QA: Notepad's UTF-8 BOM made "invalid TOML: Invalid statement (at line 1, column 1)".
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + b'description = "with a BOM"\n[params]\ntemperature = 0.3\n')
    preset = load_presets(tmp_path)["bom"]
    assert preset.description == "with a BOM" and preset.params.temperature == 0.3


def test_a_folder_named_like_a_preset_is_named_as_such(tmp_path):
    # QA: said "give the path of a real file", though the person gave no path: it is in their folder.
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(InputError) as err:
        load_presets(tmp_path)
    assert str(err.value) == f"{tmp_path / 'd.toml'} is a folder, not a preset file; remove or rename it"


def test_a_name_key_must_be_the_file_name(tmp_path):
    # Two files could otherwise define one name, and mine.toml could quietly replace "balanced".
    write(tmp_path, "a.toml", 'name = "same"\n')
    with pytest.raises(InputError, match=r"a.toml: says name = 'same', but a preset's name is its file name \('a'\)"):
        load_presets(tmp_path)
