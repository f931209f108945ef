"""`RemoteEngine`: the playground's engine API over an OpenAI-compatible server.

    eng = RemoteEngine.connect("http://127.0.0.1:8000/v1")      # tiankong serve, vLLM, llama.cpp's server
    prompt = eng.encode(messages=[{"role": "user", "content": "Hi"}])
    for ev in eng.generate([prompt], [SamplingParams(seed=1)], top_logprobs=5):
        ...                                                      # the same TokenEvent / Finished as Engine

It offers the part of `engine.Engine` that the chat and compare screens use (encode, fit,
check_fits, generate, token_text, info, cfg.max_seq_len, folder) and builds the same events from the
server's streamed chat chunks: the chosen token and its logprob, the candidates from
`top_logprobs`, and `p_sample` where the server sends it (tiankong serve does). Where it does not
(vLLM, llama.cpp), p_sample and the entropy are None: unknown, never estimated.

The server applies its own chat template, so a prompt here is the messages themselves (`ChatPrompt`)
with a token count: the server's, when it answers vLLM's `/tokenize` (tiankong serve does), else an
estimate from the characters, calibrated by each answer's `usage.prompt_tokens`
(`ChatPrompt.estimated` says which).

HTTP is the standard library's http.client: nothing but the given URL is contacted (no proxy
settings, no redirects). Each row is one streamed request on its own connection; cancelling shuts
that connection down, so the server frees the row at once.
"""

from __future__ import annotations

import json
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from .context import answer_room, fit_messages
from .errors import ContextOverflow, InputError, ModelLoadError, quoted
from .events import Event
from .params import SamplingParams
from .remote_http import _Http, _llama_cpp_context, _models, http_client_errors
from .remote_stream import _Row

MAX_TOP_LOGPROBS = 20  # OpenAI's cap; servers refuse more
UNKNOWN_CONTEXT = 1 << 20  # a server that does not say: nothing is trimmed here, the server decides
POLL_S = 0.05  # how often a waiting generate() looks at its cancel event
MESSAGE_OVERHEAD = 4  # template tokens around each message, for the estimate
_HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")  # a repository's page, not an API (router.* is one)
_NEUTRAL = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}  # tiankong's own fields, sent only when set


def is_remote(model: Any) -> bool:
    """Whether a --model value names a server (http:// or https://) rather than a model on disk. The hub's
    own address of a repository (https://huggingface.co/ORG/NAME, hf.co/ORG/NAME) is no server: it names
    ORG/NAME, which engine/resolve.py looks up in the Hugging Face cache, offline."""
    if not (isinstance(model, str) and model.lower().startswith(("http://", "https://"))):
        return False
    host = (urlsplit(model).hostname or "").lower()  # lowercased, without a port or user
    return host not in _HUB_HOSTS


@dataclass(frozen=True)
class RemoteModel:
    """A --model URL and the key to send with it: what the app connects to instead of loading."""

    url: str
    api_key: str | None = field(default=None, repr=False)  # never shown in a message or a log

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class RemoteConfig:
    """The part of ModelConfig the screens read."""

    max_seq_len: int  # the server's context, or UNKNOWN_CONTEXT
    context_known: bool
    vocab_size: int = 0  # unknown over HTTP


@dataclass(frozen=True)
class ChatPrompt:
    """A prompt for the server: its messages, and how many tokens they make (len())."""

    messages: tuple[Mapping[str, Any], ...]
    n_tokens: int
    estimated: bool  # True: counted from characters, not by the server's tokenizer

    def __len__(self) -> int:
        return self.n_tokens


