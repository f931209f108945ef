"""Connecting to a server and leaving it (engine/remote.py, remote_http.py, remote_stream.py): the
URL a user types (a bad port, a pasted route, the stored `URL/models/ID`), servers that list several
models, answer with a web page, never answer, or stall a stream that is read until they close it.

The servers are small stdlib ones on 127.0.0.1 (port 0), each doing one thing a real server does.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tiankong.engine import remote_http
from tiankong.engine.errors import InputError, ModelLoadError
from tiankong.engine.events import Finished, TokenEvent
from tiankong.engine.remote import RemoteEngine
from tiankong.engine.sampling import SamplingParams

MODELS = [
    {"id": "llama3:8b", "object": "model", "context_length": 8192},
    {"id": "org/qwen:7b-q4", "object": "model", "context_length": 4096},
    {"id": "lora-adapter", "object": "model"},
]
CHUNK = {
    "choices": [
        {
            "index": 0,
            "delta": {"content": "Hello"},
            "logprobs": {"content": [{"token": "Hello", "logprob": -0.5, "top_logprobs": []}]},
            "finish_reason": None,
        }
    ]
}


@contextmanager
def serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def openai_like(models, stalled: threading.Event | None = None, left: threading.Event | None = None):
    """/v1/models lists `models`; a chat answer is HTTP/1.0-style (no chunked encoding, no length:
    read until the server closes), sends one chunk and stalls; `left` is set when the client leaves."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = json.dumps({"object": "list", "data": models}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/chat/completions":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b"data: " + json.dumps(CHUNK).encode() + b"\n\n")
            self.wfile.flush()
            stalled.set()
            self.connection.settimeout(30)
            if self.connection.recv(1) == b"":  # the client shut its side: it left
                left.set()

    return Handler


# ------------------------------------------------------------------------------ leaving a server


def test_cancel_ends_a_stalled_stream_that_is_read_until_close(monkeypatch):
    """A stream without chunked encoding: http.client hands the socket to the response and drops
    conn.sock, so cancelling must shut the socket it kept; the server sees the client leave."""
    monkeypatch.setattr(remote_http, "READ_TIMEOUT_S", 5.0)  # without the fix: a 5 s wait, not 120 s
    stalled, left = threading.Event(), threading.Event()
    with serve(openai_like(MODELS[:1], stalled, left)) as url:
        remote = RemoteEngine.connect(url)
        cancel = threading.Event()
        threading.Thread(target=lambda: stalled.wait(10) and cancel.set(), daemon=True).start()
        start = time.monotonic()
        events = list(remote.generate([remote.encode(prompt="hi")], [SamplingParams(seed=1)], cancel=cancel))
        took = time.monotonic() - start
        assert left.wait(2), "the server never saw the client leave"
    assert took < 1.5, f"cancel took {took:.1f} s"
    assert [e.text for e in events if isinstance(e, TokenEvent)] == ["Hello"]
    assert [e.finish_reason for e in events if isinstance(e, Finished)] == ["cancelled"]


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    listener.close()


def test_a_server_that_never_answers_is_named_as_such_and_connecting_can_be_cancelled(silent_server, monkeypatch):
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"^connecting to http://127\.0\.0\.1:\d+/v1 was cancelled$"):
        RemoteEngine.connect(silent_server, cancel=cancel)
    assert time.monotonic() - start < 1.5

    monkeypatch.setattr(remote_http, "PROBE_TIMEOUT_S", 0.5)
    assert remote_http.READ_TIMEOUT_S > 60  # a stream's prefill may still take long
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        RemoteEngine.connect(silent_server)
    assert time.monotonic() - start < 3
    assert str(err.value) == (
        f"{silent_server} accepted the connection but did not answer GET /v1/models within 0.5 s; "
        "is it an OpenAI-compatible server, and is it busy?"
    )


# ------------------------------------------------------------------------------ the URL


@pytest.mark.parametrize("port", ["87133", "abc", "0"])
def test_a_bad_port_is_one_line_naming_the_url(port):
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(InputError) as err:
        RemoteEngine.connect(url)
    assert str(err.value) == (
        f"the port in {url} is not a number from 1 to 65535; give one like http://127.0.0.1:8000/v1"
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [("http://[::1", "Invalid IPv6 URL"), ("http://[zz]/v1", "'zz' does not appear to be an IPv4 or IPv6 address")],
)
def test_a_bad_ipv6_host_is_one_line_naming_the_url(url, why):
    # urllib's own ValueError was a traceback through the CLI (InputError is one line, exit 2).
    with pytest.raises(InputError) as err:
        RemoteEngine.connect(url)
    assert str(err.value) == (
        f"the host in {url} is not valid ({why}); give one like http://127.0.0.1:8000/v1 or http://[::1]:8000/v1"
    )


def test_a_server_listing_several_models_is_not_guessed_from_and_the_stored_name_chooses_one():
    with serve(openai_like(MODELS)) as url:
        with pytest.raises(ModelLoadError) as err:
            RemoteEngine.connect(url)
        assert str(err.value) == (
            f"{url} serves 3 models: llama3:8b, org/qwen:7b-q4, lora-adapter; "
            f"choose one by its URL, e.g. {url}/models/llama3:8b"
        )
        chosen = RemoteEngine.connect(f"{url}/models/org/qwen:7b-q4")
        assert (chosen.base_url, chosen.model, chosen.cfg.max_seq_len) == (url, "org/qwen:7b-q4", 4096)
        again = RemoteEngine.connect(chosen.folder)  # the name stored with chats and votes
        assert (again.base_url, again.model) == (url, "org/qwen:7b-q4")
        with pytest.raises(ModelLoadError, match=r"does not serve gone; it serves llama3:8b, .*/models/llama3:8b$"):
            RemoteEngine.connect(f"{url}/models/gone")


def test_a_pasted_route_means_its_base():
    with serve(openai_like(MODELS[:1])) as url:
        for pasted in ("/chat/completions", "/completions", "/models", "/models/"):
            remote = RemoteEngine.connect(url + pasted)
            assert (remote.base_url, remote.model) == (url, "llama3:8b")


def test_a_web_server_is_named_as_one_not_quoted(tmp_path):
    (tmp_path / "index.html").write_text("<!DOCTYPE HTML><html lang='en'><body>" + "x" * 500 + "</body></html>")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    with serve(Handler) as url:
        with pytest.raises(ModelLoadError) as err:
            RemoteEngine.connect(url)
    assert str(err.value) == (
        f"{url}/models answered HTTP 404 with a web page, not OpenAI's JSON; is this an OpenAI-compatible server's /v1?"
    )
