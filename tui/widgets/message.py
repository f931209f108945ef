"""Transcript messages: a user's message, and an assistant answer that streams as Markdown and,
once finished, can show its tokens (a probability heatmap, or a cursor to step through them).

Answers of a stored chat are mounted *lazily*. A Markdown widget is a tree of block widgets (each
paragraph, list item and code fence is one), so a 200-message chat mounted whole is well over a
thousand widgets, every one styled, laid out, and walked on every layout. A lazy answer is a
single widget that draws a `MarkdownPreview` of its text (the blocks, margins, bullets and word
wrapping of the Markdown widget, as one Rich renderable: the same height) and its info line; it
becomes the real thing (`realize`, then `swap_in`) when the transcript scrolls near it.
Everything else (tokens, inspect, heatmap, copy) works on a lazy answer as on any other.

MarkdownPreview and StreamingMarkdown are in markdown_preview.py, the tokens' Text (heatmap, cursor)
in answer_tokens.py.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.console import Group
from rich.text import Text
from textual import events
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.geometry import Region, Size
from textual.message import Message
from textual.widget import AwaitMount, Widget
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownFence

from tiankong.tui.widgets.answer_tokens import cursor_line, tokens_text
from tiankong.tui.widgets.markdown_preview import MarkdownPreview, StreamingMarkdown, answer_parser

# Regenerate, edit and branch keep the old message as a sibling; a focused message switches among them.
# Each key is bound twice (as the chat's esc is): the footer shows the first where the message has
# branches (check_action), and the hidden one takes the key elsewhere, to say there is none.
BRANCH_BINDINGS = [
    Binding(
        "ctrl+left,alt+left",
        "switch_branch(-1, 1)",
        "◀ branch",
        tooltip="show the previous branch here (the answer before a regenerate, edit or branch)",
    ),
    Binding("ctrl+right,alt+right", "switch_branch(1, 1)", "branch ▶", tooltip="show the next branch here"),
    Binding("ctrl+left,alt+left", "switch_branch(-1, 0)", "◀ branch", show=False),
    Binding("ctrl+right,alt+right", "switch_branch(1, 0)", "branch ▶", show=False),
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
        if self.has_focus:  # type: ignore[attr-defined]  # (the footer shows the focused widget's keys;
            self.refresh_bindings()  # type: ignore[attr-defined]  # one refresh per message redrew it each time)

    def has_branches(self) -> bool:
        """Whether other branches stand at this message (its "‹ 2/3 ›"): the branch keys apply."""
        return len(self.branches) > 1 and self.message_id in self.branches

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A branch key's two bindings (BRANCH_BINDINGS, `v`): the shown one where there are branches.
        if action in ("switch_branch", "vote_branch") and parameters:
            return bool(parameters[-1]) == self.has_branches()
        return True

    def action_switch_branch(self, step: int, shown: int = 1) -> None:
        self.post_message(SwitchBranch(self, step))  # type: ignore[attr-defined]


class UserMessage(Branched, Static, can_focus=True):
    """A user's message (or the chat's opening prompt). `c` copies it."""

    BINDINGS = [Binding("c", "copy", "copy")] + BRANCH_BINDINGS

    def __init__(self, content: str, message_id: int | None = None) -> None:
        # markup=False: Static parses a str as Textual markup, and the text is the user's (or a stored
        # chat's): "what does [/] mean?" raised MarkupError, on every reopen of the chat too, and
        # "[@click=app.quit]x[/]" made a link that ran an action. `content` is then the text itself.
        super().__init__(content, classes="message user", markup=False)
        self.message_id = message_id
        self.role = "user"  # "system" for a system message kept in a stored chat
        self.border_title = "you"
        self.branches: list[int] = []

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.content)
        self.notify(f"copied your message ({len(self.content)} characters)", markup=False)


class CodeFence(MarkdownFence):
    """A code block; one whose fence names no language is drawn as plain text. Textual would guess
    the language, which runs every Pygments lexer over the code, and on first use imports every
    installed plugin's lexers (IPython's took seconds, the UI frozen). While answers streamed
    through Textual's Markdown stream that guess ran on every frame."""

    @classmethod
    def highlight(cls, code: str, language: str, ansi: bool = False, dark: bool = False) -> Content:
        return super().highlight(code, language or "text", ansi, dark)


class AnswerMarkdown(Markdown):
    """An answer's Markdown (code blocks through CodeFence), its line breaks kept (answer_parser)."""

    BLOCKS = {**Markdown.BLOCKS, "fence": CodeFence, "code_block": CodeFence}

    def __init__(self, markdown: str | None = None, **kwargs: Any) -> None:
        super().__init__(markdown, parser_factory=answer_parser, **kwargs)


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
            "vote_branch(1)",
            "vote branch",
            tooltip="vote this branch better than the others here, at the token where they part",
        ),
        Binding("v", "vote_branch(0)", "vote branch", show=False),
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
        self.border_title = Content(title)  # plain: a model's name or path, a preset's file name may hold "["
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
        self.dropped: int | None = None  # how many of the chat's oldest turns its prompt left out (None: unknown)
        self.model: str | None = None  # the model that wrote it (a model_key; None: not known)

    def action_branch(self) -> None:
        if self.tokens and not self.streaming:
            self.post_message(self.BranchRequested(self, min(self.cursor, len(self.tokens) - 1)))

    def action_vote_branch(self, shown: int = 1) -> None:
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
        info = Static(self._info, classes="answer-info", markup=False)  # an error's words may quote "["
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
        self.notify(f"copied the answer ({len(self.content)} characters)", markup=False)

    def on_click(self, event: events.Click) -> None:
        self.focus()
