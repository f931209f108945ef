"""Checkpoint files -> model parameters, one tensor at a time.

The model is built on the meta device (no memory), then each checkpoint tensor is read, renamed
through the architecture's literal WEIGHT_MAP, shape-checked, cast to the requested dtype, moved to
the device and installed as the parameter itself. So at no point are there two copies of the
weights in memory: the peak is the model plus the one tensor being converted.

Nothing in a model folder is executed: safetensors is plain data, and pickled `.bin` weights are
read only with `torch.load(weights_only=True)`, which refuses anything but tensors.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator, Protocol, cast

import torch
from torch import nn

from .config import ModelConfig, to_hf_config
from .config_checks import MAX_LAYERS
from .errors import ModelLoadError, quoted
from .files import atomic_write, atomic_write_text, model_file, open_regular, read_model_object
from .quant import QTensor, set_quantized


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


def _pattern(name: str) -> re.Pattern[str]:
    # A layer number of 10+ digits is no real layer: the name stays unmatched and is reported.
    return re.compile(re.escape(name).replace(r"\{\}", r"(\d{1,9})") + "$")


class NameTable:
    """Compiled form of an architecture's WEIGHT_MAP: checkpoint name -> module name."""

    def __init__(
        self,
        weight_map: dict[str, str],
        ignored: tuple[str, ...] = (),
        transposed: frozenset[str] = frozenset(),
        prefix: str = "",
        fused: dict[str, tuple[tuple[str, int], ...]] | None = None,
        sub_model: str = "",
    ) -> None:
        """fused: checkpoint tensors that hold several of the table's, stacked by rows (Phi-3's
        qkv_proj): name -> ((part's checkpoint name, rows), ...); `split` and `join` convert.
        sub_model: the checkpoint holds more than this model, whose tensors sit under this prefix
        (Gemma 3 image-text: "language_model."); `split` reads only those, and saves drop it."""
        self.entries = [(src, dst, src in transposed) for src, dst in weight_map.items()]
        self.rules = [(_pattern(src), dst, t) for src, dst, t in self.entries]
        self.ignored = [_pattern(p) for p in ignored]
        self.prefix = prefix
        self.fused = [(_pattern(src), src, parts) for src, parts in (fused or {}).items()]
        self.sub_model = sub_model

    def split(self, tensors: Iterator[tuple[str, str, tuple[int, ...], Callable]]) -> Iterator:
        """The (file, name, shape, read) stream of a checkpoint with every fused tensor replaced by
        its parts, each read as a view of the fused tensor's rows (read once for all of them), and
        only the sub-model's tensors, renamed as if it were alone."""
        for file, name, shape, read in tensors:
            if self.sub_model:
                if not name.startswith(self.sub_model):
                    continue  # another model's (a vision tower)
                name = name[len(self.sub_model) :]
            hit = next(((m, parts) for pat, _, parts in self.fused if (m := pat.match(name))), None)
            if hit is None:
                yield file, name, shape, read
                continue
            m, parts = hit
            if not shape or shape[0] != sum(rows for _, rows in parts):
                raise ModelLoadError(
                    f"tensor {name} in {file} has shape {list(shape)}, but config.json implies "
                    f"{sum(rows for _, rows in parts)} rows; the weights do not match the config"
                )
            whole, start = functools.cache(read), 0
            for part, rows in parts:
                part_name = part.replace("{}", m.group(1)) if m.groups() else part
                yield file, part_name, (rows, *shape[1:]), lambda a=start, b=start + rows, whole=whole: whole()[a:b]
                start += rows

    def join(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoint tensors by name with the parts of each fused tensor stacked back into it."""
        for _, src, parts in self.fused:
            first = _pattern(parts[0][0])
            for m in [m for n in list(tensors) if (m := first.match(n))]:

                def fill(name: str, m: re.Match[str] = m) -> str:
                    return name.replace("{}", m.group(1)) if m.groups() else name

                tensors[fill(src)] = torch.cat([tensors.pop(fill(part)) for part, _ in parts])
        return tensors

    def fused_name(self, name: str) -> str:
        """The fused tensor's name for one of its parts' names (Phi-3: q_proj -> qkv_proj); else name."""
        for _, src, parts in self.fused:
            for part, _ in parts:
                if m := _pattern(part).match(name):
                    return src.replace("{}", m.group(1)) if m.groups() else src
        return name

    def match(self, name: str) -> tuple[str, int | None, bool] | None:
        """(module name pattern, layer number or None, transpose?) for a checkpoint name; None if not ours."""
        if self.prefix and name.startswith(self.prefix):
            name = name[len(self.prefix) :]
        for pat, dst, transpose in self.rules:
            m = pat.match(name)
            if m:
                return dst, (int(m.group(1)) if m.groups() else None), transpose
        return None

    def target(self, name: str) -> tuple[str, bool] | None:
        """(module name, transpose?) for a checkpoint name; None if it is not ours."""
        hit = self.match(name)
        if hit is None:
            return None
        dst, layer, transpose = hit
        return (dst if layer is None else dst.replace("{}", str(layer))), transpose

    def checkpoint_name(self, target: str) -> str:
        """The checkpoint's own name for a module name (the table read backwards), so errors name
        what the person can find in their file; the module name itself if no rule makes it."""
        for src, dst, _ in self.entries:
            m = _pattern(dst).match(target)
            if m:
                return self.saved_name(self.fused_name(src.replace("{}", m.group(1)) if m.groups() else src))
        return target

    def saved_name(self, name: str) -> str:
        """A table name as checkpoints store it: GPT-2's body sits under "transformer.", lm_head not."""
        return self.prefix + name if self.prefix and not name.startswith("lm_head") else name

    def is_ignored(self, name: str) -> bool:
        if self.prefix and name.startswith(self.prefix):
            name = name[len(self.prefix) :]
        return any(p.match(name) for p in self.ignored)


def checkpoint_files(folder: Path) -> list[Path]:
    """The weight files of a model folder, safetensors preferred, in loading order.

    Every file goes through `model_file`: a FIFO or device named model.safetensors, or a link out of
    the folder, is refused before it is opened.
    """
    single = model_file(folder, "model.safetensors")
    if single is not None:
        return [single]
    if model_file(folder, "model.safetensors.index.json") is not None:
        return _indexed_files(folder, "model.safetensors.index.json")
    others = [f for p in sorted(folder.glob("*.safetensors")) if (f := model_file(folder, p.name)) is not None]
    if others:
        return others
    pickled = model_file(folder, "pytorch_model.bin")
    if pickled is not None:
        return [pickled]
    if model_file(folder, "pytorch_model.bin.index.json") is not None:
        return _indexed_files(folder, "pytorch_model.bin.index.json")
    raise ModelLoadError(
        f"no weights in {folder}: expected model.safetensors or "
        "model.safetensors.index.json (save the model with transformers' save_pretrained)"
    )


def _indexed_files(folder: Path, name: str) -> list[Path]:
    weight_map = read_model_object(folder, name).get("weight_map")
    restore = "restore the file from the model's source"
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelLoadError(f"{folder / name}: weight_map must be an object of tensor name -> shard file; {restore}")
    if not weight_map:  # else "no layers": a checkpoint of nothing, not a wrong layer count
        raise ModelLoadError(f"{folder / name}: weight_map is empty, so the index names no tensors; {restore}")
    files = []
    for shard in dict.fromkeys(weight_map.values()):
        if not shard:  # "" is the folder itself to model_file
            raise ModelLoadError(f'{folder / name}: the index names an empty shard file name (""); {restore}')
        # "../x", "/etc/x", "sub/x": shards sit beside the index; "a\0b" is no file name at all
        # Named as the index writes it, escapes and all: quoted() alone would drop a NUL or a newline,
        # naming 'ab' for 'a\0b' or 'a\nb'.
        shown = quoted(json.dumps(shard, ensure_ascii=False))
        if Path(shard).name != shard or "\0" in shard:
            raise ModelLoadError(f"{folder / name}: shard {shown} is not a file name in the folder; {restore}")
        path = model_file(folder, shard)
        if path is None:
            raise ModelLoadError(f"shard {shown} listed in {name} is missing; download it into {folder}")
        files.append(path)
    return files


def iter_tensors(path: Path) -> Iterator[tuple[str, tuple[int, ...], Callable[[], torch.Tensor]]]:
    """Yield (name, shape, read) for each tensor of one file; read() returns the tensor on CPU."""
    # Opened here first: safetensors words a permission error as "No such file or directory", and
    # torch.load's as a file it cannot read safely.
    os.close(open_regular(path))
    if path.suffix == ".bin":
        sd = _load_pickled(path)
        for name, t in sd.items():
            yield name, tuple(t.shape), functools.partial(sd.__getitem__, name)
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            names = list(f.keys())
            for name in names:
                shape = tuple(f.get_slice(name).get_shape())
                yield name, shape, functools.partial(f.get_tensor, name)
    except SafetensorError as e:
        raise ModelLoadError(f"{path.name} is truncated or corrupt ({e}); download it again") from None
    except OSError as e:
        raise ModelLoadError(f"cannot read {path} ({e.strerror or e}); check the file and its permissions") from None


def _load_pickled(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a pytorch_model.bin, by name: torch.load(weights_only=True), which unpickles
    nothing but tensors and plain containers, then checked to be a flat dict of tensors."""
    import zipfile

    # mmap (each tensor read when used) needs torch's zip format, as transformers knows too. The
    # legacy format (_use_new_zipfile_serialization=False) is read into memory instead, as much as
    # the file holds: a storage size it claims but lacks fails the read.
    zipped = zipfile.is_zipfile(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as e:  # unpickling refused or file damaged
        raise ModelLoadError(
            f"cannot read {path.name} safely ({type(e).__name__}); convert the model to safetensors"
        ) from None
    fix = "not a dict of tensors; convert the model to safetensors"
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{path} holds {_a(sd)}, {fix}")
    for name, t in sd.items():
        # transformers reads such a file as is: a checkpoint nested as {"state_dict": {...}}, or
        # holding a training step beside the tensors, is not a model to it either.
        if not isinstance(name, str):
            raise ModelLoadError(f"{path} holds a dict with the key {quoted(name, 40)} ({_a(name)}), {fix}")
        if not isinstance(t, torch.Tensor):
            raise ModelLoadError(f"{path} holds a dict whose entry {quoted(name, 80)!r} is {_a(t)}, {fix}")
    return sd


def _a(value: object) -> str:
    """The type of a value read from a file, as messages name it: "a list", "an int"."""
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


class TensorSource(Protocol):
    """A checkpoint that is not a folder of files: a GGUF file (engine/gguf_model.GGUFModel). Its
    errors speak of its own metadata keys and tensor names, not of config.json and Hugging Face's."""

    def hf_tensors(self) -> Iterator[tuple[str, str, tuple[int, ...], Callable[[], torch.Tensor]]]: ...

    def file_tensor_name(self, hf_name: str) -> str: ...

    def metadata_key(self, hf_key: str) -> str: ...


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
    for file, name, shape, read in table.split(checkpoint_tensors(folder)):
        hit = table.match(name)
        if hit is None:
            continue  # not ours: load_weights names it
        if isinstance(folder, Path):
            dtype = _stored_dtype(folder / file, table.sub_model + name, read, headers)
            if not dtype.upper().startswith(("F", "BF")):  # F32, BF16, F8_E4M3; float32, bfloat16
                raise _not_float(name, file, dtype)
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


def _not_float(name: str, file: str, dtype: str) -> ModelLoadError:
    """A tensor the model uses as float weights stored as integers or booleans: loaded as such, its
    numbers would be the float bits read as integers, and the model would write garbage."""
    return ModelLoadError(
        f"tensor {quoted(name, 100)} in {file} is {dtype}, but the model uses it as a float weight "
        "(F32, F16 or BF16 expected); re-download or re-convert the checkpoint"
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
        if not t.is_floating_point():  # check_checkpoint saw the safetensors headers; this is for the rest
            raise _not_float(name, file, str(t.dtype).removeprefix("torch."))
        if transpose:
            t = t.t()
        t = t.to(device=device, dtype=dtype).contiguous()
        module_name, _, param_name = target.rpartition(".")
        module = model.get_submodule(module_name)
        if param_name in module._buffers:  # a QLinear's bias
            module._buffers[param_name] = t
        else:
            module._parameters[param_name] = nn.Parameter(t, requires_grad=False)
    _check_all_matched(folder, cfg, table, set(expected) - loaded, unexpected)
    if tied and isinstance(model.output, nn.Linear):  # a quantized embedding's head was tied by set_quantized
        model.output.weight = cast(nn.Embedding, model.tok_emb).weight  # (nn.Module attributes type as Tensor | Module)


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
