"""How `tiankong serve` listens and stops: the sockets bound before the model loads and anything is
announced (listen: the address first, then the API key an address beyond loopback needs), a 503
for every request while the model loads (LoadingAnswers), and uvicorn (http_server) with a subclass (_Uvicorn) that begins the app's own shutdown first and turns
a second Ctrl+C (or SIGTERM) into cancelling the running requests. Apart from serve.py because this is
uvicorn's side, its signals included; the app knows nothing of it.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import selectors
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable

import uvicorn
from starlette.applications import Starlette

from tiankong.engine.errors import InputError
from tiankong.tui import openai_format as fmt

if TYPE_CHECKING:  # serve.py imports this file; the config and the server are only named in annotations here
    from tiankong.tui.serve import ServeConfig
    from tiankong.tui.serve_routes import _Server

# After drain_s, the cancelled rows end within a decode step and their last chunks are written; uvicorn
# cancels whatever task is left only this much later, so no stream is cut before its [DONE].
FINAL_S = 5.0


def unbracketed(host: str) -> str:
    """An IPv6 address as URLs write it ([::1]) -> the address itself (::1); other hosts as given."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _shown(host: str) -> str:
    return host or "''"  # an empty --host named as such, not as a double space


def check_bind(host: str, api_key: str | None, addresses: list[str] | None = None) -> None:
    """Refuse an address beyond loopback without an API key: anyone on the network could use it.
    addresses: what host resolved to (listen gives them, so a name counts by where it binds)."""
    host = unbracketed(host)
    if api_key:
        return
    if addresses is None:
        addresses = [host]
    try:
        loopback = host == "localhost" or all(ipaddress.ip_address(a.partition("%")[0]).is_loopback for a in addresses)
    except ValueError:
        loopback = False
    if not loopback:
        raise InputError(
            f"--host {_shown(host)} exposes the server beyond this machine; set --api-key (or TIANKONG_API_KEY)"
        )


def check_api_key(key: str) -> None:
    """Refuse a key no client could send: HTTP strips the spaces around a header's value (so the key
    as it arrives never matches one with them) and carries only printable ASCII in it (httpx, under
    the openai client, refuses to send anything else)."""
    if not key.strip():
        raise InputError(
            "--api-key (or TIANKONG_API_KEY) is only whitespace, which an Authorization header cannot carry, so no "
            "client could authenticate; give a key of letters, digits and punctuation"
        )
    if key != key.strip():
        raise InputError(
            "--api-key (or TIANKONG_API_KEY) begins or ends with whitespace, which an Authorization header cannot "
            "carry, so no client could authenticate; give the key without it"
        )
    if bad := next((c for c in key if not " " <= c <= "~"), None):
        raise InputError(
            f"--api-key (or TIANKONG_API_KEY) holds {ascii(bad)}, not printable ASCII, which an Authorization "
            "header cannot carry, so no client could authenticate; give a key of letters, digits and punctuation"
        )


