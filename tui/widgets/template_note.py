"""A line that says, for as long as the model is in use, that it has no chat template."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static


def no_template_line(engines: list[Any], reader: str) -> str | None:
    """The notice for the local models among `engines` without a chat template (common with Ollama's,
    whose template layer is not read), as generate and serve say it, with the fix; None when every
    one has a template. Beside another model, each one without is named (QA58: compare named the
    first only, as if the other had one), in one line; the reason Ollama's lack one is said where it
    holds for all of them. A server applies its own template, so it is never named."""
    from tiankong.engine.chat import no_template_note
    from tiankong.engine.model_names import display_name
    from tiankong.engine.remote import RemoteEngine

    bare = [eng.folder for eng in engines if eng.template is None and not isinstance(eng, RemoteEngine)]
    if not bare:
        return None
    notes = {no_template_note(reader, folder) for folder in bare}
    note = notes.pop() if len(notes) == 1 else no_template_note(reader)
    names = f"{', '.join(display_name(folder) for folder in bare)}: " if len(engines) > 1 else ""
    return f"{names}{note}; give --chat-template FILE"


class TemplateNote(Static):
    """`show_for(engines, reader)`: the no_template_line of these engines, or nothing (hidden).

    A line on the screen rather than a notification: a notification, drawn at the top right for
    seconds, covered the chat's candidates panel (and compare's right column) right when the model
    had loaded and one first looks there; and once it was gone nothing said why answers read oddly."""

    DEFAULT_CSS = "TemplateNote { height: auto; display: none; }"

    def show_for(self, engines: list[Any], reader: str) -> None:
        line = no_template_line(engines, reader)
        self.display = line is not None
        self.update(Text(f"⚠ {line}" if line else "", style="italic"))
