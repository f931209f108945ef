"""The SQLite store: chats, votes, migrations, durability under SIGKILL, thread safety, open-time errors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import read_only_mount

from tiankong.engine.errors import InputError, TiankongError
from tiankong.tui import store_base
from tiankong.tui.store import DB_NAME, Response, Store, StoreError, Vote, data_dir
from tiankong.tui.store_schema import MIGRATIONS


def resp(label: str, preset: str, text: str = "", model: str = "m") -> Response:
    return Response(label, model, preset, {"temperature": 0.7}, 1, text or f"answer from {preset}", "eos")


def vote(presets=("balanced", "creative"), outcome="ranked", ranking=None, prompt="Hi?", source="playground"):
    responses = [resp("ABCDE"[i], p) for i, p in enumerate(presets)]
    if ranking is None:
        ranking = list(range(len(presets))) if outcome == "ranked" else []
    return Vote(
        None, prompt, [{"role": "user", "content": prompt}], responses, outcome, ranking, "ann", True, source=source
    )


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TIANKONG_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert data_dir() == tmp_path / "env"
    monkeypatch.setenv("TIANKONG_DATA_DIR", "")  # empty counts as unset
    assert data_dir() == tmp_path / "xdg" / "tiankong"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert data_dir() == Path.home() / ".local" / "share" / "tiankong"


def test_open_sets_wal_foreign_keys_and_schema_version(tmp_path):
    (tmp_path / "d").mkdir()
    with Store(tmp_path / "d") as s:  # an existing folder: the database goes inside it
        assert s.path == tmp_path / "d" / DB_NAME
        conn = s._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL between votes
    with Store(tmp_path / "d") as s:  # reopening runs no migration twice
        assert s.list_chats() == []


def test_unwritable_folder_fails_at_open_naming_path_and_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as e:
        Store(blocker / "sub" / DB_NAME)  # mkdir fails whoever we are, root included
    msg = str(e.value)
    assert isinstance(e.value, TiankongError) and "\n" not in msg
    assert str(blocker) in msg and "--data-dir" in msg and "TIANKONG_DATA_DIR" in msg


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_data_folder_that_is_a_file_is_named_so(tmp_path, below):
    # It said "… cannot be created (File exists)", which does not say that a file is in the way.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as e:
        Store(blocker / below / DB_NAME)
    msg = str(e.value)
    assert f"{blocker} is a file, not a folder; move that file away or choose another folder" in msg
    assert "File exists" not in msg and "Not a directory" not in msg and "\n" not in msg
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through chmod")
def test_read_only_folder_fails_at_open(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="--data-dir"):
            Store(folder / DB_NAME)
    finally:
        folder.chmod(0o700)


def test_not_a_database_and_newer_schema(tmp_path):
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is no sqlite file" * 100)
    with pytest.raises(StoreError, match="not a tiankong database"):
        Store(bad)
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer tiankong"):
        Store(newer)


def _damaged_store(folder: Path, chats: int = 40) -> Path:
    """A store of `chats` chats whose pages 4 and 5 are overwritten, as a disk fault leaves them."""
    with Store(folder) as s:
        for i in range(chats):
            cid = s.create_chat("m", "balanced", title=f"chat {i}")
            s.add_message(cid, "user", "words " * 200)
        s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(folder / DB_NAME, "r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\xff" * 8192)
    return folder / DB_NAME


def test_a_damaged_page_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    """A store too big for the open's check (OPEN_CHECK_S) opens with its damaged pages unseen (SQLite
    reads pages lazily): reading or writing them is a StoreError naming the file and how to save the rest."""
    _damaged_store(tmp_path)
    monkeypatch.setattr(store_base.StoreBase, "_check_pages", lambda self, conn, budget: None)
    with Store(tmp_path) as s:
        with pytest.raises(StoreError, match=r"is damaged .*\.recover"):
            s.list_chats()
        with pytest.raises(StoreError, match="is damaged"):
            for i in range(40):  # some chat's pages are among the damaged ones
                s.add_message(i + 1, "user", "more")


@pytest.mark.parametrize("options", [{}, {"read_only": True}, {"full_check": True}])
def test_a_damaged_store_is_refused_at_open_and_left_as_it_was(tmp_path, options):
    # QA: random bytes over pages 2-3 (good header) went unnoticed: prefs stats, export ("wrote 3
    # rankings") and import ran with exit 0, the import writing into the damaged file.
    path = _damaged_store(tmp_path)
    before = path.read_bytes()
    with pytest.raises(StoreError) as e:
        Store(path, **options)
    msg = str(e.value)
    assert msg.startswith(f"{path} is damaged (") and "\n" not in msg
    assert f"`sqlite3 {path} .recover | sqlite3 recovered.db`" in msg
    assert path.read_bytes() == before  # nothing written into it (no migration, no WAL header)


def test_the_open_check_of_a_big_store_is_bounded_in_time(tmp_path, monkeypatch):
    # A damaged table that quick_check reaches after a clean 30 MB one (it checks the later-made table
    # first): the open gives up after OPEN_CHECK_S and opens the store (whose damaged pages are then met
    # when read), while full_check reads it all and finds them.
    with Store(tmp_path) as s:
        s._conn.execute("CREATE TABLE early (x)")
        s._conn.execute("INSERT INTO early VALUES (1)")
        s._conn.execute("CREATE TABLE filler (b BLOB)")
        s._conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000) "
            "INSERT INTO filler SELECT randomblob(1000) FROM n"
        )
        root = s._conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'early'").fetchone()[0]
        s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(tmp_path / DB_NAME, "r+b") as f:
        f.seek(4096 * (root - 1))
        f.write(b"\xff" * 4096)
    with pytest.raises(StoreError, match="is damaged"):
        Store(tmp_path, full_check=True)
    monkeypatch.setattr(store_base, "OPEN_CHECK_S", 0.001)
    opened = 0
    for _ in range(5):  # the check takes ~20 ms: a timer thread slowed by a busy machine may miss it once
        try:
            Store(tmp_path).close()
            opened += 1
        except StoreError:
            pass
    assert opened > 0


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_a_database_path_that_is_no_file_is_named_as_what_it_is(tmp_path, kind):
    # QA: a folder at tiankong.db had the database made inside it (tiankong.db/tiankong.db), which stats
    # and export then did not find; a FIFO or a link to /dev/zero was "disk I/O error; make it writable".
    path = tmp_path / DB_NAME
    said = {"folder": f"{path} is a folder", "fifo": f"{path} is a FIFO", "device": f"{path} is a link to a device"}
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    for options in ({}, {"read_only": True}):
        with pytest.raises(StoreError) as e:
            Store(path, **options)
        msg = str(e.value)
        assert msg.startswith(said[kind]) and ", not a tiankong database; move it away or choose another" in msg
        assert "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME]
    if kind == "folder":
        assert list(path.iterdir()) == []


@pytest.mark.parametrize("version", [0, 1, 5, -5])
def test_a_schema_version_that_does_not_fit_the_tables_is_a_damaged_header(tmp_path, version):
    # QA: user_version set to 1 (or -5) on a current store: "refused a write (duplicate column name:
    # n_ranked); make it writable". -5 ran the last five migrations (MIGRATIONS[-5:]).
    path = tmp_path / DB_NAME
    with Store(path) as s:
        s.add_vote(vote())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    for options in ({}, {"read_only": True}):
        with pytest.raises(StoreError) as e:
            Store(path, **options)
        msg = str(e.value)
        assert msg.startswith(f"{path} is damaged (its schema version") and "a damaged header" in msg
        assert f"`sqlite3 {path} 'PRAGMA user_version = {len(MIGRATIONS)}'`" in msg and "\n" not in msg
    conn = sqlite3.connect(path)  # the fix it names works
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    conn.close()
    with Store(path) as s:
        assert len(s.list_votes()) == 1


def test_a_store_that_only_reads_waits_for_no_writer_and_a_write_says_it_is_busy(tmp_path, monkeypatch):
    # QA: with another process in BEGIN EXCLUSIVE, stats, export and import waited ~11 s without a word,
    # then said "refused a write (database is locked); make it writable".
    path = tmp_path / DB_NAME
    with Store(path) as s:
        s.add_vote(vote())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO queues VALUES ('k', 's', 0, 0, 't')")
    monkeypatch.setattr(store_base, "BUSY_WAIT_S", 1.0)
    monkeypatch.setattr(store_base, "BUSY_NOTICE_S", 0.3)
    told: list[Path] = []
    try:
        started = time.perf_counter()
        with Store(path, read_only=True, on_busy=told.append) as s:
            assert len(s.list_votes()) == 1
        assert time.perf_counter() - started < 0.9 and told == []
        with pytest.raises(StoreError) as e:
            Store(path, on_busy=told.append)
    finally:
        other.execute("ROLLBACK")
        other.close()
    msg = str(e.value)
    assert told == [path]  # said once, while it waited
    assert msg.startswith(f"{path} is busy (database is locked): another tiankong or another program is writing")
    assert "wait for it to finish or close it" in msg and "writable" not in msg


def _read_only(folder: Path) -> bool:
    """Make `folder` read-only as a read-only mount does (a bind mount, where this process may mount);
    else by its mode, which only a user other than root is bound by. False where neither works."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return True
    return read_only_mount(folder)


