"""PPO: GAE and the clipped losses by hand, rollouts that agree with the engine, training moves the
policy and the value model, resume, and the whole RLHF chain on a real checkpoint."""

from __future__ import annotations

import json
import random
import re
import sys

import pytest
import torch
from helpers import one_thread  # noqa: F401 (one_thread is an autouse fixture)
from tiny_models import STORIES, make_model

from tiankong.engine.engine import Engine
from tiankong.engine.errors import InputError
from tiankong.engine.events import Finished, TokenEvent
from tiankong.engine.model import load_model
from tiankong.engine.sampling import SamplingParams
from tiankong.trainers.ppo import PPOConfig, PPOTrainer, policy_loss, value_loss
from tiankong.trainers.ppo_rollout import gae, masked_whiten, read_prompts, token_logprobs
from tiankong.trainers.reward import RewardConfig, RewardModel, RewardTrainer


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("ppo-llama"), "llama")


@pytest.fixture(scope="module")
def rm_dir(llama_dir, tmp_path_factory):
    """A reward model on the tiny llama: a random head, saved with a non-trivial normalisation."""
    base, cfg = load_model(llama_dir, "cpu", "float32")
    torch.manual_seed(1)
    rm = RewardModel(base, cfg, normalization={"scale": 2.0, "bias": -0.5})
    from tiankong.trainers.preferences import Encoder

    rm.encoder = Encoder.from_folder(llama_dir, raw=True)
    return rm.save(tmp_path_factory.mktemp("ppo-rm"), tokenizer_from=llama_dir)


# ---------------------------------------------------------------- by hand


def test_gae_by_hand():
    # One 4-token answer scored 1 at its end, gamma 1, lambda 0.95:
    #   deltas = [0.6-0.5, 0.7-0.6, 0.8-0.7, 1-0.8] = [0.1, 0.1, 0.1, 0.2]
    #   A3 = 0.2, A2 = 0.1 + 0.95*0.2 = 0.29, A1 = 0.1 + 0.95*0.29 = 0.3755, A0 = 0.1 + 0.95*0.3755 = 0.456725
    # and a 2-token answer (padding after it holds garbage values that must not leak in):
    #   delta1 = 2 - 1.5 = 0.5 = A1;  delta0 = 0.1 + 1.5 - 1 = 0.6, A0 = 0.6 + 0.95*0.5 = 1.075
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.1, 2.0, 5.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 0.8], [1.0, 1.5, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, torch.tensor([[0.456725, 0.3755, 0.29, 0.2], [1.075, 0.5, 0, 0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.956725, 0.9755, 0.99, 1.0], [2.075, 2.0, 0, 0]]))
    # gamma 0.5, lambda 1 on the first row: A3 = 0.2, A2 = 0.5*0.8 - 0.7 + 0.5*0.2 = -0.2, ...
    adv, _ = gae(rewards[:1], values[:1], mask[:1], gamma=0.5, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.125 - 0.5, 0.25 - 0.6, 0.5 - 0.7, 1 - 0.8]]))


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(3)
    new = torch.log(torch.tensor([1.5, 0.5, 1.1]))
    adv = torch.tensor([1.0, -1.0, 2.0])
    # unclipped -A r = [-1.5, 0.5, -2.2]; clipped -A clip(r, 0.8, 1.2) = [-1.2, 0.8, -2.2]; max of the two
    loss, clipped, ratio = policy_loss(new, old, adv, cliprange=0.2)
    torch.testing.assert_close(loss, torch.tensor([-1.2, 0.8, -2.2]))
    torch.testing.assert_close(clipped, torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(ratio, torch.tensor([1.5, 0.5, 1.1]))


def test_clipped_value_loss_by_hand():
    old, new, returns = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, -0.1, 1.0]), torch.tensor([1.0, 1.0, 0.0])
    # v_clip = [0.2, -0.1, 1.0]; (v-G)^2 = [0.25, 1.21, 1]; (v_clip-G)^2 = [0.64, 1.21, 1]; half the max
    loss, clipped = value_loss(new, old, returns, cliprange_value=0.2)
    torch.testing.assert_close(loss, torch.tensor([0.32, 0.605, 0.5]))
    torch.testing.assert_close(clipped, torch.tensor([1.0, 0.0, 0.0]))


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)  # mean 2, unbiased std 1
    torch.testing.assert_close(w[0, :3], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        masked_whiten(x, mask, shift_mean=False)[0, :3], torch.tensor([1.0, 2.0, 3.0]), atol=1e-6, rtol=0
    )


