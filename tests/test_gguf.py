"""GGUF files as models: tiny random HF models written as llama.cpp's converter writes them
(tests/gguf_files.py), loaded by tiankong and compared with transformers on the same weights.

Quantized files are compared with the HF model whose weights went through the same quantize ->
dequantize round trip (gguf-py's reference quantizers): tiankong dequantizes exactly, so the
tolerance stays as tight as for float32. Hostile files each give one line, bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import types
from pathlib import Path

import gguf
import gguf_files
import numpy as np
import pytest
import torch
from gguf_files import dequantized_folder, hf_logits, llama_cpp_for_quantized, write_gguf
from helpers import cli, one_thread, tiankong  # noqa: F401 - one_thread applies to this module
from tiny_models import make_model

from tiankong.engine.engine import Engine
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.model import load_model
from tiankong.engine.model_list import list_models
from tiankong.engine.model_names import display_name
from tiankong.engine.resolve import resolve_model
from tiankong.engine.sampling import SamplingParams

ARCHS = ("llama", "qwen2", "qwen3", "gpt2")
QTYPES = ("f32", "f16", "q8_0", "q4_0")
IDS = [1, 5, 300, 17, 42, 99, 250, 7, 120, 64, 33, 2, 310, 8, 77, 150]


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> dict[str, Path]:
    # Qwen's embedding has rows past its vocabulary, as released: transformers' Qwen2 tokenizer (which
    # the GGUF vocabulary writer reads) adds <|endoftext|> to the tiny vocabulary.
    rows = {"qwen2": dict(vocab_size=400), "qwen3": dict(vocab_size=400)}
    out = {arch: make_model(tmp_path_factory.mktemp(arch), arch, **rows.get(arch, {})) for arch in ARCHS}
    # Llama 3's RoPE scaling, which the converter stores as per-frequency divisors (rope_freqs.weight);
    # an original context of 64 puts two of the 8 frequencies in the blended band.
    scaling = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)
    out["llama3"] = make_model(
        tmp_path_factory.mktemp("llama3"), "llama", rope_scaling={**scaling, "original_max_position_embeddings": 64}
    )
    # Gemma as llama.cpp runs it, which reads no layer pattern or query scale from the file: every 2nd
    # (Gemma 2) or 6th (Gemma 3) layer global, queries scaled by head_dim ** -0.5.
    out["gemma2"] = make_model(tmp_path_factory.mktemp("gemma2"), "gemma2", query_pre_attn_scalar=24)
    out["phi3"] = make_model(tmp_path_factory.mktemp("phi3"), "phi3")  # long-rope past 16 positions
    out["gemma3"] = make_model(
        tmp_path_factory.mktemp("gemma3"),
        "gemma3",
        query_pre_attn_scalar=24,
        sliding_window_pattern=6,
        num_hidden_layers=6,
    )
    return out


@pytest.fixture(scope="module")
def files(hf, tmp_path_factory):
    """(arch, qtype) -> (GGUF file, the HF folder with the same effective weights)."""
    cache: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(arch: str, qtype: str) -> tuple[Path, Path]:
        if (arch, qtype) not in cache:
            root = tmp_path_factory.mktemp(f"{arch}-{qtype}")
            path = write_gguf(hf[arch], root / f"tiny-{qtype}.gguf", qtype)
            ref = hf[arch] if qtype == "f32" else dequantized_folder(hf[arch], root / "reference", qtype)
            cache[arch, qtype] = path, ref
        return cache[arch, qtype]

    return get


def greedy(eng: Engine, prompt: str, n: int = 12) -> tuple[list[int], list[float]]:
    ids = eng.encode(prompt, raw=True)
    events = [
        e
        for e in eng.generate([ids], [SamplingParams(temperature=0, max_new_tokens=n, seed=1)])
        if hasattr(e, "logprob")
    ]
    return [e.id for e in events], [e.logprob for e in events]


# --- logits and tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, qtype",
    [(arch, qtype) for arch in (*ARCHS, "llama3") for qtype in QTYPES]
    + [("gemma2", "q8_0"), ("gemma3", "q4_0"), ("llama", "bf16"), ("qwen2", "q4_1"), ("qwen3", "q5_0")],
)
def test_logits_equal_transformers_on_the_same_weights(files, arch, qtype):
    path, ref = files(arch, qtype)
    model, cfg = load_model(path, device="cpu", dtype="float32")
    with torch.no_grad():
        ours = model(torch.tensor([IDS]), torch.arange(len(IDS))[None])[0]
    want = hf_logits(ref, IDS)
    assert want.abs().max() > 1  # random weights with a large init: logits are not all ~0
    torch.testing.assert_close(ours, want, atol=2e-5, rtol=1e-5)
    if qtype != "f32":  # the round trip changed the weights: a file read as float32 would not pass
        assert (hf_logits(files(arch, "f32")[1], IDS) - want).abs().max() > 1e-3


@pytest.mark.parametrize("qtype", ["f32", "q4_0"])
def test_phi3_long_rope_and_fused_tensors(files, qtype):
    """Phi-3: fused q/k/v and gate/up, RoPE over 3/4 of each head, long-rope factors from
    rope_factors_long/short, which apply past the original 16 positions (24 here)."""
    path, ref = files("phi3", qtype)
    model, _ = load_model(path, device="cpu", dtype="float32")
    ids = IDS + IDS[:8]
    with torch.no_grad():
        ours = model(torch.tensor([ids]), torch.arange(len(ids))[None])[0]
    torch.testing.assert_close(ours, hf_logits(ref, ids), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", [*ARCHS, "gemma3", "phi3"])
def test_engine_on_a_gguf_generates_what_the_folder_generates(files, arch):
    """Packed form (the compiled step where it builds): same ids, greedy tokens and logprobs as the
    HF folder holding the same weights; tokenizer and chat template come from the file."""
    path, ref = files(arch, "q8_0")
    eng, folder_eng = Engine.load(path, device="cpu", dtype="float32"), Engine.load(ref, device="cpu", dtype="float32")
    assert eng.folder == path and eng.decode_path == folder_eng.decode_path
    assert eng.encode("Once upon a time", raw=True) == folder_eng.encode("Once upon a time", raw=True)
    tokens, logprobs = greedy(eng, "Once upon a time")
    want_tokens, want_logprobs = greedy(folder_eng, "Once upon a time")
    assert tokens == want_tokens
    np.testing.assert_allclose(logprobs, want_logprobs, atol=1e-4)
    assert eng.info()["folder"] == str(path) and eng.info()["architecture"] == folder_eng.cfg.architecture


def test_dtype_option_is_respected(files):
    path, _ = files("llama", "q4_0")
    model, _ = load_model(path, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_generate_info_and_tokenize_cli_on_a_gguf(files, monkeypatch, capsys):
    path, ref = files("llama", "f32")
    args = ["-p", "Once upon a time", "--max-new-tokens", "6", "--temperature", "0", "--top-logprobs", "1"]
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", path, *args)
    assert code == 0, err
    code, want, err = cli(monkeypatch, capsys, "generate", "-m", ref, *args)
    ids = [[t["id"] for t in json.loads(record)["tokens"]] for record in (out, want)]
    assert len(ids[0]) == 6 and ids[0] == ids[1]
    code, out, err = cli(monkeypatch, capsys, "info", "-m", path, "--format", "json")
    assert code == 0 and json.loads(out)["architecture"] == "LlamaForCausalLM", err
    code, out, err = cli(monkeypatch, capsys, "tokenize", "-m", path, "--format", "jsonl", "Once upon")
    code, want, err = cli(monkeypatch, capsys, "tokenize", "-m", ref, "--format", "jsonl", "Once upon")
    assert code == 0 and json.loads(out)["ids"] == json.loads(want)["ids"], err


def test_ollama_store_and_gguf_only_repos_resolve_offline(files, tmp_path, monkeypatch):
    """A fake Ollama store (manifest -> blob) and LM Studio folder: names load, `models` lists them."""
    path, _ = files("qwen2", "q8_0")
    store = tmp_path / "ollama"
    digest = "3" * 64
    (store / "blobs").mkdir(parents=True)
    shutil.copyfile(path, store / "blobs" / f"sha256-{digest}")
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "q8"
    manifest.parent.mkdir(parents=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [layer]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    lm = tmp_path / "home" / ".lmstudio" / "models" / "org" / "tiny-GGUF"
    lm.mkdir(parents=True)
    shutil.copyfile(path, lm / "tiny-Q8_0.gguf")
    assert resolve_model("ollama:tiny:q8") == store / "blobs" / f"sha256-{digest}"
    assert display_name(resolve_model("ollama:tiny:q8")) == "ollama:tiny:q8"  # its tag, not sha256-... (QA3 #1)
    assert display_name(store / "blobs" / f"sha256-{digest}") == "ollama:tiny:q8"  # a plain copy of the path too
    eng = Engine.load("ollama:tiny:q8", device="cpu")
    assert greedy(eng, "hello", 4)[0] == greedy(Engine.load("org/tiny-GGUF", device="cpu"), "hello", 4)[0]
    found = {m.name: m for m in list_models()}
    assert (found["org/tiny-GGUF"].architecture, found["org/tiny-GGUF"].dtype) == ("qwen2", "Q8_0")
    ollama = found["ollama:tiny:q8"]  # no config blob in this store: read from the file's header
    assert (ollama.format, ollama.architecture, ollama.dtype) == ("gguf", "qwen2", "Q8_0")


# --- llama.cpp's own converter ---------------------------------------------------------------------

# llama.cpp's converter is not on PyPI: a llama.cpp checkout (or the vendor/llama.cpp of
# llama-cpp-python's sdist) named by LLAMA_CPP_DIR; the converter needs only gguf, torch, transformers.
CONVERTER = Path(os.environ.get("LLAMA_CPP_DIR", "/tmp/llama.cpp-convert")) / "convert_hf_to_gguf.py"
# The converter with its vocabulary step skipped: tiny test tokenizers match none of the pre-tokenizer
# hashes it knows (tests/gguf_vocab.py writes them instead); tensors and metadata are its own. One
# process converts every folder (argv: converter dir, then OUTFILE FOLDER pairs), so torch and
# transformers are imported once.
_RUN_CONVERTER = """
import runpy, sys
from pathlib import Path
root, jobs = Path(sys.argv[1]), sys.argv[2:]
sys.path[:0] = [str(root / "gguf-py"), str(root)]
import conversion
find = conversion.get_model_class
def without_vocab(name, mmproj=False):
    cls = find(name, mmproj)
    for c in cls.__mro__:
        if "set_vocab" in c.__dict__:
            c.set_vocab = lambda self: None
    return cls
