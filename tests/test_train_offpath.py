"""Trainers off the happy path (QA pass 9): a full disk during a save, a loss that goes NaN, a
starting model holding NaN weights, out-of-range schedule settings, a torchrun peer that dies, and
`train plot --width 0`. Each ends in one line (and the right exit code), never a traceback or an abort.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import cli, one_thread  # noqa: F401 (autouse)
from test_hostile_trainers import CHAT, one_line_error, sft
from tiny_models import make_model

from tiankong.trainers import checkpoint as ckpt

PAIRS = [{"prompt": f"Story {i}:", "chosen": " a happy fox ran", "rejected": " a sad dog sat"} for i in range(6)]
NO_SPACE = "Error while serializing: I/O error: No space left on device (os error 28)"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("offpath-llama"), "llama")


@pytest.fixture
def chat(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text((json.dumps(CHAT) + "\n") * 4)
    return data


# --- 1. a full disk while safetensors writes ------------------------------------------------------


def _full_disk_after(monkeypatch, calls: int) -> None:
    """safetensors' save_file succeeds `calls` times, then fails as on a full disk: its SafetensorError
    is no OSError (the errno is only in the text)."""
    import safetensors.torch
    from safetensors import SafetensorError

    real, done = safetensors.torch.save_file, [0]

    def save_file(*args, **kw):
        done[0] += 1
        if done[0] > calls:
            raise SafetensorError(NO_SPACE)
        return real(*args, **kw)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def test_a_full_disk_at_the_final_save_is_one_line_and_keeps_the_checkpoint(
    llama_dir, chat, tmp_path, monkeypatch, capsys
):
    """Step 1's checkpoint writes its model and its state (2 files); the final save's model fails."""
    out = tmp_path / "out"
    _full_disk_after(monkeypatch, 2)
    code, _, err = cli(monkeypatch, capsys, *sft(llama_dir, chat, out, "--save-every", "1"))
    one_line_error(code, err, "cannot write a checkpoint into", "the disk is full", "the previous checkpoint is kept")
    assert ckpt.latest(out).name == "step-000001"
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_a_full_disk_in_any_trainers_save_is_the_checkpoint_error(tmp_path):
    """Every trainer saves through checkpoint.write: a SafetensorError from its save (the model, a
    reward head) is the one-line InputError, the staging folder removed."""
    from safetensors import SafetensorError

    from tiankong.engine.errors import InputError

    def save_model(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise SafetensorError(NO_SPACE)

    with pytest.raises(InputError, match="the disk is full.*the previous checkpoint is kept"):
        ckpt.write(tmp_path, 3, save_model, {"step": 3})
    assert list((tmp_path / "checkpoints").iterdir()) == []


# --- 2. a loss that goes NaN or inf ---------------------------------------------------------------


def _plot(tmp_path: Path, losses: list[str], *extra: str) -> subprocess.CompletedProcess:
    """`tiankong train plot` in a child process: plotext aborts the whole process on a NaN."""
    rows = [f'{{"step": {i + 1}, "loss": {v}}}' for i, v in enumerate(losses)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    return subprocess.run(
        [sys.executable, "-m", "tiankong.tui.cli", "train", "plot", str(tmp_path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "losses,note",
    [
        (["3.9", "6.2", "5.0", "NaN"], "1 non-finite point from step 4 not drawn"),
        (["3.9", "Infinity"], "nothing to plot; 1 non-finite point from step 2 not drawn"),
        (["NaN", "NaN"], "no finite value"),
    ],
)
def test_plot_skips_non_finite_points_and_says_so(tmp_path, losses, note):
    proc = _plot(tmp_path, losses)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert note in proc.stdout


def _finished(tmp_path: Path, losses: list[float], name: str = "sft") -> SimpleNamespace:
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i + 1, "loss": v}) + "\n" for i, v in enumerate(losses))
    )
    return SimpleNamespace(name=name, out=tmp_path, cfg=SimpleNamespace(lr=1e6, seed=0))


def test_a_diverged_loss_gets_one_warning_to_lower_the_lr(tmp_path):
    from tiankong.trainers.verdict import fresh_answers, verdict_for

    v = verdict_for(_finished(tmp_path, [3.9, 6.2, float("nan")]))
    assert v.warnings == ["the loss diverged at step 3: train again with a lower --lr (a tenth of 1e+06, say)"]
    assert v.figures["diverged_at_step"] == 3
    # a DPO or PPO run that diverged samples nothing from its NaN model
    assert fresh_answers(_finished(tmp_path, [0.7, float("inf")], "dpo")) == 0


def test_a_loss_not_finite_from_step_one_never_says_raise_the_lr(tmp_path):
    from tiankong.trainers.verdict import verdict_for

    v = verdict_for(_finished(tmp_path, [float("nan")] * 3))
    assert len(v.warnings) == 1 and "--lr" not in v.warnings[0]
    assert "non-finite values" in v.warnings[0] and "--model" in v.warnings[0]


def test_a_run_whose_loss_diverges_writes_its_verdict(llama_dir, chat, tmp_path):
    """The whole CLI in a child process (a plotext abort would end pytest): exit 0, verdict.json
    written, and --resume of the finished run writes it again."""
    out = tmp_path / "out"
    args = [str(a) for a in sft(llama_dir, chat, out, "--lr", "1e9", "--steps", "4")]
    for extra in ([], ["--resume"]):
        (out / "verdict.json").unlink(missing_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "tiankong.tui.cli", *args, *extra], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert any(r["loss"] != r["loss"] for r in rows), rows  # it did diverge (NaN)
        verdict = json.loads((out / "verdict.json").read_text())
        assert len(verdict["warnings"]) == 1 and "lower --lr" in verdict["warnings"][0]
        assert [x for x in proc.stderr.splitlines() if x.startswith("warning:")] == [
            f"warning: {verdict['warnings'][0]}"
        ]


# --- 3. a starting model holding NaN weights ------------------------------------------------------


@pytest.fixture(scope="module")
def nan_dir(tmp_path_factory):
    from safetensors.torch import load_file, save_file

    folder = make_model(tmp_path_factory.mktemp("offpath-nan"), "llama")
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if "layers.0.mlp.down_proj" in k)
    weights[name][0, 0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("trainer", ["sft", "reward", "dpo"])
def test_a_model_with_nan_weights_is_refused_before_training(nan_dir, chat, tmp_path, monkeypatch, capsys, trainer):
    out = tmp_path / "out"
    if trainer == "sft":
        args = sft(nan_dir, chat, out)
    else:
        data = tmp_path / "pairs.jsonl"
        data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
        args = ["train", trainer, "--model", nan_dir, "--data", data, "--output", out, "--steps", "2"]
        args += ["--device", "cpu", "--no-progress"]
    code, _, err = cli(monkeypatch, capsys, *args)
    one_line_error(code, err, f"the --model {nan_dir}", "holds NaN values", "re-download or re-convert")
    assert not out.exists()


# --- 4. out-of-range schedule and optimizer settings ----------------------------------------------


@pytest.mark.parametrize(
    "trainer,flag,value,needle",
    [
        ("sft", "--min-lr-ratio", "-2", "--min-lr-ratio must be in [0, 1]"),
        ("sft", "--min-lr-ratio", "5", "--min-lr-ratio must be in [0, 1]"),
        ("sft", "--warmup-steps", "-3", "--warmup-steps must be >= 0, got -3"),
        ("reward", "--warmup-steps", "-1", "--warmup-steps must be >= 0, got -1"),
        ("dpo", "--weight-decay", "-1", "--weight-decay must be >= 0"),
        ("sft", "--weight-decay", "-0.5", "--weight-decay must be >= 0"),
        ("pretrain", "--min-lr-ratio", "1.5", "--min-lr-ratio must be in [0, 1]"),
        # The flag as typed, and "0 = auto" wherever --help says 0 means auto (and only there).
        ("sft", "--steps", "-1", "--steps must be at least 1 (or 0 = auto), got -1"),
        ("dpo", "--batch-size", "-3", "--batch-size must be at least 1 (or 0 = auto), got -3"),
        ("reward", "--lr", "-1", "--lr must be > 0 (or 0 = auto), got -1.0"),
        ("pretrain", "--steps", "-1", "--steps must be at least 1 (or 0 = auto), got -1"),
        ("pretrain", "--lr", "-1", "--lr must be > 0, got -1.0"),
        ("pretrain", "--batch-size", "0", "--batch-size must be at least 1, got 0"),
        ("sft", "--micro-batch-size", "-1", "--micro-batch-size must be >= 0, got -1"),
    ],
)
def test_out_of_range_settings_are_one_line_before_the_output(
    llama_dir, chat, tmp_path, monkeypatch, capsys, trainer, flag, value, needle
):
    out = tmp_path / "out"
    args = ["train", trainer, "--data", chat, "--output", out, "--device", "cpu", "--no-progress", flag, value]
    if trainer != "pretrain":
        args += ["--model", llama_dir]
    code, _, err = cli(monkeypatch, capsys, *args)
    one_line_error(code, err, needle)
    assert not out.exists()


def test_pretrain_keeps_minus_one_as_auto_warmup():
    from tiankong.trainers.pretrain import PretrainConfig

    PretrainConfig(data="x.txt", warmup_steps=-1).validate()
    with pytest.raises(Exception, match=r"--warmup-steps must be >= 0 \(or -1 = auto\), got -2"):
        PretrainConfig(data="x.txt", warmup_steps=-2).validate()


# --- 5. a torchrun peer that dies -----------------------------------------------------------------

GLOO = (
    "[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:28323. "
    "This is typically caused by a remote worker crashing."
)


def test_a_lost_peer_is_one_line_with_the_resume_command(llama_dir, chat, tmp_path, monkeypatch, capsys):
    """A rank of a torchrun run whose collective fails because another rank died: one line naming the
    checkpoint kept and the torchrun command to resume, not gloo's traceback."""
    from tiankong.trainers import common, distributed

    out = tmp_path / "out"
    code, _, err = cli(monkeypatch, capsys, *sft(llama_dir, chat, out, "--save-every", "1", "--steps", "1"))
    assert code == 0, err

    def train(self):  # resumed at step 1, then a collective of a longer run fails
        raise RuntimeError(GLOO)

    monkeypatch.setattr(common.Trainer, "train", train)
    monkeypatch.setattr(distributed, "_joined", True)
    monkeypatch.setattr(distributed, "leave", lambda c: sys.exit(c))  # not os._exit: pytest runs on
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "init_distributed", lambda device="auto": distributed.Dist(0, 1, 0, "cpu"))
    monkeypatch.setattr(common, "init_distributed", lambda device="auto": distributed.Dist(0, 1, 0, "cpu"))
    code, _, err = cli(monkeypatch, capsys, *sft(llama_dir, chat, out, "--steps", "3", "--resume"))
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert lines[0].startswith("error: another process of this run stopped")
    assert f"the checkpoint {out / 'checkpoints' / 'step-000001'} is kept" in lines[0]
    assert "resume with: the same torchrun command with --resume: torchrun --nproc_per_node 2" in lines[0]


