"""A line that says, for as long as the model is in use, that it has no chat template."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

# The fix, said where a model has no chat template: a local model takes a file in the playground; a
# server's model takes one where the server starts (tiankong serve --chat-template FILE).
LOCAL_FIX = "--chat-template FILE"
SERVER_FIX = "serve --chat-template"


def no_template_line(engines: list[Any]) -> str | None:
    """The notice for the models among `engines` without a chat template (common with Ollama's,
    whose template layer is not read), with the fix; None when every one has a template. One row at
    80 columns: the chat's column beside the candidates panel holds 44 characters, where the whole
    sentence generate and serve say (no_template_why) took three rows. Beside another model, each one
    without is named (QA58: compare named the first only, as if the other had one). A server applies
    its own template: it is named where it warns that it has none (tiankong serve's X-Tiankong-Warning,
    RemoteEngine.warning), with the server's fix."""
    from tiankong.engine.model_names import display_name

    bare, served = _bare(engines), [eng.folder for eng in _warned(engines)]
    if not bare and not served:
        return None
    names = f"{', '.join(display_name(folder) for folder in bare + served)}: " if len(engines) > 1 else ""
    fixes = ([LOCAL_FIX] if bare else []) + ([SERVER_FIX] if served else [])
    return f"{names}no chat template ({'; '.join(fixes)})"


def no_template_why(engines: list[Any], reader: str) -> str:
    """What no_template_line means, as generate and serve say it (engine/chat.py no_template_note): what
    `reader` does without a template, and why, said where it holds for every model without one; for a
    server, its own warning, whose chats its /v1/chat/completions joins."""
    from tiankong.engine.chat import no_template_note

    notes = {no_template_note(reader, folder) for folder in _bare(engines)}
    notes |= {f"the server says: {eng.warning}" for eng in _warned(engines)}
    return notes.pop() if len(notes) == 1 else no_template_note(reader)


def _bare(engines: list[Any]) -> list[Any]:
    """The folders of the local models among `engines` that have no chat template."""
    from tiankong.engine.remote import RemoteEngine

    return [eng.folder for eng in engines if eng.template is None and not isinstance(eng, RemoteEngine)]


def _warned(engines: list[Any]) -> list[Any]:
    """The remote engines among `engines` whose server warned it has no chat template."""
    from tiankong.engine.remote import RemoteEngine

    return [eng for eng in engines if isinstance(eng, RemoteEngine) and eng.warning]


class TemplateNote(Static):
    """`show_for(engines, reader)`: the no_template_line of these engines, or nothing (hidden); what it
    means (no_template_why, `reader`: what joins the messages) on hover.

    A line on the screen rather than a notification: a notification, drawn at the top right for
    seconds, covered the chat's candidates panel (and compare's right column) right when the model
    had loaded and one first looks there; and once it was gone nothing said why answers read oddly."""

    DEFAULT_CSS = "TemplateNote { height: auto; display: none; }"

    def show_for(self, engines: list[Any], reader: str) -> None:
        line = no_template_line(engines)
        self.display = line is not None
        self.update(Text(f"⚠ {line}" if line else "", style="italic"))
        # The whole sentence on hover: the line has room for the fix only.
        self.tooltip = no_template_why(engines, reader) if line else None
