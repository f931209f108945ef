"""The chats in the store, a part of ChatScreen (tui/screens/chat.py): a new chat, opening a past one
(its stored messages shown, lazily; a long one a chunk at a time from a worker, its end first; a
search's match scrolled to and marked), exporting it, copying the last answer, scrolling the transcript.

Apart from chat.py so that the screen's file holds its layout, state and Textual handlers; the
mixin uses that state (store, chat_id, transcript).
"""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Input, Static

from tiankong.engine.errors import InputError, TiankongError
from tiankong.engine.files import atomic_write_text
from tiankong.engine.model_names import display_name, stored_model
from tiankong.engine.sampling import SamplingParams
from tiankong.tui.screens.branch import forced_count
from tiankong.tui.screens.chat_list import ChatListScreen, Picked, quoted
from tiankong.tui.screens.chat_sending import NotAnswered
from tiankong.tui.store import Chat
from tiankong.tui.store import Message as StoredMessage
from tiankong.tui.store_base import file_in_the_way
from tiankong.tui.store_chats import export_name
from tiankong.tui.widgets.message import AssistantMessage, UserMessage
from tiankong.tui.widgets.status import finish_words, params_summary, plural

INTRO = (
    "Type below and press enter. While the answer streams, the candidates panel shows the tokens the "
    "model weighed at each step and what your preset made of them. Afterwards f5 steps through the "
    "answer token by token (why this word?) and f6 colours it by probability. f1 lists every key."
)

OPEN_CHUNK = 100  # a chat of more messages opens in a worker, this many at a time, the last ones first
CHUNK_PAUSE_S = 0.02  # between two chunks: the screen lays out and draws what came, and answers keys


def as_set(answer: StoredMessage) -> SamplingParams:
    """The settings a stored answer was made with, as they were set: a branch's record holds the max
    tokens its continuation had (the set value less the tokens it forced), which read as "max 996"
    where 1000 was set."""
    params = SamplingParams(**(answer.params or {}))
    forced = forced_count(answer.tokens)
    return params.replace(max_new_tokens=params.max_new_tokens + forced) if forced else params


