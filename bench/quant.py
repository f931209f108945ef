"""Quantized decode and prefill: tiankong on GGUF block formats against llama.cpp, same weights.

    python bench/quant.py                      # q8_0, q4_0, Q4_K_M; 3 rounds of 3 runs
    python bench/quant.py --types q8_0 --rounds 1 --runs 2
    python bench/quant.py --shape 1b --types q4_0 --new-tokens 16   # the 1B-class shape
    python bench/quant.py --shape gemma3                             # Gemma 3 270M's shape

What it does, top to bottom:
  1. setup   — --shape 135m: bench/decode.py's random SmolLM-135M-shaped Llama (safetensors, F32
               GGUF); --shape 1b: a TinyLlama-shaped one (hidden 2048, 22 layers, 32/4 heads, FFN
               5632, vocabulary 32000); --shape gemma3: Gemma 3 270M's (hidden 640, 18 layers,
               4/1 heads of 256, FFN 2048, vocabulary 262144, tied head, local window 512);
               random seeded weights written straight to an F16 GGUF with gguf-py's writer (and
               a SentencePiece-style vocabulary of placeholder pieces). Then llama.cpp's own quantizer (llama_cpp.llama_model_quantize) makes
               Q8_0, Q4_0 and Q4_K_M files. Cached in bench/out/.
  2. engines — for each type: tiankong on the GGUF file (the weights llama.cpp runs; where the GGUF
               loader keeps blocks quantized the step reads them as they are, else they are
               dequantized and the row says so), tiankong quantizing the safetensors at load
               (--dtype q8_0 / q4_0; Q4_K_M has no such path) and llama.cpp (llama-cpp-python) on
               the file. All in this process, taking turns run by run, so the shared machine's
               drift hits every engine alike; the best run of each is reported (others only add
               time). Where llama.cpp would die on the files (a native build's AMX kernels on some
               CPUs: bench/README.md), a note says so and only tiankong's rows run.
  3. report  — decode tok/s (batch 1, greedy, 32-token prompt, 128 new tokens, 2 threads), the
               ratio to llama.cpp, tiankong's 4-row step time (the four bundled presets that
               `tiankong compare` runs: balanced, creative, precise, chat, with their top-k/top-p/
               min-p and penalties) over its 1-row greedy one (the median over the runs of the
               ratio to the 1-row run just before, with their range: the box's memory speed
               moves one row's time by up to 2x between minutes), and the time to prefill the
               32-token prompt (tiankong: the model call of the prompt into a KV cache;
               llama.cpp: `llm.reset(); llm.eval(prompt)`) with its ratio to llama.cpp's; also
               bench/out/quant.json (quant-1b.json, quant-gemma3.json for the other shapes).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from decode import GGUF_PATH, MODEL_DIR, OUT, Help, llamacpp_missing, llamacpp_note, plural, prompt_ids, setup

FTYPES = {"q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0", "q4_k_m": "MOSTLY_Q4_K_M"}
# decode: tok/s over llama.cpp's (at least 1); 4 rows / 1 row step time (at most 1.5); prefill:
# tiankong's time over llama.cpp's (at most 1.2).
TARGETS = dict(vs_llamacpp=1.0, batch4_ratio=1.5, prefill_vs_llamacpp=1.2)

# The shapes written here with random weights (the 135m one is bench/decode.py's): TinyLlama-1.1B's
# (the 1B-class one) and Gemma 3 270M's (its real vocabulary: the tied head is 62 % of the weights).
BUILT = {
    "1b": dict(
        arch="llama",
        name="tinyllama-1b-random",
        dim=2048,
        layers=22,
        heads=32,
        kv_heads=4,
        head_dim=64,
        ffn=5632,
        vocab=32000,
    ),
    "gemma3": dict(
        arch="gemma3",
        name="gemma3-270m-random",
        dim=640,
        layers=18,
        heads=4,
        kv_heads=1,
        head_dim=256,
        ffn=2048,
        vocab=262144,
    ),
}
SHAPES = ("135m", *BUILT)
SHAPE_HELP = "SmolLM-135M's shape, TinyLlama's (1b) or Gemma 3 270M's (gemma3)"
# llama.cpp evaluating the GGUF file argv[1] on 16 tokens (more than one: ggml's AMX kernels take
# the products of several rows), run in a child process by llamacpp_crash_note.
LLAMACPP_EVAL = (
    "import sys, llama_cpp; llama_cpp.Llama(sys.argv[1], n_ctx=32, n_threads=1, verbose=False).eval(list(range(1, 17)))"
)
LLAMACPP_WITHOUT_AMX = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" '
    "pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python"
)


def f16_gguf(shape: str) -> Path:
    """The built shape's random F16 GGUF (written on first use)."""
    return OUT / f"{BUILT[shape]['name']}-f16.gguf"


