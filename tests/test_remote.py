"""The playground on a remote engine: `--model http://HOST:PORT/v1` (engine/remote.py).

The references are independent of the client: the local engine's own run of the same prompt and
seed (token ids, logprobs, p_sample) and the server's non-streamed answer fetched with the official
`openai` client. The other server is a fake that streams what vLLM sends (logprobs, no ids, no
p_sample), so the "sampling distribution unknown" path is pinned too.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from tiny_models import make_model, with_template

from tiankong.engine.engine import Engine
from tiankong.engine.errors import InputError, ModelLoadError, RemoteError
from tiankong.engine.events import Finished, TokenEvent
from tiankong.engine.remote import UNKNOWN_CONTEXT, ChatPrompt, RemoteEngine, RemoteModel
from tiankong.engine.sampling import SamplingParams

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

MESSAGES = [{"role": "user", "content": "Tell me a story about a cat."}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    """A tiny random Llama, without a chat template: the served model."""
    return Engine.load(make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama"), device="cpu")


@pytest.fixture(scope="module")
def server(engine, serving):
    """A live `tiankong serve` over the tiny model -> (base URL, batcher)."""
    with serving(engine) as (url, batcher, _):
        yield url, batcher


def split(events):
    events = list(events)
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    return tokens, [e for e in events if isinstance(e, Finished)]


def wait_until(condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ the engine


def test_remote_generate_equals_the_local_engine_and_the_servers_own_answer(engine, server):
    """Streamed through RemoteEngine, a seeded row gives the local engine's tokens, logprobs and
    p_sample (candidates too), and the text the server gives non-streamed for the same seed."""
    url, _ = server
    remote = RemoteEngine.connect(url)
    assert remote.model == "tiny-llama" and remote.cfg.max_seq_len == engine.cfg.max_seq_len
    assert remote.folder == f"{url}/models/tiny-llama"
    prompt = remote.encode(messages=MESSAGES)  # counted by the server's /tokenize, through its template
    assert not prompt.estimated and len(prompt) == len(engine.encode(messages=MESSAGES))
    params = SamplingParams(temperature=0.9, top_k=40, min_p=0.02, seed=11, max_new_tokens=24)
    tokens, [fin] = split(remote.generate([prompt], [params], top_logprobs=5))

    want, [want_fin] = split(engine.generate([engine.encode(messages=MESSAGES)], [params], top_logprobs=5))
    assert [t.id for t in tokens] == [t.id for t in want] and len(tokens) > 1
    assert [t.logprob for t in tokens] == pytest.approx([t.logprob for t in want], abs=1e-4)
    assert [t.p_sample for t in tokens] == pytest.approx([t.p_sample for t in want], abs=1e-4)
    assert [[c.id for c in t.candidates] for t in tokens] == [[c.id for c in t.candidates] for t in want]
    assert [c.p_sample for c in tokens[0].candidates] == pytest.approx([c.p_sample for c in want[0].candidates])
    assert fin.text == want_fin.text == "".join(t.text for t in tokens)
    assert fin.finish_reason == want_fin.finish_reason and fin.usage == want_fin.usage

    client = openai.OpenAI(base_url=url, api_key="none")
    kw = dict(temperature=0.9, seed=11, max_tokens=24, extra_body={"top_k": 40, "min_p": 0.02})
    answer = client.chat.completions.create(model=remote.model, messages=MESSAGES, **kw)
    assert answer.choices[0].message.content == fin.text


def test_stop_strings_end_the_text_as_the_local_engine_ends_it(engine, server):
    """A stop string ends the remote text as it ends the engine's: tiankong serve streams nothing of
    it (other servers may, and the remote Finished cuts it then)."""
    url, _ = server
    remote = RemoteEngine.connect(url)
    ids = engine.encode(messages=MESSAGES)
    free, _ = split(engine.generate([ids], [SamplingParams(seed=4, max_new_tokens=30)]))
    stop = next(t.text.strip() for t in free[4:] if t.text.strip())  # a string the answer reaches
    params = SamplingParams(seed=4, max_new_tokens=30, stop=(stop,))
    _, [want] = split(engine.generate([ids], [params]))
    tokens, [fin] = split(remote.generate([remote.encode(messages=MESSAGES)], [params]))
    assert want.finish_reason == fin.finish_reason == "stop" and fin.text == want.text
    assert "".join(t.text for t in tokens) == fin.text  # nothing of the stop string was streamed


def test_rows_stream_together_and_cancel_frees_the_servers_rows(engine, server):
    """Two rows (compare's two presets) are two concurrent streams; cancelling closes them, the rows
    end "cancelled" and the server's batch is empty again."""
    url, batcher = server
    remote = RemoteEngine.connect(url)
    prompt = remote.encode(messages=MESSAGES)
    params = [SamplingParams(seed=1, max_new_tokens=8), SamplingParams(temperature=1.2, seed=2, max_new_tokens=8)]
    _, fins = split(remote.generate([prompt, prompt], params))
    assert sorted(f.row for f in fins) == [0, 1]
    for f, p in zip(sorted(fins, key=lambda f: f.row), params, strict=True):
        assert f.text == split(engine.generate([engine.encode(messages=MESSAGES)], [p]))[1][0].text

    # The server's rows are slowed (10 ms a token) and recorded: they end cancelled by the server,
    # which saw the client go, long before their 200 tokens.
    requests, submit = [], batcher.submit

    def slow_submit(*args, sink, **kwargs):
        req = submit(*args, sink=lambda ev: (time.sleep(0.01), sink(ev)), **kwargs)
        requests.append(req)
        return req

    batcher.submit = slow_submit
    try:
        cancel = threading.Event()
        seen = []
        for ev in remote.generate([prompt, prompt], [SamplingParams(seed=3, max_new_tokens=200)] * 2, cancel=cancel):
            seen.append(ev)
            if len(seen) == 4:
                cancel.set()
        wait_until(lambda: len(requests) == 2 and all(r.done.is_set() for r in requests))
    finally:
        batcher.submit = submit
    fins = [e for e in seen if isinstance(e, Finished)]
    assert sorted(f.finish_reason for f in fins) == ["cancelled", "cancelled"]
    assert all(r.cancelled for r in requests) and batcher.rows == 0
    assert all(f.usage.completion_tokens < 200 for f in fins)


def test_unreachable_url_and_server_errors_are_one_line(server):
    url, _ = server
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelLoadError, match=r"^cannot reach http://127\.0\.0\.1:\d+/v1: .*is the server running\?$"):
        RemoteEngine.connect(dead)
    with pytest.raises(ModelLoadError, match="not a server URL"):
        RemoteEngine.connect("http://")
    remote = RemoteEngine.connect(url.removesuffix("/v1"))  # no path: /v1 is OpenAI's
    assert remote.base_url == url
    with pytest.raises(RemoteError) as err:  # the server refuses a field: its message, on one line
        list(remote.generate([remote.encode(messages=MESSAGES)], [SamplingParams(stop=tuple("abcde"), seed=1)]))
    assert "HTTP 400" in str(err.value) and "stop" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="top_logprobs"):
        remote.generate([remote.encode(messages=MESSAGES)], [SamplingParams(seed=1)], top_logprobs=21)


