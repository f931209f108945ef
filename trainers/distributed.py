"""Data parallelism under `torchrun`: gloo on CPU, nccl on GPU; a no-op in a single process.

    torchrun --nproc_per_node 2 -m tiankong.tui.cli train reward --data prefs.jsonl ...
    torchrun --nproc_per_node 8 -m tiankong.tui.cli train sft --sharding fsdp ...

Each process computes its slice of the global batch. With --sharding ddp (the default)
DistributedDataParallel keeps a whole copy of the model per process and averages gradients in the
backward pass. With --sharding fsdp torch's fully_shard (FSDP2) splits every parameter, its
gradient and its AdamW moments over the processes (one unit per transformer block, then the rest):
each block's parameters are gathered just before its forward and backward and freed after, and
gradients are averaged by reduce-scatter. Two rules follow, kept here:

* every process runs the same number of forward passes of the sharded model (each one gathers
  from all): `even_out` pads the shorter ranks' micro-batches with zero-weighted ones, and code
  that runs the model a different number of times per process (evaluation on a slice, sampling
  until EOS) does so inside `gathered`, which holds the whole parameters for the block;
* checkpoints stay plain Hugging Face folders: `full_state` gathers the full weights and optimizer
  state onto rank 0's CPU, and `swapped` lets the trainers' own save functions write them.

Without torchrun's environment variables everything here degrades to plain single-process code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn

from tiankong.engine.model import resolve_device

SHARDINGS = ("ddp", "fsdp")
_joined = False  # this process joined a process group (still true after destroy_process_group)


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    sharding: str = "ddp"  # set by wrap

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def sharded(self) -> bool:
        return self.enabled and self.sharding == "fsdp"

    def wrap(self, model: nn.Module, sharding: str = "ddp") -> nn.Module:
        """The module to run forward passes through: DDP's wrapper, or `model` itself sharded in
        place (its parameters become DTensors: build the optimizer after this)."""
        assert sharding in SHARDINGS, sharding
        self.sharding = sharding
        if not self.enabled:
            return model
        if sharding == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for blocks in [m for m in model.modules() if isinstance(m, nn.ModuleList)]:  # the transformer blocks
                for block in blocks:
                    fully_shard(block)
            fully_shard(model)  # embeddings, final norm, heads: one unit
            # FSDP takes the first unit to run forward as its root; PPO samples with the policy alone
            # first, so name the whole model root now (torch has no public call for this).
            model._get_fsdp_state()._lazy_init()
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, ddp_model: nn.Module, last: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step (FSDP
        reduce-scatters every micro-batch's gradients into the shards: nothing to skip)."""
        if self.enabled and not self.sharded and not last:
            return ddp_model.no_sync()
        return contextlib.nullcontext()

    def even_out(self, chunks: list[list[int]], filler: list[int]) -> list[tuple[list[int], bool]]:
        """(micro-batch, real) pairs: under FSDP every rank gets as many as the rank with the most,
        the extra ones `filler` with real False (run, weighted 0); otherwise the chunks as they are."""
        if not self.sharded:
            return [(c, True) for c in chunks]
        chunks = [c for c in chunks if c]
        counts: list[int | None] = [None] * self.world
        dist.all_gather_object(counts, len(chunks))
        most = max(c or 0 for c in counts)
        return [(c, True) for c in chunks] + [(filler, False)] * (most - len(chunks))

    @contextlib.contextmanager
    def gathered(self, model: nn.Module):
        """Under FSDP: the whole parameters on every rank for the block, so that ranks may run the
        model different numbers of times (no gradients). A no-op otherwise."""
        self.gather(model)
        try:
            yield
        finally:
            self.release(model)

    def gather(self, model: nn.Module) -> None:
        """Under FSDP (every rank): all-gather every unit's parameters and keep them whole across
        forward passes, which then need no other rank (until release)."""
        for unit in self._units(model):
            unit.set_reshard_after_forward(False)
            unit.unshard()

    def release(self, model: nn.Module) -> None:
        for unit in self._units(model):
            unit.reshard()
            unit.set_reshard_after_forward(True)

    def _units(self, model: nn.Module) -> list[nn.Module]:
        if not self.sharded:
            return []
        from torch.distributed.fsdp import FSDPModule

        return [m for m in model.modules() if isinstance(m, FSDPModule)]

    def full_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict | None, dict]:
        """(full weights, optimizer state) to checkpoint. Under FSDP every rank must call it; rank 0
        gets both gathered on its CPU (others {}), optimizer state keyed by parameter name. Else
        (None, the optimizer's own state_dict)."""
        if not self.sharded:
            return None, optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)

    def load_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Restore what full_state saved (every rank reads the checkpoint and keeps its shard)."""
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        state = _by_name(model, state)  # a checkpoint of a DDP or one-process run numbers the parameters
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def all_reduce_sum(self, values: dict[str, float]) -> dict[str, float]:
        if not self.enabled:
            return values
        # Ranks may report different keys (one with no items this step has only "loss"): agree on
        # the union first, or the all_reduce below would get tensors of different sizes and hang.
        gathered: list[list[str] | None] = [None] * self.world
        dist.all_gather_object(gathered, sorted(values))
        keys = sorted({k for ks in gathered for k in ks or ()})
        if not keys:
            return values
        values = {k: values.get(k, 0.0) for k in keys}
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Wait for every rank, then leave the process group. A rank that exits while gloo's threads
        still run can end in std::terminate (SIGABRT), and torchrun then kills the others."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _by_name(model: nn.Module, state: dict) -> dict:
    """A plain optimizer's state_dict (parameters numbered in the order the trainer passed them:
    the model's trainable parameters) keyed by parameter name instead, as full_state saves it."""
    groups = state["param_groups"]
    if not any(isinstance(i, int) for g in groups for i in g["params"]):
        return state
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if len(names) != sum(len(g["params"]) for g in groups):
        raise ValueError(
            f"the checkpoint's optimizer holds {sum(len(g['params']) for g in groups)} parameters, the model {len(names)}"
        )
    return {
        "state": {names[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in groups],
    }


@contextlib.contextmanager
def swapped(model: nn.Module, weights: dict[str, torch.Tensor] | None):
    """`model`'s parameters and buffers replaced by `weights` (full tensors from full_state) for the
    block, so the trainers' save functions (which read state_dict) write the whole model; None: as is."""
    if weights is None:
        yield
        return
    kept = []
    for name, value in weights.items():
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        slots = module._parameters if leaf in module._parameters else module._buffers
        assert leaf in slots, name
        kept.append((slots, leaf, slots[leaf]))
        slots[leaf] = nn.Parameter(value, requires_grad=False) if slots is module._parameters else value
    try:
        yield
    finally:
        for slots, leaf, old in reversed(kept):
            slots[leaf] = old


def init_distributed(device: str = "auto", timeout: timedelta | None = None) -> Dist:
    """Join the process group torchrun set up (once), or describe a single process. timeout: how long
    a collective (a barrier) waits for the slowest rank (torch's default: 10 minutes on nccl, 30 on gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, 0, resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timeout)
    global _joined
    _joined = True
    return Dist(rank, world, local, dev)


def joined() -> bool:
    """Whether this process joined a process group (it must then end through `leave`)."""
    return _joined


# How gloo's (and nccl's) errors read when the other end of a collective is gone: torch raises them as a
# plain RuntimeError or its DistBackendError, with the C++ source location first.
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "remote worker")


def peer_lost(e: BaseException) -> bool:
    """Whether `e` is a collective of this process's group failing because another process of the run
    stopped (killed, crashed, out of memory): not a bug of this one, whose traceback would only
    bury the one thing to do (resume)."""
    if not _joined or not isinstance(e, RuntimeError):
        return False
    return isinstance(e, getattr(dist, "DistBackendError", ())) or any(m in str(e) for m in _PEER_LOST)


def leave(code: int) -> NoReturn:
    """End a process that joined a process group: flush the standard streams, then os._exit, which
    skips the interpreter's finalization.

    Why: DDP keeps the gloo process group alive after destroy_process_group (its worker threads run
    on), and a worker frees a finished collective's work just after the main thread's wait returns.
    Where that work holds tensors made in Python (all_gather_object's, kept by the barrier after it)
    the worker must take the GIL; during finalization taking it calls pthread_exit, whose unwinding
    through a noexcept destructor ends in std::terminate ("terminate called without an active
    exception", SIGABRT), and torchrun then kills the other ranks. A core dump showed exactly that
    stack (runLoop > ~AsyncBarrierWork > ~AsyncAllgatherWork > decref_pyobject > take_gil >
    PyThread_exit_thread): 3 of 46 runs of a small DDP script under torchrun on a loaded 2-core box,
    0 of 100 ending here. Every file a command writes is closed (and fsynced) before it returns, so
    nothing else is left to finalize."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream: nothing more to deliver
            pass
    logging.shutdown()
    os._exit(code)
