"""`tiankong serve` under load and under clients that misbehave: what a request reserves, what joining
requests cost the answers already streaming, clients that go away or never finish their body, bodies
nested too deeply, and the IPv6 loopback written as URLs write it.

The KV cache's reservations are read where they are made (kv_cache._zeros, the one maker of every
cache buffer): a row's slots are bytes of memory, and sizing them is the thing pinned. The rows'
tokens are checked against `Engine.generate`, the engine's own fixed-batch run.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from typing import Iterator

import pytest

from tiankong.engine import kv_cache
from tiankong.engine.batcher import ANSWER_ROOM, Batcher
from tiankong.engine.engine import Engine
from tiankong.engine.errors import InputError
from tiankong.engine.events import TokenEvent
from tiankong.engine.sampling import SamplingParams

pytest.importorskip("uvicorn")

import test_serve  # noqa: E402
from test_serve import logged  # noqa: E402
from test_serve import running as serving  # noqa: E402

from tiankong.tui.serve import ServeConfig, check_bind  # noqa: E402
from tiankong.tui.serve_routes import MAX_JSON_DEPTH  # noqa: E402
from tiankong.tui.serve_run import listen  # noqa: E402

tiny = test_serve.tiny  # the fixture: a GPT-2 and a Mistral with a window of 8, random weights


@contextlib.contextmanager
def caches_made(monkeypatch) -> Iterator[list[tuple[int, int]]]:
    """(rows, slots) of every KV cache buffer made while the block runs."""
    made: list[tuple[int, int]] = []
    zeros = kv_cache._zeros

    def recording(shape, dtype, device):
        made.append((shape[1], shape[3]))  # (n_layers, B, 2 H_kv, max_len, hd)
        return zeros(shape, dtype, device)

    monkeypatch.setattr(kv_cache, "_zeros", recording)
    yield made


def reference(engine: Engine, ids: list[int], params: SamplingParams) -> list[int]:
    """The tokens of the engine's own fixed-batch run."""
    return [e.id for e in engine.generate([ids], [params]) if isinstance(e, TokenEvent)]


def tokens(events) -> list[int]:
    return [e.id for e in events if isinstance(e, TokenEvent)]


# ------------------------------------------------------------------------------ the batcher


class Kept:
    """A request's sink: keeps its events; holds the batcher's thread at its `hold_at`th token until
    `release` is set; notes how many caches `made` held when its first event came."""

    def __init__(self, made: list | None = None, hold_at: int = 0) -> None:
        self.events: list = []
        self.made, self.hold_at, self.made_before = made, hold_at, None
        self.holding, self.release = threading.Event(), threading.Event()

    def __call__(self, ev) -> None:
        if self.made_before is None and self.made is not None:
            self.made_before = len(self.made)
        self.events.append(ev)
        if len(self.events) == self.hold_at:
            self.holding.set()
            self.release.wait(30)


@pytest.mark.parametrize("arch", ["gpt2", "mistral"])
def test_rows_without_max_tokens_reserve_their_answers_as_they_grow(tiny, arch, monkeypatch):
    """Chat's default max_tokens is the rest of the context. A request with it reserves its prompt
    and ANSWER_ROOM slots, not the context, and seven joining a running one reserve ANSWER_ROOM past
    the running batch's slot (each join made and copied a cache of the whole context for every row:
    50 s to a first token on a 2,048-token model). The cache then grows with the answers, across the
    join, and every row gives Engine.generate's tokens."""
    eng = tiny[arch]
    ctx = eng.cfg.max_seq_len
    texts = ["The quick brown fox", "A", "def add(a, b):", "Once upon a time", "x", "Hello there", "1 2 3", "Q"]
    prompts = [eng.encode(prompt=t, raw=True) for t in texts]
    params = [SamplingParams(temperature=0.9, seed=s, max_new_tokens=ctx - len(p)) for s, p in enumerate(prompts)]
    batcher = Batcher(eng, max_rows=16)
    try:
        with caches_made(monkeypatch) as made:
            first = Kept(made, hold_at=ANSWER_ROOM + 20)  # past its first reservation: the cache grew
            req = batcher.submit(prompts[0], [params[0]], sink=first)
            assert first.holding.wait(30)
            assert max(n for _, n in made[: first.made_before]) <= len(prompts[0]) + ANSWER_ROOM < ctx
            slot = batcher._batch.slot + 1  # where the batch is when the others join (the thread is held)
            joining = [Kept(made) for _ in prompts[1:]]
            reqs = [batcher.submit(p, [q], sink=k) for p, q, k in zip(prompts[1:], params[1:], joining, strict=True)]
            del made[:]
            first.release.set()
            assert all(r.done.wait(60) for r in [req, *reqs])
        at_join = made[: max(k.made_before for k in joining)]  # until the last first token
        assert at_join and all(n <= slot + ANSWER_ROOM for _, n in at_join), (slot, at_join)
        lengths = []
        for ids, p, kept in zip(prompts, params, [first, *joining], strict=True):
            assert tokens(kept.events) == reference(eng, ids, p)
            lengths.append(len(tokens(kept.events)))
        assert max(lengths) > 2 * ANSWER_ROOM  # rows whose reservation grew more than once
        assert batcher.rows == 0
    finally:
        batcher.close()


