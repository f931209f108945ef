"""Chats and preference votes in one SQLite file.

Durability choices:

* WAL journal: readers (an export in another terminal) never block the playground's writes, and a
  commit is one append to the WAL, so a crash or a kill at any moment leaves either the whole
  transaction or none of it.
* synchronous=NORMAL for chats: in WAL mode a committed transaction survives the process being
  killed (the WAL write has reached the OS before the call returns); only a power cut can roll back
  the last few commits, and a chat message can be regenerated. Votes are a person's judgement and
  cannot be regenerated, so `add_vote`/`add_votes` switch to synchronous=FULL for their commit, which
  also syncs the WAL to disk before returning.
* Every write method is exactly one transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on any
  error), so nothing is ever half-written.
* Schema changes are a list of migration functions; `PRAGMA user_version` records how many ran.

Threads: the Textual app calls the store from the UI thread and from generation workers. The store
keeps ONE connection (check_same_thread=False) and serialises every use of it with a lock. Calls are
short (no call waits on a model), so the lock is never held long, and one connection means one
transaction order, no per-thread connections to track or close.

Timestamps are ISO-8601 UTC with microseconds ("2025-01-31T12:00:00.000000Z"), so they sort as text.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import platformdirs

from tiankong.engine.errors import InputError, TiankongError

DB_NAME = "tiankong.db"
ROLES = ("system", "user", "assistant")
OUTCOMES = ("ranked", "tie", "both_bad")
MIN_RESPONSES, MAX_RESPONSES = 2, 4
_FIX = "choose another folder with --data-dir DIR or TIANKONG_DATA_DIR"


class StoreError(TiankongError):
    """The database cannot be opened or written, or a chat/message it was asked for does not exist."""


# ---------------------------------------------------------------- records


@dataclass
class ChatSummary:
    id: int
    title: str
    model: str
    preset: str
    created_at: str
    updated_at: str
    n_messages: int


@dataclass
class ChatMatch:
    """A chat found by Store.search_chats: its summary and its newest message containing the query."""

    chat: ChatSummary
    message_id: int
    snippet: str  # that message on one line, cut around the first match


@dataclass
class Message:
    id: int
    chat_id: int
    role: str
    content: str
    preset: str | None
    params: dict | None
    seed: int | None
    finish_reason: str | None
    tokens: list[dict] | None
    created_at: str
    parent_id: int | None = None  # the message this one follows (None: the chat's first)
    siblings: list[int] = field(
        default_factory=list
    )  # ids of the branches at this point, itself included, oldest first


@dataclass
class Chat:
    id: int
    title: str
    model: str
    preset: str
    system_prompt: str
    created_at: str
    updated_at: str
    messages: list[Message] = field(default_factory=list)  # the active branch, first to last


@dataclass
class Response:
    label: str
    model: str
    preset: str
    params: dict
    seed: int | None  # None only for imported responses, whose seed is unknown
    text: str
    finish_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "model": self.model,
            "preset": self.preset,
            "params": self.params,
            "seed": self.seed,
            "text": self.text,
            "finish_reason": self.finish_reason,
        }


@dataclass
class Vote:
    id: int | None
    prompt: str
    conversation: list[dict]  # the chat so far, system prompt included, ending with the user prompt
    responses: list[Response]
    outcome: str  # "ranked" | "tie" | "both_bad"
    ranking: list[int]  # indices into responses, best first; all of them for "ranked", [] otherwise
    rater: str
    blind: bool
    created_at: str = ""  # "" = now, filled in by add_vote
    source: str = "playground"  # "import:FILE" for imported votes
    # How many leading entries of `ranking` the rater put in order; the rest is one unordered group
    # (pressing `3 1 enter` on four answers: C > A > {B, D}). None = the whole ranking is ordered.
    n_ranked: int | None = None
    prompt_id: str | None = None  # which prompt of a prompt file or answers file this vote is about

    def tiers(self) -> list[list[int]]:
        """The ranking as groups of response indices, best first; responses within a group are unordered.
        A ranked vote: one group per ranked response, then the unranked rest; a tie or both-bad: one group."""
        if self.outcome != "ranked":
            return [list(range(len(self.responses)))]
        k = len(self.ranking) if self.n_ranked is None else self.n_ranked
        tiers = [[i] for i in self.ranking[:k]]
        return tiers + [list(self.ranking[k:])] if self.ranking[k:] else tiers

    def pairs(self) -> list[tuple[int, int]]:
        """(better, worse) response indices the rater expressed: every response beats those in lower
        groups; responses in one group (the unranked tail, a tie) are never paired with each other."""
        if self.outcome != "ranked":
            return []
        tiers = self.tiers()
        return [(i, j) for a, tier in enumerate(tiers) for i in tier for lower in tiers[a + 1 :] for j in lower]


def now() -> str:
    """The current time as ISO-8601 UTC text that sorts chronologically."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def data_dir(override: Path | None = None) -> Path:
    """override > $TIANKONG_DATA_DIR > the platform's data folder: $XDG_DATA_HOME/tiankong or
    ~/.local/share/tiankong on Linux (platformdirs). Empty variables count as unset."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get("TIANKONG_DATA_DIR"):
        return Path(os.environ["TIANKONG_DATA_DIR"]).expanduser()
    return Path(platformdirs.user_data_dir("tiankong", appauthor=False))


# ---------------------------------------------------------------- schema


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


# MIGRATIONS[i] takes the schema from user_version i to i + 1. Append only; never edit a shipped one.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _v1_initial,
    _v2_partial_rankings_and_queues,
    _v3_import_hashes,
    _v4_message_search,
    _v5_branches,
]


# ---------------------------------------------------------------- the store


class Store:
    """The playground's database. Open it once per process; every method is thread-safe."""

    def __init__(self, path: Path | None = None) -> None:
        path = Path(path).expanduser() if path is not None else data_dir() / DB_NAME
        if path.is_dir():  # a data folder was given: the database lives inside it
            path = path / DB_NAME
        self.path = path
        self._lock = threading.RLock()
        self._conn = self._open(path)

    # -- opening: every failure names the path and the fix, before any vote can be lost

    def _unwritable(self, what: Path, reason: str) -> StoreError:
        return StoreError(
            f"cannot write the tiankong database at {self.path}: {what} {reason}; make it writable or {_FIX}"
        )

    def _open(self, path: Path) -> sqlite3.Connection:
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._unwritable(folder, f"cannot be created ({e.strerror or e})") from None
        # os.access catches the common case cheaply; root passes it, so the write probe below is what counts.
        if not os.access(folder, os.W_OK | os.X_OK):
            raise self._unwritable(folder, "is not writable")
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise self._unwritable(path, "is not writable")
        try:
            # isolation_level=None: no implicit transactions; _tx() opens and ends each one explicitly.
            conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise self._unwritable(path, f"cannot be opened ({e})") from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except sqlite3.DatabaseError as e:
            conn.close()
            if "not a database" in str(e) or "malformed" in str(e):
                raise StoreError(f"{path} is not a tiankong database ({e}); move it away or {_FIX}") from None
            raise self._unwritable(path, f"refused a write ({e})") from None
        except StoreError:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} was written by a newer tiankong (schema {version}, this one knows "
                    f"{len(MIGRATIONS)}); upgrade tiankong or {_FIX}"
                )
            for migration in MIGRATIONS[version:]:
                migration(conn)
            # Written even when unchanged: a real write, so a read-only database fails here, at open time.
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions

    @contextmanager
    def _tx(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; rolled back on any error. durable=True syncs it to disk."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"the database {self.path} is closed; open a new Store")
            if durable:
                conn.execute("PRAGMA synchronous = FULL")  # applies to the next commit
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as e:
                if not _environmental(e):
                    raise  # a bug in the SQL: keep the traceback
                raise StoreError(
                    f"could not write {self.path} ({e}); check free disk space and that no other "
                    f"program holds it locked"
                ) from None
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) if _corrupt(e) else e from None
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous = NORMAL")

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"the database {self.path} is closed; open a new Store")
            try:
                cur = self._conn.execute(sql, tuple(args))
                cur.row_factory = sqlite3.Row
                return cur.fetchall()
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) if _corrupt(e) else e from None

    def _damaged(self, e: sqlite3.DatabaseError) -> StoreError:
        """A page of the file is damaged (a disk fault, or another program wrote into it). The file is
        only opened lazily page by page, so this can come up after a clean open; it is said in one
        line, with how to save the rest, instead of a traceback that loses the message being sent."""
        return StoreError(
            f"{self.path} is damaged ({e}); save what is readable with `sqlite3 {self.path} .recover "
            f"| sqlite3 recovered.db` and move the damaged file away, or {_FIX}"
        )

    # ---------------------------------------------------------------- chats

    def create_chat(self, model: str, preset: str, system_prompt: str = "", title: str = "") -> int:
        t = now()
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO chats (title, model, preset, system_prompt, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (title, model, preset, system_prompt, t, t),
            )
            return int(cur.lastrowid)

    def list_chats(self, limit: int = 500) -> list[ChatSummary]:
        """Newest (most recently changed) first."""
        rows = self._read(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id) AS n "
            "FROM chats c ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
            (limit,),
        )
        return [_summary(r) for r in rows]

    def search_chats(self, query: str, limit: int = 500) -> list[ChatMatch]:
        """Chats with a message containing `query` (case-insensitive), newest first, each with its newest
        matching message as a one-line snippet.

        Uses the FTS5 trigram index (see _v4_message_search) for queries of three or more characters;
        shorter queries, and a sqlite3 without FTS5 (then only ASCII letters ignore case), use LIKE over
        every message."""
        q = " ".join(query.split())
        if not q:
            return []
        if len(q) >= 3 and self._read("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'"):
            phrase = q.replace('"', '""')  # one FTS5 phrase: q's trigrams in order, i.e. q as a substring
            cond, arg = "id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)", f'"{phrase}"'
        else:
            escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond, arg = "content LIKE ? ESCAPE '\\'", f"%{escaped}%"
        rows = self._read(
            "SELECT c.*, (SELECT COUNT(*) FROM messages x WHERE x.chat_id = c.id) AS n, m.id AS mid, m.content AS hit "
            f"FROM (SELECT chat_id, MAX(id) AS mid FROM messages WHERE {cond} GROUP BY chat_id) h "
            "JOIN chats c ON c.id = h.chat_id JOIN messages m ON m.id = h.mid "
            "ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
            (arg, limit),
        )
        return [ChatMatch(_summary(r), r["mid"], snippet(r["hit"], q)) for r in rows]

    def get_chat(self, chat_id: int) -> Chat:
        """The chat with its active branch (each message knows its siblings, the other branches there)."""
        with self._lock:  # one consistent snapshot of chat and messages
            rows = self._read("SELECT * FROM chats WHERE id = ?", (chat_id,))
            if not rows:
                raise StoreError(f"chat {chat_id} does not exist; list chats to pick one that does")
            msgs = self._read("SELECT * FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,))
        r = rows[0]
        children = _children(msgs)
        path = [_message(m) for m in _active_path(children)]
        for m in path:
            m.siblings = [c["id"] for c in children.get(m.parent_id, [])]
        return Chat(
            r["id"], r["title"], r["model"], r["preset"], r["system_prompt"], r["created_at"], r["updated_at"], path
        )

    def add_message(
        self,
        chat_id: int,
        role: str,
        content: str,
        *,
        preset: str | None = None,
        params: dict | None = None,
        seed: int | None = None,
        finish_reason: str | None = None,
        tokens: list[dict] | None = None,
        parent_id: int | None | str = "active",
    ) -> int:
        """Add a message after `parent_id` ("active": after the active branch's last message; None:
        a new first message) and make it the active branch. A parent that already has children gets
        one more: a sibling branch (regenerate, edit, a branch from another token)."""
        if role not in ROLES:
            raise InputError(f"message role {role!r} is unknown; use one of {', '.join(ROLES)}")
        t = now()
        with self._tx() as conn:
            self._touch(conn, chat_id, t)
            if parent_id == "active":
                cur = conn.execute(
                    "SELECT id, parent_id, selected_at FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,)
                )
                cur.row_factory = sqlite3.Row
                path = _active_path(_children(cur.fetchall()))
                parent_id = path[-1]["id"] if path else None
            elif parent_id is not None:
                row = conn.execute("SELECT chat_id FROM messages WHERE id = ?", (parent_id,)).fetchone()
                if row is None or row[0] != chat_id:
                    raise StoreError(f"message {parent_id} is not in chat {chat_id}; reload the chat")
                self._select(conn, parent_id, t)
            cur = conn.execute(
                "INSERT INTO messages (chat_id, role, content, preset, params, seed, finish_reason, tokens, "
                "created_at, parent_id, selected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    chat_id,
                    role,
                    content,
                    preset,
                    _dumps(params),
                    _seed_in(seed),
                    finish_reason,
                    _dumps(tokens),
                    t,
                    parent_id,
                    t,
                ),
            )
            return int(cur.lastrowid)

    def get_message(self, message_id: int) -> Message:
        """One message, with its siblings (the branches at its place, itself included)."""
        with self._lock:
            rows = self._read("SELECT * FROM messages WHERE id = ?", (message_id,))
            if not rows:
                raise StoreError(f"message {message_id} does not exist; it may have been deleted")
            sibs = self._read(
                "SELECT id FROM messages WHERE chat_id = ? AND parent_id IS ? ORDER BY id",
                (rows[0]["chat_id"], rows[0]["parent_id"]),
            )
        m = _message(rows[0])
        m.siblings = [r["id"] for r in sibs]
        return m

    def select_message(self, message_id: int) -> None:
        """Make the branch through this message the active one (below it, its own most recently
        selected branch)."""
        with self._tx() as conn:
            row = conn.execute("SELECT chat_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise StoreError(f"message {message_id} does not exist; it may have been deleted")
            t = now()
            self._touch(conn, row[0], t)
            self._select(conn, message_id, t)

    @staticmethod
    def _select(conn: sqlite3.Connection, message_id: int, t: str) -> None:
        """Mark the message and its ancestors selected at `t`, so the active path runs through it."""
        conn.execute(
            "WITH RECURSIVE up(id) AS (SELECT ? UNION ALL SELECT m.parent_id FROM messages m JOIN up "
            "ON m.id = up.id WHERE m.parent_id IS NOT NULL) "
            "UPDATE messages SET selected_at = ? WHERE id IN (SELECT id FROM up)",
            (message_id, t),
        )

    def update_message(
        self,
        message_id: int,
        content: str,
        *,
        preset: str | None = None,
        params: dict | None = None,
        seed: int | None = None,
        finish_reason: str | None = None,
        tokens: list[dict] | None = None,
    ) -> None:
        """Replace the content; optional fields given as None keep their stored value."""
        sets, args = ["content = ?"], [content]
        for name, value in (
            ("preset", preset),
            ("params", _dumps(params)),
            ("seed", _seed_in(seed)),
            ("finish_reason", finish_reason),
            ("tokens", _dumps(tokens)),
        ):
            if value is not None:
                sets.append(f"{name} = ?")
                args.append(value)
        with self._tx() as conn:
            row = conn.execute("SELECT chat_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise StoreError(f"message {message_id} does not exist; it may have been deleted")
            conn.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id = ?", (*args, message_id))
            self._touch(conn, row[0], now())

    def delete_messages_from(self, chat_id: int, message_id: int) -> None:
        """Delete that message and every message after it on its branches (its subtree)."""
        with self._tx() as conn:
            row = conn.execute("SELECT chat_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None or row[0] != chat_id:
                raise StoreError(f"message {message_id} is not in chat {chat_id}; reload the chat")
            conn.execute(
                "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL SELECT m.id FROM messages m JOIN down "
                "ON m.parent_id = down.id) DELETE FROM messages WHERE id IN (SELECT id FROM down)",
                (message_id,),
            )
            self._touch(conn, chat_id, now())

    def update_chat(
        self, chat_id: int, *, title: str | None = None, preset: str | None = None, system_prompt: str | None = None
    ) -> None:
        with self._tx() as conn:
            self._touch(conn, chat_id, now())
            for name, value in (("title", title), ("preset", preset), ("system_prompt", system_prompt)):
                if value is not None:
                    conn.execute(f"UPDATE chats SET {name} = ? WHERE id = ?", (value, chat_id))

    def delete_chat(self, chat_id: int) -> None:
        with self._tx() as conn:  # messages go with it (ON DELETE CASCADE)
            conn.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    @staticmethod
    def _touch(conn: sqlite3.Connection, chat_id: int, t: str) -> None:
        if conn.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (t, chat_id)).rowcount == 0:
            raise StoreError(f"chat {chat_id} does not exist; it may have been deleted")

    # -- exports

    def export_chat_markdown(self, chat_id: int) -> str:
        chat = self.get_chat(chat_id)
        out = [
            f"# {chat.title or f'Chat {chat.id}'}",
            "",
            f"- model: `{chat.model}`",
            f"- preset: `{chat.preset}`",
            f"- created: {chat.created_at}",
            "",
        ]
        if chat.system_prompt:
            out += ["**System**", "", chat.system_prompt, ""]
        for m in chat.messages:
            head = f"**{m.role.capitalize()}**"
            if m.role == "assistant":  # enough to reproduce the answer
                notes = [
                    f"preset `{m.preset}`" if m.preset else "",
                    f"seed {m.seed}" if m.seed is not None else "",
                    f"finish: {m.finish_reason}" if m.finish_reason else "",
                ]
                notes = [n for n in notes if n]
                if notes:
                    head += f" _({', '.join(notes)})_"
            out += [head, "", m.content, ""]
        return "\n".join(out)

    def export_chat_jsonl(self, chat_id: int) -> str:
        """One JSON object per message; the chat's system prompt, if any, comes first as a "system" line."""
        chat = self.get_chat(chat_id)
        lines = []
        if chat.system_prompt:
            lines.append(
                {
                    "role": "system",
                    "content": chat.system_prompt,
                    "preset": None,
                    "params": None,
                    "seed": None,
                    "finish_reason": None,
                }
            )
        for m in chat.messages:
            lines.append(
                {
                    "role": m.role,
                    "content": m.content,
                    "preset": m.preset,
                    "params": m.params,
                    "seed": m.seed,
                    "finish_reason": m.finish_reason,
                }
            )
        return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)

    # ---------------------------------------------------------------- votes

    def add_vote(self, vote: Vote) -> int:
        """Validate and store one vote; it is on disk (fsynced) when this returns."""
        return self.add_votes([vote])[0]

    def add_votes(self, votes: list[Vote]) -> list[int]:
        """Store several votes in ONE transaction: all of them or, on any error, none."""
        for vote in votes:
            validate_vote(vote)
        t = now()
        with self._tx(durable=True) as conn:
            return [int(conn.execute(_INSERT_VOTE, _vote_row(v, t)).lastrowid) for v in votes]

    def add_branch_votes(self, votes: list[Vote]) -> int:
        """Store chat branch votes (two responses each) in ONE durable transaction, each replacing an
        earlier branch vote on the same two answers to the same conversation, whichever way it went:
        voting again, or changing one's mind, leaves one vote per pair rather than duplicates that
        would weigh twice in training. Returns how many earlier votes were replaced."""
        for vote in votes:
            validate_vote(vote)
        t, replaced = now(), 0
        with self._tx(durable=True) as conn:
            for v in votes:
                key = _pair_key(v)
                replaced += conn.execute(
                    "DELETE FROM votes WHERE source = ? AND content_hash = ?", (v.source, key)
                ).rowcount
                conn.execute(_INSERT_VOTE, _vote_row(v, t, key))
        return replaced

    def import_votes(self, votes: list[Vote], batch_size: int = 1000) -> tuple[int, int]:
        """Store imported votes, skipping each whose content (`vote_hash`) was already stored when the
        import began; votes repeated within `votes` all go in, as the file says. Returns (added,
        duplicates skipped).

        Every vote is validated before the first is written. They go in as durable transactions of
        `batch_size` votes, so a playground voting meanwhile waits for one batch, never for the whole
        import; an import stopped half-way (a full disk, Ctrl+C) is finished by importing the same
        file again, the votes already in being skipped as duplicates.
        """
        for vote in votes:
            validate_vote(vote)
        t, added = now(), 0
        before = self._read("SELECT COALESCE(MAX(id), 0) FROM votes")[0][0]  # votes stored before this import
        for start in range(0, len(votes), batch_size):
            if start:
                time.sleep(0.02)  # a gap between batches, in which a vote waiting for the lock gets in
            with self._tx(durable=True) as conn:
                for v in votes[start : start + batch_size]:
                    h = vote_hash(v)
                    if (
                        conn.execute(
                            "SELECT 1 FROM votes WHERE content_hash = ? AND id <= ? LIMIT 1", (h, before)
                        ).fetchone()
                        is None
                    ):
                        conn.execute(_INSERT_VOTE, _vote_row(v, t, h))
                        added += 1
        return added, len(votes) - added

    def undo_last_vote(self, skipped: list[tuple[int, str]] | None = None) -> Vote | None:
        """Delete and return the newest vote cast in the playground (imported votes are never undone).

        A newer row that is not a readable vote (damaged outside tiankong) is left in place and, when
        `skipped` is a list, added to it as (id, reason); the newest readable vote is undone instead."""
        with self._tx(durable=True) as conn:
            ids = conn.execute("SELECT id FROM votes WHERE source NOT LIKE 'import:%' ORDER BY id DESC")
            for (vote_id,) in ids:
                try:
                    cur = conn.execute("SELECT * FROM votes WHERE id = ?", (vote_id,))
                    cur.row_factory = sqlite3.Row
                    vote = _vote(cur.fetchone())
                    validate_vote(vote)
                except sqlite3.OperationalError as e:  # text that is not UTF-8
                    _skip(skipped, vote_id, f"unreadable text ({e})")
                    continue
                except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
                    _skip(skipped, vote_id, f"{type(e).__name__}: {e}")
                    continue
                conn.execute("DELETE FROM votes WHERE id = ?", (vote_id,))
                return vote
            return None

    def list_votes(
        self,
        *,
        preset: str | None = None,
        model: str | None = None,
        outcome: str | None = None,
        limit: int | None = 1000,
        skipped: list[tuple[int, str]] | None = None,
    ) -> list[Vote]:
        """Newest first. preset/model keep votes where any response used it; limit=None returns all.

        A row that is not a readable vote (changed outside tiankong: bad JSON, text that is not UTF-8,
        an impossible ranking) is left out and, when `skipped` is a list, added to it as (id, reason).
        """
        votes = []
        # Preset and model live in the responses' JSON, so they are filtered here rather than in SQL.
        for v in self._iter_votes(outcome, skipped):
            if preset is not None and all(r.preset != preset for r in v.responses):
                continue
            if model is not None and all(r.model != model for r in v.responses):
                continue
            votes.append(v)
            if limit is not None and len(votes) >= limit:
                break
        return votes

    def iter_votes(self, *, oldest_first: bool = False, skipped: list[tuple[int, str]] | None = None) -> Iterator[Vote]:
        """Every readable vote, newest first (or oldest first), read a page at a time: memory stays
        that of one page however many votes there are. Unreadable rows are skipped as in list_votes."""
        return self._iter_votes(None, skipped, oldest_first=oldest_first)

    def _iter_votes(
        self, outcome: str | None, skipped: list[tuple[int, str]] | None, page: int = 500, oldest_first: bool = False
    ) -> Iterator[Vote]:
        """Every readable vote, newest first, read a page at a time (the lock is held per page)."""
        where, args = ("outcome = ? AND ", [outcome]) if outcome is not None else ("", [])
        # Newest first pages down from the top id, oldest first up from 0; `edge` is the last id read.
        edge, cmp, order = (-1, ">", "ASC") if oldest_first else (1 << 62, "<", "DESC")
        while True:
            ids = [
                r[0]
                for r in self._read(
                    f"SELECT id FROM votes WHERE {where}id {cmp} ? ORDER BY id {order} LIMIT ?", (*args, edge, page)
                )
            ]
            if not ids:
                return
            edge = ids[-1]
            lo, hi = min(ids[0], ids[-1]), max(ids[0], ids[-1])
            try:
                rows = self._read(
                    f"SELECT * FROM votes WHERE {where}id >= ? AND id <= ? ORDER BY id {order}", (*args, lo, hi)
                )
            except sqlite3.OperationalError:  # text that is not UTF-8 somewhere in the page: row by row
                rows = []
                for vote_id in ids:
                    try:
                        rows += self._read("SELECT * FROM votes WHERE id = ?", (vote_id,))
                    except sqlite3.OperationalError as e:
                        _skip(skipped, vote_id, f"unreadable text ({e})")
            for row in rows:
                try:
                    v = _vote(row)
                    validate_vote(v)
                except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
                    _skip(skipped, row["id"], f"{type(e).__name__}: {e}")
                    continue
                yield v

    def vote_shapes(self, skipped: list[tuple[int, str]] | None = None) -> tuple[list[Vote], list[int]]:
        """The votes grouped by their shape, counted in SQL: (shapes, how many votes have each).

        A shape is what the counts and the leaderboards read of a vote: its outcome, ranking, n_ranked
        and each response's preset and model, as a Vote with empty texts. One scan groups the rows by
        those columns (json_extract of the eight fields; no text reaches Python), so a million votes
        take seconds and a few MB. Each shape is then checked once, by validate_vote; rows of a shape
        that is not a vote (damaged outside tiankong) are left out and, when `skipped` is a list, added
        to it as (id, reason).

        Shapes share their parts: one Response per (preset, model) and one ranking list per ranking, so
        even a store with 200,000 shapes (1M random votes) holds them in tens of MB. Treat them as read-only."""
        shapes, counts, bad = [], [], []
        parts: dict[Any, Any] = {}  # the shared parts, and which (outcome, ranking, n_ranked, n) are valid
        with self._lock:
            if self._conn is None:
                raise StoreError(f"the database {self.path} is closed; open a new Store")
            rows = self._conn.execute(  # read row by row: the groups never sit in memory twice
                f"SELECT outcome, CAST(ranking AS BLOB), n_ranked, {_FIELDS}, COUNT(*) FROM votes GROUP BY 1, 2, 3, 4"
            )
            for outcome, ranking, n_ranked, fields, count in rows:
                shape = _shape(outcome, ranking, n_ranked, fields, parts)
                if shape is None:
                    bad.append((outcome, ranking, n_ranked, fields))
                    continue
                shapes.append(shape)
                counts.append(count)
        if skipped is not None:
            for key in bad:  # rare: one more scan per damaged shape, cheap columns compared first
                for (vote_id,) in self._read(
                    "SELECT id FROM votes WHERE outcome IS ? AND CAST(ranking AS BLOB) IS ? AND n_ranked IS ? "
                    f"AND {_FIELDS} IS ? ORDER BY id",
                    key,
                ):
                    _skip(skipped, vote_id, "its responses, ranking or n_ranked do not form a vote")
        return shapes, counts

    def vote_summary(
        self, skipped: list[tuple[int, str]] | None = None
    ) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
        """(vote_stats(), votes per outcome), from vote_shapes (one scan in SQL)."""
        return summarise(*self.vote_shapes(skipped))

    def vote_stats(self, skipped: list[tuple[int, str]] | None = None) -> dict[str, dict[str, int]]:
        """Per preset: votes it took part in, wins, losses, ties, both_bad (see vote_summary).

        A ranked vote over K responses is read as its expressed pairs (`Vote.pairs`; all K(K-1)/2 of
        them for a full ranking): for each pair, the better-ranked response's preset gets a win and
        the other's a loss. So in a 3-way ranking the first gets 2
        wins, the second 1 win and 1 loss, the last 2 losses. A pair of two responses with the same
        preset (e.g. two models compared under one preset) says nothing about presets and is skipped.
        A tie or both_bad vote counts once for each preset in it, however many responses used it.
        """
        return self.vote_summary(skipped)[0]

    # ---------------------------------------------------------------- prompt queues

    def queue_position(self, key: str) -> int:
        """How many rounds of the queue `key` are done (0 for a queue never seen)."""
        rows = self._read("SELECT position FROM queues WHERE key = ?", (key,))
        return int(rows[0]["position"]) if rows else 0

    def set_queue_position(self, key: str, position: int, total: int, source: str = "") -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO queues (key, source, position, total, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET source = excluded.source, position = excluded.position, "
                "total = excluded.total, updated_at = excluded.updated_at",
                (key, source, position, total, now()),
            )


# ---------------------------------------------------------------- helpers


def validate_vote(v: Vote) -> None:
    """Raise InputError unless the vote is storable: 2-4 responses, a known outcome, a matching ranking."""
    if v.outcome not in OUTCOMES:
        raise InputError(f"vote outcome {v.outcome!r} is unknown; use one of {', '.join(OUTCOMES)}")
    n = len(v.responses)
    if not MIN_RESPONSES <= n <= MAX_RESPONSES:
        raise InputError(f"a vote needs {MIN_RESPONSES} to {MAX_RESPONSES} responses, got {n}")
    if not all(isinstance(r, Response) for r in v.responses):
        raise InputError("vote responses must be Response objects")
    if v.outcome == "ranked":
        if sorted(v.ranking) != list(range(n)):
            raise InputError(
                f"a ranked vote's ranking must order all {n} responses once each "
                f"(a permutation of 0..{n - 1}), got {list(v.ranking)}"
            )
        if v.n_ranked is not None and not (isinstance(v.n_ranked, int) and 1 <= v.n_ranked <= n):
            raise InputError(
                f"a ranked vote's n_ranked (responses put in order) must be 1 to {n} or None, got {v.n_ranked!r}"
            )
    elif list(v.ranking):
        raise InputError(f"a {v.outcome} vote has no ranking; pass ranking=[], got {list(v.ranking)}")
    if not isinstance(v.prompt, str):
        raise InputError(f"vote prompt must be a string, got {type(v.prompt).__name__}")
    for i, m in enumerate(v.conversation):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise InputError(f'vote conversation message {i + 1} must be {{"role": str, "content": str}}')


# [number of responses, [presets of the first four, then their models]] as JSON bytes, parsing `responses`
# three times at most (json_valid, json_array_length, one json_extract with eight paths): null for a response
# that is not an object with those keys, NULL when `responses` is not JSON at all. Per-element json_each
# would parse every response again.
_FIELDS = """CAST(CASE WHEN json_valid(responses) THEN json_array(json_array_length(responses), json_extract(
    responses, '$[0].preset', '$[1].preset', '$[2].preset', '$[3].preset',
    '$[0].model', '$[1].model', '$[2].model', '$[3].model')) END AS BLOB)"""


def summarise(shapes: list[Vote], counts: list[int]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """(per preset: votes, wins, losses, ties, both_bad; votes per outcome) of votes given as shapes with
    counts (Store.vote_shapes). See Store.vote_stats for what counts as what."""
    stats: dict[str, dict[str, int]] = {}
    totals = {o: 0 for o in OUTCOMES}

    def entry(preset: str) -> dict[str, int]:
        return stats.setdefault(preset, {"votes": 0, "wins": 0, "losses": 0, "ties": 0, "both_bad": 0})

    for shape, count in zip(shapes, counts, strict=True):
        names = [r.preset for r in shape.responses]
        totals[shape.outcome] += count
        for p in set(names):
            entry(p)["votes"] += count
        if shape.outcome == "ranked":
            for i, j in shape.pairs():  # only the pairs the rater expressed (see Vote.pairs)
                if names[i] != names[j]:
                    entry(names[i])["wins"] += count
                    entry(names[j])["losses"] += count
        else:
            key = "ties" if shape.outcome == "tie" else "both_bad"
            for p in set(names):
                entry(p)[key] += count
    return dict(sorted(stats.items())), totals


def _shape(outcome: Any, ranking: Any, n_ranked: Any, fields: Any, parts: dict | None = None) -> Vote | None:
    """A vote with these columns and blank responses of these presets and models, if it is a valid
    vote; else None. `parts` (a dict kept across calls) shares the Responses and rankings of shapes and
    remembers which rankings were checked."""
    parts = {} if parts is None else parts
    try:
        n, first4 = json.loads(fields)
        if not (isinstance(n, int) and MIN_RESPONSES <= n <= MAX_RESPONSES and isinstance(first4, list)):
            return None
        presets, models = first4[:n], first4[4 : 4 + n]
        if len(models) != n or not all(isinstance(x, str) for x in presets + models) or not isinstance(outcome, str):
            return None
        key = ("ranking", outcome, ranking, n_ranked, n)
        if key not in parts:  # checked once per ranking, with blank responses
            v = Vote(
                None, "", [], [Response("", "", "", {}, None, "", "")] * n, outcome, json.loads(ranking), "", False
            )
            v.n_ranked = n_ranked
            validate_vote(v)
            parts[key] = v.ranking
        responses = []
        for p, m in zip(presets, models, strict=True):
            if (p, m) not in parts:
                parts[(p, m)] = Response("", m, p, {}, None, "", "")
            responses.append(parts[(p, m)])
    except (ValueError, TypeError, RecursionError):  # not JSON (or not UTF-8), not lists, not a vote
        return None
    return Vote(None, "", [], responses, outcome, parts[key], "", False, n_ranked=n_ranked)


_INSERT_VOTE = (
    "INSERT INTO votes (prompt, conversation, responses, outcome, ranking, rater, blind, source, "
    "created_at, n_ranked, prompt_id, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _vote_row(v: Vote, t: str, content_hash: str | None = None) -> tuple:
    """The values of _INSERT_VOTE for `v`; t is the time for a vote without created_at."""
    return (
        v.prompt,
        _dumps(v.conversation),
        _dumps([r.to_dict() for r in v.responses]),
        v.outcome,
        _dumps(list(v.ranking)),
        v.rater,
        int(bool(v.blind)),
        v.source,
        v.created_at or t,
        v.n_ranked,
        v.prompt_id,
        content_hash,
    )


def vote_hash(v: Vote) -> str:
    """The content hash of an imported vote: prompt, conversation, responses, outcome and ranking, as
    stored (rater, source and time are not content: the same pair imported under another name is a duplicate)."""
    row = _vote_row(v, "")
    parts = [row[0], row[1], row[2], row[3], row[4], None if v.n_ranked is None else str(v.n_ranked)]
    return _content_hash(None if x is None else x.encode("utf-8", "surrogatepass") for x in parts)


def _pair_key(v: Vote) -> str:
    """What a branch vote is about, whichever way it went: its conversation and its two answers' texts
    in sorted order (kept in content_hash; the leading tag keeps it apart from vote_hash's)."""
    assert len(v.responses) == 2, "a branch vote compares two answers"
    texts = sorted(r.text for r in v.responses)
    parts = ["branch pair", _dumps(v.conversation) or "", *texts]
    return _content_hash(x.encode("utf-8", "surrogatepass") for x in parts)


def _content_hash(parts: Iterable[bytes | None]) -> str:
    h = hashlib.sha256()
    for part in parts:  # length-prefixed, so no two different rows hash the same bytes
        h.update(b"\xff" * 8 if part is None else len(part).to_bytes(8, "little"))
        h.update(part or b"")
    return h.hexdigest()


def _skip(skipped: list[tuple[int, str]] | None, vote_id: int, reason: str) -> None:
    if skipped is not None:
        skipped.append((vote_id, reason.splitlines()[0][:160] if reason else "unreadable"))


def _corrupt(e: sqlite3.DatabaseError) -> bool:
    """True when the file itself is damaged rather than the SQL wrong or the disk full."""
    name = getattr(e, "sqlite_errorname", "")  # Python >= 3.11
    if name:
        return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or name.startswith("SQLITE_CORRUPT_")
    return "malformed" in str(e) or "not a database" in str(e)


def _environmental(e: sqlite3.OperationalError) -> bool:
    """True when the failure is the disk's or another process's doing (full, locked, read-only, I/O)."""
    name = getattr(e, "sqlite_errorname", "")  # Python >= 3.11
    if name:
        return name.split("_")[1] in ("BUSY", "LOCKED", "FULL", "READONLY", "IOERR", "CANTOPEN", "PERM")
    return any(w in str(e) for w in ("locked", "full", "readonly", "disk I/O", "unable to open"))


def _seed_in(seed: int | None) -> int | None:
    """A seed (0 .. 2^64 - 1, as the sampler takes it) as SQLite's signed 64-bit INTEGER: the upper
    half wraps to negative numbers, so no seed is refused or turned into a lossy REAL."""
    return None if seed is None else seed - 2**64 if seed >= 2**63 else seed


def _seed_out(value: int | None) -> int | None:
    """_seed_in undone."""
    return None if value is None else value + 2**64 if value < 0 else value


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _summary(r: sqlite3.Row) -> ChatSummary:
    return ChatSummary(r["id"], r["title"], r["model"], r["preset"], r["created_at"], r["updated_at"], r["n"])


def snippet(text: str, query: str, before: int = 30, width: int = 90) -> str:
    """`text` on one line, cut to about `width` characters around the first case-insensitive match of
    `query` (from the start when there is none), with "…" where it was cut."""
    line = " ".join(text.split())
    at = max(line.lower().find(query.lower()), 0)
    start = max(0, min(at - before, len(line) - width))
    end = start + width
    return ("…" if start > 0 else "") + line[start:end] + ("…" if end < len(line) else "")


def _message(r: sqlite3.Row) -> Message:
    return Message(
        r["id"],
        r["chat_id"],
        r["role"],
        r["content"],
        r["preset"],
        _loads(r["params"]),
        _seed_out(r["seed"]),
        r["finish_reason"],
        _loads(r["tokens"]),
        r["created_at"],
        r["parent_id"],
    )


def _children(rows: Iterable[sqlite3.Row]) -> dict[int | None, list[sqlite3.Row]]:
    """Message rows (in id order) grouped by parent id: each message's branches, oldest first."""
    children: dict[int | None, list[sqlite3.Row]] = {}
    for r in rows:
        children.setdefault(r["parent_id"], []).append(r)
    return children


def _active_path(children: dict[int | None, list[sqlite3.Row]]) -> list[sqlite3.Row]:
    """From the root down, the most recently selected child at each step (the newest on a tie)."""
    path: list[sqlite3.Row] = []
    parent: int | None = None
    while children.get(parent):
        best = max(children[parent], key=lambda r: (r["selected_at"] or "", r["id"]))
        path.append(best)
        parent = best["id"]
    return path


def _vote(r: sqlite3.Row) -> Vote:
    return Vote(
        id=r["id"],
        prompt=r["prompt"],
        conversation=_loads(r["conversation"]),
        responses=[Response(**d) for d in _loads(r["responses"])],
        outcome=r["outcome"],
        ranking=_loads(r["ranking"]),
        rater=r["rater"],
        blind=bool(r["blind"]),
        created_at=r["created_at"],
        source=r["source"],
        n_ranked=r["n_ranked"],
        prompt_id=r["prompt_id"],
    )
