"""From what a person types after `--model` to a model folder or file: `resolve_model`, offline.

Every command and trainer that takes a model goes through `resolve_model`, in this order:
  1. nothing: the bundled tiankong-mini;
  2. a path that exists: that path (a local path always wins over a name); a folder without
     config.json that holds one .gguf file gives that file, as LM Studio's folders do;
  3. `ollama:NAME[:TAG]`: the GGUF blob of Ollama's manifest (manifests/HOST/NS/NAME/TAG -> blob),
     carrying the name as `tiankong models` lists it (ModelPath.given: a blob's path names no model;
     display_name and model_key give that name, for screens, votes and the server's model id);
  4. `ORG/NAME[@REVISION]` (or `NAME`): the Hugging Face hub cache, laid out as
     `models--ORG--NAME/refs/REVISION` (a commit hash) -> `snapshots/<hash>/` (REVISION: main);
     a snapshot of GGUF files only (no config.json) gives its one .gguf file;
  5. `ORG/NAME` in LM Studio's models folder (`~/.lmstudio/models/ORG/NAME`), a folder or its
     one .gguf file; `lmstudio:ORG/NAME` looks only there (for a name the Hugging Face cache holds too).
`ORG/NAME[@REVISION]/FILE.gguf` (or `.../SUB/FILE.gguf`) picks one of several files in either
place, and `ORG/NAME[@REVISION]/SUB` a subfolder, as a folder is taken: its one .gguf file.
A .gguf file may sit in a subfolder of its repository (unsloth and bartowski put each big
quantization in one: ORG/NAME/Q8_0/FILE.gguf). A vision projector (mmproj-*.gguf, architecture
`clip`) sits beside the model it serves and is no language model: it is passed over.
A name both places hold is the Hugging Face cache's, and the ModelPath says so in `note`, a line
for the CLI to show (the engine never prints).
Nothing found: one line naming every place searched and the name that comes closest.
`list_models` (engine/model_list.py) is what `tiankong models` shows; every name it lists resolves.

Where models live and how their places are probed (every probe through `_stat` and `_scan`, so
an unreadable folder or a broken link is one line) is engine/model_places.py; Ollama's manifests
and blobs are read by engine/ollama.py.
"""

from __future__ import annotations

import contextvars
import difflib
import os
import re
import stat
import sys
from pathlib import Path, PosixPath, WindowsPath
from typing import Any

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

_REPO = re.compile(rf"(?:{_PART}/)?{_PART}")  # ORG/NAME, or NAME
_REV = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")  # a branch, tag, refs/pr/N or a commit hash (prefix)
# PATH in ORG/NAME/PATH: a file or subfolder of the repository, two subfolders deep at most (SUB/FILE.gguf)
_SUB = rf"(?:{_PART}/){{0,2}}{_PART}"
_IN_REPO = re.compile(rf"(?P<repo>{_PART}/{_PART})/(?P<sub>{_SUB})")
LMSTUDIO = "lmstudio:"  # a name looked up in LM Studio's folders only
_SUGGEST = contextvars.ContextVar("_SUGGEST", default=True)  # off while list_models checks its own names


# --- what resolve_model returns --------------------------------------------------------------------

if sys.platform == "win32":  # before Python 3.12 a Path subclass names its flavour's concrete class

    class _ConcretePath(WindowsPath):
        pass

else:

    class _ConcretePath(PosixPath):
        pass


class ModelPath(_ConcretePath):
    """The path resolve_model found (it loads like any path), with what the path alone does not say.
    resolve_model gives it back unchanged, so the name survives Engine.load's own resolving."""

    given: str | None = None  # the name it was found by where the path spells none (an Ollama blob)
    note: str | None = None  # a line for the user: another place holds the same name (LM Studio)

    def with_segments(self, *parts: Any) -> Path:  # Python 3.12+: paths made from this one are plain
        return Path(*parts)

    def __reduce__(self) -> Any:  # pickled (torchrun, multiprocessing) with what it carries
        return _model_path, (str(self), self.given, self.note)


