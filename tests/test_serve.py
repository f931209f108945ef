"""`tiankong serve` and its batcher, driven like users drive them.

The reference is the engine's own fixed-batch generator: a row served through the continuous
batcher (joining a batch that is already running, beside other requests) must give the tokens and
log-probs `Engine.generate` gives for the same prompt and seed. The HTTP side is driven with the
official `openai` client and, for what a client library would refuse to send, with raw HTTP.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import random
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
from helpers import cli
from tiny_models import STORIES, make_model

from tiankong.engine.batcher import Batcher, QueueFull
from tiankong.engine.engine import Engine
from tiankong.engine.errors import InputError
from tiankong.engine.events import Finished, TokenEvent
from tiankong.engine.sampling import SamplingParams

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from tiankong.engine.generate import HeldText  # noqa: E402
from tiankong.tui import openai_format as fmt  # noqa: E402
from tiankong.tui.serve import ServeConfig, build_app, check_bind, new_batcher, serve  # noqa: E402
from tiankong.tui.serve_run import http_server, listen  # noqa: E402

needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason="needs ../shared/models/stories260K")


@pytest.fixture(scope="module")
def stories() -> Engine:
    if not STORIES.is_dir():
        pytest.skip("needs ../shared/models/stories260K")
    return Engine.load(STORIES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Engine]:
    """A GPT-2 (learned positions) and a Mistral with a sliding window of 8 (short enough that the
    window moves inside these tests), random weights."""
    out = {}
    for arch, ov in (("gpt2", {}), ("mistral", {"sliding_window": 8})):
        folder = make_model(tmp_path_factory.mktemp(arch), arch, **ov)
        out[arch] = Engine.load(folder, device="cpu", dtype="float32")
    return out


@contextlib.contextmanager
def running(engine: Engine, lines: list[str] | None = None, **overrides):
    """A real server as `tiankong serve` runs it (its sockets, its uvicorn) on a free port, in a
    thread -> (base URL, batcher, uvicorn server); `lines` gets what it says on stderr."""
    cfg = ServeConfig(port=0, **overrides)
    socks = listen(cfg)
    port = socks[0].getsockname()[1]
    batcher = new_batcher(engine, cfg)
    announce = (lines if lines is not None else []).append
    server = http_server(build_app(engine, batcher, cfg, announce=announce), cfg, log_level="error")
    thread = threading.Thread(target=server.run, kwargs={"sockets": socks}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1", batcher, server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        batcher.close()


@contextlib.contextmanager
def logged() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn logs while the block runs (its "uvicorn.error" logger: a request's traceback,
    tasks cancelled at shutdown). Enter it after the server started: uvicorn's Config resets the
    logger's handlers."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("uvicorn.error")
    log.addHandler(handler)
    try:
        yield records
    finally:
        log.removeHandler(handler)


@contextlib.contextmanager
def slowed(batcher: Batcher, seconds: float):
    """Every event of the requests submitted meanwhile waits `seconds` in the batcher's thread, so a
    request runs as long as a test needs, whatever the machine's speed."""
    submit = batcher.submit

    def slow_submit(*args, sink, **kwargs):
        return submit(*args, sink=lambda ev: (time.sleep(seconds), sink(ev)), **kwargs)

    batcher.submit = slow_submit
    try:
        yield
    finally:
        batcher.submit = submit


def reference(engine: Engine, ids: list[int], params: SamplingParams, k: int = 0):
    """The engine's own fixed-batch run -> (token events, finished)."""
    events = list(engine.generate([ids], [params], top_logprobs=k))
    return [e for e in events if isinstance(e, TokenEvent)], events[-1]


