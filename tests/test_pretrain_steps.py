"""How long `tiankong train pretrain` runs by default: 4 passes over the training tokens, within
bounds (trainers/auto.py), unless --steps is given; warmup follows the steps; --resume keeps both.

QA: the old fixed 1000 steps made 33 passes over a 506 KB corpus (40+ minutes on 2 CPU cores) and
the model learnt it by heart.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from helpers import cli, one_thread  # noqa: F401 (one_thread is an autouse fixture)
from safetensors.torch import load_file
from test_train_pretrain_sft import Interrupted, interrupt_at

from tiankong.engine.errors import InputError
from tiankong.trainers import auto
from tiankong.trainers.checkpoint import latest
from tiankong.trainers.pretrain import PretrainConfig, PretrainTrainer
from tiankong.trainers.trainer_state import load_state

WORDS = "the a cat dog girl boy park ball red blue ran saw found liked little big happy sad and then".split()


def write_corpus(path, n_docs, seed=0):
    """n_docs short stories of seeded random words, separated as `train pretrain` reads them."""
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40))) + "." for _ in range(n_docs)]
    path.write_text("\n<|endoftext|>\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("toy") / "toy.txt", 12)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("medium") / "medium.txt", 150)


def cfg_for(tmp_path, data, **kw):
    base = dict(
        output=str(tmp_path / "pre"),
        data=str(data),
        size="nano",
        vocab_size=400,
        seq_len=16,
        batch_size=4,
        eval_fraction=0.0,
        device="cpu",
        progress=False,
    )
    return PretrainConfig(**{**base, **kw})


def rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_the_formula_passes_bounds_and_warmup():
    T, B = 256, 16  # the defaults: 4096 tokens a step
    assert auto.auto_pretrain_steps(10 * T, B, T) == 50  # a toy file: the floor
    assert auto.auto_pretrain_steps(485 * T, B, T) == 122  # the QA run's 506 KB corpus: 4 passes, not 33
    assert auto.auto_pretrain_steps(10**8, B, T) == 1024  # a large corpus: 4M tokens, the old default's length
    assert auto.auto_pretrain_steps(10**8, 64, T) == 256  # the cap is tokens: bigger batches, fewer steps
    assert auto.auto_pretrain_steps(10**8, 4096, 1024) == 50  # the floor wins where the bounds cross
    assert [auto.auto_warmup(s) for s in (5, 50, 122, 1024)] == [0, 5, 12, 50]


def test_auto_steps_follow_the_training_tokens(tmp_path, toy, medium):
    small = PretrainTrainer(cfg_for(tmp_path, toy, output=str(tmp_path / "toy")))
    small.setup()
    assert small.cfg.steps == 50 and small.cfg.warmup_steps == 5  # a toy file: the floor, not 1000
    big = PretrainTrainer(cfg_for(tmp_path, medium, output=str(tmp_path / "medium")))
    big.setup()
    blocks = len(big.train_blocks)
    assert 50 < blocks < 1000
    assert big.cfg.steps == math.ceil(4 * blocks / 4) < 1000  # 4 passes of 4-block steps
    assert big.cfg.warmup_steps == big.cfg.steps // 10
    assert big.auto.values == {"steps": big.cfg.steps, "warmup_steps": big.cfg.warmup_steps}


def test_the_cli_reports_the_auto_steps_and_a_given_steps_wins(monkeypatch, capsys, tmp_path, toy):
    args = ["train", "pretrain", "--data", toy, "--size", "nano", "--vocab-size", "400", "--seq-len", "16"]
    args += ["--batch-size", "4", "--eval-fraction", "0", "--device", "cpu", "--no-progress"]
    code, _, err = cli(monkeypatch, capsys, *args, "--output", tmp_path / "auto")
    assert code == 0, err
    assert "pretrain: auto settings for " in err and "steps 50, warmup_steps 5 (give a flag to override)" in err
    saved = json.loads((tmp_path / "auto" / "train_config.json").read_text())
    assert (saved["steps"], saved["warmup_steps"]) == (50, 5) and len(rows(tmp_path / "auto")) == 50

    code, _, err = cli(monkeypatch, capsys, *args, "--output", tmp_path / "given", "--steps", "3")
    assert code == 0, err
    line = [x for x in err.splitlines() if "auto settings" in x]
    assert line and line[0].endswith(": warmup_steps 0 (give a flag to override)")  # steps was given
    assert [r["step"] for r in rows(tmp_path / "given")] == [1, 2, 3]
    code, _, err = cli(monkeypatch, capsys, *args, "--output", tmp_path / "both", "--steps", "3", "--warmup-steps", "2")
    assert code == 0 and "auto settings" not in err
    assert json.loads((tmp_path / "both" / "train_config.json").read_text())["warmup_steps"] == 2


@pytest.mark.parametrize("given", [0, 12])
def test_resume_keeps_the_steps_the_run_started_with(tmp_path, toy, given):
    # given 0: the run's auto steps; given 12 (--steps 12, then --resume without it): not what auto
    # would give (50), yet the resumed run ends at 12, as the uninterrupted one did.
    whole = PretrainTrainer(cfg_for(tmp_path, toy, output=str(tmp_path / "whole"), steps=given)).train()
    cut = tmp_path / "cut"
    with pytest.raises(Interrupted):
        interrupt_at(PretrainTrainer(cfg_for(tmp_path, toy, output=str(cut), steps=given, save_every=4)), 5).train()
    assert load_state(latest(cut))["step"] == 4
    resumed = PretrainTrainer(cfg_for(tmp_path, toy, output=str(cut), save_every=4, resume=True))
    resumed.train()
    steps = given or 50
    assert (resumed.cfg.steps, resumed.cfg.warmup_steps) == (steps, steps // 10)
    assert [r["step"] for r in rows(cut)] == list(range(1, steps + 1))
    a, b = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_negative_settings_are_refused(tmp_path, toy):
    with pytest.raises(InputError, match=r"--steps must be at least 1 \(or 0 = auto\)"):
        cfg_for(tmp_path, toy, steps=-1).validate()
    with pytest.raises(InputError, match=r"--warmup-steps must be >= 0 \(or -1 = auto\)"):
        cfg_for(tmp_path, toy, warmup_steps=-2).validate()
    cfg_for(tmp_path, toy).validate()  # the auto defaults pass
