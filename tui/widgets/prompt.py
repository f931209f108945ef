"""The playground's prompt line: Textual's Input, also sent with ctrl+j.

A line typed while the app starts (before it puts the terminal in raw mode) reaches it with its
Enter turned into a newline by the terminal, which Textual reads as ctrl+j; a plain Input would
keep the text and drop the Enter, so the first message of `... && tiankong chat`, typed ahead,
never went out.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class PromptInput(Input):
    """Input that submits on ctrl+j as on enter."""

    BINDINGS = [Binding("ctrl+j", "submit", "send", show=False)]
