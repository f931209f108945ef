"""A footer that always fits on its line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.cells import cell_len
from textual import events
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class FittingFooter(Footer):
    """Textual's Footer, but when its keys do not fit the width it leaves out those whose actions
    are in `drop` (the first named goes first) until the rest does, rather than cutting the line
    ("^n ne▏"); on a screen too narrow even then, the last keys go too (the command palette's
    stays). Left-out keys still work; f1 and the command palette list every key."""

    def __init__(self, *children: Widget, drop: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*children, **kwargs)
        self.drop = tuple(drop)
        self._laid_out_for = 0  # the width the keys were chosen for

    @staticmethod
    def _cells(keys: Iterable[FooterKey]) -> int:
        # A key draws " key " then "description " (FooterKey's padding, not compact; the command
        # palette's, docked right, draws its border in place of the first space).
        return sum(cell_len(k.key_display) + cell_len(k.description) + 3 for k in keys)

    def compose(self) -> Iterable[Widget]:
        keys = list(super().compose())  # FooterKeys (no key groups on these screens)
        width = self._laid_out_for = self.size.width or self.app.size.width
        for action in self.drop:
            if self._cells(keys) <= width:
                break
            keys = [k for k in keys if getattr(k, "action", None) != action]
        while self._cells(keys) > width and len(keys) > 2:  # still too wide: the last keys go
            last = max(i for i, k in enumerate(keys) if not k.has_class("-command-palette"))
            keys.pop(last)
        yield from keys

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._laid_out_for:
            self.call_after_refresh(self.recompose)
