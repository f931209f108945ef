"""Fixes to how Textual reads the terminal, installed at import of tui.app (before any app starts:
the driver binds its signal handlers as it is made) and of tui.widgets (an app of a test's own).

- An escape character inside a bracketed paste acted as a key: Textual's parser reads an ESC in the
  middle of a paste as the start of a key sequence, so a pasted `ESC ] 0 ; ... BEL` opened the
  votes screen and a pasted `ESC [ 1 m` sent the message. `install_paste_filter` leaves such
  escapes out of the paste (the rest of it stays text).
- A SIGCONT that follows no suspend of the app's own (a debugger, `kill -STOP` / `kill -CONT`, a
  job-control stop from outside) started the driver's input and output threads a second time;
  ctrl+q then hung at exit, waiting on the first ones, and the message being answered was lost.
  `install_resume_guard` resumes only after the app's own suspend (ctrl+z).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from textual._xterm_parser import XTermParser

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


def install_resume_guard() -> None:
    """Make the Linux driver's SIGCONT handler resume application mode only when its own SIGTSTP
    handler suspended it (idempotent). The handler is bound when a driver is made, so the class is
    patched before the app starts. (Private names: a Textual without them is left as it is.)"""
    try:
        from textual.drivers.linux_driver import LinuxDriver
    except ImportError:  # not on this platform
        return
    resume = getattr(LinuxDriver, "_sigcont_application", None)
    if resume is None or getattr(resume, "_tiankong", False):
        return

    def guarded(self: Any, *args: Any) -> None:
        if getattr(self, "_must_signal_resume", True):  # set by the suspend, cleared by the resume
            resume(self, *args)

    guarded._tiankong = True  # type: ignore[attr-defined]
    LinuxDriver._sigcont_application = guarded  # type: ignore[method-assign]


def install() -> None:
    install_paste_filter()
    install_resume_guard()
