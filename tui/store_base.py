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
* Opening checks the file for damaged pages (`PRAGMA quick_check`) before anything writes to it: all of
  it for a command that reads or writes every vote anyway (full_check: `prefs export`, `stats`,
  `import`), and for OPEN_CHECK_S at most otherwise (all of a store up to some 40 MB; quick_check reads
  ~400 MB/s, 0.25 s for a 97 MB store of 50,000 votes), so the playground opens as fast as ever.
* A command that only reads (read_only: `prefs export`, `stats`) writes nothing at open, so neither
  another writer's lock nor a read-only copy (a read-only mount, a file that is not the user's) stops it.

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
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import platformdirs

from tiankong.engine.errors import TiankongError
from tiankong.engine.files import kind_of
from tiankong.tui.store_schema import MIGRATIONS

DB_NAME = "tiankong.db"
_FIX = "choose another folder with --data-dir DIR or TIANKONG_DATA_DIR"
OPEN_CHECK_S = 0.1  # how long a plain open may spend looking for damaged pages (see the module docstring)
BUSY_WAIT_S = 10.0  # how long a write waits for another writer's transaction to end
BUSY_NOTICE_S = 1.0  # after this long waiting, on_busy is told (a CLI says it is waiting)


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


def missing_home(folder: Path) -> Path | None:
    """The home folder when it does not exist and `folder` would be made inside it (HOME=/nonexistent
    in a service or container): making it would quietly build a home nobody has. Else None."""
    home = Path(os.path.expanduser("~"))
    if home.exists() or not folder.is_relative_to(home):
        return None
    return home


def in_the_way(path: Path) -> str | None:
    """Why the database cannot be at `path`, in a line that names the fix: a file where its folder
    goes, or a folder, FIFO or device (or a link to one) where the database goes; None when nothing is
    in the way (the file is there, or may be made)."""
    blocked = file_in_the_way(path.parent)
    if blocked is not None:  # "File exists" would not say that a file sits where the folder goes
        return (
            f"cannot use the tiankong database at {path}: {blocked} is a file, not a folder; "
            f"move that file away or {_FIX}"
        )
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # not there yet (or unreadable: opening says which)
    if stat.S_ISREG(mode):
        return None
    what = kind_of(mode)
    if path.is_symlink():
        what = f"a link to {what} ({os.path.realpath(path)})"
    return f"{path} is {what}, not a tiankong database; move it away or {_FIX}"


def refuse_in_the_way(path: Path) -> None:
    """StoreError saying what is in the way (in_the_way) of a database at `path`; every command says it
    in these words, the ones that only read included."""
    problem = in_the_way(path)
    if problem is not None:
        raise StoreError(problem)


