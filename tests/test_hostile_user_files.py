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
    for args in (["presets", "mine"], ["presets", "balanced"]):
        code, _, err = cli(monkeypatch, capsys, *args)
        one_line_error(code, err, "mine.toml: says name = 'balanced'", "its file name ('mine')", "balanced.toml")


def test_a_presets_path_that_is_a_file_is_refused(config_dir, monkeypatch, capsys):
    (config_dir / "presets").write_text("x\n")
    code, _, err = cli(monkeypatch, capsys, "presets", "balanced")
    one_line_error(code, err, f"{config_dir / 'presets'} is a file", "folder")


def test_an_unknown_preset_says_where_own_presets_go(config_dir, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "presets", "mine")
    one_line_error(code, err, "got 'mine'", f"{config_dir / 'presets'}/NAME.toml")
