"""The chat playground, driven headless with Textual's Pilot on real (tiny) models.

Pilot tests use a tiny random Llama written by transformers (fast, always available); the SVG
snapshots use the real stories260K checkpoint with the deterministic preset, so they show real
text, and skip only when ../shared is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from pathlib import Path

import pytest
from textual import events
from textual.widgets import Input
from tiny_models import STORIES, make_model

from tiankong.tui.app import TiankongApp, run_app
from tiankong.tui.screens.chat import ChatScreen
from tiankong.tui.screens.preset_editor import PresetEditor
from tiankong.tui.screens.tokens import TokensScreen
from tiankong.tui.store import DB_NAME, Store, StoreError
from tiankong.tui.widgets.answer_tokens import cursor_line
from tiankong.tui.widgets.candidates import bar, candidate_rows, pct, show_token
from tiankong.tui.widgets.message import AssistantMessage
from tiankong.tui.widgets.prompt import NEWLINE, PromptInput

SIZE = (100, 32)
needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason="../shared/models/stories260K is absent")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


def make_app(model, store, tmp_path, **kw) -> TiankongApp:
    return TiankongApp(model, store=store, export_dir=tmp_path, show_timing=False, **kw)


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


async def loaded(pilot) -> ChatScreen:
    app = pilot.app
    await wait_for(pilot, lambda: app.engine is not None or app.engine_error is not None)
    assert app.engine_error is None, app.engine_error
    return app.chat


async def send(pilot, text: str) -> None:
    await pilot.press(*text)
    await pilot.press("enter")


async def answered(pilot, chat: ChatScreen) -> AssistantMessage:
    await wait_for(
        pilot,
        lambda: (
            not chat.generating
            and isinstance(chat.messages[-1], AssistantMessage)
            and chat.messages[-1].message_id is not None
        ),
    )
    return chat.messages[-1]


async def open_newest_chat(pilot, chat: ChatScreen, n_messages: int) -> None:
    """ctrl+o, enter: open the newest stored chat, and wait until its messages are shown."""
    await pilot.press("ctrl+o")
    await pilot.pause()
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(chat.messages) == n_messages)


@contextlib.asynccontextmanager
async def chat_app(model, store, tmp_path, **params):
    """The app on `model`, run headless and loaded -> (app, pilot, chat), the chat's sampling
    params with `params` replaced."""
    app = make_app(model, store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        chat = await loaded(pilot)
        if params:
            chat.params = chat.params.replace(**params)
        yield app, pilot, chat


def slow_down(engine, delay: float) -> None:
    """Make the engine yield more slowly, so a test can act while an answer streams."""
    generate = engine.generate

    def slow(*args, **kwargs):
        for ev in generate(*args, **kwargs):
            time.sleep(delay)
            yield ev

    engine.generate = slow


def run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------- sending, streaming, storing


def test_send_streams_the_answer_and_stores_both_messages(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, seed=7, max_new_tokens=40) as (app, pilot, chat):
            slow_down(app.engine, 0.01)
            seen = []  # (label, tokens shown so far) at every candidates-panel update
            show = chat.candidates.show
            chat.candidates.show = lambda tok, label="": (
                seen.append((label, len(chat.messages[-1].tokens))),
                show(tok, label),
            )
            await send(pilot, "hello there")
            answer = await answered(pilot, chat)
            stored = store.get_chat(chat.chat_id)
            return answer.content, answer.tokens, stored, chat.model_id, seen

    content, tokens, stored, model_id, seen = run(go())
    # It streamed: the panel followed the answer in several batches, each a part of it.
    streamed = [n for label, n in seen if label.startswith("streaming")]
    assert len(streamed) >= 2 and streamed == sorted(streamed) and streamed[0] < len(tokens)
    assert seen[-1][0].startswith("last of")
    assert stored.model == str(Path(tiny).resolve()) == model_id
    assert stored.title == "hello there"
    user, assistant = stored.messages
    assert (user.role, user.content) == ("user", "hello there")
    assert assistant.role == "assistant" and assistant.content == content
    assert assistant.preset == "balanced (edited)" and assistant.seed == 7 == assistant.params["seed"]
    assert assistant.params["max_new_tokens"] == 40 and assistant.finish_reason in ("eos", "length")
    assert assistant.tokens == tokens and 0 < len(tokens) <= 40
    first = tokens[0]
    assert set(first) == {"id", "text", "logprob", "p_sample", "entropy", "top"}
    assert len(first["top"]) == 10 and set(first["top"][0]) == {"id", "text", "logprob", "p_sample"}
    # The balanced preset keeps at most top-k 40: never more than 40 candidates with p_sample > 0.
    assert all(sum(c["p_sample"] > 0 for c in t["top"]) <= 40 for t in tokens)


def test_an_answer_streams_an_untagged_code_fence_as_plain_text_without_guessing(monkeypatch):
    # Textual guesses an untagged fence's language by running every Pygments lexer over it (on every
    # frame, while answers streamed through its Markdown stream); CodeFence draws it as plain text.
    # A tagged fence is still highlighted.
    import textual.highlight
    from textual.app import App

    from tiankong.tui.widgets.message import CodeFence

    guessed = []
    monkeypatch.setattr(textual.highlight, "guess_language", lambda code, path: guessed.append(code) or "text")

    class One(App[None]):
        def compose(self):
            yield AssistantMessage()

    async def go():
        async with One().run_test(size=SIZE) as pilot:
            answer = pilot.app.query_one(AssistantMessage)
            answer.start_stream()
            for part in ("Here:\n\n```\nx = 1\n", "y = 2\n```\n\n```python\n", "def f():\n    return 1\n```\n"):
                await answer.append(part, [])
                await pilot.pause(0.05)
            await answer.finish(answer.content, "")
            await pilot.pause()
            return [(type(f), f.lexer, f.code, f._highlighted_code) for f in answer.query(CodeFence)]

    fences = run(go())
    assert guessed == []
    assert [(kind, lexer, code) for kind, lexer, code, _ in fences] == [
        (CodeFence, "", "x = 1\ny = 2"),
        (CodeFence, "python", "def f():\n    return 1"),
    ]
    plain, python = fences[0][3], fences[1][3]
    styles = {str(s.style) for s in plain.spans}, {str(s.style) for s in python.spans}
    assert plain.plain.rstrip() == "x = 1\ny = 2" and styles[0] <= {"$text"}
    assert len(styles[1] - {"$text"}) >= 2  # the keyword and the function's name are coloured


def test_a_streaming_answer_is_one_preview_widget_and_keeps_its_height_when_finished():
    # While it streams an answer draws a MarkdownPreview (no block widgets mounted per frame); at
    # the end the Markdown widget takes over at the same height, so nothing below it jumps.
    from textual.app import App
    from textual.widgets import Markdown

    text = (
        "A first paragraph that is long enough to wrap at this width, with *emphasis* and `code`.\n\n"
        "- one item\n- another item that also wraps because it goes on and on for a while\n\n"
        "```python\ndef f(x):\n    return x + 1\n```\n\n1. first\n2. second\n\n> a quote\n\nThe end."
    )

    class One(App[None]):
        CSS_PATH = Path(__file__).parents[1] / "tui" / "screens" / "chat.tcss"

        def compose(self):
            yield AssistantMessage()

    async def go():
        async with One().run_test(size=(60, 60)) as pilot:
            answer = pilot.app.query_one(AssistantMessage)
            answer.start_stream()
            for i in range(0, len(text), 40):
                await answer.append(text[i : i + 40], [])
                await pilot.pause()
            md = answer.query_one(Markdown)
            during = (answer.streaming, md.display, len(answer.query("MarkdownBlock")), answer.outer_size.height)
            await answer.finish(text, "")
            await pilot.pause()
            await pilot.pause(0.1)
            after = (answer.streaming, md.display, len(answer.query("MarkdownBlock")), answer.outer_size.height)
            return during, after, md.source

    (streaming, md_shown, blocks, height), (streaming_after, md_after, blocks_after, height_after), source = run(go())
    assert streaming and not md_shown and blocks == 0  # one preview, no block widgets while streaming
    assert not streaming_after and md_after and blocks_after > 5 and source == text
    assert height == height_after > 15


def test_the_app_hands_the_gil_over_quickly_while_it_runs(tiny, store, tmp_path):
    # The generation worker gives the GIL back at every torch op; with Python's 5 ms switch interval
    # each of those waited out a UI frame (a 135M model at a third of its speed in the chat).
    import sys

    from tiankong.tui.app import GIL_SWITCH_S

    before = sys.getswitchinterval()

    async def go():
        async with make_app(tiny, store, tmp_path).run_test(size=SIZE) as pilot:
            await loaded(pilot)
            return sys.getswitchinterval()

    assert run(go()) == pytest.approx(GIL_SWITCH_S) and GIL_SWITCH_S < before
    assert sys.getswitchinterval() == before


def test_the_model_loads_and_answers_on_one_thread(tiny, store, tmp_path, monkeypatch):
    # OpenMP keeps a worker pool per thread that starts parallel work; with a pool for the loading
    # thread and another for the answering one, its workers sleep at every barrier and a 135M step
    # took twice as long. The app runs both on one model thread.
    import threading

    from tiankong.engine.engine import Engine

    threads = []
    load = Engine.load.__func__

    def recording_load(cls, *args, **kwargs):
        threads.append(("load", threading.current_thread().name))
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(Engine, "load", classmethod(recording_load))

    async def go():
        async with chat_app(tiny, store, tmp_path, seed=3, max_new_tokens=8) as (app, pilot, chat):
            generate = app.engine.generate

            def recording_generate(*args, **kwargs):
                for ev in generate(*args, **kwargs):
                    threads.append(("step", threading.current_thread().name))
                    yield ev

            app.engine.generate = recording_generate
            for text in ("one", "two"):
                await send(pilot, text)
                await answered(pilot, chat)

    run(go())
    assert threads[0][0] == "load" and len(threads) > 2
    # One thread, the model's own: Textual's thread workers come from a pool whose threads can differ
    # from one worker to the next (loading ran on asyncio_0 and answering on asyncio_1 in a profile).
    names = {name for _, name in threads}
    assert len(names) == 1 and names.pop().startswith("tiankong-model"), set(threads)


def test_a_message_typed_ahead_is_sent_by_its_newline(tiny, store, tmp_path):
    # Typed before the app took the terminal, a line's Enter arrives as a newline: ctrl+j.
    async def go():
        async with chat_app(tiny, store, tmp_path, seed=5, max_new_tokens=6) as (app, pilot, chat):
            await pilot.press(*"typed ahead", "ctrl+j")
            answer = await answered(pilot, chat)
            return [m.content for m in chat.messages[:-1]], answer.content

    sent, answer = run(go())
    assert sent == ["typed ahead"] and answer


def test_a_pasted_text_is_sent_whole_with_its_line_breaks(tiny, store, tmp_path):
    # Input keeps only a paste's first line: the rest of a pasted paragraph was lost without a word.
    async def go():
        async with chat_app(tiny, store, tmp_path, seed=5, max_new_tokens=4) as (app, pilot, chat):
            prompt = app.screen.query_one("#prompt", PromptInput)
            await pilot.press(*"see: ")
            prompt.post_message(events.Paste("line one\nline two\r\n\nline three"))
            await pilot.pause()
            shown = prompt.value
            await pilot.press("enter")
            await answered(pilot, chat)
            await pilot.press("ctrl+l")  # editing it brings the line breaks back into the prompt
            return shown, prompt.text, store.get_chat(chat.chat_id).messages[0].content

    shown, edited, stored = run(go())
    text = "see: line one\nline two\n\nline three"
    assert stored == text and edited == text
    assert shown == text.replace("\n", NEWLINE)  # one cell a break, on the one line


def test_a_message_longer_than_the_context_is_marked_not_answered(tiny, store, tmp_path):
    # Said only in a toast before, which went away: the message then stood in the chat unanswered.
    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=4) as (app, pilot, chat):
            chat.query_one("#prompt", Input).value = "word " * 400  # the tiny model's context is 256
            await pilot.press("enter")
            await pilot.pause()
            return [str(w.render()) for w in chat.transcript.query(".context-notice")], chat.messages

    notes, shown = run(go())
    assert len(notes) == 1 and notes[0].startswith("⚠ not answered: ") and "shorten the last message" in notes[0]
    assert [type(w).__name__ for w in shown] == ["UserMessage"]


def test_escape_stops_and_keeps_the_partial_answer(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, seed=1, max_new_tokens=1_000_000) as (app, pilot, chat):
            slow_down(app.engine, 0.02)
            await send(pilot, "tell me a long story")
            await wait_for(pilot, lambda: chat.generating and len(chat.messages[-1].tokens) >= 3)
            await pilot.press("escape")
            answer = await answered(pilot, chat)
            return answer, store.get_chat(chat.chat_id).messages[-1], chat.query_one("#status").render()

    answer, stored, status = run(go())
    assert stored.finish_reason == "cancelled"
    assert stored.content == answer.content and stored.tokens == answer.tokens
    assert 3 <= len(stored.tokens) < 200
    assert "stopped" in str(status)


def test_regenerate_replaces_the_last_answer(tiny, store, tmp_path):
    async def go():
        # seed unset: a fresh one each time
        async with chat_app(tiny, store, tmp_path, max_new_tokens=12) as (app, pilot, chat):
            await send(pilot, "hi")
            first = await answered(pilot, chat)
            first_seed = store.get_chat(chat.chat_id).messages[-1].seed
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: chat.messages[-1] is not first)
            second = await answered(pilot, chat)
            return first, first_seed, second, store.get_chat(chat.chat_id), len(chat.messages)

    first, first_seed, second, stored, shown = run(go())
    assert not first.is_attached  # the old answer left the transcript
    assert shown == 2 and [m.role for m in stored.messages] == ["user", "assistant"]
    assert stored.messages[-1].id == second.message_id and stored.messages[-1].content == second.content
    assert stored.messages[-1].seed != first_seed  # a new draw, recorded


def test_edit_last_message_and_resend(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=8) as (app, pilot, chat):
            await send(pilot, "first try")
            await answered(pilot, chat)
            await pilot.press("ctrl+l")
            prompt = app.screen.query_one("#prompt", Input)
            assert prompt.value == "first try"
            prompt.value = "second try"
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.generating or len(chat.messages) == 2)
            await answered(pilot, chat)
            return store.get_chat(chat.chat_id)

    stored = run(go())
    assert [(m.role, m.content) for m in stored.messages][0] == ("user", "second try")
    assert len(stored.messages) == 2 and stored.title == "second try"


# ---------------------------------------------------------------- presets


def test_preset_editor_refuses_bad_values_and_the_next_answer_uses_good_ones(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            await pilot.press("f3")
            editor = app.screen
            assert isinstance(editor, PresetEditor)
            editor.query_one("#field-temperature", Input).value = "5"
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen is editor  # refused: still open, with the engine's message
            error = str(editor.query_one("#editor-error").render())
            assert "temperature must be in [0, 2], got 5.0" in error
            editor.query_one("#field-top_k", Input).value = "many"
            await pilot.press("enter")
            await pilot.pause()
            both = str(editor.query_one("#editor-error").render()).splitlines()
            assert both[0].startswith("temperature must be") and "top_k must be an integer in [0, 1000000]" in both[1]
            assert editor.query_one("#field-top_k", Input).has_class(
                "-invalid"
            )  # every bad field marked, the first focused
            assert editor.focused is editor.query_one("#field-temperature", Input)
            for name, value in (("temperature", "0.3"), ("top_k", "5"), ("seed", "123"), ("max_new_tokens", "7")):
                editor.query_one(f"#field-{name}", Input).value = value
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
            assert "(edited)" in str(chat.query_one("#status").render())
            await send(pilot, "go")
            await answered(pilot, chat)
            return store.get_chat(chat.chat_id).messages[-1]

    msg = run(go())
    assert msg.preset == "balanced (edited)"  # stored as the answer was titled, live and reopened
    assert (msg.params["temperature"], msg.params["top_k"], msg.params["max_new_tokens"]) == (0.3, 5, 7)
    assert msg.seed == 123 and len(msg.tokens) <= 7
    # top-k 5: at most 5 candidates survive the sampler chain at every step.
    assert all(sum(c["p_sample"] > 0 for c in t["top"]) <= 5 for t in msg.tokens)


def test_f2_cycles_presets(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            seen = [chat.preset.name]
            for _ in range(len(app.presets)):
                await pilot.press("f2")
                seen.append(chat.preset.name)
            await pilot.press("shift+f2")
            return seen, chat.preset.name, list(app.presets)

    seen, after_back, names = run(go())
    assert seen[0] == "balanced" and seen[-1] == "balanced" and sorted(seen[:-1]) == sorted(names)
    assert after_back == names[-1]


# ---------------------------------------------------------------- persistence and export


def test_chats_persist_across_restarts_and_reopen_with_their_tokens(tiny, tmp_path):
    db = tmp_path / "data" / DB_NAME

    async def first():
        with Store(db) as store:
            async with chat_app(tiny, store, tmp_path, max_new_tokens=10) as (app, pilot, chat):
                app.screen.query_one("#system", Input).value = "be brief"
                await send(pilot, "remember me")
                answer = await answered(pilot, chat)
                return answer.content, answer.tokens

    async def second():
        with Store(db) as store:
            async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
                await open_newest_chat(pilot, chat, 2)
                await pilot.press("f5")
                await pilot.pause()
                shown = [(type(w).__name__, w.content) for w in chat.messages]
                return shown, chat.query_one("#system", Input).value, chat.candidates.token

    content, tokens = run(first())
    shown, system, inspected = run(second())
    assert shown == [("UserMessage", "remember me"), ("AssistantMessage", content)]
    assert system == "be brief"
    assert inspected == tokens[0]  # inspect mode starts at the first stored token


def test_export_writes_markdown_and_jsonl_matching_the_store(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=6) as (app, pilot, chat):
            await send(pilot, "export me")
            await answered(pilot, chat)
            await pilot.press("ctrl+s")
            await pilot.pause()
            return chat.chat_id

    chat_id = run(go())
    md = tmp_path / f"tiankong-chat-{chat_id}.md"
    jsonl = tmp_path / f"tiankong-chat-{chat_id}.jsonl"
    assert md.read_text(encoding="utf-8") == store.export_chat_markdown(chat_id)
    assert jsonl.read_text(encoding="utf-8") == store.export_chat_jsonl(chat_id)
    lines = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [(r["role"], r["content"]) for r in lines] == [(m.role, m.content) for m in store.get_chat(chat_id).messages]


def _stored_long_chat(store, model: Path, n: int = 200) -> tuple[int, list[str], list[list[dict]]]:
    """A chat of n messages (user, assistant, ...): Markdown answers (paragraphs, a list, a code
    block) with per-token candidates, stored as the app stores them."""
    chat_id = store.create_chat(str(Path(model).resolve()), "balanced", "", "a long chat")
    contents, tokens = [], []
    for i in range(n):
        if i % 2 == 0:
            text, toks = f"question {i // 2}: what happens next in story {i}?", None
            store.add_message(chat_id, "user", text)
        else:
            text = (
                f"Answer **{i}**, first paragraph with `code` and a few more words to wrap around.\n\n"
                f"Second paragraph of answer {i}.\n\n- one point\n- another point\n\n"
                + ("```python\nprint('hello')\n```\n\nAfter the code." if i % 3 == 0 else "The end.")
            )
            pieces = [text[j : j + 5] for j in range(0, len(text), 5)]
            toks = [
                {
                    "id": k,
                    "text": piece,
                    "logprob": math.log(0.5),
                    "p_sample": 0.6,
                    "entropy": 1.0,
                    "top": [
                        {"id": k, "text": piece, "logprob": math.log(0.5), "p_sample": 0.6},
                        {"id": k + 1, "text": " x", "logprob": math.log(0.2), "p_sample": 0.0},
                    ],
                }
                for k, piece in enumerate(pieces)
            ]
            store.add_message(
                chat_id,
                "assistant",
                text,
                preset="balanced",
                params={"seed": i},
                seed=i,
                finish_reason="eos",
                tokens=toks,
            )
        contents.append(text)
        tokens.append(toks)
    return chat_id, contents, tokens


def test_a_200_message_chat_opens_at_its_end_scrolls_home_and_old_answers_still_work(tiny, store, tmp_path):
    from textual.widgets import Markdown

    chat_id, contents, tokens = _stored_long_chat(store, tiny)

    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            await open_newest_chat(pilot, chat, 200)
            await pilot.pause()
            transcript, msgs = chat.transcript, chat.messages
            out = {"shown": [w.content for w in msgs]}
            # Opened at the end: the last answer is on screen, at the bottom.
            out["at_end"] = transcript.max_scroll_y > 0 and transcript.scroll_y == transcript.max_scroll_y
            last, view = msgs[-1].region, transcript.region
            out["last_visible"] = last.height > 0 and view.y <= last.y and last.bottom <= view.bottom
            # Old answers wait as lightweight placeholders: far fewer Markdown widgets than answers.
            out["markdowns"] = len(chat.query(Markdown))
            # pageup scrolls the transcript while the prompt keeps the focus.
            assert chat.focused is chat.query_one("#prompt")
            await pilot.press("pageup")
            await pilot.pause()
            out["paged_up"] = transcript.scroll_y < transcript.max_scroll_y
            # home (in the transcript) reaches the first message (its scroll may take some frames).
            transcript.focus()
            await pilot.press("home")

            def at_home() -> bool:
                first = msgs[0].region
                return transcript.scroll_y == 0 and first.height > 0 and first.y >= view.y

            await wait_for(pilot, at_home, timeout=10)
            out["at_home"] = at_home()
            # The 4th message (an old answer) is the real Markdown now it is on screen, and still
            # copies, inspects (its stored tokens, in order) and shows its heatmap.
            old = msgs[3]
            await wait_for(pilot, lambda: bool(old.query(Markdown)) and old.query_one(Markdown).display)
            out["old_markdown"] = old.query_one(Markdown).source
            old.focus()
            await pilot.press("c")
            out["copied"] = app.clipboard
            await pilot.press("f5")
            await pilot.pause()
            out["inspected"] = [chat.candidates.token]
            await pilot.press("right", "right")
            await pilot.pause()
            out["inspected"].append(chat.candidates.token)
            out["tokens_view"] = str(old.query_one(".answer-tokens").render())
            await pilot.press("escape", "f6")
            await pilot.pause()
            out["heat"] = old.query_one(".answer-tokens").display and not old.query_one(Markdown).display
            far = msgs[151]  # an answer nobody scrolled to: the heatmap switches it all the same
            out["far_heat"] = far.heatmap and far.content == contents[151]
            await pilot.press("f6")
            await pilot.press("ctrl+s")
            await pilot.pause()
            out["roles"] = [type(w).__name__ for w in chat.messages]
            return out

    out = run(go())
    assert out["shown"] == contents
    assert out["at_end"] and out["last_visible"]
    assert out["markdowns"] < 20
    assert out["paged_up"] and out["at_home"]
    assert out["old_markdown"] == contents[3] and out["copied"] == contents[3]
    assert out["inspected"] == [tokens[3][0], tokens[3][2]]
    assert out["tokens_view"].replace("[", "").startswith(contents[3][:10].replace("[", ""))
    assert out["heat"] and out["far_heat"]
    assert out["roles"] == ["UserMessage", "AssistantMessage"] * 100
    md = (tmp_path / f"tiankong-chat-{chat_id}.md").read_text(encoding="utf-8")
    assert md == store.export_chat_markdown(chat_id) and contents[3] in md


def test_an_opened_chat_regenerates_and_edits_its_last_message(tmp_path, store):
    # Context enough for the whole stored chat (the shared `tiny` model has 256 positions).
    model = make_model(tmp_path / "tiny-long", "llama", max_position_embeddings=2048)
    chat_id, contents, _ = _stored_long_chat(store, model, n=24)

    async def go():
        app = make_app(model, store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            chat = await loaded(pilot)
            chat.params = chat.params.replace(max_new_tokens=4)
            await chat.open_chat(chat_id)
            await pilot.pause()
            before = chat.messages
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: chat.messages[-1] is not before[-1])
            regenerated = await answered(pilot, chat)
            after_regen = store.get_chat(chat_id).messages
            await pilot.press("ctrl+l")
            prompt = app.screen.query_one("#prompt", Input)
            editing = prompt.value
            prompt.value = "a new last question"
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.messages[-2].content == "a new last question")
            await answered(pilot, chat)
            return after_regen, regenerated, editing, [w.content for w in chat.messages]

    after_regen, regenerated, editing, shown = run(go())
    # Regenerate replaced the last stored answer (and nothing else) with the new one.
    assert [m.content for m in after_regen[:23]] == contents[:23] and len(after_regen) == 24
    assert (after_regen[23].id, after_regen[23].content) == (regenerated.message_id, regenerated.content)
    # Edit-and-resend replaced the last question and its answer.
    stored = store.get_chat(chat_id).messages
    assert editing == contents[22]
    assert [m.content for m in stored] == shown and len(stored) == 24
    assert shown[:22] == contents[:22] and shown[22] == "a new last question" and stored[23].role == "assistant"


# ---------------------------------------------------------------- failures


def test_a_bad_model_folder_is_shown_and_the_app_stays_usable(store, tmp_path):
    async def go():
        app = make_app(tmp_path / "no-such-model", store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.engine_error is not None)
            status = str(app.screen.query_one("#status").render())
            notes = [n.message for n in app._notifications]
            await send(pilot, "anyone there?")  # refused with a message, no crash
            await pilot.press("ctrl+o")  # stored chats still browsable
            await pilot.pause()
            alive = app.is_running
            await pilot.press("escape")
            return app.engine_error, status, notes, alive, store.list_chats()

    error, status, notes, alive, chats = run(go())
    assert "no-such-model" in error and "\n" not in error
    assert "model not loaded" in status
    assert any("no-such-model" in n for n in notes)
    assert alive and chats == []  # nothing was sent without a model


def test_compare_without_its_model_ends_with_one_line_and_a_failed_status(store, tmp_path):
    """The compare screen never opened when a model failed to load: the chat screen stood in its place
    and the process ended with status 0."""

    async def go():
        app = make_app(
            tmp_path / "no-such-model", store, tmp_path, mode="compare", compare_presets=["balanced", "creative"]
        )
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.return_code is not None)
            return app.return_code, list(app._exit_renderables)  # printed (and cleared) once it has ended

    code, said = run(go())
    assert code == 2 and len(said) == 1 and "no-such-model" in str(said[0]) and str(said[0]).startswith("error: ")


def test_a_store_that_refuses_a_write_is_shown_and_nothing_is_answered(tiny, store, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise StoreError("could not write the database (disk full); check free disk space")

    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            monkeypatch.setattr(store, "add_message", refuse)
            await send(pilot, "keep me")
            await pilot.pause()
            return (
                app.is_running,
                chat.generating,
                len(chat.messages),
                chat.query_one("#prompt", Input).value,
                [n.message for n in app._notifications],
            )

    alive, generating, shown, prompt, notes = run(go())
    assert alive and not generating and shown == 0
    assert prompt == "keep me"  # the text stays in the box, to send again
    assert any("disk full" in n for n in notes)


def test_a_message_sent_while_the_model_loads_goes_out_when_it_is_ready(tiny, store, tmp_path, monkeypatch):
    from tiankong.engine.engine import Engine

    load = Engine.load.__func__
    gate = threading.Event()

    def slow_load(cls, *args, **kwargs):
        gate.wait(30)  # the model "loads" until the test has sent its message
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(Engine, "load", classmethod(slow_load))

    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            chat = app.chat
            await send(pilot, "early bird")
            queued = app.engine is None and chat._queued == "early bird"
            gate.set()
            await loaded(pilot)
            await wait_for(pilot, lambda: chat.messages and isinstance(chat.messages[-1], AssistantMessage))
            await answered(pilot, chat)
            return queued, [m.role for m in store.get_chat(chat.chat_id).messages]

    queued, roles = run(go())
    assert queued and roles == ["user", "assistant"]


def test_run_app_stops_before_the_ui_when_the_store_cannot_be_written(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="not-a-folder"):
        run_app(tmp_path / "model", data_dir=blocker)


# ---------------------------------------------------------------- token views


def test_inspect_heatmap_and_tokens_view(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, seed=3, max_new_tokens=10, temperature=1.0) as (app, pilot, chat):
            await send(pilot, "look")
            answer = await answered(pilot, chat)
            await pilot.press("f5", "right", "right", "]", "[")
            await pilot.pause()
            at_2 = chat.candidates.token
            await pilot.press("end")
            await pilot.pause()
            at_end = chat.candidates.token
            await pilot.press("escape")
            left = chat.inspected is None
            await pilot.press("f6")
            await pilot.pause()
            heat = answer.query_one(".answer-tokens").display
            app.screen.query_one("#prompt", Input).value = "more 你好 😀"
            expected = app.engine.encode(messages=chat.conversation() + [{"role": "user", "content": "more 你好 😀"}])
            await pilot.press("ctrl+t")
            await pilot.pause()
            screen = app.screen
            ids = screen.ids if isinstance(screen, TokensScreen) else None
            await pilot.press("escape")
            back = app.screen is chat
            return answer.tokens, at_2, at_end, left, heat, ids, expected, back

    tokens, at_2, at_end, left, heat, ids, expected, back = run(go())
    assert at_2 == tokens[2] and at_end == tokens[-1]
    assert left and heat and back
    assert ids == expected


def test_candidate_rows_bars_and_token_display():
    tok = {
        "id": 9,
        "text": " z",
        "logprob": math.log(0.01),
        "p_sample": 0.2,
        "entropy": 1.0,
        "top": [
            {"id": 1, "text": " a", "logprob": math.log(0.6), "p_sample": 0.8},
            {"id": 2, "text": "\n", "logprob": math.log(0.3), "p_sample": 0.0},
        ],
    }
    rows = candidate_rows(tok)
    assert [(c["id"], chosen) for c, chosen in rows] == [(1, False), (2, False), (9, True)]  # sampled from the tail
    assert bar(1.0, 4) == "████" and bar(0.0, 4) == "    " and bar(0.001, 4) == "▏   "
    assert (pct(0.0), pct(0.001), pct(0.41), pct(1.0)) == ("  0%", " <1%", " 41%", "100%")
    assert show_token(" a\n\t") == "␣a↵→" and show_token("") == "∅" and show_token("你好😀") == "你好😀"
    assert cursor_line("hello world foo\nbar baz", 16, 8, __import__("rich.console").console.Console()) == 3


# ---------------------------------------------------------------- the compare screen, from chat


def test_ctrl_b_compares_the_last_prompt_under_two_presets(tiny, store, tmp_path):
    compare = pytest.importorskip("tiankong.tui.screens.compare")

    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=4) as (app, pilot, chat):
            await send(pilot, "which is better?")
            await answered(pilot, chat)
            await pilot.press("ctrl+b")
            await pilot.pause()
            screen = app.screen
            return screen, [e.preset.name for e in getattr(screen, "entrants", [])]

    screen, presets = run(go())
    assert isinstance(screen, compare.CompareScreen)
    assert presets == ["balanced (edited)", "chat"]  # chat_app's max_new_tokens=4 is an f3 edit: compared as such
    assert screen.initial_prompt == "which is better?"


# ---------------------------------------------------------------- snapshots (stories260K, deterministic)


@pytest.fixture
def snapshot_app(tmp_path):
    """stories260K with the deterministic preset, on a fresh store."""
    with Store(tmp_path / "data" / DB_NAME) as store:
        yield make_app(STORIES, store, tmp_path, preset="deterministic")


async def _answer_once_upon(pilot) -> None:
    chat = await loaded(pilot)
    for inp in pilot.app.screen.query(Input):
        inp.cursor_blink = False
    chat.params = chat.params.replace(max_new_tokens=40)
    await send(pilot, "Once upon a time")
    await answered(pilot, chat)


@needs_stories
def test_snapshot_chat_after_a_deterministic_answer(snap_compare, snapshot_app):
    assert snap_compare(snapshot_app, terminal_size=SIZE, run_before=_answer_once_upon)


@needs_stories
def test_snapshot_inspect_mode_candidates(snap_compare, snapshot_app):
    assert snap_compare(
        snapshot_app, terminal_size=SIZE, run_before=_answer_once_upon, press=["f5", "right", "right", "right", "right"]
    )


@needs_stories
def test_snapshot_tokens_view(snap_compare, snapshot_app):
    async def before(pilot):
        await loaded(pilot)
        pilot.app.screen.query_one("#prompt", Input).value = "Once upon a time, 小猫 😀"
        await pilot.press("ctrl+t")

    assert snap_compare(snapshot_app, terminal_size=SIZE, run_before=before)


# ---------------------------------------------------------------- app-wide: compare mode, votes, help, palette


def test_compare_mode_opens_the_compare_screen_once_the_models_load(tiny, store, tmp_path):
    compare = pytest.importorskip("tiankong.tui.screens.compare")

    async def go(**kw):
        app = make_app(tiny, store, tmp_path, mode="compare", **kw)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, compare.CompareScreen))
            return [(Path(e.engine.folder).name, e.preset.name) for e in app.screen.entrants]

    assert run(go(compare_presets=["precise", "creative"])) == [("tiny-llama", "precise"), ("tiny-llama", "creative")]
    assert run(go(compare_presets=["chat"], compare_models=[tiny, tiny])) == [("tiny-llama", "chat")] * 2


def test_help_palette_and_votes_keys(tiny, store, tmp_path):
    from tiankong.tui.screens.help import HelpScreen

    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            await pilot.press("f1")
            await pilot.pause()
            helped = app.screen.sections if isinstance(app.screen, HelpScreen) else None
            await pilot.press("escape")
            commands = [c.title for c in app.get_system_commands(chat)]
            await pilot.press("ctrl+g")
            await pilot.pause()
            votes = type(app.screen).__name__
            return helped, commands, votes, list(app.presets)

    helped, commands, votes, presets = run(go())
    keys = [key for _, rows in helped for key, _ in rows]
    # Every chat key is listed, and is a palette command, but esc's: one per state, the footer names
    # the one that acts (ctrl+c's "stop answer" stops from the palette).
    for binding in [b for b in ChatScreen.BINDINGS if b.key != "escape"]:
        title = "keys and help" if binding.action == "app.help" else binding.description.lower()
        assert any(title == c.lower() for c in commands), binding.description
    assert [c for c in commands if c.startswith("Keys")] == ["Keys and help"]  # not three entries named "Keys"
    assert {"^r", "f5", "f6", "← / [", "→ / ]", "c", "ctrl+p"} <= set(keys)
    assert all(f"Preset: {p}" in commands for p in presets)
    try:
        import tiankong.tui.screens.votes  # noqa: F401  (built alongside; the key says so when absent)

        assert votes == "VotesScreen"
    except ImportError:
        assert votes == "ChatScreen"
