"""One GGUF tensor's data in Hugging Face form: the reads engine/gguf_model.GGUFModel hands out.

What the converter did to a tensor's data is undone here: llama-arch q/k rows put back in HF order
(on the raw rows, so quantized blocks too), blocks decoded to float32 (gguf.quants.dequantize) or
kept as a quant.QTensor, Conv1D weights transposed back. Apart from the reader, which decides per
tensor which of these apply; these functions only touch bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import gguf
    import torch

    from .quant import QTensor


def _never_read() -> torch.Tensor:
    """The reader of a tensor no name table maps: checks refuse such a file before any read."""
    raise AssertionError("a GGUF tensor without a model name was read")


def _hf_row_order(rows: int, heads: int) -> np.ndarray:
    """Row index that undoes llama.cpp's LlamaModel.permute for q or k (rows = heads * head_dim).

    The converter reorders each head's rows (pairs i, i + hd/2 -> 2i, 2i+1):
    w.reshape(heads, 2, hd/2, ...).swapaxes(1, 2); so HF row (h, j, i) sits at GGUF row (h, i, j).
    """
    half = rows // heads // 2
    return np.arange(rows).reshape(heads, half, 2).swapaxes(1, 2).reshape(rows)


def _quant_types() -> dict:
    from .quant import QTYPES

    return QTYPES


def _read_blocks(t: gguf.ReaderTensor, rows: np.ndarray | None, shape: tuple[int, ...]) -> QTensor:
    """One quantized matrix as a QTensor: the file's blocks, not decoded; as they lie in the mapping
    (no copy: the packing copies them into its buffer), or reordered to HF rows (a copy)."""
    import torch

    from .quant import QTensor

    data = t.data if rows is None else t.data[rows]  # (out, bytes per row) uint8
    return QTensor(t.tensor_type.name.lower(), (shape[0], shape[1]), torch.from_numpy(data))


def _read(t: gguf.ReaderTensor, rows: np.ndarray | None, transpose: bool, copy: bool = True) -> torch.Tensor:
    """One tensor as float32 in HF order: rows reordered (on the raw blocks), dequantized, transposed.
    copy=False: an F32 tensor whose rows stay in order is the mapping itself (copy-on-write), not a copy."""
    import gguf
    import torch

    data = t.data if rows is None else t.data[rows]  # (out, bytes or values per row); fancy index copies
    if t.tensor_type == gguf.GGMLQuantizationType.F32:
        out = np.array(data, dtype=np.float32, copy=copy and rows is None)  # rows: data is a copy already
    else:  # a damaged scale decodes to inf or NaN, as in llama.cpp: the engine's non-finite checks see it
        with np.errstate(all="ignore"):
            out = gguf.quants.dequantize(np.asarray(data), t.tensor_type)
    tensor = torch.from_numpy(out)
    return tensor.t() if transpose else tensor
