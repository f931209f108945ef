"""Preference export (TRL), import (TRL and Anthropic HH), stats, and the `tiankong prefs` commands."""

from __future__ import annotations

import json
import os

import pytest
from helpers import cli, imports_torch

from tiankong.engine.errors import InputError
from tiankong.tui.prefs import export_records, import_file, iter_export_records, iter_ranking_records, vote_pairs
from tiankong.tui.store import DB_NAME, Response, Store, Vote


def resp(label, preset, text, model="smol"):
    return Response(label, model, preset, {"temperature": 0.7}, 3, text, "eos")


def vote(responses, outcome="ranked", ranking=None, conversation=None, prompt="Name a colour."):
    if conversation is None:
        conversation = [{"role": "user", "content": prompt}]
    if ranking is None:
        ranking = list(range(len(responses))) if outcome == "ranked" else []
    return Vote(None, prompt, conversation, responses, outcome, ranking, "ann", True)


THREE = [resp("A", "balanced", "Blue."), resp("B", "creative", "Ultraviolet dreams."), resp("C", "precise", "Red.")]


def trl_fields(records):
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]


def test_three_way_ranking_gives_three_pairs(store):
    v = vote(THREE, ranking=[2, 0, 1])  # Red > Blue > Ultraviolet
    v.id = store.add_vote(v)
    recs = vote_pairs(v)
    assert trl_fields(recs) == [
        {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Blue."},
        {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Ultraviolet dreams."},
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Ultraviolet dreams."},
    ]
    assert recs[0] == {
        **trl_fields(recs)[0],
        "chosen_preset": "precise",
        "rejected_preset": "balanced",
        "chosen_model": "smol",
        "rejected_model": "smol",
        "vote_id": v.id,
    }
    assert "tie" not in recs[0] and "both_bad" not in recs[0]


def test_conversational_when_system_prompt_or_turns():
    system = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a colour."}]
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    for conversation in (system, turns):
        (rec,) = vote_pairs(vote(THREE[:2], conversation=conversation))
        assert rec["prompt"] == conversation
        assert rec["chosen"] == [{"role": "assistant", "content": "Blue."}]
        assert rec["rejected"] == [{"role": "assistant", "content": "Ultraviolet dreams."}]


def test_an_export_has_one_form_per_column_conversational_once_one_vote_needs_it(monkeypatch, capsys, tmp_path):
    """QA: one multi-turn vote made its rows message lists and every other row strings, a file that
    datasets.load_dataset("json") (pyarrow: one type per column) refuses. Now every row takes the
    conversational form then (TRL's: prompt = messages, chosen/rejected = one assistant message), and
    tiankong's trainers still read every row."""
    from tiankong.trainers.records import parse_record

    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    data = tmp_path / "data"
    with Store(data / DB_NAME) as s:
        s.add_vote(vote(THREE[:2], ranking=[1, 0]))  # single-turn
        s.add_vote(vote(THREE[1:], outcome="tie", conversation=turns))  # multi-turn, exported only with ties

    def exported(*flags):
        out = tmp_path / "t.jsonl"
        code, _, err = cli(monkeypatch, capsys, "prefs", "export", "-o", out, "--data-dir", data, *flags)
        assert code == 0, err
        return [json.loads(line) for line in out.read_text().splitlines()]

    plain = exported()  # the multi-turn vote is not in it: plain strings, as before
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in plain] == [
        ("Name a colour.", "Ultraviolet dreams.", "Blue.")
    ]
    rows = exported("--include-ties")
    assert len(rows) == 2
    for column in ("prompt", "chosen", "rejected"):
        assert {type(r[column]) for r in rows} == {list}, column  # one JSON type per column
    assert rows[0]["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "Ultraviolet dreams."}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "Blue."}]
    assert rows[1]["prompt"] == turns and rows[1]["tie"] is True
    # Every message has the same keys, as a struct column needs; the trainers' reader takes every row.
    assert {tuple(sorted(m)) for r in rows for c in ("prompt", "chosen", "rejected") for m in r[c]} == {
        ("content", "role")
    }
    assert [parse_record(r) for r in rows] == [
        ([{"role": "user", "content": "Name a colour."}], "Ultraviolet dreams.", "Blue."),
        (turns, "Ultraviolet dreams.", "Red."),
    ]


def test_ties_and_both_bad_excluded_unless_asked(store):
    store.add_vote(vote(THREE[:2], ranking=[1, 0]))
    store.add_vote(vote(THREE, outcome="tie"))
    store.add_vote(vote(THREE[:2], outcome="both_bad"))
    assert [r["chosen"] for r in export_records(store)] == ["Ultraviolet dreams."]
    with_ties = export_records(store, include_ties=True)
    assert len(with_ties) == 1 + 3 and all(r["tie"] is True for r in with_ties[1:])
    assert {(r["chosen"], r["rejected"]) for r in with_ties[1:]} == {
        ("Blue.", "Ultraviolet dreams."),
        ("Blue.", "Red."),
        ("Ultraviolet dreams.", "Red."),
    }
    everything = export_records(store, include_ties=True, include_both_bad=True)
    assert len(everything) == 5 and everything[-1]["both_bad"] is True and "tie" not in everything[-1]


def test_round_trip_export_import_export(store, tmp_path):
    turns = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    store.add_vote(vote(THREE, ranking=[1, 2, 0]))
    store.add_vote(vote(THREE[:2], conversation=turns, ranking=[1, 0]))
    store.add_vote(vote(THREE[1:], outcome="tie"))
    first = export_records(store, include_ties=True)
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in first))

    with Store(tmp_path / "other" / DB_NAME) as other:
        assert import_file(other, path, rater="me") == len(first) == 5
        second = export_records(other, include_ties=True)
        imported = other.list_votes(limit=None)
    strip = [{k: v for k, v in r.items() if k != "vote_id"} for r in first]
    assert [{k: v for k, v in r.items() if k != "vote_id"} for r in second] == strip
    assert {v.source for v in imported} == {"import:prefs.jsonl"} and {v.rater for v in imported} == {"me"}
    assert sorted(v.outcome for v in imported) == ["ranked"] * 4 + ["tie"]


