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
  5. `ORG/NAME` in LM Studio's models folder (the one its settings name, else
     `~/.lmstudio/models/ORG/NAME`), a folder or its one .gguf file; `lmstudio:ORG/NAME` looks only there (for a name the Hugging Face cache holds too).
`ORG/NAME[@REVISION]/FILE.gguf` (or `.../SUB/FILE.gguf`) picks one of several files in either
place, and `ORG/NAME[@REVISION]/SUB` a subfolder, as a folder is taken: its one .gguf file.
A .gguf file may sit in a subfolder of its repository (unsloth and bartowski put each big
quantization in one: ORG/NAME/Q8_0/FILE.gguf). A vision projector (mmproj-*.gguf, architecture
`clip`) sits beside the model it serves and is no language model: it is passed over.
A name both places hold is the Hugging Face cache's, and the ModelPath says so in `note`, a line
for the CLI to show (the engine never prints); so does a training run's output folder that has not
reached its last step (`unfinished_run`, with the run's own --resume command; `run_state` gives the
step its model is at), and a reward model's folder, which loads as a chat model too (`reward_model`).
Nothing found: one line naming every place searched and the name that comes closest (a name whose
folder part is a folder here, runs/ of runs/sft, is said as the missing path it then most likely is).
`list_models` (engine/model_list.py) is what `tiankong models` shows; every name it lists resolves.

