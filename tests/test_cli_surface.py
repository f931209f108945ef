"""The command line's surface: --help texts alike across commands, usage errors that point to the
right page, -h/--version, the exit code of a closed pipe, piped tables, TIANKONG_MODEL in training
(QA pass 22, findings 4 and 8-14)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers import cli

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "models" / "tiankong-mini"


def commands() -> list[list[str]]:
    """Every command's words, `train sft` and `prefs export` included."""
    import typer.main

    from tiankong.tui.cli import _register_subcommands, app

    _register_subcommands([])  # train and reward too

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            yield path
            return
        for name, sub in subs.items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def help_of(monkeypatch, capsys, *words: str) -> str:
    monkeypatch.delenv("COLUMNS", raising=False)  # captured output: rich's 80 columns
    code, out, err = cli(monkeypatch, capsys, *words, "--help")
    assert code == 0, err
    return out


def flat(page: str) -> str:
    """A help page's words in one line: no box-drawing, no line breaks (wraps differ by width)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", page).split())


def test_h_is_help_everywhere_and_the_version_is_printed(monkeypatch, capsys):
    for words in ([], ["chat"], ["train", "sft"], ["prefs", "export"]):
        code, out, err = cli(monkeypatch, capsys, *words, "-h")
        assert code == 0 and "Usage: tiankong" in out, (words, err)
    for flag in ("--version", "-V"):
        code, out, _ = cli(monkeypatch, capsys, flag)
        assert (code, out) == (0, f"tiankong {version('tiankong')}\n")


def test_help_texts_follow_one_convention(monkeypatch, capsys):
    pages = {" ".join(w): help_of(monkeypatch, capsys, *w) for w in commands()}
    pages["tiankong"] = help_of(monkeypatch, capsys)
    for name, page in pages.items():
        assert "<bool>" not in page, name  # a flag takes no value
        assert "Env: " not in page, name  # typer's [env var: X] says it once
        assert "[default: '" not in page and "[default: False]" not in page, name  # no Python repr
        assert "../shared" not in page and "./TinyLlama" not in page, name  # dev-only paths
    sft, chat = flat(pages["train sft"]), flat(pages["chat"])
    assert "[default: runs/sft]" in sft and "[default: no-resume]" in sft and "[env var: TIANKONG_MODEL]" in sft
    assert re.search(r"--model\s+-m", sft) and re.search(r"--output\s+-o", sft)
    device = "cpu, cuda, mps or auto (cuda, then mps, then cpu)."
    for name in ("chat", "train sft", "reward score"):
        assert device in flat(pages[name]), name
    assert "TIANKONG_RATER" in chat and "config or" not in chat
    assert "ORG/NAME[@REVISION]" in chat  # not read as rich markup
    assert "Usage: tiankong tokenize [OPTIONS] [TEXT]" in pages["tokenize"]  # optional: standard input without it
    assert "see trainers/" not in flat(pages["train dpo"])  # a rule in words, not a source path
    for code in ("0 done", "2 a usage mistake", "130 stopped by Ctrl+C", "141"):
        assert code in flat(pages["tiankong"])
    summary = pages["generate"].split("Usage: tiankong generate")[1].split("╭")[0]
    assert "\n\n\n" not in re.sub(r"[ │]+\n", "\n", summary)  # one blank line after the summary


def test_epilogs_reflow_and_their_examples_never_wrap(monkeypatch, capsys):
    import typer.main

    from tiankong.tui.cli import app  # noqa: F401 (registers the commands)

    root = typer.main.get_command(sys.modules["tiankong.tui.cli"].app)
    for words in commands():
        cmd = root
        for w in words:
            cmd = cmd.commands[w]
        text = cmd.epilog or ""
        assert text, words  # every command shows examples
        lines = text.strip("\n").split("\n")
        examples = [line for line in lines if line.startswith("  ")]
        prose = [line for line in lines if line and not line.startswith(("  ", "[bold]"))]
        assert examples, words
        assert all(len(line) <= 78 for line in examples), words  # 3 columns of padding at 80
        for i, line in enumerate(lines):  # a paragraph is one line: typer keeps a line break as it is
            if line in prose and i + 1 < len(lines):
                assert lines[i + 1] == "", (words, line)
        page = help_of(monkeypatch, capsys, *words).splitlines()
        for ex in examples:  # whole, at one indent, in the 80-column page
            assert any(row.rstrip() == " " + ex.replace("\\[", "[") for row in page), (words, ex)


@pytest.mark.parametrize(
    "args, page",
    [
        (["generate", "--top-p"], "tiankong generate"),
        (["train", "sft", "--lr"], "tiankong train sft"),
        (["train", "sft", "--resume=true"], "tiankong train sft"),
        (["prefs", "export", "--format"], "tiankong prefs export"),
        (["chat", "-m"], "tiankong chat"),
    ],
)
def test_a_missing_or_unwanted_value_points_to_the_commands_page(monkeypatch, capsys, args, page):
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and err.rstrip().endswith(f"(see `{page} --help`)"), err


def test_guesses_are_useful(monkeypatch, capsys):
    _, _, err = cli(monkeypatch, capsys, "generate", "--mdoel", "x")
    assert "(Possible options: --model)" in err, err
    _, _, err = cli(monkeypatch, capsys, "generate", "--hepl")
    assert "(Possible options: --help)" in err, err
    _, _, err = cli(monkeypatch, capsys, "gen")
    assert "No such command 'gen'. Did you mean 'generate'?" in err, err
    _, _, err = cli(monkeypatch, capsys, "tr")  # train is added only when named: still offered
    assert "Did you mean 'train'?" in err, err


@pytest.mark.parametrize(
    "args", [["--help"], ["presets"], ["models"], ["generate", "-p", "hi", "--max-new-tokens", "2"]]
)
def test_a_closed_pipe_ends_quietly_with_141(args, tmp_path):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: `| head -0`, deterministically
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("TIANKONG_MODEL", None)
    # The compiled step's cache stays where it was (an empty one builds decode.c: seconds, no pipe).
    env["XDG_CACHE_HOME"] = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tiankong.tui.cli", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            env=env,
            timeout=300,
        )
    finally:
        os.close(write)
    err = "\n".join(x for x in done.stderr.decode().splitlines() if not x.startswith(("loading ", "note:")))
    assert done.returncode == 141 and "Traceback" not in err and "Error" not in err, (done.returncode, err)


def test_piped_tables_keep_a_row_to_a_line_without_trailing_spaces(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("COLUMNS", raising=False)  # captured: not a terminal, 80 columns
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    code, out, err = cli(monkeypatch, capsys, "presets")
    assert code == 0, err
    assert "│ poems, stories, brainstorming │" in out and "│ open-domain conversation " in out, out
    assert "min_p -> sample" in [line for line in out.splitlines() if "sampler chain" in line][0]
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "and-another-one-for-the-path" / "tiankong-mini"
    shutil.copytree(BUNDLED, deep)
    code, out, err = cli(monkeypatch, capsys, "info", "-m", deep)
    assert code == 0, err
    assert any(str(deep) in line for line in out.splitlines()), out  # never broken mid-word
    code, models, err = cli(monkeypatch, capsys, "models")
    for page in (out, models):
        assert all(line == line.rstrip() for line in page.splitlines()), page


@pytest.fixture
def stopped_trainers(monkeypatch):
    """Each trainer's start replaced by one that notes the config's model and stops the run (exit 2)."""
    from tiankong.engine.errors import InputError
    from tiankong.trainers import dpo, ppo, pretrain, reward, sft

    seen: list[str] = []

    def start(self, cfg):
        seen.append(cfg.model)
        raise InputError("stopped by the test")

    for cls in (sft.SFTTrainer, reward.RewardTrainer, ppo.PPOTrainer, dpo.DPOTrainer, pretrain.PretrainTrainer):
        monkeypatch.setattr(cls, "__init__", start)
    return seen


def test_training_takes_tiankong_model_below_config_and_flags(monkeypatch, capsys, tmp_path, stopped_trainers):
    mine, other = tmp_path / "mine", tmp_path / "other"
    shutil.copytree(BUNDLED, mine)
    shutil.copytree(BUNDLED, other)
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "hi", "completion": "hello"}\n')
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text('{"prompt": "hi", "chosen": "hello", "rejected": "go"}\n')
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi\n")
    toml = tmp_path / "run.toml"
    toml.write_text(f'model = "{other}"\n')
    monkeypatch.setenv("TIANKONG_MODEL", str(mine))
    out = ["--output", str(tmp_path / "run")]
    runs = [
        (["sft", "--data", data, *out], mine),
        (["reward", "--data", prefs, *out], mine),
        (["dpo", "--data", prefs, *out], mine),
        (["ppo", "--reward", other, "--prompts", prompts, *out], mine),
        (["sft", "--data", data, "--model", other, *out], other),  # a flag wins
        (["sft", "--data", data, "--config", toml, *out], other),  # so does the run's file
    ]
    for args, want in runs:
        code, _, err = cli(monkeypatch, capsys, "train", *args)
        assert code == 2 and "stopped by the test" in err, (args, err)
        assert Path(stopped_trainers[-1]).resolve() == want.resolve(), (args, stopped_trainers)
    from tiankong.tui import train_cli

    code, _, err = cli(monkeypatch, capsys, "train", "sft", "--data", data, *out)
    assert f"--model {mine}" in train_cli._resume_command()  # the run's model, if the variable goes
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("once upon a time\n" * 50)
    code, _, err = cli(monkeypatch, capsys, "train", "pretrain", "--data", corpus, *out)
    assert stopped_trainers[-1] == "", err  # pretrain: a new model, whatever the variable says


def test_a_model_not_found_says_how_to_get_one(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code, _, err = cli(monkeypatch, capsys, "info", "-m", "SomeOrg/SomeModel")
    assert code == 2 and "tiankong never downloads: `hf download SomeOrg/SomeModel`" in err, err


def test_readme_says_what_the_cli_does():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "`$TIANKONG_RATER`, else your login name" in readme
    assert "the `train` commands take `--dtype float32|bfloat16`" in readme
    assert "hf download ORG/NAME" in readme and "141" in readme and "--version" in readme


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", [["presets"], ["presets", "creative"], ["models"]])
def test_a_full_disk_under_a_table_is_one_line(args, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "tiankong.tui.cli", *args], stdout=full, stderr=subprocess.PIPE, text=True, env=env
        )
    assert done.returncode == 2 and done.stderr.startswith("error: cannot write to standard output"), done.stderr
