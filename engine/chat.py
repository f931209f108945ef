"""Chat templates: turning a list of messages into the exact prompt text, and prompts into ids.

Rendering mirrors transformers' `apply_chat_template(..., tokenize=False)`: the same sandboxed Jinja
environment (trim_blocks, lstrip_blocks, loopcontrols), the same `tojson`, `raise_exception` and
`strftime_now`, and the same variables (messages, add_generation_prompt, tools=None, documents=None and
the named special tokens). Templates come from model folders, i.e. from strangers, so they only ever run
inside the immutable sandbox: engine/template_env.py builds it, engine/template_limits.py bounds it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from .errors import ChatTemplateError, ChatTemplateFault, InputError, error_line, quoted
from .files import lone_surrogate, parse_json, read_model_object, read_model_text, read_regular_bytes
from .template_env import _environment, _TemplateRaised
from .template_limits import _BUDGET, TEMPLATE_MAX_CHARS, TEMPLATE_MAX_SECONDS, _TemplateLimit, _tick
from .tokenizer import Tokenizer

# How raw mode (no template) joins several messages into one completion prompt: contents only, in
# order, separated by a blank line, so a "conversation" reads as consecutive paragraphs of text.
RAW_MESSAGE_SEPARATOR = "\n\n"


def no_template_note(reader: str, folder: str | Path | None = None) -> str:
    """What a model without a chat template does to a chat, as `reader` (a route, a command) says it:
    one wording for `tiankong serve` (at its start and in each chat answer's X-Tiankong-Warning),
    `tiankong generate` (given "messages") and the playground, so they never drift apart. With the
    model's `folder`: why, where it is Ollama's (its template layer is not read)."""
    from .ollama import GO_TEMPLATE, go_template

    why = f" ({GO_TEMPLATE})" if folder is not None and go_template(folder) else ""
    return f"no chat template: {reader} joins the messages' contents without roles{why}"


# The fix for a template that cannot be used, the model's own or a --chat-template file. Raw mode is
# named as generate's: chat and serve have none, and leave RAW_MODE_FIX out where they say it; the
# trainers put their own options in place of TEMPLATE_FIX (trainers/data.py trainer_template_line).
RAW_MODE_FIX = ", or use raw mode (generate --raw)"
TEMPLATE_FIX = (
    "fix the template or pass another file (--chat-template FILE, or chat_template=PATH in Python)" + RAW_MODE_FIX
)

# A --chat-template file larger than this is not a template (the largest known are ~20 KB).
TEMPLATE_FILE_MAX_BYTES = 4 * 1024 * 1024

# Reasoning can arrive under several names; transformers copies it to the ones templates read.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# The chat roles a message may have. Only "role" and "content" reach a template, so a tool message
# (its tool_call_id) could not be rendered as sent, and any other role would reach the template as
# text the model never saw ("<|bot|>"). OpenAI's newer name for the system message is read as it.
ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"developer": "system"}
# Other datasets' names for them (ShareGPT's "human"/"gpt", ...): named in the fix, not read as them.
_ROLE_NAMES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


def role_fix(role: str) -> str:
    """How to fix an unknown role: the role this name likely means, and the roles there are."""
    use = "the roles are system, user and assistant (developer is read as system)"
    key = role.strip().lower()
    mapped = key if key in ROLES else _ROLE_NAMES.get(key, ROLE_ALIASES.get(key))
    return f"rename it to {mapped!r} ({use})" if mapped else use


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
                f"chat template has a syntax error on line {error.lineno}: {quoted(error.message or '').rstrip('.')}; {TEMPLATE_FIX}"
            ) from error
        except (RecursionError, MemoryError, SyntaxError, ValueError, OverflowError) as error:
            # Blocks or expressions nested too deeply for the parser or for Python's compiler.
            raise ChatTemplateError(
                f"chat template cannot be compiled ({type(error).__name__}: {error_line(error)}); "
                f"it is nested too deeply; {TEMPLATE_FIX}"
            ) from error

    # Why the template cannot be used (set by `unusable`); None for one that compiled and passed its checks.
    broken: str | None = None
    # Where the template came from (tokenizer_config.json, chat_template.jinja, a GGUF file's
    # tokenizer.chat_template, a --chat-template file), named when it fails; None for text given directly.
    origin: str | Path | None = None

    @classmethod
    def unusable(cls, source: str, error: ChatTemplateError) -> ChatTemplate:
        """A model's own template that cannot be used (a syntax error, a template that ignores the
        messages, ...): it loads, and rendering raises `error`. As in transformers, which compiles a
        template when it is first applied, the model still works in raw mode, and info and tokenize
        still answer; only the chat paths give the error."""
        template = cls.__new__(cls)
        template.source, template._variables, template.broken = source, {}, str(error)
        return template

    @classmethod
    def of_model(cls, source: str, tokenizer: Tokenizer, origin: str | Path) -> ChatTemplate:
        """The template a model folder or GGUF file brings (`origin`): for_tokenizer, or `unusable`."""
        try:
            return cls.for_tokenizer(source, tokenizer, origin)
        except ChatTemplateError as error:
            return cls.unusable(source, error)

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
        return None if found is None else cls.of_model(found[0], tokenizer, found[1])

    @classmethod
    def from_file(cls, path: str | Path, tokenizer: Tokenizer) -> ChatTemplate:
        """A template given by the person (--chat-template): a Jinja file, or a JSON file with
        "chat_template" (tokenizer_config.json, chat_template.json). Read bounded, regular files only."""
        path = Path(path).expanduser()
        return cls.for_tokenizer(_read_template_file(path), tokenizer, path)

    @classmethod
    def check_file(cls, path: str | Path) -> None:
        """Read and compile a --chat-template file before a model loads (Engine.load), so that a file
        that is no template is named at once, not after the weights; what needs the tokenizer (its
        special tokens, whether the template reads the messages) is checked by from_file."""
        path = Path(path).expanduser()
        source = _read_template_file(path)
        try:
            cls(source, None, None)
        except ChatTemplateError as error:
            raise ChatTemplateError(f"{path}: {error}") from error

    @classmethod
    def for_tokenizer(cls, source: str, tokenizer: Tokenizer, origin: str | Path | None = None) -> ChatTemplate:
        """`source` compiled, rendered with the tokenizer's special-token strings, and checked to
        write the messages into the prompt. `origin` (the file it came from) is named in errors."""
        extra = {
            key: value for key, value in tokenizer.named_special_tokens.items() if key not in ("bos_token", "eos_token")
        }
        try:
            template = cls(source, tokenizer.bos_token, tokenizer.eos_token, extra)
        except ChatTemplateError as error:
            raise ChatTemplateError(f"{origin}: {error}" if origin is not None else str(error)) from error
        template.origin = origin
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
                "text); fix it or pass another file (--chat-template FILE, or chat_template=PATH in Python)"
            )

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """Render messages to prompt text; kwargs become template variables (e.g. enable_thinking)."""
        if self.broken is not None:
            raise ChatTemplateFault(self.broken)
        variables = {**self._variables, **kwargs}  # caller kwargs win, as in transformers
        variables["messages"] = [_template_message(message) for message in messages]
        variables["add_generation_prompt"] = add_generation_prompt
        variables.setdefault("tools", None)
        variables.setdefault("documents", None)
        _BUDGET.deadline, _BUDGET.chars = time.monotonic() + TEMPLATE_MAX_SECONDS, 0
        try:
            text = self._render(variables)
        except _TemplateRaised as error:
            raise ChatTemplateError(
                # A message on several lines reads as one: every run of whitespace becomes one space.
                f"the chat template rejected the messages: {quoted(' '.join((error.message or '').split()))}"
            ) from error
        except jinja2.TemplateError as error:  # _TemplateLimit and the sandbox's SecurityError included
            raise self._failed(_problem(error)) from error
        except (
            TypeError,
            ValueError,
            LookupError,
            AttributeError,
            ArithmeticError,
            RuntimeError,
            MemoryError,
        ) as error:  # RuntimeError includes RecursionError (a macro calling itself)
            raise self._failed(_problem(error)) from error
        finally:
            _BUDGET.deadline = math.inf
        if lone_surrogate(text) is not None:  # "\udcff" in the template: no tokenizer can encode it
            if lone_surrogate(variables["messages"]) is not None:
                raise InputError("a message is not valid text (a lone surrogate such as \\ud800); give UTF-8 text")
            raise self._failed("it writes text that is not valid Unicode (a lone surrogate such as \\udcff)")
        return text

    def _failed(self, problem: str) -> ChatTemplateFault:
        """The one line for a template that failed on its own, naming where it came from."""
        where = f" ({self.origin})" if self.origin is not None else ""
        return ChatTemplateFault(f"chat template failed{where}: {problem}; {TEMPLATE_FIX}", problem)

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


def _problem(error: BaseException) -> str:
    """What a failed render did, in a template's terms rather than Python's."""
    raw = getattr(error, "message", None) or str(error)  # Jinja's own message, else Python's
    text = quoted(raw.strip().partition("\n")[0]).rstrip(".")  # the sandbox's SecurityError ends in "."
    if isinstance(error, TypeError) and "no loader" in text:  # {% include %}, {% import %}, {% extends %}
        return "it includes, imports or extends another template, and chat templates cannot read other files"
    if isinstance(error, ValueError) and "integer string conversion" in text:
        return f"it writes out a number too large (over {sys.get_int_max_str_digits()} digits)"
    if isinstance(error, RecursionError):
        return "it recurses too deeply (a macro or loop that calls itself)"
    if isinstance(error, jinja2.exceptions.SecurityError):
        return f"{text}: chat templates run in a sandbox"
    if isinstance(error, jinja2.TemplateError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}"


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
        role = ROLE_ALIASES.get(message["role"], message["role"])
        if role not in ROLES:
            raise InputError(f'{where}: "role" is {quoted(repr(message["role"]), 40)}; {role_fix(message["role"])}')
        checked.append({**message, "role": role})
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


def _template_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A fresh copy as transformers passes it: None-valued keys dropped, reasoning aliases filled."""
    copy = {key: value for key, value in message.items() if value is not None}
    reasoning = next((copy[key] for key in _REASONING_FIELDS if key in copy), None)
    if reasoning is not None:
        copy = {"thinking": reasoning, **copy, "reasoning_content": reasoning}
    return copy


