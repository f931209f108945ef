"""Decode benchmark: tiankong against transformers and llama.cpp on the same weights, in one run.

    python bench/decode.py                       # everything; builds the test model on first use
    python bench/decode.py --skip-llamacpp --rounds 2 --runs 5

What it does, top to bottom:
  1. setup   — a Llama shaped like SmolLM-135M with random weights (float32, saved with
               transformers), a byte-level BPE tokenizer of the same vocabulary size, and the
               same weights converted to a GGUF F32 file for llama.cpp. All cached in bench/out/.
  2. workers — each framework runs in its own subprocess, so its peak RSS is its own and no
               framework's thread pools or caches leak into another's numbers. The frameworks
               take turns for --rounds rounds: a shared machine's memory bandwidth drifts by
               a third over minutes, and taking turns lets the drift hit every framework alike.
  3. report  — a table, the ratios against their targets, and bench/out/decode.json.

Every worker: batch 1, greedy, the same fixed prompt ids, float32, the same thread count; one
warm-up, then `--runs` measured runs, of which the best is reported: other processes only ever
add time, so the fastest run is the least disturbed one. Runs during which other processes took
CPU time are repeated (see collect()), each wait and repeat printed as it happens; medians and
every run are kept in the JSON file. Ctrl+C or SIGTERM ends the running worker too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
MODEL_DIR = OUT / "smollm-135m-random"
GGUF_PATH = OUT / "smollm-135m-random-f32.gguf"
RESULT_JSON = OUT / "decode.json"
GGUF_CHECK = OUT / "gguf-check.json"  # written once, when the GGUF file is made

# SmolLM-135M's shape. Only the weights are random.
VOCAB = 49152
SHAPE = dict(
    hidden_size=576,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    intermediate_size=1536,
    vocab_size=VOCAB,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    initializer_range=0.02,
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM
EOS_ID = 0  # "<|endoftext|>" is BOS and EOS, as in SmolLM

# The four rows of the batched tiankong run: one per preset style the TUI compares side by side.
PRESETS = [
    dict(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, seed=0),  # greedy
    dict(temperature=0.7, top_p=0.9, top_k=0, min_p=0.0, seed=1),
    dict(temperature=1.0, top_p=1.0, top_k=40, min_p=0.0, seed=2),
    dict(temperature=0.3, top_p=1.0, top_k=0, min_p=0.1, seed=3),
]

# Targets the engine is held to; the report marks each ratio as met or not.
TARGETS = dict(vs_transformers=2.0, vs_llamacpp=1.0, top20_overhead_pct=5.0, batch4_ratio=1.5, rss_over_weights=1.3)


def prompt_ids(n: int) -> list[int]:
    """Fixed, spread-out ids that avoid the special tokens (so nothing depends on tokenization)."""
    return [len(SPECIAL_TOKENS) + (1234 + 7919 * i) % (VOCAB - len(SPECIAL_TOKENS)) for i in range(n)]


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


# --------------------------------------------------------------------------------------------
# 1. Setup: tokenizer, model, GGUF
# --------------------------------------------------------------------------------------------


def build_tokenizer():
    """A byte-level BPE trained on the Python standard library, padded to exactly VOCAB ids.

    Training on the stdlib gives real merges without any download; it stops short of 49152, so
    the rest is filled with two-character merges of byte symbols. Every padding token is thus a
    real, reachable BPE token made only of byte-level symbols — llama.cpp decodes each NORMAL
    token through the byte map when it loads, and would reject anything else.
    """
    import sysconfig

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = [f.read_text(encoding="utf-8", errors="replace") for f in sorted(stdlib.glob("*.py"))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)

    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    merges: list = spec["model"]["merges"]
    as_pairs = bool(merges) and isinstance(merges[0], list)  # tokenizers >= 0.20 writes [a, b]
    pairs = ((a, b) for a in alphabet for b in alphabet)
    while len(vocab) < VOCAB:
        a, b = next(pairs)
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
            merges.append([a, b] if as_pairs else f"{a} {b}")
    assert sorted(vocab.values()) == list(range(VOCAB)), "vocabulary ids must be dense"
    return Tokenizer.from_str(json.dumps(spec))


def build_model(seed: int) -> None:
    """Random-weight Llama in MODEL_DIR (safetensors, float32) with its tokenizer beside it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.disable_progress_bar()
    torch.manual_seed(seed)
    config = LlamaConfig(
        **SHAPE,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=None,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(MODEL_DIR)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(), bos_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[0], unk_token=None
    )
    wrapped.save_pretrained(MODEL_DIR)


