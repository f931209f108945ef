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
    than usual, when another came within `window` steps before it, makes the next one a PROBE on
    one thread (a lone slow step is noise: a page fault, a collection), and so do the
    `first_check`-th step and every `check_every`-th one. If the probe beats the mean of the last
    16 all-thread steps (stalls included: they are what all threads cost on a busy machine), the
    machine is busy: HOLD on one thread for `backoff` steps, then RETRY all threads for
    `retry_steps` steps, each of which must beat the one-thread steps' median, or the hold doubles
    (up to max_backoff). A busy machine stalls some steps and not others, so a retry can win by
    luck: the backoff is kept through the FULL steps after it, and only `quiet` steps without a
    stall reset it, so a machine that stays busy soon spends 256 one-thread steps per stalled
    one. A probe that loses after slow steps means they were the work itself: the slow time
    becomes the usual one.
    """

    full: int  # torch.get_num_threads(): what a quiet machine gets
    stall: float = 2.5
    first_backoff: int = 16
    max_backoff: int = 256
    retry_steps: int = 3
    quiet: int = 1024
    window: int = 32  # a second stall within this many steps of the first makes a probe
    # A probe anyway at this many all-thread steps (a neighbour there from the start), then every
    # check_every: a four-row step on one thread costs ~2x, so a probe every 64 steps made four
    # rows 1.5% slower (one row, bound by memory, ~0.7%); a neighbour arriving later stalls
    # steps, and two stalls close together make a probe.
    first_check: int = 64
    check_every: int = 512
    state: str = FULL
    usual: dict[Hashable, float] = field(default_factory=dict)  # step kind -> seconds of a full step
    single: dict[Hashable, list[float]] = field(default_factory=dict)  # step kind -> the last one-thread steps
    recent: dict[Hashable, list[float]] = field(default_factory=dict)  # step kind -> the last all-thread steps
    stalled: float = 0.0  # what a probe compares with: the recent all-thread steps' mean
    slow: float | None = None  # the slow step that made the probe, if one did
    backoff: int = 0  # the last hold's length (0: no stall for `quiet` steps)
    left: int = 0  # steps left in HOLD or RETRY
    count: int = 0  # FULL steps so far
    last_stall: int = -(10**9)  # count at the last stalled FULL step

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
        else:
            self.recent[batch] = recent = [*self.recent.get(batch, [])[-15:], seconds]
        if self.state == FULL:
            self.count += 1
            if usual is not None and seconds > self.stall * usual:
                # One stall can be anything (a page fault, a collection); two close together are a
                # neighbour: then probe, against the recent all-thread steps' mean, stalls and all.
                if self.count - self.last_stall <= self.window:
                    self.state, self.stalled, self.slow = PROBE, sum(recent) / len(recent), seconds
                self.last_stall = self.count
            else:
                self.usual[batch] = usual = seconds if usual is None else 0.8 * usual + 0.2 * seconds
                if self.count - self.last_stall >= self.quiet:
                    self.backoff = 0
                if self.count == self.first_check or self.count % self.check_every == 0:
                    # A neighbour that was there from the start makes every step slow, none
                    # slower than usual: one step on one thread now and then tells.
                    self.state, self.stalled, self.slow = PROBE, sum(recent) / len(recent), None
        elif self.state == PROBE:
            if seconds < self.stalled:  # busy again: hold twice as long as the last time
                self._hold(min(2 * self.backoff, self.max_backoff) if self.backoff else self.first_backoff)
            else:  # all threads still win; after slow steps, they were the work itself
                self.state = FULL
                if self.slow is not None:
                    self.usual[batch] = self.slow
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

    def _hold(self, steps: int) -> None:
        self.state, self.backoff, self.left = HOLD, steps, steps


# The process's choice: whether another program holds a core is the machine's state, so every
# compiled call follows what the decode steps measure (the sampler's and the prefill's regions
# have barriers too).
CHOICE = ThreadChoice(torch.get_num_threads())


def now(choice: ThreadChoice | None = None) -> int:
    """Threads for the next compiled call by `choice` (default: the process's): torch's count, or
    one while the machine is busy."""
    choice = choice or CHOICE
    choice.full = torch.get_num_threads()
    return choice.threads()
