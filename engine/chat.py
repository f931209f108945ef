"""Chat templates: turning a list of messages into the exact prompt text, and prompts into ids.

Rendering mirrors transformers' `apply_chat_template(..., tokenize=False)`: the same sandboxed Jinja
environment (trim_blocks, lstrip_blocks, loopcontrols), the same `tojson`, `raise_exception` and
`strftime_now`, and the same variables (messages, add_generation_prompt, tools=None, documents=None and
the named special tokens). Templates come from model folders, i.e. from strangers, so they only ever run
inside the immutable sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ChatTemplateError, InputError
from .files import read_model_object, read_model_text
from .tokenizer import Tokenizer

# How raw mode (no template) joins several messages into one completion prompt: contents only, in
# order, separated by a blank line, so a "conversation" reads as consecutive paragraphs of text.
RAW_MESSAGE_SEPARATOR = "\n\n"

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

    @classmethod
    def from_folder(cls, folder: str | Path, tokenizer: Tokenizer) -> ChatTemplate | None:
        """The model's template, or None when it has none.

        Looked up in transformers' order: chat_template.jinja, then tokenizer_config.json's
        "chat_template" (a string, or named templates of which "default" is used), then the older
        chat_template.json.
        """
        source = _find_template_source(Path(folder))
        if source is None:
            return None
        extra = {key: value for key, value in tokenizer.named_special_tokens.items()
                 if key not in ("bos_token", "eos_token")}
        return cls(source, tokenizer.bos_token, tokenizer.eos_token, extra)

    def render(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render messages to prompt text; kwargs become template variables (e.g. enable_thinking)."""
        variables = {**self._variables, **kwargs}  # caller kwargs win, as in transformers
        variables["messages"] = [_template_message(message) for message in messages]
        variables["add_generation_prompt"] = add_generation_prompt
        variables.setdefault("tools", None)
        variables.setdefault("documents", None)
        try:
            return self._template.render(**variables)
        except _TemplateRaised as error:
            raise ChatTemplateError(f"the chat template rejected the messages: {error.message}") from error
        except jinja2.TemplateError as error:
            raise ChatTemplateError(
                f"chat template failed: {error.message or type(error).__name__}; "
                "check the messages or use raw mode"
            ) from error
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
            raise ChatTemplateError(
                f"chat template failed: {type(error).__name__}: {error}; check the messages or use raw mode"
            ) from error


def validate_messages(messages: Any) -> list[dict]:
    """Check that messages is a non-empty list of {"role": str, "content": str, ...}; return copies."""
    if not isinstance(messages, (list, tuple)):
        raise InputError(
            f"messages must be a list of {{\"role\": ..., \"content\": ...}} objects, got {type(messages).__name__}"
        )
    if not messages:
        raise InputError("messages is empty; give at least one {\"role\": \"user\", \"content\": ...} message")
    checked: list[dict] = []
    for index, message in enumerate(messages):
        where = f"message {index + 1}"
        if not isinstance(message, Mapping):
            raise InputError(f"{where} must be an object with \"role\" and \"content\", got {type(message).__name__}")
        for key in ("role", "content"):
            if key not in message:
                raise InputError(f"{where} has no \"{key}\"; every message needs \"role\" and \"content\"")
            if not isinstance(message[key], str):
                raise InputError(f"{where}: \"{key}\" must be a string, got {type(message[key]).__name__}")
        if not message["role"].strip():
            raise InputError(f"{where}: \"role\" is empty; use e.g. \"system\", \"user\" or \"assistant\"")
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


_ENVIRONMENT: ImmutableSandboxedEnvironment | None = None


def _environment() -> ImmutableSandboxedEnvironment:
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.globals["dict"] = _TemplateDict()
        env.globals["namespace"] = _Namespace
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
        if isinstance(named.get("default"), str):
            return named["default"]
        raise ChatTemplateError(
            f"{path} has several chat templates ({', '.join(map(str, named))}) but none named \"default\"; "
            "rename the one to use to \"default\" or use raw mode"
        )
    raise ChatTemplateError(f"{path}: \"chat_template\" must be a string or a list of named templates")
