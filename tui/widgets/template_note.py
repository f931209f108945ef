"""A line that says, for as long as the model is in use, that it has no chat template."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static


def no_template_line(engines: list[Any], reader: str) -> str | None:
    """The notice for the first local model among `engines` without a chat template (common with
    Ollama's, whose template layer is not read), as generate and serve say it, with the fix; None
    when every one has a template. A server applies its own template, so it is never named."""
    from tiankong.engine.chat import no_template_note
    from tiankong.engine.model_names import display_name
    from tiankong.engine.remote import RemoteEngine

    for eng in engines:
        if eng.template is None and not isinstance(eng, RemoteEngine):
            where = f"{display_name(eng.folder)}: " if len(engines) > 1 else ""
            return f"{where}{no_template_note(reader, eng.folder)}; give --chat-template FILE"
    return None


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
