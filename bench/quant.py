"""Quantized decode: tiankong's compiled step on GGUF block formats against llama.cpp, same weights.

    python bench/quant.py                      # q8_0, q4_0, Q4_K_M; 3 rounds of 3 runs
    python bench/quant.py --types q8_0 --rounds 1 --runs 2

What it does, top to bottom:
  1. setup   — bench/decode.py's random SmolLM-135M-shaped Llama (safetensors, F32 GGUF), then
               llama.cpp's own quantizer (llama_cpp.llama_model_quantize) makes Q8_0, Q4_0 and
               Q4_K_M files from the F32 GGUF. Cached in bench/out/.
  2. engines — for each type: tiankong on the GGUF file (the weights llama.cpp runs; where the GGUF
               loader keeps blocks quantized the step reads them as they are, else they are
               dequantized and the row says so), tiankong quantizing the safetensors at load
               (--dtype q8_0 / q4_0; Q4_K_M has no such path) and llama.cpp (llama-cpp-python) on
               the file. All in this process, taking turns run by run, so the shared machine's
               drift hits every engine alike; the best run of each is reported (others only add
               time).
  3. report  — decode tok/s (batch 1, greedy, 32-token prompt, 128 new tokens, 2 threads), the
               ratio to llama.cpp, and tiankong's 4-row step time over its 1-row one; also
               bench/out/quant.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from decode import GGUF_PATH, MODEL_DIR, OUT, PRESETS, importable, prompt_ids, setup

RESULT_JSON = OUT / "quant.json"
FTYPES = {"q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0", "q4_k_m": "MOSTLY_Q4_K_M"}
TARGETS = dict(vs_llamacpp=1.0, batch4_ratio=1.5)


def quantized_gguf(qtype: str) -> Path:
    """The F32 GGUF quantized by llama.cpp's own tool to `qtype` (made once)."""
    import llama_cpp

    path = OUT / f"smollm-135m-random-{qtype}.gguf"
    if not path.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{FTYPES[qtype]}")
        params.nthread = 2
        tmp = path.with_suffix(".tmp")
        if llama_cpp.llama_model_quantize(str(GGUF_PATH).encode(), str(tmp).encode(), params) != 0:
            raise RuntimeError(f"llama.cpp could not quantize {GGUF_PATH} to {qtype}")
        tmp.rename(path)
    return path


def tiankong_runner(source: Path, dtype: str, prompt: list[int], n_new: int):
    """(run(rows) -> (decode tok/s of row 0, seconds per step), weight types) for one engine."""
    from tiankong.engine.engine import Engine
    from tiankong.engine.events import Finished, TokenEvent
    from tiankong.engine.sampling import SamplingParams

    if source.suffix == ".gguf":
        # By hand, for GGUFModel(keep_quantized=True): Engine.load dequantizes a GGUF's blocks.
        from tiankong.engine.gguf_model import GGUFModel
        from tiankong.engine.model import load_model, prepare_for_inference
        from tiankong.engine.quant import weight_summary

        gguf = GGUFModel(source, keep_quantized=True)
        model, cfg = load_model(gguf, "cpu", "auto")
        weights = weight_summary(model)
        tok = gguf.tokenizer()
        model = prepare_for_inference(model)
        eng = Engine(model, cfg, tok, gguf.chat_template(tok), source, weights["parameters"], weights)
    else:
        eng = Engine.load(source, device="cpu", dtype=dtype)
    assert eng.decode_path.startswith("compiled step"), eng.decode_path
    greedy = dict(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, seed=0)

    def run(rows: int, n: int = n_new) -> tuple[float, float]:
        params = [SamplingParams(**(greedy if rows == 1 else PRESETS[r]), max_new_tokens=n) for r in range(rows)]
        first = end = None
        for ev in eng.generate([prompt] * rows, params):
            if first is None and isinstance(ev, TokenEvent):
                first = time.perf_counter()
            elif isinstance(ev, Finished):
                end = time.perf_counter()
        step = (end - first) / (n - 1)
        return 1.0 / step, step

    return run, eng.info()["weight_types"]


def llamacpp_runner(path: Path, prompt: list[int], n_new: int, threads: int):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)

    def run(rows: int, n: int = n_new) -> tuple[float, float]:
        assert rows == 1
        llm.reset()
        count, first = 0, None
        for _ in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            count += 1
            if count == 1:
                first = time.perf_counter()
            if count == n:
                break
        step = (time.perf_counter() - first) / (n - 1)
        return 1.0 / step, step

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="q8_0,q4_0,q4_k_m")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    args.skip_llamacpp = False
    import torch
    from rich.console import Console

    console = Console(width=120)
    setup(args, console)
    torch.set_num_threads(args.threads)
    prompt, n_new = prompt_ids(args.prompt_tokens), args.new_tokens
    engines: dict[str, tuple] = {}  # name -> (run, rows to measure, note)
    for qtype in args.types.split(","):
        path = quantized_gguf(qtype) if importable("llama_cpp") else None
        if path is not None:
            run, types = tiankong_runner(path, "auto", prompt, n_new)
            engines[f"tiankong {qtype} gguf"] = (run, (1, 4), types)
            engines[f"llama.cpp {qtype} gguf"] = (llamacpp_runner(path, prompt, n_new, args.threads), (1,), "")
        if qtype != "q4_k_m":
            run, types = tiankong_runner(MODEL_DIR, qtype, prompt, n_new)
            engines[f"tiankong {qtype} at load"] = (run, (1, 4), types)
    best: dict[tuple[str, int], float] = {}  # (engine, rows) -> best seconds per step
    for run, rows, _ in engines.values():  # warm-up: first-call allocations, page faults
        for r in rows:
            run(r, 8)
    for rnd in range(args.rounds):
        for _ in range(args.runs):
            for name, (run, rows, _) in engines.items():
                for r in rows:
                    step = run(r)[1]
                    best[name, r] = min(best.get((name, r), 1e9), step)
                    console.print(f"[dim]round {rnd + 1}: {name}, {r} row(s): {1 / step:.1f} steps/s[/]")
    report(engines, best, args, console)


def report(engines: dict, best: dict, args, console) -> None:
    from rich.table import Table

    table = Table(
        title=f"decode, {args.threads} threads, batch 1 greedy, {args.prompt_tokens}+{args.new_tokens} tokens"
    )
    for col in ("engine", "weights", "tok/s", "vs llama.cpp", "4 rows / 1 row"):
        table.add_column(col)
    rows = []
    for name, (_, measured, types) in engines.items():
        qtype = name.split()[1]
        peer = best.get((f"llama.cpp {qtype} gguf", 1))
        tps = 1 / best[name, 1]
        ratio = None if peer is None or name.startswith("llama.cpp") else peer / best[name, 1]
        batch = best[name, 4] / best[name, 1] if 4 in measured else None
        rows.append(dict(engine=name, weights=types, tok_s=tps, vs_llamacpp=ratio, batch4_ratio=batch))
        table.add_row(
            name,
            types,
            f"{tps:.1f}",
            "" if ratio is None else f"{ratio:.2f}x",
            "" if batch is None else f"{batch:.2f}",
        )
    console.print(table)
    RESULT_JSON.write_text(json.dumps(dict(args=vars(args), targets=TARGETS, rows=rows), indent=1))


if __name__ == "__main__":
    main()