def greedy_hits_eos(n_prompt: int, n_new: int) -> bool:
    """Does transformers' plain greedy continuation (EOS allowed) emit a special token?

    If it did, frameworks would stop early or (transformers with min_new_tokens) diverge; the
    setup then rebuilds the weights with another seed.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids(n_prompt)])
    with torch.inference_mode():
        out = model.generate(ids, do_sample=False, max_new_tokens=n_new, pad_token_id=EOS_ID)
    new = out[0, n_prompt:].tolist()
    return len(new) < n_new or any(t < len(SPECIAL_TOKENS) for t in new)


def rotate_half_to_interleaved(w, n_head: int):
    """Undo transformers' q/k permutation: llama.cpp's RoPE rotates adjacent pairs (2i, 2i+1)
    like Meta's original checkpoints, while HF checkpoints are stored for the rotate-half
    pairing (i, i + d/2). Per head, rows [first half, second half] become interleaved."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_to_gguf() -> None:
    """Write the same weights as a GGUF F32 file with llama.cpp's tensor names and metadata."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    tok = json.loads((MODEL_DIR / "tokenizer.json").read_text())
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg["hidden_size"] // n_head

    w = gguf.GGUFWriter(str(GGUF_PATH), "llama")
    w.add_name("smollm-135m-random")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(SHAPE["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    # Tokenizer: the same vocabulary and merges, so ids mean the same thing in both worlds.
    by_id = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["id"] for t in tok["added_tokens"] if t["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")  # llama.cpp's name for the GPT-2 split regex, which we trained with
    w.add_token_list([t for t, _ in by_id])
    w.add_token_types([int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL) for _, i in by_id])
    w.add_token_merges(merges)
    w.add_bos_token_id(EOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(False)

    tensors = load_file(str(MODEL_DIR / "model.safetensors"))
    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    w.add_tensor("token_embd.weight", tensors.pop("model.embed_tokens.weight"))
    for i in range(cfg["num_hidden_layers"]):
        for hf, ours in names.items():
            t = tensors.pop(f"model.layers.{i}.{hf}.weight")
            if hf == "self_attn.q_proj":
                t = rotate_half_to_interleaved(t, n_head)
            elif hf == "self_attn.k_proj":
                t = rotate_half_to_interleaved(t, n_kv)
            w.add_tensor(f"blk.{i}.{ours}.weight", np.ascontiguousarray(t, dtype=np.float32))
    w.add_tensor("output_norm.weight", tensors.pop("model.norm.weight"))
    if "lm_head.weight" in tensors:  # absent when tied: llama.cpp then reuses token_embd
        w.add_tensor("output.weight", tensors.pop("lm_head.weight"))
    assert not tensors, f"tensors left unconverted: {sorted(tensors)}"
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def verify_gguf(n_prompt: int) -> dict:
    """Last-position prefill logits, llama.cpp vs transformers, on the fixed prompt.

    This is what catches a wrong q/k permutation: greedy tokens of a random model can agree for
    a while by luck, logits cannot (without the permutation the gap is ~0.2 on logits of std ~0.5).
    """
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    ids = prompt_ids(n_prompt)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    with torch.inference_mode():
        ref = model(torch.tensor([ids])).logits[0, -1].numpy()
    llm = Llama(model_path=str(GGUF_PATH), n_ctx=512, logits_all=True, verbose=False)
    llm.eval(ids)
    got = np.asarray(llm.scores[len(ids) - 1])
    return dict(
        max_abs_diff=float(np.abs(got - ref).max()),
        logit_std=float(ref.std()),
        same_argmax=bool(got.argmax() == ref.argmax()),
        prompt_tokens=n_prompt,
    )


def setup(args, console) -> None:
    if not (MODEL_DIR / "model.safetensors").is_file() or not (MODEL_DIR / "tokenizer.json").is_file():
        for seed in range(10):
            console.print(f"[dim]building the random SmolLM-135M-shaped model (seed {seed})...[/]")
            build_model(seed)
            if not greedy_hits_eos(args.prompt_tokens, args.new_tokens):
                break
            console.print("[yellow]greedy output hits a special token; trying another seed[/]")
    if not args.skip_llamacpp and not GGUF_PATH.is_file() and importable("gguf"):
        console.print("[dim]converting the weights to GGUF F32 for llama.cpp...[/]")
        convert_to_gguf()
        if importable("llama_cpp"):
            GGUF_CHECK.write_text(json.dumps(verify_gguf(args.prompt_tokens)))


def importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --------------------------------------------------------------------------------------------
# Shared with the other benchmarks, which import this module: notes on what is missing, --help
# with defaults, ending the processes a benchmark starts.
# --------------------------------------------------------------------------------------------

BENCH_EXTRA = "pip install -e '.[bench]'"


def llamacpp_missing() -> list[str]:
    """The packages llama.cpp's side needs (its GGUF files, its engine) that do not import."""
    return [pkg for mod, pkg in (("llama_cpp", "llama-cpp-python"), ("gguf", "gguf")) if not importable(mod)]


