"""`tiankong tokenize`, `info`, `models` and `presets`: the commands that show what there is (a
model's tokens and facts, the models on this machine, the sampling presets) and generate nothing.

Apart from cli.py to keep it to the app's entry point and the playground; each command here is a
table or JSON printed to stdout.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from tiankong.engine.errors import InputError
from tiankong.engine.files import check_text, stdout_errors
from tiankong.engine.model_list import human_bytes
from tiankong.presets import DEFAULT_PRESET, get_preset, load_presets
from tiankong.tui.cli_app import DeviceOpt, DtypeOpt, ModelOpt, _load, _model_dir, app, epilog, err, say_lines


@app.command(
    epilog=epilog(
        'tiankong tokenize "Once upon a time"',
        'tiankong tokenize -m Qwen/Qwen2.5-0.5B-Instruct --format jsonl "你好, world"',
        "# text from a file or a pipe; text that starts with - goes after --\n"
        "tiankong tokenize < prompt.txt\ntiankong tokenize -- -1",
    )
)
def tokenize(
    text: Optional[str] = typer.Argument(
        None,
        metavar="TEXT",
        help="Text to tokenize. Without it, standard input (less one final newline, as echo adds), unless a terminal.",
        show_default=False,
    ),
    model: Optional[str] = ModelOpt,  # str, not Path: typer's Path checks would answer in a box, not one line
    format: str = typer.Option(
        "table", "--format", help='table, or jsonl: one line {"ids": [...], "pieces": [...]} (json is the same).'
    ),
) -> None:
    """Show how TEXT splits into tokens (ids and pieces), with the special tokens the model adds."""
    from tiankong.engine.tokenizer import load_checked_tokenizer

    format = _one_format(format, "jsonl", 'one line {"ids": [...], "pieces": [...]}')
    text = _text_to_tokenize(text)  # checked before the tokenizer, which would blame itself
    folder = _model_dir(model)
    if not folder.exists():
        raise InputError(f"model folder {folder} does not exist; pass --model with a local model folder")
    tok = load_checked_tokenizer(folder)  # a folder or a GGUF file; ids checked against its config's rows
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
    print_table(Console(emoji=False), table)


def _one_format(given: str, name: str, what: str) -> str:
    """--format of a command that prints one JSON document on one line (tokenize, info): table, or
    `name` (jsonl, json); the other spelling means the same, as people guess either."""
    if given in ("json", "jsonl"):
        return name
    if given != "table":
        raise InputError(f"unknown --format {given!r}; use table or {name} ({what}; json and jsonl are the same here)")
    return given


def _text_to_tokenize(text: Optional[str]) -> str:
    """tokenize's TEXT, else standard input where it is a file or a pipe (`echo hi | tiankong
    tokenize`), less one final newline: echo's, not the text's. A terminal is not read (it would wait
    for end of input without a word): it gets the two ways to give TEXT."""
    if text is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError(
                'no TEXT to tokenize: give it, or pipe it in: echo "Once upon" | tiankong tokenize '
                "(a TEXT that starts with - goes after --: tiankong tokenize -- -1)"
            )
        try:
            data = sys.stdin.buffer.read()
        except (OSError, ValueError, AttributeError) as e:  # closed, a folder, no bytes behind it
            raise InputError(f"no TEXT to tokenize, and standard input cannot be read ({e}); give TEXT") from None
        text = data.decode("utf-8", "surrogateescape")  # bad bytes: check_text names them
        text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
        check_text(text, "standard input")
        return text
    check_text(text, "TEXT")
    return text


@app.command(
    epilog=epilog(
        "tiankong info",
        "tiankong info -m TinyLlama/TinyLlama-1.1B-Chat-v1.0 --format json",
        "tiankong info -m ./my-model/model-Q4_0.gguf",
    )
)
def info(
    model: Optional[str] = ModelOpt,  # str, not Path: typer's Path checks would answer in a box, not one line
    format: str = typer.Option("table", "--format", help="table, or json: one line (jsonl is the same)."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """What a model is made of: architecture, parameters, positions, context, vocabulary, dtype, chat template."""
    from tiankong.engine.engine import load_note
    from tiankong.engine.model_facts import model_facts
    from tiankong.engine.ollama import GO_TEMPLATE, go_template
    from tiankong.engine.remote import is_remote
    from tiankong.tui.cli_env import announce_builds
    from tiankong.tui.generate_input import say

    format = _one_format(format, "json", "one line of facts")
    # A local model's facts come from its headers (nothing loaded: a few-GB GGUF answers at once);
    # a server's from the server.
    if is_remote(model):
        facts = _load(model, device, dtype).info()
    else:
        path = _model_dir(model)
        announce_builds()  # the decode row builds the compiled step where it is not yet: seconds
        facts = _named(path, model_facts(path, device, dtype))
        if facts.get("chat_template") is False and go_template(path):  # Ollama chats with one: said why not here
            facts["chat_template"] = f"no ({GO_TEMPLATE}; pass --chat-template FILE)"
        if (note := load_note(path, device, dtype)) is not None:  # stderr: the JSON on stdout stays whole
            say(note)
    if format == "json":
        print(json.dumps(facts))
        return
    from .screens.tokens import fact_text

    table = Table(show_header=False, show_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # a long path folds, whole, where "…" hid the file's name
    for k, v in facts.items():
        if k == "folder" or (k == "parts" and v == 1):  # the folder is the path's row
            continue
        label = ("folder" if os.path.isdir(v) else "file") if k == "path" else k.replace("_", " ")
        table.add_row(label, Text(fact_text(k, v)))  # Text: a model's name or path is not markup
    print_table(Console(emoji=False), table)


def _named(path: Path, facts: dict) -> dict:
    """A local model's facts led by its name as `generate` says it loads (ollama:NAME:TAG, ORG/NAME/
    FILE.gguf: never a blob's hash), then its path and, for a GGUF file, its part count (a split
    set's files). "folder" stays, a file's path too: what scripts read before these keys came."""
    from tiankong.engine.gguf_split import part_paths
    from tiankong.engine.model_names import display_name

    where = facts["folder"]
    named: dict = {"name": display_name(path), "path": where}
    if not os.path.isdir(where):
        named["parts"] = len(part_paths(Path(where)))
    return {**named, **facts}


@app.command(
    epilog=epilog(
        "tiankong models",
        "tiankong models --format json",
        "# a name from the list\ntiankong chat -m HuggingFaceTB/SmolLM2-135M-Instruct",
        notes="Searched, offline: the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else "
        "~/.cache/huggingface/hub), LM Studio (the Models Directory of its settings, ~/.lmstudio/models, "
        "~/.cache/lm-studio/models) and Ollama ($OLLAMA_MODELS, else ~/.ollama/models; as ollama:NAME:TAG). A place that cannot be read is skipped "
        "and named on stderr, as is a folder a variable or LM Studio's settings name that is not there, and, "
        "when nothing but the bundled model is found, where it looked. The size is the weight files' on disk. tiankong never downloads: `hf download ORG/NAME` (or `huggingface-cli download "
        "ORG/NAME`) puts a model in the Hugging Face cache, and `--model ORG/NAME` then opens it.",
    )
)
def models(format: str = typer.Option("table", "--format", help="table, or json: one list on one line.")) -> None:
    """The models on this machine that --model takes by name: the bundled one, then the caches."""
    from tiankong.engine.model_list import list_models

    if format not in ("table", "json"):
        # jsonl would mean a model a line, which this is not: named, not taken
        raise InputError(f"unknown --format {format!r}; use table or json (one JSON list of the models, on one line)")
    skipped: list[str] = []
    places: list[str] = []
    found = list_models(skipped, places)
    # stderr: the JSON on stdout stays whole
    say_lines(err, "note", places)  # about a place (a folder named that is not there), not a model
    say_lines(err, "skipped", skipped)
    if format == "json":
        print(json.dumps([m.to_json() for m in found], ensure_ascii=False))
    else:
        print_models(Console(emoji=False), found)
    if all(m.source == "bundled" for m in found):  # an empty list says nothing of where it looked: below it
        say_lines(err, "note", [_searched()])