def test_tokenize_route_counts_chats_and_text_and_names_a_bad_field(engine, server):
    """tiankong serve's POST /tokenize (vLLM's shape): ids as the engine encodes them."""
    import http.client

    url, _ = server

    def post(body):
        conn = http.client.HTTPConnection(url.split("//")[1].split("/")[0], timeout=30)
        conn.request("POST", "/tokenize", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read())
        conn.close()
        return out

    assert post({"messages": MESSAGES}) == (
        200,
        {
            "count": len(engine.encode(messages=MESSAGES)),
            "max_model_len": 256,
            "tokens": engine.encode(messages=MESSAGES),
        },
    )
    status, body = post({"prompt": "Once upon a time"})
    assert status == 200 and body["tokens"] == engine.encode(prompt="Once upon a time", raw=True)
    for bad, field in (({}, "messages"), ({"messages": "hi"}, "messages"), ({"prompt": 3}, "prompt")):
        status, body = post(bad)
        assert status == 400 and body["error"]["param"] == field


def test_api_key_is_sent_and_a_missing_one_is_named(engine, serving):
    with serving(engine, api_key="sesame") as (url, _, _):
        with pytest.raises(ModelLoadError, match=r"HTTP 401: .*pass --api-key \(or TIANKONG_API_KEY\)$"):
            RemoteEngine.connect(url)
        remote = RemoteEngine.connect(url, api_key="sesame")
        _, [fin] = split(
            remote.generate([remote.encode(messages=MESSAGES)], [SamplingParams(seed=1, max_new_tokens=3)])
        )
        assert fin.usage.completion_tokens == 3


