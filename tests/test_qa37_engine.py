"""QA pass 37 (hostile inputs), the engine's and generate's findings: an --n whose rows cannot be
held, a GGUF file whose metadata builds no model opening chat's app, NaN block scales blamed on an
overflow, GGUF errors naming config.json's keys and tensors, Phi-3's attention factor never read.

Each damaged file is built here: a tiny model (tiny_models.make_model) written as GGUF
(gguf_files.write_gguf), then one metadata value or one tensor's bytes changed in place."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf_files import hf_logits, write_gguf
from helpers import cli
from tiny_models import make_model

import tiankong.tui.app as app_module
import tiankong.tui.arena as arena_module
import tiankong.tui.cli_generate as cli_generate
from tiankong.engine.engine import Engine
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.events import Finished
from tiankong.engine.gguf_model import GGUFModel
from tiankong.engine.model import load_model
from tiankong.engine.sampling import SamplingParams
from tiankong.tui import cli_env


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {
        "gemma2": make_model(root / "gemma2", "gemma2", query_pre_attn_scalar=24),
        "phi3": make_model(root / "phi3", "phi3"),
    }


def with_metadata(path: Path, **changes) -> Path:
    """`path` with metadata values rewritten in place (same type, same size), as a bad converter or
    a damaged download leaves them."""
    reader = gguf.GGUFReader(path, "r+")
    for key, value in changes.items():
        reader.fields[key].parts[-1][0] = value
    reader.data.flush()
    return path


# ------------------------------------------------------------------------- 6: generate --n bounded


class _Loaded(Exception):
    """Raised in place of loading the model: the checks before it passed."""


@pytest.mark.parametrize("n", [10**20, 2**64, 10**9])
def test_generate_refuses_an_n_whose_rows_cannot_be_held_before_the_model_loads(n, monkeypatch, capsys):
    """--n 10**20 built its rows up front without end (1.6 GB after 80 s, nothing said); a drawn base
    seed + n - 1 could pass 2**64 unchecked."""

    def load(*args, **kwargs):
        raise _Loaded

    monkeypatch.setattr(cli_generate, "_load", load)
    code, out, err = cli(monkeypatch, capsys, "generate", "-p", "hi", "--n", n, "--max-new-tokens", 1)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert f"--n {n} with 1 prompt makes {n} rows" in lines[0] and "1,000,000" in lines[0]
    assert "lower --n" in lines[0]


def test_generate_counts_prompts_times_n_and_lets_the_largest_run_through(tmp_path, monkeypatch, capsys):
    def load(*args, **kwargs):
        raise _Loaded

    monkeypatch.setattr(cli_generate, "_load", load)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\nc\n", encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "generate", "--input", prompts, "--n", 400_000)
    assert code == 2 and "--n 400000 with 3 prompts makes 1200000 rows" in err, err
    with pytest.raises(_Loaded):  # exactly the bound: on to the model
        cli(monkeypatch, capsys, "generate", "-p", "hi", "--n", 1_000_000)


@pytest.mark.parametrize(
    ("name", "n", "fix"),
    [
        ("big.jsonl", 4, "split -l 250000 --additional-suffix=.jsonl big.jsonl part-"),
        ("big", 1, "split -l 1000000 big part-"),
    ],
)
def test_generate_refusing_too_many_rows_says_how_to_split_the_input(name, n, fix, tmp_path, monkeypatch, capsys):
    """A 5-million-line file was told to "split the input into several runs": not how many lines a
    run takes, nor that a .jsonl part must keep its suffix (read as text, a JSON string line keeps
    its quotes), nor that the parts need one --seed for each row to keep its seed."""
    prompts = tmp_path / name
    prompts.write_text("a\n", encoding="utf-8")
    monkeypatch.setattr(cli_generate, "read_jobs", lambda *a: [("line", {"prompt": "a"})] * 1_000_001)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(monkeypatch, capsys, "generate", "--input", name, "--n", n)
    line = " ".join(err.split())  # one line, wrapped by no terminal
    assert code == 2 and out == "", err
    assert f"{1_000_001 * n} rows" in line and f"at most {1_000_000 // n:,} lines ({fix})" in line, line
    assert "its own --output and the same --seed" in line and ("lower --n" in line) == (n > 1), line


# ---------------------------------------------- 10: chat and compare refuse an unbuildable GGUF file


@pytest.mark.parametrize(
    "command", [["chat"], ["compare"], ["compare", "--prompts", "PROMPTS"]], ids=["chat", "compare", "queue"]
)
def test_chat_and_compare_refuse_a_gguf_whose_metadata_builds_no_model(command, hf, tmp_path, monkeypatch, capsys):
    """Attention soft-cap 0: generate, info and serve refused it in one line (rc 2); chat opened its
    app saying "model not loaded" and exited 0."""
    path = with_metadata(
        write_gguf(hf["gemma2"], tmp_path / "cap0.gguf", "q8_0"), **{"gemma2.attn_logit_softcapping": 0.0}
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n", encoding="utf-8")
    monkeypatch.setattr(cli_env, "_is_terminal", lambda stream: True)  # the CLI's terminal check passes

    def never(*args, **kwargs):
        pytest.fail("the app must not open")

    monkeypatch.setattr(app_module, "run_until_exit", never)
    monkeypatch.setattr(arena_module, "run_until_exit", never)
    args = [str(prompts) if a == "PROMPTS" else a for a in command]
    code, out, err = cli(monkeypatch, capsys, *args, "-m", path, "--data-dir", tmp_path / "data")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert "gemma2.attn_logit_softcapping is 0.0" in lines[0] and "use another file" in lines[0]


# ------------------------------------------------ 8: non-finite block scales named, not an "overflow"


def with_scales(path: Path, tensor: str, value: float) -> Path:
    """`path` with every block scale (the fp16 d at each block's start) of `tensor` set to value."""
    reader = gguf.GGUFReader(path, "r+")
    t = next(t for t in reader.tensors if t.name == tensor)
    size = {"Q8_0": 34, "Q4_0": 18}[t.tensor_type.name]
    blocks = t.data.reshape(-1, size)
    blocks[:, 0:2] = np.full((blocks.shape[0], 1), value, "<f2").view(np.uint8)
    reader.data.flush()
    return path


@pytest.mark.parametrize(
    "arch, qtype, tensor, value, kind",
    [
        ("phi3", "q8_0", "blk.0.attn_qkv.weight", float("nan"), "NaN"),  # packed: fused, interleaved blocks
        ("gemma2", "q4_0", "blk.0.ffn_up.weight", float("nan"), "NaN"),  # compiled products over the blocks
        ("phi3", "q4_0", "blk.1.ffn_down.weight", float("inf"), "infinite"),
    ],
)
def test_nonfinite_block_scales_name_the_files_tensor(hf, tmp_path, arch, qtype, tensor, value, kind):
    """The weights kept as blocks were never checked: the error said the unquantized weights were
    finite, so an activation overflowed (load float32) or a config value was wrong, where float32
    named the weight. The blocks' scales are read from the file and the tensor named."""
    path = with_scales(write_gguf(hf[arch], tmp_path / f"{arch}.gguf", qtype), tensor, value)
    eng = Engine.load(path, device="cpu")
    assert any(b.dtype == torch.uint8 for b in eng.model.buffers()), "the test needs blocks kept as bytes"
    done = [
        ev
        for ev in eng.generate([eng.encode("hi", raw=True)], [SamplingParams(max_new_tokens=3)])
        if isinstance(ev, Finished)
    ]
    assert done[0].finish_reason == "error", done
    assert f"weight {tensor} of {arch}.gguf holds {kind} block scales; re-download" in done[0].message
    assert "overflowed" not in done[0].message


def test_finite_block_scales_keep_the_overflow_diagnosis(hf, tmp_path):
    path = write_gguf(hf["phi3"], tmp_path / "clean.gguf", "q8_0")
    assert GGUFModel(path).nonfinite_scales() is None
    assert with_scales(path, "blk.0.attn_output.weight", 65504.0) and GGUFModel(path).nonfinite_scales() is None
    assert GGUFModel(with_scales(path, "output.weight", float("-inf"))).nonfinite_scales() == (
        "output.weight",
        "infinite",
    )


# ------------------------------------------- 9, 12: GGUF errors name the file's tensors and keys


def with_dims(path: Path, tensor: str, dims: tuple[int, ...]) -> Path:
    """`path` with one tensor's dimensions (GGUF order: columns first) rewritten in its tensor info."""
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == tensor)
    at = t.field.offset + sum(p.nbytes for p in t.field.parts[:3])  # name length, name, n_dims: then the dims
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(np.array(dims, np.uint64).tobytes())
    return path