def quantized_gguf(qtype: str, shape: str) -> Path:
    """The shape's F32 (135m) or F16 (built shapes) GGUF quantized by llama.cpp's own tool to `qtype` (made once)."""
    source, stem = (GGUF_PATH, "smollm-135m-random") if shape == "135m" else (f16_gguf(shape), BUILT[shape]["name"])
    path = OUT / f"{stem}-{qtype}.gguf"
    if not path.is_file():
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{FTYPES[qtype]}")
        params.nthread = 2
        tmp = path.with_suffix(".tmp")
        if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params) != 0:
            raise RuntimeError(f"llama.cpp could not quantize {source} to {qtype}")
        tmp.rename(path)
    return path


def llamacpp_crash_note(path: Path) -> str | None:
    """One line saying that llama.cpp dies evaluating the quantized file `path` (so its rows are left
    out) and how to build it so it does not; None where it runs. A native build on a CPU with AMX
    runs ggml's AMX kernels, which die by SIGILL on some machines and take the process along: only
    such a build tries the file, in a child process."""
    import llama_cpp

    if b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info():
        return None  # no AMX kernels: nothing to try
    code = subprocess.run([sys.executable, "-c", LLAMACPP_EVAL, str(path)], capture_output=True).returncode
    if code >= 0:
        return None
    return (
        f"llama.cpp (llama-cpp-python with ggml's AMX kernels) died by {signal.Signals(-code).name} on "
        f"{path.name}: no llama.cpp rows; rebuild it without them: {LLAMACPP_WITHOUT_AMX}"
    )


def gguf_or_at_load(qtype: str, say: Callable[[str], None]) -> tuple[Path, str]:
    """(source, dtype) for tiankong_runner: the 135M shape's llama.cpp-quantized `qtype` file (made
    here if missing), or, where it is missing and so is llama-cpp-python, decode.py's float32 model
    quantized by tiankong at load (the same block types for q8_0 and q4_0; Q4_K_M has no such
    path), told through `say`."""
    note = llamacpp_note(f"no llama.cpp-quantized file; {qtype} quantized by tiankong at load instead")
    if note is None or (OUT / f"smollm-135m-random-{qtype}.gguf").is_file():
        return quantized_gguf(qtype, "135m"), "auto"
    if qtype == "q4_k_m":
        raise SystemExit(llamacpp_note("Q4_K_M comes only from llama.cpp's quantizer; pass --type q8_0 or q4_0"))
    say(note)
    return MODEL_DIR, qtype


def variants_parser(doc: str, shapes: bool = False) -> argparse.ArgumentParser:
    """The options of a bench that runs variants of tiankong's step side by side in one process on
    this script's files (hugepages.py, rows16.py); `shapes`: the 1B-class shape too."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=Help)
    if shapes:
        ap.add_argument("--shape", default="135m", choices=SHAPES, help=SHAPE_HELP)
    ap.add_argument("--type", default="q4_0", choices=("q8_0", "q4_0", "q4_k_m"), help="which of quant.py's files")
    ap.add_argument("--model", type=Path, help="another model, a folder or GGUF file (default: quant.py's --type file)")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="length of the fixed prompt")
    ap.add_argument("--new-tokens", type=int, default=128, help="tokens decoded per run")
    ap.add_argument("--rounds", type=int, default=8, help="measured rounds (after one warm-up round)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the step")
    return ap


def variants_source(args, console) -> tuple[Path, str]:
    """(source, dtype) for variants_parser's options: --model, or this script's --type file of the
    shape (made here where missing; at 135M without llama-cpp-python, tiankong's own quantization
    at load, and a note says so)."""
    if args.model is not None:
        return args.model, "auto"
    shape = getattr(args, "shape", "135m")
    if shape != "135m":
        if not f16_gguf(shape).is_file():
            build_gguf(shape)
        return quantized_gguf(args.type, shape), "auto"
    args.skip_llamacpp = False
    setup(args, console)  # decode.py's model and its F32 GGUF, for llama.cpp's quantizer
    return gguf_or_at_load(args.type, lambda note: console.print(note, style="yellow", markup=False))


def median_and_range(ratios: list[float]) -> tuple[float, float, float] | None:
    """(median, lowest, highest) of the runs' ratios, or None without any."""
    return (statistics.median(ratios), min(ratios), max(ratios)) if ratios else None


