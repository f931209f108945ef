"""The preset editor: change the sampling settings in place, each checked by SamplingParams.

Every field shows its allowed range (`SamplingParams.RANGES`) and the preset's recommended range;
a value outside the recommended range turns yellow, an invalid one is refused with the engine's
own message. Dismisses with the new `SamplingParams`, or None when cancelled.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tiankong.engine.errors import InputError
from tiankong.engine.sampling import SAMPLER_CHAIN, SamplingParams
from tiankong.presets import Preset

FIELDS: tuple[str, ...] = tuple(SamplingParams.RANGES)
_INTS = ("top_k", "max_new_tokens", "seed")


def num(x: float) -> str:
    """2 rather than 2.0; 2**64 - 1 as 2^64-1."""
    if x == 2**64 - 1:
        return "2^64-1"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def parse_field(name: str, text: str) -> Any:
    """Input text -> value for SamplingParams.replace (which checks the range); InputError if not a number."""
    text = text.strip()
    if name == "seed" and text == "":
        return None
    lo, hi, _ = SamplingParams.RANGES[name]
    try:
        return int(text) if name in _INTS else float(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            kind = "an integer" if name in _INTS else "a number"
            empty = " (empty = random)" if name == "seed" else ""
            raise InputError(f"{name} must be {kind} in [{num(lo)}, {num(hi)}]{empty}, got {text!r}") from None
        return value  # e.g. "40.0" for top_k: replace() accepts whole floats and rejects the rest


class PresetEditor(ModalScreen[SamplingParams | None]):
    CSS_PATH = "preset_editor.tcss"
    BINDINGS = [
        Binding("escape", "cancel", "cancel"),
        Binding("ctrl+s", "apply", "apply"),
        Binding("ctrl+r", "reset", "reset to preset"),
        Binding("down", "app.focus_next", "next field", show=False),
        Binding("up", "app.focus_previous", "previous field", show=False),
    ]

    def __init__(self, preset: Preset, params: SamplingParams) -> None:
        super().__init__()
        self.preset, self.params = preset, params
        self._erred = False  # errors are shown (an apply failed): they follow the edits until none is left

    def compose(self) -> ComposeResult:
        with Vertical(id="editor") as box:
            box.border_title = Content(f"preset {self.preset.name}")  # plain: a file name may hold "["
            box.border_subtitle = "enter/ctrl+s apply · esc cancel · ctrl+r reset"
            yield Static(Text(self.preset.description), id="editor-description")
            yield Static(Text.assemble(("sampler chain  ", "dim"), " → ".join(SAMPLER_CHAIN)), id="editor-chain")
            with Grid(id="editor-fields"):
                yield Label("parameter", classes="head")
                yield Label("value", classes="head")
                yield Label("allowed · recommended", classes="head")
                for name in FIELDS:
                    lo, hi, _ = SamplingParams.RANGES[name]
                    value = getattr(self.params, name)
                    yield Label(name, classes="field-name")
                    yield Input(
                        "" if value is None else num(value),
                        id=f"field-{name}",
                        placeholder="random" if name == "seed" else "",
                        compact=True,
                    )
                    rec = self.preset.recommended.get(name)
                    hint = f"[{num(lo)}, {num(hi)}]"
                    if rec:
                        hint += f" · rec {num(rec[0])}–{num(rec[1])}"
                    yield Label(hint, classes="field-hint")
            yield Static(id="editor-help")
            yield Static(id="editor-error")

    def on_mount(self) -> None:
        self.query_one(f"#field-{FIELDS[0]}", Input).focus()
        for name in FIELDS:
            self._mark(name)

    def _input(self, name: str) -> Input:
        return self.query_one(f"#field-{name}", Input)

    def _mark(self, name: str) -> None:
        """Yellow when the value is outside the preset's recommended range."""
        rec = self.preset.recommended.get(name)
        try:
            value = parse_field(name, self._input(name).value)
        except InputError:
            value = None
        outside = rec is not None and value is not None and not rec[0] <= value <= rec[1]
        self._input(name).set_class(outside, "-outside")

    def on_descendant_focus(self, event: Any) -> None:
        widget = getattr(event, "widget", None)
        if isinstance(widget, Input) and widget.id and widget.id.startswith("field-"):
            name = widget.id.removeprefix("field-")
            self.query_one("#editor-help", Static).update(
                Text.assemble((f"{name}: ", "bold"), SamplingParams.RANGES[name].description)
            )

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("field-"):
            event.input.remove_class("-invalid")
            self._mark(event.input.id.removeprefix("field-"))
            if self._erred:  # the errors shown follow the edits: a fixed value's goes at once
                self._error(self._check()[1], focus=False)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_apply()

    def action_apply(self) -> None:
        """Apply, or say what is wrong with every field that is, in the order shown."""
        params, errors = self._check()
        if params is None:
            self._error(errors)
            return
        self.dismiss(params)

    def _check(self) -> tuple[SamplingParams | None, list[str]]:
        """The fields as SamplingParams, or None and what is wrong with each field that is."""
        changes: dict[str, Any] = {}
        errors: list[str] = []
        for name in FIELDS:
            try:
                changes[name] = parse_field(name, self._input(name).value)
                self.params.replace(**{name: changes[name]})  # this field's range alone
            except InputError as e:
                errors.append(str(e))
        params = None
        try:
            params = self.params.replace(**changes) if not errors else None
        except InputError as e:  # the fields together (each alone was in range)
            errors.append(str(e))
        return params, errors

    def _error(self, messages: list[str], focus: bool = True) -> None:
        """Show `messages` (none: the errors are gone) and mark the fields they name."""
        self._erred = bool(messages)
        self.query_one("#editor-error", Static).update(Text("\n".join(messages), style="bold red"))
        bad = [n for n in FIELDS if any(m.startswith(n + " ") for m in messages)]
        for name in FIELDS:
            self._input(name).set_class(name in bad, "-invalid")
        if bad and focus:
            self._input(bad[0]).focus()

    def action_reset(self) -> None:
        for name in FIELDS:
            value = getattr(self.preset.params, name)
            self._input(name).value = "" if value is None else num(value)
        self._error([])

    def action_cancel(self) -> None:
        self.dismiss(None)
