"""Default ("auto") settings: the resolver scales with model size and data, default configs train on
small fixtures, and the verdict says when a run learned nothing."""

from __future__ import annotations

import json
import random

import pytest
from helpers import one_thread  # noqa: F401 (autouse: one torch thread)
from tiny_models import make_model

from tiankong.trainers import auto
from tiankong.trainers.ppo import PPOConfig, PPOTrainer
from tiankong.trainers.reward import RewardConfig, RewardTrainer
from tiankong.trainers.verdict import accuracy_verdict, verdict_for, wilson


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("auto-llama"), "llama")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ANIMALS = ["cat", "bird", "cow", "pig", "hen", "owl", "bee", "elk"]


def taste_pairs(n: int, shuffle_labels: bool = False) -> list[dict]:
    """n pairs under varied prompts: the answer with "fox" wins (or a coin decides)."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b = rng.sample(ANIMALS, 2)
        good, bad = f" the {a} and the fox ran", f" the {a} and the {b} sat"
        if shuffle_labels and rng.random() < 0.5:
            good, bad = bad, good
        rows.append({"prompt": f"Story {i} about a {b}:", "chosen": good, "rejected": bad})
    return rows


# ---------------------------------------------------------------- the resolver


def test_learning_rates_fall_with_model_size():
    for trainer, (small, large) in auto.LR_ANCHORS.items():
        assert auto.auto_lr(trainer, 260_000) == small  # below the small anchor: the small-model rate
        assert auto.auto_lr(trainer, 3_000_000) == pytest.approx(small)
        assert auto.auto_lr(trainer, 1_000_000_000) == pytest.approx(large)
        sizes = [3e6, 3e7, 1.2e8, 1e9, 7e9]
        lrs = [auto.auto_lr(trainer, int(n)) for n in sizes]
        assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)), (trainer, lrs)
        assert large / 10 < lrs[-1] < large  # 7B: below the 1B rate, not absurdly so


def test_steps_and_batch_scale_with_data():
    assert auto.auto_batch(40) == 8 and auto.auto_batch(300) == 16 and auto.auto_batch(100_000) == 64
    few, many = auto.auto_steps("reward", 270, 16), auto.auto_steps("reward", 20_000, 32)
    assert few == 68  # a few hundred rankings: 4 passes
    assert many == 625  # large data: one pass
    assert auto.auto_steps("reward", 100, 8, n_pairs=300) == 38  # 3 passes (pairs), over 100 groups of 8
    assert auto.auto_ppo_steps(3, 32) == 20 and auto.auto_ppo_steps(10_000, 64) == 157
    assert auto.auto_ppo_batch(3_000_000) == 32 and auto.auto_ppo_batch(1_000_000_000) == 64


def test_response_length_lets_most_answers_end():
    lengths = list(range(10, 330, 10))  # 32 answers, 10..320 tokens
    assert auto.auto_response_length(lengths, [True] * 32, 400) == 304  # 90th percentile 290, up to a multiple of 16
    assert auto.auto_response_length([40] * 32, [False] * 32, 256) == 64  # a model that writes on
    assert auto.auto_response_length([300] * 32, [True] * 32, 256) == 256  # never past the cap


def test_auto_values_are_resolved_printed_and_recorded(llama_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", taste_pairs(40))
    cfg = RewardConfig(
        model=str(llama_dir),
        data=str(data),
        output=str(tmp_path / "rm"),
        steps=3,
        eval_fraction=0.25,
        device="cpu",
        raw=True,
    )
    trainer = RewardTrainer(cfg)
    out = trainer.train()
    line = [x for x in capsys.readouterr().err.splitlines() if "auto settings" in x]
    assert line and "lr 0.003" in line[0] and "batch_size 8" in line[0] and "steps" not in line[0]  # steps was given
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["lr"] == 3e-3 and saved["batch_size"] == 8 and saved["steps"] == 3
    assert trainer.auto.values == {"lr": 3e-3, "batch_size": 8}


def test_negative_settings_are_still_refused(llama_dir):
    from tiankong.engine.errors import InputError

    with pytest.raises(InputError, match="steps"):
        RewardConfig(model=str(llama_dir), data="x", steps=-1).validate()
    with pytest.raises(InputError, match=r"--response-length must be at least 1 \(or 0 = auto\), got -1"):
        PPOConfig(model=str(llama_dir), reward="r", prompts="p", response_length=-1).validate()
    with pytest.raises(InputError, match=r"--ppo-epochs must be at least 1, got 0"):  # no auto: not named
        PPOConfig(model=str(llama_dir), reward="r", prompts="p", ppo_epochs=0).validate()


def test_config_fields_of_the_wrong_type_are_named_and_paths_are_taken(llama_dir, tmp_path):
    """A str where a number goes was a bare TypeError from a comparison in validate(); a Path for a
    folder or file was an AttributeError ('PosixPath' has no attribute 'strip')."""
    from pathlib import Path

    import numpy as np

    from tiankong.engine.errors import InputError
    from tiankong.trainers.dpo import DPOConfig, DPOTrainer

    for field, value, message in [
        ("beta", "0.1", "beta must be a number (like 0.1), got '0.1'"),
        ("steps", "3", "steps must be an integer (like 0), got '3'"),
        ("raw", "yes", "raw must be True or False (like False), got 'yes'"),
        ("lr", True, "lr must be a number (like 0.0), got True"),
    ]:
        with pytest.raises(InputError) as err:
            DPOConfig(model=str(llama_dir), data="p.jsonl", **{field: value})
        assert str(err.value) == message
    cfg = DPOConfig(model=str(llama_dir), data="p.jsonl")
    cfg.steps = "3"  # set after construction: validate() checks again
    with pytest.raises(InputError, match="steps must be an integer"):
        cfg.validate()
    cfg = DPOConfig(
        model=Path(llama_dir),
        data=tmp_path / "p.jsonl",
        output=tmp_path / "out",
        beta=np.float32(0.25),
        steps=np.int64(3),
    )
    assert (cfg.model, cfg.data, cfg.output) == (str(llama_dir), str(tmp_path / "p.jsonl"), str(tmp_path / "out"))
    assert (cfg.beta, cfg.steps) == (0.25, 3) and type(cfg.steps) is int
    assert DPOTrainer(cfg).out == tmp_path / "out"


# ---------------------------------------------------------------- default configs train


def test_default_reward_config_learns_and_the_verdict_says_so(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", taste_pairs(60))
    trainer = RewardTrainer(
        RewardConfig(
            model=str(llama_dir),
            data=str(data),
            output=str(tmp_path / "rm"),
            eval_fraction=0.34,
            device="cpu",
            progress=False,
            raw=True,
        )
    )
    out = trainer.train()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"] / 2
    assert rows[-1]["eval_accuracy"] >= 0.8
    v = verdict_for(trainer)
    assert v.figures["held_out_pairs"] == 20 and v.figures["ci95"][0] > 0.5
    assert not any("chance" in w for w in v.warnings)
    assert v.settings["steps"] == trainer.cfg.steps


def test_verdict_warns_on_random_labels(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", taste_pairs(40, shuffle_labels=True))
    trainer = RewardTrainer(
        RewardConfig(
            model=str(llama_dir),
            data=str(data),
            output=str(tmp_path / "rm"),
            steps=20,
            eval_fraction=0.5,
            device="cpu",
            progress=False,
            raw=True,
        )
    )
    trainer.train()
    v = verdict_for(trainer)
    assert any("at chance" in w for w in v.warnings) and any("too few votes" in w for w in v.warnings)
    assert v.to_dict()["ok"] is False


def test_accuracy_verdict_and_wilson_interval():
    lo, hi = wilson(27, 30)
    assert lo == pytest.approx(0.7438, abs=1e-3) and hi == pytest.approx(0.9654, abs=1e-3)  # closed form
    good = accuracy_verdict(300, 30, 0.9)
    assert good.ok and "learned" in good.summary
    chance = accuracy_verdict(300, 30, 0.6)
    assert any("at chance" in w for w in chance.warnings)
    assert any("held-out" in w for w in accuracy_verdict(10, 0, None).warnings)


def test_a_policy_collapsed_onto_one_template_is_caught_where_distinct_answers_miss_it():
    # QA: PPO learned the taste by writing "Baby bird fell out of its nest..." in 26 of 120 answers (3 of 120
    # before), every answer still distinct. The verdict's share of answers holding one 8-token passage
    # sees it: counted by hand here, each answer a unique opening token then its own tokens or the template.
    import random

    from tiankong.trainers.verdict import kl_words, shared_passage

    rng = random.Random(0)
    template = list(range(1000, 1012))  # a 12-token sentence

    def answers(with_template: int) -> list[list[int]]:
        out = []
        for i in range(120):
            own = [rng.randrange(100, 900) for _ in range(30)]
            out.append([i, *(own[:10] + template + own[10:] if i < with_template else own)])
        return out

    before, after = answers(3), answers(26)
    assert len({tuple(a) for a in after}) == 120  # all distinct: the old measure saw nothing
    assert shared_passage(before) == pytest.approx(3 / 120) and shared_passage(after) == pytest.approx(26 / 120)
    assert shared_passage([[1, 2, 3]]) == 0 and shared_passage([]) == 0  # shorter than a passage, none
    assert [kl_words(x) for x in (0.1, 2.1, 5.3, 12)] == [
        "hardly moved",
        "a small drift",
        "a moderate drift",
        "a large drift: read the answers",
    ]


def test_default_ppo_config_resolves_and_moves_the_policy(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", taste_pairs(24))
    rm = RewardTrainer(
        RewardConfig(
            model=str(llama_dir),
            data=str(data),
            output=str(tmp_path / "rm"),
            steps=10,
            eval_fraction=0,
            device="cpu",
            progress=False,
            raw=True,
        )
    ).train()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Story 1 about a cat:\nStory 2 about a pig:\n")
    trainer = PPOTrainer(
        PPOConfig(
            model=str(llama_dir),
            reward=str(rm),
            prompts=str(prompts),
            output=str(tmp_path / "ppo"),
            steps=3,
            batch_size=8,
            device="cpu",
            progress=False,
            raw=True,
        )
    )
    trainer.train()
    cfg = trainer.cfg
    assert cfg.lr == 2e-4 and cfg.num_mini_batches == 1 and 16 <= cfg.response_length <= 256
    assert set(trainer.auto.values) == {"lr", "num_mini_batches", "response_length"}
    v = verdict_for(trainer)
    assert v.figures["kl_to_reference"] > 0 and len(v.examples) == 2
    assert {"score_before", "score_after", "distinct_after", "eos_rate_after"} <= set(v.figures)
    assert {"shared_passage_before", "shared_passage_after"} <= set(v.figures)
    assert "sharing one 8-token passage" in v.summary
    assert any(words in v.summary for words in ("drift", "hardly moved"))  # the KL in words


def test_default_sft_and_dpo_configs_train(llama_dir, tmp_path):
    from tiankong.trainers.dpo import DPOConfig, DPOTrainer
    from tiankong.trainers.sft import SFTConfig, SFTTrainer

    convs = write_jsonl(
        tmp_path / "sft.jsonl",
        [{"prompt": f"Name animal {i}.", "completion": f"The {a} and the fox."} for i, a in enumerate(ANIMALS * 3)],
    )
    sft = SFTTrainer(
        SFTConfig(model=str(llama_dir), data=str(convs), output=str(tmp_path / "sft"), device="cpu", progress=False)
    )
    out = sft.train()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert sft.cfg.batch_size == 8 and sft.cfg.steps == 9 and rows[-1]["loss"] < 0.9 * rows[0]["loss"]  # 3 passes
    assert verdict_for(sft).ok

    data = write_jsonl(tmp_path / "p.jsonl", taste_pairs(40))
    dpo = DPOTrainer(
        DPOConfig(
            model=str(llama_dir),
            data=str(data),
            output=str(tmp_path / "dpo"),
            steps=15,
            eval_fraction=0.25,
            device="cpu",
            progress=False,
            raw=True,
        )
    )
    out = dpo.train()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert dpo.cfg.lr == 3e-4 and rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["eval_reward_accuracy"] > 0.5
    v = verdict_for(dpo)
    assert v.figures["implicit_reward_before"] < v.figures["implicit_reward_after"] and v.examples


def test_plot_of_a_single_point_says_so(tmp_path):
    from tiankong.trainers.metrics import plot_metrics

    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "loss": 0.5}) + "\n" + json.dumps({"step": 2, "loss": 0.4, "eval_accuracy": 0.9}) + "\n"
    )
    text = plot_metrics(tmp_path)
    assert "eval_accuracy: 0.9 at step 2 (one point, nothing to plot)" in text and "loss  (last 0.4" in text
