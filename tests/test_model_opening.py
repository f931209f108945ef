"""Opening the models people have: a broken chat template, folders of links into a model cache,
quantized checkpoints, damaged cache entries, LM Studio's free-form folder names, a GGUF whose
vocabulary outgrows its embedding, and short commit prefixes. Each fails in one line naming the
problem and the fix, or opens.

Built from ../shared's stories260K (a folder copy, or a GGUF of it: milliseconds) and the fake
stores of test_resolve.py (HOME, HF_HUB_CACHE and OLLAMA_MODELS in tmp).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from gguf_files import write_gguf
from helpers import cli
from test_resolve import SHA, add_snapshot, header_gguf, stores, tiny  # noqa: F401 - fixtures used here
from tiny_models import STORIES

from tiankong.engine.errors import ChatTemplateError, ModelLoadError, TokenizerError
from tiankong.engine.model_list import list_models
from tiankong.engine.resolve import resolve_model

pytestmark = pytest.mark.skipif(not STORIES.exists(), reason="../shared is absent")
BROKEN = "{% for m in messages %}{{ m.content }\n"  # `}` where `}}` closes the expression
HELLO = [{"role": "user", "content": "Hello"}]


def copy_stories(folder: Path, skip: tuple[str, ...] = ()) -> Path:
    """A writable copy of stories260K (the shared files are read-only), less the files in `skip`."""
    folder.mkdir(parents=True)
    for f in STORIES.iterdir():
        if f.name not in skip:
            shutil.copyfile(f, folder / f.name)
    return folder


def one_line(monkeypatch, capsys, *args) -> str:
    """The one stderr line a refused command writes (exit code 2, no traceback)."""
    code, _, err = cli(monkeypatch, capsys, *args)
    lines = [x for x in err.strip().splitlines() if not x.startswith("loading ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- 1. a model's own chat template that does not compile ------------------------------------------


def test_a_broken_own_template_fails_only_where_it_is_used(tmp_path, monkeypatch, capsys):
    """As in transformers, which compiles a template when it is first applied: the folder loads,
    raw mode, info and tokenize work; chat says why in one line and how to give another template."""
    import jinja2
    from transformers import AutoTokenizer

    folder = copy_stories(tmp_path / "model")
    (folder / "chat_template.jinja").write_text(BROKEN)
    theirs = AutoTokenizer.from_pretrained(folder)  # the reference: loads, fails when applied
    with pytest.raises(jinja2.TemplateSyntaxError):
        theirs.apply_chat_template(HELLO, tokenize=False)

    code, out, err = cli(monkeypatch, capsys, "info", "-m", folder, "--format", "json")
    assert code == 0, err
    shown = json.loads(out)["chat_template"]
    assert shown.startswith("broken: ") and "syntax error on line 1" in shown and "\n" not in shown
    code, out, err = cli(monkeypatch, capsys, "tokenize", "-m", folder, "Hello")
    assert code == 0, err
    generate = ("generate", "-m", folder, "-p", "Hello", "--max-new-tokens", 2, "--format", "text")
    code, out, err = cli(monkeypatch, capsys, *generate, "--raw")
    assert code == 0, err
    line = one_line(monkeypatch, capsys, *generate)
    assert f"{folder / 'chat_template.jinja'}: chat template has a syntax error on line 1" in line
    assert "--chat-template FILE" in line and "raw mode" in line
    good = tmp_path / "good.jinja"
    good.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>")
    code, out, err = cli(monkeypatch, capsys, *generate, "--chat-template", good)
    assert code == 0, err


def test_a_gguf_with_a_broken_template_loads_for_raw_use(tmp_path):
    from tiankong.engine.engine import Engine

    folder = copy_stories(tmp_path / "hf")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": BROKEN}))
    path = write_gguf(folder, tmp_path / "broken-template.gguf")
    eng = Engine.load(path, device="cpu", pack=False)
    assert eng.encode("Hello", raw=True) == eng.tokenizer.encode("Hello")
    with pytest.raises(ChatTemplateError, match=rf"^{path}: chat template has a syntax error on line 1"):
        eng.encode(messages=HELLO)
    assert eng.info()["chat_template"].startswith("broken: ")


def test_a_gguf_template_failing_at_render_names_the_gguf_metadata(tmp_path):
    from tiankong.engine.errors import ChatTemplateFault
    from tiankong.engine.gguf_model import GGUFModel

    folder = copy_stories(tmp_path / "hf")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    failing = "{% for m in messages %}{{ m.content }}{% endfor %}{{ 1 / 0 }}"
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": failing}))
    path = write_gguf(folder, tmp_path / "failing-template.gguf")
    gguf = GGUFModel(path)
    with pytest.raises(ChatTemplateFault) as error:
        gguf.chat_template(gguf.tokenizer()).render(HELLO)
    assert str(error.value).startswith(
        f"chat template failed (the tokenizer.chat_template of {path}): ZeroDivisionError: division by zero; "
    )


def test_a_given_broken_template_is_still_refused_at_load(tmp_path):
    """--chat-template FILE is the person's own choice for chat: refused before the model is used."""
    from tiankong.engine.chat import ChatTemplate
    from tiankong.engine.tokenizer import load_tokenizer

    path = tmp_path / "t.jinja"
    path.write_text(BROKEN)
    with pytest.raises(ChatTemplateError, match=rf"^{path}: chat template has a syntax error on line 1"):
        ChatTemplate.from_file(path, load_tokenizer(STORIES))


