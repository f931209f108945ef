"""`tiankong serve`: an OpenAI-compatible HTTP server over one engine, with continuous batching.

    tiankong serve -m ../shared/models/stories260K --port 8000
    curl localhost:8000/v1/completions -d '{"prompt": "Once", "max_tokens": 20, "logprobs": 5}'

Routes: /v1/chat/completions, /v1/completions (streaming as server-sent events ending in
`data: [DONE]`, or one JSON), /v1/models, /v1/models/{id}, /health; any other path or method gets
OpenAI's error JSON too. Requests go to one engine.batcher.Batcher, whose thread runs the decode
loop; the event loop only parses, queues and writes (openai_format.py holds the request checks and
response shapes). A stream holds back text where a stop string may begin (engine.generate.HeldText),
so it adds up to the non-streamed answer and never shows a stop string.

Limits: a bounded queue (429 with Retry-After when full; with max_queue 0, when the rows a request
needs are not free), a cap on requests handled at once (the same 429, answered by the app before
uvicorn's own plain-text 503 could be), a body size cap (413), a max_tokens cap (the context, by
default), a per-request timeout (rows still running are cancelled), 400 with OpenAI's error JSON
naming the field for anything malformed, a request that could never be queued whole included.
Presets are read once, when the server starts: a broken preset file is one error then, not a 400
blaming every client that names a preset. The server binds 127.0.0.1 unless
told otherwise, and any other address needs an API key (--api-key or TIANKONG_API_KEY), then
required as `Authorization: Bearer KEY` on every route but /health. On SIGINT/SIGTERM the server
stops taking requests, answers at once those that have not started (503, or a stream's last chunk
"cancelled"), and gives the running ones `drain_s` seconds; what is still running then is cancelled
between two tokens and ends its answer as usual (finish_reason "cancelled", then [DONE]), before
uvicorn's own graceful timeout would cut it. A second Ctrl+C does that at once (uvicorn alone would
cut the streams); only a third quits without ending them. No row or cache is left half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import json
import socket
import sys
import time
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tiankong.engine.batcher import Batcher, QueueFull
from tiankong.engine.batcher import Request as BatcherRequest
from tiankong.engine.engine import Engine, draw_seed
from tiankong.engine.errors import InputError, TiankongError
from tiankong.engine.events import Event, Finished, TokenEvent
from tiankong.engine.generate import HeldText
from tiankong.engine.params import SamplingParams
from tiankong.presets import Preset, load_presets
from tiankong.tui import openai_format as fmt

# After drain_s, the cancelled rows end within a decode step and their last chunks are written; uvicorn
# cancels whatever task is left only this much later, so no stream is cut before its [DONE].
FINAL_S = 5.0
# Requests handled at once, past the queue and the rows: those still sending their body or being read.
IN_FLIGHT_MARGIN = 16


@dataclass
class ServeConfig:
    """How the server runs; every field is a `tiankong serve` flag."""

    host: str = "127.0.0.1"  # any other address needs api_key
    port: int = 8000
    api_key: str | None = None  # required as a bearer token when set
    model_name: str | None = None  # the id in /v1/models and responses (default: the folder's name)
    max_rows: int = 16  # rows decoded together
    max_queue: int = 64  # requests waiting for a row; more get 429 (0: none wait)
    max_body_bytes: int = 1 << 20  # larger bodies get 413
    max_tokens: int | None = None  # cap on max_tokens (default: the model's context)
    timeout_s: float = 600.0  # per request; its rows are then cancelled
    drain_s: float = 10.0  # on shutdown, how long running requests may finish
    prefix_cache_mib: int = 256  # keys and values of recent prompts and answers kept for reuse (0: none)
    prefill_chunk: int = 256  # prompt tokens read between two decode steps (chunked prefill)


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse a non-loopback address without an API key: anyone on the network could use it."""
    if host == "localhost" or api_key:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InputError(f"--host {host} exposes the server beyond this machine; set --api-key (or TIANKONG_API_KEY)")


