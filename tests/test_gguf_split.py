"""Split GGUF sets (llama.cpp's llama-gguf-split, its converter's --split-max-tensors): one model in
NAME-00001-of-0000N.gguf, ... (engine/gguf_split.py).

A tiny model is written as one file and as a set of three by gguf-py's own writer with
split_max_tensors (the writer convert_hf_to_gguf.py splits with: split.no, split.count and
split.tensors.count in every part, the model's metadata in the first only). Loaded from its first
part, the set gives the one file's logits, tokens, info and tokenizer, and llama.cpp's greedy tokens;
`tiankong models` lists it once. Damaged and mixed-up sets each give one line, in bounded time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

import gguf
import gguf_files
import numpy as np
import pytest
import torch
from gguf_files import write_gguf
from helpers import deadline, one_thread, tiankong  # noqa: F401 - one_thread applies to this module
from tiny_models import make_model

from tiankong.engine.engine import Engine
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.gguf_header import parameter_count
from tiankong.engine.gguf_model import GGUFModel
from tiankong.engine.model import load_model
from tiankong.engine.model_facts import model_facts
from tiankong.engine.model_list import list_models
from tiankong.engine.resolve import resolve_model
from tiankong.engine.sampling import SamplingParams
from tiankong.engine.tokenizer import load_tokenizer

IDS = [1, 5, 300, 17, 42, 99, 250, 7, 120, 64, 33, 2, 310, 8, 77, 150]
PARTS = 3


def write_split(hf: Path, path: Path, qtype: str, max_tensors: int) -> list[Path]:
    """tests/gguf_files.write_gguf through gguf-py's writer with split_max_tensors: the parts
    PATH-00001-of-0000N.gguf, ..., as the converter's --split-max-tensors writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)

    class Splitting(gguf.GGUFWriter):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, split_max_tensors=max_tensors, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf_files.gguf, "GGUFWriter", Splitting)
        write_gguf(hf, path, qtype)
    return sorted(path.parent.glob(f"{path.stem}-*-of-*.gguf"))


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("hf"), "llama")


