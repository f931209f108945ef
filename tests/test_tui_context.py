"""A long chat on the bundled model (512-token context): old turns are dropped, the screen says so,
and the answers keep coming, read through the chat's prompt cache."""

from __future__ import annotations

from pathlib import Path

from test_tui_chat import answered, loaded, make_app, run
from textual.widgets import Input

from tiankong.tui.screens.chat import ContextNotice
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
            return infos, notices_at, notices, status, errors, chat.prompt_cache.ids

    infos, dropped, notices, status, errors, cached = run(go())
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
    assert f"{dropped[-1]} turns out of context" in status
    assert cached  # the conversation's keys and values are kept for the next turn