# ------------------------------------------------------------------ a server without p_sample


def fake_vllm(tokens: list[tuple[str, float]], logprobs: bool = True):
    """An ASGI app answering as vLLM does: /v1/models with max_model_len, /tokenize missing, and a
    chat stream whose logprob entries have no ids and no p_sample."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "org/fake", "owned_by": "vllm", "max_model_len": 64}]})

    def chunk(delta, entries=None, finish=None):
        lp = {"content": entries} if entries is not None else None
        choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"

    async def chat(request):
        body = await request.json()
        top = body.get("top_logprobs", 0)

        async def stream():
            yield chunk({"role": "assistant", "content": ""})
            for text, lp in tokens:
                cands = [{"token": t, "logprob": p, "bytes": None} for t, p in tokens[:top]]
                entry = {"token": text, "logprob": lp, "bytes": None, "top_logprobs": cands}
                yield chunk({"content": text}, [entry] if logprobs else None)
            yield chunk({}, finish="stop")
            yield 'data: {"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 2}}\n\n'
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])


def test_a_server_without_p_sample_gives_unknown_never_invented(asgi_server):
    with asgi_server(fake_vllm([(" Hello", -0.5), (" world", -1.5)])) as (port, _):
        remote = RemoteEngine.connect(f"http://127.0.0.1:{port}/v1")
        assert remote.cfg.max_seq_len == 64 and remote.name == f"org/fake@127.0.0.1:{port}"
        prompt = remote.encode(messages=MESSAGES)
        assert isinstance(prompt, ChatPrompt) and prompt.estimated  # no /tokenize: counted from characters
        tokens, [fin] = split(remote.generate([prompt], [SamplingParams(seed=1)], top_logprobs=2))
        assert [t.text for t in tokens] == [" Hello", " world"] and fin.text == " Hello world"
        assert all(t.p_sample is None and t.entropy is None for t in tokens)
        assert all(c.p_sample is None for t in tokens for c in t.candidates)
        assert tokens[0].id == tokens[0].candidates[0].id < 0  # no ids sent: one negative id per text
        assert tokens[1].id == tokens[1].candidates[1].id != tokens[0].id
        assert fin.finish_reason == "eos" and fin.usage.prompt_tokens == 40
        assert remote.encode(messages=MESSAGES).n_tokens == 40  # calibrated by the server's usage

    with asgi_server(fake_vllm([(" Hi", -0.1)], logprobs=False)) as (port, _):
        remote = RemoteEngine.connect(f"http://127.0.0.1:{port}/v1")
        with pytest.raises(RemoteError, match="without logprobs; the playground needs one that returns top_logprobs"):
            list(remote.generate([remote.encode(messages=MESSAGES)], [SamplingParams(seed=1)]))
    with asgi_server(fake_vllm([(" Hi", None)])) as (port, _):  # a logprob that is not a number
        remote = RemoteEngine.connect(f"http://127.0.0.1:{port}/v1")
        with pytest.raises(RemoteError, match=r"sent a chunk not in OpenAI's shape \(TypeError: .*\)$"):
            list(remote.generate([remote.encode(messages=MESSAGES)], [SamplingParams(seed=1)], top_logprobs=1))


def test_llama_cpp_python_server_streams_what_it_answers_whole(asgi_server, tmp_path):
    """Another real server: llama-cpp-python's OpenAI server on stories260K as GGUF. The streamed
    row gives the text and per-token logprobs (and candidates) of its own non-streamed answer for the
    same seed, with p_sample unknown (it has none) and the context not claimed."""
    pytest.importorskip("llama_cpp.server.app")
    from gguf_files import write_gguf
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings
    from tiny_models import STORIES

    if not STORIES.is_dir():
        pytest.skip("needs ../shared/models/stories260K")
    gguf = write_gguf(STORIES, tmp_path / "stories260K.gguf")
    settings = ModelSettings(model=str(gguf), n_ctx=512, chat_format="llama-2", verbose=False)
    with asgi_server(create_app(server_settings=ServerSettings(), model_settings=[settings])) as (port, _):
        url = f"http://127.0.0.1:{port}/v1"
        remote = RemoteEngine.connect(url)
        assert not remote.cfg.context_known and remote.info()["context_length"].startswith("unknown")
        prompt = remote.encode(messages=MESSAGES)
        params = SamplingParams(temperature=0.8, seed=3, max_new_tokens=12)
        tokens, [fin] = split(remote.generate([prompt], [params], top_logprobs=3))
        whole = openai.OpenAI(base_url=url, api_key="none").chat.completions.create(
            model=remote.model, messages=MESSAGES, temperature=0.8, seed=3, max_tokens=12, logprobs=True, top_logprobs=3
        )
    want = whole.choices[0].logprobs.content
    assert fin.text == whole.choices[0].message.content == "".join(t.text for t in tokens)
    assert [t.logprob for t in tokens] == pytest.approx([w.logprob for w in want], abs=1e-5)
    assert [[c.text for c in t.candidates] for t in tokens] == [[c.token for c in w.top_logprobs] for w in want]
    assert all(t.p_sample is None and all(c.p_sample is None for c in t.candidates) for t in tokens)
    assert fin.usage.completion_tokens == len(tokens) == whole.usage.completion_tokens
    # It sends no usage when streaming and has no /tokenize: the prompt's count is the estimate.
    assert prompt.estimated and fin.usage.prompt_tokens == len(prompt)


def test_llama_cpp_servers_context_is_its_slots_not_the_models(asgi_server):
    """llama.cpp's server lists n_ctx_train (the model's) under meta; the context it runs with is
    /props' n_ctx (its --ctx-size). Without /props the context stays unknown, never guessed."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    card = {"id": "model.gguf", "object": "model", "owned_by": "llamacpp", "meta": {"n_ctx_train": 2048}}

    async def models(request):
        return JSONResponse({"object": "list", "data": [card]})

    async def props(request):
        return JSONResponse({"default_generation_settings": {"n_ctx": 128}, "total_slots": 1})

    for routes, want in (([Route("/props", props)], (128, True)), ([], (UNKNOWN_CONTEXT, False))):
        with asgi_server(Starlette(routes=[Route("/v1/models", models), *routes])) as (port, _):
            cfg = RemoteEngine.connect(f"http://127.0.0.1:{port}/v1").cfg
        assert (cfg.max_seq_len, cfg.context_known) == want


