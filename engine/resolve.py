"""From what a person types after `--model` to a model folder or file: `resolve_model`, offline.

Every command and trainer that takes a model goes through `resolve_model`, in this order:
  1. nothing: the bundled tiankong-mini;
  2. a path that exists: that path (a local path always wins over a name); a folder without
     config.json that holds one .gguf file gives that file, as LM Studio's folders do;
  3. `ollama:NAME[:TAG]`: the GGUF blob of Ollama's manifest (manifests/HOST/NS/NAME/TAG -> blob);
  4. `ORG/NAME[@REVISION]` (or `NAME`): the Hugging Face hub cache, laid out as
     `models--ORG--NAME/refs/REVISION` (a commit hash) -> `snapshots/<hash>/` (REVISION: main);
     a snapshot of GGUF files only (no config.json) gives its one .gguf file;
  5. `ORG/NAME` in LM Studio's models folder (`~/.lmstudio/models/ORG/NAME`), a folder or its
     one .gguf file; `ORG/NAME/FILE.gguf` (or `ORG/NAME/SUB/FILE.gguf`) picks one of several in
     either place.
A .gguf file may sit in a subfolder of its repository (unsloth and bartowski put each big
quantization in one: ORG/NAME/Q8_0/FILE.gguf). A vision projector (mmproj-*.gguf, architecture
`clip`) sits beside the model it serves and is no language model: it is passed over.
Nothing found: one line naming every place searched and the name that comes closest.
`list_models` is what `tiankong models` shows; every name it lists resolves.

The stores belong to other programs (and may belong to other users), so every probe goes through
`_stat` and `_scan`: a folder that cannot be read is one line ("cannot read X: permission denied",
noted and skipped by `list_models`), a dangling or looping link is named a broken link, and nothing
but a regular file is ever opened (a FIFO named *.gguf would block the open for ever). The cache
layout is read with os and pathlib (huggingface_hub is not a dependency); small files (refs,
manifests, configs) are read through engine/files, bounded and regular files only.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import ModelLoadError, TiankongError
from .files import kind_of, open_regular, parse_json, read_model_object, read_regular_bytes

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"  # one part of a repo id (the hub's own rule, roughly)
_NAME = re.compile(rf"(?:(?P<org>{_PART})/)?(?P<name>{_PART})(?:@(?P<rev>[A-Za-z0-9][A-Za-z0-9._/-]{{0,127}}))?")
# ORG/NAME/FILE.gguf, or ORG/NAME/SUB/FILE.gguf for a file in a subfolder of the repository
_GGUF_NAME = re.compile(rf"(?P<repo>{_PART}/{_PART})/(?P<file>(?:{_PART}/){{0,2}}{_PART}(?i:\.gguf))")
_HASH = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_QUANT = re.compile(r"(?i)(?:^|[-._])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?=[-._]|$)")  # in GGUF file names
_PROJECTOR = re.compile(r"(?i)mmproj")  # llama.cpp's name for a vision projector file
_OLLAMA_MODEL = "application/vnd.ollama.image.model"
_OLLAMA_CONFIG = "application/vnd.docker.container.image.v1+json"
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_SMALL = 1 << 20  # refs, manifests and Ollama configs are a few hundred bytes
_GGUF_DEPTH = 3  # a repo's folder and two levels of subfolders are searched for .gguf files


# --- where models live -----------------------------------------------------------------------------


def hf_hub_cache() -> Path:
    """The hub cache, as huggingface_hub finds it: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface" / "hub"