def test_import_trl_variants_without_metadata(store, tmp_path):
    rows = [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},  # implicit prompt
        {
            "prompt": [{"role": "user", "content": "What colour is the sky?"}],
            "chosen": [{"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "assistant", "content": "Green."}],
        },
        {
            "chosen": [
                {"role": "user", "content": "What colour is the sky?"},
                {"role": "assistant", "content": "Blue."},
            ],
            "rejected": [
                {"role": "user", "content": "What colour is the sky?"},
                {"role": "assistant", "content": "Green."},
            ],
        },
    ]
    path = tmp_path / "trl.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert import_file(store, path) == 4
    votes = list(reversed(store.list_votes()))
    assert [(v.prompt, v.responses[0].text, v.responses[1].text) for v in votes] == [
        ("The sky is", " blue.", " green."),
        ("The sky is", " blue.", " green."),
        ("What colour is the sky?", "Blue.", "Green."),
        ("What colour is the sky?", "Blue.", "Green."),
    ]
    v = votes[0]
    assert v.outcome == "ranked" and v.ranking == [0, 1] and v.rater == "import"
    assert {(r.model, r.preset) for r in v.responses} == {("unknown", "imported")}


HH_CHOSEN = (
    "\n\nHuman: What are some cuss words in english?\n\nAssistant: I'd rather not list those. "
    "Is there something else I can help with?\n\nHuman: Just tell me one.\n\nAssistant: "
    "I'm going to pass on that one, but happy to talk about why people swear."
)
HH_REJECTED = (
    "\n\nHuman: What are some cuss words in english?\n\nAssistant: I'd rather not list those. "
    "Is there something else I can help with?\n\nHuman: Just tell me one.\n\nAssistant: Fine: darn."
)


def test_hh_two_turn_transcript(store, tmp_path):
    path = tmp_path / "hh.json"  # a JSON array this time
    path.write_text(json.dumps([{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}]))
    assert import_file(store, path) == 1
    (v,) = store.list_votes()
    assert v.conversation == [
        {"role": "user", "content": "What are some cuss words in english?"},
        {"role": "assistant", "content": "I'd rather not list those. Is there something else I can help with?"},
        {"role": "user", "content": "Just tell me one."},
    ]
    assert v.prompt == "Just tell me one."
    assert v.responses[0].text == "I'm going to pass on that one, but happy to talk about why people swear."
    assert v.responses[1].text == "Fine: darn." and v.source == "import:hh.json"
    (rec,) = export_records(store)  # multi-turn: exported conversational
    assert rec["prompt"] == v.conversation and rec["chosen"][0]["content"].startswith("I'm going")


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"prompt": oops}', "line 3: invalid JSON"),
        ('{"prompt": "x", "chosen": "a"}', 'line 3: expected a JSON object with "chosen" and "rejected"'),
        ('{"prompt": "x", "chosen": ["a"], "rejected": "b"}', 'line 3: "prompt", "chosen" and "rejected" must'),
        ('{"chosen": "same", "rejected": "same"}', 'line 3: "chosen" and "rejected" are identical'),
    ],
)
def test_bad_line_named_and_nothing_imported(store, tmp_path, bad, message):
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{good}\n{bad}\n{good}\n")
    with pytest.raises(InputError) as e:
        import_file(store, path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert store.list_votes() == []


# ---------------------------------------------------------------- CLI


def test_cli_import_export_stats(monkeypatch, capsys, tmp_path):
    data = tmp_path / "data"
    src = tmp_path / "in.jsonl"
    src.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "prompt": "p1",
                    "chosen": "a",
                    "rejected": "b",
                    "chosen_preset": "precise",
                    "rejected_preset": "creative",
                },
                {
                    "prompt": "p2",
                    "chosen": "c",
                    "rejected": "d",
                    "chosen_preset": "creative",
                    "rejected_preset": "precise",
                },
                {
                    "prompt": "p3",
                    "chosen": "e",
                    "rejected": "f",
                    "chosen_preset": "precise",
                    "rejected_preset": "creative",
                    "tie": True,
                },
            ]
        )
        + "\n"
    )
    code, out, err = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", data, "--rater", "bo")
    assert code == 0 and "imported 3 votes" in err

    monkeypatch.setenv("TIANKONG_DATA_DIR", str(data))  # the env var works as --data-dir
    code, out, err = cli(monkeypatch, capsys, "prefs", "export")
    assert code == 0 and [json.loads(x)["prompt"] for x in out.splitlines()] == ["p1", "p2"]
    dest = tmp_path / "out.jsonl"
    code, out, err = cli(monkeypatch, capsys, "prefs", "export", "--include-ties", "-o", dest)
    assert code == 0 and out == "" and len(dest.read_text().splitlines()) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    code, out, err = cli(monkeypatch, capsys, "prefs", "stats", "--format", "json")
    report = json.loads(out)
    assert report["presets"]["precise"] == {
        "votes": 3,
        "wins": 1,
        "losses": 1,
        "ties": 1,
        "both_bad": 0,
        "win_rate": 0.5,
    }
    assert report["totals"] == {"votes": 3, "ranked": 2, "tie": 1, "both_bad": 0, "pairs": 2}
    code, out, err = cli(monkeypatch, capsys, "prefs", "stats")
    assert code == 0 and "precise" in out and "50.0%" in out and "total" in out
    assert "2 ranked votes; 2 decided pairs between presets" in " ".join(out.split())


