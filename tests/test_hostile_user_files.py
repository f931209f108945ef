"""Hostile files of the person's own (second QA pass): a damaged or incomplete store, and preset files
that claim another preset's name or a presets folder that is a file. Each ends with exit code 2 and one
line naming the file and the fix, never a traceback.
"""

from __future__ import annotations

import sqlite3

import pytest
from helpers import cli

from tiankong.tui.store import DB_NAME, Response, Store, Vote


def one_line_error(code, err, *needles):
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- prefs stats on a damaged store: the line prefs export gives -----------------------------------


def _vote(i):
    answers = [
        Response("A", "m", "balanced", {}, 1, f"Blue {i}", "eos"),
        Response("B", "m", "creative", {}, 2, "Red", "eos"),
    ]
    return Vote(
        None, f"prompt {i}", [{"role": "user", "content": f"prompt {i}"}], answers, "ranked", [0, 1], "ann", True
    )


def zero_pages(db):
    """Pages 3-5 zeroed, the header intact: the file opens, then a read meets the damage."""
    data = db.read_bytes()
    db.write_bytes(data[: 4096 * 3] + b"\0" * 4096 * 3 + data[4096 * 6 :])


def drop_votes(db):
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE votes")


def rename_outcome(db):
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE votes RENAME COLUMN outcome TO result")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (zero_pages, "(database disk image is malformed)"),
        (drop_votes, "(its votes table is missing)"),
        (rename_outcome, "(its votes table has no column outcome)"),
    ],
)
@pytest.mark.parametrize("command", [["stats"], ["export", "--format", "trl"]])
def test_prefs_on_a_damaged_store_is_the_one_damaged_line(tmp_path, monkeypatch, capsys, damage, reason, command):
    folder = tmp_path / "data"
    with Store(folder / DB_NAME) as store:
        store.add_votes([_vote(i) for i in range(40)])  # enough rows for pages 3-5 to hold votes
    damage(folder / DB_NAME)
    code, _, err = cli(monkeypatch, capsys, "prefs", *command, "--data-dir", folder)
    one_line_error(code, err, f"{folder / DB_NAME} is damaged {reason}", ".recover")


# --- presets: a file's name is its preset's name -----------------------------------------------------


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TIANKONG_CONFIG_DIR", str(tmp_path))
    return tmp_path


def test_a_preset_file_claiming_another_name_is_refused_naming_both(config_dir, monkeypatch, capsys):
    (config_dir / "presets").mkdir()
    (config_dir / "presets" / "mine.toml").write_text('name = "balanced"\n[params]\ntemperature = 1.9\n')
    # Before, `--preset mine` said mine did not exist, and every command's default silently became it.
    code, _, err = cli(monkeypatch, capsys, "presets", "mine")
    one_line_error(code, err, "mine.toml: says name = 'balanced'", "its file name ('mine')", "balanced.toml")
    code, out, _ = cli(monkeypatch, capsys, "presets", "balanced")  # balanced itself is untouched
    assert code == 0 and "temperature        │ 0.7 " in out


def test_a_presets_path_that_is_a_file_is_refused(config_dir, monkeypatch, capsys):
    (config_dir / "presets").write_text("x\n")
    code, _, err = cli(monkeypatch, capsys, "presets", "balanced")
    one_line_error(code, err, f"{config_dir / 'presets'} is a file", "folder")


def test_an_unknown_preset_says_where_own_presets_go(config_dir, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "presets", "mine")
    one_line_error(code, err, "got 'mine'", f"{config_dir / 'presets'}/NAME.toml")


# --- presets: one broken or hidden file in the folder (QA pass 18) ----------------------------------