@pytest.fixture(scope="module")
def sets(hf, tmp_path_factory) -> dict[str, tuple[Path, list[Path]]]:
    """qtype -> (the model as one file, its split set's parts)."""
    out = {}
    for qtype in ("f32", "q8_0"):
        root = tmp_path_factory.mktemp(qtype)
        (root / "one").mkdir()
        one = write_gguf(hf, root / "one" / f"tiny-{qtype}.gguf", qtype)
        n = len(gguf.GGUFReader(one).tensors)
        parts = write_split(hf, root / "split" / f"tiny-{qtype}.gguf", qtype, -(-n // PARTS))
        assert len(parts) == PARTS
        out[qtype] = one, parts
    return out


def _logits(path: Path) -> torch.Tensor:
    model, _ = load_model(path, device="cpu", dtype="float32")
    with torch.no_grad():
        return model(torch.tensor([IDS]), torch.arange(len(IDS))[None])[0]


def greedy(eng: Engine, ids: list[int], n: int = 10) -> list[int]:
    params = [SamplingParams(temperature=0, max_new_tokens=n, seed=1)]
    return [e.id for e in eng.generate([ids], params) if hasattr(e, "logprob")]


# --- a set loads as the one file does ---------------------------------------------------------------


def test_parts_are_what_the_converter_writes(sets):
    """The writer's split keys (gguf.Keys.Split), the model's metadata in the first part only."""
    _, parts = sets["f32"]
    assert [p.name for p in parts] == [f"tiny-f32-{k:05d}-of-{PARTS:05d}.gguf" for k in range(1, PARTS + 1)]
    readers = [gguf.GGUFReader(p) for p in parts]
    total = sum(len(r.tensors) for r in readers)
    for k, r in enumerate(readers):
        keys = (gguf.Keys.Split.LLM_KV_SPLIT_NO, gguf.Keys.Split.LLM_KV_SPLIT_COUNT)
        assert [r.fields[key].contents() for key in keys] == [k, PARTS]
        assert r.fields[gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT].contents() == total
        assert ("general.architecture" in r.fields) == (k == 0) and r.tensors


@pytest.mark.parametrize("qtype", ["f32", "q8_0"])
def test_split_set_gives_the_one_files_logits_and_tokens(sets, qtype):
    one, parts = sets[qtype]
    source = GGUFModel(parts[0], keep_quantized=qtype == "q8_0")
    assert [p for p, _ in source.parts] == parts and len(source.tensors) == len(GGUFModel(one).tensors)
    assert {file for file, *_ in source.hf_tensors()} == {p.name for p in parts}  # errors name the part
    assert torch.equal(_logits(parts[0]), _logits(one))
    # Engine.load: packed, the q8_0 blocks kept for the compiled step straight from each part's mapping
    eng, ref = Engine.load(parts[0], device="cpu"), Engine.load(one, device="cpu")
    assert eng.weights == ref.weights and eng.decode_path == ref.decode_path
    assert greedy(eng, IDS[:6]) == greedy(ref, IDS[:6])


def test_info_and_tokenizer_of_a_set_are_the_one_files(sets):
    one, parts = sets["q8_0"]
    facts, want = model_facts(parts[0], device="cpu"), model_facts(one, device="cpu")
    assert facts.pop("folder") == str(parts[0]) and want.pop("folder") == str(one)
    assert facts == want
    text = "Once upon a time, there was a tiny model."
    assert load_tokenizer(parts[0]).encode(text) == load_tokenizer(one).encode(text)


def test_greedy_tokens_equal_llama_cpps_on_the_set(sets):
    """llama.cpp loads the set from its first part too: the same greedy tokens (its default f16 KV
    cache, as ours on the CPU), and the same as its own on the one file."""
    llama_cpp = pytest.importorskip("llama_cpp")
    one, parts = sets["f32"]

    def theirs(path: Path, ids: list[int], n: int = 10) -> list[int]:
        llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
        llm.eval(ids)
        out = []
        for _ in range(n):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(token)
            llm.eval([token])
        return out

    ids = IDS[:6]
    want = theirs(parts[0], ids)
    assert want == theirs(one, ids)
    assert greedy(Engine.load(parts[0], device="cpu"), ids) == want


# --- names: a set is one model ----------------------------------------------------------------------


def _cache(home: Path, repo: str, files: list[Path], sub: str) -> Path:
    """The hub cache's layout: snapshots/<sha>/[SUB/]<name> -> ../../[../]blobs/<hash>, refs/main."""
    sha = "e" * 40
    repo_dir = home / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / sha
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (snapshot / sub).mkdir(parents=True, exist_ok=True)
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo_dir / "blobs" / digest)
        os.symlink(os.path.relpath(repo_dir / "blobs" / digest, snapshot / sub), snapshot / sub / f.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    return snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "no-ollama"))
    monkeypatch.chdir(tmp_path)
    return home / "hub"


