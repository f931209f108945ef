"""Limits for chat templates from strangers: size, work and time, and the checks that enforce them.

A template is a program from a model folder; these checks keep one render to a bounded amount of
memory and time, and turn breaking a limit into one "chat template failed: ..." line. Apart from the
environment (engine/template_env.py) because they are a subject of their own: what a value's text
would cost, which operations could build something too big, and what each filter may be given.
Nothing here knows about chat templates' variables or messages.
"""

from __future__ import annotations

import functools
import io
import math
import re
import string
import threading
import time
from collections.abc import Callable, ItemsView, Iterable, KeysView, Mapping, Sequence, ValuesView
from typing import Any

import jinja2
import jinja2.utils

# --- limits: templates come from strangers, so rendering is bounded in size, work and time ---------
#
# Every string, bytes or list a template builds, the text of every value it writes out, and the
# rendered prompt stay under these sizes. What could build something bigger is refused before it
# allocates: `*`, `+`, `%`, `~`, the str and bytes methods and filters that pad, replace, join,
# translate or format, lipsum, and every conversion of a value to text ({{ value }}, |string, |tojson,
# |pprint, str.format, `%`), which is sized first: a list holding the same big list 100,000 times
# is a few bytes of memory and gigabytes of text. Every call, operator and loop iteration checks the
# clock. Breaking a limit is a "chat template failed: ..." error.

TEMPLATE_MAX_CHARS = 2_000_000  # any one string, value's text, and the rendered prompt (far beyond any context)
TEMPLATE_MAX_ITEMS = 100_000  # any list, tuple or range (Jinja's own sandbox range limit)
TEMPLATE_MAX_SECONDS = 2.0  # wall time of one render; real templates take milliseconds
TEMPLATE_MAX_TOTAL_CHARS = 100_000_000  # all strings built by checked operations in one render
_MAX_INT_BITS = 1 << 16  # integers up to ~20,000 digits
_FLOAT_CHARS = 320  # "%f" and "{:f}" write a float with up to ~310 digits


class _TemplateLimit(jinja2.exceptions.TemplateRuntimeError):
    """The template exceeded a size, work or time limit."""


class _Budget(threading.local):
    """Per-thread state of the render in progress (the environment is shared by threads)."""

    deadline = math.inf  # time.monotonic() past which the render stops; inf outside render()
    chars = 0  # characters built by checked operations so far


_BUDGET = _Budget()


def _tick() -> None:
    if time.monotonic() > _BUDGET.deadline:
        raise _TemplateLimit(f"took longer than {TEMPLATE_MAX_SECONDS:g} s (a runaway loop or recursion)")


def _limit_chars(n: int, what: str, built: str = "a string") -> None:
    if n > TEMPLATE_MAX_CHARS:
        raise _TemplateLimit(f"{what} would build {built} of at least {n} characters (limit {TEMPLATE_MAX_CHARS})")


def _limit_items(n: int, what: str) -> None:
    if n > TEMPLATE_MAX_ITEMS:
        raise _TemplateLimit(f"{what} would build {n} items (limit {TEMPLATE_MAX_ITEMS})")


def _int(x: Any, default: int = 0) -> int:
    """x when it is an int (bools count), else default: checks must not raise on wrong types."""
    return x if isinstance(x, int) else default


def _checked(value: Any, what: str) -> Any:
    """value, after checking the size of what an operation built and charging it to the budget."""
    if isinstance(value, (str, bytes)):
        _limit_chars(len(value), what)
        _BUDGET.chars += len(value)
        if _BUDGET.chars > TEMPLATE_MAX_TOTAL_CHARS:
            raise _TemplateLimit(f"built more than {TEMPLATE_MAX_TOTAL_CHARS} characters in all")
    elif isinstance(value, (list, tuple, dict, set)):
        _limit_items(len(value), what)
    elif isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise _TemplateLimit(f"{what} built an integer of {value.bit_length()} bits (limit {_MAX_INT_BITS})")
    return value


# --- the size of a value's text, before it is written ---

