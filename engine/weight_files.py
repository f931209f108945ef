"""A model folder's weight files: which files, in which order, and their tensors read one at a time.

Nothing in a model folder is executed: safetensors is plain data, and pickled `.bin` weights are
read only with `torch.load(weights_only=True)`, which refuses anything but tensors.

Apart from engine/weights.py, which turns these (name, shape, read) streams into parameters, so that
everything that opens a file of a folder, and every refusal of one, is in one place.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import torch

from .errors import ModelLoadError, quoted
from .files import broken_link_fix, model_file, open_regular, read_model_object


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

    from .model_list import safetensors_damage

    # Checked first from the header and the file's size: safetensors' own words for a file cut short
    # ("incomplete metadata, file not fully covered") say neither which file nor what to do.
    if (damage := safetensors_damage(path)) is not None:
        raise ModelLoadError(damage)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            names = list(f.keys())
            for name in names:
                shape = tuple(f.get_slice(name).get_shape())
                yield name, shape, functools.partial(f.get_tensor, name)
    except SafetensorError:
        fix = broken_link_fix(path, "download it again")
        raise ModelLoadError(f"{path} is truncated or corrupt (safetensors cannot read its tensors); {fix}") from None
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
