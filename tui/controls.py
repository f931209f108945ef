"""Control characters in what the playground draws. A model's output, a stored chat and an imported
file are text from strangers, and an escape sequence in them would reach the terminal as it is:
ESC ] 2 ; ... BEL retitles the window (seen in tmux with a stored answer), ESC [ 31 m colours what
follows, and some terminals write the clipboard (OSC 52) or answer queries. Rich's Text and
Textual's Content leave five control characters (BEL, BS, VT, FF, CR) out of everything they draw;
`install()` has them leave out every C0 control but tab and line feed, DEL, and the C1 controls
(U+0080-U+009F, which some terminals read as escape sequences) as well. Only what is drawn
changes: stored text, exports and copies keep every character. The CLI installs it too (only
Rich's table: its tables and error lines quote model folders, presets and caches from strangers).
"""

from __future__ import annotations

import importlib

import rich.control

# What is never drawn: C0 controls other than tab and line feed, DEL, C1 controls.
UNDRAWN: dict[int, None] = {c: None for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x09, 0x0A)}


def install() -> None:
    """Make Rich's Text and Textual's Content leave UNDRAWN out (idempotent). Both strip control
    codes with a module-level table that is their functions' default argument, so the tables
    themselves are extended. (Private names: a version without them leaves drawing as it was, and
    tests/test_tui_controls.py fails.)"""
    install_rich()
    _extend(importlib.import_module("textual.content"))


def install_rich() -> None:
    """install() for Rich alone: what the CLI prints with (it does not import textual)."""
    _extend(rich.control)


def _extend(module: object) -> None:
    table = getattr(module, "_CONTROL_STRIP_TRANSLATE", None)
    if isinstance(table, dict):
        table.update(UNDRAWN)
