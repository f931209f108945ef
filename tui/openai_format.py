"""OpenAI's HTTP API as data: request bodies -> a `Job`, engine events -> response objects.

Pure functions, no server and no torch, so the shapes can be read (and tested) on their own. The
request side checks every field's type and range and raises `ApiError` naming the field (OpenAI's
`param`); the response side writes OpenAI's exact shapes:

* chat: ``choices[].message`` (or ``delta`` when streaming) and ``choices[].logprobs.content[]``
  of ``{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}``;
* completions: ``choices[].text`` and the legacy ``logprobs`` of parallel lists ``tokens``,
  ``token_logprobs``, ``top_logprobs`` ({token: logprob}) and ``text_offset``.

tiankong adds what OpenAI has no field for: request fields `preset`, `top_k`, `min_p`,
`repetition_penalty`; `p_sample` (the probability under the sampling distribution, beside the
model's logprob) on every chat logprob entry and as the parallel lists `p_sample` and
`top_p_sample` in completions; `seed` on every choice (the row's seed, so a run can be repeated).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from tiankong.engine.chat import ROLE_ALIASES, ROLES, role_fix
from tiankong.engine.errors import TiankongError, quoted
from tiankong.engine.events import Finished, TokenEvent
from tiankong.engine.params import SamplingParams

MAX_TOP_LOGPROBS = 20  # OpenAI's own cap
MAX_STOP = 4  # OpenAI's own cap on stop strings
MAX_SEED = 2**64 - 1  # SamplingParams' range; every bit of a seed counts (engine/sampling.py, Uniforms)

# The engine's finish reasons in OpenAI's words; "cancelled" (timeout, shutdown) and "error" have none.
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length", "cancelled": "cancelled"}


class ApiError(Exception):
    """An error response: HTTP status, one-line message, the offending field (OpenAI's `param`)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class Job:
    """One checked request: what to generate and how to answer."""

    chat: bool
    prompts: list[Any]  # chat: [messages]; completions: prompt strings or token id lists
    params: SamplingParams  # the first row's; row j of a prompt uses seed + j
    n: int
    stream: bool
    include_usage: bool  # stream_options.include_usage
    top_logprobs: int  # candidates per token (0 = none)
    logprobs: bool  # whether to return logprobs at all
    id: str  # chatcmpl-... or cmpl-...
    created: int = field(default_factory=lambda: int(time.time()))


# ---------------------------------------------------------------------------------------- requests

_NUMBER, _INT, _BOOL, _STR = "number", "integer", "boolean", "string"

# field -> expected JSON type (None accepted everywhere: OpenAI's "use the default").
_COMMON = {
    "model": _STR,
    "max_tokens": _INT,
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "n": _INT,
    "seed": _INT,
    "stop": "string or array of strings",
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "stream": _BOOL,
    "stream_options": "object",
    "user": _STR,
    "logit_bias": "object",  # only {} (_NOOP_COMMON)
    # tiankong's own
    "preset": _STR,
    "top_k": _INT,
    "min_p": _NUMBER,
    "repetition_penalty": _NUMBER,
}
_CHAT = {
    **_COMMON,
    "messages": "array",
    "logprobs": _BOOL,
    "top_logprobs": _INT,
    "max_completion_tokens": _INT,
    # OpenAI's, accepted and ignored: metadata is kept only with store (never here), and there are no tools
    "metadata": "object",
    "parallel_tool_calls": _BOOL,
    # OpenAI's, where only the default is accepted (_NOOP_CHAT)
    "response_format": "object",
    "store": _BOOL,
    "modalities": "array",
    "service_tier": _STR,
}
_COMPLETIONS = {
    **_COMMON,
    "prompt": "string or array",
    "logprobs": _INT,
    "best_of": _INT,
    "echo": _BOOL,  # only false (_NOOP_COMPLETIONS), as suffix only ""
    "suffix": _STR,
}

# OpenAI's fields for what tiankong serve does not do: accepted where the value asks for nothing
# (OpenAI's default), else refused by name. field -> (whether the value asks for nothing, the fix).
_NOOP_COMMON: dict[str, tuple[Callable[[Any], bool], str]] = {
    "logit_bias": (lambda v: v == {}, "drop it"),
}
_NOOP_CHAT = {
    **_NOOP_COMMON,
    "response_format": (lambda v: v == {"type": "text"}, 'drop it or send {"type": "text"}'),
    "store": (lambda v: v is False, "it keeps no completions; drop it or send false"),
    "modalities": (lambda v: v == ["text"], 'drop it or send ["text"]'),
    "service_tier": (lambda v: v in ("auto", "default"), 'drop it or send "auto"'),
    "tools": (lambda v: v == [], "it has no tool calling; drop it"),
    "tool_choice": (lambda v: v == "none", 'it has no tool calling; drop it or send "none"'),
    "functions": (lambda v: v == [], "it has no function calling; drop it"),
    "function_call": (lambda v: v == "none", 'it has no function calling; drop it or send "none"'),
    "audio": (lambda v: False, "it answers in text only; drop it"),
    "prediction": (lambda v: False, "drop it"),
    "reasoning_effort": (lambda v: False, "drop it"),
    "web_search_options": (lambda v: False, "drop it"),
}
_NOOP_COMPLETIONS = {
    **_NOOP_COMMON,
    "echo": (lambda v: v is False, "drop it or send false"),
    "suffix": (lambda v: v == "", "drop it"),
}
# Request fields that are SamplingParams fields of the same name.
_SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
)