# ------------------------------------------------------------------------------ the playground


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the app"
        await pilot.pause(0.02)


def test_chat_pilot_streams_tokens_and_candidates_with_p_sample(server, store, tmp_path):
    from tiankong.tui.app import TiankongApp
    from tiankong.tui.widgets.message import AssistantMessage

    url, _ = server

    async def go():
        app = TiankongApp(RemoteModel(url), store=store, export_dir=tmp_path, show_timing=False)
        async with app.run_test(size=(110, 32)) as pilot:
            await wait_for(pilot, lambda: app.engine is not None or app.engine_error is not None)
            assert app.engine_error is None, app.engine_error
            chat = app.chat
            chat.params = chat.params.replace(seed=5, max_new_tokens=30)
            shown = []  # every candidates-panel update while streaming: (label, tokens so far)
            show = chat.candidates.show
            chat.candidates.show = lambda tok, label="": (shown.append((label, tok)), show(tok, label))
            await pilot.press(*"hello there", "enter")
            await wait_for(
                pilot,
                lambda: (
                    not chat.generating
                    and isinstance(chat.messages[-1], AssistantMessage)
                    and chat.messages[-1].message_id is not None
                ),
            )
            answer = chat.messages[-1]
            panel = str(chat.candidates.render())
            notes = []
            chat.notify = lambda message, **kw: notes.append(message)
            await pilot.press("ctrl+t", "f5", "b")  # the prompt's count; branching needs a local model
            await wait_for(pilot, lambda: len(notes) >= 2)
            stored = store.get_chat(chat.chat_id)
            return answer.content, answer.tokens, shown, panel, stored, chat.model_name, notes

    content, tokens, shown, panel, stored, name, notes = asyncio.run(go())
    assert "tokens of a 256-token context, counted by the server" in notes[0]  # tiankong serve's /tokenize
    assert "needs a local model" in notes[1]
    assert len(tokens) > 1 and content == "".join(t["text"] for t in tokens)
    streaming = [tok for label, tok in shown if label.startswith("streaming")]
    assert streaming and all(tok["top"] and tok["p_sample"] is not None for tok in streaming)
    assert all(c["p_sample"] is not None for t in tokens for c in t["top"])
    assert "sample" in panel and "—" not in panel  # a tiankong server reports p_sample
    assert stored.model == f"{url}/models/tiny-llama" and name.startswith("tiny-llama@127.0.0.1:")
    assert stored.messages[-1].tokens == tokens


