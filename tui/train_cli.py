"""`tiankong train NAME` and `tiankong reward score`: flags generated from each trainer's config.

Every field of a trainer's config dataclass becomes a `--flag` with the field's help text (one marked
opt(..., hidden=True), which that trainer does not use, is left out of --help); a `--config
FILE.toml` supplies any of them too. Precedence: the dataclass default, then the TOML
file, then flags given on the command line. This is also where the playground's database meets
the trainers: reward and dpo read the votes when no --data is given.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import typer
from rich.markup import escape

from tiankong.engine.errors import InputError
from tiankong.tui.cli_app import DEVICE_HELP, DeviceOpt, epilog, output_file
from tiankong.tui.generate_input import say
from tiankong.tui.stops import Stops, Terminated

# name -> (module, config class, trainer class, one-line help)
TRAINERS: dict[str, tuple[str, str, str, str]] = {
    "pretrain": (
        "tiankong.trainers.pretrain",
        "PretrainConfig",
        "PretrainTrainer",
        "Next-token prediction on text files (trains a tokenizer for a new model).",
    ),
    "sft": ("tiankong.trainers.sft", "SFTConfig", "SFTTrainer", "Instruction tuning: loss on the answer tokens only."),
    "reward": (
        "tiankong.trainers.reward",
        "RewardConfig",
        "RewardTrainer",
        "Bradley-Terry reward model from rankings (default: the playground's votes).",
    ),
    "ppo": (
        "tiankong.trainers.ppo",
        "PPOConfig",
        "PPOTrainer",
        "PPO against a reward model, with a KL penalty to the reference policy.",
    ),
    "dpo": (
        "tiankong.trainers.dpo",
        "DPOConfig",
        "DPOTrainer",
        "Direct preference optimisation (sigmoid loss) on rankings.",
    ),
}
# Each under 76 characters, so that an 80-column --help never wraps one (tui/cli_app.py's epilog).
EXAMPLES = {
    "pretrain": ["tiankong train pretrain --data corpus.txt --size tiny -o runs/base"],
    "sft": ["tiankong train sft -m runs/base --data instructions.jsonl -o runs/sft"],
    "reward": ["# on the playground's votes\ntiankong train reward -m runs/sft -o runs/rm"],
    "ppo": ["tiankong train ppo -m runs/sft --reward runs/rm --prompts prompts.txt \\\n    -o runs/ppo"],
    "dpo": ["tiankong train dpo -m runs/sft --data prefs.jsonl -o runs/dpo"],
}
# Where a run's model comes from when neither --model nor --config names one. Not pretrain's: its
# default is a new model, and a variable set for the playground must not turn that into continued
# pretraining of another.
MODEL_ENV = "TIANKONG_MODEL"
SHORT_FLAGS = {"model": "-m", "output": "-o"}  # as generate, chat and rank spell them
PREFERENCE_TRAINERS = ("reward", "dpo")
SWITCHES = "Switches"  # the --help panel of the on/off flags (--resume/--no-resume)
# Appended to every --model help: training takes what the other commands take (tui/cli_app.py's MODEL_HELP).
MODEL_NAMES = (
    " A Hugging Face model folder, a .gguf file, or a name: ORG/NAME[@REVISION] (or ORG/NAME@REV/FILE.gguf) "
    "from the Hugging Face cache or LM Studio, lmstudio:ORG/NAME, ollama:NAME[:TAG] from Ollama (`tiankong models` lists them)."
)

train_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Train: pretrain -> sft -> (rank in the playground) -> reward -> ppo, or dpo.",
)
reward_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="Use a trained reward model.")


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path} is not valid TOML ({e})") from None
    return data


def build_config(cfg_cls: type, config_file: Path | None, flags: dict[str, Any]) -> Any:
    """Defaults < TOML file < flags given (None means "not given")."""
    names = {f.name for f in fields(cfg_cls)}
    values: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if config_file is not None:
        data = _read_toml(config_file)
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"{config_file}: unknown setting(s) {', '.join(unknown)}; see --help for the valid ones")
        values.update(data)
    values.update({k: v for k, v in flags.items() if v is not None})
    for f in fields(cfg_cls):  # the file's values are checked even where a flag overrides them
        for source, given in ((config_file, data), (None, flags)):
            if given.get(f.name) is not None:
                _check_type(f.name, given[f.name], _default(f), source)
    try:
        return cfg_cls(**values)
    except TypeError as e:
        raise InputError(f"bad training setting: {e}") from None


def _default(f: Any) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def _check_type(name: str, value: Any, default: Any, source: Path | None) -> None:
    """A setting must have its default's type (an int may stand for a float) and be finite."""
    import math

    want = type(default)
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    where = f"{source}: " if source is not None else ""
    if not ok:
        raise InputError(f"{where}{name} must be {want.__name__} (like {default!r}), got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{where}{name} must be a finite number, got {value!r}")


