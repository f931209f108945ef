"""Files from strangers in, files for people out: the two rules every reader and writer follows.

Reading a model folder (`model_file`, `read_model_text`, `read_model_json`):
  * only regular files: a FIFO or a device given as `model.safetensors` would hang or never end;
  * only files inside the folder: a symlinked `added_tokens.json -> ~/.ssh/id_rsa` must not be
    read, and so cannot be copied into a training output the person later publishes. The one
    exception is a model cache's blobs/ folder (`link_out`, LINK_RULE): a link may lead into a
    Hugging Face cache repo's blobs/ (`snapshots/<rev>/x -> ../../blobs/<sha>`, `--local-dir`
    folders of links) or an Ollama store's, and nowhere else. A .gguf file a folder holds follows
    the same rule (engine/repo_lookup.py `_one_gguf`);
  * JSON bounded in size by its kind (`json_limit`), and a file nested thousands deep is a clear
    error, not a traceback.

Writing (`atomic_write`, `atomic_open`, `atomic_write_text`, `atomic_write_bytes`):
  * the data goes to a temporary file beside the target, is flushed and fsync'ed, then renamed over
    the target and the folder is fsync'ed: a crash, Ctrl+C or full disk leaves the old file whole;
    the temporary file's name holds the writer's pid, and the next write of that target removes one
    whose writer is gone (a kill -9 runs no cleanup);
  * a target that is a symlink is written through (the link stays, its target gets the data);
    a device, FIFO or folder is refused, never replaced by a regular file;
  * every OS error (full disk, read-only mount, permission, file-size limit) becomes one line
    naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from .errors import InputError, ModelLoadError

# A JSON file of a model folder larger than this is not a config (tokenizer.json of a 256k vocabulary
# is ~35 MB); refusing it bounds memory before parsing.
MAX_JSON_BYTES = 256 * 1024 * 1024

_MB = 1024 * 1024
# The small JSON files get caps of their own, far above their real sizes but far below MAX_JSON_BYTES:
# parsing takes about 20 times a file's size in memory and a second per few MB (a 213 MB config.json
# of small keys took 4.6 GB and over two minutes), and a file near 256 MB is no config of any model.
JSON_LIMITS = {
    # 1-10 KB for language models; the largest real ones, image classifiers whose id2label names the
    # 21,841 ImageNet-22k classes, are about 1 MB.
    "config.json": 4 * _MB,
    # Under 10 KB (Whisper's, with its language and task tables, is among the largest).
    "generation_config.json": 1 * _MB,
    # KB to a few MB: a long chat template (or several), added_tokens_decoder entries of thousands of
    # added tokens.
    "tokenizer_config.json": 16 * _MB,
    # The same added tokens again, as a list or as content -> id.
    "special_tokens_map.json": 16 * _MB,
    "added_tokens.json": 16 * _MB,
    # One or a few templates, each at most ~20 KB, as for --chat-template files (chat.TEMPLATE_FILE_MAX_BYTES).
    "chat_template.json": 4 * _MB,
    # The whole pipeline, vocabulary and merges: Qwen2's (151k tokens) ~7 MB, a 256k vocabulary's
    # (Gemma) ~35 MB. Parsing takes a second per ~10 MB and about 20 times the size in memory.
    "tokenizer.json": 64 * _MB,
}
# A shard index (*.index.json) holds one ~100-byte line per tensor: ~100 KB-1 MB for most models, about
# 15 MB for the largest mixtures of experts (~140,000 tensors, their FP8 scales included).
INDEX_JSON_LIMIT = 32 * _MB


def json_limit(name: str) -> int:
    """The most bytes `read_model_json` reads of the model-folder JSON file `name` (see JSON_LIMITS)."""
    if name in JSON_LIMITS:
        return JSON_LIMITS[name]
    return INDEX_JSON_LIMIT if name.endswith(".index.json") else MAX_JSON_BYTES


# --- reading ---------------------------------------------------------------------------------------


# Why a link out of a model folder is refused, and where it may lead (README.md says the same).
LINK_RULE = (
    "tiankong follows a model folder's links only inside it or into a Hugging Face or Ollama cache's "
    "blobs/, so that someone else's folder cannot make it read your other files"
)


def _cache_blob(real: Path) -> bool:
    """Whether `real` (a path with every link resolved) is a file in a model cache's blobs/ folder,
    where the caches' own links lead (snapshots/<rev>/x -> ../../blobs/<hash>), and so do folders
    older `huggingface-cli download --local-dir` filled with links and Ollama models linked into LM
    Studio's folder (llamalink and the like): a Hugging Face cache repo's (REPO/blobs/, REPO
    named models--ORG--NAME or holding refs/ and snapshots/) or an Ollama store's (beside manifests/).
    Those hold downloaded models' files, never a person's own. `real` being resolved, blobs/ is a
    real folder: a blobs/ that is a link to ~/.ssh resolves to ~/.ssh and does not pass."""
    blobs = real.parent
    if blobs.name != "blobs":
        return False
    store = blobs.parent
    hf = store.name.startswith("models--") or (os.path.isdir(store / "refs") and os.path.isdir(store / "snapshots"))
    return hf or os.path.isdir(store / "manifests")


def link_out(folder: str | Path, path: str | Path) -> Path | None:
    """The real file behind `path` (a file of the model folder `folder`) when links lead it where
    LINK_RULE does not follow them: out of the folder, into no cache's blobs/; None when it may be read.
    Only the folder is trusted as a whole: any file could be linked from a stranger's folder
    (added_tokens.json -> ~/.ssh/id_rsa) and then read, or copied into a training output."""
    real = Path(os.path.realpath(path))
    root = Path(folder).resolve()
    return None if real == root or root in real.parents or _cache_blob(real) else real


def kind_of(mode: int) -> str:
    """What a non-regular file is, for messages: "a folder", "a FIFO", "a device", ..."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def model_file(folder: str | Path, name: str) -> Path | None:
    """`folder/name` if it exists; None if it does not.

    Raises ModelLoadError when it is not a regular file, is a link leading out of the folder, or
    `name` itself leads out of it (an absolute path or `..`, e.g. a shard name in an index).
    """
    folder = Path(folder)
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ModelLoadError(
            f"{folder}: the file name {name!r} leads outside the model folder; name files inside the folder only"
        )
    if "\0" in name:  # the OS takes no such name: os.lstat would raise ValueError, not OSError
        raise ModelLoadError(f"{folder}: the file name {name!r} holds a NUL byte; name files inside the folder only")
    path = folder / name
    try:
        path.lstat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ModelLoadError(f"cannot read {path} ({e.strerror}); check the model folder") from None
    real = link_out(folder, path)
    if real is not None:
        raise ModelLoadError(
            f"{path} is a link to {real}, outside the model folder; {LINK_RULE}: copy the real file into "
            "the folder (cp -L), or load the model by name from the Hugging Face cache (--model ORG/NAME)"
        )
    real = Path(os.path.realpath(path))
    try:
        mode = real.stat().st_mode
    except OSError:  # a dangling link
        raise ModelLoadError(f"{path} is a broken link{_to(path)}; {broken_link_fix(path)}") from None
    if not stat.S_ISREG(mode):
        raise ModelLoadError(f"{path} is {kind_of(mode)}, not a regular file; put the real file there")
    return path


