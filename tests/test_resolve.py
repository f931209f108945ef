"""`--model NAME`, offline: the Hugging Face cache, LM Studio, Ollama's store, and `tiankong models`.

Every store is faked in tmp with the real layout (the hub cache's relative links into blobs/, an
Ollama manifest pointing at a blob) and found through the environment (HF_HUB_CACHE, HOME,
OLLAMA_MODELS), so nothing here can touch the network or the machine's own caches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli, deadline, one_thread  # noqa: F401 - one_thread applies to this module
from tiny_models import make_model

from tiankong.engine.engine import Engine
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.model_list import list_models
from tiankong.engine.resolve import resolve_model
from tiankong.engine.sampling import SamplingParams

SHA = "a" * 40
OLD = "b" * 40
# A GGUF header of nothing (version 3, no tensors, no metadata): listed and resolved, never loaded.
# `tiankong models` skips a file whose header cannot be read, so a few bytes after the magic are not one.
EMPTY_GGUF = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny"), "llama")


def add_snapshot(cache: Path, repo: str, sha: str, source: Path, ref: str | None = "main") -> Path:
    """The hub's layout: blobs/<hash of the file> and snapshots/<sha>/<name> -> ../../blobs/<hash>."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / sha
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo_dir / "blobs" / digest)
        os.symlink(f"../../blobs/{digest}", snapshot / f.name)
    if ref is not None:
        (repo_dir / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / ref).write_text(sha)
    return snapshot


