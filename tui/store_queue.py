"""The prompt queues' rounds in the store: which rounds are done, and which window holds which round
(a claim, renewed while the window shows it, dropped when it expires or its process ends), so that
two windows on one prompt file each get a round of their own. Each function runs inside a write of
VoteStore (store_votes.py), which owns the tables."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from typing import NamedTuple

from tiankong.tui.store_base import now

# How long a window's claim on its round lasts unless renewed: a window that stops renewing without its
# process ending (a frozen or sleeping machine) holds its round up to this long.
CLAIM_S = 120.0


class QueueClaim(NamedTuple):
    """What VoteStore.claim_queue_round gave a window."""

    round: int  # the round to show (the queue's total when there is none)
    done: set[int]  # the queue's rounds done, by any window
    waiting: bool  # none to show, but rounds left: other windows show them


def claim_round(conn: sqlite3.Connection, key: str, round: int, window: str) -> bool:
    """Claim `round` of the queue `key` for `window` (or renew its claim) for CLAIM_S seconds, inside a
    write, unless another window holds it; -> whether `window` holds it now. Stale claims are dropped
    first by the caller (drop_stale_claims), so a claim still there is a live one."""
    conn.execute(
        "INSERT INTO queue_claims (key, round, window, host, pid, expires) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(key, round) DO UPDATE SET host = excluded.host, pid = excluded.pid, expires = excluded.expires "
        "WHERE queue_claims.window = excluded.window",
        (key, round, window, socket.gethostname(), os.getpid(), time.time() + CLAIM_S),
    )
    row = conn.execute("SELECT window FROM queue_claims WHERE key = ? AND round = ?", (key, round)).fetchone()
    return row is not None and row[0] == window


def drop_stale_claims(conn: sqlite3.Connection, key: str) -> None:
    """Forget the claims on the queue `key` that no window holds any more: expired (not renewed for
    CLAIM_S seconds), or held by a process of this machine that has ended (a crash, kill -9, a closed
    terminal), whose round would otherwise wait out the CLAIM_S."""
    conn.execute("DELETE FROM queue_claims WHERE key = ? AND expires < ?", (key, time.time()))
    here = socket.gethostname()
    pids = {int(r[0]) for r in conn.execute("SELECT pid FROM queue_claims WHERE key = ? AND host = ?", (key, here))}
    for pid in pids:
        if not _running(pid):
            conn.execute("DELETE FROM queue_claims WHERE key = ? AND host = ? AND pid = ?", (key, here, pid))


def _running(pid: int) -> bool:
    """Whether the process `pid` of this machine still runs (signal 0 checks without sending anything)."""
    if pid == os.getpid() or os.name != "posix":  # elsewhere os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it runs
        return True
    return True


def first_open(done: set[int], total: int, start: int = 0) -> int:
    """The first round from `start` on that is not done, else the first before it; `total` when all are."""
    for r in (*range(start, total), *range(min(start, total))):
        if r not in done:
            return r
    return total


def save_queue(conn: sqlite3.Connection, key: str, total: int | None = None, source: str | None = None) -> set[int]:
    """The queue row of `key` brought up to date inside a write (total and source when given, the first
    round not done as its position, the time); -> its rounds done."""
    done = {int(r[0]) for r in conn.execute("SELECT round FROM queue_rounds WHERE key = ?", (key,))}
    row = conn.execute("SELECT total, source FROM queues WHERE key = ?", (key,)).fetchone()
    if total is None:
        if row is None:  # nothing to say where the queue ends: leave it to the next open
            return done
        total = int(row[0])
    source = source if source is not None else row[1] if row is not None else ""
    conn.execute(
        "INSERT INTO queues (key, source, position, total, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET source = excluded.source, position = excluded.position, "
        "total = excluded.total, updated_at = excluded.updated_at",
        (key, source, first_open(done, total), total, now()),
    )
    return done