_CHUNK = 1 << 16  # repr() of a long string is taken this many characters at a time
_OPAQUE_CHARS = 100  # str() of a macro, a loop, a range, a function: "<Macro 'f'>" and the like


def _text_size(value: Any, limit: int = TEMPLATE_MAX_CHARS, conversion: str = "s") -> int:
    """len(str(value)) (of repr() for conversion "r", ascii() for "a"), counted without writing it.

    The count stops once past `limit`, so it costs at most about `limit` steps whatever the value
    stands for. Strings and containers of them count exactly (quotes, escapes, brackets, ", "),
    integers by their digits, anything else (a macro, a loop) as a short repr.
    """
    if isinstance(value, str) and conversion == "s":
        return len(value)
    quote = ascii if conversion == "a" else repr
    size, stack, visits = 0, [value], 0
    while stack and size <= limit:
        item = stack.pop()
        visits += 1
        if visits % 4096 == 0:
            _tick()
        if isinstance(item, (str, bytes)):
            # past the limit already: no need to count its escapes
            size += len(item) + 2 if len(item) > limit - size else _quoted_size(item, quote)
        elif isinstance(item, Mapping):
            size += 2 + 4 * len(item)  # {}, then ": " and ", " for each entry
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset, KeysView, ValuesView, ItemsView)):
            size += 2 + 2 * len(item)  # brackets, then ", " for each item
            stack += item
        elif isinstance(item, jinja2.utils.Namespace):
            size += len("<Namespace >")
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))  # its repr shows them all
        elif isinstance(item, int) and not isinstance(item, bool):
            size += 2 + item.bit_length() * 3 // 10  # sign and digits: log10(2) < 0.302
        elif isinstance(item, float):
            size += len(repr(item))
        else:
            size += _OPAQUE_CHARS
    return size


def _quoted_size(text: str | bytes, quote: Callable[[Any], str]) -> int:
    """len(quote(text)), without writing a repr of a long text in one piece (up to 10x its size)."""
    empty = len(quote(text[:0]))  # the quotes: '' or b''
    return empty + sum(len(quote(text[i : i + _CHUNK])) - empty for i in range(0, len(text), _CHUNK))


def _limit_text(value: Any, what: str, conversion: str = "s") -> None:
    """Refuse to write `value` out as text when that text would be too long."""
    _limit_chars(_text_size(value, conversion=conversion), what)


def _bounded_join(pieces: Iterable[str], what: str) -> str:
    """The pieces joined, stopping as soon as the text passes the limit rather than after writing it."""
    parts: list[str] = []
    size = 0
    for piece in pieces:
        _tick()
        size += len(piece)
        _limit_chars(size, what)
        parts.append(piece)
    return "".join(parts)


def _gather(items: Iterable[Any], separator: int, what: str) -> list[Any]:
    """The items to join, gathered one by one while counting the text they join into (with a
    separator of `separator` characters), so that joining stops at the limit even for a generator."""
    gathered: list[Any] = []
    size = 0
    for item in items:
        _tick()
        size += _text_size(item, TEMPLATE_MAX_CHARS - size) + separator
        _limit_chars(size, what)
        gathered.append(item)
        _limit_items(len(gathered), what)
    return gathered