def lmstudio_dirs() -> list[Path]:
    """LM Studio's models folders (the current one, then the older location)."""
    return [Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"]


def ollama_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def bundled_dir() -> Path:
    from tiankong.models import default_model_dir

    return default_model_dir()


# --- probing places that may be unreadable ---------------------------------------------------------


class _Denied(ModelLoadError):
    """A place that cannot be read for want of permission. A lookup goes on in the other places and
    raises this only when none holds the name, so one locked store does not hide the others."""


def _unreadable(path: Path, e: OSError) -> ModelLoadError:
    if e.errno == errno.ELOOP:
        return ModelLoadError(f"{path} is a broken link (its links form a loop); fix or remove the link")
    if e.errno in (errno.EACCES, errno.EPERM):
        return _Denied(
            f"cannot read {_blocked(path)}: permission denied; give your user access to it "
            "(chmod, chown) or use a model from another place"
        )
    return ModelLoadError(f"cannot read {path} ({e.strerror or e}); check the path")


def _blocked(path: Path) -> Path:
    """The folder that denies access to `path`: `path` itself if it can be stat'ed (it cannot be
    listed or read), else its deepest ancestor that can (it is the one that cannot be entered)."""
    for place in (path, *path.parents):
        try:
            os.stat(place)
        except OSError:
            continue
        return place
    return path


def _stat(path: Path) -> os.stat_result | None:
    """os.stat (links followed); None when nothing is there. A broken link or a place that cannot be
    read is a ModelLoadError line, where Path.exists() and is_dir() raise PermissionError."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            target = os.readlink(path)
            raise ModelLoadError(
                f"{path} is a broken link (to {target}, which does not exist); "
                "restore the file (download it again) or remove the link"
            ) from None
        return None
    except OSError as e:
        raise _unreadable(path, e) from None


def _is_dir(path: Path) -> bool:
    st = _stat(path)
    return st is not None and stat.S_ISDIR(st.st_mode)


def _is_file(path: Path) -> bool:
    """A regular file is there (a FIFO or device is not one)."""
    st = _stat(path)
    return st is not None and stat.S_ISREG(st.st_mode)


def _scan(folder: Path) -> list[Path]:
    """The entries of `folder` by name, hidden ones (.locks, .git) left out; [] if it is no folder."""
    try:
        with os.scandir(folder) as entries:
            return sorted(folder / e.name for e in entries if not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise _unreadable(folder, e) from None


def _scan_or_note(folder: Path, skipped: list[str]) -> list[Path]:
    """`_scan` for listing: an unreadable folder is noted in `skipped` and counts as empty."""
    try:
        return _scan(folder)
    except ModelLoadError as e:
        skipped.append(str(e))
        return []


def _regular(path: Path) -> Path:
    """`path`, checked to be a regular file that is there (the file a name chose)."""
    st = _stat(path)
    if st is None:
        raise ModelLoadError(f"{path} does not exist; pass a model folder or a .gguf file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(
            f"{path} is {kind_of(st.st_mode)}, not a regular file; pass a model folder or a .gguf file"
        )
    return path


def _starts_gguf(path: Path) -> bool:
    """Whether a regular file starts with the GGUF magic; one line if it cannot be read."""
    fd = open_regular(path)
    try:
        return os.read(fd, 4) == b"GGUF"
    except OSError as e:
        raise ModelLoadError(f"cannot read {path} ({e.strerror}); check the file and its permissions") from None
    finally:
        os.close(fd)


# --- resolving one name ----------------------------------------------------------------------------


def resolve_model(spec: str | Path | None) -> Path:
    """The folder (or GGUF file) a `--model` value names; ModelLoadError in one line when it names none."""
    if spec is None or str(spec) == "":
        bundled = bundled_dir()
        if not _is_file(bundled / "model.safetensors"):
            raise ModelLoadError(
                "no model given and the bundled model is missing: pass --model DIR "
                "(a local Hugging Face model folder) or set TIANKONG_MODEL"
            )
        return bundled
    text = str(spec)
    path = Path(text).expanduser()
    local = _local(path, text)
    if local is not None:
        return local
    if text.startswith("ollama:"):
        return _ollama_blob(text.removeprefix("ollama:"))
    return _by_name(text, path)


def _local(path: Path, text: str) -> Path | None:
    """`path` when something is there, None when nothing is. A folder without config.json that holds
    one .gguf file gives that file; one line for a broken link, a FIFO or device, a file that is
    neither a GGUF file nor a model folder, or a place that cannot be read."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:  # e.g. a folder on the way that cannot be entered
        raise _unreadable(path, e) from None
    st = _stat(path)
    assert st is not None  # lstat found it, so _stat found its target or raised (a broken link)
    if stat.S_ISDIR(st.st_mode):
        if _is_file(path / "config.json"):
            return path
        return _one_gguf(text, path, by_name=False) or path  # else the loader names what the folder lacks
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(
            f"{path} is {kind_of(st.st_mode)}, not a regular file; pass a model folder or a .gguf file"
        )
    if path.suffix.lower() != ".gguf" and not _starts_gguf(path):
        raise ModelLoadError(
            f"{path} is a file, not a model folder, and not a GGUF file (it does not start with the GGUF "
            "magic); pass the folder that holds config.json, or a .gguf file"
        )
    return path


def _by_name(text: str, path: Path) -> Path:
    """A name of the Hugging Face cache or LM Studio (ORG/NAME[@REV], NAME, ORG/NAME/[SUB/]FILE.gguf)."""
    gguf = _GGUF_NAME.fullmatch(text)
    if gguf is not None:
        found = _gguf_in(gguf["repo"], gguf["file"])
        if found is not None:
            return found
        raise _not_found(text, path, searched_hf=True, searched_lmstudio=True)
    match = _NAME.fullmatch(text)
    if match is None or ".." in text or "--" in text:
        raise _not_found(text, path)
    if text == "tiankong-mini":
        return resolve_model(None)
    repo = f"{match['org']}/{match['name']}" if match["org"] else match["name"]
    denied: _Denied | None = None
    try:
        snapshot = _hf_snapshot(repo, match["rev"])
    except _Denied as e:  # looked for in LM Studio still; said if it is not there either
        snapshot, denied = None, e
    if snapshot is not None:
        return _hf_model(repo, match["rev"], snapshot)
    lmstudio = bool(match["org"]) and not match["rev"]  # LM Studio's names are ORG/NAME, no revisions
    if lmstudio:
        try:
            found = _lmstudio_folder(repo)
        except _Denied as e:  # the LM Studio folder of that very name: the closer reason
            found, denied = None, e
        if found is not None:
            return found
    if denied is not None:
        raise denied
    raise _not_found(text, path, searched_hf=True, searched_lmstudio=lmstudio, bare=not match["org"])


def _not_found(
    text: str, path: Path, searched_hf: bool = False, searched_lmstudio: bool = False, bare: bool = False
) -> ModelLoadError:
    """One line: the places searched, and the listed name closest to `text` when one is close."""
    close = _closest(text)
    listed = "`tiankong models` lists the names found"
    hint = f"did you mean {close}? ({listed})" if close else listed
    if not (searched_hf or searched_lmstudio):  # not a name: a path, or ollama's NAME:TAG without ollama:
        return ModelLoadError(
            f"no model {text!r}: {path} does not exist; {hint}; or pass a model folder or a .gguf file"
        )
    where = [f"a file or folder {text} here", f"the Hugging Face cache ({hf_hub_cache()})"]
    if searched_lmstudio:
        where.append(f"LM Studio ({', '.join(map(str, lmstudio_dirs()))})")
    note = (
        " (a NAME without ORG/ is looked up only there; LM Studio's names are ORG/NAME, Ollama's ollama:NAME[:TAG])"
        if bare
        else ""
    )
    return ModelLoadError(
        f"no model {text!r}: searched {', '.join(where)}{note}; {hint}; or pass --model DIR (a model folder) "
        "or FILE.gguf"
    )


def _closest(text: str) -> str | None:
    """The listed name `text` most likely meant: an Ollama name typed without ollama: (or without its
    host, as hf.co/...), else the closest spelling; None when nothing is close or nothing can be listed."""
    try:
        names = [m.name for m in list_models()]
    except (TiankongError, OSError):
        return None
    key = text.lower().removeprefix("ollama:")
    for name in names:
        short = name.lower().removeprefix("ollama:")
        if short in (key, f"{key}:latest") or short.endswith(f"/{key}"):
            return name
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.75)
    return close[0] if close else None


