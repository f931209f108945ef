"""Branches (issue 12 item 3): a message tree in the store, regenerate/edit keep siblings, f5 `b`
continues an answer from another candidate, branches survive a restart, `v` votes at the fork."""

from __future__ import annotations

import sqlite3

import pytest
from test_tui_chat import SIZE, answered, loaded, make_app, open_newest_chat, run, send, wait_for
from tiny_models import make_model

from tiankong.engine.sampling import SamplingParams
from tiankong.tui.screens.branch import branch_vote, branch_votes, common_tokens
from tiankong.tui.store import DB_NAME, Message, Store
from tiankong.tui.store_schema import MIGRATIONS
from tiankong.tui.widgets.message import AssistantMessage, UserMessage


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


# ---------------------------------------------------------------- the store


def test_old_database_migrates_to_a_chain(tmp_path):
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:4]:  # the schema before branches
        migration(conn)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("INSERT INTO chats VALUES (1, 't', 'm', 'balanced', '', '2025-01-01', '2025-01-01')")
    for i, (role, text) in enumerate([("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")], 1):
        conn.execute(
            "INSERT INTO messages (id, chat_id, role, content, created_at) VALUES (?, 1, ?, ?, ?)",
            (i * 10, role, text, f"2025-01-01T00:00:0{i}"),
        )
    conn.commit()
    conn.close()
    with Store(path) as store:
        chat = store.get_chat(1)
        assert [m.content for m in chat.messages] == ["a", "b", "c", "d"]
        assert [m.parent_id for m in chat.messages] == [None, 10, 20, 30]
        assert all(m.siblings == [m.id] for m in chat.messages)
        new = store.add_message(1, "user", "e")  # after the active branch's last message
        assert store.get_message(new).parent_id == 40


def test_siblings_select_and_export_follow_the_active_branch(tmp_path):
    with Store(tmp_path / DB_NAME) as store:
        chat = store.create_chat("m", "balanced")
        user = store.add_message(chat, "user", "hi")
        old = store.add_message(chat, "assistant", "old answer")
        new = store.add_message(chat, "assistant", "new answer", parent_id=user)
        assert [m.id for m in store.get_chat(chat).messages] == [user, new]
        assert store.get_message(old).siblings == [old, new]
        store.select_message(old)
        assert [m.content for m in store.get_chat(chat).messages] == ["hi", "old answer"]
        assert "old answer" in store.export_chat_jsonl(chat) and "new answer" not in store.export_chat_jsonl(chat)
        follow = store.add_message(chat, "user", "more")  # continues the selected branch
        assert store.get_message(follow).parent_id == old
        store.delete_messages_from(chat, old)  # a subtree: the other branch stays
        assert [m.content for m in store.get_chat(chat).messages] == ["hi", "new answer"]


def _msg(i: int, ids: list[int], texts: list[str], content: str) -> Message:
    tokens = [
        {"id": t, "text": x, "logprob": -1.0, "p_sample": 0.5, "entropy": 1.0, "top": []}
        for t, x in zip(ids, texts, strict=True)
    ]
    return Message(i, 1, "assistant", content, "balanced", {"temperature": 0.7}, 7, "eos", tokens, "")


def test_branch_vote_is_a_pair_at_the_fork():
    chosen = _msg(2, [5, 6, 7], ["The", " cat", " sat"], "The cat sat")
    rejected = _msg(3, [5, 6, 9, 4], ["The", " cat", " ran", " off"], "The cat ran off")
    assert common_tokens(chosen.tokens, rejected.tokens) == 2
    conv = [{"role": "user", "content": "story"}]
    vote = branch_vote(conv, chosen, rejected, "m", "me")
    assert vote.conversation == conv + [{"role": "assistant", "content": "The cat"}]
    assert [r.text for r in vote.responses] == [" sat", " ran off"] and vote.ranking == [0, 1]
    assert vote.pairs() == [(0, 1)] and vote.source == "branch" and vote.prompt == "story"


def test_a_branch_vote_again_or_reversed_replaces_the_earlier_one(tmp_path):
    """`v` pressed twice, or on the other branch after a change of mind, leaves one vote per pair of
    answers: duplicates would weigh twice in training and in the win rates."""
    a = _msg(2, [5, 6, 7], ["The", " cat", " sat"], "The cat sat")
    b = _msg(3, [5, 6, 9, 4], ["The", " cat", " ran", " off"], "The cat ran off")
    c = _msg(4, [5, 8], ["The", " dog"], "The dog")
    conv = [{"role": "user", "content": "story"}]
    with Store(tmp_path) as store:
        assert store.add_branch_votes([branch_vote(conv, a, b, "m", "me")]) == 0
        assert store.add_branch_votes([branch_vote(conv, a, b, "m", "me")]) == 1
        assert store.add_branch_votes([branch_vote(conv, b, a, "m", "me"), branch_vote(conv, b, c, "m", "me")]) == 1
        votes = store.list_votes()
        assert sorted(v.responses[0].text + " >" + v.responses[1].text for v in votes) == [
            " cat ran off > dog",  # b vs c, parting after "The"
            " ran off > sat",  # a vs b: the reversed vote is the one kept
        ]
        other = [{"role": "user", "content": "another story"}]
        assert store.add_branch_votes([branch_vote(other, a, b, "m", "me")]) == 0  # another prompt: another pair
        assert len(store.list_votes()) == 3


