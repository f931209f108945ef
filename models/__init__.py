"""Models bundled with tiankong (installed as `tiankong.models`).

`default_model_dir()` is the folder of tiankong-mini, the small English/Chinese chat model trained by
tiankong's own trainers on generated, licence-clean text (see models/tiankong-mini/README.md, and
models/build/ for the one command that rebuilds it).
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "tiankong-mini"


def default_model_dir() -> Path:
    """The bundled model's Hugging Face folder (config.json, model.safetensors, tokenizer files)."""
    return Path(__file__).resolve().parent / DEFAULT_MODEL
