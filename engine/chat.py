"""Chat templates: turning a list of messages into the exact prompt text, and prompts into ids.

Rendering mirrors transformers' `apply_chat_template(..., tokenize=False)`: the same sandboxed Jinja
environment (trim_blocks, lstrip_blocks, loopcontrols), the same `tojson`, `raise_exception` and
`strftime_now`, and the same variables (messages, add_generation_prompt, tools=None, documents=None and
the named special tokens). Templates come from model folders, i.e. from strangers, so they only ever run
inside the immutable sandbox.
"""

from __future__ import annotations

import functools
import io
import json
import math
import pprint
import re
import string
import threading
import time
from collections.abc import Callable, ItemsView, Iterable, KeysView, Mapping, Sequence, ValuesView
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.compiler
import jinja2.ext
import jinja2.filters
import jinja2.nodes
import jinja2.runtime
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ChatTemplateError, InputError, error_line, quoted
from .files import parse_json, read_model_object, read_model_text, read_regular_bytes
from .tokenizer import Tokenizer

# How raw mode (no template) joins several messages into one completion prompt: contents only, in
# order, separated by a blank line, so a "conversation" reads as consecutive paragraphs of text.
RAW_MESSAGE_SEPARATOR = "\n\n"

# A --chat-template file larger than this is not a template (the largest known are ~20 KB).
TEMPLATE_FILE_MAX_BYTES = 4 * 1024 * 1024

# Reasoning can arrive under several names; transformers copies it to the ones templates read.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

# Two user messages a template must render differently (ChatTemplate._check_reads_messages).
_PROBES = ("Hello, who are you?", "Write a haiku about rain.")


