"""engine.prompter: a model's config, tokenizer and chat template loaded without its weights, which
encode and check prompts as the loaded Engine does (`tiankong generate` checks a file's lines with it
before the weights load). References: transformers' tokenizer and chat template, config.json's
context, read from disk; a model folder and GGUF file with no weights at all to read."""

from __future__ import annotations

import json
import shutil

import pytest
from gguf_files import write_gguf
from tiny_models import make_model, with_template

from tiankong.engine.errors import ContextOverflow, InputError, ModelLoadError
from tiankong.engine.prompter import load_prompter

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Once upon a time"}]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny Llama with a chat template, and a copy of it whose weights file holds no weights: a
    Prompter that read a byte of it would fail."""
    folder = with_template(make_model(tmp_path_factory.mktemp("prompter") / "tiny-llama", "llama"))
    bare = tmp_path_factory.mktemp("bare") / "tiny-llama"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("*.safetensors"))
    (bare / "model.safetensors").write_bytes(b"not a safetensors file")
    return folder, bare


def test_a_folder_whose_weights_go_unread_encodes_and_checks_as_transformers_says(llama):
    from transformers import AutoTokenizer

    folder, bare = llama
    text = load_prompter(bare)
    ref = AutoTokenizer.from_pretrained(folder)
    assert text.encode(prompt="Once upon a time", raw=True) == ref("Once upon a time")["input_ids"]
    want = ref.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert text.encode(messages=MESSAGES) == want
    ctx = json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    assert text.cfg.max_seq_len == ctx
    text.check_fits([1] * (ctx - 1))  # room for one new token
    with pytest.raises(ContextOverflow, match=f"the model's context is {ctx}"):
        text.check_fits([1] * ctx)


def test_a_gguf_file_without_tensors_gives_its_own_tokenizer_and_context(llama, tmp_path):
    folder, _ = llama
    path = write_gguf(folder, tmp_path / "tiny.gguf")
    text = load_prompter(path)
    from transformers import AutoTokenizer

    want = AutoTokenizer.from_pretrained(folder)("Once upon a time")["input_ids"]
    assert text.encode(prompt="Once upon a time", raw=True) == want  # the file's vocabulary: the folder's
    assert text.cfg.max_seq_len == json.loads((folder / "config.json").read_text())["max_position_embeddings"]


def test_its_arguments_are_checked_as_engine_load_checks_them(llama):
    _, bare = llama
    with pytest.raises(InputError, match="tokenizer must be a Tokenizer"):
        load_prompter(bare, tokenizer="tokenizer.json")
    with pytest.raises(InputError, match="not the template's text"):
        load_prompter(bare, chat_template="{% for m in messages %}{{ m.content }}{% endfor %}")


def test_a_folder_without_weight_files_is_refused_as_engine_load_refuses_it(llama, tmp_path):
    # QA58: generate said an input file's refused lines first, and the run after them "no weights in".
    from tiankong.engine.engine import Engine

    folder, _ = llama
    empty = tmp_path / "no-weights"
    shutil.copytree(folder, empty, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelLoadError, match="no weights in") as engine_error:
        Engine.load(empty, device="cpu")
    with pytest.raises(ModelLoadError) as prompter_error:
        load_prompter(empty)
    assert str(prompter_error.value) == str(engine_error.value)
