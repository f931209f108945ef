"""From what a person types after `--model` to a model folder: `resolve_model`, offline.

Every command and trainer that takes a model goes through `resolve_model`, in this order:
  1. nothing: the bundled tiankong-mini;
  2. a path that exists: that path (a local path always wins over a name);
  3. `ollama:NAME[:TAG]`: the GGUF blob of Ollama's manifest (manifests/HOST/NS/NAME/TAG -> blob);
  4. `ORG/NAME[@REVISION]` (or `NAME`): the Hugging Face hub cache, laid out as
     `models--ORG--NAME/refs/REVISION` (a commit hash) -> `snapshots/<hash>/` (REVISION: main);
     a snapshot of GGUF files only (no config.json) gives its one .gguf file;
  5. `ORG/NAME` in LM Studio's models folder (`~/.lmstudio/models/ORG/NAME`), a folder or its
     one .gguf file; `ORG/NAME/FILE.gguf` picks one of several in either place.
Nothing found: one line naming every place searched. `list_models` is what `tiankong models` shows.

The cache layout is read here with pathlib (huggingface_hub is not a dependency); small files
(refs, manifests, configs) are read through engine/files, bounded and regular files only.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import ModelLoadError, TiankongError
from .files import parse_json, read_model_object, read_regular_bytes

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"  # one part of a repo id (the hub's own rule, roughly)
_NAME = re.compile(rf"(?:(?P<org>{_PART})/)?(?P<name>{_PART})(?:@(?P<rev>[A-Za-z0-9][A-Za-z0-9._/-]{{0,127}}))?")
_HASH = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_QUANT = re.compile(r"(?i)(?:^|[-._])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?=[-._]|$)")  # in GGUF file names
_OLLAMA_MODEL = "application/vnd.ollama.image.model"
_OLLAMA_CONFIG = "application/vnd.docker.container.image.v1+json"
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_SMALL = 1 << 20  # refs, manifests and Ollama configs are a few hundred bytes


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


# --- resolving one name ----------------------------------------------------------------------------


def resolve_model(spec: str | Path | None) -> Path:
    """The folder a `--model` value names; ModelLoadError in one line when it names none."""
    if spec is None or str(spec) == "":
        bundled = bundled_dir()
        if not (bundled / "model.safetensors").is_file():
            raise ModelLoadError(
                "no model given and the bundled model is missing: pass --model DIR "
                "(a local Hugging Face model folder) or set TIANKONG_MODEL"
            )
        return bundled
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if text.startswith("ollama:"):
        return _ollama_blob(text.removeprefix("ollama:"))
    if text.lower().endswith(".gguf") and text.count("/") == 2:  # ORG/NAME/FILE.gguf
        repo, _, file = text.rpartition("/")
        found = _gguf_in(repo, file)
        if found is not None:
            return found
    match = _NAME.fullmatch(text)
    if match is None or ".." in text or "--" in text:
        return path  # a path that does not exist: the loader says so
    if text == "tiankong-mini":
        return resolve_model(None)
    repo = f"{match['org']}/{match['name']}" if match["org"] else match["name"]
    found = _hf_snapshot(repo, match["rev"])
    if found is None and match["org"] and not match["rev"]:
        found = _lmstudio_folder(repo)
    if found is not None:
        return found
    where = [f"a folder {text} here", f"the Hugging Face cache ({hf_hub_cache()})"]
    if not match["rev"]:
        where.append(f"LM Studio ({', '.join(map(str, lmstudio_dirs()))})")
    raise ModelLoadError(
        f"no model {text!r}: searched {', '.join(where)}; `tiankong models` lists the models found, "
        "or pass --model DIR (a local Hugging Face model folder)"
    )


def display_name(model: str | Path) -> str:
    """A model's short name for screens: ORG/NAME for a Hugging Face cache snapshot (whose folder
    name is a commit hash), general.name for an Ollama blob, else the folder's (or file's) name."""
    path = Path(model)
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.removeprefix("models--").replace("--", "/", 1)
    if path.name.startswith("sha256-") and path.parent.name == "blobs":  # an Ollama blob: the file's own name
        from .gguf_header import peek

        name = peek(path, ("general.name",)).get("general.name")
        return name if isinstance(name, str) and name else path.name
    return path.name or str(model)


def _one_gguf(repo: str, folder: Path) -> Path | None:
    """The one .gguf file of a folder (None if it has none); several: one line naming them."""
    files = sorted(folder.glob("*.gguf"))
    if len(files) > 1:
        shown = ", ".join(f.name for f in files[:6]) + (f" and {len(files) - 6} more" if len(files) > 6 else "")
        raise ModelLoadError(
            f"{repo} holds {len(files)} GGUF files ({shown}); choose one: --model {repo}/{files[0].name} "
            f"or --model {files[0]}"
        )
    return files[0] if files else None


def _gguf_in(repo: str, file: str) -> Path | None:
    """ORG/NAME/FILE.gguf: that file in the repo's Hugging Face cache snapshot or LM Studio folder."""
    if not re.fullmatch(_PART, file) or not _NAME.fullmatch(repo):
        return None
    cached = _repo_dir(hf_hub_cache(), repo)
    if cached is not None:
        ref = cached / "refs" / "main"
        snapshots = [cached / "snapshots" / _read_ref(ref)] if ref.is_file() else sorted(cached.glob("snapshots/*"))
        for snapshot in snapshots:
            if (snapshot / file).is_file():
                return snapshot / file
    return next((root / repo / file for root in lmstudio_dirs() if (root / repo / file).is_file()), None)