class ChatTemplate:
    """A compiled chat template plus the special-token strings it is rendered with."""

    def __init__(
        self,
        source: str,
        bos_token: str | None,
        eos_token: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.source = source
        # Named special tokens first, so a template sees e.g. unk_token/pad_token like in transformers.
        self._variables: dict[str, Any] = dict(extra or {})
        if bos_token is not None:
            self._variables["bos_token"] = bos_token
        if eos_token is not None:
            self._variables["eos_token"] = eos_token
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as error:
            raise ChatTemplateError(
                f"chat template has a syntax error on line {error.lineno}: {quoted(error.message or '')}; "
                "fix the template or use raw mode"
            ) from error
        except (RecursionError, MemoryError, SyntaxError, ValueError, OverflowError) as error:
            # Blocks or expressions nested too deeply for the parser or for Python's compiler.
            raise ChatTemplateError(
                f"chat template cannot be compiled ({type(error).__name__}: {error_line(error)}); "
                "it is nested too deeply; fix the template or use raw mode"
            ) from error

    @classmethod
    def from_folder(cls, folder: str | Path, tokenizer: Tokenizer) -> ChatTemplate | None:
        """The model's template, or None when it has none; `folder` may be a GGUF file.

        Looked up in transformers' order: chat_template.jinja, then tokenizer_config.json's
        "chat_template" (a string, or named templates of which "default" is used), then the older
        chat_template.json.
        """
        from .gguf_model import GGUFModel, is_gguf

        if is_gguf(folder):  # a GGUF file: its tokenizer.chat_template
            return GGUFModel(folder).chat_template(tokenizer)
        found = _find_template_source(Path(folder))
        return None if found is None else cls.for_tokenizer(found[0], tokenizer, found[1])

    @classmethod
    def from_file(cls, path: str | Path, tokenizer: Tokenizer) -> ChatTemplate:
        """A template given by the person (--chat-template): a Jinja file, or a JSON file with
        "chat_template" (tokenizer_config.json, chat_template.json). Read bounded, regular files only."""
        path = Path(path).expanduser()
        data = read_regular_bytes(path, TEMPLATE_FILE_MAX_BYTES, ChatTemplateError)
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ChatTemplateError(
                f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); give a Jinja file"
            ) from None
        if path.suffix.lower() == ".json":
            config = parse_json(source, str(path), ChatTemplateError)
            if not isinstance(config, dict) or config.get("chat_template") is None:
                raise ChatTemplateError(f'{path} has no "chat_template"; give a Jinja file or a JSON file with one')
            source = _pick_template(config["chat_template"], path)
        return cls.for_tokenizer(source, tokenizer, path)

    @classmethod
    def for_tokenizer(cls, source: str, tokenizer: Tokenizer, origin: str | Path | None = None) -> ChatTemplate:
        """`source` compiled, rendered with the tokenizer's special-token strings, and checked to
        write the messages into the prompt. `origin` (the file it came from) is named in errors."""
        extra = {
            key: value for key, value in tokenizer.named_special_tokens.items() if key not in ("bos_token", "eos_token")
        }
        template = cls(source, tokenizer.bos_token, tokenizer.eos_token, extra)
        template._check_reads_messages(origin)
        return template

    def _check_reads_messages(self, origin: str | Path | None) -> None:
        """Refuse a template whose prompt does not depend on what the messages say: every prompt would
        become the same text, and the model would answer none of them."""
        try:
            first, second = (self.render([{"role": "user", "content": text}]) for text in _PROBES)
        except ChatTemplateError:
            return  # a template may refuse a lone user message; rendering real messages says why
        if first == second:
            where = f"{origin}: " if origin is not None else ""
            raise ChatTemplateError(
                f"{where}the chat template ignores the messages (two different prompts render the same "
                "text); fix it or pass --chat-template FILE"
            )

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """Render messages to prompt text; kwargs become template variables (e.g. enable_thinking)."""
        variables = {**self._variables, **kwargs}  # caller kwargs win, as in transformers
        variables["messages"] = [_template_message(message) for message in messages]
        variables["add_generation_prompt"] = add_generation_prompt
        variables.setdefault("tools", None)
        variables.setdefault("documents", None)
        _BUDGET.deadline, _BUDGET.chars = time.monotonic() + TEMPLATE_MAX_SECONDS, 0
        try:
            return self._render(variables)
        except _TemplateRaised as error:
            raise ChatTemplateError(
                # A message on several lines reads as one: every run of whitespace becomes one space.
                f"the chat template rejected the messages: {quoted(' '.join((error.message or '').split()))}"
            ) from error
        except _TemplateLimit as error:
            raise ChatTemplateError(
                f"chat template failed: {error.message}; fix the template or use raw mode"
            ) from error
        except jinja2.TemplateError as error:
            raise ChatTemplateError(
                f"chat template failed: {quoted(error.message or type(error).__name__)}; "
                "check the messages or use raw mode"
            ) from error
        except (
            TypeError,
            ValueError,
            LookupError,
            AttributeError,
            ArithmeticError,
            RuntimeError,
            MemoryError,
        ) as error:  # RuntimeError includes RecursionError (a macro calling itself)
            raise ChatTemplateError(
                f"chat template failed: {type(error).__name__}: {error_line(error)}; check the messages or use raw mode"
            ) from error
        finally:
            _BUDGET.deadline = math.inf

    def _render(self, variables: dict[str, Any]) -> str:
        # Streamed, so that a template writing a huge prompt stops at the limit instead of at the
        # end; each piece is checked against the clock too (loops that only write text).
        pieces: list[str] = []
        size = 0
        for piece in self._template.generate(**variables):
            size += len(piece)
            if size > TEMPLATE_MAX_CHARS:
                raise _TemplateLimit(f"the rendered prompt exceeds {TEMPLATE_MAX_CHARS} characters")
            _tick()
            pieces.append(piece)
        return "".join(pieces)


def validate_messages(messages: Any) -> list[dict]:
    """Check that messages is a non-empty list of {"role": str, "content": str, ...}; return copies."""
    if not isinstance(messages, (list, tuple)):
        raise InputError(
            f'messages must be a list of {{"role": ..., "content": ...}} objects, got {type(messages).__name__}'
        )
    if not messages:
        raise InputError('messages is empty; give at least one {"role": "user", "content": ...} message')
    checked: list[dict] = []
    for index, message in enumerate(messages):
        where = f"message {index + 1}"
        if not isinstance(message, Mapping):
            raise InputError(f'{where} must be an object with "role" and "content", got {type(message).__name__}')
        for key in ("role", "content"):
            if key not in message:
                raise InputError(f'{where} has no "{key}"; every message needs "role" and "content"')
            if not isinstance(message[key], str):
                raise InputError(f'{where}: "{key}" must be a string, got {type(message[key]).__name__}')
        if not message["role"].strip():
            raise InputError(f'{where}: "role" is empty; use e.g. "system", "user" or "assistant"')
        checked.append(dict(message))
    return checked


