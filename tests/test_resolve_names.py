"""Names that say which model (QA3 items 1, 4, 5, 6 and the `-o -` note).

An Ollama model is named by the tag it was given (`ollama:NAME:TAG`), never by its blob's hash: in
screens, votes, compare's reveal and the server's model id. `generate` and `serve` say on stderr
which model loads and how big it is. A name the Hugging Face cache and LM Studio both hold is the
cache's, said so, and `lmstudio:ORG/NAME` reaches the other. A file or subfolder of a cached repo
is named at a revision as ORG/NAME@REV/PATH. The stores are faked as in test_resolve.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from gguf_files import write_gguf
from helpers import cli, one_thread  # noqa: F401 - one_thread applies to this module
from test_resolve import OLD, SHA, add_snapshot, header_gguf, stores, tiny  # noqa: F401 - fixtures

from tiankong.engine.engine import Engine
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.model_list import list_models
from tiankong.engine.model_names import display_name, model_key
from tiankong.engine.resolve import resolve_model


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory, tiny) -> dict[str, Path]:  # noqa: F811 - the fixture imported above
    """The tiny Llama as two real GGUF files: two tags of one model, as Ollama keeps them."""
    root = tmp_path_factory.mktemp("ggufs")
    return {q: write_gguf(tiny, root / f"tiny-{q.upper()}.gguf", q) for q in ("f32", "q8_0")}


def ollama_tag(home: Path, gguf: Path, name: str, tag: str) -> Path:
    """manifests/registry.ollama.ai/library/NAME/TAG pointing at a blob that holds `gguf`."""
    root = home / ".ollama" / "models"
    data = gguf.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [layer]}))
    return root / "blobs" / f"sha256-{digest}"


# --- 1. an Ollama model is named by its tag --------------------------------------------------------


def test_ollama_models_are_named_by_their_tag_everywhere(stores, ggufs):  # noqa: F811
    from tiankong.tui.app import _model_id
    from tiankong.tui.screens.compare_rounds import model_identity, model_name
    from tiankong.tui.serve import ServeConfig
    from tiankong.tui.serve_routes import _Server

    blob = ollama_tag(stores, ggufs["f32"], "tk", "latest")
    ollama_tag(stores, ggufs["q8_0"], "tk", "q8")
    latest, q8 = resolve_model("ollama:tk"), resolve_model("ollama:library/tk:q8")
    assert latest == blob  # it loads from the blob
    assert display_name(latest) == model_key(latest) == _model_id(latest) == "ollama:tk:latest"  # chats
    assert display_name(Path(q8)) == model_key(Path(str(q8))) == "ollama:tk:q8"  # a plain copy of the path too
    engines = [Engine.load(Path(m)) for m in (latest, q8)]  # as the app loads --models A,B
    assert [model_name(e) for e in engines] == ["ollama:tk:latest", "ollama:tk:q8"]  # compare's reveal
    assert [model_identity(e) for e in engines] == ["ollama:tk:latest", "ollama:tk:q8"]  # votes
    assert display_name("ollama:tk:q8") == "ollama:tk:q8"  # a stored vote's model, in the leaderboards
    served = [_Server(e, None, ServeConfig(), {}, print) for e in engines]
    assert served[1].name == "ollama:tk:q8"  # serve's model id
    # ... and a client may ask for it as --model was given (QA: "ollama:tk" was "not served here")
    assert served[0]._serves("ollama:tk") and served[0]._serves("ollama:library/tk:latest")
    assert not served[0]._serves("ollama:tk:q8") and not served[1]._serves("ollama:tk")
    assert resolve_model(model_key(latest)) == blob  # what votes store resolves again


# --- 4. generate and serve say what loads ----------------------------------------------------------


def test_generate_and_serve_say_what_loads_on_stderr(stores, ggufs, monkeypatch, capsys, tmp_path):  # noqa: F811
    import tiankong.tui.serve

    ollama_tag(stores, ggufs["f32"], "tk", "latest")
    size = r"\(\d+\.\d (KB|MB)\)…"  # human_bytes: the units of `info` and `models`
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", "ollama:tk", "--raw", "-p", "Once", "-n", "1")
    assert code == 0 and json.loads(out)["text"] is not None, err
    assert re.fullmatch(rf"loading ollama:tk:latest {size}\n", err), err  # stderr only: stdout stays JSON
    served = []
    monkeypatch.setattr(tiankong.tui.serve, "serve", lambda eng, cfg, presets, sockets: served.append(eng))
    code, out, err = cli(monkeypatch, capsys, "serve", "-m", "ollama:tk", "--port", "0")
    assert code == 0 and len(served) == 1 and out == "", err
    assert re.fullmatch(rf"loading ollama:tk:latest {size}\n", err), err
    # `-o -` is stdout, as `--input -` is stdin: no file named "-"
    code, out, err = cli(
        monkeypatch, capsys, "generate", "-m", "ollama:tk", "--raw", "-p", "Once", "-n", "1", "-o", "-"
    )
    assert code == 0 and json.loads(out)["text"] is not None and not os.path.lexists(tmp_path / "-"), err


def test_prefs_export_to_dash_is_stdout(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "prefs.jsonl"
    src.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    data = tmp_path / "data"
    assert cli(monkeypatch, capsys, "prefs", "import", src, "--data-dir", data)[0] == 0
    code, out, err = cli(monkeypatch, capsys, "prefs", "export", "--format", "trl", "-o", "-", "--data-dir", data)
    assert code == 0 and json.loads(out)["chosen"] == "a" and "wrote" not in err, err
    assert not os.path.lexists(tmp_path / "-")


# --- 5. one name in the Hugging Face cache and in LM Studio ----------------------------------------


def test_a_name_in_both_places_is_the_caches_and_lmstudio_reaches_the_other(
    stores,  # noqa: F811
    ggufs,
    monkeypatch,
    capsys,
    tmp_path,
):
    release = tmp_path / "release"
    release.mkdir()
    (release / ggufs["q8_0"].name).write_bytes(ggufs["q8_0"].read_bytes())
    snapshot = add_snapshot(stores / "hf" / "hub", "org/Same-GGUF", SHA, release)
    lm = stores / ".lmstudio" / "models" / "org" / "Same-GGUF"
    lm.mkdir(parents=True)
    lm_file = lm / ggufs["f32"].name
    lm_file.write_bytes(ggufs["f32"].read_bytes())

    listed = {(m.name, m.source): m for m in list_models()}
    assert listed[("org/Same-GGUF", "huggingface")].note is None
    shadowed = listed[("lmstudio:org/Same-GGUF", "lmstudio")]  # marked, under a name that reaches it
    assert shadowed.path == str(lm_file) and "--model org/Same-GGUF takes another model first" in (shadowed.note or "")
    assert ("org/Same-GGUF", "lmstudio") not in listed
    for m in list_models():  # every listed name reaches the model listed
        assert resolve_model(m.name) == Path(m.path), m.name
    assert resolve_model("lmstudio:org/Same-GGUF") == lm_file
    assert resolve_model(f"lmstudio:org/Same-GGUF/{lm_file.name}") == lm_file
    taken = resolve_model("org/Same-GGUF")
    assert taken == snapshot / ggufs["q8_0"].name
    assert "--model lmstudio:org/Same-GGUF for LM Studio's" in (getattr(taken, "note", None) or "")
    with pytest.raises(ModelLoadError, match=r"no model 'lmstudio:org/Nothing': LM Studio \(") as e:
        resolve_model("lmstudio:org/Nothing")
    assert "\n" not in str(e.value)

    code, out, err = cli(monkeypatch, capsys, "generate", "-m", "org/Same-GGUF", "--raw", "-p", "Once", "-n", "1")
    lines = err.splitlines()
    assert code == 0 and len(lines) == 2, err
    assert lines[0].startswith("note: org/Same-GGUF is in both the Hugging Face cache and LM Studio (")
    assert lines[1].startswith(f"loading org/Same-GGUF/{ggufs['q8_0'].name} (")
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", "lmstudio:org/Same-GGUF", "--raw", "-p", "O", "-n", "1")
    # named as it loads again (QA35: the file's name alone said neither where it was nor how to load it)
    assert code == 0 and err.startswith(f"loading lmstudio:org/Same-GGUF/{lm_file.name} (") and "note" not in err, err
    for command in (["info"], ["tokenize", "Once"]):  # every command that takes --model says it, once
        code, out, err = cli(monkeypatch, capsys, *command, "-m", "org/Same-GGUF")
        assert code == 0 and err.count("note: org/Same-GGUF is in both") == 1, (command, err)


# --- 6. a file or subfolder of a cached repo, at a revision ----------------------------------------


def test_files_and_subfolders_of_a_cached_repo_by_name_at_a_revision(stores):  # noqa: F811
    repo = stores / "hf" / "hub" / "models--org--Rev-GGUF"
    for sha in (SHA, OLD):
        for f in ("x-Q8_0.gguf", "x-Q4_0.gguf", "F16/x-F16.gguf"):
            header_gguf(repo / "snapshots" / sha / f)
    (repo / "refs" / "pr").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    (repo / "refs" / "v1.0").write_text(OLD)
    (repo / "refs" / "pr" / "1").write_text(OLD)
    main, old = repo / "snapshots" / SHA, repo / "snapshots" / OLD

    assert resolve_model("org/Rev-GGUF@v1.0/x-Q8_0.gguf") == old / "x-Q8_0.gguf"
    assert resolve_model("org/Rev-GGUF/x-Q8_0.gguf@v1.0") == old / "x-Q8_0.gguf"  # the other order too
    assert resolve_model("org/Rev-GGUF@pr/1/F16/x-F16.gguf") == old / "F16" / "x-F16.gguf"  # a ref with a slash
    assert resolve_model(f"org/Rev-GGUF@{OLD[:8]}/F16") == old / "F16" / "x-F16.gguf"  # a hash prefix, a subfolder
    assert resolve_model("org/Rev-GGUF/F16") == main / "F16" / "x-F16.gguf"  # a subfolder of one GGUF, by name
    assert resolve_model("org/Rev-GGUF@main/F16") == main / "F16" / "x-F16.gguf"

    def message(spec: str) -> str:
        with pytest.raises(ModelLoadError) as e:
            resolve_model(spec)
        assert "\n" not in str(e.value)
        return str(e.value)

    # at a revision, the suggestion is a name at that revision, and it resolves
    choose = re.search(r"choose one: --model (\S+)", message("org/Rev-GGUF@v1.0"))
    assert choose and choose[1] == "org/Rev-GGUF@v1.0/F16/x-F16.gguf"
    assert resolve_model(choose[1]) == old / "F16" / "x-F16.gguf"
    assert "choose one: --model org/Rev-GGUF@v1.0/F16/x-F16.gguf" in message("org/Rev-GGUF@v1.0/nope.gguf")
    assert "not at revision 'v9'; it has: main, pr/1, v1.0" in message("org/Rev-GGUF@v9/x-Q8_0.gguf")
    header_gguf(main / "F16" / "x-F16-b.gguf")
    assert "org/Rev-GGUF/F16 holds 2 GGUF files" in message("org/Rev-GGUF/F16")
    (main / "empty").mkdir()
    assert "holds no .gguf file" in message("org/Rev-GGUF/empty")
    (main / "README.md").write_text("hi")
    assert "is no .gguf file and no folder" in message("org/Rev-GGUF/README.md")


def test_a_run_records_an_ollama_model_by_its_tag(stores, ggufs, monkeypatch, capsys, tmp_path):  # noqa: F811
    # QA3: train_config.json said "model": ".../ollama/models/blobs/sha256-...".
    ollama_tag(stores, ggufs["f32"], "tk", "latest")
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}.", "completion": w}) + "\n" for w in ("hi", "yes")))
    out = tmp_path / "runs" / "sft"
    args = ["train", "sft", "--model", "ollama:tk", "--data", data, "--output", out, "--steps", "1"]
    code, _, err = cli(monkeypatch, capsys, *args, "--batch-size", "2", "--no-progress", "--device", "cpu")
    assert code == 0, err
    assert json.loads((out / "train_config.json").read_text())["model"] == "ollama:tk:latest"


def test_the_models_table_keeps_each_name_whole(stores, ggufs, monkeypatch, capsys):  # noqa: F811
    # QA: piped (80 columns), the long blob path took the width and cut names to "ollama:tk:la".
    ollama_tag(stores, ggufs["f32"], "tk", "latest")
    ollama_tag(stores, ggufs["q8_0"], "tk", "q8-with-a-long-tag")
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = cli(monkeypatch, capsys, "models")
    assert code == 0, err
    assert "ollama:tk:latest" in out and "ollama:tk:q8-with-a-long-tag" in out, out
