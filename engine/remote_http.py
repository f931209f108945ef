"""The HTTP side of `RemoteEngine` (remote.py): one server's URL and key, requests on fresh
connections, server-sent events, and one-line texts for what went wrong (an error body, a refused
key, a broken connection).

Kept apart so that remote.py reads as the engine's API and remote_stream.py as the reading of a
streamed answer; nothing here knows about tokens or events.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

from .errors import InputError, ModelLoadError, error_line, quoted

CONNECT_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 15.0  # GET /models, /props, POST /tokenize: small answers; a server silent this long is stuck
READ_TIMEOUT_S = 120.0  # between two chunks of a stream (a long prompt's prefill on a slow server)
_ROUTES = ("/chat/completions", "/completions", "/models")  # a route pasted with its base: the base is meant
# tiankong serve's warning about the model it serves (it has no chat template), sent with its model
# list and each chat answer (tui/serve_routes.py): kept, so the playground says it as for a local model.
WARNING_HEADER = "X-Tiankong-Warning"

http_client_errors = http.client.HTTPException


class _Http:
    """One server: its base URL, the key, and requests on fresh connections (one per stream, so a
    stream is cancelled by shutting its own socket). `model` is the model the URL chose
    (BASE/models/ID, the name tiankong stores for a remote model), else None."""

    def __init__(self, url: str, api_key: str | None) -> None:
        parts, path, self.model = _parse(url)
        self.base = f"{parts.scheme}://{parts.netloc}{path}"
        self.root = path.removesuffix("/v1")  # where vLLM's /tokenize lives
        self.path, self.parts, self.host = path, parts, parts.hostname
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._open: set[socket.socket] = set()  # sockets of requests in flight, for abort()
        self._lock = threading.Lock()
        self.aborted = False

    def connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        """A connected connection whose reads wait up to `timeout` (default: a stream's READ_TIMEOUT_S)."""
        kind = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        conn = kind(self.host, self.parts.port, timeout=CONNECT_TIMEOUT_S)
        conn.connect()
        conn.sock.settimeout(READ_TIMEOUT_S if timeout is None else timeout)
        return conn

    def send(
        self, conn: http.client.HTTPConnection, method: str, route: str, body: Any = None, root: bool = False
    ) -> http.client.HTTPResponse:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, (self.root if root else self.path) + route, body=data, headers=self.headers)
        return conn.getresponse()

    def request(self, method: str, route: str, body: Any = None, root: bool = False) -> tuple[int, bytes]:
        """One short request on its own connection -> (status, body bytes)."""
        return self.exchange(self.connection(PROBE_TIMEOUT_S), method, route, body, root)

    def exchange(
        self, conn: http.client.HTTPConnection, method: str, route: str, body: Any = None, root: bool = False
    ) -> tuple[int, bytes]:
        """A request on an open connection (closed after) -> (status, body bytes); abort() ends it."""
        status, _, data = self.answer(conn, method, route, body, root)
        return status, data

    def answer(
        self, conn: http.client.HTTPConnection, method: str, route: str, body: Any = None, root: bool = False
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """As exchange, with the answer's headers -> (status, headers, body bytes)."""
        sock = conn.sock  # kept: http.client drops conn.sock when an answer is read until close
        with self._lock:
            self._open.add(sock)
            if self.aborted:
                shut(sock)
        try:
            resp = self.send(conn, method, route, body, root)
            return resp.status, resp.headers, resp.read()
        finally:
            with self._lock:
                self._open.discard(sock)
            conn.close()

    def abort(self) -> None:
        """End the requests in flight and refuse the next ones (from any thread)."""
        with self._lock:
            self.aborted = True
            for sock in self._open:
                shut(sock)


def shut(sock: socket.socket | None) -> None:
    """Shut a socket down (from any thread): its reader wakes at once, the server sees the client leave."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed
            pass


def _parse(url: str) -> tuple[Any, str, str | None]:
    """A --model URL -> (its parts, the base path, the chosen model or None). BASE/models/ID names
    model ID at BASE; a pasted route (BASE/chat/completions, BASE/models) means BASE."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as error:  # an unclosed or invalid [IPv6] host
        raise InputError(
            f"the host in {quoted(url)} is not valid ({error_line(error)}); give one like http://127.0.0.1:8000/v1 "
            "or http://[::1]:8000/v1"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelLoadError(f"{url!r} is not a server URL; give one like http://127.0.0.1:8000/v1")
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        raise InputError(
            f"the port in {quoted(url)} is not a number from 1 to 65535; give one like http://127.0.0.1:8000/v1"
        )
    path, model = parts.path.rstrip("/"), None
    if "/models/" in path:
        path, model = path.split("/models/", 1)
        model = unquote(model) or None
    else:
        path = next((path.removesuffix(r) for r in _ROUTES if path.endswith(r)), path)
    return parts, path or "/v1", model  # no path: OpenAI's /v1


def _models(http: _Http, api_key: str | None) -> tuple[list[Any], str | None]:
    """GET /models -> (the listed cards, the server's WARNING_HEADER or None). One line for each way it fails: no server there, a server
    that takes the connection but does not answer (not OpenAI's API, or stuck), a refused key."""
    where, asked = f"{http.base}/models", f"GET {http.path}/models"
    try:
        conn = http.connection(PROBE_TIMEOUT_S)
    except (OSError, http_client_errors) as e:
        raise ModelLoadError(f"cannot reach {http.base}: {_reason(e)}; is the server running?") from None
    try:
        status, headers, body = http.answer(conn, "GET", "/models")
    except (OSError, http_client_errors) as e:
        if http.aborted:
            raise ModelLoadError(f"connecting to {http.base} was cancelled") from None
        if isinstance(e, TimeoutError):
            raise ModelLoadError(
                f"{http.base} accepted the connection but did not answer {asked} within {PROBE_TIMEOUT_S:g} s; "
                "is it an OpenAI-compatible server, and is it busy?"
            ) from None
        raise ModelLoadError(
            f"{http.base} accepted the connection but broke off its answer to {asked} ({_reason(e)}); "
            "is it an OpenAI-compatible server?"
        ) from None
    if status != 200:
        raise ModelLoadError(f"{where} answered {_error_line(status, body)}{_key_hint(status, api_key)}")
    cards = _json(body, where).get("data")
    warning = " ".join(headers.get(WARNING_HEADER, "").split()) or None  # one line, whatever the server sent
    return (cards if isinstance(cards, list) else []), warning


def _llama_cpp_context(http: _Http) -> int | None:
    """llama.cpp's server: the context its slots run with (GET /props, default_generation_settings.n_ctx
    or n_ctx), which --ctx-size may set below the model's n_ctx_train. None when it does not say."""
    try:
        status, body = http.request("GET", "/props", root=True)
        props = json.loads(body) if status == 200 else {}
        settings = props.get("default_generation_settings") or {}
        return settings.get("n_ctx", props.get("n_ctx"))
    except (OSError, http_client_errors, ValueError, AttributeError):
        return None


def _sse_data(resp: http.client.HTTPResponse) -> Iterator[str]:
    """Server-sent events -> the data of each event, up to `data: [DONE]`."""
    while line := resp.readline():
        text = line.decode("utf-8", "replace").strip()
        if text.startswith("data:"):
            data = text[5:].strip()
            if data == "[DONE]":
                return
            if data:
                yield data


def _json(body: bytes, where: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        raise ModelLoadError(f"{where} did not answer JSON; is this an OpenAI-compatible server?") from None
    if not isinstance(parsed, dict):
        raise ModelLoadError(f"{where} answered {type(parsed).__name__}, not a JSON object")
    return parsed


def _error_line(status: int, body: bytes) -> str:
    """'HTTP 400: the message' from OpenAI's, vLLM's or llama.cpp's error bodies, on one line."""
    try:
        parsed = json.loads(body)
        err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = err.get("message", err) if isinstance(err, dict) else err
    except ValueError:
        if body.lstrip()[:1] == b"<":  # an HTML page: a web server, or a route outside the API
            return f"HTTP {status} with a web page, not OpenAI's JSON; is this an OpenAI-compatible server's /v1?"
        message = body.decode("utf-8", "replace")
    return f"HTTP {status}: {quoted(' '.join(str(message).split()), 300)}"


def _key_hint(status: int, api_key: str | None) -> str:
    if status != 401:
        return ""
    return "; pass --api-key (or TIANKONG_API_KEY)" if not api_key else "; check --api-key"


def _reason(e: BaseException) -> str:
    said = " ".join(str(e).split())
    return f"{type(e).__name__}: {said}" if said else type(e).__name__