def llamacpp_note(consequence: str) -> str | None:
    """One line naming what llama.cpp's side is missing, how to install it and what follows from
    it; None where nothing is missing."""
    missing = llamacpp_missing()
    return f"{' and '.join(missing)} not installed ({BENCH_EXTRA}): {consequence}" if missing else None


class Help(argparse.RawDescriptionHelpFormatter):
    """--help with each option's default after its text (flags and options without one excepted),
    and the description as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is False or default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)" if action.option_strings else text


def plural(n: int, word: str) -> str:
    """'1 thread', '2 threads'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def end_children_on_sigterm() -> None:
    """SIGTERM ends this process as Ctrl+C does, by an exception: subprocess.run then kills its
    child and `finally` blocks stop the servers and busy loops a benchmark started. (SIGTERM's
    default action ends this process alone, and its children run on, re-parented to init.)"""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


PROGRESS = "@progress "  # a worker's stdout line that the parent prints as it comes


def say(message: str) -> None:
    """A progress line from a worker process (run_streaming passes it on at once)."""
    print(PROGRESS + message, flush=True)


def run_streaming(
    cmd: list[str], env: dict[str, str], timeout: float, on_progress: Callable[[str], None]
) -> tuple[int | None, str]:
    """Run `cmd`, passing each of its progress lines (say()) to on_progress as it comes; returns
    (exit code, or None when it ran past `timeout` seconds and was killed; its other output, stdout
    and stderr together). If this process is interrupted (Ctrl+C, SIGTERM with
    end_children_on_sigterm) the child is killed first."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    other: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PROGRESS):
                on_progress(line[len(PROGRESS) :].rstrip("\n"))
            else:
                other.append(line)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    return (None if expired.is_set() else code), "".join(other)


# --------------------------------------------------------------------------------------------
# 2. Workers: one subprocess per framework. Each returns a dict of measurements.
# --------------------------------------------------------------------------------------------


# Other processes on the machine (tests, builds) would land in the timings. Each run is therefore
# preceded by a wait for an idle machine and checked afterwards: the CPU time the whole machine
# spent during the run, minus this process's own, is what others took from it. A run where others
# took more than QUIET of the machine is flagged "disturbed" and repeated (a few times at most).
QUIET = 0.10  # share of all CPUs
QUIET_WAIT_S = 30  # longest wait for an idle machine before a run


def cpu_snapshot() -> tuple[float, int, int] | None:
    """(seconds, machine busy ticks, this process's ticks), or None where /proc does not exist."""
    try:
        with open("/proc/stat") as f:
            t = [int(x) for x in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()  # comm may contain spaces; fields follow ")"
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = t
    # steal counts as busy: time the hypervisor gave to other guests is time we lost too
    return time.monotonic(), user + nice + system + irq + softirq + steal, int(own[11]) + int(own[12])


def foreign_share(a, b) -> float:
    """Share of the machine's CPUs used by other processes between two snapshots (0 = alone)."""
    if a is None or b is None or b[0] <= a[0]:
        return 0.0
    ticks = (b[1] - a[1]) - (b[2] - a[2])
    return max(0.0, ticks / os.sysconf("SC_CLK_TCK") / (b[0] - a[0]) / (os.cpu_count() or 1))


def wait_for_quiet(say: Callable[[str], None] = say) -> float:
    """Block until the machine is idle (or QUIET_WAIT_S passed); returns the seconds waited. A wait
    is told as it starts and as it ends, so that a busy machine's minutes are not silent."""
    start = time.monotonic()
    share, told = 0.0, False
    while time.monotonic() - start < QUIET_WAIT_S:
        a = cpu_snapshot()
        time.sleep(0.5)
        share = foreign_share(a, cpu_snapshot())
        if share < QUIET:
            break
        if not told:
            say(f"machine busy (others use {share:.0%} of the CPUs): waiting up to {QUIET_WAIT_S} s for it to go quiet")
            told = True
    waited = time.monotonic() - start
    if share >= QUIET:
        say(f"waited {waited:.0f} s, still busy: running anyway")
    elif waited >= 1:
        say(f"quiet after {waited:.0f} s")
    return waited


def collect(modes: dict, runs: int, say: Callable[[str], None] = say) -> dict[str, list[dict]]:
    """Measured runs of each mode, interleaved round by round so that slow spells of the machine
    hit all modes alike, until each has `runs` undisturbed runs (at most 3 * runs rounds). Each
    disturbed run, and each mode's count of clean runs at the end, is told through `say`."""
    samples: dict[str, list[dict]] = {name: [] for name in modes}

    def clean(name: str) -> int:
        return sum(not r["disturbed"] for r in samples[name])

    for _ in range(3 * runs):
        for name, fn in modes.items():
            if clean(name) >= runs:
                continue
            waited = wait_for_quiet(say)
            before = cpu_snapshot()
            r = fn()
            r["foreign_cpu"] = foreign_share(before, cpu_snapshot())
            r["disturbed"] = r["foreign_cpu"] > QUIET
            r["waited_s"] = waited
            samples[name].append(r)
            if r["disturbed"]:
                say(
                    f"{name}: run {len(samples[name])} of at most {3 * runs} disturbed (others used "
                    f"{r['foreign_cpu']:.0%} of the CPUs): {runs - clean(name)} clean run(s) still wanted"
                )
        if all(clean(name) >= runs for name in modes):
            break
    for name in modes:
        say(f"{name}: {clean(name)} clean of {len(samples[name])} runs")
    return samples


def worker_tiankong(job: dict) -> dict:
    """Three modes, interleaved run by run so that machine drift hits them all alike:
    1 greedy row; the same with top-20 candidates per token; 4 rows with 4 presets."""
    import torch

    from tiankong.engine.engine import Engine
    from tiankong.engine.events import Finished, TokenEvent
    from tiankong.engine.sampling import SamplingParams

    torch.set_num_threads(job["threads"])
    rss_before = peak_rss_bytes()
    eng = Engine.load(job["model_dir"], device="cpu", dtype="float32")
    torch_path = os.environ.get("TIANKONG_NATIVE") == "0"  # the "tiankong-torch" worker
    assert eng.decode_path.startswith("torch" if torch_path else "compiled step"), eng.decode_path
    prompt, n_new = job["prompt"], job["new_tokens"]
    greedy = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, max_new_tokens=n_new, seed=0)
    presets = [SamplingParams(**p, max_new_tokens=n_new) for p in PRESETS]

    def run(params: list, top: int) -> dict:
        t0 = time.perf_counter()
        first = None
        finished = {}
        for ev in eng.generate([prompt] * len(params), params, top_logprobs=top):
            if first is None and isinstance(ev, TokenEvent):
                first = time.perf_counter()
            elif isinstance(ev, Finished):
                finished[ev.row] = ev
        end = time.perf_counter()
        counts = [len(finished[r].token_ids) for r in range(len(params))]
        return dict(
            ttft_s=first - t0,
            decode_s=end - first,
            wall_s=end - t0,
            counts=counts,
            reasons=[finished[r].finish_reason for r in range(len(params))],
            engine_decode_tps=finished[0].timing.decode_tokens_per_s,
            tokens=list(finished[0].token_ids),
        )

    modes = {
        "single": (lambda: run([greedy], 0)),
        "top20": (lambda: run([greedy], 20)),
        "batch4": (lambda: run(presets, 0)),
    }
    if torch_path:  # only the main figure: the other modes are the default engine's
        modes = {"single": modes["single"]}
    for fn in modes.values():  # warm-up: first-call allocations, lazy kernels, page faults
        fn()
    return dict(summarize(collect(modes, job["runs"]), rss_before), decode_path=eng.decode_path)


def worker_transformers(job: dict) -> dict:
    """HF generate: a 1-token run gives TTFT; the full run minus it gives the decode time."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(job["threads"])
    rss_before = peak_rss_bytes()
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32).eval()
    ids = torch.tensor([job["prompt"]])
    n_new = job["new_tokens"]

    def gen(n: int) -> tuple[float, list[int]]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=EOS_ID)
        return time.perf_counter() - t0, out[0, ids.shape[1] :].tolist()

    def run() -> dict:
        ttft, _ = gen(1)
        wall, tokens = gen(n_new)
        return dict(
            ttft_s=ttft, decode_s=wall - ttft, wall_s=wall, counts=[len(tokens)], reasons=["length"], tokens=tokens
        )

    run()  # warm-up
    return summarize(collect({"single": run}, job["runs"]), rss_before)


def worker_llamacpp(job: dict) -> dict:
    """llama-cpp-python's generate() loop with temp 0 (greedy), fed the prompt as token ids."""
    from llama_cpp import Llama

    rss_before = peak_rss_bytes()
    llm = Llama(
        model_path=job["gguf"],
        n_threads=job["threads"],
        n_threads_batch=job["threads"],
        n_ctx=512,
        logits_all=False,
        verbose=False,
    )
    prompt, n_new = job["prompt"], job["new_tokens"]

    def run() -> dict:
        llm.reset()  # forget the previous run, or generate() would reuse its cached prefix
        tokens: list[int] = []
        t0 = time.perf_counter()
        # generate() never stops by itself (EOS is the caller's business), so exactly n_new come.
        for tok in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            if not tokens:
                first = time.perf_counter()
            tokens.append(int(tok))
            if len(tokens) == n_new:
                break
        end = time.perf_counter()
        reason = "eos" if EOS_ID in tokens else "length"
        return dict(
            ttft_s=first - t0,
            decode_s=end - first,
            wall_s=end - t0,
            counts=[len(tokens)],
            reasons=[reason],
            tokens=tokens,
        )

    run()  # warm-up
    return summarize(collect({"single": run}, job["runs"]), rss_before)


def best_of(measured: list[dict]) -> dict:
    """Best (shortest) times over runs, medians beside them, from the undisturbed runs only (all of
    them if the machine never went quiet: the report warns)."""
    runs = [r for r in measured if not r["disturbed"]] or measured
    n = runs[0]["counts"][0]
    return {
        "ttft_s": min(r["ttft_s"] for r in runs),
        "decode_s": min(r["decode_s"] for r in runs),
        "wall_s": min(r["wall_s"] for r in runs),
        # the first token comes out of prefill; the remaining n - 1 are the decode steps
        "decode_tok_s": (n - 1) / min(r["decode_s"] for r in runs),
        "decode_s_median": statistics.median(r["decode_s"] for r in runs),
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "all_counts_full": all(c == n for r in measured for c in r["counts"]),
        "clean_runs": sum(not r["disturbed"] for r in measured),
    }


def summarize(samples: dict[str, list[dict]], rss_before: int) -> dict:
    """best_of() per mode; the last good run's tokens, and every run (without tokens) for the JSON file."""
    out = {
        "rss_before_load_bytes": rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
        "load_average_1min": os.getloadavg()[0],
        "modes": {},
    }
    for name, measured in samples.items():
        last = ([r for r in measured if not r["disturbed"]] or measured)[-1]
        out["modes"][name] = {
            **best_of(measured),
            "counts": last["counts"],
            "reasons": last["reasons"],
            "tokens": last["tokens"],
            "runs": [{k: v for k, v in r.items() if k != "tokens"} for r in measured],
        }
    return out


def merge_rounds(rounds: list[dict]) -> dict:
    """One framework's rounds as one result: every run of every round, best over all of them."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[0]
    out = dict(good[0], peak_rss_bytes=max(r["peak_rss_bytes"] for r in good), modes={})
    for name, first in good[0]["modes"].items():
        measured = [run for r in good for run in r["modes"][name]["runs"]]
        # counts, reasons and tokens: the same in every round (greedy, fixed prompt)
        out["modes"][name] = {**first, **best_of(measured), "runs": measured}
    return out


def round_ratios(rounds: dict[str, list[dict]], console) -> dict:
    """tiankong / peer decode speed within each round: neighbours in time, so drift cancels."""
    out = {}
    for ours, peer in (("tiankong", "transformers"), ("tiankong", "llama.cpp"), ("tiankong-torch", "llama.cpp")):
        pairs = [
            (a, b)
            for a, b in zip(rounds.get(ours, []), rounds.get(peer, []), strict=False)
            if "error" not in a and "error" not in b
        ]
        if not pairs:
            continue
        per_round = [a["modes"]["single"]["decode_tok_s"] / b["modes"]["single"]["decode_tok_s"] for a, b in pairs]
        out[f"{ours.replace('-', '_')}_over_{peer.replace('.', '')}_decode_per_round"] = per_round
        console.print(
            f"{ours} / {peer} decode, round by round: "
            + "  ".join(f"{r:.2f}x" for r in per_round)
            + f"   (median {statistics.median(per_round):.2f}x)"
        )
    return out


# "tiankong-torch" is the engine without its compiled step (TIANKONG_NATIVE=0): what runs where
# no C compiler is found.
WORKERS = {
    "tiankong": worker_tiankong,
    "tiankong-torch": worker_tiankong,
    "transformers": worker_transformers,
    "llama.cpp": worker_llamacpp,
}


def run_worker(name: str, job: dict, timeout: float, on_progress: Callable[[str], None]) -> dict:
    """Run one framework in a fresh interpreter, its progress lines passed to on_progress as they
    come; returns its result or {'error': why}."""
    OUT.mkdir(parents=True, exist_ok=True)
    job_path, result_path = OUT / f"job-{name}.json", OUT / f"result-{name}.json"
    job_path.write_text(json.dumps(job))
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker", name, "--job", str(job_path), "--result", str(result_path)]
    # Pin OpenMP/BLAS pools too: torch.set_num_threads covers torch, not every library it loads.
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(job["threads"]),
        MKL_NUM_THREADS=str(job["threads"]),
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("TIANKONG_NATIVE", None)
    if name == "tiankong-torch":
        env["TIANKONG_NATIVE"] = "0"
    code, output = run_streaming(cmd, env, timeout, on_progress)
    if code is None:
        return {"error": f"timed out after {timeout:.0f} s"}
    if code != 0 or not result_path.is_file():
        tail = output.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {code}: {tail[0]}", "output": output[-4000:]}
    return json.loads(result_path.read_text())


def worker_main(name: str, job_path: str, result_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    Path(result_path).write_text(json.dumps(WORKERS[name](job)))


# --------------------------------------------------------------------------------------------
# 3. Report
# --------------------------------------------------------------------------------------------


def leading_agreement(a: list[int], b: list[int]) -> int:
    """How many tokens two greedy runs share before they first differ."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def report(results: dict, weight_bytes: int, args, console) -> dict:
    from rich.table import Table

    table = Table(
        title=f"decode: batch 1, greedy, {args.prompt_tokens}-token prompt, {args.new_tokens} new "
        f"tokens, float32, {plural(args.threads, 'thread')}, best of {args.rounds} x {args.runs}"
    )
    # "load/weights" leaves out what the interpreter and the framework's import held before the
    # weights were loaded (torch alone is ~220 MB), so it shows the cost of the model itself.
    # "clean runs": runs that other processes did not disturb / runs made (see collect()).
    for col in (
        "framework",
        "decode tok/s",
        "TTFT ms",
        "peak RSS MB",
        "RSS/weights",
        "load/weights",
        "tokens",
        "clean runs",
    ):
        table.add_column(col, justify="left" if col == "framework" else "right")
    rows = [
        ("tiankong", "tiankong", "single"),
        ("tiankong top-20", "tiankong", "top20"),
        ("tiankong 4 presets", "tiankong", "batch4"),
        ("tiankong, torch path", "tiankong-torch", "single"),
        ("transformers", "transformers", "single"),
        ("llama.cpp", "llama.cpp", "single"),
    ]
    for label, fw, mode in rows:
        r = results.get(fw)
        if r is None:
            continue
        if "error" in r:
            table.add_row(label, f"[red]{r['error']}[/]", "", "", "", "", "", "")
            continue
        m = r["modes"][mode]
        rss, grown = r["peak_rss_bytes"], r["peak_rss_bytes"] - r["rss_before_load_bytes"]
        # tokens: per row; a row short of --new-tokens stopped early (EOS) and is flagged red.
        counts = "/".join(str(c) for c in m["counts"])
        counts = counts if m["all_counts_full"] else f"[red]{counts}[/]"
        clean_runs = f"{m['clean_runs']}/{len(m['runs'])}"
        table.add_row(
            label,
            f"{m['decode_tok_s']:.1f}",
            f"{m['ttft_s'] * 1e3:.1f}",
            f"{rss / 2**20:.0f}",
            f"{rss / weight_bytes:.2f}x",
            f"{grown / weight_bytes:.2f}x",
            counts,
            clean_runs if m["clean_runs"] >= args.runs * args.rounds else f"[red]{clean_runs}[/]",
        )
    console.print(table)
    console.print(
        f"weights: {weight_bytes / 2**20:.0f} MB float32 ({weight_bytes // 4 / 1e6:.1f} M parameters, embedding tied)"
    )
    for fw in ("tiankong", "tiankong-torch"):
        if "decode_path" in results.get(fw, {}):
            console.print(f"{fw} decode path: {results[fw]['decode_path']}")

    def ok(good: bool) -> str:
        return "[green]ok[/]" if good else "[red]MISSED[/]"

    ratios: dict = {}
    tk = results.get("tiankong", {})
    single = tk.get("modes", {}).get("single")

    def mode(fw: str) -> dict | None:
        return results.get(fw, {}).get("modes", {}).get("single")

    if single:
        for key, fw, target in (
            ("tiankong_over_transformers_decode", "transformers", TARGETS["vs_transformers"]),
            ("tiankong_over_llamacpp_decode", "llama.cpp", TARGETS["vs_llamacpp"]),
        ):
            if mode(fw):
                ratio = single["decode_tok_s"] / mode(fw)["decode_tok_s"]
                ratios[key] = ratio
                console.print(f"tiankong / {fw} decode: {ratio:.2f}x   (target >= {target:g}x) {ok(ratio >= target)}")
        top20 = tk["modes"]["top20"]
        overhead = (top20["decode_s"] / single["decode_s"] - 1) * 100
        ratios["top20_overhead_pct"] = overhead
        console.print(
            f"top-20 candidates overhead: {overhead:+.1f}% of decode time   "
            f"(target <= {TARGETS['top20_overhead_pct']:g}%) {ok(overhead <= TARGETS['top20_overhead_pct'])}"
        )
        batch = tk["modes"]["batch4"]["wall_s"] / single["wall_s"]
        ratios["batch4_over_single_wall"] = batch
        console.print(
            f"4 presets in one batch / 1 row, wall time: {batch:.2f}x   "
            f"(target <= {TARGETS['batch4_ratio']:g}x) {ok(batch <= TARGETS['batch4_ratio'])}"
        )
        mem = tk["peak_rss_bytes"] / weight_bytes
        grown = (tk["peak_rss_bytes"] - tk["rss_before_load_bytes"]) / weight_bytes
        ratios["tiankong_rss_over_weights"] = mem
        ratios["tiankong_rss_growth_over_weights"] = grown
        console.print(
            f"tiankong peak RSS / weights: {mem:.2f}x   (target <= {TARGETS['rss_over_weights']:g}x) "
            f"{ok(mem <= TARGETS['rss_over_weights'])}   [dim]without the "
            f"{tk['rss_before_load_bytes'] / 2**20:.0f} MB held before loading (interpreter + "
            f"torch): {grown:.2f}x[/]"
        )

    # Same weights, same prompt, greedy: the token streams should match (float32 rounding may
    # flip a near-tie late in the run, so the count of leading equal tokens is what is shown).
    reference = mode("transformers")
    if reference:
        for fw in ("tiankong", "tiankong-torch", "llama.cpp"):
            if mode(fw):
                n = leading_agreement(mode(fw)["tokens"], reference["tokens"])
                ratios[f"{fw}_greedy_agreement_with_transformers"] = n
                console.print(f"greedy agreement {fw} vs transformers: first {n}/{args.new_tokens} tokens equal")
    if "llama.cpp" in results and GGUF_CHECK.is_file():
        check = json.loads(GGUF_CHECK.read_text())
        ratios["gguf_check"] = check
        # float32 kernels sum in different orders: ~1e-3 is rounding, ~0.2 is a layout error.
        good = check["same_argmax"] and check["max_abs_diff"] < 0.01 * check["logit_std"]
        console.print(
            f"GGUF conversion: prefill logits max |llama.cpp - transformers| = {check['max_abs_diff']:.1e} "
            f"(logit std {check['logit_std']:.2f}), same argmax: {check['same_argmax']} {ok(good)}"
        )
    if any(m["clean_runs"] < args.runs * args.rounds for r in results.values() for m in r.get("modes", {}).values()):
        console.print(
            f"[yellow]other processes kept the machine busy: fewer than {args.runs * args.rounds} undisturbed runs "
            "where marked red, so those numbers are not to be trusted; rerun on a quiet machine[/]"
        )
    for fw, r in results.items():
        for name, m in r.get("modes", {}).items():
            if not m["all_counts_full"]:
                console.print(
                    f"[red]{fw} {name}: a row stopped before {args.new_tokens} tokens "
                    f"({m['counts']}, {m['reasons']})[/]"
                )
    return ratios


def tell(console, name: str) -> Callable[[str], None]:
    """Prints a worker's progress lines, dimmed, under its name."""
    from rich.markup import escape

    return lambda message: console.print(f"[dim]  {escape(name)}: {escape(message)}[/]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=Help)
    ap.add_argument("--new-tokens", type=int, default=128, help="tokens generated per run")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="length of the fixed prompt")
    ap.add_argument("--threads", type=int, default=2, help="threads of every framework")
    ap.add_argument("--runs", type=int, default=3, help="measured runs per mode and round (best reported)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds in which the frameworks take turns")
    ap.add_argument("--skip-llamacpp", action="store_true", help="leave llama.cpp out")
    ap.add_argument("--skip-transformers", action="store_true", help="leave transformers out")
    ap.add_argument("--skip-tiankong", action="store_true", help="leave tiankong out (both its paths)")
    ap.add_argument(
        "--skip-torch-path",
        action="store_true",
        help="skip the engine's torch path (TIANKONG_NATIVE=0), measured beside its compiled step",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per framework and round (one worker process)")
    # internal: run one framework in this process
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args.worker, args.job, args.result)

    from rich.console import Console

    end_children_on_sigterm()
    console = Console(width=max(130, Console().width))  # wide enough for the table when piped
    if args.setup:
        return setup(args, console)
    # Setup imports torch and loads models, so it runs in a child too: a child starts with its
    # parent's RSS as its ru_maxrss (Linux keeps the high-water mark across fork and exec), and
    # this process must stay small for the workers' peak RSS to be their own.
    subprocess.run([sys.executable, __file__, "--setup", *sys.argv[1:]], check=True)
    weight_bytes = sum(p.stat().st_size for p in MODEL_DIR.glob("*.safetensors"))
    job = dict(
        model_dir=str(MODEL_DIR),
        gguf=str(GGUF_PATH),
        prompt=prompt_ids(args.prompt_tokens),
        new_tokens=args.new_tokens,
        threads=args.threads,
        runs=args.runs,
    )

    chosen = [
        n
        for n, skip in (
            ("tiankong", args.skip_tiankong),
            ("tiankong-torch", args.skip_tiankong or args.skip_torch_path),
            ("transformers", args.skip_transformers),
            ("llama.cpp", args.skip_llamacpp),
        )
        if not skip
    ]
    note = llamacpp_note("llama.cpp skipped")
    if "llama.cpp" in chosen and (note or not GGUF_PATH.is_file()):
        console.print(note or f"llama.cpp skipped: {GGUF_PATH} was not made", style="yellow", markup=False)
        chosen.remove("llama.cpp")
    rounds: dict[str, list[dict]] = {name: [] for name in chosen}
    for i in range(args.rounds):
        for name in chosen:
            if rounds[name] and "error" in rounds[name][-1]:
                continue  # failed once: it will fail again
            console.print(f"[dim]round {i + 1}/{args.rounds}: running {name}...[/]")
            rounds[name].append(run_worker(name, job, args.timeout, tell(console, name)))
            if "error" in rounds[name][-1]:
                console.print(f"[red]{name} failed: {rounds[name][-1]['error']}[/]")
    results = {name: merge_rounds(r) for name, r in rounds.items()}
    ratios = report(results, weight_bytes, args, console)
    ratios.update(round_ratios(rounds, console))

    RESULT_JSON.write_text(
        json.dumps(
            dict(
                settings=dict(
                    vars(args),
                    prompt=job["prompt"],
                    weight_bytes=weight_bytes,
                    torch_threads=args.threads,
                    presets=PRESETS,
                    targets=TARGETS,
                ),
                results=results,
                rounds=rounds,
                ratios=ratios,
            ),
            indent=1,
        )
    )
    console.print(
        f"[dim]wrote {RESULT_JSON.relative_to(Path.cwd()) if RESULT_JSON.is_relative_to(Path.cwd()) else RESULT_JSON}[/]"
    )


if __name__ == "__main__":
    main()