# Blob path -> the Ollama name it was resolved from in this process (None once two names share it):
# display_name and model_key find the name by it where a caller rebuilt a plain Path from a ModelPath.
_GIVEN: dict[str, str | None] = {}


def _model_path(path: str | Path, given: str | None = None, note: str | None = None) -> ModelPath:
    found = ModelPath(path)
    found.given, found.note = given, note
    if given is not None:
        _GIVEN[str(path)] = given if _GIVEN.get(str(path), given) == given else None
    return found


def given_name(model: str | Path) -> str | None:
    """The name an Ollama model was resolved from: carried by its ModelPath, else remembered for its
    blob's path (unless two names share that blob), else a stored key's own (ollama:NAME:TAG)."""
    if isinstance(model, ModelPath) and model.given is not None:
        return model.given
    text = str(model)
    return text if text.startswith("ollama:") else _GIVEN.get(text)


def _carries(spec: object) -> bool:
    return isinstance(spec, ModelPath) and (spec.given is not None or spec.note is not None)


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
    if _carries(spec):  # resolved already: what it carries stays
        assert isinstance(spec, ModelPath)
        return spec
    text = str(spec)
    path = Path(text).expanduser()
    local = _local(path, text)
    if local is not None:
        return local
    if text.startswith("ollama:"):
        return _ollama_blob(text.removeprefix("ollama:"))
    if text.startswith(LMSTUDIO):
        return _lmstudio_name(text, path)
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


def _parse(text: str) -> tuple[str, str | None, str | None] | None:
    """ORG/NAME[@REV][/PATH] (or NAME[@REV]) -> (repo, revision, path in the repo); None when `text`
    is no such name. ORG/NAME/PATH@REV is taken too. A revision may hold slashes (refs/pr/1), so
    where REV ends and PATH begins is where a revision the cache knows ends (_split_revision)."""
    if ".." in text or "--" in text:
        return None
    head, at, rev = text.partition("@")
    if at and not _REV.fullmatch(rev):
        return None
    if (inside := _IN_REPO.fullmatch(head)) is not None:
        return inside["repo"], rev or None, inside["sub"]
    if not _REPO.fullmatch(head):
        return None
    return (head, *_split_revision(head, rev)) if at else (head, None, None)


def _split_revision(repo: str, tail: str) -> tuple[str, str | None]:
    """REV[/PATH] -> (REV, PATH): the longest start of `tail` that is a revision of the cached repo;
    none known: the first part when the rest names a .gguf file (the cache then says which
    revisions it has), else all of it."""
    cuts = [i for i, c in enumerate(tail) if c == "/"]
    try:
        folder = _repo_dir(hf_hub_cache(), repo)
    except ModelLoadError:  # resolving says why the cache cannot be read
        folder = None
    if folder is not None:
        for end in [len(tail), *reversed(cuts)]:
            if _known_revision(folder, tail[:end]):
                return tail[:end], tail[end + 1 :] or None
    if cuts and re.fullmatch(_SUB, tail[cuts[0] + 1 :]) and tail.lower().endswith(".gguf"):
        return tail[: cuts[0]], tail[cuts[0] + 1 :]
    return tail, None


def _known_revision(folder: Path, rev: str) -> bool:
    """Whether a cached repo has `rev`: a ref of that name, or a snapshot whose hash starts with it."""
    try:
        if _is_file(folder / "refs" / rev):
            return True
        if re.fullmatch(r"[0-9a-f]{7,64}", rev):
            return len([p for p in _scan(folder / "snapshots") if p.name.startswith(rev)]) == 1
    except ModelLoadError:
        pass
    return False