def test_token_logprobs_at_temperature():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 6)
    at, tok = torch.tensor([[1, 2]]), torch.tensor([[3, 5]])
    lp, ent = token_logprobs(logits, at, tok, temperature=0.5)
    ref = torch.log_softmax(logits / 0.5, -1)
    torch.testing.assert_close(lp, torch.stack([ref[0, 1, 3], ref[0, 2, 5]])[None])
    torch.testing.assert_close(ent[0, 0], -(ref[0, 1].exp() * ref[0, 1]).sum())


# ---------------------------------------------------------------- the trainer on a tiny model


def ppo_config(llama_dir, rm_dir, prompts, out, **kw):
    base = dict(
        model=str(llama_dir),
        reward=str(rm_dir),
        prompts=str(prompts),
        output=str(out),
        steps=2,
        batch_size=4,
        num_mini_batches=2,
        ppo_epochs=2,
        response_length=6,
        temperature=1.0,
        lr=1e-3,
        device="cpu",
        progress=False,
        raw=True,
    )
    return PPOConfig(**{**base, **kw})


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text(
        "Once upon a time\n\n"
        + json.dumps({"prompt": "The quick brown fox"})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "Emoji are fun"}]})
        + "\n"
    )
    return path


def test_prompt_file(tmp_path, prompts):
    assert [n for n, _ in read_prompts(prompts)] == [1, 3, 4]
    bad = tmp_path / "bad.txt"
    bad.write_text('fine\n{"prompt": 3}\n')
    with pytest.raises(InputError, match="line 2"):
        read_prompts(bad)


def test_a_prompt_too_long_for_the_context_is_skipped_by_line_not_fatal(llama_dir, rm_dir, prompts, tmp_path, capsys):
    """With response_length auto, the probe of the starting policy sampled every prompt, and one longer
    than the context stopped the run with the engine's error, naming no line."""
    long = tmp_path / "long.txt"
    long.write_text(prompts.read_text() + "word " * 400 + "\n")  # line 5: past the tiny model's 256 positions
    trainer = PPOTrainer(ppo_config(llama_dir, rm_dir, long, tmp_path / "o", response_length=0))
    trainer.setup()
    err = " ".join(capsys.readouterr().err.split())
    assert len(trainer.prompts) == 3 and 0 < trainer.cfg.response_length <= 256
    assert "skipped 1 prompt(s)" in err and "(lines 5)" in err


def test_rollout_logprobs_match_the_engine(llama_dir, rm_dir, prompts, tmp_path):
    """The training-side forward pass reads the log-probs of exactly the tokens the engine sampled."""
    trainer = PPOTrainer(ppo_config(llama_dir, rm_dir, prompts, tmp_path / "o"))
    trainer.setup()
    ids = trainer.prompts
    seeds = [11, 12, 13]
    ro, stats = trainer.rollout(ids, seeds)
    eng = Engine.load(llama_dir, device="cpu")
    events = list(
        eng.generate(
            ids, [SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=s, max_new_tokens=6) for s in seeds]
        )
    )
    for row in range(3):
        toks = [e for e in events if isinstance(e, TokenEvent) and e.row == row]
        n = len(toks)
        assert ro.answer[row, :n].tolist() == [e.id for e in toks] and int(ro.mask[row].sum()) == n
        torch.testing.assert_close(ro.logprobs[row, :n], torch.tensor([e.logprob for e in toks]), atol=1e-4, rtol=0)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-4)  # policy == reference before any update
    # the value model starts as the normalised reward model: at the last answer token it predicts the score
    rm = RewardModel.load(rm_dir, "cpu")
    with torch.no_grad():
        seq = ro.tokens[0, : int(ro.lengths[0])][None]
        pos = torch.arange(seq.shape[1])[None]
        torch.testing.assert_close(trainer.value(seq, pos)[0, -1], rm.normalize(rm(seq, pos)[0, -1]))


class SpyPPO(PPOTrainer):
    def setup(self):
        super().setup()
        self.initial = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}


