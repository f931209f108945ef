"""Widgets redrawn on every frame of a stream, driven headless. The compare screen's column
(tui/widgets/streaming_text.py): it wraps as a Static wraps the same text (the reference), redraws
only the lines an update changed, follows the stream a third of its height at a time, and draws
no control characters. The chat's streaming answer (StreamingMarkdown): drawn as the MarkdownPreview
it replaced draws, a new word redrawing a line or two. The chat's candidates panel: a new token
redraws only the rows its text covers."""

from __future__ import annotations

import asyncio
import functools
import random

import pytest
from screen_text import screen_lines
from textual.app import App
from textual.geometry import Offset
from textual.selection import Selection
from textual.widgets import Static
from tiny_models import STORIES

from tiankong.engine.events import TokenEvent
from tiankong.tui.widgets.candidates import CandidatesPanel
from tiankong.tui.widgets.markdown_preview import MarkdownPreview, StreamingMarkdown, _blocks, _GrowingBlocks, _layout
from tiankong.tui.widgets.streaming_text import StreamingText

PROSE = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.\n\n"
    "One day she found a supercalifragilisticexpialidociouslylongword that did not fit, and then "
    "she   ran    home.\n"
    "今天天气很好，我们去公园散步吧！她说：「好的。」然后我们一起走了很久很久，直到太阳下山。\n"
    "The end."
)


def sync(test):
    """Run an async test body with asyncio.run (the suite has no async plugin)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))

    return run


def counting(base: type, name: str) -> type:
    """A subclass of widget class `base` named `name` that counts, in `drawn`, the lines it is asked to draw."""

    def render_line(self, y: int):
        cls.drawn += 1
        return base.render_line(self, y)

    cls = type(name, (base,), {"drawn": 0, "render_line": render_line})
    return cls


Counting = counting(StreamingText, "Counting")


class Pair(App):
    """A StreamingText above a Static of the same width and height: the Static is the reference.
    (One above the other: a row holds one of them, so wide characters do not shift the other.)"""

    CSS = """
    #text, #ref { width: 30; height: 40; }
    #text { scrollbar-size-vertical: 1; }
    """

    def compose(self):
        yield Counting(classes="answer-body")
        yield Static(id="ref")

    def on_mount(self) -> None:
        self.query_one(Counting).id = "text"


def tokens(text: str, seed: int = 0) -> list[str]:
    """The text cut into pieces of 1-6 characters, as a model streams it."""
    rng, out, i = random.Random(seed), [], 0
    while i < len(text):
        n = rng.randint(1, 6)
        out.append(text[i : i + n])
        i += n
    return out


def shown(app: App, widget) -> list[str]:
    """The widget's rows as drawn on the screen, trailing spaces cut."""
    r = widget.region
    return [line.rstrip() for line in screen_lines(app)[r.y : r.bottom]]


async def stream(pilot, widget: StreamingText, text: str, frame: int = 3) -> None:
    """Show text a token at a time, drawing a frame every `frame` tokens."""
    pieces, sofar = tokens(text), ""
    for i, piece in enumerate(pieces):
        sofar += piece
        widget.set_text(sofar)
        if i % frame == 0:
            await pilot.pause()
    await pilot.pause()


@pytest.mark.parametrize("width", [30, 17])
@sync
async def test_wraps_as_a_static_wraps_the_same_text(width):
    app = Pair()
    async with app.run_test(size=(60, 85)) as pilot:
        text, ref = app.query_one(Counting), app.query_one("#ref", Static)
        for w in (text, ref):
            w.styles.width = width
        await pilot.pause()
        await stream(pilot, text, PROSE)
        ref.update(PROSE)
        await pilot.pause()
        assert text.text == PROSE
        assert shown(app, text) == shown(app, ref)
        assert any("。" in line for line in shown(app, text))
        # a new width wraps all of it again, as the Static does
        for w in (text, ref):
            w.styles.width = width + 7
        await pilot.pause()
        await pilot.pause()
        assert shown(app, text) == shown(app, ref)


