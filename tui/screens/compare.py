"""Compare screen: one prompt, 2–4 answers streaming side by side, then an Arena-style vote.

Columns come from one engine with 2–4 presets (all rows in ONE batched `engine.generate` call, so
the presets share every forward pass) or from 2–4 engines with one preset (one batched call per
engine, interleaved token by token on the model thread; a server's stream is read in a thread of
its own, so one that stalls holds no other column back). Seeds are filled before generation
so every stored response can be reproduced.

Blind mode (the default) labels the columns A, B, C, D in a seeded random order and reveals which
preset or model wrote each one only after the vote. Voting (keys in `HELP`) stores one `Vote` per
round in the `Store` at once — one transaction — and shows any store error instead of dropping it.

With a `PromptQueue` (tiankong.tui.queue) the screen runs through a file's prompts one round after
another (`tiankong compare --prompts`), or through answers made earlier, which it shows without
generating (`tiankong rank`): a vote or `s` (skip) moves to the next round, and the store keeps the
rounds done (per lineup and rater), so the same file reopens where it was left. Each window claims the
round it shows (VoteStore.claim_queue_round), so two windows on one file get different rounds and
label it twice as fast. The voting keys are the same either way; ctrl+z takes back only the votes
this screen cast, newest first.

The screen is built in parts, read in this order: compare_rounds.py (entrants, rounds, seeds), this
file (the screen: bindings, layout, rounds and generation), compare_queue.py (a queue's rounds one
after another, claimed per window), compare_actions.py (what the keys do: voting, skip, undo, ...) and
compare_view.py (the answer columns, head line and vote bar).
"""

from __future__ import annotations

import random
import secrets
from typing import TYPE_CHECKING, Iterator

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input, Static

from tiankong.engine.errors import ContextOverflow
from tiankong.engine.events import Event, Finished, TokenEvent
from tiankong.engine.params import draw_seed
from tiankong.engine.remote import RemoteEngine
from tiankong.presets import Preset
from tiankong.tui.queue import PromptQueue
from tiankong.tui.screens.compare_actions import CompareActions
from tiankong.tui.screens.compare_queue import CompareQueue
from tiankong.tui.screens.compare_rounds import (
    LABELS,
    Round,
    build_entrants,
    fill_seeds,
    fit_prompt,
    label_list,
    model_identity,
)
from tiankong.tui.screens.compare_view import AnswerColumn, CompareView
from tiankong.tui.store import Store
from tiankong.tui.streaming import START, Apart, Batch, stream_events
from tiankong.tui.widgets.footer import FittingFooter
from tiankong.tui.widgets.prompt import PromptInput
from tiankong.tui.widgets.template_note import TemplateNote

if TYPE_CHECKING:  # the engine module imports torch, which `tiankong rank` (answers from a file) never needs
    from tiankong.engine.engine import Engine

MIN_COLUMN_WIDTH = 26  # below this many cells per column, 3-4 columns go two by two (or all stack)