@pytest.mark.parametrize(
    "tensor, dims, rows", [("blk.0.attn_qkv.weight", (64, 96), 128), ("blk.0.ffn_up.weight", (64, 100), 192)]
)
def test_a_fused_phi3_tensor_of_the_wrong_size_is_named_as_the_file_names_it(hf, tmp_path, tensor, dims, rows):
    """It said "tensor model.layers.0.self_attn.qkv_proj.weight ... config.json implies 128 rows" of a
    file that has no config.json."""
    path = with_dims(write_gguf(hf["phi3"], tmp_path / "phi3.gguf", "f32"), tensor, dims)
    with pytest.raises(ModelLoadError) as e:
        load_model(path, device="cpu")
    assert str(e.value) == (
        f"tensor {tensor} in phi3.gguf has shape {list(dims[::-1])}, but the file's metadata implies {rows} rows; "
        "the file is damaged or was converted wrongly: use another file"
    )


# ------------------------------------------------------------------------- 12: the file's own keys


def test_a_derived_config_key_is_named_by_the_file_keys_it_comes_from(hf, tmp_path):
    """QA: phi3.rope.dimension_count = 0 was said as "partial_rotary_factor is 0.0", a config.json key
    a GGUF file does not have; it is the file's rotary dimensions over the head size."""
    path = with_metadata(write_gguf(hf["phi3"], tmp_path / "dims0.gguf", "f32"), **{"phi3.rope.dimension_count": 0})
    with pytest.raises(ModelLoadError) as e:
        load_model(path, device="cpu")
    said = str(e.value)
    assert "phi3.rope.dimension_count / the head size is 0" in said and "partial_rotary_factor" not in said
    assert "use another file" in said