def _writable_again(folder: Path) -> None:
    if os.geteuid() != 0:
        folder.chmod(0o700)
    else:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_copy_is_read_and_only_a_write_is_refused(tmp_path):
    # QA: on a read-only mount prefs stats and export were refused ("is not writable").
    folder = tmp_path / "ro"
    with Store(folder / DB_NAME) as s:
        s.add_vote(vote())
    old = tmp_path / "old"
    old.mkdir()
    conn = sqlite3.connect(old / DB_NAME)  # a store of an older schema, which opening must migrate
    for migration in MIGRATIONS[:9]:
        migration(conn)
    conn.execute("PRAGMA user_version = 9")
    conn.commit()
    conn.close()
    if not (_read_only(folder) and _read_only(old)):
        pytest.skip("no read-only mount here")
    try:
        with Store(folder, read_only=True) as s:
            assert [v.prompt for v in s.list_votes()] == ["Hi?"]
        with pytest.raises(StoreError, match=f"{folder} is not writable; make it writable"):
            Store(folder)
        with pytest.raises(StoreError) as e:
            Store(old, read_only=True)
        assert "is of an older tiankong (schema 9, this one reads" in str(e.value)
        assert "open it once where it can be written" in str(e.value)
    finally:
        _writable_again(folder)
        _writable_again(old)
    assert sorted(p.name for p in folder.iterdir()) == [DB_NAME]


