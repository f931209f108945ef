"""Pretraining and SFT: data checks, hand-computed losses, answer masks, learning, resume, outputs, CLI.

Everything trains tiny models for a few steps on one CPU thread (two threads on a busy machine can
be many times slower than one for matrices this small).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import cli, one_thread  # noqa: F401 (one_thread is an autouse fixture)
from safetensors.torch import load_file
from tiny_models import CORPUS, STORIES, make_model

from tiankong.engine.errors import InputError
from tiankong.trainers.checkpoint import latest
from tiankong.trainers.data import load_conversations, load_texts, split_holdout
from tiankong.trainers.pretrain import SIZES, PretrainConfig, PretrainTrainer
from tiankong.trainers.sft import DEFAULT_CHAT_TEMPLATE, SFTConfig, SFTTrainer, tokenize_conversation
from tiankong.trainers.trainer_state import load_state

CHAT = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another?"},
            {"role": "assistant", "content": "Red, like a fox."},
        ]
    },
    {"prompt": "Who is Lily?", "completion": "Lily is a little girl who loves the park."},
    {"messages": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "2 + 3 = 5"}]},
    {"prompt": "Say hi in Chinese.", "completion": "你好 😀"},
]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("sft-llama"), "llama")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n<|endoftext|>\n".join(CORPUS[:5] * 4) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in CHAT), encoding="utf-8")
    return path


def pretrain_cfg(tmp_path, corpus, **kw):
    base = dict(
        output=str(tmp_path / "pre"),
        data=str(corpus),
        size="nano",
        vocab_size=400,
        seq_len=32,
        steps=12,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        eval_fraction=0.1,
        device="cpu",
        progress=False,
    )
    return PretrainConfig(**{**base, **kw})


def sft_cfg(tmp_path, model, data, **kw):
    base = dict(
        output=str(tmp_path / "sft"),
        model=str(model),
        data=str(data),
        steps=8,
        batch_size=4,
        lr=3e-3,
        device="cpu",
        progress=False,
    )
    return SFTConfig(**{**base, **kw})


def snapshot_after_setup(trainer):
    """Keep a copy of the initial weights once train() has built the model."""
    setup, snap = trainer.setup, {}

    def wrapped():
        setup()
        snap.update({k: v.detach().clone() for k, v in trainer.model.named_parameters()})

    trainer.setup = wrapped
    return snap


def rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def assert_learned(trainer, initial, history):
    assert history[-1]["loss"] < history[0]["loss"] - 0.5, [r["loss"] for r in history]
    params = dict(trainer.model.named_parameters())
    assert params and set(params) == set(initial)
    unchanged = [k for k, p in params.items() if torch.equal(p.detach(), initial[k])]
    assert not unchanged, f"parameters that did not change: {unchanged}"


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are 0 except 2.0 for token 0, so cross-entropy is known by hand."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, tokens, positions, mask=None):
        logits = torch.zeros(*tokens.shape, self.vocab)
        logits[..., 0] = 2.0
        return logits


def hand_nll(target, vocab):
    z = math.exp(2.0) + (vocab - 1)
    return -(2.0 - math.log(z)) if target == 0 else math.log(z)


# ---- data files


def test_text_data_forms_and_line_numbers(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\nline two\n<|endoftext|>\n\nsecond 中文\n<|endoftext|>\n", encoding="utf-8")
    assert load_texts(txt) == ["first doc\nline two", "second 中文"]
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "b.txt").write_text("bee")
    (tmp_path / "dir" / "sub" / "a.txt").write_text("ay")
    (tmp_path / "dir" / "skip.md").write_text("not text data")
    assert load_texts(tmp_path / "dir") == ["bee", "ay"]  # sorted by path: dir/b.txt < dir/sub/a.txt
    jl = tmp_path / "t.jsonl"
    jl.write_text('{"text": "one"}\n\n{"text": "two"}\n{"txt": "three"}\n')
    with pytest.raises(InputError, match=r"t.jsonl line 4: no \"text\" field"):
        load_texts(jl)
    jl.write_text('{"text": "one"}\n{"text": "two"\n')
    with pytest.raises(InputError, match=r"line 2: invalid JSON"):
        load_texts(jl)
    with pytest.raises(InputError, match="does not exist"):
        load_texts(tmp_path / "missing.txt")


def test_sft_data_refuses_the_file_at_the_first_bad_line(tmp_path):
    path = tmp_path / "chat.jsonl"
    good = json.dumps(CHAT[0])
    path.write_text(good + "\n" + json.dumps(CHAT[1]) + "\n")
    convs = load_conversations(path)
    assert [c.line for c in convs] == [1, 2]
    assert convs[1].messages == [
        {"role": "user", "content": "Who is Lily?"},
        {"role": "assistant", "content": "Lily is a little girl who loves the park."},
    ]
    bad = {
        '{"messages": [{"role": "user", "content": "hi"}]}': "no assistant message",
        '{"messages": [{"role": "user"}]}': 'has no "content"',
        '{"prompt": "hi"}': 'needs "messages"',
        '{"prompt": "hi", "completion": 3}': '"completion" must be a string',
        "[1, 2]": "expected a JSON object",
        '{"messages": ': "invalid JSON",
    }
    for line, why in bad.items():
        path.write_text(good + "\n\n" + line + "\n" + '{"also": "bad"}\n')
        with pytest.raises(InputError, match=r"chat.jsonl line 3: ") as e:
            load_conversations(path)
        assert why in str(e.value) and "\n" not in str(e.value)


def test_the_loss_verdict_of_one_step_says_step(tmp_path):
    from types import SimpleNamespace

    from tiankong.trainers.verdict import loss_verdict

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert loss_verdict(SimpleNamespace(out=tmp_path, name="sft")).summary == "training loss 2 -> 2 over 1 step."
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    assert loss_verdict(SimpleNamespace(out=tmp_path, name="sft")).summary == "training loss 2 -> 1.5 over 2 steps."


def test_sft_reads_sharegpt_conversations(tmp_path):
    # QA: a ShareGPT row ("conversations" of {"from", "value"}) got the generic "needs messages" error.
    path = tmp_path / "share.jsonl"
    turns = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]
    path.write_text(json.dumps({"conversations": turns}) + "\n" + json.dumps({"conversations": turns[1:2]}) + "\n")
    with pytest.raises(InputError, match=r"share.jsonl line 2: has no assistant message"):
        load_conversations(path)
    path.write_text(json.dumps({"conversations": turns}) + "\n")
    assert load_conversations(path)[0].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ]
    path.write_text(json.dumps({"conversations": [{"from": "tool", "value": "x"}]}) + "\n")
    with pytest.raises(InputError, match=r"line 1: \"conversations\" turn 1 is from 'tool'; ShareGPT turns are from"):
        load_conversations(path)


def test_holdout_split():
    train, held = split_holdout(100, 0.1, seed=3)
    assert len(held) == 10 and sorted(train + held) == list(range(100))
    assert split_holdout(100, 0.1, seed=3) == (train, held) and split_holdout(100, 0.1, seed=4)[1] != held
    assert split_holdout(5, 0.0, 0) == ([0, 1, 2, 3, 4], [])
    assert len(split_holdout(2, 0.9, 0)[0]) == 1  # always something left to train on


# ---- losses against hand-computed values


def test_pretrain_loss_by_hand(tmp_path, corpus):
    tr = PretrainTrainer(pretrain_cfg(tmp_path, corpus))
    tr.setup()
    V = tr.model_cfg.vocab_size
    tr.ddp_model = tr.model = FixedLogits(V)
    T = tr.cfg.seq_len
    items = [0, 3]
    loss, m = tr.loss(items)
    targets = [int(t) for i in items for t in tr.tokens[tr.train_blocks[i] * T + 1 : tr.train_blocks[i] * T + T + 1]]
    assert len(targets) == 2 * T
    assert float(loss) == pytest.approx(sum(hand_nll(t, V) for t in targets), rel=1e-6)
    assert m["accuracy"] == targets.count(0)  # argmax is always token 0
    assert tr.item_weight(0) == T  # so the logged loss is per token
    # Documents are [BOS] text [EOS], back to back.
    assert tr.tokens[0] == 1 and int((tr.tokens == 2).sum()) == 20 and int((tr.tokens == 1).sum()) == 20
    held = [int(t) for b in tr.eval_blocks for t in tr.tokens[b * T + 1 : b * T + T + 1]]
    ev = tr.evaluate()
    mean = sum(hand_nll(t, V) for t in held) / len(held)
    assert ev["eval_loss"] == pytest.approx(mean, rel=1e-6) and ev["eval_ppl"] == pytest.approx(math.exp(mean))


def test_sft_loss_by_hand(tmp_path, llama_dir, chat_file):
    tr = SFTTrainer(sft_cfg(tmp_path, llama_dir, chat_file))
    tr.setup()
    V = tr.model_cfg.vocab_size
    tr.ddp_model = FixedLogits(V)
    items = [0, 1]  # different lengths: the shorter one is padded
    loss, m = tr.loss(items)
    expected, count = 0.0, 0
    for i in items:
        ids, mask = tr.examples[tr.train_ids[i]]
        for pos in range(1, len(ids)):
            if mask[pos]:
                expected += hand_nll(ids[pos], V)
                count += 1
        assert tr.item_weight(i) == sum(mask[1:])
    assert count == tr.item_weight(0) + tr.item_weight(1) > 0
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_sft_logged_loss_is_the_mean_over_answer_tokens(tmp_path, llama_dir, chat_file):
    """Step 1's logged loss = mean CE over every answer token of the batch, computed one row at a time."""
    from tiankong.engine.model import load_model

    tr = SFTTrainer(sft_cfg(tmp_path, llama_dir, chat_file, steps=1, micro_batch_size=1))
    tr.train()
    model, _ = load_model(llama_dir, "cpu", "float32")
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask in tr.examples:
            x = torch.tensor([ids])
            logp = torch.log_softmax(model(x, torch.arange(len(ids))[None])[0].double(), -1)
            for pos in range(1, len(ids)):
                if mask[pos]:
                    total -= float(logp[pos - 1, ids[pos]])
                    count += 1
    assert rows(tr.out)[0]["loss"] == pytest.approx(total / count, rel=1e-5)


