"""Checkpoints that are one unit, trainer state without pickle, and output folders that are never mixed.

Layout of a run's output folder:

    runs/ppo/
      config.json, model.safetensors, tokenizer.*, value/ ...   the newest checkpoint's model files
      metrics.jsonl, train_config.json, verdict.json            the run's records
      checkpoints/step-000040/                                  the newest complete checkpoint:
        (the same model files) + trainer_state.json + trainer_state.safetensors

A checkpoint is written into `checkpoints/.step-000040.tmp`, every file fsync'ed, and renamed
into place: a folder named `step-*` is complete by construction, whatever killed the process and
when. Only then are its files published to the output folder (hard links, so no second copy on
disk, each swapped in by an atomic rename) and older checkpoints removed. `--resume` reads only
`checkpoints/`; the top level is for people and for `--model runs/ppo`.

Trainer state is JSON (steps, config, Python RNG, optimizer hyper-parameters) plus one
safetensors file (optimizer moments, torch RNG): loading it runs no code, unlike a pickle, so a
run folder from a stranger can be resumed safely (trainers/trainer_state.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tiankong.engine.errors import InputError
from tiankong.engine.files import WriteError, fsync_dir, lock_with_pid, why
from tiankong.engine.weights import TOKENIZER_FILES
from tiankong.tui.generate_input import say as say_line

from .trainer_state import STATE_JSON, STATE_TENSORS, save_state

CHECKPOINTS = "checkpoints"
# Files a CLI prepares in the output folder before the trainer starts (the exported votes).
PREPARED = frozenset({"preferences.jsonl"})
# Top-level files a run writes besides the model: records of the run, not published checkpoint files.
RUN_RECORDS = frozenset({"metrics.jsonl", "train_config.json", "verdict.json", *PREPARED})
_STEP_DIR = re.compile(r"step-(\d+)$")


# --- the output folder --------------------------------------------------------------------------

LOCK_FILE = ".tiankong-run.lock"  # hidden: never counted as content, never published
ASIDE = ".overwritten"  # an --overwrite'd run's files wait here until the new run's first save
# What a run writes at the top of its output folder besides RUN_RECORDS: the model files (also the
# reward model's and PPO's value/), checkpoints, and an older tiankong's pickle. --overwrite only
# ever replaces a folder holding nothing else, and publish only ever deletes these names.
MODEL_FILES = frozenset(
    {
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "reward_head.safetensors",
        "reward_config.json",
        "value",
        *TOKENIZER_FILES,  # what save_pretrained copies beside the weights
    }
)
_SHARD = re.compile(r"model-\d+-of-\d+\.safetensors$")
# A run killed before its first checkpoint leaves only these (pretrain: also its new tokenizer).
LEFTOVERS = frozenset(
    {"metrics.jsonl", CHECKPOINTS, *PREPARED, "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"}
)
RUN_MARKERS = frozenset({"train_config.json", "metrics.jsonl", CHECKPOINTS})


def is_run_file(name: str) -> bool:
    """Whether a top-level name is one a tiankong run writes into its output folder."""
    return (
        name in RUN_RECORDS
        or name in MODEL_FILES
        or name in (CHECKPOINTS, "trainer_state.pt")
        or bool(_SHARD.match(name))
    )


def check_protected(out: Path, protect: Sequence[tuple[str, str | Path]]) -> None:
    """Refuse an output folder that is, holds or sits inside a folder the run reads (the model, the
    reward model, the playground's data folder) or that holds a file it reads: a run's output folder
    is its own, and publish and --overwrite replace what it holds."""
    here = out.resolve()
    for label, given in protect:
        if not str(given).strip():
            continue
        path = Path(given).expanduser().resolve()
        if path.parent == here and path.name in PREPARED:
            continue  # the votes this run exported for itself
        if path.is_file() or not path.exists() and path.suffix:
            if here in path.parents:
                raise InputError(
                    f"--output {out} holds {label} {given}; a run's output folder must be its own: choose another --output"
                )
            continue
        if here == path:
            problem = f"is {label} {given}"
        elif here in path.parents:
            problem = f"holds {label} {given}"
        elif path in here.parents:
            problem = f"is inside {label} {given}"
        else:
            continue
        raise InputError(f"--output {out} {problem}; a run's output folder must be its own: choose another --output")


def _content(out: Path) -> list[str]:
    # Hidden files do not count: the lock, a publish in progress, and another process of the same
    # run may be probing the folder right now.
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.name not in PREPARED and not p.name.startswith("."))


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def check_output(out: Path, resume: bool, overwrite: bool, protect: Sequence[tuple[str, str | Path]] = ()) -> bool:
    """Refuse to mix a new run with what an output folder already holds; returns whether the run
    resumes (a --resume of a run stopped before its first checkpoint starts afresh, and says so).

    --overwrite moves the old run's files into a hidden ASIDE folder (see claim()); it is refused
    for a folder holding anything a run does not write."""
    if not str(out).strip():
        raise InputError("--output is empty; give the run's own folder, e.g. --output runs/NAME")
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file; give a folder path")
    check_protected(out, protect)
    held = _content(out)
    leftovers = latest(out) is None and all(n in LEFTOVERS for n in held)
    leftovers = leftovers and (not held or "metrics.jsonl" in held)
    if resume:
        if latest(out) is not None:
            return True
        if (out / "trainer_state.pt").exists():
            raise InputError(
                f"--resume: {out} was written by an older tiankong (trainer_state.pt, a pickle, "
                "is never loaded: it could run code); start the run again without --resume"
            )
        if not held or not leftovers:  # nothing at all: more likely a mistyped folder than a lost run
            raise InputError(f"--resume: no checkpoint in {out} (no {CHECKPOINTS}/step-*); run without --resume")
        say_line(f"--resume: {out} holds no checkpoint (the run stopped before its first save); starting from step 0")
        return False
    if not held or leftovers:  # a run stopped before its first save left nothing worth keeping
        return False
    if not overwrite:
        stopped = _unfinished(out)
        if stopped is not None:  # most often: the command that was stopped, run again as it was
            raise InputError(f"--output {out} holds an unfinished run {stopped}")
        raise InputError(
            f"--output {out} already holds {_shown(held)}; choose a new folder, add --resume to continue "
            "its run, or --overwrite to replace it"
        )
    unknown = [n for n in held if not is_run_file(n)]
    if unknown:
        raise InputError(
            f"--overwrite: --output {out} holds {_shown(unknown)}, which no tiankong run writes; "
            "--overwrite only replaces a run's output: choose another --output (or move those files away)"
        )
    if not RUN_MARKERS & set(held):
        raise InputError(
            f"--overwrite: --output {out} is not a tiankong run's output (no train_config.json, metrics.jsonl "
            f"or {CHECKPOINTS}/); choose another --output"
        )
    return False


def _unfinished(out: Path) -> str | None:
    """Where a run stopped before its last step stands and the choices, its continuation last ("(step 3
    of 20): choose a new folder, add --overwrite to replace it, or continue it with: tiankong train ...
    --resume", the command its train_config.json recorded, as a command opening the folder says it:
    engine/resolve.py unfinished_run); None for a finished run or a folder without that record."""
    from tiankong.engine.resolve import resume_command

    last = latest(out)
    try:
        record = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    steps = record.get("steps") if isinstance(record, dict) else None
    match = _STEP_DIR.match(last.name) if last is not None else None
    if match is None or type(steps) is not int or int(match.group(1)) >= steps:
        return None
    head = f"(step {int(match.group(1))} of {steps}): choose a new folder, add --overwrite to replace it, or"
    command = resume_command(out)  # None: a run of the Python API, no command recorded
    return f"{head} continue it with: {command}" if command else f"{head} add --resume to continue it"


def _set_aside(out: Path) -> Path | None:
    """--overwrite: move the old run's files (all run files, check_output made sure) into ASIDE, so
    that a --resume can never continue the old run; ASIDE goes after the new run's first save."""
    held = [n for n in _content(out) if is_run_file(n)]
    if not held:
        return None
    aside = out / ASIDE
    try:
        if aside.exists():  # a run killed before its first save: its old run is the one to keep
            restore(out)
        aside.mkdir()
        for name in held:
            os.replace(out / name, aside / name)
        fsync_dir(out)
    except OSError as e:
        raise InputError(f"--overwrite: cannot move the old run in {out} aside: {why(e)}") from None
    return aside


