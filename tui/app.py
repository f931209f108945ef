"""The playground app: loads the model in a worker, holds the app-wide keys and the command
palette, and opens the chat screen (and the compare screen for `tiankong compare`).

The store is opened by `run_app` before the UI starts: a database that cannot be written stops
the command with its one-line message (the CLI prints it, exit code 2) rather than letting anyone
chat or vote into something that is not being saved. So does a model's tokenizer that is refused
(checked_tokenizers: loaded there, and handed to Engine.load so as not to load it twice), as
`generate` refuses it. A model that fails to load otherwise does not stop the app: the message
shows in a notification and the status line, and stored chats can still be opened, read and
exported.

SIGTERM (kill) and SIGHUP (the terminal window closed) end the app as ctrl+q does, for every
command that runs it (chat, compare, rank): Textual restores the terminal, the chat stores the
answer being generated, and the command exits with 128 + the signal's number (143, 129).
"""

from __future__ import annotations

import asyncio
import gc
import getpass
import os
import signal
import sys
import threading
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from tiankong.engine.errors import InputError, ModelLoadError, RemoteError, TiankongError
from tiankong.engine.model_names import model_key
from tiankong.engine.remote import RemoteModel
from tiankong.presets import DEFAULT_PRESET, Preset, load_presets
from tiankong.tui import terminal
from tiankong.tui.cli_env import building_line, decode_notice, need_terminal
from tiankong.tui.screens.help import HelpScreen
from tiankong.tui.streaming import on_engine_thread

if TYPE_CHECKING:  # imported when the chat opens: it brings in the engine (torch), which `tiankong rank` never needs
    from tiankong.tui.screens.chat import ChatScreen


def default_rater() -> str:
    """Who signs votes when --rater is not given: $TIANKONG_RATER, else the login name."""
    if os.environ.get("TIANKONG_RATER"):
        return os.environ["TIANKONG_RATER"]
    try:
        return getpass.getuser() or "anonymous"
    except (KeyError, OSError):
        return "anonymous"


def checked_tokenizers(models: list[Path | RemoteModel], env_model: Path | RemoteModel | None = None) -> list[Any]:
    """Each local model's tokenizer, loaded and checked (load_checked_tokenizer) before the app opens,
    None for a server's: a tokenizer that is refused stops the command with its one line, as in
    `generate`, not an app that can only say "model not loaded"; so does a config (or a GGUF file's
    metadata) that builds no model. The app's load takes the tokenizers over. `env_model`: the model
    TIANKONG_MODEL named, whose line names the variable (_failure_line)."""
    from tiankong.engine.tokenizer import load_checked_tokenizer

    tokenizers = []
    for m in models:
        try:
            tokenizers.append(None if isinstance(m, RemoteModel) else load_checked_tokenizer(m, config=True))
        except TiankongError as e:
            raise type(e)(_failure_line(e, m, env_model)) from None
    return tokenizers


def _failure_line(e: TiankongError, model: Path | RemoteModel, env_model: Path | RemoteModel | None) -> str:
    """`e`'s line about `model`, which could not be loaded (or connected to); where TIANKONG_MODEL named
    it (`env_model`, not a --model typed), with the variable and the fix, as the CLI says it: a variable
    set long ago, in a shell profile, is forgotten."""
    if env_model is None or model != env_model or not isinstance(e, (ModelLoadError, RemoteError)):
        return str(e)
    from tiankong.tui.cli_app import named_by_env

    return named_by_env(str(e))


def check_templates(models: list[Path | RemoteModel], tokenizers: list[Any]) -> None:
    """A local model whose own chat template cannot be used (info says "broken") stops the command
    with its one line and the fix, before the app opens: the chat (and compare) reads every message
    through it, and only raw mode, which the playground has none of, would do without it. Called
    without --chat-template, which replaces the model's template."""
    from tiankong.engine.chat import RAW_MODE_FIX, ChatTemplate
    from tiankong.engine.errors import ChatTemplateError

    for model, tokenizer in zip(models, tokenizers, strict=True):
        if isinstance(model, RemoteModel):
            continue
        template = ChatTemplate.from_folder(model, tokenizer)
        if template is not None and template.broken is not None:
            raise ChatTemplateError(template.broken.replace(RAW_MODE_FIX, ""))