def display_name(model: str | Path) -> str:
    """A model's short name for screens: ORG/NAME for a Hugging Face cache snapshot (whose folder
    name is a commit hash), ORG/NAME/FILE.gguf for a GGUF file in one (never its blob's hash),
    general.name for an Ollama blob, else the folder's (or file's) name."""
    path = Path(model)
    parts = path.parts
    if "snapshots" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i >= 1 and parts[i - 1].startswith("models--"):
            repo = parts[i - 1].removeprefix("models--").replace("--", "/", 1)
            return "/".join([repo, *parts[i + 2 :]])
    if path.name.startswith("sha256-") and path.parent.name == "blobs":  # an Ollama blob: the file's own name
        from .gguf_header import peek

        name = peek(path, ("general.name",)).get("general.name")
        return name if isinstance(name, str) and name else path.name
    return path.name or str(model)


def model_key(model: str | Path) -> str:
    """How stored chats and votes name a local model: its absolute path with links resolved, but a
    file keeps its own name (a GGUF file in the Hugging Face cache links to blobs/<hash>, a name
    display_name could not turn back into ORG/NAME)."""
    path = Path(model).expanduser()
    return str(path.resolve() if os.path.isdir(path) else path.absolute().parent.resolve() / path.name)


# --- GGUF files in a folder ------------------------------------------------------------------------


