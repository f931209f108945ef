"""The playground's prompt line: Textual's Input, sent with ctrl+j as with enter, and taking a
pasted text whole.

ctrl+j: a line typed while the app starts (before it puts the terminal in raw mode) reaches it with
its Enter turned into a newline by the terminal, which Textual reads as ctrl+j; a plain Input would
keep the text and drop the Enter, so the first message of `... && tiankong chat`, typed ahead,
never went out.

Pasting: Input keeps only a paste's first line, so a pasted paragraph or code block lost the rest
without a word. Here each line break of a paste is shown as NEWLINE (one cell wide, so the cursor
arithmetic of a one-line Input holds) and the text given out (`text`, `Submitted.value`) has line
feeds again.

`install_paste_filter()` keeps escape characters inside a bracketed paste from acting as keys:
Textual's parser reads an ESC in the middle of a paste as the start of a key sequence, so a
pasted `ESC ] 0 ; ... BEL` opened the votes screen and a pasted `ESC [ 1 m` sent the message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from textual._xterm_parser import XTermParser
from textual.binding import Binding
from textual.widgets import Input

NEWLINE = "\u2424"  # ␤ SYMBOL FOR NEWLINE: a line break in the prompt line
_BREAKS = re.compile(r"\r\n|\r|\n")


class PromptInput(Input):
    """Input that submits on ctrl+j as on enter and keeps a pasted text's line breaks."""

    BINDINGS = [Binding("ctrl+j", "submit", "send", show=False)]

    @property
    def text(self) -> str:
        """The message as typed and pasted, line breaks included."""
        return self.value.replace(NEWLINE, "\n")

    @text.setter
    def text(self, text: str) -> None:
        self.value = _BREAKS.sub(NEWLINE, text)
        self.cursor_position = len(self.value)

    def _on_paste(self, event: Any) -> None:
        event.prevent_default()  # Input's own handler would insert the first line again
        if event.text:
            pasted = _BREAKS.sub(NEWLINE, event.text)
            if self.selection.is_empty:
                self.insert_text_at_cursor(pasted)
            else:
                self.replace(pasted, *self.selection)
        event.stop()

    async def action_submit(self) -> None:
        # Input's own, with the line breaks given back (no validators are set on the prompt).
        self.post_message(self.Submitted(self, self.text, None))


# -------------------------------------------------------------------- escapes inside a paste

_START, _END, _ESC = "\x1b[200~", "\x1b[201~", "\x1b"


class _PasteState:
    """Where a parser's input stands: inside a bracketed paste or not, what part of an end marker a
    chunk ended with (held back), and the last characters passed on (to find a start marker that
    arrived split over two chunks)."""

    def __init__(self) -> None:
        self.inside = False
        self.carry = ""
        self.tail = ""


def without_pasted_escapes(state: _PasteState, data: str) -> str:
    """`data` with every ESC inside a bracketed paste left out, but for the paste's end marker. Outside
    a paste nothing is held back (a lone ESC is the escape key, at once); inside, a chunk ending with
    the start of an end marker keeps it for the next chunk."""
    text, state.carry = state.carry + data, ""
    out: list[str] = []
    i = 0
    while i < len(text):
        if not state.inside:
            window = state.tail + text[i:]
            at = window.find(_START)
            if at < 0:
                out.append(text[i:])
                state.tail = window[-(len(_START) - 1) :]
                break
            end = i + at + len(_START) - len(state.tail)  # just after the start marker, in text
            out.append(text[i:end])
            i, state.inside, state.tail = end, True, ""
            continue
        esc = text.find(_ESC, i)
        if esc < 0:
            out.append(text[i:])
            break
        out.append(text[i:esc])
        rest = text[esc:]
        if rest.startswith(_END):
            out.append(_END)
            i, state.inside = esc + len(_END), False
        elif _END.startswith(rest):  # the end marker, split over two chunks
            state.carry = rest
            break
        else:
            i = esc + 1  # an escape in the pasted text: left out, so the rest stays text
    return "".join(out)


def install_paste_filter() -> None:
    """Run every XTermParser's input through without_pasted_escapes (idempotent). The Linux driver
    feeds its parser through `parser.feed`, looked up on the class."""
    if getattr(XTermParser.feed, "_tiankong", False):
        return
    feed = XTermParser.feed

    def filtered(self: XTermParser, data: str) -> Iterator[Any]:
        state = self.__dict__.setdefault("_tiankong_paste", _PasteState())
        if not data:  # the end of input: the parser's own
            yield from feed(self, data)
            return
        kept = without_pasted_escapes(state, data)
        if kept:  # feed("") would mean the end of input
            yield from feed(self, kept)

    filtered._tiankong = True  # type: ignore[attr-defined]
    XTermParser.feed = filtered  # type: ignore[method-assign]


__all__: Iterable[str] = ["NEWLINE", "PromptInput", "install_paste_filter", "without_pasted_escapes"]