def _repo_dir(cache: Path, repo: str) -> Path | None:
    folder = cache / ("models--" + repo.replace("/", "--"))
    if folder.is_dir():
        return folder
    if cache.is_dir():  # the hub's ids are case-insensitive; the cache keeps the spelling asked for
        want = folder.name.lower()
        return next((d for d in sorted(cache.iterdir()) if d.name.lower() == want and d.is_dir()), None)
    return None


def _read_ref(ref: Path) -> str:
    sha = read_regular_bytes(ref, _SMALL).decode("utf-8", "replace").strip()
    if not _HASH.fullmatch(sha):
        raise ModelLoadError(f"{ref} does not hold a commit hash; the Hugging Face cache is damaged, download again")
    return sha


def _hf_snapshot(repo: str, revision: str | None) -> Path | None:
    """refs/REVISION -> snapshots/<hash> (a hash or its prefix may be given instead), or None."""
    folder = _repo_dir(hf_hub_cache(), repo)
    if folder is None:
        return None
    rev = revision or "main"
    snapshots = sorted(p.name for p in (folder / "snapshots").glob("*") if p.is_dir())
    if (folder / "refs" / rev).is_file():
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
    snapshot = folder / "snapshots" / sha
    if not (snapshot / "config.json").exists():
        gguf = _one_gguf(repo, snapshot)
        if gguf is not None:  # a GGUF release: its .gguf file is the model
            return gguf
        raise ModelLoadError(
            f"{repo}@{rev} in the Hugging Face cache ({snapshot}) has no config.json; "
            "download the whole repository, not single files"
        )
    return snapshot


def _refs(folder: Path) -> Iterator[tuple[str, str]]:
    """(revision, hash) for every ref of a cached repo (refs/main, refs/pr/1, ...)."""
    refs = folder / "refs"
    for ref in sorted(refs.rglob("*")) if refs.is_dir() else ():
        if ref.is_file():
            try:
                yield ref.relative_to(refs).as_posix(), _read_ref(ref)
            except TiankongError:
                continue


def _lmstudio_folder(repo: str) -> Path | None:
    for root in lmstudio_dirs():
        folder = root / repo
        if (folder / "config.json").is_file():
            return folder
        gguf = _one_gguf(repo, folder) if folder.is_dir() else None
        if gguf is not None:
            return gguf
    return None


def _ollama_parts(name: str) -> tuple[list[str], str]:
    """NAME[:TAG] -> the manifest's path parts under manifests/ and the tag (default latest)."""
    name, _, tag = name.partition(":")
    parts, tag = name.split("/"), tag or "latest"
    if len(parts) > 3 or not all(re.fullmatch(_PART, p) for p in [*parts, tag]) or ".." in name:
        raise ModelLoadError(f"ollama:{name}: not an Ollama model name; give ollama:NAME or ollama:NAME:TAG")
    return ["registry.ollama.ai", "library"][: 3 - len(parts)] + parts, tag


def _ollama_blob(name: str) -> Path:
    """The GGUF blob an Ollama name points at (manifests/HOST/NS/NAME/TAG -> blobs/sha256-HEX)."""
    root = ollama_dir()
    parts, tag = _ollama_parts(name)
    manifest = root / "manifests" / Path(*parts) / tag
    if not root.is_dir():
        raise ModelLoadError(f"ollama:{name}: no Ollama store at {root}; set OLLAMA_MODELS to Ollama's models folder")
    if not manifest.is_file():
        raise ModelLoadError(f"ollama:{name}: not in the Ollama store ({manifest} is missing); `ollama list` shows it")
    for layer in _manifest(manifest).get("layers", []):
        if isinstance(layer, dict) and layer.get("mediaType") == _OLLAMA_MODEL:
            blob = _ollama_digest_path(root, layer.get("digest"), manifest)
            if not blob.is_file():
                raise ModelLoadError(f"ollama:{name}: its model blob {blob} is missing; run `ollama pull {name}`")
            return blob
    raise ModelLoadError(f"ollama:{name}: the manifest {manifest} names no model layer")