def restore(out: Path) -> None:
    """Put an --overwrite'd run back (the new run ended before its first checkpoint)."""
    aside = out / ASIDE
    if not aside.is_dir():
        return
    for p in aside.iterdir():
        target = out / p.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(p, target)
    aside.rmdir()
    fsync_dir(out)


def _mkdir(out: Path) -> bool:
    """Create the output folder (and its parents); returns whether it was created."""
    if out.is_dir():
        return False
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno == errno.ENOENT:  # e.g. /proc: the parent exists but takes no new folders
            parent = next((p for p in out.absolute().parents if p.exists()), Path("/"))
            raise InputError(
                f"cannot create --output {out}: {parent} does not take new folders; choose another folder"
            ) from None
        raise InputError(f"cannot create --output {out}: {why(e)}") from None
    return True


def _lock(out: Path) -> int:
    """An exclusive lock on the output folder for the whole run (released when the process ends,
    however it ends): two runs writing one folder would silently lose one's results. The lock file
    goes when the run ends (claim), so a run that locked the old file just then locks a new one."""
    path = out / LOCK_FILE
    for _ in range(3):
        try:
            got = lock_with_pid(path)
        except OSError as e:
            raise InputError(f"cannot write into --output {out}: {why(e)}") from None
        if isinstance(got, str):
            raise InputError(
                f"--output {out} is in use by another run (pid {got}); wait for it or choose another folder"
            )
        if got is not None:
            return got
        if not out.is_dir():  # a run that failed removed its new folder, lock file and all, after we opened it
            break
        # else the run that held it ended and removed its lock file: lock a new one
    raise InputError(f"--output {out} was removed by another run that just failed; run again")


