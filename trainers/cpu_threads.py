"""How many CPU threads a training run on the CPU takes: this machine's default, whatever else runs.

The default is torch's thread count as the run starts: one per core, or OMP_NUM_THREADS (or what a
program calling the trainers set with torch.set_num_threads); `--threads N` chooses another. The
count is kept in the run's settings (train_config.json and the checkpoint), and `--resume` trains on
it again.

Why fixed: torch's CPU kernels (matmul, sums, softmax) split their work by thread, so the thread
count sets the order of the float sums, and so the result's bits. A QA run of `train ppo` on one
thread and on two agreed for 2 steps, then parted at step 3 (reward -0.0450 against -0.0398) and
ended 4.33 against 3.08 nats of KL. This module used to take fewer threads when other programs kept
cores busy as the run started: the same command then gave other results on a busy machine, and a
--resume could go another way than the run it continued.

The load still matters for speed: a training step is many OpenMP regions, each ending in a barrier,
and a thread sharing its core with a busy process holds up the others. Measured on a 2-core machine
that other work kept busy (load 2-5), `tiankong train reward` on the bundled model, 6 steps: one
thread 14.2 and 16.8 s, two threads (torch's default) 67.0, 44.2, 43.0 and 17.4 s. So a new run
started from the command line looks at the load only to say, in a note, that fewer threads may be
faster (`--threads N`: the run's result is then that count's, as it is on any machine).
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch

SAMPLE_S = 0.5  # how long the other programs' use of the cores is watched (for the note only)


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


def settle(
    given: int, started: int, hint: bool = False, busy: Callable[[list[int]], float | None] | None = None
) -> tuple[int, str | None]:
    """Set torch's thread count for a CPU run: `given` (--threads; 0 = auto), else `started` (what the
    resumed run started on, kept in its settings; 0 = a new run), else torch's count (the machine's
    default: its cores, never its load). Returns the count (the run records it) and a line for the
    user, or None. `hint` (a new run started from the command line) looks at the load only to suggest
    fewer threads: see the module docstring."""
    machine = torch.get_num_threads()
    threads = given or started or machine
    torch.set_num_threads(threads)
    if given and started and given != started:
        return threads, (
            f"note: --threads {given} is not the {started} this run started on: from here its result differs from "
            "an uninterrupted run's (the thread count sets the order of the float sums)"
        )
    if not given and started and started != machine:
        return threads, (
            f"note: training on {_threads(started)} as the run started, though this machine's default is "
            f"{machine}, so it continues to an uninterrupted run's result (--threads N chooses, with another result)"
        )
    if given or started or not hint or os.environ.get("OMP_NUM_THREADS"):  # a count chosen, or kept
        return threads, None
    return threads, _busy_note(threads, busy or busy_cores)


def _busy_note(threads: int, busy: Callable[[list[int]], float | None]) -> str | None:
    """A new run's note where other programs keep cores busy: fewer threads may be faster."""
    cpus = cores()
    taken = busy(cpus) if threads > 1 else None
    if taken is None:
        return None
    free = max(1, min(threads, len(cpus) - int(taken + 0.5)))
    if free >= threads:
        return None
    return (
        f"note: training on {_threads(threads)}, this machine's default whatever else runs, so the same command "
        f"gives the same result; other programs keep about {taken:.1f} of the {len(cpus)} cores busy, and a thread "
        f"sharing a busy core holds up the others: --threads {free} may be several times faster (with that count's result)"
    )


def _threads(n: int) -> str:
    return f"{n} CPU thread{'' if n == 1 else 's'}"
