"""The sandboxed Jinja environment chat templates are rendered in.

transformers' environment (trim_blocks, lstrip_blocks, loopcontrols, the {% generation %} tag) and its
helpers (tojson without HTML escaping, raise_exception, strftime_now), on Jinja's immutable sandbox
compiled so that every call, operator, `~`, loop and filter goes through the checks of
engine/template_limits.py. Apart from engine/chat.py so that the public API reads first; chat.py only
asks it for `_environment()`.
"""

from __future__ import annotations

import json
import pprint
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import jinja2
import jinja2.compiler
import jinja2.ext
import jinja2.filters
import jinja2.nodes
import jinja2.runtime
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .template_limits import (
    _FILTER_CHECKS,
    TEMPLATE_MAX_CHARS,
    _bounded_filter,
    _bounded_join,
    _BoundedText,
    _check_binop,
    _check_format,
    _check_str_method,
    _checked,
    _finalize,
    _gather,
    _limit_chars,
    _limit_text,
    _lipsum,
    _range,
    _text_size,
    _tick,
)

# --- what templates see besides Jinja's own: transformers' helpers, dict, namespace, {% generation %} ---


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


# --- the environment: the immutable sandbox, compiled so that every operation is checked ---


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