def test_a_stopped_export_says_its_file_is_unchanged_and_the_next_removes_a_killed_ones_leftover(
    monkeypatch, capsys, tmp_path
):
    """QA: Ctrl+C mid-export printed nothing, and `timeout -s KILL` left a 40 MB .out.jsonl.XXXX.tmp that
    no later export removed. A temporary file names its writer's pid; the next write of the same target
    removes one whose writer is gone, and keeps a live writer's and any other file."""
    import subprocess
    import sys

    import tiankong.tui.prefs as prefs

    data = tmp_path / "data"
    with Store(data / DB_NAME) as s:
        s.add_vote(vote(THREE[:2], ranking=[1, 0]))
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def stopped(*args, **kwargs):
        yield {"prompt": "p", "chosen": "a", "rejected": "b"}
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(prefs, "iter_export_records", stopped)
        code, _, err = cli(monkeypatch, capsys, "prefs", "export", "-o", out, "--data-dir", data)
    assert code == 130 and err.strip() == f"stopped (Ctrl+C): {out} unchanged (it is written whole or not at all)"
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # a process that has ended: its pid names no writer now
    leftover = tmp_path / f".out.jsonl.{dead}.k1ll3d_x.tmp"
    leftover.write_bytes(b"x" * 1000)
    live = tmp_path / f".out.jsonl.{os.getpid()}.abcdefgh.tmp"  # a writer still running: not touched
    other = tmp_path / f".other.jsonl.{dead}.abcdefgh.tmp"  # another target's: not touched
    for keep in (live, other):
        keep.write_text("x")
    code, _, err = cli(monkeypatch, capsys, "prefs", "export", "-o", out, "--data-dir", data)
    assert code == 0 and len(out.read_text().splitlines()) == 1, err
    assert not leftover.exists() and live.exists() and other.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["prefs", "import", "{tmp}/missing.jsonl"], "missing.jsonl does not exist"),
        (["prefs", "import", "{tmp}"], "is a folder, not a file"),  # it said "does not exist"
        (["prefs", "import", "/dev/null"], "/dev/null is not a regular file"),  # it said "does not exist"
        (["prefs", "import", "{tmp}/same.jsonl"], 'line 1: "chosen" and "rejected" are the same text'),
        (["prefs", "import", "{tmp}/bad.jsonl"], "line 2: invalid JSON"),
        (["prefs", "export", "--format", "csv"], "unknown --format 'csv'; use trl"),
        (["prefs", "stats", "--data-dir", "{tmp}/bad.jsonl/sub"], "--data-dir"),
    ],
)
def test_cli_errors_are_one_line_exit_2(monkeypatch, capsys, tmp_path, args, message):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{nope\n')
    (tmp_path / "same.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "a"}\n')
    monkeypatch.setenv("TIANKONG_DATA_DIR", str(tmp_path / "data"))
    code, out, err = cli(monkeypatch, capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and message in err
    assert out == ""


# rank stands for chat and compare too (one option definition in cli.py); chat itself would start its app unfixed.
@pytest.mark.parametrize("command", [["rank", "answers.jsonl"], ["prefs", "stats"], ["prefs", "export"]])
def test_an_empty_data_dir_is_refused_not_the_current_folder(monkeypatch, capsys, tmp_path, command):
    # `--data-dir ""` was Path(""): a tiankong.db appeared in the folder the command ran in. An empty
    # TIANKONG_DATA_DIR counts as unset (test_store.py: test_data_dir_precedence) and is not refused.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIANKONG_DATA_DIR", str(tmp_path / "data"))
    code, out, err = cli(monkeypatch, capsys, *command, "--data-dir", "")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: Invalid value for '--data-dir': it is empty; give a folder")
    assert "TIANKONG_DATA_DIR" not in err  # the flag was empty, not the variable
    assert list(tmp_path.iterdir()) == []


def test_export_streams_a_page_of_votes_at_a_time(monkeypatch, capsys, tmp_path):
    data = tmp_path / "data"
    with Store(data / DB_NAME) as s:
        s.add_votes([vote(THREE[:2], prompt=f"p{i}") for i in range(1200)])
        pages = []
        s._conn.set_trace_callback(lambda sql: pages.append(sql) if sql.startswith("SELECT * FROM votes") else None)
        records = iter_export_records(s)
        assert next(records)["prompt"] == "p0" and len(pages) == 1  # the oldest vote, after one page of 500
        assert len(list(records)) == 1199 and len(pages) == 3
        assert [r["prompt"] for r in iter_ranking_records(s)][-1] == "p1199"

    def everything_at_once(*args, **kwargs):
        raise AssertionError("export must not load every vote")

    monkeypatch.setattr(Store, "list_votes", everything_at_once)
    dest = tmp_path / "out.jsonl"
    for fmt in ("trl", "rankings"):
        code, out, err = cli(monkeypatch, capsys, "prefs", "export", "--data-dir", data, "--format", fmt, "-o", dest)
        assert code == 0 and "wrote 1200" in err, err
        assert [json.loads(x)["prompt"] for x in dest.read_text().splitlines()] == [f"p{i}" for i in range(1200)]
    code, out, err = cli(monkeypatch, capsys, "prefs", "stats", "--data-dir", data, "--format", "json")
    assert code == 0 and json.loads(out)["totals"]["votes"] == 1200  # stats do not load every vote either
    assert {s["name"] for s in json.loads(out)["leaderboard"]["presets"]} == {"balanced", "creative"}


def test_prefs_commands_do_not_import_torch(tmp_path):
    """`prefs`, `presets` and `models` never sample: they must not pay torch's import (~0.5 GB, seconds)."""
    Store(tmp_path / DB_NAME).close()  # stats reads a store; it refuses a folder without one
    code = (
        "import sys\n"
        "from tiankong.tui.cli import main\n"
        f"for argv in (['prefs', 'stats', '--data-dir', {str(tmp_path)!r}], ['presets']):\n"
        "    sys.argv = ['tiankong', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
    )
    assert not imports_torch(code)


def test_importing_one_vote_says_one_vote(tmp_path, monkeypatch, capsys):
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    code, _, err = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", tmp_path / "data")
    assert code == 0 and "imported 1 vote from" in err


def test_import_says_which_rows_carry_a_margin_it_cannot_keep(tmp_path, monkeypatch, capsys):
    # A vote stores no margin; dropping it silently would train the imported pairs with the default one.
    src = tmp_path / "m.jsonl"
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "c", "rejected": "d", "margin": 2},
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, _, err = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", tmp_path / "data")
    note = err.splitlines()[-1]
    assert code == 0 and "imported 2 votes" in err
    assert note.startswith('note: 1 row (line 2) carries a "margin"') and note.endswith(f"--data {src}")
    src.write_text(json.dumps(rows[0]) + "\n")  # no margin, no note
    code, _, err = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", tmp_path / "other")
    assert code == 0 and "margin" not in err


def test_stats_note_and_help_say_what_the_table_shows(tmp_path, monkeypatch, capsys):
    # QA: the note said an imported vote "counts in no preset's row", right under the imported row
    # that counts it, and --help said the total row shows the decided pairs as wins and losses,
    # where its cells are blank.
    src, data = tmp_path / "one.jsonl", tmp_path / "data"
    src.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    assert cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", data)[0] == 0
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = cli(monkeypatch, capsys, "prefs", "stats", "--data-dir", data)
    assert code == 0
    cells = [[c.strip() for c in line.split("│")] for line in out.splitlines() if "│" in line]
    rows = {row[0]: row[1:] for row in cells}
    assert rows["imported"] == ["1", "0", "0", "0", "0", "–"]
    assert rows["total"][:3] == ["1", "", ""]  # votes; wins and losses blank
    note = " ".join(out.split())
    assert "1 ranked vote; 0 decided pairs between presets" in note
    assert "a vote imported without presets counts in the imported row, with no win or loss" in note
    code, text, _ = cli(monkeypatch, capsys, "prefs", "stats", "--help")
    text = " ".join(text.split())
    assert 'that name no presets (both answers "imported") counts in the imported row, with no win or loss' in text
    assert (
        "The total row counts each vote once: votes, tie votes and both-bad votes; its wins and losses stay blank"
        in text
    )


# ---------------------------------------------------------------- rankings export -> import: votes moved whole


def _db_rows(folder):
    """The vote rows as stored, read with sqlite3 rather than the Store: every column but id, time and hash."""
    import sqlite3

    with sqlite3.connect(folder / DB_NAME) as conn:
        cols = "prompt, conversation, responses, outcome, ranking, rater, blind, source, n_ranked, prompt_id"
        rows = conn.execute(f"SELECT {cols} FROM votes ORDER BY id").fetchall()
    conn.close()
    return rows


def test_rankings_export_imports_back_whole(monkeypatch, capsys, tmp_path):
    # QA: `prefs import` refused the rankings export, and the TRL round trip split each K-way vote into
    # K(K-1)/2 two-answer votes (a 4-way tie became 6 ties), losing seeds, params, rater and prompt id.
    presets = ["balanced", "creative", "precise", "chat"]
    four = [
        Response("ABCD"[i], f"model-{i % 2}", p, {"temperature": 0.1 * i}, 2**64 - 1 - i, f"t{i}", "eos")
        for i, p in enumerate(presets)
    ]
    turns = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a colour."}]
    votes = [
        Vote(
            None,
            "Tell a story.",
            [{"role": "user", "content": "Tell a story."}],
            four,
            "ranked",
            [2, 0, 1, 3],
            "ann",
            True,
            n_ranked=2,
            prompt_id="story-7",
            source="rank:answers.jsonl",
        ),  # C > A > {B, D}
        Vote(None, "Name a colour.", turns, four, "tie", [], "bo", False, prompt_id="p1"),  # a 4-way tie
        Vote(None, "Name a colour.", turns, four[:3], "both_bad", [], "ann", True),  # a 3-way both-bad
        Vote(None, "Hi", [{"role": "user", "content": "Hi"}], four[1:3], "ranked", [1, 0], "cy", False),
    ]
    orig, copy = tmp_path / "orig", tmp_path / "copy"
    with Store(orig / DB_NAME) as s:
        s.add_votes(votes)
    first, second = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl"

    def export(folder, dest):
        code, _, err = cli(
            monkeypatch, capsys, "prefs", "export", "--format", "rankings", "--data-dir", folder, "-o", dest
        )
        assert code == 0, err
        return [{k: v for k, v in json.loads(line).items() if k != "vote_id"} for line in dest.read_text().splitlines()]

    def stats(folder):
        code, out, _ = cli(
            monkeypatch, capsys, "prefs", "stats", "--data-dir", folder, "--format", "json", "--bootstrap", "20"
        )
        assert code == 0
        return json.loads(out)

    exported = export(orig, first)
    code, _, err = cli(monkeypatch, capsys, "prefs", "import", first, "--data-dir", copy)
    assert code == 0 and "imported 4 votes" in err, err
    assert _db_rows(copy) == _db_rows(orig)  # every column as stored: groups, seeds, params, rater, prompt id
    assert export(copy, second) == exported
    assert stats(copy) == stats(orig)
    assert stats(copy)["totals"] == {"votes": 4, "ranked": 2, "tie": 1, "both_bad": 1, "pairs": 6}

    # Again, into the copy or back into the store it came from: nothing new (the votes cast there carry no hash).
    for folder in (copy, orig):
        code, _, err = cli(monkeypatch, capsys, "prefs", "import", first, "--data-dir", folder)
        assert code == 0 and "imported 0 votes" in err and "4 duplicates skipped" in err, err
        assert len(_db_rows(folder)) == 4

    # --rater names every vote; without it each keeps its own
    code, _, err = cli(
        monkeypatch, capsys, "prefs", "import", first, "--data-dir", tmp_path / "third", "--rater", "zoe"
    )
    assert code == 0 and {r[5] for r in _db_rows(tmp_path / "third")} == {"zoe"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ranking": [[0, 1], [2], [3]]}, "single answers best first, then perhaps one group"),
        ({"ranking": [[0], [1], [2]]}, "each of 0..3 in one group"),
        ({"ranking": [[0, 1, 2, 3]]}, "n_ranked"),  # nothing ranked: not a ranked vote
        ({"outcome": "tie"}, 'a tie vote\'s "ranking" is one group of every answer'),
        ({"outcome": "best"}, "\"outcome\" is 'best'"),
        ({"responses": []}, '"responses" must be a list of 2 to 4 answers, got 0 answers'),
        ({"responses": [{"text": "a", "model": "m", "preset": "p", "seed": -1}] * 4}, '"seed" must be an integer'),
        ({"responses": [{"text": "a", "model": "m"}] * 4}, 'response 1 needs "preset"'),
        ({"blind": "yes"}, '"blind" must be true or false'),
        ({"conversation": "hi"}, '"conversation" must be the list'),
    ],
)
def test_a_bad_rankings_record_is_named_and_nothing_imported(tmp_path, monkeypatch, capsys, change, message):
    answers = [{"text": f"t{i}", "model": "m", "preset": f"p{i}"} for i in range(4)]
    good = {
        "conversation": [{"role": "user", "content": "q"}],
        "responses": answers,
        "outcome": "ranked",
        "ranking": [[2], [0], [1, 3]],
    }
    src = tmp_path / "r.jsonl"
    src.write_text(json.dumps(good) + "\n" + json.dumps({**good, **change}) + "\n")
    code, out, err = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", tmp_path / "data")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "line 2" in err and message in " ".join(err.split()) and "nothing was imported" in err
    assert not (tmp_path / "data").exists()  # checked before the database is opened


def test_a_trl_row_gets_the_prompt_id_a_queue_round_of_that_prompt_gets(store, tmp_path):
    from tiankong.tui.queue import prompt_queue

    (tmp_path / "prompts.txt").write_text("Name a colour.\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "Name a colour.", "chosen": "a", "rejected": "b"}) + "\n")
    import_file(store, tmp_path / "p.jsonl")
    [v] = store.list_votes()
    assert v.prompt_id == prompt_queue(tmp_path / "prompts.txt").items[0].prompt_id and v.rater == "import"


# ---------------------------------------------------------------- an import stopped part-way


_STOP_AT = """
import os, signal, sys
# Ctrl+C at its default, as a shell starts a command: an ignored SIGINT inherited from the test
# runner would be left ignored (Stops takes only signals at their defaults) and never stop it.
signal.signal(signal.SIGINT, signal.default_int_handler)
from tiankong.tui import store_votes
from tiankong.tui.cli import main
real, calls = store_votes.vote_hash, [0]
def hash_then_stop(v):
    calls[0] += 1
    if calls[0] == {at}:  # in the middle of a batch's transaction
        os.kill(os.getpid(), signal.{sig})
    return real(v)
store_votes.vote_hash = hash_then_stop
sys.argv = ["tiankong", "prefs", "import", {src!r}, "--data-dir", {data!r}]
main()
"""


@pytest.mark.parametrize(
    "sig, code, said", [("SIGINT", 130, "stopped (Ctrl+C)"), ("SIGTERM", 143, "terminated (SIGTERM)")]
)
def test_a_stopped_import_says_what_it_kept_and_the_fix(tmp_path, sig, code, said):
    # QA: Ctrl+C (or a kill) after 6 s left 35,000 of 60,000 votes stored and said nothing, and --help
    # said one bad row means nothing is imported: a user would think the import all-or-nothing.
    import subprocess
    import sys

    src, data = tmp_path / "pairs.jsonl", tmp_path / "data"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(2500)))
    script = _STOP_AT.format(at=1500, sig=sig, src=str(src), data=str(data))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    stored = len(_db_rows(data))
    assert stored == 2000  # the batch in flight when the signal came was finished, then the import stopped
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"{said}: 2000 of 2500 votes imported into {data / DB_NAME}; run the same command again to import the "
        "rest (the votes already in are skipped as duplicates)"
    )
    again = subprocess.run(  # the same command again, this time not stopped
        [sys.executable, "-c", _STOP_AT.format(at=-1, sig=sig, src=str(src), data=str(data))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "imported 500 votes" in again.stderr and "2000 duplicates skipped" in again.stderr, again.stderr
    assert len(_db_rows(data)) == 2500


def test_an_import_that_fails_part_way_says_what_it_kept(tmp_path, monkeypatch, capsys):
    from tiankong.tui.store import StoreError

    def one_batch_then_full(self, votes, batch_size=1000):
        yield 1000, 1000
        raise StoreError("could not write x.db (database or disk is full); check free disk space")

    monkeypatch.setattr(Store, "import_batches", one_batch_then_full)
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(1500)))
    code, _, err = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", tmp_path / "data")
    progress_line, last = err.strip().splitlines()  # where the progress stopped, then the error
    assert (
        code == 2 and progress_line.startswith("importing 1000/1500") and last.startswith("error: could not write x.db")
    )
    assert "1000 of 1500 votes imported" in last and "run the same command again to import the rest" in last


