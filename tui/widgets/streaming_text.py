"""Plain text that grows at its end, as an answer streams in: the compare screen's columns.

A `Static` holding a whole answer wraps all of it again on every update, draws every line of it
again and lays the screen out again (its height changed). The compare screen's four columns did
that 15 times a second, and the UI thread's drawing took a third of the model's speed on two cores
(bench/tui_stream.py --compare). This widget keeps the answer's wrapped lines and, on an update,
wraps again only from the line where the text changed and redraws only the lines that did; Textual's line API and
its per-line cache keep the others. Its height is set by its CSS (the screen is not laid out again
as it grows) except where that is `auto` (the stacked columns, whose container scrolls).

Following the stream scrolls by a third of the view at a time, not a line at a time: every scroll
redraws the whole column, and a line at a time is a whole-column redraw in most frames.

Lines break where Rich's `divide_line` puts them (kinsoku's rules included, tui/widgets/kinsoku.py),
as a Static's Content wraps. Tabs show as four spaces, and the control characters controls.py
keeps off the screen are left out of what is drawn and copied.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

import rich.text
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Offset, Region, Size
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip
from textual.widget import Widget

from tiankong.tui.controls import UNDRAWN

# Never drawn (controls.py), and a tab as four spaces: the column wraps the text it draws.
_HIDDEN: dict[int, str | None] = {**UNDRAWN, 0x09: "    "}


class KeptLines(Widget):
    """A line-API widget that keeps its drawn lines by index (`_strips`). Its style is read once a
    drawing pass, not once a line (working it out, its ancestors' backgrounds included, took most
    of a frame's time), and the kept lines are dropped when it changes (drawn in the old colours)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._strips: dict[int, Strip] = {}  # drawn lines, by line index
        self._style = Style()  # self.rich_style as of the last drawing pass

    def render_lines(self, crop: Region) -> list[Strip]:
        style = self.rich_style
        if style != self._style:
            self._style, self._strips = style, {}
        return super().render_lines(crop)

    def _forget_from(self, first: int) -> None:
        """Lines from `first` on changed: they are drawn again."""
        self._strips = {i: strip for i, strip in self._strips.items() if i < first}

    def _draw(self, line: rich.text.Text, width: int) -> Strip:
        """`line` over the widget's style, cut or padded to `width` cells, in as few segments as a
        Static draws it."""
        # Text.render leaves the text's own style to its caller when nothing is stylized
        segments = Segment.apply_style(line.render(self.app.console), self._style)
        return Strip(segments, line.cell_len).crop_extend(0, width, self._style).simplify()


class StreamingText(KeptLines, ScrollView, can_focus=True):
    """Plain text (never markup), wrapped to the widget's width and drawn a line at a time. Focusable,
    as the scrolling container it replaces was: Tab reaches it, and the keys scroll it."""

    ALLOW_SELECT = True
    DEFAULT_CSS = """
    StreamingText {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
    }
    """

    def __init__(self, *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self._text = ""  # as shown: tabs expanded, control characters out
        # One entry per wrapped line: (offset of its first character in the text, its end offset
        # without the trailing whitespace the break swallows).
        self._lines: list[tuple[int, int]] = []
        self._width = 0  # the width self._lines were wrapped for; 0 before the widget has a size
        self._floor = 0  # the virtual height while following: room below the text to stream into
        self._follow = True  # a stream, which the view follows; False: a whole text, shown from its top

    @property
    def text(self) -> str:
        """The text as shown."""
        return self._text

    def set_text(self, text: str, follow: bool = True) -> None:
        """Show `text`, wrapping and drawing again only the lines that changed; a widget scrolled
        to its end follows. `follow=False`: the whole text, not a stream (an answer read from a file,
        or one that has finished): it shows from its top, with no room kept below it to stream into."""
        text = text.translate(_HIDDEN)
        self._follow = follow
        if text == self._text:
            if not follow:
                self._to_top()
            return
        old = self._text
        same = _common_prefix(old, text)
        if not same:
            self._floor = 0  # a new text (a new round), not more of the old one
        self._text = text
        if not self._width:
            return  # wrapped once the widget has a width (on_resize)
        # A new text (a new round) starts at its top and follows, wherever the last one was scrolled to.
        following = not same or self.scroll_y >= self.max_scroll_y
        if not same and self.scroll_y:
            self.scroll_to(y=0, animate=False, immediate=True)
        old_count = len(self._lines)
        first = self._rewrap(same)
        changed = max(old_count, len(self._lines)) - first
        if not follow:
            self._to_top()
        elif not self._resize(following) and changed:  # a scroll or a new width redraws every line anyway
            self.refresh_lines(first, changed)

    def _to_top(self) -> None:
        """A whole text: its first lines in view, the virtual height its own (no room to stream into)."""
        self._floor = 0
        if self._width:
            self._resize(following=False)
        self.scroll_to(y=0, animate=False, immediate=True)
        self.refresh()

    # ---------------------------------------------------------------- wrapping and size

    def _wrap_width(self) -> int:
        return self.scrollable_content_region.width

    def _rewrap(self, same: int) -> int:
        """Wrap the text again where it changed: the first `same` characters are as they were.
        -> the index of the first line that differs from before.

        Wrapping from a line's start breaks the rest as wrapping from its paragraph's start does
        (a line starts at a word, or where a long word was folded), so it starts one line before
        the first changed character's: a word that grew may move that line's end."""
        old = self._lines
        at = bisect.bisect_right(old, same, key=lambda line: line[0]) - 1  # the line `same` falls in
        keep = max(0, at - 1)
        start = old[keep][0] if old else 0
        lines = old[:keep]
        text, width = self._text, self._width
        while True:
            end = text.find("\n", start)
            lines += _wrap(text, start, len(text) if end < 0 else end, width)
            if end < 0:
                break
            start = end + 1
        first = keep
        while first < min(len(old), len(lines)) and old[first] == lines[first] and lines[first][1] <= same:
            first += 1
        self._lines = lines
        self._forget_from(first)
        return first

    def _auto_height(self) -> bool:
        height = self.styles.height
        return height is not None and height.is_auto

    def _resize(self, following: bool) -> bool:
        """Set the virtual size to the lines (and, following the stream, the room below them),
        without laying the screen out unless the height is the line count or a scrollbar comes or
        goes. -> whether every line is drawn again (it scrolled, or a scrollbar changed the width)."""
        count, view = len(self._lines), self.scrollable_content_region.height
        auto = self._auto_height()
        scroll_to = None
        if following and not auto and view and count > self.scroll_y + view:
            scroll_to = count - view + max(1, view // 3)  # the last line a third of the view up
            self._floor = scroll_to + view
        size = Size(self._width, count if auto else max(count, self._floor))
        if size != self.virtual_size:
            bar = self.show_vertical_scrollbar
            self.set_reactive(Widget.virtual_size, size)
            self._scroll_update(size)
            if auto or bar != self.show_vertical_scrollbar:
                self.refresh(layout=True)
            if self._wrap_width() != self._width:  # the scrollbar came or went
                self._rewrap_all(following)
                return True
        if scroll_to is None:
            return False
        self.scroll_to(y=scroll_to, animate=False, immediate=True)
        return True

    def on_resize(self) -> None:
        if self._wrap_width() != self._width:
            self._rewrap_all(following=self._follow and self.scroll_y >= self.max_scroll_y)

    def _rewrap_all(self, following: bool) -> None:
        """Wrap all of the text again at the widget's width, and draw it again."""
        self._width = self._wrap_width()
        self._lines, self._strips = [], {}
        if self._width:
            self._rewrap(0)
            self._resize(following)
        self.refresh()

    # ---------------------------------------------------------------- drawing and selection

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index, width, style = scroll_y + y, self.scrollable_content_region.width, self._style
        if index >= len(self._lines):
            return Strip.blank(width, style)
        selection = self.text_selection
        span = selection.get_span(index) if selection is not None else None
        strip = self._strips.get(index) if span is None else None
        if strip is None:
            start, end = self._lines[index]
            line = rich.text.Text(self._text[start:end], no_wrap=True)  # over the widget's style (_draw)
            if span is not None:
                lo, hi = span
                selected = self.screen.get_component_rich_style("screen--selection")
                line.stylize(selected, lo, len(line) if hi == -1 else hi)
            strip = self._draw(line, width)
            if span is None:
                self._strips[index] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """The text under the selection, as it is (the wrapping's breaks are not in it)."""
        if not self._lines:
            return None
        return self._text[self._offset(selection.start, 0) : self._offset(selection.end, len(self._text))], "\n"

    def _offset(self, at: Offset | None, default: int) -> int:
        """The text offset of (column, wrapped line) `at`."""
        if at is None:
            return default
        if at.y >= len(self._lines):
            return len(self._text)
        start, end = self._lines[max(0, at.y)]
        return min(start + max(0, at.x), end)

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()


def _common_prefix(a: str, b: str) -> int:
    """How many leading characters a and b share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


def _wrap(text: str, start: int, end: int, width: int) -> list[tuple[int, int]]:
    """The lines of paragraph text[start:end] at `width` cells: (start, end) offsets, each end
    before the whitespace its break swallows. An empty paragraph is one empty line."""
    para = text[start:end]
    breaks = [0, *rich.text.divide_line(para, width, fold=True), len(para)]
    lines = []
    for a, b in itertools.pairwise(breaks):
        if b > a or not lines:
            lines.append((start + a, start + a + len(para[a:b].rstrip())))
    return lines


__all__ = ["KeptLines", "StreamingText"]