# OpenAI's defaults where no preset is named: plain sampling at temperature 1.
OPENAI_DEFAULTS = SamplingParams(temperature=1.0, top_p=1.0)


def _type_ok(value: Any, kind: str) -> bool:
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind.startswith("string or array"):
        return isinstance(value, (str, list))
    raise AssertionError(kind)


def parse_request(
    body: Any, chat: bool, *, max_rows: int, max_tokens_cap: int, preset: Callable[[str], SamplingParams]
) -> Job:
    """A request body (parsed JSON) -> Job; ApiError(400) naming the first bad field.

    preset: name -> its SamplingParams (raises TiankongError for an unknown name).
    """
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {_json_name(body)}")
    spec = _CHAT if chat else _COMPLETIONS
    noop = _NOOP_CHAT if chat else _NOOP_COMPLETIONS
    for name, value in body.items():
        if name not in spec and name not in noop:
            raise ApiError(400, f"Unrecognized request argument supplied: {name}", name)
        if value is None:
            continue
        if name in spec and not _type_ok(value, spec[name]):
            raise ApiError(400, f"{name} must be {_article(spec[name])}, got {_json_type(value)}", name)
        if name in noop and not noop[name][0](value):
            shown = json.dumps(value, ensure_ascii=False)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ApiError(400, f"{name} {shown} is not supported by tiankong serve; {noop[name][1]}", name)
    given = {k: v for k, v in body.items() if v is not None}
    required = "messages" if chat else "prompt"
    if required not in given:
        raise ApiError(400, f"{required} is required", required)
    params = _sampling_params(given, chat, max_tokens_cap, preset)
    n = _n(given.get("n", 1), max_rows)
    if params.seed is not None and params.seed + n - 1 > MAX_SEED:  # row j's seed is seed + j: none wraps to 0
        raise ApiError(
            400, f"seed must be at most {MAX_SEED - n + 1} with n={n} (row j uses seed + j, up to {MAX_SEED})", "seed"
        )
    if given.get("best_of", n) != n:
        raise ApiError(400, "best_of is not supported (it must equal n)", "best_of")
    top, logprobs = _logprobs(given, chat)
    options = given.get("stream_options") or {}
    if "stream_options" in given and not given.get("stream"):  # OpenAI's answer too
        raise ApiError(400, "stream_options is only allowed with stream: true; send both or neither", "stream_options")
    if set(options) - {"include_usage"} or not isinstance(options.get("include_usage", False), bool):
        raise ApiError(400, 'stream_options takes only {"include_usage": true|false}', "stream_options")
    prompts = [_messages(given["messages"])] if chat else _prompts(given["prompt"])
    return Job(
        chat,
        prompts,
        params,
        n,
        bool(given.get("stream", False)),
        bool(options.get("include_usage", False)),
        top,
        logprobs,
        f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
    )


