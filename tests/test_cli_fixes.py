"""QA pass on the commands that run without a screen (generate, tokenize, info, models, serve): what
they say and write where a user or a script met something confusing. Each test names the finding.

References are independent of the code under test: literal strings a user reads, the tokenizer's
own output for the same text, sockets and HTTP spoken by the test itself, rich's rendering measured
in columns.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import time

import pytest
from helpers import cli
from rich.console import Console
from tiny_models import make_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("cli-fixes-llama"), "llama")  # no chat template


def records(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_line(text: str) -> str:
    return " ".join(text.split())


CHAT = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Once upon a time"}]}
NO_TEMPLATE = (
    "warning: no chat template: generate joins the messages' contents without roles; "
    "give --chat-template FILE, or --raw to join them on purpose"
)


# ---------------------------------------------------------------- generate


def test_messages_to_a_model_without_a_template_are_warned_of_once(monkeypatch, capsys, model_dir, tmp_path):
    """QA 13: `serve` said that a model without a chat template drops the roles; generate did not."""
    src = tmp_path / "chats.jsonl"
    src.write_text(json.dumps(CHAT) + "\n" + json.dumps(CHAT | {"id": "b"}) + "\n")
    args = ["generate", "-m", model_dir, "-i", src, "--max-new-tokens", "2"]
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0 and one_line(err).count(NO_TEMPLATE) == 1, err
    code, _, err = cli(monkeypatch, capsys, *args, "--raw")  # joined on purpose
    assert code == 0 and "no chat template" not in err, err
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-p", "Once", "--max-new-tokens", "2")
    assert code == 0 and "no chat template" not in err, err  # a text prompt loses nothing


def test_a_messages_record_has_no_null_prompt_and_rank_still_reads_it(monkeypatch, capsys, model_dir, tmp_path):
    """QA 16: a "messages" record carried "prompt": null, where the README says prompt (or messages)."""
    from tiankong.tui.queue import answers_queue

    src = tmp_path / "mixed.jsonl"
    src.write_text(json.dumps(CHAT) + "\nA plain prompt\n")
    out = tmp_path / "out.jsonl"
    args = ["generate", "-m", model_dir, "-i", src, "--n", "2", "--max-new-tokens", "2", "-o", out]
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    recs = records(out.read_text())
    assert [("prompt" in r, "messages" in r) for r in recs] == [(False, True)] * 2 + [(True, False)] * 2
    assert recs[0]["messages"] == CHAT["messages"] and recs[2]["prompt"] == "A plain prompt"
    queue = answers_queue(out)  # `tiankong rank` groups them by prompt
    assert [len(item.answers) for item in queue.items] == [2, 2]


def test_help_says_which_lines_are_text(monkeypatch, capsys):
    """QA 17: "every other line is text" read as alternate lines."""
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = cli(monkeypatch, capsys, "generate", "--help")
    said = one_line(out)
    assert code == 0 and "every other line" not in said
    assert 'in a text file or on stdin each line that does not start with "{" is text as it stands' in said


def test_text_answers_of_several_rows_each_say_which_they_are(monkeypatch, capsys, model_dir, tmp_path):
    """QA 22: --format text separated answers by a blank line only, never saying whose they were."""
    args = ["generate", "-m", model_dir, "--raw", "--format", "text", "--max-new-tokens", "3", "--seed", "7"]
    code, out, err = cli(monkeypatch, capsys, *args, "-p", "Once", "-p", "Twice", "--n", "2")
    assert code == 0, err
    heads = [line for line in out.splitlines() if line.startswith("--- ")]
    assert heads == [
        "--- prompt 1, sample 1 of 2, seed 7 ---",
        "--- prompt 1, sample 2 of 2, seed 8 ---",
        "--- prompt 2, sample 1 of 2, seed 7 ---",
        "--- prompt 2, sample 2 of 2, seed 8 ---",
    ]
    src = tmp_path / "ids.jsonl"
    src.write_text('{"id": "fox", "prompt": "A fox"}\n{"prompt": "A hen"}\n')
    code, out, err = cli(monkeypatch, capsys, *args, "-i", src)
    assert code == 0, err
    assert [line for line in out.splitlines() if line.startswith("--- ")] == [
        '--- prompt 1 (id "fox"), seed 7 ---',
        "--- prompt 2, seed 7 ---",
    ]
    code, out, err = cli(monkeypatch, capsys, *args, "-p", "Once")  # one answer: as it was, no header
    assert code == 0 and not out.startswith("--- "), out


def test_a_stop_before_generating_says_nothing_was_written(monkeypatch, capsys, model_dir, tmp_path):
    """QA 19: a Ctrl+C or SIGTERM while torch imports or the model loads ended the run without a word
    (SIGTERM: status 143, stderr empty)."""
    from tiankong.tui import cli_generate

    out = tmp_path / "out.jsonl"

    def stopped(device):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_generate, "_join", stopped)
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-p", "hi", "-o", out)
    assert code == 130 and err.strip() == "interrupted before generating: nothing was written", err
    assert not out.exists()
    # SIGTERM itself, in a process of its own: without a handler it ends the process at once.
    script = (
        "import os, signal, sys, time\n"
        "from tiankong.tui import cli, cli_generate\n"
        "def join(device):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "cli_generate._join = join\n"
        "sys.argv = ['tiankong', 'generate', '-m', sys.argv[1], '-p', 'hi', '-o', sys.argv[2]]\n"
        "cli.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(model_dir), str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 143, (done.returncode, done.stderr)
    assert done.stderr.strip() == "terminated (SIGTERM) before generating: nothing was written", done.stderr
    assert not out.exists()


def test_a_line_on_a_terminal_is_wrapped_between_words_never_in_a_path(monkeypatch):
    """QA 18: the interrupt line was cut by the terminal's edge in the middle of its path."""
    from tiankong.tui import generate_input

    screen = io.StringIO()
    monkeypatch.setattr(generate_input, "err", Console(file=screen, force_terminal=True, width=80, color_system=None))
    line = (
        "interrupted: term.jsonl was not created; the 22 finished records are kept in "
        "term.jsonl.part-*; the same command again generates the rest"
    )
    generate_input.say(line)
    lines = screen.getvalue().splitlines()
    assert len(lines) > 1 and all(len(x) <= 80 for x in lines), lines
    assert any("term.jsonl.part-*;" in x for x in lines) and one_line(" ".join(lines)) == line
    log = io.StringIO()  # not a terminal: one line, for grep
    monkeypatch.setattr(generate_input, "err", Console(file=log, width=80))
    generate_input.say(line)
    assert log.getvalue() == line + "\n"


