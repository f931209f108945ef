"""Transcript messages: a user's message, and an assistant answer that streams as Markdown and,
once finished, can show its tokens (a probability heatmap, or a cursor to step through them).

Answers of a stored chat are mounted *lazily*. A Markdown widget is a tree of block widgets (each
paragraph, list item and code fence is one), so a 200-message chat mounted whole is well over a
thousand widgets, every one styled, laid out, and walked on every layout. A lazy answer is a
single widget that draws a `MarkdownPreview` of its text (the blocks, margins, bullets and word
wrapping of the Markdown widget, as one Rich renderable: the same height) and its info line; it
becomes the real thing (`realize`, then `swap_in`) when the transcript scrolls near it.
Everything else (tokens, inspect, heatmap, copy) works on a lazy answer as on any other.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from markdown_it import MarkdownIt
from rich.console import Group
from rich.text import Text
from textual import events
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.geometry import Region, Size
from textual.message import Message
from textual.strip import Strip
from textual.widget import AwaitMount, Widget
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownFence

from tiankong.tui.widgets.candidates import chosen_text, show_token
from tiankong.tui.widgets.streaming_text import KeptLines

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


# ---------------------------------------------------------------- a cheap stand-in for the Markdown widget

_PARSER: MarkdownIt | None = None
_BULLETS = ("• ", "▪ ", "‣ ", "⭑ ", "◦ ")  # Textual's Markdown.BULLETS, by depth of unordered items
_INLINE_STYLES = {"em_open": "italic", "strong_open": "bold", "s_open": "strike", "link_open": "underline"}
# Vertical margins (top, bottom) of Textual's Markdown blocks under this app's CSS (chat.tcss sets
# paragraphs to margin 0); adjacent margins collapse to the larger one, as Textual lays them out.
_HEADING_MARGINS = {"h1": (2, 1), "h2": (2, 1)}
_CODE_STYLE = "grey82"

# A block: (kind, payload, top margin, bottom margin); kinds: "text" (Text), "center" (Text),
# "code" (str), "list" ([(bullet, [blocks])]), "quote" ([blocks]), "table" ([[Text]]), "rule" (None).
_Block = tuple[str, Any, int, int]


def _inline(token: Any) -> Text:
    out = Text()
    styles: list[str] = []
    for child in token.children or ():
        kind = child.type
        style = " ".join(styles) or None
        if kind == "text":
            out.append(re.sub(r"\s+", " ", child.content), style)
        elif kind == "softbreak":
            out.append(" ", style)
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "code_inline":
            out.append(child.content, f"bold {style or ''}")
        elif kind == "image":
            out.append("🖼  " + (f"({child.attrs['alt']})" if child.attrs.get("alt") else ""), style)
        elif kind in _INLINE_STYLES:
            styles.append(_INLINE_STYLES[kind])
        elif kind.endswith("_close"):
            if styles:
                styles.pop()
        elif child.content:
            out.append(child.content, style)
    return out


def _parse_blocks(tokens: list[Any], i: int, depth: int, in_list: bool) -> tuple[list[_Block], int]:
    """The blocks from tokens[i] up to the token closing the enclosing block; (blocks, next index)."""
    blocks: list[_Block] = []
    while i < len(tokens):
        tok = tokens[i]
        kind = tok.type
        if kind.endswith("_close"):
            return blocks, i + 1
        if kind == "paragraph_open":
            blocks.append(("text", _inline(tokens[i + 1]), 0, 0))
            i += 3
        elif kind == "heading_open":
            text = _inline(tokens[i + 1])
            text.stylize("bold")
            top, bottom = _HEADING_MARGINS.get(tok.tag, (1, 1))
            blocks.append(("center" if tok.tag == "h1" else "text", text, top, bottom))
            i += 3
        elif kind in ("fence", "code_block"):
            blocks.append(("code", tok.content.rstrip(), 1, 1))
            i += 1
        elif kind in ("bullet_list_open", "ordered_list_open"):
            block, i = _parse_list(tokens, i, depth, in_list)
            blocks.append(block)
        elif kind == "blockquote_open":
            inner, i = _parse_blocks(tokens, i + 1, depth, in_list)
            blocks.append(("quote", inner, 1, 1))
        elif kind == "table_open":
            rows, i = _parse_table(tokens, i)
            if rows:
                blocks.append(("table", rows, 0, 1))
        elif kind == "hr":
            blocks.append(("rule", None, 0, 1))
            i += 1
        else:  # anything else Textual's Markdown draws nothing for
            i += 1
    return blocks, i


def _parse_list(tokens: list[Any], i: int, depth: int, in_list: bool) -> tuple[_Block, int]:
    """The list opening at tokens[i]: ("list", [(bullet, item blocks)], ...); (block, index after its close)."""
    ordered = tokens[i].type == "ordered_list_open"
    i += 1
    start = 1
    if ordered and i < len(tokens):
        try:
            start = int(tokens[i].info or 1)
        except ValueError:
            pass
    items: list[list[_Block]] = []
    while i < len(tokens) and tokens[i].type == "list_item_open":
        item, i = _parse_blocks(tokens, i + 1, depth + (not ordered), True)
        items.append(item)
    i += 1  # the list's close
    if ordered:
        size = max((len(f"{n}. ") for n in range(start, start + len(items))), default=3) + 1
        bullets = [f"{n}. ".rjust(size) for n in range(start, start + len(items))]
    else:
        bullets = [_BULLETS[depth % len(_BULLETS)]] * len(items)
    return ("list", list(zip(bullets, items, strict=True)), 0, 0 if in_list else 1), i


def _parse_table(tokens: list[Any], i: int) -> tuple[list[list[Text]], int]:
    """The table opening at tokens[i]: its rows of cell texts; (rows, index after its close)."""
    rows: list[list[Text]] = []
    i += 1
    while i < len(tokens) and tokens[i].type != "table_close":
        if tokens[i].type == "tr_open":
            rows.append([])
        elif tokens[i].type == "inline" and rows:
            rows[-1].append(_inline(tokens[i]))
        i += 1
    return rows, i + 1


def _fit(text: Text, width: int) -> Text:
    """`text` cut or padded to exactly `width` cells (one line)."""
    line = text.copy()
    line.truncate(width, overflow="ellipsis", pad=True)
    return line


_Memo = dict[Any, list[Text]]  # paragraphs' wrapped lines, by kind, text, styles and width


def _layout(
    blocks: list[_Block], console: Any, width: int, memo: _Memo | None = None, used: _Memo | None = None
) -> list[Text]:
    """The blocks as lines `width` cells wide, one under the other with collapsed margins (the
    first top and last bottom margins kept, as Textual does inside a container). A paragraph in
    `memo` is not wrapped again (a streaming answer's), and each paragraph's lines go into `used`
    (the next layout's memo: the paragraphs of this one, not every version of the last one)."""
    width = max(width, 1)
    out: list[Text] = []
    bottom: int | None = None
    for kind, payload, top, low in blocks:
        out.extend(Text() for _ in range(top if bottom is None else max(bottom, top)))
        bottom = low
        if kind in ("text", "center"):
            key = (kind, payload.plain, tuple(payload.spans), width)
            lines = memo.get(key) if memo is not None else None
            if lines is None:
                lines = list(payload.wrap(console, width, justify="center" if kind == "center" else "default"))
            if used is not None:
                used[key] = lines
            out.extend(lines)
        elif kind == "code":  # MarkdownFence: padding 1 2, no wrapping (it scrolls sideways)
            out.append(Text())
            out.extend(Text("  " + line, _CODE_STYLE) for line in payload.split("\n"))
            out.append(Text())
        elif kind == "list":  # each item: a bullet beside the item's blocks
            for bullet, item in payload:
                lines = _layout(item, console, width - len(bullet), memo, used) or [Text()]
                out.append(Text(bullet) + lines[0])
                out.extend(Text(" " * len(bullet)) + line for line in lines[1:])
        elif kind == "quote":  # MarkdownBlockQuote: a left border and padding 0 1
            out.extend(Text("▌ ", "dim") + line for line in _layout(payload, console, width - 3, memo, used))
        elif kind == "rule":  # MarkdownHorizontalRule: padding-top 1, a bottom border
            out.extend((Text(), Text("─" * width, "dim")))
        elif kind == "table":  # MarkdownTable: a grid of cells in a box, a line between rows
            columns = max(len(row) for row in payload)
            cell = max((width - 1) // columns - 1, 1)
            rule = ["─" * cell] * columns
            out.append(Text("┌" + "┬".join(rule) + "┐", "dim"))
            for n, row in enumerate(payload):
                if n:
                    out.append(Text("├" + "┼".join(rule) + "┤", "dim"))
                line = Text("│", "dim")
                for c in range(columns):
                    line += Text(" ") + _fit(row[c] if c < len(row) else Text(), cell - 1) + Text("│", "dim")
                out.append(line)
            out.append(Text("└" + "┴".join(rule) + "┘", "dim"))
    out.extend(Text() for _ in range(bottom or 0))
    return out


class MarkdownPreview:
    """Markdown drawn the way Textual's Markdown widget lays it out in an answer (same blocks,
    margins, bullets, indents and word wrapping, so the same height for what answers contain;
    tables only roughly) but as one Rich renderable: plain styles, no syntax highlighting, no
    widgets. A lazy answer shows this until it is realized."""

    def __init__(self, markdown: str) -> None:
        self.blocks = _blocks(markdown)
        self._cache: tuple[int, Text] | None = None

    def __rich_console__(self, console: Any, options: Any) -> Any:
        width = options.max_width
        if self._cache is None or self._cache[0] != width:
            lines = _layout(self.blocks, console, width)
            text = Text("\n").join(lines) if lines else None  # (no blocks: no lines, like the widget)
            if text is not None:
                text.no_wrap, text.overflow = True, "crop"
            self._cache = (width, text)
        if self._cache[1] is not None:
            yield self._cache[1]


def _tokens(markdown: str) -> list[Any]:
    global _PARSER
    if _PARSER is None:
        _PARSER = MarkdownIt("gfm-like")
    return _PARSER.parse(markdown)


def _blocks(markdown: str) -> list[_Block]:
    return _parse_blocks(_tokens(markdown), 0, 0, False)[0]


class _GrowingBlocks:
    """The blocks of a text that grows at its end, parsing again only its last top-level blocks.

    Text can change only the blocks it is added to: the last one, or (a "2" that becomes "2. b"
    after a blank line joins the list before it) the one before. So a stretch of text followed by
    two more top-level blocks is done: its blocks are kept, and later updates parse only what
    follows it. (Link reference definitions, which can style links anywhere, are the exception;
    the finished answer's Markdown widget parses the whole text.) Parsed whole, a 20 kB answer
    took ~7 ms a frame by its end."""

    def __init__(self) -> None:
        self.done: list[_Block] = []  # the blocks of the finished stretch
        self.done_text = ""  # its text

    def __call__(self, markdown: str) -> list[_Block]:
        if not markdown.startswith(self.done_text):
            self.done, self.done_text = [], ""
        tail = markdown[len(self.done_text) :]
        tokens = _tokens(tail)
        starts = [i for i, t in enumerate(tokens) if t.level == 0 and t.nesting >= 0 and t.map]
        if len(starts) > 2:  # all but the last two blocks are done
            cut = starts[-2]
            line = tokens[cut].map[0]
            at = 0
            for _ in range(line):
                at = tail.index("\n", at) + 1
            self.done = self.done + _parse_blocks(tokens[:cut], 0, 0, False)[0]
            self.done_text += tail[:at]
            return self.done + _parse_blocks(tokens, cut, 0, False)[0]
        return self.done + _parse_blocks(tokens, 0, 0, False)[0]


class StreamingMarkdown(KeptLines):
    """A streaming answer: MarkdownPreview's lines, drawn a line at a time. Each update parses the
    text's last blocks again (_GrowingBlocks) and lays it out (a paragraph wrapped before is not
    wrapped again), then redraws only the lines that changed; a new line changes the height, and
    the lines above it stand. A Static
    given a new MarkdownPreview every frame drew every line of the answer again, and the candidates
    panel's rows besides were most of a streaming chat's frame."""

    DEFAULT_CSS = "StreamingMarkdown { height: auto; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._blocks: list[_Block] = []
        self._lines: list[Text] = []
        self._width = 0  # the width self._lines were laid out for; 0 before the widget has one
        self._memo: _Memo = {}  # the last layout's paragraphs
        self._parse = _GrowingBlocks()

    def set_markdown(self, markdown: str) -> None:
        self._blocks = self._parse(markdown)
        if self._width:
            self._relayout()

    def _relayout(self) -> None:
        old, used = self._lines, {}
        lines = _layout(self._blocks, self.app.console, self._width, self._memo, used)
        self._memo = used
        first, same = 0, min(len(old), len(lines))
        while first < same and old[first] == lines[first]:
            first += 1
        self._lines = lines
        self._forget_from(first)
        if len(lines) != len(old):
            self.refresh(layout=True, repaint=False)  # the lines above stand (and see _size_updated)
        if first < max(len(old), len(lines)):
            self.refresh(Region(0, first, self._width, max(len(old), len(lines)) - first))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width != self._width:
            self._width, self._memo, self._strips = width, {}, {}
            self._lines = _layout(self._blocks, self.app.console, width, None, self._memo) if width else []
        return len(self._lines)

    def _size_updated(self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True) -> bool:
        # A Widget whose size changed is drawn again whole (its virtual size, a reactive, asks for
        # it too); here only a new height is common (a line came), and _relayout marked the lines
        # that changed.
        if size.width == self._size.width and size.height != self._size.height:
            self._size = size
            layout = False
        return super()._size_updated(size, virtual_size, container_size, layout)

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        if y >= len(self._lines):
            return Strip.blank(width, self._style)
        strip = self._strips.get(y)
        if strip is None:
            strip = self._strips[y] = self._draw(self._lines[y], width)
        return strip


# Regenerate, edit and branch keep the old message as a sibling; a focused message switches among them.
BRANCH_BINDINGS = [
    Binding(
        "ctrl+left,alt+left",
        "switch_branch(-1)",
        "◀ branch",
        show=False,
        tooltip="show the previous branch here (the answer before a regenerate, edit or branch)",
    ),
    Binding("ctrl+right,alt+right", "switch_branch(1)", "branch ▶", show=False, tooltip="show the next branch here"),
]


class SwitchBranch(Message):
    """Show the sibling `step` places from `widget`'s message (a UserMessage or AssistantMessage)."""

    def __init__(self, widget: Widget, step: int) -> None:
        super().__init__()
        self.widget, self.step = widget, step


def branch_label(siblings: list[int], message_id: int | None) -> str:
    """ "‹ 2/3 ›": which of the branches at this place is shown; "" when there is only one."""
    if len(siblings) < 2 or message_id not in siblings:
        return ""
    return f"‹ {siblings.index(message_id) + 1}/{len(siblings)} ›"


class Branched:
    """What a message in the transcript knows of its branches (mixed into both message widgets,
    which also add BRANCH_BINDINGS to their own)."""

    message_id: int | None
    branches: list[int]  # ids of the messages at this place in the chat's tree, itself included, oldest first

    def set_branches(self, siblings: list[int]) -> None:
        self.branches = list(siblings)
        self.border_subtitle = branch_label(self.branches, self.message_id)

    def action_switch_branch(self, step: int) -> None:
        self.post_message(SwitchBranch(self, step))  # type: ignore[attr-defined]


class UserMessage(Branched, Static, can_focus=True):
    """A user's message (or the chat's opening prompt). `c` copies it."""

    BINDINGS = [Binding("c", "copy", "copy")] + BRANCH_BINDINGS

    def __init__(self, content: str, message_id: int | None = None) -> None:
        super().__init__(Text(content), classes="message user")
        self.content = content
        self.message_id = message_id
        self.role = "user"  # "system" for a system message kept in a stored chat
        self.border_title = "you"
        self.branches: list[int] = []

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.content)
        self.notify(f"copied your message ({len(self.content)} characters)")


class CodeFence(MarkdownFence):
    """A code block; one whose fence names no language is drawn as plain text. Textual would guess
    the language, which runs every Pygments lexer over the code, and on first use imports every
    installed plugin's lexers (IPython's took seconds, the UI frozen). While answers streamed
    through Textual's Markdown stream that guess ran on every frame."""

    @classmethod
    def highlight(cls, code: str, language: str, ansi: bool = False, dark: bool = False) -> Content:
        return super().highlight(code, language or "text", ansi, dark)


class AnswerMarkdown(Markdown):
    """An answer's Markdown (code blocks through CodeFence)."""

    BLOCKS = {**Markdown.BLOCKS, "fence": CodeFence, "code_block": CodeFence}


class AssistantMessage(Branched, Vertical, can_focus=True):
    """An answer. While streaming: a MarkdownPreview of the text so far (start_stream). When
    finished: the Markdown widget, or its tokens (heatmap / inspect), switched with `set_view`.

    A lazy answer (`lazy=True`: a stored one, opened with its chat) has no child widgets: it draws
    itself, a `MarkdownPreview` of its text (or its heatmap) and its info line, at the height the
    widgets will have. `realize()` mounts the widgets (Markdown, tokens view, info) and swaps them
    in (`swap_in`); the transcript does both as the answer nears the screen, and inspecting it
    does it at once.
    """

    BINDINGS = [
        Binding("left,[", "move(-1)", "◀ token", show=True),
        Binding("right,]", "move(1)", "token ▶", show=True),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
        Binding("c", "copy", "copy"),
        Binding(
            "b",
            "branch",
            "branch here",
            tooltip="pick another candidate for the token at the cursor and "
            "continue the answer from it (what if the model had said that?)",
        ),
        Binding(
            "v",
            "vote_branch",
            "vote branch",
            show=False,
            tooltip="vote this branch better than the others here, at the token where they part",
        ),
    ] + BRANCH_BINDINGS
    COMPONENT_CLASSES: ClassVar[set[str]] = {"assistant-message--info"}  # a lazy answer's info line

    class TokenSelected(Message):
        """The inspect cursor moved to `index` of this answer."""

        def __init__(self, answer: AssistantMessage, index: int) -> None:
            super().__init__()
            self.answer, self.index = answer, index

    class BranchRequested(Message):
        """Continue this answer from another candidate for its token `index`."""

        def __init__(self, answer: AssistantMessage, index: int) -> None:
            super().__init__()
            self.answer, self.index = answer, index

    class BranchVote(Message):
        """This answer is better than its sibling branches."""

        def __init__(self, answer: AssistantMessage) -> None:
            super().__init__()
            self.answer = answer

    def __init__(
        self,
        content: str = "",
        tokens: list[dict[str, Any]] | None = None,
        *,
        title: str = "assistant",
        info: str = "",
        message_id: int | None = None,
        lazy: bool = False,
    ) -> None:
        super().__init__(classes="message assistant")
        self.content = content
        self.tokens: list[dict[str, Any]] = list(tokens or [])
        self.message_id = message_id
        self.border_title = title
        self._info = info
        self._stream: StreamingMarkdown | None = None  # what the answer streams into (start_stream)
        self.heatmap = False
        self.inspecting = False
        self.cursor = 0
        self.lazy = lazy  # drawing itself; False once its widgets are in
        self._widgets_added = False
        self._preview: MarkdownPreview | None = None
        self._lazy_height: tuple[Any, int] = (None, 0)
        self.parent_id: int | None = None  # the message it answers (set when it is generated)
        self.branches: list[int] = []
        self.forced_text = ""  # a branch: the text of its tokens up to and including the one picked in f5

    def action_branch(self) -> None:
        if self.tokens and not self.streaming:
            self.post_message(self.BranchRequested(self, min(self.cursor, len(self.tokens) - 1)))

    def action_vote_branch(self) -> None:
        self.post_message(self.BranchVote(self))

    def compose(self) -> ComposeResult:
        if not self.lazy:
            yield from self._widgets()

    def _widgets(self) -> list[Widget]:
        self._widgets_added = True
        view = Static(classes="answer-tokens")
        view.display = False
        stream = StreamingMarkdown(classes="answer-stream")
        stream.display = False
        info = Static(self._info, classes="answer-info")
        info.display = bool(self._info)
        return [AnswerMarkdown(self.content, classes="answer-md"), stream, view, info]

    # -- a lazy answer

    def render(self) -> RenderResult:
        if not self.lazy:
            return super().render()
        if self._show_tokens():
            body: Any = tokens_text(self.tokens, heatmap=self.heatmap, cursor=None)
        else:
            if self._preview is None:
                self._preview = MarkdownPreview(self.content)
            body = self._preview
        if not self._info:
            return body
        return Group(body, Text(self._info, self.get_component_rich_style("assistant-message--info", partial=True)))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if not self.lazy:
            return super().get_content_height(container, viewport, width)
        # What render() draws (a container's height would come from its children, and it has none).
        key = (width, self._show_tokens(), self.heatmap, self._info)
        if self._lazy_height[0] != key:
            self._lazy_height = (key, self._render().get_height(self.styles, width) if width else 0)
        return self._lazy_height[1]

    def realize(self) -> AwaitMount | None:
        """Mount the widgets, hidden: the answer still draws itself until `swap_in`. Returns what to
        await (they are mounted, and the Markdown's blocks too), or None when there is nothing to do."""
        if not self.lazy or self._widgets_added or not self.is_attached:
            return None
        widgets = self._widgets()
        for widget in widgets:
            widget.display = False
        return self.mount_all(widgets)

    def swap_in(self) -> None:
        """Show the widgets (mounted by `realize`) in place of the preview."""
        if self.lazy and self._widgets_added and self.is_attached:
            self._swap_in()

    def _materialize(self) -> None:
        """Swap the widgets in now (they finish mounting in the background)."""
        if self.lazy:
            if not self._widgets_added:
                self.mount_all(self._widgets())
            self._swap_in()

    def _swap_in(self) -> None:
        self.lazy = False
        self._preview = None
        self.query_one(".answer-info").display = bool(self._info)
        self._apply_view()
        self.refresh(layout=True)

    # -- streaming

    def start_stream(self) -> None:
        """Draw the answer as it streams in one StreamingMarkdown (MarkdownPreview's lines: the
        Markdown widget's layout, one widget) until `finish` hands it to the Markdown widget.
        Textual's Markdown stream parses the last block again and mounts new block widgets on every
        frame; in bench/tui_stream.py that cost the chat ~15 % of the model's speed."""
        self._stream = self.query_one(".answer-stream", StreamingMarkdown)
        self._stream.set_markdown(self.content)
        self.query_one(Markdown).display = False
        self._stream.display = True

    async def append(self, text: str, tokens: list[dict[str, Any]]) -> None:
        self.content += text
        self.tokens.extend(tokens)
        if self._stream is not None and text:
            self._stream.set_markdown(self.content)

    async def finish(self, text: str, info: str) -> None:
        """Stop streaming; show the final text (a stop string the stream showed is removed)."""
        self.content = text
        markdown = self.query_one(Markdown)
        if self._stream is not None or markdown.source != text:
            await markdown.update(text)
        if self._stream is not None:
            self._stream.display = False
            self._stream = None
            markdown.display = not self._show_tokens()
        self.set_info(info)

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def set_info(self, info: str) -> None:
        self._info = info
        if self.lazy:
            self.refresh(layout=True)
        else:
            widget = self.query_one(".answer-info", Static)
            widget.update(info)
            widget.display = bool(info)

    # -- token views

    def _show_tokens(self) -> bool:
        return bool(self.tokens) and not self.streaming and (self.heatmap or self.inspecting)

    def set_view(self, *, heatmap: bool | None = None, inspecting: bool | None = None) -> None:
        """Markdown, or the tokens (heatmap colours and/or the inspect cursor)."""
        if heatmap is not None:
            self.heatmap = heatmap
        if inspecting is not None:
            self.inspecting = inspecting
            self.set_class(inspecting, "-inspecting")
        if self.inspecting:
            self._materialize()  # the cursor lives in the tokens view
        self._apply_view()
        if self.inspecting:
            self.post_message(self.TokenSelected(self, self.cursor))
            if self._show_tokens():
                self.call_after_refresh(self._scroll_to_cursor)

    def _apply_view(self) -> None:
        show_tokens = self._show_tokens()
        if self.lazy:
            self.refresh(layout=True)
            return
        self.query_one(Markdown).display = not show_tokens
        view = self.query_one(".answer-tokens", Static)
        view.display = show_tokens
        if show_tokens:
            cursor = self.cursor if self.inspecting else None
            view.update(tokens_text(self.tokens, heatmap=self.heatmap, cursor=cursor))

    def _scroll_to_cursor(self, retry: bool = True) -> None:
        """Keep the cursor's line visible in the scrolling transcript around this answer."""
        view = self.query_one(".answer-tokens", Static)
        scroller = self.parent
        width = view.content_size.width
        if not width and retry:  # just swapped in, not laid out yet
            self.call_after_refresh(self._scroll_to_cursor, False)
            return
        if not isinstance(scroller, Widget) or not width or not self.tokens:
            return
        line = cursor_line(
            "".join(t["text"] for t in self.tokens),
            sum(len(t["text"]) for t in self.tokens[: self.cursor]),
            width,
            self.app.console,
        )
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
