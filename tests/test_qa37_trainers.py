"""QA37, trainers: a --chat-template file is read as generate reads it (regular file, UTF-8, bounded),
reward_config.json's fields are checked at load (one line naming the field and the fix), and a
template that fails on its own is named as the thing to fix with the trainer's own options."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from helpers import cli, one_thread  # noqa: F401 (one_thread is an autouse fixture)
from tiny_models import make_model

from tiankong.engine.chat import TEMPLATE_FILE_MAX_BYTES
from tiankong.engine.errors import InputError, ModelLoadError
from tiankong.engine.model import load_model
from tiankong.engine.tokenizer import load_tokenizer
from tiankong.trainers.data import find_chat_template
from tiankong.trainers.preferences import Encoder, load_preferences
from tiankong.trainers.reward import RewardModel, score_file

TEMPLATE = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
VOTE = {"prompt": "Hi", "chosen": " a fox", "rejected": " a dog"}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("qa37-llama"), "llama")


@pytest.fixture(scope="module")
def rm_dir(llama_dir, tmp_path_factory):
    """A reward model as `train reward` saves it, its prompts rendered with TEMPLATE."""
    base, cfg = load_model(llama_dir, "cpu", "float32")
    tpl = tmp_path_factory.mktemp("qa37-tpl") / "chat.jinja"
    tpl.write_text(TEMPLATE)
    encoder = Encoder.from_folder(llama_dir, max_length=64, chat_template=str(tpl))
    rm = RewardModel(base, cfg, normalization={"scale": 2.0, "bias": -0.5}, encoder=encoder)
    return rm.save(tmp_path_factory.mktemp("qa37-rm") / "rm", tokenizer_from=llama_dir)


# ---- 2: --chat-template FILE through generate's reader


def test_a_template_file_that_is_no_text_is_named_as_generate_names_it(llama_dir, tmp_path):
    tok = load_tokenizer(llama_dir)
    bad = tmp_path / "latin1.jinja"
    bad.write_bytes(b"\xff{{ messages }}")
    with pytest.raises(InputError, match=r"^\S*latin1.jinja is not UTF-8 text \(invalid start byte at byte 0\)"):
        find_chat_template(llama_dir, tok, str(bad))
    fifo = tmp_path / "fifo.jinja"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"fifo.jinja is a FIFO, not a regular file"):  # not "does not exist"
        find_chat_template(llama_dir, tok, str(fifo))
    with pytest.raises(InputError, match=r"^/dev/zero is a device, not a regular file"):
        find_chat_template(llama_dir, tok, "/dev/zero")
    big = tmp_path / "big.jinja"
    big.write_text(TEMPLATE + " " * TEMPLATE_FILE_MAX_BYTES)
    with pytest.raises(InputError, match=r"big.jinja is larger than 4 MB") as e:
        find_chat_template(llama_dir, tok, str(big))
    assert "restore it from its source" not in str(e.value)  # the person's own file has no source
    good = tmp_path / "ok.jinja"
    good.write_text(TEMPLATE)
    found, origin = find_chat_template(llama_dir, tok, str(good))
    assert origin == "file" and found.render([{"role": "user", "content": "x"}]) == "user: x\n"


def test_train_dpo_says_the_line_and_exits_2(llama_dir, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "latin1.jinja"
    bad.write_bytes(b"\xff")
    data = tmp_path / "votes.jsonl"
    data.write_text(json.dumps(VOTE) + "\n")
    run = ("train", "dpo", "-m", llama_dir, "--data", data, "--device", "cpu", "--no-progress", "--steps", 1)
    code, _, err = cli(monkeypatch, capsys, *run, "-o", tmp_path / "out", "--chat-template", bad)
    assert code == 2 and "Traceback" not in err, err
    assert (
        err.strip().splitlines()[-1]
        == f"error: {bad} is not UTF-8 text (invalid start byte at byte 0); give a Jinja file"
    )


# ---- 3, 4, 13: reward_config.json checked at load


def edited(rm_dir, tmp_path, section, field, value):
    folder = tmp_path / "edited"
    shutil.copytree(rm_dir, folder)
    info = json.loads((folder / "reward_config.json").read_text())
    (info[section] if section else info)[field] = value
    (folder / "reward_config.json").write_text(json.dumps(info))  # NaN and Infinity as Python writes them
    return folder


@pytest.mark.parametrize(
    "section, field, value, says",
    [
        ("normalization", "scale", "big", 'normalization.scale must be a finite number, not "big"'),
        ("normalization", "scale", float("nan"), "normalization.scale must be a finite number, not nan"),
        ("normalization", "scale", float("inf"), "normalization.scale must be a finite number, not inf"),
        ("normalization", "scale", 0, "normalization.scale must be above 0, not 0"),
        ("normalization", "bias", True, "normalization.bias must be a finite number, not true"),
        ("prompt_format", "raw", "no", 'prompt_format.raw must be true or false, not "no"'),
        ("prompt_format", "max_length", 1e18, "prompt_format.max_length must be a whole number of tokens"),
        ("head", "dtype", "int8", 'head.dtype must be "float32", not "int8"'),
        ("head", "out_features", 100000000, "head.out_features must be 1 (one score), not 100000000"),
        ("head", "bias", "yes", 'head.bias must be true or false, not "yes"'),
        ("head", "file", "../../../../etc/passwd", "head.file must be the name of a file in the folder"),
    ],
)
def test_a_field_save_never_writes_is_refused_by_name(rm_dir, tmp_path, section, field, value, says):
    folder = edited(rm_dir, tmp_path, section, field, value)
    with pytest.raises(ModelLoadError) as e:
        RewardModel.load(folder, "cpu")
    line = str(e.value)
    assert line.startswith(f"{folder / 'reward_config.json'}: {says}") and "\n" not in line, line
    assert line.endswith("re-run `tiankong train reward` to write it again"), line


@pytest.mark.parametrize(
    "section, field, value, says",
    [
        (None, "version", 99, "version 99 is not one this tiankong reads (1); upgrade tiankong"),
        ("base", "hidden_size", 4096, "base.hidden_size is 4096 but the model in the folder has"),
        ("base", "vocab_size", 7, "base.vocab_size is 7 but the model in the folder has"),
        (
            "prompt_format",
            "max_length",
            10**9,
            "prompt_format.max_length 1000000000 is longer than the model's context",
        ),
        ("head", "bias", True, "head.bias is true but reward_head.safetensors has no bias"),
    ],
)
def test_a_config_that_does_not_describe_its_model_is_refused(rm_dir, tmp_path, section, field, value, says):
    folder = edited(rm_dir, tmp_path, section, field, value)
    with pytest.raises(ModelLoadError, match="^" + re.escape(f"{folder / 'reward_config.json'}: {says}")):
        RewardModel.load(folder, "cpu")


def test_the_saved_config_loads_and_scores_with_its_numbers(rm_dir):
    rm = RewardModel.load(rm_dir, "cpu")
    assert rm.normalization == {"scale": 2.0, "bias": -0.5} and rm.encoder.max_length == 64 and not rm.encoder.raw


def test_reward_score_refuses_a_nan_scale_in_one_line(rm_dir, tmp_path, monkeypatch, capsys):
    folder = edited(rm_dir, tmp_path, "normalization", "scale", float("nan"))
    rows = tmp_path / "sc.jsonl"
    rows.write_text(json.dumps({"prompt": "Hi", "response": "yo"}) + "\n")
    code, out, err = cli(monkeypatch, capsys, "reward", "score", "-m", folder, "-i", rows, "--device", "cpu")
    assert code == 2 and out == "" and "NaN" not in out, (out, err)
    assert err.strip().splitlines()[-1].startswith(f"error: {folder / 'reward_config.json'}: normalization.scale")


# ---- 11: a template that fails on its own is the thing to fix


def votes_through(template: str, llama_dir, tmp_path, name: str):
    """(the template file, a one-vote file, an Encoder that renders with that template)."""
    path = tmp_path / name
    path.write_text(template)
    data = tmp_path / "votes.jsonl"
    data.write_text(json.dumps(VOTE) + "\n")
    return path, data, Encoder.from_folder(llama_dir, chat_template=str(path))


def test_a_failing_template_is_named_not_the_line(llama_dir, tmp_path):
    div0, data, encoder = votes_through("{{ 1/0 }}{{ messages[0]['content'] }}", llama_dir, tmp_path, "div0.jinja")
    with pytest.raises(InputError) as e:
        load_preferences(data, encoder)
    assert str(e.value) == (
        f"chat template failed ({div0}) on {data} line 1: ZeroDivisionError: division by zero; "
        "fix the template or pass another file (--chat-template FILE), or train on plain text (--raw)"
    )


def test_a_template_that_rejects_a_line_still_names_the_line(llama_dir, tmp_path):
    rejects = "{% if messages|length < 2 %}{{ raise_exception('two please') }}{% endif %}{{ messages }}"
    _, data, encoder = votes_through(rejects, llama_dir, tmp_path, "no.jinja")
    with pytest.raises(
        InputError, match=r"line 1: the chat template rejected the messages: two please; fix that line$"
    ):
        load_preferences(data, encoder)


def test_reward_score_names_the_reward_models_template_and_its_fix(rm_dir, tmp_path):
    folder = tmp_path / "rm"
    shutil.copytree(rm_dir, folder)
    (folder / "chat_template.jinja").write_text("{{ 1/0 }}{{ messages[0]['content'] }}")
    rows = tmp_path / "sc.jsonl"
    rows.write_text(json.dumps({"prompt": "Hi", "response": "yo"}) + "\n")
    with pytest.raises(InputError) as e:
        score_file(folder, str(rows), None, "cpu")
    line = str(e.value)
    assert line.startswith(f"chat template failed ({folder / 'chat_template.jinja'}) on {rows} line 1: "), line
    assert line.endswith("fix that file, or train the reward model again with another (--chat-template FILE)"), line
    assert "generate --raw" not in line