def render_prompt(
    template: ChatTemplate | None,
    tokenizer: Tokenizer,
    *,
    prompt: str | None = None,
    messages: Sequence[Mapping] | None = None,
    raw: bool = False,
) -> list[int]:
    """The one place prompts become ids.

    Raw mode (raw=True, or a model without a template) is plain completion: the prompt, or the messages'
    contents joined by RAW_MESSAGE_SEPARATOR, encoded with the tokenizer's own special tokens (BOS), so an
    empty prompt is just [bos_id] (or [] for tokenizers without BOS). Chat mode renders the messages (a bare
    prompt becomes one user message) with the generation prompt, and encodes without adding special
    tokens because the template already wrote them, exactly like apply_chat_template(tokenize=True).
    """
    if (prompt is None) == (messages is None):
        raise InputError("give either a prompt or messages, not both and not neither")
    if messages is not None:
        checked = validate_messages(messages)
    else:
        if not isinstance(prompt, str):
            raise InputError(f"the prompt must be text, got {type(prompt).__name__}")
        checked = [{"role": "user", "content": prompt}]

    if raw or template is None:
        text = prompt if prompt is not None else RAW_MESSAGE_SEPARATOR.join(m["content"] for m in checked)
        return tokenizer.encode(text, add_special_tokens=True)
    rendered = template.render(checked, add_generation_prompt=True)
    return tokenizer.encode(rendered, add_special_tokens=False)


# --- the Jinja environment ---------------------------------------------------------------------------


class _TemplateRaised(jinja2.TemplateError):
    """raise_exception() called by the template itself; its message is meant for the user."""