def test_a_long_import_draws_a_bar_on_a_terminal_and_help_says_it_keeps_batches(tmp_path, monkeypatch, capsys):
    import io

    from rich.console import Console

    from tiankong.tui import prefs

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100)
    monkeypatch.setattr(prefs, "_err", lambda: terminal)
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(2100)))
    code, _, _ = cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", tmp_path / "data")
    shown = screen.getvalue()
    assert code == 0 and "importing" in shown and "━" in shown and "2100/2100" in shown
    assert "imported 2100 votes" in shown
    code, text, _ = cli(monkeypatch, capsys, "prefs", "import", "--help")
    text = " ".join(text.replace("│", " ").split())
    assert "an import stopped part-way (Ctrl+C, a kill, a full disk) says how many votes it kept" in text
    assert "--format rankings" in text


# ---------------------------------------------------------------- read-only commands on a folder without a store


@pytest.mark.parametrize("command", [["export"], ["export", "-o", "{tmp}/out.jsonl"], ["stats"]])
@pytest.mark.parametrize("how", ["--data-dir", "TIANKONG_DATA_DIR"])
def test_export_and_stats_where_there_is_no_store_create_nothing(tmp_path, monkeypatch, capsys, command, how):
    # QA: `prefs export --data-dir ~/tiankong-dat` (a typo) wrote an empty file, exit 0, and left a new
    # empty database at the typo; stats printed a table of zeros.
    for folder in (tmp_path / "typo", tmp_path / "empty"):  # missing, and a folder without a database
        (tmp_path / "empty").mkdir(exist_ok=True)
        args = [a.format(tmp=tmp_path) for a in command]
        if how == "--data-dir":
            args += ["--data-dir", str(folder)]
        else:
            monkeypatch.setenv("TIANKONG_DATA_DIR", str(folder))
        code, out, err = cli(monkeypatch, capsys, "prefs", *args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"error: no tiankong data in {folder} (no {DB_NAME} there)")
        assert "--data-dir" in err and "TIANKONG_DATA_DIR" in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no database, no folder, no output
        assert list((tmp_path / "empty").iterdir()) == []


