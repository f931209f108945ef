"""QA54, "Training: closing the loop": a second Ctrl+C that ended in exit 141 and silence, a PPO run on
a reward model whose own verdict failed, DPO's verdict without reward's warnings on too few votes, and a
spinner whose text the next line went on after."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import cli, one_thread  # noqa: F401 (one_thread is an autouse fixture)
from test_train_ppo import ppo_config
from tiny_models import make_model

from tiankong.engine.model import load_model
from tiankong.trainers import verdict
from tiankong.trainers.dpo import DPOConfig, DPOTrainer
from tiankong.trainers.ppo import PPOTrainer
from tiankong.trainers.preferences import Encoder
from tiankong.trainers.reward import RewardModel


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("qa54-llama"), "llama")


# ---------------------------------------------------------------- a second Ctrl+C

# The watcher thread saw the second Ctrl+C, the main thread raised KeyboardInterrupt within GRACE, and
# the watcher left (closing its end of the wake-up pipe) before the stop context's __exit__ wrote its
# wake-up byte: the write's BrokenPipeError replaced the KeyboardInterrupt, and the CLI took it for a
# closed stdout (exit 141, nothing said). Here the main thread waits for the watcher to leave first.
SECOND_CTRL_C = """
import os, signal, threading, time
from tiankong.trainers.stopping import _StopRequests