class RemoteEngine:
    def __init__(self, http: _Http, model: str, cfg: RemoteConfig, owner: str = "", warning: str | None = None) -> None:
        self.http, self.base_url, self.model, self.cfg, self.owner = http, http.base, model, cfg, owner
        self.template = None  # the server applies its own
        # What the server warns of in its model list (tiankong serve: it has no chat template), as it says
        # it; the chat and compare screens show it in their TemplateNote line.
        self.warning = warning
        self.tokenizer = None  # token ids and pieces stay on the server
        self.n_params = 0
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}  # token text -> id, for servers that send no ids (negative ids)
        self._texts: dict[int, str] = {}
        self._tokens_per_char = 0.5  # the estimate's rate until an answer's usage calibrates it
        self._can_tokenize: bool | None = None  # whether the server counts tokens (/tokenize); None: not asked yet

    @classmethod
    def connect(cls, url: str, api_key: str | None = None, cancel: threading.Event | None = None) -> RemoteEngine:
        """Ask the server for its models (GET /models) and take the one the URL names (BASE/models/ID,
        as `folder` stores it) or the only one. Raises ModelLoadError in one line when the server is
        unreachable, silent, refuses the key, or serves no model, or several and the URL names none.
        Setting `cancel` (from any thread) ends a request that waits on the server at once."""
        http = _Http(url, api_key)
        with _aborted_on(cancel, http):
            cards, warning = _models(http, api_key)
            card = _choose(http, cards)
            ctx = next((card[k] for k in ("context_length", "max_model_len") if isinstance(card.get(k), int)), None)
            if ctx is None and isinstance(card.get("meta"), dict):  # llama.cpp's server: its slots' context
                ctx = _llama_cpp_context(http)
        if http.aborted:
            raise ModelLoadError(f"connecting to {http.base} was cancelled")
        if isinstance(ctx, int) and not isinstance(ctx, bool) and ctx > 0:
            cfg = RemoteConfig(ctx, True)
        else:
            cfg = RemoteConfig(UNKNOWN_CONTEXT, False)
        return cls(http, card["id"], cfg, str(card.get("owned_by", "")), warning)

    # ------------------------------------------------------------------ naming

    @property
    def folder(self) -> str:
        """How the model is stored with chats and votes: the server's model id at its URL
        (OpenAI's own route for it), e.g. http://127.0.0.1:8000/v1/models/stories260K."""
        return f"{self.base_url}/models/{self.model}"

    @property
    def name(self) -> str:
        return f"{self.model}@{urlsplit(self.base_url).netloc}"

    def info(self) -> dict[str, Any]:
        """What is known about the remote model, for the TUI's info table."""
        return {
            "server": self.base_url,
            "model": self.model,
            "owned_by": self.owner or "unknown",
            "context_length": self.cfg.max_seq_len if self.cfg.context_known else "unknown (not trimmed here)",
            # the server's own, unless it warned it has none (tiankong serve: X-Tiankong-Warning)
            "chat_template": f"none (the server says: {self.warning})" if self.warning else "the server's",
            "prompt_tokens": "not counted yet"
            if self._can_tokenize is None
            else "counted by the server"
            if self._can_tokenize
            else "estimated from characters",
            "p_sample": "as the server reports it (tiankong serve), else unknown",
        }

    # ------------------------------------------------------------------ prompts

    def encode(
        self,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        raw: bool = False,
        *,
        max_new_tokens: int | None = None,
    ) -> ChatPrompt:
        """Messages (or one user message of prompt text) -> a ChatPrompt for the chat endpoint.
        max_new_tokens: Engine.encode's (its refusal by characters names the room); unused here, where
        the length is checked by check_fits once the server's count is known."""
        del max_new_tokens
        if raw:
            raise InputError("a remote model takes chat messages only; raw prompts need a local --model")
        msgs = tuple(messages) if messages is not None else ({"role": "user", "content": prompt or ""},)
        counted = self._count(msgs)
        if counted is not None:
            return ChatPrompt(msgs, counted, estimated=False)
        chars = sum(len(str(m.get("content", ""))) for m in msgs)
        return ChatPrompt(msgs, round(chars * self._tokens_per_char) + MESSAGE_OVERHEAD * len(msgs), estimated=True)

    def fit(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_new_tokens: int,
        *,
        at_least: int = 0,
        slack: int = 0,
        raw: bool = False,
    ) -> tuple[ChatPrompt, int]:
        """As Engine.fit: drop the oldest turns until the prompt leaves the answer its room."""
        ctx = self.cfg.max_seq_len
        budget = ctx - answer_room(max_new_tokens, ctx)
        return fit_messages(
            lambda m: self.encode(messages=m, raw=raw), messages, budget, at_least=at_least, slack=slack
        )

    def check_fits(self, prompt: Sequence[Any], max_new_tokens: int | None = None) -> None:
        """As Engine.check_fits, on the prompt's count (the server's, or estimated)."""
        ctx = self.cfg.max_seq_len
        if len(prompt) >= ctx:
            most = ctx - (answer_room(max_new_tokens, ctx) if max_new_tokens is not None else 1)
            raise ContextOverflow(
                f"the prompt is about {len(prompt)} tokens but the server's context is {ctx}; shorten it to about {most} tokens"
            )

    def _count(self, msgs: tuple[Mapping[str, Any], ...]) -> int | None:
        """The server's token count for these messages (vLLM's and tiankong serve's POST /tokenize),
        or None: estimate. A server without the route is not asked again; one that refuses these
        messages (too long, say) is asked again next time."""
        if self._can_tokenize is False:
            return None
        try:
            body = {"model": self.model, "messages": list(msgs)}
            status, answer = self.http.request("POST", "/tokenize", body, root=True)
            count = json.loads(answer).get("count") if status == 200 else None
        except (OSError, http_client_errors, ValueError, AttributeError):
            status, count = 0, None
        if isinstance(count, int):
            self._can_tokenize = True
            return count
        if self._can_tokenize is None and status not in (400, 413):  # no such route (404), or it is broken
            self._can_tokenize = False
        return None

    def token_text(self, id: int) -> str:
        return self._texts.get(id, f"<token {id}>")

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: Sequence[ChatPrompt],
        params: Sequence[SamplingParams],
        *,
        top_logprobs: int = 0,
        cancel: threading.Event | None = None,
        prompt_cache: Any = None,
    ) -> Iterator[Event]:
        """Stream TokenEvents and one Finished per row, each row its own streamed request, all at
        once. prompt_cache is ignored (the server keeps its own). Rows need seeds (with_seeds)."""
        if len(prompts) != len(params):
            raise InputError(f"{len(prompts)} prompts but {len(params)} sampling params; give one per prompt")
        for p in params:
            p.validate()
        if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise InputError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}] for a server, got {top_logprobs}")
        return self._merged(prompts, params, top_logprobs, cancel or threading.Event())

    def _merged(
        self, prompts: Sequence[ChatPrompt], params: Sequence[SamplingParams], k: int, cancel: threading.Event
    ) -> Iterator[Event]:
        """One reader thread per row; their events in arrival order. Cancelling (or closing this
        iterator) closes every row's response, which the server sees as the client leaving."""
        events: queue.Queue[Event | BaseException | None] = queue.Queue()
        rows = [_Row(self, r, prompt, p, k) for r, (prompt, p) in enumerate(zip(prompts, params, strict=True))]
        threads = [threading.Thread(target=row.pump, args=(events,), daemon=True) for row in rows]
        for t in threads:
            t.start()
        running = len(rows)
        try:
            while running:
                if cancel.is_set():
                    for row in rows:
                        row.stop()  # each still ends with its Finished ("cancelled")
                try:
                    item = events.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for row in rows:
                row.stop()

    def _request(self, prompt: ChatPrompt, p: SamplingParams, k: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(prompt.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self._room(prompt, p.max_new_tokens),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "presence_penalty": p.presence_penalty,
            "frequency_penalty": p.frequency_penalty,
            "seed": p.seed,
            "logprobs": True,
            "top_logprobs": k,
        }
        if p.stop:
            body["stop"] = list(p.stop)
        body.update({name: getattr(p, name) for name, off in _NEUTRAL.items() if getattr(p, name) != off})
        return body

    def _room(self, prompt: ChatPrompt, max_new_tokens: int) -> int:
        """max_tokens as servers take it: within what the context leaves after the prompt (vLLM
        refuses more; the local engine would end such an answer with "context")."""
        if not self.cfg.context_known:
            return max_new_tokens
        return max(1, min(max_new_tokens, self.cfg.max_seq_len - len(prompt)))

    def _token_id(self, entry: Mapping[str, Any]) -> int:
        """The entry's token id (llama.cpp's and tiankong's `id`), else a negative id kept per text."""
        text = str(entry.get("token", ""))
        tid = entry.get("id")
        with self._lock:
            if not isinstance(tid, int) or isinstance(tid, bool):
                tid = self._ids.setdefault(text, -1 - len(self._ids))
            self._texts.setdefault(tid, text)
        return tid

    def _calibrate(self, prompt: ChatPrompt, prompt_tokens: Any) -> None:
        """Learn tokens per character from the server's usage, for the next estimates."""
        chars = sum(len(str(m.get("content", ""))) for m in prompt.messages)
        if prompt.estimated and isinstance(prompt_tokens, int) and chars >= 16:
            rate = (prompt_tokens - MESSAGE_OVERHEAD * len(prompt.messages)) / chars
            self._tokens_per_char = min(max(rate, 0.05), 2.0)


def _choose(http: _Http, cards: list[Any]) -> dict[str, Any]:
    """The card of the model the URL names, or of the only one listed. A server listing several
    (Ollama, LM Studio, vLLM with LoRA adapters) is not guessed from: the error lists them."""
    listed = [c for c in cards if isinstance(c, dict) and isinstance(c.get("id"), str)]
    if not listed:
        raise ModelLoadError(f"{http.base}/models lists no model; is this an OpenAI-compatible server?")
    ids = [c["id"] for c in listed]
    if http.model in ids:
        return listed[ids.index(http.model)]
    if http.model is None and len(listed) == 1:
        return listed[0]
    shown = ", ".join(quoted(i, 80) for i in ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    said = f"does not serve {quoted(http.model)}; it serves" if http.model else f"serves {len(ids)} models:"
    raise ModelLoadError(
        f"{http.base} {said} {shown}; choose one by its URL, e.g. {http.base}/models/{quoted(ids[0], 80)}"
    )


@contextmanager
def _aborted_on(cancel: threading.Event | None, http: _Http) -> Iterator[None]:
    """Abort http's requests as soon as `cancel` is set, until the block ends."""
    if cancel is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(POLL_S):
                http.abort()
                return

    threading.Thread(target=watch, daemon=True).start()
    try:
        yield
    finally:
        done.set()
