"""Sampling parameters as data: `SamplingParams`, their allowed ranges and the chain's order.

Kept apart from the sampling functions (engine/sampling.py) so that presets, the store and the
CLI's commands that never sample (`prefs`, `presets`, `models`) can read and check parameters
without importing torch (half a gigabyte of memory and a second of start-up).
"""

from __future__ import annotations

import dataclasses
import numbers
import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, Sequence

from .errors import InputError

SAMPLER_CHAIN: tuple[str, ...] = ("penalties", "temperature", "top_k", "top_p", "min_p", "sample")


class ParamRange(NamedTuple):
    """The allowed closed interval [lo, hi] of one sampling parameter, and what it does."""

    lo: float
    hi: float
    description: str


def _fmt(x: float) -> str:
    # "2" rather than "2.0" in messages and help text.
    return str(int(x)) if float(x).is_integer() else repr(float(x))


_FLOAT_FIELDS = (
    "temperature",
    "top_p",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)
_INT_FIELDS = ("top_k", "max_new_tokens", "seed")


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one generation. Immutable; construction validates."""

    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()

    # One table drives validation, CLI help and the TUI editor. All intervals are closed.
    RANGES: ClassVar[Mapping[str, ParamRange]] = MappingProxyType(
        {
            "temperature": ParamRange(0.0, 2.0, "randomness; 0 = greedy (always the most likely token)"),
            "top_k": ParamRange(0, 1_000_000, "keep only the k most likely tokens; 0 = off"),
            "top_p": ParamRange(0.0, 1.0, "keep the most likely tokens whose mass reaches p; 1 = off"),
            "min_p": ParamRange(0.0, 1.0, "drop tokens below p times the top token's probability; 0 = off"),
            "repetition_penalty": ParamRange(
                0.1, 2.0, "penalise tokens already in prompt or output; 1 = off, >1 repeats less"
            ),
            "presence_penalty": ParamRange(-2.0, 2.0, "subtract from tokens already generated; 0 = off"),
            "frequency_penalty": ParamRange(-2.0, 2.0, "subtract per earlier occurrence in the output; 0 = off"),
            "seed": ParamRange(0, 2**64 - 1, "random seed; unset = a fresh one, reported"),
            "max_new_tokens": ParamRange(1, 1_000_000, "stop after this many generated tokens"),
        }
    )

    def __post_init__(self) -> None:
        # Normalise what TOML, JSON and the CLI hand us (1 for 1.0, 40.0 for 40, lists for
        # tuples), then check ranges, so every instance that exists is valid.
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if name == "seed" and value is None:
                continue
            object.__setattr__(self, name, _as_int(name, value))
        object.__setattr__(self, "stop", _as_stop(self.stop))
        self.validate()

    def validate(self) -> SamplingParams:
        """Raise InputError naming the first parameter outside its range; return self."""
        for name, (lo, hi, _) in self.RANGES.items():
            value = getattr(self, name)
            if value is None and name == "seed":
                continue
            if not lo <= value <= hi:  # also rejects NaN
                raise InputError(f"{name} must be in [{_fmt(lo)}, {_fmt(hi)}], got {value!r}")
        _as_stop(self.stop)
        return self

    def replace(self, **changes: Any) -> SamplingParams:
        """A validated copy with some fields changed."""
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise InputError(f"unknown sampling parameter {unknown[0]!r}; valid names: {', '.join(valid)}")
        return dataclasses.replace(self, **changes)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: plain numbers, None for an unset seed, stop as a list."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["stop"] = list(self.stop)
        return out


def _range_text(name: str) -> str:
    lo, hi, _ = SamplingParams.RANGES[name]
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


# numbers.Real and numbers.Integral, not float and int: a sweep over numpy values hands in
# np.float32 and np.int64, which are numbers but not floats or ints. Booleans (np.bool_ is no Number)
# are refused: True is an int to Python, never a meant temperature or seed.


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number in {_range_text(name)}, got {value!r}")
    return float(value)


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and float(value).is_integer():
        value = int(float(value))  # 40.0 from TOML or JSON
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer in {_range_text(name)}, got {value!r}")
    return int(value)


def _as_stop(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # a lone string would otherwise become one stop per character
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
        raise InputError(f"stop must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def draw_seed() -> int:
    """A fresh seed for a row that has none. The engine reports it as the row's Finished.seed (the
    CLI and serve record it too), so the run can be repeated. Here, not in engine.py: screens that
    run no model (rank) draw seeds too, without importing torch."""
    return random.SystemRandom().randrange(2**31)


def with_seeds(params: Sequence[SamplingParams]) -> list[SamplingParams]:
    return [p if p.seed is not None else p.replace(seed=draw_seed()) for p in params]
