"""Chat templates: turning a list of messages into the exact prompt text, and prompts into ids.

Rendering mirrors transformers' `apply_chat_template(..., tokenize=False)`: the same sandboxed Jinja
environment (trim_blocks, lstrip_blocks, loopcontrols), the same `tojson`, `raise_exception` and
`strftime_now`, and the same variables (messages, add_generation_prompt, tools=None, documents=None and
the named special tokens). Templates come from model folders, i.e. from strangers, so they only ever run
inside the immutable sandbox.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.compiler
import jinja2.ext
import jinja2.nodes
import jinja2.runtime
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ChatTemplateError, InputError
from .files import parse_json, read_model_object, read_model_text, read_regular_bytes
from .tokenizer import Tokenizer

# How raw mode (no template) joins several messages into one completion prompt: contents only, in
# order, separated by a blank line, so a "conversation" reads as consecutive paragraphs of text.
RAW_MESSAGE_SEPARATOR = "\n\n"

# A --chat-template file larger than this is not a template (the largest known are ~20 KB).
TEMPLATE_FILE_MAX_BYTES = 4 * 1024 * 1024

# Reasoning can arrive under several names; transformers copies it to the ones templates read.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


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
                f"chat template has a syntax error on line {error.lineno}: {error.message}; "
                "fix the template or use raw mode"
            ) from error
        except (RecursionError, MemoryError, SyntaxError, ValueError, OverflowError) as error:
            # Blocks or expressions nested too deeply for the parser or for Python's compiler.
            raise ChatTemplateError(
                f"chat template cannot be compiled ({type(error).__name__}: {error}); "
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
        source = _find_template_source(Path(folder))
        return None if source is None else cls.for_tokenizer(source, tokenizer)

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
        return cls.for_tokenizer(source, tokenizer)

    @classmethod
    def for_tokenizer(cls, source: str, tokenizer: Tokenizer) -> ChatTemplate:
        """`source` compiled, rendered with the tokenizer's special-token strings."""
        extra = {
            key: value for key, value in tokenizer.named_special_tokens.items() if key not in ("bos_token", "eos_token")
        }
        return cls(source, tokenizer.bos_token, tokenizer.eos_token, extra)

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
            raise ChatTemplateError(f"the chat template rejected the messages: {error.message}") from error
        except _TemplateLimit as error:
            raise ChatTemplateError(
                f"chat template failed: {error.message}; fix the template or use raw mode"
            ) from error
        except jinja2.TemplateError as error:
            raise ChatTemplateError(
                f"chat template failed: {error.message or type(error).__name__}; check the messages or use raw mode"
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
                f"chat template failed: {type(error).__name__}: {_first_line(error)}; check the messages or use raw mode"
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


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


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


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(str(message))


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson escapes HTML characters (<, >, &, '), which would change the prompt text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


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
# Every string or list a template builds, and the rendered prompt, stay under these sizes; the
# operations that could build a bigger one (`*`, `+`, `%`, `~`, padding and replace methods and
# filters, str.format widths, lipsum) are refused before they allocate, and every call, operator
# and loop iteration checks the clock. Breaking a limit is a "chat template failed: ..." error.

TEMPLATE_MAX_CHARS = 2_000_000  # any one string, and the rendered prompt (far beyond any context)
TEMPLATE_MAX_ITEMS = 100_000  # any list, tuple or range (Jinja's own sandbox range limit)
TEMPLATE_MAX_SECONDS = 2.0  # wall time of one render; real templates take milliseconds
TEMPLATE_MAX_TOTAL_CHARS = 100_000_000  # all strings built by checked operations in one render
_MAX_INT_BITS = 1 << 16  # integers up to ~20,000 digits


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


def _limit_chars(n: int, what: str) -> None:
    if n > TEMPLATE_MAX_CHARS:
        raise _TemplateLimit(f"{what} would build a string of {n} characters (limit {TEMPLATE_MAX_CHARS})")


def _limit_items(n: int, what: str) -> None:
    if n > TEMPLATE_MAX_ITEMS:
        raise _TemplateLimit(f"{what} would build {n} items (limit {TEMPLATE_MAX_ITEMS})")


def _int(x: Any, default: int = 0) -> int:
    """x when it is an int (bools count), else default: checks must not raise on wrong types."""
    return x if isinstance(x, int) else default


def _checked(value: Any, what: str) -> Any:
    """value, after checking the size of what an operation built and charging it to the budget."""
    if isinstance(value, str):
        _limit_chars(len(value), what)
        _BUDGET.chars += len(value)
        if _BUDGET.chars > TEMPLATE_MAX_TOTAL_CHARS:
            raise _TemplateLimit(f"built more than {TEMPLATE_MAX_TOTAL_CHARS} characters in all")
    elif isinstance(value, (list, tuple, dict, set)):
        _limit_items(len(value), what)
    elif isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise _TemplateLimit(f"{what} built an integer of {value.bit_length()} bits (limit {_MAX_INT_BITS})")
    return value


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too big, before computing it."""
    what = f"the operator {operator!r}"
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str) and isinstance(n, int):
                _limit_chars(len(seq) * n, what)
            elif isinstance(seq, (list, tuple)) and isinstance(n, int):
                _limit_items(len(seq) * n, what)
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise _TemplateLimit(f"{what} would build an integer over {_MAX_INT_BITS} bits")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0 and left.bit_length() * right > _MAX_INT_BITS:
            raise _TemplateLimit(f"{what} would build an integer over {_MAX_INT_BITS} bits")
    elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        if isinstance(left, str):
            _limit_chars(len(left) + len(right), what)
        else:
            _limit_items(len(left) + len(right), what)
    elif operator == "%" and isinstance(left, str):
        _check_percent(left, right)


# A printf-style conversion's width and precision: numbers, or * taken from the arguments.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent(fmt: str, args: Any) -> None:
    """Refuse `fmt % args` when a width or precision (written or given by *) is too big."""
    star_args = args if isinstance(args, tuple) else (args,)
    for match in _PERCENT_SPEC.finditer(fmt):
        for number in match.groups():
            if number and number != "*":
                _limit_chars(int(number), "a % width")
            elif number == "*":
                _limit_chars(max((_int(a) for a in star_args), default=0), "a % width")


def _check_format_string(fmt: str) -> None:
    """Refuse str.format widths that are too big, and nested {} widths that cannot be checked."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the real call raises the same error
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            raise _TemplateLimit("str.format with a computed width is not allowed in chat templates")
        for number in re.findall(r"\d+", spec or ""):
            _limit_chars(int(number), "a str.format width")


def _check_str_method(text: str, name: str, args: tuple, kwargs: dict) -> None:
    """Refuse the str methods that can build big strings from small arguments, before they run."""
    what = f"str.{name}"
    if name in ("center", "ljust", "rjust", "zfill"):
        _limit_chars(_int(args[0] if args else kwargs.get("width")), what)
    elif name == "expandtabs":
        _limit_chars(len(text) * max(_int(args[0] if args else kwargs.get("tabsize", 8)), 1), what)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _check_replace(text, args[0], args[1], _int(args[2] if len(args) > 2 else kwargs.get("count", -1), -1))
    elif name == "join" and args:
        _check_join(args[0], text)


def _check_join(items: Any, separator: Any) -> None:
    if isinstance(items, (list, tuple)):
        sep = len(separator) if isinstance(separator, str) else 0
        _limit_chars(sum(len(x) for x in items if isinstance(x, str)) + sep * len(items), "join")


def _check_replace(text: str, old: str, new: str, count: int) -> None:
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    _limit_chars(len(text) + hits * (len(new) - len(old)), "replace")


def _bounded_filter(fn: Any, check: Any = None) -> Any:
    """A Jinja filter that runs check(*args) on its own arguments first and checks its result."""
    skip = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0  # context/env comes first

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if check is not None:
            check(*args[skip:], **kwargs)
        return _checked(fn(*args, **kwargs), f"the filter {fn.__name__.removeprefix('do_')!r}")

    return wrapper


def _check_center(value: Any = "", width: Any = 80, *_: Any, **kw: Any) -> None:
    _limit_chars(_int(kw.get("width", width)), "center")


def _check_indent(s: Any = "", width: Any = 4, *_: Any, **kw: Any) -> None:
    width = kw.get("width", width)
    size = len(width) if isinstance(width, str) else _int(width)
    lines = s.count("\n") + 2 if isinstance(s, str) else 1
    _limit_chars((len(s) if isinstance(s, str) else 0) + lines * size, "indent")


def _check_count_arg(name: str) -> Any:
    def check(value: Any = None, count: Any = 0, *_: Any, **kw: Any) -> None:
        _limit_items(_int(kw.get("linecount", kw.get("slices", count))), name)

    return check


def _check_format_filter(value: Any = "", *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        _check_percent(value, args or kwargs)


def _check_replace_filter(s: Any = "", old: Any = "", new: Any = "", count: Any = None, **kw: Any) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        _check_replace(s, old, new, _int(kw.get("count", count), -1))


def _check_join_filter(value: Any = (), d: Any = "", *_: Any, **kw: Any) -> None:
    _check_join(value, kw.get("d", d))


def _check_tojson(value: Any = None, *args: Any, indent: Any = None, **kw: Any) -> None:
    indent = args[1] if len(args) > 1 else indent
    if _int(indent) > 64 or (isinstance(indent, str) and len(indent) > 64):
        raise _TemplateLimit("tojson indent is limited to 64")


# Filters with a check of their own; every other filter is wrapped with the result check only.
_FILTER_CHECKS: dict[str, Any] = {
    "center": _check_center,
    "indent": _check_indent,
    "batch": _check_count_arg("batch"),
    "slice": _check_count_arg("slice"),
    "format": _check_format_filter,
    "replace": _check_replace_filter,
    "join": _check_join_filter,
    "tojson": _check_tojson,
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

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        _tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return _checked(super().call(__context, __obj, *args, **kwargs), "a call")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        return _checked(super().call_binop(context, operator, left, right), f"the operator {operator!r}")

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        _check_format_string(value.__self__)
        return lambda *args, **kwargs: _checked(wrapper(*args, **kwargs), "str.format")

    def checked_concat(self, autoescape: bool, parts: tuple) -> str:
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
            trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        for name, fn in list(env.filters.items()):
            env.filters[name] = _bounded_filter(fn, _FILTER_CHECKS.get(name))
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


def _find_template_source(folder: Path) -> str | None:
    # Read through engine/files: regular files inside the folder only, bounded, one-line errors.
    text = read_model_text(folder, "chat_template.jinja")
    if text is not None:
        return text
    for name in ("tokenizer_config.json", "chat_template.json"):
        config = read_model_object(folder, name, ChatTemplateError)
        if config.get("chat_template") is not None:
            return _pick_template(config["chat_template"], folder / name)
    return None


def _pick_template(value: Any, path: Path) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, Mapping)}
        default = named.get("default")
        if isinstance(default, str):
            return default
        raise ChatTemplateError(
            f'{path} has several chat templates ({", ".join(map(str, named))}) but none named "default"; '
            'rename the one to use to "default" or use raw mode'
        )
    raise ChatTemplateError(f'{path}: "chat_template" must be a string or a list of named templates')
