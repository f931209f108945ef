"""Split GGUF sets: one model in several files, as llama.cpp's llama-gguf-split and its converter's
--split-max-tensors / --split-max-size write them (what big quantizations on the Hugging Face hub
usually are).

The parts are named PREFIX-00001-of-0000N.gguf ... PREFIX-0000N-of-0000N.gguf, and each is a GGUF
file with split.no (0 for the first), split.count (N) and split.tensors.count (the whole set's
tensors) in its metadata. The first part holds all of the model's metadata (and maybe tensors);
the later ones hold the split keys and their share of the tensors. llama.cpp loads a set from its
first part: it makes the other parts' names from the first's, and checks each part's split.no,
that no tensor name comes twice and that the set holds split.tensors.count tensors (llama-model-
loader.cpp). `open_parts` does the same, each part checked (gguf_header.check_header) and mapped
on its own, with one line naming the part and the fix for each way a set can be wrong.
`first_parts` keeps a folder's listing to one file a set and `part_paths` gives a set's files,
both from the names alone (nothing opened: listing stays fast).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError

if TYPE_CHECKING:
    import gguf

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"  # gguf.Keys.Split
# llama.cpp's llama_split_path: "%s-%05d-of-%05d.gguf" % (prefix, part number from 1, count)
_NAME = re.compile(r"(?P<prefix>.+)-(?P<no>\d{5,})-of-(?P<count>\d{5,})\.gguf")
MAX_PARTS = 0xFFFF  # split.count is a uint16 (llama.cpp reads it as one)


def split_name(path: Path) -> tuple[str, int, int] | None:
    """(prefix, part number from 1, part count) of a file named as a part of a split set, else None."""
    hit = _NAME.fullmatch(path.name)
    if hit is None or not 1 <= int(hit["no"]) <= int(hit["count"]) <= MAX_PARTS:
        return None
    return hit["prefix"], int(hit["no"]), int(hit["count"])


def _part(path: Path, prefix: str, no: int, count: int) -> Path:
    return path.with_name(f"{prefix}-{no:05d}-of-{count:05d}.gguf")


def part_paths(path: Path) -> list[Path]:
    """The files of the split set whose first part `path` is, by name (present or not); [path] for
    any other file (a single GGUF, or a later part)."""
    named = split_name(path)
    if named is None or named[1] != 1 or named[2] < 2:
        return [path]
    prefix, _, count = named
    return [_part(path, prefix, no, count) for no in range(1, count + 1)]


def first_parts(files: list[Path]) -> list[Path]:
    """`files` with each later part of a split set left out where its first part is among them: a set
    is one model, named by its first part (as llama.cpp takes it). Order kept."""
    have = set(files)
    out = []
    for f in files:
        named = split_name(f)
        if named is not None and named[1] > 1 and _part(f, named[0], 1, named[2]) in have:
            continue
        out.append(f)
    return out


def _value(reader: gguf.GGUFReader, key: str, path: Path) -> Any:
    """An integer split.* value, None when the key is absent; one line if it is no integer."""
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        value = field.contents()
    except (UnicodeDecodeError, IndexError, ValueError):
        value = None
    if type(value) is not int:
        raise ModelLoadError(f"{path}: metadata {key} is not an integer; the file is damaged, download it again")
    return value


def open_parts(first: Path, reader: gguf.GGUFReader) -> list[tuple[Path, gguf.GGUFReader]]:
    """(path, reader) of every part of the split set that `first` (read by `reader`) begins, in order,
    each checked and mapped on its own; [(first, reader)] for a file that is no split set (no
    split.count, or 1). ModelLoadError, one line naming the part and the fix, for a later part given
    instead of the first, a first part whose name gives no other parts, a missing part, a part of
    another set (its split.no, split.count or split.tensors.count disagree), a tensor in two parts,
    or a tensor count that is not split.tensors.count. Cost: the parts' headers, read once."""
    from .gguf_header import MAX_TENSORS  # numpy: not for the listing's imports

    count = _value(reader, SPLIT_COUNT, first)
    if count is None or count <= 1:
        return [(first, reader)]
    paths = _set_paths(first, reader, count)
    total = _value(reader, SPLIT_TENSORS, first)
    if total is None or not 1 <= total <= MAX_TENSORS or count > total + 1:
        raise ModelLoadError(
            f"{first}: {SPLIT_TENSORS} is {total} for a set of {count} parts; the file is damaged, download it again"
        )
    return _open_later_parts(first, reader, paths, total)


