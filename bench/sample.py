"""Sampling one decode step's tokens: the compiled sampler (csrc/sample.h) against the torch chain
it replaces on CPU, same rows, same settings.

    python bench/sample.py                 # 49152-token rows (SmolLM's vocabulary), 2 threads
    python bench/sample.py --vocab 32000 --threads 1

What it does: random logits shaped like a random model's (flat: the top-p cut lies thousands of
tokens down, the costly case) and like a trained one's (peaked), for two batches: bench/quant.py's
four presets in one batch (the bundled balanced, creative, precise and chat: top-k, top-p, min-p,
and the repetition/presence penalties over a 32-token prompt) and one greedy row. Each is drawn with BatchSampler.draw (top_logprobs 0, as quant.py's runs), compiled
and torch in turns, best of --rounds rounds of 200 draws; the report gives milliseconds a draw
and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch
from decode import Help, plural
from quant import presets
from rich.console import Console
from rich.table import Table

from tiankong.engine import native
from tiankong.engine.sampling import BatchSampler, SamplingParams


def time_draws(sampler: BatchSampler, logits: torch.Tensor, compiled: bool, n: int = 200) -> float:
    """Seconds per draw of `logits` (B, V), compiled or through the torch chain."""
    real = native.library
    if not compiled:
        native.library = lambda: None  # type: ignore[assignment]
    try:
        sampler.draw(logits)
        start = time.perf_counter()
        for _ in range(n):
            sampler.draw(logits)
        return (time.perf_counter() - start) / n
    finally:
        native.library = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=Help)
    ap.add_argument("--vocab", type=int, default=49152, help="tokens per row of logits")
    ap.add_argument("--threads", type=int, default=2, help="torch's and the sampler's threads")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of 200 draws (best reported)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if native.library() is None:
        raise SystemExit(f"no compiled sampler here: {native.reason()}")
    gen = torch.Generator().manual_seed(0)
    threads = plural(args.threads, "thread")
    table = Table(title=f"one draw, {args.vocab}-token rows, {threads}, best of {args.rounds} rounds")
    for col in ("rows", "logits", "compiled ms", "torch ms", "torch / compiled"):
        table.add_column(col, justify="right" if "ms" in col or "/" in col else "left")
    greedy = SamplingParams(temperature=0.0, seed=0, max_new_tokens=1)
    prompt = list(range(300, 332))
    for name, params in (("4 presets", presets(4, 1)), ("1 greedy", [greedy])):
        for kind, scale in (("flat", 0.5), ("peaked", 4.0)):
            logits = torch.randn(len(params), args.vocab, generator=gen) * scale
            sampler = BatchSampler(params, args.vocab, torch.device("cpu"), [prompt] * len(params))
            best = {c: min(time_draws(sampler, logits, c) for _ in range(args.rounds)) for c in (True, False)}
            table.add_row(
                name, kind, f"{best[True] * 1e3:.3f}", f"{best[False] * 1e3:.3f}", f"{best[False] / best[True]:.1f}x"
            )
    Console().print(table)


if __name__ == "__main__":
    main()
