"""Where models live, and probing those places safely: the ground that engine/resolve.py (one
name to one model) and engine/model_list.py (every model found) both stand on.

The stores belong to other programs (and may belong to other users), so every probe goes through
`_stat` and `_scan`: a folder that cannot be read is one line ("cannot read X: permission denied",
noted and skipped by `list_models`), a dangling or looping link is named a broken link, and nothing
but a regular file is ever opened (a FIFO named *.gguf would block the open for ever). /proc, /sys
and /dev are never listed (pseudo-files: /proc/PID/root leads back to /), and `bounded_walk` caps a
walk that may give up (a suggestion for a name not found). The cache layout is read with os and
pathlib (huggingface_hub is not a dependency); small files (refs, manifests, configs) are read
through engine/files, bounded and regular files only.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Iterator

from .errors import ModelLoadError, TiankongError
from .files import LINK_RULE, broken_link_fix, kind_of, link_out, open_regular, read_regular_bytes

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"  # one part of a repo id (the hub's own rule, roughly)
_HASH = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_PROJECTOR = re.compile(r"(?i)mmproj")  # llama.cpp's name for a vision projector file
_SMALL = 1 << 20  # refs, manifests and Ollama configs are a few hundred bytes
_GGUF_DEPTH = 3  # a repo's folder and two levels of subfolders are searched for .gguf files
# Pseudo-files, never models: a Models Directory of / or /proc walked every process's /proc/PID/root,
# which leads back to / (40 s of silence before a "no model" line).
_SYSTEM = ("/proc", "/sys", "/dev")
# What is left of a walk bounded by `bounded_walk`: [entries, time.monotonic() deadline]; None: unbounded
_WALK: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("_WALK", default=None)


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


def missing_set_folders() -> list[str]:
    """A line for each store folder an environment variable names that does not exist (a typo, a drive
    not mounted): its models are silently absent otherwise. The defaults are not said: most people
    have only some of the stores."""
    env = os.environ
    hf_var = next((v for v in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME") if env.get(v)), None)
    places = [(hf_var, hf_hub_cache(), "the Hugging Face cache"), ("OLLAMA_MODELS", ollama_dir(), "Ollama's store")]
    return [
        f"{var} is set ({env[var]}), but {folder} does not exist, so nothing in {what} is found; "
        f"set {var} to the folder that holds it, or unset it for the default"
        for var, folder, what in places
        if var is not None and env.get(var) and not os.path.lexists(folder)
    ]


def lmstudio_dirs(notes: list[str] | None = None) -> list[Path]:
    """LM Studio's models folders: the one its settings name ("Models Directory", which a person
    may move to another disk), then the default one in its data folder, then the older location.
    Its data folder is ~/.lmstudio unless ~/.lmstudio-home-pointer names another (how LM Studio
    moves it). Both files are LM Studio's: one that is there but cannot be used (unreadable, not
    JSON, a value that is no absolute path, a Models Directory that is a file) leaves the defaults,
    and `notes`, when given, gets one line saying so (`tiankong models` shows it as skipped)."""
    return _lmstudio(notes)[0]


def lmstudio_origin(root: Path) -> str | None:
    """Where LM Studio's models folder `root` was named, when its settings named it (the person
    may never have typed that path): "LM Studio's Models Directory, downloadsFolder in FILE"."""
    _, chosen, settings = _lmstudio(None)
    return f"LM Studio's Models Directory, downloadsFolder in {settings}" if root == chosen else None


def _lmstudio(notes: list[str] | None) -> tuple[list[Path], Path | None, Path]:
    """(LM Studio's models folders, the one its settings name or None, its settings file)."""
    home = Path.home()
    default = home / ".lmstudio"
    pointer = _lmstudio_setting(
        home / ".lmstudio-home-pointer",
        None,
        notes,
        f"LM Studio's data folder is taken to be {default}; fix or remove it",
    )
    data = pointer or default
    settings = data / "settings.json"
    chosen = _lmstudio_setting(
        settings,
        "downloadsFolder",
        notes,
        "LM Studio's Models Directory is not searched; fix it, or choose the folder again in LM Studio (My Models)",
    )
    if chosen is not None:
        chosen = _lmstudio_folder_or_note(chosen, settings, notes)
    dirs = [chosen, data / "models", home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]
    return list(dict.fromkeys(d for d in dirs if d is not None)), chosen, settings


class _Unusable(Exception):
    """Why a file of LM Studio's that is there cannot be used (one line's start)."""


def _lmstudio_setting(path: Path, key: str | None, notes: list[str] | None = None, then: str = "") -> Path | None:
    """A folder that LM Studio's file at `path` names: the whole text (key None: the home pointer), or
    the string under `key` of its JSON object; None where there is none. A file that is there but
    cannot be used gives None too, and one line in `notes`: the file, why, and `then` (what is done
    instead, and the fix)."""
    if not os.path.lexists(path):  # LM Studio not installed, or never moved: nothing to say
        return None
    try:
        return _lmstudio_value(path, key)
    except _Unusable as e:
        if notes is not None:
            notes.append(f"{e}, so {then}")
        return None


def _lmstudio_value(path: Path, key: str | None) -> Path | None:
    """`_lmstudio_setting`'s folder; _Unusable saying why the file or its value cannot be used."""
    where = f"{key} in {path}" if key is not None else str(path)
    if not os.path.exists(path):
        raise _Unusable(f"{path} is a broken link (to {os.readlink(path)}, which does not exist)")
    try:
        text = read_regular_bytes(path, _SMALL).decode("utf-8").strip()
        data = json.loads(text) if key is not None else text
    except ModelLoadError as e:  # unreadable, a FIFO, larger than 1 MB: the line's reason, without its fix
        raise _Unusable(str(e).partition("; ")[0]) from None
    except UnicodeDecodeError as e:
        raise _Unusable(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise _Unusable(f"{path} is JSON nested too deep to read") from None
    except ValueError as e:
        raise _Unusable(f"{path} is not JSON ({e})") from None
    if key is not None and not isinstance(data, dict):
        raise _Unusable(f"{path} holds no JSON object")
    value = data.get(key) if isinstance(data, dict) else data
    if value is None:  # no such setting: LM Studio's default folder
        return None
    shown = json.dumps(value)[:80] if isinstance(value, (str, int, float, bool)) else type(value).__name__
    if not isinstance(value, str) or not value.strip() or "\0" in value:  # a NUL: ValueError on any use
        raise _Unusable(f"{where} is no folder path ({shown})")
    try:
        folder = Path(value).expanduser()
    except RuntimeError:  # "~user" of no such user
        raise _Unusable(f"{where} names a user this machine does not have ({shown})") from None
    if not folder.is_absolute():
        raise _Unusable(f"{where} is a relative path ({shown}), which LM Studio never writes")
    return folder


def _lmstudio_folder_or_note(folder: Path, settings: Path, notes: list[str] | None) -> Path | None:
    """The Models Directory LM Studio's settings name, unless something other than a folder is there
    (a file, a FIFO, /dev/zero, a broken link): then None, and one line in `notes`. A folder that
    cannot be read stays (a lookup goes on past it and says so); one that does not exist stays too,
    as the default folders do (a disk not mounted yet), with a line in `notes`: its models are
    missing from every list until it is back, and a person should hear why."""
    try:
        st = _stat(folder)
    except _Denied:
        return folder
    except ModelLoadError as e:  # a broken link
        problem = str(e).partition("; ")[0]
    else:
        if st is None:
            if notes is not None:
                notes.append(
                    f"LM Studio's Models Directory {folder} (downloadsFolder in {settings}) does not exist, so "
                    "none of its models are found; connect its drive, or choose the folder again in LM Studio (My Models)"
                )
            return folder
        if stat.S_ISDIR(st.st_mode) and _system(folder):
            problem = f"{folder} is a system folder (pseudo-files, no models)"
        elif stat.S_ISDIR(st.st_mode):
            return folder
        else:
            problem = f"{folder} is {'a file' if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)}, not a folder"
    if notes is not None:
        notes.append(
            f"LM Studio's Models Directory (downloadsFolder in {settings}) is not searched: {problem}; "
            "choose the folder again in LM Studio (My Models)"
        )
    return None


def ollama_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def bundled_dir() -> Path:
    from tiankong.models import default_model_dir

    return default_model_dir()


# --- probing places that may be unreadable ---------------------------------------------------------


class _Denied(ModelLoadError):
    """A place that cannot be read for want of permission. A lookup goes on in the other places and
    raises this only when none holds the name, so one locked store does not hide the others."""

    def __init__(self, place: Path, origin: str | None = None) -> None:
        self.place = place
        where, other = (f" ({origin})", ", choose another folder in LM Studio (My Models),") if origin else ("", "")
        super().__init__(
            f"cannot read {place}{where}: permission denied; give your user access to it (chmod, chown)"
            f"{other} or use a model from another place"
        )

    def named_by(self, root: Path) -> _Denied:
        """This line for a probe inside LM Studio's folder `root`, saying where `root` was named when
        LM Studio's settings named it: the person may never have typed that path."""
        origin = lmstudio_origin(root)
        return _Denied(self.place, origin) if origin is not None else self


def _unreadable(path: Path, e: OSError) -> ModelLoadError:
    if e.errno == errno.ELOOP:
        return ModelLoadError(f"{path} is a broken link (its links form a loop); fix or remove the link")
    if e.errno in (errno.EACCES, errno.EPERM):
        return _Denied(_blocked(path))
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
            # In the Hugging Face cache the repo's download command (removing config.json's link breaks the model).
            fix = broken_link_fix(path, "restore the file (download it again) or remove the link")
            raise ModelLoadError(f"{path} is a broken link (to {target}, which does not exist); {fix}") from None
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
    """The entries of `folder` by name, hidden ones (.locks, .git) left out; [] if it is no folder, or
    a system folder (/proc, /sys, /dev: no models there). Counted against a `bounded_walk`."""
    if _system(folder):
        return []
    try:
        with os.scandir(folder) as entries:
            found = sorted(folder / e.name for e in entries if not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise _unreadable(folder, e) from None
    _spend(len(found) + 1)
    return found


def _real(path: Path) -> Path:
    """`path` with its links resolved, or as it is where one cannot be read (/proc/PID/root of another
    user's process raises PermissionError even for os.path.realpath)."""
    try:
        return Path(os.path.realpath(path))
    except OSError:
        return Path(os.path.abspath(path))


def _system(folder: Path) -> bool:
    """Whether `folder` (its links resolved) is /proc, /sys, /dev or inside one."""
    real = str(_real(folder))
    return any(real == top or real.startswith(top + "/") for top in _SYSTEM)


class WalkTooLong(Exception):
    """A walk inside `bounded_walk` ran past its entries or its seconds. No TiankongError: the
    listing's own catches (a place noted and skipped, a name refused) must let it through to the
    caller that set the bound."""


@contextlib.contextmanager
def bounded_walk(entries: int, seconds: float) -> Iterator[None]:
    """Within the block, `_scan` raises WalkTooLong once the folders listed hold more than `entries`
    entries in all, or `seconds` have passed: for work that may give up (a suggestion for a name
    not found), where a Models Directory of / would otherwise walk the whole disk on every miss."""
    token = _WALK.set([entries, time.monotonic() + seconds])
    try:
        yield
    finally:
        _WALK.reset(token)


def _spend(entries: int) -> None:
    left = _WALK.get()
    if left is None:
        return
    left[0] -= entries
    if left[0] < 0 or time.monotonic() > left[1]:
        raise WalkTooLong("the stores are too large to walk within the bound")


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
    if stat.S_ISDIR(st.st_mode) and path.suffix.lower() == ".gguf":  # no one names a folder so: a broken download
        fix = broken_link_fix(path, "remove it and download the file again")
        raise ModelLoadError(f"{path} is a folder named like a GGUF file, not one: the download is damaged; {fix}")
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(
            f"{path} is {kind_of(st.st_mode)}, not a regular file; pass a model folder or a .gguf file"
        )
    return path


def _gguf_in(folder: Path, path: Path) -> Path:
    """`path`, a .gguf file a model folder holds, checked as every file of one is (engine/files
    LINK_RULE): a link may lead only inside `folder` or into a cache's blobs/ (the Hugging Face
    cache's own snapshots, Ollama models linked into LM Studio). The file named itself (--model
    FILE.gguf) is the person's choice and is not checked here; nor is a GGUF file that LM Studio's
    own models folder links to (`lms import --symbolic-link` leaves the file where it was and puts
    a link in the store): that folder is the person's store, and what the link leads to must be a
    regular file that starts as a GGUF file does, so no other file of theirs is read through it."""
    real = link_out(folder, path)
    if real is not None and _lmstudio_import(folder, real):
        return path
    if real is not None:
        try:
            target = os.stat(real)
        except OSError:
            target = None
        if target is None or not stat.S_ISREG(target.st_mode):  # /dev/zero, a FIFO: no model to pass
            what = kind_of(target.st_mode) if target is not None else "nothing that can be read"
            raise ModelLoadError(f"{path} is a link to {real} ({what}, not a model file); remove the link")
        raise ModelLoadError(
            f"{path} is a link to {real}, outside the model folder; {LINK_RULE}: copy the real file into "
            f"the folder (cp -L), or pass the file itself (--model {real})"
        )
    return _regular(path)


def _lmstudio_import(folder: Path, real: Path) -> bool:
    """Whether `folder` lies in one of LM Studio's models folders and `real` (a link's resolved
    target) is a regular GGUF file: what `lms import --symbolic-link` makes."""
    roots = [r.resolve() for r in lmstudio_dirs()]
    inside = any(root == folder.resolve() or root in folder.resolve().parents for root in roots)
    st = _stat(real) if inside else None
    return st is not None and stat.S_ISREG(st.st_mode) and _starts_gguf(real)


def _starts_gguf(path: Path) -> bool:
    """Whether a regular file starts with the GGUF magic; one line if it cannot be read."""
    fd = open_regular(path)
    try:
        return os.read(fd, 4) == b"GGUF"
    except OSError as e:
        raise ModelLoadError(f"cannot read {path} ({e.strerror}); check the file and its permissions") from None
    finally:
        os.close(fd)


# --- GGUF files in a folder ------------------------------------------------------------------------


def _gguf_files(folder: Path, depth: int = _GGUF_DEPTH, _within: tuple[Path, set[Path]] | None = None) -> list[Path]:
    """The .gguf files of a language model in `folder` and its subfolders (`depth` levels in all),
    vision projectors left out, a split set (NAME-00001-of-0000N.gguf, ...) as its first part only.
    Nothing is opened but the regular files' headers (see _projector)."""
    from .gguf_split import first_parts

    top, seen = _within or (_real(folder), set())
    seen.add(_real(folder))
    files: list[Path] = []
    for entry in sorted(_scan(folder), key=os.path.islink):  # a folder before a link to it: its own name
        if entry.name.lower().endswith(".gguf"):
            if not _projector(entry):
                files.append(entry)
        elif depth > 1 and os.path.isdir(entry):
            # A linked subfolder is searched only inside the model's own folder, and each folder once:
            # a link to a parent (a loop) listed every model of the store again under it.
            real = _real(entry)
            if real not in seen and top in real.parents:
                files += _gguf_files(entry, depth - 1, (top, seen))
    return first_parts(files)  # a split set is one model, loaded from its first part (engine/gguf_split.py)


def _projector(path: Path) -> bool:
    """A vision model's projector (llama.cpp names them mmproj-*.gguf; their architecture is clip)."""
    from .gguf_header import peek

    return (
        bool(_PROJECTOR.search(path.name))
        or peek(path, ("general.architecture",)).get("general.architecture") == "clip"
    )


# --- the Hugging Face cache's layout ---------------------------------------------------------------


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
