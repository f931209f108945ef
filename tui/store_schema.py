"""The store's tables, as a list of migrations: MIGRATIONS[i] takes a database from schema version i
(`PRAGMA user_version`) to i + 1, and StoreBase._migrate runs the ones a file has not had yet.

Apart from the Store class because a migration is written once and never edited: the tables a reader
looks up sit here in the order they came to be, away from the code that reads and writes them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from tiankong.tui.store_records import Response, Vote, _content_hash, _pair_key


def _v1_initial(conn: sqlite3.Connection) -> None:
    conn.execute("""CREATE TABLE chats (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL,
        preset TEXT NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)""")
    conn.execute("""CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        preset TEXT,
        params TEXT,          -- JSON object
        seed INTEGER,
        finish_reason TEXT,
        tokens TEXT,          -- JSON list of per-token dicts
        created_at TEXT NOT NULL)""")
    conn.execute("CREATE INDEX messages_by_chat ON messages(chat_id, id)")
    # Responses stay JSON inside the vote row: a vote is written and read whole, never in parts.
    conn.execute("""CREATE TABLE votes (
        id INTEGER PRIMARY KEY,
        prompt TEXT NOT NULL,
        conversation TEXT NOT NULL,   -- JSON list of {"role", "content"}
        responses TEXT NOT NULL,      -- JSON list of Response dicts
        outcome TEXT NOT NULL CHECK (outcome IN ('ranked', 'tie', 'both_bad')),
        ranking TEXT NOT NULL,        -- JSON list of indices, best first
        rater TEXT NOT NULL,
        blind INTEGER NOT NULL,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL)""")


def _v2_partial_rankings_and_queues(conn: sqlite3.Connection) -> None:
    """Partial rankings (n_ranked), prompt ids, and where each prompt/answers file's queue stands."""
    conn.execute("ALTER TABLE votes ADD COLUMN n_ranked INTEGER")  # NULL: the whole ranking is ordered
    conn.execute("ALTER TABLE votes ADD COLUMN prompt_id TEXT")
    conn.execute("""CREATE TABLE queues (
        key TEXT PRIMARY KEY,         -- "compare:" or "rank:" + the file's content hash
        source TEXT NOT NULL,         -- the file's path when last used
        position INTEGER NOT NULL,    -- rounds done (voted or skipped): the next one to show
        total INTEGER NOT NULL,
        updated_at TEXT NOT NULL)""")


# The columns a vote's content hash covers, read as bytes (a row with text that is not UTF-8 still hashes).
_HASHED = (
    "CAST(prompt AS BLOB), CAST(conversation AS BLOB), CAST(responses AS BLOB), CAST(outcome AS BLOB), "
    "CAST(ranking AS BLOB), CAST(n_ranked AS BLOB)"
)


def _v3_import_hashes(conn: sqlite3.Connection) -> None:
    """Imported votes carry a content hash (indexed), so importing the same rows again adds nothing.
    Votes imported before this version get theirs here."""
    conn.execute(
        "ALTER TABLE votes ADD COLUMN content_hash TEXT"
    )  # NULL for playground votes (branch votes: _pair_key)
    rows = conn.execute(f"SELECT id, {_HASHED} FROM votes WHERE source LIKE 'import:%'").fetchall()
    conn.executemany(
        "UPDATE votes SET content_hash = ? WHERE id = ?", [(_content_hash(parts), vote_id) for vote_id, *parts in rows]
    )
    conn.execute("CREATE INDEX votes_by_content ON votes(content_hash)")


