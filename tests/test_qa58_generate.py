"""Fixes from QA58 on `tiankong generate` checking input lines before the weights load: a folder
without weights is said before the lines, an unknown --dtype before anything loads, a broken
--chat-template under --raw is not told to use raw mode, and a line refused by its characters names
the length to shorten it to, as a line refused by its tokens does. On the tiny random Llama.

References are independent of the code under test: the context read from config.json, lengths
worked out from it and the flags, the file names the test writes.
"""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import cli
from tiny_models import make_model

LONG_CHARS = "a" * 400_000  # refused by its characters, untokenized, by any vocabulary of this model
LONG_TOKENS = "the cat sat on the mat and looked at the dog " * 80  # ~3,600 characters: tokenized, too long


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("qa58-llama"), "llama")


def one_line(text: str) -> str:
    return " ".join(text.split())


def lines(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_a_folder_without_weights_is_said_before_the_input_lines(monkeypatch, capsys, model_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare, ignore=shutil.ignore_patterns("*.safetensors"))
    src = tmp_path / "in.jsonl"
    src.write_text(lines({"prompt": LONG_CHARS}, {"prompt": "hi"}, {"prompt": LONG_TOKENS}))
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", bare, "-i", src)
    assert code == 2 and out == "", err
    assert err.strip().splitlines() == [err.strip()] and f"no weights in {bare}" in err, err
    assert "refused" not in err and "line 1" not in err, err


def test_an_unknown_dtype_is_refused_before_anything_loads(monkeypatch, capsys, model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(lines({"prompt": LONG_CHARS}, {"prompt": "hi"}))
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-i", src, "--dtype", "q3_x")
    assert code == 2 and out == "", err
    assert err.strip().splitlines() == [err.strip()] and "'q3_x'" in err, err
    assert "loading" not in err and "refused" not in err, err


@pytest.mark.parametrize("raw", [True, False])
def test_a_broken_template_file_advises_raw_mode_only_without_raw(monkeypatch, capsys, model_dir, tmp_path, raw):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m.content }\n")  # a syntax error on line 1
    args = ["generate", "-m", model_dir, "-p", "hi", "--chat-template", bad] + (["--raw"] if raw else [])
    code, out, err = cli(monkeypatch, capsys, *args)
    said = one_line(err)
    assert code == 2 and out == "", err
    assert f"{bad}: chat template has a syntax error on line 1" in said, said
    assert said.endswith("(--chat-template FILE, or chat_template=PATH in Python)" if raw else "(generate --raw)"), said


def test_a_line_refused_by_its_characters_names_the_length_a_token_refusal_names(
    monkeypatch, capsys, model_dir, tmp_path
):
    ctx = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    most = ctx - 20  # --max-new-tokens 20, less than a quarter of the context: its room is 20
    src = tmp_path / "in.jsonl"
    talk = [{"role": "user", "content": LONG_CHARS}]
    src.write_text(lines({"prompt": LONG_CHARS}, {"prompt": LONG_TOKENS}, {"messages": talk}))
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-i", src, "--max-new-tokens", "20")
    said = one_line(err)
    assert code == 2 and out == "", err
    fix = f"shorten it to about {most} tokens, which leaves 20 for the answer"
    assert (
        f"{src} line 1: the prompt is 400,000 characters, far more than the model's context of {ctx} tokens "
        f"can hold; {fix};" in said
    ), said
    assert f"{src} line 2: the prompt is" in said and f"shorten it to at most {most} tokens, which leaves 20" in said
    assert f"{src} line 3: the conversation is 400,000 characters" in said and said.endswith(fix), said


def test_the_python_encode_names_the_same_length_with_and_without_an_answer_length(model_dir):
    from tiankong.engine.errors import ContextOverflow
    from tiankong.engine.prompter import load_prompter

    ctx = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    text = load_prompter(model_dir)
    with pytest.raises(ContextOverflow, match=f"; shorten it to about {ctx - 1} tokens$"):  # as check_fits: 1
        text.encode(prompt=LONG_CHARS)
    with pytest.raises(ContextOverflow, match=f"shorten it to about {ctx - ctx // 4} tokens, which leaves {ctx // 4}"):
        text.encode(prompt=LONG_CHARS, max_new_tokens=10**6)  # at most a quarter of the context
    with pytest.raises(ContextOverflow, match="^the conversation is 400,000 characters"):
        text.encode(messages=[{"role": "user", "content": LONG_CHARS}])
