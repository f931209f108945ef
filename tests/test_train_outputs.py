"""A run's output folder is its own: never a folder it reads, never shared by two runs, never
mixed with another run's data or settings, and damaged files in it are named in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import one_thread  # noqa: F401 (autouse)
from tiny_models import make_model

from tiankong.engine.errors import InputError, ModelLoadError
from tiankong.trainers import checkpoint as ckpt
from tiankong.trainers.reward import RewardConfig, RewardModel, RewardTrainer, score_file

PAIRS = [{"prompt": f"Story {i}:", "chosen": " a happy fox ran", "rejected": " a sad dog sat"} for i in range(8)]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("out-llama"), "llama")


@pytest.fixture
def prefs(tmp_path):
    path = tmp_path / "in" / "p.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return path


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setenv("TIANKONG_DATA_DIR", str(folder))
    return folder


def cfg(model, data, out, **kw):
    settings = dict(steps=2, batch_size=4, lr=1e-3, save_every=1, eval_fraction=0, device="cpu", progress=False)
    settings.update(kw)
    return RewardConfig(model=str(model), data=str(data), output=str(out), raw=True, **settings)


def test_overwrite_never_empties_a_folder_the_run_reads_or_one_it_did_not_write(
    llama_dir, prefs, tmp_path, data_dir, monkeypatch
):
    model = shutil.copytree(llama_dir, tmp_path / "model")
    before = {p.name for p in model.iterdir()}
    data_dir.mkdir()
    (data_dir / "tiankong.db").write_text("votes")
    cases = [
        (model, "is the --model folder"),
        (model / "sub", "is inside the --model folder"),
        (tmp_path, "holds the --model folder"),
        (prefs.parent, "holds the --data file"),
        (data_dir, "is the playground's data folder"),
    ]
    for out, why in cases:
        with pytest.raises(InputError, match=why):
            RewardTrainer(cfg(model, prefs, out, overwrite=True)).train()
    with pytest.raises(InputError, match="--output is empty"):
        RewardTrainer(cfg(model, prefs, "", overwrite=True)).train()
    # the current folder, holding someone's files: never replaced
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "notes.txt").write_text("mine")
    monkeypatch.chdir(cwd)
    with pytest.raises(InputError, match="notes.txt, which no tiankong run writes"):
        RewardTrainer(cfg(model, prefs, ".", overwrite=True)).train()
    assert (cwd / "notes.txt").read_text() == "mine"
    assert {p.name for p in model.iterdir()} == before and prefs.is_file()
    assert (data_dir / "tiankong.db").read_text() == "votes"


def test_publish_removes_only_files_a_run_writes(tmp_path):
    final = tmp_path / "ck"
    final.mkdir()
    (final / "config.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "tokenizer.json").write_text("old")  # the model before: a stale model file goes
    ckpt.publish(final, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(tmp_path):
    out = tmp_path / "run"
    with ckpt.claim(out, resume=False, overwrite=False):
        with pytest.raises(InputError, match=r"--output .*run is in use by another run \(pid \d+\); wait for it"):
            ckpt._lock(out)  # what another process's claim does
    ckpt.os.close(ckpt._lock(out))  # released with the run


def test_a_run_removes_its_lock_file_and_one_that_opened_it_meanwhile_locks_a_new_one(tmp_path, monkeypatch):
    # QA: every finished output kept .tiankong-run.lock (a pid inside). Removing it must not let two runs
    # hold one folder: a run that opened the old file as the first one ended locks a file of its own.
    import fcntl
    import os

    out = tmp_path / "run"
    with ckpt.claim(out, resume=False, overwrite=False):
        assert (out / ckpt.LOCK_FILE).is_file()
    assert not (out / ckpt.LOCK_FILE).exists() and out.is_dir()

    first = ckpt.claim(out, resume=False, overwrite=False)
    first.__enter__()
    flock, calls = fcntl.flock, []

    def first_run_ends_meanwhile(fd, op):
        calls.append(fd)
        if len(calls) == 1:
            first.__exit__(None, None, None)  # removes its lock file, then lets go of the lock
        return flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", first_run_ends_meanwhile)
    fd = ckpt._lock(out)
    held, path = os.fstat(fd), os.stat(out / ckpt.LOCK_FILE)
    assert (held.st_dev, held.st_ino) == (path.st_dev, path.st_ino) and len(calls) == 2
    assert (out / ckpt.LOCK_FILE).read_text() == f"{os.getpid()}\n"
    os.close(fd)


def test_a_lock_on_a_folder_a_failed_run_just_removed_is_refused(tmp_path, monkeypatch):
    # The race: this run opens the lock file, the run holding it fails and removes the folder it
    # created, then this run's flock succeeds on a file no other run will ever see.
    import fcntl
    import shutil

    out = tmp_path / "run"
    out.mkdir()
    flock = fcntl.flock

    def other_run_fails_first(fd, op):
        shutil.rmtree(out)
        return flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", other_run_fails_first)
    with pytest.raises(InputError, match=r"--output .*run was removed by another run that just failed; run again"):
        ckpt._lock(out)


def test_a_failed_run_leaves_no_folder_and_a_run_killed_before_its_first_save_is_reused(
    llama_dir, prefs, tmp_path, capsys
):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "new" / "run"
    with pytest.raises(InputError):
        RewardTrainer(cfg(llama_dir, empty, out)).train()
    assert not out.exists()
    # A hard stop before the first checkpoint left only an empty metrics.jsonl: no loop of refusals.
    out.mkdir()
    (out / "metrics.jsonl").write_text("")
    assert ckpt.check_output(out, resume=False, overwrite=False) is False
    assert ckpt.check_output(out, resume=True, overwrite=False) is False
    err = capsys.readouterr().err
    assert "holds no checkpoint" in err and "starting from step 0" in err
    with pytest.raises(InputError, match="no checkpoint"):  # an empty folder: more likely a mistyped path
        ckpt.check_output(tmp_path / "typo", resume=True, overwrite=False)


def test_resume_refuses_other_data_or_settings_and_extends_a_finished_run(llama_dir, prefs, tmp_path, capsys):
    out = tmp_path / "rm"
    RewardTrainer(cfg(llama_dir, prefs, out)).train()
    with pytest.raises(InputError, match=r"--resume: this command changes the run's settings \(--lr 0.001 -> 0.002"):
        RewardTrainer(cfg(llama_dir, prefs, out, resume=True, lr=2e-3)).train()
    other = tmp_path / "other.jsonl"
    other.write_text(prefs.read_text().replace("happy", "glad"))
    with pytest.raises(InputError, match="is not the data the run started on"):
        RewardTrainer(cfg(llama_dir, other, out, resume=True)).train()
    trainer = RewardTrainer(cfg(llama_dir, prefs, out, resume=True, steps=3))
    trainer.train()
    assert "extending the finished run from 2 to 3 steps" in capsys.readouterr().err
    assert trainer.step == 3


def test_damaged_reward_files_are_named_with_their_role_and_fix(llama_dir, tmp_path):
    from tiankong.engine.model import load_model

    base, mcfg = load_model(llama_dir, "cpu", "float32")
    rm = RewardModel(base, mcfg).save(tmp_path / "rm", tokenizer_from=llama_dir)
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"prompt": "Hi", "response": " there"}) + "\n")
    head = rm / "reward_head.safetensors"
    head.write_bytes(head.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match=rf"reward model file {head} is damaged.*train the reward model again"):
        score_file(rm, str(answers), None, device="cpu")
    weights = rm / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=rf"reward model file {weights} is damaged"):
        score_file(rm, str(answers), None, device="cpu")


def test_a_damaged_checkpoint_on_resume_says_so_and_how_to_go_on(llama_dir, prefs, tmp_path):
    out = tmp_path / "rm"
    RewardTrainer(cfg(llama_dir, prefs, out)).train()
    head = ckpt.latest(out) / "reward_head.safetensors"
    data = head.read_bytes()
    head.unlink()  # the published file is a hard link: leave it whole
    head.write_bytes(data[:100])
    with pytest.raises(ModelLoadError, match=rf"checkpoint file {head} is damaged.*--overwrite instead of --resume"):
        RewardTrainer(cfg(llama_dir, prefs, out, resume=True)).train()
    assert ckpt.latest(out) is not None  # a refused resume removes nothing


def test_reward_score_takes_the_records_tiankong_generate_writes(llama_dir, tmp_path):
    from tiankong.engine.model import load_model

    base, mcfg = load_model(llama_dir, "cpu", "float32")
    rm = RewardModel(base, mcfg).save(tmp_path / "rm", tokenizer_from=llama_dir)
    generated = tmp_path / "answers.jsonl"
    conversation = [{"role": "user", "content": "Hi"}]  # QA: generate writes "prompt": null beside "messages"
    generated.write_text(
        json.dumps({"prompt": "Hi", "seed": 1, "text": " there"})
        + "\n"
        + json.dumps({"prompt": None, "messages": conversation, "seed": 1, "text": " there"})
        + "\n"
    )
    scored = tmp_path / "scored.jsonl"
    score_file(rm, str(generated), scored, device="cpu")
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    assert all(row["text"] == " there" and isinstance(row["score"], float) for row in rows)
    assert "response" not in rows[0] and rows[1]["messages"] == conversation


def test_a_vocabulary_smaller_than_the_characters_asks_for_a_larger_vocab_size(tmp_path):
    from tiankong.trainers.corpus import train_tokenizer

    docs = ["".join(chr(0x4E00 + i) for i in range(j, j + 50)) * 3 for j in range(0, 600, 50)]
    with pytest.raises(InputError, match="required_chars.*; give a larger --vocab-size$"):
        train_tokenizer(docs, tmp_path / "tok", 300, 256)


def test_train_help_names_what_model_takes(monkeypatch):
    from typer.testing import CliRunner

    from tiankong.tui.train_cli import train_app

    monkeypatch.setenv("COLUMNS", "400")
    for name in ("pretrain", "sft", "reward", "ppo", "dpo"):
        text = " ".join(CliRunner().invoke(train_app, [name, "--help"]).output.split())
        assert ".gguf file" in text and "ollama:NAME[:TAG]" in text, name
        assert "required" not in text, name
    ppo = " ".join(CliRunner().invoke(train_app, ["ppo", "--help"]).output.split())
    assert "Evaluate on the held-out split" not in ppo


def test_resume_says_where_it_resumes_and_a_finished_run_has_nothing_to_train(
    llama_dir, prefs, tmp_path, monkeypatch, capsys
):
    # QA: --resume never said where it resumed from, and on a finished run it printed the plots and the
    # verdict again as if it had trained.
    from helpers import cli

    out = tmp_path / "rm"
    args = ["train", "reward", "--model", llama_dir, "--data", prefs, "--output", out, "--raw", "--no-progress"]
    args += ["--steps", "4", "--batch-size", "4", "--eval-fraction", "0", "--device", "cpu", "--save-every", "2"]
    train_step = RewardTrainer.train_step

    def stopped_in_step_4(self, batch):
        if self.step == 3:
            raise KeyboardInterrupt  # a second Ctrl+C: no checkpoint of this step
        return train_step(self, batch)

    monkeypatch.setattr(RewardTrainer, "train_step", stopped_in_step_4)
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 130 and "the checkpoint" in err and "step-000002 survived" in err
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    monkeypatch.setattr(RewardTrainer, "train_step", train_step)
    code, out_text, err = cli(monkeypatch, capsys, *args, "--resume")
    assert code == 0, err
    said = "resuming from step-000002 (step 2 of 4; step 3 run again); settings left at auto keep the run's values: lr"
    assert [line for line in err.splitlines() if line.startswith("resuming")] == [f"{said} 0.003"]  # auto lr at 3M
    assert "Verdict (reward)" in err and (out / "verdict.json").is_file()

    def no_model_work(self):
        raise AssertionError("a finished run loaded its models again")

    monkeypatch.setattr(RewardTrainer, "setup", no_model_work)
    code, out_text, err = cli(monkeypatch, capsys, *args, "--resume")
    assert code == 0, err
    assert err.splitlines() == [
        f"{out}: already finished (4 steps); nothing to train (its verdict: {out / 'verdict.json'})"
    ]
    assert out_text == ""  # no plots either


def reward_note(out, base) -> str:
    """What the note on a reward model's folder adds after the unfinished run's (QA59)."""
    return (
        f"; {out} is a reward model (it holds reward_config.json): it scores answers and was not trained to "
        f"write them; chat with the model it was trained from ({base}), or the output of "
        f"`tiankong train ppo --reward {out}`"
    )


def test_a_stopped_run_is_named_unfinished_wherever_it_is_opened(llama_dir, prefs, tmp_path, monkeypatch, capsys):
    # QA: after Ctrl+C at step 3 of 20, runs/ppo held a top-level model.safetensors and chat/compare opened
    # it as if it were the trained model. Every command that opens it now says so, in one note line.
    from helpers import cli

    from tiankong.engine.model_names import model_key
    from tiankong.engine.resolve import resolve_model

    out = tmp_path / "rm"

    class Stop(Exception):
        pass

    class Interrupted(RewardTrainer):
        def checkpoint(self):
            super().checkpoint()
            if self.step == 1:
                raise Stop

    with pytest.raises(Stop):
        Interrupted(cfg(llama_dir, prefs, out, steps=3)).train()
    note = f"{out} is an unfinished training run (step 1 of 3): its model is that step's checkpoint; "
    note += "finish it with its `tiankong train` command and --resume" + reward_note(out, llama_dir)
    assert resolve_model(out).note == note and resolve_model(str(out)).note == note
    # votes and chats name the checkpoint, so they never count for the finished run (QA31)
    assert model_key(out) == f"{out.resolve()}@step-1" and model_key(llama_dir) == str(Path(llama_dir).resolve())
    capsys.readouterr()
    code, text, err = cli(monkeypatch, capsys, "tokenize", "hi", "--model", out, "--format", "jsonl")
    assert code == 0 and err == f"note: {note}\n" and json.loads(text)["ids"]  # a notice, not an error
    RewardTrainer(cfg(llama_dir, prefs, out, steps=3, resume=True)).train()
    assert resolve_model(out).note == reward_note(out, llama_dir).removeprefix("; ")  # finished: a reward model still
    assert model_key(out) == str(out.resolve())
    assert getattr(resolve_model(llama_dir), "note", None) is None  # not a run at all


def test_an_unfinished_runs_note_gives_the_command_that_finishes_it(llama_dir, prefs, tmp_path, monkeypatch, capsys):
    # QA: after Ctrl+C the trainer printed `resume with: tiankong train ppo ... --resume`, but `chat --model
    # runs/ppo` only said "finish it with its `tiankong train` command and --resume". The run folder now
    # keeps the command (train_config.json), and the note gives it, with the folder to run it in.
    import os
    import shlex

    from helpers import cli

    from tiankong.engine.resolve import resolve_model, run_state
    from tiankong.trainers.stopping import TrainingStopped

    out = tmp_path / "rm"
    checkpoint = RewardTrainer.checkpoint

    def stop_at_step_1(self):
        checkpoint(self)
        if self.step == 1:
            raise TrainingStopped(self.step, self.cfg.steps, self.out, "SIGINT")

    monkeypatch.setattr(RewardTrainer, "checkpoint", stop_at_step_1)
    args = ["train", "reward", "--model", llama_dir, "--data", prefs, "--output", out, "--steps", "3"]
    args += "--batch-size 4 --eval-fraction 0 --device cpu --raw --no-progress --save-every 1".split()
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 130, err
    printed = err.strip().splitlines()[-1].removeprefix("resume with: ")
    assert printed.startswith("tiankong train reward ") and printed.endswith(" --resume")
    note = f"{out} is an unfinished training run (step 1 of 3): its model is that step's checkpoint; "
    assert resolve_model(out).note == note + f"finish it with: {printed}" + reward_note(out, llama_dir)
    assert run_state(out) == (1, 3)
    started = os.getcwd()
    monkeypatch.chdir(tmp_path)  # the command's paths are those of where it was typed: said
    assert resolve_model(out).note == note + f"finish it with: {printed} (in {started})" + reward_note(out, llama_dir)
    monkeypatch.chdir(started)
    monkeypatch.setattr(RewardTrainer, "checkpoint", checkpoint)
    code, _, err = cli(monkeypatch, capsys, *shlex.split(printed)[1:])  # the note's command finishes the run
    assert code == 0, err
    assert resolve_model(out).note == reward_note(out, llama_dir).removeprefix("; ") and run_state(out) == (3, 3)


def test_tie_votes_left_out_of_the_playgrounds_votes_are_counted_and_soft_keeps_them(
    llama_dir, prefs, tmp_path, monkeypatch, capsys
):
    # QA: `train reward` on the votes said "298 pairs in 298 groups" and never that the 8 tie votes were
    # left out: they were never exported, so --tie-mode soft could not keep them either.
    from helpers import cli

    from tiankong.tui.store import Response, Store, Vote

    code, _, err = cli(monkeypatch, capsys, "prefs", "import", prefs)
    assert code == 0, err
    tie = [Response(x, "m", "balanced", {"temperature": 0.7}, 1, text, "eos") for x, text in (("A", " a"), ("B", " b"))]
    Store().add_vote(Vote(None, "Story 9:", [{"role": "user", "content": "Story 9:"}], tie, "tie", [], "ann", True))
    args = ["train", "reward", "--model", llama_dir, "--steps", "1", "--raw", "--no-progress", "--batch-size", "4"]
    args += ["--eval-fraction", "0", "--device", "cpu"]
    code, _, err = cli(monkeypatch, capsys, *args, "--output", tmp_path / "drop")
    assert code == 0, err
    said = next(line for line in err.splitlines() if " pairs in " in line)
    assert said == (
        f"{tmp_path / 'drop' / 'preferences.jsonl'}: 8 pairs in 8 groups (a group: the pairs that share an answer, "
        "as one ranking's do); skipped 1 tie/both-bad (line 9: --tie-mode drop, the default, leaves ties out; "
        "--tie-mode soft trains on them as equally good); 0 groups held out"
    )
    code, _, err = cli(monkeypatch, capsys, *args, "--output", tmp_path / "soft", "--tie-mode", "soft")
    assert code == 0, err
    assert f"{tmp_path / 'soft' / 'preferences.jsonl'}: 9 pairs in 9 groups" in err and "skipped" not in err


@pytest.mark.parametrize("trainer", ["reward", "dpo"])
def test_the_readme_loop_trains_on_the_playgrounds_votes_without_data(
    trainer, llama_dir, prefs, tmp_path, monkeypatch, capsys
):
    # README step 3 (`tiankong train reward --output runs/rm`): no --data means the votes in the
    # store. The settings check once ran before they were exported and refused "no preference data".
    from helpers import cli

    code, _, err = cli(monkeypatch, capsys, "prefs", "import", prefs)
    assert code == 0, err
    out = tmp_path / "runs" / trainer
    args = ["train", trainer, "--model", llama_dir, "--output", out, "--steps", "1", "--raw", "--no-progress"]
    code, _, err = cli(monkeypatch, capsys, *args, "--batch-size", "4", "--eval-fraction", "0", "--device", "cpu")
    assert code == 0, err
    exported = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert [r["chosen"] for r in exported] == [r["chosen"] for r in PAIRS]
    assert (out / "model.safetensors").is_file()


def test_ctrl_c_in_the_verdict_says_the_model_is_saved_and_resume_writes_the_verdict(
    llama_dir, prefs, tmp_path, monkeypatch, capsys
):
    # QA: Ctrl+C while the verdict sampled (minutes, with no word on screen) ended with status 130,
    # no message and no verdict.json.
    import shlex

    from helpers import cli

    from tiankong.trainers import ppo_rollout

    out = tmp_path / "runs" / "dpo"
    args = ["train", "dpo", "--model", llama_dir, "--data", prefs, "--output", out, "--steps", "1", "--raw"]
    args += ["--batch-size", "4", "--eval-fraction", "0", "--device", "cpu"]
    sample = ppo_rollout.sample
    calls = []

    def pressed(*a, **kw):  # Ctrl+C as the trained model starts its answers
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return sample(*a, **kw)

    monkeypatch.setattr(ppo_rollout, "sample", pressed)
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 130, err
    assert "verdict: sampling 32 fresh answers from the starting model and 32 from the trained one" in err
    assert "verdict 32/64" in err  # where it stopped (plain lines: stderr is not a terminal here)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"stopped during the verdict: the model is saved in {out}; `tiankong train dpo ")
    assert (out / "model.safetensors").is_file() and not (out / "verdict.json").exists()

    monkeypatch.setattr(ppo_rollout, "sample", sample)
    command = shlex.split(last.split("`")[1])
    assert command[-1] == "--resume"
    code, _, err = cli(monkeypatch, capsys, *command[1:])
    assert code == 0, err
    assert "verdict 64/64" in err and json.loads((out / "verdict.json").read_text())["trainer"] == "dpo"


def test_a_kill_in_the_verdict_says_the_model_is_saved(llama_dir, prefs, tmp_path, monkeypatch, capsys):
    # SIGTERM (kill, a scheduler's stop) while the verdict sampled ended the process silently.
    import os
    import signal

    from helpers import cli

    from tiankong.trainers import ppo_rollout

    out = tmp_path / "runs" / "dpo"
    args = ["train", "dpo", "--model", llama_dir, "--data", prefs, "--output", out, "--steps", "1", "--raw"]
    args += ["--batch-size", "4", "--eval-fraction", "0", "--device", "cpu"]
    sample = ppo_rollout.sample

    def killed(*a, **kw):
        # Left at its default, SIGTERM would end pytest itself: that is the silent end this test is about.
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM would end the run silently"
        os.kill(os.getpid(), signal.SIGTERM)
        return sample(*a, **kw)

    monkeypatch.setattr(ppo_rollout, "sample", killed)
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"terminated (SIGTERM) during the verdict: the model is saved in {out}; `tiankong train ")
    assert (out / "model.safetensors").is_file() and not (out / "verdict.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back


def test_reward_score_says_what_it_wrote_where_and_shows_progress(llama_dir, tmp_path, monkeypatch, capsys):
    # QA: `reward score -o FILE` printed nothing at all, for minutes on a long file.
    from helpers import cli

    from tiankong.engine.model import load_model

    base, mcfg = load_model(llama_dir, "cpu", "float32")
    rm = RewardModel(base, mcfg).save(tmp_path / "rm", tokenizer_from=llama_dir)
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(json.dumps({"prompt": "Hi", "seed": i, "text": f" there {i}"}) + "\n" for i in range(20))
    )
    scored = tmp_path / "scored.jsonl"
    args = ["reward", "score", "--model", rm, "--input", answers, "--device", "cpu"]
    code, out, err = cli(monkeypatch, capsys, *args, "-o", scored)
    assert code == 0 and out == "", err
    assert "scoring 20/20" in err  # plain progress lines: stderr is not a terminal here
    assert err.strip().splitlines()[-1] == f"wrote 20 scored lines to {scored}"
    code, out, err = cli(monkeypatch, capsys, *args)  # to stdout: the records alone there
    assert code == 0 and out == scored.read_text() and "wrote" not in err