# ------------------------------------------------------------------------------------- the app


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_app(
    engine: Engine,
    batcher: Batcher,
    cfg: ServeConfig,
    *,
    presets: dict[str, Preset] | None = None,
    announce: Callable[[str], None] = _to_stderr,
) -> Starlette:
    """The ASGI app: routes, auth, the cap on requests at once, and the batcher's shutdown when the
    app stops. presets: as load_presets() gives them (read now when not given; InputError for a
    broken file); announce: where the shutdown's progress lines go."""
    server = _Server(engine, batcher, cfg, load_presets() if presets is None else presets, announce)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(batcher.close, 0.0)  # uvicorn has already drained the requests

    routes = [
        Route("/health", server.health, methods=["GET"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{model:path}", server.model, methods=["GET"]),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/tokenize", server.tokenize, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
        middleware=[Middleware(_InFlight, server=server)],
    )
    app.state.server = server
    return app


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own errors (no such route: 404; a route without this method: 405) in OpenAI's shape,
    so a client reads every error the same way."""
    method, path = request.method, request.url.path
    allow = (exc.headers or {}).get("Allow")
    if exc.status_code == 404:
        message = f"Invalid URL ({method} {path})"
    elif exc.status_code == 405 and allow:
        message = f"{method} is not allowed on {path}; use {allow}"
    else:
        message = exc.detail
    err = fmt.ApiError(exc.status_code, message)
    return JSONResponse(err.body(), status_code=exc.status_code, headers=exc.headers)


class _InFlight:
    """Counts the requests being handled (all but /health); past server.limit, the 429 of a full
    queue in OpenAI's JSON with Retry-After, before any work. uvicorn's own limit (a plain-text
    503) is set far above it, so a burst of clients gets the documented answer."""

    def __init__(self, app: ASGIApp, server: _Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = self.server
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        if server.in_flight >= server.limit:
            err = fmt.ApiError(
                429,
                f"{server.in_flight} requests are in progress, the most this server takes at once; retry shortly",
                code="rate_limit_exceeded",
            )
            await JSONResponse(err.body(), status_code=429, headers={"Retry-After": "1"})(scope, receive, send)
            return
        server.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            server.in_flight -= 1


class _Server:
    def __init__(
        self,
        engine: Engine,
        batcher: Batcher,
        cfg: ServeConfig,
        presets: dict[str, Preset],
        announce: Callable[[str], None],
    ) -> None:
        self.engine, self.batcher, self.cfg = engine, batcher, cfg
        self.presets, self.announce = presets, announce
        self.name = cfg.model_name or engine.folder.name
        self.max_tokens = min(cfg.max_tokens or engine.cfg.max_seq_len, engine.cfg.max_seq_len)
        self.eos = frozenset(engine.tokenizer.eos_ids)
        self.created = int(time.time())
        self.streams: weakref.WeakSet[_Stream] = weakref.WeakSet()  # requests queued or running
        self.reading: set[asyncio.Task] = set()  # requests whose body is still coming
        self.live: list[
            BatcherRequest
        ] = []  # with max_queue 0: the batcher requests not finished (their rows are busy)
        self.in_flight = 0  # requests being handled (_InFlight)
        self.limit = cfg.max_queue + cfg.max_rows + IN_FLIGHT_MARGIN  # past that many, 429 at once
        self.closing = False  # shutting down: no new requests
        self.hurry = False  # Ctrl+C again: cancel the running requests now
        self.drain_timer: asyncio.TimerHandle | None = None

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "rows": self.batcher.rows, "pending": self.batcher.pending})

    async def models(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return JSONResponse({"object": "list", "data": [self._card()]})

    async def model(self, request: Request) -> Response:
        """GET /v1/models/{id}: the served model's card (openai's client.models.retrieve)."""
        if (denied := self._auth(request)) is not None:
            return denied
        model = request.path_params["model"]
        if not self._serves(model):
            err = self._unknown_model(model)
            return JSONResponse(err.body(), status_code=err.status)
        return JSONResponse(self._card())

    async def chat(self, request: Request) -> Response:
        return await self._complete(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, chat=False)

    async def tokenize(self, request: Request) -> Response:
        """vLLM's POST /tokenize: {"messages": [...]} (through the chat template) or {"prompt": TEXT}
        -> {"count", "max_model_len", "tokens"}. `--model http://...` counts its prompts here."""
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            body = await self._read_json(request)
            if not isinstance(body, dict) or ("messages" in body) == ("prompt" in body):
                raise fmt.ApiError(400, 'give "messages" (a chat) or "prompt" (text), not both', "messages")
            chat = "messages" in body
            if chat:
                prompt = fmt._messages(body["messages"]) if isinstance(body["messages"], list) else None
            else:
                prompt = body["prompt"] if isinstance(body["prompt"], str) else None
            if prompt is None:
                raise fmt.ApiError(400, "messages must be an array, prompt a string", "messages" if chat else "prompt")
            encode = (
                partial(self.engine.encode, messages=prompt) if chat else partial(self.engine.encode, prompt, raw=True)
            )
            ids = await asyncio.to_thread(encode)
        except fmt.ApiError as e:
            return JSONResponse(e.body(), status_code=e.status)
        except TiankongError as e:
            err = fmt.ApiError(400, str(e), "messages" if chat else "prompt")
            return JSONResponse(err.body(), status_code=400)
        return JSONResponse({"count": len(ids), "max_model_len": self.engine.cfg.max_seq_len, "tokens": ids})

    def _preset(self, name: str) -> SamplingParams:
        """A preset's SamplingParams, from those read at startup; InputError for an unknown name."""
        if name not in self.presets:
            raise InputError(f"preset must be one of {', '.join(sorted(self.presets))}, got {name!r}")
        return self.presets[name].params

    def _check_size(self, job: fmt.Job) -> None:
        """400 for a request the server could never take whole, however idle (each prompt of a
        completions request is queued as a request of its own): it would get 429 forever."""
        cfg, prompts = self.cfg, len(job.prompts)
        if cfg.max_queue and prompts > cfg.max_queue:
            raise fmt.ApiError(
                400,
                f"prompt has {prompts} prompts; this server takes at most {cfg.max_queue} per request "
                "(its --max-queue); send the rest in another request",
                "prompt",
            )
        if not cfg.max_queue and prompts * job.n > cfg.max_rows:
            raise fmt.ApiError(
                400,
                f"prompt has {prompts} prompts of n={job.n} rows each; this server runs {cfg.max_rows} rows and "
                f"queues none (--max-queue 0), so it takes at most {cfg.max_rows // job.n} per request; "
                "send the rest in another request",
                "prompt",
            )

    def _card(self) -> dict[str, Any]:
        card = {"id": self.name, "object": "model", "created": self.created, "owned_by": "tiankong"}
        card["context_length"] = self.engine.cfg.max_seq_len
        return card

    def _serves(self, model: str) -> bool:
        return model in (self.name, str(self.engine.folder))

    def _unknown_model(self, model: str) -> fmt.ApiError:
        return fmt.ApiError(404, f"model {model!r} is not served here; use {self.name!r}", "model", "model_not_found")

    # ---------------------------------------------------------------- shutdown

    def begin_shutdown(self) -> None:
        """Stop taking requests; end those that have not started now, and cancel the running ones
        after drain_s (between two tokens: each still ends its answer, "cancelled"), or at once
        after a second Ctrl+C (cancel_now). Says so in one line when requests are running."""
        self.closing = True
        for reader in list(self.reading):
            reader.cancel()
        for stream in list(self.streams):
            stream.cancel_unstarted()
        if self.hurry:  # Ctrl+C came twice before uvicorn began its shutdown
            self._cancel_running("now")
            return
        drain = self.cfg.drain_s
        if running := self._running():
            them = "it" if len(running) == 1 else "them"
            self.announce(
                f"stopping: {_plural(len(running), 'request')} running, waiting up to {drain:g} s for {them} "
                f"to finish (Ctrl+C again to cancel {them} now)"
            )
        self.drain_timer = asyncio.get_running_loop().call_later(drain, self._cancel_running, f"after {drain:g} s")

    def cancel_now(self) -> None:
        """A second Ctrl+C: cancel the running requests now (between two tokens, so each still ends
        its answer "cancelled"), instead of uvicorn cutting them off."""
        self.hurry = True
        if self.closing:
            if self.drain_timer is not None:
                self.drain_timer.cancel()
            self._cancel_running("now")

    def _running(self) -> list[_Stream]:
        return [s for s in self.streams if s.started and s.left]

    def _cancel_running(self, when: str) -> None:
        if running := self._running():
            self.announce(f"cancelling {_plural(len(running), 'running request')} {when}")
        for stream in list(self.streams):
            stream.cancel()

    # ---------------------------------------------------------------- one request

    async def _complete(self, request: Request, chat: bool) -> Response:
        """Check, encode and queue the request, then stream or collect its events."""
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            body = await self._read_json(request)
            job = fmt.parse_request(
                body,
                chat,
                max_rows=self.batcher.max_rows,
                max_tokens_cap=self.max_tokens,
                preset=self._preset,
            )
            if "model" in body and not self._serves(body["model"]):
                raise self._unknown_model(body["model"])
            self._check_size(job)
            ids = [await asyncio.to_thread(self._encode, job, p) for p in job.prompts]
            queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
            reqs = self._submit(job, ids, queue)
        except fmt.ApiError as e:
            return JSONResponse(e.body(), status_code=e.status)
        except QueueFull as e:
            err = fmt.ApiError(429, str(e), code="rate_limit_exceeded")
            return JSONResponse(err.body(), status_code=429, headers={"Retry-After": str(e.retry_after)})
        stream = _Stream(self, job, ids, reqs, queue)
        if job.stream:
            return StreamingResponse(
                stream.sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        return await stream.collect(request)

    def _auth(self, request: Request) -> Response | None:
        key = self.cfg.api_key
        if not key:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # The scheme is case-insensitive (RFC 7235): "bearer KEY" is as good as "Bearer KEY".
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode()):
            return None
        err = fmt.ApiError(401, "Incorrect or missing API key: send Authorization: Bearer KEY", code="invalid_api_key")
        return JSONResponse(err.body(), status_code=401)

    async def _read_json(self, request: Request) -> Any:
        """The body, refused past max_body_bytes before it is all read (413), parsed as JSON (400);
        503 when the server begins to shut down while the body is still coming."""
        cap = self.cfg.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise fmt.ApiError(413, f"the request body is {int(declared):,} bytes; the limit is {cap:,}")
        data = bytearray()
        reader = asyncio.current_task()
        self.reading.add(reader)
        try:
            async for part in request.stream():
                data += part
                if len(data) > cap:
                    raise fmt.ApiError(413, f"the request body is over the limit of {cap:,} bytes")
        except ClientDisconnect:  # nobody reads the answer; an error response ends the request quietly
            raise fmt.ApiError(400, "the client closed the connection before sending the whole body") from None
        except asyncio.CancelledError:
            if not self.closing:
                raise
            # begin_shutdown's cancel: the request has not started, so it is answered now like a queued
            # one, instead of holding the shutdown until uvicorn cancels it (with a traceback).
            if hasattr(reader, "uncancel"):  # Python 3.11+ counts cancellations; this one is handled
                reader.uncancel()
            raise _shutting_down() from None
        finally:
            self.reading.discard(reader)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise fmt.ApiError(400, f"We could not parse the JSON body of your request: {e}") from None

    def _encode(self, job: fmt.Job, prompt: Any) -> list[int]:
        """One prompt -> token ids, refused (400) when it leaves no room for an answer."""
        eng = self.engine
        param = "messages" if job.chat else "prompt"
        try:
            if job.chat:
                ids = eng.encode(messages=prompt)
            elif isinstance(prompt, str):
                ids = eng.encode(prompt=prompt, raw=True)
            else:
                ids = list(prompt)
                if not all(0 <= t < eng.cfg.vocab_size for t in ids):
                    raise InputError(f"token ids must be in [0, {eng.cfg.vocab_size - 1}]")
            eng.check_fits(ids)
        except TiankongError as e:
            raise fmt.ApiError(400, str(e), param) from None
        return ids

    def _submit(self, job: fmt.Job, ids: list[list[int]], queue: asyncio.Queue) -> list:
        """One batcher request per prompt (n rows each, seeds seed, seed + 1, ...); all or none."""
        if self.closing:
            raise _shutting_down()
        loop = asyncio.get_running_loop()
        p = job.params
        if p.seed is None:
            p = p.replace(seed=draw_seed())
        if not job.max_tokens_given and job.chat:  # OpenAI's chat default: as long as the context allows
            p = p.replace(max_new_tokens=self.max_tokens)
        elif not job.max_tokens_given:
            p = p.replace(max_new_tokens=16)  # OpenAI's completions default
        if not self.cfg.max_queue:  # no waiting line: run now, in rows that are free, or 429
            self.live = [r for r in self.live if r.rows_left]
            busy, need = sum(r.rows_left for r in self.live), len(ids) * job.n
            if busy + need > self.cfg.max_rows:
                raise QueueFull(
                    f"{busy} of the server's {self.cfg.max_rows} rows are busy and this request needs {need}; "
                    "it queues none (--max-queue 0): retry shortly"
                )
        reqs = []
        try:
            for i, prompt_ids in enumerate(ids):

                def sink(ev: Event, i: int = i) -> None:
                    loop.call_soon_threadsafe(queue.put_nowait, (i, ev))  # RuntimeError once the loop closed

                rows = [p.replace(seed=(p.seed + j) % 2**64) for j in range(job.n)]
                reqs.append(self.batcher.submit(prompt_ids, rows, top_logprobs=job.top_logprobs, sink=sink))
        except TiankongError as e:
            for r in reqs:
                r.cancel()
            if isinstance(e, QueueFull):
                raise
            raise fmt.ApiError(400, str(e), "n") from None
        if not self.cfg.max_queue:
            self.live += reqs
        return reqs


class _Stream:
    """One request's events from the batcher, as SSE chunks or as one response."""

    def __init__(self, server: _Server, job: fmt.Job, ids: list[list[int]], reqs: list, queue: asyncio.Queue) -> None:
        self.server, self.job, self.ids, self.reqs, self.queue = server, job, ids, reqs, queue
        self.left = len(reqs) * job.n  # rows not finished
        self.deadline = time.monotonic() + server.cfg.timeout_s
        self.started: set[int] = set()  # prompts with an event already
        self.refused = False  # shutdown came before any prompt started: 503
        server.streams.add(self)

    def choice_index(self, i: int, ev: Event) -> int:
        return i * self.job.n + ev.row

    def seed(self, row: int) -> int:
        return self.reqs[0].params[row].seed

    async def events(self, request: Request | None = None) -> AsyncIterator[tuple[int, Event]]:
        """Every (prompt, event) until all rows finished; past the deadline, or when the client of a
        collected request is gone, the rows are cancelled (they then finish "cancelled")."""
        try:
            while self.left:
                wait = self.deadline - time.monotonic()
                if wait <= 0:
                    self.cancel()  # idempotent; the rows' Finished events come within a step
                try:
                    # Wake at least once a second to notice a gone client or the deadline.
                    i, ev = await asyncio.wait_for(self.queue.get(), timeout=min(wait, 1.0) if wait > 0 else 1.0)
                except asyncio.TimeoutError:
                    if request is not None and await request.is_disconnected():
                        self.cancel()
                    continue
                self.started.add(i)
                self.left -= isinstance(ev, Finished)
                yield i, ev
        finally:
            self.server.streams.discard(self)
            if self.left:  # the client went away (or the server is stopping): free the rows now
                self.cancel()

    def cancel(self) -> None:
        for r in self.reqs:
            r.cancel()

    def cancel_unstarted(self) -> None:
        """At shutdown: cancel the prompts with nothing generated yet (queued, or their prompt being
        read), so their client is answered now instead of after the running requests."""
        self.refused = not self.started
        for i, r in enumerate(self.reqs):
            if i not in self.started:
                r.cancel()

    def token_text(self, ev: TokenEvent) -> str:
        """The token's text in logprobs: EOS adds nothing to the answer, so it is "" (with no bytes),
        as `tiankong generate` writes it; its entry stays, for its probability."""
        return "" if ev.id in self.server.eos else self.server.engine.token_text(ev.id)

    # ---------------------------------------------------------------- streaming

    async def sse(self) -> AsyncIterator[bytes]:
        job, name = self.job, self.server.name
        completion_tokens = 0
        if job.chat:  # OpenAI's first chunk carries the role only
            delta = {"role": "assistant", "content": ""}
            first = [{"index": c, "delta": delta, "logprobs": None, "finish_reason": None} for c in range(self.left)]
            yield _sse(fmt.envelope(job, name, first, chunk=True))
        out: dict[int, _Choice] = {}
        async for i, ev in self.events():
            c = self.choice_index(i, ev)
            if c not in out:
                out[c] = _Choice(self.reqs[i].params[ev.row].stop, job.logprobs)
            choice = out[c]
            if isinstance(ev, TokenEvent):
                completion_tokens += 1
                chunks = [self._text_chunk(c, choice, text) for text in choice.token(ev)]
            else:
                chunks = [self._text_chunk(c, choice, text) for text in choice.end(ev)]
                chunks.append(self._final_chunk_choice(c, ev))
            for chunk in chunks:
                yield _sse(fmt.envelope(job, name, [chunk], chunk=True))
        if job.include_usage:
            prompt_tokens = sum(len(x) for x in self.ids)
            cached = sum(r.cached_tokens for r in self.reqs)
            usage = fmt.envelope(job, name, [], chunk=True) | {
                "usage": fmt.usage(prompt_tokens, completion_tokens, cached)
            }
            yield _sse(usage)
        yield b"data: [DONE]\n\n"

    def _text_chunk(self, c: int, choice: _Choice, text: str) -> dict[str, Any]:
        """A chunk of text, with the logprobs of the tokens it completes (those whose text it sends)."""
        tokens = choice.take_tokens()
        lp = self._logprobs(tokens, choice.offset) if self.job.logprobs else None
        choice.offset += sum(len(ev.text) for ev in tokens)
        out: dict[str, Any] = {"index": c, "logprobs": lp, "finish_reason": None}
        out.update({"delta": {"content": text}} if self.job.chat else {"text": text})
        return out

    def _logprobs(self, tokens: list[TokenEvent], offset: int = 0) -> dict[str, Any]:
        """These tokens' logprobs in the job's shape; offset: characters before the first token."""
        if self.job.chat:
            return {"content": [fmt.chat_logprob(ev, self.token_text(ev)) for ev in tokens], "refusal": None}
        legacy = fmt.LegacyLogprobs(offset=offset)
        for ev in tokens:
            legacy.add(ev, self.token_text(ev))
        return legacy.to_dict()

    def _final_chunk_choice(self, c: int, fin: Finished) -> dict[str, Any]:
        """The last chunk of a choice: its finish_reason and seed (and the error, if any)."""
        out: dict[str, Any] = {"index": c, "logprobs": None, "finish_reason": fmt.finish_reason(fin)}
        out.update({"delta": {}} if self.job.chat else {"text": ""})
        out["seed"] = self.seed(fin.row)
        if fin.message:
            out["error"] = fin.message
        return out

    # ---------------------------------------------------------------- one response

    async def collect(self, request: Request) -> Response:
        job = self.job
        n_choices = len(self.reqs) * job.n
        texts: dict[int, Finished] = {}
        tokens: list[list[TokenEvent]] = [[] for _ in range(n_choices)]
        async for i, ev in self.events(request):
            c = self.choice_index(i, ev)
            if isinstance(ev, Finished):
                texts[c] = ev
            elif job.logprobs:
                tokens[c].append(ev)
        if self.refused:
            err = _shutting_down()
            return JSONResponse(err.body(), status_code=err.status)
        if all(f.finish_reason == "error" for f in texts.values()):
            err = fmt.ApiError(500, next(iter(texts.values())).message or "generation failed")
            return JSONResponse(err.body(), status_code=500)
        choices = []
        for c in range(n_choices):
            fin = texts[c]
            choice: dict[str, Any] = {"index": c}
            if job.chat:
                choice["message"] = {"role": "assistant", "content": fin.text, "refusal": None}
            else:
                choice["text"] = fin.text
            choice["logprobs"] = self._logprobs(tokens[c]) if job.logprobs else None
            choice["finish_reason"] = fmt.finish_reason(fin)
            choice["seed"] = self.seed(fin.row)
            choices.append(choice)
        completion = sum(f.usage.completion_tokens for f in texts.values())
        body = fmt.envelope(job, self.server.name, choices)
        body["usage"] = fmt.usage(sum(len(x) for x in self.ids), completion, sum(r.cached_tokens for r in self.reqs))
        return JSONResponse(body)


class _Choice:
    """One streamed choice: its text held back while a stop string may begin in it (HeldText),
    and (with logprobs) the tokens whose text is not sent yet; their logprobs go out with the chunk
    that sends it. A chunk is sent when there is text to send (so a token of no text, a character's
    first bytes or EOS, goes out with the next), and when the row ends."""

    def __init__(self, stops: tuple[str, ...], logprobs: bool) -> None:
        self.text = HeldText(stops)
        self.logprobs = logprobs
        self.tokens: list[TokenEvent] = []
        self.offset = 0  # characters of the tokens already sent (completions' text_offset)

    def token(self, ev: TokenEvent) -> list[str]:
        """A token came -> the text of the chunk to send now ([] while there is none)."""
        if self.logprobs:
            self.tokens.append(ev)
        text = self.text.push(ev.text)
        return [text] if text else []

    def end(self, fin: Finished) -> list[str]:
        """The row ended -> the text of the chunk that completes it, if anything is left to send."""
        rest = self.text.finish(fin.text)
        return [rest] if rest or self.tokens else []

    def take_tokens(self) -> list[TokenEvent]:
        tokens, self.tokens = self.tokens, []
        return tokens


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shutting_down() -> fmt.ApiError:
    return fmt.ApiError(503, "the server is shutting down; send the request again once it is back")


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


# ------------------------------------------------------------------------------------- running


def new_batcher(engine: Engine, cfg: ServeConfig) -> Batcher:
    """The decode loop the server's requests go to, sized by cfg."""
    return Batcher(
        engine,
        max_rows=cfg.max_rows,
        # max_queue 0: the server admits a request only into free rows (_Server._submit), so at most
        # max_rows requests are ever in the batcher's queue, and only until its next step.
        max_queue=cfg.max_queue or cfg.max_rows,
        prefix_bytes=cfg.prefix_cache_mib << 20,
        prefill_chunk=cfg.prefill_chunk,
    )


def listen(cfg: ServeConfig) -> list[socket.socket]:
    """Sockets bound to cfg's host (each of its addresses, as uvicorn would bind them) and port, so a
    port in use is one clear error before anything is announced. InputError when they cannot be."""
    try:
        addresses = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"--host {cfg.host} is not an address of this machine ({e.strerror})") from None
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as e:
        for sock in socks:
            sock.close()
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"port {cfg.port} on {cfg.host} is in use; pick another with --port") from None
        raise InputError(f"cannot listen on {cfg.host} port {cfg.port}: {e.strerror}") from None
    return socks


