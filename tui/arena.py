"""Labelling at arena speed: the playground app opened on a queue of rounds.

`tiankong compare --prompts FILE` is the compare mode of the playground whose compare screen runs
through the file's prompts; `tiankong rank --input FILE` needs no model at all: it opens the compare
screen on answers made earlier (by `tiankong generate --n K` here or elsewhere). Both store the rounds
done, per lineup and rater, so the same file reopens at the round where it was left; `--restart` (the
screen's `restart`) forgets them. The compare screen they open is standalone: esc does not leave it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import events

from tiankong.presets import Preset
from tiankong.tui.app import TiankongApp, check_templates, checked_tokenizers, run_until_exit
from tiankong.tui.queue import PromptQueue
from tiankong.tui.screens.compare import CompareScreen
from tiankong.tui.store import DB_NAME, Store
from tiankong.tui.store import data_dir as resolve_data_dir


class QueueApp(TiankongApp):
    """The playground in compare mode; its first compare screen runs `queue`."""

    def __init__(self, *args: Any, queue: PromptQueue, restart: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue: PromptQueue | None = queue
        self.restart = restart

    def open_compare(
        self,
        preset_names: list[str | Preset],
        conversation: list[dict] | None = None,
        engines: list[Any] | None = None,
        standalone: bool = False,
    ) -> None:
        queue, self.queue = self.queue, None  # only the screen opened after loading runs the queue
        if queue is None or conversation is not None or self.engine is None:
            super().open_compare(preset_names, conversation, engines, standalone)
            return
        engines = engines or [self.engine]
        presets = [self.presets[n] if isinstance(n, str) else n for n in preset_names][
            : 1 if len(engines) > 1 else None
        ]
        self.push_screen(
            CompareScreen(
                engines, presets, self.store, self.rater, queue=queue, restart=self.restart, standalone=standalone
            )
        )


class RankApp(TiankongApp):
    """Only the compare screen, on answers read from a file: no model is loaded."""

    def __init__(self, *, store: Store, queue: PromptQueue, rater: str | None = None, restart: bool = False) -> None:
        super().__init__(None, store=store, rater=rater)
        self.queue = queue
        self.restart = restart

    def on_mount(self, event: events.Mount) -> None:
        event.prevent_default()  # Textual would run TiankongApp.on_mount too: the chat and the model load
        self.push_screen(
            CompareScreen([], [], self.store, self.rater, queue=self.queue, restart=self.restart, standalone=True)
        )


def _open_store(data_dir: Path | None) -> Store:
    return Store(resolve_data_dir(data_dir) / DB_NAME)


def run_compare_queue(
    model_dir: Path,
    queue: PromptQueue,
    *,
    presets: list[str],
    models: list[Path] | None,
    data_dir: Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    rater: str | None = None,
    restart: bool = False,
    chat_template: Path | None = None,
    env_model: Path | None = None,
) -> None:
    store = _open_store(data_dir)
    try:
        tokenizers = checked_tokenizers(models or [model_dir], env_model)  # a refused one stops here, before the UI
        if chat_template is None:  # so does a model's own template that cannot be used
            check_templates(models or [model_dir], tokenizers)
        run_until_exit(
            QueueApp(
                model_dir,
                store=store,
                preset=presets[0],
                device=device,
                dtype=dtype,
                mode="compare",
                compare_presets=presets,
                compare_models=models,
                rater=rater,
                queue=queue,
                restart=restart,
                chat_template=chat_template,
                tokenizers=tokenizers,
                env_model=env_model,
            ),
            "compare",
        )
    finally:
        store.close()


def run_rank(
    queue: PromptQueue, *, data_dir: Path | None = None, rater: str | None = None, restart: bool = False
) -> None:
    store = _open_store(data_dir)
    try:
        run_until_exit(RankApp(store=store, queue=queue, rater=rater, restart=restart), "rank")
    finally:
        store.close()
