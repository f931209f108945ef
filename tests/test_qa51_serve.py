"""`tiankong serve` after QA pass 51: a preset's max_new_tokens, a request that timed out before its
answer began (503 naming --timeout, streamed or not), keys no client could send, n past --max-rows,
a failing chat template told apart for the client and the operator, SIGINT from a script, and the
request log saying why a request ended early.

References independent of the server's code: the preset's own file, OpenAI's documented shapes (a
400 for stream_options without stream), the exit code a shell gives SIGINT (130), and a request
held in the queue by a batcher row the test itself keeps busy.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from helpers import cli
from tiny_models import STORIES

from tiankong.engine.engine import Engine
from tiankong.engine.errors import ChatTemplateError, InputError
from tiankong.engine.sampling import SamplingParams

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import test_serve  # noqa: E402
from test_serve import MINI, _post, _wait_for, raw, running, slowed  # noqa: E402

from tiankong.tui import openai_format as fmt  # noqa: E402
from tiankong.tui import serve as serve_module  # noqa: E402
from tiankong.tui.serve import ServeConfig  # noqa: E402


def _ignore(event) -> None:
    """The sink of the test's own batcher requests: their events are not read."""


needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason="needs ../shared/models/stories260K")
stories = test_serve.stories  # the fixture: stories260K
ONCE = {"model": "stories260K", "prompt": "Once", "seed": 1}


# ------------------------------------------------------------------------ a preset's max_new_tokens


@needs_stories
def test_a_presets_max_new_tokens_is_the_answers_length_unless_the_request_sends_max_tokens(
    stories, tmp_path, monkeypatch
):
    """QA51 #1: the server replaced a preset's max_new_tokens with OpenAI's defaults (the context, 16)
    whenever max_tokens was not sent; `generate --preset` runs the preset's 7."""
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "mine.toml").write_text("[params]\ntemperature = 0.5\ntop_k = 5\nmax_new_tokens = 7\n")
    monkeypatch.setenv("TIANKONG_CONFIG_DIR", str(tmp_path))
    with running(stories) as (base, _, _):
        client = openai.OpenAI(base_url=base, api_key="none", max_retries=0)
        for kw in ({"prompt": "Once"}, {"prompt": "Once", "stream": False}):
            r = client.completions.create(model="stories260K", seed=3, extra_body={"preset": "mine"}, **kw)
            assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (7, "length")
        r = client.completions.create(model="stories260K", prompt="Once", max_tokens=3, extra_body={"preset": "mine"})
        assert r.usage.completion_tokens == 3  # the request's own value wins
        chat = client.chat.completions.create(
            model="stories260K", messages=[{"role": "user", "content": "Once"}], seed=3, extra_body={"preset": "mine"}
        )
        assert (chat.usage.completion_tokens, chat.choices[0].finish_reason) == (7, "length")


def _parse(body: dict, chat: bool, preset=None) -> fmt.Job:
    return fmt.parse_request(
        body, chat, max_rows=4, max_tokens_cap=100, preset=preset or (lambda name: SamplingParams(max_new_tokens=500))
    )


def test_without_a_preset_the_lengths_are_openais_and_a_presets_is_capped_at_the_servers_cap():
    msgs = [{"role": "user", "content": "Hi"}]
    assert _parse({"messages": msgs}, chat=True).params.max_new_tokens == 100  # as long as the cap allows
    assert _parse({"prompt": "Hi"}, chat=False).params.max_new_tokens == 16  # OpenAI's completions default
    assert _parse({"prompt": "Hi", "preset": "big"}, chat=False).params.max_new_tokens == 100  # 500, capped
    assert _parse({"prompt": "Hi", "preset": "big", "max_tokens": 9}, chat=False).params.max_new_tokens == 9


# ------------------------------------------------------------------------ --timeout before the answer began


@needs_stories
def test_a_request_that_times_out_in_the_queue_is_a_503_naming_timeout_streamed_or_not(stories):
    """QA51 #2: a request still queued when its --timeout passed got 200 with "" and "cancelled" (a
    stream: the same in chunks). Its one row is held here by a batcher request of the test's own,
    which has no timeout; the log line says why it ended."""
    lines: list[str] = []
    with running(stories, lines, max_rows=1, timeout_s=1, log_requests=True) as (base, batcher, _):
        with slowed(batcher, 0.02):  # 400 tokens of 20 ms: the row stays busy past every timeout here
            hog = batcher.submit(stories.encode("Once", raw=True), [SamplingParams(max_new_tokens=400)], sink=_ignore)
        _wait_for(lambda: batcher.rows == 1, "the test's own request never ran")
        try:
            with ThreadPoolExecutor(2) as pool:
                collected = pool.submit(_post, base, ONCE | {"max_tokens": 5})
                body = json.dumps(ONCE | {"max_tokens": 5, "stream": True}).encode()
                streamed = pool.submit(raw, base, "POST", "/completions", body, {"Content-Type": "application/json"})
                answers = [collected.result(), streamed.result()]
        finally:
            hog.cancel()
        for status, headers, out in answers:
            assert (status, headers["content-type"], out["error"]["type"]) == (503, "application/json", "server_error")
            assert "timed out before its answer began" in out["error"]["message"]
            assert "--timeout" in out["error"]["message"]
        logged = [line for line in lines if line.startswith("POST")]
        assert len(logged) == 2 and all(
            line.startswith("POST /v1/completions 503 0 tokens ") and line.endswith(" ms (timed out)")
            for line in logged
        ), logged