def _model_id(model: Path | RemoteModel) -> str:
    """How chats name the model: its resolved folder, or the server's URL (the chat screen names
    the server's model once connected); a GGUF file keeps its own name, not its blob's (model_key)."""
    return model.url if isinstance(model, RemoteModel) else model_key(model)


# How long a thread may hold the GIL while another waits (Python's default: 5 ms), while the app runs.
# The generation worker lets the GIL go at every torch op and compiled call (a few dozen a token)
# and each time waits for it back; with the UI thread drawing a frame, that wait was the whole
# interval. bench/tui_stream.py on the 135M Q4_0 GGUF (2 cores): 136 tok/s at 5 ms with 30 frames a
# second, 184 at 0.1 ms with 15 (streaming.FRAME_S); the engine alone ~290 (bench/README.md).
GIL_SWITCH_S = 1e-4

# Here, not only in tui.widgets (imported when the chat mounts): the driver binds its SIGCONT handler
# when the app starts, and one bound before the guard was in place started a second input thread
# on each `kill -CONT`, and ctrl+q then hung. Every command that runs an app imports this module.
terminal.install()

# Handled like ctrl+q. Their default action ends the process at once: the terminal stays in the
# app's modes (alternate screen, mouse reporting, no cursor) and the answer being generated is lost.
QUIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class TiankongApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "tiankong 填空"
    BINDINGS = [
        Binding("f1", "help", "keys", tooltip="this list of keys"),
        Binding("ctrl+g", "votes", "votes", show=False, tooltip="the stored preference votes and their stats"),
    ]

    def __init__(
        self,
        model_dir: Path | str | RemoteModel | None,
        *,
        store: Any,
        preset: str = DEFAULT_PRESET,
        device: str = "auto",
        dtype: str = "auto",
        mode: str = "chat",
        compare_presets: list[str] | None = None,
        compare_models: list[Path | RemoteModel] | None = None,
        rater: str | None = None,
        export_dir: Path | None = None,
        show_timing: bool = True,
        presets: dict[str, Preset] | None = None,
        chat_template: Path | None = None,
        tokenizers: list[Any] | None = None,
        env_model: Path | RemoteModel | None = None,
    ) -> None:
        super().__init__()
        self.env_model = env_model  # the model TIANKONG_MODEL named, if one: its load failure says so
        self.chat_template = chat_template  # --chat-template: used instead of each model's own
        self.presets = presets if presets is not None else load_presets()
        if preset not in self.presets:
            raise InputError(f"preset must be one of {', '.join(sorted(self.presets))}, got {preset!r}")
        if mode not in ("chat", "compare"):
            raise InputError(f"mode must be chat or compare, got {mode!r}")
        self.store, self.mode, self.device, self.dtype = store, mode, device, dtype
        # Folders, or servers (RemoteModel: --model http://...), connected to instead of loaded.
        self.model_dirs = [
            m if isinstance(m, (RemoteModel, Path)) else Path(m)  # a Path keeps its name (ollama:NAME:TAG)
            for m in (compare_models or ([model_dir] if model_dir is not None else []))
        ]
        self.model_id = _model_id(self.model_dirs[0]) if self.model_dirs else "no model"
        # Each model's tokenizer where it was loaded before the app (checked_tokenizers), else None.
        self.tokenizers = list(tokenizers) if tokenizers is not None else [None] * len(self.model_dirs)
        if len(self.tokenizers) != len(self.model_dirs):
            raise InputError(f"tokenizers must give one per model ({len(self.model_dirs)}), got {len(self.tokenizers)}")
        self.start_preset = preset
        names = list(self.presets)
        self.compare_presets = compare_presets or [preset, names[(names.index(preset) + 1) % len(names)]]
        self.rater = rater or default_rater()
        # ctrl+s exports go to the data folder's exports/ (beside tiankong.db), never the current directory.
        self.export_dir = Path(export_dir) if export_dir is not None else Path(store.path).parent.absolute() / "exports"
        self.show_timing = show_timing
        self.engines: list[Any] = []
        self.engine_error: str | None = None
        self._gc_frozen = False
        self._switch_interval: float | None = None  # Python's, to give back on unmount
        self.chat: ChatScreen | None = None  # pushed on mount; none in `tiankong rank`
        self._leaving = threading.Event()  # set on quit: a server's connect that waits ends at once

    async def run_async(self, **kwargs: Any) -> Any:
        """Textual's run_async (what run() calls; run_test does not), with QUIT_SIGNALS handled."""
        loop = asyncio.get_running_loop()
        caught = []
        for sig in QUIT_SIGNALS:
            try:  # the handler runs as a callback on this loop, never inside the signal handler
                loop.add_signal_handler(sig, self._signalled, sig)
                caught.append(sig)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread; no Unix signals
                pass
        try:
            return await super().run_async(**kwargs)
        finally:
            for sig in caught:
                loop.remove_signal_handler(sig)

    def _signalled(self, sig: signal.Signals) -> None:
        self.exit(return_code=128 + sig)

    def exit(self, result: None = None, return_code: int = 0, message: Any = None) -> None:
        """Quit (ctrl+q, a signal, ...). An answer being generated stops at the token it is on, now:
        Textual cancels workers only once its message loop has ended, some tokens later, and the
        chat stores what was generated as it unmounts."""
        if self.chat is not None:  # none in `tiankong rank`, nor before mounting
            self.chat.stop_answer()
        self._leaving.set()
        super().exit(result, return_code, message)

    @property
    def engine(self) -> Any:
        return self.engines[0] if self.engines else None

    def on_mount(self) -> None:
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        from tiankong.tui.screens.chat import ChatScreen

        # Pushed rather than returned from get_default_screen: Textual loads a screen's CSS_PATH on push.
        self.chat = ChatScreen(
            store=self.store,
            presets=self.presets,
            preset=self.start_preset,
            model_id=self.model_id,
            export_dir=self.export_dir,
            show_timing=self.show_timing,
        )
        self.push_screen(self.chat)
        self._load()

    # ------------------------------------------------------------------ loading the model

    @work(thread=True, exclusive=True, group="load")
    def _load(self) -> None:
        from tiankong.engine.engine import Engine
        from tiankong.engine.remote import RemoteEngine

        if not self.model_dirs:
            self.call_from_thread(self._load_failed, "no model given: pass --model DIR or set TIANKONG_MODEL")
            return
        self._say_builds()
        engines = []
        for folder, tokenizer in zip(self.model_dirs, self.tokenizers, strict=True):
            try:
                engines.append(
                    RemoteEngine.connect(folder.url, folder.api_key, cancel=self._leaving)
                    if isinstance(folder, RemoteModel)
                    else on_engine_thread(
                        Engine.load,
                        folder,
                        device=self.device,
                        dtype=self.dtype,
                        chat_template=self.chat_template,
                        tokenizer=tokenizer,
                    )
                )
            except TiankongError as e:
                if self._leaving.is_set():  # quitting: nothing left to tell
                    return
                self.call_from_thread(self._load_failed, _failure_line(e, folder, self.env_model))
                return
            except Exception as e:  # not a user error, but the app stays up to say so
                self.call_from_thread(self._load_failed, f"could not load {folder}: {type(e).__name__}: {e}")
                return
        self.call_from_thread(self._loaded, engines, self._load_notes())

    def _load_notes(self) -> list[str]:
        """load_note's line for each local GGUF model that has one (F16 matrices widened, blocks
        dequantized: what generate and info say before loading, which the playground said nowhere),
        "note: " left to the notification's title; named where several models load (compare)."""
        from tiankong.engine.engine import load_note
        from tiankong.engine.model_names import display_name

        notes = []
        for folder in self.model_dirs:
            note = None if isinstance(folder, RemoteModel) else load_note(folder, self.device, self.dtype)
            if note is not None:
                line = note.removeprefix("note: ")
                notes.append(f"{display_name(folder)}: {line}" if len(self.model_dirs) > 1 else line)
        return notes

    def _say_builds(self) -> None:
        """The chat's status says so while the compiled decode step builds (seconds, once per machine)."""
        from tiankong.engine import native

        def building(how: str) -> None:  # on this worker's thread, inside Engine.load
            # (short: what fits beside any preset's settings at 80 columns)
            self.call_from_thread(self.chat._status, building_line(how), short="compiling…")

        native.on_build(building)

    async def _loaded(self, engines: list[Any], load_notes: Iterable[str] = ()) -> None:
        # Exempt what exists now (torch, Textual, the models: some 330k objects, all there to stay)
        # from the cyclic garbage collector until the app ends; later objects are collected as usual.
        # Otherwise every full collection walks them all, 200-450 ms with the UI stopped: a few times
        # while a long chat opens and now and then while it scrolls (bench/tui_scroll.py, "in gc").
        # No collection first: it would cost as much again for a few hundred unreachable objects.
        if not self._gc_frozen:
            self._gc_frozen = True
            gc.freeze()
        self.engines, self.engine_error = engines, None
        await self.chat.engine_ready(engines[0])
        notice = next((n for n in map(decode_notice, engines) if n), None)
        if notice:  # the first local model's: the reason is the same for all
            self.notify(notice, title="slower decoding", severity="warning", timeout=20, markup=False)
        for note in load_notes:  # a one-off fact about memory, as generate and info say it
            self.notify(note, title="about this load", severity="information", timeout=20, markup=False)
        # (No chat template: the chat and compare say so in a line of their own, TemplateNote.)
        for folder in self.model_dirs:  # resolve's notes (an unfinished training run, a name two places hold):
            note = getattr(folder, "note", None)  # on stderr too, but that is hidden until the app ends
            if note:
                self.notify(note, title="about this model", severity="warning", timeout=30, markup=False)
        if self.mode == "compare":  # the screen `tiankong compare` asked for: esc never leaves it for the chat
            self.open_compare(self.compare_presets, engines=engines, standalone=True)

    def on_unmount(self) -> None:
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        if self._gc_frozen:
            self._gc_frozen = False
            gc.unfreeze()

    def _load_failed(self, message: str) -> None:
        self.engine_error = message
        if self.mode == "compare":  # nothing to compare without the models: one line, and a failed status
            self.exit(return_code=2, message=Text.assemble(("error: ", "bold red"), message))
            return
        self.chat.engine_failed(message)  # the chat stays: stored chats can still be read and exported
        self.notify(message, title="model not loaded", severity="error", timeout=30, markup=False)

    # ------------------------------------------------------------------ other screens

    def open_compare(
        self,
        preset_names: list[str | Preset],
        conversation: list[dict] | None = None,
        engines: list[Any] | None = None,
        standalone: bool = False,
    ) -> None:
        """Push the compare screen: one engine with these presets (or several engines, one preset).
        standalone: opened by `tiankong compare` rather than from the chat (esc does not leave it).
        A preset given as a Preset rather than a name is used as it is (the chat's, edited with f3)."""
        from tiankong.tui.screens.compare import CompareScreen

        if self.engine is None:
            self.notify(self.engine_error or "the model is still loading", severity="warning", markup=False)
            return
        engines = engines or [self.engine]
        presets = [self.presets[n] if isinstance(n, str) else n for n in preset_names]
        if len(engines) > 1:
            presets = presets[:1]
        try:
            screen = CompareScreen(
                engines, presets, self.store, self.rater, blind=True, conversation=conversation, standalone=standalone
            )
        except ValueError as e:  # TiankongError included
            self.notify(str(e), severity="error", markup=False)
            return
        self.push_screen(screen)

    def action_votes(self) -> None:
        from tiankong.tui.screens.votes import VotesScreen

        self.push_screen(VotesScreen(self.store))

    def action_help(self) -> None:
        screen = self.screen
        if callable(getattr(screen, "help_sections", None)):  # the chat's and compare's own lists
            sections = screen.help_sections()
        else:
            rows = [
                (self.get_key_display(b), b.tooltip or b.description)
                for b in getattr(screen, "BINDINGS", [])
                if isinstance(b, Binding)
            ]
            sections = [
                ("this screen", rows),
                ("everywhere", self.everywhere_keys()),
            ]
        intro = screen.help_intro() if callable(getattr(screen, "help_intro", None)) else None
        self.push_screen(HelpScreen(sections) if intro is None else HelpScreen(sections, intro))

    def everywhere_keys(self) -> list[tuple[str, str]]:
        """The app's own keys, for the help screen's "everywhere" section."""
        extra = [Binding("ctrl+p", "", tooltip="command palette: every action by name"), Binding("ctrl+q", "", "quit")]
        bindings = [b for b in self.BINDINGS if isinstance(b, Binding)] + extra
        return [(self.get_key_display(b), b.tooltip or b.description) for b in bindings]

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p): every chat action by name, each preset, the app's own."""
        # Textual's own "Keys" (its help panel) and the chat's f1 binding would be two more entries
        # named "Keys" beside this one.
        yield from (c for c in super().get_system_commands(screen) if c.title != "Keys")
        yield SystemCommand("Keys and help", "every key, grouped (f1)", self.action_help)
        yield SystemCommand("Votes", "the stored preference votes (ctrl+g)", self.action_votes)
        if screen is self.chat:
            for b in screen.BINDINGS:
                # Not esc's: one binding per state, the footer names the one that acts (ctrl+c's "stop answer" is here)
                if isinstance(b, Binding) and b.action != "app.help" and b.key != "escape":
                    title = b.description[:1].upper() + b.description[1:]
                    yield SystemCommand(
                        title, f"{b.tooltip} ({self.get_key_display(b)})", partial(screen.run_action, b.action)
                    )
            for name, p in self.presets.items():
                # The palette reads titles and help as markup; a preset's name and use are a file's words.
                yield SystemCommand(f"Preset: {literal(name)}", literal(p.use), partial(screen.action_use_preset, name))


