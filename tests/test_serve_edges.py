"""`tiankong serve` at its edges (QA pass 20): every JSON value of every field answered in OpenAI's
error shape (never a 500), seeds over their whole 64-bit range, the EOS written alike chosen and as
a candidate, the address and key checked and the port bound before the model loads, a model with
no chat template said so, paths with a trailing slash, the request log and the stopping line.

The references are independent of the server's code: torch's own generator for the seeds below
2**32, the tokenizer's EOS ids, sockets bound by the test itself, and OpenAI's documented shapes.
"""

from __future__ import annotations

import json
import signal
import socket
import threading

import pytest
import torch
from helpers import cli
from tiny_models import STORIES

from tiankong.engine.errors import InputError
from tiankong.engine.sampling import Uniforms

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import test_serve  # noqa: E402
from test_serve import raw, running, slowed, sse  # noqa: E402

from tiankong.tui import openai_format as fmt  # noqa: E402
from tiankong.tui import serve as serve_module  # noqa: E402
from tiankong.tui.serve import ServeConfig, serve  # noqa: E402
from tiankong.tui.serve_run import listen  # noqa: E402

needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason="needs ../shared/models/stories260K")
stories = test_serve.stories  # the fixture: stories260K, which has no chat template
mini = test_serve.mini  # the fixture: the bundled model, with a chat template and an EOS


def post(base: str, path: str, body: bytes) -> tuple[int, dict, object]:
    """One POST -> (status, headers, body: parsed JSON, or the raw bytes of anything else)."""
    import http.client

    host, port = base.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/v1" + path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    headers = {k.lower(): v for k, v in resp.getheaders()}
    if headers.get("content-type", "").startswith("application/json"):
        return resp.status, headers, json.loads(data)
    return resp.status, headers, data


# Every kind of JSON value, at the edges of what the fields take.
VALUES = [None, True, False, 0, -1, 1, 2, 2**63, 2**64, 1.5, -0.5, 1e308, "", "x", "stories260K"]
VALUES += [[], [None], [1], ["x"], [[1]], {}, {"a": None}, {"include_usage": True}, {"type": "text"}]


@needs_stories
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
def test_no_json_value_of_any_field_gets_a_500(stories, chat):
    """QA pass 20: "model": null was a plain-text 500 (null means "not given", as for the other
    fields). Every field OpenAI's shapes and tiankong's take, each with every kind of JSON value,
    gets an answer or a 400 in OpenAI's error shape; so do numbers JSON allows and Python cannot
    convert (NaN, Infinity, an integer of 5,000 digits)."""
    path = "/chat/completions" if chat else "/completions"
    base_body = {"messages": [{"role": "user", "content": "hi"}]} if chat else {"prompt": "Once"}
    base_body |= {"max_tokens": 1}
    fields = sorted(
        set(fmt._CHAT if chat else fmt._COMPLETIONS) | set(fmt._NOOP_CHAT if chat else fmt._NOOP_COMPLETIONS)
    )
    with running(stories) as (base, batcher, _):
        status, _, out = post(base, path, json.dumps(base_body | {"model": None}).encode())
        assert status == 200 and out["model"] == "stories260K", out
        bodies = [json.dumps(base_body | {f: v}).encode() for f in fields for v in VALUES]
        head = json.dumps(base_body)[:-1].encode()
        bodies += [head + b', "' + f.encode() + b'": ' + v + b"}" for f in fields for v in (b"NaN", b"-Infinity")]
        bodies += [head + b', "seed": ' + b"7" * 5000 + b"}", b"null", b'"x"', b"1e999"]
        for body in bodies:
            status, headers, out = post(base, path, body)
            assert status < 500, (body[:200], status, out)
            if status != 200:
                assert isinstance(out, dict) and set(out["error"]) == {"message", "type", "param", "code"}, out
        test_serve._wait_for(lambda: batcher.rows == 0, "rows left running")


def test_a_body_that_is_not_an_object_is_named_as_json_names_it():
    for body, name in ((None, "null"), ([1], "array"), ("x", "string"), (1.5, "number"), (True, "boolean")):
        with pytest.raises(fmt.ApiError, match=f"^the request body must be a JSON object, got {name}$"):
            test_serve._parse(body)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ seeds