conversion.get_model_class = without_vocab
for outfile, folder in zip(jobs[::2], jobs[1::2]):
    sys.argv = [str(root / "convert_hf_to_gguf.py"), folder, "--outfile", outfile, "--outtype", "q8_0"]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def converted(hf, tmp_path_factory) -> dict[str, Path]:
    """arch -> the q8_0 GGUF llama.cpp's convert_hf_to_gguf.py writes for the tiny HF model."""
    if not CONVERTER.is_file():
        pytest.skip(f"llama.cpp's converter is absent ({CONVERTER}; set LLAMA_CPP_DIR)")
    root, jobs, out = tmp_path_factory.mktemp("converted"), [], {}
    for arch, source in hf.items():
        folder = shutil.copytree(source, root / arch)
        config = json.loads((folder / "config.json").read_text())
        if "n_positions" in config:  # real GPT-2 configs carry n_ctx, which the converter reads
            (folder / "config.json").write_text(json.dumps({**config, "n_ctx": config["n_positions"]}))
        out[arch] = root / f"{arch}.gguf"
        jobs += [str(out[arch]), str(folder)]
    cmd = [sys.executable, "-c", _RUN_CONVERTER, str(CONVERTER.parent), *jobs]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"llama.cpp's converter failed here: {proc.stderr.strip().splitlines()[-1:]}")
    return out


@pytest.mark.parametrize("arch", [*ARCHS, "llama3", "gemma2", "gemma3", "phi3"])
def test_writer_lays_out_tensors_as_llama_cpp_converter(hf, converted, tmp_path, arch):
    """Same tensor names, types, shapes and bytes, and the same architecture metadata, as llama.cpp's
    convert_hf_to_gguf.py --outtype q8_0 (when present)."""
    ours = gguf.GGUFReader(write_gguf(hf[arch], tmp_path / "ours.gguf", "q8_0", tokenizer=False))
    them = gguf.GGUFReader(converted[arch])
    mine = {t.name: t for t in ours.tensors}
    assert sorted(mine) == sorted(t.name for t in them.tensors)
    for t in them.tensors:
        assert (mine[t.name].tensor_type, list(mine[t.name].shape)) == (t.tensor_type, list(t.shape)), t.name
        np.testing.assert_array_equal(np.asarray(mine[t.name].data), np.asarray(t.data), err_msg=t.name)
    for key, field in them.fields.items():
        if key.startswith(f"{them.fields['general.architecture'].contents()}."):
            assert ours.fields[key].contents() == pytest.approx(field.contents()), key


