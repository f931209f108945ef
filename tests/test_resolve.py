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
from pathlib import Path

import pytest
from helpers import cli, one_thread  # noqa: F401 - one_thread applies to this module
from tiny_models import make_model

from tiankong.engine.engine import Engine
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.resolve import list_models, resolve_model
from tiankong.engine.sampling import SamplingParams

SHA = "a" * 40
OLD = "b" * 40


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
    (lm / "gguf-org" / "only-gguf" / "only-gguf-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(60))
    ollama = home / ".ollama" / "models"
    blob, config = "1" * 64, "2" * 64
    (ollama / "blobs").mkdir(parents=True)
    (ollama / "blobs" / f"sha256-{blob}").write_bytes(b"GGUF" + bytes(100))
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
    (only.parent / "only-gguf-Q8_0.gguf").write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ModelLoadError, match=r"holds 2 GGUF files .*--model gguf-org/only-gguf/only-gguf-Q4_K_M.gguf"):
        resolve_model("gguf-org/only-gguf")
    assert resolve_model("gguf-org/only-gguf/only-gguf-Q8_0.gguf") == only.parent / "only-gguf-Q8_0.gguf"
    # A Hugging Face repo of GGUF files only (no config.json): its file, or ORG/NAME/FILE.gguf among several.
    release = tmp_path / "release"
    release.mkdir()
    (release / "tiny-q8_0.gguf").write_bytes(b"GGUF" + bytes(60))
    snapshot = add_snapshot(stores / "hf" / "hub", "tiny-org/Tiny-GGUF", SHA, release)
    assert resolve_model("tiny-org/Tiny-GGUF") == snapshot / "tiny-q8_0.gguf"
    assert resolve_model("tiny-org/Tiny-GGUF/tiny-q8_0.gguf") == snapshot / "tiny-q8_0.gguf"
    found = {m.name: m for m in list_models()}  # listed under the names --model takes
    assert (found["tiny-org/Tiny-GGUF"].format, found["tiny-org/Tiny-GGUF"].dtype) == ("gguf", "Q8_0")
    assert found["gguf-org/only-gguf/only-gguf-Q8_0.gguf"].path == str(only.parent / "only-gguf-Q8_0.gguf")


def test_ollama_name_resolves_to_its_blob(stores, monkeypatch, capsys):
    blob = stores / ".ollama" / "models" / "blobs" / f"sha256-{'1' * 64}"
    assert resolve_model("ollama:tinyllm") == resolve_model("ollama:library/tinyllm:latest") == blob
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", "ollama:tinyllm", "-p", "hi")
    assert code == 2 and len(err.strip().splitlines()) == 1  # the fake blob is no model
    assert "not a usable GGUF file" in err and blob.name in err
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
    assert code == 2 and "missing.jinja" in err


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
    from tiankong.engine.resolve import hf_hub_cache

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