def test_presets_lists_the_good_ones_and_names_each_broken_file_with_exit_code_1(config_dir, monkeypatch, capsys):
    # QA: one bad mine.toml made `tiankong presets`, the command to diagnose it, fail with that error alone.
    (config_dir / "presets").mkdir()
    (config_dir / "presets" / "mine.toml").write_text("[params]\ntemperature = -1\n")
    (config_dir / "presets" / "ok.toml").write_text('use = "fine"\n')
    code, out, err = cli(monkeypatch, capsys, "presets")
    assert code == 1
    assert all(name in out for name in ("balanced *", "creative", "ok ")) and "mine" not in out
    assert (
        err == f"not loaded: {config_dir / 'presets' / 'mine.toml'}: [params] temperature must be in [0, 2], got -1.0\n"
    )
    code, out, _ = cli(monkeypatch, capsys, "presets", "creative")
    assert code == 0 and out.startswith("creative: ")
    code, _, err = cli(monkeypatch, capsys, "presets", "mine")
    one_line_error(code, err, "mine.toml: [params] temperature must be in [0, 2], got -1.0")


def test_a_hidden_file_in_the_presets_folder_breaks_no_command(config_dir, monkeypatch, capsys):
    # QA: Emacs's lock link .#mine.toml (dangling) made every command say "cannot read .../.#mine.toml".
    (config_dir / "presets").mkdir()
    (config_dir / "presets" / "mine.toml").write_text("[params]\ntop_k = 3\n")
    (config_dir / "presets" / ".#mine.toml").symlink_to("user@host.4242:1700000000")
    code, out, err = cli(monkeypatch, capsys, "presets")
    assert (code, err) == (0, "") and ".#" not in out and "mine" in out


def test_the_presets_table_cuts_a_long_name_and_keeps_every_value(config_dir, monkeypatch, capsys):
    # QA: a 200-character name squeezed every value column to nothing; at 80 columns "brainstorming"
    # showed as "brainstormi…". An 80-column terminal: piped, the table keeps its own width.
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich's terminal, with no colour codes (TERM=dumb)
    monkeypatch.setenv("TERM", "dumb")
    (config_dir / "presets").mkdir()
    (config_dir / "presets" / "brainstorming.toml").write_text('use = "ideas"\n[params]\ntop_k = 77\n')
    code, out, _ = cli(monkeypatch, capsys, "presets")
    assert code == 0 and "brainstorming " in out
    (config_dir / "presets" / f"{'n' * 200}.toml").write_text("[params]\ntop_k = 123456\nseed = 987654\n")
    code, out, _ = cli(monkeypatch, capsys, "presets")
    long_row = next(line for line in out.splitlines() if line.startswith(" nnn"))
    assert code == 0 and "…" in long_row and "123456" in long_row and "987654" in long_row
    assert max(len(line) for line in out.splitlines()) <= 80 and "brainstorming " in out


def test_presets_name_writes_numbers_as_the_editor_does(config_dir, monkeypatch, capsys):
    # QA: `presets NAME` wrote 1e+06 where the f3 editor writes 1000000.
    (config_dir / "presets").mkdir()
    (config_dir / "presets" / "wide.toml").write_text(
        "[params]\nmax_new_tokens = 1000000\n[recommended]\ntop_k = [0, 1000000]\n"
    )
    code, out, _ = cli(monkeypatch, capsys, "presets", "wide")
    assert code == 0 and "e+" not in out
    assert "max_new_tokens     │ 1000000 │" in out and "0 – 1000000" in out
    assert "temperature        │ 0.7     │\n" in out  # no range recommended: none shown


def test_chat_and_compare_take_a_preset_name_in_any_case_as_the_list_spells_it(config_dir, monkeypatch, capsys):
    # Names ignore case (QA pass 18): --preset Creative is creative, and the app is given "creative",
    # the name it finds in its presets and stores with each answer.
    import tiankong.tui.app
    from tiankong.tui.cli import _compare_lineup

    started = []
    monkeypatch.setattr(tiankong.tui.app, "run_app", lambda model, **kw: started.append(kw["preset"]))
    code, _, err = cli(monkeypatch, capsys, "chat", "--preset", "Creative", "-m", "http://127.0.0.1:9/v1")
    assert (code, err, started) == (0, "", ["creative"])
    assert _compare_lineup(None, "BALANCED,Precise", None)[0] == ["balanced", "precise"]