def raw(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One plain HTTP request -> (status, headers, parsed JSON body)."""
    host, port = base.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, "/v1" + path if path != "/health" else path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data) if data else None


def sse(base: str, path: str, payload: dict) -> Iterator[dict | str]:
    """A streamed request over plain HTTP -> its data: payloads as they come (dicts, then "[DONE]")."""
    host, port = base.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/v1" + path, json.dumps(payload | {"stream": True}), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    for line in resp:
        if line.startswith(b"data: "):
            data = line[len(b"data: ") :].strip()
            yield "[DONE]" if data == b"[DONE]" else json.loads(data)
    conn.close()


# ------------------------------------------------------------------------------ the batcher


@pytest.mark.parametrize("arch", ["gpt2", "mistral"])
def test_batcher_rows_match_generate_when_joining_a_running_batch(tiny, arch):
    """Rows join at different decode steps (different prompt lengths, n = 2, penalties on one) and
    each gives exactly the tokens and log-probs Engine.generate gives alone (their padding and
    their slots' shift do not change a bit: test_batch_invariance.py). No prefix store: a prompt
    read on from a stored prefix (here the BOS of another) rounds its prefill differently."""
    eng = tiny[arch]
    prompts = [eng.encode(prompt=t, raw=True) for t in ("The quick brown fox", "A", "def add(a, b):\n  return")]
    params = [
        SamplingParams(temperature=0.9, seed=1, max_new_tokens=30),
        SamplingParams(temperature=1.2, top_k=20, seed=2, max_new_tokens=12),
        SamplingParams(temperature=0.8, repetition_penalty=1.3, presence_penalty=0.5, seed=3, max_new_tokens=24),
    ]
    batcher = Batcher(eng, max_rows=8, prefix_bytes=0)
    try:
        first = batcher.submit(prompts[0], [params[0]], top_logprobs=3)
        got = [list(_take(first, 5))]  # the first request is well under way when the others join
        reqs = [
            batcher.submit(p, [q, q.replace(seed=q.seed + 10)], top_logprobs=3)
            for p, q in zip(prompts[1:], params[1:], strict=True)
        ]
        got[0] += list(first)
        got += [list(r) for r in reqs]
        for ids, p, evs, n in zip(prompts, params, got, (1, 2, 2), strict=True):
            for row in range(n):
                toks, fin = reference(eng, ids, p.replace(seed=p.seed + 10 * row), k=3)
                mine = [e for e in evs if isinstance(e, TokenEvent) and e.row == row]
                done = next(e for e in evs if isinstance(e, Finished) and e.row == row)
                assert [e.id for e in mine] == [e.id for e in toks]
                assert [e.logprob for e in mine] == [e.logprob for e in toks]
                assert mine[-1].candidates == toks[-1].candidates
                assert (done.text, done.finish_reason) == (fin.text, fin.finish_reason)
        assert batcher.rows == 0 and batcher.pending == 0
    finally:
        batcher.close()


@pytest.mark.parametrize("arch", ["gpt2", "mistral"])
def test_batcher_prefills_only_past_a_stored_prefix_with_the_same_tokens(tiny, arch):
    """A prompt seen before, and a prompt that continues a finished row's prompt and answer (a chat
    client sending the conversation again), start from the stored keys and values: the prefix store
    counts the tokens not read again, and the rows give Engine.generate's tokens and log-probs.
    Mistral's sliding window of 8 is far behind these prompts' ends."""
    eng = tiny[arch]
    ids = eng.encode(prompt="The quick brown fox jumps over the lazy dog, and then it runs away.", raw=True)
    assert len(ids) > 16
    p = SamplingParams(temperature=0.9, seed=5, max_new_tokens=12)
    batcher = Batcher(eng, max_rows=8)
    try:
        first = list(batcher.submit(ids, [p], top_logprobs=3))
        assert batcher.prefix.hits == 0 and len(batcher.prefix) == 1  # prompt and answer, one entry
        again = list(batcher.submit(ids, [p, p.replace(seed=6)], top_logprobs=3))
        answer = list(next(e for e in first if isinstance(e, Finished)).token_ids)
        follow = ids + answer + eng.encode(prompt=" Then what?", raw=True)
        more = list(batcher.submit(follow, [p], top_logprobs=3))
        assert batcher.prefix.hits == 2
        # The repeat reads only its last token; the follow-up reads past the prompt and the answer
        # (the answer's last token was never fed back, so it is read with the new message).
        assert batcher.prefix.tokens_reused == (len(ids) - 1) + (len(ids) + len(answer) - 1)
        with batcher._cond:  # admitted in one step: two requests of one prompt share one prefill
            pair = [batcher.submit(ids, [p.replace(seed=s)], top_logprobs=3) for s in (7, 8)]
        two = [list(r) for r in pair]
        assert batcher.prefix.hits == 3 and all(r.cached_tokens == len(ids) - 1 for r in pair)
        for prompt, evs, seeds in (
            (ids, first, [5]),
            (ids, again, [5, 6]),
            (follow, more, [5]),
            (ids, two[0], [7]),
            (ids, two[1], [8]),
        ):
            for row, seed in enumerate(seeds):
                toks, fin = reference(eng, prompt, p.replace(seed=seed), k=3)
                mine = [e for e in evs if isinstance(e, TokenEvent) and e.row == row]
                assert [e.id for e in mine] == [e.id for e in toks]
                assert [e.logprob for e in mine] == pytest.approx([e.logprob for e in toks], abs=1e-4)
    finally:
        batcher.close()


@pytest.mark.parametrize("arch", ["gpt2", "mistral"])
def test_a_long_prompt_is_read_in_chunks_while_other_rows_stream(tiny, arch):
    """A prompt of more than prefill_chunk tokens is read a chunk per decode step: the row already
    streaming gets a token after every chunk (not one stall for the whole prompt), and both give
    Engine.generate's tokens and log-probs. Events reach the sinks in the batcher's order."""
    eng = tiny[arch]
    short = eng.encode(prompt="A", raw=True)
    long = eng.encode(prompt="The quick brown fox jumps over the lazy dog " * 3, raw=True)
    chunk = 8
    assert len(long) > 4 * chunk
    p_a, p_b = SamplingParams(temperature=0.9, seed=3, max_new_tokens=40), SamplingParams(seed=4, max_new_tokens=6)
    order: list[tuple[str, object]] = []
    batcher = Batcher(eng, max_rows=8, prefill_chunk=chunk)
    try:
        a = batcher.submit(short, [p_a], top_logprobs=2, sink=lambda ev: order.append(("a", ev)))
        while not order:
            time.sleep(0.001)
        b = batcher.submit(long, [p_b], top_logprobs=2, sink=lambda ev: order.append(("b", ev)))
        assert a.done.wait(60) and b.done.wait(60)
    finally:
        batcher.close()
    first_b = next(i for i, (who, _) in enumerate(order) if who == "b")
    a_before_b = sum(1 for who, _ in order[:first_b] if who == "a")
    assert a_before_b >= 1 + (len(long) - 1) // chunk  # one token per chunk read, at least
    for who, prompt, p in (("a", short, p_a), ("b", long, p_b)):
        toks, fin = reference(eng, prompt, p, k=2)
        mine = [ev for w, ev in order if w == who and isinstance(ev, TokenEvent)]
        assert [e.id for e in mine] == [e.id for e in toks]
        assert [e.logprob for e in mine] == pytest.approx([e.logprob for e in toks], abs=1e-4)
    assert batcher.rows == 0


def test_long_rope_rows_do_not_depend_on_the_rows_beside_them(tmp_path):
    """Phi-3's long factors start past 16 positions. A short row that joins a batch whose first
    row is already past 16, and a row that crosses 16 while the other does not, each give the
    tokens Engine.generate gives for that prompt alone (a row switches on its own positions)."""
    eng = Engine.load(make_model(tmp_path, "phi3"), device="cpu", dtype="float32")
    long = eng.encode(prompt="The quick brown fox jumps over the lazy dog and", raw=True)
    short = eng.encode(prompt="Once", raw=True)
    assert len(long) > 16 and len(short) + 6 < 16
    p_long, p_short = (
        SamplingParams(temperature=0.9, seed=1, max_new_tokens=24),
        SamplingParams(seed=2, max_new_tokens=6),
    )
    p_cross = SamplingParams(temperature=0.9, seed=3, max_new_tokens=20)  # from 2 tokens past 16
    batcher = Batcher(eng, max_rows=4, prefix_bytes=0)
    try:
        first = batcher.submit(long, [p_long])
        it = iter(first)
        got = [next(it)]  # under way, past 16
        others = [batcher.submit(short, [p_short]), batcher.submit(short, [p_cross])]
        got += list(it)
        results = [(long, p_long, got)] + [(short, p, list(r)) for p, r in zip((p_short, p_cross), others, strict=True)]
    finally:
        batcher.close()
    for prompt, p, evs in results:
        toks, fin = reference(eng, prompt, p)
        assert [e.id for e in evs if isinstance(e, TokenEvent)] == [e.id for e in toks]


def test_prefix_store_finds_the_longest_prefix_and_stays_within_its_bytes():
    """Entries are (ids, keys and values); a longer entry supersedes its prefixes, the least
    recently used goes first when the store is full, and a match leaves the last token to run."""
    import torch

    from tiankong.engine.context import PrefixStore

    def kv(n: int) -> torch.Tensor:  # (n_layers 2, 2 H_kv 2, n, hd 4) float32: 64 bytes a token
        return torch.arange(n, dtype=torch.float32)[None, None, :, None].expand(2, 2, n, 4)

    store = PrefixStore(max_bytes=64 * 10)
    store.put([1, 2, 3], kv(3))
    store.put([1, 2, 3, 4, 5], kv(5))  # supersedes [1, 2, 3]
    store.put([1, 2], kv(2))  # a prefix of an entry: nothing new
    assert len(store) == 1 and store.bytes == 64 * 5
    n, got = store.longest([1, 2, 3, 9])
    assert n == 3 and got is not None and torch.equal(got[:, :, :n], kv(3))
    assert store.longest([1, 2, 3, 4, 5])[0] == 4  # the last prompt token must run
    assert store.longest([7, 1, 2]) == (0, None)
    store.put([7, 8, 9, 10], kv(4))  # 9 tokens held
    store.longest([1, 2, 3, 4, 5, 6])  # [1..5] is now the most recently used
    store.put([20, 21], kv(2))  # 11 > 10: the least recently used, [7..10], goes
    assert store.longest([7, 8, 9])[0] == 0 and store.longest([1, 2, 3])[0] == 2 and store.bytes == 64 * 7
    assert PrefixStore(0).put([1], kv(1)) is None and len(PrefixStore(0)) == 0


def _take(req, n):
    it = iter(req)
    for _ in range(n):
        yield next(it)


def test_batcher_cancel_frees_the_row_and_full_queue_refuses(tiny):
    eng = tiny["gpt2"]
    batcher = Batcher(eng, max_rows=1, max_queue=1)
    try:
        ids = eng.encode(prompt="The", raw=True)
        long = batcher.submit(ids, [SamplingParams(seed=1, max_new_tokens=200)])
        it = iter(long)
        next(it)  # running
        waiting = batcher.submit(ids, [SamplingParams(seed=2, max_new_tokens=3)])
        with pytest.raises(QueueFull):
            batcher.submit(ids, [SamplingParams(seed=3, max_new_tokens=3)])
        long.cancel()
        rest = list(it)
        assert rest[-1].finish_reason == "cancelled" and len(rest) < 200
        assert list(waiting)[-1].finish_reason == "length"
        assert batcher.rows == 0
    finally:
        batcher.close()


# ------------------------------------------------------------------------------ the OpenAI API


@pytest.mark.parametrize("which", ["stories", "gpt2"])
def test_completions_logprobs_equal_the_engines(request, which):
    """Non-streaming and streaming completions carry the engine's own tokens and log-probs for the
    seed, in the legacy shape (tokens, token_logprobs, top_logprobs, text_offset) plus p_sample."""
    eng = request.getfixturevalue("stories") if which == "stories" else request.getfixturevalue("tiny")[which]
    name, prompt = eng.folder.name, "Once upon a time"
    ids = eng.encode(prompt=prompt, raw=True)
    toks, fin = reference(eng, ids, SamplingParams(temperature=1.0, top_p=1.0, seed=7, max_new_tokens=20), k=5)
    # No prefix cache: the streamed request repeats the prompt, and a stored prefix reads the prompt's
    # last token through the compiled step instead of the prefill, whose last bits differ; at
    # temperature 1 a token of probability 1e-6 can then move past its neighbour's boundary.
    # Reuse has its own tests above.
    with running(eng, prefix_cache_mib=0) as (base, batcher, _):
        client = openai.OpenAI(base_url=base, api_key="none")
        r = client.completions.create(model=name, prompt=prompt, max_tokens=20, seed=7, logprobs=5)
        c = r.choices[0]
        assert c.text == fin.text and c.finish_reason == "length" and r.usage.completion_tokens == 20
        lp = c.logprobs
        assert lp.token_logprobs == pytest.approx([e.logprob for e in toks], abs=1e-4)
        assert lp.tokens == [eng.token_text(e.id) for e in toks]
        assert list(lp.top_logprobs[0]) == list(dict.fromkeys(cand.text for cand in toks[0].candidates))
        assert lp.text_offset == [sum(len(e.text) for e in toks[:i]) for i in range(len(toks))]
        assert c.model_extra["seed"] == 7 and lp.model_extra["p_sample"] == pytest.approx([e.p_sample for e in toks])
        stream = client.completions.create(model=name, prompt=prompt, max_tokens=20, seed=7, logprobs=5, stream=True)
        chunks = list(stream)
        assert "".join(ch.choices[0].text for ch in chunks) == fin.text
        streamed = [ch.choices[0].logprobs for ch in chunks if ch.choices[0].logprobs]  # a chunk per text
        assert [x for lp in streamed for x in lp.token_logprobs] == pytest.approx([e.logprob for e in toks], abs=1e-4)
        assert [x for lp in streamed for x in lp.text_offset] == c.logprobs.text_offset
        assert chunks[-1].choices[0].finish_reason == "length"
        assert batcher.rows == 0


@needs_stories
def test_chat_streaming_and_not_with_top_logprobs(stories):
    msgs = [{"role": "user", "content": "Lily went to the park"}]
    ids = stories.encode(messages=msgs)
    toks, fin = reference(stories, ids, SamplingParams(temperature=0.8, top_k=40, seed=3, max_new_tokens=15), k=4)
    with running(stories) as (base, _, _):
        client = openai.OpenAI(base_url=base, api_key="none")
        kw = dict(model="stories260K", messages=msgs, max_tokens=15, temperature=0.8, seed=3, logprobs=True)
        r = client.chat.completions.create(**kw, top_logprobs=4, extra_body={"top_k": 40})
        c = r.choices[0]
        assert c.message.role == "assistant" and c.message.content == fin.text
        entries = c.logprobs.content
        assert [e.logprob for e in entries] == pytest.approx([e.logprob for e in toks], abs=1e-4)
        assert [t.token for t in entries[0].top_logprobs] == [cand.text for cand in toks[0].candidates]
        assert entries[0].bytes == list(entries[0].token.encode())
        assert entries[0].model_extra["p_sample"] == pytest.approx(toks[0].p_sample)
        assert entries[0].top_logprobs[0].model_extra["p_sample"] == pytest.approx(toks[0].candidates[0].p_sample)
        stream = client.chat.completions.create(
            **kw, top_logprobs=4, extra_body={"top_k": 40}, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == fin.text
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(toks)
        # The second request read only the prompt's last token: the rest came from the prefix cache.
        assert r.usage.prompt_tokens_details.cached_tokens == 0
        assert chunks[-1].usage.prompt_tokens_details.cached_tokens == len(ids) - 1


@needs_stories
def test_n_seeds_and_concurrency_give_the_same_text(stories):
    """n = 3 gives seeds s, s+1, s+2 (each choice equals its own n = 1 request); a seed gives the
    same text alone and with other requests in the batch."""
    with running(stories) as (base, batcher, _):
        client = openai.OpenAI(base_url=base, api_key="none")

        def ask(seed: int, n: int = 1, prompt: str = "Once upon a time"):
            r = client.completions.create(model="stories260K", prompt=prompt, max_tokens=24, seed=seed, n=n)
            return [c.text for c in r.choices]

        three = ask(100, n=3)
        assert len(set(three)) == 3
        assert [ask(100 + j)[0] for j in range(3)] == three
        msgs = [{"role": "user", "content": "Lily"}]
        kw = dict(model="stories260K", messages=msgs, max_tokens=12, seed=9, n=2)
        whole = [c.message.content for c in client.chat.completions.create(**kw).choices]
        streamed = ["", ""]
        for chunk in client.chat.completions.create(**kw, stream=True):
            for c in chunk.choices:
                streamed[c.index] += c.delta.content or ""
        assert streamed == whole and whole[0] != whole[1]
        alone = ask(5)
        with ThreadPoolExecutor(6) as pool:
            noise = [pool.submit(ask, s, 2, "The dog") for s in range(5)]
            again = pool.submit(ask, 5)
            assert again.result() == alone
            [f.result() for f in noise]
        assert batcher.rows == 0


@needs_stories
def test_stop_strings_and_finish_reasons(stories):
    with running(stories) as (base, _, _):
        client = openai.OpenAI(base_url=base, api_key="none")
        full = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=30, seed=1)
        text = full.choices[0].text
        word = text.split()[3]
        cut = client.completions.create(
            model="stories260K", prompt="Once upon a time", max_tokens=30, seed=1, stop=[word, "zzz"]
        )
        assert cut.choices[0].text == text[: text.index(word)]
        assert cut.choices[0].finish_reason == "stop"
        models = client.models.list()
        assert [m.id for m in models.data] == ["stories260K"]


def test_held_text_sends_no_part_of_a_stop_string_and_adds_up_to_the_engines_text():
    """Random texts in random pieces, stop strings that overlap and share beginnings: whatever was
    sent after each piece is a prefix of the final text (the engine's: cut before the first stop
    string, once a piece completes one), and what finish sends completes it exactly."""
    rng = random.Random(0)
    for _ in range(2000):
        stops = tuple(rng.sample(["ab", "b a", "aab", "ba", "aaa", "b"], rng.randint(1, 3)))
        text, pieces, final = "", [], None
        while final is None and len(text) < 30:
            piece = "".join(rng.choice("ab ") for _ in range(rng.randint(0, 4)))
            pieces.append(piece)
            text += piece
            hits = [i for s in stops if (i := text.find(s)) >= 0]
            final = text[: min(hits)] if hits else None
        final = text if final is None else final
        held, sent = HeldText(stops), ""
        for piece in pieces:
            sent += held.push(piece)
            assert final.startswith(sent), (stops, pieces, sent)
        assert sent + held.finish(final) == final
    held = HeldText(("Ra",))  # QA's case: " R" then "a" must not stream " R"
    assert [held.push(p) for p in ("A", " cat", " R", "a")] + [held.finish("A cat ")] == ["A", " cat", "", "", " "]


@needs_stories
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
@pytest.mark.parametrize("across", [False, True], ids=["one-token-stop", "stop-across-tokens"])
def test_streamed_text_with_stop_strings_equals_the_non_streamed_text(stories, chat, across):
    """A stop string of one token, or one that starts inside a token and ends in the next: each of
    n = 2 streamed choices adds up to its non-streamed text (no stop string, no beginning of one),
    with the same finish_reason and the logprobs of every token, the stop string's too."""
    with running(stories, prefix_cache_mib=0) as (base, _, _):
        client = openai.OpenAI(base_url=base, api_key="none")
        kw = dict(model="stories260K", max_tokens=40, seed=1, n=2)
        if chat:
            kw |= dict(messages=[{"role": "user", "content": "Tell me a story about a cat."}], logprobs=True)
            create = client.chat.completions.create
        else:
            kw |= dict(prompt="Once upon a time", logprobs=0)
            create = client.completions.create

        def answers(r) -> list[tuple[str, str, list[str]]]:
            """(text, finish_reason, tokens) per choice, from one response or from its chunks."""
            out = [["", None, []] for _ in range(2)]
            for part in [r] if hasattr(r, "choices") else r:
                for c in part.choices:
                    text = (c.message.content if hasattr(c, "message") else c.delta.content) if chat else c.text
                    lp = c.logprobs
                    out[c.index][0] += text or ""
                    out[c.index][1] = c.finish_reason or out[c.index][1]
                    out[c.index][2] += [e.token for e in lp.content] if chat and lp else (lp.tokens if lp else [])
            return [tuple(o) for o in out]

        (text, _, tokens), _ = answers(create(**kw))
        starts = [sum(map(len, tokens[:k])) for k in range(len(tokens))]
        for k in range(3, len(tokens) - 1):  # a stop string the first choice reaches first there
            stop = tokens[k][-2:] + tokens[k + 1][:2] if across else tokens[k]
            at = starts[k] + len(tokens[k]) - len(tokens[k][-2:]) if across else starts[k]
            if stop.strip() and text.find(stop) == at and (not across or len(tokens[k]) > 1):
                break
        else:
            pytest.fail(f"no stop string found in {tokens}")
        whole = answers(create(**kw, stop=[stop]))
        streamed = answers(create(**kw, stop=[stop], stream=True))
        assert streamed == whole
        assert whole[0][0] == text[:at] and whole[0][1] == "stop" and stop not in streamed[0][0]


# ------------------------------------------------------------------------------ raw HTTP


@needs_stories
def test_bad_requests_get_openai_errors_naming_the_field(stories):
    with running(stories, max_body_bytes=4096) as (base, _, _):
        body = {"model": "stories260K", "prompt": "Once", "max_tokens": 4}

        def post(payload, path="/completions"):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            return raw(base, "POST", path, data, {"Content-Type": "application/json"})

        status, _, out = post(b'{"prompt": "Once", "max_tokens": ')
        assert status == 400 and "JSON" in out["error"]["message"] and out["error"]["type"] == "invalid_request_error"
        for field, value in (("temperature", "hot"), ("max_tokens", 2.5), ("n", True), ("stop", 3), ("seed", "1")):
            status, _, out = post(body | {field: value})
            assert (status, out["error"]["param"]) == (400, field), out
        for field, value in (("temperature", 3), ("top_logprobs", 21), ("max_tokens", 10**6), ("preset", "nope")):
            path = "/chat/completions" if field == "top_logprobs" else "/completions"
            payload = (
                {"messages": [{"role": "user", "content": "hi"}], "logprobs": True} if field == "top_logprobs" else body
            )
            status, _, out = post(payload | {field: value}, path)
            assert (status, out["error"]["param"]) == (400, field), out
        status, _, out = post(body | {"frobnicate": 1})
        assert (status, out["error"]["param"]) == (400, "frobnicate")
        status, _, out = post(json.dumps({"messages": "hi"}).encode(), "/chat/completions")
        assert (status, out["error"]["param"]) == (400, "messages")
        status, _, out = post({"messages": [{"role": "wizard", "content": "Hi"}]}, "/chat/completions")
        assert (status, out["error"]["param"]) == (400, "messages")
        assert (
            "'wizard'" in out["error"]["message"]
            and "the roles are system, user and assistant" in out["error"]["message"]
        )
        status, _, out = post(b"[1, 2]")
        assert status == 400 and "object" in out["error"]["message"]
        status, _, out = post(body | {"prompt": "x" * 5000})
        assert status == 413 and "limit" in out["error"]["message"]
        status, _, out = post(body | {"model": "gpt-4"})
        assert (status, out["error"]["param"]) == (404, "model")


@needs_stories
def test_every_error_is_openai_json_and_the_model_can_be_retrieved(stories):
    """Unknown paths (404) and methods (405) answer in OpenAI's error shape like every other error;
    GET /v1/models/{id} gives the served model's card (openai's models.retrieve), another id a 404."""
    with running(stories, api_key="secret") as (base, _, _):
        auth = {"Authorization": "Bearer secret"}
        for method, path, status in (
            ("GET", "/nothing", 404),
            ("GET", "/chat/completions", 405),
            ("POST", "/models", 405),
            ("GET", "/models/gpt-4", 404),
        ):
            got, headers, out = raw(base, method, path, headers=auth)
            assert got == status and headers["content-type"] == "application/json", (method, path)
            assert set(out["error"]) == {"message", "type", "param", "code"}
            assert out["error"]["type"] == "invalid_request_error" and out["error"]["message"]
        assert raw(base, "GET", "/chat/completions")[1]["allow"] == "POST"
        assert raw(base, "GET", "/models/stories260K")[0] == 401
        client = openai.OpenAI(base_url=base, api_key="secret")
        model = client.models.retrieve("stories260K")
        assert (model.id, model.object) == ("stories260K", "model")
        with pytest.raises(openai.NotFoundError) as err:
            client.models.retrieve("gpt-4")
        assert err.value.code == "model_not_found"


def test_a_port_in_use_is_one_clear_error_and_nothing_is_announced(tiny):
    """The address is bound before the "serving ..." line: a port in use is one line (InputError,
    which the CLI prints as its error), with no announcement before it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines: list[str] = []
        with pytest.raises(InputError, match=rf"^port {port} on 127\.0\.0\.1 is in use; pick another with --port$"):
            serve(tiny["gpt2"], ServeConfig(port=port), announce=lines.append)
        assert lines == []


@needs_stories
def test_a_client_gone_mid_body_is_no_traceback(stories):
    """Content-Length 100, part of the body, then the connection closes: the request ends quietly
    (nothing logged) and the server goes on."""
    with running(stories) as (base, _, server), logged() as log:
        api, done = server.api, threading.Event()
        read = api._read_json

        async def read_and_tell(request):
            try:
                return await read(request)
            finally:
                done.set()

        api._read_json = read_and_tell
        host, port = base.split("//")[1].split("/")[0].split(":")
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(head + b'Content-Length: 100\r\n\r\n{"messages"')
        assert done.wait(30)
        assert raw(base, "GET", "/models")[0] == 200
        assert [r.getMessage() for r in log] == []


@needs_stories
def test_auth_and_bind_rules(stories):
    with pytest.raises(ValueError, match="api-key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "secret")
    check_bind("::1", None)
    with running(stories, api_key="secret") as (base, _, _):
        assert raw(base, "GET", "/health")[0] == 200
        status, _, out = raw(base, "GET", "/models")
        assert status == 401 and out["error"]["code"] == "invalid_api_key"
        assert raw(base, "GET", "/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert raw(base, "GET", "/models", headers={"Authorization": "Bearer secret"})[0] == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="wrong").models.list()
        r = openai.OpenAI(base_url=base, api_key="secret").completions.create(
            model="stories260K", prompt="Once", max_tokens=3
        )
        assert r.usage.completion_tokens == 3


@needs_stories
def test_a_request_past_its_timeout_is_cancelled(stories):
    """Once its answer began (a request timed out before that gets a 503: test_qa51_serve.py)."""
    with running(stories, timeout_s=1) as (base, batcher, _), slowed(batcher, 0.01):  # 500 tokens: 5 s at least
        client = openai.OpenAI(base_url=base, api_key="none")
        r = client.completions.create(model="stories260K", prompt="Once", max_tokens=500, seed=1)
        assert r.choices[0].finish_reason == "cancelled" and r.usage.completion_tokens < 500
        assert batcher.rows == 0


def _open_stream(base: str, payload: dict) -> socket.socket:
    """Start a streaming request on a bare socket and read until its first token arrives."""
    host, port = base.split("//")[1].split("/")[0].split(":")
    sock = socket.create_connection((host, int(port)))
    data = json.dumps(payload | {"stream": True}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    sock.sendall(head.encode() + data)
    got = b""
    while got.count(b"data: ") < 2:
        got += sock.recv(65536)
    return sock


def _wait_for(cond, what: str) -> None:
    deadline = time.monotonic() + 30  # a generous bound against a hang, not a speed check
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@needs_stories
def test_client_gone_mid_stream_frees_its_row_and_full_queue_is_429(stories):
    with running(stories, max_rows=1, max_queue=1) as (base, batcher, _):
        long = {"model": "stories260K", "prompt": "Once", "max_tokens": 500}
        sock = _open_stream(base, long)
        assert batcher.rows == 1
        waiting = ThreadPoolExecutor(1).submit(
            raw, base, "POST", "/completions", json.dumps(long | {"max_tokens": 2}).encode(), {}
        )
        _wait_for(lambda: batcher.pending == 1, "the second request never queued")
        status, headers, out = raw(base, "POST", "/completions", json.dumps(long).encode(), {})
        assert status == 429 and headers["retry-after"].isdigit() and out["error"]["code"] == "rate_limit_exceeded"
        sock.close()  # the client goes away mid-stream: its row leaves, the queued request runs
        assert waiting.result()[0] == 200
        _wait_for(lambda: batcher.rows == 0 and batcher.pending == 0, "the row of a gone client was not freed")


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@needs_stories
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS read from /proc")
def test_no_leak_after_a_thousand_requests(stories):
    """1,000 short requests (one connection, mixed kinds): no row, queue entry or memory is left."""
    with running(stories) as (base, batcher, _):
        host, port = base.split("//")[1].split("/")[0].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        bodies = [
            ("/v1/completions", {"prompt": "Once", "max_tokens": 2, "logprobs": 2}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
            ("/v1/completions", {"prompt": "The", "max_tokens": 2, "stream": True}),
        ]

        def burst(n: int) -> None:
            for i in range(n):
                path, body = bodies[i % 3]
                conn.request("POST", path, json.dumps(body | {"seed": i}), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                assert resp.status == 200
                resp.read()

        burst(200)  # warm-up: allocator pools, caches of token texts
        before = _rss()
        burst(1000)
        grown = _rss() - before
        conn.close()
        assert batcher.rows == 0 and batcher.pending == 0
        assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 1,000 requests"


@needs_stories
def test_shutdown_answers_queued_requests_at_once_and_ends_running_streams_properly(stories):
    """SIGINT/SIGTERM (uvicorn's should_exit) with two requests running and two queued (max_rows 2):
    the queued ones are answered at once, a 503 or a stream's last chunk "cancelled" and [DONE];
    so is one whose body is still coming (503). The short running one finishes within drain_s; the
    long one is cancelled after drain_s between two tokens, its stream still ending with
    finish_reason "cancelled" and [DONE]. Nothing is logged (no cancelled task, no traceback) and
    the batcher ends with no row and no thread."""
    drain = 3.0
    prompt = {"model": "stories260K", "prompt": "Once", "seed": 1}
    with running(stories, max_rows=2, drain_s=drain) as (base, batcher, server), logged() as log:
        pool = ThreadPoolExecutor(4)
        with slowed(batcher, 0.01):  # the long stream runs past drain_s: 450 steps of 10 ms at least
            long = sse(base, "/completions", prompt | {"max_tokens": 450, "temperature": 2})
            assert next(long)["choices"][0]["text"] is not None  # under way
            short = pool.submit(raw, base, "POST", "/completions", json.dumps(prompt | {"max_tokens": 20}).encode())
            _wait_for(lambda: batcher.rows == 2, "the short request never ran")
            queued = pool.submit(raw, base, "POST", "/completions", json.dumps(prompt | {"max_tokens": 5}).encode())
            queued_stream = pool.submit(lambda: list(sse(base, "/completions", prompt | {"max_tokens": 5})))
            _wait_for(lambda: batcher.pending == 2, "the requests never queued")
        host, port = base.split("//")[1].split("/")[0].split(":")
        uploading = socket.create_connection((host, int(port)))
        uploading.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        _wait_for(lambda: server.api.reading, "the body was never read")
        t0 = time.monotonic()
        server.should_exit = True
        uploading.settimeout(30)
        assert uploading.recv(65536).startswith(b"HTTP/1.1 503 ")
        uploading.close()
        status, _, out = queued.result()
        assert status == 503 and out["error"]["type"] == "server_error" and "shutting down" in out["error"]["message"]
        chunks = queued_stream.result()
        assert chunks[-1] == "[DONE]" and chunks[-2]["choices"][0]["finish_reason"] == "cancelled"
        assert "".join(ch["choices"][0]["text"] for ch in chunks[:-1]) == ""
        assert time.monotonic() - t0 < drain  # at once, not after the running requests
        status, _, out = short.result()
        assert status == 200 and out["choices"][0]["finish_reason"] == "length"  # drained
        rest = list(long)
        assert time.monotonic() - t0 >= drain * 0.9  # it had its drain time
        assert rest[-1] == "[DONE]" and rest[-2]["choices"][0]["finish_reason"] == "cancelled"
        _wait_for(lambda: not batcher._thread.is_alive(), "the batcher's thread did not stop")
        assert batcher.rows == 0 and batcher.pending == 0
        assert [r.getMessage() for r in log] == []


# ------------------------------------------------------------------------------ QA round 3


@needs_stories
def test_a_second_ctrl_c_cancels_the_running_requests_at_once_and_each_still_ends_properly(stories):
    """Ctrl+C twice (uvicorn alone would force-quit: streams cut without finish_reason or [DONE],
    tracebacks, a plain-text 500): the running requests are cancelled now, between two tokens, and
    end as usual -- a stream with "cancelled" and [DONE], a collected one in OpenAI's JSON -- long
    before drain_s, with one line said and nothing logged."""
    prompt = {"model": "stories260K", "prompt": "Once", "seed": 1, "max_tokens": 500, "temperature": 2}
    lines: list[str] = []
    with running(stories, lines, max_rows=2, drain_s=60) as (base, batcher, server), logged() as log:
        with slowed(batcher, 0.02):  # 500 steps of 40 ms at least: neither request ends on its own
            stream = sse(base, "/completions", prompt)
            assert next(stream)["choices"][0]["text"] is not None
            whole = ThreadPoolExecutor(1).submit(raw, base, "POST", "/completions", json.dumps(prompt).encode())
            _wait_for(lambda: len(server.api._running()) == 2, "the second request never ran")
        server.handle_exit(signal.SIGINT, None)
        _wait_for(lambda: lines, "nothing said on the first Ctrl+C")
        t0 = time.monotonic()
        server.handle_exit(signal.SIGINT, None)
        rest = list(stream)
        assert rest[-1] == "[DONE]" and rest[-2]["choices"][0]["finish_reason"] == "cancelled"
        status, headers, out = whole.result()
        assert (status, headers["content-type"]) == (200, "application/json")
        assert out["choices"][0]["finish_reason"] == "cancelled"
        assert time.monotonic() - t0 < 5  # a few decode steps, not drain_s
        assert lines[1:] == ["cancelling 2 running requests now"]
        _wait_for(lambda: not batcher._thread.is_alive(), "the batcher's thread did not stop")
        assert [r.getMessage() for r in log] == []


@needs_stories
def test_stopping_says_at_once_what_it_waits_for_and_how_long(stories):
    """Ctrl+C with a request running: one line at once (how many, how long, how to cut it short),
    and one when drain_s passes and the rest is cancelled."""
    lines: list[str] = []
    with running(stories, lines, drain_s=0.5) as (base, batcher, server):
        with slowed(batcher, 0.02):
            stream = sse(base, "/completions", {"prompt": "Once", "max_tokens": 500, "temperature": 2})
            next(stream)
        server.should_exit = True  # what SIGINT does
        _wait_for(lambda: lines, "nothing said on Ctrl+C")
        assert lines == [
            "stopping: 1 request running, waiting up to 0.5 s for it to finish (Ctrl+C again to cancel it now)"
        ]
        rest = list(stream)
        assert rest[-2]["choices"][0]["finish_reason"] == "cancelled"
        assert lines[1:] == ["cancelling 1 running request after 0.5 s"]


def _post(base: str, payload: dict, path: str = "/completions"):
    return raw(base, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})


@needs_stories
def test_max_queue_zero_runs_requests_in_free_rows_and_refuses_only_when_they_are_busy(stories):
    """--max-queue 0 is no waiting line, not "refuse everything": a request runs when its rows are
    free, gets 429 when they are not, and a request that could never fit is a 400."""
    with running(stories, max_rows=2, max_queue=0) as (base, batcher, server):
        body = {"model": "stories260K", "prompt": "Once", "max_tokens": 3}
        assert _post(base, body)[0] == 200  # an idle server
        status, _, out = _post(base, body | {"prompt": ["Once"] * 3})
        assert (status, out["error"]["param"]) == (400, "prompt") and "at most 2 per request" in out["error"]["message"]
        with slowed(batcher, 0.01):
            sock = _open_stream(base, body | {"max_tokens": 500})  # one row busy
        assert _post(base, body)[0] == 200  # the other is free
        status, headers, out = _post(base, body | {"n": 2})
        assert (status, headers["retry-after"]) == (429, "1") and out["error"]["code"] == "rate_limit_exceeded"
        assert out["error"]["message"] == (
            "1 of the server's 2 rows are busy and this request needs 2; it queues none (--max-queue 0): retry shortly"
        )
        sock.close()
        _wait_for(lambda: not any(r.rows_left for r in server.api.live), "the gone client's row was not freed")
        assert _post(base, body | {"n": 2})[0] == 200


@needs_stories
def test_more_prompts_than_the_queue_takes_is_a_400_not_a_429_forever(stories):
    """Each prompt of a completions request is queued on its own: more than --max-queue of them
    could never be taken, so the answer is a 400 naming the limit (a 429 would be retried forever)."""
    with running(stories, max_queue=2) as (base, _, _):
        client = openai.OpenAI(base_url=base, api_key="none", max_retries=0)
        assert len(client.completions.create(model="stories260K", prompt=["Once"] * 2, max_tokens=2).choices) == 2
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model="stories260K", prompt=["Once"] * 3, max_tokens=2)
        assert err.value.param == "prompt"
        assert err.value.message.endswith(
            "prompt has 3 prompts; this server takes at most 2 per request (its --max-queue); "
            "send the rest in another request"
        )


@needs_stories
def test_a_burst_past_the_servers_limit_gets_openais_429_not_uvicorns_plain_503(stories):
    """More requests at once than the server handles (max_queue + max_rows + 16, here held while
    their prompts are encoded): the next one gets the documented JSON 429 with Retry-After, not
    uvicorn's plain-text 503; /health still answers, and once they are gone requests run again."""
    with running(stories, max_rows=1, max_queue=1) as (base, _, server):
        limit, gate = 1 + 1 + 16, threading.Event()
        encode = server.api._encode
        server.api._encode = lambda job, prompt: (gate.wait(30), encode(job, prompt))[1]
        with ThreadPoolExecutor(limit) as pool:
            held = [pool.submit(_post, base, {"prompt": "Once", "max_tokens": 2}) for _ in range(limit)]
            try:
                _wait_for(lambda: server.api.in_flight == limit, "the requests were never all in progress")
                status, headers, out = _post(base, {"prompt": "Once", "max_tokens": 2})
                assert (status, headers["content-type"], headers["retry-after"]) == (429, "application/json", "1")
                assert out["error"]["code"] == "rate_limit_exceeded" and "retry shortly" in out["error"]["message"]
                assert raw(base, "GET", "/health")[0] == 200
            finally:
                gate.set()
            assert {f.result()[0] for f in held} <= {200, 429}  # one row and one place in the queue
        _wait_for(lambda: server.api.in_flight == 0, "the requests did not end")
        assert _post(base, {"prompt": "Once", "max_tokens": 2})[0] == 200


def test_a_broken_preset_file_leaves_out_its_preset_alone(tiny, tmp_path, monkeypatch, capsys):
    """Presets are read when the server starts. A broken user preset file (QA pass 18: it used to stop
    every command) is said once, as a warning, and leaves out only its own preset: a request naming
    it gets a 400 naming the preset (the file's path and error are the server's: QA pass 20); the
    other presets, built-in ones included, still answer."""
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "mine.toml").write_text('name = "mine"\n[params]\ntemperature = "hot"\n')
    monkeypatch.setenv("TIANKONG_CONFIG_DIR", str(tmp_path))
    line = f"{tmp_path / 'presets' / 'mine.toml'}: [params] temperature must be a number in [0, 2], got 'hot'"
    with running(tiny["gpt2"]) as (base, _, _):
        assert _post(base, {"prompt": "Hi", "max_tokens": 2, "preset": "balanced"})[0] == 200
        status, _, out = _post(base, {"prompt": "Hi", "max_tokens": 2, "preset": "mine"})
        assert (status, out["error"]["param"]) == (400, "preset")
        assert out["error"]["message"].startswith("preset 'mine' could not be loaded on this server")
    # The CLI says so before it loads a model (a bigger one takes seconds): here there is none to load.
    code, _, err = cli(monkeypatch, capsys, "serve", "--port", "0", "-m", tmp_path / "no-model")
    first, *rest = err.strip().splitlines()
    assert first == f"warning: preset not loaded: {line}"
    assert code == 2 and len(rest) == 1 and rest[0].startswith("error: "), err


def _parse(body: dict, chat: bool = True) -> fmt.Job:
    return fmt.parse_request(body, chat, max_rows=4, max_tokens_cap=100, preset=lambda name: SamplingParams())


def test_max_completion_tokens_wins_over_max_tokens():
    """OpenAI's newer name wins where a client sends both (as vLLM does), whatever their order."""
    msgs = [{"role": "user", "content": "Hi"}]
    assert _parse({"messages": msgs, "max_tokens": 30, "max_completion_tokens": 3}).params.max_new_tokens == 3
    assert _parse({"messages": msgs, "max_completion_tokens": 3, "max_tokens": 30}).params.max_new_tokens == 3


def test_openai_fields_that_ask_for_nothing_are_accepted_and_developer_is_system():
    """Fields OpenAI's clients send with their default (response_format text, store false,
    metadata, parallel_tool_calls, no tools) are accepted; a value asking for what tiankong does
    not do is refused by name as unsupported (not "unrecognized"); "developer" is the system role."""
    msgs = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    noops = {
        "response_format": {"type": "text"},
        "store": False,
        "metadata": {"k": "v"},
        "parallel_tool_calls": False,
        "tools": [],
        "tool_choice": "none",
        "logit_bias": {},
    }
    job = _parse({"messages": msgs, **noops})
    assert job.prompts == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    for field, value, message in (
        ("response_format", {"type": "json_object"}, 'response_format {"type": "json_object"} is not supported'),
        ("store", True, "store true is not supported by tiankong serve; it keeps no completions"),
        ("tools", [{"type": "function"}], "tools [{"),
        ("logit_bias", {"50256": -100}, "logit_bias"),
    ):
        with pytest.raises(fmt.ApiError) as err:
            _parse({"messages": msgs, field: value})
        assert err.value.param == field and err.value.message.startswith(message), err.value.message
        assert "is not supported by tiankong serve; " in err.value.message
    with pytest.raises(fmt.ApiError, match="^echo true is not supported by tiankong serve; drop it or send false$"):
        _parse({"prompt": "Once", "echo": True}, chat=False)
    assert _parse({"prompt": "Once", "echo": False}, chat=False).prompts == ["Once"]


MINI = Path(__file__).resolve().parents[1] / "models" / "tiankong-mini"  # bundled


@pytest.fixture(scope="module")
def mini() -> Engine:
    return Engine.load(MINI)


def test_the_eos_entry_in_logprobs_adds_no_text_as_in_generate(mini):
    """The EOS that ends an answer keeps its logprob entry (its probability is worth seeing) but
    adds no text: token "" with no bytes, as `tiankong generate` writes it, so the entries' bytes
    add up to the message (OpenAI's documented use of `bytes`), streamed or not, chat or completions."""
    msgs = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    with running(mini) as (base, _, _):
        client = openai.OpenAI(base_url=base, api_key="none")
        kw = dict(model="tiankong-mini", messages=msgs, temperature=0, logprobs=True, top_logprobs=2, max_tokens=100)
        c = client.chat.completions.create(**kw).choices[0]
        assert c.finish_reason == "stop"
        entries = c.logprobs.content
        assert (entries[-1].token, entries[-1].bytes) == ("", []) and entries[-1].logprob < 0
        assert bytes(b for e in entries for b in e.bytes).decode() == c.message.content
        streamed = [
            e
            for chunk in client.chat.completions.create(**kw, stream=True)
            for ch in chunk.choices
            if ch.logprobs
            for e in ch.logprobs.content
        ]
        assert [(e.token, e.bytes) for e in streamed] == [(e.token, e.bytes) for e in entries]
        ids = mini.encode(messages=msgs)
        r = client.completions.create(model="tiankong-mini", prompt=ids, temperature=0, logprobs=1, max_tokens=100)
        assert r.choices[0].finish_reason == "stop" and r.choices[0].logprobs.tokens[-1] == ""
        last = [e for e in mini.generate([ids], [SamplingParams(temperature=0)]) if isinstance(e, TokenEvent)][-1]
        assert last.to_dict()["text"] == ""  # what generate writes for it


@needs_stories
def test_the_bearer_scheme_is_case_insensitive(stories):
    """RFC 7235: "bearer KEY" and "BEARER KEY" are "Bearer KEY"; a wrong key or scheme is still 401."""
    with running(stories, api_key="secret") as (base, _, _):
        for header, status in (
            ("Bearer secret", 200),
            ("bearer secret", 200),
            ("BEARER secret", 200),
            ("bearer wrong", 401),
            ("Basic secret", 401),
            ("secret", 401),
            ("Bearersecret", 401),
        ):
            assert raw(base, "GET", "/models", headers={"Authorization": header})[0] == status, header
