"""`tiankong serve`: an OpenAI-compatible HTTP server over one engine, with continuous batching.

    tiankong serve -m ../shared/models/stories260K --port 8000
    curl localhost:8000/v1/completions -d '{"prompt": "Once", "max_tokens": 20, "logprobs": 5}'

Routes: /v1/chat/completions, /v1/completions (streaming as server-sent events ending in
`data: [DONE]`, or one JSON), /v1/models, /v1/models/{id}, /health, each with a trailing slash too;
any other path or method gets OpenAI's error JSON too; with log_requests, one line per request on
stderr. Requests go to one engine.batcher.Batcher, whose thread runs the decode loop; the event
loop only parses, queues and writes (openai_format.py holds the request checks and
response shapes). A stream holds back text where a stop string may begin (engine.generate.HeldText),
so it adds up to the non-streamed answer and never shows a stop string.

This file holds the config, the app and serve(); serve_routes.py answers the routes, queues the
requests and runs the shutdown (_Server), serve_stream.py turns one request's events into its
answer, serve_run.py binds the sockets and runs uvicorn.

Limits: a bounded queue (429 with Retry-After when full; with max_queue 0, when the rows a request
needs are not free), a cap on requests handled at once, counted from when their body has come (the
same 429, answered by the app before uvicorn's own plain-text 503 could be), a body size cap (413), a
body that stops coming dropped after body_timeout_s (408), a max_tokens cap (the context, by
default), a per-request timeout (rows still running are cancelled; a request whose answer had not begun
gets a 503), 400 with OpenAI's error JSON
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
import socket
import sys
import time
from dataclasses import dataclass
from typing import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiankong.engine.batcher import Batcher
from tiankong.engine.engine import Engine
from tiankong.presets import Preset, load_presets
from tiankong.tui import openai_format as fmt
from tiankong.tui.serve_routes import NO_TEMPLATE, _Server, for_serve
from tiankong.tui.serve_run import check_api_key, check_bind, http_server, listen, unbracketed

__all__ = ["ServeConfig", "build_app", "check_bind", "listen", "new_batcher", "serve", "unbracketed"]


@dataclass
class ServeConfig:
    """How the server runs; every field is a `tiankong serve` flag."""

    host: str = "127.0.0.1"  # any other address needs api_key
    port: int = 8000
    api_key: str | None = None  # required as a bearer token when set
    model_name: str | None = None  # the id in /v1/models and responses (default: model_names.display_name)
    max_rows: int = 16  # rows decoded together
    max_queue: int = 64  # requests waiting for a row; more get 429 (0: none wait)
    max_body_bytes: int = 1 << 20  # larger bodies get 413
    max_tokens: int | None = None  # cap on max_tokens (default: the model's context)
    timeout_s: float = 600.0  # per request; its rows are then cancelled
    drain_s: float = 10.0  # on shutdown, how long running requests may finish
    prefix_cache_mib: int = 256  # keys and values of recent prompts and answers kept for reuse (0: none)
    prefill_chunk: int = 256  # prompt tokens read between two decode steps (chunked prefill)
    body_timeout_s: float = 30.0  # a request body that sends nothing for this long is dropped (408)
    log_requests: bool = False  # one line per request on stderr (method, path, status, tokens, ms)

    def __post_init__(self) -> None:
        self.host = unbracketed(self.host)  # [::1], as URLs write it, binds ::1
        if self.api_key:
            check_api_key(self.api_key)


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
    app stops. presets: as load_presets() gives them (read now when not given; a broken file leaves
    out its preset, and a request naming it gets that file's error); announce: where the shutdown's
    progress lines go."""
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
        middleware=[
            *([Middleware(_RequestLog, announce=announce)] if cfg.log_requests else []),  # the path as sent
            Middleware(_Slashless),
            Middleware(_InFlight, server=server),
        ],
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


