"""The chat screen: talk to the model and watch every token's candidates stream in.

Layout: a status line; the transcript (system prompt on top) beside the candidates panel; the
message input; the footer. Generation runs in a thread worker that batches tokens and posts them
to the UI at most every FRAME_S seconds (tui/streaming.py), so a fast model never floods the event loop.

Every message is stored the moment it exists: the user's when sent, the answer when it finishes
(also when stopped with Esc or ctrl+c, or by quitting: ctrl+q, SIGTERM, SIGHUP; finish_reason "cancelled"),
with preset, params, seed and every token's candidates. A quit does not count on the worker's Done
message, which may never be handled: on_unmount stops the worker, waits for it (at most
QUIT_WAIT_S) and stores every token it produced. The transcript widgets and the store are kept in
step; the prompt for the next answer is always rebuilt from the transcript (system prompt +
messages).

The screen's parts are mixins beside it: chat_sending.py (a message and its answer's prompt),
chat_branches.py (regenerate, edit, branch, vote), chat_history.py (new, open, export),
chat_views.py (presets, inspect, heatmap, tokens, compare); chat_list.py is the ctrl+o list. The
@on handlers, the generation worker and its messages stay here: Textual collects decorated
handlers only from the screen's own class, and names a message's handler after its owner class.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from rich.text import Text
from textual import events, on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Label, Static

from tiankong.engine.context import PromptCache
from tiankong.engine.engine import Engine
from tiankong.engine.events import Event, Finished, Timing, TokenEvent, Usage
from tiankong.engine.model_names import display_name
from tiankong.engine.remote import RemoteEngine, is_remote
from tiankong.engine.sampling import SamplingParams
from tiankong.presets import Preset
from tiankong.tui.screens.chat_branches import ChatBranches
from tiankong.tui.screens.chat_history import INTRO, ChatHistory
from tiankong.tui.screens.chat_sending import ChatSending
from tiankong.tui.screens.chat_views import ChatViews
from tiankong.tui.screens.help import Section
from tiankong.tui.store import Store, StoreError
from tiankong.tui.streaming import Batch, stream_events
from tiankong.tui.widgets.answer_tokens import heat_legend
from tiankong.tui.widgets.candidates import CandidatesPanel, token_dict
from tiankong.tui.widgets.footer import FittingFooter
from tiankong.tui.widgets.message import AssistantMessage, SwitchBranch, UserMessage
from tiankong.tui.widgets.prompt import PromptInput
from tiankong.tui.widgets.status import StatusBar, finish_words, params_summary, plural
from tiankong.tui.widgets.template_note import TemplateNote
from tiankong.tui.widgets.transcript import Transcript

T = TypeVar("T")

TOP_LOGPROBS = 10  # candidates recorded (and shown) per token
QUIT_WAIT_S = 5.0  # quitting mid-answer waits this long at most for the worker to stop (a token, a slow server)


# What the message box's hint says esc does (esc_means): nothing while esc only comes back to the
# box; it said "esc stops" with nothing streaming.
ESC_HINTS = {"stop": "esc stops", "back": "esc goes back", "edit": "esc cancels the edit", "prompt": ""}


def prompt_hint(esc: str) -> str:
    """The message box's placeholder when esc does `esc` (an esc_means word)."""
    return " · ".join(part for part in ("message", "enter sends", ESC_HINTS[esc], "f1 keys") if part)


@dataclasses.dataclass
class Answering:
    """The answer being generated, as far as its worker has got: what quitting stores (on_unmount).
    The worker thread extends `tokens`, sets `finished` and, when it returns, `ended`."""

    answer: AssistantMessage
    params: SamplingParams
    preset: str
    cancel: threading.Event
    tokens: list[dict[str, Any]]  # a branch's forced tokens, then every token the worker produced
    forced: int = 0  # how many of `tokens` were forced (a branch), not generated
    shown_params: SamplingParams | None = None  # the settings the status line shows meanwhile (seed as set)
    finished: Finished | None = None
    ended: threading.Event = dataclasses.field(default_factory=threading.Event)