def _searched() -> str:
    """Where `models` looked, for a list of the bundled model alone: the places a person's models
    would be in, each folder named (a cache moved by a variable, an app that keeps its own)."""
    from tiankong.engine.model_places import hf_hub_cache, lmstudio_dirs, ollama_dir

    return (
        f"no models found besides the bundled one; searched the Hugging Face cache ({_home(str(hf_hub_cache()))}), "
        f"LM Studio ({', '.join(_home(str(d)) for d in lmstudio_dirs())}) and Ollama ({_home(str(ollama_dir()))}); "
        "`hf download ORG/NAME` puts a model in the Hugging Face cache, `ollama pull NAME` in Ollama's"
    )


def print_table(con: Console, table: Table) -> None:
    """`table` on `con`: in a terminal, at its width; piped (rich reads a pipe as 80 columns), at the
    table's own width, so a row stays one line and a path is never broken (grep, less -S), and without
    the spaces that pad each line to that width (`| head -1` of a wide table was mostly spaces)."""
    if con.is_terminal:
        con.print(table)
        return
    wide = con.measure(table, options=con.options.update_width(10**6)).maximum
    out = io.StringIO()
    Console(file=out, emoji=False, width=max(80, wide)).print(table)
    with stdout_errors():  # `> /dev/full`: one line, not a traceback; a closed pipe: quietly (cli.py)
        con.file.write("".join(line.rstrip() + "\n" for line in out.getvalue().splitlines()))