def _gguf_files(folder: Path, depth: int = _GGUF_DEPTH) -> list[Path]:
    """The .gguf files of a language model in `folder` and its subfolders (`depth` levels in all),
    vision projectors left out. Nothing is opened but the regular files' headers (see _projector)."""
    files: list[Path] = []
    for entry in _scan(folder):
        if entry.name.lower().endswith(".gguf"):
            if not _projector(entry):
                files.append(entry)
        elif depth > 1 and os.path.isdir(entry):
            files += _gguf_files(entry, depth - 1)
    return files


def _projector(path: Path) -> bool:
    """A vision model's projector (llama.cpp names them mmproj-*.gguf; their architecture is clip)."""
    from .gguf_header import peek

    return (
        bool(_PROJECTOR.search(path.name))
        or peek(path, ("general.architecture",)).get("general.architecture") == "clip"
    )


def _one_gguf(label: str, folder: Path, by_name: bool = True) -> Path | None:
    """The one .gguf file of a folder (None if it has none); several: one line naming them and how
    to choose (`label`: the name, or with by_name False the path, the folder was given by)."""
    files = _gguf_files(folder)
    if len(files) > 1:
        rel = [f.relative_to(folder).as_posix() for f in files]
        shown = ", ".join(rel[:6]) + (f" and {len(rel) - 6} more" if len(rel) > 6 else "")
        by_name = by_name and "@" not in label  # ORG/NAME@REV/FILE.gguf is no name resolve_model takes
        choose = f"--model {label}/{rel[0]} or --model {files[0]}" if by_name else f"--model {files[0]}"
        raise ModelLoadError(f"{label} holds {len(files)} GGUF files ({shown}); choose one: {choose}")
    return _regular(files[0]) if files else None