def _options(cfg_cls: type) -> list[inspect.Parameter]:
    """The command's signature: --config, then one typer option per field of the config dataclass."""
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[Path],
            default=typer.Option(None, "--config", help="TOML file with any of these settings."),
        )
    ]
    for f in fields(cfg_cls):
        default = _default(f)
        kind = type(default) if isinstance(default, (bool, int, float, str)) else str
        flag = "--" + f.name.replace("_", "-")
        decl = [f"{flag}/--no-{f.name.replace('_', '-')}"] if kind is bool else [flag]
        decl += [SHORT_FLAGS[f.name]] if f.name in SHORT_FLAGS else []
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Optional[kind],
                default=typer.Option(
                    None,
                    *decl,
                    help=_option_help(cfg_cls, f.name, f.metadata.get("help", ""), default),
                    show_default=False,
                    # A setting this trainer does not use (PPO's eval_every): accepted (a train_config.json
                    # given back as flags has it) but not listed.
                    hidden=bool(f.metadata.get("hidden")),
                    # On/off flags in a table of their own: beside the others their second column
                    # (--no-whiten-rewards) left the help text 20 of 80 columns, cutting long words.
                    rich_help_panel=SWITCHES if kind is bool else None,
                ),
            )
        )
    return params


def _option_help(cfg_cls: type, name: str, text: str, default: Any) -> str:
    """A setting's --help text as the other commands' options show theirs: --device in the same words,
    the default as typer writes it (runs/sft, not 'runs/sft'; a flag's as the flag that keeps it;
    none where it is empty, whose meaning the text says), and TIANKONG_MODEL where --model reads it."""
    if name == "device":
        text = DEVICE_HELP
    if name == "model":
        text += MODEL_NAMES
    extra = []
    if name == "model" and cfg_cls.__name__ != "PretrainConfig":
        extra.append(f"env var: {MODEL_ENV}")
    if isinstance(default, bool):
        extra.append("default: " + name.replace("_", "-") if default else "default: no-" + name.replace("_", "-"))
    elif default != "":
        extra.append(f"default: {default}")
    return escape(text) + (" " + escape(f"[{'; '.join(extra)}]") if extra else "")


def _choose_model(name: str, cfg: Any) -> None:
    """The run's model: --model, else the --config file's, else $TIANKONG_MODEL, else the bundled
    model; for pretrain neither of the last two (its default is a new model). A name becomes its folder."""
    global _MODEL_FROM_ENV
    _MODEL_FROM_ENV = None
    if not cfg.model and name != "pretrain" and os.environ.get(MODEL_ENV):
        cfg.model = _MODEL_FROM_ENV = os.environ[MODEL_ENV]
    if cfg.model or name != "pretrain":  # fine-tune the bundled model unless told otherwise
        from tiankong.tui.cli_app import _model_dir

        cfg.model = str(_model_dir(cfg.model or None))  # a folder, or a name (engine/resolve.py)


