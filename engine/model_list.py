"""Every model the places `resolve_model` searches hold: `list_models` is what `tiankong models`
shows, and every name it lists resolves.

Apart from engine/resolve.py, which needs one model and stops there: listing walks every store
whole and describes each model it finds (architecture, dtype or quantization, size) from its
config.json, its GGUF header or Ollama's config blob, noting each place it cannot read; a GGUF file
(or Ollama blob) loading would refuse from its header alone is noted too, with loading's line, and
so is a safetensors file whose header does not match its size (safetensors_damage: cut short). The
parameter count comes from the tensor shapes in the weight files' headers (safetensors' JSON header,
GGUF's tensor infos), never from the weights themselves: listing stays fast whatever their size.
"""

from __future__ import annotations

import math
import os
import re
import stat
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .errors import ModelLoadError, TiankongError
from .files import (
    broken_link_fix,
    download_fix,
    model_file,
    open_regular,
    parse_json,
    read_model_object,
    unfinished_download,
)
from .gguf_split import check_parts_there, part_paths
from .model_places import (
    _Denied,
    _gguf_files,
    _gguf_in,
    _is_file,
    _read_ref,
    _refs,
    _scan,
    _scan_or_note,
    _starts_gguf,
    _stat,
    bundled_dir,
    hf_hub_cache,
    lmstudio_dirs,
    missing_set_folders,
    ollama_dir,
)
from .ollama import _manifest, _model_digest, _ollama_config, _ollama_config_digest, _ollama_digest_path, _ollama_name
from .repo_lookup import missing_snapshot, no_revisions

_QUANT = re.compile(r"(?i)(?:^|[-._])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?=[-._]|$)")  # in GGUF file names
# Tensors some checkpoints hold that are no parameters (RoPE frequencies, GPT-2's attention masks):
# the loader skips them (the families' IGNORED), so `tiankong info` does not count them either.
_BUFFERS = re.compile(r"(?:^|\.)(?:rotary_emb\.inv_freq|attn\.bias|attn\.masked_bias)$")
MAX_SAFETENSORS_HEADER = 100 << 20  # safetensors' own limit on its JSON header


@dataclass(frozen=True)
class FoundModel:
    name: str  # what --model takes
    source: str  # bundled, huggingface, lmstudio or ollama
    path: str  # the folder (or GGUF file)
    format: str  # safetensors, pytorch or gguf
    architecture: str | None  # config.json's architectures[0] (Ollama: its model family)
    dtype: str | None  # config.json's torch_dtype; a GGUF file's quantization
    parameters: int | None  # from the tensor shapes in the weight files' headers; None if unreadable
    bytes: int  # weight files, summed
    note: str | None = None  # why `name` is not the plain one: another place holds that name first
    parts: int = 1  # files of a split GGUF set (NAME-00001-of-0000N.gguf, ...), listed as its first part

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def list_models(skipped: list[str] | None = None, places: list[str] | None = None) -> list[FoundModel]:
    """Every model the places `resolve_model` searches hold: the bundled model first.

    A place that cannot be read (a folder without permission, a damaged manifest, a FIFO named
    *.gguf) is left out and, when `skipped` is given, appended to it as one line saying why. A line
    about a place itself, not about something in it (a folder an environment variable or LM Studio's
    settings name that does not exist, a settings file that cannot be used), goes to `places`, or
    with `places` None to `skipped` too.
    """
    notes: list[str] = [] if skipped is None else skipped
    about: list[str] = notes if places is None else places
    about += missing_set_folders()
    found: list[FoundModel] = []
    bundled = bundled_dir()
    if os.path.isfile(bundled / "config.json"):
        found.append(_describe("tiankong-mini", "bundled", bundled))
    found += _hf_entries(hf_hub_cache(), notes)
    for root in lmstudio_dirs(about):  # a settings file of LM Studio's that cannot be used: noted
        for org in _lmstudio_orgs(root, notes):
            for folder in _scan_or_note(org, notes) if os.path.isdir(org) else ():
                if os.path.isdir(folder):
                    found += _noting(notes, _lmstudio_entries, f"{org.name}/{folder.name}", folder, notes)
    found += _ollama_entries(ollama_dir(), notes)
    return [_reachable(m) for m in found]