def test_an_imported_rankings_vote_keeps_its_source_and_is_never_undone(monkeypatch, capsys, tmp_path):
    # Review: a rankings import keeps the exported source ("playground", "branch"), but the store told
    # imported votes by source "import:%" alone: undo deleted them, and an imported branch vote was keyed
    # by vote_hash, so voting on that pair again stored a second vote beside it.
    import sqlite3

    orig, copy, dest = tmp_path / "orig", tmp_path / "copy", tmp_path / "r.jsonl"
    talk = [{"role": "user", "content": "Hi"}]

    def branch_vote(won: str, lost: str) -> Vote:  # a vote between two branches of the chat "Hi"
        answers = [resp("A", "chat", won), resp("B", "chat", lost)]
        return Vote(None, "Hi", talk, answers, "ranked", [0, 1], "ann", False, source="branch")

    branch = branch_vote("Hello.", "Hey.")
    with Store(orig / DB_NAME) as s:
        s.add_votes([vote(THREE)])  # a playground vote
        s.add_branch_votes([branch])
    code, _, err = cli(monkeypatch, capsys, "prefs", "export", "--format", "rankings", "--data-dir", orig, "-o", dest)
    assert code == 0, err
    code, _, err = cli(monkeypatch, capsys, "prefs", "import", dest, "--data-dir", copy)
    assert code == 0 and "imported 2 votes" in err, err
    code, _, err = cli(monkeypatch, capsys, "prefs", "import", dest, "--data-dir", copy)  # again: both are there
    assert code == 0 and "imported 0 votes" in err and "2 duplicates skipped" in err, err
    with Store(copy / DB_NAME) as s:
        assert [v.source for v in s.list_votes()] == ["branch", "playground"]  # the sources came with them
        assert not any(s.undo_vote(v.id) for v in s.list_votes())  # imported: never deleted by undo
        assert len(s.list_votes()) == 2
        # The same pair voted on again in the chat (the other way): it replaces the imported vote.
        assert s.add_branch_votes([branch_vote("Hey.", "Hello.")]) == 1
    with sqlite3.connect(copy / DB_NAME) as conn:
        rows = conn.execute("SELECT source, responses FROM votes WHERE source = 'branch'").fetchall()
    conn.close()
    assert len(rows) == 1 and json.loads(rows[0][1])[0]["text"] == "Hey."


