"""One `tiankong serve` request's events from the batcher, as server-sent events (_Stream.sse) or
as one response (_Stream.collect), and one streamed choice's held-back text and logprobs (_Choice).
Apart from the routes (serve_routes.py) because this is the response side: what a client reads,
chunk by chunk, once its request is queued.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tiankong.engine.events import Event, Finished, TokenEvent
from tiankong.engine.generate import HeldText
from tiankong.tui import openai_format as fmt

if TYPE_CHECKING:  # serve_routes.py imports this file; the server is only named in annotations here
    from tiankong.tui.serve_routes import _Server

# How often a collected (non-streamed) request looks whether its client is still there, while its
# tokens come: a look is one non-blocking receive. (A stream's response notices on its own.)
LOOK_S = 0.25


class _Stream:
    """One request's events from the batcher, as SSE chunks or as one response."""

    def __init__(self, server: _Server, job: fmt.Job, ids: list[list[int]], reqs: list, queue: asyncio.Queue) -> None:
        self.server, self.job, self.ids, self.reqs, self.queue = server, job, ids, reqs, queue
        self.left = len(reqs) * job.n  # rows not finished
        self.deadline = time.monotonic() + server.cfg.timeout_s
        self.started: set[int] = set()  # prompts with an event already
        self.refused = False  # shutdown came before any prompt started: 503
        self.timed_out = False  # the deadline passed and the rows were cancelled
        self.ending: str | None = None  # why it ended before its rows did, for the request log
        self.watch: Request | None = None  # whose client to look for while no response is under way
        self.tokens = 0  # generated so far, every row (the request log's count)
        server.streams.add(self)

    def choice_index(self, i: int, ev: Event) -> int:
        return i * self.job.n + ev.row

    def seed(self, row: int) -> int:
        return self.reqs[0].params[row].seed

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """Every (prompt, event) until all rows finished; past the deadline, or when the client of
        `watch` is gone (looked at every LOOK_S, tokens coming or not), the rows are cancelled (they
        then finish "cancelled")."""
        looked = time.monotonic()
        try:
            while self.left:
                now = time.monotonic()
                wait = self.deadline - now
                if wait <= 0 and not self.timed_out:
                    self.timed_out = True
                    self.cancel("timed out")  # the rows' Finished events come within a step
                request = self.watch  # None once a streamed response is under way: it notices on its own
                if request is not None and now - looked >= LOOK_S:
                    looked = now
                    if await request.is_disconnected():
                        self.cancel("client left")
                try:
                    # Wake to notice the deadline (once a second) or a gone client (every LOOK_S).
                    every = 1.0 if self.watch is None else LOOK_S
                    i, ev = await asyncio.wait_for(self.queue.get(), timeout=min(wait, every) if wait > 0 else every)
                except asyncio.TimeoutError:
                    continue
                self.started.add(i)
                self.left -= isinstance(ev, Finished)
                self.tokens += isinstance(ev, TokenEvent)
                yield i, ev
        finally:
            self.server.streams.discard(self)
            if self.left:  # the client went away (or the server is stopping): free the rows now
                self.cancel("client left")

    def why_ended(self) -> str | None:
        """Why it ended before its rows did, for the request log; a stream whose rows are still left
        once its response is over lost its client (its generator may not have been closed yet)."""
        return self.ending or ("client left" if self.left else None)

    def cancel(self, why: str = "cancelled") -> None:
        """Cancel every row; `why` is what the request log says of it (the first reason given)."""
        self.ending = self.ending or why
        for r in self.reqs:
            r.cancel()

    def cancel_unstarted(self) -> None:
        """At shutdown: cancel the prompts with nothing generated yet (queued, or their prompt being
        read), so their client is answered now instead of after the running requests."""
        self.refused = not self.started
        if self.refused:
            self.ending = self.ending or "shutting down"
        for i, r in enumerate(self.reqs):
            if i not in self.started:
                r.cancel()

    def token_text(self, ev: TokenEvent) -> str:
        """The token's text in logprobs: EOS adds nothing to the answer, so it is "" (with no bytes),
        as `tiankong generate` writes it; its entry stays, for its probability."""
        return "" if ev.id in self.server.eos else self.server.engine.token_text(ev.id)

    # ---------------------------------------------------------------- streaming

    async def sse(self, request: Request) -> AsyncIterator[bytes]:
        """The answer as server-sent events. Nothing is sent before the first token comes (or every
        row has ended), so that a request whose --timeout passes before its answer begins can still be
        answered with an HTTP error: the first `anext` raises that ApiError (status 503), before any
        header went out. Meanwhile the request's client is looked for as a collected one's is."""
        job, name = self.job, self.server.name
        events, held = self.events(), []
        self.watch = request
        async for item in events:
            held.append(item)
            if isinstance(item[1], TokenEvent):
                break
        self.watch = None  # the streamed response notices a gone client on its own
        if self.timed_out and not self.tokens and not self.refused:
            raise self.timeout_error()
        if job.chat:  # OpenAI's first chunk carries the role only
            delta = {"role": "assistant", "content": ""}
            n = len(self.reqs) * job.n
            first = [{"index": c, "delta": delta, "logprobs": None, "finish_reason": None} for c in range(n)]
            yield _sse(fmt.envelope(job, name, first, chunk=True))
        out: dict[int, _Choice] = {}
        for i, ev in held:
            for chunk in self._chunks(out, i, ev):
                yield chunk
        async for i, ev in events:  # where the loop above stopped, at the first token
            for chunk in self._chunks(out, i, ev):
                yield chunk
        if job.include_usage:
            prompt_tokens = sum(len(x) for x in self.ids)
            cached = sum(r.cached_tokens for r in self.reqs)
            usage = fmt.envelope(job, name, [], chunk=True) | {"usage": fmt.usage(prompt_tokens, self.tokens, cached)}
            yield _sse(usage)
        yield b"data: [DONE]\n\n"

    def _chunks(self, out: dict[int, _Choice], i: int, ev: Event) -> list[bytes]:
        """The SSE chunks one event of prompt i sends; out: the choices streaming, by index."""
        c = self.choice_index(i, ev)
        if c not in out:
            out[c] = _Choice(self.reqs[i].params[ev.row].stop, self.job.logprobs)
        choice = out[c]
        if isinstance(ev, TokenEvent):
            chunks = [self._text_chunk(c, choice, text) for text in choice.token(ev)]
        else:
            chunks = [self._text_chunk(c, choice, text) for text in choice.end(ev)]
            chunks.append(self._final_chunk_choice(c, ev))
        return [_sse(fmt.envelope(self.job, self.server.name, [chunk], chunk=True)) for chunk in chunks]

    def timeout_error(self) -> fmt.ApiError:
        """A request whose --timeout passed before its answer began: the server was too busy for it."""
        return fmt.ApiError(
            503,
            f"the request timed out before its answer began: it waited {self.server.cfg.timeout_s:g} s (the "
            "server's --timeout) for the requests ahead of it; retry later (the server's operator can give a "
            "longer --timeout or more --max-rows)",
        )

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
            eos = self.server.eos
            return {"content": [fmt.chat_logprob(ev, self.token_text(ev), eos) for ev in tokens], "refusal": None}
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
        self.watch = request
        async for i, ev in self.events():
            c = self.choice_index(i, ev)
            if isinstance(ev, Finished):
                texts[c] = ev
            elif job.logprobs:
                tokens[c].append(ev)
        if self.refused or (self.timed_out and not self.tokens):
            err = _shutting_down() if self.refused else self.timeout_error()
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


def _shutting_down() -> fmt.ApiError:
    return fmt.ApiError(503, "the server is shutting down; send the request again once it is back")


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"