def build_gguf(shape: str, seed: int = 0) -> None:
    """A random model of a built shape (std 0.02 weights, seeded; norm gains 1), straight to an F16
    GGUF: llama.cpp's tensor names and metadata, and a SentencePiece-style vocabulary (3 specials,
    256 byte tokens, placeholder pieces) that both engines load; the prompt is ids, so the pieces
    never matter. Gemma 3: norm tensors hold the converter's 1 + w (so 1 is a gain of 1), the head
    is the embedding (tied), every sixth layer global as llama.cpp assumes."""
    import gguf
    import numpy as np

    s, rng, path = BUILT[shape], np.random.default_rng(seed), f16_gguf(shape)
    gemma = s["arch"] == "gemma3"
    w = gguf.GGUFWriter(str(path.with_suffix(".tmp")), s["arch"])
    w.add_name(s["name"])
    w.add_context_length(2048)
    w.add_embedding_length(s["dim"])
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_key_length(s["head_dim"])
    w.add_value_length(s["head_dim"])
    w.add_rope_dimension_count(s["head_dim"])
    w.add_rope_freq_base(1e6 if gemma else 1e4)
    w.add_layer_norm_rms_eps(1e-6 if gemma else 1e-5)
    if gemma:
        w.add_sliding_window(512)
        w.add_rope_freq_base_swa(1e4)
    w.add_vocab_size(s["vocab"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [f"\u2581p{i}" for i in range(s["vocab"] - len(pieces))]
    kinds = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(pieces) - 259)])
    w.add_token_types([int(k) for k in kinds] + [int(gguf.TokenType.NORMAL)] * (len(pieces) - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)

    def normal(*dims: int) -> np.ndarray:
        return (rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(np.float16)

    D, F, hd, ones = s["dim"], s["ffn"], s["head_dim"], np.ones(s["dim"], dtype=np.float32)
    norms = ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm") if gemma else ("attn_norm", "ffn_norm")
    w.add_tensor("token_embd.weight", normal(s["vocab"], D))
    for i in range(s["layers"]):
        for name, dims in (
            ("attn_q", (s["heads"] * hd, D)),
            ("attn_k", (s["kv_heads"] * hd, D)),
            ("attn_v", (s["kv_heads"] * hd, D)),
            ("attn_output", (D, s["heads"] * hd)),
            ("ffn_gate", (F, D)),
            ("ffn_up", (F, D)),
            ("ffn_down", (D, F)),
        ):
            w.add_tensor(f"blk.{i}.{name}.weight", normal(*dims))
        for name in norms:
            w.add_tensor(f"blk.{i}.{name}.weight", ones)
        if gemma:  # per-head q/k RMSNorm
            for name in ("attn_q_norm", "attn_k_norm"):
                w.add_tensor(f"blk.{i}.{name}.weight", np.ones(hd, dtype=np.float32))
    w.add_tensor("output_norm.weight", ones)
    if not gemma:
        w.add_tensor("output.weight", normal(s["vocab"], D))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    path.with_suffix(".tmp").rename(path)


def prompt_for(shape: str, n: int) -> list[int]:
    """decode.py's fixed prompt ids, or for a built shape the same recipe over its vocabulary
    (past the specials and byte tokens)."""
    if shape == "135m":
        return prompt_ids(n)
    return [259 + (1234 + 7919 * i) % (BUILT[shape]["vocab"] - 259) for i in range(n)]


def presets(rows: int, n: int) -> list:
    """The first `rows` of the bundled presets a comparison runs, seeded, n new tokens each."""
    from dataclasses import replace

    from tiankong.presets import get_preset

    names = ("balanced", "creative", "precise", "chat")[:rows]
    return [replace(get_preset(name).params, max_new_tokens=n, seed=r) for r, name in enumerate(names)]


def tiankong_runner(source: Path, dtype: str, prompt: list[int], n_new: int):
    """(run(rows) -> (decode tok/s of row 0, seconds per step, seconds from the call to the first
    token), prefill() -> seconds, weight types) for one engine."""
    import torch

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

    def run(rows: int, n: int = n_new) -> tuple[float, float, float]:
        params = [SamplingParams(**greedy, max_new_tokens=n)] if rows == 1 else presets(rows, n)
        first = end = None
        start = time.perf_counter()
        for ev in eng.generate([prompt] * rows, params):
            if first is None and isinstance(ev, TokenEvent):
                first = time.perf_counter()
            elif isinstance(ev, Finished):
                end = time.perf_counter()
        step = (end - first) / (n - 1)
        return 1.0 / step, step, first - start

    from tiankong.engine.kv_cache import KVCache, kv_dtype

    cfg = eng.cfg
    cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, len(prompt), cfg.head_dim, kv_dtype(eng.model), "cpu")
    tokens, positions = torch.tensor([prompt]), torch.arange(len(prompt))[None]

    def prefill() -> float:
        """The model call that prefills the prompt, as generate makes it (last position's logits)."""
        with torch.inference_mode():
            start = time.perf_counter()
            eng.model(tokens, positions, None, cache, 0, last_only=True)
            return time.perf_counter() - start

    return run, prefill, eng.info()["weight_types"]


def llamacpp_runner(path: Path, prompt: list[int], n_new: int, threads: int):
    """(run(rows) -> (decode tok/s, seconds per step), prefill() -> seconds) for llama-cpp-python."""
    from llama_cpp import Llama

    n_ctx = max(512, len(prompt) + n_new)  # --prompt-tokens past 512 (decode deep in a long chat)
    llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, verbose=False)

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

    def prefill() -> float:
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)  # batches of n_batch (512) tokens: one for the default prompt
        return time.perf_counter() - start

    return run, prefill


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=Help)
    ap.add_argument("--shape", choices=SHAPES, default="135m", help=SHAPE_HELP)
    ap.add_argument("--types", default="q8_0,q4_0,q4_k_m", help="block types, comma-separated")
    ap.add_argument("--new-tokens", type=int, default=128, help="tokens decoded per run")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="length of the fixed prompt")
    ap.add_argument("--threads", type=int, default=2, help="threads of both engines")
    ap.add_argument("--runs", type=int, default=3, help="runs of each engine per round (best reported)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds")
    ap.add_argument("--no-batch", action="store_true", help="skip the 4-row decode runs")
    args = ap.parse_args()
    args.skip_llamacpp = False
    import torch
    from rich.console import Console

    console = Console(width=120)
    if args.shape == "135m":
        note = llamacpp_note("no GGUF files and no llama.cpp rows; only tiankong quantizing at load runs")
        if note:
            console.print(note, style="yellow", markup=False)  # [bench] is no markup
        setup(args, console)
    elif llamacpp_missing():
        raise SystemExit(
            llamacpp_note(f"--shape {args.shape} needs gguf to write the model and llama.cpp to quantize it")
        )
    elif not f16_gguf(args.shape).is_file():
        console.print(f"[dim]writing the random {BUILT[args.shape]['name']} F16 GGUF...[/]")
        build_gguf(args.shape)
    torch.set_num_threads(args.threads)
    prompt, n_new = prompt_for(args.shape, args.prompt_tokens), args.new_tokens
    engines = make_engines(args, prompt, n_new, lambda note: console.print(note, style="yellow", markup=False))
    best: dict[tuple[str, int | str], float] = {}  # (engine, rows or "prefill") -> best seconds
    # engine -> each run's 4-row step over the 1-row step run just before it: the box's memory
    # speed moves by 2x from minute to minute, one row (bound by memory) with it and four rows
    # (bound by arithmetic) less, so a ratio of two bests can pair different moments
    pairs: dict[str, list[float]] = {}
    last: dict[str, float] = {}

    def measure(name: str, key: int | str, seconds: float, rnd: int) -> None:
        best[name, key] = min(best.get((name, key), 1e9), seconds)
        if key == 1:
            last[name] = seconds
        elif key == 4:
            pairs.setdefault(name, []).append(seconds / last[name])
        what = f"prefill {seconds * 1e3:.1f} ms" if key == "prefill" else f"{key} row(s): {1 / seconds:.1f} steps/s"
        console.print(f"[dim]round {rnd + 1}: {name}, {what}[/]")

    for run, prefill, rows, _ in engines.values():  # warm-up: first-call allocations, page faults
        prefill()
        for r in rows:
            run(r, 8)
    for rnd in range(args.rounds):
        for _ in range(args.runs):
            for name, (run, prefill, rows, _) in engines.items():
                measure(name, "prefill", prefill(), rnd)
                for r in rows:
                    measure(name, r, run(r)[1], rnd)
    report(engines, best, pairs, args, console)