# --- hostile files ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good(files) -> bytes:
    return files("llama", "q8_0")[0].read_bytes()


def _tensor_info(data: bytes, index: int = 0) -> tuple[int, int, int]:
    """(offset of n_dims, offset of the type, offset of the data offset) of tensor `index`'s info."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        field = gguf.GGUFReader(f.name).tensors[index].field
    start = field.offset + 8 + len(bytes(field.parts[1]))
    n_dims = struct.unpack_from("<I", data, start)[0]
    return start, start + 4 + 8 * n_dims, start + 4 + 8 * n_dims + 4


def _put(data: bytes, at: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def _with_kv(data: bytes, entry: bytes) -> bytes:
    """One more metadata entry, first in the list (the kv count at byte 16 goes up by one)."""
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    return data[:16] + struct.pack("<Q", n_kv + 1) + entry + data[24:]


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


def _dims_at(data: bytes) -> int:
    return _tensor_info(data)[0] + 4


HOSTILE = {  # name -> (edit of a good file, words the one line must hold)
    "empty": (lambda d: b"", "too short"),
    "truncated header": (lambda d: d[:200], "truncated"),
    "truncated data": (lambda d: d[: len(d) - 4096], "outside the file"),
    "wrong magic": (lambda d: b"GGUX" + d[4:], "GGUF magic"),
    "version 1": (lambda d: _put(d, 4, "<I", 1), "version 1"),
    "big-endian": (lambda d: _put(d, 4, ">I", 3), "version"),
    "lying tensor offset": (lambda d: _put(d, _tensor_info(d)[2], "<Q", 1 << 40), "outside the file"),
    "misaligned tensor offset": (lambda d: _put(d, _tensor_info(d)[2], "<Q", 3), "offset 3"),
    "lying tensor size": (lambda d: _put(d, _dims_at(d) + 8, "<Q", 1 << 20), "outside the file"),
    "absurd dims": (lambda d: _put(_put(d, _dims_at(d), "<Q", 1 << 62), _dims_at(d) + 8, "<Q", 1 << 62), "dims"),
    "zero dim": (lambda d: _put(d, _dims_at(d), "<Q", 0), "dims"),
    "unknown tensor type": (lambda d: _put(d, _tensor_info(d)[1], "<I", 99), "unknown type 99"),
    "unsupported tensor type": (lambda d: _put(d, _tensor_info(d)[1], "<I", 16), "IQ2_XXS"),
    "nine dims": (lambda d: _put(d, _tensor_info(d)[0], "<I", 9), "9 dimensions"),
    "tensor count 2^40": (lambda d: _put(d, 8, "<Q", 1 << 40), "tensors"),
    "kv count 2^40": (lambda d: _put(d, 16, "<Q", 1 << 40), "metadata entries"),
    "array of 2^60 bytes": (
        lambda d: _with_kv(d, _key("x.big") + struct.pack("<IIQ", 9, 0, 1 << 60)),
        "x.big",
    ),
    "string of 2^62 bytes": (lambda d: _with_kv(d, _key("x.s") + struct.pack("<IQ", 8, 1 << 62)), "x.s"),
    "nested array": (lambda d: _with_kv(d, _key("x.n") + struct.pack("<IIQ", 9, 9, 1)), "x.n holds arrays (nested"),
    # the gguf reader's own words, with no fix: "(KeyError: 'Duplicate general.architecture already in list ...')"
    "duplicate key": (
        lambda d: _with_kv(d, _key("general.architecture") + struct.pack("<IQ", 8, 5) + b"llama"),
        "metadata key 'general.architecture' appears twice; download it again",
    ),
    # "(UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff ...)"
    "non-UTF-8 key": (
        lambda d: _with_kv(d, struct.pack("<Q", 3) + b"x\xffy" + struct.pack("<IB", 0, 1)),
        "metadata key b'x\\xffy' is not UTF-8 text; download it again",
    ),
    "unknown value type": (lambda d: _with_kv(d, _key("x.t") + struct.pack("<I", 77)), "unknown value type 77"),
    "huge key": (lambda d: _with_kv(d, struct.pack("<Q", 1 << 40)), "metadata key"),
    "bad alignment": (
        lambda d: _with_kv(d, _key("general.alignment") + struct.pack("<II", 4, 3)),
        "general.alignment",
    ),
    # QA: every tensor at offset 0 loaded (one tensor's bytes read as all of them: garbage); llama.cpp
    # refuses it ("tensor ... has offset 0, expected 131072")
    "overlapping tensor offsets": (
        lambda d: _put(d, _tensor_info(d, 1)[2], "<Q", struct.unpack_from("<Q", d, _tensor_info(d)[2])[0]),
        "their data overlap (lying offsets)",
    ),
    # QA: "tensor  has 0 dimensions" (the padding after the last info read as a nameless tensor)
    "one tensor more than the table": (
        lambda d: _put(d, 8, "<Q", struct.unpack_from("<Q", d, 8)[0] + 1),
        "its tensor count and its tensor table disagree",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_gguf_is_one_line(good, case, tmp_path, monkeypatch, capsys):
    edit, words = HOSTILE[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(edit(good))
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", path, "-p", "hi", "--max-new-tokens", "2")
    lines = [x for x in err.strip().splitlines() if not x.startswith("loading ")]  # less the log line before the load
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in " ".join(err.split()) or "bad.gguf" in err
    assert words in lines[0], lines[0]


def test_hostile_gguf_lines_say_each_number_once(good, tmp_path):
    """QA wording: an F32 tensor's zero dim said "the first a multiple of 1"; an array past the limit
    named its length twice."""
    from tiankong.engine.errors import ModelLoadError
    from tiankong.engine.gguf_header import check_header

    f32 = next(
        i for i, t in enumerate(gguf.GGUFReader(_write(tmp_path / "g.gguf", good)).tensors) if t.tensor_type == 0
    )
    path = _write(tmp_path / "zero.gguf", _put(good, _tensor_info(good, f32)[0] + 4, "<Q", 0))
    with pytest.raises(ModelLoadError, match=r"has dims \[0\] \(each at least 1\); download it again$"):
        check_header(path)
    path = _write(tmp_path / "array.gguf", _with_kv(good, _key("x.big") + struct.pack("<IIQ", 9, 0, 1 << 60)))
    with pytest.raises(ModelLoadError) as e:
        check_header(path)
    assert str(e.value).count(f"{1 << 60:,}") == 1 and "x.big holds" in str(e.value), e.value


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _metadata_case(tmp_path: Path, hf_folder: Path, **changes) -> Path:
    """A GGUF whose metadata lies: written, then one key rewritten through the reader (same size)."""
    path = write_gguf(hf_folder, tmp_path / "lying.gguf", "f32")
    reader = gguf.GGUFReader(path, "r+")
    for key, value in changes.items():
        reader.fields[key].parts[-1][0] = value
    reader.data.flush()
    return path


@pytest.mark.parametrize(
    "key, value, words",
    [
        # a GGUF file's errors name its own metadata keys, not config.json's
        ("llama.attention.head_count", 0, "llama.attention.head_count is 0"),
        ("llama.attention.head_count", 3, "llama.attention.head_count"),
        ("llama.block_count", 7, "llama.block_count is 7"),
        ("llama.embedding_length", 1 << 30, "llama.embedding_length"),
        ("llama.rope.freq_base", float("nan"), "llama.rope.freq_base"),
        # llama.cpp builds blk.N.ffn_down's shape from the key and refuses the file (the tiny model's is 96)
        (
            "llama.feed_forward_length",
            128,
            r"metadata llama\.feed_forward_length is 128, but tensor blk\.0\.ffn_down\.weight has shape "
            r"\[64, 96\] \(a feed-forward size of 96\); .*: convert it again",
        ),
    ],
)
def test_lying_metadata_is_one_line(hf, tmp_path, key, value, words):
    path = _metadata_case(tmp_path, hf["llama"], **{key: value})
    with pytest.raises(ModelLoadError, match=words) as e:
        load_model(path, device="cpu")
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert "config.json" not in str(e.value) and "use another file" in str(e.value)


def test_gpt2_feed_forward_length_is_4_n_embd_whatever_the_tensors(hf, tmp_path):
    """GPT-2's converter writes feed_forward_length 4 * n_embd whatever n_inner is: the tensors give
    the size, and a GPT-2 whose n_inner is not 4 * n_embd still loads."""
    from tiankong.engine.gguf_model import GGUFModel
    from tiankong.engine.model_list import _checked_gguf

    path = _metadata_case(tmp_path, hf["gpt2"], **{"gpt2.feed_forward_length": 7})
    assert GGUFModel(path).config().ffn_dim == 4 * 64  # the tiny GPT-2's n_inner: None, so 4 * n_embd
    load_model(path, device="cpu")
    _checked_gguf(path)  # `tiankong models` asks the same rule (QA58): listed, not skipped


def test_split_gguf_part_is_one_line(hf, tmp_path):
    """The first part of a split set (llama-gguf-split) without its other parts: the missing part is
    named, not 'tensors missing' (tests/test_gguf_split.py loads whole sets)."""
    path = tmp_path / "tiny-00001-of-00002.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint16("split.no", 0)
    writer.add_uint16("split.count", 2)
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(
        ModelLoadError, match=r"first of 2 parts of a split GGUF, and part 2, .*tiny-00002-of-00002.gguf, is missing"
    ):
        load_model(path, device="cpu")


def test_unsupported_architecture_is_one_line(hf, tmp_path):
    path = write_gguf(hf["llama"], tmp_path / "bert.gguf", "f32")
    data = path.read_bytes().replace(
        b"\x05\x00\x00\x00\x00\x00\x00\x00llama", b"\x05\x00\x00\x00\x00\x00\x00\x00bertx", 1
    )
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match="architecture 'bertx' in GGUF is not supported yet"):
        load_model(path, device="cpu")


def test_hundred_megabyte_string_is_refused_bounded(good, tmp_path):
    """A real 100 MB metadata string, in a child process: one line, in bounded time and memory
    (tests/helpers.tiankong asserts both)."""
    path = tmp_path / "big.gguf"
    entry = _key("general.description") + struct.pack("<IQ", 8, 100 << 20)
    with open(path, "wb") as f:
        f.write(good[:16] + struct.pack("<Q", struct.unpack_from("<Q", good, 16)[0] + 1) + entry)
        f.write(b"x" * (100 << 20))
        f.write(good[24:])
    code, lines, _ = tiankong("generate", "-m", path, "-p", "hi")
    lines = [x for x in lines if not x.startswith("loading ")]  # less the log line before the load
    assert code == 2 and len(lines) == 1 and "general.description" in lines[0], lines


def test_random_header_damage_loads_or_is_one_line(files, good, tmp_path):
    """200 seeded edits of 1-4 bytes anywhere in the header (metadata, vocabulary, tensor infos):
    each file loads, or fails with one TiankongError line; never another exception."""
    import random

    from tiankong.engine.errors import TiankongError
    from tiankong.engine.gguf_model import GGUFModel

    rng, path = random.Random(0), tmp_path / "damaged.gguf"
    header = GGUFModel(files("llama", "q8_0")[0]).reader.data_offset  # the bytes before the tensor data
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(200):
        data = bytearray(good)
        for _ in range(rng.choice([1, 2, 4])):
            data[rng.randrange(header)] = rng.choice([0, 255, rng.randrange(256)])
        path.write_bytes(bytes(data))
        try:
            Engine.load(path, device="cpu", dtype="float32", pack=False)
            outcomes["loaded"] += 1
        except TiankongError as e:
            assert "\n" not in str(e) and str(path) in str(e), str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 20, outcomes  # the edits did reach what is checked


# --- trainers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_sft_on_a_gguf_saves_a_folder_transformers_loads(files, tmp_path, arch):
    """The trainers train the dequantized plain module and save a Hugging Face folder: weights,
    config.json, and the GGUF's tokenizer as tokenizer.json + tokenizer_config.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiankong.engine.tokenizer import load_tokenizer
    from tiankong.trainers.sft import SFTConfig, SFTTrainer

    path, _ = files(arch, "q8_0")
    data = tmp_path / "chat.jsonl"
    chat = [{"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Once upon"}]}]
    data.write_text(json.dumps(chat[0]) + "\n")
    cfg = SFTConfig(output=str(tmp_path / "out"), model=str(path), data=str(data), steps=2, batch_size=1)
    cfg.device, cfg.progress, cfg.eval_fraction = "cpu", False, 0.0
    SFTTrainer(cfg).train()
    out = tmp_path / "out"
    text = "Once upon a time <s> there</s> 中文 😀"
    ids = load_tokenizer(path).encode(text)
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == ids == load_tokenizer(out).encode(text)
    hf_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ours, _ = load_model(out, device="cpu", dtype="float32")
    before, _ = load_model(path, device="cpu", dtype="float32")
    changed = [n for n, p in ours.named_parameters() if not torch.equal(p, before.get_parameter(n))]
    assert len(changed) == len(list(ours.parameters())), "training left some weights as they were"
    with torch.no_grad():
        torch.testing.assert_close(
            ours(torch.tensor([IDS]), torch.arange(len(IDS))[None]),
            hf_model(torch.tensor([IDS])).logits,
            atol=2e-5,
            rtol=1e-5,
        )
    assert Engine.load(out, device="cpu").template is not None  # the default template was saved with it


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_blocks_kept_quantized_give_the_same_logits(files, arch, qtype):
    """keep_quantized: QTensors straight from the file's blocks (llama's q/k rows reordered on the
    bytes), which the plain module dequantizes as it runs: the same logits as dequantizing at load."""
    from tiankong.engine.gguf_model import GGUFModel
    from tiankong.engine.quant import QEmbedding, QLinear

    path, ref = files(arch, qtype)
    model, _ = load_model(GGUFModel(path, keep_quantized=True), device="cpu", dtype="float32")
    kinds = {type(m) for m in model.modules()}
    assert QLinear in kinds and QEmbedding in kinds and torch.nn.Linear not in kinds
    with torch.no_grad():
        ours = model(torch.tensor([IDS]), torch.arange(len(IDS))[None])[0]
    torch.testing.assert_close(ours, hf_logits(ref, IDS), atol=2e-5, rtol=1e-5)


