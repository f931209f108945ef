"""The config base every trainer's dataclass extends: `opt` (a field with its help text, shown by
`tiankong train NAME --help`), `TrainConfig` (the settings all trainers share, their checks) and
the type check of each setting. Apart from the loop (common.py): what a run is asked to do reads
on its own, apart from how the run is carried out.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, NoReturn

import numpy as np

from tiankong.engine.errors import InputError, quoted

from .distributed import SHARDINGS


def opt(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its help text (shown by `tiankong train NAME --help`); `auto=0` (or -1)
    marks the value that means "auto" (trainers/auto.py fills it in), which its checks then name;
    `hidden=True` leaves a setting a trainer does not use out of its --help."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # --- where
    output: str = opt("runs/model", "Output folder: a Hugging Face model folder plus metrics.jsonl and trainer state.")
    model: str = opt("", "Starting checkpoint (a Hugging Face model folder).")
    data: str = opt("", "Training data file.")
    # --- optimisation
    steps: int = opt(100, "Optimisation steps.")
    batch_size: int = opt(8, "Global batch size (items per step, over all processes).")
    micro_batch_size: int = opt(0, "Items per forward pass; 0 = the whole per-process batch.")
    lr: float = opt(1e-4, "Peak learning rate.")
    warmup_steps: int = opt(0, "Linear warmup steps; 0 = none (the learning rate starts at its peak; not auto).")
    min_lr_ratio: float = opt(0.1, "Cosine decay floor as a fraction of lr.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Clip gradients to this norm; 0 = off.")
    seed: int = opt(0, "Seed for data order and initialisation.")
    # --- runtime
    device: str = opt("auto", "cpu, cuda, mps or auto.")
    dtype: str = opt("float32", "Parameter dtype: float32 or bfloat16.")
    threads: int = opt(
        0,
        "CPU threads of a run on the CPU; 0 = this machine's default (torch's: one per core, or OMP_NUM_THREADS), "
        "whatever else runs. The result depends on the count: the run keeps it, and --resume uses it.",
    )
    sharding: str = opt(
        "ddp",
        "Under torchrun: ddp (a whole model per process) or fsdp (parameters, gradients and optimizer state split "
        "over the processes, for models too large for one device).",
    )
    save_every: int = opt(0, "Checkpoint every N steps; 0 = by time only (--save-minutes).")
    save_minutes: float = opt(5.0, "Checkpoint when this many minutes have passed since the last one; 0 = off.")
    eval_every: int = opt(0, "Evaluate on the held-out split every N steps; 0 = only at the end.")
    resume: bool = opt(False, "Continue an interrupted run from the output folder's last checkpoint.")
    overwrite: bool = opt(False, "Replace what an existing, non-empty output folder holds (else it is refused).")
    progress: bool = opt(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        self.check_types()

    def check_types(self) -> None:
        """Every field holds its default's type, or InputError naming it: a str where a number goes
        ('3' from a form or os.environ) would otherwise fail later as a bare TypeError, deep in a
        comparison. A path (pathlib.Path) where a str goes becomes its str, and a numpy number a plain
        one; an int stands for a float, as on the command line (tui/train_cli.py)."""
        for f in fields(self):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            setattr(self, f.name, _typed(f.name, getattr(self, f.name), default))

    def validate(self) -> None:
        self.check_types()  # fields may have been set since construction
        if not self.output.strip():  # Path("") is the current folder: never a run's output by accident
            raise InputError("--output is empty; give the run's own folder, e.g. --output runs/NAME")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                self.refuse(name, "must be at least 1")
        if self.micro_batch_size < 0:
            self.refuse("micro_batch_size", "must be >= 0")
        if not self.lr > 0:
            self.refuse("lr", "must be > 0")
        self.check_warmup()
        if not 0 <= self.min_lr_ratio <= 1:  # below 0 the lr turns negative (gradient ascent); above 1 it climbs
            self.refuse("min_lr_ratio", "must be in [0, 1] (a fraction of --lr)")
        if not self.weight_decay >= 0:
            self.refuse("weight_decay", "must be >= 0")
        if self.threads < 0:
            self.refuse("threads", "must be >= 0 (0 = this machine's default)")
        if not self.save_minutes >= 0:
            self.refuse("save_minutes", "must be >= 0")
        if self.resume and self.overwrite:
            raise InputError("--resume continues the run in the output folder and --overwrite replaces it; give one")
        if self.dtype not in ("float32", "bfloat16"):
            raise InputError(f"--dtype must be float32 or bfloat16 for training, got {self.dtype!r}")
        if self.sharding not in SHARDINGS:
            raise InputError(f"unknown --sharding {self.sharding!r}; use {' or '.join(SHARDINGS)}")

    def check_warmup(self) -> None:
        """A negative warmup would shift the schedule so that the peak --lr is never reached."""
        if self.warmup_steps < 0:
            self.refuse("warmup_steps", "must be >= 0")

    def auto_value(self, name: str) -> Any:
        """The value that means "auto" for this setting (opt(..., auto=0)), or None if it has none."""
        return next((f.metadata.get("auto") for f in fields(self) if f.name == name), None)

    def refuse(self, name: str, rule: str) -> NoReturn:
        """InputError for a bad setting, as the user gives it: "--steps must be at least 1 (or 0 =
        auto), got -1", the auto value named wherever the setting has one."""
        sentinel = self.auto_value(name)
        either = f" (or {sentinel} = auto)" if sentinel is not None else ""
        raise InputError(f"{flag(name)} {rule}{either}, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


def flag(name: str) -> str:
    """A setting's command-line flag: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def _typed(name: str, value: Any, default: Any) -> Any:
    """value as a setting whose default is `default` -> value, or its plain form; InputError if its
    type is wrong."""
    if isinstance(default, bool):
        ok = isinstance(value, (bool, np.bool_))
        want = "True or False"
    elif isinstance(default, int):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        want = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        want = "a number"
    elif isinstance(default, str):
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        ok, want = isinstance(value, str), "a str"
    else:
        return value
    if not ok:
        raise InputError(f"{name} must be {want} (like {default!r}), got {quoted(repr(value), 60)}")
    if type(value) in (bool, int, float, str):
        return value  # an int given for a float stays as given (the CLI keeps it too)
    return type(default)(value)  # np.int64 -> int, np.float32 -> float, np.bool_ -> bool