@pytest.fixture
def stores(tmp_path, monkeypatch, tiny):
    """A fake home with a hub cache (two revisions), an LM Studio folder and an Ollama store."""
    home = tmp_path / "home"
    cache = home / "hf" / "hub"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.chdir(tmp_path)
    add_snapshot(cache, "tiny-org/Tiny-Llama", SHA, tiny)
    add_snapshot(cache, "tiny-org/Tiny-Llama", OLD, tiny, ref="v1.0")
    lm = home / ".lmstudio" / "models"
    shutil.copytree(tiny, lm / "lm-org" / "lm-tiny")
    (lm / "gguf-org" / "only-gguf").mkdir(parents=True)
    (lm / "gguf-org" / "only-gguf" / "only-gguf-Q4_K_M.gguf").write_bytes(EMPTY_GGUF)
    ollama = home / ".ollama" / "models"
    blob, config = "1" * 64, "2" * 64
    (ollama / "blobs").mkdir(parents=True)
    (ollama / "blobs" / f"sha256-{blob}").write_bytes(EMPTY_GGUF + bytes(80))  # a header of nothing: listed
    (ollama / "blobs" / f"sha256-{config}").write_text(json.dumps({"model_family": "llama", "file_type": "Q4_0"}))
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "tinyllm" / "latest"
    manifest.parent.mkdir(parents=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{blob}"},
        {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{config}"},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return home


def test_hub_cache_name_resolves_offline_and_generates(stores):
    folder = resolve_model("tiny-org/Tiny-Llama")
    assert folder == stores / "hf" / "hub" / "models--tiny-org--Tiny-Llama" / "snapshots" / SHA
    eng = Engine.load("tiny-org/Tiny-Llama")  # the engine API takes names too
    assert eng.folder == folder
    events = list(eng.generate([eng.encode("Once upon", raw=True)], [SamplingParams(seed=1, max_new_tokens=4)]))
    assert events and events[-1].__class__.__name__ == "Finished"


def test_huggingface_hub_agrees_where_installed(stores):
    hub = pytest.importorskip("huggingface_hub")
    try:
        expected = hub.snapshot_download(
            "tiny-org/Tiny-Llama", cache_dir=str(stores / "hf" / "hub"), local_files_only=True
        )
    except Exception as e:  # an old huggingface_hub without offline snapshot lookups
        pytest.skip(f"huggingface_hub cannot look up offline: {e}")
    assert resolve_model("tiny-org/Tiny-Llama") == Path(expected)


def test_revision_hash_prefix_and_case(stores):
    snapshots = stores / "hf" / "hub" / "models--tiny-org--Tiny-Llama" / "snapshots"
    assert resolve_model("tiny-org/Tiny-Llama@v1.0") == snapshots / OLD
    assert resolve_model(f"tiny-org/Tiny-Llama@{OLD[:8]}") == snapshots / OLD
    assert resolve_model("Tiny-Org/tiny-llama") == snapshots / SHA  # the hub's ids ignore case
    with pytest.raises(ModelLoadError, match=r"not at revision 'v9'.*main.*v1\.0") as e:
        resolve_model("tiny-org/Tiny-Llama@v9")
    assert "\n" not in str(e.value)


def test_local_path_wins_over_a_name(stores, tmp_path, tiny):
    shutil.copytree(tiny, tmp_path / "tiny-org" / "Tiny-Llama")
    assert resolve_model("tiny-org/Tiny-Llama") == Path("tiny-org/Tiny-Llama")


def test_lmstudio_folder_and_gguf_files(stores, tmp_path):
    lm = stores / ".lmstudio" / "models"
    assert resolve_model("lm-org/lm-tiny") == lm / "lm-org" / "lm-tiny"
    only = lm / "gguf-org" / "only-gguf" / "only-gguf-Q4_K_M.gguf"
    assert resolve_model("gguf-org/only-gguf") == only  # the folder's one GGUF file is the model
    (only.parent / "only-gguf-Q8_0.gguf").write_bytes(EMPTY_GGUF)
    with pytest.raises(ModelLoadError, match=r"holds 2 GGUF files .*--model gguf-org/only-gguf/only-gguf-Q4_K_M.gguf"):
        resolve_model("gguf-org/only-gguf")
    assert resolve_model("gguf-org/only-gguf/only-gguf-Q8_0.gguf") == only.parent / "only-gguf-Q8_0.gguf"
    # A Hugging Face repo of GGUF files only (no config.json): its file, or ORG/NAME/FILE.gguf among several.
    release = tmp_path / "release"
    release.mkdir()
    (release / "tiny-q8_0.gguf").write_bytes(EMPTY_GGUF)
    snapshot = add_snapshot(stores / "hf" / "hub", "tiny-org/Tiny-GGUF", SHA, release)
    assert resolve_model("tiny-org/Tiny-GGUF") == snapshot / "tiny-q8_0.gguf"
    assert resolve_model("tiny-org/Tiny-GGUF/tiny-q8_0.gguf") == snapshot / "tiny-q8_0.gguf"
    found = {m.name: m for m in list_models()}  # listed under the names --model takes
    assert (found["tiny-org/Tiny-GGUF"].format, found["tiny-org/Tiny-GGUF"].dtype) == ("gguf", "Q8_0")
    assert found["gguf-org/only-gguf/only-gguf-Q8_0.gguf"].path == str(only.parent / "only-gguf-Q8_0.gguf")


def test_lmstudio_models_directory_moved_in_its_settings(stores, tmp_path):
    """LM Studio lets a person move its models folder (Settings > Models Directory, kept in its
    settings.json as downloadsFolder) and its whole data folder (~/.lmstudio-home-pointer)."""
    moved = tmp_path / "disk" / "llms"
    shutil.copytree(stores / ".lmstudio" / "models" / "lm-org" / "lm-tiny", moved / "moved-org" / "tiny")
    with pytest.raises(ModelLoadError, match="no model"):
        resolve_model("moved-org/tiny")
    (stores / ".lmstudio" / "settings.json").write_text(json.dumps({"downloadsFolder": str(moved), "x": 1}))
    assert resolve_model("moved-org/tiny") == moved / "moved-org" / "tiny"
    assert resolve_model("lm-org/lm-tiny") == stores / ".lmstudio" / "models" / "lm-org" / "lm-tiny"  # still found
    assert {m.name: m.source for m in list_models()}["moved-org/tiny"] == "lmstudio"
    # The data folder moved: its settings.json is the one read.
    elsewhere = tmp_path / "lmdata"
    elsewhere.mkdir()
    (stores / ".lmstudio-home-pointer").write_text(f"{elsewhere}\n")
    with pytest.raises(ModelLoadError, match="no model"):
        resolve_model("moved-org/tiny")
    (elsewhere / "settings.json").write_text(json.dumps({"downloadsFolder": str(moved)}))
    assert resolve_model("moved-org/tiny") == moved / "moved-org" / "tiny"
    # LM Studio's files are its own: one that is not what it writes leaves the default folders.
    for text in (
        "{not json",
        json.dumps(["a"]),
        json.dumps({"downloadsFolder": 3}),
        json.dumps({"downloadsFolder": "rel"}),
    ):
        (elsewhere / "settings.json").write_text(text)
        assert resolve_model("lm-org/lm-tiny") == stores / ".lmstudio" / "models" / "lm-org" / "lm-tiny"
    # QA: values that broke every load (expanduser of an unknown user, JSON nested past the stack, a NUL)
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for text in (json.dumps({"downloadsFolder": "~nosuchuser0/models"}), deep, '{"downloadsFolder": "/tmp/x\\u0000y"}'):
        (elsewhere / "settings.json").write_text(text)
        assert resolve_model("lm-org/lm-tiny") == stores / ".lmstudio" / "models" / "lm-org" / "lm-tiny"
        assert "lm-org/lm-tiny" in {m.name for m in list_models()}
    for pointer in ("~nosuchuser0/lms", "/x\0y"):
        (stores / ".lmstudio-home-pointer").write_text(pointer)
        assert resolve_model("lm-org/lm-tiny") == stores / ".lmstudio" / "models" / "lm-org" / "lm-tiny"
    (stores / ".lmstudio-home-pointer").unlink()
    (stores / ".lmstudio-home-pointer").mkdir()  # not a file: ignored
    (stores / ".lmstudio" / "settings.json").write_bytes(b"\xff\xfe")
    assert resolve_model("lm-org/lm-tiny") == stores / ".lmstudio" / "models" / "lm-org" / "lm-tiny"


def test_ollama_name_resolves_to_its_blob(stores, monkeypatch, capsys):
    blob = stores / ".ollama" / "models" / "blobs" / f"sha256-{'1' * 64}"
    assert resolve_model("ollama:tinyllm") == resolve_model("ollama:library/tinyllm:latest") == blob
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", "ollama:tinyllm", "-p", "hi")
    # the fake blob is no model: one line, before any "loading" line (its header is read first,
    # with the tokenizer and template that check the prompts before the weights load)
    (error,) = err.strip().splitlines()
    assert code == 2 and "loading" not in err
    assert "has no general.architecture: not a model file" in error and blob.name in error
    with pytest.raises(ModelLoadError, match="not in the Ollama store"):
        resolve_model("ollama:tinyllm:7b")
    blob.unlink()
    with pytest.raises(ModelLoadError, match="model blob .* is missing; run `ollama pull tinyllm`"):
        resolve_model("ollama:tinyllm")
    monkeypatch.setenv("OLLAMA_MODELS", str(stores / "nowhere"))
    with pytest.raises(ModelLoadError, match="no Ollama store"):
        resolve_model("ollama:tinyllm")


def test_unknown_name_is_one_line_naming_the_places(stores, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", "nobody/nothing", "-p", "hi")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    line = " ".join(err.split())  # rich may wrap
    assert "nobody/nothing" in line and "Hugging Face cache" in line and str(stores / "hf" / "hub") in line
    assert "LM Studio" in line and "tiankong models" in line


def test_models_lists_everything_bundled_first(stores, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "models", "--format", "json")
    assert code == 0, err
    found = {m["name"]: m for m in json.loads(out)}
    assert json.loads(out)[0]["source"] == "bundled"
    hub = found["tiny-org/Tiny-Llama"]
    assert hub["source"] == "huggingface" and hub["architecture"] == "LlamaForCausalLM"
    assert hub["dtype"] == "float32" and hub["parameters"] and hub["path"].endswith(SHA)
    assert found["tiny-org/Tiny-Llama@v1.0"]["path"].endswith(OLD)
    assert found["lm-org/lm-tiny"]["source"] == "lmstudio"
    assert found["gguf-org/only-gguf"]["format"] == "gguf" and found["gguf-org/only-gguf"]["dtype"] == "Q4_K_M"
    ollama = found["ollama:tinyllm:latest"]
    assert (ollama["architecture"], ollama["dtype"], ollama["bytes"]) == ("llama", "Q4_0", 104)
    assert list_models()[0].name == "tiankong-mini"
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli(monkeypatch, capsys, "models")
    assert code == 0 and "tiny-org/Tiny-Llama" in out and "GGUF" in out


def test_chat_template_override_changes_the_prompt(stores, tmp_path, monkeypatch, capsys):
    template = tmp_path / "mine.jinja"
    template.write_text("{% for m in messages %}Once {{ m['content'] }} upon{% endfor %}")
    messages = [{"role": "user", "content": "hello"}]
    own = Engine.load("tiny-org/Tiny-Llama")
    mine = Engine.load("tiny-org/Tiny-Llama", chat_template=template)
    assert own.encode(messages=messages) != mine.encode(messages=messages)
    assert "Once hello upon" in mine.tokenizer.decode(mine.encode(messages=messages), skip_special_tokens=True)
    line = json.dumps({"messages": messages})
    (tmp_path / "in.jsonl").write_text(line + "\n")
    args = ["generate", "-m", "tiny-org/Tiny-Llama", "-i", tmp_path / "in.jsonl", "--max-new-tokens", "2"]
    code, out, err = cli(monkeypatch, capsys, *args, "--seed", "1", "--chat-template", template)
    assert code == 0, err
    assert json.loads(out)["usage"]["prompt_tokens"] == len(mine.encode(messages=messages))
    code, out, err = cli(monkeypatch, capsys, *args, "--chat-template", tmp_path / "missing.jinja")
    assert code == 2 and "missing.jinja does not exist" in err


@pytest.mark.parametrize(
    "args",
    [
        ["train", "sft", "--data", "x.jsonl", "--output", "out"],
        ["chat"],
        ["compare", "--models", "tiny-org/Tiny-Llama"],
        ["tokenize", "hi"],
        ["info"],
    ],
    ids=lambda a: a[0],
)
def test_every_command_takes_names_through_the_resolver(stores, monkeypatch, capsys, args):
    code, out, err = cli(monkeypatch, capsys, *args, "--model", "nobody/nothing")
    assert code == 2 and "no model 'nobody/nothing'" in " ".join(err.split()), err


def test_tokenize_by_name(stores, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "tokenize", "-m", "tiny-org/Tiny-Llama", "--format", "jsonl", "hi")
    assert code == 0 and json.loads(out)["ids"], err


def test_cache_location_follows_huggingface_hub(monkeypatch, tmp_path):
    from tiankong.engine.model_places import hf_hub_cache

    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert hf_hub_cache() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_hub_cache() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hf_hub_cache() == tmp_path / "elsewhere"


def test_damaged_cache_and_template_files_are_one_line_errors(stores, tmp_path, tiny):
    from tiankong.engine.errors import ChatTemplateError

    repo = stores / "hf" / "hub" / "models--tiny-org--Tiny-Llama"
    (repo / "refs" / "main").write_text("../../../etc/passwd")
    with pytest.raises(ModelLoadError, match="does not hold a commit hash"):
        resolve_model("tiny-org/Tiny-Llama")
    (repo / "refs" / "main").write_text(SHA)
    (repo / "snapshots" / SHA / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        resolve_model("tiny-org/Tiny-Llama")
    os.mkfifo(tmp_path / "fifo.jinja")
    with pytest.raises(ChatTemplateError, match="FIFO"):
        Engine.load(tiny, chat_template=tmp_path / "fifo.jinja")
    (tmp_path / "t.json").write_text(json.dumps({"chat_template": "X{{ messages[0]['content'] }}"}))
    eng = Engine.load(tiny, chat_template=tmp_path / "t.json")
    assert eng.template.source.startswith("X")


# --- GGUF files in the stores: names, subfolders, projectors ---------------------------------------


def header_gguf(path: Path, arch: str = "llama") -> Path:
    """A GGUF file of metadata only (no tensors): enough to be listed, resolved and peeked at."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, arch)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_repos_without_refs_in_subfolders_and_beside_projectors(stores):
    hub, lm = stores / "hf" / "hub", stores / ".lmstudio" / "models"
    # downloaded by hash (no refs/main): it resolves, so it is listed under the same name
    noref = header_gguf(hub / "models--org--NoRef-GGUF" / "snapshots" / SHA / "noref-Q4_0.gguf")
    # a quantization in a subfolder, as unsloth and bartowski lay out big ones
    sub = hub / "models--org--Sub-GGUF" / "snapshots" / SHA
    header_gguf(sub / "Q8_0" / "tiny-Q8_0.gguf")
    (sub / "README.md").write_text("hi")
    (sub.parent.parent / "refs").mkdir()
    (sub.parent.parent / "refs" / "main").write_text(SHA)
    # a vision model: its projector (mmproj, or any file of architecture clip) is no language model
    vision = header_gguf(lm / "lm-org" / "Vision-GGUF" / "vision-Q8_0.gguf")
    header_gguf(lm / "lm-org" / "Vision-GGUF" / "mmproj-model-f16.gguf", "clip")
    header_gguf(lm / "lm-org" / "Vision-GGUF" / "projector.gguf", "clip")
    assert resolve_model("org/NoRef-GGUF") == noref
    assert resolve_model("org/Sub-GGUF") == sub / "Q8_0" / "tiny-Q8_0.gguf"
    assert resolve_model("org/Sub-GGUF/Q8_0/tiny-Q8_0.gguf") == sub / "Q8_0" / "tiny-Q8_0.gguf"
    assert resolve_model("lm-org/Vision-GGUF") == vision
    names = [m.name for m in list_models()]
    assert {"org/NoRef-GGUF", "org/Sub-GGUF", "lm-org/Vision-GGUF"} <= set(names), names
    assert not [n for n in names if "mmproj" in n or "projector" in n]
    header_gguf(sub / "Q4_0" / "tiny-Q4_0.gguf")
    with pytest.raises(ModelLoadError, match=r"holds 2 GGUF files \(Q4_0/tiny-Q4_0.gguf, Q8_0/tiny-Q8_0.gguf\)"):
        resolve_model("org/Sub-GGUF")
    assert "org/Sub-GGUF/Q4_0/tiny-Q4_0.gguf" in [m.name for m in list_models()]
    # a GGUF repo none of whose files was downloaded: which file to get, not "the whole repository"
    empty = hub / "models--org--Empty-GGUF" / "snapshots" / SHA
    empty.mkdir(parents=True)
    (empty / "README.md").write_text("hi")
    with pytest.raises(ModelLoadError, match="holds no .gguf file; download one") as e:
        resolve_model("org/Empty-GGUF")
    assert "whole repository" not in str(e.value)


def test_screens_name_a_cached_gguf_by_its_repo_not_its_blob_hash(stores, tmp_path):
    from tiankong.engine.model_names import display_name
    from tiankong.tui.app import _model_id

    release = tmp_path / "release"
    header_gguf(release / "tiny-F32.gguf")
    snapshot = add_snapshot(stores / "hf" / "hub", "org/Real-GGUF", SHA, release)
    model_id = _model_id(resolve_model("org/Real-GGUF"))  # what the chat stores and shows
    assert "blobs" not in model_id and display_name(model_id) == "org/Real-GGUF/tiny-F32.gguf"
    assert display_name(snapshot) == "org/Real-GGUF"


def _ollama_manifest(stores: Path, *parts: str) -> Path:
    """Another manifest in the fake store, pointing at tinyllm's blobs."""
    root = stores / ".ollama" / "models" / "manifests"
    manifest = root.joinpath(*parts)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / "registry.ollama.ai" / "library" / "tinyllm" / "latest", manifest)
    return manifest


def test_ollama_names_from_other_hosts_are_listed_as_they_load(stores):
    _ollama_manifest(stores, "hf.co", "org", "Smol-GGUF", "Q4_0")
    names = [m.name for m in list_models()]
    assert "ollama:hf.co/org/Smol-GGUF:Q4_0" in names and "ollama:org/Smol-GGUF:Q4_0" not in names
    assert resolve_model("ollama:hf.co/org/Smol-GGUF:Q4_0") == resolve_model("ollama:tinyllm")
    with pytest.raises(ModelLoadError, match=r"did you mean ollama:hf.co/org/Smol-GGUF:Q4_0\?"):
        resolve_model("ollama:org/Smol-GGUF:Q4_0")


def test_ollama_config_blob_is_read_from_the_manifests_config_field(stores):
    """Ollama writes the config blob's digest in the manifest's "config", not among its layers."""
    manifest = stores / ".ollama" / "models" / "manifests" / "registry.ollama.ai" / "library" / "tinyllm" / "latest"
    data = json.loads(manifest.read_text())
    config = next(layer for layer in data["layers"] if "container.image" in layer["mediaType"])
    data["layers"].remove(config)
    manifest.write_text(json.dumps({**data, "config": config}))
    found = {m.name: m for m in list_models()}["ollama:tinyllm:latest"]
    assert (found.architecture, found.dtype) == ("llama", "Q4_0")  # the fake blob's header says nothing


def test_not_found_messages_name_the_places_and_what_exists(stores, tmp_path):
    def message(spec: str) -> str:
        with pytest.raises(ModelLoadError) as e:
            resolve_model(spec)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "has no typo.gguf; its GGUF files: only-gguf-Q4_K_M.gguf" in message("gguf-org/only-gguf/typo.gguf")
    assert "did you mean ollama:tinyllm:latest?" in message("tinyllm:latest")  # Ollama's own spelling
    bare = message("tinyllm")
    # as Ollama takes it: its :latest left out (QA56-16)
    assert "did you mean ollama:tinyllm?" in bare and "without ORG/ is looked up only there" in bare
    assert "LM Studio (" not in bare  # not searched for a bare name, so not named as searched
    assert "it has no tag 'nosuch', only latest" in message("ollama:tinyllm:nosuch")
    assert message("ollama:tinyllm:bad tag").startswith("ollama:tinyllm:bad tag: not an Ollama model name")
    os.symlink("loop2.gguf", tmp_path / "loop1.gguf")
    os.symlink("loop1.gguf", tmp_path / "loop2.gguf")
    os.symlink(tmp_path / "nowhere.gguf", tmp_path / "dangling.gguf")
    assert "is a broken link" in message(str(tmp_path / "loop1.gguf"))
    assert "is a broken link" in message(str(tmp_path / "dangling.gguf"))
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a GGUF file" in message(str(tmp_path / "notes.txt"))
    # a local folder of one .gguf file (no config.json) is that file, as an LM Studio folder is
    one = header_gguf(tmp_path / "onegguf" / "tiny.gguf")
    assert resolve_model(str(one.parent)) == one
    header_gguf(tmp_path / "onegguf" / "tiny-Q8_0.gguf")
    assert f"holds 2 GGUF files (tiny-Q8_0.gguf, tiny.gguf); choose one: --model {one.parent}/" in message(
        str(one.parent)
    )


def test_ollama_blob_or_manifest_that_is_not_one_is_one_line(stores):
    from tiankong.engine.files import read_regular_bytes

    ollama = stores / ".ollama" / "models"
    (ollama / "manifests" / "registry.ollama.ai" / "library" / "dirtag" / "latest").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match="a folder, not a regular file"):  # not IsADirectoryError
        read_regular_bytes(ollama / "manifests" / "registry.ollama.ai" / "library" / "dirtag" / "latest", 100)
    skipped: list[str] = []
    assert "ollama:tinyllm:latest" in [m.name for m in list_models(skipped)]
    assert any("dirtag" in note and "a folder, not a regular file" in note for note in skipped), skipped
    with pytest.raises(ModelLoadError, match="a folder, not a regular file"):
        resolve_model("ollama:dirtag")
    (ollama / "blobs" / f"sha256-{'1' * 64}").write_text("hello")
    with pytest.raises(ModelLoadError, match=r"model blob .* is not a GGUF file"):
        resolve_model("ollama:tinyllm")


# --- never a hang on a FIFO, never a traceback on a place that cannot be read ----------------------


def test_fifo_named_gguf_is_never_opened(stores, monkeypatch, capsys):
    from tiankong.engine.gguf_model import GGUFModel, is_gguf, peek

    pipe = stores / ".lmstudio" / "models" / "fifo" / "Pipe" / "pipe-Q4_0.gguf"
    pipe.parent.mkdir(parents=True)
    os.mkfifo(pipe)
    snapshot = stores / "hf" / "hub" / "models--fifo--Cached-GGUF" / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    os.mkfifo(snapshot / "x-Q8_0.gguf")
    with deadline(30):
        skipped: list[str] = []
        names = [m.name for m in list_models(skipped)]
        assert "fifo/Pipe" not in names and "fifo/Cached-GGUF" not in names
        assert len([note for note in skipped if "a FIFO, not a regular file" in note]) == 2, skipped
        assert peek(pipe) == {} and not is_gguf(pipe)
        for spec in ("fifo/Pipe", "fifo/Cached-GGUF", str(pipe)):
            with pytest.raises(ModelLoadError, match="a FIFO, not a regular file"):
                resolve_model(spec)
        with pytest.raises(ModelLoadError, match="a FIFO, not a regular file"):
            GGUFModel(pipe)
        code, out, err = cli(monkeypatch, capsys, "info", "-m", pipe)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "FIFO" in err, err


_PROBE = """
import sys
from tiankong.engine.errors import TiankongError
from tiankong.engine.model_list import list_models
from tiankong.engine.resolve import resolve_model
skipped = []
print("listed:", *[m.name for m in list_models(skipped)])
for note in skipped:
    print("skipped:", note)
for spec in sys.argv[1:]:
    try:
        print("resolved:", resolve_model(spec))
    except TiankongError as e:
        print("error:", e)
"""


def as_user(*args: object) -> subprocess.CompletedProcess:
    """Run a command as an ordinary user would (root, here, drops the capabilities that let it read
    anything); it must end without a traceback."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv cannot act as an ordinary user")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    proc = subprocess.run([*prefix, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def lock():
    """lock(folder): mode 000 until the test ends (then restored, so tmp_path can be removed)."""
    locked: list[Path] = []

    def lock(folder: Path) -> Path:
        folder.chmod(0)
        locked.append(folder)
        return folder

    yield lock
    for folder in locked:
        folder.chmod(0o755)


def test_unreadable_stores_are_skipped_in_lists_and_one_line_for_names(stores, lock):
    hub = lock(stores / "hf" / "hub")
    ollama = lock(stores / ".ollama" / "models")
    lm = lock(stores / ".lmstudio" / "models" / "lm-org" / "lm-tiny")
    specs = ["tiny-org/Tiny-Llama", "ollama:tinyllm", "lm-org/lm-tiny", str(lm / "config.json")]
    out = as_user(sys.executable, "-c", _PROBE, *specs).stdout.splitlines()
    assert out[0].startswith("listed:") and "gguf-org/only-gguf" in out[0]  # the readable places still listed
    denied = "permission denied; give your user access to it"
    assert [line for line in out if line.startswith("skipped:")] == [
        f"skipped: cannot read {place}: {denied} (chmod, chown) or use a model from another place"
        for place in (hub, lm, ollama)
    ]
    errors = [line for line in out if line.startswith(("error:", "resolved:"))]
    assert errors == [
        f"error: cannot read {place}: {denied} (chmod, chown) or use a model from another place"
        for place in (hub, ollama, lm, lm)
    ]


def test_unreadable_weights_say_permission_denied_in_one_line(tmp_path, tiny):
    folder = shutil.copytree(tiny, tmp_path / "model")
    (folder / "model.safetensors").chmod(0)
    gguf_file = header_gguf(tmp_path / "noperm.gguf")
    gguf_file.chmod(0)
    for model in (folder, gguf_file):
        proc = as_user(sys.executable, "-m", "tiankong.tui.cli", "info", "-m", model)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: cannot read"), proc.stderr
        assert "Permission denied" in lines[0] and "No such file" not in lines[0]


# --- what the commands print -----------------------------------------------------------------------


def test_help_and_listing_say_gguf_files_load(stores, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "models", "--help")
    assert code == 0 and "not loadable" not in out
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli(monkeypatch, capsys, "models")
    assert code == 0 and "gguf-org/only-gguf" in out and "not loadable" not in out
    for command in ("chat", "compare", "generate", "tokenize", "info", "serve"):
        code, out, err = cli(monkeypatch, capsys, command, "--help")
        text = " ".join(out.replace("│", " ").split())
        assert code == 0 and "a .gguf file" in text and "ollama:NAME[:TAG]" in text, (command, text)


def test_names_with_colons_print_as_typed_not_as_emoji(stores, monkeypatch, capsys):
    _ollama_manifest(stores, "registry.ollama.ai", "library", "cat", "cool")
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli(monkeypatch, capsys, "models")
    assert code == 0 and "ollama:cat:cool" in out, out
    code, out, err = cli(monkeypatch, capsys, "info", "-m", "my:fire:model.gguf")
    assert code == 2 and "my:fire:model.gguf" in err, err


def test_models_counts_the_parameters_info_counts(stores, tiny):
    """From the tensor shapes in the headers: it was the file size over the dtype's size (the
    safetensors header counted as weights; a bfloat16 copy gave another number), and none for GGUF."""
    from gguf_files import write_gguf
    from safetensors.torch import load_file, save_file

    lm = stores / ".lmstudio" / "models"
    half = lm / "lm-org" / "lm-bf16"
    shutil.copytree(tiny, half)
    weights = {k: v.bfloat16() for k, v in load_file(tiny / "model.safetensors").items()}
    save_file(weights, half / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((half / "config.json").read_text())
    (half / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    (lm / "gguf-org" / "tiny-gguf").mkdir(parents=True)
    gguf = write_gguf(tiny, lm / "gguf-org" / "tiny-gguf" / "tiny-f16.gguf", "f16")
    want = Engine.load(tiny).info()["parameters"]
    assert Engine.load(gguf).info()["parameters"] == want
    found = {m.name: m.parameters for m in list_models()}
    assert found["tiny-org/Tiny-Llama"] == found["lm-org/lm-bf16"] == found["gguf-org/tiny-gguf"] == want
    assert found["gguf-org/only-gguf"] == 0  # a header of no tensors


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"GGUF" + bytes(60), "GGUF version 0"),
        (EMPTY_GGUF[:20], "too short for a GGUF header"),
        (
            b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 3) + b"arr" + struct.pack("<IIQ", 9, 0, 1 << 62),
            "metadata array arr holds 4,611,686,018,427,387,904 elements",
        ),
    ],
    ids=["version-0", "truncated", "array-of-2**62"],
)
def test_models_skips_a_gguf_whose_header_cannot_be_read_saying_why(stores, content, why):
    # Listed before as a model of unknown dtype ("?") and size in bytes, which then failed to load.
    damaged = stores / ".lmstudio" / "models" / "bad-org" / "damaged" / "damaged-Q4_0.gguf"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(content)
    skipped: list[str] = []
    names = [m.name for m in list_models(skipped)]
    assert "bad-org/damaged" not in names and "gguf-org/only-gguf" in names
    assert [note for note in skipped if str(damaged) in note] == [
        next(note for note in skipped if note.startswith(f"{damaged} is not a usable GGUF file: ") and why in note)
    ], skipped


def test_models_lists_a_folder_once_through_a_link_loop(stores):
    # evil/loop/up -> .. listed every model of the store again as evil/loop/up/...
    lm = stores / ".lmstudio" / "models"
    (lm / "gguf-org" / "only-gguf" / "up").symlink_to("..")
    (lm / "gguf-org" / "only-gguf" / "self").symlink_to(".")
    (lm / "gguf-org" / "only-gguf" / "sub").mkdir()
    (lm / "gguf-org" / "only-gguf" / "sub" / "inner-Q8_0.gguf").write_bytes(EMPTY_GGUF)
    (lm / "gguf-org" / "only-gguf" / "again").symlink_to("sub")
    names = sorted(m.name for m in list_models() if m.name.startswith("gguf-org/"))
    assert names == ["gguf-org/only-gguf/only-gguf-Q4_K_M.gguf", "gguf-org/only-gguf/sub/inner-Q8_0.gguf"], names


def test_a_link_to_a_device_is_skipped_without_suggesting_to_load_it(stores):
    link = stores / ".lmstudio" / "models" / "dev-org" / "zero" / "model.gguf"
    link.parent.mkdir(parents=True)
    link.symlink_to("/dev/zero")
    skipped: list[str] = []
    list_models(skipped)
    assert f"{link} is a link to /dev/zero (a device, not a model file); remove the link" in skipped, skipped
