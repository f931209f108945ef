"""Presets and the token views, a part of ChatScreen (tui/screens/chat.py): switching and editing the
preset (f2, f3), the candidates panel (f4), the probability heatmap (f6), inspect mode (f5), and the
screens opened from the chat (the tokens view, compare).

Apart from chat.py so that the screen's file holds its layout, state and Textual handlers; the
mixin uses that state (presets, params, engine, transcript).
"""

from __future__ import annotations

import contextlib
import dataclasses

from textual.widgets import Input

from tiankong.engine.context import drop_turns
from tiankong.engine.errors import TiankongError
from tiankong.engine.remote import RemoteEngine
from tiankong.engine.sampling import SamplingParams
from tiankong.presets import BUNDLED_DIR, Preset
from tiankong.tui.screens.preset_editor import PresetEditor
from tiankong.tui.screens.tokens import TokensScreen
from tiankong.tui.widgets.message import AssistantMessage, UserMessage
from tiankong.tui.widgets.prompt import PromptInput
from tiankong.tui.widgets.status import params_summary, plural

NARROW = 72  # below this many columns the candidates panel hides itself, leaving the transcript room


class ChatViews:
    """ChatScreen's presets and token views (mixed into it; uses its state and widgets)."""

    _narrow = False  # the screen is narrower than NARROW columns: the panel hid itself
    _panel_shown = True  # whether the panel showed before it hid itself (shown again when there is room)
    _panel_before = (True, False)  # (panel shown, narrow) when inspect mode began: esc goes back to it
    _edits_warned: SamplingParams | None = None  # the f3 edits f2 last warned would be dropped

    # ------------------------------------------------------------------ presets

    def _use_preset(self, name: str, quiet: bool = False) -> None:
        self.preset = self.presets[name]
        self.params = self.preset.params
        self._status()
        if self.chat_id is not None:
            self._save(self.store.update_chat, self.chat_id, preset=name)
        if not quiet:
            running = self._answering.preset if self.generating and self._answering is not None else None
            later = f"\nfrom the next answer: this one goes on with {running}" if running else ""
            context, most = self._model_context(), self.params.max_new_tokens
            capped = (
                f"\nits max tokens {most}: used capped at this model's {context}-token context"
                if context is not None and most > context
                else ""
            )
            self.notify(f"{self.preset.description}{capped}{later}", title=f"preset {name}", markup=False)

    def _step_preset(self, step: int) -> None:
        """To the next (or previous) preset. With f3 edits not saved, the first press only warns
        (they would be gone); a second one, with no edit between, switches."""
        if self.params != self.preset.params and self._edits_warned != self.params:
            self._edits_warned = self.params
            self.notify(
                f"f2 again drops them, or f3 then ctrl+n saves them as a preset ({params_summary(self.params, self._model_context())})",
                title=f"{self.preset.name} has unsaved edits",
                severity="warning",
                markup=False,
            )
            return
        names = list(self.presets)
        self._use_preset(names[(names.index(self.preset.name) + step) % len(names)])

    def action_next_preset(self) -> None:
        self._step_preset(1)

    def action_prev_preset(self) -> None:
        self._step_preset(-1)

    def action_use_preset(self, name: str) -> None:
        self._use_preset(name)

    def presets_notice(self) -> None:
        """Say which preset files could not be used (the others work; `tiankong presets` lists them too)."""
        broken = getattr(self.presets, "broken", {})  # load_presets' Presets (a caller may give a dict)
        if broken:
            self.notify(
                "\n".join(broken.values()),
                title=f"{plural(len(broken), 'preset')} not loaded",
                severity="warning",
                timeout=15,
                markup=False,
            )

    def action_edit_preset(self) -> None:
        def edited(params: SamplingParams | Preset | None) -> None:
            if isinstance(params, Preset):  # saved as a preset file: the chat goes on with it
                self.presets[params.name] = params  # (the app's presets: f2 and compare find it too)
                getattr(self.presets, "broken", {}).pop(params.name, None)
                self._use_preset(params.name, quiet=True)
                over = " (over the bundled one)" if (BUNDLED_DIR / f"{params.name}.toml").is_file() else ""
                self.notify(f"{params.source}", title=f"saved preset {params.name}{over}", markup=False)
            elif params is not None and params != self.params:
                self.params = params
                self._status()
                self.notify(
                    f"the next answer uses {params_summary(params, self._model_context())}"
                    + (" (this one goes on as it began)" if self.generating else ""),
                    title=f"preset {self.preset.name} edited",
                    markup=False,
                )

        self.clear_notices()
        self.app.push_screen(PresetEditor(self.preset, self.params, context=self._model_context()), edited)

    def _model_context(self) -> int | None:
        """The model's context in tokens; None while it loads, or where a server does not say."""
        cfg = getattr(self.engine, "cfg", None)
        return cfg.max_seq_len if cfg is not None and getattr(cfg, "context_known", True) else None

    # ------------------------------------------------------------------ token views

    def action_toggle_candidates(self) -> None:
        self.candidates.display = not self.candidates.display

    def on_resize(self) -> None:
        """The panel's width: 42 columns, 34 below 96 (the transcript keeps most of the screen).
        Below NARROW it hides itself, so the transcript stays readable, and comes back when the
        screen widens again; f4 (or f5) still shows it there, over half the width.

        (Textual calls each class's on_resize, the screen's own first: this one, last, decides.)"""
        width = self.size.width
        panel = self.candidates
        narrow = width < NARROW
        if narrow != self._narrow:
            self._narrow = narrow
            if narrow:
                self._panel_shown, panel.display = panel.display, False
            else:
                panel.display = self._panel_shown
        panel.styles.width = width // 2 if narrow else 34 if width < 96 else 42

    def action_heatmap(self) -> None:
        self.heatmap = not self.heatmap
        for w in self.messages:
            if isinstance(w, AssistantMessage):
                w.set_view(heatmap=self.heatmap)
        self.query_one("#heat-legend").display = self.heatmap

    def action_inspect(self) -> None:
        if self.inspected is not None:
            self._leave_inspect()
            return
        answers = [w for w in self.messages if isinstance(w, AssistantMessage) and w.tokens and not w.streaming]
        if not answers:
            self.notify("no finished answer to inspect yet")
            return
        target = self.focused if self.focused in answers else answers[-1]
        target.cursor = min(target.cursor, len(target.tokens) - 1)
        target.focus()
        target.set_view(inspecting=True)

    def on_assistant_message_token_selected(self, event: AssistantMessage.TokenSelected) -> None:
        if self.inspected is None:  # entering inspect mode, which shows the panel: esc puts it back as it was
            self._panel_before = (self.candidates.display, self._narrow)
        if self.inspected is not None and self.inspected is not event.answer:
            self.inspected.set_view(inspecting=False)
        self.inspected = event.answer
        n = len(event.answer.tokens)
        self.candidates.display = True
        self.candidates.show(event.answer.tokens[event.index], f"token {event.index + 1} of {n} · ← → move · esc back")
        self._status("inspecting: ← → (or [ ]) move, home/end, esc returns", short="inspecting · esc returns")

    def _leave_inspect(self) -> None:
        if self.inspected is not None:
            answer, self.inspected = self.inspected, None
            answer.set_view(inspecting=False)
            shown, narrow = self._panel_before
            if narrow == self._narrow:  # (a resize in between has decided for itself)
                self.candidates.display = shown
            if answer.tokens and self.candidates.token is answer.tokens[answer.cursor]:
                self.candidates.show(
                    self.candidates.token, f"token {answer.cursor + 1} of {len(answer.tokens)} · f5 inspects"
                )
            self.query_one("#prompt", Input).focus()
            self._status()

    # ------------------------------------------------------------------ other screens

    def action_tokens(self) -> None:
        if self.engine is None:
            self.notify("the tokens view needs a loaded model", severity="warning")
            return
        if self.still_opening():
            return
        # The next message's prompt, as the status line counts it: the box's text (empty: the least
        # the prompt can be) after the chat, without the turns that no longer fit, a server's too.
        # Without a message to come, a chat whose every turn was out showed whole: its last answer,
        # the last turn, could not go.
        msgs = self.next_conversation(self.query_one("#prompt", PromptInput).text)
        dropped = 0
        if msgs:
            with contextlib.suppress(TiankongError):  # the last message alone too long: shown whole, with the count
                dropped = self._fit(msgs, self._next_at_least())[1]
            msgs = drop_turns(msgs, dropped)
        if isinstance(self.engine, RemoteEngine):  # no tokenizer here: the count, and what the server said
            prompt, ctx = self.engine.encode(messages=msgs), self.engine.cfg
            how = "estimated from characters" if prompt.estimated else "counted by the server"
            of = f" of a {ctx.max_seq_len}-token context" if ctx.context_known else " (context unknown)"
            left = f" (the chat's first {plural(dropped, 'turn')} left out: no longer fit)" if dropped else ""
            self.notify(
                f"{self.engine.name}: the prompt is {len(prompt)} tokens{of}{left}, {how}; the tokens stay there",
                markup=False,
            )
            return
        self.app.push_screen(TokensScreen(self.engine, msgs, dropped, self.params.max_new_tokens))

    def action_compare(self) -> None:
        if self.still_opening():
            return
        user = next((w for w in reversed(self.messages) if isinstance(w, UserMessage) and w.role == "user"), None)
        if user is None:
            self.notify("send a message first: compare runs your last prompt under two presets")
            return
        names = list(self.presets)
        other = names[(names.index(self.preset.name) + 1) % len(names)]
        # This preset as the chat uses it: with its f3 edits, named as the chat stores its answers.
        this = self.preset
        if self.params != this.params:
            this = dataclasses.replace(this, name=f"{this.name} (edited)", params=self.params)
        msgs = self.conversation()
        # The conversation up to and including that prompt.
        cut = max(i for i, m in enumerate(msgs) if m["role"] == "user" and m["content"] == user.content)
        self.app.open_compare([this, other], conversation=msgs[: cut + 1])