# --- llama.cpp itself (llama-cpp-python, where installed) -------------------------------------------


def _llama_cpp_logits(path: Path, ids: list[int] = IDS) -> np.ndarray:
    """llama.cpp's logits (T, V) for ids, with a float32 KV cache (its default f16 cache rounds)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1, type_k=0, type_v=0)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def _ours(path: Path, ids: list[int] = IDS) -> np.ndarray:
    model, _ = load_model(path, device="cpu", dtype="float32")
    with torch.no_grad():
        return model(torch.tensor([ids]), torch.arange(len(ids))[None])[0].numpy()


@pytest.fixture(scope="module")
def k_files(tmp_path_factory):
    """Llama, Qwen2, Qwen3 and GPT-2 with rows of 256 (K-quant blocks) as F32 GGUFs, and the Llama
    quantized by llama.cpp's own llama_model_quantize to Q8_0, Q4_K_M and Q5_K_M (Q4_K/Q5_K/Q6_K)."""
    import ctypes

    llama_cpp = pytest.importorskip("llama_cpp")
    ftypes = {
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    }
    from transformers import AutoTokenizer

    out = {}
    wide = dict(hidden_size=256, intermediate_size=512)
    for arch, dims in (("llama", wide), ("qwen2", wide), ("qwen3", wide), ("gpt2", dict(n_embd=256))):
        root = tmp_path_factory.mktemp(f"k-{arch}")
        folder = make_model(root / "hf", arch, **dims)
        # llama.cpp wants one embedding row per token of the file's vocabulary, which is
        # transformers' tokenizer's (Qwen2's adds <|endoftext|> to the tiny one).
        if (n := len(AutoTokenizer.from_pretrained(folder))) != json.loads((folder / "config.json").read_text())[
            "vocab_size"
        ]:
            folder = make_model(root / "hf-rows", arch, vocab_size=n, **dims)
        out[arch, "f32"] = src = write_gguf(folder, root / "f32.gguf", "f32")
        if arch != "llama":
            continue
        for name, ftype in ftypes.items():
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype, params.nthread = ftype, 1
            dst = root / f"{name}.gguf"
            assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0
            out[arch, name] = dst
    return out


