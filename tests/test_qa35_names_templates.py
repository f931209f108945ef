"""QA 35: names as llama.cpp and the hub spell them, a partial download, LM Studio's names, chat
templates that are not there (an Ollama model's Go template, a base model in training) or cannot be
used (chat refuses before the app opens), and `train ppo --help` at 80 columns.

The stores are faked as in test_resolve.py; a GGUF file is the tiny Llama written by gguf_files.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from gguf_files import write_gguf
from helpers import cli
from test_model_opening import BROKEN, copy_stories
from test_resolve import SHA, add_snapshot, stores, tiny  # noqa: F401 - fixtures used here

from tiankong.engine.errors import ChatTemplateError, ModelLoadError
from tiankong.engine.model_names import display_name
from tiankong.engine.resolve import resolve_model
from tiankong.trainers import verdict

GO = "{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>"


def _gguf_repo(home: Path, model: Path, repo: str, files: dict[str, str]) -> Path:
    """A GGUF-only repo in the fake hub cache: {file name: quantization}, each linked to its blob."""
    source = home / "src" / repo
    source.mkdir(parents=True)
    for name, qtype in files.items():
        write_gguf(model, source / name, qtype)
    return add_snapshot(home / "hf" / "hub", repo, SHA, source)


def _ollama(home: Path, gguf: Path, name: str, template: bool) -> Path:
    """manifests/registry.ollama.ai/library/NAME/latest: the GGUF blob, and Ollama's template and
    params layers (a Go template, stop words) where `template`."""
    root = home / ".ollama" / "models"
    layers = []
    for media, data in [
        ("model", gguf.read_bytes()),
        *([("template", GO.encode()), ("params", b'{"stop": ["<|user|>"]}')] if template else []),
    ]:
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs" / f"sha256-{digest}").write_bytes(data)
        layers.append({"mediaType": f"application/vnd.ollama.image.{media}", "digest": f"sha256:{digest}"})
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / "latest"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return manifest


# --- 15. train ppo --help at 80 columns --------------------------------------------------------------


def test_train_help_cuts_nothing_at_80_columns(monkeypatch, capsys):
    # QA: the on/off flags' second column (--no-whiten-rewards) left the help text 20 of 80 columns:
    # "ORG/NAME@REV/FILE.…" and "--missing-eos-pena…" were cut.
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("ppo", "dpo", "reward", "sft", "pretrain"):
        code, page, err = cli(monkeypatch, capsys, "train", name, "--help")
        assert code == 0, err
        assert "…" not in page, (name, [line for line in page.splitlines() if "…" in line])
        assert max(map(len, page.splitlines())) <= 80
    words = " ".join(page.replace("│", " ").split())
    assert "(or ORG/NAME@REV/FILE.gguf)" in words


# --- 8. a partial download ---------------------------------------------------------------------------


def test_a_partial_download_says_so_when_loaded(stores, tiny):  # noqa: F811
    # QA: `info -m Org/Partial` said "copy the real file into the folder"; `models` said rightly that the
    # download did not finish. Both say it now.
    from tiankong.engine.engine import Engine

    snapshot = add_snapshot(stores / "hf" / "hub", "Org/Partial", SHA, tiny)
    weights = snapshot / "model.safetensors"
    weights.unlink()
    os.symlink("../../blobs/abcdef", weights)
    (snapshot.parent.parent / "blobs" / "abc.incomplete").write_bytes(b"\0" * 10)
    with pytest.raises(ModelLoadError) as error:
        Engine.load("Org/Partial")
    text = str(error.value)
    assert "its download did not finish (abc.incomplete); download Org/Partial again" in text, text
    assert "copy the real file" not in text
    (snapshot.parent.parent / "blobs" / "abc.incomplete").unlink()  # a blob deleted since: download again
    with pytest.raises(ModelLoadError, match="which is gone\\); download Org/Partial again"):
        Engine.load("Org/Partial")


# --- 10. llama.cpp's names, and "did you mean" --------------------------------------------------------


def test_repo_quant_and_hub_addresses_resolve(stores, tiny):  # noqa: F811
    snapshot = _gguf_repo(stores, tiny, "TestOrg/Smol-GGUF", {"smol-q4_0.gguf": "q4_0", "smol-Q8_0.gguf": "q8_0"})
    assert resolve_model("TestOrg/Smol-GGUF:Q8_0") == snapshot / "smol-Q8_0.gguf"  # llama.cpp's -hf REPO:QUANT
    assert resolve_model("TestOrg/Smol-GGUF:q4_0") == snapshot / "smol-q4_0.gguf"  # any case
    assert resolve_model("hf.co/TestOrg/Smol-GGUF/smol-q4_0.gguf") == snapshot / "smol-q4_0.gguf"
    assert resolve_model("https://huggingface.co/TestOrg/Smol-GGUF:Q8_0") == snapshot / "smol-Q8_0.gguf"
    with pytest.raises(ModelLoadError) as error:  # Q4_K is not q4_0's, nor a Q4_K_M's
        resolve_model("TestOrg/Smol-GGUF:Q4_K")
    assert "no .gguf file of quantization Q4_K" in str(error.value)
    assert "smol-Q8_0.gguf, smol-q4_0.gguf" in str(error.value)
    with pytest.raises(ModelLoadError) as error:  # the repo itself: its two files, not another repo
        resolve_model("hf.co/TestOrg/Smol-GGUF")
    assert "holds 2 GGUF files" in str(error.value)


def test_a_bare_name_suggests_each_place_that_holds_it(stores, tiny):  # noqa: F811
    # QA: `info -m Smol-GGUF` suggested only lmstudio:TestOrg/Smol-GGUF, not the cached repo of that name.
    _gguf_repo(stores, tiny, "TestOrg/Smol-GGUF", {"smol-q4_0.gguf": "q4_0", "smol-q8_0.gguf": "q8_0"})
    lm = stores / ".lmstudio" / "models" / "TestOrg" / "Smol-GGUF"
    lm.mkdir(parents=True)
    write_gguf(tiny, lm / "smol-q8_0.gguf", "q8_0")
    with pytest.raises(ModelLoadError) as error:
        resolve_model("Smol-GGUF")
    assert "did you mean TestOrg/Smol-GGUF or lmstudio:TestOrg/Smol-GGUF?" in str(error.value)


# --- 13. LM Studio's models by their names --------------------------------------------------------------


def test_lmstudio_models_are_shown_by_the_name_that_loads_them(stores, tiny, monkeypatch, capsys):  # noqa: F811
    lm = stores / ".lmstudio" / "models" / "lmorg" / "Stories-GGUF"
    lm.mkdir(parents=True)
    gguf = write_gguf(tiny, lm / "stories-f32.gguf")
    path = resolve_model("lmorg/Stories-GGUF")
    assert path == gguf and display_name(path) == "lmstudio:lmorg/Stories-GGUF/stories-f32.gguf"
    assert resolve_model(display_name(path)) == gguf  # the name shown loads it again
    assert display_name(stores / ".lmstudio" / "models" / "lm-org" / "lm-tiny") == "lmstudio:lm-org/lm-tiny"
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "lmorg/Stories-GGUF", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["name"] == "lmstudio:lmorg/Stories-GGUF/stories-f32.gguf"


# --- 5. Ollama's Go template ---------------------------------------------------------------------------


def test_an_ollama_go_template_is_named_not_run(stores, tiny, monkeypatch, capsys):  # noqa: F811
    base = write_gguf(tiny, stores / "base.gguf")  # no tokenizer.chat_template
    _ollama(stores, base, "smol", template=True)
    _ollama(stores, base, "plain", template=False)
    shown = {}
    for name in ("smol", "plain"):
        code, out, err = cli(monkeypatch, capsys, "info", "-m", f"ollama:{name}", "--format", "json")
        assert code == 0, err
        shown[name] = json.loads(out)["chat_template"]
    assert shown == {
        "smol": "no (Ollama's template layer is a Go template, not read; pass --chat-template FILE)",
        "plain": False,
    }
    jobs = stores / "m.jsonl"
    jobs.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", "ollama:smol", "-i", jobs, "--max-new-tokens", 1)
    assert code == 0, err
    assert "joins the messages' contents without roles (Ollama's template layer is a Go template, not read)" in err


def test_an_ollama_blob_with_its_own_template_uses_it(stores, tmp_path, monkeypatch, capsys):  # noqa: F811
    folder = copy_stories(tmp_path / "hf")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    jinja = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": jinja}))
    _ollama(stores, write_gguf(folder, tmp_path / "chat.gguf"), "chatty", template=True)
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "ollama:chatty", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["chat_template"] is True
    from tiankong.engine.engine import Engine

    assert Engine.load("ollama:chatty").template.source == jinja


# --- 6. chat and compare refuse a broken template before the app opens ----------------------------------


@pytest.mark.parametrize("mode", ["chat", "compare", "compare --prompts"])
def test_chat_refuses_a_broken_own_template_before_the_app(tmp_path, monkeypatch, mode):
    from tiankong.tui import app as app_module
    from tiankong.tui import arena
    from tiankong.tui.queue import prompt_queue

    folder = copy_stories(tmp_path / "hf")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": BROKEN}))
    gguf = write_gguf(folder, tmp_path / "broken.gguf")

    def opened(*args, **kwargs):
        raise AssertionError("the app opened")

    monkeypatch.setattr(app_module, "run_until_exit", opened)
    monkeypatch.setattr(arena, "run_until_exit", opened)
    with pytest.raises(ChatTemplateError) as error:
        if mode == "compare --prompts":
            (tmp_path / "prompts.txt").write_text("hi\n")
            queue = prompt_queue(tmp_path / "prompts.txt")
            arena.run_compare_queue(gguf, queue, presets=["balanced", "precise"], models=None, data_dir=tmp_path / "d")
        else:
            app_module.run_app(gguf, data_dir=tmp_path / "data", mode=mode, compare_presets=["balanced", "precise"])
    text = str(error.value)
    assert "syntax error on line 1" in text and "--chat-template FILE" in text and "\n" not in text
    assert "generate --raw" not in text and "raw mode" not in text
    # with --chat-template the model's own is not read: the app opens
    good = tmp_path / "good.jinja"
    good.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>")
    with pytest.raises(AssertionError, match="the app opened"):
        app_module.run_app(gguf, data_dir=tmp_path / "data", chat_template=good)


def test_chat_names_no_raw_mode_for_a_template_failing_later():
    """A template that fails only when a message is sent: the chat's line has no `generate --raw`."""
    from tiankong.engine.chat import RAW_MODE_FIX
    from tiankong.engine.errors import ChatTemplateFault
    from tiankong.tui.screens.chat_sending import ChatSending

    fault = ChatTemplateFault("chat template failed (x): boom; fix the template or pass another file" + RAW_MODE_FIX)
    screen = ChatSending.__new__(ChatSending)
    screen.engine, screen.params = object(), SimpleNamespace(max_new_tokens=1)
    assert "generate --raw" not in screen._how_to_fit(fault, [])


