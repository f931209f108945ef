"""GGUF headers read with bounded reads, before anything trusts them (files come from strangers).

A GGUF file is: "GGUF", version, tensor count, metadata count; metadata (key, type, value)*;
tensor infos (name, dims with ne0 = the row length first, type, offset)*; padding; tensor data.
`check_header` walks all of it with struct reads over a memory map, checking every count, length,
type and offset against the file and against limits far beyond any real model: GGUFReader trusts
every count it reads (an array claiming 2^60 elements loops for ever, a lying offset becomes a numpy
error). `open_reader` then gives gguf.GGUFReader with its metadata arrays read in bulk; `peek` reads
a few header values. `tiankong models` runs check_header on every file too (no tensor data is
read), so it lists as skipped what loading refuses; the parameter count comes from the same walk.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelLoadError
from .files import open_regular

if TYPE_CHECKING:
    import gguf

# --- limits for untrusted headers (far beyond any real model) ------------------------------------
MAX_KV = 1 << 16  # metadata entries (real files: ~40)
MAX_TENSORS = 1 << 16  # tensors (real files: a few hundred to a few thousand)
MAX_KEY = 1 << 10  # bytes in a metadata key or tensor name (llama.cpp: 64 for names)
MAX_STRING = 1 << 22  # bytes in one metadata string (chat templates are ~10 KB)
# Elements in all metadata arrays together: each becomes a Python object in the reader (~200 bytes),
# so this bounds its memory (~400 MB). Real files: 0.8M at most (Gemma 3: 262k tokens, scores, types).
MAX_ARRAY_ELEMENTS = 1 << 21
MAX_DIMS = 4
MAX_ALIGNMENT = 1 << 16

# Tensors the loader reads into the config's rope_scaling (Llama 3's and Phi-3's RoPE divisors), not weights.
ROPE_DIVISORS = frozenset({"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"})

# GGUF metadata value types: type id -> struct format of one scalar (8 string, 9 array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

# Tensor types this loader dequantizes: ggml type id -> name (gguf.GGMLQuantizationType).
TENSOR_TYPES = {
    0: "F32", 1: "F16", 30: "BF16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 20: "IQ4_NL", 23: "IQ4_XS",
}  # fmt: skip


def is_gguf(path: str | Path) -> bool:
    """A regular file named *.gguf, or an Ollama blob (sha256-...) that starts with the GGUF magic.
    Never raises, and never opens anything but a regular file (a FIFO would block the open)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
    except OSError:  # missing, a broken link, or a folder that cannot be entered
        return False
    return path.suffix.lower() == ".gguf" or has_gguf_magic(path)


def has_gguf_magic(path: str | Path) -> bool:
    """Whether `path` is a regular file that starts with "GGUF" (False for anything unreadable)."""
    try:
        fd = open_regular(path)
    except ModelLoadError:
        return False
    try:
        return os.read(fd, 4) == b"GGUF"
    except OSError:
        return False
    finally:
        os.close(fd)


def _mapped(path: str | Path) -> mmap.mmap:
    """The whole file mapped read-only; only a regular file is opened (engine/files.open_regular)."""
    fd = open_regular(path)
    try:
        buf = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)  # the map keeps the file
    return buf


# --- the header, walked with bounded reads before anything trusts it ------------------------------


_AGAIN = "download it again"  # the fix for a damaged file


class _Bad(Exception):
    """A problem in the file's header; check_header turns it into one ModelLoadError line, ending
    with `fix` (for a damaged file: download it again)."""

    def __init__(self, problem: str, fix: str = _AGAIN) -> None:
        super().__init__(problem)
        self.fix = fix