@pytest.mark.parametrize(
    "arch, key, value, said",
    [
        ("gemma3", "gemma3.rope.scaling.factor", float("nan"), "gemma3.rope.scaling.factor is nan, but it must be"),
        ("phi3", "phi3.rope.scaling.attn_factor", 0.0, "phi3.rope.scaling.attn_factor is 0.0, but it must be"),
        ("phi3", "phi3.rope.scaling.attn_factor", float("inf"), "phi3.rope.scaling.attn_factor is inf, but it must be"),
        (
            "gpt2",
            "gpt2.embedding_length",
            3,
            "gpt2.embedding_length (3) must be divisible by gpt2.attention.head_count (4))",
        ),
    ],
)
def test_a_rope_scaling_value_is_named_by_its_file_key(hf, tmp_path, arch, key, value, said):
    """QA: gemma3.rope.scaling.factor = nan was said as "rope_scaling: factor is nan"; a GPT-2 file
    whose width the heads do not divide was told "or head_dim must be given", a key it cannot have."""
    folder = hf[arch] if arch in hf else make_model(tmp_path / arch, arch)
    path = with_metadata(write_gguf(folder, tmp_path / f"{arch}.gguf", "f32"), **{key: value})
    with pytest.raises(ModelLoadError) as e:
        load_model(path, device="cpu")
    assert said in str(e.value) and "use another file" in str(e.value), str(e.value)
    assert not {"rope_scaling", "factor is", "head_dim", "attention_factor"} & set(_words(str(e.value))), str(e.value)


def _words(line: str) -> list[str]:
    """The config.json words a GGUF message must not hold: its keys as words, and "factor is"."""
    words = line.replace("(", " ").replace(")", " ").replace(",", " ").split()
    return words + [" ".join(p) for p in zip(words, words[1:], strict=False)]


@pytest.mark.parametrize("which", ["long", "short"])
def test_phi3_rope_factors_are_named_as_the_files_tensors(hf, tmp_path, which):
    """QA: a damaged rope_factors_long.weight was said as "rope_scaling: long_factor must be a list",
    config.json's key for what a GGUF file holds as a tensor."""
    path = write_gguf(hf["phi3"], tmp_path / "phi3.gguf", "f32")
    reader = gguf.GGUFReader(path, "r+")
    next(t for t in reader.tensors if t.name == f"rope_factors_{which}.weight").data[0] = float("nan")
    reader.data.flush()
    with pytest.raises(ModelLoadError) as e:
        load_model(path, device="cpu")
    assert f"(rope_factors_{which}.weight must hold 6 positive numbers (one per rotated pair" in str(e.value)
    assert f"{which}_factor" not in str(e.value) and "rope_scaling" not in str(e.value)