def make_engines(args, prompt: list[int], n_new: int, say: Callable[[str], None]) -> dict[str, tuple]:
    """name -> (run, prefill, decode rows to measure, weight types) for every engine of the types;
    llama.cpp's only where it is installed and runs the first quantized file (else `say` tells why)."""
    engines: dict[str, tuple] = {}
    batch = (1,) if args.no_batch else (1, 4)
    qtypes = args.types.split(",")
    paths = {} if llamacpp_missing() else {qtype: quantized_gguf(qtype, args.shape) for qtype in qtypes}
    crash = llamacpp_crash_note(paths[qtypes[0]]) if paths else None
    if crash:
        say(crash)
    for qtype in qtypes:
        if (path := paths.get(qtype)) is not None:
            run, prefill, types = tiankong_runner(path, "auto", prompt, n_new)
            engines[f"tiankong {qtype} gguf"] = (run, prefill, batch, types)
            if crash is None:
                engines[f"llama.cpp {qtype} gguf"] = (*llamacpp_runner(path, prompt, n_new, args.threads), (1,), "")
        if qtype != "q4_k_m" and args.shape == "135m":  # quantized at load: from the safetensors
            run, prefill, types = tiankong_runner(MODEL_DIR, qtype, prompt, n_new)
            engines[f"tiankong {qtype} at load"] = (run, prefill, batch, types)
    return engines


