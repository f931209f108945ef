"""Two windows on one prompt or answers file share out its rounds: each claims the round it shows
(VoteStore.claim_queue_round), a claim goes with its window or its process, and a round is still
stored once when two windows vote on it (add_queue_vote)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

from tiankong.tui.store import DB_NAME, Response, Store, Vote
from tiankong.tui.store_schema import MIGRATIONS

KEY = "rank:abc:ann"


def vote(prompt: str) -> Vote:
    responses = [Response(label, "m", "balanced", {}, 1, f"{prompt} {label}", "eos") for label in "AB"]
    return Vote(None, prompt, [{"role": "user", "content": prompt}], responses, "ranked", [0, 1], "ann", True)


def rank_windows(tmp_path, n_prompts: int, *stores: Store) -> list:
    """A standalone rank screen per store (each store its own connection, as each window's process
    has) on one answers file of `n_prompts` prompts with two answers each."""
    import json

    from tiankong.tui.queue import answers_queue
    from tiankong.tui.screens.compare import CompareScreen

    path = tmp_path / "a.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"p{p}", "text": f"answer {i}"}) + "\n" for p in range(n_prompts) for i in "ab")
    )
    return [CompareScreen([], [], s, "ann", queue=answers_queue(path), standalone=True) for s in stores]


def test_two_windows_get_different_rounds_and_store_every_vote(tmp_path):
    # QA: both windows always showed the first round not done, and the second to vote was refused.
    db = tmp_path / DB_NAME
    with Store(db) as one, Store(db) as two:  # two connections to one file, as two processes have
        for s in (one, two):
            s.open_queue(KEY, 6, "a.jsonl")
        assert one.claim_queue_round(KEY, "w1", 6).round == 0
        assert two.claim_queue_round(KEY, "w2", 6).round == 1  # not window 1's round 0
        shown = {"w1": 0, "w2": 1}
        stored = []
        for window, s in [("w2", two), ("w1", one)] * 3:  # they take turns voting
            vote_id, _ = s.add_queue_vote(vote(f"p{shown[window]}"), KEY, shown[window], 6, "a.jsonl")
            stored.append(vote_id)
            shown[window] = s.claim_queue_round(KEY, window, 6, shown[window] + 1).round
        assert None not in stored  # no vote refused
        assert sorted(v.prompt for v in one.list_votes()) == [f"p{r}" for r in range(6)]
        assert one.queue_rounds(KEY) == set(range(6)) and shown == {"w1": 6, "w2": 6}


def test_a_window_waits_while_every_round_left_is_in_other_windows(tmp_path):
    with Store(tmp_path / DB_NAME) as s:
        s.open_queue(KEY, 2, "a.jsonl")
        assert s.claim_queue_round(KEY, "w1", 2).round == 0
        assert s.claim_queue_round(KEY, "w2", 2).round == 1
        third = s.claim_queue_round(KEY, "w3", 2)
        assert (third.round, third.waiting) == (2, True)  # nothing free: not a round two windows vote on
        assert s.add_queue_vote(vote("first"), KEY, 0, 2)[0] is not None
        assert s.claim_queue_round(KEY, "w3", 2).waiting
        s.release_queue_claims(KEY, "w2")  # window 2 closed
        assert s.claim_queue_round(KEY, "w3", 2) == (1, {0}, False)
        # Two windows on one round all the same (a claim that lapsed): the round is stored once.
        assert s.add_queue_vote(vote("second"), KEY, 0, 2)[0] is None
        assert [v.prompt for v in s.list_votes()] == ["first"]
        s.mark_queue_round(KEY, 1, True, 2)
        assert s.claim_queue_round(KEY, "w3", 2) == (2, {0, 1}, False)  # all done: nothing to wait for


def test_a_window_holds_one_round_and_gives_it_back(tmp_path):
    with Store(tmp_path / DB_NAME) as s:
        s.open_queue(KEY, 4, "a.jsonl")
        assert s.claim_queue_round(KEY, "w1", 4).round == 0
        assert s.claim_queue_round(KEY, "w1", 4, 2).round == 2  # moving on gives round 0 back
        assert s.claim_queue_round(KEY, "w2", 4).round == 0
        # A round another window shows is never taken over, even asked for by name: w2 stays on its round 0.
        assert s.claim_queue_round(KEY, "w2", 4, round=2).round == 0
        assert s.claim_queue_round(KEY, "w2", 4, round=1).round == 1  # a free one, by name
        assert s.claim_queue_round(KEY, "w1", 4, 2).round == 2  # its own again
        assert s.claim_queue_round(KEY, "w1", 4, 3).round == 3
        s.release_queue_claims(KEY, "w1")  # window 1 closed
        assert s.claim_queue_round(KEY, "w3", 4, 3).round == 3


def test_a_claim_lapses_when_not_renewed(tmp_path):
    db = tmp_path / DB_NAME
    with Store(db) as s:
        s.open_queue(KEY, 4, "a.jsonl")
        assert s.claim_queue_round(KEY, "w1", 4).round == 0
        assert s.renew_queue_claim(KEY, "w1", 0) is True
        assert s.claim_queue_round(KEY, "w2", 4).round == 1
        with sqlite3.connect(db) as conn:  # window 1 stopped renewing long ago (a frozen machine)
            conn.execute("UPDATE queue_claims SET expires = 0 WHERE window = 'w1'")
        assert s.claim_queue_round(KEY, "w3", 4).round == 0
        # Window 1 wakes up: round 0 is window 3's now, and window 1 is told so (it moves on).
        assert s.renew_queue_claim(KEY, "w1", 0) is False
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT window FROM queue_claims WHERE round = 0").fetchone() == ("w3",)
        s.mark_queue_round(KEY, 1, True, 4)  # window 2's round done meanwhile (voted in another window)
        assert s.renew_queue_claim(KEY, "w2", 1) is False


def test_undo_claims_its_round_for_its_window_in_the_same_transaction(tmp_path):
    # Review: undo freed the round in one transaction and claimed it in a second; a waiting window
    # polling in between took it, and both windows showed it.
    db = tmp_path / DB_NAME
    with Store(db) as one, Store(db) as two:
        one.open_queue(KEY, 1, "a.jsonl")
        assert one.claim_queue_round(KEY, "w1", 1).round == 0
        vote_id, _ = one.add_queue_vote(vote("p0"), KEY, 0, 1, "a.jsonl")
        assert two.claim_queue_round(KEY, "w2", 1) == (1, {0}, False)  # all done
        assert one.undo_vote(vote_id, (KEY, 0), "w1")
        # Window 2 polls right after the undo, before window 1 claims anything more: the round is w1's.
        assert two.claim_queue_round(KEY, "w2", 1) == (1, set(), True)
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT round, window FROM queue_claims").fetchall() == [(0, "w1")]
        assert one.claim_queue_round(KEY, "w1", 1, round=0).round == 0  # the screen's own claim after undo


def test_a_window_whose_claim_was_taken_over_moves_to_another_round(tmp_path):
    # Review: renew_queue_claim failed silently after another window took over a lapsed claim, and both
    # windows went on showing the round.
    import asyncio

    from textual.widgets import Static
    from tui_host import Host

    db = tmp_path / DB_NAME
    with Store(db) as s1:
        (one,) = rank_windows(tmp_path, 3, s1)

        async def run():
            async with Host(one).run_test(size=(100, 30)) as pilot:
                await pilot.pause()
                assert one.position == 0 and one.round.prompt == "p0"
                with sqlite3.connect(db) as conn:  # the machine slept: the claim lapsed, another window took it
                    conn.execute("UPDATE queue_claims SET window = 'other', pid = 1, host = 'elsewhere'")
                one._renew_claim()
                await pilot.pause()
                assert one.position == 1 and one.round.prompt == "p1"  # moved on, not on the other's round
                with sqlite3.connect(db) as conn:
                    rows = conn.execute("SELECT round, window FROM queue_claims ORDER BY round").fetchall()
                assert rows == [(0, "other"), (1, one.window)]
                with sqlite3.connect(db) as conn:  # again, and the last round was done in a third window meanwhile
                    conn.execute("UPDATE queue_claims SET window = 'other2', pid = 1, host = 'elsewhere'")
                    conn.execute("INSERT INTO queue_rounds VALUES (?, 2)", (one.queue_key,))
                one._renew_claim()
                await pilot.pause()
                assert one.waiting and one.round is None  # nothing of another window's left to vote on here
                bar = str(one.query_one("#vote-bar", Static).content)
                assert "Every round left is open in another window" in bar
                await pilot.press("1", "enter")
                await pilot.pause()
                assert s1.list_votes() == []  # the keys stored no vote on the other windows' rounds

        asyncio.run(run())


def _claim_in_another_process(db, window: str, then: str) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import os, sys, time
        from tiankong.tui.store import Store
        s = Store({str(db)!r})
        s.open_queue({KEY!r}, 4, "a.jsonl")
        print(s.claim_queue_round({KEY!r}, {window!r}, 4).round, flush=True)
        {then}
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_a_claim_goes_with_its_process(tmp_path):
    # A window killed (kill -9, a crash) never releases its claim; its round is free at once, not after CLAIM_S.
    db = tmp_path / DB_NAME
    Store(db).close()
    crashed = _claim_in_another_process(db, "gone", "os._exit(9)")
    assert crashed.stdout.readline().strip() == "0"
    crashed.wait(timeout=60)
    running = _claim_in_another_process(db, "alive", "time.sleep(60)")
    try:
        assert running.stdout.readline().strip() == "0"  # the ended process's round 0 was free
        with Store(db) as s:
            assert s.claim_queue_round(KEY, "here", 4).round == 1  # the running one's is not
    finally:
        running.kill()
        running.wait()


def test_a_store_of_schema_6_gets_the_claims_table(tmp_path):
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db)
    for migration in MIGRATIONS[:6]:
        migration(conn)
    conn.execute("PRAGMA user_version = 6")
    conn.execute(f"INSERT INTO queues VALUES ('{KEY}', 'a.jsonl', 1, 3, '2025-01-01T00:00:00Z')")
    conn.execute(f"INSERT INTO queue_rounds VALUES ('{KEY}', 0)")
    conn.commit()
    conn.close()
    with Store(db) as s:
        claim = s.claim_queue_round(KEY, "w1", 3)
        assert (claim.round, claim.done) == (1, {0})


def test_a_vote_frees_its_round_claim(tmp_path):
    db = tmp_path / DB_NAME
    with Store(db) as s:
        s.open_queue(KEY, 3, "a.jsonl")
        assert s.claim_queue_round(KEY, "w1", 3).round == 0
        assert s.claim_queue_round(KEY, "w2", 3).round == 1
        s.add_queue_vote(vote("p0"), KEY, 0, 3)  # voted
        s.mark_queue_round(KEY, 1, True, 3)  # skipped
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM queue_claims").fetchone() == (0,)


# ---------------------------------------------------------------- two `tiankong rank` windows


def test_two_rank_windows_on_one_file_share_out_the_rounds(tmp_path):
    # QA: two `tiankong rank --input a.jsonl` windows showed the same round; the second vote on it was refused.
    import asyncio

    from textual.widgets import Static
    from tui_host import Host

    db = tmp_path / DB_NAME
    with Store(db) as s1, Store(db) as s2:  # each window its own connection, as two processes have
        one, two = rank_windows(tmp_path, 6, s1, s2)

        def head(screen):
            return str(screen.query_one("#compare-head", Static).content)

        async def run():
            async with Host(one).run_test(size=(100, 30)) as pilot:
                pilot.app.install_screen(two, "two")  # installed: stays open while the other window is shown
                await pilot.pause()
                for _ in range(3):  # the two windows take turns: a vote in each
                    await pilot.app.push_screen("two")
                    await pilot.pause()
                    assert one.round.prompt != two.round.prompt  # never the same round in both
                    await pilot.press("1", "enter")
                    await pilot.pause()
                    pilot.app.pop_screen()
                    await pilot.pause()
                    await pilot.press("2", "enter")
                    await pilot.pause()
                assert head(one).startswith("all 6 done") and "All 6 rounds done" in str(
                    one.query_one("#vote-bar", Static).content
                )

        asyncio.run(run())
        assert sorted(v.prompt for v in s1.list_votes()) == [f"p{p}" for p in range(6)]  # six votes, none refused


def test_a_rank_window_with_nothing_free_waits_then_takes_a_round_another_window_gave_back(tmp_path):
    import asyncio
    import time

    from textual.widgets import Static
    from tui_host import Host

    db = tmp_path / DB_NAME
    with Store(db) as s1, Store(db) as s2:
        one, two = rank_windows(tmp_path, 2, s1, s2)

        def bar(screen):
            return str(screen.query_one("#vote-bar", Static).content)

        async def run():
            async with Host(one).run_test(size=(100, 30)) as pilot:
                pilot.app.install_screen(two, "two")
                await pilot.app.push_screen("two")
                await pilot.pause()
                assert (one.position, two.position) == (0, 1)
                await pilot.press("1", "enter")  # window two's only round: the other is window one's
                await pilot.pause()
                assert two.waiting and "Every round left is open in another window" in bar(two)
                assert len(s1.list_votes()) == 1
                s1.release_queue_claims(one.queue_key, one.window)  # window one closes
                deadline = time.monotonic() + 10
                while two.waiting:  # it looks again every WAIT_POLL_S
                    assert time.monotonic() < deadline, "the round given back was never taken"
                    await pilot.pause(0.1)
                assert two.position == 0 and two.round.prompt == "p0" and two.state == "voting"
                await pilot.press("2", "enter")
                await pilot.pause()
                assert "All 2 rounds done" in bar(two)

        asyncio.run(run())
        assert sorted(v.prompt for v in s1.list_votes()) == ["p0", "p1"]
