"""Sampling presets: TOML files of named `SamplingParams`, and their loader.

The bundled presets live next to this file. A user's own `*.toml` files (in `user_presets_dir()`)
add presets or override bundled ones by name; a user file may give only some values, which
overlay the bundled preset of that name, or `SamplingParams` defaults for a new name.

A preset's name is its file's name: `precise.toml` is the preset "precise", so that the file a
person finds under `--preset NAME` is NAME.toml, and a file copied in under another name cannot
quietly replace a preset (`mine.toml` saying name = "balanced" would change every command's default).

A preset file::

    name = "precise"                      # optional: if given, the file name without .toml
    description = "One or two sentences: what it is for."
    use = "code, facts, translation"
    [params]                              # any SamplingParams fields
    temperature = 0.3
    [recommended]                         # per parameter, the range worth exploring
    temperature = [0.2, 0.5]
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import platformdirs

from tiankong.engine.errors import InputError, quoted
from tiankong.engine.files import kind_of, read_regular_bytes
from tiankong.engine.params import SamplingParams

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_PRESET = "balanced"
BUNDLED_DIR = Path(__file__).parent

# Every tunable parameter has a recommended range; a seed has no "better" values.
RECOMMENDED_FIELDS: tuple[str, ...] = tuple(f for f in SamplingParams.RANGES if f != "seed")
_KEYS = ("name", "description", "use", "params", "recommended")
_DEFAULTS = SamplingParams()
_MAX_PRESET_BYTES = 1 << 20  # a preset is a few hundred bytes


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    use: str
    params: SamplingParams
    recommended: Mapping[str, tuple[float, float]]  # every field in RECOMMENDED_FIELDS
    source: Path  # the file that last defined or changed it


def user_presets_dir() -> Path:
    """$TIANKONG_CONFIG_DIR/presets, else the platform's config folder: on Linux
    $XDG_CONFIG_HOME/tiankong/presets or ~/.config/tiankong/presets (platformdirs). Empty variables
    count as unset."""
    if os.environ.get("TIANKONG_CONFIG_DIR"):
        return Path(os.environ["TIANKONG_CONFIG_DIR"]) / "presets"
    return Path(platformdirs.user_config_dir("tiankong", appauthor=False)) / "presets"


def load_presets(user_dir: Path | None = None) -> dict[str, Preset]:
    """Bundled presets, then the user's *.toml files (default: `user_presets_dir()`) on top."""
    presets: dict[str, Preset] = {}
    for path in sorted(BUNDLED_DIR.glob("*.toml")):
        preset = _parse(path, _read(path), base=None)
        presets[preset.name] = preset
    user_dir = user_presets_dir() if user_dir is None else Path(user_dir)
    if user_dir.exists() and not user_dir.is_dir():
        raise InputError(
            f"{user_dir} is a file, but your presets are read from a folder of that name; "
            "move the file away (and put your NAME.toml presets in a folder there)"
        )
    if user_dir.is_dir():
        for path in sorted(user_dir.glob("*.toml")):
            presets[path.stem] = _parse(path, _read(path), base=presets.get(path.stem))
    return presets


def get_preset(name: str, user_dir: Path | None = None) -> Preset:
    presets = load_presets(user_dir)
    if name not in presets:
        where = user_presets_dir() if user_dir is None else Path(user_dir)
        raise InputError(
            f"preset must be one of {', '.join(sorted(presets))}, got {name!r}; your own go in {where}/NAME.toml"
        )
    return presets[name]


def _read(path: Path) -> dict[str, Any]:
    # A regular file only (a FIFO or device named *.toml would block or never end), and bounded.
    # Found in the presets folder, not given: what is there under a preset's name is the fix.
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = stat.S_IFREG  # gone, or unreadable: read_regular_bytes says which
    if not stat.S_ISREG(mode):
        raise InputError(f"{path} is {kind_of(mode)}, not a preset file; remove or rename it")
    data = read_regular_bytes(path, _MAX_PRESET_BYTES, InputError)
    try:
        # A byte order mark, which some Windows editors write first, is no TOML: dropped.
        return tomllib.loads(data.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to be a preset; fix the file") from None


def _parse(path: Path, data: dict[str, Any], base: Preset | None) -> Preset:
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        if unknown[0] in SamplingParams.__dataclass_fields__:  # the first guess: temperature = 0.5 at the top
            raise InputError(f"{path}: {unknown[0]!r} is a sampling value; put it under a [params] line")
        raise InputError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(_KEYS)}")
    params_table = _table(path, data, "params")
    try:
        params = (base.params if base else _DEFAULTS).replace(**params_table)
    except InputError as exc:
        raise InputError(f"{path}: [params] {exc}") from None
    name = _text(path, data, "name", path.stem)
    if name != path.stem:
        raise InputError(
            f"{path}: says name = {quoted(name, 60)!r}, but a preset's name is its file name ({path.stem!r}); "
            f"rename the file to {quoted(name, 60)}.toml or remove the name line"
        )
    return Preset(
        name=name,
        description=_text(path, data, "description", base.description if base else f"from {path}"),
        use=_text(path, data, "use", base.use if base else "custom"),
        params=params,
        recommended=_recommended(path, _table(path, data, "recommended"), base),
        source=path,
    )


def _text(path: Path, data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}: {key} must be a non-empty string, got {value!r}")
    return value


def _table(path: Path, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise InputError(f"{path}: [{key}] must be a table, got {value!r}")
    return value


def _recommended(path: Path, table: dict[str, Any], base: Preset | None) -> Mapping[str, tuple[float, float]]:
    # Start from the bundled preset's ranges, or the full allowed range, then apply the file's.
    ranges = {f: base.recommended[f] if base else tuple(SamplingParams.RANGES[f][:2]) for f in RECOMMENDED_FIELDS}
    for field, value in table.items():
        if field not in RECOMMENDED_FIELDS:
            raise InputError(
                f"{path}: [recommended] unknown parameter {field!r}; valid names: {', '.join(RECOMMENDED_FIELDS)}"
            )
        lo, hi, _ = SamplingParams.RANGES[field]
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and lo <= value[0] <= value[1] <= hi
        )
        if not ok:
            raise InputError(
                f"{path}: [recommended] {field} must be [low, high] with "
                f"{_num(lo)} <= low <= high <= {_num(hi)}, got {value!r}"
            )
        kind = type(getattr(_DEFAULTS, field))  # int for top_k and max_new_tokens
        ranges[field] = (kind(value[0]), kind(value[1]))
    return MappingProxyType(ranges)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


__all__ = [
    "DEFAULT_PRESET",
    "RECOMMENDED_FIELDS",
    "Preset",
    "get_preset",
    "load_presets",
    "user_presets_dir",
]