@pytest.mark.parametrize("arch, tolerance", [("llama", 1e-3), ("qwen2", 1e-3), ("qwen3", 1e-3), ("gpt2", 0.05)])
def test_float_gguf_logits_equal_llama_cpp(k_files, arch, tolerance):
    """Stated tolerance: 1e-3 on logits of ~17 (llama.cpp sums in another order); GPT-2 0.05, as
    llama.cpp's CPU GELU reads a float16 table."""
    path = k_files[arch, "f32"]
    theirs, ours = _llama_cpp_logits(path), _ours(path)
    assert np.abs(theirs).max() > 5 and np.abs(ours - theirs).max() < tolerance
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


@pytest.mark.parametrize("qtype", ["q8_0", "q4_k_m", "q5_k_m"])
def test_quantized_gguf_logits_follow_llama_cpp(k_files, qtype):
    """llama.cpp also rounds the activations to 8 bits, so its logits on a quantized file differ from
    the dequantized weights' by more than float error. Stated tolerance: our logits are within a third
    (RMS) of what quantizing moved llama.cpp's own logits (f32 file -> this file), i.e. we decode the
    same blocks (Q8_0, Q4_K, Q5_K, Q6_K here): a wrong scale or nibble order lands at the full distance."""
    llama_cpp_for_quantized()  # skips where llama.cpp would die on these files
    path = k_files["llama", qtype]
    theirs, ours, float_theirs = _llama_cpp_logits(path), _ours(path), _llama_cpp_logits(k_files["llama", "f32"])
    moved = np.sqrt(((theirs - float_theirs) ** 2).mean())
    assert moved > 0.3  # quantizing did change llama.cpp's logits
    assert np.sqrt(((ours - theirs) ** 2).mean()) < moved / 3
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.9


AMX_BUILD = b"CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | "  # what a native build on such a CPU reports


@pytest.fixture
def fresh_probe():
    """llama_cpp_for_quantized's probe not yet run in this process (it runs once per process)."""
    gguf_files._llama_cpp_dies_on_quantized.cache_clear()
    yield
    gguf_files._llama_cpp_dies_on_quantized.cache_clear()


