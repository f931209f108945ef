"""The store's one SQLite connection: where the file lives, opening and migrating it, and the
transaction and the read that every method of the chats (store_chats.py) and votes (store_votes.py)
goes through. Store (store.py) is those two halves on this base; it sits apart so that each half
builds on it without importing the other.

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

import functools
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import platformdirs

from tiankong.engine.errors import TiankongError
from tiankong.tui.store_schema import MIGRATIONS

DB_NAME = "tiankong.db"
_FIX = "choose another folder with --data-dir DIR or TIANKONG_DATA_DIR"


class StoreError(TiankongError):
    """The database cannot be opened or written, or a chat/message it was asked for does not exist."""


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


def file_in_the_way(folder: Path) -> Path | None:
    """The first of `folder` and the folders above it that exists but is not a folder (what makes
    mkdir fail with "File exists" or "Not a directory"), or None."""
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


class StoreBase:
    """The connection under Store: opened, migrated and closed here, used only through _tx and _read."""

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
            blocked = file_in_the_way(folder)
            if blocked is not None:  # "File exists" would not say that a file sits where the folder goes
                raise StoreError(
                    f"cannot write the tiankong database at {self.path}: {blocked} is a file, not a folder; "
                    f"move that file away or {_FIX}"
                ) from None
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
            self._check_tables(conn)
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

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock, for reads: a damaged page met while reading (see _damaged)
        becomes the one-line StoreError. `_read` and the row-by-row scans (vote_shapes) go through it."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"the database {self.path} is closed; open a new Store")
            try:
                yield self._conn
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) if _corrupt(e) else e from None

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._reading() as conn:
            cur = conn.execute(sql, tuple(args))
            cur.row_factory = sqlite3.Row
            return cur.fetchall()

    def _damaged(self, e: sqlite3.DatabaseError | str) -> StoreError:
        """A page of the file is damaged (a disk fault, or another program wrote into it), or a table is
        not what its schema version promises (see _check_tables). The file is only opened lazily page by
        page, so this can come up after a clean open; it is said in one line, with how to save the rest,
        instead of a traceback that loses the message being sent."""
        return StoreError(
            f"{self.path} is damaged ({e}); save what is readable with `sqlite3 {self.path} .recover "
            f"| sqlite3 recovered.db` and move the damaged file away, or {_FIX}"
        )

    def _check_tables(self, conn: sqlite3.Connection) -> None:
        """Every table and column the migrations make must be in the file: one dropped or rebuilt outside
        tiankong (a hand edit, a partial restore) would otherwise fail in the first query that reads it,
        as "no such table" at the end of a traceback. Extra tables and columns are left alone."""
        for table, columns in _expected_tables().items():
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if not have:
                raise self._damaged(f"its {table} table is missing")
            missing = [c for c in columns if c not in have]
            if missing:
                raise self._damaged(f"its {table} table has no column {', '.join(missing)}")


@functools.cache
def _expected_tables() -> dict[str, tuple[str, ...]]:
    """{table: its columns} as the migrations build them, on an empty in-memory database. Virtual tables
    and their shadow tables (the FTS5 search index) are left out: whether they exist depends on the
    SQLite a file was first opened with, and search works without them."""
    conn = sqlite3.connect(":memory:")
    try:
        for migration in MIGRATIONS:
            migration(conn)
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
        virtual = [name for name, sql in rows if sql.upper().startswith("CREATE VIRTUAL")]
        return {
            name: tuple(row[1] for row in conn.execute(f"PRAGMA table_info({name})"))
            for name, _ in rows
            if not name.startswith("sqlite_") and not any(name == v or name.startswith(v + "_") for v in virtual)
        }
    finally:
        conn.close()


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