# ---------------------------------------------------------------- the playground


def test_branch_from_a_candidate_continues_from_that_token(tiny, tmp_path):
    store = Store(tmp_path / "data" / DB_NAME)

    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            chat = await loaded(pilot)
            chat.params = chat.params.replace(max_new_tokens=10, seed=3, stop=())
            await send(pilot, "hi")
            old = await answered(pilot, chat)
            assert len(old.tokens) >= 4
            await pilot.press("f5", "right", "right", "b")  # token 3, branch
            await pilot.pause()
            await pilot.press("down", "enter")  # the second other candidate
            await wait_for(pilot, lambda: chat.messages[-1] is not old)
            new = await answered(pilot, chat)
            new.focus()
            await pilot.press("v")
            await pilot.pause()
            await pilot.press("v")  # the same vote again replaces the first rather than counting twice
            await pilot.pause()
            return old, new, chat.engine, store.get_chat(chat.chat_id), store.list_votes()

    old, new, engine, stored, votes = run(go())
    picked = [c for c in old.tokens[2]["top"] if c["id"] != old.tokens[2]["id"]][1]
    ids = [t["id"] for t in new.tokens]
    assert ids[:3] == [t["id"] for t in old.tokens[:2]] + [picked["id"]]
    assert new.tokens[2]["top"] == old.tokens[2]["top"]
    assert new.content.startswith(old.tokens[0]["text"] + old.tokens[1]["text"])
    assert stored.messages[-1].id == new.message_id and stored.messages[-1].tokens == new.tokens
    assert stored.messages[-1].siblings == [old.message_id, new.message_id] and new.border_subtitle == "‹ 2/2 ›"
    # The continuation is what the engine generates from the prompt plus the forced tokens.
    prompt = engine.encode(messages=[{"role": "user", "content": "hi"}])
    params = SamplingParams(**stored.messages[-1].params)
    cold = [ev for ev in engine.generate([prompt + ids[:3]], [params])]
    assert list(cold[-1].token_ids) == ids[3:]
    (vote,) = votes
    start = old.tokens[0]["text"] + old.tokens[1]["text"]
    assert vote.conversation[-1] == {"role": "assistant", "content": start} or not start
    assert vote.responses[0].text == new.content[len(start) :] and vote.responses[1].text == old.content[len(start) :]
    store.close()


def test_regenerate_and_edit_keep_siblings_that_survive_a_restart(tiny, tmp_path):
    path = tmp_path / "data" / DB_NAME

    async def first_run():
        store = Store(path)
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            chat = await loaded(pilot)
            chat.params = chat.params.replace(max_new_tokens=8)
            await send(pilot, "hi")
            first = await answered(pilot, chat)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: chat.messages[-1] is not first)
            second = await answered(pilot, chat)
            assert second.branches == [first.message_id, second.message_id] and second.border_subtitle == "‹ 2/2 ›"
            second.focus()
            await pilot.press("ctrl+left")
            await wait_for(pilot, lambda: chat.messages[-1].message_id == first.message_id)
            back = chat.messages[-1]
            assert back.content == first.content and back.border_subtitle == "‹ 1/2 ›"
            # An edit keeps the first message (and its answers) as a sibling too.
            await pilot.press("ctrl+l")
            chat.query_one("#prompt").value = "hello"
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.messages[0].content == "hello")
            await answered(pilot, chat)
            user = chat.messages[0]
            assert isinstance(user, UserMessage) and user.border_subtitle == "‹ 2/2 ›"
            user.focus()
            await pilot.press("alt+left")
            await wait_for(pilot, lambda: chat.messages[0].content == "hi" and len(chat.messages) == 2)
            result = first, second
        store.close()
        return result

    async def second_run():
        store = Store(path)
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            chat = await loaded(pilot)
            await open_newest_chat(pilot, chat, 2)
            shown = [(type(w), w.content, w.border_subtitle) for w in chat.messages]
            answer = chat.messages[-1]
            answer.focus()
            await pilot.press("ctrl+right")
            await wait_for(pilot, lambda: chat.messages[-1] is not answer)
            result = shown, chat.messages[-1].content, chat.messages[-1].border_subtitle
        store.close()
        return result

    first, second = run(first_run())
    shown, other, label = run(second_run())
    assert shown == [(UserMessage, "hi", "‹ 1/2 ›"), (AssistantMessage, first.content, "‹ 1/2 ›")]
    assert other == second.content and label == "‹ 2/2 ›"


