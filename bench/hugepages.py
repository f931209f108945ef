"""The compiled step's weights and KV cache in huge pages against 4 KB pages, one process.

    python bench/hugepages.py                                   # 135M Q4_0 GGUF, 32-token prompt
    python bench/hugepages.py --type q8_0 --prompt-tokens 1500  # deep in a long chat
    python bench/hugepages.py --model bench/out/smollm-135m-random   # float32 safetensors

What it does, top to bottom:
  1. setup   — bench/quant.py's files (the random SmolLM-135M-shaped model and llama.cpp's
               quantizations of it), made there on first use; or --model, any model tiankong opens.
               Without llama-cpp-python, the float32 model quantized to --type by tiankong at load
               (q8_0, q4_0), and a note says so.
  2. engines — the same model loaded three times in this process: as tiankong loads it (the
               weights the step streams in memory advised for transparent huge pages,
               engine/packed.py's huge_empty, and the KV caches from a pool of such memory that
               hands a cache's pages to the next one, packed.HugePagePool); with torch's own
               allocation for both (4 KB pages: what tiankong did before 0ce9e5e); and with a new
               huge-page mapping for every cache, faulted in by whoever writes it first (what it
               did from 0ce9e5e to the pool). They take turns, run by run, so that the box's
               memory phases (one row's time moves by 2x between minutes) hit all alike. Each
               generate call makes its own KV cache.
  3. report  — per engine and batch (1 greedy row; the four bundled presets that `tiankong
               compare` runs), the median and best step time over the runs, huge / 4 KB, and the
               median time from the generate call to the first token (the cache's allocation and
               the prompt's prefill).

Needs Linux with transparent huge pages not switched off
(/sys/kernel/mm/transparent_hugepage/enabled not "[never]"); elsewhere the three engines are the same.
"""

from __future__ import annotations

import math
import statistics

import torch
from decode import plural
from quant import prompt_for, tiankong_runner, variants_parser, variants_source
from rich.console import Console
from rich.table import Table

import tiankong.engine.packed as packed


def plain_pages(numel: int, dtype: torch.dtype, zeroed: bool = False) -> torch.Tensor:
    """huge_empty's signature, torch's allocation: what the engine used before."""
    return torch.zeros(numel, dtype=dtype) if zeroed else torch.empty(numel, dtype=dtype)


def plain_cache(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """kv_cache._zeros's signature, torch's allocation (4 KB pages that glibc keeps and reuses)."""
    return torch.zeros(shape, dtype=dtype, device=device)


def fresh_huge_cache(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A new huge-page mapping for every cache, its pages faulted in by whoever writes them first."""
    return packed.huge_empty(math.prod(shape), dtype, zeroed=True).view(shape)


def main() -> None:
    args = variants_parser(__doc__).parse_args()
    torch.set_num_threads(args.threads)
    import tiankong.engine.kv_cache as kv_cache
    import tiankong.engine.native_step as native_step

    source, dtype = variants_source(args, Console())
    prompt = prompt_for("135m", args.prompt_tokens)
    huge, pooled = native_step.huge_empty, kv_cache._zeros
    variants = {  # name: (the weight buffer's allocator, the cache's)
        "4 KB": (plain_pages, plain_cache),
        "huge, fresh": (huge, fresh_huge_cache),
        "huge": (huge, pooled),
    }
    runs = {}
    for name, (weights, cache) in variants.items():
        native_step.huge_empty = weights
        runs[name] = (cache, tiankong_runner(source, dtype, prompt, args.new_tokens)[0])
    native_step.huge_empty = huge
    steps: dict[tuple[str, int], list[float]] = {(name, rows): [] for name in runs for rows in (1, 4)}
    firsts: dict[tuple[str, int], list[float]] = {key: [] for key in steps}
    for rnd in range(args.rounds + 1):  # round 0 warms up (first-call allocations, page faults)
        for name, (cache, run) in runs.items():
            kv_cache._zeros = cache  # each generate call makes its own cache
            for rows in (1, 4):
                _, step, first = run(rows)
                if rnd:
                    steps[name, rows].append(step * 1e3)
                    firsts[name, rows].append(first * 1e3)
    kv_cache._zeros = pooled
    report(steps, firsts, source.name if dtype == "auto" else f"{source.name} ({dtype} at load)", args)


def report(steps: dict[tuple[str, int], list[float]], firsts: dict, model: str, args) -> None:
    table = Table(title=f"{model}, {args.prompt_tokens}+{args.new_tokens} tokens, {plural(args.threads, 'thread')}")
    table.add_column("rows")
    for name in ("4 KB", "huge, fresh", "huge"):
        table.add_column(f"{name}: step ms, median (best)")
    table.add_column("huge / 4 KB")
    for name in ("4 KB", "huge, fresh", "huge"):
        table.add_column(f"{name}: first token ms")
    med = statistics.median
    for rows in (1, 4):
        table.add_row(
            "1 greedy" if rows == 1 else "4 presets",
            *(
                f"{med(steps[name, rows]):.2f} ({min(steps[name, rows]):.2f})"
                for name in ("4 KB", "huge, fresh", "huge")
            ),
            f"{med(steps['huge', rows]) / med(steps['4 KB', rows]):.2f}",
            *(f"{med(firsts[name, rows]):.1f}" for name in ("4 KB", "huge, fresh", "huge")),
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