def _train(name: str, cfg_cls: type, trainer_cls: type, config: Path | None, flags: dict[str, Any]) -> None:
    """One training run: the config (defaults < TOML < flags), its model and data, train, then the verdict."""
    cfg = build_config(cfg_cls, config, flags)
    _choose_model(name, cfg)
    from tiankong.trainers import checkpoint as ckpt
    from tiankong.trainers.stopping import TrainingStopped
    from tiankong.tui.cli_env import announce_builds

    announce_builds()  # a first sample on the CPU compiles the decode step's sampler: seconds, said on stderr
    votes_default = name in PREFERENCE_TRAINERS and not cfg.data  # the votes, exported into the run below
    if votes_default:  # a file to be: the settings check (here and in the trainer) must not miss it
        cfg.data = "the playground's votes"
    cfg.validate()  # one line for a bad setting before the output folder is touched
    trainer = trainer_cls(cfg)

    def at_once() -> str:  # a second Ctrl+C's line: said here, or by the trainer's signal watcher (stopping.py)
        return _stopped_at_once(out_dir) if trainer.dist.is_main else ""

    trainer.at_once_note = at_once
    trainer.threads_hint = True  # a new CPU run on a busy machine says that fewer threads may be faster
    trainer.resume_command = _resume_command()
    if votes_default:  # and no file yet for the claim to keep out of the output folder
        cfg.data = ""
    out_dir = Path(cfg.output)
    # Held for the whole run: checked, locked and (with --overwrite) the old run set aside before
    # anything is written there; the trainer's own claim joins this one.
    with ckpt.claim(out_dir, cfg.resume, cfg.overwrite, trainer.protected()) as resumes:
        cfg.resume = resumes
        if votes_default:
            votes = out_dir / "preferences.jsonl"
            # A resumed run trains on the votes it started with, not on those added since.
            cfg.data = str(votes if cfg.resume and votes.is_file() else _votes_file(out_dir))
        try:
            out = trainer.train()
            trainer.dist.close()  # all ranks leave the process group together (a rank exiting alone can abort)
        except RuntimeError as e:  # a collective failed: another torchrun process died (else a bug)
            _peer_stopped(out_dir, e)
        except TrainingStopped as stop:
            if trainer.dist.is_main:  # once, not once per torchrun process
                say(f"{stop}\nresume with: {_resume_command()}")
            raise typer.Exit(130 if stop.signal_name == "SIGINT" else 143) from None
        except KeyboardInterrupt:  # the second Ctrl+C: no checkpoint of this step
            if trainer.dist.is_main:
                say(at_once())
            raise typer.Exit(130) from None
        if trainer.dist.is_main and not trainer.finished_before:  # still under the lock: verdict.json is this run's too
            try:
                with Stops():  # a kill (SIGTERM) says this too, rather than ending silently
                    _report(trainer, out)
            except KeyboardInterrupt as stop:  # the model is saved; only the verdict is missing: --resume writes it
                say(
                    f"{'terminated (SIGTERM)' if isinstance(stop, Terminated) else 'stopped'} during the verdict: "
                    f"the model is saved in {out}; `{_resume_command()}` writes the verdict"
                )
                raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None


def _stopped_at_once(out_dir: Path) -> str:
    """What a second Ctrl+C leaves: the newest checkpoint and the command to continue from it, or, before
    the first one, the command to start again (an --overwrite'd old run is put back, as an error does)."""
    from tiankong.trainers import checkpoint as ckpt

    survivor = ckpt.latest(out_dir)
    if survivor is not None:
        return f"stopped at once; the checkpoint {survivor} survived\ncontinue with: {_resume_command()}"
    try:
        ckpt.restore(out_dir)
    except OSError:
        pass  # best effort: the old run stays in its hidden folder, and the next --overwrite puts it back
    return (
        f"stopped at once, before the first checkpoint: nothing was saved\n"
        f"start again with: {_resume_command(resume=False)}"
    )


