"""The scrolling transcript of a chat.

Two things on top of a VerticalScroll, both for long stored chats whose answers are mounted lazily
(see `AssistantMessage`):

* Lazy answers are realized (their Markdown widget swapped in) before they come on screen: once
  one is within NEAR screens of the visible part, all within FAR screens are, in one batch, so the
  ones on screen are the real thing, a 200-message chat is not 1000+ widgets at once, and paging
  through it costs a layout every few screens rather than one per answer.
* Scroll anchoring, as browsers do it: when messages above the visible part change height (an
  answer realized, the heatmap switched on, the terminal resized), the first visible message stays
  where it is on screen instead of being pushed down. The correction is made in `arrange`, in the
  same layout pass that changed the heights (where Textual itself keeps an anchored container at
  the bottom), so no frame is drawn with the content jumped. While the transcript is anchored to
  its end (following a streaming answer) Textual's own anchoring applies instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.widget import Widget

NEAR = 1.0  # a lazy answer this many screens from the visible part (above or below) ...
FAR = 3.0  # ... gets realized, with all the others within this many


class Transcript(VerticalScroll):
    """Takes the focus (tab) only when there is something to scroll: a stop that takes no key and
    shows nothing, between the system prompt and the messages, lost what was typed there."""

    def allow_focus(self) -> bool:
        return super().allow_focus() and self.max_scroll_y > 0

    def __init__(self, *children: Widget, **kwargs: Any) -> None:
        super().__init__(*children, **kwargs)
        self._arrangement: Any = None  # the last DockArrangeResult seen
        self._places: dict[Widget, tuple[int, int]] = {}  # child -> (y, height) in that arrangement
        self._realize_scheduled = False
        self._realizing = False  # a batch of answers is being realized
        self._viewport_height = 0  # of the visible part, from the last arrangement

    def arrange(self, size: Size, optimal: bool = False) -> Any:
        result = super().arrange(size, optimal)
        if result is not self._arrangement and not optimal:
            self._arrangement = result
            self._viewport_height = size.height
            places = {p.widget: (p.region.y, p.region.height) for p in result.placements if not p.fixed}
            self._keep_anchor(places)
            self._places = places
            self._schedule_realize()
        return result

    def _following_end(self) -> bool:
        """Textual's anchor is on (and not released by the user scrolling away)."""
        return bool(getattr(self, "_anchored", False)) and not getattr(self, "_anchor_released", False)

    def _keep_anchor(self, places: dict[Widget, tuple[int, int]]) -> None:
        old = self._places
        top = self.scroll_y
        if not old or top <= 0 or self._following_end():
            return
        anchor = next((w for w, (y, h) in old.items() if y + h > top and w in places), None)
        if anchor is None:
            return
        delta = places[anchor][0] - old[anchor][0]
        if not delta:
            return
        # Not through the scroll_y setter: it clamps to the virtual size of the old layout.
        y = max(0.0, top + delta)
        self.set_reactive(Widget.scroll_y, y)
        self.set_reactive(Widget.scroll_target_y, max(0.0, self.scroll_target_y + delta))
        self.vertical_scrollbar.set_reactive(type(self.vertical_scrollbar).position, y)
        self._shift_animation(delta)

    def _shift_animation(self, delta: float) -> None:
        """A scroll animation under way moves its start and end along (else its next frame jumps)."""
        animator = self.app.animator
        if not animator.is_being_animated(self, "scroll_y"):
            return
        animation = getattr(animator, "_animations", {}).get((id(self), "scroll_y"))
        for name in ("start_value", "end_value", "final_value"):
            value = getattr(animation, name, None)
            if isinstance(value, (int, float)):
                setattr(animation, name, value + delta)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._schedule_realize()

    def _schedule_realize(self) -> None:
        if not self._realize_scheduled:
            self._realize_scheduled = True
            self.call_after_refresh(self._realize_near)

    def _realize_near(self) -> None:
        """Once a lazy answer is within NEAR screens of the visible part, realize all those within
        FAR screens, together (one layout for the lot, and none for the next few screens)."""
        self._realize_scheduled = False
        if not self.is_attached or self._realizing:
            return
        if self.app.animator.is_being_animated(self, "scroll_y"):
            self.set_timer(0.05, self._schedule_realize)  # mid-animation: once it has ended
            return
        height = self._viewport_height
        top = min(self.scroll_y, self.scroll_target_y)
        bottom = max(self.scroll_y, self.scroll_target_y) + height

        def lazy_within(screens: float) -> list[Any]:
            lo, hi = top - screens * height, bottom + screens * height
            return [w for w, (y, h) in self._places.items() if y + h >= lo and y <= hi and getattr(w, "lazy", False)]

        if lazy_within(NEAR):
            self._realizing = True
            self.run_worker(self._realize(lazy_within(FAR)), group="realize")

    async def _realize(self, answers: list[Any]) -> None:
        try:
            mounts = [m for m in (answer.realize() for answer in answers) if m is not None]
            if mounts:
                await asyncio.wait_for(asyncio.gather(*(m() for m in mounts)), timeout=30)
            for answer in answers:  # all in one go: one layout
                answer.swap_in()
        except Exception as e:  # the previews stay (they show the same text); no retrying
            self.log.error(f"could not realize answers: {type(e).__name__}: {e}")
            return
        finally:
            self._realizing = False
        self._schedule_realize()  # the view may have moved on meanwhile