def cut_short(run: Answering, error: str) -> Finished:
    """The Finished of an answer whose stream failed part-way (a server killed or gone silent, an
    engine that raised): finish reason "error", the text streamed so far, and why. Nothing the
    model wrote is lost; the answer is stored, and ctrl+r answers again."""
    generated = run.tokens[run.forced :]
    return Finished(
        row=0,
        text="".join(t["text"] for t in generated),
        finish_reason="error",
        usage=Usage(0, len(generated)),
        timing=Timing(0.0, 0.0, 0.0),
        token_ids=tuple(t["id"] for t in generated),
        message=error,
        seed=run.params.seed,
    )


class ChatScreen(ChatSending, ChatBranches, ChatHistory, ChatViews, Screen[None]):
    CSS_PATH = "chat.tcss"
    AUTO_FOCUS = "#prompt"

    # What esc does depends on these (esc_means): the footer is drawn again when one changes.
    generating: reactive[bool] = reactive(False, repaint=False, bindings=True)
    inspected: reactive[AssistantMessage | None] = reactive(None, repaint=False, bindings=True)
    editing_id: reactive[int | None] = reactive(None, repaint=False, bindings=True)

    BINDINGS = [
        # esc does one thing at a time, and the footer names the one it does now (check_action):
        # "esc stop" showed with nothing streaming, and in inspect mode, where esc goes back.
        Binding("escape", "escape('stop')", "stop", tooltip="while an answer streams: stop it (keeps what it wrote)"),
        Binding("escape", "escape('back')", "back", tooltip="in inspect mode (f5): back to the chat"),
        Binding("escape", "escape('edit')", "cancel edit", tooltip="while editing (ctrl+l): cancel, the box as it was"),
        Binding("escape", "escape('prompt')", "to message box", show=False, tooltip="else: back to the message box"),
        # Over Textual's own ctrl+c (copy a selection, else "press ctrl+q to quit"), only while an answer
        # streams: the answer ran on, and the key that stops a program stopped nothing.
        Binding(
            "ctrl+c",
            "interrupt",
            "stop answer",
            show=False,
            tooltip="while an answer streams: stop it, as esc does (else: copy a selection; ctrl+q quits)",
        ),
        Binding("f1", "app.help", "keys", tooltip="every key, grouped"),
        Binding("f2", "next_preset", "preset", tooltip="switch to the next preset (shift+f2: previous)"),
        Binding("shift+f2", "prev_preset", "previous preset", show=False, tooltip="switch to the previous preset"),
        Binding(
            "f3",
            "edit_preset",
            "settings",
            tooltip="edit temperature, top-k, top-p, min-p, penalties, seed, max tokens, stop strings",
        ),
        Binding("f4", "toggle_candidates", "candidates", show=False, tooltip="show or hide the candidates panel"),
        Binding(
            "f5", "inspect", "inspect", tooltip="step through the answer token by token (← → or [ ]): why this word?"
        ),
        Binding("f6", "heatmap", "heatmap", tooltip="colour every answer's tokens by their model probability"),
        Binding(
            "ctrl+r",
            "regenerate",
            "regenerate",
            tooltip="answer the last message again (the old answer stays, as a branch: ctrl+← ctrl+→ on it)",
        ),
        Binding(
            "ctrl+l",
            "edit_last",
            "edit last",
            show=False,
            tooltip="edit your last message and resend it (the old one and its answer stay, as a branch)",
        ),
        Binding("ctrl+n", "new_chat", "new", tooltip="start a new chat (the system prompt stays: clear it to drop it)"),
        Binding("ctrl+o", "open_chats", "chats", tooltip="list past chats and open one"),
        Binding(
            "ctrl+s",
            "export",
            "export",
            show=False,
            tooltip="export this chat to Markdown and JSONL in the export folder",
        ),
        Binding(
            "ctrl+y",
            "copy_last",
            "copy answer",
            show=False,
            tooltip="copy the last answer (c copies a focused message)",
        ),
        Binding(
            "ctrl+t", "tokens", "tokens", show=False, tooltip="how the current prompt tokenizes, and the model's info"
        ),
        Binding(
            "ctrl+b",
            "compare",
            "compare",
            tooltip="compare your last prompt under this preset (with its f3 edits) and the next one, side by "
            "side, and vote",
        ),
        # The prompt keeps the focus while you read, so the transcript scrolls from here too.
        Binding("pageup", "scroll_transcript('page_up')", "page up", show=False, tooltip="scroll the chat up a page"),
        Binding(
            "pagedown", "scroll_transcript('page_down')", "page down", show=False, tooltip="scroll the chat down a page"
        ),
        Binding("ctrl+home", "scroll_transcript('home')", "top", show=False, tooltip="go to the start of the chat"),
        Binding("ctrl+end", "scroll_transcript('end')", "bottom", show=False, tooltip="go to the end of the chat"),
    ]

    def __init__(
        self,
        *,
        store: Store,
        presets: dict[str, Preset],
        preset: str,
        model_id: str,
        export_dir: Path,
        show_timing: bool = True,
    ) -> None:
        super().__init__()
        self.store, self.presets, self.model_id = store, presets, model_id
        # A server shows its URL until it answers (engine_ready names its model).
        self.model_name = model_id if is_remote(model_id) else display_name(model_id)
        self.export_dir, self.show_timing = export_dir, show_timing
        self.preset: Preset = presets[preset]
        self.params: SamplingParams = self.preset.params
        self.engine: Engine | RemoteEngine | None = None  # None while loading, or when it failed
        self.engine_error: str | None = None
        self.chat_id: int | None = None
        self.generating = False
        self._cancel: threading.Event | None = None
        self._stop_asked = False  # ctrl+c came between enter and the answer's start: it starts stopped
        self._answering: Answering | None = None  # the answer the worker is generating
        self._saved_system = ""
        self.editing_id: int | None = None  # the user message being edited (ctrl+l)
        self._draft = ""  # what the prompt held when ctrl+l replaced it: given back when the edit ends
        self._queued: str | None = None  # sent while the model was loading: sent once it is ready
        self.inspected: AssistantMessage | None = None
        self.heatmap = False
        # The conversation's keys and values, kept between answers (a new chat or another one
        # shares only the template's start with it, and is read once); and how many of the chat's
        # oldest turns no longer fit the context. Those stay dropped, so the prompt keeps one
        # start and the cache stays valid until the context fills again.
        self.prompt_cache = PromptCache()
        self.dropped_turns = 0
        self.next_prompt = 0  # tokens of the next message's prompt, its message empty (_show_dropped)
        self.opening = 0  # the messages of a long chat being opened (chat_history.py), 0 when none is

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                with Horizontal(id="system-row"):
                    yield Label("system", id="system-label")
                    # select_on_focus=False (here and in the prompt): Textual's Input selects all its
                    # text when tab focuses it, and the next key replaced a whole draft.
                    yield Input(
                        placeholder="system prompt (optional)", id="system", compact=True, select_on_focus=False
                    )
                yield TemplateNote(id="template-note")  # under the system prompt: both are read without roles
                with Transcript(id="transcript"):
                    yield Static(Text(INTRO), id="intro")
            panel = CandidatesPanel(id="candidates")
            panel.border_title = "candidates"
            panel.border_subtitle = "▶ chosen · ✗ cut by preset"
            yield panel
        yield Static(heat_legend(), id="heat-legend")
        yield PromptInput(placeholder=prompt_hint(self.esc_means()), id="prompt", select_on_focus=False)
        # Narrow terminals leave out these keys, first to last, until the footer fits (f1 lists them all).
        # The preset keys go last: nothing else on screen tells of them. f5 outlasts ctrl+r: the intro
        # tells a new user to press it, and at 80 columns it went while ^r regenerate stayed.
        yield FittingFooter(drop=("heatmap", "compare", "regenerate", "inspect", "next_preset", "edit_preset"))

    def on_mount(self) -> None:
        self.query_one("#heat-legend").display = False
        self.query_one("#transcript", Transcript).anchor()
        self.query_one(CandidatesPanel).loading = self.engine is None and self.engine_error is None
        self._status()
        self.presets_notice()

    def on_screen_suspend(self) -> None:
        """A screen over this one (a dialog): its notices are drawn there (the app moves them to the
        top screen); drawn here too, behind a dialog, they covered the branch picker's title."""
        self.add_class("-covered")

    def on_screen_resume(self) -> None:
        self.remove_class("-covered")

    @property
    def transcript(self) -> Transcript:
        return self.query_one("#transcript", Transcript)

    @property
    def candidates(self) -> CandidatesPanel:
        return self.query_one(CandidatesPanel)

    @property
    def messages(self) -> list[UserMessage | AssistantMessage]:
        return [w for w in self.transcript.children if isinstance(w, (UserMessage, AssistantMessage))]

    def _status(self, state: str | None = None, error: bool = False, short: str | None = None) -> None:
        """The status line; `state` None: what the screen is doing (and, ready, what the next message
        leaves out and how full the context is). `short`: the state in fewer words, for a narrow terminal."""
        if state is None:
            if self.engine_error:
                state, error = f"model not loaded: {self.engine_error}", True
            elif self.opening:
                state = f"opening… ({plural(self.opening, 'message')})"
            elif self.engine is None:
                state = "loading model…"
            elif self.generating:
                state = "answering…"
            else:
                state = short = "ready"
                words, fewer = self._context_state()
                if words:
                    state, short = f"ready · {words}", f"ready · {fewer}"
        # While an answer streams, the preset and settings it was started with: f2 and f3 apply from
        # the next answer, and the line showed the new preset beside an answer still made with the old.
        running = self._answering if self.generating else None
        if running is not None:
            preset, params = running.preset, running.shown_params or running.params
        else:
            preset = self.preset.name + (" (edited)" if self.params != self.preset.params else "")
            params = self.params
        self.query_one(StatusBar).set(
            model=self.model_name,
            preset=preset,
            settings=params_summary(params, self._model_context()),
            state=state,
            short_state=short or state,
            error=error,
        )

    def _save(self, write: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Run one store call; a StoreError (disk full, database locked) is shown, never a crash.
        Returns the call's result, or None when it failed."""
        try:
            return write(*args, **kwargs)
        except StoreError as e:
            self.notify(str(e), title="not saved", severity="error", timeout=15, markup=False)
            return None

    # ------------------------------------------------------------------ engine (called by the app)

    async def engine_ready(self, engine: Engine | RemoteEngine) -> None:
        self.engine, self.engine_error = engine, None
        if isinstance(engine, RemoteEngine):  # chats name the server's model id at its URL
            self.model_id, self.model_name = engine.folder, engine.name
        self.candidates.loading = False
        self.query_one(TemplateNote).show_for([engine], "the chat")
        if self.opening:  # a long chat still coming in: its worker counts and sends once it is whole
            return
        if self.chat_id is not None and self.messages and not self.generating:  # opened while it loaded
            await self._show_dropped()
        self._status()
        await self.send_queued()

    async def send_queued(self) -> None:
        """Send the message typed while the model loaded, now that it is ready."""
        if self._queued is not None and self.engine is not None:
            text, self._queued = self._queued, None
            await self.send(text)

    def engine_failed(self, message: str) -> None:
        self.engine, self.engine_error = None, message
        self._queued = None
        self.candidates.loading = False
        self.candidates.hint("no model: chats can still be opened, read and exported")
        self._status()

    # ------------------------------------------------------------------ input

    @on(Input.Submitted, "#prompt")
    async def _prompt_submitted(self, event: Input.Submitted) -> None:
        try:
            await self.send(event.value)
        finally:  # the answer streams now, or none was started: ctrl+c is the streaming answer's or the app's
            self.query_one("#prompt", PromptInput).sent = self._stop_asked = False

    @on(Input.Submitted, "#system")
    def _system_submitted(self, event: Input.Submitted) -> None:
        self._save_system()
        self.query_one("#prompt", Input).focus()

    # ------------------------------------------------------------------ generation (started by chat_sending.py)

    class Streamed(Message):
        """A batch of tokens from the generation worker."""

        def __init__(self, answer: AssistantMessage, text: str, tokens: list[dict[str, Any]]) -> None:
            super().__init__()
            self.answer, self.text, self.tokens = answer, text, tokens

    class Done(Message):
        """The generation worker is finished: `finished` is None when it failed with `error`."""

        def __init__(
            self,
            answer: AssistantMessage,
            finished: Finished | None,
            params: SamplingParams,
            preset: str,
            error: str | None,
        ) -> None:
            super().__init__()
            self.answer, self.finished, self.params, self.preset, self.error = answer, finished, params, preset, error

    def _generate(
        self, ids: list[int], params: SamplingParams, preset: str, answer: AssistantMessage, cancel: threading.Event
    ) -> None:
        """Start the worker on `answer`. What it generates is kept in self._answering as it goes, so
        that quitting can store it even when the worker's Done is never handled (on_unmount)."""
        tokens = list(answer.tokens)  # a branch's forced tokens
        self._answering = Answering(
            answer, params, preset, cancel, tokens, forced=len(tokens), shown_params=self.params
        )
        self._generate_worker(ids, self._answering)

    @work(thread=True, exclusive=True, group="generate")
    def _generate_worker(self, ids: list[int], run: Answering) -> None:
        """Runs in a thread: stream the answer's tokens to the UI in batches (tui/streaming.py)."""

        def post(batch: Batch) -> None:
            tokens = [token_dict(ev) for _, ev in batch if isinstance(ev, TokenEvent)]
            run.tokens.extend(tokens)  # before the UI has them: quitting stores what was generated
            run.finished = next((ev for _, ev in batch if isinstance(ev, Finished)), run.finished)
            if tokens:
                self.post_message(self.Streamed(run.answer, "".join(t["text"] for t in tokens), tokens))

        def start() -> list[Iterator[Event]]:
            return [
                self.engine.generate(
                    [ids], [run.params], top_logprobs=TOP_LOGPROBS, cancel=run.cancel, prompt_cache=self.prompt_cache
                )
            ]

        try:
            error = next(iter(stream_events(start, post, run.cancel).values()), None)
            if error is not None and run.finished is None and len(run.tokens) > run.forced:
                run.finished = cut_short(run, error)  # the answer so far is kept, as a quit keeps it
            self.post_message(self.Done(run.answer, run.finished, run.params, run.preset, error))
        finally:
            run.ended.set()

    @on(Streamed)
    async def _streamed(self, event: Streamed) -> None:
        await event.answer.append(event.text, event.tokens)
        if event.tokens:
            n = len(event.answer.tokens)
            self.candidates.show(event.tokens[-1], f"streaming · token {n}")
            self._status(f"answering · {n} tokens")

    @on(Done)
    async def _done(self, event: Done) -> None:
        answer, fin, params = event.answer, event.finished, event.params
        if self._answering is not None and self._answering.answer is answer:
            self._answering = None  # stored here from now on, not by quitting
        stopped_here = self._cancel is not None and self._cancel.is_set()  # esc; else a server's own cancel
        self.generating, self._cancel = False, None
        if fin is None or (fin.finish_reason == "error" and not fin.text):
            # Nothing to keep: the worker failed, or the model's first logits were not finite.
            await answer.finish(answer.content, "")
            await answer.remove()
            await self._show_stored_rest()  # the answer it was to replace (ctrl+r, b) is still the chat's
            self.notify(f"generation failed: {event.error or fin.message}", severity="error", timeout=10, markup=False)
            self._status(None if fin is None else f"generation failed: {fin.message}", error=fin is not None)
            return
        text = answer.forced_text + fin.text
        # Stored before the first await, so that no quit can come between (on_unmount stores only what
        # is still in self._answering); the widget has its id once it shows how the answer ended.
        message_id = self._save(
            self._store_answer, answer, text, params, event.preset, fin.finish_reason, answer.tokens
        )
        await answer.finish(text, self._info(fin, params, len(answer.tokens)))
        answer.message_id = message_id
        self._show_siblings(answer)
        answer.set_view(heatmap=self.heatmap)
        self._show_last_token()
        await self._show_dropped()  # what the next message leaves out now, with this answer in the chat
        if fin.finish_reason == "error":  # non-finite logits, a server gone, an engine error part-way
            self._cut_short(fin.message)
        elif fin.finish_reason == "cancelled" and not stopped_here:
            self.notify(
                "the server cancelled the answer (it is shutting down, or the answer ran past its --timeout); "
                "the answer so far is kept: ctrl+r answers again",
                severity="warning",
                timeout=10,
                markup=False,
            )
            self._status("cancelled by the server: kept the partial answer", error=True)
        else:
            if fin.finish_reason == "cancelled":  # (short: it fits beside any preset at 80 columns)
                self._status("stopped: kept the partial answer", short="stopped")
            else:
                self._status()

    def _show_last_token(self) -> None:
        """The candidates panel on the last token of the transcript's last answer (the hint when it
        has none): after an answer, and after the transcript changed under it (a branch switched to,
        a chat opened), so that it never shows a token no longer on screen."""
        answer = next((w for w in reversed(self.messages) if isinstance(w, AssistantMessage)), None)
        if answer is None or not answer.tokens or answer.streaming:
            self.candidates.show(None)
        else:
            self.candidates.show(answer.tokens[-1], f"last of {len(answer.tokens)} tokens · f5 inspects all")

    def _cut_short(self, why: str) -> None:
        """Say that the answer failed part-way, kept as far as it got, and what to do."""
        todo = (
            "is the server still running? Start it again if not, then ctrl+r answers again"
            if isinstance(self.engine, RemoteEngine)
            else "ctrl+r answers again"
        )
        self.notify(
            f"generation failed: {why}\nthe answer so far is kept; {todo}", severity="error", timeout=15, markup=False
        )
        self._status(f"generation failed (kept the partial answer; ctrl+r answers again): {why}", error=True)

    def _store_answer(
        self,
        answer: AssistantMessage,
        text: str,
        params: SamplingParams,
        preset: str,
        finish_reason: str,
        tokens: list[dict[str, Any]],
    ) -> int:
        """Store a generated answer -> its message id (a StoreError when the store refuses it)."""
        return self.store.add_message(
            self.chat_id,
            "assistant",
            text,
            preset=preset,
            params=params.to_dict(),
            seed=params.seed,
            finish_reason=finish_reason,
            tokens=tokens,
            parent_id=answer.parent_id,
            model=self.model_id,  # its own: a chat opened in another model's playground has answers of both
            dropped=self.dropped_turns,  # what its prompt left out (_answer set it; nothing changes it meanwhile)
        )

    def _info(self, fin: Finished, params: SamplingParams, n_tokens: int) -> str:
        info = f"{finish_words(fin.finish_reason)} · {plural(n_tokens, 'token')} · seed {params.seed}"
        if self.show_timing and fin.timing.decode_tokens_per_s > 0:  # 0: not measured (one token, cut short)
            info += f" · {fin.timing.decode_tokens_per_s:.0f} tok/s"
        return info

    # ------------------------------------------------------------------ branches (made in chat_branches.py)

    @on(SwitchBranch)
    async def _switch_branch(self, event: SwitchBranch) -> None:
        """Show the sibling branch `step` places away at the focused message, and what follows it there."""
        w = event.widget
        if self.generating:
            self.notify("still answering: esc stops it first", severity="warning")
            return
        if self.still_opening():
            return
        if len(w.branches) < 2 or w.message_id not in w.branches or self.chat_id is None:
            self.notify("no other branch here: ctrl+r, ctrl+l or b in f5 make one")
            return
        at = w.branches.index(w.message_id) + event.step
        if not 0 <= at < len(w.branches):
            return
        try:
            self.store.select_message(w.branches[at])
            chat = self.store.get_chat(self.chat_id)
        except StoreError as e:
            self.notify(str(e), title="not switched", severity="error", timeout=15, markup=False)
            return
        index = self.messages.index(w)
        await self._remove_from(w.message_id)
        shown = await self._mount_messages(chat, chat.messages[index:])
        self._show_last_token()
        if shown:
            shown[0].focus()
            shown[0].scroll_visible(animate=False)

    # ------------------------------------------------------------------ keys

    def on_key(self, event: events.Key) -> None:
        """A character typed where nothing takes it (the transcript, a message for a key it has no use
        for) goes into the message box, which takes the focus: it was lost without a sign."""
        focused = self.focused
        if focused is None or isinstance(focused, Input) or not event.is_printable or not event.character:
            return
        if event.key in self.active_bindings:  # a message's own (c, b, v, [ ]) or the screen's
            return
        prompt = self.query_one("#prompt", PromptInput)
        prompt.focus()
        prompt.insert_text_at_cursor(event.character)
        event.stop()
        event.prevent_default()

    def _stop_streaming(self) -> bool:
        """Stop the answer being streamed after the token it is on (kept as far as it got); False when
        there is none."""
        if not (self.generating and self._cancel is not None):
            return False
        self._cancel.set()
        self._status("stopping…")
        return True

    def action_interrupt(self) -> None:
        if self._stop_streaming():
            return
        if self.query_one("#prompt", PromptInput).sent:  # enter was pressed; its answer has not started yet
            self._stop_asked = True
            return
        raise SkipAction()  # the app's ctrl+c: "press ctrl+q to quit"

    def esc_means(self) -> str:
        """What esc does now: "stop" an answer, go "back" from inspect mode, cancel an "edit", or go to
        the message box ("prompt"); the parameter of the one esc binding enabled (check_action)."""
        if self.generating and self._cancel is not None:
            return "stop"
        if self.inspected is not None:
            return "back"
        if self.editing_id is not None:
            return "edit"
        return "prompt"

    def watch_generating(self) -> None:
        self._show_prompt_hint()

    def watch_inspected(self) -> None:
        self._show_prompt_hint()

    def watch_editing_id(self) -> None:
        self._show_prompt_hint()

    def _show_prompt_hint(self) -> None:
        """The message box's hint names what esc does now, as the footer does (esc_means)."""
        if self.is_mounted:
            self.query_one("#prompt", PromptInput).placeholder = prompt_hint(self.esc_means())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "escape" and parameters:
            return parameters[0] == self.esc_means()
        return True

    def action_escape(self, what: str = "") -> None:
        """esc (`what`, the binding's word, is what it does now: esc_means decides)."""
        if self._stop_streaming():
            return
        if self.inspected is not None:
            self._leave_inspect()
        elif self.editing_id is not None:
            self._end_edit()  # the box gets back what it held before ctrl+l
        else:
            self.query_one("#prompt", Input).focus()

    def stop_answer(self) -> None:
        """Stop the answer being generated after the token it is on (the app is quitting)."""
        if self._answering is not None:
            self._answering.cancel.set()

    def on_unmount(self) -> None:
        """The app is quitting (ctrl+q, SIGTERM, SIGHUP): an answer being generated is stopped and
        stored here, as esc would, since the worker's Done may never be handled now."""
        if self._cancel is not None:
            self._cancel.set()
        run, self._answering = self._answering, None
        if run is None:
            return
        run.cancel.set()
        run.ended.wait(QUIT_WAIT_S)  # the worker stops after the token it is on
        produced = list(run.tokens)  # a snapshot: a worker that has not ended may still add to it
        fin = run.finished
        if fin is not None and (fin.finish_reason != "error" or fin.text):
            text, reason = run.answer.forced_text + fin.text, fin.finish_reason
        elif fin is None and not run.ended.is_set() and len(produced) > run.forced:
            # Still not stopped (a slow server): what came so far.
            text, reason = run.answer.forced_text + "".join(t["text"] for t in produced[run.forced :]), "cancelled"
        else:  # the worker failed, or produced nothing: nothing to keep, as in _done
            return
        try:  # a notification would not be seen now: the terminal is the app's no longer
            run.answer.message_id = self._store_answer(run.answer, text, run.params, run.preset, reason, produced)
        except StoreError as e:
            print(f"tiankong: the answer being generated was not saved: {e}", file=sys.stderr)

    def help_sections(self) -> list[Section]:
        """Every key of this screen, of answers (inspect mode) and of the app, for the help screen."""

        def keys(b: Binding) -> str:  # every key of a multi-key binding ("left,[" -> "← / [")
            return " / ".join(self.app.get_key_display(dataclasses.replace(b, key=k)) for k in b.key.split(","))

        def rows(bindings: list[Binding]) -> list[tuple[str, str]]:
            return [(keys(b), b.tooltip or b.description) for b in bindings]

        def once(bindings: list[Binding]) -> list[Binding]:  # a key bound twice (shown, and not) listed once
            return [b for i, b in enumerate(bindings) if b.key not in {c.key for c in bindings[:i]}]

        chat = [("enter", "send the message (in the system prompt: save it)")] + rows(self.BINDINGS)
        return [
            ("chat", chat),
            (
                "an answer (inspect mode, or a focused message)",
                rows(once(AssistantMessage.BINDINGS))
                + [
                    (
                        "tab / shift+tab",
                        "move focus: message box, system prompt, the chat (when it scrolls), its messages; "
                        "a key typed where none is taken goes into the message box",
                    )
                ],
            ),
            (
                "everywhere",
                rows([b for b in self.app.BINDINGS if b.key not in {c.key for c in self.BINDINGS}])
                + [("ctrl+p", "command palette: every action by name"), ("ctrl+q", "quit")],
            ),
        ]
