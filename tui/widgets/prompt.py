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
(tui/terminal.py keeps escapes inside a paste from acting as keys.)
"""

from __future__ import annotations

import re
from typing import Any

from textual.binding import Binding
from textual.widgets import Input

NEWLINE = "\u2424"  # ␤ SYMBOL FOR NEWLINE: a line break in the prompt line
_BREAKS = re.compile(r"\r\n|\r|\n")


class PromptInput(Input):
    """Input that submits on ctrl+j as on enter and keeps a pasted text's line breaks."""

    BINDINGS = [Binding("ctrl+j", "submit", "send", show=False)]

    # Sent (enter, ctrl+j) and not yet taken up by the screen, which clears it: an answer is asked for
    # before its Submitted message arrives, and a ctrl+c typed straight after enter arrives first.
    sent = False

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
        self.sent = True
        self.post_message(self.Submitted(self, self.text, None))
