"""Escape sequences in a model's answer (or a stored chat) never reach the terminal: every way the
playground draws an answer leaves control characters out (tui/controls.py), and the
candidates panel shows them as escapes. Seen before the fix: a stored answer holding
ESC ] 2 ; ... BEL retitled the tmux pane it was opened in."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from rich.text import Text
from screen_text import screen_lines
from textual._xterm_parser import XTermParser
from textual.app import App
from textual.content import Content

from tiankong.tui.controls import UNDRAWN
from tiankong.tui.terminal import _PasteState, install_paste_filter, without_pasted_escapes
from tiankong.tui.widgets.candidates import show_token
from tiankong.tui.widgets.message import AssistantMessage
from tiankong.tui.widgets.streaming_text import StreamingText

HOSTILE = (
    "Hello \x1b]2;PWNED\x07there \x1b[31mRED\x1b[0m, an OSC 52 \x1b]52;c;cHduZWQ=\x1b\\ write, "
    "a C1 CSI \x9b31m and \x90DCS\x9c, DEL\x7f and NUL\x00.\n\n```\ncode\twith a tab\n```\n"
)


def undrawn(lines: list[str]) -> set[str]:
    return {ch for line in lines for ch in line if ord(ch) in UNDRAWN}


def test_text_and_content_leave_control_characters_out():
    for make in (lambda s: Text(s).plain, lambda s: Content(s).plain):
        assert make(HOSTILE).count("\x1b") == 0
        assert not undrawn([make(HOSTILE)])
        assert "\t" in make(HOSTILE) and "\n" in make(HOSTILE)  # tab and line feed stay
    appended = Text()
    appended.append("a\x1b[2Jb\x9bc")
    assert appended.plain == "a[2Jbc"


def test_the_candidates_panel_shows_control_characters_as_escapes():
    assert show_token("\x1b[31m") == "\\x1b[31m"
    assert show_token("\x9b") == "\\x9b" and show_token("\x7f") == "\\x7f"


def test_no_way_of_drawing_an_answer_sends_a_control_character():
    class Screen(App):
        def compose(self):
            yield AssistantMessage(HOSTILE, lazy=True)  # a stored answer, drawn as its preview
            yield AssistantMessage(HOSTILE)  # the Markdown widget
            yield AssistantMessage()  # streaming
            yield StreamingText()  # a compare column

    async def go():
        async with Screen().run_test(size=(100, 80)) as pilot:
            app = pilot.app
            stream = list(app.query(AssistantMessage))[2]
            stream.start_stream()
            await stream.append(HOSTILE, [])
            app.query_one(StreamingText).set_text(HOSTILE)
            await pilot.pause()
            await pilot.pause(0.1)
            return screen_lines(app)

    lines = asyncio.run(go())
    text = "\n".join(lines)
    assert text.count("Hello") == 4 and text.count("RED") == 4  # all four drew the answer
    assert not undrawn(lines)


# ---------------------------------------------------------------- escapes inside a paste


def _parsed(chunks: list[str]) -> list:
    """What Textual's terminal parser makes of input arriving in these chunks (the filter installed)."""
    install_paste_filter()
    parser = XTermParser()
    return [e for chunk in chunks for e in parser.feed(chunk)]


@pytest.mark.parametrize("cut", [None, 3, 9, 14, 21, 23])  # whole, or split anywhere, markers included
def test_escapes_inside_a_paste_stay_text_and_press_no_key(cut):
    """A pasted ESC ] 0 ; ... BEL opened the votes screen, a pasted ESC [ 1 m sent the message: Textual's
    parser read them as keys. Now the paste is one Paste event, in order, and no key."""
    data = "\x1b[200~A\x1b]0;t\x07B\x1b[1mC\r\x1b[201~"
    events_ = _parsed([data] if cut is None else [data[:cut], data[cut:]])
    assert [type(e).__name__ for e in events_] == ["Paste"]
    assert events_[0].text == "A]0;t\x07B[1mC\r"


def test_keys_outside_a_paste_are_untouched():
    state = _PasteState()
    chunks = ["ab\x1b", "[A", "\x1b[20", "0~x\x1by\x1b[2", "01~\x1b"]  # markers split in two
    out = [without_pasted_escapes(state, chunk) for chunk in chunks]
    assert out[:2] == chunks[:2]  # nothing held back outside a paste: a lone ESC is the escape key, now
    assert "".join(out) == "".join(chunks).replace("\x1by", "y") and not state.inside
    keys = [e.key for e in _parsed(["x\x1b[A"])]
    assert keys == ["x", "up"]


def test_a_sigcont_from_outside_starts_no_second_input_thread(monkeypatch):
    """After `kill -STOP` / `kill -CONT` (or a debugger's stop), Textual's driver started its input and
    output threads again, and ctrl+q then hung at exit. It resumes only after its own suspend now."""
    from textual.drivers.linux_driver import LinuxDriver

    from tiankong.tui.terminal import install_resume_guard

    install_resume_guard()
    resumed: list[bool] = []
    monkeypatch.setattr(LinuxDriver, "resume_application_mode", lambda self: resumed.append(True))
    before = {s: signal.getsignal(s) for s in (signal.SIGTSTP, signal.SIGCONT)}

    async def go() -> list[list[bool]]:
        driver = LinuxDriver(App(), debug=False, mouse=False)  # puts its SIGTSTP/SIGCONT handlers in place
        os.kill(os.getpid(), signal.SIGCONT)
        await asyncio.sleep(0.05)
        after_outside = list(resumed)  # not suspended by the app: nothing to resume
        driver._must_signal_resume = True  # what its SIGTSTP handler sets before stopping
        os.kill(os.getpid(), signal.SIGCONT)
        await asyncio.sleep(0.05)
        return [after_outside, list(resumed)]

    try:
        assert asyncio.run(go()) == [[], [True]]
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