def _set_paths(first: Path, reader: gguf.GGUFReader, count: int) -> list[Path]:
    """The paths of the `count` parts of the set `first` begins, each there: from its name
    (NAME-00001-of-0000N.gguf), after checking that it is the first part."""
    no = _value(reader, SPLIT_NO, first)
    named = split_name(first)
    if no is None:
        raise ModelLoadError(
            f"{first} says it is one of {count} parts of a split GGUF but has no {SPLIT_NO}; "
            "the file is damaged, download it again"
        )
    if no != 0:
        given = str(_part(first, named[0], 1, named[2])) if named is not None else "the file named NAME-00001-of-..."
        raise ModelLoadError(
            f"{first} is part {no + 1} of {count} of a split GGUF; pass its first part, {given} "
            "(the set loads from it, as in llama.cpp)"
        )
    if count > MAX_PARTS:  # split_name takes no more, so this name cannot match: said before it is built
        raise ModelLoadError(f"{first}: {SPLIT_COUNT} is {count:,}; the file is damaged, download it again")
    if named is None or named[1:] != (1, count):
        raise ModelLoadError(
            f"{first} is the first of {count} parts of a split GGUF ({SPLIT_COUNT}), but its name does not end "
            f"in -00001-of-{count:05d}.gguf, so its other parts cannot be found; give the parts the names "
            f"llama-gguf-split gave them (NAME-00001-of-{count:05d}.gguf, NAME-00002-of-{count:05d}.gguf, ...)"
        )
    paths = [_part(first, named[0], k, count) for k in range(1, count + 1)]
    check_parts_there(first, paths)
    return paths


def check_parts_there(first: Path, paths: list[Path]) -> None:
    """ModelLoadError naming the first missing part of the set `first` begins (its `paths`, by name),
    as loading and `tiankong models` both say it; nothing when every part is there."""
    missing = [p for p in paths[1:] if not os.path.exists(p)]  # a broken link (a cache's missing blob) too
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(
            f"{first} is the first of {len(paths)} parts of a split GGUF, and part {paths.index(missing[0]) + 1}, "
            f"{missing[0]}, is missing{more}; download every part of the set into {first.parent}"
        )


def _open_later_parts(
    first: Path, reader: gguf.GGUFReader, paths: list[Path], total: int
) -> list[tuple[Path, gguf.GGUFReader]]:
    """Every part mapped, in order, each checked to belong to the set (split keys, no tensor twice, the
    tensor total)."""
    from .gguf_header import check_header, open_reader

    count = len(paths)
    parts, seen = [(first, reader)], {t.name: first for t in reader.tensors}
    for k, path in enumerate(paths[1:], start=2):
        check_header(path)  # one line of its own for a damaged or hostile part
        try:
            part = open_reader(path)
        except Exception as e:  # the header was walked already: anything left is a damaged file
            problem = f"{type(e).__name__}: {e}"[:200]
            raise ModelLoadError(
                f"{path} is not a usable GGUF file ({problem}); download it again or use another file"
            ) from None
        says = tuple(_value(part, key, path) for key in (SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS))
        if says != (k - 1, count, total):
            no, of, tensors = says
            found = (
                "is no part of a split set (no split keys)"
                if None in says
                else f"says it is part {no + 1} of {of} with {tensors} tensors in all"  # split.no counts from 0
            )
            raise ModelLoadError(
                f"{path} {found}, but part {k} of the split GGUF {first} begins is part {k} of {count} with "
                f"{total} tensors; parts of different sets are mixed: download the set's parts again"
            )
        for t in part.tensors:
            if t.name in seen:
                raise ModelLoadError(
                    f"{path}: tensor {t.name} is in {seen[t.name].name} too; parts of different sets are mixed "
                    "(or a part is damaged): download the set's parts again"
                )
            seen[t.name] = path
        if len(seen) > total:  # checked part by part: a lying set stops here, not after all its parts
            break
        parts.append((path, part))
    if len(seen) != total:
        raise ModelLoadError(
            f"{first}: its split GGUF holds {len(seen)}{'+' if len(parts) < count else ''} tensors in its parts, "
            f"but {SPLIT_TENSORS} says {total}; parts of different sets are mixed (or a part is damaged): "
            "download the set's parts again"
        )
    return parts