def test_every_bit_of_a_seed_counts_and_small_seeds_draw_as_they_did():
    """torch's CPU generator keeps a seed's low 32 bits: seeds 0, 2**32 and 2**63 drew alike (QA
    pass 20). Below 2**32 the draws stay torch's own (seeded answers recorded earlier stay what they
    were); above, each seed draws its own numbers."""
    draws = {s: [Uniforms(s).next() for _ in range(1)] for s in (0, 1, 2**32, 2**32 + 1, 2**63, 2**64 - 1)}
    for s in (0, 1):
        assert draws[s] == torch.rand(1, generator=torch.Generator().manual_seed(s), dtype=torch.float64).tolist()
    assert len({tuple(d) for d in draws.values()}) == len(draws)
    u = Uniforms(2**63)
    many = [u.next() for _ in range(10_000)]
    assert all(0 <= x < 1 for x in many) and 0.48 < sum(many) / len(many) < 0.52


@needs_stories
def test_seeds_over_the_whole_range_and_n_never_wraps(stories):
    """Seeds 0 and 2**63 give their own answers; n rows use seed, seed + 1, ... up to 2**64 - 1, and
    a request whose last row would pass it is refused naming seed (it used to wrap to seed 0)."""
    with running(stories) as (base, _, _):
        body = {"prompt": "Once", "max_tokens": 24, "temperature": 1.5}
        texts = {}
        for seed in (0, 2**32, 2**63):
            status, _, out = post(base, "/completions", json.dumps(body | {"seed": seed}).encode())
            assert status == 200 and out["choices"][0]["seed"] == seed
            texts[seed] = out["choices"][0]["text"]
        assert len(set(texts.values())) == 3, texts
        status, _, out = post(base, "/completions", json.dumps(body | {"seed": 2**64 - 2, "n": 2}).encode())
        assert status == 200 and [c["seed"] for c in out["choices"]] == [2**64 - 2, 2**64 - 1]
        status, _, out = post(base, "/completions", json.dumps(body | {"seed": 2**64 - 1, "n": 2}).encode())
        assert (status, out["error"]["param"]) == (400, "seed")
        assert out["error"]["message"].startswith(f"seed must be at most {2**64 - 2} with n=2")


def test_generate_refuses_a_seed_whose_last_sample_would_wrap(monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "generate", "-p", "hi", "--seed", 2**64 - 1, "-n", 2)
    assert code == 2 and f"--seed must be at most {2**64 - 2} with --n 2" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ the EOS in logprobs


def test_the_eos_adds_no_bytes_chosen_or_as_a_candidate(mini):
    """QA pass 20: the chosen EOS had no bytes and the same id among the candidates had those of
    "</s>", as if choosing it would add that text. bytes say what a token adds, in both places; a
    candidate keeps the EOS's readable name as its token (the playground on a server shows it)."""
    eos = set(mini.tokenizer.eos_ids)
    msgs = [{"role": "user", "content": "Hi!"}]
    with running(mini) as (base, _, _):
        body = {"messages": msgs, "temperature": 0, "logprobs": True, "top_logprobs": 3, "max_tokens": 100}
        status, _, out = post(base, "/chat/completions", json.dumps(body).encode())
        assert status == 200 and out["choices"][0]["finish_reason"] == "stop"
        last = out["choices"][0]["logprobs"]["content"][-1]
        assert last["id"] in eos and (last["token"], last["bytes"]) == ("", [])
        top = [c for c in last["top_logprobs"] if c["id"] in eos]
        assert top and all(c["bytes"] == [] and c["token"] == mini.token_text(c["id"]) != "" for c in top)
        for entry in out["choices"][0]["logprobs"]["content"]:  # other candidates keep their bytes
            for c in entry["top_logprobs"]:
                if c["id"] not in eos:
                    assert c["bytes"] == fmt.token_bytes(c["token"])


