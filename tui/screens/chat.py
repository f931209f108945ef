"""The chat screen: talk to the model and watch every token's candidates stream in.

Layout: a status line; the transcript (system prompt on top) beside the candidates panel; the
message input; the footer. Generation runs in a thread worker that batches tokens and posts them
to the UI at most every FRAME_S seconds (tui/streaming.py), so a fast model never floods the event loop.

Every message is stored the moment it exists: the user's when sent, the answer when it finishes
(also when stopped with Esc: finish_reason "cancelled"), with preset, params, seed and every
token's candidates. The transcript widgets and the store are kept in step; the prompt for the next
answer is always rebuilt from the transcript (system prompt + messages).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tiankong.engine.context import PromptCache, drop_turns
from tiankong.engine.engine import Engine, with_seeds
from tiankong.engine.errors import TiankongError
from tiankong.engine.events import Event, Finished, TokenEvent
from tiankong.engine.files import atomic_write_text
from tiankong.engine.remote import RemoteEngine, is_remote
from tiankong.engine.resolve import display_name
from tiankong.engine.sampling import SamplingParams
from tiankong.presets import Preset
from tiankong.tui.screens.branch import CandidatePicker, branch_vote, forced_token
from tiankong.tui.screens.help import Section
from tiankong.tui.screens.preset_editor import PresetEditor
from tiankong.tui.screens.tokens import TokensScreen
from tiankong.tui.store import Chat, Store, StoreError
from tiankong.tui.store import Message as StoredMessage
from tiankong.tui.streaming import Batch, stream_events
from tiankong.tui.widgets.candidates import CandidatesPanel, token_dict
from tiankong.tui.widgets.footer import FittingFooter
from tiankong.tui.widgets.message import AssistantMessage, SwitchBranch, UserMessage, heat_legend
from tiankong.tui.widgets.prompt import PromptInput
from tiankong.tui.widgets.status import StatusBar, finish_words, params_summary, plural
from tiankong.tui.widgets.transcript import Transcript

T = TypeVar("T")

TOP_LOGPROBS = 10  # candidates recorded (and shown) per token
TITLE_CHARS = 60  # a new chat is titled with the start of its first message


def chat_title(text: str) -> str:
    """A chat's title: its first message on one line, cut after a word (or, in text without spaces
    such as Chinese, at TITLE_CHARS) with "…" where it was cut."""
    line = " ".join(text.split())
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[:TITLE_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > TITLE_CHARS // 2 else cut) + "…"


INTRO = (
    "Type below and press enter. While the answer streams, the candidates panel shows the tokens the "
    "model weighed at each step and what your preset made of them. Afterwards f5 steps through the "
    "answer token by token (why this word?) and f6 colours it by probability. f1 lists every key."
)


class ContextNotice(Static):
    """A line in the transcript: from here on the model no longer sees the chat's first `dropped` turns."""

    def __init__(self, dropped: int, context: int) -> None:
        turns = "turn" if dropped == 1 else f"{dropped} turns"
        super().__init__(
            Text(
                f"⋯ the first {turns} of this chat no longer fit the model's {context}-token "
                "context: it does not see them now (ctrl+n starts a new chat)",
                style="dim italic",
            ),
            classes="context-notice",
        )
        self.dropped = dropped


