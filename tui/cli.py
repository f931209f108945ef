"""The `tiankong` command line: a thin typer layer over the engine's public API.

Each command parses its flags, builds the engine objects and calls one function. Every user
mistake surfaces as a TiankongError, printed here as one line with exit code 2.

This file holds the entry point (main) and the playground commands (chat, compare, rank) and serve;
generate is in cli_generate.py, tokenize, info, models and presets in cli_inspect.py, and the app
with the options they share in cli_app.py.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from tiankong.engine.errors import ChatTemplateError, InputError, TiankongError
from tiankong.engine.files import stdout_errors
from tiankong.presets import DEFAULT_PRESET, get_preset

# The command modules register on the app as they are imported, and that order is `--help`'s:
# generate, then tokenize, info, models and presets, then the playground and serve below.
from tiankong.tui import cli_generate, cli_inspect, controls  # noqa: F401 (cli_*: imported for their commands)
from tiankong.tui.cli_app import (
    ApiKeyOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    ModelOrServerOpt,
    TemplateOpt,
    _from_env,
    _load,
    _load_text,
    _local_only,
    _playground_model,
    _template_file,
    app,
    data_folder,
    epilog,
    err,
)

# ---------------------------------------------------------------- the playground

RaterOpt = typer.Option(
    None, help="Your name on votes. Default: $TIANKONG_RATER, else your login name.", show_default=False
)

DataDirOpt = typer.Option(
    None,
    "--data-dir",
    help="Where chats and votes are kept.",
    envvar="TIANKONG_DATA_DIR",
    show_default=False,
    parser=data_folder,  # --data-dir "" refused, not the current folder
    metavar="<path>",  # as a Path option's type shows (a parser's would show "<Path>")
)


@app.command(
    epilog=epilog(
        "tiankong chat --preset creative",
        "tiankong chat -m HuggingFaceTB/SmolLM2-135M-Instruct --data-dir ~/tk-data",
        "# a server: tiankong serve, vLLM, llama.cpp's server\ntiankong chat -m http://127.0.0.1:8000/v1",
    )
)
def chat(
    model: Optional[str] = ModelOrServerOpt,
    preset: str = typer.Option(DEFAULT_PRESET, help="Sampling preset to start with."),
    data_dir: Optional[Path] = DataDirOpt,
    rater: Optional[str] = RaterOpt,
    chat_template: Optional[Path] = TemplateOpt,
    api_key: Optional[str] = ApiKeyOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Chat with a model and watch every token's candidates stream in."""
    from tiankong.tui.app import run_app

    preset = get_preset(preset).name  # fail fast, before the screen opens; spelt as listed ("Creative": creative)
    _local_only([model], device, dtype, chat_template)
    folder = _playground_model(model, api_key)
    run_app(
        folder,
        preset=preset,
        data_dir=data_dir,
        device=device,
        dtype=dtype,
        mode="chat",
        rater=rater,
        chat_template=_template_file(chat_template),
        env_model=folder if _from_env(model) else None,
    )


def _compare_lineup(
    model: str | None, presets: str | None, models: str | None, api_key: str | None = None
) -> tuple[list[str], list[Any] | None]:
    """compare's contestants: 2 to 4 preset names (default balanced,creative), or two model folders (or
    servers) under one preset (default balanced). Two models under several presets is refused rather
    than cut to the first preset without a word."""
    names = [p.strip() for p in (presets if presets is not None else "").split(",") if p.strip()]
    names = [get_preset(name).name for name in names]  # as the list spells them ("Creative": creative)
    if models and presets is not None and len(names) != 1:  # said before any model is looked up
        raise InputError(
            f"--models compares two models under one preset; give one --presets, e.g. --presets "
            f"{names[0] if names else DEFAULT_PRESET} (got {', '.join(names) or 'none'})"
        )
    specs = [m.strip() for m in models.split(",") if m.strip()] if models else []
    if models and not 1 <= len(specs) <= 2:  # counted before any is looked up: the count is the mistake
        raise InputError(f"--models takes one or two folders, got {len(specs)}; e.g. --models ./sft,./ppo")
    model_dirs = [_playground_model(m, api_key, "--models") for m in specs] if models else None
    if model_dirs is not None:
        if len(model_dirs) == 1:  # one folder: against --model (by default the bundled model)
            model_dirs.insert(0, _playground_model(model, api_key))
        _two_models(model_dirs)
        names = names or [DEFAULT_PRESET]
    elif presets is None:
        names = [DEFAULT_PRESET, "creative"]
    elif not 2 <= len(names) <= 4:
        raise InputError(f"--presets takes 2 to 4 presets, got {len(names)}; e.g. --presets balanced,creative")
    return names, model_dirs