def _by_name(text: str, path: Path) -> Path:
    """A name of the Hugging Face cache or LM Studio: ORG/NAME[@REV], NAME, ORG/NAME[@REV]/PATH."""
    parsed = _parse(text)
    if parsed is None:
        raise _not_found(text, path)
    if text == "tiankong-mini":
        return resolve_model(None)
    repo, rev, sub = parsed
    lmstudio = "/" in repo and rev is None  # LM Studio's names are ORG/NAME, no revisions
    if sub is not None:
        found = _in_repo(repo, rev, sub, lmstudio=lmstudio)
        if found is not None:
            return found
        raise _not_found(text, path, searched_hf=True, searched_lmstudio=lmstudio)
    denied: _Denied | None = None
    try:
        snapshot = _hf_snapshot(repo, rev)
    except _Denied as e:  # looked for in LM Studio still; said if it is not there either
        snapshot, denied = None, e
    if snapshot is not None:
        model = _hf_model(repo, rev, snapshot)
        return _noted(model, text, repo, None) if lmstudio else model
    if lmstudio:
        try:
            found = _lmstudio_folder(repo)
        except _Denied as e:  # the LM Studio folder of that very name: the closer reason
            found, denied = None, e
        if found is not None:
            return found
    if denied is not None:
        raise denied
    raise _not_found(text, path, searched_hf=True, searched_lmstudio=lmstudio, bare="/" not in repo)


def _noted(found: Path, text: str, repo: str, sub: str | None) -> Path:
    """`found` (the Hugging Face cache's), carrying a note when LM Studio holds the same name too:
    which one was taken, and the name that takes the other."""
    inside = f"{repo}/{sub}" if sub else repo
    for root in lmstudio_dirs():
        try:
            there = os.path.lexists(root / inside) and (sub is not None or _is_dir(root / inside))
        except ModelLoadError:  # an LM Studio folder that cannot be read holds nothing to note
            there = False
        if there:
            note = (
                f"{text} is in both the Hugging Face cache and LM Studio ({root / inside}); using the Hugging "
                f"Face cache's (--model {LMSTUDIO}{inside} for LM Studio's)"
            )
            return _model_path(found, note=note)
    return found


def _lmstudio_name(text: str, path: Path) -> Path:
    """lmstudio:ORG/NAME[/PATH]: looked up in LM Studio's folders only."""
    name = text.removeprefix(LMSTUDIO)
    parsed = _parse(name)
    if parsed is None or "/" not in parsed[0] or parsed[1] is not None:
        raise ModelLoadError(
            f"{text}: not an LM Studio name; give {LMSTUDIO}ORG/NAME or {LMSTUDIO}ORG/NAME/FILE.gguf "
            "(LM Studio keeps no revisions)"
        )
    repo, _, sub = parsed
    found = _in_repo(repo, None, sub, hf=False) if sub is not None else _lmstudio_folder(repo)
    if found is not None:
        return found
    close = _closest(text)
    raise ModelLoadError(
        f"no model {text!r}: LM Studio ({', '.join(map(str, lmstudio_dirs()))}) has no {name}; "
        + (f"did you mean {close}? " if close else "")
        + "(`tiankong models` lists the names found)"
    )


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
    if not _SUGGEST.get():
        return None
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


def reaches(name: str, path: str | Path) -> bool:
    """Whether `--model name` takes the model at `path` (for list_models: a name another place
    holds first does not). No suggestions are looked for on the way: they would list the models."""
    token = _SUGGEST.set(False)
    try:
        return resolve_model(name) == Path(path)
    except TiankongError:
        return False
    finally:
        _SUGGEST.reset(token)


def display_name(model: str | Path) -> str:
    """A model's short name for screens: the name an Ollama model was given (ollama:NAME:TAG),
    ORG/NAME for a Hugging Face cache snapshot (whose folder name is a commit hash), ORG/NAME/FILE.gguf
    for a GGUF file in one (never its blob's hash), general.name for an Ollama blob stored before
    names were kept, else the folder's (or file's) name."""
    given = given_name(model)
    if given is not None:
        return given
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
    """How stored chats and votes name a local model: the name an Ollama model was given
    (ollama:NAME:TAG, which resolves again; its blob is shared by tags), else its absolute path with
    links resolved, but a file keeps its own name (a GGUF file in the Hugging Face cache links to
    blobs/<hash>, a name display_name could not turn back into ORG/NAME)."""
    given = given_name(model)
    if given is not None:
        return given
    path = Path(model).expanduser()
    return str(path.resolve() if os.path.isdir(path) else path.absolute().parent.resolve() / path.name)


