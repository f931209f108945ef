"""Sending a message and starting its answer, a part of ChatScreen (tui/screens/chat.py).

The user's message is stored and shown; the prompt for the answer is rebuilt from the transcript
and fitted to the model's context (the oldest turns go, and a ContextNotice in the transcript says
so); then ChatScreen's generation worker streams the answer. Apart from chat.py so that the screen's
file holds its layout, state and Textual handlers; the mixin uses that state (store, engine, params).
"""

from __future__ import annotations

import threading
from typing import Any

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Input, Static

from tiankong.engine.chat import RAW_MODE_FIX
from tiankong.engine.context import answer_room
from tiankong.engine.engine import with_seeds
from tiankong.engine.errors import ChatTemplateError, ChatTemplateFault, TiankongError
from tiankong.tui.screens.branch import forced_token
from tiankong.tui.widgets.message import AssistantMessage, UserMessage
from tiankong.tui.widgets.prompt import PromptInput
from tiankong.tui.widgets.status import plural

TITLE_CHARS = 60  # a new chat is titled with the start of its first message
FULL = 0.75  # past this share of the prompt's room (the context less the answer's) the status line says how full


def chat_title(text: str) -> str:
    """A chat's title: its first message on one line, cut after a word (or, in text without spaces
    such as Chinese, at TITLE_CHARS) with "…" where it was cut."""
    line = " ".join(text.split())
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[:TITLE_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > TITLE_CHARS // 2 else cut) + "…"


class ContextNotice(Static):
    """A line in the transcript: from here on the model no longer sees the chat's first `dropped` turns."""

    def __init__(self, dropped: int, context: int) -> None:
        turns, fit, them = ("turn", "fits", "it") if dropped == 1 else (f"{dropped} turns", "fit", "them")
        super().__init__(
            Text(
                f"⋯ the first {turns} of this chat no longer {fit} the model's {context}-token "
                f"context: it does not see {them} now (ctrl+n starts a new chat)",
                style="dim italic",
            ),
            classes="context-notice",
        )
        self.dropped = dropped


class NotAnswered(Static):
    """A line in the transcript under a message that was not answered (too long for the context).
    It belongs to that message: editing the message or switching its branch takes it away too."""

    def __init__(self, why: str) -> None:
        super().__init__(Text(f"⚠ not answered: {why}", style="red"), classes="context-notice")


class ChatSending:
    """ChatScreen's sending and answering (mixed into it; uses its state and widgets)."""

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

    def _save_system(self) -> None:
        system = self.query_one("#system", Input).value.strip()
        if self.chat_id is not None and system != self._saved_system:
            self._save(self.store.update_chat, self.chat_id, system_prompt=system)
        self._saved_system = system

    def _can_generate(self) -> bool:
        if self.generating:
            self.notify("still answering: esc stops it", severity="warning")
            return False
        if self.still_opening():  # the chat is not whole yet: its prompt would be too
            return False
        if self.engine is None:
            self.notify(
                f"no model: {self.engine_error}" if self.engine_error else "the model is still loading",
                severity="error" if self.engine_error else "warning",
                markup=False,
            )
            return False
        return True

    async def send(self, text: str) -> None:
        """Store and show the user's message, then answer it."""
        if not text.strip():
            if text:  # spaces or line breaks alone: said, where it went nowhere without a word
                self.notify("the message is blank: nothing sent", severity="warning")
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
            self._end_edit(restore=False)  # the draft comes back once the edit is stored (below)
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
        # Sent: the box is emptied, or gets back the draft that an edit (ctrl+l) put aside.
        self.query_one("#prompt", PromptInput).text, self._draft = self._draft, ""
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

    def _fit(self, msgs: list[dict[str, str]], at_least: int | None = None) -> tuple[list[int], int]:
        """The next answer's prompt ids for these messages, and how many of the oldest turns it leaves
        out (at least `at_least`, by default the turns already out): they go when the chat and room
        for an answer no longer fit; an eighth of the context more at once, so that the next turns
        fit without dropping (and re-reading) again."""
        assert self.engine is not None
        ctx = self.engine.cfg.max_seq_len
        at_least = self.dropped_turns if at_least is None else at_least
        return self.engine.fit(msgs, self.params.max_new_tokens, at_least=at_least, slack=ctx // 8)

    async def _note_dropped(self, dropped: int) -> None:
        """A transcript line where more turns went out of the context than before."""
        assert self.engine is not None
        if dropped > self.dropped_turns:
            await self.transcript.mount(ContextNotice(dropped, self.engine.cfg.max_seq_len))
        self.dropped_turns = dropped

    def _dropped_through(self, widget: Widget | None) -> int:
        """The turns out of context by the transcript's notices up to `widget` (None: before the first
        message): the count the chat goes back to when what follows `widget` leaves it (_remove_from)."""
        children = list(self.transcript.children)
        end = children.index(widget) + 1 if widget is not None else 0
        return max((w.dropped for w in children[:end] if isinstance(w, ContextNotice)), default=0)

    async def _show_dropped(self) -> None:
        """What the next message will not see, and how full its prompt is, said in the transcript (a
        ContextNotice where more turns go than before) and the status line: after an answer, for a
        chat opened, a branch switched to. One count throughout: the next message's, with a message
        of the user's to come (an empty one: the least it can be), so that the last answer is among
        the turns that can go. A chat whose last message has no answer says so under it."""
        chat = self.conversation()
        unanswered = bool(chat) and chat[-1]["role"] == "user"
        msgs = self.next_conversation()
        refused = None
        try:
            ids, dropped = self._fit(msgs, self._next_at_least())
            self.next_prompt = len(ids)
        except TiankongError as e:  # the system prompt and the last message alone are too long
            dropped, refused = self.dropped_turns, self._how_to_fit(e, msgs)
            self.next_prompt = 0  # (not a prompt: said under the message instead)
        await self._note_dropped(dropped)
        if unanswered and not self.generating and not self._not_answered_last():
            await self.transcript.mount(NotAnswered(refused or "no answer is stored for it; ctrl+r answers it"))
        self._status()

    def next_conversation(self, text: str = "") -> list[dict[str, str]]:
        """The conversation the next message goes out with: the chat and `text` (the message box's) as
        a message of the user's; an empty one where the chat ends in an answer (the least the next
        prompt can be), none where it ends in a message not answered yet (ctrl+r answers that)."""
        msgs = self.conversation()
        if text.strip() or (msgs and msgs[-1]["role"] != "user"):
            msgs.append({"role": "user", "content": text if text.strip() else ""})
        return msgs

    def _next_at_least(self) -> int:
        """The fewest oldest turns the next prompt leaves out: those out now, and at least what the
        last answer's prompt left out, as right after it was written (a chat reopened counted afresh,
        and could say another number than it said live)."""
        last = next((w for w in reversed(self.messages) if isinstance(w, AssistantMessage)), None)
        return max(self.dropped_turns, (last.dropped or 0) if last is not None else 0)

    def _how_to_fit(self, error: TiankongError, msgs: list[dict[str, str]]) -> str:
        """Why `msgs` cannot be answered (`error`: ContextOverflow's words, or the chat template's
        refusal), with the keys that help: ctrl+l where the last message is to shorten, f3 where a
        lower max tokens would make it fit; for a refusal, the message refused and the way out."""
        assert self.engine is not None
        why = str(error).replace(RAW_MODE_FIX, "")  # generate's raw mode: the chat has none
        if isinstance(error, ChatTemplateError) and not isinstance(error, ChatTemplateFault):
            return why + self._refused_where(msgs)  # (a fault is the template's own: its words say so)
        ways = []
        if "the last message" in why or "the last turn" in why:
            ways.append("ctrl+l edits the last message")
        if self.params.max_new_tokens > 1 and "room kept for the answer" in why:
            try:  # the least room an answer can have: one token
                self.engine.fit(msgs, 1, at_least=self.dropped_turns)
                ways.append(f"a lower max tokens (f3; now {self.params.max_new_tokens}) leaves the prompt more room")
            except TiankongError:
                pass
        return why + (f": {', or '.join(ways)}" if ways else "")

    def _refused_where(self, msgs: list[dict[str, str]]) -> str:
        """Where in `msgs` the chat template's refusal is, and the way out. The template sees the
        whole chat each time, so a message it refuses stops every later one being answered too: it
        is found as the one message whose text, replaced, lets the chat through (none for a refusal
        of the chat's shape, such as two user messages in a row)."""
        assert self.engine is not None
        for i, message in enumerate(msgs):
            probe = [*msgs[:i], {**message, "content": "."}, *msgs[i + 1 :]]
            try:
                self.engine.encode(messages=probe)
            except ChatTemplateError:
                continue
            except TiankongError:  # refused before the template reads it (too long to encode whole): unknown
                break
            text = f'"{chat_title(message["content"])}"'
            if message["role"] == "system":  # (ctrl+n keeps the system prompt)
                return f" (the system prompt {text}): edit it (tab goes to it)"
            if i == len(msgs) - 1:
                return " (your last message): ctrl+l edits it"
            whose = "your earlier message" if message["role"] == "user" else "the earlier answer"
            return f" ({whose} {text}, sent again with each later one): ctrl+n starts a new chat"
        return ": ctrl+l edits your last message, or ctrl+n starts a new chat"

    def _context_state(self) -> tuple[str, str]:
        """For the status line, long and short: what the next message leaves out, and, once past FULL
        of the prompt's room (the context less the answer's room, where turns go), the prompt's size
        of the context in ctrl+t's terms ("prompt 349/512"; the next prompt, its message still empty),
        and where turns go. (It said "92% full", a share of that room, which read as a share of the
        context beside ctrl+t's.)"""
        assert self.engine is not None
        words, short = [], []
        if self.dropped_turns:
            turns = plural(self.dropped_turns, "turn")
            words.append(f"next message: {turns} out of context")
            short.append(f"{turns} out")
        ctx = self.engine.cfg.max_seq_len
        room = ctx - answer_room(self.params.max_new_tokens, ctx)
        if self.next_prompt > FULL * room and getattr(self.engine.cfg, "context_known", True):
            size = f"prompt {self.next_prompt}/{ctx}"
            words.append(f"{size} · old turns go past {room}")
            short.append(size)
        return " · ".join(words), " · ".join(short)

    def _not_answered_last(self) -> list[NotAnswered]:
        """The "not answered" lines under the transcript's last message (they are about it)."""
        children = list(self.transcript.children)
        last = max((i for i, w in enumerate(children) if isinstance(w, (UserMessage, AssistantMessage))), default=-1)
        return [w for w in children[last + 1 :] if isinstance(w, NotAnswered)]

    def _no_room_to_branch(self, answer: AssistantMessage, index: int) -> str | None:
        """Why `b` cannot continue `answer` from its token `index`, or None: the prompt before the answer,
        its tokens up to there and the one picked leave no room for a token more (an answer that
        filled the context, at its last tokens). The engine would refuse the prompt in words meant
        for its API, after the old answer had left the screen."""
        assert self.engine is not None
        at = self.messages.index(answer)
        msgs = self.conversation()
        msgs = msgs[: len(msgs) - (len(self.messages) - at)]  # up to the user's message
        # The prompt _answer will build once the answer leaves the transcript, with the turns out as
        # they are then: the count the next message would go with drops more (the last answer among
        # them), and left room here for a branch the engine then refused.
        try:
            prompt = len(self._fit(msgs, self._dropped_through(self.messages[at - 1] if at else None))[0])
        except TiankongError:  # the message alone is too long: _answer says so
            return None
        ctx = self.engine.cfg.max_seq_len
        if prompt + index + 1 < ctx:
            return None
        return (
            f"no room to continue from here: the context is full (a {prompt}-token prompt and "
            f"{index + 1} tokens of the answer fill the {ctx}-token context); pick an earlier token"
        )

    async def _answer(self, branch: tuple[list[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        """Start answering the transcript as it stands. branch: (the old answer's tokens before the
        branch point, the candidate picked there): the answer starts with those and continues."""
        self._save_system()
        self._leave_inspect()
        await self.transcript.remove_children(self._not_answered_last())  # answered again: said again if need be
        try:
            ids, dropped = self._fit(self.conversation())
        except TiankongError as e:  # the last message alone is too long: said where it stands, too
            why = self._how_to_fit(e, self.conversation())
            self.notify(why, severity="error", markup=False)
            await self.transcript.mount(NotAnswered(why))
            self.transcript.scroll_end(animate=False)
            return
        await self._note_dropped(dropped)
        params = with_seeds([self.params])[0]  # fill the seed now, so it is stored and repeatable
        edited = " (edited)" if self.params != self.preset.params else ""
        answer = AssistantMessage(title=f"{self.model_name} · {self.preset.name}{edited}")
        answer.parent_id, answer.dropped, answer.model = self._last_id(), dropped, self.model_id
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
        self._cancel = threading.Event()
        if self._stop_asked:  # ctrl+c straight after enter: the answer stops at once, as it would streaming
            self._cancel.set()
        self.generating = True  # after _cancel: its watcher asks esc_means, which wants both
        self._status()
        self._generate(ids, params, self.preset.name + edited, answer, self._cancel)  # stored as shown
