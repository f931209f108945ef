"""`tiankong tokenize`, `info`, `models` and `presets`: the commands that show what there is (a
model's tokens and facts, the models on this machine, the sampling presets) and generate nothing.

Apart from cli.py to keep it to the app's entry point and the playground; each command here is a
table or JSON printed to stdout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tiankong.engine.errors import InputError
from tiankong.engine.files import check_text
from tiankong.presets import DEFAULT_PRESET, get_preset, load_presets
from tiankong.tui.cli_app import DeviceOpt, DtypeOpt, ModelOpt, _load, _model_dir, app, err


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong tokenize -m ../shared/models/stories260K "Once upon a time"

  tiankong tokenize -m ./Qwen2 --format jsonl "你好, world"
"""
)
def tokenize(
    text: str = typer.Argument(..., help="Text to tokenize."),
    model: Optional[str] = ModelOpt,  # str, not Path: typer's Path checks would answer in a box, not one line
    format: str = typer.Option("table", "--format", help='table or jsonl ({"ids": [...], "pieces": [...]}).'),
) -> None:
    """Show how TEXT splits into tokens (ids and pieces), with the special tokens the model adds."""
    from tiankong.engine.tokenizer import load_tokenizer

    if format not in ("table", "jsonl"):
        raise InputError(f"unknown --format {format!r}; use table or jsonl")
    check_text(text, "TEXT")  # before the tokenizer, which would blame itself
    folder = _model_dir(model)
    if not folder.exists():
        raise InputError(f"model folder {folder} does not exist; pass --model with a local model folder")
    tok = load_tokenizer(folder)  # a folder or a GGUF file
    ids = tok.encode(text, add_special_tokens=True)
    pieces = [tok.id_to_piece(i) for i in ids]
    if format == "jsonl":
        print(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False))
        return
    table = Table(title=f"{len(ids)} tokens", show_edge=False)
    for col in ("#", "id", "piece", "text"):
        table.add_column(col, justify="right" if col in ("#", "id") else "left")
    for n, (i, p) in enumerate(zip(ids, pieces, strict=True)):
        # Text, not str (read as markup): a piece may be "[/]" or "[b]" in a vocabulary.
        piece = Text(repr(p)[1:-1]).append(" (special)" if i in tok.special_ids else "", style="dim")
        table.add_row(str(n), str(i), piece, Text(repr(tok.token_text(i))))
    Console(emoji=False).print(table)


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong info -m ../shared/models/stories260K

  tiankong info -m ./TinyLlama --format json
