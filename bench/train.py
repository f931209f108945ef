"""RLHF end to end on a real checkpoint: a hidden preference rule, a reward model, PPO and DPO.

    python bench/train.py                       # stories260K, rule "boy"; a few minutes on 2 cores
    python bench/train.py --word dog --ppo-steps 60
    python bench/train.py --model models/tiankong-mini --word friend   # the bundled chat model

What it does, top to bottom (the test suite runs a reduced copy of steps 1-3):
  1. data    — stories sampled by the engine (temperature 1, no filters): from "Once upon a time"
               for a plain model, or, for a model with a chat template, as answers to a few story
               requests (CHAT_PROMPTS) through the template. Under each prompt, those that mention
               --word are preferred to those that do not, paired off one to one (each pair its own
               ranking), written as TRL preference records (conversational for chat models).
  2. reward  — a reward model on the checkpoint, trained on 80% of the pairs; the held-out 20% give
               its accuracy.
  3. ppo     — PPO from the checkpoint against that reward model; the rule's rate in fresh samples
               (same seeds, before and after) and the KL to the starting model.
  4. dpo     — DPO from the checkpoint on the same pairs, with the same before/after rate.

Figures go to the terminal and to bench/out/train.json. Everything is seeded; on a busy machine
only the times change.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
STORIES = ROOT.parent / "shared" / "models" / "stories260K"
PROMPT = "Once upon a time"
CHAT_PROMPTS = ["Write a short story about a cat.", "Tell me a story about a dog.", "Write a story about a bear.",
                "Tell me a short story about a rabbit.", "Write a story about a little bird.",
                "Tell me a story about a fox.", "Write a short story about a duck.", "Tell me a story about a mouse."]


def sample(folder: Path, n: int, seed: int, length: int, prompts: list[str], chat: bool) -> list[tuple[int, str]]:
    """n samples as (prompt index, text), the prompts taken in turn."""
    from tiankong.engine.engine import Engine
    from tiankong.engine.events import Finished
    from tiankong.engine.sampling import SamplingParams

    eng = Engine.load(folder, device="cpu")
    ids = [eng.encode(prompt=p, raw=not chat) for p in prompts]
    texts = [""] * n
    for i in range(0, n, 256):  # rows per batch
        k = min(256, n - i)
        params = [SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=seed + i + j, max_new_tokens=length)
                  for j in range(k)]
        for ev in eng.generate([ids[(i + j) % len(ids)] for j in range(k)], params):
            if isinstance(ev, Finished):
                texts[i + ev.row] = ev.text
    return [(j % len(prompts), t) for j, t in enumerate(texts)]


def has_chat_template(folder: Path) -> bool:
    from tiankong.engine.chat import ChatTemplate
    from tiankong.engine.tokenizer import load_tokenizer

    return ChatTemplate.from_folder(folder, load_tokenizer(folder)) is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=STORIES)
    ap.add_argument("--word", default="boy", help="the hidden rule: stories with this word are preferred")
    ap.add_argument("--candidates", type=int, default=1024)
    ap.add_argument("--length", type=int, default=40, help="story length in tokens (data, rollouts, samples)")
    ap.add_argument("--rm-steps", type=int, default=150)
    ap.add_argument("--ppo-steps", type=int, default=30)
    ap.add_argument("--ppo-batch", type=int, default=32)
    ap.add_argument("--ppo-lr", type=float, default=2e-4)
    ap.add_argument("--kl-coef", type=float, default=0.05)
    ap.add_argument("--dpo-steps", type=int, default=60)
    ap.add_argument("--dpo-lr", type=float, default=3e-4)
    ap.add_argument("--samples", type=int, default=256, help="fresh samples for each before/after rate")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-dpo", action="store_true")
    ap.add_argument("--raw", action="store_true", help="plain-text prompts even if the model has a chat template")
    args = ap.parse_args()
    if not args.model.is_dir():
        sys.exit(f"no model at {args.model}; pass --model")
    torch.set_num_threads(args.threads)
    from tiankong.trainers.dpo import DPOConfig, DPOTrainer
    from tiankong.trainers.ppo import PPOConfig, PPOTrainer
    from tiankong.trainers.reward import RewardConfig, RewardTrainer

    work = OUT / f"train-{args.model.name}-{args.word}"
    work.mkdir(parents=True, exist_ok=True)
    rule = re.compile(rf"\b{re.escape(args.word)}\b", re.I)

    chat = not args.raw and has_chat_template(args.model)
    prompts = CHAT_PROMPTS if chat else [PROMPT]

    def rate(samples: list[tuple[int, str]]) -> float:
        return sum(bool(rule.search(t)) for _, t in samples) / len(samples)

    def rows(folder: Path) -> list[dict]:
        return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]

    def record(prompt: str, chosen: str, rejected: str) -> dict:
        if not chat:
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}

    report: dict = {"model": str(args.model), "word": args.word, "chat": chat,
                    "settings": vars(args) | {"model": str(args.model)}, "load_average": os.getloadavg()[0]}
    t = time.perf_counter()
    stories = sample(args.model, args.candidates, 0, args.length, prompts, chat)
    records = []
    for i, prompt in enumerate(prompts):
        yes = [s for j, s in stories if j == i and rule.search(s)]
        no = [s for j, s in stories if j == i and not rule.search(s)]
        random.Random(i).shuffle(no)
        records += [record(prompt, a, b) for a, b in zip(yes, no)]
    random.Random(0).shuffle(records)  # the reward model's held-out split takes the tail
    prefs = work / "prefs.jsonl"
    prefs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    report["data"] = {"candidates": len(stories), "prompts": len(prompts), "rule_rate": rate(stories),
                      "pairs": len(records), "seconds": round(time.perf_counter() - t, 1)}
    print(f"data: {report['data']}", flush=True)

    t = time.perf_counter()
    rm = RewardTrainer(RewardConfig(model=str(args.model), data=str(prefs), output=str(work / "rm"),
                                    steps=args.rm_steps, batch_size=16, lr=3e-3, warmup_steps=5, eval_fraction=0.2,
                                    eval_every=max(1, args.rm_steps // 5), device="cpu", progress=False, raw=not chat)).train()
    last = rows(rm)[-1]
    report["reward_model"] = {"eval_accuracy": last["eval_accuracy"], "eval_loss": last["eval_loss"],
                              "train_accuracy": last["accuracy"], "seconds": round(time.perf_counter() - t, 1)}
    print(f"reward model: {report['reward_model']}", flush=True)

    before = rate(sample(args.model, args.samples, 10_000, args.length, prompts, chat))
    t = time.perf_counter()
    (work / "prompts.txt").write_text("".join(p + "\n" for p in prompts))
    ppo = PPOTrainer(PPOConfig(model=str(args.model), reward=str(rm), prompts=str(work / "prompts.txt"),
                               output=str(work / "ppo"), steps=args.ppo_steps, batch_size=args.ppo_batch,
                               num_mini_batches=2, response_length=args.length, temperature=1.0, lr=args.ppo_lr,
                               kl_coef=args.kl_coef, device="cpu", progress=False, raw=not chat)).train()
    m = rows(ppo)
    report["ppo"] = {"rule_rate_before": before, "rule_rate_after": rate(sample(ppo, args.samples, 10_000, args.length, prompts, chat)),
                     "kl_last": m[-1]["kl"], "kl_max": max(r["kl"] for r in m),
                     "reward_first": m[0]["reward"], "reward_last": m[-1]["reward"],
                     "entropy_first": m[0]["entropy"], "entropy_last": m[-1]["entropy"],
                     "seconds": round(time.perf_counter() - t, 1)}
    print(f"ppo: {report['ppo']}", flush=True)

    if not args.skip_dpo:
        t = time.perf_counter()
        dpo = DPOTrainer(DPOConfig(model=str(args.model), data=str(prefs), output=str(work / "dpo"),
                                   steps=args.dpo_steps, batch_size=16, lr=args.dpo_lr, beta=0.1, eval_fraction=0.2,
                                   device="cpu", progress=False, raw=not chat)).train()
        m = rows(dpo)
        report["dpo"] = {"rule_rate_before": before,
                         "rule_rate_after": rate(sample(dpo, args.samples, 10_000, args.length, prompts, chat)),
                         "eval_reward_accuracy": m[-1]["eval_reward_accuracy"], "loss_last": m[-1]["loss"],
                         "seconds": round(time.perf_counter() - t, 1)}
        print(f"dpo: {report['dpo']}", flush=True)
    (OUT / "train.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT / 'train.json'}")


if __name__ == "__main__":
    main()
