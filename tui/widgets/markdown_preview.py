"""A cheap stand-in for Textual's Markdown widget: Markdown parsed into blocks and laid out as lines
the way the widget lays them out in an answer, drawn as one Rich renderable (MarkdownPreview, what a
lazy answer shows) or a line at a time as the text grows (StreamingMarkdown, what a streaming answer
shows).

Apart from the message widgets (message.py) because it is a small Markdown renderer of its own
(parser, layout and the incremental parse of a growing text), read and tested on its own.
"""

from __future__ import annotations

import re
from typing import Any

from markdown_it import MarkdownIt
from rich.text import Text
from textual.geometry import Region, Size
from textual.strip import Strip

from tiankong.tui.widgets.streaming_text import KeptLines

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


def _hard_breaks(state: Any) -> None:
    """A core rule: each soft line break (one newline inside a paragraph) becomes a hard one. A
    model's single line breaks are its lines (a poem, an address, steps one to a line); Markdown
    would join them into one paragraph, while f5, ctrl+t and the exports keep them. Code blocks
    keep their lines anyway; only inline text has soft breaks."""
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type, child.tag = "hardbreak", "br"


def answer_parser() -> MarkdownIt:
    """The parser of every answer's Markdown: this preview's and the Markdown widget's
    (AnswerMarkdown's parser_factory), so that the two lay out the same lines. One shared parser:
    parsing keeps no state in it."""
    global _PARSER
    if _PARSER is None:
        _PARSER = MarkdownIt("gfm-like")
        _PARSER.core.ruler.push("hard_breaks", _hard_breaks)
    return _PARSER


def _tokens(markdown: str) -> list[Any]:
    return answer_parser().parse(markdown)


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
