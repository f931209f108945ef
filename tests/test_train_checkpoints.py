"""Checkpoints as one unit: a kill at every file boundary, signals, pickle-free state, output folders."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import one_thread  # noqa: F401 (autouse)
from safetensors.torch import load_file
from tiny_models import make_model

from tiankong.engine.errors import InputError
from tiankong.trainers import checkpoint as ckpt
from tiankong.trainers.reward import RewardConfig, RewardTrainer
from tiankong.trainers.trainer_state import STATE_JSON, STATE_TENSORS, load_state

PAIRS = [{"prompt": f"Story {i}:", "chosen": " a happy fox ran", "rejected": " a sad dog sat"} for i in range(8)]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("ck-llama"), "llama")


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck-data") / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return path


def reward_cfg(llama_dir, prefs, out, **kw):
    return RewardConfig(
        model=str(llama_dir),
        data=str(prefs),
        output=str(out),
        steps=3,
        batch_size=4,
        lr=1e-3,
        save_every=1,
        eval_fraction=0,
        device="cpu",
        progress=False,
        raw=True,
        **kw,
    )


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {
        f"{sub}:{k}": v
        for sub in ("model.safetensors", "reward_head.safetensors")
        for k, v in load_file(out / sub).items()
    }


def same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    rows = [[json.loads(x) for x in (o / "metrics.jsonl").read_text().splitlines()] for o in (a, b)]
    assert rows[0] == rows[1]


class Killed(BaseException):
    """Stands for SIGKILL: raised at a file boundary, after which no cleanup code may touch the disk."""


def test_a_kill_at_every_file_boundary_resumes_to_the_same_result(llama_dir, prefs, tmp_path, monkeypatch):
    """Every rename (each file's commit, the checkpoint folder's seal, each published link) is a
    boundary; the run is killed at each in turn, then resumed. Cleanup handlers are disabled after
    the kill, so the folder is left exactly as a SIGKILL would leave it."""
    whole = RewardTrainer(reward_cfg(llama_dir, prefs, tmp_path / "whole")).train()
    real_replace, real_rmtree, real_unlink = os.replace, shutil.rmtree, Path.unlink
    state = {"calls": 0, "kill_at": 0, "dead": False}

    def replace(src, dst):
        state["calls"] += 1
        if state["calls"] == state["kill_at"]:
            state["dead"] = True
            raise Killed
        return real_replace(src, dst)

    def rmtree(*a, **kw):
        if not state["dead"]:
            return real_rmtree(*a, **kw)

    def unlink(self, *a, **kw):
        if not state["dead"]:
            return real_unlink(self, *a, **kw)

    refused = resumed = 0
    for k in range(1, 200):
        out = tmp_path / f"cut{k}"
        state.update(calls=0, kill_at=k, dead=False)
        with monkeypatch.context() as m:
            m.setattr(os, "replace", replace)
            m.setattr(shutil, "rmtree", rmtree)
            m.setattr(Path, "unlink", unlink)
            try:
                RewardTrainer(reward_cfg(llama_dir, prefs, out)).train()
            except Killed:
                pass
            else:
                break  # k is past the last boundary of a whole run
        try:
            RewardTrainer(reward_cfg(llama_dir, prefs, out, resume=True)).train()
        except InputError as e:
            assert "no checkpoint" in str(e), (k, e)  # killed before the first checkpoint was sealed
            assert ckpt.latest(out) is None
            refused += 1
            continue
        same_run(whole, out)
        resumed += 1
    assert resumed > 20 and refused < resumed, (resumed, refused)


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/tiankong-test-pickle-payload-ran"


def test_a_pickled_trainer_state_is_never_loaded(llama_dir, prefs, tmp_path):
    Path(MARKER).unlink(missing_ok=True)
    out = tmp_path / "shared-run"
    out.mkdir()
    (out / "trainer_state.pt").write_bytes(pickle.dumps({"step": Payload()}))
    with pytest.raises(InputError, match="pickle"):
        RewardTrainer(reward_cfg(llama_dir, prefs, out, resume=True)).train()
    assert not Path(MARKER).exists()
    # The new format is JSON + safetensors: a state file cannot name code to run.
    run = RewardTrainer(reward_cfg(llama_dir, prefs, tmp_path / "ok")).train()
    folder = ckpt.latest(run)
    assert sorted(p.name for p in folder.glob("trainer_state*")) == [STATE_JSON, STATE_TENSORS]
    doc = json.loads((folder / STATE_JSON).read_text())
    doc["state"]["$items"][0][1] = {"$object": "os.system"}
    (folder / STATE_JSON).write_text(json.dumps(doc))
    with pytest.raises(InputError, match="damaged"):
        RewardTrainer(reward_cfg(llama_dir, prefs, run, resume=True)).train()


def test_an_output_holding_another_model_is_refused_or_replaced_whole(llama_dir, prefs, tmp_path):
    out = tmp_path / "out"
    gpt2 = make_model(tmp_path / "gpt2", "gpt2")  # a byte-level tokenizer.json the new model must not inherit
    shutil.copytree(gpt2, out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="already holds .*--overwrite"):
        RewardTrainer(reward_cfg(llama_dir, prefs, out)).train()
    # --overwrite replaces a run's output, never a folder holding files no run writes, nor a model folder
    with pytest.raises(InputError, match="holds notes.txt, which no tiankong run writes"):
        RewardTrainer(reward_cfg(llama_dir, prefs, out, overwrite=True)).train()
    (out / "notes.txt").unlink()
    with pytest.raises(InputError, match="is not a tiankong run's output"):
        RewardTrainer(reward_cfg(llama_dir, prefs, out, overwrite=True)).train()
    assert load_file(out / "model.safetensors").keys() == load_file(gpt2 / "model.safetensors").keys()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')  # now the output of an earlier run
    (out / "train_config.json").write_text("{}\n")
    RewardTrainer(reward_cfg(llama_dir, prefs, out, overwrite=True)).train()
    left = {p.name for p in out.iterdir()}
    run_files = {"checkpoints", "metrics.jsonl", "train_config.json", "reward_head.safetensors", "reward_config.json"}
    assert left - {p.name for p in llama_dir.iterdir()} == run_files  # nothing of the old run, nor the lock file
    assert ckpt.ASIDE not in left  # the old run, set aside, went at the first save
    assert {p.name for p in llama_dir.iterdir()} <= left
    for name in {p.name for p in llama_dir.iterdir()} - {"model.safetensors", "config.json"}:
        assert (out / name).read_bytes() == (llama_dir / name).read_bytes(), name
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    # the published files are links to the sealed checkpoint, not second copies
    assert os.stat(out / "model.safetensors").st_ino == os.stat(ckpt.latest(out) / "model.safetensors").st_ino


TIANKONG = [sys.executable, "-m", "tiankong.tui.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def signal_args(llama_dir, prefs):
    return [
        "train",
        "reward",
        "--model",
        str(llama_dir),
        "--data",
        str(prefs),
        "--steps",
        "60",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--eval-fraction",
        "0",
        "--device",
        "cpu",
        "--raw",
        "--no-progress",
        "--save-minutes",
        "0",
    ]


@pytest.fixture(scope="module")
def uninterrupted(llama_dir, prefs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ck-whole") / "run"
    whole = subprocess.run(
        [*TIANKONG, *signal_args(llama_dir, prefs), "--output", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_and_the_printed_command_resumes_to_the_same_result(
    llama_dir, prefs, tmp_path, sig, uninterrupted
):
    args, env, tiankong = signal_args(llama_dir, prefs), ENV, TIANKONG
    out = tmp_path / "cut"
    proc = subprocess.Popen([*tiankong, *args, "--output", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text().count("\n") >= 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "Traceback" not in err
    stopped = load_state(ckpt.latest(out))["step"]
    assert 3 <= stopped < 60
    command = err.strip().splitlines()[-1]
    assert command.startswith("resume with: tiankong train reward") and command.endswith("--resume")
    import shlex

    resumed = subprocess.run(
        [*tiankong, *shlex.split(command.removeprefix("resume with: tiankong "))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    same_run(uninterrupted, out)


def test_the_same_command_again_after_a_stop_is_told_the_step_and_the_resume_command(tmp_path, monkeypatch):
    # QA54: the command stopped by Ctrl+C, run again as it was, got the refusal of any full folder
    # ("already holds checkpoints, config.json, ..."), where `tiankong info` knew "step 3 of 20" and the command.
    monkeypatch.chdir(tmp_path)
    out = Path("runs/ppo")
    (out / ckpt.CHECKPOINTS / "step-000003").mkdir(parents=True)
    command = "tiankong train ppo --reward runs/rm --prompts prompts.txt --output runs/ppo --resume"
    record = {"steps": 20, "resume_command": command, "started_in": str(tmp_path)}
    (out / "train_config.json").write_text(json.dumps(record))
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(InputError) as refused:
        ckpt.check_output(out, resume=False, overwrite=False)
    assert str(refused.value) == (
        "--output runs/ppo holds an unfinished run (step 3 of 20): choose a new folder, add --overwrite to "
        f"replace it, or continue it with: {command}"
    )
    (out / "train_config.json").write_text(json.dumps({**record, "started_in": "/elsewhere"}))
    with pytest.raises(InputError, match=r"continue it with: .* --resume \(in /elsewhere\)$"):
        ckpt.check_output(out, resume=False, overwrite=False)
    (out / ckpt.CHECKPOINTS / "step-000020").mkdir()  # finished: what it holds, as before
    with pytest.raises(InputError, match="already holds checkpoints, metrics.jsonl, train_config.json; choose"):
        ckpt.check_output(out, resume=False, overwrite=False)
