"""Escape sequences in a model's answer (or a stored chat) never reach the terminal: every way the
playground draws an answer leaves control characters out (tui/widgets/controls.py), and the
candidates panel shows them as escapes. Seen before the fix: a stored answer holding
ESC ] 2 ; ... BEL retitled the tmux pane it was opened in."""

from __future__ import annotations

import asyncio

from rich.text import Text
from screen_text import screen_lines
from textual.app import App
from textual.content import Content

from tiankong.tui.widgets.candidates import show_token
from tiankong.tui.widgets.controls import UNDRAWN
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