@needs_stories
def test_a_request_that_began_and_ran_past_its_timeout_ends_cancelled_and_its_log_says_so(stories):
    lines: list[str] = []
    with running(stories, lines, timeout_s=1, log_requests=True) as (base, batcher, _):
        with slowed(batcher, 0.02):
            status, _, out = _post(base, ONCE | {"max_tokens": 400})
            chunks = list(test_serve.sse(base, "/completions", ONCE | {"max_tokens": 400}))
    assert status == 200 and out["choices"][0]["finish_reason"] == "cancelled"
    assert 0 < out["usage"]["completion_tokens"] < 400
    assert chunks[-1] == "[DONE]" and chunks[-2]["choices"][0]["finish_reason"] == "cancelled"
    logged = [line for line in lines if line.startswith("POST")]
    assert len(logged) == 2 and all(line.endswith(" ms (timed out)") for line in logged), logged
    assert all(" 200 " in line and " 0 tokens" not in line for line in logged), logged


@needs_stories
def test_a_client_that_leaves_is_logged_as_such(stories):
    lines: list[str] = []
    with running(stories, lines, log_requests=True) as (base, batcher, _):
        with slowed(batcher, 0.02):
            sock = test_serve._open_stream(base, ONCE | {"max_tokens": 400})
        sock.close()
        _wait_for(lambda: any(line.startswith("POST") for line in lines), "the request was never logged")
    assert [line for line in lines if line.startswith("POST")][0].endswith(" ms (client left)")


# ------------------------------------------------------------------------ keys, n, stream_options, wording


@pytest.mark.parametrize(
    "key, said",
    [
        (" ", "is only whitespace"),
        ("secret ", "begins or ends with whitespace"),
        ("s\u00e9cret", "not printable ASCII"),
    ],
)
def test_a_key_no_client_could_send_is_refused_at_startup(key, said, monkeypatch, capsys, tmp_path):
    """QA51 #3: such a key was taken, and then no client could authenticate (HTTP strips the spaces
    around a header value; httpx sends only ASCII)."""
    with pytest.raises(InputError, match=said):
        ServeConfig(api_key=key)
    code, _, err = cli(monkeypatch, capsys, "serve", "--port", "0", "--api-key", key, "-m", tmp_path / "no-model")
    assert code == 2 and len(err.strip().splitlines()) == 1 and said in err and "--api-key" in err, err
    assert ServeConfig(api_key="a-b_c.9 x").api_key == "a-b_c.9 x"  # spaces inside travel in the header


def test_n_past_max_rows_names_the_cause():
    msgs = [{"role": "user", "content": "Hi"}]
    with pytest.raises(fmt.ApiError) as err:
        _parse({"messages": msgs, "n": 16}, chat=True)
    assert err.value.param == "n" and "at most 4 rows at once (its --max-rows)" in err.value.message
    with pytest.raises(fmt.ApiError, match="^n must be at least 1, got 0$"):
        _parse({"messages": msgs, "n": 0}, chat=True)


def test_stream_options_without_stream_is_a_400_and_json_values_are_written_as_json():
    with pytest.raises(fmt.ApiError) as err:
        _parse({"prompt": "Hi", "stream_options": {"include_usage": True}}, chat=False)
    assert err.value.param == "stream_options" and "stream: true" in err.value.message
    assert _parse({"prompt": "Hi", "stream": True, "stream_options": {"include_usage": True}}, chat=False).include_usage
    with pytest.raises(fmt.ApiError, match="^temperature must be a number, got boolean true$"):
        _parse({"prompt": "Hi", "temperature": True}, chat=False)
    with pytest.raises(fmt.ApiError, match='^seed must be an integer, got string "1"$'):
        _parse({"prompt": "Hi", "seed": "1"}, chat=False)


@needs_stories
def test_a_full_queue_says_so_in_english_and_names_max_queue(stories):
    with running(stories, max_rows=1, max_queue=1) as (base, batcher, _):
        with slowed(batcher, 0.02):
            hog = batcher.submit(stories.encode("Once", raw=True), [SamplingParams(max_new_tokens=400)], sink=_ignore)
            _wait_for(lambda: batcher.rows == 1, "the test's own request never ran")
            waiting = ThreadPoolExecutor(1).submit(_post, base, ONCE | {"max_tokens": 2})
            _wait_for(lambda: batcher.pending == 1, "the request never queued")
            status, _, out = _post(base, ONCE | {"max_tokens": 2})
            hog.cancel()
        assert waiting.result()[0] == 200
    assert status == 429
    assert out["error"]["message"] == (
        "the server's queue is full (1 request waiting for a row; its --max-queue is 1); retry shortly"
    )