class StoreBase:
    """The connection under Store: opened, migrated and closed here, used only through _tx and _read.

    read_only: for a command that only reads; nothing is written at open (a store of the current schema
    is not migrated, so another writer's lock is no wait), and a file or folder that cannot be written
    is opened read-only. full_check: look for damaged pages in the whole file, however long it takes.
    on_busy(path): called once when a write has waited BUSY_NOTICE_S for another writer."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        read_only: bool = False,
        full_check: bool = False,
        on_busy: Callable[[Path], None] | None = None,
    ) -> None:
        path = Path(path).expanduser() if path is not None else data_dir() / DB_NAME
        if path.is_dir() and path.name != DB_NAME:  # a data folder was given: the database lives inside it
            path = path / DB_NAME
        self.path = path
        self.read_only = read_only
        self._on_busy = on_busy
        self._lock = threading.RLock()
        self._conn = self._open(path, full_check)

    # -- opening: every failure names the path and the fix, before any vote can be lost

    def _unwritable(self, what: Path, reason: str) -> StoreError:
        return StoreError(
            f"cannot write the tiankong database at {self.path}: {what} {reason}; make it writable or {_FIX}"
        )

    def _open(self, path: Path, full_check: bool) -> sqlite3.Connection:
        refuse_in_the_way(path)
        writable = self._make_room(path)
        conn = self._connect(path, writable)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            self._check_pages(conn, None if full_check else OPEN_CHECK_S)  # before anything writes to it
            if writable:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn, writable)
            self._check_tables(conn)
        except sqlite3.DatabaseError as e:
            conn.close()
            if getattr(e, "sqlite_errorname", "") == "SQLITE_NOTADB" or "not a database" in str(e):
                raise StoreError(f"{path} is not a tiankong database ({e}); move it away or {_FIX}") from None
            if _corrupt(e):
                raise self._damaged(e) from None
            if _busy(e):
                raise self._busy_error(e) from None
            raise self._unwritable(path, f"refused a write ({e})") from None
        except StoreError:
            conn.close()
            raise
        return conn

    def _make_room(self, path: Path) -> bool:
        """Make the database's folder if need be; -> whether the file can be written. Only a read-only
        store may find it cannot (it is then opened read-only); any other is refused here, naming why."""
        folder = path.parent
        if self.read_only and not path.exists():
            raise StoreError(f"there is no tiankong database at {path}; {_FIX}")
        if not folder.exists() and (home := missing_home(folder)) is not None:
            raise StoreError(
                f"cannot make the tiankong data folder {folder}: the home folder {home} does not exist; "
                f"set HOME to yours or {_FIX}"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._unwritable(folder, f"cannot be created ({e.strerror or e})") from None
        # os.access catches the common case cheaply (a read-only mount, root included); root passes it
        # for a file that is merely chmod'ed, and the write at open is what counts then.
        for what, mode in ((folder, os.W_OK | os.X_OK), (path, os.R_OK | os.W_OK)):
            if what.exists() and not os.access(what, mode):
                if not self.read_only:
                    raise self._unwritable(what, "is not writable")
                if not os.access(path, os.R_OK):
                    raise StoreError(f"cannot read the tiankong database {path}: permission denied; {_FIX}")
                return False
        return True

    def _connect(self, path: Path, writable: bool) -> sqlite3.Connection:
        """The connection: a plain one, or for a file that cannot be written a read-only one (mode=ro;
        on a read-only mount, where the -shm file SQLite reads a WAL database with cannot be made,
        immutable=1: nothing can change the file there while it is read)."""
        # isolation_level=None: no implicit transactions; _tx() opens and ends each one explicitly.
        kw: dict[str, Any] = dict(timeout=BUSY_WAIT_S, check_same_thread=False, isolation_level=None)
        try:
            if writable:
                return sqlite3.connect(str(path), **kw)
            uri = path.absolute().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, **kw)
        except sqlite3.Error as e:
            raise self._unwritable(path, f"cannot be opened ({e})") from None
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:  # "unable to open database file": no -shm can be made here
            conn.close()
        except sqlite3.DatabaseError:
            return conn  # damaged, or no database: _open says which
        try:
            return sqlite3.connect(uri + "&immutable=1", uri=True, **kw)
        except sqlite3.Error as e:
            raise self._unwritable(path, f"cannot be opened ({e})") from None

    def _check_pages(self, conn: sqlite3.Connection, budget: float | None) -> None:
        """PRAGMA quick_check (every page's structure, not the index contents: integrity_check's slower
        half), for `budget` seconds at most (None: however long): a damaged page found here is the
        one-line _damaged error before anything is written into the file. A store too big to finish in
        the budget is left to _reading and _tx, which meet a damaged page when they read it."""
        done = threading.Lock()  # held from the moment the check ends: the timer may interrupt no other statement
        timer = None if budget is None else threading.Timer(budget, _interrupt_unless, (conn, done))
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            rows = conn.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorname", "") == "SQLITE_INTERRUPT" or "interrupted" in str(e):
                return  # out of time: a big store
            raise
        finally:
            done.acquire()
            if timer is not None:
                timer.cancel()
        if rows != [("ok",)]:  # "*** in database main ***\nPage 2: btreeInitPage() returns error code 11"
            raise self._damaged("database disk image is malformed")  # in the words a read that meets it says

    def _migrate(self, conn: sqlite3.Connection, writable: bool) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} was written by a newer tiankong (schema {version}, this one knows "
                f"{len(MIGRATIONS)}); upgrade tiankong or {_FIX}"
            )
        if version < 0:
            raise self._wrong_version(conn, f"its schema version is {version}, which no tiankong writes")
        if self.read_only and version == len(MIGRATIONS):
            return  # nothing to change: a read takes no write lock
        if not writable:
            raise StoreError(
                f"{self.path} is of an older tiankong (schema {version}, this one reads {len(MIGRATIONS)}) and "
                "cannot be written to bring it up to date; open it once where it can be written (or a "
                "copy of it, with --data-dir), then read it here"
            )
        self._begin(conn)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated it
            for migration in MIGRATIONS[version:]:
                try:
                    migration(conn)
                except sqlite3.OperationalError as e:
                    if "duplicate column" in str(e) or "already exists" in str(e):
                        conn.execute("ROLLBACK")  # the tables as they were, to compare with the schema
                        why = f"its schema version {version} is older than its tables ({e})"
                        raise self._wrong_version(conn, why) from None
                    raise
            # Written even when unchanged: a real write, so a read-only database fails here, at open time.
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _wrong_version(self, conn: sqlite3.Connection, reason: str) -> StoreError:
        """The file's schema version does not fit its tables (below zero, or a migration finds its change
        made): the header is damaged, or a program set the version. When the tables are this tiankong's
        whole schema, setting the version back is the fix (`.recover` copies the wrong version across)."""
        why = f"{reason}: a damaged header"
        if _schema_gap(conn) is None:
            return StoreError(
                f"{self.path} is damaged ({why}); its tables are schema {len(MIGRATIONS)}'s: set that back with "
                f"`sqlite3 {self.path} 'PRAGMA user_version = {len(MIGRATIONS)}'`, or {_FIX}"
            )
        return self._damaged(why)

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting BUSY_WAIT_S for another writer; with on_busy, it is told once the
        wait has passed BUSY_NOTICE_S, so a command never waits without a word."""
        if self._on_busy is None:
            conn.execute("BEGIN IMMEDIATE")
            return
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_NOTICE_S * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if not _busy(e):
                raise
            self._on_busy(self.path)
            conn.execute(f"PRAGMA busy_timeout = {int((BUSY_WAIT_S - BUSY_NOTICE_S) * 1000)}")
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_WAIT_S * 1000)}")

    def _busy_error(self, e: sqlite3.Error) -> StoreError:
        return StoreError(
            f"{self.path} is busy ({e}): another tiankong or another program is writing to it; wait for it "
            "to finish or close it, then try again"
        )

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
                self._begin(conn)
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
                if _busy(e):
                    raise self._busy_error(e) from None
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
        gap = _schema_gap(conn)
        if gap is not None:
            raise self._damaged(gap)


