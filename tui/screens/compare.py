"""Compare screen: one prompt, 2–4 answers streaming side by side, then an Arena-style vote.

Columns come from one engine with 2–4 presets (all rows in ONE batched `engine.generate` call, so
the presets share every forward pass) or from 2–4 engines with one preset (one batched call per
engine, interleaved token by token in the same worker thread). Seeds are filled before generation
so every stored response can be reproduced.

Blind mode (the default) labels the columns A, B, C, D in a seeded random order and reveals which
preset or model wrote each one only after the vote. Voting (keys in `HELP`) stores one `Vote` per
round in the `Store` at once — one transaction — and shows any store error instead of dropping it.

With a `PromptQueue` (tiankong.tui.queue) the screen runs through a file's prompts one round after
another (`tiankong compare --prompts`), or through answers made earlier, which it shows without
generating (`tiankong rank`): a vote or `s` (skip) moves to the next round, and the store keeps the
position, so the same file reopens where it was left. The voting keys are the same either way.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from tiankong.engine.engine import Engine, draw_seed, with_seeds
from tiankong.engine.events import Event, Finished, TokenEvent
from tiankong.engine.remote import RemoteEngine
from tiankong.engine.resolve import display_name, model_key
from tiankong.engine.sampling import SamplingParams
from tiankong.presets import Preset
from tiankong.tui.queue import Answer, Item, PromptQueue
from tiankong.tui.screens.votes import can_go_back, tiers_text, verdict
from tiankong.tui.store import Response, Store, Vote
from tiankong.tui.streaming import Batch, stream_events
from tiankong.tui.widgets.prompt import PromptInput
from tiankong.tui.widgets.status import finish_words
from tiankong.tui.widgets.streaming_text import StreamingText

LABELS = "ABCD"
MIN_COLUMN_WIDTH = 26  # below this many cells per column, 3-4 columns go two by two (or all stack)


def model_name(engine: Engine | RemoteEngine) -> str:
    """How a model is shown: its folder's name (a server's: MODEL@HOST:PORT)."""
    return engine.name if isinstance(engine, RemoteEngine) else display_name(engine.folder)


def model_identity(engine: Engine | RemoteEngine) -> str:
    """How a model is stored in a vote: as chats store it (resolve.model_key: a folder's resolved
    path, a GGUF file's own name, not its cache blob's); a server's: URL/models/MODEL."""
    if isinstance(engine, RemoteEngine):
        return engine.folder
    return model_key(engine.folder)


@dataclass
class Entrant:
    """What writes one column: a model and a preset."""

    engine: Engine
    preset: Preset


@dataclass
class Round:
    """One prompt and its K answers, in column (label) order."""

    number: int
    prompt: str
    conversation: list[dict]  # history + the user prompt; what the vote stores
    entrants: list[Entrant]  # what generates each column ([] for answers read from a file)
    params: list[SamplingParams]  # seeds filled ([] for answers read from a file)
    blind: bool
    shuffle_seed: int | None  # None when not blind (columns in the given order)
    answers: list[Answer] = field(default_factory=list)  # who wrote each column, as the vote stores it
    prompt_id: str | None = None
    position: int | None = None  # the round's place in the queue, if any
    texts: list[str] = field(default_factory=list)
    finish: list[str | None] = field(default_factory=list)
    stats: list[str] = field(default_factory=list)
    done: bool = False
    revealed: bool = False
    vote_id: int | None = None
    error: str | None = None  # generation failed: nothing to vote on
    verdict: str = ""  # the stored vote, in words ("A better", "B > A > C", "tie")
    cancel: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if not self.answers:
            self.answers = [
                Answer(model_identity(e.engine), model_name(e.engine), e.preset.name, p.to_dict(), p.seed)
                for e, p in zip(self.entrants, self.params, strict=True)
            ]
        k = len(self.answers)
        self.texts, self.finish, self.stats = [""] * k, [None] * k, [""] * k


def build_entrants(engines: list[Engine], presets: list[Preset]) -> list[Entrant]:
    """Columns in the given order: one engine x N presets, N engines x one preset, or pairs."""
    if not engines or not presets:
        raise ValueError("compare needs at least one engine and one preset")
    if len(engines) == 1:
        entrants = [Entrant(engines[0], p) for p in presets]
    elif len(presets) == 1:
        entrants = [Entrant(e, presets[0]) for e in engines]
    elif len(engines) == len(presets):
        entrants = [Entrant(e, p) for e, p in zip(engines, presets, strict=True)]
    else:
        raise ValueError(
            f"compare {len(engines)} models with one preset or one model with several presets, "
            f"got {len(engines)} models and {len(presets)} presets"
        )
    if not 2 <= len(entrants) <= len(LABELS):
        raise ValueError(f"compare needs 2 to {len(LABELS)} columns, got {len(entrants)}")
    return entrants


