"""Training speed: tiankong's reward-model and PPO trainers against TRL 1.12, same model and data.

    pip install trl==1.12.0                      # brings datasets and accelerate; keeps torch/transformers
    python bench/train_vs_trl.py                 # stories260K, 3 rounds, about 5 minutes on 2 cores
    python bench/train_vs_trl.py --steps 40 --ppo-iterations 3 --rounds 2
    python bench/train_vs_trl.py --skip-trl      # tiankong only (also what happens without TRL)

What it does, top to bottom:
  1. data    — stories from "Once upon a time" sampled by the engine (temperature 1, no filter),
               those that mention --word preferred to those that do not, --pairs pairs, written as
               TRL preference records; the same pairs tokenized by tiankong's own Encoder are what
               TRL gets (pre-tokenized `chosen_ids`/`rejected_ids`), so both sides train on the same
               token ids. Also a tiankong reward-model folder (stories260K + a seeded head) for PPO;
               TRL's reward and value models get the same head weights. Cached in
               bench/out/train_vs_trl/.
  2. workers — each measurement is a fresh subprocess with --threads torch threads (OMP/MKL pinned
               too): tiankong RM, TRL RM, tiankong PPO, TRL PPO. --rounds rounds, the order of
               tiankong and TRL swapped every round, so a busy spell of the machine hits both alike.
               Model loading and trainer setup are never timed: each worker records the wall clock
               at the end of every optimisation step (RM) / PPO iteration, and the first one is a
               warm-up that is dropped.
  3. report  — a table, the tiankong/TRL ratios against the target (>= 1.0x), and
               bench/out/train_vs_trl.json (every round, every step time, versions, settings).

TRL's PPO lives in trl.experimental.ppo up to 1.12 and is gone from 1.14 on: compare with 1.12.0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from decode import Help, end_children_on_sigterm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
WORK = OUT / "train_vs_trl"
RESULT_JSON = OUT / "train_vs_trl.json"
STORIES = ROOT.parent / "shared" / "models" / "stories260K"
TRL_VERSION = "1.12.0"  # the last release with trl.experimental.ppo
TARGET = 1.0  # tiankong throughput / TRL throughput, both measurements


# --------------------------------------------------------------------------------------------
# machine load: how much of the CPUs other processes took during a measured window
# --------------------------------------------------------------------------------------------


def cpu_snapshot() -> tuple[float, int, int] | None:
    """(monotonic seconds, machine busy ticks, this process's ticks), or None without /proc."""
    try:
        with open("/proc/stat") as f:
            t = [int(x) for x in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = t
    return time.monotonic(), user + nice + system + irq + softirq + steal, int(own[11]) + int(own[12])


def foreign_share(a, b) -> float | None:
    """Share of all CPUs used by other processes between two snapshots (0 = we were alone)."""
    if a is None or b is None or b[0] <= a[0]:
        return None
    ticks = (b[1] - a[1]) - (b[2] - a[2])
    return max(0.0, ticks / os.sysconf("SC_CLK_TCK") / (b[0] - a[0]) / (os.cpu_count() or 1))


class Marks:
    """Wall-clock marks at the end of each step; the first is the end of the warm-up step."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.own: list[float] = []
        self.cpu: list = []

    def mark(self) -> None:
        self.t.append(time.perf_counter())
        self.own.append(time.process_time())  # this process's CPU time, all its threads
        self.cpu.append(cpu_snapshot())

    def summary(self) -> dict:
        steps = [b - a for a, b in zip(self.t, self.t[1:], strict=False)]
        if not steps:
            raise RuntimeError("fewer than 2 steps were marked; raise --steps / --ppo-iterations")
        return {
            "measured": len(steps),
            "seconds": self.t[-1] - self.t[0],
            "step_s": steps,
            "cpu_seconds": self.own[-1] - self.own[0],
            "foreign_cpu": foreign_share(self.cpu[0], self.cpu[-1]),
        }


# --------------------------------------------------------------------------------------------
# 1. data
# --------------------------------------------------------------------------------------------


PROMPT = "Once upon a time"  # every story's opening, and PPO's one prompt


def sample_stories(folder: Path, n: int, seed: int, length: int) -> list[str]:
    """n stories continuing PROMPT, sampled by the engine (temperature 1, no filter, up to `length`
    tokens, seeds seed .. seed + n - 1)."""
    from tiankong.engine.engine import Engine
    from tiankong.engine.events import Finished
    from tiankong.engine.sampling import SamplingParams

    eng = Engine.load(folder, device="cpu")
    ids = eng.encode(prompt=PROMPT, raw=True)
    texts = [""] * n
    for i in range(0, n, 256):  # rows per batch
        k = min(256, n - i)
        params = [
            SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=seed + i + j, max_new_tokens=length)
            for j in range(k)
        ]
        for ev in eng.generate([ids] * k, params):
            if isinstance(ev, Finished):
                texts[i + ev.row] = ev.text
    return texts


def build_data(args, console) -> dict:
    """Preference pairs (text and ids), PPO prompt ids, and the reward-model folder; cached."""
    import torch

    key = {
        "model": str(args.model.resolve()),
        "word": args.word,
        "pairs": args.pairs,
        "length": args.length,
        "max_length": args.max_length,
        "seed": args.seed,
        "version": 2,
    }
    meta_path = WORK / "data.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and (WORK / "rm" / "reward_config.json").is_file():
            return meta
    WORK.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    from tiankong.engine.model import load_model
    from tiankong.trainers.preferences import Encoder
    from tiankong.trainers.reward import RewardModel

    console.print(f"[dim]data: sampling stories from {args.model.name} until {args.pairs} pairs...[/]")
    rule = re.compile(rf"\b{re.escape(args.word)}\b", re.I)
    yes: list[str] = []
    no: list[str] = []
    seed = args.seed
    t = time.perf_counter()
    while len(yes) < args.pairs or len(no) < args.pairs:
        for s in sample_stories(args.model, 1024, seed, args.length):
            (yes if rule.search(s) else no).append(s)
        seed += 1024
        if seed - args.seed > 64 * 1024:
            sys.exit(f"fewer than {args.pairs} stories mention {args.word!r} in 64k samples; lower --pairs")
        # distinct stories only: a story in two pairs would join them into one ranking (one batch item)
        yes, no = list(dict.fromkeys(yes)), list(dict.fromkeys(no))
    random.Random(args.seed).shuffle(no)
    pairs = list(zip(yes[: args.pairs], no[: args.pairs], strict=True))
    prompt = PROMPT
    (WORK / "prefs.jsonl").write_text(
        "".join(json.dumps({"prompt": prompt, "chosen": a, "rejected": b}) + "\n" for a, b in pairs)
    )
    (WORK / "prompts.txt").write_text(prompt + "\n")

    # What TRL trains on: the ids tiankong's loader makes from the same records (prompt rendered
    # as the engine does, response ending in one EOS, truncated to max_length).
    enc = Encoder.from_folder(args.model, raw=True, max_length=args.max_length)
    chosen = [enc.pair(prompt, a)[0] for a, _ in pairs]
    rejected = [enc.pair(prompt, b)[0] for _, b in pairs]
    lengths = [len(x) for x in chosen + rejected]

    # Cross-check: transformers' tokenizer (TRL's processing_class) gives the same ids.
    agree = None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(args.model))
        probe = [prompt + a for a, _ in pairs[:20]]
        agree = all(tok(p).input_ids == enc.tokenizer.encode(p, add_special_tokens=True) for p in probe)
    except Exception as e:  # noqa: BLE001 - a check, not a requirement
        agree = f"not checked: {e}"

    # PPO's reward model on our side: stories260K + a seeded head, saved as a tiankong reward-model
    # folder. TRL's reward and value models get the same head weights (see worker_trl_ppo).
    torch.manual_seed(args.seed)
    base, mcfg = load_model(args.model, "cpu", "float32")
    full = Encoder.from_folder(args.model, raw=True)  # no max_length
    rm = RewardModel(base, mcfg, encoder=full)
    rm.save(WORK / "rm", tokenizer_from=args.model)

    meta = {
        "key": key,
        "pairs": len(pairs),
        "rule_rate": len(yes) / (len(yes) + len(no)),
        "prompt": prompt,
        "prompt_ids": enc.prompt(prompt),
        "chosen_ids": chosen,
        "rejected_ids": rejected,
        "seq_len_mean": statistics.mean(lengths),
        "seq_len_max": max(lengths),
        "truncated": sum(len(full.pair(prompt, s)[0]) > args.max_length for p in pairs for s in p),
        "hf_tokenizer_agrees": agree,
        "seconds": round(time.perf_counter() - t, 1),
    }
    meta_path.write_text(json.dumps(meta))
    return meta


# --------------------------------------------------------------------------------------------
# 2. workers (each in its own process)
# --------------------------------------------------------------------------------------------


def _threads(job: dict) -> None:
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])


def worker_tiankong_rm(job: dict) -> dict:
    _threads(job)
    from tiankong.trainers.reward import RewardConfig, RewardTrainer

    marks = Marks()

    class Timed(RewardTrainer):
        def train_step(self, batch):
            row = super().train_step(batch)
            marks.mark()
            return row

    cfg = RewardConfig(
        model=job["model"],
        data=str(WORK / "prefs.jsonl"),
        output=job["output"],
        steps=job["steps"] + 1,
        batch_size=job["batch_size"],
        lr=job["lr"],
        warmup_steps=0,
        eval_fraction=0.0,
        max_length=job["max_length"],
        max_grad_norm=1.0,
        weight_decay=0.0,
        device="cpu",
        dtype="float32",
        progress=False,
        raw=True,
        seed=job["seed"],
    )
    trainer = Timed(cfg)
    trainer.train()
    return marks.summary() | {"pairs": trainer.data.n_pairs, "groups": len(trainer.train_groups)}


def worker_trl_rm(job: dict) -> dict:
    _threads(job)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    data = json.loads((WORK / "data.json").read_text())
    marks = Marks()

    class Mark(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.mark()

    tok = AutoTokenizer.from_pretrained(job["model"])
    tok.pad_token = tok.unk_token  # not EOS: the classifier reads the last non-pad token
    model = AutoModelForSequenceClassification.from_pretrained(job["model"], num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    ds = Dataset.from_dict({"chosen_ids": data["chosen_ids"], "rejected_ids": data["rejected_ids"]})
    args = RewardConfig(
        output_dir=job["output"],
        max_steps=job["steps"] + 1,
        per_device_train_batch_size=job["batch_size"],
        learning_rate=job["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        max_length=job["max_length"],
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        dataloader_drop_last=True,  # full batches only, as tiankong's loop
        dataloader_num_workers=0,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        seed=job["seed"],
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Mark()])
    if len(trainer.train_dataset) != len(data["chosen_ids"]):
        raise RuntimeError(f"TRL dropped pairs: {len(trainer.train_dataset)} of {len(data['chosen_ids'])} kept")
    trainer.train()
    return marks.summary() | {"pairs": len(trainer.train_dataset), "optim": str(args.optim)}


class GenTimer:
    """Wraps a generation function to time it and record what it produced."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.extra: list[dict] = []


def worker_tiankong_ppo(job: dict) -> dict:
    _threads(job)
    import tiankong.trainers.ppo_rollout as ppo_mod
    from tiankong.trainers.ppo import PPOConfig, PPOTrainer

    marks, gen = Marks(), GenTimer()
    rows: list[dict] = []
    inner = ppo_mod.generate

    def timed_generate(*a, **kw):  # a generator: time the whole consumption
        t = time.perf_counter()
        yield from inner(*a, **kw)
        gen.seconds.append(time.perf_counter() - t)

    ppo_mod.generate = timed_generate

    rollout_s: list[float] = []

    class Timed(PPOTrainer):
        def train_step(self, batch):
            row = super().train_step(batch)
            marks.mark()
            rows.append(row)
            return row

        def rollout(self, *a, **kw):  # generation + scoring forwards + advantages
            t = time.perf_counter()
            out = super().rollout(*a, **kw)
            rollout_s.append(time.perf_counter() - t)
            return out

    cfg = PPOConfig(
        model=job["model"],
        reward=str(WORK / "rm"),
        prompts=str(WORK / "prompts.txt"),
        output=job["output"],
        steps=job["iterations"] + 1,
        batch_size=job["batch"],
        num_mini_batches=job["mini_batches"],
        ppo_epochs=job["ppo_epochs"],
        response_length=job["response_length"],
        temperature=job["temperature"],
        lr=job["lr"],
        kl_coef=job["kl_coef"],
        device="cpu",
        dtype="float32",
        progress=False,
        raw=True,
        seed=job["seed"],
    )
    Timed(cfg).train()
    out = marks.summary()
    out["generate_s"] = gen.seconds[1:]
    out["rollout_s"] = rollout_s[1:]
    out["response_length"] = [r["response_length"] for r in rows[1:]]  # mean tokens per answer, EOS included
    return out


def worker_trl_ppo(job: dict) -> dict:
    _threads(job)
    import torch
    import trl.experimental.ppo.ppo_trainer as ppo_mod
    from datasets import Dataset
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    data = json.loads((WORK / "data.json").read_text())
    marks, gen = Marks(), GenTimer()
    inner = ppo_mod.batch_generation

    def timed_batch_generation(model, queries, *a, **kw):
        t = time.perf_counter()
        qr, logits = inner(model, queries, *a, **kw)
        gen.seconds.append(time.perf_counter() - t)
        resp = qr[:, queries.shape[1] :]
        is_eos = resp == eos_id
        first = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, torch.full_like(resp[:, 0], resp.shape[1]))
        gen.extra.append({"width": resp.shape[1], "mean_length": float(first.float().mean())})
        return qr, logits

    ppo_mod.batch_generation = timed_batch_generation

    # TRL's loop calls gc.collect() twice per iteration; time those calls (behaviour unchanged).
    import gc

    gc_calls: list[tuple[float, float]] = []  # (end time, seconds)

    class TimedGC:
        def __getattr__(self, name):
            return getattr(gc, name)

        @staticmethod
        def collect(*a, **kw):
            t = time.perf_counter()
            n = gc.collect(*a, **kw)
            gc_calls.append((time.perf_counter(), time.perf_counter() - t))
            return n

    ppo_mod.gc = TimedGC()

    class Mark(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.mark()

    tok = AutoTokenizer.from_pretrained(job["model"])
    tok.pad_token = tok.unk_token  # not EOS: TRL masks pad ids out of attention and scoring
    eos_id = tok.eos_token_id
    policy = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
    head = load_file(str(WORK / "rm" / "reward_head.safetensors"))["weight"]  # (1, hidden), as tiankong's
    scorers = []
    for _ in range(2):  # reward model, value model
        m = AutoModelForSequenceClassification.from_pretrained(job["model"], num_labels=1, dtype=torch.float32)
        m.config.pad_token_id = tok.pad_token_id
        with torch.no_grad():
            m.score.weight.copy_(head)
        scorers.append(m)
    reward_model, value_model = scorers
    ds = Dataset.from_dict({"input_ids": [data["prompt_ids"]] * job["batch"]})
    args = PPOConfig(
        output_dir=job["output"],
        per_device_train_batch_size=job["batch"],
        gradient_accumulation_steps=1,
        num_mini_batches=job["mini_batches"],
        num_ppo_epochs=job["ppo_epochs"],
        total_episodes=job["batch"] * (job["iterations"] + 1),
        response_length=job["response_length"],
        temperature=job["temperature"],
        stop_token="eos",
        kl_coef=job["kl_coef"],
        learning_rate=job["lr"],
        local_rollout_forward_batch_size=job["batch"],
        num_sample_generations=0,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=job["seed"],
    )
    trainer = PPOTrainer(
        args=args,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=reward_model,
        train_dataset=ds,
        value_model=value_model,
        callbacks=[Mark()],
    )
    trainer.train()
    out = marks.summary()
    out["generate_s"] = gen.seconds[1:]
    out["response_length"] = [e["mean_length"] for e in gen.extra[1:]]
    out["generated_width"] = [e["width"] for e in gen.extra[1:]]
    out["gc_seconds"] = sum(dt for end, dt in gc_calls if marks.t[0] < end <= marks.t[-1])  # in the window
    out["optim"] = str(args.optim)
    return out


WORKERS = {
    "tiankong-rm": worker_tiankong_rm,
    "trl-rm": worker_trl_rm,
    "tiankong-ppo": worker_tiankong_ppo,
    "trl-ppo": worker_trl_ppo,
}


def run_worker(name: str, job: dict, timeout: float) -> dict:
    """One measurement in a fresh interpreter; its result, or {'error': why}."""
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tag = f"{name}-r{job['round']}"
    job_path, result_path, log_path = WORK / f"job-{tag}.json", WORK / f"result-{tag}.json", logs / f"{tag}.log"
    job_path.write_text(json.dumps(job))
    result_path.unlink(missing_ok=True)
    n = str(job["threads"])
    env = dict(
        os.environ,
        OMP_NUM_THREADS=n,
        MKL_NUM_THREADS=n,
        OPENBLAS_NUM_THREADS=n,
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TRL_EXPERIMENTAL_SILENCE="1",
        CUDA_VISIBLE_DEVICES="",
        ACCELERATE_USE_CPU="1",
    )
    cmd = [sys.executable, __file__, "--worker", name, "--job", str(job_path), "--result", str(result_path)]
    t = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s (log: {log_path})"}
    if proc.returncode != 0 or not result_path.is_file():
        tail = [x for x in log_path.read_text(errors="replace").strip().splitlines() if x.strip()][-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0][:200]} (log: {log_path})"}
    return json.loads(result_path.read_text()) | {"process_s": round(time.perf_counter() - t, 1)}


def worker_main(name: str, job_path: str, result_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    Path(result_path).write_text(json.dumps(WORKERS[name](job)))


# --------------------------------------------------------------------------------------------
# 3. report
# --------------------------------------------------------------------------------------------


def trl_status() -> tuple[bool, bool, str]:
    """(reward trainer usable, PPO usable, note), without importing TRL in this process."""
    spec = importlib.util.find_spec("trl")
    if spec is None:
        return False, False, f"TRL is not installed: pip install trl=={TRL_VERSION}"
    version = importlib.metadata.version("trl")
    for dep in ("datasets", "accelerate"):
        if importlib.util.find_spec(dep) is None:
            return False, False, f"TRL {version} is installed but {dep} is not: pip install {dep}"
    ppo = any((Path(p) / "experimental" / "ppo" / "__init__.py").is_file() for p in spec.submodule_search_locations)
    note = f"TRL {version}"
    if version != TRL_VERSION:
        note += f" (the comparison is specified against {TRL_VERSION})"
    if not ppo:
        note += f"; it has no trl.experimental.ppo (gone from 1.14): PPO skipped, pip install trl=={TRL_VERSION}"
    return True, ppo, note


def disturbed_above(threads: int) -> float:
    """Share of all CPUs others may use before they must have taken time from our threads."""
    cpus = os.cpu_count() or 1
    return max(0.0, 1.0 - min(threads, cpus) / cpus) + 0.05


def summarize(runs: list[dict], kind: str) -> dict | None:
    """Per run: RM steps/s or PPO seconds/iteration; best and median over the undisturbed runs
    (over all runs when none was undisturbed: then `clean` is 0 and the numbers are suspect)."""
    done = [r for r in runs if "error" not in r]
    if not done:
        return None
    ok = [r for r in done if not r["disturbed"]] or done
    if kind == "rm":  # steps/s: higher is better
        vals = [r["measured"] / r["seconds"] for r in ok]
        cpu = [r["measured"] / r["cpu_seconds"] for r in ok]
        best, cpu_best = max(vals), max(cpu)
    else:  # seconds per iteration: lower is better
        vals = [r["seconds"] / r["measured"] for r in ok]
        cpu = [r["cpu_seconds"] / r["measured"] for r in ok]
        best, cpu_best = min(vals), min(cpu)
    out = {
        "clean": sum(not r["disturbed"] for r in done),
        "runs": len(done),
        "per_round": vals,
        "best": best,
        "median": statistics.median(vals),
        "cpu_per_round": cpu,
        "cpu_best": cpu_best,
        "foreign_cpu": [r.get("foreign_cpu") for r in ok],
        "errors": [r["error"] for r in runs if "error" in r],
    }
    if kind == "ppo":
        gen = [x for r in ok for x in r["generate_s"]]
        lens = [x for r in ok for x in r["response_length"]]
        out["generate_s_median"] = statistics.median(gen) if gen else None
        if all("gc_seconds" in r for r in ok):  # TRL: the iteration time without its gc.collect() calls
            no_gc = [(r["seconds"] - r["gc_seconds"]) / r["measured"] for r in ok]
            out["gc_s_per_iteration"] = [r["gc_seconds"] / r["measured"] for r in ok]
            out["best_without_gc"] = min(no_gc)
        out["response_length_mean"] = statistics.mean(lens) if lens else None
    return out


def ratio(tk: dict | None, trl: dict | None, kind: str, which: str) -> float | None:
    """tiankong throughput / TRL throughput (> 1: tiankong is faster)."""
    if not tk or not trl:
        return None
    return tk[which] / trl[which] if kind == "rm" else trl[which] / tk[which]


def report(summary: dict, args, console, trl_note: str, kinds: list[str]) -> dict:
    from rich.table import Table

    def fmt(x, spec):
        return "—" if x is None else format(x, spec)

    def clean(s):
        if not s:
            return "—"
        text = f"{s['clean']}/{s['runs']}"
        return text if s["clean"] >= args.rounds else f"[red]{text}[/]"

    def load(s):
        vals = [v for v in (s or {}).get("foreign_cpu", []) if v is not None]
        return "—" if not vals else f"{100 * statistics.median(vals):.0f}%"

    table = Table(
        title=f"training speed: {args.model.name}, float32, CPU, {args.threads} thread(s), best of "
        f"{args.rounds} round(s); RM {args.pairs} pairs, batch {args.batch_size}; PPO "
        f"{args.ppo_batch} prompts x {args.response_length} tokens, {args.ppo_epochs} epochs x "
        f"{args.mini_batches} minibatches"
    )
    for col in (
        "measurement",
        "tiankong",
        "TRL",
        "tiankong/TRL",
        "median ratio",
        "CPU-time ratio",
        "target",
        "",
        "clean",
        "others' CPU",
    ):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    ratios = {}
    for kind, label, unit, spec in (("rm", "reward model", "steps/s", ".1f"), ("ppo", "PPO iteration", "s", ".2f")):
        if kind not in kinds:
            continue
        tk, trl = summary[kind]["tiankong"], summary[kind]["trl"]
        r_best, r_med = ratio(tk, trl, kind, "best"), ratio(tk, trl, kind, "median")
        r_cpu = ratio(tk, trl, kind, "cpu_best")
        ratios[kind] = {
            "best": r_best,
            "median": r_med,
            "cpu_time": r_cpu,
            "target": TARGET,
            "met": None if r_best is None else r_best >= TARGET,
        }
        mark = "" if r_best is None else ("[green]ok[/]" if r_best >= TARGET else "[red]MISSED[/]")
        table.add_row(
            f"{label} ({unit})",
            fmt(tk and tk["best"], spec),
            fmt(trl and trl["best"], spec),
            fmt(r_best, ".2f") + ("x" if r_best else ""),
            fmt(r_med, ".2f") + ("x" if r_med else ""),
            fmt(r_cpu, ".2f") + ("x" if r_cpu else ""),
            f">= {TARGET:.1f}x",
            mark,
            f"{clean(tk)} / {clean(trl)}",
            f"{load(tk)} / {load(trl)}",
        )
    tk, trl = summary["ppo"]["tiankong"], summary["ppo"]["trl"]
    if "ppo" in kinds and (tk or trl):
        table.add_row(
            "  generation (s)",
            fmt(tk and tk["generate_s_median"], ".2f"),
            fmt(trl and trl["generate_s_median"], ".2f"),
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        )
        if trl and "best_without_gc" in trl:
            r_nogc = trl["best_without_gc"] / tk["best"] if tk else None
            ratios["ppo"]["best_without_trl_gc"] = r_nogc
            table.add_row(
                "  TRL gc.collect (s)",
                "—",
                fmt(statistics.median(trl["gc_s_per_iteration"]), ".2f"),
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            )
            table.add_row(
                "  minus TRL's gc (s)",
                fmt(tk and tk["best"], ".2f"),
                fmt(trl["best_without_gc"], ".2f"),
                fmt(r_nogc, ".2f") + ("x" if r_nogc else ""),
                "",
                "",
                "",
                "",
                "",
                "",
            )
        table.add_row(
            "  answer tokens",
            fmt(tk and tk["response_length_mean"], ".1f"),
            fmt(trl and trl["response_length_mean"], ".1f"),
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        )
    console.print(table)
    console.print(
        f"[dim]{trl_note}. Ratios are throughput: RM steps/s tiankong / TRL, PPO s/iteration TRL / "
        f"tiankong; wall clock, best run of each side (median ratio: of the medians). Sub-rows, per PPO "
        f"iteration: generation and gc medians, 'minus TRL's gc' the best runs. 'clean', 'others' CPU': tiankong / TRL. CPU-time ratio: the same "
        f"from the process's own CPU time, which other processes on the machine hardly move. "
        f"'others' CPU' = share of all {os.cpu_count()} CPUs other processes used during the "
        f"measured window (median over the runs reported); a run where it exceeded "
        f"{100 * disturbed_above(args.threads):.0f}% is disturbed and repeated, and only undisturbed runs "
        f"are reported when there are any. Load average now {os.getloadavg()[0]:.1f}.[/]"
    )
    for kind in ("rm", "ppo"):
        for side in ("tiankong", "trl"):
            s = summary[kind][side]
            for e in (s or {}).get("errors", []) + (summary[kind].get(f"{side}_errors") or []):
                console.print(f"[red]{side} {kind}: {e}[/]")
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=Help)
    ap.add_argument("--model", type=Path, default=STORIES, help="the model both sides train")
    ap.add_argument("--steps", type=int, default=100, help="measured reward-model steps (after 1 warm-up step)")
    ap.add_argument("--pairs", type=int, default=200, help="preference pairs")
    ap.add_argument("--batch-size", type=int, default=16, help="reward model: pairs per step")
    ap.add_argument("--max-length", type=int, default=64, help="reward model: tokens per prompt + answer")
    ap.add_argument("--lr", type=float, default=1e-3, help="reward model learning rate")
    ap.add_argument("--ppo-iterations", type=int, default=3, help="measured PPO iterations (after 1 warm-up)")
    ap.add_argument("--ppo-batch", type=int, default=32, help="PPO: prompts per iteration")
    ap.add_argument("--response-length", type=int, default=40, help="PPO: answer length limit")
    ap.add_argument("--ppo-epochs", type=int, default=4, help="PPO: passes over each iteration's rollouts")
    ap.add_argument("--mini-batches", type=int, default=2, help="PPO: minibatches (optimizer steps) per epoch")
    ap.add_argument("--ppo-lr", type=float, default=2e-4, help="PPO learning rate")
    ap.add_argument("--rounds", type=int, default=3, help="undisturbed measurements per side (best reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every measured process")
    ap.add_argument("--word", default="boy", help="the hidden preference rule: stories with this word win")
    ap.add_argument("--length", type=int, default=40, help="story length in tokens for the preference data")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data, the heads and the training")
    ap.add_argument("--skip-trl", action="store_true", help="measure tiankong only")
    ap.add_argument("--skip-rm", action="store_true", help="skip the reward-model measurement")
    ap.add_argument("--skip-ppo", action="store_true", help="skip the PPO measurement")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args.worker, args.job, args.result)
    if args.steps < 1 or args.ppo_iterations < 1 or args.rounds < 1:
        sys.exit("--steps, --ppo-iterations and --rounds must be at least 1")
    if args.ppo_batch % args.mini_batches:
        sys.exit("--ppo-batch must be a multiple of --mini-batches (TRL requires it)")
    if not args.model.is_dir():
        sys.exit(f"no model at {args.model}; pass --model")

    from rich.console import Console

    end_children_on_sigterm()
    console = Console(width=max(150, Console().width))  # wide enough for the table when piped
    if args.skip_trl:
        trl_rm = trl_ppo = False
        trl_note = "TRL skipped (--skip-trl)"
    else:
        trl_rm, trl_ppo, trl_note = trl_status()
        if not trl_rm or not trl_ppo:
            console.print(f"[yellow]{trl_note}[/]")

    data = build_data(args, console)
    console.print(
        f"[dim]data: {data['pairs']} pairs, sequences {data['seq_len_mean']:.1f} tokens on average "
        f"(max {data['seq_len_max']}, {data['truncated']} truncated to --max-length); "
        f"transformers' tokenizer agrees: {data['hf_tokenizer_agrees']}[/]"
    )

    common = dict(model=str(args.model), threads=args.threads, seed=args.seed)
    jobs = {
        "rm": dict(common, steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length),
        "ppo": dict(
            common,
            iterations=args.ppo_iterations,
            batch=args.ppo_batch,
            response_length=args.response_length,
            ppo_epochs=args.ppo_epochs,
            mini_batches=args.mini_batches,
            temperature=1.0,
            kl_coef=0.05,
            lr=args.ppo_lr,
        ),
    }
    kinds = [k for k, skip in (("rm", args.skip_rm), ("ppo", args.skip_ppo)) if not skip]
    runs: dict[str, dict[str, list]] = {k: {"tiankong": [], "trl": []} for k in ("rm", "ppo")}
    limit = disturbed_above(args.threads)
    wanted = [
        (kind, side)
        for kind in kinds
        for side in ("tiankong", "trl")
        if side == "tiankong" or (trl_rm if kind == "rm" else trl_ppo)
    ]

    def clean(kind: str, side: str) -> int:
        return sum("error" not in r and not r["disturbed"] for r in runs[kind][side])

    # Rounds until every measurement has --rounds undisturbed runs (3 x --rounds rounds at most);
    # tiankong and TRL swap places every round. A run that fails is not retried.
    for rnd in range(3 * args.rounds):
        todo = [(k, s) for k, s in wanted if clean(k, s) < args.rounds and not any("error" in r for r in runs[k][s])]
        if not todo:
            break
        for kind in kinds:
            for side in ["tiankong", "trl"] if rnd % 2 == 0 else ["trl", "tiankong"]:
                if (kind, side) not in todo:
                    continue
                name = f"{side}-{kind}"
                job = dict(jobs[kind], round=rnd, output=str(WORK / "runs" / f"{name}-r{rnd}"))
                console.print(f"[dim]round {rnd + 1}: {name}...[/]")
                res = run_worker(name, job, args.timeout)
                if "error" in res:
                    console.print(f"[red]{name} failed: {res['error']}[/]")
                else:
                    res["disturbed"] = (res["foreign_cpu"] or 0.0) > limit
                    val = (
                        f"{res['measured'] / res['seconds']:.1f} steps/s"
                        if kind == "rm"
                        else f"{res['seconds'] / res['measured']:.2f} s/iteration"
                    )
                    console.print(
                        f"[dim]  {val}, others used {100 * (res['foreign_cpu'] or 0):.0f}% of the CPUs"
                        f"{' (disturbed: repeated)' if res['disturbed'] else ''}[/]"
                    )
                runs[kind][side].append(res)

    summary = {k: {side: summarize(runs[k][side], k) for side in ("tiankong", "trl")} for k in runs}
    for k in summary:  # errors of sides with no successful run
        for side in ("tiankong", "trl"):
            if summary[k][side] is None and runs[k][side]:
                summary[k][f"{side}_errors"] = [r["error"] for r in runs[k][side]]
    ratios = report(summary, args, console, trl_note, kinds)

    versions = {}
    for pkg in ("torch", "transformers", "trl", "datasets", "accelerate"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    RESULT_JSON.write_text(
        json.dumps(
            {
                "settings": settings,
                "versions": versions,
                "trl_note": trl_note,
                "cpus": os.cpu_count(),
                "load_average_1min": os.getloadavg()[0],
                "data": {k: v for k, v in data.items() if k not in ("chosen_ids", "rejected_ids")},
                "summary": summary,
                "ratios": ratios,
                "runs": runs,
            },
            indent=1,
        )
    )
    console.print(f"[dim]wrote {RESULT_JSON.relative_to(ROOT)}[/]")


if __name__ == "__main__":
    main()