@sync
async def test_an_update_redraws_only_the_lines_it_changed():
    app = Pair()
    async with app.run_test(size=(60, 85)) as pilot:
        text = app.query_one(Counting)
        await stream(pilot, text, PROSE)
        lines = sum(bool(line) for line in shown(app, text))
        assert lines >= 12
        for word in [" and", " they", " lived", " happily", " ever", " after."]:
            Counting.drawn = 0
            text.set_text(text.text + word)
            await pilot.pause()
            assert 1 <= Counting.drawn <= 2, f"{Counting.drawn} lines drawn again for one word"
        assert [line for line in shown(app, text) if line][-1].endswith("after.")
        # text that is not more of the old one is all drawn again
        Counting.drawn = 0
        text.set_text("Another answer.")
        await pilot.pause()
        assert Counting.drawn >= lines
        assert shown(app, text)[:2] == ["Another answer.", ""]


@sync
async def test_follows_the_stream_a_third_of_the_view_at_a_time():
    app = Pair()
    async with app.run_test(size=(60, 85)) as pilot:
        text = app.query_one(Counting)
        text.styles.height = 12
        await pilot.pause()
        view = text.scrollable_content_region.height
        offsets = []
        sofar = ""
        for n in range(60):
            sofar += f"line {n}\n"
            text.set_text(sofar)
            await pilot.pause()
            last = len(sofar.splitlines()) - 1  # the last line with text
            assert text.scroll_y <= last < text.scroll_y + view, "the newest line is in view"
            offsets.append(text.scroll_y)
        jumps = [b - a for a, b in zip(offsets, offsets[1:], strict=False) if b != a]
        assert jumps and min(jumps) >= view // 3
        assert shown(app, text)[0] == f"line {int(offsets[-1])}"
        # scrolled up by the reader: it stays there
        text.scroll_home(animate=False)
        await pilot.pause()
        text.set_text(sofar + "one more\n")
        await pilot.pause()
        assert text.scroll_y == 0 and shown(app, text)[0] == "line 0"


@sync
async def test_auto_height_grows_with_the_text():
    app = Pair()
    async with app.run_test(size=(60, 85)) as pilot:
        text = app.query_one(Counting)
        text.styles.height = "auto"
        await pilot.pause()
        for n in (3, 9, 20):
            text.set_text("\n".join(f"row {i}" for i in range(n)))
            await pilot.pause()
            assert text.size.height == n and text.scroll_y == 0
            assert shown(app, text)[-1] == f"row {n - 1}"


@sync
async def test_control_characters_are_not_drawn_and_tabs_are_spaces():
    app = Pair()
    async with app.run_test(size=(60, 85)) as pilot:
        text = app.query_one(Counting)
        text.set_text("red\x1b[31m text\r\tand\x07 a bell\x7f")
        await pilot.pause()
        assert text.text == "red[31m text    and a bell"
        assert shown(app, text)[0] == "red[31m text    and a bell"
        assert not any(ch in "".join(screen_lines(app)) for ch in "\x1b\r\t\x07\x7f")


@sync
async def test_a_selection_copies_the_text_without_the_wrapping():
    app = Pair()
    async with app.run_test(size=(60, 85)) as pilot:
        text = app.query_one(Counting)
        text.set_text(PROSE)
        await pilot.pause()
        assert len(text._lines) > 8
        assert text.get_selection(Selection(Offset(0, 0), None)) == (PROSE, "\n")
        second = text._lines[1]
        part, _ = text.get_selection(Selection(Offset(0, 1), Offset(5, 2)))
        assert part == PROSE[second[0] : text._lines[2][0] + 5]


CountingPanel = counting(CandidatesPanel, "CountingPanel")


class PanelApp(App):
    def compose(self):
        yield CountingPanel()