# ---- the SFT answer mask


def spans(ids, mask):
    out, cur = [], []
    for i, m in zip(ids, mask, strict=True):
        if m:
            cur.append(i)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


TWO_TURNS = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell a joke."},
    {"role": "assistant", "content": "No."},
]


def test_sft_mask_default_template(llama_dir):
    from tiankong.engine.chat import ChatTemplate
    from tiankong.engine.tokenizer import load_tokenizer

    tok = load_tokenizer(llama_dir)
    ids, mask = tokenize_conversation(ChatTemplate(DEFAULT_CHAT_TEMPLATE, "<s>", "</s>"), tok, TWO_TURNS)
    # This test tokenizer (legacy Llama style) puts "▁" before the text after each special token,
    # hence the " " after <s> and </s>.
    assert tok.decode(ids) == (
        "<s> <|user|>\nHi there\n<|assistant|>\nHello! How can I help?</s>"
        " <|user|>\nTell a joke.\n<|assistant|>\nNo.</s>"
    )
    assert [tok.decode(s) for s in spans(ids, mask)] == ["Hello! How can I help?</s>", "No.</s>"]
    prompt_part = [i for i, m in zip(ids, mask, strict=True) if not m]
    assert tok.decode(prompt_part) == "<s> <|user|>\nHi there\n<|assistant|>\n <|user|>\nTell a joke.\n<|assistant|>\n"