def _two_models(model_dirs: list[Any]) -> None:
    """--models must name two different models: one model twice under one preset gives votes that
    decide no pair, on the models leaderboard or the presets'."""
    from tiankong.engine.model_names import model_key
    from tiankong.engine.remote import RemoteModel

    a, b = (str(m) if isinstance(m, RemoteModel) else model_key(m) for m in model_dirs)
    if a == b:
        raise InputError(
            f"--models names one model twice ({a}); give two different models, "
            "or compare presets of one model with --presets balanced,creative"
        )


@app.command(
    epilog=epilog(
        "tiankong compare -m Qwen/Qwen2.5-0.5B-Instruct --presets precise,chat",
        "tiankong compare --models runs/sft,runs/ppo --presets balanced",
        "# the bundled model against your PPO policy\ntiankong compare --models runs/ppo",
        "# one prompt after another; reopens where you stopped\ntiankong compare --prompts prompts.txt --repeat 2",
        "# on a server\ntiankong compare -m http://127.0.0.1:8000/v1 --presets balanced,creative",
    )
)
def compare(
    model: Optional[str] = ModelOrServerOpt,
    presets: Optional[str] = typer.Option(
        None,
        help="2 to 4 presets, comma-separated (default: balanced,creative); "
        "with --models, the one preset both models use (default: balanced).",
        show_default=False,
    ),
    models: Optional[str] = typer.Option(
        None,
        help="Two model folders, comma-separated, to compare instead "
        "(one folder: compared with --model, by default the bundled model).",
    ),
    data_dir: Optional[Path] = DataDirOpt,
    rater: Optional[str] = RaterOpt,
    prompts: Optional[Path] = typer.Option(
        None,
        "--prompts",
        help='A queue of prompts (text lines, or JSONL with "prompt" or "messages"), one round after another.',
    ),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Rounds per prompt of --prompts, each with new seeds."),
    restart: bool = typer.Option(False, "--restart", help="Start --prompts from its first prompt again."),
    chat_template: Optional[Path] = TemplateOpt,
    api_key: Optional[str] = ApiKeyOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Run presets (or two models) side by side on one prompt (or a file of them) and rank the answers.\f

    Long because of its signature: some 30 lines of typer option declarations; the body is the
    lineup, then the one-prompt app or the queue."""
    from tiankong.tui.app import run_app

    chat_template = _local_only([model, *(models or "").split(",")], device, dtype, chat_template)
    names, model_dirs = _compare_lineup(model, presets, models, api_key)
    first = model_dirs[0] if model_dirs else _playground_model(model, api_key)
    # --model plays unless --models named both: first is then its model, and TIANKONG_MODEL's where that gave it
    plays = model_dirs is None or len([m for m in (models or "").split(",") if m.strip()]) == 1
    env_model = first if plays and _from_env(model) else None
    if prompts is None:
        if repeat != 1 or restart:
            raise InputError("--repeat and --restart apply to a prompt file; add --prompts FILE")
        run_app(
            first,
            preset=names[0],
            data_dir=data_dir,
            device=device,
            dtype=dtype,
            mode="compare",
            compare_presets=names,
            compare_models=model_dirs,
            rater=rater,
            chat_template=chat_template,
            env_model=env_model,
        )
        return
    from tiankong.tui.arena import run_compare_queue
    from tiankong.tui.queue import prompt_queue

    queue = prompt_queue(prompts, repeat)
    run_compare_queue(
        first,
        queue,
        presets=names,
        models=model_dirs,
        data_dir=data_dir,
        device=device,
        dtype=dtype,
        rater=rater,
        restart=restart,
        chat_template=chat_template,
        env_model=env_model,
    )


@app.command(
    epilog=epilog(
        "tiankong generate --input prompts.txt --n 4 -o answers.jsonl\ntiankong rank --input answers.jsonl",
        "tiankong rank --input big-answers.jsonl --model llama-70b --rater alice",
        notes="Lines are generate's records (prompt or messages, text, preset, params, seed, finish_reason; "
        "optional model and id), grouped by prompt; a prompt with more than 4 answers is ranked in groups "
        'of up to 4. An answer whose finish_reason is "error" (its generation failed) is left out, and so is '
        "a prompt left with a single answer.",
    )
)
def rank(
    input: Path = typer.Option(
        ..., "--input", "-i", help="JSONL of answers, e.g. from `tiankong generate --n K`.", show_default=False
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help='Model name stored for lines without a "model" field, such as other tools\' files (generate writes '
        'one in every record, and a line\'s own "model" wins over this). Default: unknown.',
    ),
    data_dir: Optional[Path] = DataDirOpt,
    rater: Optional[str] = RaterOpt,
    restart: bool = typer.Option(False, "--restart", help="Start from the file's first prompt again."),
) -> None:
    """Rank, blind, answers made earlier: the compare screen's keys, no model needed."""
    from tiankong.tui.arena import run_rank
    from tiankong.tui.queue import answers_queue

    run_rank(answers_queue(input, model=model), data_dir=data_dir, rater=rater, restart=restart)


# ---------------------------------------------------------------- serve


@app.command(
    epilog=epilog(
        "tiankong serve --port 8000",
        "export TIANKONG_API_KEY=secret\ntiankong serve -m HuggingFaceTB/SmolLM2-135M-Instruct --host 0.0.0.0",
    )
)
def serve(
    model: Optional[str] = ModelOpt,  # str, not Path: typer's Path checks would answer in a box, not one line
    host: str = typer.Option("127.0.0.1", help="Address to bind; any but loopback needs --api-key."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    api_key: Optional[str] = typer.Option(
        None,
        help="Require Authorization: Bearer KEY.",
        envvar="TIANKONG_API_KEY",
        show_default=False,
    ),
    max_rows: int = typer.Option(16, min=1, help="Rows decoded together (the batch's width)."),
    max_queue: int = typer.Option(64, min=0, help="Requests waiting for a row; past that, 429 (0: none wait)."),
    timeout: float = typer.Option(600.0, min=1, help="Seconds per request; rows still running are then cancelled."),
    prefix_cache: int = typer.Option(
        256, min=0, help="MiB kept of recent prompts' keys and values, so requests that start alike skip that part."
    ),
    prefill_chunk: int = typer.Option(
        256, min=1, help="Prompt tokens read between two decode steps, so a long prompt does not stall the others."
    ),
    log_requests: bool = typer.Option(
        False, "--log-requests", help="One line per request on stderr: method, path, status, tokens, milliseconds."
    ),
    chat_template: Optional[Path] = TemplateOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Serve the model over OpenAI's HTTP API (chat and completions, streaming, logprobs with p_sample)."""
    from tiankong.presets import load_presets
    from tiankong.tui.serve import ServeConfig, listen
    from tiankong.tui.serve import serve as run_server
    from tiankong.tui.serve_run import LoadingAnswers

    cfg = ServeConfig(
        host=host,
        port=port,
        api_key=api_key,
        max_rows=max_rows,
        max_queue=max_queue,
        timeout_s=timeout,
        prefix_cache_mib=prefix_cache,
        prefill_chunk=prefill_chunk,
        log_requests=log_requests,
    )
    # The address, then the key it needs, and the port: bound before the model loads (minutes, for a
    # large one), as the preset files are read.
    socks = listen(cfg)
    presets = load_presets()  # read once; the server never reads them again
    for problem in presets.broken.values():  # a request naming one is refused with this line
        err.print(f"warning: preset not loaded: {escape(problem)}", highlight=False, soft_wrap=True)
    with LoadingAnswers(socks):  # meanwhile a request gets a 503 "model is loading", not a refused connection
        eng = _serve_engine(model, device, dtype, chat_template)
    cli_generate.say_decode_notice(eng)  # no compiled step: several times slower (tui/cli_env.py)
    run_server(eng, cfg, presets=presets, sockets=socks)  # says "serving ... on ..."


def _serve_engine(model: Optional[str], device: str, dtype: str, chat_template: Optional[Path]) -> Any:
    """serve's model, loaded as generate loads it (cli_generate._load_encoded): its text side first
    (config, tokenizer, chat template; no weights), so that a file that is no model (a text file named
    .gguf) or a broken template is refused before "loading NAME (SIZE)…" is said; then the weights,
    with that tokenizer."""
    from tiankong.tui.serve_routes import for_serve

    try:
        text = _load_text(model, device, dtype, chat_template)
        target = cli_generate._say_loading(text.folder if text else model, device, dtype, chat_template)
        return _load(target, device, dtype, chat_template, tokenizer=text.tokenizer if text else None)
    except ChatTemplateError as e:  # a --chat-template file: the fix without generate's raw mode
        raise ChatTemplateError(for_serve(str(e))) from None


# Commands that build their options from the trainers' config classes, whose modules import torch.
TORCH_GROUPS = ("train", "reward")


def _register_subcommands(argv: list[str]) -> None:
    """Add the command groups; `train` and `reward` only when this command line may need them.

    Their options come from the trainers' config dataclasses, and importing the trainers imports
    torch: half a gigabyte and a second or two that `prefs`, `presets`, `models` or `rank` never use.
    """
    from tiankong.tui.prefs import prefs_app

    have = {g.name for g in app.registered_groups}
    if "prefs" not in have:
        app.add_typer(prefs_app, name="prefs", help="Export, import and summarise preference votes.")
    words = [a for a in argv if not a.startswith("-")]
    if "train" not in have and (not words or words[0] in TORCH_GROUPS):  # also for the top-level --help
        from tiankong.tui.train_cli import reward_app, train_app

        app.add_typer(train_app, name="train")
        app.add_typer(reward_app, name="reward")


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    from tiankong.tui.cli_env import prepare

    controls.install_rich()  # an escape sequence in a stranger's file, quoted in a line or table, stays inert
    prepare()  # a terminal or locale that cannot encode Unicode: no crash on the first 填空 (tui/cli_env.py)
    try:
        code = _run()
    except Exception:
        if _process_group() is None:
            raise
        traceback.print_exc()  # a bug: its traceback, then the same way out as any other end
        code = 1
    group = _process_group()
    if group is not None:
        group.leave(code)  # a torchrun process: no interpreter finalization (see leave)
    sys.exit(code)


# typer carries its own copy of click (typer._click, private); its public BadParameter names the family.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _process_group() -> Any:
    """tiankong.trainers.distributed if this process joined a process group, else None (the module
    is imported only by the commands that may join one)."""
    group = sys.modules.get("tiankong.trainers.distributed")
    return group if group is not None and group.joined() else None


def _run() -> int:
    """The command's exit code."""
    try:
        _register_subcommands(sys.argv[1:])
        # Not standalone: click's own handling would draw a usage error as a five-line box.
        code = _exit_code(app(prog_name="tiankong", standalone_mode=False))
        with stdout_errors():  # flushed here, not at exit: a closed pipe is told apart (below), a full disk said
            pass
        return code
    except SystemExit as done:  # a command may still end so, 0 included
        # rich (on_broken_pipe) and typer turn a closed pipe into SystemExit(1), which `presets` gives
        # for unusable preset files: told apart by the BrokenPipeError it was raised from.
        return _closed_pipe() if _from_closed_pipe(done) else _exit_code(done.code)
    except _UsageError as e:  # an unknown option or command, a bad value
        if type(e).__name__ == "NoArgsIsHelpError":  # `tiankong prefs`: its help, as --help shows it
            typer.rich_utils.rich_format_error(e)
            return 2
        err.print(f"[bold red]error:[/bold red] {escape(_usage_line(e))}", highlight=False, soft_wrap=True)
        return 2
    except _ClickException as e:
        err.print(f"[bold red]error:[/bold red] {escape(e.format_message())}", highlight=False, soft_wrap=True)
        return e.exit_code
    except typer.Abort:  # ctrl+c or end of input at a prompt
        return 130
    except TiankongError as e:
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tiankong generate ... | head`
        return _closed_pipe()


# A closed pipe (`tiankong models | head -1`) ends the command quietly with the status a shell gives a
# process that SIGPIPE ended (128 + 13), as `yes | head` shows it: not 0, as the output was cut short,
# and not 1, which `presets` gives for unusable preset files.
PIPE_CLOSED = 141


def _from_closed_pipe(e: BaseException) -> bool:
    """Whether `e` was raised while handling a closed pipe (rich and typer exit 1 then)."""
    cause: Optional[BaseException] = e
    while cause is not None and not isinstance(cause, BrokenPipeError):
        cause = cause.__context__
    return cause is not None


def _closed_pipe() -> int:
    """PIPE_CLOSED, with stdout sent to /dev/null so that the interpreter's last flush cannot fail
    again and print a traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return PIPE_CLOSED


def _usage_line(e: Exception) -> str:
    """A usage error as the house's one line: click's message, then where the help is."""
    _tidy_suggestions(e)
    message = e.format_message().strip()  # type: ignore[attr-defined]
    line = message.splitlines()[0] if message else "bad usage"
    ctx = getattr(e, "ctx", None)
    # click raises some errors (a missing or unwanted option value) without a context: the command
    # is then found in the command line, so the hint names its page, not the top-level one.
    command = ctx.command_path if ctx is not None else _command_path(sys.argv[1:])
    return f"{line.rstrip('.')} ({_after_dashes(e, ctx)}see `{command} --help`)"


def _after_dashes(e: Exception, ctx: Any) -> str:
    """For a command that takes an argument (tokenize's TEXT), a word starting with "-" that is no
    option and resembles none is likely that argument, which click reads as an option: how to give
    it (after --), or "" where that is not the case."""
    import shlex

    if type(e).__name__ != "NoSuchOption" or getattr(e, "possibilities", None) or ctx is None:
        return ""
    arguments = [p for p in ctx.command.params if p.param_type_name == "argument"]
    if not arguments:
        return ""
    known = {name for p in ctx.command.params for name in (*p.opts, *p.secondary_opts)}
    words = sys.argv[1:]
    words = words[: words.index("--")] if "--" in words else words
    # the word as typed: click names one letter of "-hello" ("-e"), where it stopped reading it
    word = next((w for w in words if w.startswith("-") and w != "-" and w.split("=")[0] not in known), None)
    shown = shlex.quote(word or getattr(e, "option_name", "-x"))
    metavar = (arguments[0].metavar or arguments[0].name.upper()).strip("[]")  # as typer shows an optional one
    return f'a {metavar} that starts with "-" goes after --: `{ctx.command_path} -- {shown}`; '


def _command_path(argv: list[str]) -> str:
    """The command that a command line names, as `tiankong train sft`: its leading words while they
    are subcommands (a group's own options, --help and --version, take no value)."""
    import typer.main

    command, path = typer.main.get_command(app), ["tiankong"]
    for word in argv:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:  # a command's words are its arguments and option values
            break
        if word.startswith("-"):
            continue
        if word not in subcommands:
            break
        command = subcommands[word]
        path.append(word)
    return " ".join(path)


def _tidy_suggestions(e: Exception) -> None:
    """click's guesses, made useful: a mistyped option is offered --help only where it is the best
    guess, never beside the option it resembles (`--mdoel`); and a command given by its start
    (`tiankong gen`), which click's similarity test misses, is offered the commands it starts."""
    import re

    guesses = getattr(e, "possibilities", None)  # best first (difflib)
    if guesses and len(guesses) > 1:  # --help only when it is the best guess (`--hepl`), then alone
        helps = ("--help", "-h")
        e.possibilities = guesses[:1] if guesses[0] in helps else [g for g in guesses if g not in helps]  # type: ignore[attr-defined]
    ctx = getattr(e, "ctx", None)
    typo = re.fullmatch(r"No such command '(.+)'\.", str(getattr(e, "message", "")))
    if typo is None or ctx is None:
        return
    names = set(getattr(ctx.command, "commands", {}))
    if ctx.parent is None:  # train and reward are added only when the command line names them
        names.update(TORCH_GROUPS)
    starts = sorted(n for n in names if n.startswith(typo[1]))
    if starts:
        e.message = f"{e.message.rstrip('.')}. Did you mean {', '.join(map(repr, starts))}?"  # type: ignore[attr-defined]


def _exit_code(code: int | str | None) -> int:
    """sys.exit's argument as the process's status (a message goes to stderr, status 1)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    main()