@pytest.mark.skipif(not STORIES.parent.parent.exists(), reason="../shared is absent")
@sync
async def test_a_new_token_redraws_only_the_candidate_rows():
    from tiankong.engine.engine import Engine
    from tiankong.engine.sampling import SamplingParams

    engine = Engine.load(STORIES)
    ids = engine.encode("Once upon a time")
    params = SamplingParams(temperature=0.8, top_k=40, max_new_tokens=6, seed=1)
    tokens = [ev.to_dict() for ev in engine.generate([ids], [params], top_logprobs=10) if isinstance(ev, TokenEvent)]
    app = PanelApp()
    async with app.run_test(size=(60, 50)) as pilot:
        panel = app.query_one(CountingPanel)
        panel.show(tokens[0], "streaming · token 1")
        await pilot.pause()
        rows = panel._rows
        assert 10 < rows < panel.size.height - 20  # ten candidates and their header, in a taller panel
        for n, token in enumerate(tokens[1:], 2):
            CountingPanel.drawn = 0
            panel.show(token, f"streaming · token {n}")
            await pilot.pause()
            assert 0 < CountingPanel.drawn <= rows
            assert f"token {n}" in "".join(screen_lines(app))


MARKDOWN = (
    "# A title\n\nA first paragraph that is long enough to wrap at this width, with *emphasis* and "
    "`code`.\n\n- one item\n- another item that also wraps because it goes on and on for a while\n\n"
    "```python\ndef f(x):\n    return x + 1\n```\n\n1. first\n2. second\n\n> a quote that wraps, "
    "as quotes do when they are long\n\n---\n\nThe end, in a last paragraph that goes on for a while too."
)


CountingMarkdown = counting(StreamingMarkdown, "CountingMarkdown")


class MarkdownPair(App):
    """The streaming answer above a Static showing the MarkdownPreview it replaced (the reference)."""

    CSS = "CountingMarkdown, #ref { width: 44; height: auto; }"

    def compose(self):
        yield CountingMarkdown()
        yield Static(id="ref")


@sync
async def test_a_streaming_answer_draws_as_its_preview_and_redraws_a_line_or_two():
    app = MarkdownPair()
    async with app.run_test(size=(60, 90)) as pilot:
        md, ref = app.query_one(CountingMarkdown), app.query_one("#ref", Static)
        sofar = ""
        for piece in tokens(MARKDOWN):
            sofar += piece
            md.set_markdown(sofar)
            await pilot.pause()
        ref.update(MarkdownPreview(sofar))
        await pilot.pause()
        assert md.size.height == ref.size.height > 25
        assert shown(app, md) == shown(app, ref)
        # its paragraphs' wrapped lines are remembered, not every version of the one streaming
        assert 5 < len(md._memo) <= sum(1 for line in MARKDOWN.split("\n") if line.strip())
        height = md.size.height
        for word in " And then some more words, enough of them for the last paragraph to need new lines.".split(" ")[
            1:
        ]:
            CountingMarkdown.drawn = 0
            sofar += " " + word
            md.set_markdown(sofar)
            await pilot.pause()
            assert 1 <= CountingMarkdown.drawn <= 2, f"{CountingMarkdown.drawn} lines drawn again for one word"
        assert md.size.height >= height + 2  # lines were added, and the ones above not drawn again
        ref.update(MarkdownPreview(sofar))
        await pilot.pause()
        assert shown(app, md) == shown(app, ref)


TRICKY = [
    MARKDOWN,
    "1. a\n\n2. b\n\n3. c\n\nA paragraph.\n\n- x\n- y\n\n- z after a blank line\n\nEnd.",
    "Title\n=====\n\nSub\n---\n\npara\n\n---\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nafter the table",
    "```\nunclosed fence\n\nstill code\n```\n\n> quote\nlazy line\n\n> another\n\n    indented code\n\nend",
    "- a\n  - nested\n\n    more of a\n- b\n\n+ another list\n\n1) one\n2) two\n\ndone",
]


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_growing_text_parses_as_the_whole_text_at_every_step(text):
    from rich.console import Console

    console, grow = Console(width=50), _GrowingBlocks()
    for n in range(1, len(text) + 1):  # every prefix: a character at a time
        sofar = text[:n]
        assert _layout(grow(sofar), console, 50) == _layout(_blocks(sofar), console, 50), repr(sofar)
    assert grow.done_text  # most of it was parsed once