# --- 2. model folders of links: into a cache's blobs/ they load, elsewhere they are refused ----------


def local_dir_of_links(tmp_path: Path, store: Path) -> Path:
    """What older `huggingface-cli download --local-dir` made: small files copied, the weights a
    link to the cache's blobs/<hash> (`store` the cache repo folder)."""
    data = (STORIES / "model.safetensors").read_bytes()
    blob = store / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    folder = copy_stories(tmp_path / "local-dir", skip=("model.safetensors",))
    (folder / "model.safetensors").symlink_to(blob)
    return folder


@pytest.mark.parametrize("marks", [(), ("refs", "snapshots")], ids=["models--ORG--NAME", "refs-and-snapshots"])
def test_a_folder_linking_into_a_hugging_face_cache_loads(tmp_path, monkeypatch, capsys, marks):
    store = tmp_path / "hub" / ("models--org--stories" if not marks else "stories-repo")
    for mark in marks:
        (store / mark).mkdir(parents=True)
    folder = local_dir_of_links(tmp_path, store)
    code, out, err = cli(monkeypatch, capsys, "info", "-m", folder, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["parameters"] > 0


@pytest.mark.parametrize(
    "place",
    ["elsewhere", "blobs-without-a-cache", "blobs-that-is-a-link"],
)
def test_a_folder_linking_elsewhere_is_refused_saying_why_and_the_fix(tmp_path, monkeypatch, capsys, place):
    if place == "elsewhere":
        store = tmp_path / "elsewhere"
    elif place == "blobs-without-a-cache":  # a folder named blobs/ is no cache
        store = tmp_path / "home"
    else:  # a cache repo whose blobs/ leads to a private folder: the file's real place is that folder
        store = tmp_path / "hub" / "models--org--stories"
        store.mkdir(parents=True)
        (tmp_path / "private").mkdir()
        (store / "blobs").symlink_to(tmp_path / "private")
    data = (STORIES / "model.safetensors").read_bytes()
    target = store / ("blobs" if place != "elsewhere" else "") / "model.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    folder = copy_stories(tmp_path / "model", skip=("model.safetensors",))
    (folder / "model.safetensors").symlink_to(target)
    line = one_line(monkeypatch, capsys, "info", "-m", folder)
    assert "outside the model folder" in line and "someone else's folder" in line  # why
    assert "cp -L" in line and "--model ORG/NAME" in line  # the fixes


def test_a_gguf_in_a_folder_follows_the_same_rule(tmp_path, monkeypatch, capsys):
    """A .gguf file a folder holds may link into a cache's blobs/ (Ollama's models linked into LM
    Studio's folder), not elsewhere; the file itself, named, is the person's choice and loads."""
    gguf = write_gguf(STORIES, tmp_path / "stories.gguf")
    ollama = tmp_path / "ollama" / "models"
    (ollama / "manifests").mkdir(parents=True)
    blob = ollama / "blobs" / ("sha256-" + "3" * 64)
    blob.parent.mkdir()
    shutil.copyfile(gguf, blob)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "stories.gguf").symlink_to(blob)
    assert resolve_model(linked) == linked / "stories.gguf"

    (linked / "stories.gguf").unlink()
    (linked / "stories.gguf").symlink_to(gguf)
    line = one_line(monkeypatch, capsys, "info", "-m", linked)
    assert "outside the model folder" in line and "someone else's folder" in line
    assert f"--model {gguf}" in line and "cp -L" in line
    code, _, err = cli(monkeypatch, capsys, "info", "-m", linked / "stories.gguf")
    assert code == 0, err