"""
)
def info(
    model: Optional[str] = ModelOpt,  # str, not Path: typer's Path checks would answer in a box, not one line
    format: str = typer.Option("table", "--format", help="table or json."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """What a model is made of: architecture, parameters, positions, context, vocabulary, dtype, chat template."""
    from tiankong.engine.model_facts import model_facts
    from tiankong.engine.remote import is_remote

    if format not in ("table", "json"):
        raise InputError(f"unknown --format {format!r}; use table or json")
    # A local model's facts come from its headers (nothing loaded: a few-GB GGUF answers at once);
    # a server's from the server.
    facts = _load(model, device, dtype).info() if is_remote(model) else model_facts(_model_dir(model), device, dtype)
    if format == "json":
        print(json.dumps(facts))
        return
    from .screens.tokens import fact_text

    table = Table(show_header=False, show_edge=False)
    for k, v in facts.items():
        label = "file" if k == "folder" and not os.path.isdir(v) else k.replace("_", " ")  # a GGUF file
        table.add_row(label, Text(fact_text(k, v)))  # Text: a model's name or path is not markup
    Console(emoji=False).print(table)


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong models

  tiankong models --format json

  tiankong chat -m HuggingFaceTB/SmolLM2-135M-Instruct      # a name from the list

Searched, offline: the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub),
LM Studio (~/.lmstudio/models, ~/.cache/lm-studio/models) and Ollama ($OLLAMA_MODELS, else ~/.ollama/models;
as ollama:NAME:TAG). A place that cannot be read is skipped and named on stderr."""
)
def models(format: str = typer.Option("table", "--format", help="table or json.")) -> None:
    """The models on this machine that --model takes by name: the bundled one, then the caches."""
    from tiankong.engine.model_list import list_models

    if format not in ("table", "json"):
        raise InputError(f"unknown --format {format!r}; use table or json")
    skipped: list[str] = []
    found = list_models(skipped)
    for note in skipped:  # stderr: the JSON on stdout stays whole
        err.print(f"skipped: {note}", highlight=False, markup=False, soft_wrap=True)
    if format == "json":
        print(json.dumps([m.to_json() for m in found], ensure_ascii=False))
        return
    table = Table(title=f"{len(found)} model{'' if len(found) == 1 else 's'}", show_edge=False)
    # The name is what --model takes: kept whole on one line (a folded tag, ollama:tk:la|test, misreads);
    # the paths fold instead.
    widest = max((len(m.name) for m in found), default=4)
    table.add_column("name", no_wrap=True, min_width=min(widest, 60))
    for col in ("architecture", "size", "dtype", "where"):
        table.add_column(col, justify="right" if col == "size" else "left", overflow="fold")
    for m in found:
        size = f"{m.parameters / 1e6:,.1f} M params" if m.parameters else f"{m.bytes / 2**20:,.1f} MiB"
        arch = escape(m.architecture or "?") + (" [dim](GGUF)[/dim]" if m.format == "gguf" else "")
        where = f"{m.source}: {escape(_home(m.path))}" + (f" ({m.parts} parts)" if m.parts > 1 else "")
        where += f"\n[dim]{escape(m.note)}[/]" if m.note else ""
        table.add_row(escape(m.name), arch, size, m.dtype or "?", where)
    Console(emoji=False).print(table)


def _home(path: str) -> str:
    """A path under the home folder as ~/..., as people type it."""
    home = str(Path.home())
    return "~" + path[len(home) :] if path.startswith(home + os.sep) else path


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong presets

  tiankong presets creative
"""
)
def presets(name: Optional[str] = typer.Argument(None, help="Show one preset in full.")) -> None:
    """List the sampling presets (bundled and your own), or show one with its recommended ranges."""
    from tiankong.engine.params import SAMPLER_CHAIN
    from tiankong.presets import user_presets_dir

    con = Console(emoji=False)
    if name is None:
        table = Table(title=Text(f"presets (yours go in {user_presets_dir()})"), show_edge=False)
        table.add_column("name", no_wrap=True)
        table.add_column("use", ratio=1)
        for col in ("temp", "top-k", "top-p", "min-p", "rep.pen", "seed"):
            table.add_column(col, no_wrap=True, justify="right")
        for p in load_presets().values():
            s = p.params
            # Text, not str (read as markup): a preset's name and words are a file's, "[/]" included.
            table.add_row(
                Text(p.name).append(" *" if p.name == DEFAULT_PRESET else "", style="dim"),
                Text(p.use),
                f"{s.temperature:g}",
                str(s.top_k),
                f"{s.top_p:g}",
                f"{s.min_p:g}",
                f"{s.repetition_penalty:g}",
                "random" if s.seed is None else str(s.seed),
            )
        con.print(table)
        con.print(f"* the default.  sampler chain: {' -> '.join(SAMPLER_CHAIN)}")
        return
    p = get_preset(name)
    con.print(
        Text.assemble(
            (p.name, "bold"), f": {p.description}\n", ("use:", "dim"), f" {p.use}   ", ("file:", "dim"), f" {p.source}"
        )
    )
    table = Table(show_edge=False)
    for col in ("parameter", "value", "recommended"):
        table.add_column(col)
    for key, value in p.params.to_dict().items():
        rec = p.recommended.get(key)
        table.add_row(key, Text(str(value)), f"{rec[0]:g} – {rec[1]:g}" if rec else "")  # stop strings: "[/INST]"
    con.print(table)
    con.print(f"sampler chain: {' -> '.join(SAMPLER_CHAIN)}")