def test_chat_pilot_marks_p_sample_unknown_and_unreachable_is_one_line(asgi_server, store, tmp_path):
    from tiankong.tui.app import TiankongApp

    async def go(url):
        app = TiankongApp(RemoteModel(url), store=store, export_dir=tmp_path, show_timing=False)
        async with app.run_test(size=(110, 32)) as pilot:
            await wait_for(pilot, lambda: app.engine is not None or app.engine_error is not None)
            if app.engine_error:
                return app.engine_error, None
            await pilot.press(*"hi", "enter")
            await wait_for(pilot, lambda: not app.chat.generating and app.chat.messages[-1].message_id is not None)
            app.chat.candidates.show(app.chat.messages[-1].tokens[0], "token 1")
            return None, str(app.chat.candidates.render())

    with asgi_server(fake_vllm([(" Hello", -0.5), (" world", -1.5)])) as (port, _):
        error, panel = asyncio.run(go(f"http://127.0.0.1:{port}/v1"))
    assert error is None
    assert "sample —" in panel and "sampling distribution is unknown" in panel and "id -" not in panel
    error, _ = asyncio.run(go(f"http://127.0.0.1:{free_port()}/v1"))
    assert error.startswith("cannot reach http://127.0.0.1:") and "\n" not in error


def test_compare_two_presets_on_a_server_stores_a_vote_naming_the_remote_model(server, store, tmp_path):
    from tiankong.tui.app import TiankongApp
    from tiankong.tui.screens.compare import CompareScreen

    url, _ = server

    async def go():
        app = TiankongApp(
            RemoteModel(url),
            store=store,
            export_dir=tmp_path,
            show_timing=False,
            mode="compare",
            compare_presets=["balanced", "creative"],
        )
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
            screen = app.screen
            screen.query_one("#prompt-input").value = "Tell me a story."
            await pilot.press("enter")
            await wait_for(pilot, lambda: screen.round is not None and screen.state != "generating", 60)
            await pilot.press("1", "enter")
            await wait_for(pilot, lambda: store.list_votes())
            return store.list_votes()

    [vote] = asyncio.run(go())
    assert {r.model for r in vote.responses} == {f"{url}/models/tiny-llama"}
    assert sorted(r.preset for r in vote.responses) == ["balanced", "creative"]
    assert all(r.text for r in vote.responses) and vote.ranking[0] in (0, 1)


def test_cli_chat_and_compare_pass_a_url_and_its_key_to_the_app(monkeypatch, capsys):
    """--model URL reaches the app as a RemoteModel (not a path: `http://` would collapse to
    `http:/`), with --api-key or TIANKONG_API_KEY; a folder still resolves as before."""
    from helpers import cli

    import tiankong.tui.app as app_module

    calls = []
    monkeypatch.setattr(app_module, "run_app", lambda model, **kw: calls.append((model, kw)))
    monkeypatch.delenv("TIANKONG_API_KEY", raising=False)
    url = "http://127.0.0.1:8000/v1"
    assert cli(monkeypatch, capsys, "chat", "-m", url, "--api-key", "k1")[0] == 0
    monkeypatch.setenv("TIANKONG_API_KEY", "k2")
    assert cli(monkeypatch, capsys, "compare", "--models", f"{url},https://example.test/v1")[0] == 0
    assert calls[0][0] == RemoteModel(url, "k1") and calls[0][1]["mode"] == "chat"
    assert calls[1][1]["compare_models"] == [RemoteModel(url, "k2"), RemoteModel("https://example.test/v1", "k2")]
    monkeypatch.delenv("TIANKONG_API_KEY")
    assert cli(monkeypatch, capsys, "chat")[0] == 0  # no --model: the bundled model's folder, unchanged
    assert not isinstance(calls[2][0], RemoteModel) and calls[2][0].is_dir()