def test_trainers_read_a_branch_vote_as_a_pair_at_the_fork():
    from pathlib import Path

    from tiankong.trainers.preferences import Encoder
    from tiankong.tui.prefs import vote_pairs

    enc = Encoder.from_folder(Path(__file__).parent.parent / "models" / "tiankong-mini")
    conv = [{"role": "user", "content": "Tell me a story."}]
    whole, at_start = enc.pair(conv, "Once upon a time there was a cat.")
    (record,) = vote_pairs(
        branch_vote(
            conv,
            _msg(2, [1, 2], ["Once upon a time", " there was a cat."], ""),
            _msg(3, [1, 3], ["Once upon a time", " a dog"], ""),
            "m",
            "me",
        )
    )
    assert record["prompt"][-1] == {"role": "assistant", "content": "Once upon a time"}
    forked, at_fork = enc.pair(record["prompt"], record["chosen"][0]["content"])
    assert forked == whole and at_fork > at_start  # the same sequence, the response starting at the fork
    assert enc.prompt(record["prompt"]) == forked[:at_fork]


def test_a_branch_vote_keeps_the_prompt_id_of_its_prompt():
    # The README: every vote keeps a prompt id. A branch vote's is its prompt's (the shared start is not part of it).
    from tiankong.tui.queue import prompt_id

    conv = [{"role": "user", "content": "story"}]
    chosen = _msg(2, [5, 6, 7], ["The", " cat", " sat"], "The cat sat")
    rejected = _msg(3, [5, 6, 9], ["The", " cat", " ran"], "The cat ran")
    assert branch_vote(conv, chosen, rejected, "m", "me").prompt_id == prompt_id(conv) is not None


def test_siblings_with_the_same_text_make_one_vote_and_the_notice_counts_it(tiny, tmp_path):
    """QA: a deterministic ctrl+r repeats the answer; `v` on a branch made with `b` then said "stored 2
    votes, replacing 1 earlier vote" for one row. The two identical siblings are one pair, and the
    identical one is no preference when `v` is pressed on it."""
    store = Store(tmp_path / "data" / DB_NAME)

    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            chat = await loaded(pilot)
            chat._use_preset("deterministic", quiet=True)
            chat.params = chat.params.replace(max_new_tokens=6, stop=())
            await send(pilot, "hi")
            first = await answered(pilot, chat)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: chat.messages[-1] is not first)
            again = await answered(pilot, chat)
            assert again.content == first.content  # the same answer, a sibling
            again.focus()
            await pilot.press("v")  # on it: its only sibling says the same
            await pilot.pause()
            await pilot.press("f5", "right", "b")
            await pilot.pause()
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.messages[-1] is not again)
            new = await answered(pilot, chat)
            new.focus()
            await pilot.press("v")
            await pilot.pause()
            return [n.message for n in app._notifications], len(new.branches), store.list_votes()

    notes, branches, votes = run(go())
    assert branches == 3
    assert "the other branches here say just what this one says: there is nothing to prefer" in notes
    assert any(n.startswith("stored 1 vote: this branch is better") for n in notes), notes
    assert not any("replacing" in n for n in notes)
    assert len(votes) == 1
    store.close()


def test_a_pair_given_twice_in_one_call_is_one_vote_and_replaces_nothing(tmp_path):
    a = _msg(2, [5, 6, 7], ["The", " cat", " sat"], "The cat sat")
    b = _msg(3, [5, 6, 9], ["The", " cat", " ran"], "The cat ran")
    conv = [{"role": "user", "content": "story"}]
    with Store(tmp_path) as store:
        assert store.add_branch_votes([branch_vote(conv, a, b, "m", "me"), branch_vote(conv, a, b, "m", "me")]) == 0
        assert len(store.list_votes()) == 1
        assert store.add_branch_votes([branch_vote(conv, b, a, "m", "me")] * 2) == 1  # the earlier call's one
        (vote,) = store.list_votes()
        assert vote.responses[0].text == " ran"


def test_branch_votes_leave_out_a_sibling_that_says_the_same_and_repeated_siblings():
    chosen = _msg(2, [5, 8], ["The", " dog"], "The dog")
    same = _msg(3, [5, 8], ["The", " dog"], "The dog")
    other = _msg(4, [5, 6, 7], ["The", " cat", " sat"], "The cat sat")
    twin = _msg(5, [5, 6, 7], ["The", " cat", " sat"], "The cat sat")
    conv = [{"role": "user", "content": "story"}]
    votes = branch_votes(conv, chosen, [same, other, twin], "m", "me")
    assert [(v.responses[0].text, v.responses[1].text) for v in votes] == [(" dog", " cat sat")]
    assert branch_votes(conv, chosen, [same], "m", "me") == []