def _raise_exception(message: Any) -> None:
    _limit_text(message, "raise_exception")  # str() of a list of shared lists can be gigabytes
    raise _TemplateRaised(str(message))


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson escapes HTML characters (<, >, &, '), which would change the prompt text.
    # Encoded piece by piece, so that the JSON of a list of shared lists stops at the limit.
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    return _bounded_join(encoder.iterencode(value), "the filter 'tojson'")


def _pprint(value: Any) -> str:
    # Jinja's pprint is pformat(value): written into a bounded buffer, since its indentation can make
    # it far longer than repr(value) (a dict with a long key indents each item of its value that far).
    out = _BoundedText("the filter 'pprint'")
    pprint.PrettyPrinter(stream=out).pprint(value)
    return out.getvalue()[:-1]  # pprint() ends with a newline, pformat() does not


@jinja2.pass_eval_context
def _join(eval_ctx: jinja2.nodes.EvalContext, value: Any, d: Any = "", attribute: Any = None) -> str:
    # Jinja's join writes str() of every item: the items are gathered (and their text counted) first,
    # so that a generator or a list of shared lists stops at the limit.
    if attribute is not None:
        value = map(jinja2.filters.make_attrgetter(eval_ctx.environment, attribute), value)
    return jinja2.filters.sync_do_join(eval_ctx, _gather(value, _text_size(d), "the filter 'join'"), d)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """dict() for templates without handing them the dict type itself (no attribute or type tricks)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """namespace() that refuses underscore names, which could reach Python internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - same trick as Jinja's Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"templates cannot set underscore attributes ({name!r})")


class _GenerationTag(jinja2.ext.Extension):
    """Accept {% generation %}...{% endgeneration %} (used to mark assistant spans) and render its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


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


class _BoundedCodeGenerator(jinja2.compiler.CodeGenerator):
    """Compiles `~` and every for loop through the environment, so that they are checked too."""

    @jinja2.compiler.optimizeconst
    def visit_Concat(self, node: jinja2.nodes.Concat, frame: jinja2.compiler.Frame) -> None:
        escape = "context.eval_ctx.autoescape" if frame.eval_ctx.volatile else repr(bool(frame.eval_ctx.autoescape))
        self.write(f"environment.checked_concat({escape}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_For(self, node: jinja2.nodes.For, frame: jinja2.compiler.Frame) -> None:
        # `for x in xs` becomes `for x in environment.checked_iter(xs)`: one clock check per item.
        checked = jinja2.nodes.EnvironmentAttribute("checked_iter", lineno=node.lineno)
        node.iter = jinja2.nodes.Call(checked, [node.iter], [], None, None, lineno=node.lineno)
        super().visit_For(node, frame)


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on size, work and time (see TEMPLATE_MAX_*)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%", "/", "//"})

    @staticmethod
    def concat(pieces: Iterable[str]) -> str:  # Jinja's is "".join
        # What macros, {% set %}...{% endset %} and {% filter %} blocks write is joined here.
        return _checked(_bounded_join(pieces, "a macro or block"), "a macro or block")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        _tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes)):
            args = _check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return _checked(super().call(__context, __obj, *args, **kwargs), "a call")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        return _checked(super().call_binop(context, operator, left, right), f"the operator {operator!r}")

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt, by_name = value.__self__, value.__name__ == "format_map"

        def checked_format(*args: Any, **kwargs: Any) -> str:
            _tick()
            _check_format(fmt, () if by_name else args, args[0] if by_name and args else kwargs)
            return _checked(wrapper(*args, **kwargs), "str.format")

        return checked_format

    def checked_concat(self, autoescape: bool, parts: tuple) -> str:
        size = 0
        for part in parts:  # each written out with str()
            size += _text_size(part, TEMPLATE_MAX_CHARS - size)
            _limit_chars(size, "the operator '~'")
        joined = jinja2.runtime.markup_join(parts) if autoescape else jinja2.runtime.str_join(parts)
        return _checked(joined, "the operator '~'")

    def checked_iter(self, iterable: Any) -> Any:
        for item in iterable:
            _tick()
            yield item


_ENVIRONMENT: ImmutableSandboxedEnvironment | None = None


def _environment() -> ImmutableSandboxedEnvironment:
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        env = _BoundedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_GenerationTag, jinja2.ext.loopcontrols],
            finalize=_finalize,
        )
        env.filters.update(tojson=_tojson, pprint=_pprint, join=_join)
        for name, fn in list(env.filters.items()):
            env.filters[name] = _bounded_filter(name, fn, _FILTER_CHECKS.get(name))
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.globals["dict"] = _TemplateDict()
        env.globals["namespace"] = _Namespace
        env.globals["range"] = _range
        env.globals["lipsum"] = _lipsum
        _ENVIRONMENT = env
    return _ENVIRONMENT


def _template_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A fresh copy as transformers passes it: None-valued keys dropped, reasoning aliases filled."""
    copy = {key: value for key, value in message.items() if value is not None}
    reasoning = next((copy[key] for key in _REASONING_FIELDS if key in copy), None)
    if reasoning is not None:
        copy = {"thinking": reasoning, **copy, "reasoning_content": reasoning}
    return copy


# --- finding a folder's template ---------------------------------------------------------------------


def _find_template_source(folder: Path) -> tuple[str, Path] | None:
    """(template, the file it is in), or None when the folder has none."""
    # Read through engine/files: regular files inside the folder only, bounded, one-line errors.
    text = read_model_text(folder, "chat_template.jinja")
    if text is not None:
        return text, folder / "chat_template.jinja"
    for name in ("tokenizer_config.json", "chat_template.json"):
        config = read_model_object(folder, name, ChatTemplateError)
        if config.get("chat_template") is not None:
            return _pick_template(config["chat_template"], folder / name), folder / name
    return None


def _pick_template(value: Any, path: Path) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, Mapping)}
        default = named.get("default")
        if isinstance(default, str):
            return default
        if "default" in named:
            raise ChatTemplateError(
                f'{path}: the chat template named "default" has no "template" text; add it or use raw mode'
            )
        raise ChatTemplateError(
            f"{path} has several chat templates ({quoted(', '.join(map(str, named)))}) but none named "
            '"default"; rename the one to use to "default" or use raw mode'
        )
    raise ChatTemplateError(f'{path}: "chat_template" must be a string or a list of named templates')