def _peer_stopped(out_dir: Path, e: RuntimeError) -> NoReturn:
    """Another torchrun process of this run died (killed, crashed): this one's collective failed with a
    gloo/nccl error. One line, as a Ctrl+C says it: what is kept and how to go on. Any other error: raised."""
    from tiankong.trainers import checkpoint as ckpt
    from tiankong.trainers.distributed import peer_lost

    if not peer_lost(e):
        raise e

    survivor = ckpt.latest(out_dir)
    kept = f"the checkpoint {survivor} is kept" if survivor is not None else "no checkpoint was written yet"
    again = _resume_command(resume=survivor is not None)
    say(
        f"error: another process of this run stopped (killed or crashed); {kept}; "
        f"{'resume' if survivor is not None else 'start again'} with: {again}"
    )
    raise typer.Exit(1)


def _report(trainer: Any, out: Path) -> None:
    """After a run: its metric curves, the verdict and where it all is."""
    from tiankong.trainers.metrics import plot_metrics

    try:
        print(plot_metrics(out))
    except InputError:
        pass
    _print_verdict(trainer, out)
    say(f"saved to {out}{_dequantized(trainer, out)}")


def _dequantized(trainer: Any, out: Path) -> str:
    """What the saved line adds for a quantized GGUF starting model: its blocks were dequantized to
    train, so the folder holds float weights, several times the file (a 1.1 MB Q4_K_M policy came
    out 7.5 MB with only "saved to" said), and how to load them small again. Else ""."""
    from tiankong.engine.errors import TiankongError
    from tiankong.engine.gguf_header import is_gguf, peek, quantization_name
    from tiankong.engine.model_list import human_bytes
    from tiankong.engine.resolve import resolve_model

    model = getattr(trainer.cfg, "model", "")
    if not model:  # pretrain's new model, or the bundled one: safetensors
        return ""
    try:
        path = resolve_model(model)
    except TiankongError:
        return ""
    kind = quantization_name(peek(path).get("general.file_type")) if is_gguf(path) else None
    if kind is None or kind in ("F32", "F16", "BF16"):  # not a GGUF, or one of float weights
        return ""
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    note = f": {trainer.cfg.dtype} weights, {human_bytes(size)} (the {kind} file's blocks were dequantized to train)"
    if trainer.name != "reward":  # a reward model is read by train ppo, which takes no --dtype q*
        note += "; load it with `--dtype q4_0` or `q8_0` to hold them quantized again"
    return note


def _command(name: str, module: str, cfg_name: str, trainer_name: str, help: str) -> Callable:
    """A typer command whose options are the config dataclass's fields."""
    mod = importlib.import_module(module)
    cfg_cls, trainer_cls = getattr(mod, cfg_name), getattr(mod, trainer_name)

    def run(config: Optional[Path] = None, **flags: Any) -> None:
        _train(name, cfg_cls, trainer_cls, config, flags)

    run.__signature__ = inspect.Signature(_options(cfg_cls))  # typer reads the options from here
    run.__name__ = name
    run.__doc__ = help
    return run


def _print_verdict(trainer: Any, out: Path) -> None:
    """Did it work? In words and figures (see trainers/verdict.py), also written to verdict.json.
    A PPO or DPO verdict samples fresh answers first (minutes on a CPU): said, with a progress bar.
    Its lines of words go through `say`: wrapped between words on a terminal, one line each in a log
    (where `grep warning` finds the fix)."""
    from rich.console import Console
    from rich.text import Text

    from tiankong.trainers.progress import progress
    from tiankong.trainers.verdict import fresh_answers, verdict_for

    console = Console(stderr=True, emoji=False)  # paths and model names print as typed
    n = fresh_answers(trainer)
    if n:
        say(
            f"verdict: sampling {n // 2} fresh answers from the starting model and {n // 2} from the trained "
            "one, then scoring them"
        )
    with progress("verdict", n, enabled=bool(n) and trainer.cfg.progress, console=console) as advance:
        verdict = verdict_for(trainer, advance)
    path = verdict.write(out)
    for part in verdict.render():  # the words (a Text) said as a line; the tables drawn to the width
        if isinstance(part, Text):
            say(part)
        else:
            console.print(part)
    say(f"verdict written to {path}")  # not markup: the output folder may hold "[/]"