def test_a_data_folder_under_a_missing_home_is_not_made(tmp_path, monkeypatch):
    # QA: HOME=/nonexistent/home made the whole tree on the fly.
    home = tmp_path / "gone" / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TIANKONG_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    with pytest.raises(StoreError) as e:
        Store()
    assert f"the home folder {home} does not exist; set HOME to yours or choose another folder" in str(e.value)
    assert list(tmp_path.iterdir()) == []
    with Store(tmp_path / "elsewhere") as s:  # a folder given, outside the missing home: made as ever
        assert s.path.parent.is_dir()


def test_chat_lifecycle(store):
    cid = store.create_chat("SmolLM2", "balanced", system_prompt="Be brief.", title="primes")
    other = store.create_chat("SmolLM2", "creative")
    time.sleep(0.002)  # so cid's next change is strictly later than other's creation
    u = store.add_message(cid, "user", "Name a prime.")
    a = store.add_message(
        cid,
        "assistant",
        "2",
        preset="balanced",
        params={"temperature": 0.7},
        seed=42,
        finish_reason="eos",
        tokens=[{"id": 17, "text": "2", "logprob": -0.1, "p_sample": 0.9, "entropy": 0.3, "top": []}],
    )
    assert [c.id for c in store.list_chats()] == [cid, other]  # cid changed last
    (summary,) = [c for c in store.list_chats() if c.id == cid]
    assert summary.n_messages == 2 and summary.title == "primes"
    chat = store.get_chat(cid)
    assert chat.system_prompt == "Be brief." and [m.id for m in chat.messages] == [u, a]
    m = chat.messages[1]
    assert (m.params, m.seed, m.finish_reason, m.tokens[0]["id"]) == ({"temperature": 0.7}, 42, "eos", 17)
    assert m.created_at.endswith("Z") and "T" in m.created_at

    store.update_message(a, "3", finish_reason="length")
    m = store.get_chat(cid).messages[1]
    assert (m.content, m.finish_reason, m.seed) == ("3", "length", 42)  # unset fields are kept
    store.update_chat(cid, title="odd primes", system_prompt="")
    assert store.get_chat(cid).title == "odd primes" and store.get_chat(cid).system_prompt == ""

    a2 = store.add_message(cid, "user", "Another?")
    store.delete_messages_from(cid, a)
    assert [m.id for m in store.get_chat(cid).messages] == [u]
    with pytest.raises(StoreError, match="not in chat"):
        store.delete_messages_from(other, u)
    with pytest.raises(StoreError, match="does not exist"):
        store.update_message(a2, "gone")
    with pytest.raises(InputError, match="role"):
        store.add_message(cid, "robot", "beep")

    store.delete_chat(cid)
    with pytest.raises(StoreError, match=f"chat {cid} does not exist"):
        store.get_chat(cid)
    n = store._conn.execute("SELECT COUNT(*) FROM messages WHERE chat_id = ?", (cid,)).fetchone()[0]
    assert n == 0  # cascaded