def test_ppo_moves_policy_and_value_and_saves_both(llama_dir, rm_dir, prompts, tmp_path):
    trainer = SpyPPO(ppo_config(llama_dir, rm_dir, prompts, tmp_path / "ppo"))
    out = trainer.train()
    now = dict(trainer.model.named_parameters())
    assert any(n.startswith("policy.") for n in trainer.initial) and "value.head.bias" in trainer.initial
    unchanged = [n for n, p in trainer.initial.items() if torch.equal(now[n].detach(), p)]
    assert not unchanged, unchanged
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for key in ("reward", "kl", "entropy", "clipfrac", "value_loss", "policy_loss", "response_length", "approx_kl"):
        assert all(isinstance(r[key], float) for r in rows), key
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-4) and rows[0]["response_length"] <= 6
    # outputs: the policy loads as a causal LM in tiankong and transformers; the value model beside it
    Engine.load(out, device="cpu")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    value = RewardModel.load(out / "value", "cpu")
    torch.testing.assert_close(value.head.weight, trainer.value.head.weight)


def test_ppo_resume_matches_uninterrupted(llama_dir, rm_dir, prompts, tmp_path):
    class Stop(Exception):
        pass

    class Interrupted(PPOTrainer):
        def checkpoint(self):
            super().checkpoint()
            if self.step == 2:
                raise Stop

    kw = dict(steps=4, save_every=2, kl_target=1.0, kl_horizon=10)  # adaptive KL: its coefficient is state too
    PPOTrainer(ppo_config(llama_dir, rm_dir, prompts, tmp_path / "a", **kw)).train()
    with pytest.raises(Stop):
        Interrupted(ppo_config(llama_dir, rm_dir, prompts, tmp_path / "b", **kw)).train()
    PPOTrainer(ppo_config(llama_dir, rm_dir, prompts, tmp_path / "b", resume=True, **kw)).train()
    ra = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert ra == rb and ra[-1]["kl_coef"] != ra[0]["kl_coef"]
    from safetensors.torch import load_file

    for sub in ("model.safetensors", "value/model.safetensors", "value/reward_head.safetensors"):
        a, b = load_file(tmp_path / "a" / sub), load_file(tmp_path / "b" / sub)
        for k in a:
            torch.testing.assert_close(b[k], a[k], msg=f"{sub}:{k}")


def test_ppo_resume_checks_its_flags_and_keeps_its_auto_settings_before_loading(
    llama_dir, rm_dir, prompts, tmp_path, monkeypatch, capsys
):
    # QA: --resume loaded four models and reran the answer-length probe (32 sampled answers, ~100 s on the
    # bundled model) before refusing `--steps 5` for a run of 20, and said nothing of where it resumed.
    from tiankong.engine.errors import InputError
    from tiankong.trainers import auto

    class Stop(Exception):
        pass

    class Interrupted(PPOTrainer):
        def checkpoint(self):
            super().checkpoint()
            if self.step == 1:
                raise Stop

    out = tmp_path / "ppo"
    kw = dict(steps=3, save_every=1, response_length=0, lr=0.0)  # lr and the answer length: auto
    with pytest.raises(Stop):
        Interrupted(ppo_config(llama_dir, rm_dir, prompts, out, **kw)).train()
    started = json.loads((out / "train_config.json").read_text())
    capsys.readouterr()

    def no_model_work(self):
        raise AssertionError("setup ran before the settings were checked")

    with monkeypatch.context() as m:
        m.setattr(PPOTrainer, "setup", no_model_work)
        with pytest.raises(InputError, match=r"--resume: the run was started with --steps 3 and is at step 1"):
            PPOTrainer(ppo_config(llama_dir, rm_dir, prompts, out, resume=True, **{**kw, "steps": 5})).train()
        with pytest.raises(InputError, match=r"changes the run's settings \(--ppo-epochs 2 -> 3"):
            PPOTrainer(ppo_config(llama_dir, rm_dir, prompts, out, resume=True, **{**kw, "ppo_epochs": 3})).train()

    def probe(*a, **k):
        raise AssertionError("the answer-length probe ran again")

    monkeypatch.setattr(auto, "auto_response_length", probe)
    trainer = PPOTrainer(ppo_config(llama_dir, rm_dir, prompts, out, resume=True, **{**kw, "steps": 0}))
    trainer.train()
    assert (trainer.cfg.response_length, trainer.cfg.lr, trainer.step) == (started["response_length"], started["lr"], 3)
    assert trainer.auto.values == {"steps": 3, "lr": started["lr"], "response_length": started["response_length"]}
    said = [line for line in capsys.readouterr().err.splitlines() if "resum" in line]
    assert said == [
        "resuming from step-000001 (step 1 of 3); settings left at auto keep the run's values: steps 3, "
        f"lr {started['lr']:g}, response_length {started['response_length']}"
    ]