def test_only_a_lost_peer_counts_as_one(monkeypatch):
    from tiankong.trainers import distributed

    monkeypatch.setattr(distributed, "_joined", True)
    assert distributed.peer_lost(RuntimeError(GLOO))
    assert not distributed.peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not distributed.peer_lost(ValueError(GLOO))
    monkeypatch.setattr(distributed, "_joined", False)
    assert not distributed.peer_lost(RuntimeError(GLOO))


# --- 8. train plot --width ------------------------------------------------------------------------


@pytest.mark.parametrize("width", ["0", "-5", "3"])
def test_plot_width_below_a_readable_minimum_is_refused(tmp_path, monkeypatch, capsys, width):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 3.9}\n{"step": 2, "loss": 3.1}\n')
    code, out, err = cli(monkeypatch, capsys, "train", "plot", tmp_path, "--width", width)
    one_line_error(code, err, "--width must be at least 20", f"got {width}")
    assert out == ""


def test_a_document_on_one_huge_line_is_encoded_a_piece_at_a_time():
    # QA: a corpus that is one 20 MB line took 2.3 GB to tokenize (0.6 GB in lines): the tokenizer's
    # work grows with the text of one encode call. A long document goes in pieces cut at spaces or
    # newlines, and (for this byte-level BPE) the ids are those of one long encode.
    from tiankong.engine.resolve import resolve_model
    from tiankong.engine.tokenizer import load_tokenizer
    from tiankong.trainers.corpus import encode_documents

    tokenizer = load_tokenizer(resolve_model(None))
    doc = "Once upon a time, Tom went to the park.\nHe saw a dog. 你好 " * 300  # 17,400 characters
    short = ["A short one.", "你好, Tom."]
    seen: list[int] = []
    ticks: list[int] = []
    encode_batch = tokenizer.encode_batch

    def spy(texts, *args, **kwargs):
        seen.extend(len(text) for text in texts)
        return encode_batch(texts, *args, **kwargs)

    tokenizer.encode_batch = spy
    got = list(encode_documents(tokenizer, [short[0], doc, short[1]], ticks.append, piece_chars=1000, batch_chars=3000))
    assert len(seen) > 17 + 2 and max(seen) <= 1000
    assert got == [tokenizer.encode(text, add_special_tokens=True) for text in [short[0], doc, short[1]]]
    assert sum(ticks) == len(doc) + len(short[0]) + len(short[1]) and len(ticks) >= 6  # 3 pieces at a time
