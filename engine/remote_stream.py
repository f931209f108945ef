"""One row of `RemoteEngine.generate` (remote.py): a streamed chat request read in its own
thread, its chunks (OpenAI's streamed chat completions, with logprobs) turned into the engine's
TokenEvents and one Finished.

Kept apart from remote.py, the engine's API (connecting, prompts, one request per row), because
this is the response parsing: what each field of a chunk means for an event, and how OpenAI's
finish reasons map to the engine's.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .errors import RemoteError
from .events import Candidate, Event, Finished, Timing, TokenEvent, Usage
from .params import SamplingParams
from .remote_http import _error_line, _reason, _sse_data, http_client_errors, shut

if TYPE_CHECKING:
    from .remote import ChatPrompt, RemoteEngine


class _Row:
    """One row: a streamed request read in its own thread, its chunks turned into events."""

    def __init__(self, eng: RemoteEngine, row: int, prompt: ChatPrompt, params: SamplingParams, k: int) -> None:
        self.eng, self.row, self.prompt, self.params, self.k = eng, row, prompt, params, k
        self._halt = threading.Event()
        # The connection's socket, kept from the start: for an answer read until the server closes
        # (no chunked encoding) http.client sets conn.sock to None and the response reads on.
        self._sock: socket.socket | None = None

    def stop(self) -> None:
        """Shut the connection down (from any thread): the reader wakes, the server sees the client gone."""
        self._halt.set()
        shut(self._sock)

    def pump(self, out: queue.Queue) -> None:
        try:
            for ev in self.events():
                out.put(ev)
        except BaseException as e:
            out.put(e)
        finally:
            out.put(None)

    def events(self) -> Iterator[Event]:
        eng, url = self.eng, f"{self.eng.base_url}/chat/completions"
        state = _State(start=time.monotonic())
        conn = None
        try:
            conn = eng.http.connection()
            self._sock = conn.sock
            if self._halt.is_set():  # stopped while connecting: stop() saw no socket yet
                shut(self._sock)
            resp = eng.http.send(conn, "POST", "/chat/completions", eng._request(self.prompt, self.params, self.k))
            if resp.status != 200:
                raise RemoteError(f"{url} answered {_error_line(resp.status, resp.read())}")
            for data in _sse_data(resp):
                if self._halt.is_set():
                    break
                yield from self._chunk(json.loads(data), state)
        except RemoteError:
            raise
        except json.JSONDecodeError:
            raise RemoteError(f"{url} sent a chunk that is not JSON; is this an OpenAI-compatible server?") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # a field missing or of another type
            raise RemoteError(f"{url} sent a chunk not in OpenAI's shape ({_reason(e)})") from None
        except (OSError, http_client_errors) as e:
            if not self._halt.is_set():  # else: the connection was shut under its reader, by stop()
                raise RemoteError(f"the stream from {url} broke: {_reason(e)}") from None
        finally:
            if conn is not None:
                conn.close()
        if state.finish is None and not self._halt.is_set():
            raise RemoteError(f"{url} ended the stream without a finish_reason")
        yield self._finished(state)

    def _chunk(self, chunk: dict[str, Any], state: _State) -> Iterator[TokenEvent]:
        if isinstance(chunk.get("error"), dict):  # an error sent inside the stream
            raise RemoteError(f"the server: {chunk['error'].get('message', chunk['error'])}")
        if isinstance(chunk.get("usage"), dict):
            state.prompt_tokens = chunk["usage"].get("prompt_tokens")
        for choice in chunk.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content") or ""
            entries = ((choice.get("logprobs") or {}).get("content")) or []
            if delta and not entries:
                raise RemoteError(
                    "the server sent tokens without logprobs; the playground needs one that returns "
                    "top_logprobs (tiankong serve, vLLM, llama.cpp's server)"
                )
            # One entry per token; a delta of several tokens gives its text to the last of them.
            texts = [str(e.get("token", "")) for e in entries]
            if "".join(texts) != delta:
                texts = [""] * (len(entries) - 1) + [delta] if entries else []
            for entry, text in zip(entries, texts, strict=True):
                yield self._token(entry, text, state)
            state.text.append(delta)
            if choice.get("finish_reason"):
                state.finish = choice["finish_reason"]
                state.message = str(choice.get("error") or "")

    def _token(self, entry: Mapping[str, Any], text: str, state: _State) -> TokenEvent:
        eng = self.eng
        candidates = tuple(
            Candidate(eng._token_id(c), str(c.get("token", "")), float(c["logprob"]), _p(c.get("p_sample")))
            for c in entry.get("top_logprobs") or []
        )
        tid = eng._token_id(entry)
        state.ids.append(tid)
        if state.first is None:
            state.first = time.monotonic()
        return TokenEvent(
            row=self.row,
            index=len(state.ids) - 1,
            id=tid,
            text=text,
            logprob=float(entry["logprob"]),
            p_sample=_p(entry.get("p_sample")),
            entropy=None,  # the server sends the top candidates only, not the whole distribution
            candidates=candidates,
        )

    def _finished(self, state: _State) -> Finished:
        """The row's Finished, with the engine's reasons: OpenAI's "stop" is "eos" unless stop strings
        were given (then "stop"; a server that streams the stop string, as some do, has it cut
        here, as the engine cuts it), "length" is "context" when max_tokens was not reached."""
        n, p, text = len(state.ids), self.params, "".join(state.text)
        reason = {"stop": "stop" if p.stop else "eos", "length": "length" if n >= p.max_new_tokens else "context"}
        finish = "cancelled" if state.finish is None else reason.get(state.finish, state.finish)
        if finish == "stop":  # the text ends at the first stop string, if the server sent it
            text = text[: min((text.find(s) for s in p.stop if s in text), default=len(text))]
        if state.message:
            finish = "error"
        end = time.monotonic()
        first = state.first or end
        decode_s = end - first
        self.eng._calibrate(self.prompt, state.prompt_tokens)
        prompt_tokens = state.prompt_tokens if isinstance(state.prompt_tokens, int) else len(self.prompt)
        return Finished(
            row=self.row,
            text=text,
            finish_reason=finish,
            usage=Usage(prompt_tokens, n),
            timing=Timing(first - state.start, decode_s, (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0),
            token_ids=tuple(state.ids),
            message=state.message,
            seed=p.seed,
        )


@dataclass
class _State:
    """What a row has read so far."""

    start: float
    first: float | None = None  # when the first token came
    finish: str | None = None  # the server's finish_reason
    message: str = ""  # an error the server put on the last chunk
    prompt_tokens: Any = None  # usage.prompt_tokens, when sent

    def __post_init__(self) -> None:
        self.text: list[str] = []
        self.ids: list[int] = []


def _p(value: Any) -> float | None:
    """p_sample as sent, or None when the server does not report it."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