# --- 7. trainers on a model without a chat template -------------------------------------------------------


def test_preference_and_ppo_runs_say_when_the_model_has_no_template(stores, tmp_path):  # noqa: F811
    from tiankong.engine.model_list import list_models  # noqa: F401 - resolve's own imports first
    from tiankong.trainers.preferences import Encoder

    base = write_gguf(copy_stories(tmp_path / "hf"), tmp_path / "base.gguf")
    _ollama(stores, base, "smol", template=True)
    blob = resolve_model("ollama:smol")
    note = Encoder.from_folder(str(blob)).no_template_note(str(blob))
    assert note is not None and note.startswith(
        "note: ollama:smol:latest has no chat template (Ollama's template layer is a Go template, not read): "
        "the prompts are trained on as plain text without roles"
    )
    assert "--chat-template FILE" in note
    plain = Encoder.from_folder(base).no_template_note(base)
    assert plain is not None and "(Ollama" not in plain and "base.gguf has no chat template" in plain
    chat = copy_stories(tmp_path / "chat")
    config = json.loads((chat / "tokenizer_config.json").read_text())
    (chat / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": "{{ messages }}"}))
    assert Encoder.from_folder(chat).no_template_note(chat) is None


def test_a_dpo_run_on_a_model_without_template_says_so_at_start(stores, tmp_path, monkeypatch, capsys):  # noqa: F811
    base = write_gguf(copy_stories(tmp_path / "hf"), tmp_path / "base.gguf")
    _ollama(stores, base, "smol", template=True)
    prefs = tmp_path / "prefs.jsonl"
    pairs = [("Tell me about a dog.", "The dog ran.", "Cat."), ("What is the sun?", "A star.", "Dog.")] * 2
    prefs.write_text(
        "".join(json.dumps(dict(zip(("prompt", "chosen", "rejected"), p, strict=True))) + "\n" for p in pairs)
    )
    run = ("train", "dpo", "-m", "ollama:smol", "--data", prefs, "--steps", 1, "--no-progress", "-o")
    # The note is said at the start, before any training; the verdict after it sampled 2 x 32 answers of
    # stories260K per run (about 10 s each, 90 % of this test): 2 x 2 answers still end each run as usual.
    monkeypatch.setattr(verdict, "N_FRESH", 2)
    code, out, err = cli(monkeypatch, capsys, *run, tmp_path / "dpo")
    assert code == 0, err
    assert "note: ollama:smol:latest has no chat template (Ollama's template layer is a Go template" in err
    code, out, err = cli(monkeypatch, capsys, *run, tmp_path / "dpo-raw", "--raw")  # asked for: not said
    assert code == 0, err
    assert "has no chat template" not in err