def _sampling_params(given: dict[str, Any], chat: bool, max_tokens_cap: int, preset: Callable) -> SamplingParams:
    """The preset's parameters (OpenAI's defaults without one), overlaid with the request's.

    Without max_tokens the answer's length is the preset's max_new_tokens (as `generate --preset`
    runs it), capped at max_tokens_cap; without a preset, OpenAI's defaults: a chat answer as long as
    the context allows (the cap), a completion 16 tokens."""
    if "preset" in given:
        try:
            base = preset(given["preset"])
        except TiankongError as e:
            raise ApiError(400, str(e), "preset") from None
        base = base.replace(max_new_tokens=min(base.max_new_tokens, max_tokens_cap))
    else:
        base = OPENAI_DEFAULTS.replace(max_new_tokens=max_tokens_cap if chat else min(16, max_tokens_cap))
    changes = {name: given[name] for name in _SAMPLING_FIELDS if name in given}
    # max_completion_tokens is OpenAI's newer name for max_tokens: where both are given, it wins.
    for name in ("max_tokens", "max_completion_tokens"):
        if name in given:
            if not 1 <= given[name] <= max_tokens_cap:
                raise ApiError(400, f"{name} must be in [1, {max_tokens_cap}], got {given[name]}", name)
            changes["max_new_tokens"] = given[name]
    if "stop" in given:
        stop = given["stop"]
        stop = [stop] if isinstance(stop, str) else stop
        if not all(isinstance(s, str) and s for s in stop) or len(stop) > MAX_STOP:
            raise ApiError(400, f"stop must be a string or up to {MAX_STOP} non-empty strings", "stop")
        changes["stop"] = tuple(stop)
    for name, value in changes.items():  # one at a time, so an error names its field
        try:
            base = base.replace(**{name: value})
        except TiankongError as e:  # max_new_tokens was checked above, against the cap
            raise ApiError(400, str(e), name) from None
    return base


def _n(n: int, max_rows: int) -> int:
    """n, checked: at least 1, at most the rows the server decodes at once."""
    if n < 1:
        raise ApiError(400, f"n must be at least 1, got {n}", "n")
    if n > max_rows:
        raise ApiError(
            400,
            f"n is {n}, but this server decodes at most {max_rows} rows at once (its --max-rows); ask for at most "
            f"{max_rows} and send another request for the rest",
            "n",
        )
    return n


def _logprobs(given: dict[str, Any], chat: bool) -> tuple[int, bool]:
    """-> (candidates per token, whether logprobs are returned)."""
    if chat:
        top = given.get("top_logprobs", 0)
        if top and not given.get("logprobs"):
            raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        name, on = "top_logprobs", bool(given.get("logprobs"))
    else:
        top = given.get("logprobs", 0)
        name, on = "logprobs", "logprobs" in given
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ApiError(400, f"{name} must be in [0, {MAX_TOP_LOGPROBS}], got {top}", name)
    return top, on


