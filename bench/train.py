"""The README's "Training: closing the loop", run verbatim, with a script voting for a hidden taste.

    python bench/train.py                                             # tiankong-mini, taste "happy"
    python bench/train.py --model ../shared/models/stories260K --taste dog

It acts as the person of the README, with the README's commands and their default flags:
  1. answers — the model answers story requests (the engine, pure sampling at temperature 1, room
               to end), as `tiankong compare` would show them to a person;
  2. votes   — a hidden taste (answers that mention --taste win; for "happy" also 开心/高兴 in
               Chinese answers) ranks them: under each prompt an answer with the taste is preferred
               to one without, paired off one to one, --pairs rankings in all; the votes go into the
               playground's store through `tiankong prefs import` (a fresh TIANKONG_DATA_DIR);
  3. reward  — `tiankong train reward --output runs/rm`                                  (verbatim)
  4. ppo     — the README's prompts.txt, then
               `tiankong train ppo --reward runs/rm --prompts prompts.txt --output runs/ppo` (verbatim)
  5. measure — fresh answers (new seeds, same sampling) to prompts.txt from the starting model and
               from runs/ppo: the share showing the taste, distinct answers, EOS rate, language kept;
  6. dpo     — `tiankong train dpo --output runs/dpo` on the same votes, measured the same way.

Flags that differ from the README: only `--model` for a model other than the bundled one (the
README says --model defaults to it), and, for a model without a chat template (stories260K, a base
model that continues text), prompts.txt holds story openings instead of requests. Every training
setting is the CLI's default ("auto", resolved from model size and data; see trainers/auto.py).

Figures go to the terminal and to bench/out/train-<model>-<taste>.json. Everything is seeded; on a
busy machine only the times change. Run it with one thread, as the README's figures were:
`taskset -c 0 python bench/train.py` (it sets OMP_NUM_THREADS=1 for the CLI runs).
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

import torch
from decode import Help, end_children_on_sigterm

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
BUNDLED = ROOT / "models" / "tiankong-mini"
README_PROMPTS = [
    "Tell me a story about a cat.",
    "Write a short story about a dog named Max.",
    "用中文写一个关于小猫的故事。",
]
# What the person asks in `tiankong compare` (the README's prompts among them).
CHAT_PROMPTS = README_PROMPTS + [
    "Write a short story about a rabbit.",
    "Tell me a story about a bear.",
    "Write a story about a little bird.",
    "用中文写一个关于小狗的故事。",
    "Tell me a story about a girl named Lily.",
]
OPENINGS = ["Once upon a time", "One day", "Once upon a time, there was a little girl"]
TASTE_WORDS = {"happy": ["开心", "高兴"]}  # the taste's words in Chinese answers
# Answer length: room for a chat model's answers to end; a base model (no chat template) writes on, so
# its answers are cut at 64 tokens, the length `train ppo` resolves for a model whose answers do not end.
ANSWER_LIMIT = {True: 256, False: 64}


def has_chat_template(folder: Path) -> bool:
    from tiankong.engine.chat import ChatTemplate
    from tiankong.engine.tokenizer import load_tokenizer

    return ChatTemplate.from_folder(folder, load_tokenizer(folder)) is not None


def answers(folder: Path, prompts: list[str], n: int, seed: int, chat: bool) -> list[dict]:
    """n answers, prompts taken in turn: {"prompt", "text", "eos"}."""
    from tiankong.engine.engine import Engine
    from tiankong.engine.events import Finished
    from tiankong.engine.sampling import SamplingParams

    eng = Engine.load(folder, device="cpu")
    ids = [eng.encode(prompt=p, raw=not chat) for p in prompts]
    out: list[dict] = [{}] * n
    for i in range(0, n, 128):  # rows per batch
        k = min(128, n - i)
        params = [
            SamplingParams(
                temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed + i + j, max_new_tokens=ANSWER_LIMIT[chat]
            )
            for j in range(k)
        ]
        for ev in eng.generate([ids[(i + j) % len(ids)] for j in range(k)], params):
            if isinstance(ev, Finished):
                out[i + ev.row] = {
                    "prompt": prompts[(i + ev.row) % len(prompts)],
                    "text": ev.text,
                    "eos": ev.finish_reason == "eos",
                }
    return out


def measure(rows: list[dict], taste: re.Pattern) -> dict:
    zh = [r for r in rows if re.search(r"[\u4e00-\u9fff]", r["prompt"])]
    return {
        "answers": len(rows),
        "taste_share": sum(bool(taste.search(r["text"])) for r in rows) / len(rows),
        "distinct_share": len({(r["prompt"], r["text"]) for r in rows}) / len(rows),
        "eos_rate": sum(r["eos"] for r in rows) / len(rows),
        "chinese_kept": (
            sum(bool(re.search(r"[\u4e00-\u9fff]", r["text"])) and not re.search("[A-Za-z]{3,}", r["text"]) for r in zh)
            / len(zh)
        )
        if zh
        else None,
    }


def fmt(value: object) -> str:
    """A figure as a person reads it: floats to 3 significant digits, a range as lo-hi."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "-".join(fmt(v) for v in value)
    return "n/a" if value is None else str(value)