def test_ppo_moves_the_bar_through_an_iterations_rollouts_then_updates(
    llama_dir, rm_dir, prompts, tmp_path, monkeypatch
):
    # QA: the bar stood still for a whole iteration (rollouts, then updates: minutes on a CPU).
    from tiankong.trainers import progress

    seen = []
    monkeypatch.setattr(progress.progress, "part", lambda self, fraction, text: seen.append((fraction, text)))
    PPOTrainer(ppo_config(llama_dir, rm_dir, prompts, tmp_path / "ppo", steps=1)).train()
    rollouts = [(i / 8, f"rollouts {i}/4") for i in range(5)]  # 4 answers: the first half of the step
    updates = [(0.5 + i / 8, f"updates {i}/4") for i in range(5)]  # 2 epochs of 2 minibatches: the second
    assert seen == rollouts + updates


# A PPO run whose every minibatch update also runs one long native call (a backward pass of about
# eight seconds, as a big minibatch's is on a slow, busy CPU); the marker file says one has begun.
SLOW_UPDATES = """
import sys, time, torch
from pathlib import Path
from tiankong.trainers.ppo import PPOTrainer

marker, accumulate = Path(sys.argv[1]), PPOTrainer.accumulate

def chain(pairs):  # expand's and select's backward pass do the work; their forward passes are views
    x = torch.ones(16384, requires_grad=True)
    y = x
    for _ in range(pairs):
        y = y.expand(64, 16384)[0]
    return y.sum()

def slow(self, rows, total, sums):
    accumulate(self, rows, total, sums)
    if self.step == 1:  # step 2's updates: step 1's checkpoint is written
        t = time.monotonic()
        chain(200).backward()
        pairs = int(200 * 8 / max(time.monotonic() - t, 1e-3))
        loss = chain(pairs)
        marker.write_text(str(pairs))
        loss.backward()  # one call: Python runs no signal handler until it returns

PPOTrainer.accumulate = slow
from tiankong.tui.cli import main
sys.argv = ["tiankong", *sys.argv[2:]]
main()
"""