def _lmstudio_orgs(root: Path, notes: list[str]) -> list[Path]:
    """The ORG folders of LM Studio's models folder `root`; one that cannot be read is noted (saying
    where it was named, when LM Studio's settings named it) and counts as empty."""
    try:
        return _scan(root)
    except _Denied as e:
        notes.append(str(e.named_by(root)))
    except ModelLoadError as e:
        notes.append(str(e))
    return []


def _reachable(found: FoundModel) -> FoundModel:
    """An LM Studio model under a name that reaches it: its ORG/NAME, unless the Hugging Face cache
    (or a folder here) takes that name first; then lmstudio:ORG/NAME, else its path, with a note."""
    from .repo_lookup import LMSTUDIO
    from .resolve import reaches, taken_by

    if found.source != "lmstudio":
        return found
    taken = taken_by(found.name)
    if taken == Path(found.path):
        return found
    other = f"{LMSTUDIO}{found.name}"
    name = other if reaches(other, found.path) else found.path
    # Refused: the Hugging Face cache's snapshot of that name holds several .gguf files, say.
    first = "takes another model first" if taken is not None else "is refused (another place holds that name first)"
    return replace(found, name=name, note=f"--model {found.name} {first}; {name} takes this one")


def _noting(notes: list[str], make: Callable[..., list[FoundModel]], *args: Any) -> list[FoundModel]:
    """make(*args), or [] with the error's line noted: one unreadable model leaves the others listed."""
    try:
        return make(*args)
    except ModelLoadError as e:
        notes.append(str(e))
        return []


def _hf_entries(cache: Path, notes: list[str]) -> list[FoundModel]:
    found: list[FoundModel] = []
    for folder in _scan_or_note(cache, notes):
        if folder.name.startswith("models--") and os.path.isdir(folder):
            repo = folder.name.removeprefix("models--").replace("--", "/", 1)
            found += _noting(notes, _hf_repo_entries, repo, folder, notes)
    return found


def _hf_repo_entries(repo: str, folder: Path, notes: list[str]) -> list[FoundModel]:
    """A cached repo's revisions under the names that resolve them: ORG/NAME for main (or for the one
    snapshot of a repo downloaded by hash, without refs), ORG/NAME@REV for the others."""
    snapshots = [p.name for p in _scan(folder / "snapshots") if os.path.isdir(p)]
    refs = dict(_refs(folder))
    if "main" not in refs and _stat(folder / "refs" / "main") is not None:
        try:  # a refs/main that holds no commit hash: --model ORG/NAME refuses it, with this line
            _read_ref(folder / "refs" / "main")
        except ModelLoadError as e:
            notes.append(str(e))
            if not refs:  # not the one snapshot taken as main below: the other refs still listed
                return []
    if not refs and not snapshots:  # `--model ORG/NAME` refuses it with this line
        raise no_revisions(repo, folder)
    if not refs:
        refs = {"main": snapshots[0]} if len(snapshots) == 1 else {s[:10]: s for s in snapshots}
    # A download that did not finish leaves its blob as blobs/<hash>.incomplete and no link to it.
    partial, fix = unfinished_download(folder), download_fix(folder, repo)
    out: list[FoundModel] = []
    for rev, sha in refs.items():
        name, snapshot = (repo if rev == "main" else f"{repo}@{rev}"), folder / "snapshots" / sha
        if not os.path.isdir(snapshot):  # a ref to a missing snapshot: skipped with resolving's line
            notes.append(str(missing_snapshot(name, repo, snapshot)))
            continue
        if _is_file(snapshot / "config.json"):
            out += _noting(notes, _folder_entry, name, "huggingface", snapshot, fix)
            # A .gguf file beside the folder's weights (a repo of both): ORG/NAME[@REV]/FILE.gguf takes it.
            out += _gguf_entries(name, "huggingface", snapshot, notes, by_file=True)
        else:
            ggufs = _gguf_entries(name, "huggingface", snapshot, notes)
            if not ggufs and partial and rev == "main":
                notes.append(f"{repo} ({snapshot}) holds no config.json and no .gguf file; {fix}")
            out += ggufs
    return out