# ------------------------------------------------------- 15: Phi-3's rope.scaling.attn_factor, read


@pytest.fixture(scope="module")
def phi3_same_factors(tmp_path_factory) -> Path:
    """A Phi-3 whose long and short factors are the same, and whose config.json has an
    attention_factor (2.0) of its own: llama.cpp picks long or short by its context size, not by
    position, and its converter drops the attention_factor (it writes sqrt(1 + ln 16 / ln 16): 256
    positions over 16)."""
    from tiny_models import phi3_long_rope

    rope = phi3_long_rope(torch.Generator().manual_seed(0))
    rope.update(long_factor=rope["short_factor"], attention_factor=2.0)
    return make_model(tmp_path_factory.mktemp("phi3-af") / "hf", "phi3", rope_parameters=rope)


def test_phi3_attn_factor_is_the_files_as_transformers_takes_a_configs(phi3_same_factors, tmp_path):
    """The attention factor was computed from the context lengths, whatever the file said: a file
    whose rope.scaling.attn_factor is the checkpoint's own (2.0) ran with sqrt(2) all the same."""
    path = write_gguf(phi3_same_factors, tmp_path / "phi3.gguf", "f32")
    written = gguf.GGUFReader(path).fields["phi3.rope.scaling.attn_factor"].parts[-1][0]
    cfg = json.loads((phi3_same_factors / "config.json").read_text())
    scale = cfg["max_position_embeddings"] / cfg["original_max_position_embeddings"]
    assert scale == 16 and written == pytest.approx(2**0.5)  # llama.cpp's converter's sqrt(1 + ln scale / ln 16)
    with_metadata(path, **{"phi3.rope.scaling.attn_factor": 2.0})
    model, _ = load_model(path, device="cpu", dtype="float32")
    with torch.no_grad():
        ours = model(torch.tensor([_IDS]), torch.arange(len(_IDS))[None])[0]
    torch.testing.assert_close(ours, hf_logits(phi3_same_factors, _IDS), atol=2e-5, rtol=1e-5)


def test_phi3_attn_factor_is_the_one_llama_cpp_runs(phi3_same_factors, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    path = with_metadata(
        write_gguf(phi3_same_factors, tmp_path / "phi3.gguf", "f32"), **{"phi3.rope.scaling.attn_factor": 2.0}
    )
    llm = llama_cpp.Llama(str(path), n_ctx=32, logits_all=True, verbose=False, n_threads=1, type_k=0, type_v=0)
    llm.eval(_IDS)
    theirs = np.array(llm.scores[: len(_IDS)])
    model, _ = load_model(path, device="cpu", dtype="float32")
    with torch.no_grad():
        ours = model(torch.tensor([_IDS]), torch.arange(len(_IDS))[None])[0].numpy()
    assert np.abs(theirs).max() > 5 and np.abs(ours - theirs).max() < 1e-3


def test_an_attn_factor_without_long_rope_is_refused(hf, tmp_path):
    """llama.cpp scales RoPE by the key in any model; tiankong only with long-rope: refused, not dropped."""
    path = with_metadata(write_gguf(hf["phi3"], tmp_path / "p.gguf", "f32"), **{"phi3.rope.scaling.attn_factor": 2.0})
    reader = gguf.GGUFReader(path, "r+")
    for t in reader.tensors:  # the long-rope factors renamed away: a Phi-3 without long-rope
        if t.name.startswith("rope_factors_"):
            t.field.parts[1][-1] = ord("X")
    reader.data.flush()
    with pytest.raises(ModelLoadError) as e:
        load_model(path, device="cpu")
    assert str(e.value) == (
        f"{path}: phi3.rope.scaling.attn_factor is 2.0, a scale on RoPE that tiankong applies only with "
        "long-rope factors (rope_factors_long.weight); use the model's Hugging Face folder or another file"
    )


_IDS = [1, 5, 300, 17, 42, 99, 250, 7, 120, 64, 33, 2, 310, 8]  # under 16: short factors (llama.cpp's too)
