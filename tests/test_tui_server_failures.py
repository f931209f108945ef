"""The playground when a server (or an engine) fails part-way: a server killed, cancelling, or gone
silent mid-answer, in the chat and in compare; ctrl+t's count on a server; leaderboard names.

The servers are small in-process fakes on a socket that speak what `tiankong serve` streams (as
QA's fixtures did: /tmp/qa13/fx/trickle.py, hang.py): /models with a 512-token context, no
/tokenize (so prompts are estimated from characters), and a streamed answer that, by `mode`,
ends ("ok"), breaks off with the socket closed and no finish_reason ("die", as kill -9 of the
server), ends with finish_reason "cancelled" (the server's shutdown or --timeout), or stalls after
its first words until the test lets it go ("stall").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading

import pytest
from rich.console import Console
from test_tui_chat import answered, chat_app, run, send, wait_for
from tiny_models import make_model

from tiankong.engine.context import drop_turns
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.remote import RemoteEngine, RemoteModel
from tiankong.presets import get_preset
from tiankong.tui.leaderboard import Standing, short_names, standings_table
from tiankong.tui.screens.compare import CompareScreen

WORDS = ["One", " two", " three", " four", " five"]


class FakeServer:
    """An OpenAI-style server on a socket, answering every chat request in the way `mode` says."""

    def __init__(self, mode: str, model: str = "fake") -> None:
        self.mode, self.model = mode, model
        self.release = threading.Event()  # lets a stalled answer go (closed)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, c: socket.socket) -> None:
        with c, contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                if not (got := c.recv(65536)):
                    return
                data += got
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
            )
            while len(body) < length:  # read it all: a socket closed with unread bytes is reset, data lost
                if not (got := c.recv(65536)):
                    return
                body += got
            line = head.split(b"\r\n")[0].decode()
            if "/models" in line:
                card = {"id": self.model, "object": "model", "context_length": 512}
                body = json.dumps({"object": "list", "data": [card]}).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                c.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
            elif "/tokenize" in line:
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                self._answer(c)

    def _answer(self, c: socket.socket) -> None:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        words = WORDS[:1] if self.mode == "stall" else WORDS[:3] if self.mode == "die" else WORDS
        for w in words:
            entry = {"token": w, "logprob": -0.5, "top_logprobs": [{"token": w, "logprob": -0.5}]}
            chunk = {"choices": [{"index": 0, "delta": {"content": w}, "logprobs": {"content": [entry]}}]}
            c.sendall(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if self.mode == "stall":
            self.release.wait()
            return
        if self.mode == "die":  # killed: the connection goes, reset, with no finish_reason sent
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return
        reason = "cancelled" if self.mode == "cancelled" else "stop"
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}
        c.sendall(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")

    def close(self) -> None:
        self.release.set()
        self.sock.close()


@pytest.fixture
def servers():
    made: list[FakeServer] = []

    def make(mode: str, model: str = "fake") -> FakeServer:
        made.append(FakeServer(mode, model))
        return made[-1]

    yield make
    for s in made:
        s.close()


async def notes_of(chat) -> list[str]:
    notes: list[str] = []
    chat.notify = lambda message, **kw: notes.append(str(message))
    return notes


# ---------------------------------------------------------------- the chat


def test_a_server_killed_mid_answer_keeps_and_stores_the_answer_so_far_and_ctrl_r_works(servers, store, tmp_path):
    server = servers("die")

    async def go():
        async with chat_app(RemoteModel(server.url), store, tmp_path, max_new_tokens=20) as (app, pilot, chat):
            notes = await notes_of(chat)
            await send(pilot, "tell me more")
            cut = await answered(pilot, chat)
            status = str(chat.query_one("#status").render())
            info = cut._info  # the answer's info line: how it ended
            kept = store.get_message(cut.message_id)
            server.mode = "ok"  # the server is back
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: chat.messages[-1] is not cut and chat.messages[-1].message_id is not None)
            return kept, notes, status, info, store.get_chat(chat.chat_id).messages

    kept, notes, status, info, stored = run(go())
    assert info.startswith("cut short by an error · 3 tokens"), info
    assert kept.content == "One two three" and kept.finish_reason == "error"
    assert [t["text"] for t in kept.tokens] == WORDS[:3]
    assert [m.role for m in stored] == ["user", "assistant"]  # the regenerated answer, shown; the cut one a branch
    assert stored[1].content == "".join(WORDS) and stored[1].finish_reason == "eos"
    assert stored[1].siblings == [kept.id, stored[1].id]
    assert "the stream from" in notes[0] and "server still running" in notes[0]
    assert "kept the partial answer" in status


def test_a_local_engine_that_raises_mid_answer_keeps_the_answer_so_far(store, tmp_path):
    model = make_model(tmp_path / "tiny-llama", "llama")

    async def go():
        async with chat_app(model, store, tmp_path, max_new_tokens=12, seed=3) as (app, pilot, chat):
            generate = app.engine.generate

            def breaks(*args, **kwargs):
                for n, ev in enumerate(generate(*args, **kwargs)):
                    if n == 4:
                        raise ModelLoadError("the model's file went away")
                    yield ev

            app.engine.generate = breaks
            notes = await notes_of(chat)
            await send(pilot, "hello")
            answer = await answered(pilot, chat)
            return answer.content, answer.tokens, notes, store.get_chat(chat.chat_id).messages

    content, tokens, notes, stored = run(go())
    assert len(tokens) == 4 and content == "".join(t["text"] for t in tokens) and content
    assert stored[-1].role == "assistant" and stored[-1].finish_reason == "error"
    assert stored[-1].content == content and stored[-1].tokens == tokens
    assert "went away" in notes[0] and "ctrl+r answers again" in notes[0]


def test_a_server_cancelling_the_answer_is_told_apart_from_esc(servers, store, tmp_path):
    server = servers("cancelled")

    async def go():
        async with chat_app(RemoteModel(server.url), store, tmp_path, max_new_tokens=20) as (app, pilot, chat):
            notes = await notes_of(chat)
            await send(pilot, "hi")
            answer = await answered(pilot, chat)
            return answer.content, notes, str(chat.query_one("#status").render())

    content, notes, status = run(go())
    assert content == "".join(WORDS)
    assert "cancelled by the server" in status and "stopped" not in status
    assert "server cancelled the answer" in notes[0]


def test_ctrl_t_on_a_server_counts_the_prompt_the_chat_sends_without_the_dropped_turns(servers, store, tmp_path):
    server = servers("ok")
    long = "word " * 150  # ~190 estimated tokens a message: a 512-token context holds two

    async def go():
        async with chat_app(RemoteModel(server.url), store, tmp_path, max_new_tokens=20) as (app, pilot, chat):
            for _ in range(3):
                chat.query_one("#prompt").text = long
                await pilot.press("enter")
                await answered(pilot, chat)
            notes = await notes_of(chat)
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: notes)
            msgs = [*chat.conversation(), {"role": "user", "content": ""}]  # the next message's (the box empty)
            want = len(app.engine.encode(messages=drop_turns(msgs, chat._fit(msgs)[1])))
            return notes[0], chat.dropped_turns, want

    note, dropped, want = run(go())
    assert dropped >= 1
    assert f"the prompt is {want} tokens of a 512-token context" in note and want < 512
    assert "left out" in note


# ---------------------------------------------------------------- compare


def compare_screen(servers_, store):
    engines = [RemoteEngine.connect(s.url) for s in servers_]
    p = get_preset("deterministic")
    short = dataclasses.replace(p, params=p.params.replace(max_new_tokens=20))
    return CompareScreen(engines, [short], store, rater="qa", blind=False, prompt="hi")


async def compare_run(screen, until):
    from tui_host import Host

    app = Host(screen)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: until(screen))
        state = (screen.state, list(screen.round.texts), list(screen.round.finish), screen.round.error)
        screen.round.cancel.set()
        return state


def test_compare_a_stalled_server_holds_no_other_column_back(servers, store):
    ok, stalled = servers("ok", "a"), servers("stall", "b")
    screen = compare_screen([ok, stalled], store)
    state, texts, finish, _ = run(compare_run(screen, lambda s: s.round and s.round.finish[0] is not None))
    assert state == "generating"
    assert texts == ["".join(WORDS), "One"] and finish == ["eos", None]


def test_compare_a_server_that_breaks_fails_its_column_alone_and_keeps_what_each_wrote(servers, store):
    ok, dies = servers("ok", "a"), servers("die", "b")
    screen = compare_screen([ok, dies], store)
    state, texts, finish, error = run(compare_run(screen, lambda s: s.round and s.round.done))
    assert texts == ["".join(WORDS), "One two three"]
    assert finish == ["eos", "failed"]
    assert state == "failed" and error.startswith("B failed part-way") and "no vote" in error


def test_compare_of_three_where_a_server_breaks_votes_on_the_two_answers_that_came(servers, store):
    # QA: one column failing left the round with no vote at all; the failed one must never be stored.
    screen = compare_screen([servers("ok", "a"), servers("die", "b"), servers("ok", "c")], store)

    async def go():
        from tui_host import Host

        async with Host(screen).run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, lambda: screen.round and screen.round.done)
            await pilot.pause()
            bar = str(screen.query_one("#vote-bar").render())
            shown = screen.state, list(screen.round.finish), dict(screen.round.failed), bar
            await pilot.press("t")
            await pilot.pause()
            return shown, screen.round.verdict

    (state, finish, failed, bar), verdict = run(go())
    assert state == "voting" and finish == ["eos", "failed", "eos"] and list(failed) == [1]
    assert bar.startswith("Vote: every answer is the same text (B failed: not in the vote) · t tie · 0 both bad")
    [vote] = store.list_votes()
    assert vote.outcome == "tie" and verdict == "tie"
    assert [(r.label, r.text, r.finish_reason) for r in vote.responses] == [
        ("A", "".join(WORDS), "eos"),
        ("C", "".join(WORDS), "eos"),
    ]


# ---------------------------------------------------------------- leaderboard


def test_leaderboard_names_tell_two_models_on_one_long_host_apart():
    host = "http://gpu-box-17.lab.example.internal:8716/v1/models/"
    names = [host + "Qwen2.5-0.5B-Instruct", host + "Qwen2.5-1.5B-Instruct", "/work/shared/models/stories15M"]
    shown = short_names(names)
    assert len(set(shown.values())) == 3 and all(len(v) <= 32 for v in shown.values())
    assert shown[names[0]].startswith("Qwen2.5-0.5B-Instruct@") and shown[names[0]].endswith(":8716")
    assert shown[names[2]] == "stories15M"
    board = [
        Standing(name=n, strength=1000.0, lo=900.0, hi=1100.0, wins=6, losses=6, ties=0, n=12, votes=12) for n in names
    ]
    console = Console(width=80, record=True)
    console.print(standings_table(board, "models", paths=True))
    text = console.export_text()
    assert all(v in text for v in shown.values())