@pytest.mark.parametrize("seed", [0, 2**63 - 1, 2**63, 2**64 - 1])
def test_every_sampler_seed_round_trips(store, seed):
    """The sampler takes seeds up to 2^64 - 1; SQLite's INTEGER is signed 64-bit. A seed from 2^63 up
    once crashed the chat after the answer streamed, losing it."""
    cid = store.create_chat("m", "balanced")
    a = store.add_message(cid, "assistant", "hi", seed=seed)
    assert store.get_chat(cid).messages[0].seed == seed
    store.update_message(a, "hey", seed=seed ^ 1)
    assert store.get_chat(cid).messages[0].seed == seed ^ 1


def test_failed_write_leaves_nothing(store):
    with pytest.raises(StoreError):
        store.add_message(9999, "user", "to a chat that does not exist")
    assert store._conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    bad = [vote(), vote(outcome="ranked", ranking=[0, 0])]
    with pytest.raises(InputError):
        store.add_votes(bad)
    assert store.list_votes() == []


def test_exports(store):
    cid = store.create_chat("SmolLM2", "precise", system_prompt="You are terse.", title="Math")
    store.add_message(cid, "user", "2+2?")
    store.add_message(cid, "assistant", "4", preset="precise", params={"temperature": 0.3}, seed=7, finish_reason="eos")
    md = store.export_chat_markdown(cid)
    assert md.startswith("# Math\n")
    for part in ("`SmolLM2`", "`precise`", "You are terse.", "**User** · turn 1\n\n2+2?", "**Assistant**", "seed 7"):
        assert part in md
    assert md.index("You are terse.") < md.index("**User**") < md.index("**Assistant**")
    lines = [json.loads(line) for line in store.export_chat_jsonl(cid).splitlines()]
    assert [(x["role"], x["content"]) for x in lines] == [
        ("system", "You are terse."),
        ("user", "2+2?"),
        ("assistant", "4"),
    ]
    assert lines[2] == {
        "role": "assistant",
        "content": "4",
        "preset": "precise",
        "params": {"temperature": 0.3},
        "seed": 7,
        "finish_reason": "eos",
        "turn": None,
        "model": "SmolLM2",  # the chat's: add_message was given none
        "dropped_turns": None,  # not known
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(outcome="won"), "outcome 'won' is unknown"),
        (dict(ranking=[0]), "permutation"),
        (dict(ranking=[1, 1]), "permutation"),
        (dict(outcome="tie", ranking=[0, 1]), "no ranking"),
        (dict(presets=("a",)), "2 to 4 responses"),
        (dict(presets=("a", "b", "c", "d", "e"), ranking=[0, 1, 2, 3, 4]), "2 to 4 responses"),
    ],
)
def test_add_vote_validates(store, kwargs, message):
    with pytest.raises(InputError, match=message):
        store.add_vote(vote(**kwargs))
    assert store.list_votes() == []