def listen(cfg: ServeConfig) -> list[socket.socket]:
    """Sockets bound to cfg's host (each of its addresses, as uvicorn would bind them) and port, so a
    bad address or a port in use is one clear error before the model loads and anything is
    announced. The address is checked first, then the API key an address beyond loopback needs
    (check_bind). InputError when they cannot be bound or are refused."""
    host = cfg.host
    if not host:
        raise InputError("--host is empty; give an address, e.g. 127.0.0.1 (this machine) or 0.0.0.0 (every interface)")
    try:
        addresses = socket.getaddrinfo(host, cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        why = e.strerror if isinstance(e, socket.gaierror) else "not a host name"
        raise InputError(
            f"--host {host} is not an address or a known host name ({why}); give an address of this machine, "
            "e.g. 127.0.0.1"
        ) from None
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        check_bind(host, cfg.api_key, [str(address[0]) for *_, address in addresses])
    except (OSError, InputError) as e:
        for sock in socks:
            sock.close()
        if isinstance(e, InputError):
            raise
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"port {cfg.port} on {host} is in use; pick another with --port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise InputError(f"--host {host} is not an address of this machine; give one of its addresses") from None
        raise InputError(f"cannot listen on {host} port {cfg.port}: {e.strerror}") from None
    return socks


# While the model loads: connections queued as uvicorn would queue them (its default backlog), the
# seconds a client is told to wait, and the answers written at once (one thread each; past that, a
# connection is closed unanswered).
BACKLOG = 2048
LOADING_RETRY_S = 5
LOADING_ANSWERS_AT_ONCE = 32


class LoadingAnswers:
    """While the model loads (seconds, minutes for a large one), the bound sockets listen, and every
    request gets a 503 in OpenAI's error shape ("model is loading"), with Retry-After, where a client
    was refused a connection, which reads as no server at all. Answered by a thread of its own,
    without starlette or uvicorn (the app needs the engine); on leaving, the sockets stay listening,
    so a connection made before uvicorn starts waits for it instead."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.socks = socks
        self.done = threading.Event()
        self.slots = threading.BoundedSemaphore(LOADING_ANSWERS_AT_ONCE)
        self.thread = threading.Thread(target=self._accept, name="tiankong-loading", daemon=True)

    def __enter__(self) -> LoadingAnswers:
        for sock in self.socks:
            sock.listen(BACKLOG)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join()

    def _accept(self) -> None:
        with selectors.DefaultSelector() as sel:
            for sock in self.socks:
                sel.register(sock, selectors.EVENT_READ)
            while not self.done.is_set():
                for key, _ in sel.select(timeout=0.05):
                    try:
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    except OSError:  # the client left already
                        continue
                    if not self.slots.acquire(blocking=False):
                        conn.close()
                        continue
                    threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        """Read the request's head (and a body of a few KB), answer 503, and let the client close
        first: closing with a body unread would reset the connection and lose the answer."""
        try:
            with conn:
                conn.settimeout(5.0)
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                error = fmt.ApiError(503, f"model is loading; retry in {LOADING_RETRY_S} seconds", code="model_loading")
                body = b"" if head.startswith(b"HEAD ") else json.dumps(error.body()).encode()
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(json.dumps(error.body()).encode())}\r\n".encode()
                    + f"Retry-After: {LOADING_RETRY_S}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(1.0)
                for _ in range(256):  # up to 1 MiB of a body, or a second, until the client closes
                    if not conn.recv(4096):
                        break
        except OSError:  # a client that left or stalled: nothing to answer
            pass
        finally:
            self.slots.release()


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
        self.interrupted = False  # a SIGINT stopped it (serve() then says so and exits 130)
        self.ready: Callable[[], None] | None = None  # called once its signal handlers are in place

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's signal handlers are in place by now (capture_signals): a "serving" line said here
        # means a SIGINT stops the server properly, even one whose SIGINT was ignored until then.
        if self.ready is not None:
            self.ready()
        await super().startup(sockets=sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.api.begin_shutdown()
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """The first SIGINT/SIGTERM drains (uvicorn's should_exit). A second one would make uvicorn
        cut the running streams (force_exit: no [DONE], tracebacks, a plain-text 500); it cancels
        them now instead, each ending its answer "cancelled" within a decode step. Only a third
        quits at once, as uvicorn does."""
        again = self.should_exit
        self.interrupted = self.interrupted or sig == signal.SIGINT
        if not again:  # the stopping line says how to hurry it: the same key or signal again
            self.api.again = "Ctrl+C" if sig == signal.SIGINT else f"{signal.Signals(sig).name}"
        super().handle_exit(sig, frame)
        if again and not self.hurried and self.loop is not None:
            self.hurried = True
            self.force_exit = False
            self.loop.call_soon_threadsafe(self.api.cancel_now)  # a signal handler must not touch the loop
