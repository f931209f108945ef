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
    number,
    save_preset,
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
    assert "top_k" not in haiku.recommended  # unset: no range (the whole allowed one recommends nothing)
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
        ("[params\ntemperature = 1\n", r"invalid TOML: .*\(at line 1, column 8\); fix or remove the file$"),
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
        get_preset("bad", tmp_path)
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)
    assert load_presets(tmp_path).broken == {"bad": str(err.value)}  # the others still load


def test_a_user_file_starting_with_a_byte_order_mark_is_read(tmp_path):
    # QA: Notepad's UTF-8 BOM made "invalid TOML: Invalid statement (at line 1, column 1)".
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + b'description = "with a BOM"\n[params]\ntemperature = 0.3\n')
    preset = load_presets(tmp_path)["bom"]
    assert preset.description == "with a BOM" and preset.params.temperature == 0.3


def test_a_folder_named_like_a_preset_is_named_as_such(tmp_path):
    # QA: said "give the path of a real file", though the person gave no path: it is in their folder.
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(InputError) as err:
        get_preset("d", tmp_path)
    assert str(err.value) == f"{tmp_path / 'd.toml'} is a folder, not a preset file; remove or rename it"


def test_a_name_key_must_be_the_file_name(tmp_path):
    # Two files could otherwise define one name, and mine.toml could quietly replace "balanced".
    write(tmp_path, "a.toml", 'name = "same"\n')
    with pytest.raises(InputError, match=r"a.toml: says name = 'same', but a preset's name is its file name \('a'\)"):
        get_preset("a", tmp_path)
    assert "same" not in load_presets(tmp_path).broken


# --- QA pass 18: hidden files, one broken file, names that differ in case, save as -------------------


def test_hidden_files_in_the_presets_folder_are_no_presets(tmp_path):
    # QA: Emacs's lock link made every command fail ("cannot read .#mine.toml"), macOS's ._ file was
    # "invalid TOML", and a file called .toml became a preset named ".toml".
    write(tmp_path, "mine.toml", "[params]\ntemperature = 0.2\n")
    (tmp_path / ".#mine.toml").symlink_to(tmp_path / "user@host.1234")  # dangling, as Emacs leaves it
    (tmp_path / "._mine.toml").write_bytes(b"\x00\x05\x16\x07Mac OS X        \xff\xfe")
    write(tmp_path, ".toml", "[params]\ntemperature = 0.9\n")
    presets = load_presets(tmp_path)
    assert list(presets) == [*sorted(TABLE), "mine"] and presets.broken == {}
    assert get_preset("mine", tmp_path).params.temperature == 0.2


def test_a_broken_user_file_breaks_only_its_own_preset(tmp_path):
    # QA: temperature = -1 in mine.toml made `generate --preset balanced` and `get_preset("creative")` fail.
    path = write(tmp_path, "mine.toml", "[params]\ntemperature = -1\n")
    write(tmp_path, "ok.toml", "[params]\ntemperature = 0.4\n")
    presets = load_presets(tmp_path)
    line = f"{path}: [params] temperature must be in [0, 2], got -1.0"
    assert presets.broken == {"mine": line}
    assert "mine" not in presets and list(presets) == [*sorted(TABLE), "ok"]
    assert get_preset("creative", tmp_path) == load_presets(tmp_path / "absent")["creative"]
    assert get_preset("ok", tmp_path).params.temperature == 0.4
    with pytest.raises(InputError) as err:
        get_preset("mine", tmp_path)
    assert str(err.value) == line  # the file's own error, not "preset must be one of"


def test_a_broken_override_of_a_bundled_preset_leaves_it_out_rather_than_unchanged(tmp_path):
    # The person meant balanced to change: the bundled values in its place would be a silent surprise.
    write(tmp_path, "balanced.toml", "[params]\ntop_p = 7\n")
    presets = load_presets(tmp_path)
    assert "balanced" not in presets and set(presets.broken) == {"balanced"}
    with pytest.raises(InputError, match=r"balanced.toml: \[params\] top_p must be in \[0, 1\], got 7.0"):
        get_preset("balanced", tmp_path)


def test_preset_names_ignore_case_on_every_filesystem(tmp_path):
    # QA: Balanced.toml made a second preset "Balanced" from generic defaults (on a filesystem that
    # ignores case it would have overridden balanced).
    write(tmp_path, "Balanced.toml", 'name = "BALANCED"\n[params]\ntemperature = 0.3\n')
    write(tmp_path, "Mine.toml", "[params]\ntop_k = 3\n")
    presets = load_presets(tmp_path)
    assert list(presets) == [*sorted(TABLE), "Mine"]  # the override keeps the bundled name and place
    bundled = get_preset("balanced", tmp_path / "absent")
    assert presets["balanced"].params == bundled.params.replace(temperature=0.3)
    assert presets["balanced"].source == tmp_path / "Balanced.toml"
    assert get_preset("BALANCED", tmp_path) == presets["balanced"] and "CrEaTiVe" in presets
    assert get_preset("mine", tmp_path).name == "Mine"


def test_two_user_files_one_name_in_different_case_are_refused_naming_both(tmp_path):
    write(tmp_path, "Mine.toml", "[params]\ntop_k = 3\n")
    write(tmp_path, "mine.toml", "[params]\ntop_k = 4\n")
    presets = load_presets(tmp_path)
    assert "mine" not in presets
    with pytest.raises(InputError) as err:
        get_preset("mine", tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'Mine.toml'} and mine.toml are one preset (names ignore case); remove or rename one of them"
    )


