"""The screen of a Textual app under Pilot as plain text lines (for tests that check what is drawn)."""

from __future__ import annotations


def screen_lines(app) -> list[str]:
    """Each row of the current screen as text, wide characters counted once, trailing spaces kept."""
    return ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]