def _schema_gap(conn: sqlite3.Connection) -> str | None:
    """The first table or column of the current schema that the file lacks, said as a reason; None when
    it has them all (see StoreBase._check_tables)."""
    for table, columns in _expected_tables().items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not have:
            return f"its {table} table is missing"
        missing = [c for c in columns if c not in have]
        if missing:
            return f"its {table} table has no column {', '.join(missing)}"
    return None


def _interrupt_unless(conn: sqlite3.Connection, done: threading.Lock) -> None:
    """The timer of _check_pages: interrupt the check, unless it has ended (then `done` is held)."""
    if done.acquire(blocking=False):
        try:
            conn.interrupt()
        finally:
            done.release()


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


def _busy(e: sqlite3.Error) -> bool:
    """True when another connection's transaction is in the way ("database is locked")."""
    name = getattr(e, "sqlite_errorname", "")  # Python >= 3.11
    if name:
        return name.split("_")[1] in ("BUSY", "LOCKED")
    return "locked" in str(e)


def _environmental(e: sqlite3.OperationalError) -> bool:
    """True when the failure is the disk's or another process's doing (full, locked, read-only, I/O)."""
    name = getattr(e, "sqlite_errorname", "")  # Python >= 3.11
    if name:
        return name.split("_")[1] in ("BUSY", "LOCKED", "FULL", "READONLY", "IOERR", "CANTOPEN", "PERM")
    return any(w in str(e) for w in ("locked", "full", "readonly", "disk I/O", "unable to open"))
