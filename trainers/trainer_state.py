"""Trainer state without pickle: JSON (steps, config, Python RNG, optimizer hyper-parameters) plus
one safetensors file (optimizer moments, torch RNG). Loading it runs no code, unlike a pickle, so a
run folder from a stranger can be resumed safely (trainers/checkpoint.py writes it into each
checkpoint)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from tiankong.engine.errors import InputError
from tiankong.engine.files import atomic_write_text, parse_json

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
STATE_FORMAT = "tiankong-trainer-state"


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

    doc = _read_json(folder)
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
    except (SafetensorError, OSError) as e:
        raise InputError(
            f"--resume: {folder / STATE_TENSORS} is damaged ({e}); start the run again without --resume"
        ) from None
    return _decoded(doc, tensors, folder / STATE_JSON)


def read_state_json(folder: Path) -> dict[str, Any]:
    """The JSON part of a checkpoint's trainer state (step, config, ...), every tensor read as None:
    what --resume checks before any model or optimizer state is loaded. Errors as load_state's."""
    return _decoded(_read_json(folder), _NoTensors(), folder / STATE_JSON)


def _read_json(folder: Path) -> dict[str, Any]:
    path = folder / STATE_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--resume: cannot read {path} ({e}); start the run again without --resume") from None
    doc = parse_json(text, str(path), InputError)
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or "state" not in doc:
        raise InputError(f"--resume: {path} is not a tiankong trainer state; start the run again without --resume")
    return doc


def _decoded(doc: dict[str, Any], tensors: dict[str, Any], path: Path) -> dict[str, Any]:
    try:
        state = _decode(doc["state"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"--resume: {path} is damaged ({e!r}); start the run again without --resume") from None
    if not isinstance(state, dict):
        raise InputError(f"--resume: {path} is damaged; start the run again without --resume")
    return state


class _NoTensors(dict):
    """Every tensor of a state read as None (read_state_json)."""

    def __missing__(self, key: str) -> None:
        return None


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
