"""The votes half of the store: preference votes (written durably, imported without duplicates,
undone or deleted, read a page at a time or grouped by shape for the statistics), and where each prompt file's
queue of rounds stands (the rounds done, and which round each open window shows).

Apart from the chats half (store_chats.py): the two share only the connection (StoreBase) and never
write each other's tables. Store (store.py) joins them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import Any

from tiankong.tui.store_base import StoreBase, now
from tiankong.tui.store_queue import QueueClaim, claim_round, drop_stale_claims, first_open, save_queue
from tiankong.tui.store_records import (
    _INSERT_VOTE,
    MAX_RESPONSES,
    MIN_RESPONSES,
    OUTCOMES,
    Response,
    Vote,
    _content_hash,
    _pair_key,
    _vote,
    _vote_row,
    validate_vote,
    vote_hash,
)
from tiankong.tui.store_schema import _HASHED


class VoteStore(StoreBase):
    """Votes and prompt queues: the part of Store that the compare, votes and arena screens and
    `tiankong prefs` use."""

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

    def add_queue_vote(
        self, vote: Vote, key: str, round: int, total: int, source: str | None = None
    ) -> tuple[int | None, set[int]]:
        """Store the vote on round `round` of the queue `key` and mark the round done, in ONE durable
        transaction, unless the round is done already: another window on the same queue (same file,
        lineup and rater) voted on it or skipped it meanwhile, and a second vote would count the round
        twice in training. -> (the vote's id, or None when it was not stored; the queue's rounds done)."""
        validate_vote(vote)
        with self._tx(durable=True) as conn:
            if conn.execute("SELECT 1 FROM queue_rounds WHERE key = ? AND round = ?", (key, round)).fetchone():
                return None, save_queue(conn, key, total, source)
            vote_id = int(conn.execute(_INSERT_VOTE, _vote_row(vote, now())).lastrowid)
            conn.execute("INSERT INTO queue_rounds (key, round) VALUES (?, ?)", (key, round))
            conn.execute("DELETE FROM queue_claims WHERE key = ? AND round = ?", (key, round))  # done: no one's
            return vote_id, save_queue(conn, key, total, source)

    def add_branch_votes(self, votes: list[Vote]) -> int:
        """Store chat branch votes (two responses each) in ONE durable transaction, each replacing an
        earlier branch vote on the same two answers to the same conversation, whichever way it went:
        voting again, or changing one's mind, leaves one vote per pair rather than duplicates that
        would weigh twice in training. Returns how many earlier votes were replaced.

        A pair given twice in `votes` is stored once (the later of the two), and does not count as
        replacing a vote: only votes stored before this call do."""
        for vote in votes:
            validate_vote(vote)
        by_pair = {_pair_key(v): v for v in votes}  # the later of two votes on one pair wins, as if cast after
        t, replaced = now(), 0
        with self._tx(durable=True) as conn:
            for key, v in by_pair.items():
                replaced += conn.execute(
                    "DELETE FROM votes WHERE source = ? AND content_hash = ?", (v.source, key)
                ).rowcount
                conn.execute(_INSERT_VOTE, _vote_row(v, t, key))
        return replaced

    def import_votes(self, votes: list[Vote], batch_size: int = 1000) -> tuple[int, int]:
        """Store imported votes, skipping each whose content (`vote_hash`) was already stored when the
        import began; votes repeated within `votes` all go in, as the file says. Returns (added,
        duplicates skipped). A batch at a time, as `import_batches`."""
        added = 0
        for step in self.import_batches(votes, batch_size):
            added = step[0]
        return added, len(votes) - added

    def import_batches(self, votes: list[Vote], batch_size: int = 1000) -> Iterator[tuple[int, int]]:
        """import_votes a batch at a time: after each batch is committed, yields (votes added so far,
        votes gone through so far, added or skipped as duplicates).

        Every vote is validated before the first is written. They go in as durable transactions of
        `batch_size` votes, so a playground voting meanwhile waits for one batch, never for the whole
        import. A caller stopped between batches (Ctrl+C) knows exactly what is stored: the numbers
        last yielded; the batch in flight is rolled back whole. The same votes imported again are
        skipped as duplicates, so importing the file again finishes a stopped import.

        A duplicate is a vote with the same content as one stored before the import began: an imported
        one (by its indexed content hash) or one cast here (playground and queue votes carry no hash,
        branch votes their pair's: theirs are computed from their columns once, at the start), so a
        `prefs export --format rankings` imported back into the store it came from adds nothing.

        Imported votes are marked `imported` (undo never deletes them) and keep the source they came
        with. An imported branch vote (a rankings record of one) is keyed by its pair as add_branch_votes
        keys it, so voting on that pair again replaces it rather than storing a second vote.
        """
        for vote in votes:
            validate_vote(vote)
        t, added = now(), 0
        before = self._read("SELECT COALESCE(MAX(id), 0) FROM votes")[0][0]  # votes stored before this import
        cast_here = self._cast_here_hashes(before) if votes else set()
        for start in range(0, len(votes), batch_size):
            if start:
                time.sleep(0.02)  # a gap between batches, in which a vote waiting for the lock gets in
            batch_added = 0
            with self._tx(durable=True) as conn:
                for v in votes[start : start + batch_size]:
                    h = vote_hash(v)
                    if h in cast_here:
                        continue
                    if (
                        conn.execute(
                            "SELECT 1 FROM votes WHERE content_hash = ? AND id <= ? LIMIT 1", (h, before)
                        ).fetchone()
                        is None
                    ):
                        vote_id = conn.execute(_INSERT_VOTE, _vote_row(v, t, _stored_hash(v, h))).lastrowid
                        conn.execute("UPDATE votes SET imported = 1 WHERE id = ?", (vote_id,))  # undo never deletes it
                        batch_added += 1
            added += batch_added  # counted once committed: what the caller is told is on disk
            yield added, min(start + batch_size, len(votes))

    def _cast_here_hashes(self, up_to: int) -> set[str]:
        """The content hashes (`vote_hash`) of the votes up to id `up_to` that carry another (or none), hashed
        from their stored columns as the schema's migration hashes old imports (no JSON is parsed)."""
        with self._reading() as conn:
            rows = conn.execute(  # imported branch votes too: their content_hash is their pair's
                f"SELECT {_HASHED} FROM votes WHERE id <= ? AND (imported = 0 OR source = ?)", (up_to, BRANCH_SOURCE)
            )
            return {_content_hash(parts) for parts in rows}

    def undo_vote(self, vote_id: int, queue: tuple[str, int] | None = None, window: str | None = None) -> bool:
        """Delete the vote `vote_id`, cast in the playground (an imported vote is never deleted), in one
        durable transaction; False when it is no longer stored. Undo names the vote it takes back (the id
        add_vote gave the window that cast it), so it never removes a vote cast by another window, rater
        or command. `queue`: the (key, round) of the queue round the vote was cast in, marked not done in
        the same transaction, so that round comes up again; `window` (the one that undoes) claims it in
        that transaction too, so no other window waiting for a free round takes it in between."""
        with self._tx(durable=True) as conn:
            deleted = conn.execute(  # imported: by `prefs import` (any source kept), or named so by its source
                "DELETE FROM votes WHERE id = ? AND imported = 0 AND source NOT LIKE 'import:%'", (vote_id,)
            ).rowcount
            if queue is not None:
                conn.execute("DELETE FROM queue_rounds WHERE key = ? AND round = ?", queue)
                save_queue(conn, queue[0])
                if window is not None:
                    drop_stale_claims(conn, queue[0])
                    conn.execute("DELETE FROM queue_claims WHERE key = ? AND window = ?", (queue[0], window))
                    claim_round(conn, queue[0], queue[1], window)
        return deleted > 0

    def delete_vote(self, vote_id: int) -> bool:
        """Delete the vote `vote_id`, whoever cast it and however it came (an import's too), in one durable
        transaction: the votes screen's `d d`, asked twice, where undo (undo_vote) takes back only the
        window's own votes. A prompt file's round it was cast in stays done. False when it was not stored."""
        with self._tx(durable=True) as conn:
            return conn.execute("DELETE FROM votes WHERE id = ?", (vote_id,)).rowcount > 0

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

    def votes_by_id(self, ids: Iterable[int]) -> dict[int, Vote]:
        """The readable votes among `ids`, by id (ids not stored, or rows not readable, are left out)."""
        wanted, found = sorted(set(ids)), {}
        for start in range(0, len(wanted), 500):  # under SQLite's limit on a statement's parameters
            chunk = wanted[start : start + 500]
            try:
                rows = self._read(f"SELECT * FROM votes WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            except sqlite3.OperationalError:  # text that is not UTF-8 in one of them: that page is not read
                continue
            for row in rows:
                try:
                    v = _vote(row)
                    validate_vote(v)
                except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                    continue
                found[row["id"]] = v
        return found

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

    def any_multi_message(self, outcomes: tuple[str, ...] = OUTCOMES) -> bool:
        """Whether a vote of one of these outcomes has more than one message of context, or a system
        prompt alone (prefs.needs_messages, in SQL: the first such row ends the scan). A preference
        export then writes every row in TRL's conversational form, so that a file's columns keep one type."""
        marks = ", ".join("?" * len(outcomes))
        rows = self._read(
            f"SELECT 1 FROM votes WHERE outcome IN ({marks}) AND json_valid(conversation) AND "
            "(json_array_length(conversation) > 1 OR json_extract(conversation, '$[0].role') = 'system') LIMIT 1",
            outcomes,
        )
        return bool(rows)

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
        with self._reading() as conn:
            rows = conn.execute(  # read row by row: the groups never sit in memory twice
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

    def open_queue(
        self, key: str, total: int, source: str | None = None, *, legacy: str | None = None, restart: bool = False
    ) -> set[int]:
        """Open the queue `key` (a file's rounds, for one lineup and rater: PromptQueue.progress_key) in
        one transaction, and return its rounds done so far. `restart` forgets them (--restart). A key
        never seen before takes over the rounds stored under `legacy` (the file's key alone, where a
        queue stored before schema 6 kept its one position for every lineup and rater): the first lineup
        to reopen that file resumes there, and the old entry is gone, so no other lineup is told that
        its rounds are done."""
        with self._tx() as conn:
            seen = conn.execute("SELECT 1 FROM queues WHERE key = ?", (key,)).fetchone() is not None
            if not seen and legacy is not None and legacy != key:
                conn.execute("UPDATE queue_rounds SET key = ? WHERE key = ?", (key, legacy))
                conn.execute("DELETE FROM queues WHERE key = ?", (legacy,))
            if restart:
                conn.execute("DELETE FROM queue_rounds WHERE key = ?", (key,))
            return save_queue(conn, key, total, source)

    def mark_queue_round(self, key: str, round: int, done: bool, total: int, source: str | None = None) -> set[int]:
        """Mark one round of the queue `key` done (voted or skipped) or not (its vote undone), in one
        transaction, and return every round of it done, by this window or another on the same queue.
        A window only adds or takes out its own rounds, so two windows never move each other's
        progress back (a single stored position was overwritten by whichever saved last)."""
        with self._tx() as conn:
            if done:
                conn.execute("INSERT OR IGNORE INTO queue_rounds (key, round) VALUES (?, ?)", (key, round))
                conn.execute("DELETE FROM queue_claims WHERE key = ? AND round = ?", (key, round))
            else:
                conn.execute("DELETE FROM queue_rounds WHERE key = ? AND round = ?", (key, round))
            return save_queue(conn, key, total, source)

    def claim_queue_round(
        self, key: str, window: str, total: int, start: int = 0, *, round: int | None = None
    ) -> QueueClaim:
        """The round of the queue `key` that the window `window` (one screen, any id unique to it) shows
        next, claimed for it in one transaction, so that another window on the same queue (same file,
        lineup and rater) is given another round and two windows label twice as fast: the first round
        from `start` on (wrapping around) neither done nor claimed by another window; or `round` itself,
        taken over if need be (ctrl+z going back to the round of the vote it removed).

        A window holds one claim per queue: this one replaces its last. The round is `total` when every
        round is done, or when every round left is claimed by other windows (`waiting`: a second window
        on a round would have one of the two votes refused, add_queue_vote). A claim counts for nothing
        once its process has ended (a crash, a kill -9: see drop_stale_claims) or when its window has
        not renewed it for CLAIM_S seconds."""
        with self._tx() as conn:
            drop_stale_claims(conn, key)
            done = save_queue(conn, key, total)
            conn.execute("DELETE FROM queue_claims WHERE key = ? AND window = ?", (key, window))
            others = {int(r[0]) for r in conn.execute("SELECT round FROM queue_claims WHERE key = ?", (key,))}
            if round is None or round in others:  # a live claim of another window is never taken over
                round = first_open(done | others, total, start)
            if round < total:
                claim_round(conn, key, round, window)
            return QueueClaim(round, done, waiting=round == total and len(done) < total)

    def renew_queue_claim(self, key: str, window: str, round: int) -> bool:
        """Keep the window's claim on `round` for CLAIM_S seconds more (an open window renews it every
        CLAIM_S / 3), or claim it again if it lapsed (the machine slept) and no one has it or did it.
        -> whether the window still holds it: False when the round is done or another window took it
        over meanwhile, and this window should move to another round (claim_queue_round)."""
        with self._tx() as conn:
            drop_stale_claims(conn, key)
            if conn.execute("SELECT 1 FROM queue_rounds WHERE key = ? AND round = ?", (key, round)).fetchone():
                return False
            return claim_round(conn, key, round, window)

    def release_queue_claims(self, key: str, window: str) -> None:
        """The window closes: its round is free for the other windows at once."""
        with self._tx() as conn:
            conn.execute("DELETE FROM queue_claims WHERE key = ? AND window = ?", (key, window))

    def queue_rounds(self, key: str) -> set[int]:
        """The rounds of the queue `key` done (voted or skipped)."""
        return {int(r[0]) for r in self._read("SELECT round FROM queue_rounds WHERE key = ?", (key,))}

    def queue_position(self, key: str) -> int:
        """Where the queue `key` reopens: its first round not done (0 for a queue never seen)."""
        rows = self._read("SELECT total FROM queues WHERE key = ?", (key,))
        return first_open(self.queue_rounds(key), int(rows[0]["total"])) if rows else 0


BRANCH_SOURCE = "branch"  # the source of the chat's branch votes (add_branch_votes), imported or not


def _stored_hash(v: Vote, h: str) -> str:
    """The content_hash an imported vote is stored with: `h` (its vote_hash), or for a branch vote
    (two answers) its pair's key, the one add_branch_votes replaces by."""
    return _pair_key(v) if v.source == BRANCH_SOURCE and len(v.responses) == 2 else h


# [number of responses, [presets of the first four, then their models]] as JSON bytes, parsing `responses`
# three times at most (json_valid, json_array_length, one json_extract with eight paths): null for a response
# that is not an object with those keys, NULL when `responses` is not JSON at all. Per-element json_each
# would parse every response again.
_FIELDS = """CAST(CASE WHEN json_valid(responses) THEN json_array(json_array_length(responses), json_extract(
    responses, '$[0].preset', '$[1].preset', '$[2].preset', '$[3].preset',
    '$[0].model', '$[1].model', '$[2].model', '$[3].model')) END AS BLOB)"""


def summarise(
    shapes: list[Vote], counts: list[int], by: Callable[[Response], Any] = attrgetter("preset")
) -> tuple[dict[Any, dict[str, int]], dict[str, int]]:
    """(per preset: votes, wins, losses, ties, both_bad; votes per outcome) of votes given as shapes with
    counts (Store.vote_shapes). See Store.vote_stats for what counts as what. `by` names an answer's
    entry: its preset, or e.g. (preset, model), so one preset name used by two models is two entries."""
    stats: dict[Any, dict[str, int]] = {}
    totals = {o: 0 for o in OUTCOMES}

    def entry(preset: Any) -> dict[str, int]:
        return stats.setdefault(preset, {"votes": 0, "wins": 0, "losses": 0, "ties": 0, "both_bad": 0})

    for shape, count in zip(shapes, counts, strict=True):
        names = [by(r) for r in shape.responses]
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


def _skip(skipped: list[tuple[int, str]] | None, vote_id: int, reason: str) -> None:
    if skipped is not None:
        skipped.append((vote_id, reason.splitlines()[0][:160] if reason else "unreadable"))
