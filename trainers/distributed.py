"""Data parallelism under `torchrun`: gloo on CPU, nccl on GPU; a no-op in a single process.

    torchrun --nproc_per_node 2 -m tiankong.tui.cli train reward --data prefs.jsonl ...

Each process computes its slice of the global batch; DistributedDataParallel averages gradients
in the backward pass. Without torchrun's environment variables everything here degrades to
plain single-process code.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from tiankong.engine.model import resolve_device


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, ddp_model: nn.Module, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if self.enabled and not last:
            return ddp_model.no_sync()
        return contextlib.nullcontext()

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
    return Dist(rank, world, local, dev)