def _gguf_in(repo: str, file: str) -> Path | None:
    """ORG/NAME/[SUB/]FILE.gguf: that file of the repo's Hugging Face snapshot or LM Studio folder.
    None when neither place holds the repo; when one does but not the file, one line naming the
    repo's .gguf files."""
    folders: list[Path] = []
    denied: _Denied | None = None
    try:
        cached = _repo_dir(hf_hub_cache(), repo)
        if cached is not None:
            ref = cached / "refs" / "main"
            snapshots = (
                [cached / "snapshots" / _read_ref(ref)] if _is_file(ref) else _scan(cached / "snapshots")
            )  # downloaded by hash: no refs/main
            folders += [s for s in snapshots if _is_dir(s)]
    except _Denied as e:
        denied = e
    for root in lmstudio_dirs():
        try:
            if _is_dir(root / repo):
                folders.append(root / repo)
        except _Denied as e:
            denied = denied or e
    for folder in folders:
        if os.path.lexists(folder / file):  # a broken link is there too: _regular says so
            return _regular(folder / file)
    if folders:
        have = [f.relative_to(folders[0]).as_posix() for f in _gguf_files(folders[0])]
        shown = ", ".join(have[:8]) + (f" and {len(have) - 8} more" if len(have) > 8 else "")
        choose = f"; choose one: --model {repo}/{have[0]}" if have else ""
        raise ModelLoadError(f"{repo} ({folders[0]}) has no {file}; its GGUF files: {shown or 'none'}{choose}")
    if denied is not None:
        raise denied
    return None


# --- the Hugging Face cache ------------------------------------------------------------------------


def _repo_dir(cache: Path, repo: str) -> Path | None:
    folder = cache / ("models--" + repo.replace("/", "--"))
    if _is_dir(folder):
        return folder
    # the hub's ids are case-insensitive; the cache keeps the spelling asked for
    want = folder.name.lower()
    return next((d for d in _scan(cache) if d.name.lower() == want and _is_dir(d)), None)


def _read_ref(ref: Path) -> str:
    sha = read_regular_bytes(ref, _SMALL).decode("utf-8", "replace").strip()
    if not _HASH.fullmatch(sha):
        raise ModelLoadError(f"{ref} does not hold a commit hash; the Hugging Face cache is damaged, download again")
    return sha


def _hf_snapshot(repo: str, revision: str | None) -> Path | None:
    """refs/REVISION -> snapshots/<hash> (a hash or its prefix may be given instead); None when the
    repo is not in the cache. The snapshot folder may be missing (a damaged cache): _hf_model says so."""
    folder = _repo_dir(hf_hub_cache(), repo)
    if folder is None:
        return None
    rev = revision or "main"
    snapshots = [p.name for p in _scan(folder / "snapshots") if os.path.isdir(p)]
    if _stat(folder / "refs" / rev) is not None:
        sha = _read_ref(folder / "refs" / rev)
    elif revision is None and len(snapshots) == 1:  # downloaded by hash: no refs/main
        sha = snapshots[0]
    elif re.fullmatch(r"[0-9a-f]{7,64}", rev) and len(hits := [s for s in snapshots if s.startswith(rev)]) == 1:
        sha = hits[0]
    else:
        have = ", ".join(sorted(r for r, _ in _refs(folder)) + [s[:10] for s in snapshots]) or "nothing"
        raise ModelLoadError(
            f"{repo} is in the Hugging Face cache ({folder}) but not at revision {rev!r}; it has: {have}"
        )
    return folder / "snapshots" / sha


def _hf_model(repo: str, revision: str | None, snapshot: Path) -> Path:
    """The model of a cached snapshot: the folder (config.json), else its one .gguf file."""
    label = repo if revision is None else f"{repo}@{revision}"
    if not _is_dir(snapshot):
        raise ModelLoadError(
            f"{label}: the Hugging Face cache names snapshot {snapshot.name}, which is missing ({snapshot}); "
            f"the cache is damaged: download {repo} again"
        )
    if _is_file(snapshot / "config.json"):
        return snapshot
    gguf = _one_gguf(label, snapshot)
    if gguf is not None:  # a GGUF release: its .gguf file is the model
        return gguf
    if "gguf" in repo.lower():  # a GGUF repository with none of its files downloaded
        raise ModelLoadError(
            f"{label} in the Hugging Face cache ({snapshot}) holds no .gguf file; "
            f"download one: huggingface-cli download {repo} FILE.gguf"
        )
    raise ModelLoadError(
        f"{label} in the Hugging Face cache ({snapshot}) has no config.json and no .gguf file; "
        f"download the whole repository (huggingface-cli download {repo}), not single files"
    )