def test_a_cache_that_cannot_grow_ends_the_answers_in_a_servers_words(tiny, monkeypatch):
    """Growing the answers' cache can run out of memory mid-answer; every row writes the new slot, so
    the batch's answers end, with words for a server's client (not the command line's flags), and
    the batcher goes on serving."""
    eng = tiny["gpt2"]
    ids = eng.encode(prompt="Once upon a time", raw=True)
    batcher = Batcher(eng, max_rows=4)

    def short(self, max_len, filled):
        raise InputError(f"not enough memory for a {max_len}-slot cache")

    try:
        params = SamplingParams(temperature=0.9, seed=1, max_new_tokens=ANSWER_ROOM + 10)
        with monkeypatch.context() as m:
            m.setattr(kv_cache.KVCache, "grow", short)
            kept = Kept()
            assert batcher.submit(ids, [params], sink=kept).done.wait(60)
        fin = kept.events[-1]
        assert fin.finish_reason == "error" and "smaller --max-rows" in fin.message and "--n)" not in fin.message
        assert len(tokens(kept.events)) >= ANSWER_ROOM - 1  # the tokens before the cache was full are kept
        again = Kept()
        assert batcher.submit(ids, [params.replace(max_new_tokens=8)], sink=again).done.wait(60)
        assert tokens(again.events) == reference(eng, ids, params.replace(max_new_tokens=8))
    finally:
        batcher.close()


@pytest.mark.parametrize("arch", ["gpt2", "mistral"])
def test_requests_joining_together_copy_the_running_batch_once(tiny, arch, monkeypatch):
    """Eight requests admitted in one step, each prefilled on its own from a stored prefix (a chat
    client sending its conversation again), join the running batch in one copy of it: a copy per
    request stopped the answers already streaming for as many copies of the whole batch. Every row
    gives Engine.generate's tokens."""
    eng = tiny[arch]
    base = "The quick brown fox jumps over the lazy dog, and then it runs away into the"
    stored = eng.encode(prompt=base, raw=True)
    once = eng.encode(prompt="Once", raw=True)
    long = SamplingParams(temperature=0.9, seed=1, max_new_tokens=200)
    short = [SamplingParams(temperature=0.9, seed=10 + i, max_new_tokens=10) for i in range(8)]
    joiners = [eng.encode(prompt=f"{base} {w}", raw=True) for w in "abcdefgh"]
    batcher = Batcher(eng, max_rows=16)
    try:
        list(batcher.submit(stored, [short[0]]))  # its prompt stays behind in the prefix store
        watcher = Kept(hold_at=120)  # well into its answer: the thread is held until all eight are queued
        running = batcher.submit(once, [long], sink=watcher)
        assert watcher.holding.wait(30)
        slot = batcher._batch.slot  # the running batch's length: its cache holds this many slots or more
        with caches_made(monkeypatch) as made:
            reqs = [batcher.submit(ids, [p]) for ids, p in zip(joiners, short, strict=True)]
            watcher.release.set()
            got = [list(r) for r in reqs]
            assert running.done.wait(60)
        assert all(r.cached_tokens >= 16 for r in reqs)  # each was read from the stored prefix, on its own
        as_long = [(rows, n) for rows, n in made if n >= slot]  # caches as long as the running batch
        assert as_long[0][0] == 9, made  # the running row and the eight, in one cache
        assert [rows for rows, _ in as_long].count(9) == 1, made
        assert tokens(watcher.events) == reference(eng, once, long)
        for ids, p, evs in zip(joiners, short, got, strict=True):
            assert tokens(evs) == reference(eng, ids, p)
    finally:
        batcher.close()


# ------------------------------------------------------------------------------ the server


@contextlib.contextmanager
def running(engine: Engine, **overrides):
    """test_serve's real server, as (host, port, batcher, uvicorn server)."""
    with serving(engine, **overrides) as (url, batcher, server):
        host, port = url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
        yield host, int(port), batcher, server