def test_the_bar_leaves_room_for_the_echo_of_ctrl_c():
    """QA 18: a bar as wide as the terminal, then the terminal's "^C" echo after it, wrapped the line,
    and the bar's last frame was drawn a second time below the first."""
    from tiankong.trainers.progress import progress

    screen = io.StringIO()
    with progress("generating", 60, console=Console(file=screen, force_terminal=True, width=80)) as bar:
        bar.note("2 of the next 2 done, and a note long enough to reach the edge of the terminal")
        bar(steps=2)
    frames = re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()))
    assert max(len(f) for f in frames) <= 78, frames


def test_a_bar_stopped_as_it_starts_draws_no_more(monkeypatch):
    """QA 18: a Ctrl+C while the bar started left its refresh thread drawing below the last line."""
    from rich.progress import Progress

    from tiankong.trainers.progress import progress

    def stopped(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "add_task", stopped)
    screen = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with progress("generating", 3, console=Console(file=screen, force_terminal=True, width=80)):
            pass
    drawn = screen.getvalue()
    time.sleep(0.5)  # rich redraws ten times a second while it runs
    assert screen.getvalue() == drawn


# ---------------------------------------------------------------- tokenize, info, models


def test_json_and_jsonl_mean_the_same_where_one_document_is_printed(monkeypatch, capsys, model_dir):
    """QA 14: tokenize took only jsonl and info only json, each error naming only its own."""
    code, jsonl, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir, "--format", "jsonl", "Once upon")
    assert code == 0, err
    code, js, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir, "--format", "json", "Once upon")
    assert code == 0 and js == jsonl and len(js.splitlines()) == 1, err
    code, js, err = cli(monkeypatch, capsys, "info", "-m", model_dir, "--format", "json")
    assert code == 0, err
    code, jsonl, err = cli(monkeypatch, capsys, "info", "-m", model_dir, "--format", "jsonl")
    assert code == 0 and json.loads(jsonl) == json.loads(js) and len(jsonl.splitlines()) == 1, err
    code, _, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir, "--format", "xml", "x")
    assert code == 2 and "use table or jsonl" in err and "json and jsonl are the same" in one_line(err)
    code, _, err = cli(monkeypatch, capsys, "models", "--format", "jsonl")  # a list, not a model a line
    assert code == 2 and "use table or json (one JSON list of the models" in one_line(err), err