def _manifest(path: Path) -> dict[str, Any]:
    data = parse_json(read_regular_bytes(path, _SMALL).decode("utf-8", "replace"), str(path))
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not an Ollama manifest (not a JSON object)")
    return data


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


def list_models() -> list[FoundModel]:
    """Every model the places `resolve_model` searches hold: the bundled model first."""
    found: list[FoundModel] = []
    bundled = bundled_dir()
    if (bundled / "config.json").is_file():
        found.append(_describe("tiankong-mini", "bundled", bundled))
    cache = hf_hub_cache()
    for folder in sorted(cache.glob("models--*")) if cache.is_dir() else ():
        repo = folder.name.removeprefix("models--").replace("--", "/")
        refs = dict(_refs(folder)) or {s.name: s.name for s in sorted((folder / "snapshots").glob("*"))}
        for rev, sha in refs.items():
            snapshot = folder / "snapshots" / sha
            if (snapshot / "config.json").is_file():
                found.append(_describe(repo if rev == "main" else f"{repo}@{rev}", "huggingface", snapshot))
            elif rev == "main":
                found.extend(_gguf_entries(repo, "huggingface", snapshot))
    for root in lmstudio_dirs():
        for folder in sorted(root.glob("*/*")) if root.is_dir() else ():
            if folder.is_dir():
                found.extend(_lmstudio_entries(folder.relative_to(root).as_posix(), folder))
    found.extend(_ollama_entries(ollama_dir()))
    return found


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


def _lmstudio_entries(repo: str, folder: Path) -> list[FoundModel]:
    if (folder / "config.json").is_file():
        return [_describe(repo, "lmstudio", folder)]
    return _gguf_entries(repo, "lmstudio", folder)


def _gguf_entries(repo: str, source: str, folder: Path) -> list[FoundModel]:
    """A folder's .gguf files, with architecture and quantization read from each header (bounded);
    named ORG/NAME when it is the only one, else ORG/NAME/FILE.gguf (what --model takes)."""
    from .gguf_header import peek, quantization_name

    files = sorted(folder.glob("*.gguf"))
    out = []
    for gguf in files:
        facts = peek(gguf)
        quant = quantization_name(facts.get("general.file_type"))
        if quant is None and (hit := _QUANT.search(gguf.stem)):
            quant = hit[1].upper()  # older files may lack general.file_type: the file name says it
        name = repo if len(files) == 1 else f"{repo}/{gguf.name}"
        arch = facts.get("general.architecture")
        out.append(FoundModel(name, source, str(gguf), "gguf", arch, quant, None, _size(gguf)))
    return out


def _ollama_entries(root: Path) -> list[FoundModel]:
    out = []
    manifests = root / "manifests"
    for manifest in sorted(manifests.glob("*/*/*/*")) if manifests.is_dir() else ():
        host, ns, model, tag = manifest.relative_to(manifests).parts
        short = model if (host, ns) == ("registry.ollama.ai", "library") else f"{ns}/{model}"
        try:
            layers = {layer.get("mediaType"): layer.get("digest") for layer in _manifest(manifest).get("layers", [])}
            blob = _ollama_digest_path(root, layers.get(_OLLAMA_MODEL), manifest)
            facts = _ollama_config(root, layers.get(_OLLAMA_CONFIG), manifest)
        except (TiankongError, AttributeError, TypeError):
            continue
        arch, quant = facts.get("model_family"), facts.get("file_type")
        if not isinstance(arch, str) or not isinstance(quant, str):  # no config blob: the file's header says
            from .gguf_header import peek, quantization_name

            header = peek(blob) if blob.is_file() else {}
            arch = arch if isinstance(arch, str) else header.get("general.architecture")
            quant = quant if isinstance(quant, str) else quantization_name(header.get("general.file_type"))
        out.append(
            FoundModel(
                f"ollama:{short}:{tag}",
                "ollama",
                str(blob),
                "gguf",
                arch if isinstance(arch, str) else None,
                quant if isinstance(quant, str) else None,
                None,
                _size(blob),
            )
        )
    return out


def _ollama_config(root: Path, digest: Any, manifest: Path) -> dict[str, Any]:
    """The model's config blob (model_family, file_type), or {} when absent."""
    if digest is None:
        return {}
    path = _ollama_digest_path(root, digest, manifest)
    return _manifest(path) if path.is_file() else {}