def print_models(con: Console, found: list) -> None:
    """The models table for `con`: a terminal's width kept to (a path cut every few characters took
    each model 15-35 lines), or COLUMNS where it is set; piped without it, a row a model, paths whole.
    Where the where column would be narrow, the path goes under the name (two lines a model); where
    even the longest name does not fit beside the other columns, a record a model."""
    if not con.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
        print_table(con, _models_table(found, None))  # grep, less -S; JSON for scripts
        return
    room = con.width - _fixed_width(found)  # the where column's
    beside = room + _longest_name(found) + 3  # the name column's, where stacked in it (its own rule and padding)
    with stdout_errors():  # COLUMNS set and `> /dev/full`: one line, not a traceback (cli.py)
        if room >= _MIN_WHERE:
            con.print(_models_table(found, room))
        elif beside >= max(_longest_name(found), _MIN_UNDER):
            con.print(_models_table(found, beside, under=True))
        else:
            _print_records(con, found)


_MIN_WHERE = 60  # the where column's least: less cuts a file's name (a short table reads worse than records)
_MIN_UNDER = 40  # the name column's least with the path under the name
_SIZE_HELP = "size: the weight files on disk"


def _cells(m: Any) -> tuple[Text, Text, str, str]:
    """A model's name, architecture, size and dtype as `tiankong models` shows them. The size is the
    weight files' bytes, as Ollama and LM Studio list theirs: known for every model (a parameter count
    is not, in a pytorch_model.bin), and the one a person checks against a disk or memory;
    `tiankong info` counts the parameters."""
    arch = Text(m.architecture or "?").append(" (GGUF)" if m.format == "gguf" else "", style="dim")
    return Text(m.name), arch, human_bytes(m.bytes), m.dtype or "?"


def _where(m: Any, width: int | None, indent: str = "") -> Text:
    """Where a model is: whole when piped (width None), else shortened (~, hashes cut to 8) and cut
    in the middle to `width`, keeping the file's name; its note on the next line, after `indent`."""
    parts = f" ({m.parts} parts)" if m.parts > 1 else ""
    path = m.path if width is None else _short_path(m.path)
    where = Text(f"{m.source}: ") + Text(_middle(path, width - len(m.source) - 2 - len(parts)) if width else path)
    where.append(parts)
    return where.append(f"\n{indent}{m.note}", style="dim") if m.note else where


