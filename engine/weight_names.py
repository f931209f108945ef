"""An architecture's WEIGHT_MAP compiled: checkpoint tensor names <-> the model's module names.

Each family (engine/llama.py, gpt2.py, gemma.py) and each GGUF architecture (engine/gguf_arch.py)
states its names as one literal table with "{}" for the layer number; NameTable matches names
against it both ways, so loading, saving and error messages (which name what the person's file
holds) all read the same table. Apart from engine/weights.py because it is name handling only
(and the stacking of fused parts), which the GGUF reader uses too without the loading around it.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Iterator

import torch

from .errors import ModelLoadError


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

    def split(
        self,
        tensors: Iterator[tuple[str, str, tuple[int, ...], Callable]],
        file_name: Callable[[str], str] | None = None,
    ) -> Iterator:
        """The (file, name, shape, read) stream of a checkpoint with every fused tensor replaced by
        its parts, each read as a view of the fused tensor's rows (read once for all of them), and
        only the sub-model's tensors, renamed as if it were alone. file_name: a GGUF file's name for
        a tensor's Hugging Face name (GGUFModel.file_tensor_name), so that a fused tensor of the
        wrong size is named as the file names it, against its metadata, not config.json."""
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
                rows = sum(rows for _, rows in parts)
                if file_name is not None:
                    raise ModelLoadError(
                        f"tensor {file_name(name)} in {file} has shape {list(shape)}, but the file's metadata "
                        f"implies {rows} rows; the file is damaged or was converted wrongly: use another file"
                    )
                raise ModelLoadError(
                    f"tensor {name} in {file} has shape {list(shape)}, but config.json implies "
                    f"{rows} rows; the weights do not match the config"
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