def test_quantized_llama_cpp_tests_skip_with_the_fix_where_llama_cpp_dies(fresh_probe, monkeypatch):
    """A build with AMX kernels whose child dies by SIGILL on the tiny Q8_0 file (simulated: the child
    kills itself): a skip naming the signal and the build without them, not a dead test worker."""
    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(llama_print_system_info=lambda: AMX_BUILD))
    monkeypatch.setattr(gguf_files, "LLAMA_CPP_EVAL", "import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    with pytest.raises(pytest.skip.Exception) as e:
        llama_cpp_for_quantized()
    reason = str(e.value)
    assert "\n" not in reason and "SIGILL" in reason and "AMX" in reason
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"' in reason


def test_quantized_llama_cpp_tests_run_where_the_probe_passes_or_there_is_no_amx(fresh_probe, monkeypatch):
    """With AMX kernels reported, a child evaluates the tiny Q8_0 file once; where it lives, llama_cpp is
    returned (this build has none, so it lives). Without AMX nothing is tried."""
    llama_cpp = pytest.importorskip("llama_cpp")
    run, codes = subprocess.run, []

    def recorded(*args, **kwargs):
        codes.append(run(*args, **kwargs).returncode)
        return types.SimpleNamespace(returncode=codes[-1])

    monkeypatch.setattr(subprocess, "run", recorded)
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: AMX_BUILD)
    assert llama_cpp_for_quantized() is llama_cpp and llama_cpp_for_quantized() is llama_cpp
    assert codes == [0]  # one child per process, and it evaluated the file
    gguf_files._llama_cpp_dies_on_quantized.cache_clear()
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: AMX_BUILD.replace(b"AMX_INT8 = 1", b""))
    assert llama_cpp_for_quantized() is llama_cpp and codes == [0]


def test_bulk_metadata_reader_reads_what_ggufreader_reads(files):
    """GGUFModel's reader (arrays read in bulk) gives every field as gguf.GGUFReader does."""
    from tiankong.engine.gguf_model import GGUFModel

    for arch in ("llama", "gpt2"):
        path = files(arch, "q8_0")[0]
        ours, theirs = GGUFModel(path).reader, gguf.GGUFReader(path)
        assert list(ours.fields) == list(theirs.fields) and len(ours.fields["tokenizer.ggml.tokens"].data) > 300
        for key, field in theirs.fields.items():
            mine = ours.fields[key]
            assert (mine.types, mine.data, mine.contents()) == (field.types, field.data, field.contents()), key
            assert [mine.parts[i].tobytes() for i in mine.data] == [field.parts[i].tobytes() for i in field.data]


@pytest.mark.parametrize("arch, qtype", [("gemma3", "q8_0"), ("gemma2", "q4_0")])
def test_a_quantized_gemma_keeps_its_blocks_for_the_compiled_step(files, arch, qtype):
    """A quantized Gemma file's blocks stay as they are, where they were once dequantized to float32
    at load (a Q4_K_M file ~6.5x its size): its prompts run each linear as one compiled product over
    them (tk_matmul) and its decode steps through the compiled step (PackedGemma). Its logits,
    prompt and decode steps, equal the plain module's whose quantized layers dequantize and see their
    inputs rounded as the compiled products round them: to float rounding (three positions in four
    within 1e-4 of the logits' scale) but for an input within an ulp of an 8-bit rounding tie, which
    the step's norms (summed in another order than torch's) may round the other way: that moved a
    Gemma's logits by up to 1.6e-2 of their scale (measured, gemma3 q8_0, the last two positions), so
    every position within check_steps' 2e-2, and the same greedy tokens. Dequantizing without that
    rounding, the float32 load's way, is off by ~2e-2 at most positions. With float32 caches, as
    test_quant_prefill's: each path writes its own keys, and in the engine's float16 cache a key
    straddling a rounding tie of halves stays a half-ulp apart in every later step; test_quant's
    Gemma decode-step test covers that cache, one step at a time."""
    from test_quant import rounding_reference

    from tiankong.engine import native
    from tiankong.engine.engine import COMPILED_STEP
    from tiankong.engine.gguf_model import GGUFModel
    from tiankong.engine.kv_cache import KVCache, kv_dtype
    from tiankong.engine.model import prepare_for_inference

    path = files(arch, qtype)[0]
    eng = Engine.load(path, device="cpu")
    if native.library() is None:  # no compiled step: dequantized once at load
        assert set(eng.weights["types"]) == {"float32"}
        return
    assert set(eng.weights["types"]) == {qtype} and eng.decode_path == COMPILED_STEP
    plain, cfg = load_model(GGUFModel(path, keep_quantized=True), "cpu", "auto")
    ref, model = rounding_reference(plain), prepare_for_inference(plain)
    assert model.native and model.quantized and kv_dtype(model) == torch.float16
    assert cfg.local_window is not None and cfg.local_window < len(IDS)  # local layers drop slots
    tokens, positions = torch.tensor([IDS]), torch.arange(len(IDS))[None]

    @torch.no_grad()
    def logits(m: torch.nn.Module) -> torch.Tensor:  # (1, 16, V): a prompt of 8, then one position at a time
        cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, len(IDS), cfg.head_dim, torch.float32, "cpu")
        out = [m(tokens[:, :8], positions[:, :8], cache=cache, start=0)]
        out += [m(tokens[:, t : t + 1], positions[:, t : t + 1], cache=cache, start=t) for t in range(8, 16)]
        return torch.cat(out, 1)

    got, want = logits(model)[0], logits(ref)[0]  # (16, V)
    errors = ((got - want).abs().amax(-1) / want.abs().amax(-1)).tolist()
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert max(errors) < 2e-2 and sum(e < 1e-4 for e in errors) >= 0.75 * len(errors), errors
    assert len(greedy(eng, "Once upon a time", 6)[0]) == 6


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_a_quantized_gpt2_keeps_its_blocks_for_the_compiled_step(files, hf, qtype):
    """A quantized GPT-2 file's blocks stay as they are (its Conv1D matrices are the file's (out, in)
    rows, which the step reads), where they were once dequantized to float32 at load: nothing is
    folded (the LayerNorms' gains and shifts and the query scale are applied as vectors), prompts run
    each linear as one compiled product, decode steps through the compiled step (PackedGPT2). Its
    logits, prompt and decode steps, equal the plain module's whose quantized layers dequantize and
    see their inputs rounded as the compiled products round them, within the Gemma test's bounds
    (same reasons, float32 caches). Each step starts from the step's own cache, copied into the
    reference's (GPT-2's keys are in the same order in both): an 8-bit rounding tie that the two
    round apart moves the key and value of one slot (measured here: q8_0, position 8, 1e-2 of
    the logits' scale), and would move every later step of a shared history. `--dtype q8_0` on the
    folder takes the same path (it was torch with one compiled product per linear) with the same
    bytes."""
    from test_quant import rounding_reference

    from tiankong.engine import native
    from tiankong.engine.engine import COMPILED_STEP
    from tiankong.engine.gguf_model import GGUFModel
    from tiankong.engine.gpt2_packed import PackedGPT2
    from tiankong.engine.kv_cache import KVCache, kv_dtype
    from tiankong.engine.model import prepare_for_inference

    path = files("gpt2", qtype)[0]
    eng = Engine.load(path, device="cpu")
    if native.library() is None:  # no compiled step: dequantized once at load
        assert qtype not in eng.weights["types"]
        return
    assert isinstance(eng.model, PackedGPT2) and eng.decode_path == COMPILED_STEP
    assert eng.weights["types"][qtype] == 9  # token embedding (tied head) and 4 matrices a layer
    plain, cfg = load_model(GGUFModel(path, keep_quantized=True), "cpu", "auto")
    ref, model = rounding_reference(plain), prepare_for_inference(plain)
    assert model.native and model.quantized and kv_dtype(model) == torch.float16
    tokens, positions = torch.tensor([IDS]), torch.arange(len(IDS))[None]

    caches = [KVCache(cfg.n_layers, 1, cfg.n_kv_heads, len(IDS), cfg.head_dim, torch.float32, "cpu") for _ in "mr"]
    with torch.no_grad():  # (1, 16, V) each: a prompt of 8, then one position at a time
        got, want = [model(tokens[:, :8], positions[:, :8], cache=caches[0], start=0)], []
        want.append(ref(tokens[:, :8], positions[:, :8], cache=caches[1], start=0))
        for t in range(8, 16):
            caches[1].kv.copy_(caches[0].kv)
            got.append(model(tokens[:, t : t + 1], positions[:, t : t + 1], cache=caches[0], start=t))
            want.append(ref(tokens[:, t : t + 1], positions[:, t : t + 1], cache=caches[1], start=t))
    got, want = torch.cat(got, 1)[0], torch.cat(want, 1)[0]  # (16, V)
    errors = ((got - want).abs().amax(-1) / want.abs().amax(-1)).tolist()
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert max(errors) < 2e-2 and sum(e < 1e-4 for e in errors) >= 0.75 * len(errors), errors
    assert len(greedy(eng, "Once upon a time", 6)[0]) == 6
    # --dtype on the folder: the same path, and the same bytes (the position embedding stays float32, as
    # llama.cpp keeps it in every type; it was quantized too), so the same tokens
    folder_eng = Engine.load(hf["gpt2"], device="cpu", dtype=qtype)
    assert isinstance(folder_eng.model, PackedGPT2) and folder_eng.decode_path == COMPILED_STEP
    if qtype == "q8_0":  # (q4_0: the folder's head is q8_0, as llama.cpp's; the test file's q4_0)
        assert folder_eng.weights == eng.weights
        tokens_, logprobs = greedy(eng, "Once upon a time")
        want_tokens, want_logprobs = greedy(folder_eng, "Once upon a time")
        assert tokens_ == want_tokens and logprobs == pytest.approx(want_logprobs, abs=1e-5)


