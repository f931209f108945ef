"""What a chat stores and exports (QA pass 19): each answer keeps the model that wrote it and how
many of the chat's oldest turns its prompt left out; branch votes and exports use both; an export
has files per branch, says when it leaves out the answer being written, and shows control
characters in the Markdown rather than passing them to a terminal."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_tui_chat import SIZE, answered, loaded, make_app, run, slow_down, wait_for
from test_tui_long_chat import SENTENCE, store_chat
from tiny_models import make_model

from tiankong.tui.prefs import vote_pairs
from tiankong.tui.screens.branch import branch_vote
from tiankong.tui.store import DB_NAME, Message, Store
from tiankong.tui.store_chats import export_name
from tiankong.tui.store_schema import MIGRATIONS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


def _version(name: str) -> int:
    """The schema version a migration starts from."""
    return next(i for i, m in enumerate(MIGRATIONS) if m.__name__ == name)


# ---------------------------------------------------------------- the store


def test_a_database_of_the_old_schema_reads_its_answers_as_the_chats_model(tmp_path):
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    old = _version("_v9_answer_models")
    for migration in MIGRATIONS[:old]:
        migration(conn)
    conn.execute(f"PRAGMA user_version = {old}")
    conn.execute("INSERT INTO chats VALUES (1, 't', '/opt/models/a', 'balanced', '', '2025-01-01', '2025-01-01')")
    conn.execute("INSERT INTO chats VALUES (2, 'u', 'ollama:b:1b', 'balanced', '', '2025-01-01', '2025-01-01')")
    rows = [(1, 1, "user", "hi", None), (2, 1, "assistant", "hello", 1), (3, 2, "user", "yo", None)]
    rows.append((4, 2, "assistant", "hey", 3))
    for i, chat, role, text, parent in rows:
        conn.execute(
            "INSERT INTO messages (id, chat_id, role, content, created_at, parent_id, selected_at) "
            "VALUES (?, ?, ?, ?, '2025-01-01', ?, '2025-01-01')",
            (i, chat, role, text, parent),
        )
    conn.commit()
    conn.close()
    with Store(path) as store:
        a, b = store.get_chat(1).messages, store.get_chat(2).messages
        assert [(m.model, m.dropped) for m in a] == [(None, None), ("/opt/models/a", None)]
        assert [(m.model, m.dropped) for m in b] == [(None, None), ("ollama:b:1b", None)]
        new = store.add_message(1, "assistant", "again", parent_id=1, model="ollama:c:2b", dropped=2)
        assert (store.get_message(new).model, store.get_message(new).dropped) == ("ollama:c:2b", 2)
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_an_answer_keeps_its_own_model_and_a_users_message_none(tmp_path):
    with Store(tmp_path / DB_NAME) as store:
        chat = store.create_chat("tiankong-mini", "balanced")
        store.add_message(chat, "user", "hi", model="ignored")
        store.add_message(chat, "assistant", "by the chat's model")
        store.add_message(chat, "user", "more")
        store.add_message(chat, "assistant", "by another", model="/m/stories260K", dropped=1)
        got = [(m.role, m.model, m.dropped) for m in store.get_chat(chat).messages]
    assert got == [
        ("user", None, None),
        ("assistant", "tiankong-mini", None),
        ("user", None, None),
        ("assistant", "/m/stories260K", 1),
    ]


def _answer(i: int, ids: list[int], texts: list[str], model: str | None, dropped: int | None) -> Message:
    tokens = [
        {"id": t, "text": x, "logprob": -1.0, "p_sample": 0.5, "entropy": 1.0, "top": []}
        for t, x in zip(ids, texts, strict=True)
    ]
    m = Message(i, 1, "assistant", "".join(texts), "balanced", {}, 7, "eos", tokens, "")
    m.model, m.dropped = model, dropped
    return m


CONV = [
    {"role": "system", "content": "be kind"},
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "q2"},
    {"role": "assistant", "content": "a2"},
    {"role": "user", "content": "q3"},
]


def test_a_branch_vote_names_each_answers_model_and_holds_what_it_saw():
    chosen = _answer(8, [1, 2], ["The", " dog"], "/m/stories260K", 1)
    rejected = _answer(9, [1, 3], ["The", " cat"], "tiankong-mini", 2)
    vote = branch_vote(CONV, chosen, rejected, "fallback", "me")
    assert [r.model for r in vote.responses] == ["/m/stories260K", "tiankong-mini"]
    (record,) = vote_pairs(vote)  # what prefs export writes and the reward and DPO trainers read
    assert record["chosen_model"] == "/m/stories260K" and record["prompt"] == vote.conversation
    # The turns both answers saw: rejected's prompt had left out two (q1 a1, q2 a2); the system prompt stays.
    assert vote.conversation == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "The"},
    ]
    unknown = branch_vote(
        CONV, _answer(8, [1, 2], ["The", " dog"], None, None), _answer(9, [4], ["A cat"], None, None), "fallback", "me"
    )
    assert [r.model for r in unknown.responses] == ["fallback", "fallback"]  # a Message that names none
    assert unknown.conversation == CONV  # nothing known dropped: the whole conversation


def _chat_with_branches(store: Store) -> tuple[int, list[int]]:
    chat = store.create_chat("tiankong-mini", "balanced", title="b")
    q1 = store.add_message(chat, "user", "q1")
    a1 = store.add_message(chat, "assistant", "a1")
    a1b = store.add_message(chat, "assistant", "a1 again", parent_id=q1)
    return chat, [q1, a1, a1b]


def test_each_branch_exports_to_files_of_its_own_and_continuing_keeps_the_name(tmp_path):
    with Store(tmp_path / DB_NAME) as store:
        chat, (q1, a1, a1b) = _chat_with_branches(store)
        second = export_name(store.get_chat(chat))
        store.select_message(a1)
        first = export_name(store.get_chat(chat))
        store.add_message(chat, "user", "q2")
        continued = export_name(store.get_chat(chat))
        store.select_message(a1b)
        q2b = store.add_message(chat, "user", "q2 on the second branch")
        store.add_message(chat, "assistant", "x")
        store.add_message(chat, "user", "q2 edited", parent_id=a1b)
        deeper = export_name(store.get_chat(chat))
        store.select_message(q2b)
        deeper_first = export_name(store.get_chat(chat))
    assert first == continued == f"tiankong-chat-{chat}"
    assert second == f"tiankong-chat-{chat}-branch-2"
    assert deeper == f"tiankong-chat-{chat}-branch-2-2" and deeper_first == f"tiankong-chat-{chat}-branch-2-1"


def test_the_markdown_shows_control_characters_and_the_jsonl_keeps_them(tmp_path):
    raw = "red \x1b[31mRED\x1b[0m \x07bell\r\ttab\nnext line"
    with Store(tmp_path / DB_NAME) as store:
        chat = store.create_chat("tiankong-mini", "balanced", system_prompt="sys \x1b]0;title\x07", title="t \x1b[2J")
        store.add_message(chat, "user", raw)
        store.add_message(chat, "assistant", "ok \x9b31m")
        md = store.export_chat_markdown(chat)
        lines = [json.loads(line) for line in store.export_chat_jsonl(chat).splitlines()]
    assert "red \\x1b[31mRED\\x1b[0m \\x07bell\\x0d\ttab  \nnext line" in md  # (a hard break: two spaces)
    assert "ok \\x9b31m" in md and "sys \\x1b]0;title\\x07" in md and md.startswith("# t \\x1b[2J\n")
    assert not any(c in md for c in "\x1b\x07\r\x9b")
    assert [line["content"] for line in lines] == ["sys \x1b]0;title\x07", raw, "ok \x9b31m"]


def test_exports_mark_the_turns_an_answer_did_not_see_and_its_model(tmp_path):
    with Store(tmp_path / DB_NAME) as store:
        chat = store.create_chat("tiankong-mini", "balanced")
        for turn in range(1, 4):
            store.add_message(chat, "user", f"q{turn}")
            store.add_message(chat, "assistant", f"a{turn}", model="tiankong-mini", dropped=turn - 1)
        store.add_message(chat, "user", "q4")
        store.add_message(chat, "assistant", "a4", model="/m/stories260K", dropped=3)
        md = store.export_chat_markdown(chat)
        lines = [json.loads(line) for line in store.export_chat_jsonl(chat).splitlines()]
    assert "**User** · turn 3\n\nq3" in md
    assert "**Assistant** _(turn 1 not seen (out of the context))_\n\na2" in md
    assert "**Assistant** _(turns 1–2 not seen (out of the context))_\n\na3" in md
    assert "**Assistant** _(model `/m/stories260K`, turns 1–3 not seen (out of the context))_\n\na4" in md
    assert "**Assistant**\n\na1" in md  # it saw everything: no note
    assert [(x["turn"], x["model"], x["dropped_turns"]) for x in lines[-2:]] == [
        (4, None, None),
        (None, "/m/stories260K", 3),
    ]


# ---------------------------------------------------------------- the playground


def test_a_chat_continued_with_another_model_keeps_each_answers_model_and_votes_on_what_it_saw(tiny, tmp_path):
    """QA: a chat continued with another model labelled every answer with the current one and gave
    its branch votes the current model; a vote on a long chat stored the turns the model never saw."""
    store = Store(tmp_path / "data" / DB_NAME)

    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            chat = await loaded(pilot)
            chat.params = chat.params.replace(max_new_tokens=8)
            chat_id = store_chat(store, "other-model", [3, 3, 3])  # ~115 tokens a turn: over the context
            store.add_message(chat_id, "user", "And then?")
            await chat.open_chat(chat_id)
            await pilot.pause()
            titles = [str(w.border_title) for w in chat.messages[1::2]]
            opened = [n.message for n in app._notifications]
            await pilot.press("ctrl+r")  # the last message is the user's: answered
            first = await answered(pilot, chat)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: chat.messages[-1] is not first)
            second = await answered(pilot, chat)
            second.focus()
            await pilot.press("v")
            await pilot.pause()
            await pilot.press("ctrl+s")
            await pilot.pause()
            notes = [n.message for n in app._notifications]
            dropped = chat.dropped_turns
            await chat.open_chat(chat_id)  # again: its answers by both models
            await pilot.pause()
            again = [str(w.border_title) for w in chat.messages[1::2]]
            # A chat of this model with an answer of another: opening it names the other.
            mixed = store.create_chat(chat.model_id, "balanced", title="mixed")
            store.add_message(mixed, "user", "hi")
            store.add_message(mixed, "assistant", "hello", model="/m/stories260K")
            await chat.open_chat(mixed)
            await pilot.pause()
            opened += [n.message for n in app._notifications]
            return chat_id, chat.model_id, dropped, titles, opened, again, notes

    chat_id, model_id, dropped, titles, opened, again, notes = run(go())
    assert titles == ["other-model · balanced"] * 3
    assert any("written by other-model; new answers come from tiny-llama" in n for n in opened), opened
    assert any(n.startswith("opened “mixed” (written by stories260K; new answers") for n in opened), opened
    assert again == ["other-model · balanced"] * 3 + ["tiny-llama · balanced (edited)"]  # f3: max tokens
    stored = store.get_chat(chat_id).messages
    assert [(m.model, m.dropped) for m in stored if m.role == "assistant"] == [("other-model", None)] * 3 + [
        (model_id, dropped)
    ]
    assert 0 < dropped <= 3 and model_id != "other-model"
    (vote,) = store.list_votes()
    assert [r.model for r in vote.responses] == [model_id, model_id]
    turns = [
        [{"role": "user", "content": f"Tell me story {t}."}, {"role": "assistant", "content": SENTENCE * 3}]
        for t in range(3)
    ]
    seen = [m for turn in turns[dropped:] for m in turn] + [{"role": "user", "content": "And then?"}]
    assert vote.conversation[: len(seen)] == seen and len(vote.conversation) - len(seen) in (0, 1)
    md = (tmp_path / f"tiankong-chat-{chat_id}-branch-2.md").read_text(encoding="utf-8")
    word = "turn 1" if dropped == 1 else f"turns 1–{dropped}"
    assert f"{word} not seen (out of the context)" in md and "model `other-model`" not in md
    assert f"model `{model_id}`" in md  # the chat was written by other-model: its new answers say whose they are
    assert any(n.startswith(str(tmp_path / f"tiankong-chat-{chat_id}-branch-2.md")) for n in notes), notes
    store.close()


def test_an_export_while_answering_says_it_leaves_the_answer_out_and_a_second_says_it_replaced(tiny, tmp_path):
    store = Store(tmp_path / "data" / DB_NAME)

    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            chat = await loaded(pilot)
            chat.params = chat.params.replace(max_new_tokens=200, stop=())
            slow_down(app.engine, 0.05)
            await pilot.press(*"hi", "enter")
            await wait_for(pilot, lambda: chat.generating and len(chat.messages[-1].tokens) > 0)
            await pilot.press("ctrl+s")
            await pilot.pause()
            during = [n for n in app._notifications if n.title == "exported"]
            await pilot.press("escape")
            await answered(pilot, chat)
            await pilot.press("ctrl+s")
            await pilot.pause()
            after = [n for n in app._notifications if n.title == "exported"]
            return chat.chat_id, during, after

    chat_id, during, after = run(go())
    assert len(during) == 1 and during[0].severity == "warning"
    assert "without the answer being written now: ctrl+s again once it has ended" in during[0].message
    last = after[-1]
    assert last.severity == "information" and "without the answer" not in last.message
    assert "replaced the earlier export of this branch" in last.message
    jsonl = (tmp_path / f"tiankong-chat-{chat_id}.jsonl").read_text(encoding="utf-8")
    assert [json.loads(line)["role"] for line in jsonl.splitlines()] == ["user", "assistant"]
    store.close()
