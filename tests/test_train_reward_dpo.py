"""Reward model and DPO: losses by hand, preference records -> ids, training moves every weight, files, CLI."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from helpers import cli, one_thread, torchrun  # noqa: F401 (one_thread is an autouse fixture)
from tiny_models import make_model

from tiankong.engine.engine import Engine
from tiankong.engine.errors import InputError
from tiankong.trainers.dpo import DPOConfig, DPOTrainer, dpo_loss, sequence_logprobs
from tiankong.trainers.preferences import Encoder, load_preferences, parse_record, split_groups
from tiankong.trainers.reward import RewardConfig, RewardModel, RewardTrainer, bradley_terry_loss


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("rm-llama"), "llama")


def softplus(x: float) -> float:  # -log sigmoid(-x)
    return math.log1p(math.exp(x))


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# Twelve independent pairs with an easy rule (foxes beat dogs) plus a 3-way ranking.
PAIRS = [{"prompt": f"Story {i}:", "chosen": " a happy fox ran", "rejected": " a sad dog sat"} for i in range(12)]
RANKING = [
    {"prompt": "Best pet?", "chosen": a, "rejected": b, "vote_id": 7}
    for a, b in [(" fox", " cat"), (" fox", " dog"), (" cat", " dog")]
]


# ---------------------------------------------------------------- losses by hand


def test_bradley_terry_loss_by_hand():
    rb, rw = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    torch.testing.assert_close(bradley_terry_loss(rb, rw), torch.tensor([softplus(-1.0), softplus(1.0)]))
    # margin 0.5: d = [0.5, -1.5]
    torch.testing.assert_close(bradley_terry_loss(rb, rw, margin=0.5), torch.tensor([softplus(-0.5), softplus(1.5)]))
    assert abs(softplus(-0.5) - 0.474077) < 1e-6 and abs(softplus(1.5) - 1.701413) < 1e-6
    # a kept tie (target 1/2) with d = 1: the mean of both directions
    tie = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), target=0.5)
    torch.testing.assert_close(tie, torch.tensor([0.5 * (softplus(-1.0) + softplus(1.0))]))


def test_dpo_loss_by_hand():
    # h = (-10 - -11) - (-12 - -11) = 2; beta 0.1 -> -log sigmoid(0.2) = 0.598139
    args = torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0])
    loss = dpo_loss(*args, beta=0.1)
    assert abs(float(loss) - 0.598139) < 1e-5
    smoothed = dpo_loss(*args, beta=0.1, label_smoothing=0.1)  # 0.9 * 0.598139 + 0.1 * 0.798139
    assert abs(float(smoothed) - 0.618139) < 1e-5


def test_sequence_logprobs_sum_the_response_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    tokens = torch.tensor([[1, 2, 3, 4, 5], [6, 5, 4, 0, 0]])
    starts, lengths = torch.tensor([2, 1]), torch.tensor([5, 3])
    lp = torch.log_softmax(logits, -1)
    want = [
        sum(float(lp[0, j - 1, tokens[0, j]]) for j in (2, 3, 4)),
        sum(float(lp[1, j - 1, tokens[1, j]]) for j in (1, 2)),
    ]
    torch.testing.assert_close(sequence_logprobs(logits, tokens, starts, lengths), torch.tensor(want))


# ---------------------------------------------------------------- records -> ids


def test_records_formats_groups_and_skips(llama_dir, tmp_path):
    enc = Encoder.from_folder(llama_dir, raw=True)
    eng = Engine.load(llama_dir, device="cpu")
    rows = [
        PAIRS[0],  # 1 standard
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": " fox"}],
            "rejected": [{"role": "assistant", "content": " dog"}],
        },  # 2 conversational
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},  # 3 implicit prompt
        {"prompt": "A", "chosen": " x", "rejected": " y", "tie": True},  # 4 tie: skipped
        {"prompt": "A", "chosen": " same", "rejected": " same"},  # 5 identical: skipped
        *RANKING,  # 6-8 one 3-way ranking
        {"prompt": "M", "chosen": " up", "rejected": " down", "margin": 2.5},  # 9 margin
    ]
    data = load_preferences(write_jsonl(tmp_path / "p.jsonl", rows), enc)
    assert data.n_pairs == 7 and len(data.groups) == 5
    assert data.skipped == {"tie/both-bad": [4], "identical chosen and rejected": [5]}
    assert "skipped 1 tie/both-bad (line 4: --tie-mode drop" in data.summary() and "line 5" in data.summary()
    ranking = next(g for g in data.groups if len(g.pairs) == 3)
    assert len(ranking.seqs) == 3  # three answers, each tokenized once
    # a sequence is the engine's prompt ids, then the answer, then EOS
    g = data.groups[0]
    seq, start = g.seqs[g.pairs[0].better], g.starts[g.pairs[0].better]
    assert seq[:start] == eng.encode(prompt="Story 0:", raw=True) and seq[-1] == enc.eos_id
    assert eng.tokenizer.decode(seq[:-1], skip_special_tokens=True) == "Story 0: a happy fox ran"
    assert parse_record(rows[2]) == ("The sky is", " blue.", " green.")  # the implicit prompt, cut at a space
    implicit = data.groups[2]
    assert eng.tokenizer.decode(implicit.seqs[0][:-1], skip_special_tokens=True) == "The sky is blue."
    assert parse_record(
        {
            "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
            "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}],
        }
    ) == ([{"role": "user", "content": "Q"}], "A", "B")
    assert [p.margin for g in data.groups for p in g.pairs][-1] == 2.5
    # soft ties keep the tie as a target-1/2 pair
    soft = load_preferences(tmp_path / "p.jsonl", enc, tie_mode="soft")
    assert sorted(p.target for g in soft.groups for p in g.pairs) == [0.5] + [1.0] * 7
    # held-out split takes whole groups
    train, held = split_groups(data.groups, 0.4, seed=0)
    assert len(held) == 2 and len(train) == 3


def test_a_rankings_export_trains_as_its_pairs(llama_dir, tmp_path):
    # QA: reward and dpo refused `tiankong prefs export --format rankings` ('no "chosen"'). A K-way
    # ranking is read as all the pairs it ranked, as `--format trl` exports them.
    enc = Encoder.from_folder(llama_dir, raw=True)
    answers = [{"text": t, "model": "m", "preset": "balanced"} for t in (" a fox", " a dog", " a cat")]
    conversation = [{"role": "user", "content": "Story:"}]
    ranked = {"prompt": "Story:", "conversation": conversation, "responses": answers, "outcome": "ranked"}
    rankings = [
        {**ranked, "ranking": [[2], [0], [1]]},  # cat > fox > dog
        {**ranked, "outcome": "tie", "ranking": [[0, 1, 2]]},  # three tied pairs, one line
    ]
    reference = [
        {"prompt": "Story:", "chosen": better, "rejected": worse}
        for better, worse in ((" a cat", " a fox"), (" a cat", " a dog"), (" a fox", " a dog"))
    ]
    ours = load_preferences(write_jsonl(tmp_path / "r.jsonl", rankings), enc)
    trl = load_preferences(write_jsonl(tmp_path / "t.jsonl", reference), enc)

    def pairs(data):
        return sorted((tuple(g.seqs[p.better]), tuple(g.seqs[p.worse]), p.target) for g in data.groups for p in g.pairs)

    assert pairs(ours) == pairs(trl) and len(ours.groups) == 1
    assert ours.skipped == {"tie/both-bad": [2]}  # the line once, not once per pair
    soft = load_preferences(tmp_path / "r.jsonl", enc, tie_mode="soft")
    assert sorted(p.target for g in soft.groups for p in g.pairs) == [0.5] * 3 + [1.0] * 3
    write_jsonl(tmp_path / "bad.jsonl", [{**ranked, "ranking": [[0], [1]]}])
    with pytest.raises(InputError, match=r'bad.jsonl line 1: "ranking" must be groups of response indices'):
        load_preferences(tmp_path / "bad.jsonl", enc)


def test_chat_template_rendering(llama_dir, tmp_path):
    folder = tmp_path / "chat"
    shutil.copytree(llama_dir, folder)
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{{ eos_token }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    enc, eng = Encoder.from_folder(folder), Engine.load(folder, device="cpu")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    seq, start = enc.pair(msgs, "Hello there")
    assert seq[:start] == eng.encode(messages=msgs)
    assert seq[-1] == enc.eos_id and eng.tokenizer.decode(seq[start:-1]) == "Hello there"  # "\n" after EOS dropped


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: invalid JSON"),
        ('{"prompt": "x", "chosen": "a"}', 'line 2: no "rejected"'),
        ('{"prompt": "x", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}', 'line 2: "prompt"'),
        ('{"prompt": "x", "chosen": "a", "rejected": "b", "margin": "big"}', 'line 2: "margin" must be a number'),
        ("[1, 2]", "line 2: expected a JSON object"),
    ],
)
def test_bad_rows_are_refused_with_their_line(llama_dir, tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [PAIRS[0], line])
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace('"', '"')):
        load_preferences(path, Encoder.from_folder(llama_dir, raw=True))


@pytest.mark.parametrize(
    "rows, message",
    [  # the fix is the one for the reason that skipped the records
        ([{"prompt": "A", "chosen": " x", "rejected": " y", "tie": True}], "no usable.*--tie-mode soft$"),
        ([{"prompt": "A" * 400, "chosen": " x", "rejected": " y"}], "no usable.*raise --max-length$"),
        ([{"prompt": "A", "chosen": " x", "rejected": " x"}], 'no usable.*different "chosen" and "rejected"$'),
        ([], "holds no records; put one preference pair per line"),  # was: 'give different "chosen"...'
        (["", " "], "holds no records"),
    ],
)
def test_nothing_usable_is_refused_with_its_fix(llama_dir, tmp_path, rows, message):
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(InputError, match=message):
        load_preferences(path, Encoder.from_folder(llama_dir, raw=True, max_length=64))


# ---------------------------------------------------------------- training


class Spy:
    """Keeps a copy of the trainable weights as setup() left them."""

    def setup(self):
        super().setup()
        self.initial = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}


class SpyReward(Spy, RewardTrainer):
    pass


class SpyDPO(Spy, DPOTrainer):
    pass


def assert_all_changed(trainer):
    now = dict(trainer.model.named_parameters())
    unchanged = [n for n, p in trainer.initial.items() if torch.equal(now[n].detach(), p)]
    assert not unchanged, f"not trained: {unchanged}"


def losses(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_reward_training_moves_every_weight_and_saves_a_normalised_model(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", PAIRS + RANKING)
    cfg = RewardConfig(
        model=str(llama_dir),
        data=str(data),
        output=str(tmp_path / "rm"),
        steps=8,
        batch_size=4,
        lr=2e-3,
        eval_fraction=0.25,
        device="cpu",
        progress=False,
        raw=True,
    )
    trainer = SpyReward(cfg)
    out = trainer.train()
    assert "head.weight" in trainer.initial and "base.output.weight" not in trainer.initial  # untied LM head: unused
    assert_all_changed(trainer)
    rows = losses(out)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["accuracy"] == 1.0
    assert 0 <= rows[-1]["eval_accuracy"] <= 1 and "eval_loss" in rows[-1]

    # files: a causal LM folder (transformers loads it) + the head + its config
    info = json.loads((out / "reward_config.json").read_text())
    assert info["head"]["in_features"] == 64 and info["base"]["architecture"] == "LlamaForCausalLM"
    assert info["step"] == 8 and info["eval_accuracy"] == rows[-1]["eval_accuracy"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    Engine.load(out, device="cpu")

    # normalisation: the training answers score mean 0, std 1
    rm = RewardModel.load(out, "cpu")
    seqs = [s for g in trainer.train_groups for s in g.seqs]
    with torch.no_grad():
        scores = rm.normalize(rm.raw_scores(seqs)).double()
    assert abs(float(scores.mean())) < 1e-4 and abs(float(scores.std()) - 1) < 1e-4
    fox, dog = rm.score(["Story 3:", "Story 3:"], [" a happy fox ran", " a sad dog sat"])
    assert fox > dog


def test_reward_resume_matches_uninterrupted(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", PAIRS + RANKING)

    def cfg(out, **kw):
        return RewardConfig(
            model=str(llama_dir),
            data=str(data),
            output=str(out),
            steps=4,
            batch_size=4,
            lr=1e-3,
            save_every=2,
            eval_fraction=0,
            device="cpu",
            progress=False,
            raw=True,
            **kw,
        )

    class Stop(Exception):
        pass

    class Interrupted(RewardTrainer):
        def checkpoint(self):
            super().checkpoint()
            if self.step == 2:
                raise Stop

    RewardTrainer(cfg(tmp_path / "a")).train()
    with pytest.raises(Stop):
        Interrupted(cfg(tmp_path / "b")).train()
    RewardTrainer(cfg(tmp_path / "b", resume=True)).train()
    a, b = RewardModel.load(tmp_path / "a", "cpu"), RewardModel.load(tmp_path / "b", "cpu")
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q, p, msg=n)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_dpo_moves_every_weight_and_prefers_chosen(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", PAIRS + RANKING)
    cfg = DPOConfig(
        model=str(llama_dir),
        data=str(data),
        output=str(tmp_path / "dpo"),
        steps=6,
        batch_size=4,
        lr=1e-3,
        beta=0.1,
        eval_fraction=0.25,
        device="cpu",
        progress=False,
        raw=True,
    )
    trainer = SpyDPO(cfg)
    out = trainer.train()
    assert_all_changed(trainer)
    rows = losses(out)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 1
    assert rows[0]["reward_margin"] == pytest.approx(0, abs=1e-5)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["reward_accuracy"] == 1.0
    assert rows[-1]["reward_chosen"] > rows[-1]["reward_rejected"]
    assert rows[-1]["eval_reward_accuracy"] > 0.5
    Engine.load(out, device="cpu")


# ---------------------------------------------------------------- CLI


def test_language_drift_by_hand():
    from tiankong.trainers.verdict import drift_warning, foreign_share, language_drift

    # Of the CJK characters and Latin words, the share in the script the prompt does not use.
    assert foreign_share("Tell me a story.", "Once upon a time, 小军 said hi.") == 2 / 8  # 小, 军 and 6 words
    assert foreign_share("用中文写一个故事。", "从前有一只小猫，名叫 Max。") == 1 / 10  # Max and 9 characters
    assert foreign_share("Tell me a story.", "Once upon a time.") == 0.0
    assert foreign_share("Tell me a story.", "...") == 0.0
    prompts = ["Tell me a story.", "Tell me a story.", "写一个故事。"]
    before = ["A cat sat.", "A dog 跑.", "小猫。"]  # CJK 0 and 1/3: 1/6; Latin 0
    after = ["猫猫", "A 狗.", "A cat."]  # CJK 1 and 1/2: 3/4; Latin 1
    assert language_drift(prompts, before, after) == {"cjk_in_answers": (1 / 6, 3 / 4), "latin_in_answers": (0, 1)}
    assert language_drift(prompts[:2], before[:2], after[:2]) == {"cjk_in_answers": (1 / 6, 3 / 4)}
    assert drift_warning("dpo", {"cjk_in_answers": (0.05, 0.14)}, 8.3, 3e-4) == []  # under DRIFT
    (dpo,) = drift_warning("dpo", {"cjk_in_answers": (0.087, 0.3), "latin_in_answers": (0.2, 0.08)}, 8.33, 2.9e-4)
    assert dpo == (
        "language drift: Chinese (CJK) text in answers to prompts without any 9% -> 30% of their text (fresh "
        "answers, before -> after), with KL 8.33 nats to the starting model; train again with a much higher "
        "--beta (such as 2; it holds the policy nearer the starting model) or a lower --lr (such as 5.8e-05)"
    )
    (ppo,) = drift_warning("ppo", {"latin_in_answers": (0.1, 0.4)}, 5.0, 2e-4)
    assert "English words in answers to Chinese prompts 10% -> 40%" in ppo and "higher --kl-coef" in ppo


def test_dpo_verdict_shows_prompts_as_written_and_warns_of_language_drift(llama_dir, tmp_path, monkeypatch):
    # QA: DPO made the bundled model answer English requests in Chinese (0/80 -> 40/80 answers), and the
    # verdict said ok with no warning; its table showed the template's markup ("<|user|> ... <|assistant|>").
    from tiankong.trainers import verdict

    folder = tmp_path / "chat"
    shutil.copytree(llama_dir, folder)
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    data = write_jsonl(tmp_path / "p.jsonl", PAIRS[:4])
    settings = dict(data=str(data), steps=1, batch_size=4, lr=1e-3, eval_fraction=0, device="cpu", progress=False)
    trainer = DPOTrainer(DPOConfig(model=str(folder), output=str(tmp_path / "dpo"), **settings))
    trainer.train()
    seen = []

    def drifted(prompts, before, after):
        seen.append(prompts)
        return {"cjk_in_answers": (0.0, 0.5)}

    monkeypatch.setattr(verdict, "language_drift", drifted)
    v = verdict.verdict_for(trainer)
    assert [ex["prompt"] for ex in v.examples] == ["Story 0:", "Story 1:", "Story 2:"]
    assert seen[0][:4] == ["Story 0:", "Story 1:", "Story 2:", "Story 3:"] and len(seen[0]) == verdict.N_FRESH
    assert (v.figures["cjk_in_answers_before"], v.figures["cjk_in_answers_after"]) == (0.0, 0.5)
    assert any(w.startswith("language drift: Chinese (CJK) text") and "0% -> 50%" in w for w in v.warnings)
    assert not v.ok


def test_cli_train_reward_then_score(monkeypatch, capsys, llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    rm = tmp_path / "rm"
    code, _, err = cli(
        monkeypatch,
        capsys,
        "train",
        "reward",
        "--model",
        llama_dir,
        "--data",
        data,
        "--output",
        rm,
        "--steps",
        3,
        "--batch-size",
        4,
        "--lr",
        1e-3,
        "--device",
        "cpu",
        "--raw",
        "--no-progress",
        "--tie-mode",
        "soft",
    )
    assert code == 0, err
    assert (rm / "reward_head.safetensors").is_file() and len(losses(rm)) == 3

    answers = write_jsonl(
        tmp_path / "answers.jsonl",
        [
            {"id": 1, "prompt": "Story 1:", "response": " a happy fox ran"},
            {"id": 2, "messages": [{"role": "user", "content": "Story 1:"}], "response": " a sad dog sat"},
        ],
    )
    code, out, err = cli(monkeypatch, capsys, "reward", "score", "--model", rm, "--input", answers, "--device", "cpu")
    assert code == 0, err
    recs = [json.loads(x) for x in out.splitlines()]
    assert [r["id"] for r in recs] == [1, 2] and all(isinstance(r["score"], float) for r in recs)
    scored = tmp_path / "scored.jsonl"
    code, _, err = cli(monkeypatch, capsys, "reward", "score", "-m", rm, "-i", answers, "-o", scored, "--device", "cpu")
    assert code == 0 and [json.loads(x)["score"] for x in scored.read_text().splitlines()] == [r["score"] for r in recs]

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "a"}])
    code, out, err = cli(monkeypatch, capsys, "reward", "score", "-m", rm, "-i", bad, "-o", tmp_path / "x.jsonl")
    assert code == 2 and "line 2" in err and "response" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_bad_preference_line_exits_2(monkeypatch, capsys, llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [PAIRS[0], PAIRS[1], "{oops"])
    code, _, err = cli(
        monkeypatch,
        capsys,
        "train",
        "dpo",
        "--model",
        llama_dir,
        "--data",
        data,
        "--output",
        tmp_path / "o",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 2 and "line 3: invalid JSON" in err and len(err.strip().splitlines()) == 1


def test_cli_help_lists_trainer_flags(monkeypatch, capsys):
    for name, flags in {
        "reward": ["--margin", "--tie-mode", "--eval-fraction", "--normalize"],
        "dpo": ["--beta", "--label-smoothing", "--tie-mode"],
        "ppo": [
            "--reward",
            "--prompts",
            "--kl-coef",
            "--response-length",
            "--temperature",
            "--missing-eos-penalty",
            "--whiten-rewards",
            "--ppo-epochs",
            "--num-mini-batches",
        ],
    }.items():
        monkeypatch.setenv("COLUMNS", "200")
        code, out, _ = cli(monkeypatch, capsys, "train", name, "--help")
        assert code == 0 and all(f in out for f in flags), (name, out)
        # QA: PPO listed --eval-every, which its help called "Not used"; the trainers that use it keep it.
        assert ("--eval-every" in out) == (name != "ppo"), (name, out)


# ---------------------------------------------------------------- data parallel


def test_reward_two_processes_match_one(llama_dir, tmp_path):
    """Each rank takes its slice of the global batch of rankings (groups of unequal size) and its micro-
    batches; the weights and metrics end where one process with the same global batch ends."""
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "p.jsonl", PAIRS + RANKING)
    settings = dict(
        model=llama_dir, data=data, steps=3, batch_size=5, micro_batch_size=1, lr=1e-3, eval_fraction=0.2, device="cpu"
    )
    RewardTrainer(
        RewardConfig(
            **{k: str(v) if k in ("model", "data") else v for k, v in settings.items()},
            output=str(tmp_path / "one"),
            raw=True,
            progress=False,
        )
    ).train()
    torchrun(
        [
            "reward",
            *[f"--{k.replace('_', '-')}={v}" for k, v in settings.items()],
            "--raw",
            "--no-progress",
            f"--output={tmp_path / 'two'}",
        ]
    )
    for name in ("model.safetensors", "reward_head.safetensors"):
        a, b = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5, msg=k)
    for ra, rb in zip(losses(tmp_path / "one"), losses(tmp_path / "two"), strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