class _Slashless:
    """/v1/models/ is /v1/models: one trailing slash is dropped before routing, so a client's base URL
    ending in "/" reaches the same routes, instead of Starlette's empty 307 (a redirect a POST may not
    follow) or the model route's 404 for the model ""."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope["path"] = path[:-1]  # in place: the request log (outside) reads what the routes left in it
        await self.app(scope, receive, send)


class _RequestLog:
    """--log-requests: one line per request once it is answered, "POST /v1/completions 200 16 tokens
    41 ms" (tokens: those generated, where it generated any; ms: until the last byte was sent), and
    why it ended early where it did: "... 200 3 tokens 1000 ms (timed out)", "(client left)"."""

    def __init__(self, app: ASGIApp, announce: Callable[[str], None]) -> None:
        self.app, self.announce = app, announce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, path = time.monotonic(), 0, scope["path"]  # as sent (before _Slashless)

        async def send_seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seen)
        finally:
            stream = scope.get("tiankong.stream")  # serve_routes sets it on requests that generate
            tokens = f" {stream.tokens} tokens" if stream is not None else ""
            # Why it ended early (timed out, client left, shutting down): its status may still be 200.
            why = f" ({stream.why_ended()})" if stream is not None and stream.why_ended() else ""
            ms = (time.monotonic() - start) * 1000
            self.announce(f"{scope['method']} {path} {status or '-'}{tokens} {ms:.0f} ms{why}")


class _InFlight:
    """Counts the requests being handled (all but /health) from when their body has arrived; past
    server.limit, the 429 of a full queue in OpenAI's JSON with Retry-After, before any work.
    uvicorn's own limit (a plain-text 503) is set far above it, so a burst of clients gets the
    documented answer. A body still arriving does not count: clients that send part of one and
    stall would otherwise hold every place (each is dropped after cfg.body_timeout_s, _read_json). So the
    limit is checked when a request starts and it counts later: bodies that finish together may pass it
    by a few, which the batcher's queue limit (a 429 too) still bounds."""

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
        counted = False

        async def receive_counted() -> Message:
            nonlocal counted
            message = await receive()
            if not counted and not (message["type"] == "http.request" and message.get("more_body", False)):
                counted = True  # the body is all here (or the client left): the request counts from now
                server.in_flight += 1
            return message

        try:
            await self.app(scope, receive_counted, send)
        finally:
            if counted:
                server.in_flight -= 1


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


def serve(
    engine: Engine,
    cfg: ServeConfig,
    announce: Callable[[str], None] = _to_stderr,
    presets: dict[str, Preset] | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Run the server until SIGINT/SIGTERM (blocking); the batcher stops with it, and SIGINT ends in
    KeyboardInterrupt after "stopped (Ctrl+C)". The address is bound before `announce` gets the
    "serving ..." line, so that line is never followed by a bind error, and it comes once uvicorn
    handles SIGINT (a script that sends one after it stops the server); the shutdown's progress
    lines go there too. presets: as load_presets() gives them (read
    now when not given). sockets: listen(cfg)'s, bound before the model loaded (bound now when not
    given; closed when the server stops). InputError for an address refused, a port in use or a
    presets path that is a file."""
    socks = listen(cfg) if sockets is None else sockets
    if presets is None:  # read once, now: the server never reads them again
        presets = load_presets()
    if engine.template is None:  # said once here; each chat answer says it too (its X-Tiankong-Warning)
        announce(f"warning: {NO_TEMPLATE}; give --chat-template FILE")
    elif engine.template.broken is not None:  # the model's own template: a chat request gets a 500 naming none of it
        announce(f"warning: {for_serve(engine.template.broken)}; until then every chat request gets a 500")
    batcher = new_batcher(engine, cfg)
    try:
        server = http_server(build_app(engine, batcher, cfg, presets=presets, announce=announce), cfg)
        host, port = cfg.host, socks[0].getsockname()[1]  # the port bound, where --port was 0
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"
        server.ready = lambda: announce(f"serving {server.api.name} on {url}; decode: {engine.decode_path}")
        server.run(sockets=socks)
        # uvicorn raises the SIGINT it held again once drained, as KeyboardInterrupt only where SIGINT
        # had Python's handler: started from a script in the background, SIGINT is ignored (the
        # shell's job control), and the server stopped all the same. Same ending, same exit code.
        if server.interrupted:
            raise KeyboardInterrupt
    except KeyboardInterrupt:  # uvicorn, done draining, raises the Ctrl+C it held: the caller exits 130
        announce("stopped (Ctrl+C)")
        raise
    finally:
        for sock in socks:
            sock.close()
        batcher.close(0.0)