def report(engines: dict, best: dict, pairs: dict, args, console) -> None:
    from rich.table import Table

    table = Table(
        title=f"{args.shape} shape, {plural(args.threads, 'thread')}, batch 1 greedy, {args.prompt_tokens}+{args.new_tokens} tokens"
    )
    columns = (
        "engine",
        "weights",
        "tok/s",
        "vs llama.cpp",
        "4 rows / 1 row (range)",
        "prefill ms",
        "prefill / llama.cpp",
    )
    for col in columns:
        table.add_column(col)
    rows = []
    for name, (_, _, measured, types) in engines.items():
        qtype = name.split()[1]
        peer, peer_prefill = (best.get((f"llama.cpp {qtype} gguf", k)) for k in (1, "prefill"))
        tps, prefill = 1 / best[name, 1], best[name, "prefill"]
        mine = not name.startswith("llama.cpp")
        ratio = peer / best[name, 1] if mine and peer else None
        prefill_ratio = prefill / peer_prefill if mine and peer_prefill else None
        # four rows over one: the median of the adjacent runs' ratios, with their range
        spread = median_and_range(pairs.get(name, []))
        batch = spread[0] if spread else None
        rows.append(
            dict(
                engine=name,
                weights=types,
                tok_s=tps,
                vs_llamacpp=ratio,
                batch4_ratio=batch,
                batch4_ratio_range=list(spread[1:]) if spread else None,
                batch4_ratio_of_bests=best[name, 4] / best[name, 1] if 4 in measured else None,
                prefill_ms=prefill * 1e3,
                prefill_vs_llamacpp=prefill_ratio,
            )
        )
        table.add_row(
            name,
            types,
            f"{tps:.1f}",
            "" if ratio is None else f"{ratio:.2f}x",
            "" if spread is None else "{:.2f} ({:.2f}-{:.2f})".format(*spread),
            f"{prefill * 1e3:.1f}",
            "" if prefill_ratio is None else f"{prefill_ratio:.2f}x",
        )
    console.print(table)
    out = OUT / ("quant.json" if args.shape == "135m" else f"quant-{args.shape}.json")
    out.write_text(json.dumps(dict(args=vars(args), targets=TARGETS, rows=rows), indent=1))


if __name__ == "__main__":
    main()
