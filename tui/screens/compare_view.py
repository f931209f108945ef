"""What the compare screen draws: an answer column (title, streaming text, status line), and the
CompareView mixin that fills the head line, the column titles and feet, and the vote bar from the
screen's state.

Apart from the screen (compare.py), which runs rounds and generation, and from the keys
(compare_actions.py): this is the drawing, read from the state and never changing it. The classes
the columns carry are styled by compare.tcss (the screen's CSS_PATH).
"""

from __future__ import annotations

from typing import Callable

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from tiankong.tui.queue import PromptQueue
from tiankong.tui.screens.compare_rounds import LABELS, Entrant, Round, label_list, model_identity, model_name
from tiankong.tui.screens.votes import tiers_text
from tiankong.tui.widgets.status import finish_words, plural
from tiankong.tui.widgets.streaming_text import StreamingText

# While the columns are blind, how an answer ended, in words that do not give its model or preset away.
NEUTRAL = {"eos": "finished", "stop": "finished", "length": "cut off", "context": "cut off"}


class AnswerColumn(Vertical):
    """One answer: a label line, the streaming text (scrollable), a status line."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Children exist from construction, so the screen may fill them before they are mounted
        # (querying for them in the screen's on_mount raced their mounting under load).
        self._title = Static(classes="answer-title")
        self._body = StreamingText(classes="answer-scroll answer-body")
        self._foot = Static(classes="answer-foot")
        self._feet: tuple[str, ...] = ("",)  # the status line, then shorter forms for a narrow column

    def compose(self) -> ComposeResult:
        yield self._title
        yield self._body
        yield self._foot

    def set_title(self, title: str) -> None:
        _set_line(self._title, title)

    def set_text(self, text: str, follow: bool = True) -> None:
        """`follow=False`: a whole answer (read from a file, or finished), shown from its top."""
        self._body.set_text(text, follow)  # plain text, never markup: model output may contain "[" and friends

    def set_foot(self, *feet: str) -> None:
        """The status line: the first of `feet` that fits the column (the last, cut, when none does)."""
        self._feet = feet or ("",)
        self._fit_foot()

    def _fit_foot(self) -> None:
        width = self._foot.content_region.width
        fits = [f for f in self._feet if not width or cell_len(f) <= width]
        _set_line(self._foot, fits[0] if fits else self._feet[-1])

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit_foot)  # once the status line has its new width too


def _set_line(line: Static, text: str) -> None:
    """A one-line Static's new text, drawn only if it changed and without laying the screen out
    (its height is 1 whatever it says): the compare screen sets each column's foot every frame."""
    if str(line.content) != text:
        line.update(Text(text), layout=False)