def test_a_store_of_schema_7_marks_its_imported_votes(tmp_path):
    # Votes imported before schema 8: by an "import:" source, a vote_hash under a kept source, or a branch
    # vote keyed by vote_hash (not its pair) - marked imported, and the branch vote keyed by its pair.
    import sqlite3

    from tiankong.tui.store_records import _pair_key, _vote_row, vote_hash
    from tiankong.tui.store_schema import MIGRATIONS

    db = tmp_path / DB_NAME
    talk = [{"role": "user", "content": "Hi"}]
    two = [resp("A", "chat", "Hello."), resp("B", "chat", "Hey.")]
    cast = vote(THREE)
    trl = vote(THREE[:2])
    trl.source = "import:a.jsonl"
    kept = vote(THREE[1:])
    branch = Vote(None, "Hi", talk, two, "ranked", [0, 1], "ann", False, source="branch")
    branch_imported = Vote(None, "Hi", talk, two[::-1], "ranked", [0, 1], "bo", False, source="branch")
    rows = [(cast, None), (trl, vote_hash(trl)), (kept, vote_hash(kept)), (branch, _pair_key(branch))]
    rows.append((branch_imported, vote_hash(branch_imported)))
    conn = sqlite3.connect(db)
    for migration in MIGRATIONS[:7]:
        migration(conn)
    conn.execute("PRAGMA user_version = 7")
    insert = (
        "INSERT INTO votes (prompt, conversation, responses, outcome, ranking, rater, blind, source, "
        "created_at, n_ranked, prompt_id, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for v, h in rows:
        conn.execute(insert, _vote_row(v, "2025-01-01T00:00:00Z", h))
    conn.commit()
    conn.close()
    with Store(db) as s:
        assert [s.undo_vote(i) for i in (5, 4, 3, 2)] == [False, True, False, False]  # only the branch vote cast here
        assert s.add_branch_votes([branch]) == 1  # replaces the imported one: its key is its pair's now
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, imported FROM votes ORDER BY id").fetchall() == [
            (1, 0),
            (2, 1),
            (3, 1),
            (6, 0),
        ]  # 6: the branch vote cast again (ids 4 and 5, deleted, are never given again)
    conn.close()