def test_votes_round_trip_filter_and_undo(store):
    v1 = store.add_vote(vote(("balanced", "creative")))
    v2 = store.add_vote(vote(("precise", "creative"), outcome="tie"))
    v3 = store.add_vote(vote(("a", "b"), source="import:x.jsonl"))
    got = store.list_votes()
    assert [v.id for v in got] == [v3, v2, v1]  # newest first
    first = got[-1]
    assert first.responses[0] == resp("A", "balanced") and first.ranking == [0, 1] and first.blind is True
    assert first.conversation == [{"role": "user", "content": "Hi?"}] and first.created_at.endswith("Z")
    assert [v.id for v in store.list_votes(preset="creative")] == [v2, v1]
    assert [v.id for v in store.list_votes(outcome="tie")] == [v2]
    assert store.list_votes(model="nope") == [] and len(store.list_votes(limit=1)) == 1
    assert store.undo_vote(v1)  # the vote named, not the newest
    assert [v.id for v in store.list_votes()] == [v3, v2]
    assert not store.undo_vote(v1)  # gone already
    assert not store.undo_vote(v3)  # an imported vote is never undone
    assert [v.id for v in store.list_votes()] == [v3, v2]


def test_undo_names_its_vote_and_frees_its_queue_round_in_one_transaction(store):
    # QA: ctrl+z in one window deleted the newest vote in the database, another rater's.
    alice = store.add_vote(dataclasses.replace(vote(), rater="alice"))
    bob = store.add_vote(dataclasses.replace(vote(), rater="bob"))
    assert store.open_queue("q", 4, "four.txt") == set()
    for r in (0, 1, 2):
        store.mark_queue_round("q", r, True, 4)
    assert store.undo_vote(alice, ("q", 1))
    assert [v.rater for v in store.list_votes()] == ["bob"] and store.list_votes()[0].id == bob
    assert store.queue_rounds("q") == {0, 2} and store.queue_position("q") == 1


def test_an_undone_votes_id_is_never_given_again(store):
    # QA: undo the newest vote, cast another: it took the undone one's id, so an export written in
    # between (its records carry vote_id) named a different vote.
    first = store.add_vote(vote())
    undone = store.add_vote(vote(("precise", "chat")))
    assert store.undo_vote(undone)
    again = store.add_vote(vote(("precise", "chat")))
    assert again > undone > first and [v.id for v in store.list_votes()] == [again, first]


def test_votes_stored_before_schema_10_keep_their_ids_and_index(tmp_path):
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db)
    for migration in MIGRATIONS[:9]:  # ids were plain rowids then
        migration(conn)
    conn.execute("PRAGMA user_version = 9")
    row = "(?, 'Hi?', '[]', ?, 'tie', '[]', 'ann', 1, 'import:x', '2025-01-01T00:00:00Z', NULL, NULL, 'h', 1)"
    responses = json.dumps([dataclasses.asdict(resp("A", "a")), dataclasses.asdict(resp("B", "b"))])
    conn.executemany(f"INSERT INTO votes VALUES {row}", [(3, responses), (7, responses)])
    conn.commit()
    conn.close()
    with Store(db) as s:
        assert [v.id for v in s.list_votes()] == [7, 3] and not s.undo_vote(7)  # imported: kept
        assert s.delete_vote(7) and s.add_vote(vote()) == 8  # not 7 again
        indexes = s._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'votes'")
        assert "votes_by_content" in {name for (name,) in indexes}


def test_queue_rounds_merge_across_windows_and_restart(store):
    # QA: two windows on one queue overwrote each other's position (the last to save won).
    assert store.open_queue("q", 4, "four.txt") == set()
    assert store.mark_queue_round("q", 0, True, 4) == {0}  # window 1: rounds 1 and 2
    assert store.mark_queue_round("q", 1, True, 4) == {0, 1}
    assert store.mark_queue_round("q", 0, True, 4) == {0, 1}  # window 2: its round 1; never backwards
    assert store.queue_position("q") == 2
    assert store.open_queue("q", 4, restart=True) == set() and store.queue_position("q") == 0
    assert store.queue_position("never seen") == 0


