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
import subprocess
import sys

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


# ---------------------------------------------------------------- FSDP (--sharding fsdp)
# fully_shard per transformer block, then the root, over gloo on CPU. Gradients are reduce-scattered
# instead of all-reduced, so sums run in another order: the same 1e-5 tolerance as DDP above holds.


def test_sft_fsdp_two_processes_match_one_and_resume(tmp_path):
    """2 steps, then --resume to 4: the weights and AdamW moments come back from the checkpoint that
    rank 0 wrote from the gathered shards (a plain Hugging Face folder). Micro-batches of 1 give the
    ranks 2 and 1 forward passes a step: the second rank runs a zero-weighted one to keep step."""
    model = make_model(tmp_path / "m", "llama")
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in CHAT), encoding="utf-8")
    settings = dict(model=str(model), data=str(data), batch_size=3, micro_batch_size=1, lr=3e-3, device="cpu")
    settings.update(eval_fraction=0.2)
    one, fsdp = tmp_path / "one", tmp_path / "fsdp"
    SFTTrainer(SFTConfig(**settings, steps=2, output=str(one), progress=False)).train()
    SFTTrainer(SFTConfig(**settings, steps=4, output=str(one), resume=True, progress=False)).train()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    torchrun(["sft", *flags, "--steps=2", "--sharding=fsdp", "--no-progress", f"--output={fsdp}"])
    torchrun(["sft", *flags, "--steps=4", "--resume", "--sharding=fsdp", "--no-progress", f"--output={fsdp}"])
    compare(one, fsdp)
    assert json.loads((fsdp / "train_config.json").read_text())["sharding"] == "fsdp"


def test_reward_fsdp_two_processes_match_one(tmp_path):
    """Rankings of unequal size in micro-batches of 1 (3 and 2 per rank); the reward head and the
    base under FSDP end where one process ends, and so does the normalization all ranks compute."""
    from tiankong.trainers.reward import RewardConfig, RewardTrainer

    model = make_model(tmp_path / "m", "llama")
    data = tmp_path / "p.jsonl"
    pairs = [{"prompt": f"Story {i}:", "chosen": " a happy fox ran", "rejected": " a sad dog sat"} for i in range(12)]
    ranking = [
        {"prompt": "Best pet?", "chosen": a, "rejected": b, "vote_id": 7}
        for a, b in [(" fox", " cat"), (" fox", " dog"), (" cat", " dog")]
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in pairs + ranking), encoding="utf-8")
    settings = dict(
        model=str(model), data=str(data), steps=3, batch_size=5, micro_batch_size=1, lr=1e-3, eval_fraction=0.2
    )
    one, fsdp = tmp_path / "one", tmp_path / "fsdp"
    RewardTrainer(RewardConfig(**settings, device="cpu", output=str(one), raw=True, progress=False)).train()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    torchrun(["reward", *flags, "--device=cpu", "--raw", "--sharding=fsdp", "--no-progress", f"--output={fsdp}"])
    for name in ("model.safetensors", "reward_head.safetensors"):
        a, b = load_file(one / name), load_file(fsdp / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5, msg=k)
    na, nb = (json.loads((d / "reward_config.json").read_text())["normalization"] for d in (one, fsdp))
    assert nb["scale"] == pytest.approx(na["scale"], rel=1e-4) and nb["bias"] == pytest.approx(na["bias"], abs=1e-4)
    ra = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (fsdp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [1, 2, 3]
    for x, y in zip(ra, rb, strict=True):
        for k in ("loss", "accuracy", "eval_loss"):
            if k in x:
                assert y[k] == pytest.approx(x[k], rel=1e-4, abs=1e-5), (x["step"], k)


ENDING = """
import atexit, pathlib, sys
from tiankong.trainers import distributed
from tiankong.tui import cli
distributed._joined = sys.argv[2] == "joined"
marker = pathlib.Path(sys.argv[1])
atexit.register(lambda: marker.write_text("finalized"))
sys.argv = ["tiankong", *sys.argv[3:]]
if sys.argv[1:] == ["bug"]:  # a command that fails unexpectedly
    cli._register_subcommands = lambda argv: 1 / 0
cli.main()
"""


@pytest.mark.parametrize("joined", ["joined", "alone"])
@pytest.mark.parametrize("args, code", [(["presets"], 0), (["presets", "no-such"], 2), (["bug"], 1)])
def test_a_torchrun_process_ends_without_finalization(tmp_path, joined, args, code):
    """A process that joined a process group leaves by os._exit once its command is done, however it
    ends (no atexit handlers, no finalization: see distributed.leave), keeping the exit code and
    what it printed; any other process ends as usual."""
    marker = tmp_path / "finalized"
    proc = subprocess.run(
        [sys.executable, "-c", ENDING, marker, joined, *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == code, proc.stderr[-2000:]
    assert marker.exists() == (joined == "alone")
    if code == 0:
        assert "balanced" in proc.stdout and "precise" in proc.stdout  # flushed before os._exit
    elif code == 2:
        assert proc.stderr.startswith("error: preset must be one of"), proc.stderr
    else:
        assert proc.stderr.startswith("Traceback") and "ZeroDivisionError" in proc.stderr, proc.stderr
