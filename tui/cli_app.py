"""What every `tiankong` command module shares: the typer app, the error console, the options that
several commands declare alike, the help's conventions (-h, --version, flags shown without a type,
epilogs of short examples and reflowing notes), and how --model becomes a folder, a server or a
loaded engine.

Apart from cli.py because the command modules (cli_generate.py, cli_inspect.py) register on this one
app: importing it from cli.py instead would be a cycle, and under `python -m tiankong.tui.cli` (as
torchrun starts it) a second copy of cli.py with an app of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperOption

from tiankong.engine.errors import ChatTemplateError, InputError, ModelLoadError, RemoteError

# Every command's help also answers to -h (subcommands inherit the context's help option names).
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
EXIT_CODES = (
    "Exit codes: 0 done; 1 a failure the command names (`presets`: some preset files could not be used) "
    "or an unexpected error, with its traceback; 2 a usage mistake or bad input, named in one line; "
    "130 stopped by Ctrl+C, 143 by SIGTERM; 141 the output's reader stopped reading (`| head`)."
)
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings=HELP_OPTIONS,
    help="tiankong (填空): watch a language model fill in the blank, one token at a time.",
    epilog="\n" + EXIT_CODES,  # the leading line keeps typer's dedent off (see epilog)
)
err = Console(stderr=True, emoji=False)  # emoji=False: "ollama:cat:cool" in a message must not become a cat


def _flag_type(self: Any, ctx: Any) -> Optional[str]:
    """An option's type as its help row shows it, and none for a flag: typer showed `--raw <bool>`,
    which reads as if it took a value."""
    return None if self.is_flag and not self.count else _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def _show_version(value: bool) -> None:
    if value:
        print(f"tiankong {package_version('tiankong')}")
        raise typer.Exit()


@app.callback()
def _top(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    # No docstring: the app's help (above) stays the help.
    pass


def epilog(*examples: str, notes: str = "", title: str = "Examples") -> str:
    """A command's --help epilog: its examples, each block indented (a block's lines are one command
    and its comment or continuation lines, each at most 76 characters so that an 80-column terminal
    never wraps one mid-argument), then `notes` as paragraphs that reflow to the terminal's width.
    Examples and notes are shown as written, never read as markup."""
    # escape() a block whole: a line's own would double a continuation line's closing backslash
    blocks = ["\n".join("  " + line for line in escape(block).split("\n")) for block in examples]
    text = f"[bold]{title}[/bold]\n\n" + "\n\n".join(blocks)
    if notes:
        text += "\n\n" + paragraphs(escape(notes))
    # typer dedents the epilog after its first line (inspect.cleandoc); a first line of its own keeps
    # the examples' indent whether or not an unindented paragraph follows.
    return "\n" + text


def output_file(output: Optional[Path]) -> Optional[Path]:
    """An --output option's file: None (standard output) for none or "-", the usual spelling of
    stdout, so no file named - is ever written."""
    return None if output is None or str(output) == "-" else output


def data_folder(text: str) -> Path:
    """--data-dir's value (the option's parser: it sees the text before it is a Path). An empty one
    would be Path(""), the current folder, and a database would appear wherever the command ran; it is
    refused. An empty TIANKONG_DATA_DIR never gets here: it counts as unset, as data_dir() reads it."""
    if not text.strip():
        # Named without the env var that click's hint would add: an empty one never comes here.
        raise typer.BadParameter(
            "it is empty; give a folder, or leave the option out for the usual one", param_hint="'--data-dir'"
        )
    return Path(text)


def paragraphs(text: str) -> str:
    """Help prose as typer's rich mode should show it: it keeps every newline and then wraps each
    line again, so a paragraph's source lines are joined into one; indented lines (examples) and
    headings stay as they are."""
    return "\n\n".join(p if p.startswith(("  ", "[bold]")) else " ".join(p.split("\n")) for p in text.split("\n\n"))


MODEL_HELP = (
    "Hugging Face model folder (config.json, safetensors, tokenizer), a .gguf file, or a name: "
    "ORG/NAME[@REVISION] (or ORG/NAME@REV/FILE.gguf) from the Hugging Face cache or LM Studio, lmstudio:ORG/NAME, ollama:NAME[:TAG] "
    "from Ollama (`tiankong models` lists them). Default: the bundled tiankong-mini."
)
# How every command (training too) says --device; typer prints the default after it.
DEVICE_HELP = "cpu, cuda, mps or auto (cuda, then mps, then cpu)."
# Help texts are rich markup: "[@REVISION]" would be read as a tag and vanish. Env vars: typer adds
# "[env var: X]" to the option's help, so the texts do not name them.
ModelOpt = typer.Option(None, "--model", "-m", help=escape(MODEL_HELP), envvar="TIANKONG_MODEL", show_default=False)
DeviceOpt = typer.Option("auto", help=DEVICE_HELP)
DtypeOpt = typer.Option(
    "auto",
    help="float32, bfloat16, float16, auto (float32 on CPU, bfloat16 on GPU), or q8_0, q4_0, q4_1, q5_0, q5_1 (quantize at load).",
)
ApiKeyOpt = typer.Option(
    None,
    "--api-key",
    help="Key for a --model http://HOST:PORT/v1 server (sent as Authorization: Bearer).",
    envvar="TIANKONG_API_KEY",
    show_default=False,
)
ModelOrServerOpt = typer.Option(
    None,
    "--model",
    "-m",
    help=escape(MODEL_HELP + " Or a server: http://HOST:PORT/v1 (tiankong serve, vLLM, llama.cpp's server)."),
    envvar="TIANKONG_MODEL",
    show_default=False,
)
TemplateOpt = typer.Option(
    None,
    "--chat-template",
    help='A chat template file (Jinja, or JSON with "chat_template") used instead of the model\'s own.',
    show_default=False,
)


def _model_dir(model: Optional[Path | str], option: str = "--model") -> Path:
    """--model, else $TIANKONG_MODEL (typer reads it), else the bundled tiankong-mini; names are
    looked up offline (engine/resolve.py), a local path winning over a name. A name that two places
    hold gets its note on stderr here, so every command says it (once: under torchrun, rank 0).
    `option`: the option that gave `model` where it is not --model (compare's --models), named in its error."""
    from tiankong.engine.resolve import resolve_model

    with _naming_env(model, option):
        path = resolve_model(model)
    note = getattr(path, "note", None)
    if note and getattr(model, "note", None) != note and os.environ.get("RANK", "0") == "0":  # not said yet
        say_lines(err, "note", [note])
    return path


def say_lines(con: Console, label: str, lines: list[str]) -> None:
    """Each line as "LABEL: line" on `con`: in a terminal wrapped between words to its width (the
    terminal's own wrap split words and paths anywhere), else one line each (grep, a log)."""
    for line in lines:
        con.print(Text(f"{label}: {line}"), highlight=False, soft_wrap=not con.is_terminal)


MODEL_ENV = "TIANKONG_MODEL"


def _from_env(model: Any) -> bool:
    """Whether `model` is TIANKONG_MODEL's value rather than a --model the command line gave: typer
    reads the variable into the option (its source then says ENVIRONMENT); `train` reads it itself (the
    option's source says DEFAULT). A --model typed with the same value is the command line's."""
    try:  # typer carries its own copy of click (see cli.py), whose context stack is not click's
        from typer._click.globals import get_current_context
    except ImportError:  # a typer that uses click itself
        from click import get_current_context

    value = os.environ.get(MODEL_ENV)
    if model is None or not value or str(model) != value:
        return False
    ctx = get_current_context(silent=True)
    source = ctx.get_parameter_source("model") if ctx is not None else None
    return getattr(source, "name", None) != "COMMANDLINE"


def named_by_env(message: str) -> str:
    """An error about TIANKONG_MODEL's model, with the variable named and the fix (the app's load says it too)."""
    return f"{message} [{MODEL_ENV} names this model: fix the variable, unset it, or pass --model]"


@contextmanager
def _naming_env(model: Any, option: str = "--model") -> Iterator[None]:
    """A model that cannot be found or loaded, named by TIANKONG_MODEL: its error says so, with the
    fix, where it would name only the value (a variable set long ago, in a shell profile, is forgotten).
    One that another option gave (compare's --models) is that option's, whatever the variable holds."""
    try:
        yield
    except (ModelLoadError, RemoteError) as e:
        if option != "--model":
            raise type(e)(f"{option}: {e}") from None
        if not _from_env(model):
            raise
        raise type(e)(named_by_env(str(e))) from None


def _playground_model(model: Optional[Path | str], api_key: Optional[str], option: str = "--model") -> Any:
    """chat's and compare's --model (or an entry of the `option` named): a server (http://HOST:PORT/v1,
    engine/remote.py) with its key, else a model folder as _model_dir finds it."""
    from tiankong.engine.remote import RemoteModel, is_remote

    return RemoteModel(str(model), api_key) if is_remote(model) else _model_dir(model, option)


def _local_only(models: list[Any], device: str, dtype: str, chat_template: Optional[Path]) -> Optional[Path]:
    """--device, --dtype and --chat-template shape a model this process loads; a server runs its own.
    Refused rather than silently ignored when a --model is a URL. Returns the checked template file."""
    from tiankong.engine.remote import is_remote

    given = [
        f
        for f, v in (("--device", device != "auto"), ("--dtype", dtype != "auto"), ("--chat-template", chat_template))
        if v
    ]
    if given and any(is_remote(m) for m in models if m is not None):
        verb = "applies" if len(given) == 1 else "apply"
        raise InputError(f"{', '.join(given)} {verb} to local models; a server (http://...) uses its own: drop it")
    return _template_file(chat_template)


def _template_file(chat_template: Optional[Path]) -> Optional[Path]:
    """--chat-template checked before a model loads or a screen opens."""
    if chat_template is not None and not os.path.isfile(chat_template.expanduser()):  # isfile never raises
        missing = not os.path.lexists(chat_template.expanduser())
        raise InputError(
            f"chat template {chat_template} {'does not exist' if missing else 'is not a readable regular file'}; "
            "give a Jinja template file"
        )
    return chat_template


def _load_text(
    model: Optional[Path | str],
    device: str = "auto",
    dtype: str = "auto",
    chat_template: Optional[Path] = None,
    raw: bool = False,
) -> Any:
    """A local model's text side (engine.prompter.Prompter: config, tokenizer and chat template, no
    weights), to check prompts with before the weights load (seconds to minutes); None for a server,
    which encodes with its own. Refused as _load refuses the model, with the same lines. raw: generate
    --raw, whose broken --chat-template is not told to use raw mode (it is on)."""
    from tiankong.engine.chat import RAW_MODE_FIX
    from tiankong.engine.prompter import load_prompter
    from tiankong.engine.remote import is_remote

    _local_only([model], device, dtype, chat_template)
    if is_remote(model):
        return None
    known_dtype(dtype)
    path = _model_dir(model)
    with _naming_env(model):
        try:
            return load_prompter(path, chat_template=_template_file(chat_template))
        except ChatTemplateError as e:
            if not raw:
                raise
            raise type(e)(str(e).replace(RAW_MODE_FIX, "")) from None


def known_dtype(dtype: str) -> None:
    """--dtype checked against the engine's own names (resolve_dtype) before anything loads or is
    said loading, as --device is: an unknown one was refused after the "loading" line."""
    if dtype != "auto":
        import torch

        from tiankong.engine.model import resolve_dtype

        resolve_dtype(dtype, torch.device("cpu"))  # the device matters only to "auto"


def _load(
    model: Optional[Path | str],
    device: str = "auto",
    dtype: str = "auto",
    chat_template: Optional[Path] = None,
    api_key: Optional[str] = None,
    tokenizer: Any = None,
):
    """The model loaded (Engine), or a server connected to (RemoteEngine). `tokenizer`: the local
    model's, loaded already (_load_text), so not loaded again."""
    from tiankong.engine.engine import Engine
    from tiankong.engine.remote import RemoteEngine, is_remote

    _local_only([model], device, dtype, chat_template)
    if is_remote(model):  # a server: its own device, dtype and chat template
        with _naming_env(model):
            return RemoteEngine.connect(str(model), api_key)
    from tiankong.tui.cli_env import announce_builds

    announce_builds()  # the first load on a machine compiles the decode step: seconds, said on stderr
    path = _model_dir(model)
    with _naming_env(model):
        return Engine.load(
            path, device=device, dtype=dtype, chat_template=_template_file(chat_template), tokenizer=tokenizer
        )
