"""The preset editor: change the sampling settings in place, each checked by SamplingParams.

Every number field shows its allowed range (`SamplingParams.RANGES`) and the preset's recommended
range (none where the preset recommends none); a value outside the recommended range turns yellow, an
invalid one is refused with the engine's own message. Where the editor is told the model's context,
max tokens' ranges go no higher than it, and a value above it is refused as one outside the allowed
range is: no answer is longer than the context. A preset's max tokens above the context (creative's
1024 on a 512-token model) is used capped, so the field shows it capped and says so; left at that,
the value stays the preset's (the same answers, and no "(edited)" for an edit nobody made).

The stop strings are one field, written as a list of double-quoted strings with JSON's escapes
(`["\\n\\n", "User:"]`, empty = none): a newline or a quote can be seen and typed on one line, and
the form is the one the preset file's `stop = [...]` line has (TOML's basic strings take the same
escapes). Dismisses with the new `SamplingParams` (apply: for this chat only), the `Preset` the values
were saved as (save as: a NAME.toml in the user's presets folder, presets.save_preset), or None when
cancelled.

The box scrolls when the terminal is too short for it, and the errors stay reachable: at most
MAX_ERROR_LINES are listed, and a focused field that is marked invalid, its error left out of the
list, shows that error in the help line (one the list shows is not said twice).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tiankong.engine.errors import InputError, quoted
from tiankong.engine.sampling import SAMPLER_CHAIN, SamplingParams
from tiankong.presets import Preset, number, save_preset

FIELDS: tuple[str, ...] = tuple(SamplingParams.RANGES)  # the number fields, in the order shown
EDITED: tuple[str, ...] = (*FIELDS, "stop")  # every field, as shown: the stop strings under the numbers
_INTS = ("top_k", "max_new_tokens", "seed")
STOP_EXAMPLE = '["\\n\\n", "User:"]'
STOP_HELP = (
    "the answer ends at the first of these it writes (cut from it); double-quoted strings in a list, "
    f'\\n a newline, \\" a quote, e.g. {STOP_EXAMPLE}; empty = none'
)


MAX_ERROR_LINES = 3  # more than this: the first ones and a count (an 80x24 terminal shows them all)
# What a number field takes: plain decimal notation, an exponent allowed. Not Python's extras:
# "1_0" (10), "inf", "nan", "0x10", other scripts' digits.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)

num = number  # 2 rather than 2.0, 1000000 rather than 1e+06: as `tiankong presets NAME` writes them


def stop_text(stop: tuple[str, ...]) -> str:
    """Stop strings as the stop field shows them: a list of double-quoted strings, each character
    that would not show (a newline, a tab, DEL, a zero-width space) as its escape; "" for none.
    parse_stop reads it back to the same strings."""
    if not stop:
        return ""
    return "[" + ", ".join(_quoted(s) for s in stop) + "]"


def _quoted(text: str) -> str:
    # json.dumps escapes the quote, the backslash and C0 controls; the other characters that do not
    # print (DEL, C1, U+2028, format characters) become \uXXXX, those past U+FFFF a surrogate pair.
    out = []
    for ch in json.dumps(text, ensure_ascii=False):
        if ch.isprintable():
            out.append(ch)
        else:
            units = ch.encode("utf-16-be")
            out += [f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2)]
    return "".join(out)


def parse_stop(text: str) -> tuple[str, ...]:
    """The stop field's text -> the stop strings ("" -> none; one quoted string alone is a list of
    one); InputError naming what is wrong and the form to use."""
    text = text.strip()
    if not text:
        return ()
    form = f"a list of double-quoted strings, e.g. {STOP_EXAMPLE} (empty = none)"
    try:
        value = json.loads(text, strict=False)  # strict=False: a tab pasted inside the quotes is a tab
    except json.JSONDecodeError as e:
        where = f"{e.msg[0].lower()}{e.msg[1:]} at character {e.pos + 1}"
        raise InputError(f"stop must be {form}, got {quoted(text, 60)} ({where})") from None
    except RecursionError:
        raise InputError(f"stop must be {form}, got lists nested too deeply") from None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InputError(f"stop must be {form}, got {quoted(text, 60)}")
    if not all(value):
        raise InputError('stop strings cannot be empty ("" would end every answer at once); remove the ""')
    return tuple(value)


def field_text(name: str, value: Any) -> str:
    """A field's value as its input shows it."""
    if name == "stop":
        return stop_text(value)
    return "" if value is None else num(value)


def parse_field(name: str, text: str, allowed: tuple[float, float] | None = None) -> Any:
    """Input text -> value for SamplingParams.replace (which checks the range); InputError if not a
    number (or, for stop, not a list of quoted strings: parse_stop). allowed: the range the error
    names (the editor's for max tokens, no more than the model's context); SamplingParams' by default."""
    if name == "stop":
        return parse_stop(text)
    text = text.strip()
    if name == "seed" and text == "":
        return None
    lo, hi = allowed or SamplingParams.RANGES[name][:2]
    if not _NUMBER.fullmatch(text):
        kind = "an integer" if name in _INTS else "a number"
        empty = " (empty = random)" if name == "seed" else ""
        raise InputError(f"{name} must be {kind} in [{num(lo)}, {num(hi)}]{empty}, got {text!r}")
    if name in _INTS and text.lstrip("+-").isdigit():
        return int(text)
    value = float(text)
    if value in (float("inf"), float("-inf")):  # "1e309": past any float, so past every range
        raise InputError(
            f"{name} must be in [{num(lo)}, {num(hi)}], got {text} (too {'large' if value > 0 else 'small'})"
        )
    return value  # e.g. "40.0" for top_k: replace() accepts whole floats and rejects the rest