try:
    with _StopRequests(announce=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            deadline = time.monotonic() + 10
            while any(t.name == "tiankong-stop-watcher" for t in threading.enumerate()):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            raise
except KeyboardInterrupt:
    print("KeyboardInterrupt")
except BaseException as e:
    print(type(e).__name__)
"""


def test_a_second_ctrl_c_that_the_watcher_saw_too_stays_a_keyboard_interrupt():
    done = subprocess.run([sys.executable, "-c", SECOND_CTRL_C], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "KeyboardInterrupt", done.stdout + done.stderr


# ---------------------------------------------------------------- PPO on a reward model that failed


@pytest.fixture(scope="module")
def rm_dir(llama_dir, tmp_path_factory):
    base, cfg = load_model(llama_dir, "cpu", "float32")
    torch.manual_seed(1)
    rm = RewardModel(base, cfg)
    rm.encoder = Encoder.from_folder(llama_dir, raw=True)
    return rm.save(tmp_path_factory.mktemp("qa54-rm"), tokenizer_from=llama_dir)


def ppo(llama_dir, rm, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\nThe quick brown fox\n")
    small = dict(steps=1, batch_size=2, num_mini_batches=1, ppo_epochs=1, response_length=4)
    return PPOTrainer(ppo_config(llama_dir, rm, prompts, tmp_path / "ppo", **small))


def test_ppo_says_at_start_and_in_its_verdict_that_its_reward_model_failed_its_own(
    llama_dir, rm_dir, tmp_path, capsys, monkeypatch
):
    # QA54: PPO trained on a reward model whose verdict.json said "ok": false (16 pairs, at chance), and
    # its own verdict then said ok, with no warning.
    rm = tmp_path / "rm"
    shutil.copytree(rm_dir, rm)
    verdict.accuracy_verdict(16, 2, 1.0).write(rm)  # the QA's: 2 of 2 held-out pairs, 95% CI 0.34-1.00
    trainer = ppo(llama_dir, rm, tmp_path)
    trainer.setup()
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(said) == 1, said
    assert (
        f"the --reward model {rm} failed its own verdict (only 16 pairs; at chance; {rm / 'verdict.json'})" in said[0]
    )
    assert said[0].endswith("give more (or more consistent) votes, then run `tiankong train reward` again")
    monkeypatch.setattr(verdict, "policy_verdict", lambda trainer, advance=None: verdict.Verdict("ppo", "scored"))
    v = verdict.verdict_for(trainer)
    assert not v.ok and v.warnings == [said[0].removeprefix("warning: ")]
    assert json.loads(v.write(tmp_path).read_text())["ok"] is False

    verdict.accuracy_verdict(300, 30, 0.9).write(rm)  # a reward model that passed: nothing said
    trainer = ppo(llama_dir, rm, tmp_path)
    trainer.setup()
    assert "warning:" not in capsys.readouterr().err
    assert verdict.verdict_for(trainer).ok


# ---------------------------------------------------------------- DPO on few votes


def test_dpo_verdict_warns_of_too_few_votes_and_a_held_out_accuracy_at_chance(llama_dir, tmp_path):
    # QA54: DPO on 20 pairs gave none of train reward's warnings; the same ones now (vote_warnings),
    # from the held-out pairs its implicit reward ranks.
    rows = [{"prompt": f"Story {i}:", "chosen": " a happy fox ran", "rejected": " a sad dog sat"} for i in range(12)]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DPOConfig(
        model=str(llama_dir),
        data=str(data),
        output=str(tmp_path / "dpo"),
        steps=1,
        batch_size=4,
        lr=1e-3,
        eval_fraction=0.25,
        device="cpu",
        progress=False,
        raw=True,
    )
    trainer = DPOTrainer(cfg)
    trainer.train()
    v = verdict.verdict_for(trainer)
    n_eval = v.figures["held_out_pairs"]
    assert v.figures["pairs"] == 12 and n_eval == 3
    accuracy = v.figures["held_out_reward_accuracy"]
    lo, hi = verdict.wilson(accuracy * n_eval, n_eval)
    assert v.figures["ci95"] == [lo, hi] and lo <= 0.5  # three pairs never tell a taste from chance
    assert "only 12 pairs: too few votes to learn or to judge a taste; rank a few hundred" in v.warnings
    assert (
        f"at chance: the 95% interval {lo:.2f}-{hi:.2f} includes 0.5, so the tuned model's implicit reward may "
        "rank answers no better than a coin; give more (or more consistent) votes"
    ) in v.warnings
    assert not v.ok


# ---------------------------------------------------------------- the spinner


def test_a_line_said_under_the_spinner_starts_a_line_of_its_own(monkeypatch):
    # QA54: "⠼ ppo: finding the answer length ...: 31/32 probe answersppo: auto settings for ...": the spinner
    # was drawn on a console of its own, and rich hands any other console the terminal itself.
    from rich.console import Console

    from tiankong.trainers.progress import status
    from tiankong.tui import generate_input

    terminal = io.StringIO()
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws as on a terminal
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(generate_input, "err", Console(stderr=True, emoji=False))
    with status("ppo: loading the models and data"):
        generate_input.say("ppo: auto settings for 3.15M parameters")
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue())  # the cursor moves and erasures
    assert "ppo: loading the models and data" in shown  # the spinner was drawn
    assert re.search(r"(^|[\r\n])ppo: auto settings for 3\.15M parameters\n", shown), repr(shown)


# ---------------------------------------------------------------- --resume of a finished run

THREADS = "note: training on 2 CPU threads, this machine's default whatever else runs"  # a stand-in for settle's note


def test_resume_of_a_finished_run_says_only_that_it_is_finished(llama_dir, tmp_path, monkeypatch, capsys):
    # QA54: `train reward --resume` of a finished run said "note: training on 1 CPU thread, not 2..." and then
    # "already finished (7 steps); nothing to train".
    from tiankong.trainers import cpu_threads

    monkeypatch.setattr(cpu_threads, "settle", lambda given, started, hint=False, busy=None: (given or 1, THREADS))
    rows = [{"prompt": f"Story {i}:", "chosen": " a happy fox ran", "rejected": " a sad dog sat"} for i in range(6)]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rm"
    args = ["train", "reward", "--model", llama_dir, "--data", data, "--output", out, "--steps", "2"]
    args += ["--batch-size", "4", "--eval-fraction", "0", "--device", "cpu", "--raw", "--no-progress"]
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0 and THREADS in err, err  # a run that trains says it
    code, _, err = cli(monkeypatch, capsys, *args, "--resume")
    assert code == 0 and "already finished (2 steps); nothing to train" in err, err
    assert "note: training on" not in err, err