def test_an_lm_studio_import_by_link_is_listed_and_opens_but_no_other_file_behind_a_link(stores, tmp_path):  # noqa: F811 - the fixtures imported above
    """`lms import --symbolic-link` leaves the file where it was and links it into LM Studio's
    store: that store is the person's own, so a link there to a GGUF file is followed (listed, opened
    by name). A link there to anything that is not a GGUF file (a key named x.gguf) is not."""
    lm = stores / ".lmstudio" / "models" / "me" / "linked"
    lm.mkdir(parents=True)
    outside = header_gguf(tmp_path / "downloads" / "x.gguf")
    (lm / "x.gguf").symlink_to(outside)
    skipped: list[str] = []
    found = {m.name: m for m in list_models(skipped)}
    assert "me/linked" in found and found["me/linked"].architecture is not None, (sorted(found), skipped)
    assert resolve_model("me/linked") == lm / "x.gguf"

    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (lm / "x.gguf").unlink()
    (lm / "x.gguf").symlink_to(secret)
    skipped = []
    assert "me/linked" not in [m.name for m in list_models(skipped)]
    assert any("x.gguf is a link to" in line and "outside the model folder" in line for line in skipped), skipped
    with pytest.raises(ModelLoadError, match="outside the model folder"):
        resolve_model("me/linked")


# --- 3. quantized checkpoints ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "method"),
    [
        ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "gptq"),
        ({"quantization_config": {"quant_method": "awq"}}, "awq"),
        ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}, "fp8"),
        ({"quantization_config": {"quant_method": "compressed-tensors"}}, "compressed-tensors"),
        ({"quantization_config": {"load_in_4bit": True}}, "bitsandbytes"),  # older bitsandbytes configs
        ({"compression_config": {"quant_method": "sparseml"}}, "sparseml"),
    ],
)
def test_a_quantized_checkpoint_is_named_with_its_method(tmp_path, monkeypatch, capsys, config, method):
    folder = copy_stories(tmp_path / "model")
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, **config}))
    line = one_line(monkeypatch, capsys, "info", "-m", folder)
    assert f"the checkpoint is quantized with {method} " in line and "tiankong does not read" in line
    assert "--dtype q8_0 or q4_0" in line and "GGUF" in line


def test_fp8_weights_without_a_quantization_config_are_refused(tmp_path, monkeypatch, capsys):
    """Cast to float32 without their scales (weight_scale_inv), FP8 weights would load silently wrong."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = copy_stories(tmp_path / "model")
    tensors = load_file(folder / "model.safetensors")
    save_file(
        {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in tensors.items()}, folder / "x.safetensors"
    )
    (folder / "model.safetensors").unlink()
    (folder / "x.safetensors").rename(folder / "model.safetensors")
    line = one_line(monkeypatch, capsys, "info", "-m", folder)
    assert "is F8_E4M3: the checkpoint is quantized" in line and "--dtype q8_0 or q4_0" in line


def test_a_null_quantization_config_is_no_quantization(tmp_path, monkeypatch, capsys):
    folder = copy_stories(tmp_path / "model")
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "quantization_config": None}))
    code, _, err = cli(monkeypatch, capsys, "info", "-m", folder)
    assert code == 0, err


# --- 4. damaged cache entries are skipped, with the reason, not listed as 0 bytes -------------------


def test_models_skips_entries_whose_weights_are_gone(stores, tiny):  # noqa: F811 - the fixtures imported above
    cache = stores / "hf" / "hub"
    deleted = add_snapshot(cache, "org/deleted", SHA, tiny)
    os.remove(os.path.realpath(deleted / "model.safetensors"))  # the blob deleted under its link
    partial = add_snapshot(cache, "org/partial", SHA, tiny)
    (partial / "model.safetensors").unlink()  # the weights' blob never finished downloading
    (cache / "models--org--partial" / "blobs" / ("9" * 64 + ".incomplete")).write_bytes(b"half")
    manifest = stores / ".ollama" / "models" / "manifests" / "registry.ollama.ai" / "library" / "gone" / "latest"
    manifest.parent.mkdir(parents=True)
    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "4" * 64}]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))

    skipped: list[str] = []
    names = [m.name for m in list_models(skipped)]
    assert {"org/deleted", "org/partial", "ollama:gone:latest"}.isdisjoint(names)
    assert "tiny-org/Tiny-Llama" in names and "ollama:tinyllm:latest" in names  # the sound ones stay
    text = "\n".join(skipped)
    assert "org/deleted: " in text and "is a broken link" in text and "download org/deleted again" in text
    assert "its download did not finish (" + "9" * 64 + ".incomplete); download org/partial again" in text
    assert "ollama:gone:latest: its model blob" in text and "is missing; run `ollama pull gone`" in text
    assert len(skipped) == 3, skipped


# --- 5. LM Studio's folders may be named anything --------------------------------------------------

WEIRD = "weird name ü & (x)"


def test_lm_studio_names_with_spaces_and_accents_resolve(stores, tiny):  # noqa: F811 - the fixtures imported above
    lm = stores / ".lmstudio" / "models"
    gguf = header_gguf(lm / "lmorg" / WEIRD / "model ü.gguf")
    shutil.copytree(tiny, lm / "lmorg" / "my--model")  # "--" is the hub cache's separator, no repo's
    found = {m.name: m for m in list_models()}
    assert found[f"lmorg/{WEIRD}"].note is None and found[f"lmorg/{WEIRD}"].path == str(gguf)
    assert found["lmorg/my--model"].note is None
    assert resolve_model(f"lmorg/{WEIRD}") == gguf
    assert resolve_model(f"lmstudio:lmorg/{WEIRD}") == gguf
    assert resolve_model(f"lmstudio:lmorg/{WEIRD}/model ü.gguf") == gguf
    assert resolve_model("lmorg/my--model") == lm / "lmorg" / "my--model"
    with pytest.raises(ModelLoadError, match=r"LM Studio \(.*\) has no lmorg/nothing here"):
        resolve_model("lmstudio:lmorg/nothing here")
    for bad in ("lmstudio:lmorg/../x", "lmstudio:lmorg", "lmstudio:lmorg//x"):
        with pytest.raises(ModelLoadError, match="not an LM Studio name"):
            resolve_model(bad)


# --- 6. a GGUF whose vocabulary outgrows its embedding ---------------------------------------------


def test_a_gguf_vocabulary_past_its_embedding_names_the_file_not_config_json(tmp_path):
    """stories260K's 512 tokens over an embedding of 511 rows: the file is wrong, nothing in it to edit."""
    from safetensors.torch import load_file, save_file

    from tiankong.engine.engine import Engine

    folder = copy_stories(tmp_path / "hf")
    tensors = load_file(folder / "model.safetensors")
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"][:511].contiguous()
    save_file(tensors, folder / "model.safetensors")
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "vocab_size": 511}))
    path = write_gguf(folder, tmp_path / "short.gguf")
    with pytest.raises(TokenizerError) as error:
        Engine.load(path, device="cpu", pack=False)
    line = str(error.value)
    assert line.startswith(f"{path}: its vocabulary (tokenizer.ggml.tokens) has 512 tokens")
    assert "511 embedding rows of its token_embd.weight" in line and "convert the model to GGUF again" in line
    assert "config.json" not in line and "tokenizer files" not in line


