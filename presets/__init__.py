"""Sampling presets: TOML files of named `SamplingParams`, and their loader.

The bundled presets live next to this file. A user's own `*.toml` files (in `user_presets_dir()`)
add presets or override bundled ones by name; a user file may give only some values, which
overlay the bundled preset of that name, or `SamplingParams` defaults for a new name.

A preset's name is its file's name: `precise.toml` is the preset "precise", so that the file a
person finds under `--preset NAME` is NAME.toml, and a file copied in under another name cannot
quietly replace a preset (`mine.toml` saying name = "balanced" would change every command's default).
Names ignore case, on every filesystem: `Balanced.toml` overrides "balanced" (as it would where the
filesystem ignores case), `--preset Creative` is "creative", and two user files whose names differ
only in case (possible only where the filesystem tells them apart) leave that preset unusable until
one goes. Hidden files (`.#mine.toml`, Emacs's lock link; `._mine.toml`, macOS's resource fork) are
no presets and are not read.

One broken user file breaks only its own preset: `load_presets` leaves it out and keeps its one-line
error in `Presets.broken`, which `get_preset` raises when that preset is asked for by name and
`tiankong presets` and the chat show, so the other presets keep working. A file whose name holds a
control character (an escape sequence, say) is such a broken file: its name cannot be shown or typed
as it is, so it asks to be renamed.

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

import json
import os
import re
import stat
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import platformdirs

from tiankong.engine.errors import InputError, quoted
from tiankong.engine.files import atomic_write_text, kind_of, read_regular_bytes
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
    # Per field of RECOMMENDED_FIELDS, the range worth exploring: every field for a bundled preset
    # (and one overriding it); for a new user preset only the fields its file names (no range rather
    # than the whole allowed one, which recommends nothing).
    recommended: Mapping[str, tuple[float, float]]
    source: Path  # the file that last defined or changed it


class Presets(dict[str, Preset]):
    """Presets by name (bundled first, then the user's in file order), looked up ignoring case:
    `presets["Balanced"]` is "balanced". `broken` maps the name of each user preset whose file
    could not be used to that file's one-line error; those names are not keys."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: dict[str, str] = {}

    def key(self, name: str) -> str | None:
        """The name as the presets spell it (a preset's or a broken one's), or None."""
        folded = fold(name)
        return next((k for k in [*self, *self.broken] if fold(k) == folded), None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.key(name) in self.keys()

    def __getitem__(self, name: str) -> Preset:
        return super().__getitem__(self.key(name) or name)

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def find(self, name: str, where: Path | None = None) -> Preset:
        """The preset `name` (any case); InputError with a broken one's own error, or naming the
        presets there are (and `where` a person's own go) for an unknown one."""
        key = self.key(name)
        if key in self.broken:
            raise InputError(self.broken[key])
        if key is None:
            own = f"; your own go in {where}/NAME.toml" if where is not None else ""
            raise InputError(f"preset must be one of {', '.join(sorted(self))}, got {quoted(name, 60)!r}{own}")
        return self[key]


def fold(name: str) -> str:
    """A preset name as names compare: case ignored, and one Unicode spelling (macOS hands back
    "é" as e and a combining accent)."""
    return unicodedata.normalize("NFC", name).casefold()


def user_presets_dir() -> Path:
    """$TIANKONG_CONFIG_DIR/presets, else the platform's config folder: on Linux
    $XDG_CONFIG_HOME/tiankong/presets or ~/.config/tiankong/presets (platformdirs). Empty variables
    count as unset."""
    if os.environ.get("TIANKONG_CONFIG_DIR"):
        return Path(os.environ["TIANKONG_CONFIG_DIR"]) / "presets"
    return Path(platformdirs.user_config_dir("tiankong", appauthor=False)) / "presets"


def load_presets(user_dir: Path | None = None) -> Presets:
    """Bundled presets, then the user's NAME.toml files (default: `user_presets_dir()`) on top.

    A user file that cannot be used (unreadable, invalid TOML, a value out of range, a name clash)
    is left out and its error kept in `.broken`; a presets path that is a file, not a folder, is an
    InputError (no user preset could be read, and saving one would fail)."""
    presets = Presets()
    for path in sorted(BUNDLED_DIR.glob("*.toml")):
        preset = _parse(path, _read(path), base=None)
        presets[preset.name] = preset
    user_dir = user_presets_dir() if user_dir is None else Path(user_dir)
    if user_dir.exists() and not user_dir.is_dir():
        raise InputError(
            f"{user_dir} is a file, but your presets are read from a folder of that name; "
            "move the file away (and put your NAME.toml presets in a folder there)"
        )
    _refuse_a_file_above(user_dir)
    if user_dir.is_dir():
        same_name: dict[str, list[Path]] = {}  # casefolded name -> its files, in sorted order
        for path in sorted(user_dir.glob("*.toml")):
            if path.name.startswith("."):  # hidden: an editor's lock link, macOS's ._ files, ".toml"
                continue
            if any(unicodedata.category(ch) in _HIDDEN for ch in path.name):
                presets.broken[path.stem] = (
                    f"{_escaped(str(path))}: its name holds a control character, so it cannot be shown or "
                    "typed as it is; rename the file to a name of letters, digits, _ - and ."
                )
                continue
            same_name.setdefault(fold(path.stem), []).append(path)
        for paths in same_name.values():
            _add_user_preset(presets, paths)
    return presets


# Characters no terminal shows as they are (errors.quoted drops the same): controls, format characters
# (a bidi override), lone surrogates (an undecodable byte of a file name), line and paragraph separators.
_HIDDEN = ("Cc", "Cf", "Cs", "Zl", "Zp")


def _escaped(text: str) -> str:
    """`text` with each hidden character written as its Python escape ("esc\\x1b[31mred.toml")."""
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) in _HIDDEN else ch for ch in text)