class ChatHistory:
    """ChatScreen's chats: new, open, export (mixed into it; uses its state and widgets)."""

    # ------------------------------------------------------------------ chats

    async def action_new_chat(self) -> None:
        if self.generating:
            self.notify("still answering: esc stops it first", severity="warning")
            return
        if self.still_opening():
            return
        await self._clear()
        # The system prompt stays, from this chat or one opened (README, "Chats"): said, so that a
        # new chat is not answered under instructions no longer in view.
        system = self.query_one("#system", Input).value.strip()
        kept = f"\nkept the system prompt “{quoted(system)}” (clear the system field to drop it)" if system else ""
        self.notify("new chat" + kept, markup=False)

    def clear_notices(self) -> None:
        """Dismiss the notices that only inform, before a dialog opens: drawn over it (the top screen
        has them) they covered the chat list and the f3 editor for seconds. Warnings and errors stay."""
        notifications = getattr(self.app, "_notifications", None)  # (Textual's own; none in another version)
        unnotify = getattr(self.app, "_unnotify", None)
        if notifications is None or unnotify is None:
            return
        for notice in [n for n in notifications if n.severity == "information"]:
            unnotify(notice)

    def still_opening(self) -> bool:
        """Whether a long chat is still being opened (its earlier messages mounted in a worker): then
        the chat is not whole yet, and what needs it (answering, another chat, ctrl+t) is refused."""
        if self.opening:
            self.notify(
                f"still opening this chat ({plural(self.opening, 'message')}): a moment",
                severity="warning",
                markup=False,
            )
        return bool(self.opening)

    async def _clear(self) -> None:
        self._leave_inspect()
        self._end_edit()
        await self.transcript.remove_children()
        await self.transcript.mount(Static(Text(INTRO), id="intro"))
        self.chat_id = None
        self.dropped_turns = self.next_prompt = 0
        self.candidates.show(None)
        # The prompt, not the transcript that held a focused answer: typing goes into the box, and
        # no key meant for it (b, v) acts on an answer instead.
        self.query_one("#prompt", Input).focus()
        self._status()

    def action_open_chats(self) -> None:
        if self.generating:
            self.notify("still answering: esc stops it first", severity="warning")
            return
        if self.still_opening():
            return
        self.clear_notices()
        self.app.push_screen(ChatListScreen(self.store), self._open_picked)

    async def _open_picked(self, picked: Picked | None) -> None:
        if picked is not None:
            await self.open_chat(picked.chat_id, at=picked.message_id)
        elif self.chat_id is not None and self.chat_id not in {c.id for c in self._save(self.store.list_chats) or []}:
            await self._clear()  # the open chat was just deleted in the list

    async def open_chat(self, chat_id: int, at: int | None = None) -> None:
        """Show a stored chat, at its end, or at message `at` (a search's match: its branch is selected
        first, so that it is on screen). A chat of more than OPEN_CHUNK messages is mounted in a
        worker, a chunk at a time, the last ones first: the screen keeps drawing and answering keys,
        and the status line says "opening…" until the whole chat is there."""
        if at is not None:  # (a message gone meanwhile: the chat opens at its end)
            self._save(self.store.select_message, at)
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
        if len(chat.messages) > OPEN_CHUNK:
            self.opening = len(chat.messages)
            self._status()
            self.run_worker(self._open_long(chat, at), group="open", exclusive=True)
            return
        await self._mount_messages(chat, chat.messages)
        self._opened(chat, at)

    async def _open_long(self, chat: Chat, at: int | None) -> None:
        try:
            await self._mount_messages(chat, chat.messages, chunked=True)
        finally:
            self.opening = 0
        self._opened(chat, at)
        await self.send_queued()  # (typed while the model loaded, which it did meanwhile)

    def _opened(self, chat: Chat, at: int | None) -> None:
        """A chat's messages are all shown: the panel, the place in it, and what to know of it."""
        self._show_last_token()
        found = next((w for w in self.messages if at is not None and w.message_id == at), None)
        if found is None:
            self.transcript.scroll_end(animate=False)
        else:  # the match, at the top, marked until another chat is shown
            found.add_class("-found")
            self.call_after_refresh(self.transcript.scroll_to_widget, found, top=True, animate=False)
        note = f"opened “{chat.title or chat.id}”"
        # An old record holds the bundled model by path: stored_model names it as model_id does.
        models = {stored_model(m.model or chat.model) for m in chat.messages if m.role == "assistant"}
        others = sorted(display_name(m) for m in models - {stored_model(self.model_id)})
        if others:
            note += f" (written by {', '.join(others)}; new answers come from {self.model_name})"
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
                values = f" ({params_summary(as_set(made[-1]))})"
            except (InputError, TypeError):  # a record from another version: the words alone
                values = ""
            notes.append(f"its answers used {chat.preset} with f3 edits{values}, not restored: new answers use {now}")
        return notes

    async def _mount_messages(
        self, chat: Chat, messages: list[StoredMessage], chunked: bool = False
    ) -> list[UserMessage | AssistantMessage]:
        """Show stored messages at the end of the transcript, each labelled with its branch, a message
        of yours that another follows marked as not answered, and (a chat opened, a branch switched
        to) say which turns the next answer will no longer see.

        Answers start lazy (a one-widget preview at the height the Markdown will have); the
        transcript realizes those on and near the screen, in the background: a long chat opens
        in a fraction of the time, never showing an empty answer. `chunked` (from a worker): the
        last OPEN_CHUNK first, then each OPEN_CHUNK before them, with a pause between: laying out a
        1200-message chat at once froze the screen for seconds."""
        widgets = [self._stored_widget(chat, m) for m in messages]
        parts: list[Widget] = []
        for w, after in zip(widgets, [*widgets[1:], None], strict=True):
            parts.append(w)
            if isinstance(w, UserMessage) and w.role == "user" and isinstance(after, UserMessage):
                parts.append(NotAnswered("no answer is stored for it (the message after it was sent instead)"))
        if not chunked or len(parts) <= OPEN_CHUNK:
            await self.transcript.mount_all(parts)
        else:
            await self._mount_chunks(parts)
        for w in widgets:
            if isinstance(w, AssistantMessage):
                w.set_view(heatmap=self.heatmap)
        if self.engine is not None and not self.generating:  # (still loading: engine_ready says it)
            await self._show_dropped()
        return widgets

    async def _mount_chunks(self, parts: list[Widget]) -> None:
        """Mount `parts` at the transcript's end, the last OPEN_CHUNK first (what shows), then the
        earlier ones before them, saying how far it got. Each layout walks every widget mounted, so
        the chunks after the first are twice as large: fewer layouts in all."""
        first, size = len(parts) - OPEN_CHUNK, OPEN_CHUNK
        await self.transcript.mount_all(parts[first:])
        self.transcript.anchor()  # at the end while the rest comes in above
        while first > 0:
            self._status(f"opening… ({len(parts) - first} of {len(parts)} shown)")
            await asyncio.sleep(CHUNK_PAUSE_S)
            size = min(2 * size, 2 * OPEN_CHUNK)
            start = max(0, first - size)
            await self.transcript.mount_all(parts[start:first], before=parts[first])
            first = start

    def _stored_widget(self, chat: Chat, m: StoredMessage) -> UserMessage | AssistantMessage:
        """A stored message's widget (an answer lazy), labelled with its branch."""
        if m.role == "assistant":
            model = display_name(m.model or chat.model)  # its own: a chat may be continued with another
            title = f"{model} · {m.preset}" if m.preset else model
            info = (
                f"{finish_words(m.finish_reason)} · {plural(len(m.tokens or []), 'token')} · seed {m.seed}"
                if m.finish_reason
                else ""
            )
            w: UserMessage | AssistantMessage = AssistantMessage(
                m.content, m.tokens, title=title, info=info, message_id=m.id, lazy=True
            )
            w.parent_id, w.dropped, w.model = m.parent_id, m.dropped, m.model or chat.model
        else:
            w = UserMessage(m.content, m.id)
            if m.role == "system":
                w.role, w.border_title = "system", "system"
        w.set_branches(m.siblings)
        return w

    async def _show_stored_rest(self) -> None:
        """Show again the stored messages after the transcript's last one: an answer that a failed
        regenerate (ctrl+r) or branch (b) took off the screen. It is still stored, and still the
        chat's selected branch (a new answer becomes that only once it is stored)."""
        chat = self._save(self.store.get_chat, self.chat_id) if self.chat_id is not None else None
        if chat is None:
            return
        shown = [w.message_id for w in self.messages]
        if [m.id for m in chat.messages[: len(shown)]] == shown and len(chat.messages) > len(shown):
            await self._mount_messages(chat, chat.messages[len(shown) :])
            self._show_last_token()

    def action_scroll_transcript(self, where: str) -> None:
        t = self.transcript
        {"page_up": t.scroll_page_up, "page_down": t.scroll_page_down, "home": t.scroll_home, "end": t.scroll_end}[
            where
        ](animate=False)

    def action_export(self) -> None:
        """Write the branch shown to Markdown and JSONL in the export folder, in files of its own
        (store_chats.export_name), and say where, and what the files leave out."""
        if self.chat_id is None:
            self.notify("nothing to export yet: send a message first")
            return
        chat = self._save(self.store.get_chat, self.chat_id)
        if chat is None:
            return
        base = self.export_dir / export_name(chat)
        md, jsonl = base.with_suffix(".md"), base.with_suffix(".jsonl")
        replaced = md.exists() or jsonl.exists()
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
        notes = [str(md), str(jsonl)]
        if replaced:
            notes.append("(replaced the earlier export of this branch; other branches have files of their own)")
        if self.generating:  # the answer is stored when it ends: the store is what is exported
            notes.append("without the answer being written now: ctrl+s again once it has ended")
        self.notify(
            "\n".join(notes),
            title="exported",
            severity="warning" if self.generating else "information",
            timeout=10,
            markup=False,
        )

    def action_copy_last(self) -> None:
        answer = next((w for w in reversed(self.messages) if isinstance(w, AssistantMessage)), None)
        if answer is None:
            self.notify("no answer to copy yet")
            return
        answer.action_copy()