def test_an_f16_gpt2_keeps_its_f32_position_embedding(files):
    """QA: an F16 GPT-2 file's position embedding, which the converter (as llama.cpp's) stores F32, was
    rounded to halves with the float16 weights (log-probs 4.7e-3 from llama.cpp's, against 2.6e-3 for
    the F32 file). It stays the file's float32 values, bit for bit, in the engine's model and in a
    float16 load of the plain module, which still runs."""
    path, _ = files("gpt2", "f16")
    file = next(t for t in gguf.GGUFReader(path).tensors if t.name == "position_embd.weight")
    assert file.tensor_type == gguf.GGMLQuantizationType.F32
    stored = torch.from_numpy(np.array(file.data)).reshape(-1, file.shape[0])  # (positions, D)
    eng = Engine.load(path, device="cpu")
    assert eng.model.pos_emb.weight.dtype == torch.float32 and torch.equal(eng.model.pos_emb.weight, stored)
    plain, _ = load_model(path, device="cpu", dtype="float16")
    assert plain.tok_emb.weight.dtype == torch.float16 and torch.equal(plain.pos_emb.weight, stored)
    with torch.no_grad():  # halves beside a float32 table: its rows are added as halves
        ours = plain(torch.tensor([IDS]), torch.arange(len(IDS))[None])[0]
    assert ours.dtype == torch.float16 and torch.isfinite(ours).all()


def test_a_quantized_phi3_keeps_its_blocks_and_long_rope_scales_what_turns(files):
    """A Q8_0 Phi-3 keeps its blocks (the fused q/k/v and gate/up split by rows) for the compiled
    step. Long-rope's attention factor (sqrt 2 here) scales the turning 3/4 of each head's q and k,
    as transformers scales cos and sin; quantized rows cannot carry it, so RoPE does (rope_mag).
    Against transformers on the dequantized weights: decode steps before the long-rope switch
    (through the step) and a prompt past it (torch). The q8_0 activations cost ~0.1 of mean error;
    the factor squared on whole query heads, as before, cost 1.5."""
    from tiankong.engine import native
    from tiankong.engine.kv_cache import KVCache, kv_dtype

    path, ref = files("phi3", "q8_0")
    eng = Engine.load(path, device="cpu")
    if native.library() is not None:
        assert set(eng.weights["types"]) == {"q8_0"}
        # the step holds the short factors: past the original 16 positions, steps run in torch
        assert eng.decode_path == "compiled step (csrc/decode.c); from position 16 in torch (long-rope's long factors)"
    model, cfg = eng.model, eng.cfg
    cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, len(IDS), cfg.head_dim, kv_dtype(model), "cpu")
    tokens, positions = torch.tensor([IDS]), torch.arange(len(IDS))[None]
    long_ids = IDS + IDS[:8]
    with torch.no_grad():
        steps = [model(tokens[:, :8], positions[:, :8], cache=cache, start=0)[0]]
        steps += [model(tokens[:, t : t + 1], positions[:, t : t + 1], cache=cache, start=t)[0] for t in range(8, 16)]
        prompt = model(torch.tensor([long_ids]), torch.arange(len(long_ids))[None])[0]
    for ours, want in ((torch.cat(steps), hf_logits(ref, IDS)), (prompt, hf_logits(ref, long_ids))):
        err = (ours - want).abs()
        assert want.abs().max() > 5 and err.mean() < 0.3 and err.max() < 3, (err.mean(), err.max())
    assert len(greedy(eng, "Once upon a time", 24)[0]) == 24  # generate reads the prompt again past the switch


