"""Rebuild the bundled model models/tiankong-mini from nothing, offline.

    python -m models.build.build                 # the real thing: ~40 minutes on 2 busy CPU cores
    python -m models.build.build --smoke --work /tmp/tk --out /tmp/tk/model   # tiny sizes: checks the pipeline

Run from the repository root (the build scripts are the package models.build and import each other).

Stages (each prints its wall time; all times go into the model card):

1. data      corpus.txt and corpus_eval.txt (corpus.py), sft.jsonl and sft_eval.jsonl (sft_data.py), all
             generated from fixed seeds; the held-out files use other seeds, and sft_eval drops exact
             duplicates of training rows.
2. init      a SentencePiece BPE tokenizer (tiankong's own trainer function, byte fallback) trained on the
             corpus plus the SFT conversations as the chat template writes them (Chinese pieces capped at 4
             characters, see cap_han_runs), and a randomly initialised Llama model of the "mini" shape
             below, saved as an ordinary HF folder.
3. pretrain  `tiankong train pretrain --config pretrain.toml --model work/init --data work/corpus.txt`
4. sft       `tiankong train sft --config sft.toml --model work/base --data work/sft.jsonl`
             (tiankong's default chat template, saved into tokenizer_config.json)
5. eval      evaluate.py: held-out loss/perplexity before and after SFT, greedy accuracy on closed-form
             instructions, sample outputs per preset -> work/report.json
6. package   copies the SFT model's HF files into --out and writes the model card from card.md

Only the standard library, torch, sentencepiece and tiankong are used; nothing is downloaded.
Training uses --threads intra-op threads (default 1: on a shared 2-core machine two busy threads were
measured ~3x slower than one for matrices this small).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import corpus, sft_data

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_WORK = HERE / "work"
DEFAULT_OUT = HERE.parent / "tiankong-mini"

# The model: a Llama ("mini") between the trainer's micro (128x5) and tiny (256x6) sizes; see the card.
MINI = {"dim": 192, "n_layers": 6, "n_heads": 6, "n_kv_heads": 2, "ffn_dim": 512, "max_seq_len": 512}
FULL = {
    "corpus_docs": 85000,
    "corpus_eval_docs": 1000,
    "corpus_seed": 1,
    "corpus_eval_seed": 101,
    "sft_rows": 12000,
    "sft_eval_rows": 600,
    "sft_seed": 2,
    "sft_eval_seed": 3,
    "vocab_size": 4096,
    "tokenizer_seed": 0,
    "shape": MINI,
    "pretrain_config": HERE / "pretrain.toml",
    "sft_config": HERE / "sft.toml",
}
SMOKE = {
    "corpus_docs": 300,
    "corpus_eval_docs": 20,
    "corpus_seed": 1,
    "corpus_eval_seed": 101,
    "sft_rows": 60,
    "sft_eval_rows": 20,
    "sft_seed": 2,
    "sft_eval_seed": 3,
    "vocab_size": 1500,
    "tokenizer_seed": 0,
    "shape": {"dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 64, "max_seq_len": 128},
    "pretrain_flags": [
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--seq-len",
        "64",
        "--warmup-steps",
        "1",
        "--eval-fraction",
        "0.1",
    ],
    "sft_flags": ["--steps", "3", "--batch-size", "2", "--max-len", "128"],
}
# what the package stage copies from the SFT output
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
STAGES = ("data", "init", "pretrain", "sft", "eval", "package")


def log(msg: str) -> None:
    print(f"[build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ stages


def stage_data(work: Path, p: dict) -> dict:
    stats = {
        "corpus": corpus.write_corpus(work / "corpus.txt", p["corpus_docs"], p["corpus_seed"]),
        "corpus_eval": corpus.write_corpus(work / "corpus_eval.txt", p["corpus_eval_docs"], p["corpus_eval_seed"]),
        "sft": sft_data.write_rows(work / "sft.jsonl", p["sft_rows"], p["sft_seed"]),
    }
    stats["sft_eval"] = sft_data.write_rows(
        work / "sft_eval.jsonl", p["sft_eval_rows"], p["sft_eval_seed"], exclude=work / "sft.jsonl"
    )
    return stats


HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
CJK_PIECE_CAP = 4  # longest Chinese piece the tokenizer may learn, in characters


def cap_han_runs(text: str, rng: random.Random, cap: int = CJK_PIECE_CAP) -> str:
    """Cut runs of Chinese characters into chunks of 1..cap with U+00B7 (another Unicode script).

    Chinese has no spaces, so on generated text BPE would otherwise merge whole template clauses into one
    piece ("它听到一个小小的声音"); SentencePiece never merges across scripts, so in the tokenizer's training
    text these cuts cap Chinese pieces at `cap` characters: word-sized tokens the playground can show
    one by one. Only the tokenizer sees the cuts; the model trains on the text as it is.
    """

    def cut(m: re.Match) -> str:
        run, parts, i = m.group(0), [], 0
        while i < len(run):
            n = rng.randint(1, cap)
            parts.append(run[i : i + n])
            i += n
        return "\u00b7".join(parts)

    return HAN_RUN.sub(cut, text)


def tokenizer_texts(work: Path, seed: int = 0) -> list[str]:
    """What the tokenizer learns from: the corpus, and the SFT conversations rendered by the chat template
    (so instruction words and the <|user|>/<|assistant|> markers get pieces of their own), with Chinese
    runs capped (see cap_han_runs)."""
    from tiankong.engine.chat import ChatTemplate
    from tiankong.trainers.data import load_conversations, load_texts
    from tiankong.trainers.sft import DEFAULT_CHAT_TEMPLATE

    template = ChatTemplate(DEFAULT_CHAT_TEMPLATE, "", "")
    chats = [template.render(c.messages, add_generation_prompt=False) for c in load_conversations(work / "sft.jsonl")]
    rng = random.Random(seed)
    return [cap_han_runs(t, rng) for t in load_texts(work / "corpus.txt") + chats]


def stage_init(work: Path, p: dict) -> dict:
    import torch

    from tiankong.engine.config import ModelConfig
    from tiankong.engine.model import build_model, save_pretrained
    from tiankong.engine.tokenizer import load_tokenizer
    from tiankong.trainers.corpus import train_tokenizer
    from tiankong.trainers.pretrain import init_weights

    out = work / "init"
    if out.exists():
        shutil.rmtree(out)
    shape = p["shape"]
    train_tokenizer(
        tokenizer_texts(work, p["tokenizer_seed"]), out, p["vocab_size"], shape["max_seq_len"], p["tokenizer_seed"]
    )
    tok = load_tokenizer(out)
    cfg = ModelConfig(
        architecture="LlamaForCausalLM",
        family="llama",
        vocab_size=tok.vocab_size,
        norm_eps=1e-5,
        rope_theta=10000.0,
        tie_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="float32",
        **shape,
    )
    torch.manual_seed(p["tokenizer_seed"])
    model = build_model(cfg)
    init_weights(model, cfg.n_layers)
    save_pretrained(model, cfg, out, tokenizer_from=out, metadata={"trainer": "init", "step": "0"})
    n = sum(t.numel() for t in model.parameters())
    return {"vocab_size": tok.vocab_size, "parameters": n, "shape": shape}


def count_tokens(folder: Path, corpus_path: Path) -> int:
    """Tokens of the corpus as pretraining packs it (BOS + document + EOS)."""
    from tiankong.engine.tokenizer import load_tokenizer
    from tiankong.trainers.data import load_texts

    tok = load_tokenizer(folder)
    return sum(len(tok.encode(d, add_special_tokens=True)) + 1 for d in load_texts(corpus_path))


def bf16_fast() -> bool:
    """Whether bfloat16 autocast pays off here: a CUDA GPU, or a CPU with native bf16 (AVX512-BF16 / AMX)."""
    import torch

    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def tiankong(*args: str, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, "-m", "tiankong.tui.cli", *args]
    log("$ tiankong " + " ".join(args))
    subprocess.run(cmd, check=True, env=env, cwd=REPO)


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)


def stage_pretrain(work: Path, p: dict, threads: int, progress: bool, autocast: bool) -> dict:
    _fresh(work / "base")
    tiankong(
        "train",
        "pretrain",
        "--config",
        str(p["pretrain_config"]),
        "--model",
        str(work / "init"),
        "--data",
        str(work / "corpus.txt"),
        "--output",
        str(work / "base"),
        "--device",
        "cpu",
        "--autocast" if autocast else "--no-autocast",
        *p.get("pretrain_flags", []),
        *([] if progress else ["--no-progress"]),
        threads=threads,
    )
    return _last_metrics(work / "base")


def stage_sft(work: Path, p: dict, threads: int, progress: bool, autocast: bool) -> dict:
    _fresh(work / "sft")
    tiankong(
        "train",
        "sft",
        "--config",
        str(p["sft_config"]),
        "--model",
        str(work / "base"),
        "--data",
        str(work / "sft.jsonl"),
        "--output",
        str(work / "sft"),
        "--device",
        "cpu",
        "--autocast" if autocast else "--no-autocast",
        *p.get("sft_flags", []),
        *([] if progress else ["--no-progress"]),
        threads=threads,
    )
    return _last_metrics(work / "sft")


def _last_metrics(folder: Path) -> dict:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows[-1] if rows else {}


def stage_eval(work: Path, p: dict, threads: int, smoke: bool) -> dict:
    import torch

    from . import evaluate

    torch.set_num_threads(threads)
    return evaluate.evaluate(work, smoke=smoke)


def stage_package(work: Path, out: Path, report: dict) -> None:
    from . import card

    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copyfile(work / "sft" / name, out / name)
        (out / name).chmod(0o644)
    report["safetensors_bytes"] = (out / "model.safetensors").stat().st_size
    (out / "README.md").write_text(card.render(report), encoding="utf-8")
    (out / "build_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ driver


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch folder (generated data, runs)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the finished model folder goes")
    ap.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("TIANKONG_BUILD_THREADS", "1")),
        help="torch threads for training and evaluation (default 1)",
    )
    ap.add_argument(
        "--autocast",
        choices=("auto", "on", "off"),
        default="auto",
        help="bfloat16 autocast for training (auto: on where the CPU has native bf16, ~2x faster)",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny data and model, a few steps: checks the pipeline only")
    ap.add_argument("--from-stage", choices=STAGES, default="data", help="skip the stages before this one")
    ap.add_argument("--to-stage", choices=STAGES, default="package", help="stop after this stage")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (logs)")
    args = ap.parse_args(argv)
    if args.smoke and args.out == DEFAULT_OUT:
        ap.error("--smoke needs --out (it must not overwrite the bundled model)")
    p = SMOKE if args.smoke else FULL
    p = {**FULL, **p}
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    report_path = work / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() and args.from_stage != "data" else {}
    report.setdefault("timings_s", {})
    report["threads"] = args.threads
    report["smoke"] = args.smoke
    autocast = {"on": True, "off": False}.get(args.autocast, None)
    report["autocast"] = autocast = bf16_fast() if autocast is None else autocast
    first, last = STAGES.index(args.from_stage), STAGES.index(args.to_stage)
    t_all = time.time()
    for stage in STAGES[first : last + 1]:
        t0 = time.time()
        log(f"stage {stage}")
        if stage == "data":
            report["data"] = stage_data(work, p)
        elif stage == "init":
            report["init"] = stage_init(work, p)
            report["corpus_tokens"] = count_tokens(work / "init", work / "corpus.txt")
        elif stage == "pretrain":
            report["pretrain"] = stage_pretrain(work, p, args.threads, not args.no_progress, autocast)
            tc = json.loads((work / "base" / "train_config.json").read_text())
            report["pretrain_tokens_seen"] = tc["steps"] * tc["batch_size"] * tc["seq_len"]
        elif stage == "sft":
            report["sft"] = stage_sft(work, p, args.threads, not args.no_progress, autocast)
        elif stage == "eval":
            report["eval"] = stage_eval(work, p, args.threads, args.smoke)
        elif stage == "package":
            report["timings_s"]["total"] = round(
                sum(v for k, v in report["timings_s"].items() if k not in ("total", "package")), 1
            )
            report["configs"] = {
                "pretrain": Path(p["pretrain_config"]).read_text(),
                "sft": Path(p["sft_config"]).read_text(),
                "pretrain_flags": p.get("pretrain_flags", []),
                "sft_flags": p.get("sft_flags", []),
                "shape": p["shape"],
            }
            report["params"] = {k: v for k, v in p.items() if isinstance(v, (int, str))}
            stage_package(work, args.out, report)
        report["timings_s"][stage] = round(time.time() - t0, 1)
        report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        log(f"stage {stage} done in {time.time() - t0:.0f} s")
    log(f"all done in {time.time() - t_all:.0f} s; model in {args.out}")


if __name__ == "__main__":
    main()