# ------------------------------------------------------------------------------ binding


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_the_address_the_key_and_the_port_are_checked_before_the_model_loads(monkeypatch, capsys):
    """QA pass 20: a port in use or a bad --host was said only once the model had loaded (seconds,
    or minutes for a large GGUF), and an address that is none was blamed on the missing API key."""
    import tiankong.tui.cli as cli_module

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the address was checked")

    monkeypatch.setattr(cli_module, "_load", no_load)
    with _taken_port() as taken:
        port = taken.getsockname()[1]
        code, _, err = cli(monkeypatch, capsys, "serve", "--port", port)
        assert code == 2 and f"port {port} on 127.0.0.1 is in use" in err, err
    for host, said in (
        ("999.1.1.1", "--host 999.1.1.1 is not an address or a known host name"),
        ("nosuchhost.invalid", "--host nosuchhost.invalid is not an address or a known host name"),
        ("", "--host is empty; give an address"),
        ("0.0.0.0", "--host 0.0.0.0 exposes the server beyond this machine; set --api-key"),
    ):
        code, _, err = cli(monkeypatch, capsys, "serve", "--port", 0, "--host", host)
        assert code == 2 and said in err and "AssertionError" not in err, (host, err)
    with pytest.raises(InputError, match="^--host 8.8.8.8 is not an address of this machine"):
        listen(ServeConfig(host="8.8.8.8", port=0, api_key="k"))  # an address, but not this machine's
    for sock in listen(ServeConfig(host="localhost", port=0)):  # a name of the loopback needs no key
        assert sock.getsockname()[0] == "127.0.0.1"
        sock.close()


@needs_stories
def test_serve_runs_on_the_sockets_bound_before_and_warns_of_a_missing_chat_template(stories, monkeypatch):
    """stories260K has no chat template: its chats are the messages' contents joined without roles.
    Said once when the server starts, and on every chat answer in an X-Tiankong-Warning header."""
    servers = []
    real = serve_module.http_server
    monkeypatch.setattr(serve_module, "http_server", lambda *a, **k: servers.append(real(*a, **k)) or servers[-1])
    cfg = ServeConfig(port=0)
    socks = listen(cfg)
    port = socks[0].getsockname()[1]
    lines: list[str] = []
    thread = threading.Thread(target=serve, args=(stories, cfg, lines.append), kwargs={"sockets": socks})
    thread.start()
    test_serve._wait_for(lambda: servers and servers[0].started, "the server did not start")
    try:
        warning = "warning: no chat template: /v1/chat/completions joins the messages' contents without roles"
        assert lines[0] == warning + "; give --chat-template FILE"
        assert lines[1].startswith(f"serving stories260K on http://127.0.0.1:{port}/v1") and len(lines) == 2
        base = f"http://127.0.0.1:{port}/v1"
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for body in (chat, chat | {"stream": True}):
            status, headers, _ = post(base, "/chat/completions", json.dumps(body).encode())
            assert status == 200 and headers["x-tiankong-warning"] == warning[len("warning: ") :]
        status, headers, _ = post(base, "/completions", json.dumps({"prompt": "Once", "max_tokens": 2}).encode())
        assert status == 200 and "x-tiankong-warning" not in headers
    finally:
        servers[0].should_exit = True
        thread.join(30)
    assert all(s.fileno() == -1 for s in socks)  # closed when the server stopped


def test_a_model_with_a_chat_template_gets_no_warning(mini):
    with running(mini) as (base, _, _):
        status, headers, _ = post(
            base, "/chat/completions", b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}'
        )
        assert status == 200 and "x-tiankong-warning" not in headers


# ------------------------------------------------------------------------------ smaller ones


