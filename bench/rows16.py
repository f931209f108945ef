"""The compiled step's weights interleaved sixteen rows at a time against eight, one process.

    python bench/rows16.py                              # 135M Q4_0 GGUF (quant.py's), 32-token prompt
    python bench/rows16.py --shape 1b --new-tokens 64   # the 1B-class shape
    python bench/rows16.py --type q4_k_m

What it does, top to bottom:
  1. setup   — bench/quant.py's files (llama.cpp's quantizations of a random SmolLM-135M-shaped or
               TinyLlama-1B-shaped model), made there on first use; or --model, any model tiankong opens.
               Without llama-cpp-python (135M only), the float32 model quantized to --type by
               tiankong at load (q8_0, q4_0), and a note says so.
  2. engines — the same model loaded twice in this process: as tiankong loads it where the library
               has the 512-bit kernels (pairs of eight-row groups as one stream: engine/repack.py,
               csrc/repack16.h), and with every part in eight-row groups (what it did before). They
               take turns, run by run, so that the box's memory phases (one row's time moves by 2x
               between minutes) hit both alike.
  3. report  — per layout and batch (1 greedy row; the four bundled presets that `tiankong compare`
               runs), the median and best step time over the runs, and four rows over one: the
               median of each round's four-row run over the one-row run just before it (the
               target of issue 13: at most 1.5).

Without AVX-512 (F, BW, VL and VNNI) both engines are eight rows, and a note says so.
"""

from __future__ import annotations

import statistics

import torch
from decode import plural
from quant import prompt_for, tiankong_runner, variants_parser, variants_source
from rich.console import Console
from rich.table import Table

import tiankong.engine.repack as repack

LAYOUTS = ("8 rows", "16 rows")


def main() -> None:
    args = variants_parser(__doc__, shapes=True).parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    if not repack._wide():
        console.print("this CPU's build has no sixteen-row kernels (AVX-512 F, BW, VL, VNNI): both are eight rows")
    source, dtype = variants_source(args, console)
    prompt = prompt_for(args.shape if args.model is None else "135m", args.prompt_tokens)
    wide, runs = repack._wide, {}
    for name in LAYOUTS:
        repack._wide = (lambda: False) if name == "8 rows" else wide  # what loading asks
        runs[name] = tiankong_runner(source, dtype, prompt, args.new_tokens)[0]
    repack._wide = wide
    steps: dict[tuple[str, int], list[float]] = {(name, rows): [] for name in runs for rows in (1, 4)}
    for rnd in range(args.rounds + 1):  # round 0 warms up (first-call allocations, page faults)
        for name, run in runs.items():
            for rows in (1, 4):
                step = run(rows)[1]
                if rnd:
                    steps[name, rows].append(step * 1e3)
        console.print(f"round {rnd}/{args.rounds}" + (" (warm-up)" if not rnd else ""), style="dim")
    report(steps, source.name if dtype == "auto" else f"{source.name} ({dtype} at load)", args)


def report(steps: dict[tuple[str, int], list[float]], model: str, args) -> None:
    med = statistics.median
    table = Table(title=f"{model}, {args.prompt_tokens}+{args.new_tokens} tokens, {plural(args.threads, 'thread')}")
    for column in ("layout", "1 row: step ms, median (best)", "4 rows: step ms, median (best)", "4 rows / 1 (range)"):
        table.add_column(column)
    for name in LAYOUTS:
        one, four = steps[name, 1], steps[name, 4]
        ratios = [b / a for a, b in zip(one, four, strict=True)]
        table.add_row(
            name,
            f"{med(one):.2f} ({min(one):.2f})",
            f"{med(four):.2f} ({min(four):.2f})",
            f"{med(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
        )
    Console(width=150).print(table)
    a, b = (med(steps[name, 4]) for name in LAYOUTS)
    Console().print(f"four rows, 16-row layout over 8-row: {b / a:.2f} of the time (median step)")


if __name__ == "__main__":
    main()
