"""The chats half of the store: chats and their messages, which form a tree of branches (regenerate
and edit add a sibling; the active branch is the most recently selected path), full-text search over
them, and their export as Markdown or JSON lines (each branch in files of its own: export_name).
Each answer keeps the model that wrote it and how many of the chat's oldest turns it no longer saw.

Apart from the votes half (store_votes.py): the two share only the connection (StoreBase) and never
write each other's tables. Store (store.py) joins them.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.rules_inline import newline as _newline

from tiankong.engine.chat import ROLES
from tiankong.engine.context import turn_starts
from tiankong.engine.errors import InputError
from tiankong.engine.model_names import stored_model
from tiankong.tui.store_base import StoreBase, StoreError, now
from tiankong.tui.store_records import (
    Chat,
    ChatMatch,
    ChatSummary,
    Message,
    _dumps,
    _message,
    _seed_in,
    _summary,
)


class ChatStore(StoreBase):
    """Chats and messages: the part of Store that the chat screen uses."""

    def create_chat(self, model: str, preset: str, system_prompt: str = "", title: str = "") -> int:
        t = now()
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO chats (title, model, preset, system_prompt, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (title, model, preset, system_prompt, t, t),
            )
            return int(cur.lastrowid)

    def list_chats(self, limit: int = 500) -> list[ChatSummary]:
        """Newest (most recently changed) first."""
        rows = self._read(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id) AS n "
            "FROM chats c ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
            (limit,),
        )
        return [_summary(r) for r in rows]

    def search_chats(self, query: str, limit: int = 500) -> list[ChatMatch]:
        """Chats with a message containing `query` (case-insensitive), newest first, each with its newest
        matching message as a one-line snippet.

        Uses the FTS5 trigram index (see _v4_message_search) for queries of three or more characters;
        shorter queries, and a sqlite3 without FTS5 (then only ASCII letters ignore case), use LIKE over
        every message."""
        q = " ".join(query.split())
        if not q:
            return []
        if len(q) >= 3 and self._read("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'"):
            phrase = q.replace('"', '""')  # one FTS5 phrase: q's trigrams in order, i.e. q as a substring
            cond, arg = "id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)", f'"{phrase}"'
        else:
            escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond, arg = "content LIKE ? ESCAPE '\\'", f"%{escaped}%"
        rows = self._read(
            "SELECT c.*, (SELECT COUNT(*) FROM messages x WHERE x.chat_id = c.id) AS n, m.id AS mid, m.content AS hit "
            f"FROM (SELECT chat_id, MAX(id) AS mid FROM messages WHERE {cond} GROUP BY chat_id) h "
            "JOIN chats c ON c.id = h.chat_id JOIN messages m ON m.id = h.mid "
            "ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
            (arg, limit),
        )
        return [ChatMatch(_summary(r), r["mid"], snippet(r["hit"], q)) for r in rows]

    def get_chat(self, chat_id: int) -> Chat:
        """The chat with its active branch (each message knows its siblings, the other branches there)."""
        with self._lock:  # one consistent snapshot of chat and messages
            rows = self._read("SELECT * FROM chats WHERE id = ?", (chat_id,))
            if not rows:
                raise StoreError(f"chat {chat_id} does not exist; list chats to pick one that does")
            msgs = self._read("SELECT * FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,))
        r = rows[0]
        children = _children(msgs)
        path = [_message(m) for m in _active_path(children)]
        for m in path:
            m.siblings = [c["id"] for c in children.get(m.parent_id, [])]
        return Chat(
            r["id"], r["title"], r["model"], r["preset"], r["system_prompt"], r["created_at"], r["updated_at"], path
        )

    def add_message(
        self,
        chat_id: int,
        role: str,
        content: str,
        *,
        preset: str | None = None,
        params: dict | None = None,
        seed: int | None = None,
        finish_reason: str | None = None,
        tokens: list[dict] | None = None,
        parent_id: int | None | str = "active",
        model: str | None = None,
        dropped: int | None = None,
    ) -> int:
        """Add a message after `parent_id` ("active": after the active branch's last message; None:
        a new first message) and make it the active branch. A parent that already has children gets
        one more: a sibling branch (regenerate, edit, a branch from another token).

        An answer keeps the model that wrote it (a model_key; None: the chat's model) and how many of
        the chat's oldest turns its prompt left out (`dropped`; None: not known)."""
        if role not in ROLES:
            raise InputError(f"message role {role!r} is unknown; use one of {', '.join(ROLES)}")
        t = now()
        with self._tx() as conn:
            self._touch(conn, chat_id, t)
            if role == "assistant" and model is None:
                model = conn.execute("SELECT model FROM chats WHERE id = ?", (chat_id,)).fetchone()[0]
            if parent_id == "active":
                cur = conn.execute(
                    "SELECT id, parent_id, selected_at FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,)
                )
                cur.row_factory = sqlite3.Row
                path = _active_path(_children(cur.fetchall()))
                parent_id = path[-1]["id"] if path else None
            elif parent_id is not None:
                row = conn.execute("SELECT chat_id FROM messages WHERE id = ?", (parent_id,)).fetchone()
                if row is None or row[0] != chat_id:
                    raise StoreError(f"message {parent_id} is not in chat {chat_id}; reload the chat")
                self._select(conn, parent_id, t)
            cur = conn.execute(
                "INSERT INTO messages (chat_id, role, content, preset, params, seed, finish_reason, tokens, "
                "created_at, parent_id, selected_at, model, dropped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    chat_id,
                    role,
                    content,
                    preset,
                    _dumps(params),
                    _seed_in(seed),
                    finish_reason,
                    _dumps(tokens),
                    t,
                    parent_id,
                    t,
                    model if role == "assistant" else None,
                    dropped if role == "assistant" else None,
                ),
            )
            return int(cur.lastrowid)

    def get_message(self, message_id: int) -> Message:
        """One message, with its siblings (the branches at its place, itself included)."""
        with self._lock:
            rows = self._read("SELECT * FROM messages WHERE id = ?", (message_id,))
            if not rows:
                raise StoreError(f"message {message_id} does not exist; it may have been deleted")
            sibs = self._read(
                "SELECT id FROM messages WHERE chat_id = ? AND parent_id IS ? ORDER BY id",
                (rows[0]["chat_id"], rows[0]["parent_id"]),
            )
        m = _message(rows[0])
        m.siblings = [r["id"] for r in sibs]
        return m

    def select_message(self, message_id: int) -> None:
        """Make the branch through this message the active one (below it, its own most recently
        selected branch)."""
        with self._tx() as conn:
            row = conn.execute("SELECT chat_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise StoreError(f"message {message_id} does not exist; it may have been deleted")
            t = now()
            self._touch(conn, row[0], t)
            self._select(conn, message_id, t)

    @staticmethod
    def _select(conn: sqlite3.Connection, message_id: int, t: str) -> None:
        """Mark the message and its ancestors selected at `t`, so the active path runs through it."""
        conn.execute(
            "WITH RECURSIVE up(id) AS (SELECT ? UNION ALL SELECT m.parent_id FROM messages m JOIN up "
            "ON m.id = up.id WHERE m.parent_id IS NOT NULL) "
            "UPDATE messages SET selected_at = ? WHERE id IN (SELECT id FROM up)",
            (message_id, t),
        )

    def update_message(
        self,
        message_id: int,
        content: str,
        *,
        preset: str | None = None,
        params: dict | None = None,
        seed: int | None = None,
        finish_reason: str | None = None,
        tokens: list[dict] | None = None,
    ) -> None:
        """Replace the content; optional fields given as None keep their stored value."""
        sets, args = ["content = ?"], [content]
        for name, value in (
            ("preset", preset),
            ("params", _dumps(params)),
            ("seed", _seed_in(seed)),
            ("finish_reason", finish_reason),
            ("tokens", _dumps(tokens)),
        ):
            if value is not None:
                sets.append(f"{name} = ?")
                args.append(value)
        with self._tx() as conn:
            row = conn.execute("SELECT chat_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise StoreError(f"message {message_id} does not exist; it may have been deleted")
            conn.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id = ?", (*args, message_id))
            self._touch(conn, row[0], now())

    def delete_messages_from(self, chat_id: int, message_id: int) -> None:
        """Delete that message and every message after it on its branches (its subtree)."""
        with self._tx() as conn:
            row = conn.execute("SELECT chat_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None or row[0] != chat_id:
                raise StoreError(f"message {message_id} is not in chat {chat_id}; reload the chat")
            conn.execute(
                "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL SELECT m.id FROM messages m JOIN down "
                "ON m.parent_id = down.id) DELETE FROM messages WHERE id IN (SELECT id FROM down)",
                (message_id,),
            )
            self._touch(conn, chat_id, now())

    def update_chat(
        self, chat_id: int, *, title: str | None = None, preset: str | None = None, system_prompt: str | None = None
    ) -> None:
        with self._tx() as conn:
            self._touch(conn, chat_id, now())
            for name, value in (("title", title), ("preset", preset), ("system_prompt", system_prompt)):
                if value is not None:
                    conn.execute(f"UPDATE chats SET {name} = ? WHERE id = ?", (value, chat_id))

    def delete_chat(self, chat_id: int) -> None:
        with self._tx() as conn:  # messages go with it (ON DELETE CASCADE)
            conn.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    @staticmethod
    def _touch(conn: sqlite3.Connection, chat_id: int, t: str) -> None:
        if conn.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (t, chat_id)).rowcount == 0:
            raise StoreError(f"chat {chat_id} does not exist; it may have been deleted")

    # -- exports

    def export_chat_markdown(self, chat_id: int) -> str:
        """The active branch as Markdown for reading: each turn numbered, each answer with what made it
        (its model where not the chat's, preset, seed, finish) and the turns it no longer saw (out of
        the context when it was written). Control characters (an escape sequence the model wrote)
        show as \\x1b and the like: a terminal that prints the file is not driven by them. A
        message's single line breaks are hard breaks, so a viewer shows its lines as the chat does
        (_as_typed); its code blocks are as written."""
        chat = self.get_chat(chat_id)
        out = [
            f"# {_visible(chat.title or f'Chat {chat.id}')}",
            "",
            f"- model: `{_visible(chat.model)}`",
            f"- preset: `{_visible(chat.preset)}`",
            f"- created: {chat.created_at}",
            "",
        ]
        if chat.system_prompt:
            out += ["**System**", "", _as_typed(chat.system_prompt), ""]
        turns = _turns(chat.messages)
        for m, turn in zip(chat.messages, turns, strict=True):
            head = f"**{m.role.capitalize()}**"
            if turn is not None:
                head += f" · turn {turn}"
            if m.role == "assistant":  # enough to reproduce the answer
                notes = [
                    f"model `{_visible(m.model)}`"
                    if m.model and stored_model(m.model) != stored_model(chat.model)
                    else "",
                    f"preset `{_visible(m.preset)}`" if m.preset else "",
                    f"seed {m.seed}" if m.seed is not None else "",
                    f"finish: {m.finish_reason}" if m.finish_reason else "",
                    _unseen(m.dropped),
                ]
                notes = [n for n in notes if n]
                if notes:
                    head += f" _({', '.join(notes)})_"
            out += [head, "", _as_typed(m.content), ""]
        return "\n".join(out)

    def export_chat_jsonl(self, chat_id: int) -> str:
        """One JSON object per message, text as stored (control characters too, escaped by JSON); the
        chat's system prompt, if any, comes first as a "system" line. "turn" numbers the turn a message
        starts (null for the others); an answer's "model" is the one that wrote it and its
        "dropped_turns" how many of the first turns it no longer saw (null: not known)."""
        chat = self.get_chat(chat_id)
        lines = []
        if chat.system_prompt:
            lines.append({"role": "system", "content": chat.system_prompt, **dict.fromkeys(_JSONL_FIELDS)})
        for m, turn in zip(chat.messages, _turns(chat.messages), strict=True):
            lines.append(
                {
                    "role": m.role,
                    "content": m.content,
                    "preset": m.preset,
                    "params": m.params,
                    "seed": m.seed,
                    "finish_reason": m.finish_reason,
                    "turn": turn,
                    "model": m.model,
                    "dropped_turns": m.dropped,
                }
            )
        return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


# A JSONL export line's keys after role and content (a system prompt's are all null).
_JSONL_FIELDS = ("preset", "params", "seed", "finish_reason", "turn", "model", "dropped_turns")
EXPORT_PREFIX = "tiankong-chat-"
_NAME_CHARS = 120  # a branch named by its forks longer than this is named by its last message


def export_name(chat: Chat) -> str:
    """The file name (without suffix) of an export of the chat's active branch: tiankong-chat-ID for
    the first branch (the oldest message at every fork), else -branch- and its place at each fork on
    the way, as the transcript labels it ("‹ 2/3 ›": 2), so each branch has files of its own and
    exporting a branch again replaces only its own. Continuing a branch keeps its name."""
    forks = [str(m.siblings.index(m.id) + 1) for m in chat.messages if len(m.siblings) > 1]
    name = f"{EXPORT_PREFIX}{chat.id}"
    if not forks or set(forks) == {"1"}:
        return name
    branch = f"{name}-branch-{'-'.join(forks)}"
    return branch if len(branch) <= _NAME_CHARS else f"{name}-branch-to-{chat.messages[-1].id}"


def _turns(messages: list[Message]) -> list[int | None]:
    """Each message's turn number (1-based) where it starts a turn, as engine/context.py counts the
    turns that go out of the context; None for the others."""
    starts = turn_starts([{"role": m.role} for m in messages])
    number = {at: n for n, at in enumerate(starts, 1)}
    return [number.get(i) for i in range(len(messages))]


def _unseen(dropped: int | None) -> str:
    """An answer's note on the turns it did not see."""
    if not dropped:
        return ""
    turns = "turn 1" if dropped == 1 else f"turns 1–{dropped}"
    return f"{turns} not seen (out of the context)"


# Control characters but line breaks and tabs (C0, DEL, C1): ESC starts a terminal escape sequence.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _as_typed(text: str) -> str:
    """A message for the Markdown export: _visible, with each soft line break (one newline inside a
    paragraph, which Markdown joins into one line) made a hard one by two spaces before it, the form
    every Markdown renderer knows. The chat shows a message's single newlines as line breaks
    (widgets/markdown_preview.py), and so does a viewer of the export now. Only those line ends
    change: code blocks (fenced or indented), HTML blocks and a code span's line breaks stay byte
    for byte as written, and a break the text already makes hard is left alone."""
    text = _visible(text)  # no carriage return is left: "\n" alone ends a line, as markdown-it counts
    soft = _soft_break_lines(text)
    if not soft:
        return text
    lines = text.split("\n")
    for at in soft:
        lines[at] += "  "
    return "\n".join(lines)


_BREAKS: MarkdownIt | None = None


def _soft_break_lines(text: str) -> list[int]:
    """The lines of `text` (0-based) that end in a soft line break, as the chat's parser reads it
    (gfm-like): for each paragraph or heading, where its softbreak tokens were found in its text."""
    global _BREAKS
    if _BREAKS is None:
        _BREAKS = MarkdownIt("gfm-like")
        _BREAKS.inline.ruler.at("newline", _newline_noted)
    found = []
    for token in _BREAKS.parse(text):
        if token.type != "inline" or token.map is None:
            continue
        line, seen = token.map[0], 0  # the block's first line, and how far its text is counted
        for child in token.children or ():  # an image's alt text (child.children) is no line of its own
            if child.type == "softbreak" and "pos" in child.meta:
                line += token.content.count("\n", seen, child.meta["pos"])
                seen = child.meta["pos"]
                found.append(line)
    return found


def _newline_noted(state: Any, silent: bool) -> bool:
    """markdown-it's newline rule, noting on each softbreak where in the block's text its newline is."""
    pos = state.pos
    if not _newline(state, silent):
        return False
    if not silent and state.tokens[-1].type == "softbreak":
        state.tokens[-1].meta["pos"] = pos
    return True


def _visible(text: str) -> str:
    """Text for the Markdown export: each control character (but a line break or a tab) as \\xNN,
    so a terminal that prints the file, or a viewer, shows it rather than acts on it."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def snippet(text: str, query: str, before: int = 30, width: int = 90) -> str:
    """`text` on one line, cut to about `width` characters around the first case-insensitive match of
    `query` (from the start when there is none), with "…" where it was cut."""
    line = " ".join(text.split())
    at = max(line.lower().find(query.lower()), 0)
    start = max(0, min(at - before, len(line) - width))
    end = start + width
    return ("…" if start > 0 else "") + line[start:end] + ("…" if end < len(line) else "")


def _children(rows: Iterable[sqlite3.Row]) -> dict[int | None, list[sqlite3.Row]]:
    """Message rows (in id order) grouped by parent id: each message's branches, oldest first."""
    children: dict[int | None, list[sqlite3.Row]] = {}
    for r in rows:
        children.setdefault(r["parent_id"], []).append(r)
    return children


def _active_path(children: dict[int | None, list[sqlite3.Row]]) -> list[sqlite3.Row]:
    """From the root down, the most recently selected child at each step (the newest on a tie)."""
    path: list[sqlite3.Row] = []
    parent: int | None = None
    while children.get(parent):
        best = max(children[parent], key=lambda r: (r["selected_at"] or "", r["id"]))
        path.append(best)
        parent = best["id"]
    return path