def test_cli_generate_on_a_server_writes_the_local_records(engine, server, monkeypatch, capsys, tmp_path):
    """`tiankong generate -m URL` writes the records a local run on the same weights writes: texts,
    finish reasons, and every token with its candidates and p_sample (timings aside)."""
    from helpers import cli

    url, _ = server
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"messages": MESSAGES}, {"prompt": "Once upon a time", "id": "b"}]
    prompts.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = {}
    for name, model in (("remote", url), ("local", str(engine.folder))):
        args = ["generate", "-m", model, "-i", prompts, "-o", tmp_path / f"{name}.jsonl", "--seed", 5, "-n", 2]
        local_only = [] if name == "remote" else ["--device", "cpu"]  # a server runs its own device
        code, _, err = cli(monkeypatch, capsys, *args, "--max-new-tokens", 10, "--top-logprobs", 3, *local_only)
        assert code == 0, err
        out[name] = [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    remote, local = out["remote"], out["local"]
    assert len(remote) == len(local) == 4
    for r, lo in zip(remote, local, strict=True):
        assert (r["text"], r["finish_reason"], r["seed"]) == (lo["text"], lo["finish_reason"], lo["seed"])
        assert [t["id"] for t in r["tokens"]] == [t["id"] for t in lo["tokens"]]
        assert [t["p_sample"] for t in r["tokens"]] == pytest.approx([t["p_sample"] for t in lo["tokens"]], abs=1e-4)
        assert [[c["text"] for c in t["top"]] for t in r["tokens"]] == [
            [c["text"] for c in t["top"]] for t in lo["tokens"]
        ]
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", url, "-p", "hi", "--raw")
    assert code == 2 and "raw prompts need a local --model" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("chat", "-m", "http://127.0.0.1:9/v1", "--dtype", "bfloat16"),
        ("generate", "-m", "http://127.0.0.1:9/v1", "--device", "cpu", "-p", "hi"),
        ("compare", "--models", "http://127.0.0.1:9/v1", "--chat-template", "README.md"),
    ],
)
def test_local_model_options_with_a_server_are_refused_not_ignored(args):
    # A server runs its own device, dtype and template: a flag that would change nothing is named.
    from helpers import tiankong

    code, err, _ = tiankong(*args, timeout=60)
    assert code == 2 and len(err) == 1, err
    assert args[3] in err[0] and "local models" in err[0]


def test_a_servers_missing_chat_template_shows_in_the_chat_and_compare_line(engine, serving, tmp_path):
    # QA: tiankong serve warned (X-Tiankong-Warning) of a model without a chat template, but a chat on
    # it showed nothing, where the same model opened locally showed the TemplateNote line. The server
    # now warns with its model list too; the line names the server's fix, in one row at 80 columns.
    from screen_text import template_note_shown

    from tiankong.tui.app import TiankongApp

    sentence = "no chat template: /v1/chat/completions joins the messages' contents without roles"  # serve's
    assert engine.template is None  # the served model: its server warns
    templated = Engine.load(with_template(make_model(tmp_path / "chat-llama", "llama")), device="cpu")
    with serving(templated) as (url, _, _):
        assert RemoteEngine.connect(url).warning is None

    async def shown(url: str, mode: str) -> tuple[int, str, list[str], object]:
        kw = {"mode": "compare", "compare_presets": ["balanced", "creative"]} if mode == "compare" else {}
        app = TiankongApp(RemoteModel(url), store=None, export_dir=tmp_path, show_timing=False, **kw)
        return await template_note_shown(app, mode == "compare")

    with serving(engine) as (url, _, _):
        assert RemoteEngine.connect(url).warning == sentence
        # the info table said "the server's" template here too (QA62)
        assert RemoteEngine.connect(url).info()["chat_template"] == f"none (the server says: {sentence})"
        for mode in ("chat", "compare"):
            height, line, rows, tip = asyncio.run(shown(url, mode))
            assert height == 1 and line == "⚠ no chat template (serve --chat-template)", (mode, line)
            assert any(line in row for row in rows), rows[:4]
            assert tip == f"the server says: {sentence}"
