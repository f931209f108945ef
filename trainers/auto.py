"""Settings chosen from the model's size and the amount of data: what `0` ("auto") resolves to.

`tiankong train reward|ppo|dpo|sft` leave lr, batch_size and steps (PPO also response_length and
num_mini_batches) at 0, and `tiankong train pretrain` its steps (and warmup_steps at -1), and each
trainer's setup() fills them in here, once it knows

* the parameter count N of the model being trained, and
* the number of training items n (rankings, prompts, conversations or blocks of text),

then prints the result in one line; the checkpoint's train_config.json records the resolved values,
so a run can be repeated with them as flags. A value given by flag or --config is never changed.

Learning rate: log-log interpolation between two measured anchors per trainer, the rate that works
for a 3M-parameter model (tiankong-mini, measured by bench/train.py on this project's machine) and a
common rate for a 1B model (published recipes: InstructGPT / "N implementation details" for reward
and PPO, Zephyr-style DPO, Llama-style SFT). Below 3M the small-model rate is kept (stories260K
learns with it); above 1B the rate falls as N^-1/2.

Steps: enough passes over the data for a few hundred rankings to be learned (reward and DPO see
each training pair up to 4 and 5 times; SFT up to 3), one pass for large data sets; PPO runs at
least 20 iterations or one pass over the prompts. Pretraining counts tokens: see PRETRAIN_EPOCHS.

A resumed run keeps what its start resolved (read from its checkpoint before any model loads, by
common.py's `_resume_check`): --resume needs the same steps, a formula changed since (or a finished
run extended by --steps) must not move them, and PPO's answer-length probe is not run again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

SMALL, LARGE = 3e6, 1e9  # parameter counts of the two lr anchors

# trainer -> (lr at SMALL parameters, lr at LARGE parameters)
LR_ANCHORS: dict[str, tuple[float, float]] = {
    "reward": (3e-3, 1e-5),
    "ppo": (2e-4, 3e-6),
    "dpo": (3e-4, 1e-6),
    "sft": (5e-4, 2e-5),
}

# trainer -> (item visits aimed at, most epochs): steps = epochs * n / batch
EPOCHS: dict[str, tuple[int, int]] = {
    "reward": (900, 4),
    "dpo": (1000, 5),
    "sft": (2000, 3),
}
PPO_MIN_STEPS = 20

# Pretraining: PRETRAIN_EPOCHS passes over the training tokens, at most PRETRAIN_MAX_TOKENS tokens
# seen, and at least PRETRAIN_MIN_STEPS steps.
# * 4 passes: repeating data up to about 4 epochs is nearly as good as fresh data, and past that the
#   returns fall fast (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"); the old
#   fixed 1000 steps made 33 passes over a 506 KB corpus, and the model learnt it by heart.
# * 4M tokens (2^22): 1024 steps of the default 16 blocks of 256 tokens, the old fixed default's
#   length: about 40 minutes for the tiny size on 2 CPU cores (a QA run took 40+ minutes for 1000
#   such steps), a few for nano and micro. A capped corpus (above 1M tokens, about 4 MB of text) is
#   seen less than 4 times, a large one less than once; a token budget, not a step count, so a
#   larger --batch-size or --seq-len gives fewer steps of the same cost.
# * 50 steps: a new model's loss needs some tens of steps to fall from uniform guessing at all, so
#   a toy file still shows it learn (and the warmup and decay have room); it costs seconds to a
#   couple of minutes.
# A 506 KB corpus, the QA run's (33 passes of 1000 steps: about 485 blocks of 256 tokens) or 1351
# documents of models/build/corpus.py (415 blocks at the tiny size's 4096 pieces), gets 4 passes:
# 122 or 104 steps, some 5 minutes on 2 CPU cores instead of 40+.
PRETRAIN_EPOCHS = 4
PRETRAIN_MAX_TOKENS = 1 << 22
PRETRAIN_MIN_STEPS = 50
# Warmup: a tenth of the steps, at most the old fixed 50 (5% of its 1000 steps).
PRETRAIN_WARMUP = 50


def auto_lr(trainer: str, n_params: int) -> float:
    """Peak learning rate for a model of n_params parameters (see the module docstring)."""
    small, large = LR_ANCHORS[trainer]
    if n_params <= SMALL:
        return small
    if n_params <= LARGE:
        t = math.log(n_params / SMALL) / math.log(LARGE / SMALL)
        return float(f"{math.exp(math.log(small) + t * (math.log(large) - math.log(small))):.2g}")
    return float(f"{large * (n_params / LARGE) ** -0.5:.2g}")


def auto_batch(n_items: int) -> int:
    """Items per step: small batches for a few hundred items (more steps), larger for big sets."""
    for limit, batch in ((64, 8), (5000, 16), (50000, 32)):
        if n_items < limit:
            return batch
    return 64


def auto_steps(trainer: str, n_items: int, batch: int, n_pairs: int | None = None) -> int:
    """Steps for enough epochs over n_items (n_pairs, when items are rankings, sets the epochs)."""
    visits, most = EPOCHS[trainer]
    epochs = min(most, max(1, math.ceil(visits / max(1, n_pairs or n_items))))
    return max(1, math.ceil(epochs * n_items / batch))


def auto_pretrain_steps(n_tokens: int, batch: int, seq_len: int) -> int:
    """Steps for PRETRAIN_EPOCHS passes over n_tokens training tokens in steps of `batch` blocks of
    seq_len tokens, within the bounds above (the minimum wins where they cross)."""
    per_step = batch * seq_len
    most = max(1, PRETRAIN_MAX_TOKENS // per_step)
    return max(PRETRAIN_MIN_STEPS, min(most, math.ceil(PRETRAIN_EPOCHS * n_tokens / per_step)))


def auto_warmup(steps: int) -> int:
    """Warmup steps for a run of `steps`: a tenth of them, at most PRETRAIN_WARMUP."""
    return min(PRETRAIN_WARMUP, steps // 10)


def auto_ppo_batch(n_params: int) -> int:
    return 32 if n_params < 1e8 else 64


def auto_ppo_steps(n_prompts: int, batch: int) -> int:
    return max(PPO_MIN_STEPS, math.ceil(n_prompts / batch))


def auto_response_length(lengths: list[int], ended: list[bool], cap: int) -> int:
    """A limit most answers end within: the 90th-percentile length of probe answers that ended,
    rounded up to a multiple of 16 and at most `cap`; 64 when most probe answers never end (a base
    model that writes on), since then no limit lets them end."""
    if not lengths or sum(ended) < len(ended) / 2:
        return min(cap, 64)
    done = sorted(n for n, e in zip(lengths, ended, strict=True) if e)
    p90 = done[min(len(done) - 1, math.ceil(0.9 * len(done)) - 1)]
    return max(16, min(cap, 16 * math.ceil(p90 / 16)))


def n_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Resolved:
    """What auto filled in, for the one-line report and verdict.json."""

    trainer: str
    n_params: int
    n_items: int
    what: str  # "training pairs", "prompts", ...
    values: dict[str, Any]

    def line(self) -> str:
        if not self.values:
            return ""
        vals = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.values.items())
        return (
            f"{self.trainer}: auto settings for {self.n_params / 1e6:.3g}M parameters and "
            f"{self.n_items} {self.what}: {vals} (give a flag to override)"
        )


def fill(
    cfg: Any, trainer: str, n_params: int, n_items: int, what: str, choose: dict[str, Callable[[], Any]]
) -> Resolved:
    """Set each field of `choose` that is 0 on cfg, in order (later choices may read earlier ones)."""
    done: dict[str, Any] = {}
    for name, pick in choose.items():
        if getattr(cfg, name) == 0:
            setattr(cfg, name, pick())
            done[name] = getattr(cfg, name)
    return Resolved(trainer, n_params, n_items, what, done)


def validate_auto(
    cfg: Any, base_validate: Callable[[], None], names: tuple[str, ...] = ("steps", "batch_size", "lr")
) -> None:
    """Run the base config's checks with 0 ("auto") fields standing in as 1; negatives still fail."""
    saved = {n: getattr(cfg, n) for n in names if getattr(cfg, n) == 0}
    for n in saved:
        setattr(cfg, n, 1)
    try:
        base_validate()
    finally:
        for n, v in saved.items():
            setattr(cfg, n, v)
