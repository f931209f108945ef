"""How many threads the compiled decode step takes: all of torch's, unless another program has
taken a core.

Why: a decode step is one OpenMP region with a barrier between every phase of every layer (~100
a step). When another process keeps a core busy, the kernel runs one of the step's threads only
part of the time, and each barrier waits for that thread's next time slice: on a 2-core machine
with one other busy process a 4 ms step was measured at 300+ ms. One thread has no barriers and
only loses its share of the machine (about 2x). So the step is timed: a step much slower than the
recent ones at the same batch size is followed by a one-thread step, and if that one is faster,
the step stays on one thread for a while, then tries all threads again, waiting twice as long
each time the machine is still busy.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

FULL, PROBE, HOLD, RETRY = "full", "probe", "hold", "retry"


@dataclass
class ThreadChoice:
    """The thread count of each decode step, from the times of the steps before it.

    States: FULL runs all threads and keeps each batch size's usual step time (a running mean:
    more rows or a longer context make a step slower, but gradually); a step `stall` times slower
    than usual makes the next one a PROBE on one thread. If the probe beats the slow step, the
    machine is busy: HOLD on one thread for `backoff` steps, then RETRY all threads for
    `retry_steps` steps. A busy machine stalls some steps and not others, so each of them must beat
    the one-thread steps' median; then FULL again (and the next hold is half as long), else the
    retry ends at its first loss and the hold doubles (up to max_backoff). A probe slower than the slow step
    means the slow step was the work itself: it becomes the usual time.
    """

    full: int  # torch.get_num_threads(): what a quiet machine gets
    stall: float = 2.5
    first_backoff: int = 16
    max_backoff: int = 256
    retry_steps: int = 3
    state: str = FULL
    usual: dict[Hashable, float] = field(default_factory=dict)  # step kind -> seconds of a full step
    single: dict[Hashable, list[float]] = field(default_factory=dict)  # step kind -> the last one-thread steps
    stalled: float = 0.0  # the full step a probe compares with
    backoff: int = 0
    left: int = 0  # steps left in HOLD or RETRY

    def threads(self) -> int:
        """Threads for the next step."""
        return self.full if self.state in (FULL, RETRY) or self.full <= 1 else 1

    def record(self, batch: Hashable, seconds: float) -> None:
        """The step just run (with threads() threads): what kind of step (the model and its batch
        size: steps of one kind take alike) and its wall time."""
        if self.full <= 1:
            return
        usual = self.usual.get(batch)
        if self.state in (PROBE, HOLD):
            self.single[batch] = [*self.single.get(batch, [])[-7:], seconds]
        if self.state == FULL:
            if usual is not None and seconds > self.stall * usual:
                self.state, self.stalled = PROBE, seconds
            else:
                self.usual[batch] = seconds if usual is None else 0.8 * usual + 0.2 * seconds
        elif self.state == PROBE:
            if seconds < self.stalled:
                self._hold(self.backoff or self.first_backoff)
            else:
                self.state, self.usual[batch] = FULL, self.stalled
        elif self.state == HOLD:
            self.left -= 1
            if self.left <= 0:
                self.state, self.left = RETRY, self.retry_steps
        else:  # RETRY: any step slower than one thread's median ends it
            singles = sorted(self.single.get(batch, []))
            if singles and seconds > singles[len(singles) // 2]:
                self._hold(min(2 * self.backoff, self.max_backoff))
                return
            self.left -= 1
            if self.left <= 0:
                self.state, self.usual[batch] = FULL, seconds
                self.backoff = max(self.first_backoff, self.backoff // 2)

    def _hold(self, steps: int) -> None:
        self.state, self.backoff, self.left = HOLD, steps, steps


# The process's choice: whether another program holds a core is the machine's state, so every
# compiled call follows what the decode steps measure (the sampler's and the prefill's regions
# have barriers too).
CHOICE = ThreadChoice(torch.get_num_threads())


def now() -> int:
    """Threads for the next compiled call: torch's count, or one while the machine is busy."""
    CHOICE.full = torch.get_num_threads()
    return CHOICE.threads()
