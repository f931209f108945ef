"""What every trainer shares: the optimisation loop, checkpoints and resume.

A trainer subclasses `Trainer` and supplies four things: `setup()` (models and data),
`n_items()` (how many items one epoch has; `global_batches` in optim.py draws the deterministic
items of each optimisation step from it), `loss(items)` (the algorithm: one readable function) and
`save(folder)`; optionally `item_weight(index)`, `evaluate()`, `extra_state()` and
`load_extra_state(state)`. The loop here does the rest the same way for all of them:

* data-parallel: under `torchrun --nproc_per_node N` every rank sees the same global batch and
  takes its slice; losses are scaled so that N processes produce exactly the gradient of one
  process with the same global batch (DDP averages gradients, so each rank's loss is multiplied
  by N / total weight); `--sharding fsdp` shards the model instead of copying it (distributed.py:
  the same gradient, with every rank running as many forward passes);
* gradient accumulation over micro-batches, clipping, AdamW, linear warmup + cosine decay;
* metrics as JSONL per step (`metrics.jsonl`), a rich progress bar on rank 0;
* checkpoints as one unit (`checkpoint.py`): every few minutes, at the end, and on Ctrl+C or
  SIGTERM; `resume=True` continues from the newest one to the same result an uninterrupted run
  gives, its settings checked against the checkpoint's (and auto ones taken from it) before any
  model loads. The output folder itself always holds the newest checkpoint's model as a plain Hugging
  Face folder that tiankong and transformers load.

Beside the loop: the config base (`TrainConfig`, `opt`) in config.py; AdamW, the learning-rate
schedule and the seeded data order in optim.py; Ctrl+C and SIGTERM in stopping.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from tiankong.engine.errors import InputError, ModelLoadError
from tiankong.engine.files import atomic_write_text
from tiankong.engine.model_names import given_name
from tiankong.tui.generate_input import say as say_line

from . import checkpoint as ckpt
from . import cpu_threads
from .config import TrainConfig
from .distributed import Dist, init_distributed, swapped
from .metrics import MetricsWriter, read_metrics
from .optim import global_batches, lr_at, make_adamw, seed_everything
from .progress import progress, status
from .stopping import TrainingStopped, _StopRequests
from .trainer_state import load_state, read_state_json


class Trainer:
    """The shared loop; see the module docstring for what a subclass provides."""

    name = "train"

    def __init__(self, cfg: TrainConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.dist: Dist = init_distributed(cfg.device)
        self.device = self.dist.device
        self.step = 0
        self.kept_auto: dict[str, Any] = {}  # auto settings a --resume took from the run's start
        self.finished_before = False  # a --resume of a run already finished, verdict and all
        self.say: Callable[[str], None] = _silent  # the text beside the spinner while setup() runs
        self.phase: Callable[[float, str], None] = _silent_part  # how far the current step is (progress.part)
        # The line a second Ctrl+C leaves when it has to end the process from the signal watcher
        # (stopping.py); the CLI sets one that names the surviving checkpoint and the command to go on.
        self.at_once_note: Callable[[], str] | None = None
        # How to continue this run (the CLI's `tiankong train ... --resume`), kept in train_config.json
        # so that a command opening the unfinished run can say it (engine/resolve.py's unfinished_run).
        self.resume_command = ""
        # Lines about how the run will train (the CPU thread note), said once it is known to train:
        # not before "already finished; nothing to train".
        self.start_notes: list[str] = []
        # A new CPU run looks at the machine's load, only to suggest fewer threads in a note (the CLI's runs:
        # the look takes half a second); the count itself never depends on it (cpu_threads.py).
        self.threads_hint = False
        self.started_threads = 0  # the CPU thread count a --resume'd run started on (0: none recorded)

    # ---- what subclasses provide
    def setup(self) -> None:
        """Build models and load data; set self.model (the module being optimised)."""
        raise NotImplementedError

    def n_items(self) -> int:
        raise NotImplementedError

    def item_weight(self, index: int) -> float:
        """How much one item counts in the global mean (1 per item; SFT: answer tokens)."""
        return 1.0

    def loss(self, items: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed (not averaged) loss over `items` and metrics (sums too, averaged by the loop)."""
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        return {}

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    # ---- the loop
    def train(self) -> Path:
        """Run to cfg.steps; on Ctrl+C or SIGTERM checkpoint and raise TrainingStopped."""
        with ckpt.claim(self.out, self.cfg.resume, self.cfg.overwrite, self.protected()) as resumes:
            self.cfg.resume = resumes  # a --resume of a run stopped before its first save starts afresh
            return self._train()

    def protected(self) -> list[tuple[str, str | Path]]:
        """What this run reads, which its output folder must neither be, hold nor sit inside."""
        from tiankong.tui.store import data_dir

        cfg = self.cfg
        return [
            ("the --model folder", cfg.model),
            ("the --reward model", getattr(cfg, "reward", "")),
            ("the --data file", cfg.data),
            ("the --prompts file", getattr(cfg, "prompts", "")),
            ("the playground's data folder", data_dir()),
        ]

    def data_fingerprint(self) -> dict[str, str]:
        """sha256 of each data source (a file, or a folder's files), kept in the trainer state so that
        --resume can refuse a run whose data changed."""
        out: dict[str, str] = {}
        for name in ("data", "prompts"):
            given = getattr(self.cfg, name, "")
            if given and Path(given).exists():
                out[name] = _sha256(Path(given))
        return out

    def _train(self) -> Path:
        cfg = self.cfg
        self.dist.barrier()
        self.fingerprint = self.data_fingerprint() if self.dist.is_main else {}
        if cfg.resume and not self._resume_check():
            return self.out  # finished, verdict and all: nothing to do
        self._set_threads()
        seed_everything(cfg.seed)
        shown = cfg.progress and self.dist.is_main
        with status(
            f"{self.name}: loading the model{'s' if self.name in ('ppo', 'dpo') else ''} and data", shown
        ) as say:
            self.say = say
            self.setup()
            self.say = _silent
        if self.kept_auto and hasattr(self, "auto"):  # verdict.json's settings: what auto resolved, then or now
            self.auto.values = {**self.kept_auto, **self.auto.values}
        self.ddp_model = self.dist.wrap(self.model, cfg.sharding)  # FSDP replaces the parameters: first
        self.optimizer = make_adamw(self.parameters(), cfg)
        if cfg.resume:
            self._load_state()
        metrics = MetricsWriter(self.out / "metrics.jsonl", enabled=self.dist.is_main, truncate_after=self.step)
        batches = global_batches(self.n_items(), cfg.batch_size, cfg.seed, start_step=self.step)
        last_save = time.monotonic()
        with (
            _StopRequests(announce=self.dist.is_main, farewell=self.at_once_note) as stop,
            progress(self.name, cfg.steps, done=self.step, enabled=shown) as advance,
        ):
            self.phase = advance.part
            if self.step >= cfg.steps:  # resumed a finished run: make sure its files are published
                self.checkpoint()
            while self.step < cfg.steps:
                row = self.train_step(next(batches))
                self.step += 1
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.steps:
                    advance.note(f"step {self.step}: held-out evaluation")
                    row.update(self.evaluate())
                metrics.write({"step": self.step, **row})
                advance(row)
                due = (
                    (cfg.save_every and self.step % cfg.save_every == 0)
                    or self.step == cfg.steps
                    or (cfg.save_minutes and time.monotonic() - last_save >= cfg.save_minutes * 60)
                )
                stopping = self._agree(stop.requested)
                if due or stopping:
                    self.checkpoint()
                    last_save = time.monotonic()
                if stopping and self.step < cfg.steps:
                    metrics.close()
                    raise TrainingStopped(self.step, cfg.steps, self.out, stop.signal_name)
        self.phase = _silent_part
        metrics.close()
        self.dist.gather(self.model)  # FSDP: whole again on every rank, so rank 0 alone may run it (the verdict)
        self.dist.barrier()
        return self.out

    def _set_threads(self) -> None:
        """A CPU run's thread count (cpu_threads.py), kept in cfg.threads and so in train_config.json, then
        the lines about how the run trains, said now that it is known to train."""
        if self.device.type == "cpu":
            hint = self.threads_hint and self.dist.is_main
            self.cfg.threads, note = cpu_threads.settle(self.cfg.threads, self.started_threads, hint)
            self.start_notes += [note] if note else []
        for note in self.start_notes if self.dist.is_main else ():
            say_line(note)

    def _agree(self, flag: bool) -> bool:
        """Whether any process was asked to stop (all ranks must stop after the same step)."""
        if not self.dist.enabled:
            return flag
        return self.dist.all_reduce_sum({"stop": float(flag)})["stop"] > 0

    def train_step(self, batch: list[int]) -> dict[str, float]:
        """One optimisation step over a global batch; returns the step's metrics."""
        lr = self.set_lr()
        mine = batch[self.dist.rank :: self.dist.world]  # this process's slice
        total = sum(self.item_weight(i) for i in batch)  # the same on every rank
        self.model.train()
        sums: dict[str, float] = {}
        self.accumulate(mine, total, sums)
        grad_norm = self.optimizer_step()
        row = self.reduce_mean(sums, total)
        row.update(lr=lr, grad_norm=grad_norm)
        return row

    # The pieces of a step, shared with trainers whose step has another shape (PPO's epochs over a rollout).
    def set_lr(self) -> float:
        """Set this step's learning rate (warmup + cosine) on every parameter group; return it."""
        lr = lr_at(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def accumulate(self, rows: list[int], total: float, sums: dict[str, float]) -> None:
        """Forward and backward over this rank's rows in micro-batches, accumulating gradients of the
        loss summed over rows * world / total (the global weight), so that N processes make the
        gradient of one; DDP syncs on the last micro-batch only. Adds the metrics and the loss to sums.
        Under FSDP a rank with fewer micro-batches runs extra ones on item 0, weighted 0 (see even_out)."""
        micro = self.cfg.micro_batch_size or max(1, len(rows))
        chunks = self.dist.even_out([rows[i : i + micro] for i in range(0, len(rows), micro)] or [[]], filler=[0])
        for k, (chunk, real) in enumerate(chunks):
            with self.dist.no_sync(self.ddp_model, last=k == len(chunks) - 1):
                loss_sum, m = self.loss(chunk) if chunk else (self._zero(), {})
                if not real:
                    loss_sum, m = loss_sum * 0.0, {}
                (loss_sum * self.dist.world / total).backward()
            for key, v in m.items():
                sums[key] = sums.get(key, 0.0) + float(v)
            sums["loss"] = sums.get("loss", 0.0) + float(loss_sum.detach())

    def optimizer_step(self) -> float:
        """Clip the gradients (max_grad_norm), step and zero them; return the norm before clipping (0 if off)."""
        grad_norm = 0.0
        if self.cfg.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters(), self.cfg.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def reduce_mean(self, sums: dict[str, float], total: float) -> dict[str, float]:
        """Metric sums of every rank added up, divided by the global weight."""
        return {k: v / total for k, v in self.dist.all_reduce_sum(sums).items()}

    def _zero(self) -> torch.Tensor:
        """The loss of a rank with no rows in a micro-batch: 0, but it still joins DDP's gradient all-reduce."""
        return sum(p.sum() * 0.0 for p in self.parameters())

    # ---- checkpoints
    def checkpoint(self) -> None:
        """One complete checkpoint folder (model files + trainer state), then published; written by
        rank 0 (under FSDP every rank first helps gather the full weights and optimizer state)."""
        self.prepare_save()
        weights, optimizer = self.dist.full_state(self.model, self.optimizer)
        if self.dist.is_main:
            state = {
                "step": self.step,
                "optimizer": optimizer,
                "rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "config": self.cfg.to_dict(),
                "data": self.fingerprint,
                "extra": self.extra_state(),
            }
            with swapped(self.model, weights):
                ckpt.write(self.out, self.step, self.save, state)
            # The model as the user named it (ollama:NAME:TAG), not the blob path it resolved to.
            record = {**self.cfg.to_dict(), "model": given_name(self.cfg.model) or self.cfg.model}
            if self.resume_command:  # not a setting: what a command opening the unfinished run tells its user
                record.update(resume_command=self.resume_command, started_in=os.getcwd())
            atomic_write_text(self.out / "train_config.json", json.dumps(record, indent=2) + "\n")
        self.dist.barrier()

    def prepare_save(self) -> None:
        """Run on every rank before rank 0 saves: work for save() that runs the model (under FSDP
        only all ranks together can; e.g. the reward model's normalization)."""

    def extra_state(self) -> dict[str, Any]:
        """Anything else a trainer must restore on resume (e.g. PPO's KL controller)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def resume_model_path(self) -> Path | None:
        """Where setup() should load the model from: the newest checkpoint when resuming."""
        return ckpt.latest(self.out) if self.cfg.resume else None

    def loading(self, folder: str | Path, role: str = "the --model") -> contextlib.AbstractContextManager[None]:
        """Loads from `folder` name it in full if a file is damaged: a --resume checkpoint (also its
        value/) with that fix, else `role` (the policy, the reward model) with its own."""
        resume = self.resume_model_path()
        if resume is not None and resume.resolve() in (Path(folder).resolve(), *Path(folder).resolve().parents):
            return loading("checkpoint", folder, CHECKPOINT_FIX)
        fix = "train it again with `tiankong train reward`" if role == "the --reward model" else model_fix(folder)
        return loading(role, folder, fix)

    def check_finite(self, model: nn.Module, folder: str | Path, role: str = "the --model") -> None:
        """Refuse a starting model holding NaN or inf weights (generate's check and words): training
        on it makes a NaN model that the loop would report as a finished run. Not run on a --resume
        checkpoint, whose NaN (a diverged run) the verdict reports."""
        from tiankong.engine.generate import nonfinite_reason

        reason = nonfinite_reason(model)
        if reason.startswith("weight "):  # else it names no weight: all are finite
            raise InputError(f"{role} {folder}: {reason}")

    def _load_state(self) -> None:
        folder = ckpt.latest(self.out)
        assert folder is not None  # check_output refused a resume without one
        state = load_state(folder)  # its settings were checked before setup (_resume_check)
        try:
            self.dist.load_optimizer(self.model, self.optimizer, state["optimizer"])
            self.step = int(state["step"])
            torch.set_rng_state(state["rng"])
            rng = state["python_rng"]
            random.setstate((rng[0], tuple(rng[1]), rng[2]))
            self.load_extra_state(state.get("extra", {}))
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            raise InputError(
                f"--resume: the trainer state in {folder} does not fit this run "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "start the run again without --resume"
            ) from None

    def _resume_check(self) -> bool:
        """--resume, before any model loads: the command's settings against the checkpoint's (a wrong
        flag is refused at once, not after minutes of loading), the auto settings the run resolved at
        its start taken again (PPO's answer-length probe is not rerun), and where it resumes said in
        one line. False for a run already finished whose verdict is written: nothing to do."""
        folder = ckpt.latest(self.out)
        assert folder is not None  # check_output refused a resume without one
        state = read_state_json(folder)
        old = state.get("config") if isinstance(state.get("config"), dict) else {}
        self._keep_auto(old)
        threads = old.get("threads")  # none (recorded before runs kept it) or no count: this machine's default
        self.started_threads = threads if type(threads) is int and threads > 0 else 0
        self._check_same_run(state)
        done, steps = int(state.get("step", 0)), self.cfg.steps
        say = say_line if self.dist.is_main else _silent
        kept = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.kept_auto.items())
        kept = f"; settings left at auto keep the run's values: {kept}" if kept else ""
        if done >= steps:
            if (self.out / "verdict.json").is_file():
                say(
                    f"{self.out}: already finished ({done} step{'' if done == 1 else 's'}); nothing to train "
                    f"(its verdict: {self.out / 'verdict.json'})"
                )
                self.finished_before = True
                return False
            say(f"{self.out}: already finished ({done} step{'' if done == 1 else 's'}); writing its verdict")
            return True
        redone = _last_step(self.out / "metrics.jsonl")
        again = f"; step{'s' if redone > done + 1 else ''} {_span(done + 1, redone)} run again" if redone > done else ""
        say(f"resuming from {folder.name} (step {done} of {steps}{again}){kept}")
        if self.dist.is_main:  # it judged a model the rest of this run replaces; the end writes a new one
            (self.out / "verdict.json").unlink(missing_ok=True)
        return True

    def _keep_auto(self, old: dict[str, Any]) -> None:
        """Settings left at their auto value take what the run's start resolved them to (kept_auto)."""
        for f in fields(self.cfg):
            sentinel = f.metadata.get("auto")
            value = old.get(f.name)
            if sentinel is None or getattr(self.cfg, f.name) != sentinel or value is None or value == sentinel:
                continue
            if type(value) is type(f.default) or (isinstance(f.default, float) and type(value) is int):
                setattr(self.cfg, f.name, value)
                self.kept_auto[f.name] = value

    def _check_same_run(self, state: dict[str, Any]) -> None:
        """--resume continues the run the checkpoint belongs to: other data or other settings would
        mix two runs in one model, with train_config.json naming only the second."""
        old = state.get("config")
        if not isinstance(old, dict):
            return
        now = self.cfg.to_dict()
        old_data, new_data = state.get("data") or {}, self.fingerprint
        for name in sorted(set(old_data) & set(new_data)):
            if old_data[name] != new_data[name]:
                raise InputError(
                    f"--resume: --{name} {now.get(name)} is not the data the run started on "
                    f"({old.get(name)}, which has changed or is another file); resume with that data, "
                    "or start a new run (another --output, or --overwrite)"
                )
        diffs = [
            f"--{k.replace('_', '-')} {old[k]!r} -> {now[k]!r}"
            for k in now
            if k in old and k not in _FREE_ON_RESUME and k not in ("steps", "data", "prompts") and now[k] != old[k]
        ]
        if diffs:
            raise InputError(
                f"--resume: this command changes the run's settings ({', '.join(diffs[:3])}); resume with the "
                "settings it started with (see train_config.json), or start a new run (another --output, or --overwrite)"
            )
        steps, done = int(old.get("steps", self.cfg.steps)), int(state.get("step", 0))
        if self.cfg.steps != steps:
            if done < steps or self.cfg.steps < steps:
                raise InputError(
                    f"--resume: the run was started with --steps {steps} and is at step {done}; resume with "
                    f"--steps {steps} (more steps may only extend a finished run)"
                )
            if self.dist.is_main:
                say_line(
                    f"--resume: extending the finished run from {steps} to {self.cfg.steps} steps "
                    "(the learning-rate schedule is stretched to the new end)"
                )


def _silent(*_: Any, **__: Any) -> None:
    pass


def _silent_part(fraction: float, text: str) -> None:
    pass


def _last_step(metrics: Path) -> int:
    """The last step metrics.jsonl records (0 if none): steps past the checkpoint a resume runs again."""
    try:
        return max((int(r.get("step", 0)) for r in read_metrics(metrics)), default=0)
    except (InputError, TypeError, ValueError):
        return 0


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


# Settings that do not change what a run computes (or that --resume checks itself): free to differ.
_FREE_ON_RESUME = frozenset(
    {"output", "resume", "overwrite", "progress", "device", "save_every", "save_minutes", "eval_every"}
    | {"micro_batch_size", "sharding"}
    | {"threads"}  # changes the result's bits, not the run: honored on a --resume, with a note (cpu_threads.py)
)


def _sha256(path: Path) -> str:
    """Content hash of a file, or of a folder's files (names and contents, in a fixed order)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else "").encode() + b"\0")
        try:
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except OSError:
            pass  # unreadable: the trainer's own reading names it
    return h.hexdigest()


_DAMAGED = re.compile(r"^(?P<file>.+?) is truncated or corrupt \((?P<why>.*)\); [^;]*$")


def model_fix(folder: str | Path) -> str:
    """What to do about a damaged model file: train a local run's output again, download the rest."""
    if (Path(folder) / "train_config.json").is_file():
        return "it is a tiankong run's output: train it again (or --resume its run if its checkpoints/ are intact)"
    return "download it again"


@contextlib.contextmanager
def loading(role: str, folder: str | Path, fix: str) -> Iterator[None]:
    """Name the full path, what the folder is to this run and the fix when one of its files is
    damaged (the loaders only know a file's name, and suggest a download)."""
    try:
        yield
    except ModelLoadError as e:
        m = _DAMAGED.match(str(e))
        if m is None:
            raise
        path = Path(folder)
        path = path if path.is_file() else path / Path(m["file"]).name
        raise ModelLoadError(f"{role} file {path} is damaged (truncated or corrupt: {m['why']}); {fix}") from None


CHECKPOINT_FIX = "the checkpoint is damaged: start the run again with --overwrite instead of --resume"