def _refs(folder: Path) -> Iterator[tuple[str, str]]:
    """(revision, hash) for every ref of a cached repo (refs/main, refs/pr/1, ...), by name."""
    refs, todo, found = folder / "refs", _scan(folder / "refs"), []
    while todo:
        ref = todo.pop()
        if os.path.isdir(ref):
            todo += _scan(ref)
        elif os.path.isfile(ref):
            found.append(ref)
    for ref in sorted(found):
        try:
            yield ref.relative_to(refs).as_posix(), _read_ref(ref)
        except TiankongError:
            continue


def _lmstudio_folder(repo: str) -> Path | None:
    """LM Studio's ORG/NAME: the folder (config.json) or its one .gguf file; None if no folder."""
    for root in lmstudio_dirs():
        folder = root / repo
        if not _is_dir(folder):
            continue
        if _is_file(folder / "config.json"):
            return folder
        gguf = _one_gguf(repo, folder)
        if gguf is not None:
            return gguf
        raise ModelLoadError(f"LM Studio's {folder} holds no model (no config.json, no .gguf file); download it again")
    return None


# --- Ollama's store --------------------------------------------------------------------------------


def _ollama_parts(name: str) -> tuple[list[str], str]:
    """NAME[:TAG] -> the manifest's path parts under manifests/ and the tag (default latest)."""
    base, _, tag = name.partition(":")
    parts, tag = base.split("/"), tag or "latest"
    if len(parts) > 3 or not all(re.fullmatch(_PART, p) for p in [*parts, tag]):
        raise ModelLoadError(f"ollama:{name}: not an Ollama model name; give ollama:NAME or ollama:NAME:TAG")
    return ["registry.ollama.ai", "library"][: 3 - len(parts)] + parts, tag


def _ollama_name(host: str, namespace: str, model: str, tag: str) -> str:
    """What --model takes for manifests/HOST/NS/MODEL/TAG, as `ollama list` names it: the library's
    models by name, other namespaces as NS/MODEL, other hosts in full (hf.co/ORG/NAME)."""
    if host != "registry.ollama.ai":
        return f"ollama:{host}/{namespace}/{model}:{tag}"
    return f"ollama:{model}:{tag}" if namespace == "library" else f"ollama:{namespace}/{model}:{tag}"


def _ollama_blob(name: str) -> Path:
    """The GGUF blob an Ollama name points at (manifests/HOST/NS/NAME/TAG -> blobs/sha256-HEX)."""
    root = ollama_dir()
    parts, tag = _ollama_parts(name)
    host, namespace, model = parts
    pull = (
        _ollama_name(host, namespace, model, tag).removeprefix("ollama:").removesuffix(":latest")
    )  # as `ollama pull` takes it
    if not _is_dir(root):
        raise ModelLoadError(f"ollama:{name}: no Ollama store at {root}; set OLLAMA_MODELS to Ollama's models folder")
    model_dir = root / "manifests" / Path(*parts)
    manifest = model_dir / tag
    if _stat(manifest) is None:
        tags = [p.name for p in _scan(model_dir)]
        if tags:
            short = _ollama_name(host, namespace, model, tags[0]).removeprefix("ollama:")
            raise ModelLoadError(
                f"ollama:{name}: not in the Ollama store: it has no tag {tag!r}, only {', '.join(tags)}; "
                f"e.g. --model ollama:{short}"
            )
        close = _closest(f"ollama:{name}")
        raise ModelLoadError(
            f"ollama:{name}: not in the Ollama store ({manifest} is missing)"
            + (f"; did you mean {close}?" if close else "; `ollama list` shows what it holds")
        )
    data = _manifest(manifest)
    digest = _model_digest(data)
    if digest is None:
        raise ModelLoadError(f"ollama:{name}: the manifest {manifest} names no model layer; run `ollama pull {pull}`")
    blob = _ollama_digest_path(root, digest, manifest)
    if _stat(blob) is None:
        raise ModelLoadError(f"ollama:{name}: its model blob {blob} is missing; run `ollama pull {pull}`")
    if not _starts_gguf(_regular(blob)):
        raise ModelLoadError(
            f"ollama:{name}: its model blob {blob} is not a GGUF file (it does not start with the GGUF magic); "
            f"run `ollama pull {pull}` again"
        )
    return blob