def _to(link: Path) -> str:
    """ " (to TARGET, which is gone)" for a broken link whose target can be read, else ""."""
    try:
        return f" (to {os.readlink(link)}, which is gone)"
    except OSError:  # not a link itself: a folder on the way is the broken link
        return ""


def unfinished_download(repo_folder: Path) -> str | None:
    """The blob a cached repo's (models--ORG--NAME) unfinished download left (blobs/<hash>.incomplete),
    or None."""
    try:
        return min((p.name for p in (repo_folder / "blobs").iterdir() if p.name.endswith(".incomplete")), default=None)
    except OSError:
        return None


def download_fix(repo_folder: Path, repo: str) -> str:
    """What mends a cached repo whose files are missing: downloading it again, after naming the
    download that did not finish where one is."""
    partial = unfinished_download(repo_folder)
    return (
        f"its download did not finish ({partial}); " if partial else ""
    ) + f"download {repo} again (`hf download {repo}`)"


def broken_link_fix(path: Path, elsewhere: str = "copy the real file into the folder") -> str:
    """What mends a broken link (or another damaged file): in a Hugging Face cache snapshot
    (models--ORG--NAME/snapshots/<hash>/) a blob the download never finished or one deleted since, so
    downloading the repo again (download_fix); anywhere else, `elsewhere`."""
    parts = path.parts
    for i in range(len(parts) - 3, 0, -1):
        if parts[i + 1] == "snapshots" and parts[i].startswith("models--"):
            return download_fix(Path(*parts[: i + 1]), parts[i].removeprefix("models--").replace("--", "/", 1))
    return elsewhere


