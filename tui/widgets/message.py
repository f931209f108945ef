"""Transcript messages: a user's message, and an assistant answer that streams as Markdown and,
once finished, can show its tokens (a probability heatmap, or a cursor to step through them).
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.geometry import Region
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

from tiankong.tui.widgets.candidates import chosen_text, show_token

# Heatmap buckets of the chosen token's model probability: (upper bound, background, legend label).
HEAT = (
    (0.1, "#8b1c1c", "<10%"),
    (0.3, "#9a4a12", "<30%"),
    (0.6, "#7c6a0a", "<60%"),
    (0.9, "#3f6212", "<90%"),
    (2.0, "#1f5132", "≥90%"),
)
_BOUNDARY = ("", "on #2a2f3a")  # alternating backgrounds that make token boundaries visible


def heat_style(p: float) -> str:
    for hi, colour, _ in HEAT:
        if p < hi:
            return f"on {colour}"
    return f"on {HEAT[-1][1]}"


def heat_legend() -> Text:
    out = Text("model p of each token: ", style="dim")
    for _, colour, label in HEAT:
        out.append(f" {label} ", style=f"on {colour}")
        out.append(" ")
    return out


def tokens_text(tokens: list[dict[str, Any]], *, heatmap: bool, cursor: int | None) -> Text:
    """The answer as rich Text, one span per token, styled by heatmap bucket or boundary parity;
    the cursor token reversed (tokens that add no text, like EOS, show their name there)."""
    out = Text()
    for i, tok in enumerate(tokens):
        text = tok["text"]
        style = heat_style(math.exp(tok["logprob"])) if heatmap else _BOUNDARY[i % 2]
        if i == cursor:
            if not text.strip():
                text = text + f"[{show_token(chosen_text(tok))}]"
            style = "bold reverse"
        out.append(text, style=style or None)
    return out


def cursor_line(text: str, offset: int, width: int, console: Any) -> int:
    """Which wrapped line (of `text` drawn `width` cells wide) holds character `offset`."""
    line = pos = 0
    for para in text.split("\n"):
        chunks = Text(para).wrap(console, width) or [Text()]
        if offset <= pos + len(para):
            rel = offset - pos
            for chunk in chunks[:-1]:
                if rel < len(chunk.plain):
                    break
                rel -= len(chunk.plain)
                line += 1
            return line
        line += len(chunks)
        pos += len(para) + 1
    return max(line - 1, 0)


class UserMessage(Static, can_focus=True):
    """A user's message (or the chat's opening prompt). `c` copies it."""

    BINDINGS = [Binding("c", "copy", "copy")]

    def __init__(self, content: str, message_id: int | None = None) -> None:
        super().__init__(Text(content), classes="message user")
        self.content = content
        self.message_id = message_id
        self.role = "user"  # "system" for a system message kept in a stored chat
        self.border_title = "you"

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.content)
        self.notify(f"copied your message ({len(self.content)} characters)")


class AssistantMessage(Vertical, can_focus=True):
    """An answer. While streaming: Markdown fed through a MarkdownStream. When finished: the same
    Markdown, or its tokens (heatmap / inspect), switched with `set_view`."""

    BINDINGS = [
        Binding("left,[", "move(-1)", "◀ token", show=True),
        Binding("right,]", "move(1)", "token ▶", show=True),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
        Binding("c", "copy", "copy"),
    ]

    class TokenSelected(Message):
        """The inspect cursor moved to `index` of this answer."""

        def __init__(self, answer: AssistantMessage, index: int) -> None:
            super().__init__()
            self.answer, self.index = answer, index

    def __init__(self, content: str = "", tokens: list[dict[str, Any]] | None = None, *,
                 title: str = "assistant", info: str = "", message_id: int | None = None) -> None:
        super().__init__(classes="message assistant")
        self.content = content
        self.tokens: list[dict[str, Any]] = list(tokens or [])
        self.message_id = message_id
        self.border_title = title
        self._info = info
        self._stream: MarkdownStream | None = None
        self.heatmap = False
        self.inspecting = False
        self.cursor = 0

    def compose(self) -> ComposeResult:
        yield Markdown(self.content, classes="answer-md")
        yield Static(classes="answer-tokens")
        yield Static(self._info, classes="answer-info")

    def on_mount(self) -> None:
        self.query_one(".answer-tokens").display = False
        self.query_one(".answer-info").display = bool(self._info)

    # -- streaming

    def start_stream(self) -> None:
        self._stream = Markdown.get_stream(self.query_one(Markdown))

    async def append(self, text: str, tokens: list[dict[str, Any]]) -> None:
        self.content += text
        self.tokens.extend(tokens)
        if self._stream is not None and text:
            await self._stream.write(text)

    async def finish(self, text: str, info: str) -> None:
        """Stop streaming; show the final text (a stop string the stream showed is removed)."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if text != self.content:
            self.content = text
            await self.query_one(Markdown).update(text)
        self.set_info(info)

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def set_info(self, info: str) -> None:
        self._info = info
        widget = self.query_one(".answer-info", Static)
        widget.update(info)
        widget.display = bool(info)

    # -- token views

    def set_view(self, *, heatmap: bool | None = None, inspecting: bool | None = None) -> None:
        """Markdown, or the tokens (heatmap colours and/or the inspect cursor)."""
        if heatmap is not None:
            self.heatmap = heatmap
        if inspecting is not None:
            self.inspecting = inspecting
            self.set_class(inspecting, "-inspecting")
        show_tokens = bool(self.tokens) and not self.streaming and (self.heatmap or self.inspecting)
        self.query_one(Markdown).display = not show_tokens
        view = self.query_one(".answer-tokens", Static)
        view.display = show_tokens
        if show_tokens:
            cursor = self.cursor if self.inspecting else None
            view.update(tokens_text(self.tokens, heatmap=self.heatmap, cursor=cursor))
        if self.inspecting:
            self.post_message(self.TokenSelected(self, self.cursor))
            if show_tokens:
                self.call_after_refresh(self._scroll_to_cursor)

    def _scroll_to_cursor(self) -> None:
        """Keep the cursor's line visible in the scrolling transcript around this answer."""
        view = self.query_one(".answer-tokens", Static)
        scroller = self.parent
        width = view.content_size.width
        if not isinstance(scroller, Widget) or not width or not self.tokens:
            return
        line = cursor_line("".join(t["text"] for t in self.tokens),
                           sum(len(t["text"]) for t in self.tokens[:self.cursor]), width, self.app.console)
        y = view.region.y - scroller.region.y + int(scroller.scroll_y) + line
        scroller.scroll_to_region(Region(0, max(y - 1, 0), 1, 3), animate=False, immediate=True)

    def action_move(self, step: int) -> None:
        self.action_jump(self.cursor + step)

    def action_jump(self, index: int) -> None:
        if not self.tokens:
            return
        if index < 0:
            index += len(self.tokens)
        self.cursor = min(max(index, 0), len(self.tokens) - 1)
        if not self.inspecting:
            self.set_view(inspecting=True)
        else:
            self.set_view()

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.content)
        self.notify(f"copied the answer ({len(self.content)} characters)")

    def on_click(self, event: events.Click) -> None:
        self.focus()