class CompareView:
    """CompareScreen's drawing (mixed into it): the revealed names, the column feet, the head line
    and the vote bar, from the state the screen keeps."""

    # The screen's state this reads (set by CompareScreen)
    round: Round | None
    queue: PromptQueue | None
    entrants: list[Entrant]
    history: list[dict]
    blind: bool
    answers_only: bool
    position: int
    picks: list[int]
    k: int
    state: str
    queue_active: bool
    waiting: bool
    done: set[int]
    cast: list[Round]
    columns: list[AnswerColumn]
    _ranking: Callable[[], tuple[list[list[int]], list[int]]]  # compare_actions.py: the ranks pressed, the rest
    _same_texts: Callable[[], list[list[int]]]  # compare_actions.py: the columns of one text

    # ------------------------------------------------------------------ drawing

    def _column_name(self, c: int) -> str:
        """What wrote column c, as revealed: the preset, the model, both, or (all alike) the seed."""
        assert self.round is not None
        answers = self.round.answers
        a = answers[c]
        one_model, one_preset = len({x.model for x in answers}) == 1, len({x.preset for x in answers}) == 1
        if one_model and one_preset and self.answers_only:  # e.g. generate --n 4: samples told apart by seed
            return f"{a.preset} · seed {'?' if a.seed is None else a.seed}"
        if one_model:
            return a.preset
        if one_preset:
            return a.model_name
        return f"{a.model_name} ({a.preset})"

    def _hidden(self) -> bool:
        return self.round is not None and self.round.blind and not self.round.revealed

    def _foot(self, c: int) -> tuple[str, ...]:
        """Column c's status line, then shorter forms for a narrow column (without the token count,
        then the finish too), so that the seed of a revealed answer stays in view."""
        rnd = self.round
        assert rnd is not None
        finish = rnd.finish[c]
        if finish is None:
            return ("generating…",)
        if self._hidden() and finish in NEUTRAL:
            # How an answer ended and its length in tokens can name what wrote it (a model with a small
            # context ends "context full"; a preset's max tokens): said once the vote is in.
            return (NEUTRAL[finish],)
        words, stats = finish_words(finish), rnd.stats[c]
        seed = f"seed {rnd.answers[c].seed}" if not self._hidden() and rnd.answers[c].seed is not None else ""
        feet = [" · ".join(p for p in parts if p) for parts in ((words, stats, seed), (words, seed), (seed or words,))]
        return tuple(dict.fromkeys(feet))

    def _show_idle_columns(self) -> None:
        for c, col in enumerate(self.columns):
            col.set_title(LABELS[c])
            col.set_text("")
            col.set_foot("")

    def _set_bar(self, text: Text) -> None:
        self.query_one("#vote-bar", Static).update(text)

    def _refresh_bars(self) -> None:
        """Head line, the queue's prompt line, column titles and the vote bar, from the current state."""
        rnd, hidden = self.round, self._hidden()
        width = self.query_one("#compare-head", Static).content_region.width
        head = self._head(short=False)
        if width and head.cell_len > width:  # a narrow terminal: the short form, before the end is cut
            head = self._head(short=True)
        self.query_one("#compare-head", Static).update(head)
        if self.queue is not None:
            line = self.query_one("#queue-prompt", Static)
            line.display = rnd is not None  # a finished queue reopened has no round to show
            if rnd is not None:
                # Once the queue is done, the answers on screen are its last round's.
                prompt = Text.assemble(
                    ("Prompt: " if self.queue_active else "Last round's prompt: ", "bold"), rnd.prompt
                )
                if rnd.prompt_id is not None:
                    prompt.append(f"  ({rnd.prompt_id})", style="dim")
                line.update(prompt)
        if rnd is not None:
            for c, col in enumerate(self.columns):
                failed = " ✗ failed, not in the vote" if c in rnd.failed else ""  # its foot says why
                col.set_title(LABELS[c] + failed if hidden else f"{LABELS[c]}{failed} · {self._column_name(c)}")
                col.set_class(bool(failed), "-failed")
                col.set_foot(*self._foot(c))
        self._set_bar(self._bar_text(self.state, self.k))
        self.refresh_bindings()

    def _head(self, short: bool) -> Text:
        """The head line: the queue's place, what is compared (hidden until the vote), the model, the
        chat before the prompt. `short`: in fewer words, for a narrow terminal."""
        rnd, k, hidden = self.round, self.k, self._hidden()
        head = Text()
        if self.queue is not None:
            if self.queue_active:
                head.append(f"{self.position + 1} / {self.queue.total}", style="bold reverse")
                if self.queue.repeat > 1:
                    head.append(f" round {self.queue.at(self.position)[1] + 1}/{self.queue.repeat}", style="bold")
            elif self.waiting:
                head.append(f"{len(self.done)} / {self.queue.total} done", style="bold reverse")
            else:
                head.append(f"all {self.queue.total} done", style="bold reverse")
            head.append(" ")
        answers = rnd.answers if rnd is not None else []
        models = {a.model: a.model_name for a in answers} or {
            model_identity(e.engine): model_name(e.engine) for e in self.entrants
        }
        until = "" if short else " (hidden until you vote)"
        if rnd is not None and not hidden and not short:  # (the column titles name them too)
            what = ", ".join(f"{LABELS[c]} = {self._column_name(c)}" for c in range(k))
        elif self.answers_only:
            what = f"{k} answers" + (until if hidden else "")
        elif not hidden and not short:
            what = ", ".join(e.preset.name if len(models) == 1 else model_name(e.engine) for e in self.entrants)
        else:
            what = (f"{k} models" if len(models) > 1 else f"{k} presets") + until
        head.append("Rank " if self.answers_only else "Compare ", style="bold")
        # This round's mode first (a narrow terminal cuts the end); the next round's when it differs.
        if rnd is None:
            mode = "blind" if self.blind else "open"
        else:
            mode = "open" if not rnd.blind else "revealed" if rnd.revealed else "blind"
        head.append(f"({mode}) ", style="dim")
        head.append(what)
        if len(models) == 1:
            head.append(f" · {next(iter(models.values()))}", style="dim")
        context = len(rnd.conversation) - 1 if rnd is not None else len(self.history)
        if context:
            head.append(f" · after {plural(context, 'chat message')}", style="dim")
        if rnd is not None and rnd.dropped:  # as the chat does, and its tokens view (ctrl+t) says
            turns, fit = ("turn", "fits") if rnd.dropped == 1 else (f"{rnd.dropped} turns", "fit")
            head.append(f", without the chat's first {turns}, which no longer {fit} the context", style="dim")
        if rnd is not None and rnd.blind != self.blind:
            head.append(f" · next {'' if short else 'prompt '}{'blind' if self.blind else 'open'}", style="dim")
        return head

    def _bar_text(self, state: str, k: int) -> Text:
        """The vote bar: what happened and what the keys do now. Its key hints go, last first, where
        they would wrap the line (the footer and f1 still show them)."""
        width = self.query_one("#vote-bar", Static).content_region.width
        skip = ["s skip"] if self.queue_active else []
        undo = ["ctrl+z undo"] if self.cast else []  # only this window's votes are undone
        if self.queue is not None and not self.queue_active and state in ("idle", "voted"):
            more = ["n new prompt"] if not self.answers_only else ["ctrl+q quits"]
            if self.waiting:
                line = Text.assemble(
                    ("Every round left is open in another window", "yellow"), "; one comes here if that window closes"
                )
                return _fit(line, more + undo, width)
            line = Text.assemble(("✓ ", "bold green"))
            rnd = self.round
            if rnd is not None and rnd.revealed and rnd.vote_id is not None:  # the last vote, still shown
                line.append(f"Vote #{rnd.vote_id} saved: {rnd.verdict} · ", style="green")
            line.append(f"All {self.queue.total} rounds done", style="green")
            return _fit(line, more + undo, width)
        if state == "idle":
            return Text("Type a prompt and press enter. f1 shows every key.", style="dim")
        if state == "generating":
            hints = ["Esc stops", *skip, "voting opens when every column has finished"]
            return _fit(Text("Generating…", style="dim"), hints, width)
        rnd = self.round
        assert rnd is not None
        if state == "failed":
            return Text.assemble(
                ("Generation failed: ", "bold red"),
                (rnd.error or "", "red"),
                (" · n new prompt" if not self.queue_active else "")
                + (" · r retry" if rnd.retry else "")
                + " · ".join(["", *skip]),
            )
        if state == "voted":
            line = Text.assemble(("✓ ", "bold green"), (f"Vote #{rnd.vote_id} saved: {rnd.verdict}", "green"))
            return _fit(line, ["n new prompt", "r rerun", *undo], width)
        if self.focused is self.query_one("#prompt-input"):  # the keys below are letters of the prompt here
            line = Text.assemble(("Typing a new prompt", "bold"), ": the round above has no vote yet")
            return _fit(line, ["Esc goes back to vote on it"], width)
        return self._voting_text(k, skip, width)

    def _voting_text(self, k: int, skip: list[str], width: int) -> Text:
        """The vote bar while a round waits for its vote: the ranking pressed so far, or the keys;
        with a column that failed, which columns the vote holds."""
        ranks, rest = self._ranking()
        same = self._same_texts()
        failed = sorted(self.round.failed) if self.round is not None else []
        voted = [c for c in range(k) if c not in failed]  # the columns a vote holds
        if self.picks:
            tiers = [[" = ".join(LABELS[c] for c in rank)] for rank in ranks] + (
                [[LABELS[c] for c in rest]] if rest else []
            )
            line = Text.assemble(("Your ranking: ", "bold"), (tiers_text(tiers, better=not same), "bold cyan"))
            if len(rest) > 1:
                line.append(f"  ({', '.join(LABELS[c] for c in rest)} stay unranked)", style="dim")
            return _fit(line, ["Enter saves", "Backspace undoes a number"], width)
        bad = "0 both bad" if len(voted) == 2 else "0 all bad"
        out = (f" ({label_list(failed)} failed: not in the vote)", "red") if failed else ""
        if same == [voted]:  # one text in every column (that answered): nothing to prefer
            line = Text.assemble(("Vote: ", "bold"), ("every answer is the same text", "yellow"), out)
            return _fit(line, ["t tie", bad, "a ranking stores a tie", *skip], width)
        alike = [" = ".join(LABELS[c] for c in group) + " (same text)" for group in same]
        if failed:
            line = Text.assemble(("Rank ", "bold"), f"{label_list(voted)} best first, then Enter", out)
            return _fit(line, [*alike, "t tie", bad, *skip], width)
        if k == 2:
            line = Text.assemble(("Vote: ", "bold"), "1 Enter = A better")
            return _fit(line, ["2 Enter = B better", "t tie", "0 both bad", *skip], width)
        line = Text.assemble(("Rank: ", "bold"), f"press 1–{k} best first, then Enter")
        return _fit(line, [*alike, "t tie", "0 all bad", *skip], width)


def _fit(first: Text, hints: list[str], width: int) -> Text:
    """`first`, then the `hints` that fit one line of `width` cells after it (all of them when the
    width is not known yet), each after " · "."""
    line = first.copy()
    for hint in hints:
        if width and line.cell_len + 3 + cell_len(hint) > width:
            break
        line.append(" · " + hint)
    return line
