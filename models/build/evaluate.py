"""Figures for the model card: held-out losses before and after SFT, instruction checks, samples per preset.

    python -m models.build.evaluate models/build/work            # after build.py's sft stage

* held-out text: corpus_eval.txt (another seed than the training corpus), packed exactly as
  `tiankong train pretrain` packs ([BOS] doc [EOS], blocks of 256 + 1 tokens); mean loss per token.
* held-out answers: sft_eval.jsonl (another seed, exact duplicates of training rows removed), the
  loss on answer tokens only, as `tiankong train sft` computes it, under the tuned chat template
  (the base model is scored under the same template it has never seen: that is "before SFT").
* instructions: greedy answers to closed-form questions (sums, animal sounds, opposites, colours,
  word translations, fact questions) drawn with a fresh seed, compared with the generator's answer;
  and story requests with a new (animal, name): does the story use the name and the animal, and stop.
* presets: one sample per bundled preset for a few prompts (seed 0), and per preset over 8 seeds
  the number of distinct answers and the mean size of the sampling distribution (candidates with
  p_sample > 0 among the top 50) - how visibly the presets differ on this model.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from array import array
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
STORY_PROMPTS = ["Write a short story about a cat named Tom.", "用中文写一个关于小狗的故事。"]
SAMPLE_PROMPTS = [
    "Write a short story about a cat named Tom.",
    "用中文写一个关于小狗的故事。",
    "Tell me a fact about the moon.",
    "What is 3 plus 4?",
]
RAW_PROMPTS = ["Once upon a time", "从前"]


def _engine(folder: Path):
    from tiankong.engine.engine import Engine

    return Engine.load(folder, device="cpu", dtype="float32")


def heldout_text_loss(folder: Path, corpus_path: Path, seq_len: int = 256, batch: int = 16) -> dict:
    from tiankong.engine.model import load_model
    from tiankong.engine.tokenizer import load_tokenizer
    from tiankong.trainers.data import load_texts
    from tiankong.trainers.pretrain import token_loss

    model, cfg = load_model(folder, "cpu", "float32")
    model.eval()
    tok = load_tokenizer(folder)
    stream = array("i")
    for doc in load_texts(corpus_path):
        stream.extend(tok.encode(doc, add_special_tokens=True))
        stream.append(int(cfg.eos_token_id))
    tokens = torch.frombuffer(stream, dtype=torch.int32).long()
    n = (len(tokens) - 1) // seq_len
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, batch):
            blocks = torch.stack([tokens[b * seq_len : b * seq_len + seq_len + 1] for b in range(i, min(n, i + batch))])
            w = torch.ones(blocks.shape[0], seq_len)
            loss, _ = token_loss(model, blocks, w)
            total, count = total + float(loss), count + int(w.sum())
    mean = total / count
    return {"loss": round(mean, 4), "ppl": round(math.exp(mean), 3), "tokens": count}


def heldout_answer_loss(folder: Path, rows_path: Path, batch: int = 16) -> dict:
    from tiankong.engine.model import load_model
    from tiankong.engine.tokenizer import load_tokenizer
    from tiankong.trainers.data import load_conversations
    from tiankong.trainers.pretrain import token_loss
    from tiankong.trainers.sft import resolve_template, tokenize_conversation

    model, cfg = load_model(folder, "cpu", "float32")
    model.eval()
    tok = load_tokenizer(folder)
    template, source = resolve_template(folder, tok, "")
    examples = [tokenize_conversation(template, tok, c.messages) for c in load_conversations(rows_path)]
    examples = [(ids[: cfg.max_seq_len], mask[: cfg.max_seq_len]) for ids, mask in examples]
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            rows = examples[i : i + batch]
            L = max(len(ids) for ids, _ in rows)
            tokens = torch.zeros(len(rows), L, dtype=torch.long)
            weights = torch.zeros(len(rows), L - 1)
            for r, (ids, mask) in enumerate(rows):
                tokens[r, : len(ids)] = torch.tensor(ids)
                weights[r, : len(ids) - 1] = torch.tensor(mask[1:], dtype=torch.float32)
            loss, _ = token_loss(model, tokens, weights)
            total, count = total + float(loss), count + int(weights.sum())
    mean = total / count
    return {"loss": round(mean, 4), "ppl": round(math.exp(mean), 3), "answer_tokens": count, "template": source}


def name_copy(folder: Path, n: int = 40, seed: int = 999) -> dict:
    """Mean probability of a hero's name (its first token) at its second and later mentions in fresh
    English stories: chance is ~0.02 (1 of 50 names); a model that copies names from context gets near 1."""
    from tiankong.engine.model import load_model
    from tiankong.engine.tokenizer import load_tokenizer

    from .stories import ANIMALS, Hero, made_up_name, story_en

    model, _ = load_model(folder, "cpu", "float32")
    model.eval()
    tok = load_tokenizer(folder)
    rng = random.Random(seed)
    probs = []
    for i in range(n):
        hero = Hero.animal(rng, rng.choice(ANIMALS).key, name=made_up_name(rng, "en") if i % 2 else None, lang="en")
        ids = tok.encode(story_en(rng, hero=hero))
        name = [t for t in tok.encode(" " + hero.name, add_special_tokens=False) if tok.token_text(t).strip()]
        with torch.no_grad():
            p = model(torch.tensor([ids]), torch.arange(len(ids))[None])[0].softmax(-1)
        starts = [j for j in range(1, len(ids) - len(name) + 1) if ids[j : j + len(name)] == name]
        probs += [float(p[j - 1, ids[j]]) for j in starts[1:]]
    return {"mentions": len(probs), "mean_p": round(sum(probs) / max(1, len(probs)), 3)}


def _generate(eng, prompts: list, params: list, top_logprobs: int = 0, raw: bool = False) -> list[dict]:
    """Run prompts (strings or message lists) and collect text, finish reason and per-token stats."""
    ids = [eng.encode(prompt=p, raw=raw) if isinstance(p, str) else eng.encode(messages=p) for p in prompts]
    out = [{"text": "", "finish": None, "tokens": 0, "kept": [], "entropy": []} for _ in prompts]
    for ev in eng.generate(ids, params, top_logprobs=top_logprobs):
        if hasattr(ev, "finish_reason"):
            out[ev.row].update(text=ev.text, finish=ev.finish_reason, tokens=ev.usage.completion_tokens)
        else:
            out[ev.row]["entropy"].append(ev.entropy)
            if ev.candidates:
                out[ev.row]["kept"].append(sum(c.p_sample > 0 for c in ev.candidates))
    return out


def closed_form_suite(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(kind, prompt, expected answer) from the SFT generators, with a seed training never used."""
    from . import sft_data

    rng = random.Random(seed)
    kinds = [
        ("sum", sft_data.math_task),
        ("sound", sft_data.animal_task),
        ("opposite", sft_data.opposite_task),
        ("colour", sft_data.colour_task),
        ("translate", sft_data.translate_task),
        ("fact", sft_data.fact_task_en),
        ("fact_zh", sft_data.fact_task_zh),
    ]
    suite = []
    while len(suite) < n:
        kind, fn = kinds[len(suite) % len(kinds)]
        msgs = fn(rng)
        if (
            kind == "sound"
            and "叫" not in msgs[1]["content"]
            and "say" not in msgs[1]["content"]
            and "roar" not in msgs[1]["content"]
        ):
            continue  # animal_task also describes animals; keep the sound questions
        if kind.startswith("fact") and "\n" in msgs[1]["content"]:
            continue  # lists of facts: no single right answer
        if kind.startswith("fact") and msgs[0]["content"].startswith(
            ("Tell", "Give", "What is an", "告诉", "说", "讲")
        ):
            continue  # "tell me a fact": any fact is right; keep the questions
        suite.append((kind, msgs[0]["content"], msgs[1]["content"]))
    return suite


