"""A repository by name, offline: the name grammar (ORG/NAME[@REVISION][/PATH]), a cached repo's
snapshot at a revision in the Hugging Face cache, LM Studio's ORG/NAME folders, and a file or
subfolder inside either; the note when both places hold a name.

Apart from engine/resolve.py, which dispatches what `--model` holds (nothing, a path, ollama:,
lmstudio:, a name) and says what was searched when nothing is found: this module is how one
repository and the files in it are looked up once a name has been recognised.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ModelLoadError
from .files import download_fix
from .model_names import _model_path
from .model_places import (
    _PART,
    _Denied,
    _gguf_files,
    _gguf_in,
    _is_dir,
    _is_file,
    _read_ref,
    _refs,
    _repo_dir,
    _scan,
    _stat,
    hf_hub_cache,
    lmstudio_dirs,
)

_REPO = re.compile(rf"(?:{_PART}/)?{_PART}")  # ORG/NAME, or NAME
_REV = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")  # a branch, tag, refs/pr/N or a commit hash (prefix)
# PATH in ORG/NAME/PATH: a file or subfolder of the repository, two subfolders deep at most (SUB/FILE.gguf)
_SUB = rf"(?:{_PART}/){{0,2}}{_PART}"
_IN_REPO = re.compile(rf"(?P<repo>{_PART}/{_PART})/(?P<sub>{_SUB})")
LMSTUDIO = "lmstudio:"  # a name looked up in LM Studio's folders only
_MIN_PREFIX = 7  # hex characters of a commit hash taken as a revision (git's usual abbreviation)


# --- the name grammar ------------------------------------------------------------------------------


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


def _parse_lmstudio(text: str) -> tuple[str, str | None] | None:
    """ORG/NAME[/PATH] as LM Studio's folders may be named -> (repo, path in it): any characters but
    "/" (spaces, accents, "&", "@", "--": LM Studio keeps whatever names its folders were given),
    PATH at most three parts (SUB/SUB/FILE.gguf, as _SUB). None when a part is empty, "." or ".."
    (which would lead out of LM Studio's folder) or there are fewer than two parts or more than five."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 5 or any(part in ("", ".", "..") or "\0" in part for part in parts):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


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
        if re.fullmatch(rf"[0-9a-f]{{{_MIN_PREFIX},64}}", rev):
            return len([p for p in _scan(folder / "snapshots") if p.name.startswith(rev)]) == 1
    except ModelLoadError:
        pass
    return False


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


# --- a file or subfolder of a repository by name ---------------------------------------------------


def _holds_weights(snapshot: Path) -> bool:
    """Whether a cached snapshot with config.json has a file its weights can be in: a safetensors or
    PyTorch file, or a .gguf file (the loader then says what it makes of each)."""
    return any(
        any(snapshot.glob(p)) for p in ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.gguf")
    )


def _one_gguf(label: str, folder: Path, by_name: bool = True) -> Path | None:
    """The one .gguf file of a folder (None if it has none); several: one line naming them and how
    to choose (`label`: the name, or with by_name False the path, the folder was given by)."""
    files = _gguf_files(folder)
    if len(files) > 1:
        rel = [f.relative_to(folder).as_posix() for f in files]
        shown = ", ".join(rel[:6]) + (f" and {len(rel) - 6} more" if len(rel) > 6 else "")
        pick = usable_gguf(folder, files)
        by = f"--model {label}/{pick.relative_to(folder).as_posix()} or " if pick and by_name else ""
        choose = f"choose one: {by}--model {pick}" if pick else NONE_USABLE
        raise ModelLoadError(f"{label} holds {len(files)} GGUF files ({shown}); {choose}")
    return _gguf_in(folder, files[0]) if files else None


# Where a folder holds .gguf files but none that `tiankong models` lists: naming one to choose led to
# the next error (a truncated copy's), so the line says there is none instead.
NONE_USABLE = (
    "none of them is usable (damaged or of a kind tiankong cannot read; `tiankong models` says why of each): "
    "download one again"
)


def usable_gguf(folder: Path, files: list[Path]) -> Path | None:
    """The first of `files` (.gguf files of `folder`) that `tiankong models` lists, by the same checks
    (engine/model_list._gguf_entries: the folder's link rules, then loading's checks of the header
    alone): what a "choose one" hint may name. Cost: the headers read up to the first usable file."""
    from .model_list import _checked_gguf

    for gguf in files:
        try:
            _gguf_in(folder, gguf)
            _checked_gguf(gguf)
        except ModelLoadError:
            continue
        return gguf
    return None


def choose_hint(label: str, folder: Path, files: list[Path]) -> str:
    """The hint ending a line that names a folder's .gguf files: "; choose one: --model LABEL/FILE" for
    the first usable of `files` (usable_gguf), else "; " and NONE_USABLE; "" with no files at all."""
    pick = usable_gguf(folder, files)
    if pick is not None:
        return f"; choose one: --model {label}/{pick.relative_to(folder).as_posix()}"
    return f"; {NONE_USABLE}" if files else ""


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
    if lmstudio and rev is None:
        folders, locked = lmstudio_repos(repo)
        places += [(repo if hf else f"{LMSTUDIO}{repo}", folder, False) for folder in folders]
        denied = denied or locked
    for label, folder, cached in places:
        if os.path.lexists(folder / sub):  # a broken link is there too: _regular says so
            found = _repo_path(f"{label}/{sub}", folder / sub, folder)
            return _noted(found, f"{label}/{sub}", repo, sub) if cached and lmstudio else found
    if places:
        label, folder, _ = places[0]
        files = _gguf_files(folder)
        have = [f.relative_to(folder).as_posix() for f in files]
        shown = ", ".join(have[:8]) + (f" and {len(have) - 8} more" if len(have) > 8 else "")
        choose = choose_hint(label, folder, files)
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


def _repo_path(label: str, target: Path, repo: Path) -> Path:
    """A path inside the repo folder `repo`, named `label`: a .gguf file, or a folder as a folder is
    taken (config.json, else its one .gguf file)."""
    if _is_dir(target):
        if _is_file(target / "config.json"):
            return target
        gguf = _one_gguf(label, target)
        if gguf is None:
            raise ModelLoadError(f"{label} ({target}) holds no .gguf file and no config.json; name a model in it")
        return gguf
    if target.suffix.lower() != ".gguf":
        raise ModelLoadError(f"{label} ({target}) is no .gguf file and no folder; name a .gguf file of the repo")
    return _gguf_in(repo, target)


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
    elif (
        re.fullmatch(rf"[0-9a-f]{{{_MIN_PREFIX},64}}", rev)
        and len(hits := [s for s in snapshots if s.startswith(rev)]) == 1
    ):
        sha = hits[0]
    else:
        have = ", ".join(sorted(r for r, _ in _refs(folder)) + [s[:10] for s in snapshots])
        if not have:
            raise no_revisions(repo, folder)
        # Fewer hex characters are not taken as a hash prefix: say so, or @cccc reads as a typo of the list.
        short = (
            f" (a commit hash needs at least {_MIN_PREFIX} hex characters)"
            if re.fullmatch(rf"[0-9a-f]{{1,{_MIN_PREFIX - 1}}}", rev)
            else ""
        )
        raise ModelLoadError(
            f"{repo} is in the Hugging Face cache ({folder}) but not at revision {rev!r}{short}; it has: {have}"
        )
    return folder / "snapshots" / sha


def no_revisions(repo: str, folder: Path) -> ModelLoadError:
    """A cached repo's folder with no ref and no snapshot: nothing of it is there to load."""
    return ModelLoadError(
        f"{repo} is in the Hugging Face cache ({folder}) but holds no revision (no refs, no snapshots): "
        f"the cache is damaged; {download_fix(folder, repo)}"
    )


def missing_snapshot(label: str, repo: str, snapshot: Path) -> ModelLoadError:
    """A ref (`label`: ORG/NAME[@REV]) naming a snapshot folder that is not there."""
    return ModelLoadError(
        f"{label}: the Hugging Face cache names snapshot {snapshot.name}, which is missing ({snapshot}); "
        f"the cache is damaged: {download_fix(snapshot.parent.parent, repo)}"
    )


def _hf_model(repo: str, revision: str | None, snapshot: Path) -> Path:
    """The model of a cached snapshot: the folder (config.json), else its one .gguf file."""
    label = repo if revision is None else f"{repo}@{revision}"
    if not _is_dir(snapshot):
        raise missing_snapshot(label, repo, snapshot)
    if _is_file(snapshot / "config.json"):
        if not _holds_weights(snapshot):  # `hf download` stopped before its weights (or fetched some files only)
            raise ModelLoadError(
                f"{label} ({snapshot}) holds no weights (*.safetensors, pytorch_model*.bin); "
                + download_fix(snapshot.parent.parent, repo)
            )
        return snapshot
    try:
        gguf = _one_gguf(label, snapshot)
    except ModelLoadError as e:  # several: LM Studio's model of the same name is one more choice
        there = revision is None and bool(lmstudio_repos(repo)[0])
        if not there:
            raise
        raise ModelLoadError(f"{e}, or --model {LMSTUDIO}{repo} for LM Studio's") from None
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


def lmstudio_repos(repo: str) -> tuple[list[Path], _Denied | None]:
    """LM Studio's folders named `repo` (ORG/NAME), in the order its models folders are searched, and
    the first denial met on the way: a models folder that cannot be read is passed over, so that
    one locked folder does not hide the others (a lookup raises the denial when none holds the name)."""
    folders: list[Path] = []
    denied: _Denied | None = None
    for root in lmstudio_dirs():
        try:
            if _is_dir(root / repo):
                folders.append(root / repo)
        except _Denied as e:
            denied = denied or e.named_by(root)
    return folders, denied


def _lmstudio_folder(repo: str) -> Path | None:
    """LM Studio's ORG/NAME: the folder (config.json) or its one .gguf file; None if no folder. A
    folder that cannot be read is passed over for the next one; its denial is raised when no other
    holds the name."""
    folders, denied = lmstudio_repos(repo)
    for folder in folders:
        try:
            if _is_file(folder / "config.json"):
                return folder
            gguf = _one_gguf(repo, folder)
        except _Denied as e:
            denied = denied or e.named_by(folder.parent.parent)  # the models folder of ORG/NAME
            continue
        if gguf is not None:
            return gguf
        raise ModelLoadError(f"LM Studio's {folder} holds no model (no config.json, no .gguf file); download it again")
    if denied is not None:
        raise denied
    return None
