"""What the train commands print, and where: progress and the verdict on stderr (stdout keeps the
plots), one line per warning and error, and the resume command under torchrun; plus the data that
used to slip past with a wrong or missing message (SFT roles, a corpus on one huge line)."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import cli, one_thread  # noqa: F401 (one_thread is an autouse fixture)
from tiny_models import CORPUS

from tiankong.engine.errors import InputError
from tiankong.trainers.data import load_conversations


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n<|endoftext|>\n".join(CORPUS[:5] * 4) + "\n", encoding="utf-8")
    return path


def pretrain(monkeypatch, capsys, corpus, out, *extra):
    args = ["train", "pretrain", "--data", corpus, "--output", out, "--size", "nano", "--vocab-size", "400"]
    args += ["--seq-len", "32", "--batch-size", "4", "--eval-fraction", "0", "--device", "cpu", *extra]
    return cli(monkeypatch, capsys, *args)


def test_training_progress_goes_to_stderr_and_stdout_keeps_the_plots(monkeypatch, capsys, corpus, tmp_path):
    code, out, err = pretrain(monkeypatch, capsys, corpus, tmp_path / "run", "--steps", "2", "--save-every", "1")
    assert code == 0, err
    assert "pretrain 2/2 (100%)" in err  # plain lines: stderr is not a terminal here
    assert "pretrain 2/2" not in out and "loss  (last" in out  # stdout: the data (the loss curve)


def test_a_corpus_that_takes_a_while_to_encode_shows_progress_in_mb(monkeypatch, capsys, corpus, tmp_path):
    # QA: a 30 MB corpus sat ~40 s encoding with nothing on screen. Over BATCH_CHARS of text (made
    # small here) the encoding has a bar of its own, counted in MB of text.
    from tiankong.trainers import pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "BATCH_CHARS", 1000)
    big = tmp_path / "big.txt"
    big.write_text("\n<|endoftext|>\n".join(CORPUS[:5] * 2500) + "\n", encoding="utf-8")  # ~0.8 MB
    code, _, err = pretrain(monkeypatch, capsys, big, tmp_path / "run", "--steps", "1")
    assert code == 0, err
    mb = -(-len(big.read_text(encoding="utf-8").replace("\n<|endoftext|>\n", "")) // 1_000_000)
    assert f"tokenizing, MB {mb}/{mb} (100%)" in err, err


def test_verdict_warnings_stay_one_line_when_stderr_is_not_a_terminal(monkeypatch, capsys, corpus, tmp_path):
    code, _, err = pretrain(monkeypatch, capsys, corpus, tmp_path / "run", "--steps", "1", "--no-progress")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings and all(len(w) > 80 for w in warnings), err  # longer than the 80 columns it used to wrap at
    assert all(w.rstrip().endswith("or check the data") for w in warnings), err


def test_plot_of_a_file_that_is_not_utf8_names_the_file_and_line(monkeypatch, capsys, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(b'{"step": 1, "loss": 2.0}\n\xd7\xff{"step": 2}\n')
    code, out, err = cli(monkeypatch, capsys, "train", "plot", metrics)
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and f"{metrics} line 2" in err and "UTF-8" in err, err


def test_plot_of_an_unknown_key_lists_the_keys_there_are(monkeypatch, capsys, tmp_path):
    rows = [{"step": s, "loss": 2.0 / s, "accuracy": 0.1 * s, "lr": 1e-3} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli(monkeypatch, capsys, "train", "plot", tmp_path, "--key", "Loss")
    assert code == 2 and not out.strip()
    assert len(err.strip().splitlines()) == 1 and "'Loss'" in err and "loss, accuracy, lr" in err, err
    code, out, err = cli(monkeypatch, capsys, "train", "plot", tmp_path, "--key", "loss")
    assert code == 0 and "loss  (last" in out, err


def test_under_torchrun_the_resume_command_is_the_torchrun_one(monkeypatch):
    from tiankong.tui.train_cli import _resume_command

    args = ["train", "pretrain", "--sharding", "fsdp", "--output", "runs/p", "--overwrite"]
    monkeypatch.setattr("sys.argv", ["/x/tiankong/tui/cli.py", *args])
    for name in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert _resume_command() == "tiankong train pretrain --sharding fsdp --output runs/p --resume"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert _resume_command() == (
        "the same torchrun command with --resume: torchrun --nproc_per_node 2 -m tiankong.tui.cli "
        "train pretrain --sharding fsdp --output runs/p --resume"
    )
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    said = _resume_command()
    assert "each of the 2 nodes" in said and "torchrun --nnodes 2 --nproc_per_node 8" in said
    assert said.endswith("-m tiankong.tui.cli train pretrain --sharding fsdp --output runs/p --resume")


def test_a_stopped_run_says_resume_with_once_from_the_first_process(monkeypatch, capsys, corpus, tmp_path):
    from tiankong.trainers.distributed import Dist
    from tiankong.trainers.pretrain import PretrainTrainer
    from tiankong.trainers.stopping import TrainingStopped

    def stopped(self):
        raise TrainingStopped(1, 2, self.out, "SIGINT")

    monkeypatch.setattr(PretrainTrainer, "train", stopped)
    code, _, err = pretrain(monkeypatch, capsys, corpus, tmp_path / "main", "--steps", "2")
    assert code == 130 and err.count("resume with:") == 1, err
    monkeypatch.setattr(Dist, "is_main", property(lambda self: False))  # another torchrun process
    code, _, err = pretrain(monkeypatch, capsys, corpus, tmp_path / "other", "--steps", "2")
    assert code == 130 and "resume with:" not in err, err


@pytest.mark.parametrize(
    ("roles", "needle"),
    [
        (("human", "gpt"), "rename it to 'user'"),
        (("user", "gpt"), "rename it to 'assistant'"),
        (("User", "Assistant"), "rename it to 'user'"),
        (("user", "narrator"), "the roles are system, user and assistant"),
    ],
)
def test_sft_refuses_unknown_roles_naming_the_line_and_role(tmp_path, roles, needle):
    data = tmp_path / "roles.jsonl"
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    bad = {"messages": [{"role": r, "content": "hi"} for r in roles]}
    data.write_text(json.dumps(ok) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError) as e:
        load_conversations(data)
    wrong = next(r for r in roles if r not in ("user", "assistant"))
    assert f"{data} line 2" in str(e.value) and repr(wrong) in str(e.value) and needle in str(e.value)
    assert "\n" not in str(e.value)


def test_a_corpus_on_one_huge_line_trains_a_tokenizer(tmp_path):
    from tiankong.trainers.corpus import SENTENCE_BYTES, _sentences, train_tokenizer

    text = "Once upon a time, Tom went to the park. 你好 " * 10000  # 470 KB, one line
    pieces = list(_sentences(text))
    assert "".join(pieces) == text and all(len(p.encode()) <= SENTENCE_BYTES for p in pieces)
    train_tokenizer([text], tmp_path / "tok", vocab_size=300, model_max_length=64)
    assert (tmp_path / "tok" / "tokenizer.model").stat().st_size > 0


def test_warmup_help_says_what_0_means(monkeypatch, capsys):
    # QA: "--warmup-steps  Linear warmup steps. [default: 0]" beside flags that say "0 = auto", while
    # train_config.json recorded 0: 0 is no warmup (only pretrain has an auto one, -1).
    import re

    monkeypatch.delenv("COLUMNS", raising=False)
    for name in ("sft", "reward", "ppo", "dpo", "pretrain"):
        code, page, err = cli(monkeypatch, capsys, "train", name, "--help")
        assert code == 0, err
        words = " ".join(re.sub(r"[│╭╮╰╯─]", " ", page).split())
        said = "Linear warmup steps (0 = none); -1 = auto" if name == "pretrain" else "Linear warmup steps; 0 = none"
        assert said in words, (name, words[words.find("--warmup-steps") :][:200])


def losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def recorded_threads(out) -> int | None:
    return json.loads((out / "train_config.json").read_text()).get("threads")


def test_a_cpu_run_takes_the_machines_thread_count_whatever_the_load(monkeypatch, capsys, corpus, tmp_path):
    # QA: the README's `train ppo` run twice gave other results (KL 4.33 against 3.08 nats): the first
    # took 1 thread, not 2, as other programs kept a core busy when it started, and the thread count sets
    # the order of the float sums. The count is now the machine's (torch's), kept in train_config.json;
    # the load (faked here where it is read: /proc/stat, else the load average) only makes a note.
    import os

    import torch

    from tiankong.trainers import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "cores", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(cpu_threads, "_cpu_times", lambda cpus: None)  # no /proc/stat: the load average
    first, runs = None, []
    for busy, said in [(0.2, None), (1.4, "about 1.4 of the 4 cores busy"), (3.9, "--threads 1 may be")]:
        torch.set_num_threads(4)  # this machine's default: 4 cores
        monkeypatch.setattr(os, "getloadavg", lambda busy=busy: (busy, busy, busy))
        out = tmp_path / f"busy{busy}"
        code, _, err = pretrain(monkeypatch, capsys, corpus, out, "--steps", "2")
        assert code == 0, err
        assert torch.get_num_threads() == 4, err
        first, runs = first or losses(out), [*runs, out]
        assert losses(out) == first  # the same command, the same result, whatever the load
        notes = [line for line in err.splitlines() if line.startswith("note: training on")]
        assert (notes == []) if said is None else (len(notes) == 1 and said in notes[0]), err
    assert [recorded_threads(out) for out in runs] == [4, 4, 4]  # and --resume takes it from there
    torch.set_num_threads(4)
    code, _, err = pretrain(monkeypatch, capsys, corpus, tmp_path / "chosen", "--steps", "2", "--threads", "1")
    assert code == 0 and torch.get_num_threads() == 1 and recorded_threads(tmp_path / "chosen") == 1, err
    assert "note: training on" not in err, err  # the user's choice: no advice


def test_a_resume_trains_on_the_thread_count_its_run_started_on(monkeypatch, capsys, corpus, tmp_path):
    # QA: a --resume chose its thread count again, from the load at that moment, so it could go another
    # way than the uninterrupted run. It now trains on the count the run recorded, and says so where
    # this machine's own default differs; its result is the uninterrupted run's (the reference here).
    import torch
    from safetensors.torch import load_file

    from tiankong.trainers import cpu_threads
    from tiankong.trainers.pretrain import PretrainTrainer

    monkeypatch.setattr(cpu_threads, "busy_cores", lambda cpus, seconds=0: 0.0)  # an idle machine
    args = ("--steps", "3", "--save-every", "1")
    torch.set_num_threads(1)  # the machine the run starts on: one thread
    code, _, err = pretrain(monkeypatch, capsys, corpus, tmp_path / "whole", *args)
    assert code == 0, err
    train_step, seen = PretrainTrainer.train_step, []

    def counted(self, batch):  # each step's thread count
        if self.step == 2 and not self.cfg.resume:
            raise KeyboardInterrupt  # a second Ctrl+C in step 3: the checkpoint of step 2 survives
        seen.append(torch.get_num_threads())
        return train_step(self, batch)

    monkeypatch.setattr(PretrainTrainer, "train_step", counted)
    out = tmp_path / "resumed"
    code, _, err = pretrain(monkeypatch, capsys, corpus, out, *args)
    assert code == 130 and "step-000002 survived" in err, err
    torch.set_num_threads(2)  # resumed where the default is two threads (or under another load)
    code, _, err = pretrain(monkeypatch, capsys, corpus, out, *args, "--resume")
    assert code == 0, err
    assert seen == [1, 1, 1], err
    assert "note: training on 1 CPU thread as the run started, though this machine's default is 2" in err
    assert losses(out) == losses(tmp_path / "whole")
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    assert all(torch.equal(t, whole[k]) for k, t in load_file(out / "model.safetensors").items())
    assert recorded_threads(out) == recorded_threads(tmp_path / "whole") == 1


def test_threads_given_on_a_resume_are_honored_and_said_to_change_the_result():
    import torch

    from tiankong.trainers import cpu_threads

    torch.set_num_threads(1)
    threads, note = cpu_threads.settle(2, 1)  # --threads 2 on a run that started on 1
    assert threads == 2 == torch.get_num_threads()
    assert note is not None and note.startswith("note: --threads 2 is not the 1 this run started on: from here")
    assert cpu_threads.settle(1, 1) == (1, None)  # the run's own count: nothing to say


def test_busy_cores_reads_the_other_programs_share_of_each_core(monkeypatch):
    from tiankong.trainers import cpu_threads

    # /proc/stat rows: user nice system idle iowait irq softirq steal; cpu1 half busy, cpu2 idle
    samples = iter([[(100, 400), (50, 200)], [(150, 500), (150, 300)]])
    monkeypatch.setattr(cpu_threads, "_cpu_times", lambda cpus: next(samples))
    assert cpu_threads.busy_cores([1, 2], seconds=0) == pytest.approx(0.5)
    monkeypatch.undo()
    if sys.platform == "linux":  # this machine's own /proc/stat reads
        assert len(cpu_threads._cpu_times([0]) or []) == 1


def test_plot_labels_the_step_axis_with_whole_steps(monkeypatch, capsys, tmp_path):
    # QA54: `train plot runs/ppo` labelled 20 steps "1.0 4.2 7.3 10.5 13.7 16.8 20.0".
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 21)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli(monkeypatch, capsys, "train", "plot", tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    labels = lines[next(i for i, line in enumerate(lines) if "└" in line) + 1].split()
    assert labels[0] == "1" and labels[-1] == "20" and all(label.isdigit() for label in labels), labels
    assert 3 <= len(labels) <= 7