def test_tokenize_reads_standard_input_and_says_how_to_give_text_starting_with_a_dash(monkeypatch, capsys, model_dir):
    """QA 15: `echo hi | tiankong tokenize` was "Missing argument"; `tokenize -x` did not say `-- -x`."""
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(model_dir)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Once upon\n")))  # echo's newline
    code, out, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir, "--format", "jsonl")
    assert code == 0 and json.loads(out)["ids"] == ref.encode("Once upon"), err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\n")))
    code, _, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir)
    assert code == 2 and "standard input is not valid text at character 1" in err, err

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    code, _, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir)
    assert code == 2 and "pipe it in: echo" in err and "tiankong tokenize -- -1" in err, err
    code, _, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir, "-x")
    assert code == 2 and "No such option: -x" in err and "`tiankong tokenize -- -x`" in err, err
    code, _, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir, "--fromat", "json", "x")  # a typo
    assert code == 2 and "--format" in err and " -- " not in err, err
    code, out, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir, "--format", "jsonl", "--", "-x")
    assert code == 0 and json.loads(out)["ids"] == ref.encode("-x"), err


def test_models_and_info_write_a_parameter_count_alike():
    """QA 22: `models` said "3.1 M params" where `info` said "3.15M"."""
    from types import SimpleNamespace

    from tiankong.engine.model_list import human_params
    from tiankong.tui.cli_inspect import _cells
    from tiankong.tui.screens.tokens import fact_text

    got = [human_params(n) for n in (260_032, 3_145_728, 134_515_008, 1_235_814_400, 7_241_732_096)]
    assert got == ["0.26M", "3.15M", "135M", "1.24B", "7.24B"]
    m = SimpleNamespace(parameters=3_145_728, bytes=571_200, name="x", architecture="A", format="hf", dtype="float32")
    # `models` gives every model's size in bytes (QA56-14: a .bin-only repo's bytes beside others' params)
    assert _cells(m)[2] == "571.2 KB" and fact_text("parameters", 3_145_728) == "3,145,728 (3.15M)"


# ---------------------------------------------------------------- serve


def http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_serve_answers_503_while_the_model_loads(monkeypatch, capsys):
    """QA 20: the port was bound before the model loaded, but a connection meanwhile was refused."""
    pytest.importorskip("uvicorn")
    import tiankong.tui.cli as cli_module
    from tiankong.tui import serve as serve_module

    bound, answers = [], []
    real_listen = serve_module.listen
    monkeypatch.setattr(serve_module, "listen", lambda cfg: bound.extend(real_listen(cfg)) or bound)

    def loading(*args, **kwargs):  # the model loading: requests come meanwhile
        port = bound[0].getsockname()[1]
        body = b'{"messages": [{"role": "user", "content": "hi"}]}'
        answers.append(http(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
        answers.append(
            http(
                port,
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body,
            )
        )
        raise cli_module.InputError("no model here")  # the command ends before serving

    monkeypatch.setattr(cli_module, "_load", loading)
    code, _, err = cli(monkeypatch, capsys, "serve", "--port", 0)
    assert code == 2 and "no model here" in err, err
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "HTTP/1.1 503 Service Unavailable", answer
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        assert headers["retry-after"].isdigit() and headers["content-type"] == "application/json"
        error = json.loads(body)["error"]  # OpenAI's shape
        assert set(error) == {"message", "type", "param", "code"} and "model is loading" in error["message"]
        assert int(headers["content-length"]) == len(body)


def test_connections_made_as_loading_ends_wait_for_the_server():
    """The sockets stay listening when loading ends: a client that connects between the loading
    answers and uvicorn's start is queued for uvicorn, not refused."""
    from tiankong.tui.serve import ServeConfig, listen
    from tiankong.tui.serve_run import LoadingAnswers

    socks = listen(ServeConfig(port=0))
    try:
        with LoadingAnswers(socks):
            pass
        conn = socket.create_connection(("127.0.0.1", socks[0].getsockname()[1]), timeout=5)  # not refused
        accepted, _ = socks[0].accept()
        accepted.close()
        conn.close()
    finally:
        for s in socks:
            s.close()