def _refuse_a_file_above(user_dir: Path) -> None:
    """InputError when a file stands where a folder above the presets folder goes (TIANKONG_CONFIG_DIR
    set to a file, say): no preset of the user's could be read there, nor saved, and "yours go in
    FILE/presets" would say otherwise."""
    for above in user_dir.parents:
        if above.exists():
            if above.is_dir():
                return
            env = os.environ.get("TIANKONG_CONFIG_DIR")
            if env and user_dir == Path(env) / "presets":
                what = f"{env}, a file" if above == Path(env) else f"{env}, but {above} is a file"
                raise InputError(
                    f"TIANKONG_CONFIG_DIR is {what}, not a folder; set TIANKONG_CONFIG_DIR to a folder "
                    "(your presets go in its presets folder) or unset it"
                )
            raise InputError(
                f"{above} is a file, not a folder, so no presets can be read from {user_dir}; move that file away"
            )


def _missing_home(folder: Path) -> Path | None:
    """The home folder when it does not exist and `folder` is inside it (HOME=/nonexistent in a
    service), else None: saving a preset must not build a home nobody has."""
    home = Path(os.path.expanduser("~"))
    return None if home.exists() or not folder.is_relative_to(home) else home


def _add_user_preset(presets: Presets, paths: list[Path]) -> None:
    """The user file in `paths` over the bundled preset of its name (which keeps its place in the
    order), or, when it cannot be used, that preset gone and the error in presets.broken."""
    name = presets.key(paths[0].stem) or paths[0].stem  # a bundled preset keeps its spelling
    try:
        if len(paths) > 1:
            raise InputError(
                f"{paths[0]} and {paths[1].name} are one preset (names ignore case); remove or rename one of them"
            )
        presets[name] = _parse(paths[0], _read(paths[0]), base=dict.get(presets, name), name=name)
    except InputError as e:
        presets.pop(name, None)
        presets.broken[name] = str(e)


def get_preset(name: str, user_dir: Path | None = None) -> Preset:
    """The preset `name` (any case). InputError with its file's error if that file is broken, or
    naming the presets there are if none is called so; other broken files do not matter."""
    where = user_presets_dir() if user_dir is None else Path(user_dir)
    return load_presets(user_dir).find(name, where)


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
        raise InputError(f"{path}: invalid TOML: {exc}; fix or remove the file") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to be a preset; fix the file") from None


def _parse(path: Path, data: dict[str, Any], base: Preset | None, name: str | None = None) -> Preset:
    """The preset in `path`'s table `data`, over `base`; `name`: its name (default the file's)."""
    name = path.stem if name is None else name
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
    said = _text(path, data, "name", path.stem)
    if fold(said) != fold(path.stem):
        raise InputError(
            f"{path}: says name = {quoted(said, 60)!r}, but a preset's name is its file name ({path.stem!r}); "
            f"rename the file to {quoted(said, 60)}.toml or remove the name line"
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
    # Start from the bundled preset's ranges (a new preset has none), then apply the file's.
    ranges: dict[str, tuple[float, float]] = dict(base.recommended) if base else {}
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
                f"{number(lo)} <= low <= high <= {number(hi)}, got {value!r}"
            )
        kind = type(getattr(_DEFAULTS, field))  # int for top_k and max_new_tokens
        ranges[field] = (kind(value[0]), kind(value[1]))
    return MappingProxyType(ranges)