def fill_seeds(entrants: list[Entrant], fresh: bool) -> list[SamplingParams]:
    """Each column's params with a seed; `fresh` replaces the presets' own seeds.

    Different models under one preset share the seed (a fair model comparison samples with the same
    random numbers); columns of one model always get different seeds, so "balanced vs balanced" shows
    two samples rather than the same one twice."""
    shared: dict[str, tuple[int, set[int]]] = {}  # preset name -> (seed, engines that used it)
    out = []
    for ent in entrants:
        p = ent.preset.params.replace(seed=None) if fresh else ent.preset.params
        if p.seed is None:
            seed, users = shared.get(ent.preset.name, (None, set()))
            if seed is None or id(ent.engine) in users:
                seed, users = with_seeds([p])[0].seed, set()
                shared[ent.preset.name] = (seed, users)
            users.add(id(ent.engine))
            p = p.replace(seed=seed)
        out.append(p)
    return out


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


class CompareScreen(Screen):
    """Side-by-side answers to one prompt (or to each prompt of a queue) and a vote on them."""

    CSS_PATH = "compare.tcss"
    AUTO_FOCUS = None

    # The footer shows what applies now (see ACTIVE), so it fits 80 columns in every state.
    BINDINGS = [
        Binding("escape", "stop", "stop", tooltip="stop generating (every column keeps its text and can be voted on)"),
        Binding("escape", "back", "back", tooltip="back to the previous screen (or to the prompt)"),
        Binding(
            "1",
            "pick(1)",
            "rank",
            key_display="1-4",
            tooltip="rank: press column numbers best first (1 = A, 2 = B, ...), then enter",
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
        Binding("ctrl+z", "undo_vote", "undo", tooltip="undo the last stored vote (removes it from the database)"),
        Binding("n", "new_prompt", "new", tooltip="type a new prompt"),
        Binding("r", "rerun", "rerun", tooltip="run the same prompt again with new seeds"),
        Binding("b", "toggle_blind", "blind", tooltip="blind mode on/off for the next prompt (labels hide presets)"),
        Binding("f1", "keys", "keys", tooltip="every key"),
    ]
    ACTIVE = {  # state -> the actions its keys run
        "idle": {"back", "undo_vote", "toggle_blind", "keys"},
        "generating": {"stop", "skip", "undo_vote", "toggle_blind", "keys"},
        "voting": {
            "back",
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
            "keys",
        },
        "voted": {"back", "undo_vote", "new_prompt", "rerun", "toggle_blind", "keys"},
        "failed": {"back", "skip", "undo_vote", "new_prompt", "rerun", "toggle_blind", "keys"},
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
- **ctrl+z** undoes the last stored vote (in a queue: back to that round)

**esc** stops generating (or goes back) · **n** new prompt · **r** the same
prompt again with new seeds · **b** blind mode on/off for the next prompt · **f1** every key.
"""

    class Streamed(Message):
        """The worker's latest text for every column (coalesced to ~30 per second)."""

        def __init__(self, number: int, texts: list[str], finish: list[str | None], stats: list[str]) -> None:
            super().__init__()
            self.number, self.texts, self.finish, self.stats = number, texts, finish, stats

    class Ended(Message):
        """The worker is done with a round; `error` is set when generation failed."""

        def __init__(self, number: int, error: str | None = None) -> None:
            super().__init__()
            self.number, self.error = number, error

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
        self.position = 0  # rounds of the queue done (voted or skipped)
        self.previous: Round | None = None  # the queue's last round, for ctrl+z
        self.round: Round | None = None
        self.picks: list[int] = []  # column indices pressed so far, best first
        self._rounds = 0

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(id="compare-head")
        yield Static(id="queue-prompt")  # a queue's prompt (free prompts show in the input below)
        with VerticalScroll(id="columns"):
            for _ in range(self.n_columns):
                yield AnswerColumn(classes="answer")
        yield Static(id="vote-bar")
        yield PromptInput(placeholder="Prompt — Enter runs every column", id="prompt-input")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self._relayout()
        self._show_idle_columns()
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.display = not self.answers_only
        self.query_one("#queue-prompt").display = self.queue is not None
        if self.queue is not None:
            self.position = self.store.queue_position(self.queue.key)
            if self.queue_active:
                self._start_queued()
            else:
                self.notify(
                    f"All {self.queue.total} rounds of {self.queue.source} are done; --restart starts them again.",
                    timeout=10,
                )
                prompt_input.focus()
        elif self.initial_prompt is not None:
            prompt_input.value = self.initial_prompt
            self._start(self.initial_prompt, fresh=False)
        else:
            prompt_input.focus()
        self._refresh_bars()

    def on_unmount(self) -> None:
        if self.round is not None:
            self.round.cancel.set()  # never leave a generation thread running behind a closed screen

    def on_resize(self, event: events.Resize) -> None:
        self._relayout()

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
        self._start(event.value, fresh=False)

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
            col.set_text(rnd.texts[c])
            col.set_foot(self._foot(c))
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.disabled = not rnd.done or self.queue_active
        prompt_input.display = not self.answers_only and not self.queue_active  # a queue brings its prompts
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

    def _advance(self) -> None:
        """The queue's current round is done (voted or skipped): store the position, show the next."""
        assert self.queue is not None and self.round is not None
        self.previous = self.round
        self.position = self.round.position + 1
        self._save_position()
        if self.queue_active:
            self._start_queued()
        else:
            prompt_input = self.query_one("#prompt-input", Input)
            prompt_input.disabled, prompt_input.display = False, not self.answers_only
            self._refresh_bars()
            self.notify(f"All {self.queue.total} rounds done.", title="Queue finished", timeout=10)

    def _save_position(self) -> None:
        assert self.queue is not None
        try:
            self.store.set_queue_position(self.queue.key, self.position, self.queue.total, self.queue.source)
        except Exception as exc:  # the votes are saved; only where to resume is not
            self.notify(str(exc), title="Queue position not saved", severity="error", timeout=10)

    @work(thread=True, exclusive=True, group="compare-generate")
    def _generate(self, rnd: Round) -> None:
        """Stream every column; one batched generate call per distinct engine, interleaved (tui/streaming.py)."""
        by_engine: dict[int, list[int]] = {}  # the columns of each engine
        for c, ent in enumerate(rnd.entrants):
            by_engine.setdefault(id(ent.engine), []).append(c)
        groups = list(by_engine.values())
        texts, finish, stats = list(rnd.texts), list(rnd.finish), list(rnd.stats)

        def start() -> list[Iterator[Event]]:
            streams = []
            for cols in groups:
                engine = rnd.entrants[cols[0]].engine
                ids = engine.encode(messages=rnd.conversation)
                params = [rnd.params[c] for c in cols]
                streams.append(engine.generate([ids] * len(cols), params, top_logprobs=0, cancel=rnd.cancel))
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

        self.post_message(self.Ended(rnd.number, stream_events(start, post, rnd.cancel)))

    def on_compare_screen_streamed(self, message: Streamed) -> None:
        rnd = self.round
        if rnd is None or message.number != rnd.number:
            return  # a late update from a round that was replaced
        rnd.texts, rnd.finish, rnd.stats = message.texts, message.finish, message.stats
        for c, col in enumerate(self.columns):
            col.set_text(rnd.texts[c])
            col.set_foot(self._foot(c))

    def on_compare_screen_ended(self, message: Ended) -> None:
        rnd = self.round
        if rnd is None or message.number != rnd.number:
            return
        rnd.done = True
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.disabled = self.queue_active
        if message.error:
            rnd.error = message.error  # nothing to vote on; n / r start again
            self.notify(message.error, title="Generation failed", severity="error")
        rnd.finish = [f or "cancelled" for f in rnd.finish]
        for c, col in enumerate(self.columns):
            col.set_foot(self._foot(c))
        if not self.query_one("#prompt-input", Input).has_focus:
            self.query_one("#columns").focus()
        self._refresh_bars()

    # ------------------------------------------------------------------ voting

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in {a for actions in self.ACTIVE.values() for a in actions}:
            return True  # not ours (scrolling, focus, ...)
        if action not in self.ACTIVE[self.state]:
            return False
        if action == "pick":
            return int(parameters[0]) <= self.k
        if action in ("vote_both_bad", "vote_all_bad"):  # one key, named by the count (as the vote bar does)
            return (action == "vote_both_bad") == (self.k == 2)
        if action == "back":
            return can_go_back(self) or self.answers_only or self.focused is not self.query_one("#prompt-input")
        if action == "skip":
            return self.round is not None and self.queue_active and self.round.position == self.position
        if action == "new_prompt":
            return not self.answers_only and not self.queue_active
        if action == "rerun":
            return not self.answers_only
        return True

    def _can_vote(self) -> bool:
        return self.state == "voting"

    def action_pick(self, n: int) -> None:
        if not self._can_vote():
            return
        c = n - 1
        if c in self.picks:
            self.notify(f"{LABELS[c]} is already ranked; Backspace takes back the last number.")
            return
        self.picks.append(c)
        self._refresh_bars()

    def action_unpick(self) -> None:
        if self.picks:
            self.picks.pop()
            self._refresh_bars()

    def action_submit_ranking(self) -> None:
        if not self._can_vote():
            return
        if not self.picks:
            self.notify(
                "Press column numbers best first (1 = A, 2 = B, …), or t for a tie, "
                f"0 for {'both' if self.k == 2 else 'all'} bad."
            )
            return
        k = self.k
        ranking = self.picks + [c for c in range(k) if c not in self.picks]
        # Only what was pressed is ordered: with two or more columns left, they stay unordered.
        self._cast("ranked", ranking, len(self.picks) if len(self.picks) < k - 1 else None)

    def action_vote_tie(self) -> None:
        if self._can_vote():
            self._cast("tie", [])

    def action_vote_both_bad(self) -> None:
        if self._can_vote():
            self._cast("both_bad", [])

    action_vote_all_bad = action_vote_both_bad  # the same vote; the footer names it by the count

    def _cast(self, outcome: str, ranking: list[int], n_ranked: int | None = None) -> None:
        """Store the vote (one transaction), then reveal. A store error keeps the vote on screen."""
        rnd = self.round
        assert rnd is not None
        responses = [
            Response(
                label=LABELS[c],
                model=a.model,
                preset=a.preset,
                params=dict(a.params),
                seed=a.seed,
                text=rnd.texts[c],
                finish_reason=rnd.finish[c] if rnd.finish[c] is not None else "cancelled",
            )
            for c, a in enumerate(rnd.answers)
        ]
        vote = Vote(
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
            prompt_id=rnd.prompt_id,
            source=f"rank:{Path(self.queue.source).name}" if self.answers_only else "playground",
        )
        try:
            rnd.vote_id = self.store.add_vote(vote)
        except Exception as exc:  # unwritable, locked, full disk...: say so, keep the vote to retry
            self._set_bar(
                Text.assemble(("Vote NOT saved: ", "bold red"), (str(exc), "red"), ("  — fix it and vote again", ""))
            )
            self.notify(str(exc), title="Vote not saved", severity="error", timeout=10)
            return
        rnd.revealed = True
        rnd.verdict = verdict(vote)
        self.picks = []
        names = ", ".join(f"{LABELS[c]} = {self._column_name(c)}" for c in range(len(rnd.answers)))
        self.notify(f"Vote #{rnd.vote_id} saved: {rnd.verdict} · {names}", title="Saved")
        if self.queue_active and rnd.position == self.position:
            self._advance()
        else:
            self._refresh_bars()

    def action_skip(self) -> None:
        if self.round is not None and self.queue_active and self.round.position == self.position:
            self.round.cancel.set()
            self._advance()

    def action_undo_vote(self) -> None:
        try:
            undone = self.store.undo_last_vote()
        except Exception as exc:
            self.notify(str(exc), title="Undo failed", severity="error", timeout=10)
            return
        if undone is None:
            self.notify("No votes to undo.")
            return
        rnd, prev = self.round, self.previous
        if rnd is not None and undone.id == rnd.vote_id:
            rnd.vote_id = None  # vote again on the same answers (no longer blind: they were revealed)
            self._refresh_bars()
        elif prev is not None and undone.id == prev.vote_id and prev.position is not None:
            # In a queue the next round has started: go back to the undone one, answers as they were.
            if rnd is not None:
                rnd.cancel.set()
            prev.vote_id, self.previous = None, None
            self.position = prev.position
            self._save_position()
            self._show_round(prev)
        self.notify(f"Removed vote #{undone.id} ({undone.outcome}): {_excerpt(undone.prompt, 40)}")

    # ------------------------------------------------------------------ other actions

    def action_stop(self) -> None:
        if self.round is not None:
            self.round.cancel.set()
            self._set_bar(Text("Stopping…"))

    def action_back(self) -> None:
        """Close the screen when it was pushed over another (`tiankong rank`: leave); else go to the prompt."""
        if can_go_back(self):
            self.dismiss()
        elif self.answers_only:
            self.app.exit()
        else:
            self.query_one("#prompt-input", Input).focus()
            self.refresh_bindings()

    def action_new_prompt(self) -> None:
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.disabled = False
        prompt_input.value = ""
        prompt_input.focus()
        self.picks = []
        self._refresh_bars()

    def action_rerun(self) -> None:
        rnd = self.round
        if rnd is not None and self.state != "generating" and not self.answers_only:
            self._start(
                rnd.prompt, fresh=True, history=rnd.conversation[:-1], prompt_id=rnd.prompt_id, position=rnd.position
            )

    def action_toggle_blind(self) -> None:
        self.blind = not self.blind
        self.notify(f"Blind mode {'on' if self.blind else 'off'} from the next prompt.")
        self._refresh_bars()

    def action_keys(self) -> None:
        """The app's help screen when it has one, else Textual's keys-and-help panel."""
        if hasattr(self.app, "action_help"):
            self.app.action_help()
        elif self.query("HelpPanel"):
            self.app.action_hide_help_panel()
        else:
            self.app.action_show_help_panel()

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
            head.append(f" · after {context} chat messages", style="dim")
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
            more = " · n new prompt" if not self.answers_only else " · esc leaves"
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


def _excerpt(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
