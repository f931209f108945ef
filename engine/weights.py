"""Checkpoint files -> model parameters, one tensor at a time.

The model is built on the meta device (no memory), then each checkpoint tensor is read, renamed
through the architecture's literal WEIGHT_MAP, shape-checked, cast to the requested dtype, moved to
the device and installed as the parameter itself. So at no point are there two copies of the
weights in memory: the peak is the model plus the one tensor being converted.

The name table is engine/weight_names.py; finding and reading a folder's weight files (nothing in
them executed), engine/weight_files.py. Saving a model as a Hugging Face folder is at the end.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator, Protocol, cast

import torch
from torch import nn

from .config import ModelConfig, to_hf_config
from .config_checks import MAX_LAYERS, QUANTIZED_FIX
from .errors import ModelLoadError, quoted
from .files import atomic_write, atomic_write_text, model_file
from .quant import QTensor, set_quantized
from .weight_files import checkpoint_files, iter_tensors
from .weight_names import NameTable


def embedding(num: int, dim: int) -> nn.Embedding:
    """nn.Embedding(num, dim), without initialising it when built on the meta device for loading.

    nn.Embedding initialises with normal_, and torch's meta normal_ imports about 70 MB of Python
    the first time it runs (more than all of an inference process's own overhead): so on meta the
    weight is left empty, to be filled by the checkpoint; elsewhere it gets nn.Embedding's N(0, 1).
    """
    weight = torch.empty(num, dim)
    if weight.device.type != "meta":
        nn.init.normal_(weight)
    return nn.Embedding(num, dim, _weight=weight)


class TensorSource(Protocol):
    """A checkpoint that is not a folder of files: a GGUF file (engine/gguf_model.GGUFModel). Its
    errors speak of its own metadata keys and tensor names, not of config.json and Hugging Face's."""

    def hf_tensors(self) -> Iterator[tuple[str, str, tuple[int, ...], Callable[[], torch.Tensor]]]: ...

    def file_tensor_name(self, hf_name: str) -> str: ...

    def metadata_key(self, hf_key: str) -> str: ...

    def stored_type(self, hf_name: str) -> str | None: ...


# Floats of 4 to 8 bits (safetensors' F8_E4M3, F8_E5M2, F6_E2M3, F4; torch's float8_e4m3fn): a
# quantized checkpoint's weights, whose scales are separate tensors the loader does not apply.
_LOW_FLOAT = re.compile(r"(?i)f(?:loat)?[468](?:_|$)")

# A source's values are no one's to edit by hand: a mismatch inside one file means another file.
_BAD_FILE = "the file is damaged or was converted wrongly: use another file"


def checkpoint_tensors(
    source: Path | TensorSource,
) -> Iterator[tuple[str, str, tuple[int, ...], Callable[[], torch.Tensor]]]:
    """(file name, tensor name, shape, read) for every tensor of a model folder, or of a GGUF file
    (whose tensors come with Hugging Face names and shapes, dequantized when read)."""
    if not isinstance(source, Path):
        yield from source.hf_tensors()
        return
    for path in checkpoint_files(source):
        for name, shape, read in iter_tensors(path):
            yield path.name, name, shape, read


def check_checkpoint(folder: Path | TensorSource, cfg: ModelConfig, table: NameTable, one_layer: nn.Module) -> None:
    """Check the checkpoint's tensor shapes and layer count against `cfg`, reading headers only.

    Runs before the model is built: a config.json claiming 10^5 layers or a vocabulary the
    embedding does not have fails here in milliseconds, not after minutes and gigabytes of modules.
    `one_layer` is the model built with one layer (on meta), whose shapes every layer shares.
    """
    shapes = {n: tuple(p.shape) for n, p in one_layer.named_parameters()}
    layers: set[int] = set()
    headers: dict[Path, dict[str, str]] = {}  # safetensors file -> tensor name -> dtype, read once per file
    names = None if isinstance(folder, Path) else folder.file_tensor_name  # a GGUF file's errors: its names
    for file, name, shape, read in table.split(checkpoint_tensors(folder), names):
        hit = table.match(name)
        if hit is None:
            continue  # not ours: load_weights names it
        if isinstance(folder, Path):
            _check_dtype(name, file, _stored_dtype(folder / file, table.sub_model + name, read, headers))
        dst, layer, transpose = hit
        if layer is not None:
            layers.add(layer)
        want = shapes.get(dst.replace("{}", "0"))
        got = shape[::-1] if transpose else shape
        if want is not None and got != want and not isinstance(folder, Path):
            raise ModelLoadError(
                f"tensor {folder.file_tensor_name(table.fused_name(name))} in {file} has shape {list(shape)}, "
                f"but the file's metadata implies {list(want)}; {_BAD_FILE}"
            )
        if want is not None and got != want:
            raise ModelLoadError(
                f"tensor {name} in {file} has shape {list(shape)}, but config.json "
                f"implies {list(want)}; the weights do not match the config"
            )
    found = max(layers) + 1 if layers else 0
    key = "n_layer" if cfg.family == "gpt2" else "num_hidden_layers"
    if found != cfg.n_layers and not isinstance(folder, Path):
        raise ModelLoadError(
            f"{folder}: its metadata says {folder.metadata_key(key)} is {cfg.n_layers}, but it holds "
            f"tensors for {found} layers; {_BAD_FILE}"
        )
    if found != cfg.n_layers and (not layers or len(layers) != found or found > MAX_LAYERS):
        # No layer at all, or numbers with gaps (0-4 and 100000): the checkpoint itself is broken,
        # and no value of the config's layer count would fit it.
        have = f"tensors for {len(layers)} layers numbered {min(layers)} to {max(layers)}" if layers else "no layers"
        raise ModelLoadError(
            f"the checkpoint in {folder} is inconsistent: it has {have}, while config.json says {key} is "
            f"{cfg.n_layers}; restore the weights from the model's source"
        )
    if found != cfg.n_layers:
        raise ModelLoadError(
            f"config.json: {key} is {cfg.n_layers}, but the checkpoint in {folder} has "
            f"{found} layers; set {key} to {found} or use the matching weights"
        )


def _stored_dtype(path: Path, name: str, read: Callable[[], torch.Tensor], headers: dict[Path, dict[str, str]]) -> str:
    """How the checkpoint stores tensor `name` of `path`: as its safetensors header says ("F32", "I32"),
    reading headers only, or a pickled file's tensor's own dtype ("float32"; loaded already, so free).
    A part of a fused tensor has no header entry of its own: load_weights checks it when read."""
    if path.suffix != ".safetensors":
        return str(read().dtype).removeprefix("torch.")
    if path not in headers:
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as f:  # opened before by iter_tensors: no errors left
            headers[path] = {key: f.get_slice(key).get_dtype() for key in f.keys()}
    return headers[path].get(name, "F32")


def _check_dtype(name: str, file: str, dtype: str) -> None:
    """Refuse a tensor the model uses as float weights stored as integers or booleans (loaded as such,
    its numbers would be the float bits read as integers, and the model would write garbage), or as
    4- to 8-bit floats (a quantized checkpoint: cast without its scales, the weights are wrong)."""
    if not dtype.upper().startswith(("F", "BF")):  # F32, BF16, F8_E4M3; float32, bfloat16
        raise ModelLoadError(
            f"tensor {quoted(name, 100)} in {file} is {dtype}, but the model uses it as a float weight "
            "(F32, F16 or BF16 expected); re-download or re-convert the checkpoint"
        )
    if _LOW_FLOAT.match(dtype):
        raise ModelLoadError(
            f"tensor {quoted(name, 100)} in {file} is {dtype}: the checkpoint is quantized (FP8/FP4), "
            f"which tiankong does not read (its scales would be lost); {QUANTIZED_FIX}"
        )


def load_weights(
    model: nn.Module,
    cfg: ModelConfig,
    folder: Path | TensorSource,
    table: NameTable,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    """Fill a meta-device `model` from the checkpoint in `folder` (see the module docstring)."""
    expected = {n: p for n, p in model.named_parameters(remove_duplicate=True)}
    tied = cfg.tie_embeddings
    if tied:
        expected.pop("output.weight", None)
    loaded: set[str] = set()
    unexpected: list[str] = []
    for file, name, _shape, read in table.split(checkpoint_tensors(folder)):
        hit = table.target(name)
        if hit is None:
            if not table.is_ignored(name):
                unexpected.append(name)
            continue
        target, transpose = hit
        if target == "output.weight" and tied:
            continue  # some tied checkpoints still store lm_head; the embedding is used
        if target not in expected:
            unexpected.append(name)
            continue
        try:  # shapes were checked by check_checkpoint, before the model was built
            t = read()
        except Exception as e:  # safetensors reads lazily: a short file fails here
            raise ModelLoadError(f"{file} is truncated or corrupt (reading {name}: {e}); download it again") from None
        loaded.add(target)
        if isinstance(t, QTensor):  # a GGUF matrix kept in its blocks: the module becomes a QLinear/QEmbedding
            set_quantized(model, target, QTensor(t.qtype, t.shape, t.data.to(device)))
            continue
        _check_dtype(name, file, str(t.dtype).removeprefix("torch."))  # check_checkpoint saw the headers; the rest
        if transpose:
            t = t.t()
        t = t.to(device=device, dtype=_float_dtype(folder, name, target, dtype)).contiguous()
        module_name, _, param_name = target.rpartition(".")
        module = model.get_submodule(module_name)
        if param_name in module._buffers:  # a QLinear's bias
            module._buffers[param_name] = t
        else:
            module._parameters[param_name] = nn.Parameter(t, requires_grad=False)
    _check_all_matched(folder, cfg, table, set(expected) - loaded, unexpected)
    if tied and isinstance(model.output, nn.Linear):  # a quantized embedding's head was tied by set_quantized
        model.output.weight = cast(nn.Embedding, model.tok_emb).weight  # (nn.Module attributes type as Tensor | Module)


def _float_dtype(folder: Path | TensorSource, name: str, target: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a float tensor loads in: `dtype`, but float32 for GPT-2's position embedding where a
    GGUF file stores it F32 and the load is float16 (an F16 file's): llama.cpp keeps it F32 in every
    file type (quant.quantize_model keeps it float too), and rounding it to halves moved an F16 file's
    log-probs 4.7e-3 from llama.cpp's, against 2.6e-3 for its F32 file. PackedGPT2 adds it in float32
    (the plain module rounds its rows to the weights' dtype as it adds them)."""
    if dtype != torch.float16 or target != "pos_emb.weight" or isinstance(folder, Path):
        return dtype
    return torch.float32 if folder.stored_type(name) == "F32" else dtype


def _check_all_matched(
    folder: Path | TensorSource, cfg: ModelConfig, table: NameTable, missing_targets: set[str], unexpected: list[str]
) -> None:
    """One line for a checkpoint that lacks tensors the model needs or has tensors it does not use,
    named as the checkpoint names them (a GGUF file: its own names, the fix another file)."""
    missing = sorted(table.checkpoint_name(target) for target in missing_targets)
    if not isinstance(folder, Path):
        missing = sorted(folder.file_tensor_name(n.removeprefix(table.prefix)) for n in missing)
        unexpected = [folder.file_tensor_name(table.fused_name(n)) for n in unexpected]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        where = f"checkpoint in {folder}" if isinstance(folder, Path) else str(folder)
        fix = "" if isinstance(folder, Path) else f"; {_BAD_FILE}"
        raise ModelLoadError(f"{where} lacks {len(missing)} tensor(s) the model needs: {shown}{fix}")
    if unexpected:
        # The checkpoint's own names, not ours: any length, any characters.
        shown = ", ".join(quoted(n, 100) for n in unexpected[:4])
        shown += f" and {len(unexpected) - 4} more" if len(unexpected) > 4 else ""
        if not isinstance(folder, Path):
            raise ModelLoadError(
                f"{folder} has tensors a {cfg.architecture} does not use: {shown}; its metadata may not "
                f"match its tensors: {_BAD_FILE}"
            )
        raise ModelLoadError(
            f"checkpoint in {folder} has tensors this {cfg.architecture} does not use: "
            f"{shown}; config.json may not match the weights"
        )


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
)


def save_model(
    model: nn.Module,
    cfg: ModelConfig,
    folder: str | Path,
    table: NameTable,
    tokenizer_from: str | Path | None = None,
    extra_files: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a Hugging Face folder (config.json, model.safetensors, tokenizer files).

    Each file is written under a temporary name in the same folder and then renamed over the old
    one (atomic on POSIX), weights last; a crash mid-save leaves every file whole. Other files in
    the folder (a trainer's metrics and state) are left alone. The result loads in tiankong and in
    transformers alike. `metadata` goes into the safetensors header (e.g. the training step).
    """
    from safetensors.torch import save_file

    from .gguf_model import GGUFModel, is_gguf

    folder = Path(folder)
    copies: dict[str, Path] = {}
    written: dict[str, str] = {}
    if tokenizer_from is not None and is_gguf(tokenizer_from):
        # A GGUF source has no tokenizer files: they are written from its metadata instead.
        written = GGUFModel(tokenizer_from).tokenizer_files()
    elif tokenizer_from is not None and Path(tokenizer_from).resolve() != folder.resolve():
        # Through model_file, before anything is written: a tokenizer file that is a link out of the
        # source folder (added_tokens.json -> ~/.ssh/id_rsa) is refused, never copied into an output.
        skip = {"config.json", *(extra_files or {})}
        copies = {
            name: src
            for name in TOKENIZER_FILES
            if name not in skip and (src := model_file(tokenizer_from, name)) is not None
        }
        if not {"tokenizer.json", "tokenizer.model"} & {*copies, *(extra_files or {})}:
            # A folder written without its tokenizer loads nowhere, and for a tokenizer trained on
            # the run's data there may be no other copy: refuse before anything is written.
            raise ModelLoadError(
                f"no tokenizer in {tokenizer_from} to copy (looked for tokenizer.json and tokenizer.model); "
                "give a folder that has one"
            )
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    dtype = next(model.parameters()).dtype
    tensors = {}
    for hf_name, (target, transpose) in _hf_names(table, state, cfg).items():
        t = state[target].detach()
        tensors[hf_name] = (t.t() if transpose else t).contiguous().cpu()
    tensors = table.join(tensors)
    texts = {"config.json": json.dumps(to_hf_config(cfg, str(dtype).removeprefix("torch.")), indent=2) + "\n"}
    texts.update(written)
    texts.update(extra_files or {})
    for name, text in texts.items():
        atomic_write_text(folder / name, text)
    for name, src in copies.items():
        atomic_write(folder / name, functools.partial(shutil.copyfile, src))
    meta = {"format": "pt", **(metadata or {})}
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata=meta))
    return folder


def _hf_names(table: NameTable, state: dict, cfg: ModelConfig) -> dict[str, tuple[str, bool]]:
    """checkpoint name -> (module name, transpose?) for every tensor of `state` (the table read backwards)."""
    out: dict[str, tuple[str, bool]] = {}
    for src, dst, transpose in table.entries:
        for i in range(cfg.n_layers) if "{}" in dst else [0]:
            target, name = dst.replace("{}", str(i)), src.replace("{}", str(i))
            if target not in state or (target == "output.weight" and cfg.tie_embeddings):
                continue
            out[table.saved_name(name)] = (target, transpose)
    return out
