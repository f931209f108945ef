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
`list_models` (engine/model_list.py) is what `tiankong models` shows; every name it lists resolves.

Where models live and how their places are probed (every probe through `_stat` and `_scan`, so
an unreadable folder or a broken link is one line) is engine/model_places.py; Ollama's manifests
and blobs are read by engine/ollama.py.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from pathlib import Path

from .errors import ModelLoadError, TiankongError
from .files import kind_of
from .model_list import list_models
from .model_places import (
    _PART,
    _Denied,
    _gguf_files,
    _is_dir,
    _is_file,
    _read_ref,
    _refs,
    _regular,
    _repo_dir,
    _scan,
    _starts_gguf,
    _stat,
    _unreadable,
    bundled_dir,
    hf_hub_cache,
    lmstudio_dirs,
    ollama_dir,
)
from .ollama import _manifest, _model_digest, _ollama_digest_path, _ollama_name, _ollama_parts

_NAME = re.compile(rf"(?:(?P<org>{_PART})/)?(?P<name>{_PART})(?:@(?P<rev>[A-Za-z0-9][A-Za-z0-9._/-]{{0,127}}))?")
# ORG/NAME/FILE.gguf, or ORG/NAME/SUB/FILE.gguf for a file in a subfolder of the repository
_GGUF_NAME = re.compile(rf"(?P<repo>{_PART}/{_PART})/(?P<file>(?:{_PART}/){{0,2}}{_PART}(?i:\.gguf))")


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


# --- a GGUF file by name ---------------------------------------------------------------------------


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


# --- LM Studio's folders ---------------------------------------------------------------------------


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


# --- Ollama's names --------------------------------------------------------------------------------


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