def _resume_command(resume: bool = True) -> str:
    """The command line that was run, with --resume (and without --overwrite); resume=False: without
    either (a run stopped before its first save starts again in the same folder). Under torchrun, the
    torchrun command: without it --sharding and the other processes would be silently dropped."""
    import shlex

    args = [a for a in sys.argv[1:] if a not in ("--overwrite", "--no-resume", "--resume")]
    if _MODEL_FROM_ENV is not None:  # the run's model, even where the variable is no longer set
        args += ["--model", _MODEL_FROM_ENV]
    if resume:
        args.append("--resume")
    if "TORCHELASTIC_RUN_ID" not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return shlex.join(["tiankong", *args])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    nodes = max(1, world // max(1, per_node))
    again = "--resume" if resume else "the same flags"
    if nodes == 1:
        launcher = ["torchrun", "--nproc_per_node", str(per_node), "-m", "tiankong.tui.cli"]
        return f"the same torchrun command with {again}: {shlex.join([*launcher, *args])}"
    launcher = ["torchrun", "--nnodes", str(nodes), "--nproc_per_node", str(per_node)]
    return (
        f"the same torchrun command on each of the {nodes} nodes (its --node_rank and rendezvous options too) "
        f"with {again}: {shlex.join(launcher)} ... -m tiankong.tui.cli {shlex.join(args)}"
    )


_MODEL_FROM_ENV: Optional[str] = None  # the run's --model, where TIANKONG_MODEL gave it (see _train)


def _votes_file(output: Path) -> Path:
    """Export the playground's votes (TRL format) next to the run, for a trainer to read."""
    import json

    from tiankong.engine.files import atomic_write_text
    from tiankong.tui.prefs import export_records, warn_skipped
    from tiankong.tui.store import Store

    store = Store()
    skipped: list[tuple[int, str]] = []
    # Ties and both-bad votes too (flagged): the trainer leaves them out under --tie-mode drop and says
    # so, and --tie-mode soft trains on them; left out here, neither could be.
    records = export_records(store, include_ties=True, include_both_bad=True, skipped=skipped)
    warn_skipped(store, skipped)
    if not records:
        raise InputError(f"no usable votes in {store.path}; rank answers in `tiankong compare` or pass --data FILE")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"cannot create the output folder {output} ({e.strerror or e}); choose another --output"
        ) from None
    path = output / "preferences.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


for _name, (_module, _cfg, _trainer, _help) in TRAINERS.items():
    _cmd = _command(_name, _module, _cfg, _trainer, _help)
    train_app.command(_name, epilog=epilog(*EXAMPLES[_name], title="Example"))(_cmd)


@train_app.command("plot", epilog=epilog("tiankong train plot runs/rm --key loss --key accuracy", title="Example"))
def plot(
    run: Path = typer.Argument(..., metavar="RUN", help="A training output folder (or its metrics.jsonl)."),
    key: list[str] = typer.Option([], "--key", help="Metric to plot; repeat. Default: all."),
    width: int = typer.Option(100, help="Plot width in characters."),
) -> None:
    """Plot a run's metric curves in the terminal."""
    from tiankong.trainers.metrics import plot_metrics

    print(plot_metrics(run, key or None, width=width))


@reward_app.command(
    "score", epilog=epilog("tiankong reward score -m runs/rm -i answers.jsonl -o scored.jsonl", title="Example")
)
def score(
    model: Path = typer.Option(..., "--model", "-m", help="Reward model folder (from `tiankong train reward`)."),
    input: str = typer.Option(
        ...,
        "--input",
        "-i",
        help="JSONL lines with prompt (or messages) and response (or text, as `tiankong generate` writes); - for stdin.",
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout (- is stdout)."),
    device: str = DeviceOpt,
) -> None:
    """Score responses: each input line comes back with a "score"."""
    from tiankong.trainers.reward import score_file

    output = output_file(output)  # "-" is stdout
    n = score_file(model, input, output, device=device, show_progress=True)
    if output is not None:  # as `prefs export -o` and `generate -o` say what they wrote where
        print(f"wrote {n} scored line{'' if n == 1 else 's'} to {output}", file=sys.stderr)
