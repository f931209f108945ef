"""The one-line status bar: model, what the app is doing, and the preset with its settings."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static


def params_summary(params: Any) -> str:
    """The settings that shape sampling, short: 'T 0.7 · top-k 40 · top-p 0.9 · seed 0'."""
    parts = ["greedy" if params.temperature == 0 else f"T {params.temperature:g}"]
    if params.top_k:
        parts.append(f"top-k {params.top_k}")
    if params.top_p < 1:
        parts.append(f"top-p {params.top_p:g}")
    if params.min_p > 0:
        parts.append(f"min-p {params.min_p:g}")
    if params.repetition_penalty != 1:
        parts.append(f"rep {params.repetition_penalty:g}")
    if params.presence_penalty:
        parts.append(f"pres {params.presence_penalty:g}")
    if params.frequency_penalty:
        parts.append(f"freq {params.frequency_penalty:g}")
    parts.append(f"max {params.max_new_tokens}")
    parts.append("seed random" if params.seed is None else f"seed {params.seed}")
    return " · ".join(parts)


class StatusBar(Static):
    """`set(model=..., preset=..., settings=..., state=..., error=...)` changes any part."""

    DEFAULT_CSS = "StatusBar { height: 1; width: 1fr; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parts = {"model": "", "preset": "", "settings": "", "state": "", "error": False}

    def set(self, **parts: Any) -> None:
        self._parts.update(parts)
        p = self._parts
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(" 填空 ", style="bold reverse")
        out.append(f" {p['model']} ", style="bold")
        out.append("│ ", style="dim")
        out.append(p["state"], style="bold red" if p["error"] else "")
        out.append(" │ ", style="dim")
        out.append(p["preset"], style="bold")
        out.append(f" {p['settings']}", style="dim")
        self.update(out)
