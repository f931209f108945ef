"""Data parallelism: two gloo processes under torchrun end where one process with the same global batch does.

Adam divides each gradient element by its running RMS, so float rounding from a different summation
order (two processes, micro-batches) can move an element with a near-zero gradient by a good part
of lr; modest learning rates keep those elements inside the 1e-5 tolerance.

Each case launches `torchrun --standalone --nproc_per_node 2 -m tiankong.tui.cli train ...` (standalone
picks a free port itself) and runs the same config in this process, then compares the saved weights
and the logged metrics.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import one_thread, torchrun  # noqa: F401 (one_thread is an autouse fixture)
from safetensors.torch import load_file
from tiny_models import CORPUS, make_model

from tiankong.trainers.pretrain import PretrainConfig, PretrainTrainer
from tiankong.trainers.sft import SFTConfig, SFTTrainer

CHAT = [
    {
        "messages": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another?"},
            {"role": "assistant", "content": "Red, like a fox."},
        ]
    },
    {"prompt": "Who is Lily?", "completion": "Lily is a little girl who loves to play in the park."},
    {"prompt": "Add 2 and 3.", "completion": "5"},
    {"prompt": "Say hi in Chinese.", "completion": "你好 😀"},
    {"prompt": "What does a language model do?", "completion": "It predicts the next token."},
]


def compare(single, ddp):
    a, b = load_file(single / "model.safetensors"), load_file(ddp / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5, msg=k)
    ra = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for k in ("loss", "accuracy", "eval_loss"):
            if k in x:
                assert y[k] == pytest.approx(x[k], rel=1e-5), (x["step"], k)
    assert ra[-1]["loss"] < ra[0]["loss"]  # it trained


def test_pretrain_two_processes_match_one(tmp_path):
    """A new model: rank 0 trains the tokenizer, both ranks then build the same model; 2 + 2 blocks a step."""
    data = tmp_path / "corpus.txt"
    data.write_text("\n<|endoftext|>\n".join(CORPUS[:5] * 4), encoding="utf-8")
    settings = dict(
        data=str(data),
        size="nano",
        vocab_size=400,
        seq_len=32,
        steps=5,
        batch_size=4,
        lr=1e-3,
        warmup_steps=1,
        eval_fraction=0.1,
        device="cpu",
        save_every=2,
    )
    ddp = tmp_path / "ddp"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    torchrun(["pretrain", *flags, "--micro-batch-size=1", "--no-progress", f"--output={ddp}"])
    single = PretrainTrainer(PretrainConfig(**settings, output=str(tmp_path / "one"), progress=False)).train()
    assert (ddp / "tokenizer.model").read_bytes() == (single / "tokenizer.model").read_bytes()
    compare(single, ddp)


def test_sft_two_processes_match_one(tmp_path):
    """Uneven slices (2 + 1 conversations) with different answer lengths: the loss is still the mean
    over the global batch's answer tokens, so the gradient matches one process exactly."""
    model = make_model(tmp_path / "m", "llama")
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in CHAT), encoding="utf-8")
    settings = dict(model=str(model), data=str(data), steps=4, batch_size=3, lr=3e-3, device="cpu", eval_fraction=0.2)
    ddp = tmp_path / "ddp"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    torchrun(["sft", *flags, "--no-progress", f"--output={ddp}"])
    single = SFTTrainer(SFTConfig(**settings, output=str(tmp_path / "one"), progress=False)).train()
    compare(single, ddp)
