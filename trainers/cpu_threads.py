"""How many CPU threads a training run takes: torch's default (one per core), less the cores that other
programs keep busy when the run starts.

Why: a training step is many OpenMP regions, each ending in a barrier. A thread that shares its core
with another busy process runs only part of the time, and every barrier waits for it. Measured on a
2-core machine that other work kept busy (load 2-5), `tiankong train reward` on the bundled model,
6 steps: one thread 14.2 and 16.8 s (5.6-5.8 CPU-s), two threads (torch's default) 67.0, 44.2, 43.0
and 17.4 s (15-25 CPU-s, much of it spinning at barriers); this choice 9.4 s (it took one thread) and
5.9 s (a quiet moment: it took both). On an idle machine every core is free and torch's default stands. engine/threads.py makes the same choice step by step for decoding; a training step
is long and steady, so one look at the start does.

OMP_NUM_THREADS, when set, is the user's (or torchrun's) choice and is left alone.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch

SAMPLE_S = 0.5  # how long the other programs' use of the cores is watched


def cores() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def busy_cores(cpus: list[int], seconds: float = SAMPLE_S) -> float | None:
    """How many of `cpus` other programs kept busy over `seconds` (this process sleeps meanwhile):
    from /proc/stat's counters, else the 1-minute load average; None where neither exists."""
    first = _cpu_times(cpus)
    if first is None:
        try:
            return min(float(len(cpus)), os.getloadavg()[0])
        except (AttributeError, OSError):
            return None
    time.sleep(seconds)
    second = _cpu_times(cpus)
    if second is None:
        return None
    busy = 0.0
    for (idle0, total0), (idle1, total1) in zip(first, second, strict=True):
        span = total1 - total0
        busy += 1.0 - (idle1 - idle0) / span if span > 0 else 0.0
    return busy


def _cpu_times(cpus: list[int]) -> list[tuple[int, int]] | None:
    """(idle, total) jiffies of each of `cpus` from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            rows = {p[0]: [int(x) for x in p[1:]] for line in f if (p := line.split()) and p[0].startswith("cpu")}
        out = []
        for c in cpus:
            t = rows[f"cpu{c}"]
            out.append((t[3] + (t[4] if len(t) > 4 else 0), sum(t[:8])))  # idle + iowait; user..steal
        return out
    except (OSError, KeyError, ValueError, IndexError):
        return None


def choose_threads(busy: Callable[[list[int]], float | None] | None = None) -> str | None:
    """Set torch's thread count for a CPU training run (see the module docstring); returns a line
    for the user when it took fewer threads than torch's default, else None."""
    full = torch.get_num_threads()
    if full <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return None
    cpus = cores()
    taken = (busy or busy_cores)(cpus)
    if taken is None:
        return None
    threads = max(1, min(full, len(cpus) - int(taken + 0.5)))
    if threads >= full:
        return None
    torch.set_num_threads(threads)
    return (
        f"note: training on {threads} CPU thread{'' if threads == 1 else 's'}, not {full}: other programs keep "
        f"about {taken:.1f} of the {len(cpus)} cores busy, and a thread sharing a busy core holds up all the "
        f"others (set OMP_NUM_THREADS to choose)"
    )
