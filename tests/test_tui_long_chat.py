"""Chats longer than the context, away from the send path: compare (ctrl+b) on a long chat, a chat
reopened or a branch switched to (what the next answer will not see), a refused message edited, a
narrow terminal, and the words for one turn or one token. On a tiny random Llama with a 256-token
context; the long chats are written to the store directly, so only what is tested generates."""

from __future__ import annotations

from pathlib import Path

import pytest
from screen_text import screen_lines
from test_tui_chat import answered, loaded, make_app, run, wait_for
from textual.widgets import Input
from tiny_models import make_model

from tiankong.tui.screens.chat_sending import ContextNotice, NotAnswered
from tiankong.tui.screens.compare import CompareScreen
from tiankong.tui.widgets.message import AssistantMessage

SENTENCE = "Once upon a time there was a little girl named Lily. "  # ~37 tokens of the tiny tokenizer


@pytest.fixture(scope="module")
def tiny256(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


def store_chat(store, model_id: str, answers: list[int], preset: str = "balanced") -> int:
    """A stored chat of len(answers) turns: a short question, then an answer of that many sentences."""
    chat_id = store.create_chat(model_id, preset, "", "a long chat")
    for turn, n in enumerate(answers):
        store.add_message(chat_id, "user", f"Tell me story {turn}.")
        store.add_message(chat_id, "assistant", SENTENCE * n, preset=preset, finish_reason="length", seed=1)
    return chat_id


def notices(chat) -> list[str]:
    return [str(w.render()) for w in chat.transcript.query(".context-notice")]


def status(chat) -> str:
    return str(chat.query_one("#status").render())


def test_compare_on_a_chat_longer_than_the_context_drops_its_oldest_turns(tiny256, store, tmp_path):
    # Three turns of ~115 tokens, then a question: far over the 256-token context. The chat would
    # answer it without its oldest turns; so does compare, and its head line says so.
    async def go():
        app = make_app(tiny256, store, tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            chat = await loaded(pilot)
            chat_id = store_chat(store, chat.model_id, [3, 3, 3])
            store.add_message(chat_id, "user", "And then?")
            await chat.open_chat(chat_id)
            await pilot.press("ctrl+b")
            await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
            screen = app.screen
            await wait_for(pilot, lambda: screen.round is not None and screen.round.done)
            await pilot.pause()
            rnd = screen.round
            return rnd.error, rnd.finish, rnd.texts, rnd.dropped, str(screen.query_one("#compare-head").render())

    error, finish, texts, dropped, head = run(go())
    # Both columns ran to an end of their own; a random tiny model may end one at once (EOS first).
    assert error is None and set(finish) <= {"eos", "length", "context"} and any(texts)
    assert 0 < dropped <= 3
    turns = "turn" if dropped == 1 else f"{dropped} turns"
    assert "after 6 chat messages" in head and f"without the chat's first {turns}" in head


def test_a_reopened_chat_whose_last_answer_is_long_says_what_the_next_answer_will_not_see(tiny256, store, tmp_path):
    # The last turn alone is ~260 tokens: more than the prompt's share of the context, so the next
    # message goes out without every earlier turn. The reopened chat says so.
    async def go():
        app = make_app(tiny256, store, tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            chat = await loaded(pilot)
            chat_id = store_chat(store, chat.model_id, [1, 1, 7])
            await chat.open_chat(chat_id)
            await pilot.pause()
            return notices(chat), status(chat), chat.dropped_turns

    shown, line, dropped = run(go())
    assert dropped == 3
    assert shown == [
        "⋯ the first 3 turns of this chat no longer fit the model's 256-token context: it does not see "
        "them now (ctrl+n starts a new chat)"
    ]
    assert "ready · next message: 3 turns out of context" in line


def test_switching_to_a_long_branch_says_what_the_next_answer_will_not_see(tiny256, store, tmp_path):
    # The last question has two answers: a short one (everything still fits) and a long one.
    async def go():
        app = make_app(tiny256, store, tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            chat = await loaded(pilot)
            chat_id = store_chat(store, chat.model_id, [1, 1, 7])
            long = store.get_chat(chat_id).messages[-1]
            store.add_message(chat_id, "assistant", "The end.", parent_id=long.parent_id, finish_reason="eos", seed=1)
            await chat.open_chat(chat_id)
            await pilot.pause()
            before = notices(chat), chat.dropped_turns
            answer = chat.messages[-1]
            answer.focus()
            await pilot.press("ctrl+left")
            await wait_for(pilot, lambda: chat.messages[-1] is not answer)
            await pilot.pause()
            return before, notices(chat), status(chat), chat.messages[-1].content

    before, after, line, content = run(go())
    assert before == ([], 0)
    assert content == SENTENCE * 7
    assert len(after) == 1 and after[0].startswith("⋯ the first 3 turns of this chat no longer fit")
    assert "3 turns out of context" in line


def test_editing_a_refused_message_takes_its_warning_away(tiny256, store, tmp_path):
    async def go():
        app = make_app(tiny256, store, tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            chat = await loaded(pilot)
            chat.params = chat.params.replace(max_new_tokens=8, seed=1)
            chat.query_one("#prompt", Input).value = SENTENCE * 10  # ~370 tokens: refused
            await pilot.press("enter")
            await wait_for(pilot, lambda: bool(chat.transcript.query(NotAnswered)))
            refused = notices(chat)
            await pilot.press("ctrl+l")
            chat.query_one("#prompt", Input).value = "Tell me about the moon."
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(chat.messages) == 2)
            await answered(pilot, chat)
            return refused, notices(chat), [w.content for w in chat.messages[:1]]

    refused, after, shown = run(go())
    assert len(refused) == 1 and refused[0].startswith("⚠ not answered: the last message is")
    assert after == [] and shown == ["Tell me about the moon."]


def test_a_narrow_terminal_hides_the_candidates_panel_and_keeps_the_transcript(tiny256, store, tmp_path):
    async def go():
        app = make_app(tiny256, store, tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            chat = await loaded(pilot)
            chat_id = store_chat(store, chat.model_id, [1])
            await chat.open_chat(chat_id)
            widths = []
            for size in ((80, 24), (40, 12), (100, 30)):
                await pilot.resize_terminal(*size)
                await pilot.pause()
                widths.append(
                    (chat.candidates.display, chat.candidates.outer_size.width, chat.transcript.outer_size.width)
                )
            await pilot.resize_terminal(47, 12)  # the footer leaves out keys rather than cut one ("^o chat▏")
            await pilot.pause(0.2)
            footer = screen_lines(app)[-1]
            await pilot.resize_terminal(40, 12)
            await pilot.pause()
            await pilot.press("f4")  # shown on request, over half the width
            await pilot.pause()
            widths.append((chat.candidates.display, chat.candidates.outer_size.width, chat.transcript.outer_size.width))
            return widths, footer

    (at80, at40, at100, f4), footer = run(go())
    # (no esc: nothing streams, nothing to go back from)
    assert footer.startswith(" f1 keys") and " ▏^p palette" in footer  # no key cut before it
    assert at80[:2] == (True, 34) and at100[:2] == (True, 42)  # as before
    assert at40[0] is False and at40[2] == at80[2] - 40 + 34  # the transcript takes the panel's room
    assert f4[:2] == (True, 20) and f4[2] == at40[2] - 20


def test_one_turn_and_one_token_are_said_in_the_singular(tiny256, store, tmp_path):
    assert str(ContextNotice(1, 512).content) == (
        "⋯ the first turn of this chat no longer fits the model's 512-token context: it does not see it now "
        "(ctrl+n starts a new chat)"
    )

    async def go():
        app = make_app(tiny256, store, tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            chat = await loaded(pilot)
            chat_id = store.create_chat(chat.model_id, "balanced", "", "short")
            store.add_message(chat_id, "user", "hi")
            token = {"id": 5, "text": "Hi", "logprob": -1.0, "p_sample": 0.5, "entropy": 1.0, "top": []}
            store.add_message(chat_id, "assistant", "Hi", finish_reason="cancelled", seed=3, tokens=[token])
            await chat.open_chat(chat_id)
            await pilot.pause()
            answer = chat.messages[-1]
            assert isinstance(answer, AssistantMessage)
            return answer._info

    assert " · 1 token · seed 3" in run(go())