def open_regular(path: str | Path, error: type[Exception] = ModelLoadError) -> int:
    """A file descriptor open for reading on `path`, a regular file, else `error` in one line.

    Opened non-blocking and checked after opening (fstat): opening a FIFO blocks until a writer
    comes, reading a device may never end, and a check before opening could be raced.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise error(f"cannot read {path} ({e.strerror}); check the file and its permissions") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{path} is {kind_of(mode)}, not a regular file; give the path of a real file")
    return fd


def read_regular_bytes(
    path: str | Path, limit: int, error: type[Exception] = ModelLoadError, fix: str = "restore it from its source"
) -> bytes:
    """At most `limit` bytes of a regular file (see `open_regular`), else `error` in one line; `fix`
    is what the line says to do about a file over the limit (a person's own file has no source)."""
    with os.fdopen(open_regular(path, error), "rb") as f:  # a folder fails fdopen: checked before
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"cannot read {path} ({e.strerror}); check the file and its permissions") from None
    if len(data) > limit:
        raise error(f"{path} is larger than {limit >> 20} MB, too large for this kind of file; {fix}")
    return data


def read_model_bytes(folder: str | Path, name: str, limit: int = MAX_JSON_BYTES) -> bytes | None:
    """The bytes of a model-folder file (None if absent), checked by `model_file` and bounded."""
    path = model_file(folder, name)
    return None if path is None else read_regular_bytes(path, limit)


def read_model_text(folder: str | Path, name: str, limit: int = MAX_JSON_BYTES) -> str | None:
    """The UTF-8 text of a model-folder file (None if absent), checked by `model_file` and bounded."""
    data = read_model_bytes(folder, name, limit)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelLoadError(
            f"{Path(folder) / name} is not UTF-8 text ({e.reason} at byte {e.start}); "
            "restore it from the model's source"
        ) from None


# Deeper than this is no config or index (transformers' own nest 3-4 levels); refusing it up front
# keeps every later walk over the data (json.dumps when a trainer saves it, say) from recursing.
MAX_JSON_DEPTH = 64


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:  # iterative: the point is not to recurse
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def parse_json(text: str, where: str, error: type[Exception] = ModelLoadError) -> Any:
    """json.loads raising `error` with one line naming `where` (deep nesting included)."""
    too_deep = error(f"{where} is nested too deeply to be a real file; restore it from its source")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(
            f"{where} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); fix or re-copy the file"
        ) from None
    except RecursionError:
        raise too_deep from None
    except ValueError:  # not a syntax error: an integer literal beyond Python's digit limit
        raise error(
            f"{where} holds a number too long to be a real value (over {sys.get_int_max_str_digits()} digits); "
            "fix or re-copy the file"
        ) from None
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise too_deep
    return data


def read_model_json(folder: str | Path, name: str, error: type[Exception] = ModelLoadError) -> Any:
    """Parsed JSON of a model-folder file, None if absent, bounded by its kind (`json_limit`);
    every failure is one line."""
    try:
        text = read_model_text(folder, name, json_limit(name))
    except ModelLoadError as e:
        raise error(str(e)) from None
    if text is None:
        return None
    return parse_json(text, str(Path(folder) / name), error)


def read_model_object(folder: str | Path, name: str, error: type[Exception] = ModelLoadError) -> dict[str, Any]:
    """A model-folder JSON file that must hold an object; {} if absent."""
    data = read_model_json(folder, name, error)
    if data is None and model_file(folder, name) is None:
        return {}
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__  # a file of `null` is there, not absent
        raise error(f"{Path(folder) / name} should hold a JSON object, not {kind}; fix or re-copy the file")
    return data


# --- writing ---------------------------------------------------------------------------------------


class WriteError(InputError):
    """A file could not be written; `reason` says why and what to do."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason


def why(e: OSError) -> str:
    import errno

    hints: dict[int | None, str] = {  # OSError.errno may be None
        errno.ENOSPC: "the disk is full; free some space or write elsewhere",
        errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
        errno.EFBIG: "the file is larger than this process may write (ulimit -f); raise the limit or write less",
        errno.EROFS: "the file system is read-only; choose a writable folder",
        errno.EACCES: "permission denied; choose a folder you can write to",
        errno.EPERM: "permission denied; choose a folder you can write to",
    }
    return hints.get(e.errno, f"{e.strerror or e}; check the path")


def lock_with_pid(path: Path) -> int | str | None:
    """Open `path` (made if missing) and lock it for this process (flock, exclusive, not waiting),
    its pid written inside, for a run that must be the only one on something (an output folder, an
    output file): the lock ends with the process however it ends.

    -> the open, locked fd; the pid another process wrote there (a str, "?" if none) when that
    process holds the lock; None when the file was removed after it was opened (a lock on a removed
    file guards nothing: its holder ended, or failed and removed it). OSError: it cannot be made or
    written (the fd is closed)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            return os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        finally:
            os.close(fd)
    try:
        held, now = os.fstat(fd), os.stat(path)
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
            os.close(fd)
            return None
    except FileNotFoundError:
        os.close(fd)
        return None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        os.close(fd)
        raise
    return fd


