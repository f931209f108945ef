"""What the compare screen's keys do: the CompareActions mixin, with which actions apply in each state
(check_action), ranking and voting (one stored Vote per round), skip and undo, and the other keys
(stop, back, new prompt, rerun, blind mode, help).

Apart from the screen (compare.py), which holds the bindings and runs rounds and generation, and
from the drawing (compare_view.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Input

from tiankong.tui.queue import PromptQueue, prompt_id
from tiankong.tui.screens.compare_rounds import LABELS, Round, label_list
from tiankong.tui.screens.help import Section
from tiankong.tui.screens.votes import can_go_back, tiers_text, verdict
from tiankong.tui.store import Response, Store, Vote
from tiankong.tui.store_records import same_answer


def dismiss_saved_notices(app: Any) -> None:
    """Dismiss the queue's "Saved" notices: each names the columns of a round no longer on screen."""
    notifications = getattr(app, "_notifications", None)  # (Textual's own; none in another version)
    unnotify = getattr(app, "_unnotify", None)
    if notifications is None or unnotify is None:
        return
    for notice in [n for n in notifications if n.title == "Saved" and n.severity == "information"]:
        unnotify(notice)


class CompareActions:
    """CompareScreen's actions (mixed into it; its BINDINGS and ACTIVE name them)."""

    # The screen's state these read and change (set by CompareScreen)
    ACTIVE: ClassVar[dict[str, set[str]]]
    BINDINGS: ClassVar[list]
    round: Round | None
    cast: list[Round]
    queue: PromptQueue | None
    queue_key: str
    done: set[int]
    standalone: bool
    store: Store
    rater: str
    blind: bool
    answers_only: bool
    n_columns: int
    position: int
    picks: list[int]
    k: int
    state: str
    queue_active: bool

    # ------------------------------------------------------------------ voting

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in {a for actions in self.ACTIVE.values() for a in actions}:
            return True  # not ours (scrolling, focus, ...)
        if action not in self.ACTIVE[self.state]:
            return False
        if action == "pick":  # "1" has a binding per column count, so the footer says "1-2", "1-3" or "1-4"
            return int(parameters[0]) <= self.k and (len(parameters) < 2 or int(parameters[1]) == self.k)
        if action == "to_vote":
            return self.focused is self.query_one("#prompt-input")
        if action in ("vote_both_bad", "vote_all_bad"):  # one key, named by the count (as the vote bar does)
            return (action == "vote_both_bad") == (len(self._in_vote()) == 2)
        if action == "back":
            return self._can_leave()  # never in `tiankong compare` or `tiankong rank`: ctrl+q quits there
        if action == "quit":  # from the chat, ctrl+q is the app's (not shown in this footer)
            return self.standalone
        if action == "to_prompt":
            # Else esc goes to the prompt box, when there is one to type in (a queue brings its prompts).
            return (
                not self.answers_only
                and not self._can_leave()
                and not self.queue_active
                and self.focused is not self.query_one("#prompt-input")
            )
        if action == "skip":
            return self.round is not None and self.queue_active and self.round.position == self.position
        if action == "new_prompt":  # not while typing in the prompt box: "n" is then a letter of the prompt
            return (
                not self.answers_only and not self.queue_active and self.focused is not self.query_one("#prompt-input")
            )
        if action == "rerun":  # not where it can only fail as it did (a prompt too long for the context)
            return not self.answers_only and not (
                self.state == "failed" and self.round is not None and not self.round.retry
            )
        return True

    def _can_vote(self) -> bool:
        return self.state == "voting"

    def _in_vote(self) -> list[int]:
        """The columns a vote holds: every answer but those that failed (Round.failed), which are
        never ranked or stored."""
        return self.round.answered if self.round is not None else list(range(self.k))

    def _both(self) -> str:
        """'both' with two answers to vote on, else 'all' (as in "0 both bad")."""
        return "both" if len(self._in_vote()) == 2 else "all"

    def _can_leave(self) -> bool:
        """Whether esc goes back to the screen underneath: never from a compare the command line opened."""
        return not self.standalone and can_go_back(self)

    def action_pick(self, n: int, of: int | None = None) -> None:
        """Rank column n next (`of`: the column count its binding is shown for). A column whose text is
        a ranked one's ranks with it: the same answer twice is no preference (same_answer)."""
        if not self._can_vote():
            return
        c = n - 1
        assert self.round is not None
        ranked = next((p for p in self.picks if c in self._twins(p)), None)
        if c in self.round.failed:
            self.notify(
                f"{LABELS[c]} failed, so it is not in the vote: rank {label_list(self._in_vote())}.", markup=False
            )
        elif ranked == c:
            self.notify(f"{LABELS[c]} is already ranked; Backspace takes back the last number.", markup=False)
        elif ranked is not None:
            self.notify(
                f"{LABELS[c]} is the same text as {LABELS[ranked]}, so it shares {LABELS[ranked]}'s rank.",
                markup=False,
            )
        else:
            self.picks.append(c)
            self._refresh_bars()

    def _twins(self, c: int) -> list[int]:
        """Column c and every column in the vote whose answer is the same text: one answer, as a ranking goes."""
        assert self.round is not None
        texts = self.round.texts
        return [d for d in self._in_vote() if same_answer(texts[d], texts[c])]

    def _same_texts(self) -> list[list[int]]:
        """The groups of two or more columns that answered with the same text."""
        groups = {tuple(self._twins(c)) for c in self._in_vote()} if self.round is not None else set()
        return sorted(list(g) for g in groups if len(g) > 1)

    def _ranking(self) -> tuple[list[list[int]], list[int]]:
        """The columns pressed so far, as ranks (a pressed column with the columns of the same text),
        and the columns left unranked below them (a column that failed is neither)."""
        ranks = [self._twins(c) for c in self.picks]
        pressed = {c for rank in ranks for c in rank}
        return ranks, [c for c in self._in_vote() if c not in pressed]

    def action_unpick(self) -> None:
        if self.picks:
            self.picks.pop()
            self._refresh_bars()

    def action_submit_ranking(self) -> None:
        if not self._can_vote():
            return
        if not self.picks:
            self.notify(
                f"Press column numbers best first (1 = A, 2 = B, …), or t for a tie, 0 for {self._both()} bad.",
                markup=False,
            )
            return
        ranks, rest = self._ranking()
        if not rest and len(ranks) == 1:  # every answer is the same text: no preference among them
            self._cast("tie", [], shown=f"tie ({label_list(ranks[0])}: the same text)")
            return
        tiers = [[" = ".join(LABELS[c] for c in rank)] for rank in ranks] + (
            [[LABELS[c] for c in rest]] if rest else []
        )
        picks = list(self.picks)
        if not rest and len(ranks[-1]) > 1:  # the last rank pressed is the bottom: its columns stay, as the rest
            rest, picks, ranks = ranks[-1], picks[:-1], ranks[:-1]
        # A rank of several columns (the same text) above others is stored once, as the column pressed: a
        # vote's ranks hold one answer each. Columns left unranked stay, unordered, whatever their texts.
        same = [rank for rank in ranks if len(rank) > 1]
        keep = sorted(picks + rest)
        ranking = [keep.index(c) for c in picks + rest]
        # Only what was pressed is ordered: with two or more columns left, they stay unordered.
        n_ranked = len(picks) if len(rest) > 1 else None
        if not same:
            self._cast("ranked", ranking, n_ranked)
            return
        stored = "; ".join(f"{label_list(rank)} are the same text, stored once" for rank in same)
        self._cast("ranked", ranking, n_ranked, keep=keep, shown=f"{tiers_text(tiers, better=False)} ({stored})")

    def _pending(self, key: str) -> bool:
        """Whether column numbers are pressed and not yet saved: then `key` (a tie, all bad) would
        throw them away, and says so instead."""
        if self.picks:
            self.notify(
                f"You pressed {', '.join(LABELS[c] for c in self.picks)}: Enter saves that ranking, or "
                f"Backspace takes the numbers back before {key}.",
                markup=False,
            )
        return bool(self.picks)

    def action_vote_tie(self) -> None:
        if self._can_vote() and not self._pending("t (a tie)"):
            self._cast("tie", [])

    def action_vote_both_bad(self) -> None:
        if self._can_vote() and not self._pending(f"0 ({self._both()} bad)"):
            self._cast("both_bad", [])

    action_vote_all_bad = action_vote_both_bad  # the same vote; the footer names it by the count

    def _cast(
        self,
        outcome: str,
        ranking: list[int],
        n_ranked: int | None = None,
        keep: list[int] | None = None,
        shown: str | None = None,
    ) -> None:
        """Store the vote (one transaction), then reveal. A store error keeps the vote on screen.
        `keep`: the columns the vote holds (all of them unless some are one answer twice); `shown`:
        the verdict in words, where the stored vote's own would leave the columns of one text out."""
        rnd = self.round
        assert rnd is not None
        vote = self._vote(rnd, outcome, ranking, n_ranked, keep)
        queued = self.queue is not None and self.queue_active and rnd.position == self.position
        try:
            if queued:  # with the round marked done, unless another window did it meanwhile
                assert self.queue is not None and rnd.position is not None
                rnd.vote_id, self.done = self.store.add_queue_vote(
                    vote, self.queue_key, rnd.position, self.queue.total, self.queue.source
                )
            else:
                rnd.vote_id = self.store.add_vote(vote)
        except Exception as exc:  # unwritable, locked, full disk...: say so, keep the vote to retry
            self._set_bar(
                Text.assemble(("Vote NOT saved: ", "bold red"), (str(exc), "red"), ("  — fix it and vote again", ""))
            )
            self.notify(str(exc), title="Vote not saved", severity="error", timeout=10, markup=False)
            return
        if rnd.vote_id is None:  # the round was done in another window: on to the next one not done
            self.notify(
                f"Round {rnd.position + 1} was voted on or skipped in another window meanwhile; this vote was not "
                "stored, so the round counts once.",
                title="Round already done",
                timeout=10,
                markup=False,
            )
            self._advance(marked=True)
            return
        self.cast.append(rnd)
        rnd.revealed = True
        rnd.verdict = shown or verdict(vote)
        self.picks = []
        if queued:  # the next round takes the screen: the notice is where this one's columns are named
            names = ", ".join(f"{LABELS[c]} = {self._column_name(c)}" for c in range(len(rnd.answers)))
            self._advance(marked=True)
            if self.queue_active or self.waiting:
                self.notify(f"Vote #{rnd.vote_id} saved: {rnd.verdict} · {names}", title="Saved", markup=False)
            else:  # the queue is done and this round stays, revealed: the head and titles name its columns,
                # the vote bar says the vote is saved (QA: that notice, "Queue finished" and the round
                # before's, stacked top right, covered the revealed titles and the prompt line).
                dismiss_saved_notices(self.app)
        else:
            # No notice: the vote bar says the vote is saved, the head and titles name the columns (QA: a
            # notice, top right, covered column B's title as it was revealed).
            self._refresh_bars()

    def _vote(
        self, rnd: Round, outcome: str, ranking: list[int], n_ranked: int | None, keep: list[int] | None = None
    ) -> Vote:
        """The round's answers, as shown (those of `keep`, when given; else every one that did not
        fail), and the rater's verdict on them."""
        columns = rnd.answered if keep is None else keep
        responses = [
            Response(
                label=LABELS[c],
                model=rnd.answers[c].model,
                preset=rnd.answers[c].preset,
                params=dict(rnd.answers[c].params),
                seed=rnd.answers[c].seed,
                text=rnd.texts[c],
                finish_reason=rnd.finish[c] if rnd.finish[c] is not None else "cancelled",
            )
            for c in columns
        ]
        return Vote(
            id=None,
            prompt=rnd.prompt,
            conversation=[dict(m) for m in rnd.conversation],
            responses=responses,
            outcome=outcome,
            ranking=list(ranking),
            rater=self.rater,
            blind=rnd.blind and not rnd.revealed,
            created_at="",  # "": the store stamps it
            n_ranked=n_ranked,
            # A queue round's id; a typed prompt (or the chat's ctrl+b) gets one the same way: its conversation's hash.
            prompt_id=rnd.prompt_id if rnd.prompt_id is not None else prompt_id(rnd.conversation),
            source=f"rank:{Path(self.queue.source).name}" if self.answers_only else "playground",
        )

    def action_skip(self) -> None:
        if self.round is not None and self.queue_active and self.round.position == self.position:
            self.round.cancel.set()
            self._advance()

    def action_undo_vote(self) -> None:
        """Remove this window's last vote (never one cast elsewhere: another window, rater or command)
        and go back to its round, answers as they were, to vote again; in a queue, that round is not
        done any more. Each ctrl+z goes one vote further back."""
        if not self.cast:
            self.notify("No vote of this window to undo (ctrl+z never removes a vote cast elsewhere).")
            return
        rnd = self.cast[-1]
        assert rnd.vote_id is not None
        vote_id, in_queue = rnd.vote_id, self.queue is not None and rnd.position is not None
        try:
            # In a queue the round is claimed for this window in the same transaction that frees it, so a
            # window waiting for a free round (_poll_waiting) never takes it in between.
            queue = (self.queue_key, rnd.position) if in_queue else None
            deleted = self.store.undo_vote(vote_id, queue, self.window if in_queue else None)
        except Exception as exc:
            self.notify(str(exc), title="Undo failed", severity="error", timeout=10, markup=False)
            return
        self.cast.pop()
        rnd.vote_id = None  # vote again on the same answers (no longer blind: they were revealed)
        if in_queue:
            assert rnd.position is not None
            self.done = self.done - {rnd.position}
            self._claim(0, round=rnd.position)  # the round undo_vote claimed for this window: where it is now
        if rnd is not self.round and self.round is not None:
            self.round.cancel.set()  # a later round had started: it comes up again in a queue
        self._show_round(rnd)
        self.query_one("#columns").focus()
        if deleted:
            self.notify(f"Removed vote #{vote_id} ({rnd.verdict}): {_excerpt(rnd.prompt, 40)}", markup=False)
        else:
            self.notify(f"Vote #{vote_id} was no longer stored; its round is back to vote on again.", markup=False)

    # ------------------------------------------------------------------ other actions

    def action_stop(self) -> None:
        if self.round is not None:
            self.round.cancel.set()
            self._set_bar(Text("Stopping…"))

    def action_back(self) -> None:
        """Close the screen when it was pushed over another (the chat's compare)."""
        if self._can_leave():
            self.dismiss()

    def action_quit(self) -> None:
        """`tiankong compare` or `rank`: quit, as the app's ctrl+q does (the queue's rounds done are stored)."""
        self.app.exit()

    def action_to_prompt(self) -> None:
        """`tiankong compare`, which esc never leaves: go to the prompt box."""
        self.query_one("#prompt-input", Input).focus()
        self.refresh_bindings()

    def action_to_vote(self) -> None:
        """From the prompt box back to the answers of the round waiting for a vote."""
        self.query_one("#columns").focus()
        self.refresh_bindings()

    def action_new_prompt(self) -> None:
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.disabled = False
        prompt_input.value = ""
        # At once, not on a later turn of the event loop (Widget.focus): the keys typed right after "n"
        # are handed on to whatever has focus when they are read.
        self.set_focus(prompt_input)
        self.picks = []
        self._refresh_bars()

    def action_rerun(self) -> None:
        rnd = self.round
        if rnd is not None and self.state != "generating" and not self.answers_only:
            self._start(
                rnd.prompt, fresh=True, history=rnd.conversation[:-1], prompt_id=rnd.prompt_id, position=rnd.position
            )

    def action_toggle_blind(self) -> None:
        """Blind mode for the rounds to come; the round on screen keeps the mode it started in (its
        labels were shuffled, or not, before it was generated)."""
        self.blind = not self.blind
        what = "round" if self.queue_active else "prompt"
        now = " (this round stays as it is)" if self.state == "voting" else ""
        self.notify(f"Blind mode {'on' if self.blind else 'off'} from the next {what}{now}.", markup=False)
        self._refresh_bars()

    def help_intro(self) -> str:
        """The help screen's paragraph above the keys: what this screen is for (not the chat's)."""
        what = (
            "Rank answers made earlier: each round shows one prompt's answers side by side"
            if self.answers_only
            else "Compare: every column answers the same prompt at once, under its own preset (or model)"
        )
        return (
            f"{what}. Press the column numbers best first, then enter. Blind, the columns are labelled A–D "
            "in a random order, and what wrote each is shown once you vote. Columns with the same text "
            "share a rank: one answer twice is no preference."
        )

    def help_sections(self) -> list[Section]:
        """Every key as it works on this screen, for the app's help screen (f1): esc as it is here (stop,
        back to the chat, or to the prompt box; never leaving `tiankong compare` or `rank`), the keys that
        scroll an answer column, and the app's own keys."""
        left_out = set() if self.queue is not None else {"skip"}
        if self.answers_only:  # nothing is generated or typed: answers come from the file
            left_out |= {"stop", "to_prompt", "to_vote", "new_prompt", "rerun"}
        left_out |= {"to_prompt", "quit"} if not self.standalone else {"back"}
        if self.n_columns == 2:  # "0" only ever means both bad here
            left_out.add("vote_all_bad")
        # "1" once, for the most columns this screen shows (its binding per column count is for the footer).
        one = f"1-{self.n_columns}"
        bindings = [
            b
            for b in self.BINDINGS
            if isinstance(b, Binding) and b.action not in left_out and b.key_display in (None, one)
        ]
        rows = [(self.app.get_key_display(b), b.tooltip or b.description) for b in bindings]
        rows.append(("tab / shift+tab", "reach an answer column" + ("" if self.answers_only else " or the prompt box")))
        rows.append(("↑ ↓ home end", "scroll the answer column reached (pgup / pgdn a page at a time)"))
        own = {key for key, _ in rows}
        everywhere = getattr(self.app, "everywhere_keys", list)()
        return [
            ("rank" if self.answers_only else "compare", rows),
            ("everywhere", [(k, what) for k, what in everywhere if k not in own]),
        ]

    def action_keys(self) -> None:
        """The app's help screen when it has one, else Textual's keys-and-help panel."""
        if hasattr(self.app, "action_help"):
            self.app.action_help()
        elif self.query("HelpPanel"):
            self.app.action_hide_help_panel()
        else:
            self.app.action_show_help_panel()


def _excerpt(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