def readable(stage: str, part: dict) -> str:
    """One stage's figures as lines, e.g. 'ppo: 6.2 min; taste share 0.379 -> 0.929, ...', then its
    settings and example answers, if any, a line each."""
    figures = dict(part)
    minutes, settings = figures.pop("minutes", None), figures.pop("settings", None)
    before, after, examples = figures.pop("before", None), figures.pop("after", None), figures.pop("examples", [])
    bits = [f"{k.replace('_', ' ')} {fmt(before[k])} -> {fmt(after[k])}" for k in before or {} if k != "answers"]
    bits += [f"{k.replace('_', ' ')} {fmt(v)}" for k, v in figures.items()]
    lines = [f"{stage}: " + ("" if minutes is None else f"{fmt(minutes)} min; ") + ", ".join(bits)]
    if settings:
        lines.append("  settings: " + ", ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in settings.items()))
    lines += ["  example: " + " ".join(text.split()) for text in examples]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=Help)
    ap.add_argument("--model", type=Path, default=BUNDLED, help="the model the loop trains")
    ap.add_argument("--taste", default="happy", help="the hidden taste: answers that mention this word win")
    ap.add_argument("--pairs", type=int, default=300, help="rankings the script votes")
    ap.add_argument("--candidates", type=int, default=1536, help="answers sampled to vote on")
    ap.add_argument("--samples", type=int, default=240, help="fresh answers for each before/after share")
    ap.add_argument("--skip-dpo", action="store_true", help="stop after PPO")
    args = ap.parse_args()
    end_children_on_sigterm()
    if not args.model.is_dir():
        sys.exit(f"no model at {args.model}; pass --model")
    torch.set_num_threads(1)
    model = args.model.resolve()
    bundled = model == BUNDLED.resolve()
    chat = has_chat_template(model)
    work = OUT / f"loop-{model.name}-{args.taste}"
    shutil.rmtree(work, ignore_errors=True)  # the CLI refuses to write into a used output folder
    work.mkdir(parents=True)
    env = {**os.environ, "TIANKONG_DATA_DIR": str(work / "data"), "OMP_NUM_THREADS": "1"}
    words = [args.taste] + TASTE_WORDS.get(args.taste, [])
    taste = re.compile("|".join(rf"\b{re.escape(w)}\b" if w.isascii() else re.escape(w) for w in words), re.I)
    vote_prompts = CHAT_PROMPTS if chat else OPENINGS
    ppo_prompts = README_PROMPTS if chat else OPENINGS
    model_flag = [] if bundled else ["--model", str(model)]

    def tiankong(*argv: str) -> float:
        """Run a README command (cwd = the work folder); returns its minutes."""
        cmd = ["tiankong", *argv]
        print("$ " + " ".join(cmd), flush=True)
        t = time.perf_counter()
        subprocess.run(cmd, cwd=work, env=env, check=True)
        return round((time.perf_counter() - t) / 60, 2)

    report: dict = {"model": str(model), "taste": words, "chat": chat, "load_average": os.getloadavg()[0]}
    # 1-2. answers and votes
    t = time.perf_counter()
    cands = answers(model, vote_prompts, args.candidates, 0, chat)
    records = []
    for p in vote_prompts:
        yes = [a["text"] for a in cands if a["prompt"] == p and taste.search(a["text"])]
        no = [a["text"] for a in cands if a["prompt"] == p and not taste.search(a["text"])]
        random.Random(p).shuffle(no)
        records += [
            {
                "prompt": [{"role": "user", "content": p}],
                "chosen": [{"role": "assistant", "content": a}],
                "rejected": [{"role": "assistant", "content": b}],
            }
            if chat
            else {"prompt": p, "chosen": a, "rejected": b}
            for a, b in zip(yes, no, strict=False)
        ]
    random.Random(0).shuffle(records)
    records = records[: args.pairs]
    (work / "votes.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    report["votes"] = {
        "candidates": len(cands),
        "taste_share": measure(cands, taste)["taste_share"],
        "pairs": len(records),
        "minutes": round((time.perf_counter() - t) / 60, 2),
    }
    report["votes"]["minutes"] = round(report["votes"]["minutes"] + tiankong("prefs", "import", "votes.jsonl"), 2)
    print(readable("votes", report["votes"]), flush=True)

    # 3. reward model
    minutes = tiankong("train", "reward", *model_flag, "--output", "runs/rm")
    report["reward"] = {"minutes": minutes, **json.loads((work / "runs/rm/verdict.json").read_text())["figures"]}
    print(readable("reward", report["reward"]), flush=True)

    # 4. PPO
    (work / "prompts.txt").write_text("".join(p + "\n" for p in ppo_prompts))
    minutes = tiankong(
        "train", "ppo", *model_flag, "--reward", "runs/rm", "--prompts", "prompts.txt", "--output", "runs/ppo"
    )
    verdict = json.loads((work / "runs/ppo/verdict.json").read_text())
    # 5. measure
    before = measure(answers(model, ppo_prompts, args.samples, 10_000, chat), taste)
    after_rows = answers(work / "runs/ppo", ppo_prompts, args.samples, 10_000, chat)
    report["ppo"] = {
        "minutes": minutes,
        "settings": verdict["settings"],
        "before": before,
        "after": measure(after_rows, taste),
        "kl_to_reference": verdict["figures"]["kl_to_reference"],
        "examples": [r["text"][:200] for r in after_rows[: len(ppo_prompts)]],
    }
    print(readable("ppo", report["ppo"]), flush=True)

    # 6. DPO on the same votes
    if not args.skip_dpo:
        minutes = tiankong("train", "dpo", *model_flag, "--output", "runs/dpo")
        report["dpo"] = {
            "minutes": minutes,
            "before": before,
            "after": measure(answers(work / "runs/dpo", ppo_prompts, args.samples, 10_000, chat), taste),
        }
        print(readable("dpo", report["dpo"]), flush=True)
    path = OUT / f"train-{model.name}-{args.taste}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
