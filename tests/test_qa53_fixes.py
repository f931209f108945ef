"""QA pass 53 (hostile inputs), the engine's findings: a Gemma 3 GGUF file without its sliding
window, a context too short for a prompt and an answer, an overflow blamed on --dtype when the
float16 KV cache overflowed, and Python spellings (None, True) in messages about config.json.

Each hostile model is built here: a tiny model (tiny_models.make_model), written as GGUF
(gguf_files.write_gguf) where the finding is about a GGUF file."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf_files import write_gguf
from tiny_models import make_model

from tiankong.engine.config import ModelConfig
from tiankong.engine.config_checks import check_values
from tiankong.engine.engine import Engine
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.events import Finished
from tiankong.engine.gguf_model import GGUFModel
from tiankong.engine.kv_cache import kv_dtype
from tiankong.engine.model import load_model
from tiankong.engine.sampling import SamplingParams


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {arch: make_model(root / arch, arch) for arch in ("gemma2", "gemma3")}


# ------------------------------------------------------------------------- 2: Gemma's window key


def _without_window(folder: Path, path: Path, monkeypatch) -> Path:
    """The model as a GGUF file whose converter wrote no {arch}.attention.sliding_window."""
    with monkeypatch.context() as m:
        m.setattr(gguf.GGUFWriter, "add_sliding_window", lambda self, value: None)
        write_gguf(folder, path, "f32")
    assert not any(k.endswith("sliding_window") for k in gguf.GGUFReader(path).fields)
    return path


def test_a_gemma3_file_without_its_window_loads_as_llama_cpp_loads_it(hf, tmp_path, monkeypatch):
    """A Gemma 3 file without gemma3.attention.sliding_window: llama.cpp (llama-cpp-python 0.3.36)
    loads it, so tiankong does too, with transformers' default window (4096) for its local layers,
    rather than refusing a file the user's other programs run."""
    path = _without_window(hf["gemma3"], tmp_path / "g3.gguf", monkeypatch)
    cfg = ModelConfig.from_hf_config(GGUFModel(path).hf_config)
    assert cfg.local_window == 4096 and "sliding_attention" in cfg.layer_types
    load_model(path, device="cpu")
    llama_cpp = pytest.importorskip("llama_cpp")
    llama_cpp.Llama(str(path), n_ctx=32, verbose=False)  # loads: no exception


def test_a_gemma2_file_without_its_window_gets_llama_cpps_default(hf, tmp_path, monkeypatch):
    """llama.cpp's gemma2 reads the key as optional, 4096 when absent ("default value of gemma 2")."""
    path = _without_window(hf["gemma2"], tmp_path / "g2.gguf", monkeypatch)
    cfg = ModelConfig.from_hf_config(GGUFModel(path).hf_config)
    assert cfg.local_window == 4096 and "sliding_attention" in cfg.layer_types


# ------------------------------------------------------------------------- 3: a context of 1


def _with_metadata(path: Path, **changes) -> Path:
    """`path` with metadata values rewritten in place (same type, same size)."""
    reader = gguf.GGUFReader(path, "r+")
    for key, value in changes.items():
        reader.fields[key].parts[-1][0] = value
    reader.data.flush()
    return path


@pytest.mark.parametrize("key", ["max_position_embeddings", "n_positions"])
def test_a_context_of_one_token_is_refused_at_load(key):
    """QA: a context of 1 loaded, then refused every prompt ("shorten it to at most 0 tokens") and
    chat opened "ready · max 1": a context holds at least a prompt token and an answer token."""
    with pytest.raises(ModelLoadError) as e:
        check_values({key: 1})
    assert str(e.value) == f"config.json: {key} is 1, but it must be a whole number from 2 to 134217728; fix the value"
    check_values({key: 2})


def test_a_gguf_context_of_one_token_names_the_files_key(hf, tmp_path):
    path = _with_metadata(write_gguf(hf["gemma3"], tmp_path / "ctx1.gguf", "f32"), **{"gemma3.context_length": 1})
    with pytest.raises(ModelLoadError) as e:
        load_model(path, device="cpu")
    said = str(e.value)
    assert "\n" not in said and "gemma3.context_length is 1, but it must be a whole number from 2" in said


# ------------------------------------------------------------------------- 5: JSON spellings


@pytest.mark.parametrize(
    "key, value, shown",
    [
        ("query_pre_attn_scalar", None, "null"),
        ("rope_theta", True, "true"),
        ("hidden_size", False, "false"),
        ("architectures", [None], "[null]"),
        ("model_type", {"name": None, "ok": True}, "{'name': null, 'ok': true}"),
    ],
)
def test_config_values_in_messages_are_spelled_as_json(key, value, shown):
    """QA: "query_pre_attn_scalar": null was said as "query_pre_attn_scalar is None": a message about
    a config.json value writes it as the file does (null, true, false)."""
    with pytest.raises(ModelLoadError) as e:
        check_values({key: value})
    said = str(e.value)
    assert not {"None", "True", "False"} & set(said.replace(",", " ").replace("]", " ").replace("[", " ").split())
    assert f"{key} is {shown}, but" in said


# ------------------------------------------------------------------------- 4: the float16 KV cache


def _with_scales(path: Path, tensor: str, value: float) -> Path:
    """`path` with every Q8_0 block scale (the fp16 d at each block's start) of `tensor` set to value."""
    reader = gguf.GGUFReader(path, "r+")
    t = next(t for t in reader.tensors if t.name == tensor)
    blocks = t.data.reshape(-1, 34)
    blocks[:, 0:2] = np.full((blocks.shape[0], 1), value, "<f2").view(np.uint8)
    reader.data.flush()
    return path


def _finished(eng: Engine) -> Finished:
    params = SamplingParams(temperature=0.0, max_new_tokens=4)
    return next(
        ev for ev in eng.generate([eng.encode("hi there once upon", raw=True)], [params]) if isinstance(ev, Finished)
    )


def test_an_overflow_in_the_float16_kv_cache_is_named(tmp_path):
    """QA: values of 65504 times the activations overflowed the float16 KV cache that quantized
    weights keep, and the error said "common in float16" of a model whose dtype is float32. It names
    the cache; --dtype float32 (weights dequantized, a float32 cache) runs the same file."""
    folder = make_model(tmp_path / "llama", "llama")
    path = _with_scales(write_gguf(folder, tmp_path / "v.gguf", "q8_0"), "blk.0.attn_v.weight", 65504.0)
    eng = Engine.load(path, device="cpu")
    if kv_dtype(eng.model) != torch.float16:
        pytest.skip("the blocks are dequantized here (no compiled step), so the cache is float32")
    fin = _finished(eng)
    assert fin.finish_reason == "error" and "\n" not in fin.message
    assert "overflowed in the float16 KV cache that quantized weights use: load float32, --dtype float32" in fin.message
    assert "common in float16" not in fin.message
    assert _finished(Engine.load(path, device="cpu", dtype="float32")).finish_reason in ("length", "eos")
