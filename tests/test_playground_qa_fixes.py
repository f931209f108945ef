"""Fixes from a QA pass of the playground: the Markdown export renders a message's lines as the chat
shows them, with its code blocks as written; chat and compare refuse a model's tokenizer before
their app opens, as generate does, and load it once at a normal start; the message box's hint names
what esc does now; `tiankong rank` leaves out answers that failed. On tiny random Llamas
(tests/tiny_models.py) and the real CLI in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import cli
from markdown_it import MarkdownIt
from test_tui_chat import answered, chat_app, run, slow_down, wait_for
from tiny_models import make_model

import tiankong.engine.engine as engine_module
import tiankong.engine.prompter as prompter_module
import tiankong.tui.app as app_module
import tiankong.tui.arena as arena_module
from tiankong.engine.errors import InputError
from tiankong.tui import cli_env
from tiankong.tui.app import TiankongApp, checked_tokenizers
from tiankong.tui.queue import answers_queue
from tiankong.tui.widgets.prompt import PromptInput


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


# ---------------------------------------------------------------- the Markdown export


CODE = "```py\nx = 1\n\ny = 2  \nz = 3\\\n```"  # a blank line, trailing spaces and a backslash: kept
ANSWER = (
    "roses are red\nviolets are blue\n\n"
    f"{CODE}\n\n"
    "    indented\n    code\n\n"
    "> quoted one\n> quoted two\n\n"
    "a `code span\nacross lines` ends\nhere\\\nalready hard"
)


def test_a_markdown_export_renders_a_messages_lines_as_typed_and_its_code_blocks_as_written(store):
    """Single newlines inside a message joined into one line in a Markdown viewer (the chat shows
    them as line breaks). Rendered here by markdown-it's CommonMark renderer."""
    chat_id = store.create_chat("m", "balanced", system_prompt="be brief\nbe kind")
    store.add_message(chat_id, "user", "line one\nline two")
    store.add_message(chat_id, "assistant", ANSWER)
    md = store.export_chat_markdown(chat_id)
    html = MarkdownIt("commonmark").render(md)
    assert "<p>be brief<br />\nbe kind</p>" in html  # the system prompt
    assert "<p>line one<br />\nline two</p>" in html
    assert "<p>roses are red<br />\nviolets are blue</p>" in html
    assert "<blockquote>\n<p>quoted one<br />\nquoted two</p>\n</blockquote>" in html
    # A code span's line break is a space, as written (no spaces added inside it); a hard break stays one.
    assert "<p>a <code>code span across lines</code> ends<br />\nhere<br />\nalready hard</p>" in html
    # Code blocks: byte for byte in the file, and rendered as their lines.
    assert CODE in md and "\n    indented\n    code\n" in md
    assert '<pre><code class="language-py">x = 1\n\ny = 2  \nz = 3\\\n</code></pre>' in html
    assert "<pre><code>indented\ncode\n</code></pre>" in html


# ---------------------------------------------------------------- a tokenizer refused at load


def evil_post_processor(folder: Path) -> None:
    """A post-processor that places a special token it never defines: refused at load
    (engine/tokenizer_checks.py), where encoding would panic inside Rust."""
    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<evil>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [],
        "special_tokens": {},
    }
    path.write_text(json.dumps(spec), encoding="utf-8")


@pytest.fixture
def refused(tiny, tmp_path) -> Path:
    folder = shutil.copytree(tiny, tmp_path / "evil-model")
    evil_post_processor(folder)
    return folder


