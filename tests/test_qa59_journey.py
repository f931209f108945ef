"""Fixes from QA59, a new user on the README's journey: a reward model's folder opened as a chat model
is said to be one (generate, info, chat), ctrl+c straight after enter stops the answer it asked for,
the verdict's before/after table says how its answers were sampled, the chat footer keeps f5 at 80
columns, and `generate --format text` numbers its prompts by the input's lines. On tiny random Llamas.

References are independent of the code under test: the file names and folders the tests write, the
line numbers of the input file as written, the intro's own words.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import cli
from screen_text import screen_lines
from test_tui_chat import answered, chat_app, loaded, make_app, run, slow_down, wait_for
from textual import events
from tiny_models import make_model, with_template

from tiankong.tui.screens.chat_history import INTRO


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return with_template(make_model(tmp_path_factory.mktemp("qa59") / "tiny-llama", "llama"))


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- 1: a reward model opened to chat


def reward_folder(tiny: Path, tmp_path: Path) -> Path:
    """A folder as `tiankong train reward --output runs/rm` leaves it: the model files, its
    reward_config.json and train_config.json naming the model it started from."""
    rm = tmp_path / "runs" / "rm"
    shutil.copytree(tiny, rm)
    (rm / "reward_config.json").write_text(json.dumps({"format": "tiankong-reward", "version": 1}))
    (rm / "train_config.json").write_text(json.dumps({"model": str(tiny), "steps": 2}))
    return rm


def test_a_reward_models_folder_opened_to_chat_is_said_to_be_one(monkeypatch, capsys, tiny, store, tmp_path):
    rm = reward_folder(tiny, tmp_path)
    note = (
        f"note: {rm} is a reward model (it holds reward_config.json): it scores answers and was not trained to "
        f"write them; chat with the model it was trained from ({tiny}), or the output of "
        f"`tiankong train ppo --reward {rm}`"
    )
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", rm, "-p", "hi", "--max-new-tokens", "2")
    assert code == 0 and out, err
    assert note in one_line(err), err
    code, out, err = cli(monkeypatch, capsys, "info", "-m", rm)
    assert code == 0 and note in one_line(err), err
    code, out, err = cli(monkeypatch, capsys, "info", "-m", tiny)  # an ordinary model: nothing said
    assert code == 0 and "reward model" not in err, err

    async def chat():  # the chat says it as it says an unfinished run's note
        from tiankong.engine.resolve import resolve_model

        app = make_app(resolve_model(str(rm)), store, tmp_path)
        async with app.run_test() as pilot:
            await loaded(pilot)
            await pilot.pause()
            return [str(n.message) for n in app._notifications]

    assert [n for n in run(chat()) if note.removeprefix("note: ") == n]


# ---------------------------------------------------------------- 2: ctrl+c straight after enter


def test_ctrl_c_straight_after_enter_stops_the_answer_it_asked_for(tiny, store, tmp_path):
    """tmux's `send-keys 'Write a long story' Enter C-c` toasted "Do you want to quit?" and the answer ran
    to its end: the answer was asked for but not yet streaming when ctrl+c came."""

    async def go():
        async with chat_app(tiny, store, tmp_path, seed=1, max_new_tokens=1_000_000) as (app, pilot, chat):
            slow_down(chat.engine, 0.02)
            await pilot.press(*"Write a very long story")
            # As a terminal sends them, in one burst: Pilot.press waits for the app to idle between keys
            app.post_message(events.Key("enter", "\r"))
            app.post_message(events.Key("ctrl+c", None))
            await wait_for(pilot, lambda: len(chat.messages) >= 2)  # the answer started
            answer = await answered(pilot, chat)
            return store.get_message(answer.message_id), [n.title for n in app._notifications]

    stored, said = run(go())
    assert stored.finish_reason == "cancelled" and len(stored.tokens) < 50, (stored.finish_reason, len(stored.tokens))
    assert "Do you want to quit?" not in said, said


# ---------------------------------------------------------------- 3: the verdict's before/after table


def test_the_verdicts_answers_table_says_how_they_were_sampled(tmp_path):
    from rich.console import Console

    from tiankong.trainers.verdict import Verdict

    ex = [{"prompt": "p", "before": "b", "after": "a"}]
    sampled = "temperature 1, no filters (no top-k, top-p, min-p or penalties)"
    con = Console(width=200, record=True)
    for part in Verdict("dpo", "fine", examples=ex, sampled=sampled).render():
        con.print(part)
    said = one_line(con.export_text())
    assert f"fresh answers, same prompt and seed, sampled at {sampled}" in said, said


def test_a_policy_verdict_records_the_temperature_it_sampled_at(llama_dir, tmp_path, monkeypatch):
    from tiankong.trainers import ppo_rollout
    from tiankong.trainers.dpo import DPOConfig, DPOTrainer
    from tiankong.trainers.verdict import verdict_for

    rows = [{"prompt": f"Name animal {i}.", "chosen": "The cat.", "rejected": "A dog!"} for i in range(8)]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DPOConfig(
        model=str(llama_dir), data=str(data), output=str(tmp_path / "dpo"), steps=1, device="cpu", progress=False
    )
    dpo = DPOTrainer(cfg)
    dpo.train()
    asked = []  # the temperatures the verdict's sampler was called with: the reference

    def sample(model, mcfg, tok, prompts, seeds, temperature, *rest, **kw):  # two tokens each, at once
        asked.append(temperature)
        return [(5, 6)] * len(prompts)

    monkeypatch.setattr(ppo_rollout, "sample", sample)
    v = verdict_for(dpo)
    assert v.examples and asked and set(asked) == {1.0}
    assert v.sampled == "temperature 1, no filters (no top-k, top-p, min-p or penalties)"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("qa59-llama"), "llama")


# ---------------------------------------------------------------- 4: f5 in the footer at 80 columns


def test_the_chat_footer_at_80_columns_names_f5_as_the_intro_does(tiny, store, tmp_path):
    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await pilot.pause()
            return screen_lines(app)[-1]

    footer = run(go())
    assert "f5 steps through" in INTRO  # what the footer is to back up
    assert "f5 inspect" in footer and "f1 keys" in footer, footer


# ---------------------------------------------------------------- 5: blank lines of a text input


def test_text_output_numbers_prompts_by_the_input_files_lines(monkeypatch, capsys, tiny, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Once\nTwice\n\nThrice\n")  # line 3 is blank: skipped
    args = ["generate", "-m", tiny, "--raw", "--format", "text", "--max-new-tokens", "2", "--seed", "7"]
    code, out, err = cli(monkeypatch, capsys, *args, "--input", src)
    assert code == 0, err
    heads = [line for line in out.splitlines() if line.startswith("--- ")]
    assert heads == ["--- prompt 1, seed 7 ---", "--- prompt 2, seed 7 ---", "--- prompt 4, seed 7 ---"]
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = cli(monkeypatch, capsys, "generate", "--help")
    said = one_line(out)
    assert "File of prompts (JSONL or text lines; blank lines are skipped); - reads stdin." in said
    assert "the number is the input's line number, blank lines counted" in said
    readme = one_line((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8"))
    assert "blank lines are skipped" in readme and "prompt N is the file's line N, blank lines counted" in readme
