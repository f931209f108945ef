"""How the compare screen walks a queue of rounds (`tiankong compare --prompts`, `tiankong rank`): the
CompareQueue mixin opens the queue where it was left, shows its rounds one after another (generated
from a prompt file, or read from an answers file), and stores each round done.

Two windows on one file share out its rounds: each claims the round it shows in the store
(VoteStore.claim_queue_round), so the other is given another one, and both label at full speed. A
claim is renewed while the window is open and freed when it closes (or its process ends); when every
round left is in other windows, a window waits and takes one as soon as it is free again.

Apart from the screen (compare.py), which runs the rounds and their generation, and from the keys
(compare_actions.py), which vote, skip and undo.
"""

from __future__ import annotations

from collections import Counter

from textual.widgets import Input

from tiankong.tui.queue import Item, PromptQueue
from tiankong.tui.screens.compare_rounds import Round
from tiankong.tui.store import Store
from tiankong.tui.store_queue import CLAIM_S, first_open
from tiankong.tui.widgets.status import plural

WAIT_POLL_S = 2.0  # how often a window whose queue rounds left are all in other windows looks for a free one


class CompareQueue:
    """CompareScreen's queue rounds (mixed into it)."""

    # The screen's state these read and change (set by CompareScreen)
    round: Round | None
    queue: PromptQueue | None
    queue_key: str
    lineup: set[str]  # what answers each column, "MODEL · PRESET", as a vote's responses name it
    rater: str
    restart: bool
    window: str
    waiting: bool
    done: set[int]
    store: Store
    blind: bool
    answers_only: bool
    position: int
    state: str
    queue_active: bool
    _rounds: int

    def _open_queue(self) -> None:
        """On mount: the rounds done so far (by any window), then the first round this window may show."""
        assert self.queue is not None
        prompt_input = self.query_one("#prompt-input", Input)
        try:
            self.done = self.store.open_queue(
                self.queue_key, self.queue.total, self.queue.source, legacy=self.queue.key, restart=self.restart
            )
        except Exception as exc:  # the rounds can still be voted on; only where to resume is unknown
            self.notify(str(exc), title="Queue progress not read", severity="error", timeout=10, markup=False)
        if not self.done and not self.restart and not self.answers_only:
            self._pass_over_voted()
        self._left_out_notice()
        self._claim(0)
        self.set_interval(CLAIM_S / 3, self._renew_claim)
        self.set_interval(WAIT_POLL_S, self._poll_waiting)
        if self.queue_active:
            self._start_queued()
        elif self.waiting:
            self._notify_waiting()
            prompt_input.focus()
        else:
            self.notify(
                f"All {self.queue.total} rounds of {self.queue.source} are done; --restart starts them again.",
                timeout=10,
                markup=False,
            )
            prompt_input.focus()

    def _pass_over_voted(self) -> None:
        """A prompt file with no round done (new, or edited since: an edited file is a new queue) passes
        over the rounds whose prompt already has this rater's vote with this lineup, a round per vote,
        so a prompt added to a file is the one round left rather than the file starting over."""
        assert self.queue is not None
        ids = {item.prompt_id for item in self.queue.items}
        votes: Counter[str] = Counter()
        try:
            for v in self.store.iter_votes():
                lineup = {f"{r.model} · {r.preset}" for r in v.responses}
                if v.rater == self.rater and v.prompt_id in ids and v.source == "playground" and lineup <= self.lineup:
                    votes[v.prompt_id] += 1
        except Exception:  # unreadable for now: the rounds are voted on again, as before
            return
        rounds = []
        for i, item in enumerate(self.queue.items):  # a prompt twice in the file: its votes go to the first
            n = min(votes[item.prompt_id], self.queue.repeat)
            votes[item.prompt_id] -= n
            rounds += range(i * self.queue.repeat, i * self.queue.repeat + n)
        for r in rounds:
            self._mark_round(r, True)
        if rounds:
            self.notify(
                f"{plural(len(rounds), 'round')} passed over: {'its prompt has' if len(rounds) == 1 else 'their prompts have'} "
                f"your vote with this lineup already (from an earlier version of {self.queue.source}, or typed). "
                "--restart votes on every round again.",
                title="Rounds already voted",
                timeout=10,
                markup=False,
            )

    def _close_queue(self) -> None:
        """On unmount: this window's round is free for the others at once."""
        try:
            self.store.release_queue_claims(self.queue_key, self.window)
        except Exception:  # closed or locked: the claim lapses by itself (its process ends, or CLAIM_S)
            pass

    def _start_queued(self) -> None:
        """The queue's round at `position`: generated (a prompt file) or read (an answers file)."""
        assert self.queue is not None
        item, repeat = self.queue.at(self.position)
        if item.answers is None:  # later repeats of a prompt always draw new seeds
            self._start(
                item.prompt,
                fresh=repeat > 0,
                history=item.conversation[:-1],
                prompt_id=item.prompt_id,
                position=self.position,
            )
        else:
            self._show_given(item)

    def _show_given(self, item: Item) -> None:
        """A round of answers made earlier: nothing to generate, voting opens at once."""
        assert item.answers is not None
        order, shuffle_seed = self._shuffled(len(item.answers))
        given = [item.answers[i] for i in order]
        rnd = Round(
            self._rounds,
            item.prompt,
            [dict(m) for m in item.conversation],
            [],
            [],
            self.blind,
            shuffle_seed,
            answers=[g.answer for g in given],
            prompt_id=item.prompt_id,
            position=self.position,
        )
        rnd.texts, rnd.finish, rnd.stats = (
            [g.text for g in given],
            [g.finish_reason for g in given],
            [g.stats for g in given],
        )
        rnd.done = True
        self._show_round(rnd)
        self.query_one("#columns").focus()

    def _left_out_notice(self) -> None:
        """What of the file is not ranked, and why: answers whose generation failed (as a failed column
        of compare, no answer to rank), then prompts left with a single answer."""
        assert self.queue is not None
        failed, skipped, source = self.queue.failed, self.queue.skipped, self.queue.source
        said = []
        if failed:
            said.append(
                f'{plural(failed, "answer")} of {source} that failed (finish_reason "error") '
                f"{'was' if failed == 1 else 'were'} left out: a failed answer is not one to rank."
            )
        if skipped:  # a ranking needs two answers or more
            said.append(
                f"{plural(skipped, 'prompt')} of {source} with a single answer "
                f"{'was' if skipped == 1 else 'were'} left out: ranking needs two answers or more."
            )
        if said:
            self.notify(" ".join(said), timeout=10, markup=False)

    def _advance(self, marked: bool = False) -> None:
        """The queue's current round is done (voted or skipped): store that (unless `marked`: its vote
        did), show the next round not done (rounds another window did on the same queue are passed over)."""
        assert self.queue is not None and self.round is not None and self.round.position is not None
        done = self.round.position
        if not marked:
            self._mark_round(done, True)
        self._claim(done + 1)
        if self.queue_active:
            self._start_queued()
        else:
            prompt_input = self.query_one("#prompt-input", Input)
            prompt_input.disabled, prompt_input.display = False, not self.answers_only
            self._refresh_bars()
            if self.waiting:
                self._notify_waiting()
            # Else no notice: the vote bar says every round is done (a toast covered the last round's titles)

    def _claim(self, start: int, round: int | None = None) -> None:
        """Move to the queue round this window shows next, claimed in the store (VoteStore.claim_queue_round):
        the first from `start` on that is neither done nor shown in another window on the same queue, or
        `round` itself (undo)."""
        assert self.queue is not None
        try:
            claim = self.store.claim_queue_round(self.queue_key, self.window, self.queue.total, start, round=round)
        except Exception as exc:  # the rounds can still be voted on; only sharing them out with other windows is not
            self.position = round if round is not None else first_open(self.done, self.queue.total, start)
            self.waiting = False
            self.notify(str(exc), title="Round not claimed", severity="error", timeout=10, markup=False)
            return
        self.position, self.done, self.waiting = claim.round, claim.done, claim.waiting

    def _notify_waiting(self) -> None:
        left = self.queue.total - len(self.done) if self.queue is not None else 0
        what = "The last round is" if left == 1 else f"The {left} rounds left are"
        self.notify(
            f"{what} open in another window; one comes here when a window showing one closes.",
            title="Nothing to vote on here",
            timeout=10,
            markup=False,
        )

    def _poll_waiting(self) -> None:
        """While every round left is in other windows: take one when it is free again (its window closed
        or its process ended), unless this screen is busy with a free prompt of its own."""
        if not self.waiting or (self.round is not None and self.round.position is None and self.state != "voted"):
            return
        self._claim(0)
        if self.queue_active:
            self._start_queued()
        elif not self.waiting:  # the other windows finished them
            self._refresh_bars()
            self.notify(f"All {self.queue.total} rounds done.", title="Queue finished", timeout=10, markup=False)

    def _renew_claim(self) -> None:
        """Keep this window's claim on the round it shows (it lapses after CLAIM_S seconds otherwise). A
        claim that lapsed (the machine slept) and that another window took over meanwhile, or whose round
        another window did, is not this window's any more: it moves on to a round no other window shows."""
        if not self.queue_active:
            return
        try:
            held = self.store.renew_queue_claim(self.queue_key, self.window, self.position)
        except Exception:  # locked or full for now: the next renewal tries again; a lapsed claim only
            return  # lets another window show this round too, and add_queue_vote still stores it once
        if held:
            return
        lost = self.position
        if self.round is not None:
            self.round.cancel.set()  # its generation, if any: the round is another window's now
        self._claim(lost)
        self.notify(
            f"Round {lost + 1} went to another window while this one was away; moved on.",
            title="Round taken over",
            timeout=10,
            markup=False,
        )
        if self.queue_active:
            self._start_queued()
            return
        self.round = None  # nothing free: the answers shown are another window's round, not to vote on here
        self._show_idle_columns()
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.disabled, prompt_input.display = False, not self.answers_only
        self._refresh_bars()
        if self.waiting:
            self._notify_waiting()

    def _mark_round(self, position: int, done: bool) -> None:
        """Store that a queue round is done (or, undone, not); `done` then holds every window's rounds."""
        assert self.queue is not None
        try:
            self.done = self.store.mark_queue_round(self.queue_key, position, done, self.queue.total, self.queue.source)
        except Exception as exc:  # the votes are saved; only where to resume is not
            self.done = self.done | {position} if done else self.done - {position}
            self.notify(str(exc), title="Queue position not saved", severity="error", timeout=10, markup=False)