def test_a_queue_position_stored_before_schema_6_is_taken_over_once(tmp_path):
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db)
    for migration in MIGRATIONS[:5]:  # the schema with one position per file
        migration(conn)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("INSERT INTO queues VALUES ('compare:abc:x1', 'four.txt', 3, 4, '2025-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    with Store(db) as s:
        assert s.queue_position("compare:abc:x1") == 3  # still readable after the migration
        assert s.open_queue("compare:abc:x1:me", 4, legacy="compare:abc:x1") == {0, 1, 2}  # the first to reopen
        assert s.open_queue("compare:abc:x1:carol", 4, legacy="compare:abc:x1") == set()  # not told it is done
        assert s.queue_position("compare:abc:x1:me") == 3


def test_vote_shapes_count_votes_by_shape(store):
    store.add_votes([vote(("balanced", "creative"), prompt=f"p{i}") for i in range(3)])
    store.add_vote(vote(("balanced", "creative"), ranking=[1, 0]))
    store.add_vote(vote(("balanced", "precise", "chat"), outcome="tie"))
    shapes, counts = store.vote_shapes()
    got = sorted(
        ([r.preset for r in s.responses], [r.model for r in s.responses], s.outcome, s.ranking, c)
        for s, c in zip(shapes, counts, strict=True)
    )
    assert got == [
        (["balanced", "creative"], ["m", "m"], "ranked", [0, 1], 3),
        (["balanced", "creative"], ["m", "m"], "ranked", [1, 0], 1),
        (["balanced", "precise", "chat"], ["m", "m", "m"], "tie", [], 1),
    ]
    assert all(r.text == "" for s in shapes for r in s.responses)  # no text is read


def test_iter_votes_pages_both_ways(store):
    ids = store.add_votes([vote(prompt=f"p{i}") for i in range(7)])
    assert [v.id for v in store._iter_votes(None, None, page=3, oldest_first=True)] == ids
    assert [v.id for v in store._iter_votes(None, None, page=3)] == ids[::-1]


def test_vote_stats_counts_pairs(store):
    store.add_vote(vote(("balanced", "creative", "precise"), ranking=[2, 0, 1]))  # precise > balanced > creative
    store.add_vote(vote(("balanced", "creative"), ranking=[1, 0]))
    store.add_vote(vote(("balanced", "precise"), outcome="tie"))
    store.add_vote(vote(("creative", "creative"), outcome="both_bad"))
    store.add_vote(vote(("precise", "precise"), ranking=[0, 1]))  # same preset: no pair to count
    assert store.vote_stats() == {
        "balanced": {"votes": 3, "wins": 1, "losses": 2, "ties": 1, "both_bad": 0},
        "creative": {"votes": 3, "wins": 1, "losses": 2, "ties": 0, "both_bad": 1},
        "precise": {"votes": 3, "wins": 2, "losses": 0, "ties": 1, "both_bad": 0},
    }


def test_threads_share_one_store(store):
    cid = store.create_chat("m", "balanced")
    errors = []

    def work(n):
        try:
            for i in range(25):
                store.add_message(cid, "user", f"{n}-{i}")
                store.add_vote(vote(prompt=f"{n}-{i}"))
                store.list_votes(limit=5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.get_chat(cid).messages) == 100 and len(store.list_votes(limit=None)) == 100


CHILD = textwrap.dedent("""
    import sys
    from tiankong.tui.store import Store, Vote, Response
    store = Store(sys.argv[1])
    i = 0
    while True:
        rs = [Response(l, "m", p, {"i": i}, i, f"{p} answer {i} " + "x" * 2000, "eos")
              for l, p in (("A", "balanced"), ("B", "creative"), ("C", "precise"))]
        vid = store.add_vote(Vote(None, f"prompt {i}", [{"role": "user", "content": f"prompt {i}"}], rs,
                                  "ranked", [i % 3, (i + 1) % 3, (i + 2) % 3], "child", False))
        print(i, vid, flush=True)
        i += 1
""")


def test_votes_survive_sigkill_mid_write(tmp_path):
    db = tmp_path / DB_NAME
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    committed = {}
    try:
        for line in child.stdout:
            i, vid = map(int, line.split())
            committed[vid] = i
            if len(committed) >= 40:
                break
    finally:
        child.send_signal(signal.SIGKILL)  # while it is in the middle of its next writes
        child.wait(10)
    assert len(committed) >= 40
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Store(db) as s:
        stored = {v.id: v for v in s.list_votes(limit=None)}
        assert set(committed) <= set(stored)
        for vid, i in committed.items():
            v = stored[vid]
            assert v.prompt == f"prompt {i}" and v.ranking == [i % 3, (i + 1) % 3, (i + 2) % 3]
            assert [r.text for r in v.responses] == [
                f"{p} answer {i} " + "x" * 2000 for p in ("balanced", "creative", "precise")
            ]
        s.add_vote(vote())  # and the database is still writable