Where models live and how their places are probed (every probe through `_stat` and `_scan`, so
an unreadable folder or a broken link is one line) is engine/model_places.py; Ollama's manifests
and blobs are read by engine/ollama.py. The name grammar and a repository's lookup (the Hugging
Face cache at a revision, LM Studio's folders, a file or subfolder in either) are
engine/repo_lookup.py; ModelPath and the names a resolved model goes by (given_name, display_name,
model_key) are engine/model_names.py.
"""

from __future__ import annotations

import contextvars
import difflib
import json
import os
import re
import stat
from pathlib import Path

from .errors import ModelLoadError, TiankongError
from .files import kind_of
from .model_list import list_models
from .model_names import ModelPath, _carries, _model_path
from .model_places import (
    _PART,
    WalkTooLong,
    _Denied,
    _gguf_files,
    _gguf_in,
    _is_dir,
    _is_file,
    _regular,
    _repo_dir,
    _scan,
    _starts_gguf,
    _stat,
    _unreadable,
    bounded_walk,
    bundled_dir,
    hf_hub_cache,
    lmstudio_dirs,
    ollama_dir,
)
from .ollama import _manifest, _model_digest, _ollama_digest_path, _ollama_name, _ollama_parts
from .repo_lookup import (
    _REV,
    LMSTUDIO,
    _hf_folders,
    _hf_model,
    _hf_snapshot,
    _in_repo,
    _lmstudio_folder,
    _noted,
    _one_gguf,
    _parse,
    _parse_lmstudio,
    choose_hint,
    lmstudio_repos,
)

# llama.cpp's names for a hub repo: its address in front (hf.co/ORG/NAME), a quantization behind (ORG/NAME:Q8_0).
_HUB_PREFIX = re.compile(r"^(?:https?://)?(?:hf\.co|(?:www\.)?huggingface\.co)/", re.IGNORECASE)  # hosts: any case
# A revision before the quantization (ORG/NAME@REV:QUANT): a git ref holds no ":", so the last one ends it.
_QUANT = re.compile(
    rf"(?P<repo>{_PART}/{_PART})(?:@(?P<rev>{_REV.pattern}))?:(?P<quant>[A-Za-z0-9][A-Za-z0-9_]{{0,31}})"
)
_SUGGEST = contextvars.ContextVar("_SUGGEST", default=True)  # off while list_models checks its own names
# A name not found is matched against every listed name; the stores' walk for it gives up past these (a
# hundred models in each store are a few thousand entries, listed in well under a second).
_SUGGEST_ENTRIES = 20_000
_SUGGEST_SECONDS = 2.0


# --- resolving one name ----------------------------------------------------------------------------


def resolve_model(spec: str | Path | None) -> Path:
    """The folder (or GGUF file) a `--model` value names; ModelLoadError in one line when it names none."""
    if spec is None or str(spec) == "":
        bundled = bundled_dir()
        if not _is_file(bundled / "model.safetensors"):
            raise ModelLoadError(
                "no model given and the bundled model is missing: give a local Hugging Face model folder "
                "(--model DIR or TIANKONG_MODEL, or its path in Python)"
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
            note = "; ".join(n for n in (unfinished_run(path), reward_model(path)) if n)
            return _model_path(path, None, note) if note else path
        found = _one_gguf(text, path, by_name=False)
        if found is None and (hidden := _hidden_name(text)) is not None:
            raise ModelLoadError(
                f"{text} is a folder here ({path.absolute()}) with no config.json and no .gguf file, and a path "
                f"wins over a name, so {hidden[0]} is not looked at; give --model {hidden[1]} for that one"
            )
        return found or path  # else the loader names what the folder lacks
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


def _hidden_name(text: str) -> tuple[str, str] | None:
    """(the place, the name that reaches it) where `text`, a folder here that holds no model, is also
    ORG/NAME of the Hugging Face cache or LM Studio: the person most likely meant that model. None
    for a path that is no such name, and where neither place has it."""
    parsed = _parse(text)
    if parsed is None or "/" not in parsed[0] or text.startswith(("/", ".", "~")):
        return None
    try:
        if _repo_dir(hf_hub_cache(), parsed[0]) is not None:
            return f"the Hugging Face cache's {text}", f"hf.co/{text}"
        if parsed[1] is None and lmstudio_repos(parsed[0])[0]:
            return f"LM Studio's {text}", f"{LMSTUDIO}{text}"
    except TiankongError:  # a place that cannot be read: the folder's own line then
        return None
    return None


def unfinished_run(folder: Path) -> str | None:
    """A note when `folder` is the output of a `tiankong train` run that has not reached its last step
    (stopped, or still running): its model is then a checkpoint's, not the run's result, and the note
    gives the command that finishes it where the run recorded one. None for any other folder, and for
    a finished run."""
    state = run_state(folder)
    if state is None or state[0] >= state[1]:
        return None
    command = resume_command(folder)
    # without one: a run of the Python API, or of a tiankong that did not record its command
    finish = f"finish it with: {command}" if command else "finish it with its `tiankong train` command and --resume"
    return (
        f"{folder} is an unfinished training run (step {state[0]} of {state[1]}): its model is that step's "
        f"checkpoint; {finish}"
    )


def reward_model(folder: Path) -> str | None:
    """A note when `folder` is the output of `tiankong train reward` (it holds reward_config.json, as
    does PPO's value/): its weights load as a chat model, but were trained to score answers, not to write
    them, so a chat with it reads as a broken model. None for any other folder."""
    if not _is_file(folder / "reward_config.json"):
        return None
    base = (_train_record(folder) or {}).get("model")
    started = f"the model it was trained from ({base}), " if isinstance(base, str) and base else ""
    return (
        f"{folder} is a reward model (it holds reward_config.json): it scores answers and was not trained to "
        f"write them; chat with {started}or the output of `tiankong train ppo --reward {folder}`"
    )


def resume_command(folder: Path) -> str | None:
    """The command that continues a `tiankong train` run in `folder`, as its train_config.json recorded
    it, with "(in DIR)" where it was started elsewhere than here; None where none was recorded."""
    record = _train_record(folder) or {}
    command, started_in = record.get("resume_command"), record.get("started_in")
    if not isinstance(command, str) or not command:
        return None
    return command + (f" (in {started_in})" if isinstance(started_in, str) and started_in != os.getcwd() else "")


def run_state(folder: Path) -> tuple[int, int] | None:
    """(the newest checkpoint's step, the run's steps) of a `tiankong train` output folder, read from
    its train_config.json ("steps") and checkpoints/step-N (trainers/checkpoint.py's layout); None for
    any other folder. A stable identity of what the folder's model is while the run goes on: the
    same folder at another step holds another model."""
    record = _train_record(folder)
    steps = record.get("steps") if record is not None else None
    try:
        done = [int(m[1]) for p in (folder / "checkpoints").iterdir() if (m := re.fullmatch(r"step-(\d+)", p.name))]
    except OSError:
        return None
    if not done or type(steps) is not int:
        return None
    return max(done), steps


def _train_record(folder: Path) -> dict | None:
    """A run folder's train_config.json, or None (no such file, too big to be one, unreadable)."""
    try:
        record = folder / "train_config.json"
        if not _is_file(record) or record.stat().st_size > 1 << 20:
            return None
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _by_name(text: str, path: Path) -> Path:
    """A name of the Hugging Face cache or LM Studio: ORG/NAME[@REV], NAME, ORG/NAME[@REV]/PATH, and
    llama.cpp's spellings of one: hf.co/ORG/NAME (or https://huggingface.co/ORG/NAME), ORG/NAME:QUANT."""
    text = _HUB_PREFIX.sub("", text)  # the hub's address in front of ORG/NAME names the same repo
    if (quant := _QUANT.fullmatch(text)) is not None:
        return _by_quant(text, quant["repo"], quant["quant"], quant["rev"])
    parsed = _parse(text)
    if parsed is None:  # no Hugging Face name; LM Studio's folders may still be named so
        loose = _parse_lmstudio(text)
        found = _lmstudio_lookup(*loose) if loose is not None else None
        if found is not None:
            return found
        raise _not_found(text, path, searched_lmstudio=loose is not None)
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


def _by_quant(text: str, repo: str, quant: str, rev: str | None = None) -> Path:
    """ORG/NAME[@REV]:QUANT (llama.cpp's -hf REPO:QUANT): the one .gguf file of the repo (its Hugging
    Face snapshot at REV, else main's; without REV, else its LM Studio folder) whose name holds QUANT as
    a word, in any case; one line naming the files when several or none do."""
    lmstudio, denied = lmstudio_repos(repo) if rev is None else ([], None)  # LM Studio keeps no revisions
    folders = _hf_folders(repo, rev) or lmstudio
    if not folders:
        raise denied or _not_found(text, Path(text), searched_hf=True, searched_lmstudio=rev is None)
    folder = folders[0]
    word = re.compile(rf"(?:^|[-._]){re.escape(quant.lower())}(?:[-.]|$)")  # Q4_K is not Q4_K_M
    files = [f.relative_to(folder).as_posix() for f in _gguf_files(folder)]
    hits = [f for f in files if word.search(Path(f).name.lower().removesuffix(".gguf"))]
    if len(hits) == 1:
        return _gguf_in(folder, folder / hits[0])
    shown = ", ".join((hits or files)[:8]) or "none"
    what = f"{len(hits)} .gguf files of quantization {quant}" if hits else f"no .gguf file of quantization {quant}"
    at = "" if rev is None else f"@{rev}"
    choose = choose_hint(f"{repo}{at}", folder, [folder / f for f in hits or files])
    raise ModelLoadError(f"{text}: {repo}{at} ({folder}) holds {what} (its .gguf files: {shown}){choose}")


def _lmstudio_name(text: str, path: Path) -> Path:
    """lmstudio:ORG/NAME[/PATH]: looked up in LM Studio's folders only."""
    name = text.removeprefix(LMSTUDIO)
    parsed = _parse_lmstudio(name)
    if parsed is None:
        raise ModelLoadError(
            f"{text}: not an LM Studio name; give {LMSTUDIO}ORG/NAME or {LMSTUDIO}ORG/NAME/FILE.gguf "
            "(no part empty, '.' or '..')"
        )
    found = _lmstudio_lookup(*parsed)
    if found is not None:
        return found
    close = _closest(text)
    raise ModelLoadError(
        f"no model {text!r}: {_lmstudio_searched()} has no {name}; "
        + (f"did you mean {close}? " if close else "")
        + "(`tiankong models` lists the names found)"
    )


def _lmstudio_lookup(repo: str, sub: str | None) -> Path | None:
    """LM Studio's ORG/NAME[/PATH] (its folder's model, or PATH in it); None when no folder is named so."""
    return _in_repo(repo, None, sub, hf=False) if sub is not None else _lmstudio_folder(repo)


def _not_found(
    text: str, path: Path, searched_hf: bool = False, searched_lmstudio: bool = False, bare: bool = False
) -> ModelLoadError:
    """One line: the places searched, and the listed name closest to `text` when one is close. A name
    whose folder part is a folder here (runs/sft with runs/ here) is said as the missing path it is."""
    close = _closest(text)
    listed = "`tiankong models` lists the names found"
    hint = f"did you mean {close}? ({listed})" if close else listed
    if not (searched_hf or searched_lmstudio):  # not a name: a path, or ollama's NAME:TAG without ollama:
        return ModelLoadError(
            f"no model {text!r}: {path} does not exist; {hint}; or pass a model folder or a .gguf file"
        )
    where = ["a path here", f"the Hugging Face cache ({hf_hub_cache()})"]
    if searched_lmstudio:
        where.append(_lmstudio_searched())
    note = (
        " (a NAME without ORG/ is looked up only there; LM Studio's names are ORG/NAME, Ollama's ollama:NAME[:TAG])"
        if bare
        else ""
    )
    searched = f"searched {', '.join(where)}{note}"
    if close:  # most likely a typo: the name first, where it looked after
        return ModelLoadError(f"no model {text!r}: did you mean {close}? ({searched}; {listed})")
    if searched_hf and (as_path := _missing_path(text, path)) is not None:
        return ModelLoadError(as_path)
    # tiankong never downloads; a new user's first "no model" is most often a model not fetched yet.
    repo, _, rev = text.partition("@")
    fetch = "ORG/NAME"
    if searched_hf and not bare and repo.count("/") == 1 and "/" not in rev:  # not ORG/NAME@REV/FILE.gguf
        fetch = f"{repo} --revision {rev}" if rev else repo
    return ModelLoadError(
        f"no model {text!r}: {searched}; {listed}, or pass a model folder or FILE.gguf; "
        f"tiankong never downloads: `hf download {fetch}` puts a model in the Hugging Face cache"
    )


# `tiankong train`'s commands (tui/train_cli.py's TRAINERS): a run folder named after one was most likely made by it.
_TRAIN_COMMANDS = ("pretrain", "sft", "reward", "ppo", "dpo")


def _missing_path(text: str, path: Path) -> str | None:
    """The line for ORG/NAME[/...] that no place holds as a name and whose folder part is a folder here
    (runs/ of runs/sft, a run folder not trained yet or mistyped): a path, most likely, and its fix is a
    folder, not `hf download`. None where no folder on its way is here (then it reads as a hub name)."""
    if path.is_absolute() or "@" in text:  # absolute: never a name; @REV: a hub name's
        return None
    try:
        here = next((p for p in path.parents if p != Path(".") and _is_dir(p)), None)
        if here is None:
            return None
        child = path.relative_to(here).parts[0]  # the first part that is not here
        near = difflib.get_close_matches(child, [p.name for p in _scan(here) if _is_dir(p)], n=1, cutoff=0.75)
    except TiankongError:  # a folder on the way that cannot be read: the name's line then
        return None
    reads = (
        f"{here}/ is a folder here, so {text} reads as a path; neither the Hugging Face cache nor LM Studio holds it"
    )
    if near:  # mistyped: the folder that is there, with the rest of the path as typed
        meant = here / near[0] / path.relative_to(here / child)
        return f"no model {text!r}: no folder {path} here; did you mean {meant}? ({reads})"
    word = re.match(r"[a-z]+", path.name.lower())
    command = word[0] if word and word[0] in _TRAIN_COMMANDS else "METHOD"
    return (
        f"no model {text!r}: no folder {path} here ({reads}); give an existing model folder, or train one "
        f"there first (`tiankong train {command} --output {text}`)"
    )


def _lmstudio_searched() -> str:
    """LM Studio's folders as a not-found line names them, with what its settings files make unusable
    (a Models Directory that does not exist, a settings.json that is not JSON): the likelier reason
    a model it holds is not found."""
    notes: list[str] = []
    dirs = lmstudio_dirs(notes)
    return f"LM Studio ({'; '.join([', '.join(map(str, dirs)), *notes])})"


def _closest(text: str) -> str | None:
    """The listed name `text` most likely meant, as a person types it: an Ollama name typed without
    ollama: (or without its host, as hf.co/...), a repository named without its ORG/ (each place's
    where several hold it: the Hugging Face cache's TestOrg/NAME and lmstudio:TestOrg/NAME, a repo
    whose files are listed one by one as ORG/NAME/FILE.gguf included), else the closest spelling,
    a repo's ORG/NAME among them (lmstudio:ORG/NAME for a name typed so). An Ollama name's :latest is
    left out unless `text` gave a tag (Ollama takes the bare name for it). None when nothing is close
    or nothing can be listed."""
    if not _SUGGEST.get():
        return None
    try:
        with bounded_walk(_SUGGEST_ENTRIES, _SUGGEST_SECONDS):
            found = list_models()
    except (TiankongError, OSError, WalkTooLong):  # no suggestion beats a long silence before the line
        return None
    names = [m.name for m in found]
    key = _HUB_PREFIX.sub("", text).lower().removeprefix("ollama:")
    tagged = ":" in key  # an Ollama tag, or llama.cpp's ORG/NAME:QUANT: suggested with one

    def typed(name: str) -> str:  # ollama:NAME:latest as Ollama's own commands take it
        return name if tagged or not name.startswith("ollama:") else name.removesuffix(":latest")

    for name in names:
        short = name.lower().removeprefix("ollama:")
        if short in (key, f"{key}:latest") or (name.startswith("ollama:") and short.endswith(f"/{key}")):
            return typed(name)
    # The repositories the listed names are in: ORG/NAME (a file of it listed as ORG/NAME/FILE.gguf).
    repos = {n.lower(): n for n in names}
    for name in names:
        if not name.startswith("ollama:") and name.count("/") >= 2:
            head = "/".join(name.split("/")[:2])
            repos.setdefault(head.lower(), head)
    if "/" not in key:  # NAME: each ORG/NAME (the Hugging Face cache's, LM Studio's) that holds it
        held = [n for k, n in repos.items() if k.split(":")[-1].endswith(f"/{key}") and k.count("/") == 1]
        if held:
            return " or ".join(sorted(held, key=lambda n: n.startswith(LMSTUDIO))[:3])
    pool: dict[str, str] = {}  # a spelling to match -> the name suggested
    if text.startswith(LMSTUDIO):  # LM Studio's own names (and their repos), suggested as typed
        key = text.removeprefix(LMSTUDIO).lower()
        for m in found:
            name = m.name.removeprefix(LMSTUDIO)
            if m.source == "lmstudio" and not os.path.isabs(name):  # not one listed by its path
                for n in (name, "/".join(name.split("/")[:2])):
                    pool.setdefault(n.lower(), LMSTUDIO + n)
    else:
        key = text.lower()
        for name in [*names, *repos.values()]:
            pool.setdefault(typed(name).lower(), typed(name))
        for name in [*names, *repos.values()]:  # a bare NAME: the Ollama name or repo it may have meant
            if "/" not in key and name.count("/") <= 1:
                pool.setdefault(typed(name).lower().removeprefix("ollama:").split("/")[-1], typed(name))
    close = difflib.get_close_matches(key, list(pool), n=1, cutoff=0.75)
    return pool[close[0]] if close else None


def reaches(name: str, path: str | Path) -> bool:
    """Whether `--model name` takes the model at `path` (for list_models: a name another place
    holds first does not)."""
    return taken_by(name) == Path(path)


def taken_by(name: str) -> Path | None:
    """The model `--model name` takes; None where it refuses the name (for list_models, which says
    which). No suggestions are looked for on the way: they would list the models."""
    token = _SUGGEST.set(False)
    try:
        return resolve_model(name)
    except TiankongError:
        return None
    finally:
        _SUGGEST.reset(token)


# --- Ollama's names --------------------------------------------------------------------------------


def _any_case(root: Path, parts: list[str]) -> list[str] | None:
    """`parts` under `root` as the folder spells them, matched ignoring case (one match a level,
    the exact one first); None where a level has none, or several."""
    found: list[str] = []
    try:
        for part in parts:
            here = root.joinpath(*found)
            hits = (
                [part]
                if _stat(here / part) is not None
                else [p.name for p in _scan(here) if p.name.lower() == part.lower()]
            )
            if len(hits) != 1:
                return None
            found.append(hits[0])
    except ModelLoadError:  # not readable, a broken link: the exact path's line says it
        return None
    return found


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
    if _stat(manifest) is None and (stored := _any_case(root / "manifests", [*parts, tag])) is not None:
        *parts, tag = stored  # Ollama's names ignore case (it lowercases them): the store's spelling
        host, namespace, model = parts
        model_dir, manifest = root / "manifests" / Path(*parts), root / "manifests" / Path(*stored)
        pull = _ollama_name(host, namespace, model, tag).removeprefix("ollama:").removesuffix(":latest")
    if _stat(manifest) is None:
        tags = [p.name for p in _scan(model_dir)]
        if tags:  # the closest tag (q4 -> q4_0), else the first; :latest left out, as Ollama takes it
            near = difflib.get_close_matches(tag.lower(), tags, n=1, cutoff=0.6) or tags
            short = _ollama_name(host, namespace, model, near[0]).removeprefix("ollama:").removesuffix(":latest")
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
