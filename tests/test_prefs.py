"""Preference export (TRL), import (TRL and Anthropic HH), stats, and the `tiankong prefs` commands."""

from __future__ import annotations

import json

import pytest
from helpers import cli

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


@pytest.mark.parametrize(
    "args, message",
    [
        (["prefs", "import", "{tmp}/missing.jsonl"], "missing.jsonl does not exist"),
        (["prefs", "import", "{tmp}"], "is a folder, not a file"),  # it said "does not exist"
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
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tiankong.tui.cli import main\n"
        f"for argv in (['prefs', 'stats', '--data-dir', {str(tmp_path)!r}], ['presets']):\n"
        "    sys.argv = ['tiankong', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


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
