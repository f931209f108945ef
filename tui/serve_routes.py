"""The server behind `tiankong serve`'s routes: _Server answers each route (auth, presets, the
checks of a request's size), reads, encodes and queues a request's prompts in the batcher, and runs
the shutdown (begin_shutdown, cancel_now). tui/serve.py builds the app around it; a request's events
become its answer in serve_stream.py. Apart so that serve.py reads as the config, the app and the
entry point, and this file as what happens to one request from its body to the batcher.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tiankong.engine.batcher import Batcher, QueueFull
from tiankong.engine.batcher import Request as BatcherRequest
from tiankong.engine.chat import RAW_MODE_FIX, no_template_note
from tiankong.engine.engine import Engine, draw_seed
from tiankong.engine.errors import ChatTemplateFault, ContextOverflow, InputError, TiankongError
from tiankong.engine.events import Event
from tiankong.engine.model_names import display_name
from tiankong.engine.ollama import ollama_canonical
from tiankong.engine.params import SamplingParams
from tiankong.presets import Preset, Presets
from tiankong.tui import openai_format as fmt
from tiankong.tui.serve_stream import _shutting_down, _Stream

if TYPE_CHECKING:  # serve.py imports this file; the config is only named in annotations here
    from tiankong.tui.serve import ServeConfig

# Requests handled at once, past the queue and the rows: those being checked and encoded.
IN_FLIGHT_MARGIN = 16

# Arrays and objects within each other that a request body may hold. OpenAI's bodies nest a few
# levels; a deeper one is refused by name, before any code walks it (json itself recurses and
# would raise RecursionError near 1,000 levels, a traceback and a plain-text 500).
MAX_JSON_DEPTH = 64

# A model without a chat template reads a chat as plain text (engine/chat.py, raw mode): said once at
# startup and on every chat answer, in an X-Tiankong-Warning header, where the roles were dropped; and
# with the model list, where a client (tiankong chat -m URL, engine/remote.py) learns it before any chat.
NO_TEMPLATE = no_template_note("/v1/chat/completions")


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
        self.name = cfg.model_name or display_name(engine.folder)  # ollama:NAME:TAG, ORG/NAME: never a blob's hash
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
        self.again = "Ctrl+C"  # what hurries the shutdown, as the stopping line says: the first signal's name
        self.drain_timer: asyncio.TimerHandle | None = None

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "rows": self.batcher.rows, "pending": self.batcher.pending})

    async def models(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return JSONResponse({"object": "list", "data": [self._card()]}, headers=self._warning(chat=True))

    async def model(self, request: Request) -> Response:
        """GET /v1/models/{id}: the served model's card (openai's client.models.retrieve)."""
        if (denied := self._auth(request)) is not None:
            return denied
        model = request.path_params["model"]
        if not self._serves(model):
            err = self._unknown_model(model)
            return JSONResponse(err.body(), status_code=err.status)
        return JSONResponse(self._card(), headers=self._warning(chat=True))

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
            return _error(e)
        except ChatTemplateFault as e:  # the server's own template failed: not the request's fault
            return _error(self._template_fault(e))
        except TiankongError as e:
            err = fmt.ApiError(400, str(e), "messages" if chat else "prompt")
            return JSONResponse(err.body(), status_code=400)
        return JSONResponse({"count": len(ids), "max_model_len": self.engine.cfg.max_seq_len, "tokens": ids})

    def _preset(self, name: str) -> SamplingParams:
        """A preset's SamplingParams, from those read at startup; InputError for an unknown name, or
        for a preset whose file was broken then. That error names the preset, not its file: the
        file's path and error are the server's (its warning on stderr at startup says them)."""
        if isinstance(self.presets, Presets):  # as load_presets gives them (a caller may give a dict)
            key = self.presets.key(name)
            if key in self.presets.broken:
                raise InputError(
                    f"preset {key!r} could not be loaded on this server (its file has an error, which the "
                    "server reported when it started); use another preset"
                )
            return self.presets.find(name).params
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
        """The name it is served under, its path, or another spelling of its Ollama name (the one
        given to --model: ollama:tk for ollama:tk:latest)."""
        canonical = ollama_canonical(model)
        return model in (self.name, str(self.engine.folder)) or (canonical is not None and canonical == self.name)

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
                f"to finish ({self.again} again to cancel {them} now)"
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
            stream.cancel("cancelled: shutting down")

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
            if body.get("model") is not None and not self._serves(body["model"]):  # null: none named
                raise self._unknown_model(body["model"])
            self._check_size(job)
            ids = [await asyncio.to_thread(self._encode, job, p) for p in job.prompts]
            queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
            reqs = self._submit(job, ids, queue)
        except fmt.ApiError as e:
            return _error(e)
        except QueueFull as e:
            err = fmt.ApiError(429, str(e), code="rate_limit_exceeded")
            return JSONResponse(err.body(), status_code=429, headers={"Retry-After": str(e.retry_after)})
        stream = _Stream(self, job, ids, reqs, queue)
        request.scope["tiankong.stream"] = stream  # for --log-requests (serve.py, _RequestLog)
        warn = self._warning(chat)
        if job.stream:
            chunks = stream.sse(request)
            try:  # waits for the first token: until then an error can still be an HTTP status
                first = await anext(chunks)
            except fmt.ApiError as e:
                return _error(e)
            return StreamingResponse(
                _chained(first, chunks), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **warn}
            )
        response = await stream.collect(request)
        response.headers.update(warn)
        return response

    def _warning(self, chat: bool) -> dict[str, str]:
        """The X-Tiankong-Warning header of an answer that is (or lists what answers) a chat."""
        return {"X-Tiankong-Warning": NO_TEMPLATE} if chat and self.engine.template is None else {}

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
        """The body, refused past max_body_bytes before it is all read (413), parsed as JSON (400,
        also when nested deeper than MAX_JSON_DEPTH); 408 when nothing of it comes for
        body_timeout_s; 503 when the server begins to shut down while the body is still coming."""
        cap, idle = self.cfg.max_body_bytes, self.cfg.body_timeout_s
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise fmt.ApiError(413, f"the request body is {int(declared):,} bytes; the limit is {cap:,}")
        data = bytearray()
        reader = asyncio.current_task()
        self.reading.add(reader)
        parts = request.stream()
        try:
            while True:
                try:
                    part = await asyncio.wait_for(anext(parts), timeout=idle)
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    raise fmt.ApiError(
                        408, f"the request body stopped coming: nothing of it came for {idle:g} s; send it whole"
                    ) from None
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
            body = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise fmt.ApiError(400, f"We could not parse the JSON body of your request: {e}") from None
        except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
            raise fmt.ApiError(
                400, "We could not parse the JSON body of your request: a number in it has too many digits"
            ) from None
        except RecursionError:  # deeper than json's own limit
            raise _nested_too_deeply() from None
        if _too_deep(body):
            raise _nested_too_deeply()
        return body

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
        except ContextOverflow as e:  # OpenAI's code for it, which clients test for
            raise fmt.ApiError(400, str(e), param, "context_length_exceeded") from None
        except ChatTemplateFault as e:  # the template the server loaded failed (a 400 is raise_exception's)
            raise self._template_fault(e) from None
        except TiankongError as e:
            raise fmt.ApiError(400, str(e), param) from None
        return ids

    def _template_fault(self, e: ChatTemplateFault) -> fmt.ApiError:
        """The server's chat template failed on a request: the operator gets the whole line on stderr
        (where the template came from, the fix), the client only what the template did, without the
        server's paths or command-line advice. A template broken from the start was said at startup."""
        template = self.engine.template
        if template is not None and template.broken is not None:
            return fmt.ApiError(
                500, "the server's chat template cannot be used (its error was reported when the server started)"
            )
        self.announce(f"error: {for_serve(str(e))}")
        return fmt.ApiError(500, f"the server's chat template failed on this request: {e.problem}")

    def _submit(self, job: fmt.Job, ids: list[list[int]], queue: asyncio.Queue) -> list:
        """One batcher request per prompt (n rows each, seeds seed, seed + 1, ...); all or none."""
        if self.closing:
            raise _shutting_down()
        loop = asyncio.get_running_loop()
        p = job.params
        if p.seed is None:
            p = p.replace(seed=draw_seed())
        waiting, places = self.batcher.pending, self.cfg.max_queue
        if places and waiting + len(ids) > places:  # checked first, so the batcher's own refusal never comes
            if len(ids) == 1 or waiting >= places:
                raise QueueFull(
                    f"the server's queue is full ({_plural(waiting, 'request')} waiting for a row; its --max-queue "
                    f"is {places}); retry shortly"
                )
            raise QueueFull(
                f"the server's queue has room for {_plural(places - waiting, 'more request')} and this one needs "
                f"{len(ids)}, one per prompt (its --max-queue is {places}); retry shortly, or send fewer prompts"
            )
        if not places:  # no waiting line: run now, in rows that are free, or 429
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

                rows = [p.replace(seed=p.seed + j) for j in range(job.n)]  # parse_request kept them in range
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


