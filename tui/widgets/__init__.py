"""Reusable playground widgets: they report upward with Messages and are changed by methods."""

from tiankong.tui import controls, terminal
from tiankong.tui.widgets import kinsoku
from tiankong.tui.widgets.candidates import CandidatesPanel, show_token, token_dict
from tiankong.tui.widgets.message import AssistantMessage, UserMessage
from tiankong.tui.widgets.status import StatusBar

kinsoku.install()  # every transcript and answer column: no "。" or "！" at the start of a line
controls.install()  # no escape sequence from a model's text reaches the terminal
terminal.install()  # a pasted escape stays text; a SIGCONT from outside starts no second input thread

__all__ = ["AssistantMessage", "CandidatesPanel", "StatusBar", "UserMessage", "show_token", "token_dict"]
