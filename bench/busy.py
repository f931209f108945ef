"""Decode speed while other programs keep cores busy: the compiled step's thread choice
(engine/threads.py) against always using every thread and always using one.

    python bench/busy.py                  # 135M-shaped Q4_0 file, 0, 1 and 2 busy processes, 2 rounds
    python bench/busy.py --busy 0,2 --rounds 1

What it does, top to bottom:
  1. setup   — quant.py's SmolLM-135M-shaped Q4_0 GGUF (llama.cpp's own quantizer; made once in
               bench/out/; without llama-cpp-python, decode.py's model quantized to Q4_0 by tiankong
               at load, and a note says so), one greedy row, 32-token prompt, 128 new tokens.
  2. modes   — "adaptive" (the default: all threads until a step stalls, then one thread while the
               machine stays busy), "all threads" (every step on torch's thread count) and "one
               thread"; each run starts from a fresh choice, taking turns within a round.
  3. load    — for each --busy count, that many `while True: pass` processes run during the
               round (none for 0), started half a second before it and killed after.
  4. report  — decode tok/s per mode and load (the best of the rounds), and bench/out/busy.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from decode import Help, end_children_on_sigterm, plural, setup
from quant import OUT, gguf_or_at_load, prompt_for, tiankong_runner

MODES = ("adaptive", "all threads", "one thread")


def run_mode(run, mode: str, threads: int) -> float:
    """Decode tok/s of one run in `mode`, from a fresh thread choice."""
    import torch

    from tiankong.engine import threads as T

    T.CHOICE = T.ThreadChoice(threads, stall=2.5 if mode == "adaptive" else float("inf"))
    torch.set_num_threads(1 if mode == "one thread" else threads)
    try:
        return run(1)[0]
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=Help)
    ap.add_argument("--busy", default="0,1,2", help="numbers of busy processes, comma-separated")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (best reported)")
    ap.add_argument("--threads", type=int, default=2, help="the step's threads when it uses them all")
    args = ap.parse_args()
    end_children_on_sigterm()
    import torch
    from rich.console import Console
    from rich.table import Table

    console = Console()
    torch.set_num_threads(args.threads)
    setup(argparse.Namespace(prompt_tokens=32, new_tokens=128, skip_llamacpp=False), console)  # decode.py's model
    source, dtype = gguf_or_at_load("q4_0", lambda note: console.print(note, style="yellow", markup=False))
    run, _, _ = tiankong_runner(source, dtype, prompt_for("135m", 32), 128)
    best: dict[tuple[int, str], float] = {}
    loads = [int(b) for b in args.busy.split(",")]
    for rnd in range(args.rounds):
        for busy in loads:
            burners: list[subprocess.Popen] = []
            try:  # the burners end with the round, also on Ctrl+C or SIGTERM
                for _ in range(busy):
                    burners.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
                time.sleep(0.5 if busy else 0)
                for mode in MODES:
                    tps = run_mode(run, mode, args.threads)
                    best[busy, mode] = max(best.get((busy, mode), 0.0), tps)
                    print(f"round {rnd + 1}: {busy} busy, {mode}: {tps:.1f} tok/s", flush=True)
            finally:
                for b in burners:
                    b.kill()
                    b.wait()
    table = Table(title=f"135M Q4_0, 1 row greedy, {plural(args.threads, 'thread')}, best of {args.rounds} rounds")
    table.add_column("busy processes")
    for mode in MODES:
        table.add_column(f"{mode} tok/s", justify="right")
    for busy in loads:
        table.add_row(str(busy), *(f"{best[busy, m]:.1f}" for m in MODES))
    console.print(table)
    (OUT / "busy.json").write_text(json.dumps([dict(busy=b, mode=m, tok_s=v) for (b, m), v in best.items()], indent=1))


if __name__ == "__main__":
    main()