def post(port: int, path: str, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def wait_for(cond, what: str, seconds: float = 30) -> float:
    """Wait until cond() -> the seconds it took."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < seconds, what
        time.sleep(0.01)
    return time.monotonic() - start


def test_a_collected_request_whose_client_leaves_frees_its_row_while_tokens_flow(tiny):
    """A non-streamed request's client hangs up mid-answer: its row leaves within a second or so,
    though tokens come all the while (the server looked for a gone client only after a second
    with no token, so the row decoded on to max_tokens)."""
    eng = tiny["gpt2"]
    with running(eng) as (host, port, batcher, _):
        submit = batcher.submit

        def slow_submit(*args, sink, **kwargs):  # 40 ms a token: 200 tokens take 8 s
            return submit(*args, sink=lambda ev: (time.sleep(0.04), sink(ev)), **kwargs)

        batcher.submit = slow_submit
        body = json.dumps({"prompt": "Once", "max_tokens": 200, "seed": 4}).encode()
        head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        with socket.create_connection((host, port)) as sock:
            sock.sendall(head + body)
            wait_for(lambda: batcher.rows == 1, "the request never ran")
            time.sleep(0.5)
        took = wait_for(lambda: batcher.rows == 0, "the row of a gone client was not freed", seconds=60)
        assert took < 3, f"the row went on for {took:.1f} s after its client left"


def test_bodies_that_stop_coming_hold_no_place_and_are_dropped_after_the_body_timeout(tiny):
    """More connections than the server handles at once send part of a body and stall: other
    requests are still served at once (a body still arriving does not count against the limit), and
    each stalled one gets OpenAI's error JSON with 408 after body_timeout_s, its connection closed."""
    eng = tiny["gpt2"]
    with running(eng, max_rows=1, max_queue=0, body_timeout_s=1.0) as (host, port, _, server), logged() as log:
        api = server.api
        stalled = []
        for _ in range(api.limit + 4):
            sock = socket.create_connection((host, port))
            sock.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"prompt":')
            stalled.append(sock)
        wait_for(lambda: len(api.reading) == len(stalled), "the bodies were never read")
        status, out = post(port, "/v1/completions", b'{"prompt": "Once", "max_tokens": 2}')
        assert status == 200 and out["usage"]["completion_tokens"] == 2
        for sock in stalled:
            sock.settimeout(30)
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
            sock.close()
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408") and b"\r\nconnection: close" in head.lower()  # ended now
            error = json.loads(payload)["error"]
            assert "stopped coming" in error["message"] and "1 s" in error["message"]
        wait_for(lambda: not api.reading and api.in_flight == 0, "the stalled requests did not end")
        assert post(port, "/v1/completions", b'{"prompt": "Once", "max_tokens": 2}')[0] == 200
        assert [r.getMessage() for r in log] == []


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", _nested(100_000)),  # past json's own recursion limit
        ("/v1/chat/completions", _nested(900)),  # within it: parsed, then refused
        ("/v1/completions", '{"prompt": "Once", "stop": ' + _nested(MAX_JSON_DEPTH) + "}"),
        ("/tokenize", '{"messages": [{"role": "user", "content": "hi"}], "x": ' + _nested(50_000) + "}"),
        (
            "/v1/chat/completions",
            '{"messages": [{"role": "user", "content": "hi"}], "metadata": '
            + '{"a": ' * 50_000
            + "1"
            + "}" * 50_000
            + "}",
        ),
    ],
    ids=["100000-deep", "900-deep", "stop-past-the-limit", "tokenize-50000-deep", "metadata-50000-deep"],
)
def test_a_body_nested_too_deeply_is_a_400_in_openais_shape_with_no_traceback(tiny, path, body):
    """Arrays and objects nested past MAX_JSON_DEPTH: a 400 in OpenAI's error JSON saying so (json
    itself raised RecursionError from ~1,000 levels: a plain-text 500 and a traceback)."""
    with running(tiny["gpt2"]) as (_, port, _, _), logged() as log:
        status, out = post(port, path, body.encode())
        assert status == 400 and out["error"]["type"] == "invalid_request_error"
        assert "nested too deeply" in out["error"]["message"]
        assert [r.getMessage() for r in log] == []


def test_a_body_nested_within_the_limit_is_read(tiny):
    """OpenAI's bodies nest a few levels; MAX_JSON_DEPTH levels are still read (metadata is accepted
    and ignored)."""
    deep = '{"a": ' * (MAX_JSON_DEPTH - 1) + "1" + "}" * (MAX_JSON_DEPTH - 1)
    body = '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "metadata": ' + deep + "}"
    with running(tiny["gpt2"]) as (_, port, _, _):
        status, out = post(port, "/v1/chat/completions", body.encode())
        assert status == 200 and out["usage"]["completion_tokens"] == 2


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_the_ipv6_loopback_in_brackets_is_the_loopback(tiny):
    """--host [::1], the loopback as URLs write it, binds ::1 and needs no API key (it was called an
    address beyond this machine, and with a key, no address of this machine)."""
    check_bind("[::1]", None)
    with pytest.raises(ValueError, match="beyond this machine"):
        check_bind("[2001:db8::1]", None)
    cfg = ServeConfig(host="[::1]", port=0)
    assert cfg.host == "::1"
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    socks = listen(cfg)
    try:
        assert [s.getsockname()[0] for s in socks] == ["::1"]
    finally:
        for s in socks:
            s.close()
