"""What a model is made of, without loading it: `Engine.load(...).info()` from the checkpoint's headers.

`tiankong info` used to load the whole model (a GGUF's blocks copied and interleaved into the
compiled step's buffer, a folder's tensors cast and packed) to print a few dozen numbers, all of
which follow from the tensors' names, shapes and types. Here nothing but headers is read: the
safetensors header or the GGUF tensor infos (gguf's reader maps the file; no tensor is touched),
and the tokenizer and chat template the facts name.

How the numbers stay the ones Engine.load gives: the model is built as load_model builds it, on
the meta device (modules and shapes, no memory), and filled by load_weights itself through a name
table whose reads give empty meta tensors (`_MetaReads`): the same modules come out, quantized
where the load would keep a GGUF's blocks (`GGUFModel.block_types`) or quantize them (--dtype
q8_0), tied where it ties, with its errors for a missing or stray tensor. Engine.info() then runs
on that model. Only the two facts that depend on the packed form, the device and the decode path,
are not the meta model's: they come from the tests `model.prepare_for_inference` makes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from . import gemma, gpt2, llama
from .config import ModelConfig
from .engine import Engine, tokenizer_and_template
from .gguf_load import QUANTIZED_TORCH, compiled_step_path, gguf_load_dtype, keeps_blocks
from .gguf_model import GGUFModel, is_gguf
from .model import build_model, check_folder, dtype_name, name_table, resolve_device, resolve_dtype
from .native import library as native_library
from .native import reason as native_reason
from .packed import can_pack
from .quant import QUANTIZABLE, is_quantized, meta_qtensor, quantize_model, weight_summary
from .resolve import resolve_model
from .weight_names import NameTable
from .weights import check_checkpoint, load_weights

META = torch.device("meta")


def model_facts(
    folder: str | Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    chat_template: str | Path | None = None,
) -> dict[str, Any]:
    """Engine.load(folder, device, dtype, chat_template=chat_template).info(), the same keys and
    values, from headers only (see the module docstring). Raises ModelLoadError as the load would
    for a checkpoint whose config, names or shapes do not fit; a tensor's bytes are not read, so a
    damaged one is the load's to find."""
    dtype = dtype_name(dtype)  # "Q8_0" as "q8_0", as Engine.load reads it
    folder = resolve_model(folder)
    gguf = None
    if is_gguf(folder):
        keeps = keeps_blocks(folder, device, dtype, True)
        gguf = GGUFModel(folder, keeps)
        dtype = gguf_load_dtype(folder, keeps, dtype)
    model, cfg, dev = _meta_model(gguf or folder, device, dtype)
    weights = weight_summary(model)
    tokenizer, template = tokenizer_and_template(folder, gguf, cfg, chat_template)
    facts = Engine(model, cfg, tokenizer, template, folder, weights["parameters"], weights).info()
    facts["device"] = str(torch.empty(0, device=dev).device)  # "cuda:0" where a load's tensors say so
    facts["decode"] = _decode_path(model, cfg, dev)
    return facts


def _meta_model(
    source: Path | GGUFModel, device: str | torch.device, dtype: str | torch.dtype | None
) -> tuple[nn.Module, ModelConfig, torch.device]:
    """load_model(source, device, dtype) on the meta device: the same checks in the same order and
    the same modules, no weights; with the device the load would use."""
    if isinstance(source, Path):
        check_folder(source)
    cfg = ModelConfig.from_folder(source) if isinstance(source, Path) else source.config()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    table = name_table(cfg)
    with META:  # a one-layer model gives every tensor's expected shape
        one_layer = build_model(replace(cfg, n_layers=1))
    check_checkpoint(source, cfg, table, one_layer)
    with META:
        model = build_model(cfg)
    blocks = source.block_types() if isinstance(source, GGUFModel) else {}
    load_weights(model, cfg, source, _MetaReads.of(table, blocks), dt, META)
    if dtype in QUANTIZABLE:  # as load_model: every linear and the embedding, the head in q8_0
        quantize_model(model, str(dtype), head_qtype="q8_0")
    return model.eval(), cfg, dev


class _MetaReads(NameTable):
    """A model's name table whose tensors read as empty meta tensors of their shapes (a QTensor of
    its type for a GGUF matrix the load keeps in blocks), so that load_weights builds the model's
    modules, names every problem and reads nothing."""

    blocks: dict[str, str]  # HF name -> quant type (GGUFModel.block_types)

    @classmethod
    def of(cls, table: NameTable, blocks: dict[str, str]) -> _MetaReads:
        meta = cls.__new__(cls)
        meta.__dict__.update(vars(table), blocks=blocks)
        return meta

    def split(
        self,
        tensors: Iterator[tuple[str, str, tuple[int, ...], Callable]],
        file_name: Callable[[str], str] | None = None,
    ) -> Iterator:
        for file, name, shape, _ in super().split(tensors, file_name):
            qtype = self.blocks.get(self.fused_name(name))  # a fused tensor's parts (Phi-3) keep its type
            if qtype is not None and len(shape) == 2:
                hit = self.target(name)  # a Conv1D weight (GPT-2): its QTensor is (out, in), as its file rows
                rows, cols = (shape[1], shape[0]) if hit is not None and hit[1] else (shape[0], shape[1])
                yield file, name, shape, lambda q=qtype, s=(rows, cols): meta_qtensor(q, s)
            else:
                yield file, name, shape, lambda s=shape: torch.empty(s, device=META)


def _decode_path(model: nn.Module, cfg: ModelConfig, dev: torch.device) -> str:
    """Engine.decode_path of prepare_for_inference(model) on `dev`, from the tests it makes, in its
    order (so the compiled step is built, or found missing, exactly where the load would)."""
    # PackedLlama, PackedGemma, PackedGPT2 where the step builds; else the plain module
    if is_quantized(model):
        if dev.type != "cpu":
            return "torch"
        why = native_reason()
        return (
            compiled_step_path(cfg)
            if native_library() is not None
            else f"{QUANTIZED_TORCH}; compiled step unavailable: {why}"
        )
    dtype = next(model.parameters()).dtype
    if dtype == torch.float16 and dev.type == "cpu":
        return compiled_step_path(cfg) if native_library() is not None else "torch"  # the step, or torch
    if not can_pack(dev, dtype):
        return "torch"
    if isinstance(model, (llama.Llama, gemma.Gemma, gpt2.GPT2)) and native_library() is not None:
        return compiled_step_path(cfg)
    why = native_reason()  # PackedLlama with oneDNN-packed weights, or packed.pack_linears (Gemma, GPT-2)
    return f"torch, oneDNN-packed weights; compiled step unavailable: {why}" if why else "torch, oneDNN-packed weights"


__all__ = ["model_facts"]