@pytest.mark.parametrize(
    "command",
    [["chat"], ["compare"], ["compare", "--models", "TINY"], ["compare", "--prompts", "PROMPTS"]],
    ids=["chat", "compare", "compare-models", "compare-prompts"],
)
def test_chat_and_compare_refuse_a_refused_tokenizer_before_their_app_opens(
    command, tiny, refused, tmp_path, monkeypatch, capsys
):
    """They opened the app, said "model not loaded" inside it and exited 0 (compare: 2, from inside)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n", encoding="utf-8")
    args = [str(tiny) if a == "TINY" else str(prompts) if a == "PROMPTS" else a for a in command]
    monkeypatch.setattr(cli_env, "_is_terminal", lambda stream: True)  # the CLI's terminal check passes

    def never(*args, **kwargs):
        pytest.fail("the app must not open")

    monkeypatch.setattr(app_module, "run_until_exit", never)
    monkeypatch.setattr(arena_module, "run_until_exit", never)
    code, out, err = cli(monkeypatch, capsys, *args, "-m", refused, "--data-dir", tmp_path / "data")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert "tokenizer.json" in lines[0] and "'<evil>'" in lines[0] and "Traceback" not in err


def test_a_normal_start_loads_each_tokenizer_once_and_the_app_uses_it(tiny, store, tmp_path, monkeypatch):
    """checked_tokenizers loads it before the app; Engine.load then takes it over, loading none."""
    tokenizers = checked_tokenizers([tiny])

    def again(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded a second time")

    monkeypatch.setattr(prompter_module, "load_tokenizer", again)
    app = TiankongApp(tiny, store=store, export_dir=tmp_path, show_timing=False, tokenizers=tokenizers)

    async def go():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.engine is not None or app.engine_error is not None)
            return app.engine_error, app.engine.tokenizer if app.engine else None

    error, used = run(go())
    assert error is None and used is tokenizers[0]


def test_engine_load_refuses_a_tokenizer_that_is_not_one(tiny):
    with pytest.raises(InputError, match="tokenizer must be a Tokenizer"):
        engine_module.Engine.load(tiny, tokenizer="tokenizer.json")


# ---------------------------------------------------------------- the message box's hint


def test_the_message_box_hint_names_esc_only_for_what_it_does_now(tiny, store, tmp_path):
    """It said "esc stops" with nothing streaming (the footer was right)."""

    async def go():
        async with chat_app(tiny, store, tmp_path, seed=1, max_new_tokens=40) as (app, pilot, chat):
            hint = chat.query_one("#prompt", PromptInput)
            seen = {"idle": hint.placeholder}
            slow_down(chat.engine, 0.02)
            await pilot.press(*"tell me a story", "enter")
            await wait_for(pilot, lambda: chat.generating and len(chat.messages[-1].tokens) >= 2)
            seen["streaming"] = hint.placeholder
            await answered(pilot, chat)
            seen["answered"] = hint.placeholder
            await pilot.press("ctrl+l")
            seen["editing"] = hint.placeholder
            await pilot.press("escape")
            seen["after"] = hint.placeholder
            return seen

    seen = run(go())
    for state in ("idle", "answered", "after"):
        assert "esc" not in seen[state] and "enter sends" in seen[state], (state, seen[state])
    assert "esc stops" in seen["streaming"], seen
    assert "esc cancels the edit" in seen["editing"], seen


# ---------------------------------------------------------------- tiankong rank and failed answers


def answers(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """An answers file as generate writes it: (prompt, text, finish_reason) per line."""
    lines = []
    for prompt, text, finish in rows:
        rec = {"prompt": prompt, "text": text, "preset": "balanced", "seed": 1, "finish_reason": finish}
        if finish == "error":
            rec["error"] = "the model's logits went non-finite"
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_rank_leaves_out_answers_that_failed_and_counts_them(tmp_path):
    """An answer whose finish_reason is "error" was ranked as though it were one."""
    path = answers(
        tmp_path / "a.jsonl",
        [
            ("p1", "good a", "eos"),
            ("p1", "half an ans", "error"),
            ("p1", "good b", "length"),
            ("p2", "only one good", "eos"),
            ("p2", "", "error"),
        ],
    )
    queue = answers_queue(path)
    assert [[g.text for g in item.answers] for item in queue.items] == [["good a", "good b"]]
    assert (queue.failed, queue.skipped) == (2, 1)  # p2 is left with a single answer


def test_rank_of_only_failed_answers_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    path = answers(tmp_path / "a.jsonl", [("p", "x", "error"), ("p", "y", "eos")])
    code, _, err = cli(monkeypatch, capsys, "rank", "--input", path, "--data-dir", tmp_path / "data")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert 'no prompt with two or more answers to rank (1 answer with finish_reason "error" left out)' in err


def test_the_rank_screen_says_how_many_failed_answers_it_left_out(tmp_path, store):
    from tiankong.tui.arena import RankApp

    path = answers(tmp_path / "a.jsonl", [("p", "a", "eos"), ("p", "b", "error"), ("p", "c", "eos")])
    app = RankApp(store=store, queue=answers_queue(path))

    async def go():
        async with app.run_test() as pilot:
            await pilot.pause(0.2)
            return [str(n.message) for n in app._notifications]

    said = run(go())
    assert any("1 answer of" in n and 'that failed (finish_reason "error") was left out' in n for n in said), said