def story_suite(n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(lang, prompt, name, animal word) with names and animals drawn afresh."""
    from . import sft_data
    from .lexicon import ANIMALS

    rng = random.Random(seed)
    out = []
    for i in range(n):
        an = rng.choice(ANIMALS)
        if i % 2 == 0:
            name = rng.choice(sft_data.EXTRA_NAMES_EN + [x for x, _ in sft_data.NAMES_EN])
            out.append(
                (
                    "en",
                    f"Write a short story about {'an' if an.en[0] in 'aeiou' else 'a'} {an.en} named {name}.",
                    name,
                    an.en,
                )
            )
        else:
            name = sft_data._name_zh(rng)
            out.append(("zh", f"写一个关于名叫{name}的{an.zh}的故事。", name, an.zh))
    return out


def instruction_checks(eng, n_closed: int, n_story: int, seed: int = 12345) -> dict:
    from tiankong.engine.sampling import SamplingParams

    greedy = SamplingParams(temperature=0.0, seed=0, max_new_tokens=64)
    suite = closed_form_suite(n_closed, seed)
    res = _generate(eng, [p for _, p, _ in suite], [greedy] * len(suite))
    by_kind: dict[str, list[int]] = {}
    examples = []
    for (kind, prompt, expect), r in zip(suite, res, strict=True):
        ok = r["text"].strip() == expect.strip() and r["finish"] == "eos"
        by_kind.setdefault(kind, []).append(int(ok))
        if len(examples) < 14 and len([e for e in examples if e["kind"] == kind]) < 2:
            examples.append({"kind": kind, "prompt": prompt, "expected": expect, "answer": r["text"], "ok": ok})
    stories = story_suite(n_story, seed + 1)
    sparams = SamplingParams(temperature=0.0, seed=0, max_new_tokens=400)
    sres = _generate(eng, [p for _, p, _, _ in stories], [sparams] * len(stories))
    s_ok = {"name": 0, "animal": 0, "eos": 0}
    for (_lang, _prompt, name, animal), r in zip(stories, sres, strict=True):
        s_ok["name"] += name in r["text"]
        s_ok["animal"] += animal in r["text"]
        s_ok["eos"] += r["finish"] == "eos"
    return {
        "closed_form": {k: {"n": len(v), "exact": sum(v)} for k, v in by_kind.items()},
        "closed_form_total": {"n": len(suite), "exact": sum(sum(v) for v in by_kind.values())},
        "closed_form_examples": examples,
        "stories": {"n": len(stories), **s_ok, "mean_tokens": round(sum(r["tokens"] for r in sres) / len(sres), 1)},
    }


def preset_samples(eng, presets: dict) -> dict:
    out: dict = {}
    for prompt in SAMPLE_PROMPTS:
        params = [
            pr.params.replace(seed=0, max_new_tokens=min(pr.params.max_new_tokens, 300)) for pr in presets.values()
        ]
        res = _generate(eng, [prompt] * len(params), params)
        out[prompt] = {name: {"text": r["text"], "finish": r["finish"]} for name, r in zip(presets, res, strict=True)}
    for prompt in RAW_PROMPTS:
        params = [pr.params.replace(seed=0, max_new_tokens=120) for pr in presets.values()]
        res = _generate(eng, [prompt] * len(params), params, raw=True)
        out["raw: " + prompt] = {
            name: {"text": r["text"], "finish": r["finish"]} for name, r in zip(presets, res, strict=True)
        }
    return out


def preset_spread(eng, presets: dict, seeds: int = 8) -> dict:
    out = {}
    for prompt in STORY_PROMPTS:
        row = {}
        for name, pr in presets.items():
            params = [pr.params.replace(seed=s, max_new_tokens=200) for s in range(seeds)]
            res = _generate(eng, [prompt] * seeds, params, top_logprobs=50)
            kept = [k for r in res for k in r["kept"]]
            ent = [e for r in res for e in r["entropy"]]
            row[name] = {
                "distinct": len({r["text"] for r in res}),
                "of": seeds,
                "mean_candidates_kept": round(sum(kept) / max(1, len(kept)), 2),
                "mean_entropy_nats": round(sum(ent) / max(1, len(ent)), 3),
                "mean_tokens": round(sum(r["tokens"] for r in res) / seeds, 1),
            }
        out[prompt] = row
    return out


def bundled_presets() -> dict:
    """The presets shipped with tiankong, without a user's overrides."""
    import tempfile

    from tiankong.presets import load_presets

    with tempfile.TemporaryDirectory() as empty:
        return load_presets(Path(empty))


def evaluate(work: Path, smoke: bool = False) -> dict:
    t0 = time.time()
    report: dict = {"heldout": {}}
    for stage in ("base", "sft"):
        folder = work / stage
        report["heldout"][stage] = {
            "text": heldout_text_loss(folder, work / "corpus_eval.txt"),
            "answers": heldout_answer_loss(folder, work / "sft_eval.jsonl"),
            "name_copy": name_copy(folder, 6 if smoke else 40),
        }
    eng = _engine(work / "sft")
    presets = bundled_presets()
    report["instructions"] = instruction_checks(eng, 14 if smoke else 140, 4 if smoke else 40)
    report["samples"] = preset_samples(eng, presets)
    report["spread"] = preset_spread(eng, presets, 2 if smoke else 8)
    report["eval_s"] = round(time.time() - t0, 1)
    return report


if __name__ == "__main__":
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "work"
    torch.set_num_threads(1)
    print(json.dumps(evaluate(work), indent=2, ensure_ascii=False))
