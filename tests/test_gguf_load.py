"""A GGUF loaded for the compiled step is copied once: from the file's mapping into the step's buffer.

GGUFModel(keep_quantized=True) hands out its matrices as they lie in the (copy-on-write) mapping,
and PackedLlama writes each straight into its place in the step's buffer (repack.place_rows for
blocks, in-place folding for float32 weights), then lets the file's pages go. The bytes are the
ones the copying path made: place_rows equals pack_rows then repack_rows, and a float32 layer
folded in the buffer equals one folded in a scratch matrix. The logits tests (test_gguf.py) hold
whole models to transformers and llama.cpp.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from gguf_files import write_gguf
from helpers import one_thread  # noqa: F401 - one_thread applies to this module
from test_gguf import _mapped_kb
from test_quant import need_native, random_qtensor
from tiny_models import make_model

from tiankong.engine.engine import Engine
from tiankong.engine.gguf_model import GGUFModel
from tiankong.engine.llama_packed import PackedLlama
from tiankong.engine.model import load_model
from tiankong.engine.native_step import WeightBuffer
from tiankong.engine.quant import QTensor, pack_rows, packed_bytes
from tiankong.engine.repack import INTERLEAVED, place_rows, repack_rows


@pytest.mark.parametrize("qtype", [*INTERLEAVED, "q4_1"])
def test_place_rows_is_pack_rows_then_repack_rows(qtype):
    """Interleaved straight from the source (tk_repack from where it lies), gathered in a row order,
    plain (q4_1, a 5-row part) or float32: the bytes and layout of copying, then interleaving."""
    gen = torch.Generator().manual_seed(0)
    n = 256
    parts = [random_qtensor(qtype, 24, n, gen), random_qtensor(qtype, 21, n, gen), random_qtensor(qtype, 5, n, gen)]
    parts.append(torch.randn(9, n, generator=gen))
    orders = [torch.randperm(24, generator=gen), None, None, torch.randperm(9, generator=gen)]
    gathered = [
        QTensor(qtype, (24, n), parts[0].data[orders[0]]),
        *parts[1:3],
        parts[3][orders[3]],
    ]
    want, want_layout = repack_rows(*pack_rows(gathered), n, types=INTERLEAVED)
    out = torch.full((packed_bytes(parts),), 7, dtype=torch.uint8)
    got, layout = place_rows(parts, out, n, orders, types=INTERLEAVED)
    assert got.data_ptr() == out.data_ptr() and torch.equal(got, want) and layout == want_layout


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Tensors of megabytes, so that the kernel's fault-around stays small beside them."""
    root = tmp_path_factory.mktemp("big")
    dims = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=2, num_attention_heads=8)
    hf = make_model(root / "hf", "llama", num_key_value_heads=4, tie_word_embeddings=True, **dims)
    return {qtype: write_gguf(hf, root / f"big-{qtype}.gguf", qtype) for qtype in ("q8_0", "f32")}


def _in_mapping(t: torch.Tensor, reader) -> bool:
    start = reader.data.ctypes.data
    return start <= t.data_ptr() < start + reader.data.nbytes


@pytest.mark.parametrize("qtype", ["q8_0", "f32"])
def test_kept_matrices_are_the_mapping_not_copies(big, qtype):
    """Read for packing (keep_quantized), a matrix whose rows stay in order is the mapped bytes
    themselves (llama's q/k rows are reordered: a copy); read for anything else, a copy."""
    for keep in (True, False):
        source = GGUFModel(big[qtype], keep_quantized=keep)
        for _, name, shape, read in source.hf_tensors():
            t = read()
            data = t.data if isinstance(t, QTensor) else t
            mapped = keep and len(shape) == 2 and not name.endswith(("q_proj.weight", "k_proj.weight"))
            assert _in_mapping(data, source.reader) == mapped, (keep, name)
            assert isinstance(t, QTensor) == (keep and qtype == "q8_0" and len(shape) == 2)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps")
@pytest.mark.parametrize("qtype", ["q8_0", "f32"])
def test_loading_lets_the_files_pages_go_once_packed(big, qtype):
    """Every weight is read from the mapping into the step's buffer, and its pages are let go: the
    file is not left resident beside the model made from it."""
    need_native()
    path = big[qtype]
    eng = Engine.load(path, device="cpu")
    assert eng.decode_path == "compiled step (csrc/decode.c)"
    assert _mapped_kb(path) * 1024 < path.stat().st_size / 8, (_mapped_kb(path), path.stat().st_size)


def test_float_layer_folded_in_the_buffer_equals_one_folded_aside(big):
    """The float32 path folds q/k/v and gate/up in their place in the step's buffer; folded in a
    scratch matrix and copied (bfloat16's and oneDNN's way), the bits are the same."""
    model, cfg = load_model(big["f32"], device="cpu", dtype="float32")
    layer = model.layers[0]
    own = WeightBuffer(PackedLlama._arena_size(cfg), torch.float32)
    in_place = PackedLlama._pack_layer(cfg, copy.deepcopy(layer), own)  # (packing lets its weights' pages go)
    aside = PackedLlama._pack_layer(cfg, layer, lambda w: w.clone())
    for name in ("wqkv", "wo", "w13", "w2"):
        assert torch.equal(getattr(in_place, name), getattr(aside, name)), name