def literal(text: str) -> str:
    """`text` as Textual markup that shows it as it is, "[/]" and backslashes included (Textual's own
    `escape` doubles a backslash before a "[", as its parser keeps both)."""
    return text.replace("[", "\\[")


def run_until_exit(app: App, command: str = "chat") -> None:
    """Run the app; if it ended on an error (Textual has printed its traceback) or a signal (128 + its
    number), leave with that status instead of 0, so a script or shell sees that it failed. Refused
    (InputError) without a terminal: the CLI's way in, never taken by tests that drive an app."""
    need_terminal(command)
    app.run()
    if app.return_code:
        raise SystemExit(app.return_code)


def run_app(
    model_dir: Path | RemoteModel | None,
    *,
    preset: str = DEFAULT_PRESET,
    data_dir: Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    mode: str = "chat",
    compare_presets: list[str] | None = None,
    compare_models: list[Path | RemoteModel] | None = None,
    rater: str | None = None,
    chat_template: Path | None = None,
    env_model: Path | RemoteModel | None = None,
) -> None:
    """Open the store and load the models' tokenizers (a StoreError or a refused tokenizer stops here,
    before the UI), then run the playground. `env_model`: the one of the models that TIANKONG_MODEL
    named (not a --model typed), whose failure to load says so."""
    from tiankong.tui.store import DB_NAME, Store
    from tiankong.tui.store import data_dir as resolve_data_dir

    store = Store(resolve_data_dir(data_dir) / DB_NAME)
    try:
        models = compare_models or ([model_dir] if model_dir is not None else [])
        tokenizers = checked_tokenizers(models, env_model)
        if chat_template is None:
            check_templates(models, tokenizers)
        run_until_exit(
            TiankongApp(
                model_dir,
                store=store,
                preset=preset,
                device=device,
                dtype=dtype,
                mode=mode,
                compare_presets=compare_presets,
                compare_models=compare_models,
                rater=rater,
                chat_template=chat_template,
                tokenizers=tokenizers,
                env_model=env_model,
            ),
            mode,
        )
    finally:
        store.close()