class _BoundedText(io.StringIO):
    """A text buffer that refuses to grow past the limit."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self._what = what

    def write(self, text: str) -> int:
        _tick()
        _limit_chars(self.tell() + len(text), self._what)
        return super().write(text)


def _finalize(value: Any) -> Any:
    # Jinja writes {{ value }} as str(value): sized first (strings are already within the limit).
    if not isinstance(value, str):
        _limit_text(value, "writing out a value")
    return value


# --- checks of operations, before they run ---


_SEQUENCES = (str, bytes, list, tuple)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too big, before computing it."""
    what = f"the operator {operator!r}"
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if not isinstance(n, int) or n < 2:
                continue
            if isinstance(seq, (str, bytes)):
                _limit_chars(len(seq) * n, what)
            elif isinstance(seq, (list, tuple)):
                _limit_items(len(seq) * n, what)
                # n copies of the same items: [big_list] * 100000 is small, its text is not
                _limit_chars(_text_size(seq, TEMPLATE_MAX_CHARS // n) * n, what, built="a list")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise _TemplateLimit(f"{what} would build an integer over {_MAX_INT_BITS} bits")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0 and left.bit_length() * right > _MAX_INT_BITS:
            raise _TemplateLimit(f"{what} would build an integer over {_MAX_INT_BITS} bits")
    elif operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        if isinstance(left, (str, bytes)):
            _limit_chars(len(left) + len(right), what)
        else:
            _limit_items(len(left) + len(right), what)
    elif operator == "%" and isinstance(left, (str, bytes)):
        _check_percent(left if isinstance(left, str) else left.decode("latin-1"), right)


# A printf-style conversion: (mapping key, width, precision, conversion type); * takes a number from the arguments.
_PERCENT_SPEC = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.?)", re.DOTALL)


def _check_percent(fmt: str, args: Any) -> None:
    """Refuse `fmt % args` when its result would be too big: the format's own text, each conversion's
    width and precision (written, or * taken from the arguments) and the text of the value it writes."""
    positional = iter(args if isinstance(args, tuple) else (args,))
    size = len(fmt)
    for key, width, precision, conversion in _PERCENT_SPEC.findall(fmt):
        if conversion == "%":
            continue
        for number in (width, precision):
            size += abs(_int(next(positional, 0))) if number == "*" else int(number or 0)
        value = args.get(key) if key and isinstance(args, Mapping) else next(positional, None)
        size += _text_size(value, TEMPLATE_MAX_CHARS - size, conversion if conversion in "ra" else "s")
        size += _FLOAT_CHARS if isinstance(value, float) else 0
        _limit_chars(size, "a % format")


def _check_format(fmt: str, args: Sequence[Any], kwargs: Any) -> None:
    """Refuse fmt.format(*args, **kwargs) when its result would be too big, as _check_percent does.
    A field like {0.name} or {0[1]} is counted as all of {0}."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the real call raises the same error
    size, auto = 0, 0
    for literal, name, spec, conversion in fields:
        size += len(literal)
        if name is None:
            continue
        if spec and "{" in spec:
            raise _TemplateLimit("str.format with a computed width is not allowed in chat templates")
        size += sum(int(number) for number in re.findall(r"\d+", spec or ""))
        first = re.match(r"[^.\[]*", name).group(0)  # type: ignore[union-attr]  # matches "" at worst
        if not first:
            first, auto = str(auto), auto + 1
        if first.isdecimal():
            value = args[int(first)] if int(first) < len(args) else None
        else:
            value = kwargs.get(first) if isinstance(kwargs, Mapping) else None
        size += _text_size(value, TEMPLATE_MAX_CHARS - size, conversion or "s")
        size += _FLOAT_CHARS if isinstance(value, float) else 0
        _limit_chars(size, "str.format")


def _check_str_method(text: str | bytes, name: str, args: tuple, kwargs: dict) -> tuple:
    """Refuse the str and bytes methods that can build big strings from small arguments, before they
    run. Returns the arguments to call with: join's items, gathered while counting their text."""
    what = f"{type(text).__name__}.{name}"
    if name in ("center", "ljust", "rjust", "zfill"):
        _limit_chars(_int(args[0] if args else kwargs.get("width")), what)
    elif name == "expandtabs":
        _limit_chars(len(text) * max(_int(args[0] if args else kwargs.get("tabsize", 8)), 1), what)
    elif name == "replace" and len(args) >= 2 and all(isinstance(arg, (str, bytes)) for arg in args[:2]):
        _check_replace(text, args[0], args[1], _int(args[2] if len(args) > 2 else kwargs.get("count", -1), -1))
    elif name == "translate" and args:
        _check_translate(text, args[0], what)
    elif name == "join" and args:
        return (_gather(args[0], len(text), what), *args[1:])
    return args


def _check_replace(text: Any, old: Any, new: Any, count: int) -> None:
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    _limit_chars(len(text) + hits * (len(new) - len(old)), "replace")


def _check_translate(text: str | bytes, table: Any, what: str) -> None:
    # A table maps each character to a character, None, or a whole string.
    values = table.values() if isinstance(table, Mapping) else table if isinstance(table, (list, tuple)) else ()
    longest = max((len(value) for value in values if isinstance(value, str)), default=1)
    _limit_chars(len(text) * longest, what)


# --- filters ---

# Filters that never write their value out as text (join and tojson count what they write
# themselves): a big value passes through them unsized, since sizing `messages` at every
# `messages|length` would make long chats slow. Every other filter's value is sized first.
_STRUCTURAL_FILTERS = frozenset(
    "abs attr batch count d default dictsort first float groupby int items join last length list map max min "
    "random reject rejectattr reverse round select selectattr slice sort sum tojson unique".split()
)


def _bounded_filter(name: str, fn: Any, check: Any = None) -> Any:
    """A Jinja filter that sizes its value's text (see _STRUCTURAL_FILTERS), runs check(*args) on
    its own arguments first and checks its result."""
    skip = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0  # context/env comes first
    what = f"the filter {name!r}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if name not in _STRUCTURAL_FILTERS and len(args) > skip and not isinstance(args[skip], str):
            _limit_text(args[skip], what)
        if check is not None:
            check(*args[skip:], **kwargs)
        return _checked(fn(*args, **kwargs), what)

    return wrapper


def _text(value: Any) -> str:
    """The text a filter works on; its size was checked first (_bounded_filter)."""
    return value if isinstance(value, str) else str(value)


def _check_center(value: Any = "", width: Any = 80, *_: Any, **kw: Any) -> None:
    _limit_chars(_int(kw.get("width", width)), "center")


def _check_indent(s: Any = "", width: Any = 4, *_: Any, **kw: Any) -> None:
    width, s = kw.get("width", width), _text(s)
    size = len(width) if isinstance(width, str) else _int(width)
    _limit_chars(len(s) + (s.count("\n") + 2) * size, "indent")


def _check_count_arg(name: str) -> Any:
    def check(value: Any = None, count: Any = 0, *_: Any, **kw: Any) -> None:
        _limit_items(_int(kw.get("linecount", kw.get("slices", count))), name)

    return check


def _check_format_filter(value: Any = "", *args: Any, **kwargs: Any) -> None:
    _check_percent(_text(value), args or kwargs)


def _check_replace_filter(s: Any = "", old: Any = "", new: Any = "", count: Any = None, **kw: Any) -> None:
    if isinstance(old, str) and isinstance(new, str):
        _check_replace(_text(s), old, new, _int(kw.get("count", count), -1))


def _check_tojson(value: Any = None, *args: Any, indent: Any = None, **kw: Any) -> None:
    indent = args[1] if len(args) > 1 else indent
    if _int(indent) > 64 or (isinstance(indent, str) and len(indent) > 64):
        raise _TemplateLimit("tojson indent is limited to 64")


def _check_sum(value: Any = (), attribute: Any = None, start: Any = 0, **kw: Any) -> None:
    # sum(start=[]) adds lists one by one: quadratic, and inside Python where the clock cannot stop it.
    if not isinstance(kw.get("start", start), (int, float)):
        raise _TemplateLimit("sum() with a start that is not a number is not allowed in chat templates")


# Filters with a check of their own; every other filter is wrapped with the result check only.
_FILTER_CHECKS: dict[str, Any] = {
    "center": _check_center,
    "indent": _check_indent,
    "batch": _check_count_arg("batch"),
    "slice": _check_count_arg("slice"),
    "format": _check_format_filter,
    "replace": _check_replace_filter,
    "tojson": _check_tojson,
    "sum": _check_sum,
}


def _range(*args: Any) -> range:
    rng = range(*args)
    _limit_items(len(rng), "range")
    return rng


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    if _int(n) > 100 or _int(max) > 1000:
        raise _TemplateLimit("lipsum is limited to 100 paragraphs of at most 1000 words")
    return jinja2.utils.generate_lorem_ipsum(n, html, min, max)
