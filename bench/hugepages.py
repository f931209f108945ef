"""The compiled step's weights and KV cache in huge pages against 4 KB pages, one process.

    python bench/hugepages.py                                   # 135M Q4_0 GGUF, 32-token prompt
    python bench/hugepages.py --type q8_0 --prompt-tokens 1500  # deep in a long chat
    python bench/hugepages.py --model bench/out/smollm-135m-random   # float32 safetensors

What it does, top to bottom:
  1. setup   — bench/quant.py's files (the random SmolLM-135M-shaped model and llama.cpp's
               quantizations of it), made there on first use; or --model, any model tiankong opens.
  2. engines — the same model loaded twice in this process: once as tiankong loads it (the
               weights the step streams and the KV cache in memory advised for transparent huge
               pages, engine/packed.py's huge_empty) and once with huge_empty swapped for torch's
               own allocation (4 KB pages: what tiankong did before). They take turns, run by
               run, so that the box's memory phases (one row's time moves by 2x between minutes)
               hit both alike.
  3. report  — per engine and batch (1 greedy row; the four bundled presets that `tiankong
               compare` runs), the median and best step time over the runs, and huge / plain.

Needs Linux with transparent huge pages not switched off
(/sys/kernel/mm/transparent_hugepage/enabled not "[never]"); elsewhere both engines are the same.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from decode import setup
from quant import prompt_for, quantized_gguf, tiankong_runner
from rich.console import Console
from rich.table import Table


def plain_pages(numel: int, dtype: torch.dtype, zeroed: bool = False) -> torch.Tensor:
    """huge_empty's signature, torch's allocation: what the engine used before."""
    return torch.zeros(numel, dtype=dtype) if zeroed else torch.empty(numel, dtype=dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--type", default="q4_0", choices=("q8_0", "q4_0", "q4_k_m"), help="which of quant.py's files")
    ap.add_argument("--model", type=Path, help="another model (a folder or GGUF file) instead")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tiankong.engine.kv_cache as kv_cache
    import tiankong.engine.native as native

    if args.model is None:
        args.skip_llamacpp = False
        setup(args, Console())  # decode.py's model and its F32 GGUF, for llama.cpp's quantizer
    source = args.model or quantized_gguf(args.type, "135m")
    prompt = prompt_for("135m", args.prompt_tokens)
    huge = native.huge_empty
    runs = {}
    for name, alloc in (("4 KB pages", plain_pages), ("huge pages", huge)):
        native.huge_empty = kv_cache.huge_empty = alloc  # the weight buffer's and the cache's allocator
        runs[name] = (alloc, tiankong_runner(source, "auto", prompt, args.new_tokens)[0])
    steps: dict[tuple[str, int], list[float]] = {(name, rows): [] for name in runs for rows in (1, 4)}
    for rnd in range(args.rounds + 1):  # round 0 warms up (first-call allocations, page faults)
        for name, (alloc, run) in runs.items():
            kv_cache.huge_empty = alloc  # each generate call makes its own cache
            for rows in (1, 4):
                seconds = run(rows)[1]
                if rnd:
                    steps[name, rows].append(seconds * 1e3)
    native.huge_empty = kv_cache.huge_empty = huge
    report(steps, source, args)


def report(steps: dict[tuple[str, int], list[float]], source: Path, args) -> None:
    table = Table(title=f"{source.name}, {args.prompt_tokens}+{args.new_tokens} tokens, {args.threads} threads")
    for col in ("rows", "4 KB pages: median (best) ms", "huge pages: median (best) ms", "huge / 4 KB (median)"):
        table.add_column(col)
    for rows in (1, 4):
        plain, huge = steps["4 KB pages", rows], steps["huge pages", rows]
        table.add_row(
            "1 greedy" if rows == 1 else "4 presets",
            f"{statistics.median(plain):.2f} ({min(plain):.2f})",
            f"{statistics.median(huge):.2f} ({min(huge):.2f})",
            f"{statistics.median(huge) / statistics.median(plain):.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