# --- finding a folder's template ---------------------------------------------------------------------


def _read_template_file(path: Path) -> str:
    """The template text of a --chat-template file (see ChatTemplate.from_file)."""
    fix = "a chat template is a few KB of Jinja (the largest known ~20 KB); give the template's file"
    data = read_regular_bytes(path, TEMPLATE_FILE_MAX_BYTES, ChatTemplateError, fix)
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ChatTemplateError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); give a Jinja file") from None
    if path.suffix.lower() == ".json":
        config = parse_json(source, str(path), ChatTemplateError)
        if not isinstance(config, dict) or config.get("chat_template") is None:
            raise ChatTemplateError(f'{path} has no "chat_template"; give a Jinja file or a JSON file with one')
        source = _pick_template(config["chat_template"], path)
    return source


def _find_template_source(folder: Path) -> tuple[str, Path] | None:
    """(template, the file it is in), or None when the folder has none."""
    # Read through engine/files: regular files inside the folder only, bounded, one-line errors.
    text = read_model_text(folder, "chat_template.jinja", TEMPLATE_FILE_MAX_BYTES)
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
    if isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
        named = {item.get("name"): item.get("template") for item in value}
        default = named.get("default")
        if isinstance(default, str):
            return default
        if "default" in named:
            raise ChatTemplateError(
                f'{path}: the chat template named "default" has no "template" text; add it or pass another '
                "file (--chat-template FILE)"
            )
        names = quoted(", ".join(map(str, named)))
        has = f"several chat templates ({names})" if len(named) > 1 else f"one chat template, named {names},"
        raise ChatTemplateError(
            f'{path} has {has} but none named "default"; rename the one to use to "default" or pass another '
            "file (--chat-template FILE)"
        )
    raise ChatTemplateError(
        f'{path}: "chat_template" must be a string or a list of {{"name": ..., "template": ...}} objects, '
        f"not {quoted(json.dumps(value), 40)}; fix the file or pass another (--chat-template FILE)"
    )