_CLAIMS: dict[Path, bool] = {}  # output folders this process holds -> whether the run resumes


@contextlib.contextmanager
def claim(out: Path, resume: bool, overwrite: bool, protect: Sequence[tuple[str, str | Path]] = ()) -> Iterator[bool]:
    """Hold an output folder for one run: checked (check_output), created, locked, the old run
    set aside under --overwrite; yields whether the run resumes. Re-entrant: the CLI claims the
    folder before it exports votes into it, the trainer's own claim then just joins.

    If the run fails before its first checkpoint, an --overwrite'd old run is put back and a folder
    this claim created is removed again (bad input leaves no empty folder behind). Only the main
    process of a torchrun job checks and locks; the others wait at the trainer's barrier."""
    key = out.absolute()
    if key in _CLAIMS:
        yield _CLAIMS[key]
        return
    if os.environ.get("RANK", "0") != "0":
        yield resume and latest(out) is not None
        return
    resumes = check_output(out, resume, overwrite, protect)
    created = _mkdir(out)
    fd = _lock(out)
    try:
        if not resumes and overwrite:
            _set_aside(out)
        _CLAIMS[key] = resumes
        yield resumes
    except BaseException:
        if latest(out) is None:
            _undo(out, created)
        raise
    finally:
        _CLAIMS.pop(key, None)
        # Removed while still held: a run that opened it meanwhile finds its lock on a removed file
        # (lock_with_pid gives None) and locks a new one, so no two runs ever hold the folder.
        with contextlib.suppress(OSError):
            (out / LOCK_FILE).unlink()
        os.close(fd)


def _undo(out: Path, created: bool) -> None:
    """A run that ended before its first checkpoint: nothing of it is worth keeping."""
    try:
        restore(out)
        if created:  # made by this claim and held under its lock: everything in it is this run's
            shutil.rmtree(out)
    except OSError:
        pass  # best effort: the run's own error is the one to show


