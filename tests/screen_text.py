"""The screen of a Textual app under Pilot as plain text lines (for tests that check what is drawn)."""

from __future__ import annotations


def screen_lines(app) -> list[str]:
    """Each row of the current screen as text, wide characters counted once, trailing spaces kept."""
    return ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]


async def template_note_shown(app, compare: bool) -> tuple[int, str, list[str], object]:
    """Run `app` at 80x24 until its chat (or compare) screen shows the no-template line -> the line's
    height, its text, the screen's rows and its tooltip (the chat and compare tests, local or served)."""
    import asyncio

    from tiankong.tui.screens.compare import CompareScreen
    from tiankong.tui.widgets.template_note import TemplateNote

    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(3000):  # up to 30 s: the model loads in a worker
            screen = CompareScreen if compare else type(app.chat)
            if isinstance(app.screen, screen) and app.screen.query_one(TemplateNote).display:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the no-template line never showed")
        await pilot.pause()
        note = app.screen.query_one(TemplateNote)
        return note.region.height, str(note.render()), screen_lines(app), note.tooltip
