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
run folder from a stranger can be resumed safely.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from tiankong.engine.errors import InputError
from tiankong.engine.files import WriteError, atomic_write_text, fsync_dir, parse_json, why

CHECKPOINTS = "checkpoints"
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
STATE_FORMAT = "tiankong-trainer-state"
# Files a CLI prepares in the output folder before the trainer starts (the exported votes).
PREPARED = frozenset({"preferences.jsonl"})
# Top-level files a run writes besides the model: records of the run, not published checkpoint files.
RUN_RECORDS = frozenset({"metrics.jsonl", "train_config.json", "verdict.json", *PREPARED})
_STEP_DIR = re.compile(r"step-(\d+)$")


# --- the output folder --------------------------------------------------------------------------


def check_output(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix a new run with what an output folder already holds."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file; give a folder path")
    if resume:
        _check_writable(out)
        if latest(out) is None:
            if (out / "trainer_state.pt").exists():
                raise InputError(
                    f"--resume: {out} was written by an older tiankong (trainer_state.pt, a pickle, "
                    "is never loaded: it could run code); start the run again without --resume"
                )
            raise InputError(f"--resume: no checkpoint in {out} (no {CHECKPOINTS}/step-*); run without --resume")
        return
    # Hidden files do not count: another process of the same run may be probing the folder right now.
    held = (
        sorted(p.name for p in out.iterdir() if p.name not in PREPARED and not p.name.startswith("."))
        if out.is_dir()
        else []
    )
    if not held:
        _check_writable(out)
        return
    if not overwrite:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise InputError(
            f"--output {out} already holds {shown}; choose a new folder, add --resume to continue "
            "its run, or --overwrite to replace it"
        )
    # --overwrite: forget the old run's checkpoints and records now, so that a --resume after an
    # early interruption can never continue the old run. Its model files go at the first publish.
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    for name in ("metrics.jsonl", "verdict.json", "trainer_state.pt"):
        (out / name).unlink(missing_ok=True)


def _check_writable(out: Path) -> None:
    """Fail before training, not at the first checkpoint an hour later."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.")
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot write into --output {out}: {why(e)}") from None


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
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    try:
        publish(final, out)
    except OSError as e:
        raise InputError(f"checkpoint {final.name} is saved, but publishing it into {out} failed: {why(e)}") from None
    for old in root.iterdir():
        if old != final and (_STEP_DIR.match(old.name) or old.name.endswith(".tmp")):
            shutil.rmtree(old, ignore_errors=True)
    return final


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
        if top and (p.name in RUN_RECORDS or p.name == CHECKPOINTS):
            continue
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


# --- trainer state ------------------------------------------------------------------------------


def save_state(folder: Path, state: dict[str, Any]) -> None:
    """state (nested dicts/lists/tuples of tensors, numbers, strings) -> JSON + safetensors."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "s")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / STATE_TENSORS))
    atomic_write_text(folder / STATE_JSON, json.dumps({"format": STATE_FORMAT, "version": 1, "state": tree}) + "\n")


def load_state(folder: Path) -> dict[str, Any]:
    """The state save_state wrote; one-line InputError for anything damaged or foreign."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / STATE_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--resume: cannot read {path} ({e}); start the run again without --resume") from None
    doc = parse_json(text, str(path), InputError)
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or "state" not in doc:
        raise InputError(f"--resume: {path} is not a tiankong trainer state; start the run again without --resume")
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
    except (SafetensorError, OSError) as e:
        raise InputError(
            f"--resume: {folder / STATE_TENSORS} is damaged ({e}); start the run again without --resume"
        ) from None
    try:
        state = _decode(doc["state"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"--resume: {path} is damaged ({e!r}); start the run again without --resume") from None
    if not isinstance(state, dict):
        raise InputError(f"--resume: {path} is damaged; start the run again without --resume")
    return state


def _encode(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """JSON for everything but tensors, which go to `tensors` under a path-like key."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj
        return {"$tensor": key}
    if isinstance(obj, dict):
        return {
            "$items": [
                [_encode(k, tensors, f"{key}.k{i}"), _encode(v, tensors, f"{key}.{i}")]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
        return {"$tuple": items} if isinstance(obj, tuple) else items
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"$float": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"trainer state holds a {type(obj).__name__}, which checkpoints cannot store")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "$tensor" in obj:
            return tensors[obj["$tensor"]]
        if "$items" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["$items"]}
        if "$tuple" in obj:
            return tuple(_decode(v, tensors) for v in obj["$tuple"])
        if "$float" in obj:
            return float(obj["$float"])
        raise ValueError(f"unknown entry {sorted(obj)[:3]}")
    return obj
