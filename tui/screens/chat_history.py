"""The chats in the store, a part of ChatScreen (tui/screens/chat.py): a new chat, opening a past one
(its stored messages shown, lazily), exporting it, copying the last answer, scrolling the transcript.

Apart from chat.py so that the screen's file holds its layout, state and Textual handlers; the
mixin uses that state (store, chat_id, transcript).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Input, Static

from tiankong.engine.errors import InputError, TiankongError
from tiankong.engine.files import atomic_write_text
from tiankong.engine.model_names import display_name, stored_model
from tiankong.engine.sampling import SamplingParams
from tiankong.tui.screens.chat_list import ChatListScreen
from tiankong.tui.store import Chat
from tiankong.tui.store import Message as StoredMessage
from tiankong.tui.store_base import file_in_the_way
from tiankong.tui.widgets.message import AssistantMessage, UserMessage
from tiankong.tui.widgets.status import finish_words, params_summary, plural

INTRO = (
    "Type below and press enter. While the answer streams, the candidates panel shows the tokens the "
    "model weighed at each step and what your preset made of them. Afterwards f5 steps through the "
    "answer token by token (why this word?) and f6 colours it by probability. f1 lists every key."
)


class ChatHistory:
    """ChatScreen's chats: new, open, export (mixed into it; uses its state and widgets)."""

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
        # The prompt, not the transcript that held a focused answer: typing goes into the box, and
        # no key meant for it (b, v) acts on an answer instead.
        self.query_one("#prompt", Input).focus()
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
        if chat.preset in self.presets and chat.preset != self.preset.name:
            self._use_preset(chat.preset, quiet=True)  # first: its max tokens count in what fits
        await self._mount_messages(chat, chat.messages)
        self.transcript.scroll_end(animate=False)
        note = f"opened “{chat.title or chat.id}”"
        if stored_model(chat.model) != stored_model(self.model_id):  # an old record holds the bundled model by path
            note += f" (written by {display_name(chat.model)}; new answers come from {self.model_name})"
        self.notify("\n".join([note, *self._preset_notes(chat)]), markup=False)
        self._status()

    def _preset_notes(self, chat: Chat) -> list[str]:
        """What an opened chat's answers were made with that new ones will not be: a preset that is
        gone (or whose file is broken), or f3 edits (kept per answer, not restored)."""
        notes = []
        now = self.preset.name + (" (edited)" if self.params != self.preset.params else "")
        if chat.preset not in self.presets:
            broken = getattr(self.presets, "broken", {})  # load_presets' Presets
            why = "could not be read (its file is broken)" if chat.preset in broken else "is gone (no such file now)"
            notes.append(f"its preset {chat.preset} {why}; new answers use {now}")
        made = [m for m in chat.messages if m.role == "assistant" and m.preset == f"{chat.preset} (edited)"]
        if made and made[-1].params:
            try:
                values = f" ({params_summary(SamplingParams(**made[-1].params))})"
            except (InputError, TypeError):  # a record from another version: the words alone
                values = ""
            notes.append(f"its answers used {chat.preset} with f3 edits{values}, not restored: new answers use {now}")
        return notes

    async def _mount_messages(self, chat: Chat, messages: list[StoredMessage]) -> list[UserMessage | AssistantMessage]:
        """Show stored messages at the end of the transcript, each labelled with its branch, and
        (a chat opened, a branch switched to) say which turns the next answer will no longer see.

        Answers start lazy (a one-widget preview at the height the Markdown will have); the
        transcript realizes those on and near the screen, in the background: a long chat opens
        in a fraction of the time, never showing an empty answer."""
        widgets: list[UserMessage | AssistantMessage] = []
        for m in messages:
            if m.role == "assistant":
                model = display_name(chat.model)
                title = f"{model} · {m.preset}" if m.preset else model
                info = (
                    f"{finish_words(m.finish_reason)} · {plural(len(m.tokens or []), 'token')} · seed {m.seed}"
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
        if self.engine is not None and not self.generating:  # (still loading: engine_ready says it)
            await self._show_dropped()
        return widgets

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
            blocked = file_in_the_way(self.export_dir)  # "File exists" would not say what is in the way
            why = f"{blocked} is a file, not a folder; move that file away" if blocked else e.strerror or e
            self.notify(f"could not export to {self.export_dir}: {why}", severity="error", markup=False)
            return
        except TiankongError as e:  # one line from atomic_write_text or the store
            self.notify(str(e), severity="error", markup=False)
            return
        self.notify(f"{md}\n{jsonl}", title="exported", timeout=10, markup=False)

    def action_copy_last(self) -> None:
        answer = next((w for w in reversed(self.messages) if isinstance(w, AssistantMessage)), None)
        if answer is None:
            self.notify("no answer to copy yet")
            return
        answer.action_copy()