def number(x: float) -> str:
    """A parameter's value as every screen and command writes it: 2 rather than 2.0, 1000000 rather
    than 1e+06, 0.05 as 0.05."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# A name a preset is saved under: its file's name on any system. Letters (any script), digits and
# "_", "-", "." inside; no path separators, no leading dot (hidden files are not read), no trailing
# dot or space (Windows drops them), none of Windows's device names.
_SAFE_NAME = re.compile(r"[^\W_][\w.-]{0,63}")
_DEVICE_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def save_preset(name: str, params: SamplingParams, like: Preset, user_dir: Path | None = None) -> Preset:
    """Write `params` as the user preset `name` (a NAME.toml in `user_dir`, default
    `user_presets_dir()`, written whole or not at all) and return it as it now loads.

    `like` is the preset the values were made from: the new file takes its use and recommended
    ranges. Saving under `like`'s own name is meant as an override: of the bundled preset (a user
    NAME.toml over it), or of the user's file (replaced). Any other name that is already a preset,
    bundled or the user's, is refused (an InputError saying which), as is a name that is no safe
    file name."""
    name = name.strip().removesuffix(".toml")
    if fold(name.partition(".")[0]) in _DEVICE_NAMES:
        raise InputError(f"{name!r} is a device's name on Windows, no file's; save under another name")
    if not _SAFE_NAME.fullmatch(name) or name.endswith("."):
        raise InputError(
            f"{quoted(name, 60)!r} cannot be a preset's file name; use up to 64 letters, digits, _ - and ., "
            "starting with a letter or digit, e.g. balanced-cooler"
        )
    user_dir = user_presets_dir() if user_dir is None else Path(user_dir)
    presets = load_presets(user_dir)
    known = presets.key(name)
    if known is not None and fold(known) != fold(like.name):
        bundled = known in {path.stem for path in BUNDLED_DIR.glob("*.toml")}
        raise InputError(
            f"{known} is already {'a bundled preset' if bundled else 'one of your presets'}; save under another "
            f"name, or switch to {known} (f2) and save it as {known} to {'override' if bundled else 'replace'} it"
        )
    # A file of this name (any case) is replaced, not joined by a second spelling.
    old = [p for p in user_dir.glob("*.toml") if not p.name.startswith(".") and fold(p.stem) == fold(name)]
    path = old[0] if old else user_dir / f"{known or name}.toml"
    description = like.description if known is not None else f"Made from {like.name}."  # an override keeps its words
    text = preset_text(description, like.use, params, like.recommended)
    home = None if user_dir.exists() else _missing_home(user_dir)
    if home is not None:
        raise InputError(
            f"cannot make {user_dir}: the home folder {home} does not exist; set HOME to yours, or set "
            "TIANKONG_CONFIG_DIR"
        )
    try:
        user_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"cannot make {user_dir}: {e.strerror or e}; make the folder, or set TIANKONG_CONFIG_DIR"
        ) from None
    atomic_write_text(path, text)
    return load_presets(user_dir).find(known or name, user_dir)


def preset_text(
    description: str, use: str, params: SamplingParams, recommended: Mapping[str, tuple[float, float]]
) -> str:
    """A preset file's TOML (no name line: the file's name is the preset's): every value of `params`
    (an unset seed left out), then the recommended ranges given."""
    lines = [f"description = {_toml_string(description)}", f"use = {_toml_string(use)}", "", "[params]"]
    for key, value in params.to_dict().items():
        if key == "stop":
            if value:
                lines.append(f"stop = [{', '.join(_toml_string(v) for v in value)}]")
        elif value is not None:  # seed None: a fresh one each answer
            lines.append(f"{key} = {number(value)}")
    if recommended:
        lines += ["", "[recommended]"]
        lines += [f"{key} = [{number(lo)}, {number(hi)}]" for key, (lo, hi) in recommended.items()]
    return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    # JSON's string escapes are TOML's basic string's; DEL is the one control JSON leaves raw.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


__all__ = [
    "DEFAULT_PRESET",
    "RECOMMENDED_FIELDS",
    "Preset",
    "Presets",
    "fold",
    "get_preset",
    "load_presets",
    "number",
    "preset_text",
    "save_preset",
    "user_presets_dir",
]