def _folder_entry(name: str, source: str, folder: Path, fix: str) -> list[FoundModel]:
    """A model folder's entry; ModelLoadError (a skipped line) when its weight files are not there
    to read: none (a download of some files only, or one that did not finish), a link to a deleted
    blob, a link the folder rules refuse (engine/files.model_file). Listed, such a model showed as
    0 bytes and loading it failed."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ModelLoadError(f"{name} ({folder}) holds no weights (*.safetensors, pytorch_model*.bin); {fix}")
    for file in files:
        if os.path.islink(file) and not os.path.exists(file):  # a blob deleted from under its snapshot
            raise ModelLoadError(f"{name}: {file} is a broken link (to {os.readlink(file)}, which is gone); {fix}")
        try:
            model_file(folder, file.name)
        except ModelLoadError as e:
            raise ModelLoadError(f"{name}: {e}") from None
    if files[0].suffix == ".safetensors" and (damage := _damaged(folder)) is not None:
        raise ModelLoadError(f"{name}: {damage}")  # listed, it loaded no better than a truncated GGUF file
    return [_describe(name, source, folder)]


def _damaged(folder: Path) -> str | None:
    """safetensors_damage's line for the first safetensors file loading reads that is cut short or
    damaged; None when all are whole (or the index cannot say which: loading then says why)."""
    try:
        loaded = _loaded_safetensors(folder) or []
    except TiankongError:
        return None
    return next((d for f in loaded if f is not None and (d := safetensors_damage(f)) is not None), None)


def _size(path: Path) -> int:
    """A regular file's size (the cache's links to blobs followed); 0 for anything else, so that a
    folder named model.safetensors is not "4.1 KB" of weights."""
    try:
        st = path.stat()
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _describe(name: str, source: str, folder: Path) -> FoundModel:
    try:
        config = read_model_object(folder, "config.json")
    except TiankongError:
        config = {}
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    dtype = config.get("torch_dtype") or config.get("dtype")
    dtype = dtype if isinstance(dtype, str) else None
    safetensors = bool(list(folder.glob("*.safetensors")))
    params = _safetensors_parameters(folder) if safetensors else None  # a pickle's shapes need unpickling it
    fmt = "safetensors" if safetensors else "pytorch"
    return FoundModel(name, source, str(folder), fmt, arch, dtype, params, weight_bytes(folder))


def weight_bytes(model: Path) -> int:
    """The bytes of a model's weight files: a GGUF file's size, a folder's *.safetensors (else its
    pytorch_model*.bin) summed; what loading reads, for the CLI's "loading NAME (SIZE)" line."""
    if not os.path.isdir(model):
        return sum(_size(p) for p in part_paths(Path(model)))  # a split GGUF set: all its parts
    files = sorted(model.glob("*.safetensors")) or sorted(model.glob("pytorch_model*.bin"))
    return sum(_size(f) for f in files)