# --- 7. a commit prefix too short to be one --------------------------------------------------------


def test_a_short_commit_prefix_says_the_minimum(stores):  # noqa: F811 - the fixtures imported above
    with pytest.raises(ModelLoadError, match="at least 7 hex characters") as error:
        resolve_model("tiny-org/Tiny-Llama@aaaa")
    assert "aaaaaaaaaa" in str(error.value)  # the snapshots it has, as before
    assert resolve_model("tiny-org/Tiny-Llama@aaaaaaa").name == SHA  # 7 is enough
    with pytest.raises(ModelLoadError) as error:
        resolve_model("tiny-org/Tiny-Llama@nosuch")
    assert "hex characters" not in str(error.value)  # not a hash: no word about hashes


def test_a_gguf_embedding_past_its_vocabulary_is_refused_as_llama_cpp_refuses_it(tmp_path, monkeypatch):
    """QA57: 520 embedding rows under 512 tokens (llama.cpp refuses the file): the rows past the
    vocabulary are ids no token is, and a sampled one was an empty piece in the answer. Refused in one
    line, as the opposite case is; llama.cpp's converter pads the vocabulary to the rows ([PADi])."""
    import gguf_vocab
    import torch
    from safetensors.torch import load_file, save_file

    from tiankong.engine.engine import Engine

    folder = copy_stories(tmp_path / "hf")
    tensors = load_file(folder / "model.safetensors")
    emb = tensors["model.embed_tokens.weight"]
    tensors["model.embed_tokens.weight"] = torch.cat([emb, emb[:8]]).contiguous()
    save_file(tensors, folder / "model.safetensors")
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "vocab_size": 520}))
    padded = write_gguf(folder, tmp_path / "padded.gguf")  # as the converter writes it: loads
    assert Engine.load(padded, device="cpu", pack=False).cfg.vocab_size == 520
    monkeypatch.setattr(gguf_vocab, "_rows", lambda folder: 0)  # a converter that does not pad
    path = write_gguf(folder, tmp_path / "long.gguf")
    with pytest.raises(TokenizerError) as error:
        Engine.load(path, device="cpu", pack=False)
    line = str(error.value)
    assert line.startswith(f"{path}: its vocabulary (tokenizer.ggml.tokens) has 512 tokens, fewer than the 520")
    assert "convert the model to GGUF again" in line