def discard_aside(out: Path) -> None:
    """After the first checkpoint of an --overwrite run: the old run is replaced for good."""
    shutil.rmtree(out / ASIDE, ignore_errors=True)


def tokenizer_source(out: Path, start: str | Path) -> Path:
    """Where a save copies the tokenizer from: the run's newest checkpoint, else `start` (the model
    or folder the run began from). Never a checkpoint the run resumed from as such: writing newer
    checkpoints deletes that one, and a tokenizer trained on the run's data exists nowhere else."""
    return latest(out) or Path(start)


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return None
    steps = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := _STEP_DIR.match(p.name)) and p.is_dir() and not p.is_symlink()
    ]
    return max(steps)[1] if steps else None


# --- writing ------------------------------------------------------------------------------------


def write(out: Path, step: int, save_model: Callable[[Path], None], state: dict[str, Any]) -> Path:
    """Stage, seal and publish one checkpoint; returns its folder."""
    root = out / CHECKPOINTS
    final = root / f"step-{step:06d}"
    stage = root / f".step-{step:06d}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(stage, ignore_errors=True)  # left by a kill during an earlier save
        stage.mkdir()
    except OSError as e:
        raise InputError(f"cannot write a checkpoint into {root}: {why(e)}") from None
    try:
        save_model(stage)
        save_state(stage, state)
        _fsync_tree(stage)
        if final.exists():  # the same step saved again (e.g. a resumed run that stops at once)
            shutil.rmtree(final)
        os.replace(stage, final)
        fsync_dir(root)
    except (OSError, WriteError) as e:  # a full disk: the previous checkpoint stays whole
        shutil.rmtree(stage, ignore_errors=True)
        reason = e.reason if isinstance(e, WriteError) else why(e)
        raise InputError(f"cannot write a checkpoint into {root}: {reason}; the previous checkpoint is kept") from None
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        reason = _safetensors_reason(e)
        if reason is None:
            raise
        raise InputError(f"cannot write a checkpoint into {root}: {reason}; the previous checkpoint is kept") from None
    try:
        publish(final, out)
    except OSError as e:
        raise InputError(f"checkpoint {final.name} is saved, but publishing it into {out} failed: {why(e)}") from None
    for old in root.iterdir():
        if old != final and (_STEP_DIR.match(old.name) or old.name.endswith(".tmp")):
            shutil.rmtree(old, ignore_errors=True)
    discard_aside(out)
    return final


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _safetensors_reason(e: BaseException) -> str | None:
    """Why safetensors could not write a file, as why() says it for an OSError; None for any other
    error. Its SafetensorError is no OSError: the errno is only in the text ("... (os error 28)")."""
    from safetensors import SafetensorError

    if not isinstance(e, SafetensorError):
        return None
    m = _OS_ERROR.search(str(e))
    if m is None:
        return f"{str(e).splitlines()[0] if str(e) else 'safetensors could not write a file'}; check the disk"
    code = int(m.group(1))
    return why(OSError(code, os.strerror(code)))


def publish(checkpoint: Path, out: Path) -> None:
    """Make the output folder's model files those of `checkpoint`, removing files the new model lacks."""
    _publish_dir(checkpoint, out, top=True)
    fsync_dir(out)


def _publish_dir(src: Path, dst: Path, top: bool) -> None:
    dst.mkdir(exist_ok=True)
    keep = {STATE_JSON, STATE_TENSORS} if top else set()
    names = {p.name for p in src.iterdir()} - keep
    for p in dst.iterdir():  # stale model files of an earlier model (e.g. an old tokenizer.json)
        if p.name in names or p.name.startswith("."):
            continue
        if top and (p.name in RUN_RECORDS or p.name == CHECKPOINTS or not is_run_file(p.name)):
            continue  # records of the run, and never a file no run writes
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    for name in sorted(names):
        s, d = src / name, dst / name
        if s.is_dir():
            _publish_dir(s, d, top=False)
            continue
        tmp = dst / f".{name}.publish"
        tmp.unlink(missing_ok=True)
        try:
            os.link(s, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(s, tmp)
        os.replace(tmp, d)


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)