def test_models_lists_a_set_once_and_names_resolve_to_its_first_part(sets, cache, tmp_path):
    one, parts = sets["q8_0"]
    snapshot = _cache(cache, "org/Split-GGUF", parts, "Q8_0")
    first = snapshot / "Q8_0" / parts[0].name
    assert resolve_model("org/Split-GGUF") == first  # a repo holding one set: one model
    assert resolve_model("org/Split-GGUF/Q8_0") == first
    assert resolve_model(f"org/Split-GGUF/Q8_0/{parts[0].name}") == first
    assert resolve_model(str(parts[0].parent)) == parts[0]  # a folder holding one set
    (listed,) = [m for m in list_models() if "Split" in m.name]
    assert (listed.name, listed.path, listed.parts, listed.dtype) == ("org/Split-GGUF", str(first), PARTS, "Q8_0")
    assert listed.parameters == parameter_count(one) and listed.bytes == sum(p.stat().st_size for p in parts)
    # a later part by name: refused, naming the first part
    with pytest.raises(ModelLoadError, match=rf"is part 2 of {PARTS} of a split GGUF; pass its first part, .*"):
        Engine.load(f"org/Split-GGUF/Q8_0/{parts[1].name}", device="cpu")
    # beside another model, the set is one of two choices, offered by its first part
    _cache(cache, "org/Split-GGUF", [one], "Q8_0-one")
    with pytest.raises(ModelLoadError, match=rf"holds 2 GGUF files \(Q8_0/{parts[0].name}, Q8_0-one/{one.name}\)"):
        resolve_model("org/Split-GGUF")
    names = {m.name for m in list_models() if "Split" in m.name}
    assert names == {f"org/Split-GGUF/Q8_0/{parts[0].name}", f"org/Split-GGUF/Q8_0-one/{one.name}"}


# --- damaged and mixed-up sets: one line each -------------------------------------------------------


def _set_value(path: Path, key: str, value: int) -> None:
    """Overwrite the integer metadata value `key` in a GGUF header, in place (its type kept)."""
    data = bytearray(path.read_bytes())
    at = data.index(struct.pack("<Q", len(key)) + key.encode()) + 8 + len(key)
    (kind,) = struct.unpack_from("<I", data, at)
    fmt = {4: "<I", 5: "<i", 2: "<H"}[kind]
    struct.pack_into(fmt, data, at + 4, value)
    path.write_bytes(bytes(data))


def _rename_tensor(path: Path, old: str, new: str) -> None:
    assert len(old) == len(new)
    data = path.read_bytes()
    path.write_bytes(
        data.replace(struct.pack("<Q", len(old)) + old.encode(), struct.pack("<Q", len(new)) + new.encode(), 1)
    )


def _one_line(first: Path, words: str) -> str:
    with deadline(20), pytest.raises(ModelLoadError, match=words) as e:
        Engine.load(first, device="cpu")
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.fixture
def copy(sets, tmp_path):
    """A fresh copy of the q8_0 set to damage."""
    _, parts = sets["q8_0"]
    for p in parts:
        shutil.copyfile(p, tmp_path / p.name)
    return [tmp_path / p.name for p in parts]


def test_a_missing_part_is_one_line_naming_it(copy):
    copy[2].unlink()
    line = _one_line(copy[0], rf"first of {PARTS} parts of a split GGUF, and part 3, .*, is missing; download every")
    assert copy[2].name in line


def test_a_later_part_given_or_a_renamed_first_part_is_one_line(copy):
    _one_line(copy[1], rf"part 2 of {PARTS} of a split GGUF; pass its first part, {copy[0]}")
    renamed = copy[0].with_name("tiny.gguf")
    copy[0].rename(renamed)
    _one_line(renamed, rf"its name does not end in -00001-of-{PARTS:05d}.gguf, so its other parts cannot be found")


def test_parts_of_another_set_are_one_line(copy, hf, tmp_path):
    # another split of the same model (two parts): its second part in place of ours
    other = write_split(hf, tmp_path / "other" / "tiny-q8_0.gguf", "q8_0", 12)
    shutil.copyfile(other[1], copy[1])
    _one_line(
        copy[0],
        rf"{copy[1].name} says it is part 2 of 2 with \d+ tensors in all, but part 2 of .* is part 2 of {PARTS} with",
    )


def test_a_whole_file_in_place_of_a_part_is_one_line(copy, hf, tmp_path):
    # QA: a file with no split keys in a part's place was named with "None, None, None".
    shutil.copyfile(write_gguf(hf, tmp_path / "whole.gguf", "q8_0"), copy[1])
    _one_line(copy[0], rf"{copy[1].name} is no part of a split set \(no split keys\), but part 2 of")