def test_sft_mask_chatml_template_from_file(tmp_path, llama_dir):
    chatml = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    (tmp_path / "chatml.jinja").write_text(chatml)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": TWO_TURNS}) + "\n")
    tr = SFTTrainer(sft_cfg(tmp_path, llama_dir, data, chat_template=str(tmp_path / "chatml.jinja")))
    tr.setup()
    ids, mask = tr.examples[0]
    # (" \n": this tokenizer puts "▁" before the text after a special token, see above)
    assert [tr.tokenizer.decode(s) for s in spans(ids, mask)] == [
        "Hello! How can I help?<|im_end|> \n",
        "No.<|im_end|> \n",
    ]
    tr.step = 1
    tr.save(tmp_path / "saved")
    assert (tmp_path / "saved" / "chat_template.jinja").read_text() == chatml


def test_sft_truncation_and_template_errors_name_the_line(tmp_path, llama_dir, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(CHAT[1]) + "\n" + json.dumps({"prompt": "word " * 200, "completion": "ok"}) + "\n")
    with pytest.raises(InputError, match=r"d.jsonl line 2: no answer token within the first 64 tokens"):
        SFTTrainer(sft_cfg(tmp_path, llama_dir, data, max_len=64)).setup()
    # A conversation cut at --max-len is said, in one line with its count and lines (QA: it was silent).
    long = {"prompt": "Who is Lily?", "completion": "word " * 200}
    data.write_text("".join(json.dumps(r) + "\n" for r in (CHAT[1], long, long)))
    SFTTrainer(sft_cfg(tmp_path, llama_dir, data, max_len=64)).setup()
    said = [line for line in capsys.readouterr().err.splitlines() if "--max-len" in line]
    assert said == [f"{data}: cut 2 of 3 conversations at the end to --max-len 64 tokens (lines 2, 3)"]
    strict = tmp_path / "strict.jinja"
    strict.write_text(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    data.write_text(json.dumps(CHAT[1]) + "\n" + json.dumps(CHAT[0]) + "\n")
    with pytest.raises(InputError, match=r"d.jsonl line 2: .*user first"):
        SFTTrainer(sft_cfg(tmp_path, llama_dir, data, chat_template=str(strict))).setup()


# ---- learning, and the outputs load elsewhere


def test_pretrain_new_model_learns_and_loads_in_tiankong_and_transformers(tmp_path, corpus):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiankong.engine.engine import Engine

    tr = PretrainTrainer(pretrain_cfg(tmp_path, corpus, steps=15))
    initial = snapshot_after_setup(tr)
    out = tr.train()
    history = rows(out)
    assert [r["step"] for r in history] == list(range(1, 16))
    assert_learned(tr, initial, history)
    last = history[-1]
    assert last["eval_ppl"] == pytest.approx(math.exp(last["eval_loss"])) and last["eval_loss"] < 5.0
    assert tr.model_cfg.tie_embeddings and tr.model_cfg.dim == SIZES["nano"]["dim"]

    engine = Engine.load(out, device="cpu")
    hf_tok = AutoTokenizer.from_pretrained(out)
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    for text in ["Once upon a time", "def add(a, b):\n    return a + b", "敏捷的棕色狐狸 😀 12345"]:
        ids = engine.tokenizer.encode(text)
        assert ids == hf_tok(text).input_ids and ids[0] == 1
        assert hf_tok.decode(ids, skip_special_tokens=True) == text == engine.tokenizer.decode(ids, True)
        x = torch.tensor([ids])
        with torch.no_grad():
            ours = engine.model(x, torch.arange(len(ids))[None])
            theirs = hf(x).logits
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True


def test_autocast_matches_float32_closely(tmp_path, corpus):
    full = rows(PretrainTrainer(pretrain_cfg(tmp_path, corpus, steps=2, output=str(tmp_path / "f32"))).train())
    fast = PretrainTrainer(pretrain_cfg(tmp_path, corpus, steps=2, output=str(tmp_path / "bf16"), autocast=True))
    out = fast.train()
    assert next(fast.model.parameters()).dtype == torch.float32  # weights stay float32
    half = rows(out)
    assert half[0]["loss"] == pytest.approx(full[0]["loss"], rel=2e-2)
    assert half[-1]["eval_loss"] == pytest.approx(full[-1]["eval_loss"], rel=2e-2)


def test_pretrain_continues_a_checkpoint(tmp_path, corpus, llama_dir):
    from tiankong.engine.engine import Engine

    tr = PretrainTrainer(pretrain_cfg(tmp_path, corpus, model=str(llama_dir), steps=8, seq_len=24, lr=1e-2))
    initial = snapshot_after_setup(tr)
    out = tr.train()
    assert_learned(tr, initial, rows(out))
    assert (out / "tokenizer.json").read_text() == (llama_dir / "tokenizer.json").read_text()
    assert not (out / "tokenizer.model").exists()
    Engine.load(out, device="cpu")


def test_sft_learns_and_saves_the_default_template(tmp_path, llama_dir, chat_file):
    from transformers import AutoTokenizer

    from tiankong.engine.engine import Engine

    tr = SFTTrainer(sft_cfg(tmp_path, llama_dir, chat_file, steps=10, lr=1e-2))
    initial = snapshot_after_setup(tr)
    out = tr.train()
    assert_learned(tr, initial, rows(out))
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == DEFAULT_CHAT_TEMPLATE
    engine = Engine.load(out, device="cpu")
    hf_tok = AutoTokenizer.from_pretrained(out)
    msgs = TWO_TURNS[:3]
    ours = engine.template.render(msgs, add_generation_prompt=True)
    assert ours == hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert ours.endswith("<|user|>\nTell a joke.\n<|assistant|>\n")
    assert engine.encode(messages=msgs) == list(
        hf_tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
    )


@pytest.mark.skipif(not STORIES.exists(), reason="stories260K checkpoint not present")
def test_sft_smoke_on_stories260k(tmp_path, chat_file):
    from tiankong.engine.engine import Engine

    tr = SFTTrainer(sft_cfg(tmp_path, STORIES, chat_file, steps=6, eval_fraction=0.25))
    out = tr.train()
    history = rows(out)
    assert history[-1]["loss"] < history[0]["loss"] and "eval_loss" in history[-1]
    engine = Engine.load(out, device="cpu")
    assert engine.template is not None and engine.cfg.tie_embeddings
    ids = engine.encode(messages=[{"role": "user", "content": "Who is Lily?"}])
    assert engine.tokenizer.decode(ids) == "<s><|user|>\nWho is Lily?\n<|assistant|>\n"


# ---- resume


class Interrupted(Exception):
    pass


def interrupt_at(trainer, step):
    """Die when step `step` + 1 starts: its row is logged but the last checkpoint is older."""
    train_step = trainer.train_step

    def wrapped(batch):
        if trainer.step == step:
            raise Interrupted
        return train_step(batch)

    trainer.train_step = wrapped
    return trainer


def assert_same_run(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-9), (x["step"], k)


@pytest.mark.parametrize("kind", ["pretrain", "sft"])
def test_resume_matches_an_uninterrupted_run(tmp_path, corpus, llama_dir, chat_file, kind):
    N, K = 6, 2

    def make(out, resume=False):
        if kind == "pretrain":
            cfg = pretrain_cfg(tmp_path, corpus, output=str(out), steps=N, save_every=K, eval_every=3, resume=resume)
            return PretrainTrainer(cfg)
        cfg = sft_cfg(
            tmp_path,
            llama_dir,
            chat_file,
            output=str(out),
            steps=N,
            batch_size=3,
            save_every=K,
            micro_batch_size=2,
            resume=resume,
        )
        return SFTTrainer(cfg)

    whole = make(tmp_path / "whole").train()
    with pytest.raises(Interrupted):
        interrupt_at(make(tmp_path / "cut"), K + 1).train()
    assert [r["step"] for r in rows(tmp_path / "cut")] == [1, 2, 3]  # one row past the checkpoint
    assert load_state(latest(tmp_path / "cut"))["step"] == K
    resumed = make(tmp_path / "cut", resume=True).train()
    assert_same_run(whole, resumed)
    # Two saves after the resume: the second no longer has the checkpoint it resumed from to copy
    # the tokenizer from (pretrain's was trained on the run's data and exists nowhere else).
    for folder in (resumed, latest(tmp_path / "cut")):
        names = sorted(p.name for p in folder.iterdir())
        assert {"tokenizer.json", "tokenizer.model"} & set(names) and "tokenizer_config.json" in names, names
    with pytest.raises(InputError, match="no checkpoint"):
        make(tmp_path / "empty", resume=True).train()


def test_pretrain_checks_seq_len_against_the_checkpoint(tmp_path, corpus, llama_dir):
    with pytest.raises(InputError, match="longer than the model's context"):
        PretrainTrainer(pretrain_cfg(tmp_path, corpus, model=str(llama_dir), seq_len=1000)).setup()


def test_cli_pretrain_help_lists_the_flags(monkeypatch, capsys):
    code, out, _ = cli(monkeypatch, capsys, "train", "pretrain", "--help")
    assert code == 0
    for flag in (
        "--data",
        "--model",
        "--size",
        "--vocab-size",
        "--seq-len",
        "--eval-fraction",
        "--steps",
        "--batch-size",
        "--lr",
        "--resume",
        "--save-every",
        "--output",
    ):
        assert flag in out, flag
    code, out, _ = cli(monkeypatch, capsys, "train", "sft", "--help")
    assert code == 0 and "--chat-template" in out and "--max-len" in out


def test_cli_sft_run_and_bad_line(monkeypatch, capsys, tmp_path, llama_dir, chat_file):
    out_dir = tmp_path / "cli-sft"
    code, out, err = cli(
        monkeypatch,
        capsys,
        "train",
        "sft",
        "--model",
        llama_dir,
        "--data",
        chat_file,
        "--output",
        out_dir,
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 0, err
    assert len(rows(out_dir)) == 3 and (out_dir / "model.safetensors").exists()
    assert f"saved to {out_dir}" in err

    bad = tmp_path / "bad.jsonl"
    bad.write_text(chat_file.read_text() + '{"prompt": "no completion"}\n')
    code, out, err = cli(
        monkeypatch,
        capsys,
        "train",
        "sft",
        "--model",
        llama_dir,
        "--data",
        bad,
        "--output",
        tmp_path / "never",
        "--steps",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "line 5" in lines[0] and "bad.jsonl" in lines[0], err
    assert not (tmp_path / "never" / "model.safetensors").exists()


def test_a_save_never_writes_a_folder_without_its_tokenizer(tmp_path, llama_dir):
    # What lost a resumed run's tokenizer: a save that found none to copy wrote the folder anyway.
    from tiankong.engine.errors import ModelLoadError
    from tiankong.engine.model import load_model, save_pretrained

    model, cfg = load_model(llama_dir, device="cpu", dtype="float32")
    empty = tmp_path / "gone"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"no tokenizer in .*gone to copy"):
        save_pretrained(model, cfg, tmp_path / "out", tokenizer_from=empty)
    assert not (tmp_path / "out").exists()