@pytest.mark.parametrize("arch", ["llama", "qwen3", "phi3"])
def test_engine_keeps_q8_0_blocks_as_quantizing_the_folder_at_load_does(files, hf, arch):
    """Engine.load on a Q8_0 GGUF (no dtype, CPU) keeps the file's blocks; they are the bytes that
    `--dtype q8_0` makes from the HF folder (gguf-py's quantizer both ways), so the two engines give
    the same tokens and logprobs, through the compiled step where it builds."""
    from tiankong.engine import native

    path, _ = files(arch, "q8_0")
    eng, folder_eng = Engine.load(path, device="cpu"), Engine.load(hf[arch], device="cpu", dtype="q8_0")
    if native.library() is None:  # no compiled step: dequantized once at load
        assert "q8_0" not in eng.weights["types"]
        return
    assert eng.weights == folder_eng.weights and "float32" not in eng.weights["types"]
    assert eng.decode_path == folder_eng.decode_path and eng.decode_path.startswith("compiled step (csrc/decode.c)")
    folder_eng.tokenizer.eos_ids = eng.tokenizer.eos_ids  # the GGUF's adds <|im_end|>, as llama.cpp does
    tokens, logprobs = greedy(eng, "Once upon a time")
    want_tokens, want_logprobs = greedy(folder_eng, "Once upon a time")
    assert tokens == want_tokens and logprobs == pytest.approx(want_logprobs, abs=1e-5)


def test_chat_screen_on_an_ollama_model(files, store, tmp_path, monkeypatch):
    """The playground on `ollama:NAME`: it loads, answers, stores and shows the chat under the
    model's name (ollama:NAME:TAG), not the blob's path or sha256 name."""
    import asyncio

    from test_tui_chat import answered, loaded, make_app, send

    from tiankong.engine.resolve import resolve_model

    path, _ = files("llama", "q8_0")
    digest = "4" * 64
    (tmp_path / "ollama" / "blobs").mkdir(parents=True)
    shutil.copyfile(path, tmp_path / "ollama" / "blobs" / f"sha256-{digest}")
    manifest = tmp_path / "ollama" / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    manifest.parent.mkdir(parents=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}
    manifest.write_text(json.dumps({"layers": [layer]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    blob = resolve_model("ollama:tiny")

    async def go():
        app = make_app(blob, store, tmp_path)
        async with app.run_test(size=(100, 32)) as pilot:
            chat = await loaded(pilot)
            chat.params = chat.params.replace(seed=7, max_new_tokens=6)
            await send(pilot, "hello there")
            answer = await answered(pilot, chat)
            return answer.tokens, store.get_chat(chat.chat_id).model, chat.model_name

    tokens, stored_model, shown = asyncio.run(go())
    assert tokens and stored_model == shown == "ollama:tiny:latest"


@pytest.mark.parametrize("arch, tolerance", [("gemma2", 0.01), ("gemma3", 0.01), ("phi3", 1e-3), ("llama3", 1e-3)])
def test_gemma_phi3_and_llama3_scaled_gguf_logits_equal_llama_cpp(files, arch, tolerance):
    """Stated tolerance: Gemma 0.01 on logits of ~8 (llama.cpp's float16 GELU table, soft-caps);
    Phi-3 1e-3 over 24 positions, past its long-rope switch (llama.cpp's context of 64 is past it too);
    Llama with Llama 3 RoPE scaling (rope_freqs.weight) 1e-3."""
    path, ids = files(arch, "f32")[0], IDS + IDS[:8]
    theirs, ours = _llama_cpp_logits(path, ids), _ours(path, ids)
    assert np.abs(theirs).max() > 5 and np.abs(ours - theirs).max() < tolerance
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_gguf_errors_name_its_metadata_keys_and_tensors_not_config_json(hf, tmp_path):
    """A GGUF file's inconsistencies are the file's: errors name its keys (llama.block_count) and
    tensors (blk.0.attn_k.weight), say so once, and point to another file, not to config.json."""
    path = _metadata_case(tmp_path, hf["llama"], **{"llama.attention.head_count_kv": 1})
    with pytest.raises(ModelLoadError, match=r"tensor blk\.0\.attn_k\.weight in lying\.gguf has shape .* metadata"):
        load_model(path, device="cpu")
    path = write_gguf(hf["llama"], tmp_path / "no-embd.gguf", "f32")
    path.write_bytes(path.read_bytes().replace(b"token_embd.weight", b"token_embx.weight"))
    with pytest.raises(ModelLoadError, match="has no token_embd.weight") as e:
        load_model(path, device="cpu")
    assert str(e.value).count(str(path)) == 1


def test_header_without_architecture_or_of_a_projector_says_what_it_is(hf, tmp_path):
    from test_resolve import header_gguf

    bare = tmp_path / "bare.gguf"
    bare.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))  # a valid header holding nothing
    with pytest.raises(ModelLoadError, match="has no general.architecture: not a model file"):
        load_model(bare, device="cpu")
    with pytest.raises(ModelLoadError, match="vision projector"):
        load_model(header_gguf(tmp_path / "mmproj.gguf", "clip"), device="cpu")


def test_unsupported_quantization_advises_another_not_the_same_again(good, tmp_path):
    edit, _ = HOSTILE["unsupported tensor type"]
    path = tmp_path / "iq2.gguf"
    path.write_bytes(edit(good))
    with pytest.raises(ModelLoadError, match="IQ2_XXS") as e:
        load_model(path, device="cpu")
    assert "another quantization, e.g. Q4_K_M" in str(e.value) and "download it again" not in str(e.value)


def test_info_calls_a_gguf_file_a_file(files, monkeypatch, capsys):
    path, _ = files("llama", "f32")
    code, out, err = cli(monkeypatch, capsys, "info", "-m", path)
    assert code == 0 and out.split()[:3] == ["name", "│", path.name], (out, err)  # the name first
    assert out.split()[3:6] == ["file", "│", str(path)], (out, err)


def _mapped_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line: addresses ... path
            inside = len(head) >= 6 and head[5] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps")
def test_tensor_bytes_are_unmapped_once_copied(tmp_path):
    """Each tensor's mapped pages are let go once read: else the whole file stays resident beside the
    model built from it (an F32 file's load peaked at twice its weights). Tensors of megabytes, so the
    kernel's fault-around (a few pages about each read) stays small beside them."""
    from tiankong.engine.gguf_model import GGUFModel

    dims = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=2, num_attention_heads=8)
    path = write_gguf(make_model(tmp_path / "hf", "llama", num_key_value_heads=4, **dims), tmp_path / "big.gguf")
    model = GGUFModel(path)
    data = sum(int(t.n_bytes) for t in model.reader.tensors)  # 33 MB
    for *_, read in model.hf_tensors():
        read()
    assert _mapped_kb(path) * 1024 < data / 8, (_mapped_kb(path), data)