class PresetEditor(ModalScreen["SamplingParams | Preset | None"]):
    CSS_PATH = "preset_editor.tcss"
    BINDINGS = [
        Binding("escape", "cancel", "cancel"),
        Binding("ctrl+s", "apply", "apply"),
        Binding("ctrl+n", "save_as", "save as preset"),
        Binding("ctrl+r", "reset", "reset to preset"),
        Binding("down", "app.focus_next", "next field", show=False),
        Binding("up", "app.focus_previous", "previous field", show=False),
    ]

    def __init__(
        self, preset: Preset, params: SamplingParams, user_dir: Path | None = None, context: int | None = None
    ) -> None:
        super().__init__()
        self.preset, self.params = preset, params
        self.context = context  # the model's context in tokens, where known: no answer is longer
        # The max tokens it came with, where that is over the context: shown capped (_shown), kept if left so
        self._capped = self._over(params)
        self.user_dir = user_dir  # where save as writes (None: presets.user_presets_dir())
        self._erred = False  # errors are shown (an apply failed): they follow the edits until none is left
        self._errors: dict[str, str] = {}  # field -> its error, as last shown
        self._listed: list[str] = []  # the errors the error lines show (past MAX_ERROR_LINES, not all)

    def compose(self) -> ComposeResult:
        with Vertical(id="editor") as box:
            box.border_title = Content(f"preset {self.preset.name}")  # plain: a file name may hold "["
            box.border_subtitle = "enter/ctrl+s apply · ctrl+n save as · esc cancel · ctrl+r reset"
            yield Static(Text(self.preset.description), id="editor-description")
            yield Static(Text.assemble(("sampler chain  ", "dim"), " → ".join(SAMPLER_CHAIN)), id="editor-chain")
            with Grid(id="editor-fields"):
                yield Label("parameter", classes="head")
                yield Label("value", classes="head")
                yield Label("allowed · recommended", classes="head")
                for name in FIELDS:
                    lo, hi = self._allowed(name)
                    yield Label(name, classes="field-name")
                    yield Input(
                        field_text(name, self._shown(name, getattr(self.params, name))),
                        id=f"field-{name}",
                        placeholder="random" if name == "seed" else "",
                        compact=True,
                    )
                    rec = self._recommended(name)
                    hint = f"[{num(lo)}, {num(hi)}]"
                    if rec:
                        hint += f" · rec {num(rec[0])}" + (f"–{num(rec[1])}" if rec[1] != rec[0] else "")
                    yield Label(hint, classes="field-hint")
                # Wider than a number: its input takes the value and hint columns (the help line says the form).
                yield Label("stop", classes="field-name")
                yield Input(
                    stop_text(self.params.stop),
                    id="field-stop",
                    placeholder=f"none · e.g. {STOP_EXAMPLE}",
                    compact=True,
                )
                yield Label("save as", classes="field-name")
                yield Input(id="save-name", placeholder="name", compact=True)
                yield Label("a new name · its own overrides it", classes="field-hint")
            yield Static(id="editor-help")
            yield Static(id="editor-error")

    def on_mount(self) -> None:
        self.query_one(f"#field-{FIELDS[0]}", Input).focus()
        for name in EDITED:
            self._mark(name)

    def _input(self, name: str) -> Input:
        return self.query_one(f"#field-{name}", Input)

    def _allowed(self, name: str) -> tuple[float, float]:
        """The range `name` takes: SamplingParams'; for max_new_tokens no more than the model's context."""
        lo, hi, _ = SamplingParams.RANGES[name]
        if name == "max_new_tokens" and self.context:
            hi = min(hi, self.context)
        return lo, hi

    def _over(self, params: SamplingParams) -> int | None:
        """params' max tokens where it is over the model's context, else None."""
        return params.max_new_tokens if self.context and params.max_new_tokens > self.context else None

    def _shown(self, name: str, value: Any) -> Any:
        """A field's value as the editor opens (or resets) with it: max tokens capped at the context."""
        if name == "max_new_tokens" and self.context and value > self.context:
            return self.context
        return value

    def _value(self, name: str, text: str) -> Any:
        """A field's text as its value for SamplingParams, refused in the range the field shows: for max
        tokens, the model's context (an empty field said "[1, 1000000]" beside "[1, 512]"). The capped
        value shown for a preset's larger max tokens is that one (it is what was there)."""
        value = parse_field(name, text, self._allowed(name) if name in FIELDS else None)
        if name != "max_new_tokens" or not self.context:
            return value
        lo, hi = self._allowed(name)
        if not lo <= value <= hi or value != int(value):
            why = f" (no answer is longer than the model's {self.context}-token context)" if value > hi else ""
            kind = " an integer" if value != int(value) else ""
            raise InputError(f"max_new_tokens must be{kind} in [{num(lo)}, {num(hi)}], got {num(value)}{why}")
        return self._capped if self._capped is not None and value == self.context else value

    def _recommended(self, name: str) -> tuple[float, float] | None:
        """The preset's recommended range for `name`; for max_new_tokens no more than the model's
        context (a preset's "128–2048" beside a 512-token model recommended what it cannot write)."""
        rec = self.preset.recommended.get(name)
        if rec and name == "max_new_tokens" and self.context:
            rec = (min(rec[0], self.context), min(rec[1], self.context))
        return rec

    def _mark(self, name: str) -> None:
        """Yellow when the value is outside the (shown) recommended range."""
        rec = self._recommended(name)
        try:
            value = parse_field(name, self._input(name).value)
        except InputError:
            value = None
        outside = rec is not None and value is not None and not rec[0] <= value <= rec[1]
        self._input(name).set_class(outside, "-outside")

    def on_descendant_focus(self, event: Any) -> None:
        self._help(getattr(event, "widget", None))

    def _help(self, widget: Any) -> None:
        """The help line for the focused widget: what a field does, or its error when it is marked."""
        help_line = self.query_one("#editor-help", Static)
        if isinstance(widget, Input) and widget.id == "save-name":
            help_line.update(
                Text.assemble(
                    ("save as: ", "bold"), "enter writes these values as a preset file in your presets folder"
                )
            )
        elif isinstance(widget, Input) and widget.id and widget.id.startswith("field-"):
            name = widget.id.removeprefix("field-")
            # An error the list left out; one it shows is not said twice (the line under it)
            if widget.has_class("-invalid") and name in self._errors and self._errors[name] not in self._listed:
                help_line.update(Text(self._errors[name], style="bold red"))
            else:
                what = STOP_HELP if name == "stop" else SamplingParams.RANGES[name].description
                if name == "max_new_tokens" and self._capped is not None:
                    what += f" (the preset's {self._capped}, used capped at the model's {self.context}-token context)"
                help_line.update(Text.assemble((f"{name}: ", "bold"), what))

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.input.id == "save-name" and event.input.has_class("-invalid"):
            event.input.remove_class("-invalid")
            self._say("")
        if event.input.id and event.input.id.startswith("field-"):
            event.input.remove_class("-invalid")
            self._mark(event.input.id.removeprefix("field-"))
            if self._erred:  # the errors shown follow the edits: a fixed value's goes at once
                self._error(self._check()[1], focus=False)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "save-name":
            self._save(event.value)
        else:
            self.action_apply()

    def action_save_as(self) -> None:
        """To the name field; there (with a name typed), save."""
        box = self.query_one("#save-name", Input)
        if self.focused is box and box.value.strip():
            self._save(box.value)
        else:
            box.focus()

    def _save(self, name: str) -> None:
        """Write the values as the preset `name` and dismiss with it; else say why not, in the box."""
        params, errors = self._check()
        if params is None:
            self._error(errors)
            return
        box = self.query_one("#save-name", Input)
        if not name.strip():
            self._say("type the new preset's name, then enter")
            box.focus()
            return
        try:
            saved = save_preset(name, params, self.preset, self.user_dir)
        except InputError as e:  # a clash, an unsafe name, a folder that cannot be written
            self._say(str(e))
            box.add_class("-invalid")
            box.focus()
            return
        self.dismiss(saved)

    def _say(self, message: str) -> None:
        self.query_one("#editor-error", Static).update(Text(message, style="bold red"))
        self.query_one("#editor-error", Static).scroll_visible(animate=False)

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
        for name in EDITED:
            try:
                changes[name] = self._value(name, self._input(name).value)
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
        """Show `messages` (none: the errors are gone) and mark the fields they name. Past
        MAX_ERROR_LINES the list is cut to a count: each field left out is marked, and says its
        error when focused."""
        self._erred = bool(messages)
        self._errors = {n: m for n in EDITED for m in messages if m.startswith(n + " ")}
        shown = messages
        if len(messages) > MAX_ERROR_LINES:
            rest = len(messages) - MAX_ERROR_LINES + 1
            shown = [*messages[: MAX_ERROR_LINES - 1], f"… and {rest} more: each red field says its own when focused"]
        self._listed = shown
        self.query_one("#editor-error", Static).update(Text("\n".join(shown), style="bold red"))
        for name in EDITED:
            self._input(name).set_class(name in self._errors, "-invalid")
        bad = [n for n in EDITED if n in self._errors]
        if bad and focus:
            self._input(bad[0]).focus()
            self.query_one("#editor-error", Static).scroll_visible(animate=False)
        self._help(self.focused)

    def action_reset(self) -> None:
        self._capped = self._over(self.preset.params)
        for name in EDITED:
            self._input(name).value = field_text(name, self._shown(name, getattr(self.preset.params, name)))
        self._error([])

    def action_cancel(self) -> None:
        self.dismiss(None)
