"""Ollama's store: its names (NAME[:TAG], as `ollama list` shows them), its manifests
(manifests/HOST/NS/MODEL/TAG) and the blobs their digests name (the GGUF model, its config).

Apart from engine/resolve.py because two readers share it: resolving `ollama:NAME` to its blob
(engine/resolve.py) and listing every model of the store (engine/model_list.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .files import parse_json, read_regular_bytes
from .model_places import _PART, _SMALL, _is_file

_OLLAMA_MODEL = "application/vnd.ollama.image.model"
_OLLAMA_CONFIG = "application/vnd.docker.container.image.v1+json"


# --- names -----------------------------------------------------------------------------------------


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


def ollama_canonical(name: str) -> str | None:
    """ollama:NAME[:TAG] in the form `tiankong models` lists (ollama:tk -> ollama:tk:latest,
    ollama:library/tk:q8 -> ollama:tk:q8); None for anything else. Two spellings of one model
    compare equal this way (a client asking serve for the name given to --model)."""
    if not name.startswith("ollama:"):
        return None
    try:
        (host, namespace, model), tag = _ollama_parts(name[len("ollama:") :])
    except (ModelLoadError, ValueError):  # not a name, or one of another shape
        return None
    return _ollama_name(host, namespace, model, tag)


# --- manifests and blobs ---------------------------------------------------------------------------


def _manifest(path: Path) -> dict[str, Any]:
    try:
        data = parse_json(read_regular_bytes(path, _SMALL).decode("utf-8", "replace"), str(path))
    except ModelLoadError as e:  # a folder, not JSON: a manifest is Ollama's to write, so pulling mends it
        problem, _, fix = str(e).rpartition("; ")
        if fix not in ("give the path of a real file", "fix or re-copy the file") or len(path.parts) < 4:
            raise
        pull = _ollama_name(*path.parts[-4:]).removeprefix("ollama:").removesuffix(":latest")
        raise ModelLoadError(f"{problem}; run `ollama pull {pull}` to fetch the model again") from None
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


def _ollama_config(root: Path, digest: Any, manifest: Path) -> dict[str, Any]:
    """The model's config blob (model_family, file_type), or {} when absent."""
    if digest is None:
        return {}
    path = _ollama_digest_path(root, digest, manifest)
    return _manifest(path) if _is_file(path) else {}


# --- what tiankong does not read -------------------------------------------------------------------

_OLLAMA_TEMPLATE = "application/vnd.ollama.image.template"
# Said where a model without a chat template is named (info, generate's and the trainers' notes).
GO_TEMPLATE = "Ollama's template layer is a Go template, not read"


def go_template(model: str | Path) -> bool:
    """Whether `model` was resolved from Ollama's store (ollama:NAME:TAG) and its manifest has a
    template layer: Ollama's chat format as a Go text/template, which is not Jinja and is not run.
    Its GGUF blob's own tokenizer.chat_template (Jinja) is used where it has one; with none, the
    model has no chat template here though Ollama chats with it. False whenever the manifest cannot
    be read: resolving it said why."""
    from .model_names import given_name
    from .model_places import ollama_dir

    name = given_name(model)
    if name is None or not name.startswith("ollama:"):
        return False
    try:
        parts, tag = _ollama_parts(name.removeprefix("ollama:"))
        manifest = _manifest(ollama_dir() / "manifests" / Path(*parts) / tag)
    except (ModelLoadError, OSError):
        return False
    return any(layer.get("mediaType") == _OLLAMA_TEMPLATE for layer in _layers(manifest))