def _manifest(path: Path) -> dict[str, Any]:
    data = parse_json(read_regular_bytes(path, _SMALL).decode("utf-8", "replace"), str(path))
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not an Ollama manifest (not a JSON object)")
    return data


def _layers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    layers = manifest.get("layers")
    return [layer for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) else []


def _model_digest(manifest: dict[str, Any]) -> Any:
    """The digest of the manifest's model layer (the GGUF blob), None when it has none."""
    return next((layer.get("digest") for layer in _layers(manifest) if layer.get("mediaType") == _OLLAMA_MODEL), None)


def _ollama_config_digest(manifest: dict[str, Any]) -> Any:
    """The config blob's digest: the manifest's top-level "config" (where Ollama writes it, as any
    OCI image manifest), else a layer of the config's media type (older hand-made manifests)."""
    config = manifest.get("config")
    if isinstance(config, dict) and config.get("digest") is not None:
        return config["digest"]
    return next((layer.get("digest") for layer in _layers(manifest) if layer.get("mediaType") == _OLLAMA_CONFIG), None)


def _ollama_digest_path(root: Path, digest: Any, manifest: Path) -> Path:
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ModelLoadError(f"{manifest} has a malformed layer digest; pull the model again")
    return root / "blobs" / digest.replace(":", "-")


# --- listing everything ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundModel:
    name: str  # what --model takes
    source: str  # bundled, huggingface, lmstudio or ollama
    path: str  # the folder (or GGUF file)
    format: str  # safetensors, pytorch or gguf
    architecture: str | None  # config.json's architectures[0] (Ollama: its model family)
    dtype: str | None  # config.json's torch_dtype; a GGUF file's quantization
    parameters: int | None  # estimated from the weight bytes and dtype
    bytes: int  # weight files, summed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def list_models(skipped: list[str] | None = None) -> list[FoundModel]:
    """Every model the places `resolve_model` searches hold: the bundled model first.

    A place that cannot be read (a folder without permission, a damaged manifest, a FIFO named
    *.gguf) is left out and, when `skipped` is given, appended to it as one line saying why.
    """
    notes: list[str] = [] if skipped is None else skipped
    found: list[FoundModel] = []
    bundled = bundled_dir()
    if os.path.isfile(bundled / "config.json"):
        found.append(_describe("tiankong-mini", "bundled", bundled))
    found += _hf_entries(hf_hub_cache(), notes)
    for root in lmstudio_dirs():
        for org in _scan_or_note(root, notes):
            for folder in _scan_or_note(org, notes) if os.path.isdir(org) else ():
                if os.path.isdir(folder):
                    found += _noting(notes, _lmstudio_entries, f"{org.name}/{folder.name}", folder, notes)
    found += _ollama_entries(ollama_dir(), notes)
    return found


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
    if not refs:
        refs = {"main": snapshots[0]} if len(snapshots) == 1 else {s[:10]: s for s in snapshots}
    out: list[FoundModel] = []
    for rev, sha in refs.items():
        name, snapshot = (repo if rev == "main" else f"{repo}@{rev}"), folder / "snapshots" / sha
        if not os.path.isdir(snapshot):
            continue  # a ref to a missing snapshot: resolving it says so
        if _is_file(snapshot / "config.json"):
            out.append(_describe(name, "huggingface", snapshot))
        elif rev == "main":
            out += _gguf_entries(repo, "huggingface", snapshot, notes)
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size  # follows the cache's links to blobs
    except OSError:
        return 0