class ChatListScreen(ModalScreen[int | None]):
    """Past chats, newest first: Enter opens one, d twice deletes it, Esc closes. `/` goes to the search
    box, which keeps the chats with a message containing its text (Store.search_chats) and shows where."""

    BINDINGS = [
        Binding("escape", "dismiss_none", "close"),
        Binding("d", "delete", "delete"),
        Binding("slash", "search", "search", show=False),
    ]
    DEFAULT_CSS = """
    ChatListScreen { align: center middle; }
    ChatListScreen > Vertical { width: 90%; max-width: 100; height: 80%; border: round $accent; background: $surface; }
    ChatListScreen OptionList, ChatListScreen OptionList:focus { height: 1fr; border: none; }
    ChatListScreen #chat-search { margin: 0 0 1 0; }
    """

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self._armed: int | None = None  # a chat id that the next `d` deletes

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "chats"
            box.border_subtitle = "enter open · / search · d d delete · esc close"
            yield Input(placeholder="/ search messages", id="chat-search", compact=True)
            yield OptionList(id="chat-list")

    def on_mount(self) -> None:
        self._fill()
        self.query_one(OptionList).focus()

    def _fill(self) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        query = " ".join(self.query_one("#chat-search", Input).value.split())
        try:
            if query:
                chats = [(m.chat, m.snippet) for m in self.store.search_chats(query)]
            else:
                chats = [(c, "") for c in self.store.list_chats()]
        except StoreError as e:  # a damaged or locked database: said here, the chat behind stays open
            options.add_option(Option(Text(str(e), style="bold red"), id="none", disabled=True))
            return
        for c, where in chats:
            line = Text(c.title or f"chat {c.id}", style="bold")
            line.append(
                f"  {c.preset} · {plural(c.n_messages, 'message')} · {display_name(c.model)} · "
                f"{c.updated_at[:16].replace('T', ' ')}",
                style="dim",
            )
            if where:  # the message that matched, on one line (Chinese is two cells a character), query highlighted
                snip = Text(where, style="italic")
                snip.truncate(max(20, options.size.width - 4), overflow="ellipsis")
                snip.highlight_words([query], "bold reverse", case_sensitive=False)
                line.append_text(Text("\n  ").append_text(snip))
            options.add_option(Option(line, id=str(c.id)))
        if not chats:
            empty = f"no message contains “{query}”" if query else "no chats yet"
            options.add_option(Option(Text(empty, style="dim"), id="none", disabled=True))
        else:
            options.highlighted = 0

    @on(Input.Changed, "#chat-search")
    def _search_changed(self) -> None:
        self._armed = None
        self._fill()

    @on(Input.Submitted, "#chat-search")
    def _search_submitted(self) -> None:
        self.query_one(OptionList).focus()

    def action_search(self) -> None:
        self.query_one("#chat-search", Input).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id and event.option.id != "none":
            self.dismiss(int(event.option.id))

    def action_delete(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return
        option = options.get_option_at_index(options.highlighted)
        if not option.id or option.id == "none":
            return
        chat_id = int(option.id)
        if self._armed != chat_id:
            self._armed = chat_id
            self.notify("press d again to delete this chat")
            return
        try:
            self.store.delete_chat(chat_id)
        except StoreError as e:
            self.notify(str(e), title="not deleted", severity="error")
            return
        self._armed = None
        self.notify("chat deleted")
        self._fill()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class ChatScreen(Screen[None]):
    CSS_PATH = "chat.tcss"
    AUTO_FOCUS = "#prompt"

    BINDINGS = [
        Binding(
            "escape",
            "escape",
            "stop",
            tooltip="stop the answer (keeps what was generated), leave inspect mode, cancel an edit",
        ),
        Binding("f1", "app.help", "keys", tooltip="every key, grouped"),
        Binding("f2", "next_preset", "preset", tooltip="switch to the next preset (shift+f2: previous)"),
        Binding("shift+f2", "prev_preset", "previous preset", show=False, tooltip="switch to the previous preset"),
        Binding(
            "f3",
            "edit_preset",
            "settings",
            tooltip="edit temperature, top-k, top-p, min-p, penalties, seed, max tokens",
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
        Binding("ctrl+n", "new_chat", "new", tooltip="start a new chat"),
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
            show=False,
            tooltip="compare your last prompt under this preset and the next one, side by side, and vote",
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
        self._saved_system = ""
        self.editing_id: int | None = None  # the user message being edited (ctrl+l)
        self._queued: str | None = None  # sent while the model was loading: sent once it is ready
        self.inspected: AssistantMessage | None = None
        self.heatmap = False
        # The conversation's keys and values, kept between answers (a new chat or another one
        # shares only the template's start with it, and is read once); and how many of the chat's
        # oldest turns no longer fit the context. Those stay dropped, so the prompt keeps one
        # start and the cache stays valid until the context fills again.
        self.prompt_cache = PromptCache()
        self.dropped_turns = 0

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                with Horizontal(id="system-row"):
                    yield Label("system", id="system-label")
                    yield Input(placeholder="system prompt (optional)", id="system", compact=True)
                with Transcript(id="transcript"):
                    yield Static(Text(INTRO), id="intro")
            panel = CandidatesPanel(id="candidates")
            panel.border_title = "candidates"
            panel.border_subtitle = "▶ chosen · ✗ cut by preset"
            yield panel
        yield Static(heat_legend(), id="heat-legend")
        yield PromptInput(placeholder="message · enter sends · esc stops · f1 keys", id="prompt")
        # Narrow terminals leave out these keys, first to last, until the footer fits (f1 lists them all).
        yield FittingFooter(drop=("heatmap", "next_preset", "edit_preset", "inspect", "regenerate"))

    def on_mount(self) -> None:
        self.query_one("#heat-legend").display = False
        self.query_one("#transcript", Transcript).anchor()
        self.query_one(CandidatesPanel).loading = self.engine is None and self.engine_error is None
        self._status()

    @property
    def transcript(self) -> Transcript:
        return self.query_one("#transcript", Transcript)

    @property
    def candidates(self) -> CandidatesPanel:
        return self.query_one(CandidatesPanel)

    @property
    def messages(self) -> list[UserMessage | AssistantMessage]:
        return [w for w in self.transcript.children if isinstance(w, (UserMessage, AssistantMessage))]

    def _status(self, state: str | None = None, error: bool = False) -> None:
        if state is None:
            if self.engine_error:
                state, error = f"model not loaded: {self.engine_error}", True
            elif self.engine is None:
                state = "loading model…"
            elif self.generating:
                state = "answering…"
            else:
                state = "ready"
            if self.dropped_turns and self.engine is not None:
                state += f" · {self.dropped_turns} turns out of context"
        edited = " (edited)" if self.params != self.preset.params else ""
        self.query_one(StatusBar).set(
            model=self.model_name,
            preset=self.preset.name + edited,
            settings=params_summary(self.params),
            state=state,
            error=error,
        )

    def _save(self, write: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Run one store call; a StoreError (disk full, database locked) is shown, never a crash.
        Returns the call's result, or None when it failed."""
        try:
            return write(*args, **kwargs)
        except StoreError as e:
            self.notify(str(e), title="not saved", severity="error", timeout=15)
            return None

    # ------------------------------------------------------------------ engine (called by the app)

    async def engine_ready(self, engine: Engine | RemoteEngine) -> None:
        self.engine, self.engine_error = engine, None
        if isinstance(engine, RemoteEngine):  # chats name the server's model id at its URL
            self.model_id, self.model_name = engine.folder, engine.name
        self.candidates.loading = False
        if self.chat_id is not None and self.messages and not self.generating:  # opened while it loaded
            await self._show_dropped()
        self._status()
        if self._queued is not None:
            text, self._queued = self._queued, None
            await self.send(text)

    def engine_failed(self, message: str) -> None:
        self.engine, self.engine_error = None, message
        self._queued = None
        self.candidates.loading = False
        self.candidates.hint("no model: chats can still be opened, read and exported")
        self._status()

    # ------------------------------------------------------------------ sending

    def conversation(self) -> list[dict[str, str]]:
        """The system prompt and the transcript as chat messages: what the next answer sees."""
        msgs = []
        system = self.query_one("#system", Input).value.strip()
        if system:
            msgs.append({"role": "system", "content": system})
        for w in self.messages:
            if isinstance(w, UserMessage):
                msgs.append({"role": w.role, "content": w.content})
            elif not w.streaming:
                msgs.append({"role": "assistant", "content": w.content})
        return msgs

    @on(Input.Submitted, "#prompt")
    async def _prompt_submitted(self, event: Input.Submitted) -> None:
        await self.send(event.value)

    @on(Input.Submitted, "#system")
    def _system_submitted(self, event: Input.Submitted) -> None:
        self._save_system()
        self.query_one("#prompt", Input).focus()

    def _save_system(self) -> None:
        system = self.query_one("#system", Input).value.strip()
        if self.chat_id is not None and system != self._saved_system:
            self._save(self.store.update_chat, self.chat_id, system_prompt=system)
        self._saved_system = system

    def _can_generate(self) -> bool:
        if self.generating:
            self.notify("still answering: esc stops it", severity="warning")
            return False
        if self.engine is None:
            self.notify(
                f"no model: {self.engine_error}" if self.engine_error else "the model is still loading",
                severity="error" if self.engine_error else "warning",
            )
            return False
        return True

    async def send(self, text: str) -> None:
        """Store and show the user's message, then answer it."""
        if not text.strip():
            return
        if self.engine is None and self.engine_error is None:
            self._queued = text
            self.query_one("#prompt", Input).value = ""
            self.notify("the model is still loading: your message goes out as soon as it is ready")
            return
        if not self._can_generate():
            return
        if self.editing_id is not None:  # the edited message and what followed stay, as a branch
            await self._remove_from(self.editing_id)
            self._end_edit()
            if self.chat_id is not None and not self.messages:  # the first message changed: so does the title
                self._save(self.store.update_chat, self.chat_id, title=chat_title(text))
        if self.chat_id is None:
            self._saved_system = self.query_one("#system", Input).value.strip()
            title = chat_title(text)
            self.chat_id = self._save(
                self.store.create_chat, self.model_id, self.preset.name, self._saved_system, title
            )
        message_id = (
            self._save(self.store.add_message, self.chat_id, "user", text, parent_id=self._last_id())
            if self.chat_id
            else None
        )
        if message_id is None:  # nothing is answered that could not be kept; the text stays in the box
            return
        self.query_one("#prompt", Input).value = ""
        await self.transcript.query("#intro").remove()
        user = UserMessage(text, message_id)
        await self.transcript.mount(user)
        self._show_siblings(user)
        await self._answer()

    def _last_id(self) -> int | None:
        """The stored message the next one follows: the transcript's last (None: the chat's first)."""
        return next((w.message_id for w in reversed(self.messages) if w.message_id is not None), None)

    def _show_siblings(self, widget: UserMessage | AssistantMessage) -> None:
        """Label the message with its branch ("‹ 2/3 ›") when it has siblings."""
        if widget.message_id is not None:
            message = self._save(self.store.get_message, widget.message_id)
            if message is not None:
                widget.set_branches(message.siblings)

    def _fit(self, msgs: list[dict[str, str]]) -> tuple[list[int], int]:
        """The next answer's prompt ids for these messages, and how many of the oldest turns it leaves
        out: they go when the chat and room for an answer no longer fit; an eighth of the context more
        at once, so that the next turns fit without dropping (and re-reading) again."""
        assert self.engine is not None
        ctx = self.engine.cfg.max_seq_len
        return self.engine.fit(msgs, self.params.max_new_tokens, at_least=self.dropped_turns, slack=ctx // 8)

    async def _note_dropped(self, dropped: int) -> None:
        """A transcript line where more turns went out of the context than before."""
        assert self.engine is not None
        if dropped > self.dropped_turns:
            await self.transcript.mount(ContextNotice(dropped, self.engine.cfg.max_seq_len))
        self.dropped_turns = dropped

    async def _show_dropped(self) -> None:
        """For a chat just opened: the turns its next answer will no longer see, said in the transcript
        and the status line, as they were when the chat was written."""
        try:
            _, dropped = self._fit(self.conversation())
        except TiankongError:  # the last message alone is too long: said when it is answered
            return
        await self._note_dropped(dropped)

    async def _answer(self, branch: tuple[list[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        """Start answering the transcript as it stands. branch: (the old answer's tokens before the
        branch point, the candidate picked there): the answer starts with those and continues."""
        self._save_system()
        self._leave_inspect()
        try:
            ids, dropped = self._fit(self.conversation())
        except TiankongError as e:  # the last message alone is too long: said where it stands, too
            self.notify(str(e), severity="error")
            await self.transcript.mount(Static(Text(f"⚠ not answered: {e}", style="red"), classes="context-notice"))
            self.transcript.scroll_end(animate=False)
            return
        await self._note_dropped(dropped)
        params = with_seeds([self.params])[0]  # fill the seed now, so it is stored and repeatable
        edited = " (edited)" if self.params != self.preset.params else ""
        answer = AssistantMessage(title=f"{self.model_name} · {self.preset.name}{edited}")
        answer.parent_id = self._last_id()
        await self.transcript.mount(answer)
        answer.start_stream()
        if branch is not None:  # the forced tokens are part of the prompt; the answer's length limit counts them
            before, (picked, at) = branch
            forced = [t["id"] for t in before]
            tokens = before + [forced_token(self.engine.tokenizer, ids + forced, at, picked)]
            ids = ids + forced + [picked["id"]]
            params = params.replace(max_new_tokens=max(1, params.max_new_tokens - len(tokens)))
            answer.forced_text = "".join(t["text"] for t in tokens)
            await answer.append(answer.forced_text, tokens)
        self.transcript.scroll_end(animate=False)
        self.transcript.anchor()
        self.generating = True
        self._cancel = threading.Event()
        self._status()
        self._generate(ids, params, self.preset.name + edited, answer, self._cancel)  # stored as shown

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

    @work(thread=True, exclusive=True, group="generate")
    def _generate(
        self, ids: list[int], params: SamplingParams, preset: str, answer: AssistantMessage, cancel: threading.Event
    ) -> None:
        """Runs in a thread: stream the answer's tokens to the UI in batches (tui/streaming.py)."""
        finished: list[Finished] = []

        def post(batch: Batch) -> None:
            tokens = [ev for _, ev in batch if isinstance(ev, TokenEvent)]
            finished.extend(ev for _, ev in batch if isinstance(ev, Finished))
            if tokens:
                self.post_message(self.Streamed(answer, "".join(t.text for t in tokens), list(map(token_dict, tokens))))

        def start() -> list[Iterator[Event]]:
            return [
                self.engine.generate(
                    [ids], [params], top_logprobs=TOP_LOGPROBS, cancel=cancel, prompt_cache=self.prompt_cache
                )
            ]

        error = stream_events(start, post, cancel)
        self.post_message(self.Done(answer, finished[0] if finished else None, params, preset, error))

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
        self.generating, self._cancel = False, None
        if fin is None or (fin.finish_reason == "error" and not fin.text):
            # Nothing to keep: the worker failed, or the model's first logits were not finite.
            await answer.finish(answer.content, "")
            await answer.remove()
            self.notify(f"generation failed: {event.error or fin.message}", severity="error", timeout=10)
            self._status(None if fin is None else f"generation failed: {fin.message}", error=fin is not None)
            return
        text = answer.forced_text + fin.text
        await answer.finish(text, self._info(fin, params, len(answer.tokens)))
        answer.message_id = self._save(
            self.store.add_message,
            self.chat_id,
            "assistant",
            text,
            preset=event.preset,
            params=params.to_dict(),
            seed=params.seed,
            finish_reason=fin.finish_reason,
            tokens=answer.tokens,
            parent_id=answer.parent_id,
        )
        self._show_siblings(answer)
        answer.set_view(heatmap=self.heatmap)
        if answer.tokens:
            self.candidates.show(answer.tokens[-1], f"last of {len(answer.tokens)} tokens · f5 inspects all")
        if fin.finish_reason == "error":  # non-finite logits part-way: keep what came before
            self.notify(f"generation failed: {fin.message}", severity="error", timeout=10)
            self._status(f"generation failed (kept the partial answer): {fin.message}", error=True)
            return
        self._status("stopped: kept the partial answer" if fin.finish_reason == "cancelled" else None)

    def _info(self, fin: Finished, params: SamplingParams, n_tokens: int) -> str:
        info = f"{finish_words(fin.finish_reason)} · {n_tokens} tokens · seed {params.seed}"
        if self.show_timing:
            info += f" · {fin.timing.decode_tokens_per_s:.0f} tok/s"
        return info

    # ------------------------------------------------------------------ editing the transcript

    async def _remove_from(self, message_id: int | None) -> None:
        """Take that message and everything after it out of the transcript (the store keeps them:
        they stay a branch, reachable with ctrl+← ctrl+→)."""
        msgs = self.messages
        index = next((i for i, w in enumerate(msgs) if w.message_id == message_id), None)
        if index is None:
            return
        for w in msgs[index:]:
            if w is self.inspected:
                self.inspected = None
            await w.remove()
        children = list(self.transcript.children)  # context notices after the last message kept go too
        kept = children.index(msgs[index - 1]) if index else -1
        await self.transcript.remove_children([w for w in children[kept + 1 :] if isinstance(w, ContextNotice)])
        self.dropped_turns = max((w.dropped for w in self.transcript.query(ContextNotice)), default=0)

    async def action_regenerate(self) -> None:
        if not self._can_generate():
            return
        msgs = self.messages
        if not msgs:
            self.notify("nothing to regenerate yet: send a message first")
            return
        last = msgs[-1]
        if isinstance(last, AssistantMessage):  # the stored answer stays, as a branch
            if last.message_id is None:
                await last.remove()
            else:
                await self._remove_from(last.message_id)
        if not any(isinstance(w, UserMessage) for w in self.messages):
            return
        await self._answer()

    def action_edit_last(self) -> None:
        if self.generating:
            self.notify("still answering: esc stops it first", severity="warning")
            return
        user = next((w for w in reversed(self.messages) if isinstance(w, UserMessage)), None)
        if user is None or user.message_id is None:
            self.notify("no message of yours to edit yet")
            return
        prompt = self.query_one("#prompt", PromptInput)
        prompt.text = user.content
        prompt.border_title = "editing your last message · enter resends · esc cancels"
        prompt.add_class("-editing")
        prompt.focus()
        self.editing_id = user.message_id

    def _end_edit(self) -> None:
        self.editing_id = None
        prompt = self.query_one("#prompt", Input)
        prompt.border_title = None
        prompt.remove_class("-editing")

    # ------------------------------------------------------------------ chats

    async def action_new_chat(self) -> None:
        if self.generating:
            self.notify("still answering: esc stops it first", severity="warning")
            return
        await self._clear()
        self.notify("new chat")

    async def _clear(self) -> None:
        self._leave_inspect()
        self._end_edit()
        await self.transcript.remove_children()
        await self.transcript.mount(Static(Text(INTRO), id="intro"))
        self.chat_id = None
        self.dropped_turns = 0
        self.candidates.show(None)
        self._status()

    def action_open_chats(self) -> None:
        if self.generating:
            self.notify("still answering: esc stops it first", severity="warning")
            return
        self.app.push_screen(ChatListScreen(self.store), self._open_picked)

    async def _open_picked(self, chat_id: int | None) -> None:
        if chat_id is not None:
            await self.open_chat(chat_id)
        elif self.chat_id is not None and self.chat_id not in {c.id for c in self._save(self.store.list_chats) or []}:
            await self._clear()  # the open chat was just deleted in the list

    async def open_chat(self, chat_id: int) -> None:
        chat = self._save(self.store.get_chat, chat_id)
        if chat is None:
            return
        await self._clear()
        self.chat_id = chat.id
        self.query_one("#system", Input).value = chat.system_prompt
        self._saved_system = chat.system_prompt
        await self.transcript.query("#intro").remove()
        await self._mount_messages(chat, chat.messages)
        if chat.preset in self.presets and chat.preset != self.preset.name:
            self._use_preset(chat.preset, quiet=True)
        if self.engine is not None:
            await self._show_dropped()
        self.transcript.scroll_end(animate=False)
        note = f"opened “{chat.title or chat.id}”"
        if chat.model != self.model_id:
            note += f" (written by {display_name(chat.model)}; new answers come from {self.model_name})"
        self.notify(note)
        self._status()

    async def _mount_messages(self, chat: Chat, messages: list[StoredMessage]) -> list[UserMessage | AssistantMessage]:
        """Show stored messages at the end of the transcript, each labelled with its branch.

        Answers start lazy (a one-widget preview at the height the Markdown will have); the
        transcript realizes those on and near the screen, in the background: a long chat opens
        in a fraction of the time, never showing an empty answer."""
        widgets: list[UserMessage | AssistantMessage] = []
        for m in messages:
            if m.role == "assistant":
                model = display_name(chat.model)
                title = f"{model} · {m.preset}" if m.preset else model
                info = (
                    f"{finish_words(m.finish_reason)} · {len(m.tokens or [])} tokens · seed {m.seed}"
                    if m.finish_reason
                    else ""
                )
                w: UserMessage | AssistantMessage = AssistantMessage(
                    m.content, m.tokens, title=title, info=info, message_id=m.id, lazy=True
                )
                w.parent_id = m.parent_id
            else:
                w = UserMessage(m.content, m.id)
                if m.role == "system":
                    w.role, w.border_title = "system", "system"
            w.set_branches(m.siblings)
            widgets.append(w)
        await self.transcript.mount_all(widgets)
        for w in widgets:
            if isinstance(w, AssistantMessage):
                w.set_view(heatmap=self.heatmap)
        return widgets

    # ------------------------------------------------------------------ branches

    @on(SwitchBranch)
    async def _switch_branch(self, event: SwitchBranch) -> None:
        """Show the sibling branch `step` places away at the focused message, and what follows it there."""
        w = event.widget
        if self.generating:
            self.notify("still answering: esc stops it first", severity="warning")
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
            self.notify(str(e), title="not switched", severity="error", timeout=15)
            return
        index = self.messages.index(w)
        await self._remove_from(w.message_id)
        shown = await self._mount_messages(chat, chat.messages[index:])
        if shown:
            shown[0].focus()
            shown[0].scroll_visible(animate=False)

    def on_assistant_message_branch_requested(self, event: AssistantMessage.BranchRequested) -> None:
        answer, index = event.answer, event.index
        if not self._can_generate():
            return
        if answer.message_id is None:
            self.notify("this answer was not stored: regenerate it first")
            return
        if isinstance(self.engine, RemoteEngine):
            self.notify("continuing from a chosen token needs a local model: a server takes messages, not tokens")
            return

        async def picked(candidate: dict[str, Any] | None) -> None:
            if candidate is not None and answer.is_attached and self._can_generate():
                at = answer.tokens[index]
                before = [dict(t) for t in answer.tokens[:index]]
                await self._remove_from(answer.message_id)  # it stays, as a sibling of the new branch
                await self._answer((before, (candidate, at)))

        self.app.push_screen(CandidatePicker(answer.tokens[index], index), picked)

    def on_assistant_message_branch_vote(self, event: AssistantMessage.BranchVote) -> None:
        """A vote that this branch beats each sibling answer, at the token where the two part."""
        answer = event.answer
        others = [i for i in answer.branches if i != answer.message_id]
        if answer.message_id is None or not others:
            self.notify("no other branch to compare with here: ctrl+r or b in f5 make one")
            return
        index = self.messages.index(answer)
        conversation = self.conversation()
        conversation = conversation[: len(conversation) - (len(self.messages) - index)]  # up to the user's message
        chosen = self._save(self.store.get_message, answer.message_id)
        rejected = [m for m in (self._save(self.store.get_message, i) for i in others) if m is not None]
        if chosen is None or not rejected:
            return
        votes = [branch_vote(conversation, chosen, r, self.model_id, getattr(self.app, "rater", "")) for r in rejected]
        replaced = self._save(self.store.add_branch_votes, votes)
        if replaced is not None:
            again = f", replacing {plural(replaced, 'earlier vote')} on the same answers" if replaced else ""
            self.notify(
                f"stored {plural(len(votes), 'vote')}{again}: this branch is better (ctrl+g lists votes)", title="voted"
            )

    def action_scroll_transcript(self, where: str) -> None:
        t = self.transcript
        {"page_up": t.scroll_page_up, "page_down": t.scroll_page_down, "home": t.scroll_home, "end": t.scroll_end}[
            where
        ](animate=False)

    def action_export(self) -> None:
        if self.chat_id is None:
            self.notify("nothing to export yet: send a message first")
            return
        base = self.export_dir / f"tiankong-chat-{self.chat_id}"
        md, jsonl = base.with_suffix(".md"), base.with_suffix(".jsonl")
        try:
            self.export_dir.mkdir(parents=True, exist_ok=True)
            # Each file whole or not at all (temp + fsync + rename); a full disk leaves the old export.
            atomic_write_text(md, self.store.export_chat_markdown(self.chat_id))
            atomic_write_text(jsonl, self.store.export_chat_jsonl(self.chat_id))
        except OSError as e:
            self.notify(f"could not export to {self.export_dir}: {e.strerror or e}", severity="error")
            return
        except TiankongError as e:  # one line from atomic_write_text or the store
            self.notify(str(e), severity="error")
            return
        self.notify(f"{md}\n{jsonl}", title="exported", timeout=10)

    def action_copy_last(self) -> None:
        answer = next((w for w in reversed(self.messages) if isinstance(w, AssistantMessage)), None)
        if answer is None:
            self.notify("no answer to copy yet")
            return
        answer.action_copy()

    # ------------------------------------------------------------------ presets

    def _use_preset(self, name: str, quiet: bool = False) -> None:
        self.preset = self.presets[name]
        self.params = self.preset.params
        self._status()
        if self.chat_id is not None:
            self._save(self.store.update_chat, self.chat_id, preset=name)
        if not quiet:
            self.notify(f"{self.preset.description}", title=f"preset {name}")

    def _step_preset(self, step: int) -> None:
        names = list(self.presets)
        self._use_preset(names[(names.index(self.preset.name) + step) % len(names)])

    def action_next_preset(self) -> None:
        self._step_preset(1)

    def action_prev_preset(self) -> None:
        self._step_preset(-1)

    def action_use_preset(self, name: str) -> None:
        self._use_preset(name)

    def action_edit_preset(self) -> None:
        def edited(params: SamplingParams | None) -> None:
            if params is not None and params != self.params:
                self.params = params
                self._status()
                self.notify(f"the next answer uses {params_summary(params)}", title=f"preset {self.preset.name} edited")

        self.app.push_screen(PresetEditor(self.preset, self.params), edited)

    # ------------------------------------------------------------------ token views

    def action_toggle_candidates(self) -> None:
        self.candidates.display = not self.candidates.display

    def action_heatmap(self) -> None:
        self.heatmap = not self.heatmap
        for w in self.messages:
            if isinstance(w, AssistantMessage):
                w.set_view(heatmap=self.heatmap)
        self.query_one("#heat-legend").display = self.heatmap

    def action_inspect(self) -> None:
        if self.inspected is not None:
            self._leave_inspect()
            return
        answers = [w for w in self.messages if isinstance(w, AssistantMessage) and w.tokens and not w.streaming]
        if not answers:
            self.notify("no finished answer to inspect yet")
            return
        target = self.focused if self.focused in answers else answers[-1]
        target.cursor = min(target.cursor, len(target.tokens) - 1)
        target.focus()
        target.set_view(inspecting=True)

    def on_assistant_message_token_selected(self, event: AssistantMessage.TokenSelected) -> None:
        if self.inspected is not None and self.inspected is not event.answer:
            self.inspected.set_view(inspecting=False)
        self.inspected = event.answer
        n = len(event.answer.tokens)
        self.candidates.display = True
        self.candidates.show(event.answer.tokens[event.index], f"token {event.index + 1} of {n} · ← → move · esc back")
        self._status("inspecting: ← → (or [ ]) move, home/end, esc returns")

    def _leave_inspect(self) -> None:
        if self.inspected is not None:
            answer, self.inspected = self.inspected, None
            answer.set_view(inspecting=False)
            if answer.tokens and self.candidates.token is answer.tokens[answer.cursor]:
                self.candidates.show(
                    self.candidates.token, f"token {answer.cursor + 1} of {len(answer.tokens)} · f5 inspects"
                )
            self.query_one("#prompt", Input).focus()
            self._status()

    # ------------------------------------------------------------------ other screens

    def action_tokens(self) -> None:
        if self.engine is None:
            self.notify("the tokens view needs a loaded model", severity="warning")
            return
        msgs = self.conversation()
        pending = self.query_one("#prompt", PromptInput).text
        if pending.strip():
            msgs.append({"role": "user", "content": pending})
        dropped = 0
        if msgs and not isinstance(self.engine, RemoteEngine):
            with contextlib.suppress(TiankongError):  # the last message alone too long: shown whole, with the count
                dropped = self._fit(msgs)[1]
            msgs = drop_turns(msgs, dropped)
        if isinstance(self.engine, RemoteEngine):  # no tokenizer here: the count, and what the server said
            prompt, ctx = self.engine.encode(messages=msgs), self.engine.cfg
            how = "estimated from characters" if prompt.estimated else "counted by the server"
            of = f" of a {ctx.max_seq_len}-token context" if ctx.context_known else " (context unknown)"
            self.notify(f"{self.engine.name}: the prompt is {len(prompt)} tokens{of}, {how}; the tokens stay there")
            return
        self.app.push_screen(TokensScreen(self.engine, msgs, dropped))

    def action_compare(self) -> None:
        user = next((w for w in reversed(self.messages) if isinstance(w, UserMessage) and w.role == "user"), None)
        if user is None:
            self.notify("send a message first: compare runs your last prompt under two presets")
            return
        names = list(self.presets)
        other = names[(names.index(self.preset.name) + 1) % len(names)]
        msgs = self.conversation()
        # The conversation up to and including that prompt.
        cut = max(i for i, m in enumerate(msgs) if m["role"] == "user" and m["content"] == user.content)
        self.app.open_compare([self.preset.name, other], conversation=msgs[: cut + 1])

    def action_escape(self) -> None:
        if self.generating and self._cancel is not None:
            self._cancel.set()
            self._status("stopping…")
        elif self.inspected is not None:
            self._leave_inspect()
        elif self.editing_id is not None:
            self._end_edit()
            self.query_one("#prompt", Input).value = ""
        else:
            self.query_one("#prompt", Input).focus()

    def on_resize(self) -> None:
        # Narrow terminals (80 columns) give the transcript more room.
        self.candidates.styles.width = 34 if self.size.width < 96 else 42

    def on_unmount(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def help_sections(self) -> list[Section]:
        """Every key of this screen, of answers (inspect mode) and of the app, for the help screen."""

        def keys(b: Binding) -> str:  # every key of a multi-key binding ("left,[" -> "← / [")
            return " / ".join(self.app.get_key_display(dataclasses.replace(b, key=k)) for k in b.key.split(","))

        def rows(bindings: list[Binding]) -> list[tuple[str, str]]:
            return [(keys(b), b.tooltip or b.description) for b in bindings]

        chat = [("enter", "send the message (in the system prompt: save it)")] + rows(self.BINDINGS)
        return [
            ("chat", chat),
            (
                "an answer (inspect mode, or a focused message)",
                rows(AssistantMessage.BINDINGS) + [("tab / shift+tab", "move focus between the inputs and messages")],
            ),
            (
                "everywhere",
                rows([b for b in self.app.BINDINGS if b.key not in {c.key for c in self.BINDINGS}])
                + [("ctrl+p", "command palette: every action by name"), ("ctrl+q", "quit")],
            ),
        ]