def _messages(messages: list) -> list[dict]:
    """OpenAI messages -> {"role", "content"} with text content (a list of text parts is joined).

    Roles are tiankong's chat roles (ROLES), and "developer" (OpenAI's newer name for "system") is
    read as "system": only "role" and "content" reach the chat template, so a tool message (its
    tool_call_id) or an assistant's tool calls could not be rendered as sent, and an unknown role
    would reach the template as text the model was never trained on."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f'{where} must be an object with a string "role"', "messages")
        role = ROLE_ALIASES.get(m["role"], m["role"])
        if role not in ROLES:
            raise ApiError(
                400,
                f"{where}.role is {quoted(repr(m['role']), 40)}; {role_fix(m['role'])}",
                "messages",
            )
        content = m.get("content")
        if isinstance(content, list):
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise ApiError(400, f"{where}.content: only text parts are supported", "messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"{where}.content must be a string or an array of text parts", "messages")
        out.append({"role": role, "content": content})
    if not out:
        raise ApiError(400, "messages is empty; give at least one message", "messages")
    return out


def _prompts(prompt: str | list) -> list[str | list[int]]:
    """A completions prompt: a string, an array of strings, token ids, or an array of token id arrays."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(_type_ok(t, _INT) for t in prompt):
        return [prompt]
    if prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if prompt and all(isinstance(p, list) and p and all(_type_ok(t, _INT) for t in p) for p in prompt):
        return list(prompt)
    raise ApiError(400, "prompt must be a string, an array of strings or an array of token ids", "prompt")


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _json_name(value: Any) -> str:
    """The JSON type of a parsed value: null, boolean, integer, number, string, array or object."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _json_type(value: Any) -> str:
    """The value's JSON type and the value as JSON writes it (true, not Python's True)."""
    return f"{_json_name(value)} {json.dumps(value, ensure_ascii=False)}"[:80]


# --------------------------------------------------------------------------------------- responses

_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_bytes(text: str) -> list[int]:
    """The UTF-8 bytes of a token's readable text, with <0xNN> pieces as the byte they stand for."""
    out, at = bytearray(), 0
    for m in _BYTE.finditer(text):
        out += text[at : m.start()].encode("utf-8", "surrogatepass") + bytes([int(m.group(1), 16)])
        at = m.end()
    return list(out + text[at:].encode("utf-8", "surrogatepass"))


def chat_logprob(ev: TokenEvent, token: str, eos: frozenset[int] = frozenset()) -> dict[str, Any]:
    """One entry of choices[].logprobs.content[], with tiankong's p_sample beside each logprob and
    the token's id (as llama.cpp's server sends it), so a client can tell tokens of equal text apart.

    An EOS (an id in `eos`) adds no text, chosen or as a candidate, so its bytes are [] in both
    places: bytes always say what a token adds. Its `token` is what it added where it was chosen
    (the caller's "") and its readable name (</s>) among the candidates, as `tiankong generate`
    writes "text" and "top", so a client (the playground on a server) can still name it there."""
    return {
        "id": ev.id,
        "token": token,
        "logprob": ev.logprob,
        "bytes": [] if ev.id in eos else token_bytes(token),
        "p_sample": ev.p_sample,
        "top_logprobs": [
            {
                "id": c.id,
                "token": c.text,
                "logprob": c.logprob,
                "bytes": [] if c.id in eos else token_bytes(c.text),
                "p_sample": c.p_sample,
            }
            for c in ev.candidates
        ],
    }


@dataclass
class LegacyLogprobs:
    """Completions' parallel lists, grown one token at a time (text_offset counts characters)."""

    offset: int = 0
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    p_sample: list[float] = field(default_factory=list)
    top_p_sample: list[dict[str, float]] = field(default_factory=list)

    def add(self, ev: TokenEvent, token: str) -> None:
        self.tokens.append(token)
        self.token_logprobs.append(ev.logprob)
        self.top_logprobs.append({c.text: c.logprob for c in ev.candidates})
        self.text_offset.append(self.offset)
        self.p_sample.append(ev.p_sample)
        self.top_p_sample.append({c.text: c.p_sample for c in ev.candidates})
        self.offset += len(ev.text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
            "p_sample": self.p_sample,
            "top_p_sample": self.top_p_sample,
        }


def finish_reason(fin: Finished) -> str:
    return FINISH.get(fin.finish_reason, fin.finish_reason)


def envelope(job: Job, model: str, choices: list[dict], chunk: bool = False) -> dict[str, Any]:
    """The object around choices: chat.completion(.chunk) or text_completion."""
    obj = ("chat.completion.chunk" if chunk else "chat.completion") if job.chat else "text_completion"
    return {"id": job.id, "object": obj, "created": job.created, "model": model, "choices": choices}


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's usage object; cached_tokens: prompt tokens the prefix cache spared reading."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }
