"""The help screen: every key, grouped by where it works (built from the live bindings)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

Section = tuple[str, list[tuple[str, str]]]  # (title, [(keys, what they do)])

INTRO = (
    "A language model is a next-token predictor: at each step it weighs every token in its "
    "vocabulary. The candidates panel shows the top ones: the blue bar is the model's own "
    "probability, the green bar the probability after your preset's sampler chain "
    "(✗ = cut by top-k / top-p / min-p); ▶ is the token that was drawn."
)


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,f1,q", "app.pop_screen", "close")]

    def __init__(self, sections: list[Section], intro: str = INTRO) -> None:
        """`intro`: the paragraph above the keys (the chat's, on next-token prediction, by default)."""
        super().__init__()
        self.sections, self.intro = sections, intro

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "tiankong 填空 · keys"
            body.border_subtitle = "esc closes"
            yield Static(Text(self.intro, style="dim"), id="help-intro")
            for title, keys in self.sections:
                table = Table(
                    title=title,
                    title_justify="left",
                    title_style="bold",
                    show_header=False,
                    show_edge=False,
                    box=None,
                    padding=(0, 1),
                    expand=True,
                )
                table.add_column("key", style="bold cyan", no_wrap=True, min_width=14)
                table.add_column("what", ratio=1)
                for key, what in keys:
                    table.add_row(key, what)
                yield Static(table, classes="help-section")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()  # up/down/page keys scroll it
