"""Four input rows against one in the compiled step's own product: from memory, and from cache.

    python bench/floor.py                    # q8_0, q4_0, q5_0; the 1B-class gate/up product (11264 x 2048)
    python bench/floor.py --shape 135m       # SmolLM-135M's (3072 x 576): ~5 us of ctypes in each call
    python bench/floor.py --types q4_0 --rounds 20

Why: issue 13 asks four presets in one batch to cost at most 1.5x one greedy row. One row is bound
by memory (each weight byte read once, a few operations on it); four rows read the same bytes and
do four times the arithmetic. This measures both sides of that, so the four-row ratio the step can
reach on a machine is a number rather than a guess.

What it does, top to bottom:
  1. weights  — random rows quantized to each type (gguf-py's reference rounding, engine/quant.py)
                and laid out as loading lays them out (engine/repack.py: sixteen rows at a time
                where the library has the 512-bit kernels, else eight), copied until the copies
                pass --megabytes (300 by default: ten times the L3 of most desktop CPUs).
  2. products — tk_matvec (the step's own product, csrc/decode.c) on 1 and 4 input rows, on
                --threads threads: "memory" walks the copies, so each call reads its weight from
                memory, as the step reads a layer's; "cache" calls the first copy over and over
                (after the first call it is in cache: the arithmetic alone). The four kinds take
                turns, round by round, so the box's memory phases hit them alike.
  3. report   — per type, the median time per call of each, and two ratios: four rows over one,
                both from memory (what the step's products see), and four rows from cache over
                one from memory: the floor, where the four rows' memory time hides entirely
                behind their arithmetic. Where the floor is near 1.5 or above, no overlap of
                memory and arithmetic brings the step to 1.5.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from decode import plural
from rich.console import Console
from rich.table import Table

from tiankong.engine import native
from tiankong.engine.quant import QTYPES, X8, X16, quantize
from tiankong.engine.repack import _wide, repack_rows

SHAPES = {"1b": (11264, 2048), "135m": (3072, 576)}  # (rows, columns) of the fused gate/up weight
KINDS = (("memory", 1), ("memory", 4), ("cache", 1), ("cache", 4))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="1b", help="whose gate/up product: 1b (default) or 135m")
    p.add_argument("--types", default="q8_0,q4_0,q5_0", help="comma-separated, of q8_0, q4_0, q5_0 (default all three)")
    p.add_argument("--megabytes", type=int, default=300, help="the copies' total size (default 300)")
    p.add_argument("--rounds", type=int, default=10, help="measured rounds, the four kinds taking turns (default 10)")
    p.add_argument("--threads", type=int, default=2, help="threads of each product (default 2)")
    return p.parse_args()


def copies_of(qtype: str, rows: int, cols: int, megabytes: int) -> tuple[list[torch.Tensor], int]:
    """(the laid-out weight and its copies, the type number the step reads it with)."""
    w = quantize(torch.randn(rows, cols, generator=torch.Generator().manual_seed(0)) * 0.02, qtype).data
    wide = _wide()
    laid = repack_rows(w, ((qtype, rows),), cols, wide=wide)[0].view(rows, -1)
    n = max(2, -(-megabytes * 10**6 // laid.numel()))
    return [laid.clone() for _ in range(n)], QTYPES[qtype][2] | (X16 if wide else X8)


def measure(lib: native.Library, weights: list[torch.Tensor], type_: int, cols: int, args) -> dict:
    """{(kind, rows): [seconds per call, one per round]}."""
    x = torch.randn(4, cols, generator=torch.Generator().manual_seed(1))
    times: dict[tuple[str, int], list[float]] = {k: [] for k in KINDS}
    for rnd in range(args.rounds + 1):  # round 0 warms up
        for kind, rows in KINDS:
            walk = weights if kind == "memory" else [weights[0]] * len(weights)
            start = time.perf_counter()
            for w in walk:
                native.matvec(lib, w, type_, x[:rows], args.threads)
            if rnd:
                times[kind, rows].append((time.perf_counter() - start) / len(walk))
    return times


def main() -> None:
    args = parse_args()
    console = Console()
    lib = native.library()
    if lib is None:
        sys.exit(f"no compiled step here ({native.reason()}): nothing to measure")
    rows, cols = SHAPES[args.shape]
    table = Table(title=f"{rows} x {cols} product, {plural(args.threads, 'thread')}, medians of {args.rounds}")
    for col in ("type", "1 row, memory", "4 rows, memory", "1 row, cache", "4 rows, cache", "4/1 memory", "floor"):
        table.add_column(col, justify="left" if col == "type" else "right")
    for qtype in args.types.split(","):
        weights, type_ = copies_of(qtype, rows, cols, args.megabytes)
        console.print(f"{qtype}: {len(weights)} copies of {weights[0].numel() / 1e6:.1f} MB", style="dim")
        med = {k: statistics.median(v) * 1e6 for k, v in measure(lib, weights, type_, cols, args).items()}
        cells = [f"{med[k]:.1f} us" for k in KINDS]
        ratios = med["memory", 4] / med["memory", 1], med["cache", 4] / med["memory", 1]
        table.add_row(qtype, *cells, *(f"{r:.2f}" for r in ratios))
    console.print(table)
    console.print(
        "floor: four rows from cache over one from memory, the four-row product's ratio were its memory time hidden "
        "entirely behind its arithmetic"
    )


if __name__ == "__main__":
    main()