# ------------------------------------------------------------------------ a failing chat template


@needs_stories
def test_a_template_failing_on_a_request_tells_the_client_what_and_the_operator_everything(tmp_path):
    """QA51 #5: the client got the server's file path and command-line advice, the operator nothing
    (without --log-requests)."""
    path = tmp_path / "t.jinja"
    path.write_text("{% include 'other.jinja' %}{{ messages[0].content }}")
    engine = Engine.load(STORIES, chat_template=path)
    lines: list[str] = []
    with running(engine, lines) as (base, _, _):
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for route, body in (("/chat/completions", chat), ("/chat/completions", chat | {"stream": True})):
            status, _, out = _post(base, body, route)
            assert status == 500 and out["error"]["message"] == (
                "the server's chat template failed on this request: it includes, imports or extends another "
                "template, and chat templates cannot read other files"
            )
        host, port = base.split("//")[1].split("/")[0].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/tokenize", json.dumps({"messages": chat["messages"]}))
        resp = conn.getresponse()
        status, out = resp.status, json.loads(resp.read())
        conn.close()
        assert status == 500 and out["error"]["message"].startswith("the server's chat template failed on this")
    assert len(lines) == 3 and all(
        line.startswith(f"error: chat template failed ({path}): it includes") for line in lines
    )
    assert all("--chat-template FILE" in line and "generate --raw" not in line for line in lines)


def test_a_template_syntax_error_reads_as_one_sentence_and_serve_offers_no_raw_mode(tmp_path, monkeypatch, capsys):
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}{{ m.content }}")  # no endfor: Jinja's message ends in "."
    with pytest.raises(ChatTemplateError) as err:
        Engine.load(MINI, chat_template=path)
    assert ".;" not in str(err.value) and str(err.value).endswith("or use raw mode (generate --raw)")
    code, _, err_text = cli(monkeypatch, capsys, "serve", "--port", "0", "-m", MINI, "--chat-template", path)
    (line,) = [x for x in err_text.strip().splitlines() if x.startswith("error:")]
    assert code == 2 and "syntax error on line 1" in line and ".;" not in line
    assert line.endswith("(--chat-template FILE, or chat_template=PATH in Python)"), line


def test_a_models_own_broken_template_is_said_at_startup_and_named_to_no_client(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    for f in MINI.iterdir():
        shutil.copy(f, folder / f.name)
    config = json.loads((MINI / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": "{% for m in messages %}"}))
    engine = Engine.load(folder)
    lines: list[str] = []

    class Idle:  # the server serve() runs, returning at once: only what serve() says first is read
        api, interrupted, ready = SimpleNamespace(name="m"), False, None

        def run(self, sockets) -> None:
            self.ready()

    monkeypatch.setattr(serve_module, "http_server", lambda app, cfg: Idle())
    serve_module.serve(engine, ServeConfig(port=0), lines.append)
    assert lines[0].startswith(f"warning: {folder / 'tokenizer_config.json'}: chat template has a syntax error")
    assert lines[0].endswith("; until then every chat request gets a 500") and "generate --raw" not in lines[0]
    with running(engine) as (base, _, _):
        status, _, out = _post(
            base, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, "/chat/completions"
        )
    assert status == 500 and out["error"]["message"] == (
        "the server's chat template cannot be used (its error was reported when the server started)"
    )


# ------------------------------------------------------------------------ SIGINT from a script


@needs_stories
def test_sigint_from_a_script_stops_the_server_as_ctrl_c_does(tmp_path):
    """QA51 #6: `tiankong serve ... & kill -INT $!` from a script (SIGINT ignored by the shell's job
    control, so Python installs no handler) ended with exit 0 and no "stopped" line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiankong.tui.cli", "serve", "-m", str(STORIES), "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a script's `&` leaves it
    )
    try:
        said = []
        deadline = time.monotonic() + 60
        while not any(line.startswith("serving ") for line in said):
            assert time.monotonic() < deadline, said
            said.append(proc.stderr.readline())
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and rest.strip().splitlines()[-1] == "stopped (Ctrl+C)", rest


# ------------------------------------------------------------------------ the Python API's advice


@needs_stories
def test_decode_names_its_own_argument_and_the_advice_encodes_plain_text_raw(stories):
    """QA51 #8, #10: decode said "prompts[0]" (it has no prompts argument), and every such error
    advised eng.encode(text), which wraps the text in the chat template."""
    with pytest.raises(InputError, match=r"^decode's ids has token id 1000000000 at index 0, outside"):
        stories.decode([10**9])
    with pytest.raises(InputError) as err:
        list(stories.generate(["Once"], [SamplingParams()]))
    assert "eng.encode(text, raw=True)" in str(err.value) and str(err.value).startswith("prompts[0] is a str")
