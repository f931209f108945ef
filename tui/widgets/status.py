"""The one-line status bar: model, what the app is doing, and the preset with its settings."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.widgets import Static


def plural(n: int, word: str) -> str:
    """'1 message', '3 messages'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def params_summary(params: Any, context: int | None = None) -> str:
    """The settings that shape sampling, short: 'T 0.7 · top-k 40 · top-p 0.9 · seed 0'. With the
    model's `context` (tokens), max tokens capped at it, as answers are and as f3 shows it: a
    preset's 512 read "max 512" beside a 256-token model whose f3 said 256."""
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
    parts.append(f"max {min(params.max_new_tokens, context or params.max_new_tokens)}")
    parts.append("seed random" if params.seed is None else f"seed {params.seed}")
    return " · ".join(parts)


# Shorter names for the settings, for a status line that does not fit: "T 0.7 top-k 40" -> "T0.7 k40".
_SHORT = [
    ("top-k ", "k"),
    ("top-p ", "p"),
    ("min-p ", "min-p"),
    ("T ", "T"),
    ("max ", "max"),
    ("rep ", "rep"),
    ("pres ", "pres"),
    ("freq ", "freq"),
]

FINISH_WORDS = {
    "eos": "end of text",
    "stop": "stop string",
    "length": "max tokens",
    "context": "context full",
    "cancelled": "stopped",  # esc, a quit (ctrl+q, a signal), a skip or a new round in compare
    "error": "cut short by an error",  # the server went away or the engine failed part-way: what came is kept
}


def finish_words(reason: str) -> str:
    """How an answer's finish_reason reads on screen, the same live and reopened, in chat and compare."""
    return FINISH_WORDS.get(reason, reason)


class StatusBar(Static):
    """`set(model=..., preset=..., settings=..., state=..., error=...)` changes any part.

    Everything is kept at any width: when the line does not fit, the settings lose their separators,
    then the model name goes, then the settings take their short names ("T0.7 k40 p0.9 max512
    seed random"), then the state its short form (`short_state`: "ready · 5 turns out" for "ready ·
    next message: 5 turns out of context"), the model name back where it fits beside that (it went
    to make room for the long words only: at 120 columns a chat past three quarters of its context
    showed the short state and no model), then a long preset name is cut ("a-very-long-na…
    (edited)", at least PRESET_MIN cells of it kept, and a shorter name whole), then the state (at
    least STATE_MIN cells kept; an error is kept whole); only then is the end cut with "…". A preset
    name never takes more than PRESET_MAX cells."""

    DEFAULT_CSS = "StatusBar { height: 1; width: 1fr; }"
    PRESET_MAX = 40  # cells of a preset name shown at most, " (edited)" included: the rest of the line stays
    STATE_MIN = 12  # cells of a long state kept, "…" included, before the settings are cut
    PRESET_MIN = (
        16  # cells of a long preset name kept, "…" included, before the settings are cut (a shorter name stays)
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parts = {"model": "", "preset": "", "settings": "", "state": "", "short_state": "", "error": False}

    def set(self, **parts: Any) -> None:
        """Change parts; a state set without its short form is its own."""
        if "state" in parts and "short_state" not in parts:
            parts["short_state"] = parts["state"]
        self._parts.update(parts)
        self.refresh()

    def _line(self, model: bool, settings: str, state: str, preset: str | None = None) -> Text:
        p = self._parts
        preset = cut_name(p["preset"], self.PRESET_MAX) if preset is None else preset
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(" 填空 ", style="bold reverse")
        if model:
            out.append(f" {p['model']} ", style="bold")
        out.append("│ " if model else " ", style="dim")
        out.append(state, style="bold red" if p["error"] else "")
        out.append(" │ ", style="dim")
        out.append(preset, style="bold")
        out.append(f" {settings}", style="dim")
        return out

    def render(self) -> Text:
        settings, state = self._parts["settings"], self._parts["state"]
        compact = settings.replace(" · ", " ")
        short = compact
        for long, abbreviation in _SHORT:
            short = short.replace(long, abbreviation)
        lines = [
            self._line(True, settings, state),
            self._line(True, compact, state),
            self._line(False, compact, state),
            self._line(False, short, state),
            self._line(True, short, self._parts["short_state"]),
            self._line(False, short, self._parts["short_state"]),
        ]
        fits = next((line for line in lines if line.cell_len <= self.size.width), None)
        if fits is not None:
            return fits
        preset = cut_name(self._parts["preset"], self.PRESET_MAX)
        room = self.size.width - (lines[-1].cell_len - cell_len(preset))
        least = self.PRESET_MIN + (len(EDITED) if preset.endswith(EDITED) else 0)
        preset = cut_name(preset, max(room, least))
        line = self._line(False, short, self._parts["short_state"], preset)
        # Then the state is cut ("inspecting: ← → (or [ ]) mo…"), down to STATE_MIN cells, before the
        # settings: cut at the end, "seed random" read "seed", and a long state left no settings at all.
        # Not an error: what went wrong, and what to do, matters more than the settings.
        state = self._parts["short_state"]
        over = line.cell_len - self.size.width
        if over > 0 and not self._parts["error"] and cell_len(state) > self.STATE_MIN:
            state = cut_state(state, max(self.STATE_MIN, cell_len(state) - over))
            line = self._line(False, short, state, preset)
        return line


def cut_state(state: str, width: int) -> str:
    """`state` in at most `width` cells: its leading " · " parts that fit, whole ("inspecting" for
    "inspecting · esc returns", where the footer says what esc does; it read "inspecting · e…"), else
    cut with "…"."""
    if cell_len(state) <= width:
        return state
    parts = state.split(" · ")
    for n in range(len(parts) - 1, 0, -1):
        kept = " · ".join(parts[:n])
        if cell_len(kept) <= width:
            return kept
    return cut_name(state, width)


EDITED = " (edited)"  # how the chat marks a preset changed with f3


def cut_name(preset: str, width: int) -> str:
    """`preset` in at most `width` cells: a long name cut with "…", its " (edited)" kept."""
    if cell_len(preset) <= width:
        return preset
    name, edited = (preset.removesuffix(EDITED), EDITED) if preset.endswith(EDITED) else (preset, "")
    return set_cell_size(name, max(1, width - cell_len(edited) - 1)).rstrip() + "…" + edited
