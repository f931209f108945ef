"""The HTTP side of `RemoteEngine` (remote.py): one server's URL and key, requests on fresh
connections, server-sent events, and one-line texts for what went wrong (an error body, a refused
key, a broken connection).

Kept apart so that remote.py reads as the engine's API and remote_stream.py as the reading of a
streamed answer; nothing here knows about tokens or events.
"""

from __future__ import annotations

import http.client
import json
from typing import Any, Iterator
from urllib.parse import urlsplit

from .errors import ModelLoadError

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0  # between two chunks of a stream (a long prompt on a slow server)

http_client_errors = http.client.HTTPException


class _Http:
    """One server: its base URL, the key, and requests on fresh connections (one per stream, so a
    stream is cancelled by shutting its own socket)."""

    def __init__(self, url: str, api_key: str | None) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelLoadError(f"{url!r} is not a server URL; give one like http://127.0.0.1:8000/v1")
        path = parts.path.rstrip("/") or "/v1"  # no path: OpenAI's /v1
        self.base = f"{parts.scheme}://{parts.netloc}{path}"
        self.root = path.removesuffix("/v1")  # where vLLM's /tokenize lives
        self.path, self.parts, self.host = path, parts, parts.hostname
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        conn = kind(self.host, self.parts.port, timeout=CONNECT_TIMEOUT_S)
        conn.connect()
        conn.sock.settimeout(READ_TIMEOUT_S)
        return conn

    def send(
        self, conn: http.client.HTTPConnection, method: str, route: str, body: Any = None, root: bool = False
    ) -> http.client.HTTPResponse:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, (self.root if root else self.path) + route, body=data, headers=self.headers)
        return conn.getresponse()

    def request(self, method: str, route: str, body: Any = None, root: bool = False) -> tuple[int, bytes]:
        """One request on its own connection -> (status, body bytes)."""
        conn = self.connection()
        try:
            resp = self.send(conn, method, route, body, root)
            return resp.status, resp.read()
        finally:
            conn.close()


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
        message = body.decode("utf-8", "replace")
    return f"HTTP {status}: {' '.join(str(message).split())[:300]}"


def _key_hint(status: int, api_key: str | None) -> str:
    if status != 401:
        return ""
    return "; pass --api-key (or TIANKONG_API_KEY)" if not api_key else "; check --api-key"


def _reason(e: BaseException) -> str:
    said = " ".join(str(e).split())
    return f"{type(e).__name__}: {said}" if said else type(e).__name__