def _models_table(found: list, room: int | None, under: bool = False) -> Table:
    """The models, a row each: name, architecture, size and dtype never wrapped (a folded tag,
    ollama:tk:la|test, misreads), where in the `room` left (None: unbounded). `under`: where goes
    below the name, indented, in a name column `room` wide."""
    title = f"{len(found)} model{'' if len(found) == 1 else 's'}"
    # piped, the table is as wide as its longest path: a title centred over it starts far right
    table = Table(title=title, show_edge=False, title_justify="center" if room else "left", caption=_SIZE_HELP)
    table.add_column("name", no_wrap=not under, width=room if under else None)
    table.add_column("architecture", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    if not under:
        table.add_column("where", no_wrap=room is None)
    for m in found:
        name, *facts = _cells(m)
        if under:
            assert room is not None  # a terminal's
            table.add_row(Text.assemble(name, "\n  ", _where(m, room - 2, "  ")), *facts)
        else:
            table.add_row(name, *facts, _where(m, room))
    return table


def _longest_name(found: list) -> int:
    """The name column's: its longest name, or its heading."""
    return max([len("name"), *(cell_len(m.name) for m in found)])


def _fixed_width(found: list) -> int:
    """The table's width but for the where column's cells: its other columns, rules and padding."""
    probe = Table(show_edge=False)
    for col in ("name", "architecture", "size", "dtype", "where"):
        probe.add_column(col, no_wrap=True)
    for m in found:
        probe.add_row(*_cells(m), "")
    return Console(width=10**6).measure(probe).maximum - len("where")


def _print_records(con: Console, found: list) -> None:
    """The models for a terminal too narrow for the table: the name on a line of its own (wrapped
    by the terminal, never cut), then its facts, then where it is, cut to the width, its note below."""
    con.print(f"{len(found)} model{'' if len(found) == 1 else 's'}", style="bold")
    for m in found:
        name, arch, size, dtype = _cells(m)
        con.print(name, style="bold", soft_wrap=True)
        con.print(Text("  ").append(arch).append(f", {size}, {dtype}"), soft_wrap=True)
        where = _where(m, con.width - 2)
        con.print(Text("  ").append(where.split("\n")[0]))
        if m.note:  # indented as its model's, wrapped between words
            con.print(Padding(Text(m.note, style="dim"), (0, 0, 0, 2), expand=False))
    con.print(_SIZE_HELP, style="dim")


def _short_path(path: str) -> str:
    """A path as people read it: ~ for the home folder, a Hugging Face snapshot's 40-hex commit and
    an Ollama blob's sha256 cut to their first 8 characters (the name says which model it is)."""
    path = _home(path)
    path = re.sub(r"(snapshots[/\\][0-9a-f]{8})[0-9a-f]{32}(?=[/\\]|$)", r"\1…", path)
    return re.sub(r"(sha256-[0-9a-f]{8})[0-9a-f]{56}\b", r"\1…", path)


def _middle(text: str, width: int) -> str:
    """`text` cut to `width` cells with "…" in the middle: a path's start says the store, its end
    which file (its name whole where it leaves the start a few cells; the cut at a separator)."""
    if cell_len(text) <= width:
        return text
    budget = max(width - max(width // 3, 1) - 1, 0)  # the end's share: two thirds
    name = text[text.rfind(os.sep) :] if os.sep in text else ""
    if name and cell_len(name) <= width - 4:
        budget = max(budget, cell_len(name))
    tail = _last_cells(text, budget)
    cut = tail.find(os.sep)
    if cut > 0:  # not a name cut in two
        tail = tail[cut:]
    elif cut < 0 and text[: len(text) - len(tail)].endswith(os.sep):  # the window starts on a name
        tail = os.sep + tail
    return set_cell_size(text, max(width - 1 - cell_len(tail), 0)) + "…" + tail


def _last_cells(text: str, width: int) -> str:
    """The end of `text` that fits `width` cells (a wide character is never split)."""
    out = ""
    for ch in reversed(text):
        if cell_len(ch + out) > width:
            break
        out = ch + out
    return out


def _home(path: str) -> str:
    """A path under the home folder as ~/..., as people type it."""
    home = str(Path.home())
    return "~" + path[len(home) :] if path.startswith(home + os.sep) else path


# The presets table's name column: at least the longest name up to NAME_MIN (so "brainstorming *"
# fits at 80 columns, the "use" words wrapping beside it), at most NAME_WIDTH (a longer name is cut,
# the value columns stay whole).
NAME_MIN, NAME_WIDTH = 16, 24
USE_MIN = 12  # the "use" column's room before the name column is cut below its longest name


def _name_width(width: int, names: list[str], heads: tuple[str, ...], rows: list[list[str]]) -> int:
    """The presets table's name column: the longest name (and " *"), up to NAME_WIDTH, and below
    that down to NAME_MIN where the terminal is too narrow for it, the value columns and USE_MIN."""
    longest = max(cell_len(n) + 2 for n in names)
    values = sum(max(cell_len(v) for v in [h, *(r[i] for r in rows)]) for i, h in enumerate(heads))
    room = width - values - USE_MIN - 3 * (len(heads) + 2) + 1  # each column's padding and rule
    return min(longest, NAME_WIDTH, max(NAME_MIN, room))


@app.command(
    epilog=epilog(
        "tiankong presets",
        "tiankong presets creative",
        notes="Exit codes: 0 every preset file was read; 1 the list was printed, but some of your preset "
        "files could not be used (each is named on stderr with its error: only those presets are left out); "
        "2 an error.",
    )
)
def presets(name: Optional[str] = typer.Argument(None, metavar="NAME", help="Show one preset in full.")) -> None:
    """List the sampling presets (bundled and your own), or show one with its recommended ranges."""
    if name is None:
        _list_presets(Console(emoji=False))
    else:
        _show_preset(Console(emoji=False), name)


def _list_presets(con: Console) -> None:
    """The presets table, the sampler chain, and each preset file that could not be used (exit 1)."""
    from tiankong.engine.params import SAMPLER_CHAIN
    from tiankong.presets import number, user_presets_dir

    found = load_presets()
    heads = ("temp", "top-k", "top-p", "min-p", "rep.pen", "seed")
    rows = [
        [
            number(p.params.temperature),
            str(p.params.top_k),
            number(p.params.top_p),
            number(p.params.min_p),
            number(p.params.repetition_penalty),
            "random" if p.params.seed is None else str(p.params.seed),
        ]
        for p in found.values()
    ]
    table = Table(title=Text(f"presets (yours go in {user_presets_dir()})"), show_edge=False)
    width = con.width if con.is_terminal else 10**6  # piped: each preset on one line (print_table)
    table.add_column("name", no_wrap=True, width=_name_width(width, list(found), heads, rows))
    table.add_column("use", ratio=1)
    for col in heads:
        table.add_column(col, no_wrap=True, justify="right")
    for p, values in zip(found.values(), rows, strict=True):
        # Text, not str (read as markup): a preset's name and words are a file's, "[/]" included.
        name = Text(p.name, overflow="ellipsis").append(" *" if p.name == DEFAULT_PRESET else "", style="dim")
        table.add_row(name, Text(p.use), *values)
    print_table(con, table)
    # piped, one line as the rows above; in a terminal, wrapped to its width
    con.print(f"* the default.  sampler chain: {' -> '.join(SAMPLER_CHAIN)}", soft_wrap=not con.is_terminal)
    for problem in found.broken.values():
        err.print(Text(f"not loaded: {problem}"), highlight=False, soft_wrap=True)
    if found.broken:
        raise typer.Exit(1)


def _show_preset(con: Console, name: str) -> None:
    """One preset in full: its words, each parameter with its recommended range, the sampler chain."""
    from tiankong.engine.params import SAMPLER_CHAIN
    from tiankong.presets import number

    p = get_preset(name)
    table = Table(show_edge=False)
    for col in ("parameter", "value", "recommended"):
        table.add_column(col)
    for key, value in p.params.to_dict().items():
        rec = p.recommended.get(key)
        if key == "seed" and value is None:
            shown = "random"  # as the list says it
        elif isinstance(value, (int, float)):
            shown = number(value)  # as the f3 editor writes it
        else:
            shown = str(value)
        table.add_row(key, Text(shown), f"{number(rec[0])} – {number(rec[1])}" if rec else "")  # stop: "[/INST]"
    with stdout_errors():  # `> /dev/full`: one line, not a traceback
        con.print(
            Text.assemble(
                (p.name, "bold"),
                f": {p.description}\n",
                ("use:", "dim"),
                f" {p.use}   ",
                ("file:", "dim"),
                f" {p.source}",
            )
        )
        print_table(con, table)
        con.print(f"sampler chain: {' -> '.join(SAMPLER_CHAIN)}")
