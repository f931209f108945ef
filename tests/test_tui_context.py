"""A long chat on the bundled model (512-token context): old turns are dropped, the screen says so,
and the answers keep coming, read through the chat's prompt cache."""

from __future__ import annotations

from pathlib import Path

from test_tui_chat import answered, loaded, make_app, run
from textual.widgets import Input

from tiankong.tui.screens.chat_sending import ContextNotice
from tiankong.tui.widgets.message import AssistantMessage

MINI = Path(__file__).resolve().parents[1] / "models" / "tiankong-mini"
REQUESTS = [
    "Tell me a story about a cat.",
    "Write a short story about a dog named Max.",
    "用中文写一个关于小猫的故事。",
    "Tell me a story about a brave little bird.",
    "What happened next?",
]


def test_thirty_turns_drop_old_turns_and_keep_answering(store, tmp_path):
    async def go():
        app = make_app(MINI, store, tmp_path, preset="chat")
        async with app.run_test(size=(100, 30)) as pilot:
            chat = await loaded(pilot)
            chat.params = chat.params.replace(seed=3, max_new_tokens=48)
            errors = []
            chat.notify = lambda message, *a, severity="information", **kw: (
                errors.append(message) if severity == "error" else None
            )
            infos, notices_at = [], []
            for turn in range(30):
                chat.query_one("#prompt", Input).value = REQUESTS[turn % len(REQUESTS)]
                await pilot.press("enter")
                answer = await answered(pilot, chat)
                assert isinstance(answer, AssistantMessage)
                infos.append((answer.content, store.get_chat(chat.chat_id).messages[-1].finish_reason))
                notices_at.append(chat.dropped_turns)
            notices = [str(w.render()) for w in chat.transcript.query(ContextNotice)]
            status = str(chat.query_one("#status").render())
            # Opened again later, the chat says which turns the model no longer sees, and ctrl+t shows
            # the prompt the next answer reads, without them.
            chat_id, cached = chat.chat_id, chat.prompt_cache.ids
            await chat.action_new_chat()
            await chat.open_chat(chat_id)
            await pilot.pause()
            reopened = (
                [str(w.render()) for w in chat.transcript.query(ContextNotice)],
                str(chat.query_one("#status").render()),
            )
            await pilot.press("ctrl+t")
            await pilot.pause()
            tokens = app.screen
            shown = (str(tokens.query_one("#tokens-head").render()), len(tokens.ids), tokens.messages)
            return infos, notices_at, notices, status, errors, cached, reopened, shown

    infos, dropped, notices, status, errors, cached, reopened, shown = run(go())
    assert errors == []
    for text, reason in infos:
        assert text.strip() and reason in ("eos", "length", "stop", "context")
    # The context fills within the first turns; from then on old turns go, never all at once again:
    # dropped turns stay dropped (the count only grows) and most turns drop none (the slack).
    assert dropped[0] == 0 and dropped[-1] > 0 and dropped == sorted(dropped)
    drops = sum(b > a for a, b in zip(dropped, dropped[1:], strict=False))
    assert 0 < drops < 20
    assert len(notices) == drops + (dropped[0] > 0)
    assert notices[-1].startswith(
        f"⋯ the first {dropped[-1]} turns of this chat no longer fit the model's 512-token context"
    )
    assert f"{dropped[-1]} turns out" in status  # ("next message: N turns out of context", short at 100 columns)
    assert cached  # the conversation's keys and values are kept for the next turn
    (notice,), reopened_status = reopened
    n = int(notice.split("the first ")[1].split(" turns")[0])
    # The same count as live: from what the last answer's prompt left out (counted afresh, a reopened
    # chat could say another number).
    assert n == dropped[-1] and f"{n} turns out" in reopened_status  # what it said live
    head, n_ids, messages = shown
    assert f"without the chat's first {n} turns" in head and n_ids <= 512
    # The kept turns, each a request and its answer, and the next message (the box is empty: an empty one).
    assert len(messages) == 2 * (30 - n) + 1 and messages[-1] == {"role": "user", "content": ""}
