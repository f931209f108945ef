"""A bare Textual app for screen tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from textual.app import App
from textual.widgets import Static


class Host(App):
    """A bare app that pushes one screen over a home screen: the tests do not depend on the real app."""

    def __init__(self, screen) -> None:
        super().__init__()
        self.shown = screen

    def compose(self):
        yield Static("home")

    def on_mount(self) -> None:
        self.push_screen(self.shown)