def test_swapped_parts_are_one_line(copy):
    copy[1].rename(copy[1].with_suffix(".tmp"))
    copy[2].rename(copy[1])
    copy[1].with_suffix(".tmp").rename(copy[2])
    _one_line(copy[0], rf"{copy[1].name} says it is part 3 of {PARTS} with \d+ tensors in all, but part 2 of")


def test_a_different_models_part_fails_the_shape_check_in_one_line(copy, tmp_path):
    """The same split layout of a model of another size: every split key agrees, the shapes do not."""
    wide = make_model(tmp_path / "wide", "llama", hidden_size=96)
    n = len(gguf.GGUFReader(copy[0]).tensors) + sum(len(gguf.GGUFReader(p).tensors) for p in copy[1:])
    other = write_split(wide, tmp_path / "wide-set" / "tiny-q8_0.gguf", "q8_0", -(-n // PARTS))
    shutil.copyfile(other[2], copy[2])
    _one_line(
        copy[0], rf"tensor blk\.\d+\.\w+\.weight in {copy[2].name} has shape \[\d+, 96\], but the file's metadata"
    )


def test_lying_tensor_counts_are_one_line(copy):
    total = sum(len(gguf.GGUFReader(p).tensors) for p in copy)
    for p in copy:
        _set_value(p, "split.tensors.count", total + 1)
    _one_line(copy[0], rf"holds {total} tensors in its parts, but split.tensors.count says {total + 1}")
    for p in copy:
        _set_value(p, "split.tensors.count", 1 << 30)
    _one_line(copy[0], "split.tensors.count is 1073741824 for a set of 3 parts; the file is damaged")


def test_a_tensor_in_two_parts_is_one_line(copy):
    second, third = (gguf.GGUFReader(p) for p in copy[1:])
    names = {t.name for t in third.tensors}
    old, new = next(
        (b.name, a.name)
        for a in second.tensors
        for b in third.tensors
        if len(a.name) == len(b.name) and a.name not in names and a.name != b.name
    )
    del second, third  # their maps hold the files
    _rename_tensor(copy[2], old, new)
    _one_line(copy[0], rf"{copy[2].name}: tensor {new} is in {copy[1].name} too; parts of different sets")


def test_an_absurd_part_count_is_one_line_in_bounded_time(copy):
    _set_value(copy[0], "split.count", 65535)  # uint16's largest: 65534 part names to look for
    first = copy[0].rename(copy[0].with_name("tiny-q8_0-00001-of-65535.gguf"))
    with deadline(10):
        line = _one_line(first, r"first of 65535 parts of a split GGUF, and part 2, .*, is missing \(and 65533 more\)")
    assert "-00002-of-65535.gguf" in line


def test_cli_says_a_missing_part_in_one_line(copy):
    copy[1].unlink()
    code, err, _ = tiankong("generate", "-m", copy[0], "--prompt", "hi", "--max-new-tokens", "2")
    err = [line for line in err if not line.startswith("loading ")]
    assert code == 2 and len(err) == 1 and "is missing; download every part" in err[0], err


def test_a_lone_first_part_is_skipped_in_bounded_time(sets, cache):
    """Named the first of 65,535 parts with none of the others there: the set cannot load, so
    `tiankong models` skips it, quickly, with loading's own line naming the first missing part."""
    _, parts = sets["q8_0"]
    lone = parts[0].parent.parent / "lone" / "tiny-00001-of-65535.gguf"
    lone.parent.mkdir(exist_ok=True)
    shutil.copyfile(parts[0], lone)
    _set_value(lone, "split.count", 65535)
    snapshot = _cache(cache, "org/Lone-GGUF", [lone], "")
    skipped: list[str] = []
    with deadline(20):
        assert not [m for m in list_models(skipped) if "Lone" in m.name]
    line = _one_line(resolve_model("org/Lone-GGUF"), "part 2, .*-00002-of-65535.gguf, is missing")
    assert line in skipped, skipped
    assert resolve_model("org/Lone-GGUF") == snapshot / lone.name