class CompareScreen(CompareActions, CompareQueue, CompareView, Screen):
    """Side-by-side answers to one prompt (or to each prompt of a queue) and a vote on them."""

    CSS_PATH = "compare.tcss"
    AUTO_FOCUS = None

    # The footer shows what applies now (see ACTIVE); a FittingFooter, so it fits 80 columns in every state.
    BINDINGS = [
        Binding("escape", "stop", "stop", tooltip="stop generating (every column keeps its text and can be voted on)"),
        # Before "back": esc in the prompt box, with a round to vote on, first goes back to that round.
        Binding("escape", "to_vote", "vote", tooltip="from the prompt box back to the answers, to vote on them"),
        Binding("escape", "back", "back", tooltip="back to the chat"),
        # In `tiankong compare` esc never leaves, so its footer says where it goes instead.
        Binding("escape", "to_prompt", "type", tooltip="to the prompt box, to type the next prompt"),
        # One "1" per column count (check_action keeps the round's), so the footer names the keys there are.
        *(
            Binding(
                "1",
                f"pick(1, {k})",
                "rank",
                key_display=f"1-{k}",
                tooltip="rank: press column numbers best first (1 = A, 2 = B, ...), then enter; "
                "columns with the same text share a rank",
            )
            for k in range(2, len(LABELS) + 1)
        ),
        Binding("2", "pick(2)", "rank", show=False, tooltip="rank column B next"),
        Binding("3", "pick(3)", "rank", show=False, tooltip="rank column C next"),
        Binding("4", "pick(4)", "rank", show=False, tooltip="rank column D next"),
        Binding("backspace", "unpick", "unpick", show=False, tooltip="take back the last column number"),
        Binding(
            "enter",
            "submit_ranking",
            "vote",
            tooltip="store the ranking (unpressed columns stay unranked, below the pressed ones): 1 enter = A better",
        ),
        Binding("t", "vote_tie", "tie", tooltip="vote: a tie"),
        Binding("0", "vote_both_bad", "both bad", tooltip="vote: both answers are bad"),
        Binding("0", "vote_all_bad", "all bad", tooltip="vote: all the answers are bad (three or four columns)"),
        Binding("s", "skip", "skip", tooltip="skip this round of the queue without voting"),
        Binding(
            "ctrl+z",
            "undo_vote",
            "undo",
            tooltip="undo this window's last vote (removes it from the database) and vote on its round again",
        ),
        # A priority binding runs as the key arrives, before the keys typed after it are handed on, and it
        # focuses the prompt box at once: "n" then a prompt typed in one burst (a laggy link, a paste) lands
        # in the box rather than running r, b, t, s, ... (check_action turns it off while the box has focus).
        Binding("n", "new_prompt", "new", tooltip="type a new prompt", priority=True),
        Binding("r", "rerun", "rerun", tooltip="run the same prompt again with new seeds"),
        Binding("b", "toggle_blind", "blind", tooltip="blind mode on/off for the next prompt (labels hide presets)"),
        Binding("f1", "keys", "keys", tooltip="every key"),
        # Shown where esc never leaves (`tiankong compare`, `tiankong rank`): the way out. A priority binding,
        # as the app's own ctrl+q is (the footer shows a key's priority binding); from the chat, ctrl+q is
        # the app's as everywhere else (check_action turns this one off).
        Binding(
            "ctrl+q",
            "quit",
            "quit",
            tooltip="quit (a prompt or answers file reopens at the round shown)",
            priority=True,
        ),
    ]
    ACTIVE = {  # state -> the actions its keys run
        "idle": {"back", "to_prompt", "undo_vote", "toggle_blind", "keys", "quit"},
        "generating": {"stop", "skip", "undo_vote", "toggle_blind", "keys", "quit"},
        "voting": {
            "back",
            "to_prompt",
            "pick",
            "unpick",
            "submit_ranking",
            "vote_tie",
            "vote_both_bad",
            "vote_all_bad",
            "skip",
            "undo_vote",
            "new_prompt",
            "rerun",
            "to_vote",
            "toggle_blind",
            "keys",
            "quit",
        },
        "voted": {"back", "to_prompt", "undo_vote", "new_prompt", "rerun", "toggle_blind", "keys", "quit"},
        "failed": {"back", "to_prompt", "skip", "undo_vote", "new_prompt", "rerun", "toggle_blind", "keys", "quit"},
    }

    HELP = """\
## Compare and vote

Type a prompt and press **enter**: every column answers it at once.
Blind mode labels the columns A–D in random order; the presets (or models)
are revealed after you vote. With a prompt file (`--prompts`) or an answers
file (`tiankong rank`) the rounds come one after another, "37 / 300" shows
where you are, and the file reopens there next time.

When every column has finished:

- **1–4**: press column numbers best first, then **enter**
  (`1` enter = A better; `2` `1` `3` enter ranks B > A > C; `3` `1` enter on
  four answers says C > A > the rest, and nothing about B against D)
- **backspace** takes back the last number
- **t** tie · **0** both (all) bad · **s** skip (queue)
- **ctrl+z** undoes this window's last vote, one by one (never a vote cast in
  another window), and goes back to its round to vote again

A column that failed (its model or server erred part-way) is marked ✗ failed
and never stored: the vote ranks the others, when two or more answered; else
the round takes no vote (**r** runs it again, **s** skips it in a queue).

**esc** stops generating (or goes back to the chat it came from) · **n** new
prompt · **r** the same prompt again with new seeds · **b** blind mode on/off for
the next prompt · **tab** reaches a column, whose arrows, **home** and **end**
scroll it · **f1** every key. Opened by `tiankong compare` or `tiankong rank`, esc
never leaves the screen: **ctrl+q** quits (a prompt or answers file reopens where
you stopped).
"""

    class Streamed(Message):
        """The worker's latest text for every column (coalesced to ~30 per second)."""

        def __init__(self, number: int, texts: list[str], finish: list[str | None], stats: list[str]) -> None:
            super().__init__()
            self.number, self.texts, self.finish, self.stats = number, texts, finish, stats

    class Fitted(Message):
        """The round's prompt leaves out the conversation's `dropped` oldest turns (they no longer fit)."""

        def __init__(self, number: int, dropped: int) -> None:
            super().__init__()
            self.number, self.dropped = number, dropped

    class Ended(Message):
        """The worker is done with a round; `error` is set when the round failed to start, `failed`
        holds why each column whose engine failed part-way did (the others ran to their end)."""

        def __init__(
            self, number: int, error: str | None = None, failed: dict[int, str] | None = None, retry: bool = True
        ) -> None:
            """retry: whether running the round again may end otherwise (not for a prompt too long for the context)."""
            super().__init__()
            self.number, self.error, self.failed, self.retry = number, error, failed or {}, retry

    def __init__(
        self,
        engines: list[Engine],
        presets: list[Preset],
        store: Store,
        rater: str,
        blind: bool = True,
        conversation: list[dict] | None = None,
        prompt: str | None = None,
        *,
        queue: PromptQueue | None = None,
        restart: bool = False,
        standalone: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        # Answers read from a file need no engine; everything else does.
        self.answers_only = queue is not None and all(item.answers is not None for item in queue.items)
        self.entrants = [] if self.answers_only else build_entrants(list(engines), list(presets))
        self.n_columns = (
            max(len(item.answers or ()) for item in queue.items) if self.answers_only else len(self.entrants)
        )
        self.store = store
        self.rater = rater
        self.blind = blind  # applies to the next round
        history = [dict(m) for m in conversation or []]
        if prompt is None and history and history[-1].get("role") == "user":
            prompt = history.pop()["content"]  # a conversation that already ends with the prompt
        self.history = history
        self.initial_prompt = prompt
        self.queue = queue
        # The queue's progress is this rater's with this lineup (another lineup or rater has its own).
        self.queue_key = ""
        self.lineup: set[str] = set()  # a vote with these models and presets is this queue's (compare_queue.py)
        if queue is not None:
            lineup = [f"{model_identity(e.engine)} · {e.preset.name}" for e in self.entrants]
            self.queue_key, self.lineup = queue.progress_key(lineup, rater), set(lineup)
        self.restart = restart  # --restart: the queue's rounds done are forgotten on mount
        self.position = 0  # the queue round shown (queue.total once every round is done)
        self.window = secrets.token_hex(8)  # this screen, as its claim on the round it shows names it
        self.waiting = False  # the queue has rounds left, but other windows show them all
        self.done: set[int] = set()  # the queue's rounds done (voted or skipped), here or in another window
        self.cast: list[Round] = []  # the rounds this screen stored a vote for, oldest first: what ctrl+z undoes
        # Opened by `tiankong compare` or `rank` rather than from the chat: esc never leaves it for the
        # screen underneath (ctrl+q quits; a queue reopens where it was left).
        self.standalone = standalone
        self.round: Round | None = None
        self.picks: list[int] = []  # column indices pressed so far, best first
        self.leave_unvoted: int | None = None  # the round that Enter in the prompt box may leave unvoted (asked)
        self._rounds = 0

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(id="compare-head")
        yield TemplateNote(id="template-note")
        yield Static(id="queue-prompt")  # a queue's prompt (free prompts show in the input below)
        with VerticalScroll(id="columns"):
            for _ in range(self.n_columns):
                yield AnswerColumn(classes="answer")
        yield Static(id="vote-bar")
        yield PromptInput(placeholder="Prompt — Enter runs every column", id="prompt-input")
        # Narrow terminals leave out these keys, first to last, until the footer fits (f1 lists them all);
        # the voting keys and, where esc never leaves, ctrl+q stay.
        yield FittingFooter(
            drop=("toggle_blind", "rerun", "new_prompt", "to_prompt", "keys", "undo_vote"), show_command_palette=False
        )

    def on_mount(self) -> None:
        self._relayout()
        self._show_idle_columns()
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.display = not self.answers_only
        self.query_one("#queue-prompt").display = self.queue is not None
        self.query_one(TemplateNote).show_for(self.engines, "compare")
        if self.queue is not None:
            self._open_queue()
        elif self.initial_prompt is not None:
            prompt_input.value = self.initial_prompt
            self._start(self.initial_prompt, fresh=False)
        else:
            prompt_input.focus()
        self._refresh_bars()

    def on_unmount(self) -> None:
        if self.round is not None:
            self.round.cancel.set()  # never leave a generation thread running behind a closed screen
        if self.queue is not None:
            self._close_queue()

    def on_resize(self, event: events.Resize) -> None:
        self._relayout()
        self.call_after_refresh(self._refresh_bars)  # the head and vote bar fit the new width

    @property
    def engines(self) -> list[Engine | RemoteEngine]:
        """The columns' engines, each once, in column order (none for answers read from a file)."""
        engines: list[Engine | RemoteEngine] = []
        for e in self.entrants:
            if not any(e.engine is seen for seen in engines):
                engines.append(e.engine)
        return engines

    @property
    def k(self) -> int:
        """Columns in use: the round's answers (an answers file may have 2 to 4 per prompt)."""
        return len(self.round.answers) if self.round is not None else self.n_columns

    def _relayout(self) -> None:
        """Columns side by side when they fit; else three or four in a 2x2 grid; else one under another."""
        width, k = self.size.width, self.k
        fits = not width or width // k >= MIN_COLUMN_WIDTH
        grid = not fits and k > 2 and width // 2 >= MIN_COLUMN_WIDTH
        columns = self.query_one("#columns")
        columns.set_class(grid, "-grid")
        columns.set_class(not fits and not grid, "-stacked")

    @property
    def columns(self) -> list[AnswerColumn]:
        return list(self.query(AnswerColumn))[: self.k]

    @property
    def queue_active(self) -> bool:
        """A queue with rounds left: its rounds come one after another (no free prompts meanwhile)."""
        return self.queue is not None and self.position < self.queue.total

    @property
    def state(self) -> str:
        """idle (no round yet) | generating | failed | voting | voted."""
        r = self.round
        if r is None:
            return "idle"
        if not r.done:
            return "generating"
        if r.error is not None:
            return "failed"
        return "voted" if r.vote_id is not None else "voting"

    # ------------------------------------------------------------------ rounds

    @on(Input.Submitted, "#prompt-input")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        if self.state == "generating":
            self.notify("Still generating — Esc stops it first.", severity="warning")
            return
        if not event.value.strip():  # nothing to answer: a vote on it would be junk in the training data
            self.notify("Type a prompt first: an empty prompt is not run.", severity="warning")
            return
        rnd = self.round
        if rnd is not None and self.state == "voting" and self.leave_unvoted != rnd.number:
            # An esc meant to stop a round that had just finished lands here: the round must not go unsaid.
            self.leave_unvoted = rnd.number
            self.notify(
                "This round has no vote yet: Enter again runs the new prompt and leaves it unvoted; "
                "Esc goes back to vote on it.",
                title="Round not voted",
                severity="warning",
                markup=False,
            )
            return
        self._start(event.value, fresh=False)

    @on(events.DescendantFocus)
    @on(events.DescendantBlur)
    def _focus_moved(self) -> None:
        """The vote bar says what the keys do where the focus is (the prompt box takes them as text)."""
        self._refresh_bars()

    def _shuffled(self, k: int) -> tuple[list[int], int | None]:
        """The next round's column order (a seeded shuffle when blind) and its seed."""
        if self.round is not None:
            self.round.cancel.set()
        self._rounds += 1
        order = list(range(k))
        if not self.blind:
            return order, None
        shuffle_seed = draw_seed()
        random.Random(shuffle_seed).shuffle(order)
        return order, shuffle_seed

    def _show_round(self, rnd: Round) -> None:
        """Make `rnd` the current round: columns sized to it and filled, the prompt input locked."""
        self.round, self.picks = rnd, []
        for c, col in enumerate(self.query(AnswerColumn)):
            col.display = c < len(rnd.answers)
        self._relayout()
        for c, col in enumerate(self.columns):
            col.set_text(rnd.texts[c], follow=not rnd.done)  # answers already whole show from their top
            col.set_foot(*self._foot(c))
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.disabled = not rnd.done or self.queue_active
        prompt_input.display = not self.answers_only and not self.queue_active  # a queue brings its prompts
        if rnd.position is None:  # a free prompt shows in the box (ctrl+z may go back to an earlier round's)
            prompt_input.value = rnd.prompt
        if not rnd.done:
            self.query_one("#columns").focus()
        self._refresh_bars()

    def _start(
        self,
        prompt: str,
        fresh: bool,
        history: list[dict] | None = None,
        prompt_id: str | None = None,
        position: int | None = None,
    ) -> None:
        """Begin a round: shuffle (blind), fill seeds, clear the columns, start the worker."""
        order, shuffle_seed = self._shuffled(len(self.entrants))
        entrants = [self.entrants[i] for i in order]
        conversation = (self.history if history is None else history) + [{"role": "user", "content": prompt}]
        rnd = Round(
            self._rounds,
            prompt,
            conversation,
            entrants,
            fill_seeds(entrants, fresh),
            self.blind,
            shuffle_seed,
            prompt_id=prompt_id,
            position=position,
        )
        self._show_round(rnd)
        self.query_one("#columns").focus()
        self._generate(rnd)

    @work(thread=True, exclusive=True, group="compare-generate")
    def _generate(self, rnd: Round) -> None:
        """Stream every column; one batched generate call per distinct engine, interleaved (tui/streaming.py)."""
        by_engine: dict[int, list[int]] = {}  # the columns of each engine
        for c, ent in enumerate(rnd.entrants):
            by_engine.setdefault(id(ent.engine), []).append(c)
        groups = list(by_engine.values())
        texts, finish, stats = list(rnd.texts), list(rnd.finish), list(rnd.stats)
        too_long: list[bool] = []  # a prompt too long for an engine's context: r would fail alike

        def start() -> list[Iterator[Event]]:
            streams, dropped = [], 0
            for cols in groups:
                engine = rnd.entrants[cols[0]].engine
                params = [rnd.params[c] for c in cols]
                try:
                    # A chat longer than the context loses its oldest turns, as the chat does (room for the longest answer).
                    ids, n = fit_prompt(engine, rnd.conversation, max(p.max_new_tokens for p in params))
                    events = engine.generate([ids] * len(cols), params, top_logprobs=0, cancel=rnd.cancel)
                except ContextOverflow:
                    too_long.append(True)
                    raise
                dropped = max(dropped, n)
                # A server's stream is read in its own thread: one that stalls holds no other column back.
                streams.append(Apart(events) if isinstance(engine, RemoteEngine) else events)
            if dropped:
                self.post_message(self.Fitted(rnd.number, dropped))
            return streams

        def post(batch: Batch) -> None:
            for s, ev in batch:
                c = groups[s][ev.row]
                if isinstance(ev, TokenEvent):
                    texts[c] += ev.text
                elif isinstance(ev, Finished):
                    texts[c], finish[c] = ev.text, ev.finish_reason
                    # non-finite logits: say why
                    stats[c] = ev.message if ev.finish_reason == "error" else f"{ev.usage.completion_tokens} tokens"
            self.post_message(self.Streamed(rnd.number, list(texts), list(finish), list(stats)))

        errors = stream_events(start, post, rnd.cancel)
        failed = {c: why for s, why in errors.items() if s != START for c in groups[s]}
        self.post_message(self.Ended(rnd.number, errors.get(START), failed, retry=not too_long))

    def on_compare_screen_streamed(self, message: Streamed) -> None:
        rnd = self.round
        if rnd is None or message.number != rnd.number:
            return  # a late update from a round that was replaced
        rnd.texts, rnd.finish, rnd.stats = message.texts, message.finish, message.stats
        for c, col in enumerate(self.columns):
            col.set_text(rnd.texts[c])
            col.set_foot(*self._foot(c))

    def on_compare_screen_fitted(self, message: Fitted) -> None:
        if self.round is not None and message.number == self.round.number:
            self.round.dropped = message.dropped
            self._refresh_bars()

    def on_compare_screen_ended(self, message: Ended) -> None:
        rnd = self.round
        if rnd is None or message.number != rnd.number:
            return
        rnd.done = True
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.disabled = self.queue_active
        for c, why in message.failed.items():  # its text so far stays; the other columns went on
            rnd.finish[c], rnd.stats[c] = "failed", why
        if not message.error:
            self._leave_out_failed(rnd)
        if message.error:
            rnd.error, rnd.retry = message.error, message.retry  # nothing to vote on; n / r start again
        if rnd.error:
            self.notify(rnd.error, title="Generation failed", severity="error", markup=False)
        # Columns cut short say why: stopped (esc, skip, a new round) or failed with the round.
        rnd.finish = [f or ("failed" if message.error else "cancelled") for f in rnd.finish]
        for c, col in enumerate(self.columns):
            col.set_text(rnd.texts[c], follow=False)  # finished: each answer from its top, to read it whole
            col.set_foot(*self._foot(c))
        if not self.query_one("#prompt-input", Input).has_focus:
            self.query_one("#columns").focus()
        self._refresh_bars()

    def _leave_out_failed(self, rnd: Round) -> None:
        """Mark the columns that failed (their engine raised part-way: "failed"; their logits went
        non-finite, or a server sent an error: "error"). A failed column is no answer to rank, and stored
        in a vote it would be junk in the training data: the vote holds the others, when two or more
        came, and the round takes none when fewer did (s skips it in a queue, r runs it again)."""
        rnd.failed = {c: rnd.stats[c] or "an error" for c, f in enumerate(rnd.finish) if f in ("failed", "error")}
        if not rnd.failed:
            return
        names, why = label_list(sorted(rnd.failed)), next(iter(rnd.failed.values()))
        if len(rnd.answered) < 2:
            rnd.error = (
                f"{names} failed part-way, so this round takes no vote (it needs two answers, and "
                f"{len(rnd.answered) or 'none'} came); what each wrote stays on screen. {why}"
            )
            return
        self.notify(
            f"{names} failed part-way and {'is' if len(rnd.failed) == 1 else 'are'} left out of the vote: "
            f"rank {label_list(rnd.answered)}. {why}",
            title="Generation failed in part",
            severity="warning",
            timeout=10,
            markup=False,
        )