def test_a_saved_preset_loads_back_with_the_same_values(tmp_path):
    like = get_preset("balanced", tmp_path)
    params = like.params.replace(temperature=0.35, top_k=7, seed=2**64 - 1, stop=("\n\nUser:", 'say "x"\x7f'))
    saved = save_preset("cooler", params, like, tmp_path)
    assert saved.name == "cooler" and saved.source == tmp_path / "cooler.toml"
    assert get_preset("cooler", tmp_path).params == params
    assert saved.use == like.use and saved.recommended == like.recommended
    assert [p.name for p in tmp_path.iterdir()] == ["cooler.toml"]  # no temporary file left


def test_saving_under_a_taken_name_is_refused_unless_it_is_the_preset_edited(tmp_path):
    balanced = get_preset("balanced", tmp_path)
    save_preset("mine", balanced.params, balanced, tmp_path)
    refusals = {
        "creative": "creative is already a bundled preset; save under another name, or switch to creative (f2) "
        "and save it as creative to override it",
        "MINE": "mine is already one of your presets; save under another name, or switch to mine (f2) and save "
        "it as mine to replace it",
    }
    for name, message in refusals.items():
        with pytest.raises(InputError) as err:
            save_preset(name, balanced.params.replace(top_k=1), balanced, tmp_path)
        assert str(err.value) == message
    # The preset edited, under its own name (any case): an override, into the file there is.
    save_preset("Balanced", balanced.params.replace(top_k=2), balanced, tmp_path)
    mine = get_preset("mine", tmp_path)
    save_preset("MINE", mine.params.replace(top_k=3), mine, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["balanced.toml", "mine.toml"]
    assert get_preset("balanced", tmp_path).params.top_k == 2 and get_preset("mine", tmp_path).params.top_k == 3
    assert get_preset("balanced", tmp_path).description == balanced.description


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "two words", "x" * 65, "end.", "", "nul", "COM1.x"])
def test_a_name_that_is_no_safe_file_name_is_refused(tmp_path, name):
    balanced = get_preset("balanced", tmp_path)
    with pytest.raises(InputError, match="file name|device's name"):
        save_preset(name, balanced.params, balanced, tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_number_writes_every_value_the_same_way():
    # QA: `presets NAME` wrote 1e+06 where the editor writes 1000000.
    assert [number(x) for x in (1_000_000, 1e6, 2.0, 0.05, 0.123456789, 2**64 - 1)] == [
        "1000000",
        "1000000",
        "2",
        "0.05",
        "0.123456789",
        "18446744073709551615",
    ]


# --- QA: hostile names and places ----------------------------------------------------------------------


def test_a_file_name_with_a_control_character_is_no_preset_and_says_rename_it(tmp_path):
    # QA: $'esc\x1b[31mred.toml' was listed as esc[31mred (the escape dropped for the terminal), and
    # --preset 'esc[31mred' then failed with "preset must be one of ..., esc[31mred, ...".
    write(tmp_path, "esc\x1b[31mred.toml", "[params]\ntemperature = 0.2\n")
    write(tmp_path, "ok.toml", "[params]\ntemperature = 0.4\n")
    presets = load_presets(tmp_path)
    assert list(presets) == [*sorted(TABLE), "ok"]
    line = (
        f"{tmp_path}/esc\\x1b[31mred.toml: its name holds a control character, so it cannot be shown or typed as "
        "it is; rename the file to a name of letters, digits, _ - and ."
    )
    assert presets.broken == {"esc\x1b[31mred": line} and "\x1b" not in line
    with pytest.raises(InputError, match=r"preset must be one of balanced, .*ok, precise, got 'esc\[31mred'"):
        get_preset("esc[31mred", tmp_path)


def test_a_config_dir_that_is_a_file_is_named_with_its_variable(tmp_path, monkeypatch):
    # QA: TIANKONG_CONFIG_DIR=/etc/passwd was ignored without a word, while `tiankong presets` said
    # "yours go in /etc/passwd/presets".
    config = write(tmp_path, "config", "a file")
    for value, said in [
        (config, f"TIANKONG_CONFIG_DIR is {config}, a file, not a folder; set TIANKONG_CONFIG_DIR to a folder"),
        (config / "sub", f"TIANKONG_CONFIG_DIR is {config / 'sub'}, but {config} is a file, not a folder;"),
    ]:
        monkeypatch.setenv("TIANKONG_CONFIG_DIR", str(value))
        with pytest.raises(InputError) as err:
            load_presets()
        assert str(err.value).startswith(said) and "\n" not in str(err.value)
    with pytest.raises(InputError, match=f"^{config} is a file, not a folder, so no presets can be read"):
        load_presets(config / "presets")  # a folder given: no variable to name


def test_saving_a_preset_under_a_missing_home_makes_no_home(tmp_path, monkeypatch):
    # QA: HOME=/nonexistent/home had folders made under it on the fly.
    home = tmp_path / "gone" / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TIANKONG_CONFIG_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    balanced = load_presets()["balanced"]  # reading makes nothing, and finds no user presets
    with pytest.raises(InputError) as err:
        save_preset("mine", balanced.params, balanced)
    assert f"the home folder {home} does not exist; set HOME to yours, or set TIANKONG_CONFIG_DIR" in str(err.value)
    assert list(tmp_path.iterdir()) == []