def http_server(app: Starlette, cfg: ServeConfig, log_level: str = "warning") -> uvicorn.Server:
    """uvicorn over build_app's app, which begins its own shutdown first (_Uvicorn)."""
    api: _Server = app.state.server
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=log_level,
        timeout_graceful_shutdown=cfg.drain_s + FINAL_S,
        # A backstop only: the app answers past api.limit requests with its JSON 429 (_InFlight), and
        # uvicorn's plain-text 503 (it counts idle keep-alive connections too) must not come first.
        limit_concurrency=10 * api.limit,
    )
    return _Uvicorn(config, api)


class _Uvicorn(uvicorn.Server):
    """uvicorn alone would let queued requests start while it drains, and cut the streams still
    running when its graceful timeout passes (no finish_reason, no [DONE], a CancelledError
    traceback); the app's begin_shutdown ends them properly first."""

    def __init__(self, config: uvicorn.Config, api: _Server) -> None:
        super().__init__(config)
        self.api = api
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hurried = False  # a second signal came: the running requests are being cancelled

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.api.begin_shutdown()
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """The first SIGINT/SIGTERM drains (uvicorn's should_exit). A second one would make uvicorn
        cut the running streams (force_exit: no [DONE], tracebacks, a plain-text 500); it cancels
        them now instead, each ending its answer "cancelled" within a decode step. Only a third
        quits at once, as uvicorn does."""
        again = self.should_exit
        super().handle_exit(sig, frame)
        if again and not self.hurried and self.loop is not None:
            self.hurried = True
            self.force_exit = False
            self.loop.call_soon_threadsafe(self.api.cancel_now)  # a signal handler must not touch the loop


def serve(engine: Engine, cfg: ServeConfig, announce: Callable[[str], None] = _to_stderr) -> None:
    """Run the server until SIGINT/SIGTERM (blocking); the batcher stops with it. The address is
    bound before `announce` gets the "serving ..." line, so that line is never followed by a bind
    error; the shutdown's progress lines go there too. InputError for an address refused, a port in
    use or a broken preset file."""
    check_bind(cfg.host, cfg.api_key)
    presets = load_presets()  # a broken preset file: one error now, not a 400 to every client naming a preset
    socks = listen(cfg)
    batcher = new_batcher(engine, cfg)
    try:
        server = http_server(build_app(engine, batcher, cfg, presets=presets, announce=announce), cfg)
        host, port = cfg.host, socks[0].getsockname()[1]  # the port bound, where --port was 0
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"
        announce(f"serving {server.api.name} on {url} ({engine.decode_path})")
        server.run(sockets=socks)
    finally:
        for sock in socks:
            sock.close()
        batcher.close(0.0)