def for_serve(line: str) -> str:
    """A chat template's error line as a server's operator reads it: without generate's raw mode."""
    return line.replace(RAW_MODE_FIX, "")


def _error(e: fmt.ApiError) -> JSONResponse:
    """`e` as OpenAI's error JSON. After a body cut short (408: it stopped coming; 413: too big) the
    connection cannot carry another request, so the answer closes it (else uvicorn held it open for
    its keep-alive timeout, 5 s, before the client saw it end)."""
    close = {"Connection": "close"} if e.status in (408, 413) else None
    return JSONResponse(e.body(), status_code=e.status, headers=close)


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _nested_too_deeply() -> fmt.ApiError:
    return fmt.ApiError(
        400,
        f"the JSON body is nested too deeply (arrays and objects more than {MAX_JSON_DEPTH} levels within "
        "each other); send a flatter body",
    )


def _too_deep(value: Any) -> bool:
    """Whether arrays and objects sit more than MAX_JSON_DEPTH levels within each other in value
    (walked without recursion, so that depth itself cannot overflow the stack)."""
    level: list[Any] = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [v for c in level if isinstance(c, (list, dict)) for v in (c.values() if isinstance(c, dict) else c)]
        if not level:
            return False
    return any(isinstance(c, (list, dict)) for c in level)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