def write_target(path: str | Path, probe: bool = False) -> Path:
    """Where writing `path` really goes: itself, or the file a symlink points to.

    Raises InputError when that is a folder, a device or a FIFO, or its folder does not exist; with
    probe, also when no file can be made in that folder (permissions, a read-only file system), found
    by making and removing one: said before a long run rather than when its first results are saved.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise WriteError(path, why(e)) from None
    if mode is not None and not stat.S_ISREG(mode):
        raise InputError(f"cannot write {path}: it is {kind_of(mode)}; give the path of a regular file")
    if not target.parent.is_dir():
        raise InputError(f"cannot write {path}: the folder {target.parent} does not exist; create it first")
    if probe:  # os.access would be wrong for root, ACLs and read-only mounts: try it
        try:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=target.parent)
            os.close(fd)
            os.unlink(name)
        except OSError as e:
            raise WriteError(path, why(e)) from None
    return target


def _drop_stale_temps(target: Path) -> None:
    """Remove the temporary files of `target` whose writer is gone (kill -9, a power cut: no cleanup
    ran), found by the pid `_staged` names them with: a 40 MB leftover of a killed export was kept
    for good. A live writer's file (a process of that pid exists) stays, and so does anything that
    cannot be listed or removed: this is tidying, never a reason to fail the write."""
    stale = re.compile(rf"\.{re.escape(target.name)}\.(\d{{1,10}})\.[a-z0-9_]{{8}}\.tmp")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        found = stale.fullmatch(name)
        if found and not _running(int(found.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(target.parent / name)


def _running(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (another user's counts: it cannot be signalled)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return pid > 0  # 0 would be this process group: no writer's pid


@contextlib.contextmanager
def _staged(path: str | Path, partial: str | Path | None = None) -> Iterator[Path]:
    """A temporary file beside `path`'s target; when the block ends without error it is fsync'ed and
    renamed over the target. On an exception (Ctrl+C included) it is removed and `path` is untouched;
    with `partial`, a Ctrl+C instead keeps what was written so far under that name."""
    target = write_target(path)
    _drop_stale_temps(target)
    try:  # the writer's pid in the name: a later write of the target knows a killed writer's leftover
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as e:
        raise WriteError(path, why(e)) from None
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _commit(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, why(e)) from None
    except KeyboardInterrupt:
        if partial is not None:
            try:
                _commit(tmp, write_target(partial))
            except (OSError, InputError):
                pass
        tmp.unlink(missing_ok=True)
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8", partial: str | Path | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces `path` (whole, fsync'ed) when the block ends without error
    (see `_staged`: nothing changes on an error; `partial` keeps a Ctrl+C's records)."""
    assert mode in ("w", "wb"), mode
    with _staged(path, partial) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f


@contextlib.contextmanager
def stdout_errors() -> Iterator[None]:
    """Turn a failed write to standard output (`> /dev/full`, a full disk) into one InputError line.
    A closed pipe (`| head`) stays a BrokenPipeError, which the CLI ends quietly."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        raise InputError(f"cannot write to standard output: {why(e)}") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value: Any) -> str | None:
    """The first string inside `value` (str, or lists/dicts of them) holding a lone surrogate, else None.

    Such a string is not text: it comes from bytes that are not UTF-8 (`--prompt $'\\xff'`) or from a
    JSON escape like "\\ud800"; no tokenizer, file or database can take it.
    """
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return v
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return None


def check_text(text: str, what: str = "the prompt") -> None:
    """InputError naming the first character of `text` that is not text (see `lone_surrogate`):
    `tiankong generate -p` and `tiankong tokenize` say it alike, before any tokenizer sees it."""
    bad = _SURROGATE.search(text)
    if bad:
        raise InputError(
            f"{what} is not valid text at character {bad.start() + 1}: bytes that are not "
            "UTF-8 (or a lone surrogate escape such as \\ud800); give UTF-8 text"
        )


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(tmp_path)` fills a temporary file (any library may write it); it then replaces `path`."""
    with _staged(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def _commit(tmp: Path, target: Path) -> None:
    """Give the temporary file the target's permissions (or the umask's), rename it, sync the folder."""
    try:
        perm = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        perm = 0o666 & ~umask
    os.chmod(tmp, perm)
    os.replace(tmp, target)
    fsync_dir(target.parent)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
