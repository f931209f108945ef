"""What a resolved model is called: `ModelPath` (the path resolve_model found, carrying the name it was
given where the path spells none, and a note for the user), `given_name`, and the names screens,
stored chats, votes and the server show for a model (`display_name`, `model_key`).

Apart from engine/resolve.py because most readers only name a model already resolved (screens,
stores, trainers) and need none of the lookup; resolve.py makes ModelPaths and keeps what they carry.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path, PosixPath, WindowsPath
from typing import Any

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


# --- the names a model is shown and stored by ------------------------------------------------------


def display_name(model: str | Path) -> str:
    """A model's short name for screens: the name an Ollama model was given (ollama:NAME:TAG),
    ORG/NAME[@REV] for a Hugging Face cache snapshot (whose folder name is a commit hash; @REV where
    it is not main's), ORG/NAME[@REV]/FILE.gguf
    for a GGUF file in one (never its blob's hash), lmstudio:ORG/NAME[/FILE.gguf] for a model in LM
    Studio's folders (its file's name alone said neither where it was nor how to load it again),
    general.name for an Ollama blob stored before names were kept, else the folder's (or file's) name."""
    given = given_name(model)
    if given is not None:
        return given
    path = Path(model)
    parts = path.parts
    if "snapshots" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i >= 1 and parts[i - 1].startswith("models--"):
            repo = parts[i - 1].removeprefix("models--").replace("--", "/", 1)
            return "/".join([repo + _revision(Path(*parts[:i]), parts[i + 1]), *parts[i + 2 :]])
    lmstudio = _lmstudio_name(path)
    if lmstudio is not None:
        return lmstudio
    if path.name.startswith("sha256-") and path.parent.name == "blobs":  # an Ollama blob: the file's own name
        from .gguf_header import peek

        name = peek(path, ("general.name",)).get("general.name")
        return name if isinstance(name, str) and name else path.name
    return path.name or str(model)


def _revision(repo_folder: Path, sha: str) -> str:
    """ "@REV" for a cached snapshot that is not the repo's main (another revision is another model, as
    `tiankong models` lists it: ORG/NAME@REV): a ref naming it (v2, refs/pr/1), else its hash's first
    10 digits; "" for main's snapshot, and for a repo with no refs to tell (the cache's one snapshot)."""
    from .model_places import _refs

    refs = dict(_refs(repo_folder))
    if not refs or refs.get("main") == sha:
        return ""
    return "@" + next((rev for rev, to in refs.items() if to == sha), sha[:10])


def _lmstudio_name(path: Path) -> str | None:
    """lmstudio:ORG/NAME[/PATH] for a model (folder or file) at least ORG/NAME deep in one of LM
    Studio's models folders, the name that loads it from there; None for any other path."""
    from .model_places import lmstudio_dirs
    from .repo_lookup import LMSTUDIO

    path = Path(os.path.abspath(path.expanduser()))
    for root in lmstudio_dirs():
        if root in path.parents and len(rel := path.relative_to(root).parts) >= 2:
            return LMSTUDIO + "/".join(rel)
    return None


BUNDLED = "tiankong-mini"  # the bundled model's name, which resolves to it (resolve.py) wherever it is installed


def model_key(model: str | Path) -> str:
    """How stored chats and votes name a local model: the name an Ollama model was given
    (ollama:NAME:TAG, which resolves again; its blob is shared by tags), the bundled model's name
    (its folder differs per install: a second install's votes counted as another model), else its
    absolute path with links resolved, but a file keeps its own name (a GGUF file in the Hugging Face
    cache links to blobs/<hash>, a name display_name could not turn back into ORG/NAME). A training
    run's output folder that has not reached its last step adds the step its model is at
    (`/runs/ppo@step-4`): the same folder later holds another model, and votes cast on a checkpoint
    must not count for the finished run."""
    given = given_name(model)
    if given is not None:
        return given
    path = Path(model).expanduser()
    if os.path.isdir(path):
        from .resolve import run_state

        key, state = str(path.resolve()), run_state(path)
        if state is not None and state[0] < state[1]:
            return f"{key}@step-{state[0]}"
    else:
        key = str(path.absolute().parent.resolve() / path.name)
    return BUNDLED if key == _bundled_folder() else key


def stored_model(key: str) -> str:
    """A stored model key as it is counted (the models leaderboard): a record stored before the bundled
    model was stored by name holds its folder, `.../models/tiankong-mini` of whichever install it was,
    read as the name. A folder of one's own named so (a copy in ~/models) reads so too."""
    parts = Path(key).parts
    return BUNDLED if key.startswith("/") and parts[-2:] == ("models", BUNDLED) else key


@functools.lru_cache(maxsize=1)
def _bundled_folder() -> str:
    from tiankong.models import default_model_dir

    return os.path.realpath(default_model_dir())