@needs_stories
def test_trailing_slashes_context_overflow_code_and_the_request_log(stories):
    """POST /v1/chat/completions/ was an empty 307 and GET /v1/models/ a 404: both paths answer.
    A prompt past the context is OpenAI's context_length_exceeded. --log-requests says one line per
    request once answered: method, path as sent, status, tokens generated, milliseconds."""
    lines: list[str] = []
    with running(stories, lines, log_requests=True) as (base, _, _):
        status, _, out = raw(base, "GET", "/models/")
        assert status == 200 and out["data"][0]["id"] == "stories260K"
        for path in ("/chat/completions/", "/completions/"):
            body = {"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {"prompt": "Once"}
            status, _, out = post(base, path, json.dumps(body | {"max_tokens": 3}).encode())
            assert status == 200 and out["usage"]["completion_tokens"] == 3, out
        for prompt in ("Once " * 2000, [1] * 600):
            status, _, out = post(base, "/completions", json.dumps({"prompt": prompt}).encode())
            assert (status, out["error"]["code"], out["error"]["param"]) == (400, "context_length_exceeded", "prompt")
        status, _, out = raw(base, "GET", "/nothing/")
        assert status == 404 and out["error"]["message"] == "Invalid URL (GET /v1/nothing)"
    logs = [line for line in lines if line.startswith(("GET", "POST"))]
    assert [line.rsplit(" ", 2)[0] for line in logs] == [
        "GET /v1/models/ 200",
        "POST /v1/chat/completions/ 200 3 tokens",
        "POST /v1/completions/ 200 3 tokens",
        "POST /v1/completions 400",
        "POST /v1/completions 400",
        "GET /v1/nothing/ 404",
    ]
    assert all(line.endswith(" ms") and line.rsplit(" ", 2)[1].isdigit() for line in logs)


@needs_stories
def test_the_request_log_is_off_by_default(stories):
    lines: list[str] = []
    with running(stories, lines) as (base, _, _):
        assert post(base, "/completions", b'{"prompt": "Once", "max_tokens": 2}')[0] == 200
    assert lines == []


@needs_stories
def test_sigterm_says_the_signal_again_hurries_it(stories):
    """The stopping line said "Ctrl+C again" after a SIGTERM, which has no Ctrl+C to press."""
    lines: list[str] = []
    with running(stories, lines, drain_s=0.5) as (base, batcher, server):
        with slowed(batcher, 0.02):
            stream = sse(base, "/completions", {"prompt": "Once", "max_tokens": 500, "temperature": 2})
            next(stream)
        server.handle_exit(signal.SIGTERM, None)
        test_serve._wait_for(lambda: lines, "nothing said on SIGTERM")
        assert lines == [
            "stopping: 1 request running, waiting up to 0.5 s for it to finish (SIGTERM again to cancel it now)"
        ]
        assert list(stream)[-1] == "[DONE]"


def test_a_broken_preset_is_named_over_http_without_the_servers_path(tmp_path, monkeypatch, mini):
    """The file's path and error are the server's (its stderr warning says them); a client is told
    which preset, not where the server keeps its files."""
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "mine.toml").write_text('name = "mine"\n[params]\ntemperature = "hot"\n')
    monkeypatch.setenv("TIANKONG_CONFIG_DIR", str(tmp_path))
    with running(mini) as (base, _, _):
        status, _, out = post(base, "/completions", b'{"prompt": "Hi", "max_tokens": 2, "preset": "Mine"}')
    assert (status, out["error"]["param"]) == (400, "preset")
    assert out["error"]["message"].startswith("preset 'mine' could not be loaded on this server")
    assert str(tmp_path) not in out["error"]["message"] and "mine.toml" not in out["error"]["message"]


@needs_stories
@pytest.mark.parametrize(
    "template, status, kind",
    [
        ("{% include 'other.jinja' %}{{ messages[0].content }}", 500, "server_error"),  # the template's own bug
        (
            "{{ raise_exception('no boom') if 'boom' in messages[0].content }}{{ messages[0].content }}",
            400,
            "invalid_request_error",
        ),  # the template refusing these messages
    ],
    ids=["template-fault", "raise-exception"],
)
def test_a_failing_chat_template_is_the_servers_fault_unless_it_refuses_the_messages(template, status, kind, tmp_path):
    """QA32: a template that failed on its own (an include, a number too long to write) was answered as
    400 invalid_request_error on `messages`, telling API clients to change a request that was fine."""
    from tiankong.engine.engine import Engine

    path = tmp_path / "t.jinja"
    path.write_text(template)
    engine = Engine.load(STORIES, chat_template=path)
    with running(engine) as (base, _, _):
        body = json.dumps({"messages": [{"role": "user", "content": "boom"}], "max_tokens": 2}).encode()
        got, _, out = post(base, "/chat/completions", body)
    assert got == status and out["error"]["type"] == kind, out


def test_serve_refuses_a_file_that_is_no_gguf_before_saying_it_loads(monkeypatch, capsys, tmp_path):
    # QA: serve said "loading notgguf.gguf (61.5 KB)…" and then refused the file; generate and info
    # refuse it at once. serve now checks the model as generate does, before the loading line.
    fake = tmp_path / "notgguf.gguf"
    fake.write_text("not a model, only text\n" * 2000)
    said = {}
    for command in (["serve", "--port", 0], ["generate", "-p", "hi"], ["info"]):
        code, out, err = cli(monkeypatch, capsys, *command, "-m", fake)
        said[command[0]] = err
        assert code == 2 and out == "", (command, out, err)
        assert err == f"error: {fake} is not a usable GGUF file: it does not start with the GGUF magic, " + (
            "so it is not a GGUF file; pass a .gguf file (llama.cpp, Ollama, LM Studio)\n"
        ), (command, err)
    assert said["serve"] == said["generate"] == said["info"]