def _has_fts5_trigram(conn: sqlite3.Connection) -> bool:
    """Whether this sqlite3 has FTS5 with the trigram tokenizer (SQLite >= 3.34)."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x, tokenize='trigram')")
    except sqlite3.OperationalError:
        return False
    conn.execute("DROP TABLE temp.fts5_probe")
    return True


def _v4_message_search(conn: sqlite3.Connection) -> None:
    """Full-text search over messages (Store.search_chats): an FTS5 index of messages.content with the
    trigram tokenizer, which finds any substring of three or more characters in any script (Chinese has
    no spaces to split words at). Triggers keep it in step, so each message write updates it in the
    same transaction; the messages written before this version are indexed here.

    A sqlite3 without FTS5 or trigram creates nothing, and search_chats falls back to LIKE (a scan of
    every message: fine for a person's chats). A database indexed here then needs FTS5 to write
    messages: the triggers use it."""
    if not _has_fts5_trigram(conn):
        return
    conn.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5("
        "content, content='messages', content_rowid='id', tokenize='trigram')"
    )
    conn.execute("""CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END""")
    conn.execute("""CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content); END""")
    conn.execute("""CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END""")
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")  # the messages already stored


def _v5_branches(conn: sqlite3.Connection) -> None:
    """Messages form a tree: each has a parent (the message it answers or follows), so regenerating
    or editing adds a sibling branch instead of replacing. The active branch follows, from the root
    down, the most recently selected child (selected_at, then the newest id). A chat written before
    this version becomes a chain, each message the child of the one before it."""
    conn.execute("ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id)")
    conn.execute("ALTER TABLE messages ADD COLUMN selected_at TEXT")
    conn.execute(
        "UPDATE messages SET selected_at = created_at, parent_id = (SELECT MAX(p.id) FROM messages p "
        "WHERE p.chat_id = messages.chat_id AND p.id < messages.id)"
    )
    conn.execute("CREATE INDEX messages_by_parent ON messages(parent_id)")


def _v6_queue_rounds(conn: sqlite3.Connection) -> None:
    """A queue's progress as the set of its rounds done (voted or skipped) rather than one position:
    windows voting on the same queue add their rounds to the set, so none moves another's progress
    back, and undoing a vote takes out exactly its round. Progress is now kept per lineup and rater
    (tiankong.tui.queue: PromptQueue.progress_key); a queue stored before this version keeps its key
    (the file alone), and its rounds 0 .. position - 1 become its done set here, which the first lineup
    to open that file again takes over (VoteStore.open_queue). queues.position stays, as the first
    round not done: where the queue reopens."""
    conn.execute("""CREATE TABLE queue_rounds (
        key TEXT NOT NULL,            -- the queue, as in queues.key
        round INTEGER NOT NULL,       -- a round done (voted or skipped), 0-based
        PRIMARY KEY (key, round)) WITHOUT ROWID""")
    for key, position, total in conn.execute("SELECT key, position, total FROM queues").fetchall():
        done = range(max(0, min(int(position), int(total))))
        conn.executemany("INSERT INTO queue_rounds (key, round) VALUES (?, ?)", [(key, r) for r in done])


def _v7_queue_claims(conn: sqlite3.Connection) -> None:
    """Which round of a queue each open window is showing (VoteStore.claim_queue_round), so that two
    windows on one file get different rounds rather than the same one, whose second vote would be
    refused. A claim lasts `expires` (a Unix time) unless its window renews it, and goes at once when
    the process that holds it is gone (a kill -9, a crash): `host` and `pid` say whose it is."""
    conn.execute("""CREATE TABLE queue_claims (
        key TEXT NOT NULL,            -- the queue, as in queues.key
        round INTEGER NOT NULL,       -- the round a window shows, 0-based
        window TEXT NOT NULL,         -- the window that shows it (one screen of one process)
        host TEXT NOT NULL,           -- the machine and process the window runs in
        pid INTEGER NOT NULL,
        expires REAL NOT NULL,        -- Unix time; renewed while the window stays open
        PRIMARY KEY (key, round)) WITHOUT ROWID""")


def _v8_imported_flag(conn: sqlite3.Connection) -> None:
    """Imported votes are marked by a column (`imported`) rather than by their source: a rankings
    import keeps each vote's own source ("playground", "branch", "rank:FILE"), so "import:%" no longer
    finds them, and undo (which never deletes an imported vote) needs to know. Before this version an
    imported vote was one whose source starts with "import:", or one with a content hash that is not a
    branch vote's pair key (playground and queue votes carry none). An imported branch vote was hashed
    as any import rather than by its pair (_pair_key), so voting on that pair again never replaced it:
    its hash is set right here."""
    conn.execute("ALTER TABLE votes ADD COLUMN imported INTEGER NOT NULL DEFAULT 0")
    conn.execute(
        "UPDATE votes SET imported = 1 WHERE source LIKE 'import:%' OR (content_hash IS NOT NULL AND source <> 'branch')"
    )
    rows = conn.execute(
        "SELECT id, conversation, responses, content_hash FROM votes WHERE source = 'branch' AND content_hash IS NOT NULL"
    ).fetchall()
    for vote_id, conversation, responses, stored in rows:
        try:
            texts = [r["text"] for r in json.loads(responses)]
            answers = [Response("", "", "", {}, None, t, "") for t in texts]
            pair = Vote(None, "", json.loads(conversation), answers, "ranked", [0, 1], "", False)
            key = _pair_key(pair) if len(texts) == 2 else None
        except (ValueError, TypeError, KeyError, AssertionError, RecursionError):  # damaged outside tiankong
            continue
        if key is not None and key != stored:  # not the hash add_branch_votes gave it: imported
            conn.execute("UPDATE votes SET imported = 1, content_hash = ? WHERE id = ?", (key, vote_id))


def _v9_answer_models(conn: sqlite3.Connection) -> None:
    """Each answer keeps the model that wrote it (`model`, a model_key as chats.model is): a chat
    continued with another model (ctrl+o in `tiankong chat -m OTHER`) holds answers of both, and its
    titles, branch votes and exports name each answer's own. And how many of the chat's oldest turns
    its prompt left out (`dropped`, engine/context.py's fit_messages): a branch vote and an export say
    what the model saw, not the whole chat. Answers stored before this version get their chat's model
    (the one the chat was written with until now); how much of the chat they saw is not known (NULL)."""
    conn.execute("ALTER TABLE messages ADD COLUMN model TEXT")  # NULL for user and system messages
    conn.execute("ALTER TABLE messages ADD COLUMN dropped INTEGER")
    conn.execute(
        "UPDATE messages SET model = (SELECT c.model FROM chats c WHERE c.id = messages.chat_id) "
        "WHERE role = 'assistant'"
    )


def _v10_vote_ids_never_reused(conn: sqlite3.Connection) -> None:
    """Vote ids are never given twice (AUTOINCREMENT): SQLite's plain rowid gives a new row the
    largest id plus one, so undoing the newest vote and casting another gave the new one the undone
    one's id, and an export written in between (its records carry vote_id) then named another vote.
    SQLite adds AUTOINCREMENT only at CREATE TABLE, so the table is made anew with the columns it has
    at version 9 and the votes copied across, ids kept."""
    columns = (
        "id, prompt, conversation, responses, outcome, ranking, rater, blind, source, created_at, "
        "n_ranked, prompt_id, content_hash, imported"
    )
    conn.execute("""CREATE TABLE votes_v10 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        prompt TEXT NOT NULL,
        conversation TEXT NOT NULL,
        responses TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('ranked', 'tie', 'both_bad')),
        ranking TEXT NOT NULL,
        rater TEXT NOT NULL,
        blind INTEGER NOT NULL,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL,
        n_ranked INTEGER,
        prompt_id TEXT,
        content_hash TEXT,
        imported INTEGER NOT NULL DEFAULT 0)""")
    conn.execute(f"INSERT INTO votes_v10 ({columns}) SELECT {columns} FROM votes")
    conn.execute("DROP TABLE votes")
    conn.execute("ALTER TABLE votes_v10 RENAME TO votes")
    conn.execute("CREATE INDEX votes_by_content ON votes(content_hash)")


# MIGRATIONS[i] takes the schema from user_version i to i + 1. Append only; never edit a shipped one.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _v1_initial,
    _v2_partial_rankings_and_queues,
    _v3_import_hashes,
    _v4_message_search,
    _v5_branches,
    _v6_queue_rounds,
    _v7_queue_claims,
    _v8_imported_flag,
    _v9_answer_models,
    _v10_vote_ids_never_reused,
]