# --- a file or subfolder of a repository by name ---------------------------------------------------


def _one_gguf(label: str, folder: Path, by_name: bool = True) -> Path | None:
    """The one .gguf file of a folder (None if it has none); several: one line naming them and how
    to choose (`label`: the name, or with by_name False the path, the folder was given by)."""
    files = _gguf_files(folder)
    if len(files) > 1:
        rel = [f.relative_to(folder).as_posix() for f in files]
        shown = ", ".join(rel[:6]) + (f" and {len(rel) - 6} more" if len(rel) > 6 else "")
        choose = f"--model {label}/{rel[0]} or --model {files[0]}" if by_name else f"--model {files[0]}"
        raise ModelLoadError(f"{label} holds {len(files)} GGUF files ({shown}); choose one: {choose}")
    return _regular(files[0]) if files else None


def _in_repo(repo: str, rev: str | None, sub: str, hf: bool = True, lmstudio: bool = True) -> Path | None:
    """ORG/NAME[@REV]/SUB: that .gguf file, or that subfolder taken as a folder is, of the repo's
    Hugging Face snapshot (at REV) or LM Studio folder. None when neither place holds the repo;
    when one does but not SUB, one line naming the repo's .gguf files."""
    places: list[tuple[str, Path, bool]] = []  # (the repo's name as --model takes it there, its folder, cached)
    denied: _Denied | None = None
    if hf:
        try:
            places += [(repo if rev is None else f"{repo}@{rev}", s, True) for s in _hf_folders(repo, rev)]
        except _Denied as e:
            denied = e
    for root in lmstudio_dirs() if lmstudio and rev is None else []:
        try:
            if _is_dir(root / repo):
                places.append((repo if hf else f"{LMSTUDIO}{repo}", root / repo, False))
        except _Denied as e:
            denied = denied or e
    for label, folder, cached in places:
        if os.path.lexists(folder / sub):  # a broken link is there too: _regular says so
            found = _repo_path(f"{label}/{sub}", folder / sub)
            return _noted(found, f"{label}/{sub}", repo, sub) if cached and lmstudio else found
    if places:
        label, folder, _ = places[0]
        have = [f.relative_to(folder).as_posix() for f in _gguf_files(folder)]
        shown = ", ".join(have[:8]) + (f" and {len(have) - 8} more" if len(have) > 8 else "")
        choose = f"; choose one: --model {label}/{have[0]}" if have else ""
        raise ModelLoadError(f"{label} ({folder}) has no {sub}; its GGUF files: {shown or 'none'}{choose}")
    if denied is not None:
        raise denied
    return None


def _hf_folders(repo: str, rev: str | None) -> list[Path]:
    """The snapshot folders of a cached repo to look in: REV's, else main's (or, downloaded by hash
    without refs/main, every snapshot); [] when the repo is not cached."""
    if rev is not None:
        snapshot = _hf_snapshot(repo, rev)  # a revision it lacks: one line naming those it has
        return [snapshot] if snapshot is not None and _is_dir(snapshot) else []
    cached = _repo_dir(hf_hub_cache(), repo)
    if cached is None:
        return []
    ref = cached / "refs" / "main"
    snapshots = [cached / "snapshots" / _read_ref(ref)] if _is_file(ref) else _scan(cached / "snapshots")
    return [s for s in snapshots if _is_dir(s)]


def _repo_path(label: str, target: Path) -> Path:
    """A path inside a repo, named `label`: a .gguf file, or a folder as a folder is taken (config.json,
    else its one .gguf file)."""
    if _is_dir(target):
        if _is_file(target / "config.json"):
            return target
        gguf = _one_gguf(label, target)
        if gguf is None:
            raise ModelLoadError(f"{label} ({target}) holds no .gguf file and no config.json; name a model in it")
        return gguf
    if target.suffix.lower() != ".gguf":
        raise ModelLoadError(f"{label} ({target}) is no .gguf file and no folder; name a .gguf file of the repo")
    return _regular(target)


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
    return _model_path(blob, given=_ollama_name(host, namespace, model, tag))  # the blob's path names no tag