# ---------------------------------------------------------------- stores that cannot be used as they are

PAIRS = "".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(3))


def _prefs(monkeypatch, capsys, tmp_path, command, data):
    """`tiankong prefs COMMAND --data-dir DATA` (import reads a file of three pairs)."""
    src = tmp_path / "pairs.jsonl"
    src.write_text(PAIRS)
    extra = {"import": [src], "export": ["-o", tmp_path / "out.jsonl"]}.get(command, [])
    return cli(monkeypatch, capsys, "prefs", command, *extra, "--data-dir", data)


@pytest.mark.parametrize("what", ["folder", "fifo", "device link", "data folder is a file"])
def test_every_prefs_command_names_what_is_in_the_stores_place_in_the_same_words(monkeypatch, capsys, tmp_path, what):
    # QA: with tiankong.db a folder, import "imported 3 votes ... into D/tiankong.db/tiankong.db" (exit 0)
    # and stats then said "no tiankong data in D (no tiankong.db there)"; a FIFO or a link to /dev/zero
    # was "no tiankong.db there" to stats, "disk I/O error; make it writable" to import; a data folder
    # that is a file was "no tiankong data" to stats, "is a file, not a folder" to import.
    data = tmp_path / "data"
    data.mkdir()
    if what == "folder":
        (data / DB_NAME).mkdir()
    elif what == "fifo":
        os.mkfifo(data / DB_NAME)
    elif what == "device link":
        (data / DB_NAME).symlink_to("/dev/zero")
    else:
        data.rmdir()
        data.write_text("a file")
    said = {
        "folder": f"error: {data / DB_NAME} is a folder, not a tiankong database; move it away",
        "fifo": f"error: {data / DB_NAME} is a FIFO, not a tiankong database; move it away",
        "device link": f"error: {data / DB_NAME} is a link to a device (/dev/zero), not a tiankong database",
        "data folder is a file": f"error: cannot use the tiankong database at {data / DB_NAME}: {data} is a file, "
        "not a folder; move that file away",
    }[what]
    errors = set()
    for command in ("stats", "export", "import"):
        code, out, err = _prefs(monkeypatch, capsys, tmp_path, command, data)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith(said), err
        errors.add(err)
    assert len(errors) == 1  # the same line from each
    assert not (tmp_path / "out.jsonl").exists()
    if what == "folder":
        assert list((data / DB_NAME).iterdir()) == []


def _damage(path):
    """Random bytes over pages 2 and 3 of a store, its header left good (as QA did)."""
    import random

    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(random.Random(1).randbytes(8192))


