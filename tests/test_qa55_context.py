"""Fixes from a QA pass on long prompts and the context window, away from the chat screen: the length
generate's error names as the fix leaves the answer its room, compare offers no retry that can only
fail the same way, a max new tokens above the context is said on stderr, and an input file's too-long
lines are all reported in one run. On the tiny random Llama (a 256-token context, no chat template).

References are independent of the code under test: literal lengths worked out from the context and
the flags, the records' own usage counts, line numbers of the file the test writes.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from helpers import cli
from test_arena import settle
from textual.widgets import Static
from tiny_models import make_model
from tui_host import Host

from tiankong.engine.engine import Engine
from tiankong.presets import get_preset
from tiankong.tui.screens.compare import CompareScreen

LONG = "the cat sat on the mat and looked at the dog " * 80  # far past 256 tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("qa55-llama"), "llama")


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- 5: the length to shorten to


@pytest.mark.parametrize(
    ("max_new", "most", "room"),
    [("20", 236, 20), ("5000", 192, 64)],  # 256 - 20; past a quarter of the context (64), that quarter
)
def test_a_prompt_too_long_is_told_the_length_that_leaves_the_answer_its_room(
    monkeypatch, capsys, model_dir, max_new, most, room
):
    # QA: "shorten it to at most 255 tokens" pointed at a prompt that leaves a 20-token answer one token.
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-p", LONG, "--max-new-tokens", max_new)
    said = one_line(err)
    assert code == 2
    assert "but the model's context is 256" in said, said
    assert f"shorten it to at most {most} tokens, which leaves {room} for the answer" in said, said


def test_compare_offers_no_retry_for_a_prompt_too_long_for_the_context(model_dir, store):
    # QA: the round failed with "prompt is N tokens but the model's context is 256 ..." and the bar
    # offered "r retry", which can only fail the same way; a failure that may pass keeps it.
    tiny = Engine.load(model_dir, device="cpu", dtype="float32")
    presets = [get_preset(name) for name in ("balanced", "creative")]
    screen = CompareScreen([tiny], presets, store, "ann", standalone=True, prompt=LONG)

    async def run():
        async with Host(screen).run_test(size=(160, 30)) as pilot:
            await settle(pilot, screen)
            bar = str(screen.query_one("#vote-bar", Static).render())
            return screen.state, bar, screen.check_action("rerun", ())

    state, bar, rerun = asyncio.run(run())
    assert state == "failed" and "the model's context is 256" in bar, bar
    assert "n new prompt" in bar and "r retry" not in bar and rerun is False


# ---------------------------------------------------------------- 6: max new tokens above the context


def test_max_new_tokens_above_the_context_is_said_once_on_stderr(monkeypatch, capsys, model_dir):
    args = ["generate", "-m", model_dir, "-p", "Once upon a time", "--seed", "1"]
    code, out, err = cli(monkeypatch, capsys, *args, "--max-new-tokens", "5000")
    assert code == 0
    prompt = json.loads(out)["usage"]["prompt_tokens"]
    notes = [line for line in err.splitlines() if line.startswith("note: --max-new-tokens")]
    assert len(notes) == 1, err
    assert notes[0].startswith("note: --max-new-tokens 5000 is more than the model's 256-token context holds")
    assert f"at most {256 - prompt} new tokens after the {prompt}-token prompt" in notes[0]
    assert '(finish_reason "context")' in notes[0]
    code, _, err = cli(monkeypatch, capsys, *args, "--max-new-tokens", "20", "--format", "text")
    assert code == 0 and "note: --max-new-tokens" not in err  # within the context: nothing to say
    code, _, err = cli(monkeypatch, capsys, *args, "--preset", "creative", "--format", "text")
    assert code == 0 and "context holds" not in err  # a preset's own 1024: not asked for, not said


# ---------------------------------------------------------------- 8: every too-long line in one run


def test_every_input_line_too_long_is_reported_in_one_run(monkeypatch, capsys, model_dir, tmp_path):
    # QA: two too-long lines: the run named line 1; fixed, the next run named line 2.
    src = tmp_path / "prompts.jsonl"
    lines = [LONG, "hi", LONG, LONG + "x", LONG, LONG]  # lines 1, 3, 4, 5 and 6 too long
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in lines))
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-i", src, "--max-new-tokens", "4")
    said = one_line(err)
    assert code == 2 and out == ""
    assert "5 prompts were refused:" in said, said
    for n in (1, 3, 4):  # the first three, each with its error
        assert f"{src} line {n}: the prompt is" in said, said
    assert f"{src} line 2" not in said and f"{src} line 5" not in said
    assert said.endswith("; and 2 more"), said
    # One line too long: said as it was, alone.
    src.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"prompt": LONG}) + "\n")
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-i", src, "--max-new-tokens", "4")
    assert code == 2 and f"error: {src} line 2: the prompt is" in one_line(err) and "refused" not in err


def test_too_long_input_lines_are_reported_before_the_weights_load(monkeypatch, capsys, model_dir, tmp_path):
    # QA: "too-long input lines found only after model loads": a model of some GB took its minutes to
    # load before the run said that the file was bad. The lines are checked with the tokenizer and
    # chat template alone (engine.prompter), before any weight is read and before "loading …" is said.
    import tiankong.engine.engine as engine_module
    import tiankong.engine.prompter as prompter_module

    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["hi", LONG, LONG]))

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were loaded before the input lines were checked")

    with monkeypatch.context() as m:
        m.setattr(engine_module, "load_model", no_weights)
        code, out, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-i", src, "--max-new-tokens", "4")
    said = one_line(err)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert f"2 prompts were refused: {src} line 2: the prompt is" in said and f"{src} line 3: the prompt is" in said, (
        said
    )
    assert "loading" not in said, said  # nothing was loading
    # A good file: the tokenizer that checked the lines is the one that generates (loaded once).
    loads = []
    real = prompter_module.load_tokenizer
    monkeypatch.setattr(prompter_module, "load_tokenizer", lambda *a, **k: loads.append(a) or real(*a, **k))
    src.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"prompt": "Once upon a time"}) + "\n")
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-i", src, "--max-new-tokens", "4")
    assert code == 0 and len(out.splitlines()) == 2 and len(loads) == 1, err