def test_a_second_ctrl_c_during_ppo_updates_stops_within_a_second(llama_dir, rm_dir, prompts, tmp_path):
    # QA: during PPO's updates a second Ctrl+C did nothing for 7-18 s (the backward pass it came in had
    # to end first; two presses inside one even merged into one), and a third press was needed.
    import os
    import shlex
    import signal
    import subprocess
    import time

    out, marker = tmp_path / "ppo", tmp_path / "updating"
    args = ["train", "ppo", "--model", llama_dir, "--reward", rm_dir, "--prompts", prompts, "--output", out]
    args += ["--steps", "3", "--batch-size", "4", "--num-mini-batches", "2", "--ppo-epochs", "1"]
    args += ["--response-length", "6", "--lr", "1e-3", "--device", "cpu", "--raw", "--no-progress", "--save-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", SLOW_UPDATES, str(marker), *map(str, args)]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    second = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - second
    assert proc.returncode == 130, err
    assert took < 2.0, f"the second Ctrl+C took {took:.1f} s to stop the run\n{err}"
    assert "SIGINT: stopping after this step" in err and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-2] == f"stopped at once; the checkpoint {out / 'checkpoints' / 'step-000001'} survived"
    assert lines[-1].startswith("continue with: tiankong train ppo ") and lines[-1].endswith(" --resume")
    resumed = subprocess.run(  # and that command finishes the run: the folder was left whole and unlocked
        [sys.executable, "-m", "tiankong.tui.cli", *shlex.split(lines[-1].removeprefix("continue with: tiankong "))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step-000001 (step 1 of 3" in resumed.stderr


# ---------------------------------------------------------------- the whole chain on stories260K

WORD = re.compile(r"\bboy\b", re.I)  # the hidden rule: stories about a boy are preferred
PROMPT = "Once upon a time"


def sample(folder, n, seed, length=40):
    eng = Engine.load(folder, device="cpu")
    ids = eng.encode(prompt=PROMPT, raw=True)
    texts = [""] * n
    for ev in eng.generate(
        [ids] * n,
        [SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=seed + i, max_new_tokens=length) for i in range(n)],
    ):
        if isinstance(ev, Finished):
            texts[ev.row] = ev.text
    return texts


def rate(texts):
    return sum(bool(WORD.search(t)) for t in texts) / len(texts)


@pytest.mark.skipif(not STORIES.is_dir(), reason="stories260K checkpoint not present")
def test_rlhf_chain_on_stories260k(tmp_path, monkeypatch, capsys):
    # 1. a preference set with a hidden rule, from the model's own stories
    stories = sample(STORIES, 320, seed=0)
    yes, no = [t for t in stories if WORD.search(t)], [t for t in stories if not WORD.search(t)]
    random.Random(0).shuffle(no)
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(
        "".join(
            json.dumps({"prompt": PROMPT, "chosen": a, "rejected": b}) + "\n" for a, b in zip(yes, no, strict=False)
        )
    )
    assert len(yes) >= 40

    # 2. the reward model finds the rule on held-out pairs
    rm = RewardTrainer(
        RewardConfig(
            model=str(STORIES),
            data=str(prefs),
            output=str(tmp_path / "rm"),
            steps=50,
            batch_size=16,
            lr=3e-3,
            warmup_steps=5,
            eval_fraction=0.25,
            device="cpu",
            progress=False,
            raw=True,
        )
    ).train()
    rm_rows = [json.loads(x) for x in (rm / "metrics.jsonl").read_text().splitlines()]
    assert rm_rows[-1]["eval_accuracy"] >= 0.75, rm_rows[-1]

    # 3. PPO makes the rule more common in fresh samples while the KL to the start stays bounded
    (tmp_path / "prompts.txt").write_text(PROMPT + "\n")
    ppo = PPOTrainer(
        PPOConfig(
            model=str(STORIES),
            reward=str(rm),
            prompts=str(tmp_path / "prompts.txt"),
            output=str(tmp_path / "ppo"),
            steps=10,
            batch_size=32,
            num_mini_batches=2,
            response_length=40,
            temperature=1.0,
            lr=2e-4,
            kl_coef=0.05,
            device="cpu",
            progress=False,
            raw=True,
        )
    ).train()
    rows = [json.loads(x) for x in (ppo / "metrics.jsonl").read_text().splitlines()]
    before, after = rate(sample(STORIES, 96, seed=10_000)), rate(sample(ppo, 96, seed=10_000))
    figures = (
        f"RM held-out accuracy {rm_rows[-1]['eval_accuracy']:.3f}; rule rate {before:.3f} -> {after:.3f}; "
        f"KL {rows[-1]['kl']:.2f} nats; reward {rows[0]['reward']:.3f} -> {rows[-1]['reward']:.3f}"
    )
    assert after >= before + 0.2, (before, after)
    assert sum(r["reward"] for r in rows[-3:]) > sum(r["reward"] for r in rows[:3])
    assert all(r["kl"] < 20 for r in rows), [r["kl"] for r in rows]

    # 4. the result is an ordinary model folder for `tiankong generate`
    from tiankong.tui.cli import main

    monkeypatch.setattr(
        sys,
        "argv",
        [
            "tiankong",
            "generate",
            "-m",
            str(ppo),
            "--raw",
            "-p",
            PROMPT,
            "--max-new-tokens",
            "20",
            "--seed",
            "1",
            "--device",
            "cpu",
        ],
    )
    try:
        main()
    except SystemExit as e:
        assert not e.code
    (rec,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert rec["usage"]["completion_tokens"] >= 1 and rec["text"]
    print("\n" + figures)  # shown with pytest -s


def test_ppo_two_processes_match_one(llama_dir, rm_dir, prompts, tmp_path):
    """Rollout seeds come from the global row, whitening statistics and token counts are summed over
    ranks and minibatches are cut from one global shuffle: two processes train like one."""
    import os
    import subprocess

    from safetensors.torch import load_file

    kw = dict(steps=2, micro_batch_size=1, lr=1e-4)
    PPOTrainer(ppo_config(llama_dir, rm_dir, prompts, tmp_path / "one", **kw)).train()
    flags = {**ppo_config(llama_dir, rm_dir, prompts, tmp_path / "two", **kw).to_dict()}
    args = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items() if not isinstance(v, bool)]
    args += ["--raw", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "tiankong.tui.cli",
            "train",
            "ppo",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("model.safetensors", "value/model.safetensors", "value/reward_head.safetensors"):
        a, b = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5, msg=f"{name}:{k}")
    ra = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(ra, rb, strict=True):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k