def _describe(name: str, source: str, folder: Path) -> FoundModel:
    try:
        config = read_model_object(folder, "config.json")
    except TiankongError:
        config = {}
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    dtype = config.get("torch_dtype") or config.get("dtype")
    dtype = dtype if isinstance(dtype, str) else None
    files = sorted(folder.glob("*.safetensors"))
    fmt = "safetensors" if files else "pytorch"
    files = files or sorted(folder.glob("pytorch_model*.bin"))
    size = sum(_size(f) for f in files)
    params = size // _DTYPE_BYTES[dtype] if dtype in _DTYPE_BYTES and size else None
    return FoundModel(name, source, str(folder), fmt, arch, dtype, params, size)


def _lmstudio_entries(repo: str, folder: Path, notes: list[str]) -> list[FoundModel]:
    if _is_file(folder / "config.json"):
        return [_describe(repo, "lmstudio", folder)]
    return _gguf_entries(repo, "lmstudio", folder, notes)


def _gguf_entries(repo: str, source: str, folder: Path, notes: list[str]) -> list[FoundModel]:
    """A folder's .gguf files (subfolders included), with architecture and quantization read from each
    header (bounded); named ORG/NAME when it is the only one, else ORG/NAME/[SUB/]FILE.gguf (what
    --model takes). A file that is not a regular one (a FIFO, a broken link) is noted, never opened."""
    from .gguf_header import peek, quantization_name

    files = _gguf_files(folder)
    out = []
    for gguf in files:
        try:
            _regular(gguf)
        except ModelLoadError as e:
            notes.append(str(e))
            continue
        facts = peek(gguf)
        quant = quantization_name(facts.get("general.file_type"))
        if quant is None and (hit := _QUANT.search(gguf.stem)):
            quant = hit[1].upper()  # older files may lack general.file_type: the file name says it
        name = repo if len(files) == 1 else f"{repo}/{gguf.relative_to(folder).as_posix()}"
        arch = facts.get("general.architecture")
        out.append(FoundModel(name, source, str(gguf), "gguf", arch, quant, None, _size(gguf)))
    return out


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
    from .gguf_header import peek, quantization_name

    data = _manifest(manifest)
    digest = _model_digest(data)
    if digest is None:
        raise ModelLoadError(f"{manifest} names no model layer; pull the model again")
    blob = _ollama_digest_path(root, digest, manifest)
    facts = _ollama_config(root, _ollama_config_digest(data), manifest)
    arch, quant = facts.get("model_family"), facts.get("file_type")
    if not isinstance(arch, str) or not isinstance(quant, str):  # no config blob: the file's header says
        header = peek(blob)  # {} for a missing blob or one that is not a regular file
        arch = arch if isinstance(arch, str) else header.get("general.architecture")
        quant = quant if isinstance(quant, str) else quantization_name(header.get("general.file_type"))
    return [
        FoundModel(
            name,
            "ollama",
            str(blob),
            "gguf",
            arch if isinstance(arch, str) else None,
            quant if isinstance(quant, str) else None,
            None,
            _size(blob),
        )
    ]


def _ollama_config(root: Path, digest: Any, manifest: Path) -> dict[str, Any]:
    """The model's config blob (model_family, file_type), or {} when absent."""
    if digest is None:
        return {}
    path = _ollama_digest_path(root, digest, manifest)
    return _manifest(path) if _is_file(path) else {}