class _Cursor:
    """Reads little-endian values from the mapped file, never past its end."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0
        self.elements = 0  # metadata array elements seen so far

    def take(self, fmt: str) -> Any:
        n = struct.calcsize("<" + fmt)
        if self.pos + n > len(self.buf):
            raise _Bad("the file ends inside its header (truncated)")
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return value

    def skip(self, n: int, what: str) -> int:
        if self.pos + n > len(self.buf):
            raise _Bad(f"{what} runs past the end of the file (truncated or lying about its size)")
        start, self.pos = self.pos, self.pos + n
        return start

    def string(self, limit: int, what: str) -> bytes:
        n = self.take("Q")
        if n > limit:
            raise _Bad(f"{what} is {n:,} bytes long (at most {limit:,} allowed)")
        start = self.skip(n, what)
        return bytes(self.buf[start : start + n])


def check_header(path: Path, again: str = _AGAIN) -> int:
    """Walk the header of `path` with bounded reads; ModelLoadError (one line) if anything is off.
    Gives the elements of its weights (the tensors' dims, RoPE divisors left out: what `tiankong
    info` and `tiankong models` count).

    Checked: magic, version (2 or 3), counts, every metadata string and array length, value types,
    alignment, and for every tensor its name, dims, type, and that its data lies inside the file
    and overlaps no other tensor's. Cost: one pass over the header (the mapped pages only); memory
    stays at a few MB. `again`: the fix for a damaged file where a re-download is not how one gets
    it again (an Ollama blob: `ollama pull NAME`).
    """
    return weight_elements(tensor_infos(path, again))


def weight_elements(infos: list[tuple[str, list[int], int]]) -> int:
    """The elements of the weights among tensor_infos' tensors (RoPE divisors left out)."""
    return sum(math.prod(dims) for name, dims, _ in infos if name not in ROPE_DIVISORS)


def tensor_infos(path: Path, again: str = _AGAIN) -> list[tuple[str, list[int], int]]:
    """(name, dims ne0 first, ggml type number) of every tensor, from the header check_header walks
    (load_note: which matrices a load widens, nothing read); ModelLoadError as check_header's."""
    return [(name, dims, kind) for name, dims, kind, _ in _checked_infos(path, again)]


FFN_DOWN = "blk.0.ffn_down.weight"  # the matrix whose input size is the feed-forward size


def feed_forward_size(path: Path, arch: object, said: object, down: list[int] | None) -> int | None:
    """The feed-forward size tensor blk.0.ffn_down.weight gives (`down`: its dims, ne0 first; ne0 is
    its input), None without such a matrix (the shape checks name what is missing or wrong).
    ModelLoadError (one line) when the file's {arch}.feed_forward_length (`said`) disagrees: llama.cpp
    builds the tensor's shape from the key and refuses such a file. GPT-2 is exempt: its converter
    writes 4 * n_embd whatever n_inner is, so there the tensor decides. The one rule GGUFModel and
    `tiankong models` (which lists such a file as skipped, with this line) both ask."""
    if down is None or len(down) != 2:
        return None
    size = int(down[0])
    if arch != "gpt2" and isinstance(said, int) and not isinstance(said, bool) and said != size:
        raise ModelLoadError(
            f"{path}: metadata {arch}.feed_forward_length is {said}, but tensor {FFN_DOWN} has shape "
            f"{[int(d) for d in reversed(down)]} (a feed-forward size of {size}); the file is damaged or was "
            "converted wrongly: convert it again or use another file"
        )
    return size


def _checked_infos(path: Path, again: str) -> list[tuple[str, list[int], int, int]]:
    """check_header's walk: the tensor infos (name, dims, type, offset), or its one-line error."""
    try:
        with _mapped(path) as buf:
            if len(buf) < 24:
                raise _Bad(f"it is {len(buf)} bytes, too short for a GGUF header")
            return _walk(_Cursor(buf), len(buf))
    except _Bad as e:
        fix = again if e.fix == _AGAIN else e.fix
        raise ModelLoadError(f"{path} is not a usable GGUF file: {e}; {fix}") from None
    except ModelLoadError:  # not a regular file, or unreadable (open_regular's one line)
        raise
    except ValueError:  # mmap of an empty file
        raise ModelLoadError(
            f"{path} is not a usable GGUF file: it is 0 bytes, too short for a GGUF header; {again}"
        ) from None
    except OSError as e:
        raise ModelLoadError(f"cannot read {path} ({e.strerror or e}); check the file and its permissions") from None


def _walk(cur: _Cursor, size: int) -> list[tuple[str, list[int], int, int]]:
    if cur.take("4s") != b"GGUF":
        raise _Bad(
            "it does not start with the GGUF magic, so it is not a GGUF file",
            "pass a .gguf file (llama.cpp, Ollama, LM Studio)",
        )
    version = cur.take("I")
    if version not in (2, 3):
        raise _Bad(
            f"GGUF version {version} (tiankong reads versions 2 and 3, little-endian)",
            "use a little-endian GGUF file of version 2 or 3 (llama.cpp's converters write one)",
        )
    n_tensors, n_kv = cur.take("Q"), cur.take("Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise _Bad(f"it claims {n_tensors:,} tensors and {n_kv:,} metadata entries")
    alignment, cur.elements = 32, 0
    keys: set[str] = set()
    for _ in range(n_kv):
        raw = cur.string(MAX_KEY, "a metadata key")
        try:  # the gguf reader decodes keys strictly, and keeps one value per key
            key = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"metadata key {raw[:60]!r} is not UTF-8 text") from None
        if key in keys:
            raise _Bad(f"metadata key {key[:60]!r} appears twice")
        keys.add(key)
        kind = cur.take("I")
        if key == "general.alignment":
            if kind != 4:
                raise _Bad("general.alignment is not a uint32")
            alignment = cur.take("I")
            if not 0 < alignment <= MAX_ALIGNMENT or alignment & (alignment - 1):
                raise _Bad(f"general.alignment is {alignment}, not a power of two up to {MAX_ALIGNMENT}")
            continue
        _skip_value(cur, kind, key)
    infos = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = cur.string(MAX_KEY, "a tensor name").decode("utf-8", "replace")
        if not name:  # what follows the last tensor info is padding (zeros): read as an empty name
            raise _Bad(
                f"it claims {n_tensors:,} tensors but tensor {i + 1} has no name "
                "(its tensor count and its tensor table disagree)"
            )
        if name in names:
            raise _Bad(f"tensor {name} appears twice")
        names.add(name)
        n_dims = cur.take("I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _Bad(f"tensor {name} has {n_dims} dimensions")
        dims = [cur.take("Q") for _ in range(n_dims)]
        kind, offset = cur.take("I"), cur.take("Q")
        infos.append((name, dims, kind, offset))
    data_start = -(-cur.pos // alignment) * alignment
    spans = []  # (offset, bytes, name) of each tensor's data
    for name, dims, kind, offset in infos:
        spans.append((offset, _check_tensor(name, dims, kind, offset, alignment, size - data_start), name))
    _check_disjoint(spans)
    return infos


def _check_disjoint(spans: list[tuple[int, int, str]]) -> None:
    """No tensor's data (offset, bytes) overlaps another's: lying offsets (every tensor at 0) would
    read one tensor's bytes as all of them, a model of garbage (llama.cpp refuses them too)."""
    spans.sort()
    for (start, n_bytes, name), (later, _, other) in zip(spans, spans[1:], strict=False):
        if later < start + n_bytes:
            raise _Bad(
                f"tensor {other} starts at offset {later:,}, inside tensor {name} "
                f"(offsets {start:,} to {start + n_bytes:,}): their data overlap (lying offsets)"
            )


def _skip_value(cur: _Cursor, kind: int, key: str) -> None:
    if kind in _SCALARS:
        cur.skip(struct.calcsize(_SCALARS[kind]), key)
    elif kind == _STRING:
        cur.skip(_bounded(cur.take("Q"), MAX_STRING, f"metadata string {key}"), key)
    elif kind == _ARRAY:
        item, count = cur.take("I"), cur.take("Q")
        cur.elements += count
        if cur.elements > MAX_ARRAY_ELEMENTS:  # the arrays together, this one last
            before = f", {cur.elements:,} with the arrays before it" if cur.elements > count else ""
            raise _Bad(
                f"metadata array {key} holds {count:,} elements{before} "
                f"(at most {MAX_ARRAY_ELEMENTS:,} allowed in all arrays)"
            )
        if item in _SCALARS:
            cur.skip(count * struct.calcsize(_SCALARS[item]), key)
        elif item == _STRING:  # the tokenizer's vocabulary: up to ~256k strings, so a tight loop
            _skip_strings(cur, count, key)
        elif item == _ARRAY:  # nested arrays: no model metadata uses them
            raise _Bad(f"metadata array {key} holds arrays (nested arrays, which no model's metadata has)")
        else:
            raise _Bad(f"metadata array {key} holds values of unknown type {item}")
    else:
        raise _Bad(f"metadata {key} has unknown value type {kind}")


_LENGTH = struct.Struct("<Q")


def _skip_strings(cur: _Cursor, count: int, key: str) -> None:
    """Skip `count` strings (uint64 length, bytes), as cur.skip(_bounded(cur.take("Q"), ...)) would, at
    a fraction of the cost per string."""
    buf, pos, end, unpack = cur.buf, cur.pos, len(cur.buf), _LENGTH.unpack_from
    for _ in range(count):
        if pos + 8 > end:
            raise _Bad("the file ends inside its header (truncated)")
        (n,) = unpack(buf, pos)
        if n > MAX_STRING:
            _bounded(n, MAX_STRING, f"a string in {key}")
        pos += 8 + n
        if pos > end:
            raise _Bad(f"{key} runs past the end of the file (truncated or lying about its size)")
    cur.pos = pos


def _counts(cur: _Cursor) -> tuple[int, int] | None:
    """(tensors, metadata keys) after the magic and a version this reader knows, else None."""
    if cur.take("4s") != b"GGUF" or cur.take("I") not in (2, 3):
        return None
    return cur.take("Q"), cur.take("Q")


def peek(path: Path, keys: tuple[str, ...] = ("general.architecture", "general.file_type")) -> dict[str, Any]:
    """Scalar metadata values `keys` from the header, read bounded and stopping once all are found
    (for `tiankong models`: milliseconds a file). A damaged header gives what was found before it."""
    found: dict[str, Any] = {}
    try:
        with _mapped(path) as buf:
            cur = _Cursor(buf)
            if (counts := _counts(cur)) is None:
                return found
            for _ in range(min(counts[1], MAX_KV)):
                key = cur.string(MAX_KEY, "a metadata key").decode("utf-8", "replace")
                kind = cur.take("I")
                if key in keys and kind in _SCALARS:
                    found[key] = cur.take(_SCALARS[kind])
                elif key in keys and kind == _STRING:
                    found[key] = cur.string(MAX_KEY, key).decode("utf-8", "replace")
                else:
                    _skip_value(cur, kind, key)
                if len(found) == len(keys):
                    break
    except (_Bad, ModelLoadError, OSError, ValueError):  # not a regular file, unreadable, empty, damaged
        pass
    return found


def parameter_count(path: Path) -> int | None:
    """The elements of the weights from the header's tensor infos (what `tiankong info` counts);
    None for a header check_header refuses."""
    try:
        return check_header(path)
    except ModelLoadError:
        return None


def quantization_name(file_type: Any) -> str | None:
    """general.file_type (llama.cpp's LlamaFileType) as people write it: Q4_K_M, Q8_0, F16."""
    import gguf

    member = gguf.LlamaFileType._value2member_map_.get(file_type) if isinstance(file_type, int) else None
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_") if member is not None else None


def _bounded(n: int, limit: int, what: str) -> int:
    if n > limit:
        raise _Bad(f"{what} is too large ({n:,}; at most {limit:,} allowed)")
    return n


def _check_tensor(name: str, dims: list[int], kind: int, offset: int, alignment: int, data_size: int) -> int:
    """Checks one tensor info; gives the bytes of its data."""
    import gguf

    if kind not in TENSOR_TYPES:
        known = gguf.GGMLQuantizationType._value2member_map_.get(kind)
        if known is None:
            raise _Bad(f"tensor {name} has unknown type {kind}")
        raise _Bad(  # a real quantization tiankong lacks: another file of the model works, not this one again
            f"tensor {name} has type {known.name}, which tiankong cannot read yet "
            f"(it reads {', '.join(TENSOR_TYPES.values())})",
            "use a file of the model in another quantization, e.g. Q4_K_M or Q8_0",
        )
    block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
    if min(dims) < 1 or dims[0] % block:
        multiple = f", the first a multiple of {block} ({TENSOR_TYPES[kind]}'s block)" if block > 1 else ""
        raise _Bad(f"tensor {name} has dims {dims} (each at least 1{multiple})")
    n_bytes = int(np.prod(dims, dtype=object)) // block * block_bytes  # exact: Python ints
    if offset % alignment:
        raise _Bad(f"tensor {name} starts at offset {offset:,}, not a multiple of the alignment {alignment}")
    if offset + n_bytes > data_size:
        raise _Bad(
            f"tensor {name} ({TENSOR_TYPES[kind]}, dims {dims}) claims {n_bytes:,} bytes at offset {offset:,}, "
            f"outside the file's {max(data_size, 0):,} bytes of data"
        )
    return n_bytes


# --- the file -------------------------------------------------------------------------------------


def open_reader(path: Path) -> gguf.GGUFReader:
    """gguf.GGUFReader with its metadata arrays read in bulk.

    GGUFReader makes two numpy views per array element (a vocabulary of 150k tokens and merges: 30 s
    and 480 MB on a busy 2-core box). Its `_get_field_parts` is overridden for arrays only, and gives
    each element as a memoryview (nbytes, tobytes(), [0], tolist(), as the numpy views have), 10x
    faster. The header was walked by check_header first, so every length read here is in bounds.
    A gguf release without that private method gets the plain reader (slower, same fields).

    The file is mapped copy-on-write ("c"): its tensors can then be handed out as torch tensors
    without a copy (GGUFModel, keep_quantized), which a read-only mapping would crash on being
    written (torch has no read-only tensors); a write changes only this process's copy of a page.
    """
    import gguf
    from gguf import GGUFValueType as V

    if not callable(getattr(gguf.GGUFReader, "_get_field_parts", None)):
        return gguf.GGUFReader(path, "c")

    class Reader(gguf.GGUFReader):
        def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list, list[int], list]:
            if raw_type != V.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            itype, alen = self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64)
            item, count, offs = V(int(itype[0])), int(alen[0]), orig_offs + 12
            parts: list[Any] = [itype, alen]
            buf = memoryview(self.data)  # type: ignore[arg-type]  # numpy's stubs: a memmap is a buffer
            if item == V.STRING:  # each element: its length (uint64), then its bytes
                # The length parts, which no reader of a metadata field looks at (data indexes the
                # bytes; KV fields are not summed), share one object: half the memory.
                unpack, data, length = struct.Struct("<Q").unpack_from, [], alen
                for _ in range(count):
                    (n,) = unpack(buf, offs)
                    parts += (length, buf[offs + 8 : offs + 8 + n])
                    data.append(len(parts) - 1)
                    offs += 8 + n
            else:
                fmt = _SCALARS[int(item)]
                values = buf[offs : offs + count * struct.calcsize(fmt)].cast(fmt)  # type: ignore[call-overload]  # typeshed wants a literal format
                parts += [values[i : i + 1] for i in range(count)]
                data = list(range(2, 2 + count))
                offs += values.nbytes
            return offs - orig_offs, parts, data, [V.ARRAY, item]

    return Reader(path, "c")