def human_bytes(n: int | float) -> str:
    """A size in decimal units (B, KB, MB, GB, TB), three significant figures or so: `tiankong info`
    and the TUI's info view show bytes per token and the KV cache's size with it, so that a small
    model's 40 KB is not "0.0 MB" beside "0.2 KB"."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 999.95:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def human_params(n: int) -> str:
    """A parameter count in millions or billions, three significant figures (0.26M, 3.15M, 135M,
    1.24B): one formatter for `tiankong info`, `tiankong models` and the TUI's info view, which wrote
    the same model as 3.15M and 3.1 M."""
    value, unit = (n / 1e9, "B") if n >= 999.5e6 else (n / 1e6, "M")
    decimals = 2 if value < 9.995 else 1 if value < 99.95 else 0
    return f"{value:,.{decimals}f}{unit}"


def _safetensors_parameters(folder: Path) -> int | None:
    """The elements of the tensors the loader reads, from the JSON headers of the safetensors files it
    reads (_loaded_safetensors); None if one of them cannot be read or its header is damaged (the
    model then fails to load with the reason)."""
    try:
        paths = _loaded_safetensors(folder)
        total = 0
        for path in [None] if paths is None else paths:
            count = _header_parameters(path) if path is not None else None
            if count is None:
                return None
            total += count
    except TiankongError:
        return None
    return total


def _loaded_safetensors(folder: Path) -> list[Path | None] | None:
    """The safetensors files loading reads (engine/weight_files.checkpoint_files' choice):
    model.safetensors, else the index's shards, else every *.safetensors; None for an index whose
    weight_map is no map of file names, None in the list for a file not there (loading says why)."""
    if model_file(folder, "model.safetensors") is not None:
        names = ["model.safetensors"]
    elif model_file(folder, "model.safetensors.index.json") is not None:
        weight_map = read_model_object(folder, "model.safetensors.index.json").get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            return None
        names = list(dict.fromkeys(weight_map.values()))
    else:
        names = [p.name for p in sorted(folder.glob("*.safetensors"))]
    return [model_file(folder, name) for name in names]


def _safetensors_header(path: Path) -> tuple[int, dict[str, Any]] | None:
    """(its length, the JSON header) of one safetensors file, read alone (8 bytes of length, then that
    much JSON, never the weights); None when it cannot be read or is no JSON object."""
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            head = f.read(8)
            (n,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
            if n is None or n > MAX_SAFETENSORS_HEADER:
                return None
            text = f.read(n)
        header = parse_json(text.decode("utf-8"), str(path)) if len(text) == n else None
    except (TiankongError, OSError, UnicodeDecodeError):
        return None
    return (n, header) if isinstance(header, dict) else None


def safetensors_damage(path: Path) -> str | None:
    """Why loading refuses a safetensors file, from its header and size alone (no weights read): a
    header that cannot be read, or tensor data that does not end where the file does (a download cut
    short: safetensors says "incomplete metadata, file not fully covered"); None when it is whole.
    One line naming the file and the fix, so that listing skips it as it skips a broken GGUF file."""
    fix = broken_link_fix(path, "download it again")  # in the Hugging Face cache: the repo's command
    read = _safetensors_header(path)
    if read is None:
        return f"{path} is truncated or corrupt (no readable safetensors header); {fix}"
    n, header = read
    spans = [i.get("data_offsets") if isinstance(i, dict) else None for k, i in header.items() if k != "__metadata__"]
    ends = [e[1] for e in spans if isinstance(e, list) and len(e) == 2 and all(type(x) is int and x >= 0 for x in e)]
    if len(ends) != len(spans):
        return f"{path} is truncated or corrupt (its header's data offsets are damaged); {fix}"
    need, size = 8 + n + max(ends, default=0), _size(path)
    if need != size:  # safetensors refuses a file its tensors do not cover exactly
        return f"{path} is truncated or corrupt (its header describes {need:,} bytes, the file holds {size:,}); {fix}"
    return None


def _header_parameters(path: Path) -> int | None:
    """Elements of the tensors in one safetensors file, buffers left out, read from its header only."""
    read = _safetensors_header(path)
    if read is None:
        return None
    total = 0
    for name, info in read[1].items():
        if name == "__metadata__" or _BUFFERS.search(name):
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            return None
        total += math.prod(shape)
    return total


def _lmstudio_entries(repo: str, folder: Path, notes: list[str]) -> list[FoundModel]:
    if _is_file(folder / "config.json"):
        return _folder_entry(repo, "lmstudio", folder, "download it again")
    return _gguf_entries(repo, "lmstudio", folder, notes)


def _gguf_entries(repo: str, source: str, folder: Path, notes: list[str], by_file: bool = False) -> list[FoundModel]:
    """A folder's .gguf files (subfolders included), with architecture and quantization read from each
    header (bounded); named ORG/NAME when it is the only one (and not `by_file`: the folder's own
    model has that name), else ORG/NAME/[SUB/]FILE.gguf (what --model takes). A file that is not a regular one (a FIFO, a broken link) is noted, never opened;
    so is one loading refuses on its header alone (_checked_gguf)."""
    files = _gguf_files(folder)
    out = []
    for gguf in files:
        try:
            _gguf_in(folder, gguf)
            facts, params = _checked_gguf(gguf)
        except ModelLoadError as e:
            notes.append(str(e))
            continue
        quant = _quantization(facts)
        if quant is None and (hit := _QUANT.search(gguf.stem)):
            quant = hit[1].upper()  # older files may lack general.file_type: the file name says it
        name = repo if len(files) == 1 and not by_file else f"{repo}/{gguf.relative_to(folder).as_posix()}"
        parts = part_paths(gguf)  # a split set's files (its first part is listed), else [gguf]
        size = sum(_size(p) for p in parts)
        arch = facts.get("general.architecture")
        out.append(FoundModel(name, source, str(gguf), "gguf", arch, quant, params, size, parts=len(parts)))
    return out


def _quantization(facts: dict[str, Any]) -> str | None:
    from .gguf_header import quantization_name

    return quantization_name(facts.get("general.file_type"))


def _checked_gguf(gguf: Path, again: str = "download it again") -> tuple[dict[str, Any], int | None]:
    """(architecture and file type, parameter count) of a GGUF file (a split set by its first part,
    its parts' counts summed); ModelLoadError with loading's own line for what loading refuses from
    the header alone: a damaged header, tensor data past the end or overlapping, dims no file has, a
    tensor type or an architecture tiankong cannot read, a feed_forward_length its tensors disagree
    with. Cost: one walk of each header, no weights. A set with a part missing is refused with
    loading's line naming the part."""
    from .gguf_arch import arch_of
    from .gguf_header import FFN_DOWN, feed_forward_size, peek, tensor_infos, weight_elements

    parts = part_paths(gguf)
    check_parts_there(gguf, parts)
    infos = [tensor_infos(part, again) for part in parts]
    facts = peek(gguf)
    arch = facts.get("general.architecture")
    if arch is not None:  # none: a header of nothing, listed (loading says why not)
        arch_of(gguf, arch)
        said = peek(gguf, (f"{arch}.feed_forward_length",)).get(f"{arch}.feed_forward_length")
        down = next((dims for part in infos for name, dims, _ in part if name == FFN_DOWN), None)
        feed_forward_size(gguf, arch, said, down)
    return facts, sum(weight_elements(part) for part in infos)


def _ollama_entries(root: Path, notes: list[str]) -> list[FoundModel]:
    out: list[FoundModel] = []
    for host in _scan_or_note(root / "manifests", notes):
        for namespace in _scan_or_note(host, notes):
            for model in _scan_or_note(namespace, notes):
                for manifest in _scan_or_note(model, notes):
                    name = _ollama_name(host.name, namespace.name, model.name, manifest.name)
                    out += _noting(notes, _ollama_entry, root, name, manifest)
    return out


def _ollama_entry(root: Path, name: str, manifest: Path) -> list[FoundModel]:
    data = _manifest(manifest)
    digest = _model_digest(data)
    if digest is None:
        raise ModelLoadError(f"{manifest} names no model layer; pull the model again")
    blob = _ollama_digest_path(root, digest, manifest)
    pull = f"run `ollama pull {name.removeprefix('ollama:').removesuffix(':latest')}`"
    if _stat(blob) is None:  # a broken link or an unreadable store raises its own line
        raise ModelLoadError(f"{name}: its model blob {blob} is missing; {pull}")
    if not _starts_gguf(blob):
        raise ModelLoadError(f"{name}: its model blob {blob} is not a GGUF file; {pull} again")
    try:  # a damaged blob: skipped, as loading refuses it
        header, params = _checked_gguf(blob, f"{pull} again")
    except ModelLoadError as e:
        raise ModelLoadError(f"{name}: {e}") from None
    facts = _ollama_config(root, _ollama_config_digest(data), manifest)
    # The architecture is the header's, read above anyway and what loading goes by (a config blob's
    # model_family may say llama of a qwen2 file); the config's only where the header names none.
    arch, quant = header.get("general.architecture") or facts.get("model_family"), facts.get("file_type")
    quant = quant if isinstance(quant, str) else _quantization(header)  # no config blob: the file's header says
    return [
        FoundModel(
            name,
            "ollama",
            str(blob),
            "gguf",
            arch if isinstance(arch, str) else None,
            quant if isinstance(quant, str) else None,
            params,
            _size(blob),
        )
    ]
