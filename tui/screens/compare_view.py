"""What the compare screen draws: an answer column (title, streaming text, status line), and the
CompareView mixin that fills the head line, the column titles and feet, and the vote bar from the
screen's state.

Apart from the screen (compare.py), which runs rounds and generation, and from the keys
(compare_actions.py): this is the drawing, read from the state and never changing it. The classes
the columns carry are styled by compare.tcss (the screen's CSS_PATH).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from tiankong.tui.queue import PromptQueue
from tiankong.tui.screens.compare_rounds import LABELS, Entrant, Round, model_identity, model_name
from tiankong.tui.screens.votes import tiers_text
from tiankong.tui.widgets.status import finish_words, plural
from tiankong.tui.widgets.streaming_text import StreamingText


class AnswerColumn(Vertical):
    """One answer: a label line, the streaming text (scrollable), a status line."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Children exist from construction, so the screen may fill them before they are mounted
        # (querying for them in the screen's on_mount raced their mounting under load).
        self._title = Static(classes="answer-title")
        self._body = StreamingText(classes="answer-scroll answer-body")
        self._foot = Static(classes="answer-foot")

    def compose(self) -> ComposeResult:
        yield self._title
        yield self._body
        yield self._foot

    def set_title(self, title: str) -> None:
        _set_line(self._title, title)

    def set_text(self, text: str) -> None:
        self._body.set_text(text)  # plain text, never markup: model output may contain "[" and friends

    def set_foot(self, foot: str) -> None:
        _set_line(self._foot, foot)


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
    columns: list[AnswerColumn]

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

    def _foot(self, c: int) -> str:
        rnd = self.round
        assert rnd is not None
        if rnd.finish[c] is None:
            return "generating…"
        parts = [finish_words(rnd.finish[c]), rnd.stats[c]]
        if not self._hidden() and rnd.answers[c].seed is not None:
            parts.append(f"seed {rnd.answers[c].seed}")
        return " · ".join(p for p in parts if p)

    def _show_idle_columns(self) -> None:
        for c, col in enumerate(self.columns):
            col.set_title(LABELS[c])
            col.set_text("")
            col.set_foot("")

    def _set_bar(self, text: Text) -> None:
        self.query_one("#vote-bar", Static).update(text)

    def _refresh_bars(self) -> None:
        """Head line, column titles and the vote bar, from the current state."""
        rnd, state, k = self.round, self.state, self.k
        hidden = self._hidden()
        head = Text()
        if self.queue is not None:
            shown = min(self.position + 1, self.queue.total) if self.queue_active else self.queue.total
            head.append(f"{shown} / {self.queue.total}", style="bold reverse")
            if self.queue.repeat > 1 and self.queue_active:
                head.append(f" round {self.queue.at(self.position)[1] + 1}/{self.queue.repeat}", style="bold")
            head.append(" ")
        answers = rnd.answers if rnd is not None else []
        models = {a.model: a.model_name for a in answers} or {
            model_identity(e.engine): model_name(e.engine) for e in self.entrants
        }
        if rnd is not None and not hidden:
            what = ", ".join(f"{LABELS[c]} = {self._column_name(c)}" for c in range(k))
        elif self.answers_only:
            what = f"{k} answers" + (" (hidden until you vote)" if hidden else "")
        elif not hidden:
            what = ", ".join(e.preset.name if len(models) == 1 else model_name(e.engine) for e in self.entrants)
        else:
            what = (f"{k} models" if len(models) > 1 else f"{k} presets") + " (hidden until you vote)"
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
            head.append(f" · next prompt {'blind' if self.blind else 'open'}", style="dim")
        self.query_one("#compare-head", Static).update(head)
        if self.queue is not None:
            prompt = Text.assemble(("Prompt: ", "bold"), rnd.prompt if rnd is not None else "")
            if rnd is not None and rnd.prompt_id is not None:
                prompt.append(f"  ({rnd.prompt_id})", style="dim")
            self.query_one("#queue-prompt", Static).update(prompt)

        if rnd is not None:
            for c, col in enumerate(self.columns):
                col.set_title(LABELS[c] if hidden else f"{LABELS[c]} · {self._column_name(c)}")
                col.set_foot(self._foot(c))
        self._set_bar(self._bar_text(state, k))
        self.refresh_bindings()

    def _bar_text(self, state: str, k: int) -> Text:
        keys = "1–2" if k == 2 else f"1–{k}"
        skip = " · s skip" if self.queue_active else ""
        if self.queue is not None and not self.queue_active and state in ("idle", "voted"):
            more = " · n new prompt" if not self.answers_only else " · ctrl+q quits"
            if self.waiting:
                return Text.assemble(
                    ("Every round left is open in another window", "yellow"),
                    "; one comes here if that window closes" + more + " · ctrl+z undo",
                )
            return Text.assemble(
                ("✓ ", "bold green"), (f"All {self.queue.total} rounds done", "green"), more + " · ctrl+z undo"
            )
        if state == "idle":
            return Text("Type a prompt and press enter. f1 shows every key.", style="dim")
        if state == "generating":
            return Text(f"Generating… Esc stops{skip}. Voting opens when every column has finished.", style="dim")
        rnd = self.round
        assert rnd is not None
        if state == "failed":
            return Text.assemble(
                ("Generation failed: ", "bold red"),
                (rnd.error or "", "red"),
                (" · n new prompt" if not self.queue_active else "") + " · r retry" + skip,
            )
        if state == "voted":
            return Text.assemble(
                ("✓ ", "bold green"),
                (f"Vote #{rnd.vote_id} saved: {rnd.verdict}", "green"),
                " · n new prompt · r rerun, new seeds · ctrl+z undo",
            )
        if self.picks:
            rest = [LABELS[c] for c in range(k) if c not in self.picks]
            tiers = [[LABELS[c]] for c in self.picks] + ([rest] if rest else [])
            line = Text.assemble(("Your ranking: ", "bold"), (tiers_text(tiers), "bold cyan"))
            if len(rest) > 1:
                line.append(f"  ({', '.join(rest)} stay unranked)", style="dim")
            line.append("  Enter saves · Backspace undoes a number")
            return line
        if k == 2:
            return Text.assemble(
                ("Vote: ", "bold"), f"1 Enter = A better · 2 Enter = B better · t tie · 0 both bad{skip}"
            )
        return Text.assemble(("Rank: ", "bold"), f"press {keys} best first, then Enter · t tie · 0 all bad{skip}")