def test_prefs_commands_on_a_damaged_store_say_so_and_write_nothing(monkeypatch, capsys, tmp_path):
    # QA: a store with damaged pages 2-3 went unnoticed: stats, export ("wrote 3 rankings") and import
    # ran with exit 0, the import writing into the damaged file.
    data = tmp_path / "data"
    code, _, err = _prefs(monkeypatch, capsys, tmp_path, "import", data)
    assert code == 0, err
    _damage(data / DB_NAME)
    before = (data / DB_NAME).read_bytes()
    for command in ("stats", "export", "import"):
        code, out, err = _prefs(monkeypatch, capsys, tmp_path, command, data)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"error: {data / DB_NAME} is damaged (")
        assert f"`sqlite3 {data / DB_NAME} .recover | sqlite3 recovered.db`" in err
    assert (data / DB_NAME).read_bytes() == before and sorted(p.name for p in data.iterdir()) == [DB_NAME]
    assert not (tmp_path / "out.jsonl").exists()


def test_prefs_read_a_store_another_program_is_writing_and_import_says_it_waits(monkeypatch, capsys, tmp_path):
    # QA: with another process in BEGIN EXCLUSIVE, stats, export and import waited ~11 s without a
    # word, then said "refused a write (database is locked); make it writable".
    import sqlite3
    import time

    from tiankong.tui import store_base

    data = tmp_path / "data"
    assert _prefs(monkeypatch, capsys, tmp_path, "import", data)[0] == 0
    monkeypatch.setattr(store_base, "BUSY_WAIT_S", 1.0)
    monkeypatch.setattr(store_base, "BUSY_NOTICE_S", 0.3)
    other = sqlite3.connect(data / DB_NAME, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO queues VALUES ('k', 's', 0, 0, 't')")
    try:
        started = time.perf_counter()
        code, out, err = _prefs(monkeypatch, capsys, tmp_path, "stats", data)
        assert code == 0 and "imported" in out, err
        code, _, err = _prefs(monkeypatch, capsys, tmp_path, "export", data)
        assert code == 0 and len((tmp_path / "out.jsonl").read_text().splitlines()) == 3, err
        assert time.perf_counter() - started < 10  # no wait for the lock (one was 1 s here)
        code, out, err = _prefs(monkeypatch, capsys, tmp_path, "import", data)
    finally:
        other.execute("ROLLBACK")
        other.close()
    waiting, error = err.strip().splitlines()
    assert code == 2 and waiting.startswith(f"waiting: {data / DB_NAME} is busy (another tiankong or another")
    assert error.startswith(f"error: {data / DB_NAME} is busy (database is locked): another tiankong or another")
    assert "wait for it to finish or close it" in error and "writable" not in error


def test_prefs_stats_and_export_read_a_read_only_copy(monkeypatch, capsys, tmp_path):
    # QA: on a read-only mount stats and export were refused ("is not writable").
    from test_store import _read_only, _writable_again

    data = tmp_path / "data"
    assert _prefs(monkeypatch, capsys, tmp_path, "import", data)[0] == 0
    if not _read_only(data):
        pytest.skip("no read-only mount here")
    try:
        code, out, err = _prefs(monkeypatch, capsys, tmp_path, "stats", data)
        assert code == 0 and "imported" in out, err
        code, _, err = _prefs(monkeypatch, capsys, tmp_path, "export", data)
        assert code == 0 and len((tmp_path / "out.jsonl").read_text().splitlines()) == 3, err
        code, _, err = _prefs(monkeypatch, capsys, tmp_path, "import", data)
        assert code == 2 and f"{data} is not writable; make it writable" in err
    finally:
        _writable_again(data)
    assert sorted(p.name for p in data.iterdir()) == [DB_NAME]


def test_a_stores_own_trl_export_imported_back_adds_nothing(monkeypatch, capsys, tmp_path):
    """QA54: `prefs export --format trl` then `prefs import` of that file into the same store doubled every
    vote (18 -> 34: a TRL row is a pair of a vote, so no vote's content hash matched it). A row is now a
    duplicate when it is one of the pairs of the stored vote its vote_id names; another store's ids name
    other votes, so its rows still go in."""
    turns = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    data, other = tmp_path / "data", tmp_path / "other"
    with Store(data / DB_NAME) as s:
        s.add_vote(vote(THREE, ranking=[1, 2, 0]))  # three rows
        s.add_vote(vote(THREE[:2], conversation=turns, ranking=[1, 0]))  # makes the export conversational
        s.add_vote(vote(THREE[1:], outcome="tie"))
    with Store(other / DB_NAME) as s:  # votes 1-3 there too, on another prompt
        for _ in range(3):
            s.add_vote(vote(THREE[:2], prompt="Name a fruit."))
    path = tmp_path / "prefs.jsonl"
    code, _, err = cli(monkeypatch, capsys, "prefs", "export", "--include-ties", "-o", path, "--data-dir", data)
    assert code == 0 and len(path.read_text().splitlines()) == 5, err
    code, _, err = cli(monkeypatch, capsys, "prefs", "import", path, "--data-dir", data)
    assert code == 0 and "imported 0 votes" in err and "5 duplicates skipped" in err, err
    with Store(data / DB_NAME) as s:
        assert len(s.list_votes(limit=None)) == 3
    code, _, err = cli(monkeypatch, capsys, "prefs", "import", path, "--data-dir", other)
    assert code == 0 and "imported 5 votes" in err and "duplicate" not in err, err
