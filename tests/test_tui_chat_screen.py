"""The chat screen in long chats (a QA pass): the candidates panel at 80 columns and after a branch
switch, how full the context is and what the next message leaves out, `b` where the context is
full, a long chat reopened without freezing, a search match opened at the match, ctrl+n and the
system prompt, focus that selects nothing, and the words of a refused message. On the tiny random
Llama (tests/tiny_models.py) and stories260K where a real answer is needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from screen_text import screen_lines
from test_tui_chat import answered, chat_app, loaded, make_app, run, wait_for
from textual.geometry import Region
from textual.widgets import Input
from tiny_models import make_model, with_template

from tiankong.tui.widgets.candidates import CandidatesPanel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


def token(n: int, word: str) -> dict:
    """A token record with ten candidates named after `word` and n (as TokenEvent.to_dict makes them)."""
    top = [{"id": n * 100 + i, "text": f"{word}{i}", "logprob": -1.0 - i, "p_sample": 0.1} for i in range(10)]
    return {"id": n * 100, "text": f"{word}0", "logprob": -1.0, "p_sample": 0.1, "entropy": 1.5, "top": top}


# ---------------------------------------------------------------- the candidates panel


def test_the_candidates_panel_redraws_every_row_it_covers_at_80_columns(tiny, store, tmp_path):
    # At 80 columns the panel is 30 cells inside: "last of 256 tokens · f5 inspects all" did not fit
    # on one line and wrapped, pushing every row down one; `show` redraws only the rows it counts
    # by line breaks, so the bottom row kept the token shown before. Each row the panel draws now
    # is one line of its text, and the rows redrawn cover all of them.
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            await pilot.resize_terminal(80, 24)
            await pilot.pause()
            panel = chat.query_one(CandidatesPanel)
            panel.show(token(1, "old"), "last of 256 tokens · f5 inspects all")
            await pilot.pause()
            redrawn: list[Region] = []
            refresh = panel.refresh
            panel.refresh = lambda *regions, **kw: (redrawn.extend(regions), refresh(*regions, **kw))[1]
            panel.show(token(2, "new"), "last of 256 tokens · f5 inspects all")
            await pilot.pause()
            inner = panel.content_region
            rows = screen_lines(app)[inner.y : inner.bottom]
            drawn = [r for r, line in enumerate(rows) if line[inner.x - 1 : inner.right].strip()]
            return rows, drawn, redrawn, inner

    rows, drawn, redrawn, inner = run(go())
    text = "\n".join(rows)
    assert "new0" in text and "old" not in text
    assert "last of 256 tokens" in rows[0] and "f5 inspects all" in rows[1]  # the label, on two lines
    # Every row with text on it was redrawn (a region in the panel's content coordinates).
    assert redrawn and all(any(r.y <= row < r.bottom for r in redrawn) for row in drawn)


# ---------------------------------------------------------------- focus


def test_tab_into_the_message_box_or_the_system_field_selects_nothing(tiny, store, tmp_path):
    # Textual's Input selects all its text when tab focuses it: the next key replaced a 1500-character draft.
    draft = "a long draft 你好 " * 100

    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            prompt, system = chat.query_one("#prompt"), chat.query_one("#system")
            prompt.text, system.value = draft, "be brief"
            seen = []
            for key in ("shift+tab", "tab", "tab", "shift+tab"):  # round the focus chain, both ways
                await pilot.press(key)
                await pilot.pause()
                if app.focused in (prompt, system):
                    await pilot.press("x")
                    seen.append(app.focused.id)
            return seen, prompt.text, system.value

    seen, text, system = run(go())
    assert {"prompt", "system"} <= set(seen)
    assert text.startswith(draft) and len(text) == len(draft) + seen.count("prompt")
    assert system.startswith("be brief") and len(system) == len("be brief") + seen.count("system")


def test_switching_branch_shows_the_last_token_of_the_branch_switched_to(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            chat_id = store.create_chat(chat.model_id, "balanced", "", "two branches")
            question = store.add_message(chat_id, "user", "hi")
            first, second = token(1, "first"), token(2, "second")
            store.add_message(chat_id, "assistant", "first0", parent_id=question, finish_reason="eos", tokens=[first])
            store.add_message(chat_id, "assistant", "second0", parent_id=question, finish_reason="eos", tokens=[second])
            await chat.open_chat(chat_id)
            await pilot.pause()
            opened = chat.candidates.token
            chat.messages[-1].focus()
            await pilot.press("ctrl+left")
            await wait_for(pilot, lambda: chat.messages[-1].content == "first0")
            await pilot.pause()
            return opened, chat.candidates.token, str(chat.candidates.render())

    opened, switched, drawn = run(go())
    assert opened["text"] == "second0"  # an opened chat shows its last answer's last token
    assert switched["text"] == "first0" and "first9" in drawn and "second" not in drawn


# ---------------------------------------------------------------- b where the context is full


def stored_long_answer(store, chat, n_tokens: int) -> tuple[int, list[dict]]:
    """A stored chat: "hi", then an answer of n_tokens real tokens of the model, each with two candidates."""
    tokens = answer_tokens(chat.engine, n_tokens)
    chat_id = store.create_chat(chat.model_id, "balanced", "", "a full context")
    store.add_message(chat_id, "user", "hi")
    text = "".join(t["text"] for t in tokens)
    store.add_message(chat_id, "assistant", text, finish_reason="context", seed=1, tokens=tokens)
    return chat_id, tokens


def answer_tokens(eng, n_tokens: int) -> list[dict]:
    """n_tokens real tokens of the model, as an answer stores them, each with two candidates."""
    sentence = eng.encode(prompt="Once upon a time there was a little girl named Lily. ", raw=True)
    ids = ([i for i in sentence if i not in eng.tokenizer.special_ids] * 40)[:n_tokens]
    tokens = [
        {
            "id": i,
            "text": eng.token_text(i),
            "logprob": -0.1,
            "p_sample": 0.9,
            "entropy": 0.5,
            "top": [
                {"id": i, "text": eng.token_text(i), "logprob": -0.1, "p_sample": 0.9},
                {"id": 7, "text": eng.token_text(7), "logprob": -2.5, "p_sample": 0.1},
            ],
        }
        for i in ids
    ]
    return tokens


def test_b_where_the_context_is_full_is_refused_in_words_and_keeps_the_answer(tiny, store, tmp_path):
    # The tiny model's context is 256 tokens; "hi" (4 tokens) and a 252-token answer fill it. `b` at the last
    # token went on to the engine, which refused "prompt is 256 tokens but the model's context is
    # 256; shorten it to at most 255 tokens", and the old answer had left the screen.
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            chat_id, tokens = stored_long_answer(store, chat, 252)
            said = []
            await chat.open_chat(chat_id)
            await pilot.pause()
            chat.notify = lambda message, *a, **kw: said.append(message)
            await pilot.press("f5", "end", "b")
            await pilot.pause()
            refused = (type(app.screen).__name__, list(said), [w.content for w in chat.messages])
            # At the first token there is room: the picker opens. When the answer fails all the
            # same (here: an engine that refuses), the old answer comes back on screen.
            said.clear()
            await pilot.press("home", "b")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "CandidatePicker")

            def refuse(*a, **kw):
                raise RuntimeError("the engine refused")

            app.engine.generate = refuse
            await pilot.press("enter")
            await wait_for(pilot, lambda: any("generation failed" in m for m in said))
            await wait_for(pilot, lambda: len(chat.messages) == 2)
            await pilot.pause()
            return refused, said, [w.content for w in chat.messages], chat.messages[-1].tokens == tokens

    refused, failed, shown, same_tokens = run(go())
    screen, said, messages = refused
    assert screen == "ChatScreen"  # no picker
    assert len(said) == 1 and said[0].startswith("no room to continue from here: the context is full")
    assert "token" in said[0] and "shorten it" not in said[0]
    assert len(messages) == 2 and "Once upon a time" in messages[1]
    assert any("the engine refused" in m for m in failed)
    assert shown == messages and same_tokens  # the old answer, back


def test_b_where_an_answer_filled_the_context_counts_the_prompt_that_answer_had(tiny, store, tmp_path):
    # QA: an answer whose prompt kept an earlier turn filled the context; the next message would go
    # without that turn (the status line: "1 turn out"). `b` at the answer's end counted the room
    # with the next message's count, found some, and the branch, sent with the answer's own prompt,
    # got the engine's "prompt is 256 tokens but the model's context is 256; shorten it to at most
    # 255 tokens". It is the prompt the branch goes out with that counts.
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            eng, earlier = chat.engine, SENTENCE * 3
            asked = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": earlier}]
            asked.append({"role": "user", "content": "more"})
            prompt = len(eng.encode(messages=asked))  # within the prompt's room (256 less 64): nothing dropped
            tokens = answer_tokens(eng, 256 - prompt)
            chat_id = store.create_chat(chat.model_id, "balanced", "", "a full context, a turn out")
            store.add_message(chat_id, "user", "hi")
            store.add_message(chat_id, "assistant", earlier, finish_reason="length", seed=1)
            store.add_message(chat_id, "user", "more")
            text = "".join(t["text"] for t in tokens)
            store.add_message(chat_id, "assistant", text, finish_reason="context", seed=1, tokens=tokens)
            await chat.open_chat(chat_id)
            await pilot.pause()
            out, said = chat.dropped_turns, []
            chat.notify = lambda message, *a, **kw: said.append(message)
            await pilot.press("f5", "end", "b")
            await pilot.pause()
            return prompt, out, type(app.screen).__name__, said, len(chat.messages)

    prompt, out, screen, said, shown = run(go())
    assert prompt < 192 and out >= 1  # the next message goes without the first turn; this answer's prompt had it
    assert screen == "ChatScreen" and shown == 4  # no picker, the answer still there
    assert len(said) == 1 and said[0].startswith("no room to continue from here: the context is full"), said
    assert f"a {prompt}-token prompt and {256 - prompt} tokens of the answer fill the 256-token context" in said[0]


# ---------------------------------------------------------------- 80x24


def test_at_80x24_notices_leave_the_branch_pickers_title_alone(tiny, store, tmp_path):
    import shutil

    from textual.widgets._toast import Toast, ToastRack

    model = with_template(shutil.copytree(tiny, tmp_path / "templated"))  # no "no chat template" notice

    async def go():
        app = make_app(model, store, tmp_path)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            chat = await loaded(pilot)
            chat_id, _ = stored_long_answer(store, chat, 40)
            await chat.open_chat(chat_id)  # "opened …"
            await pilot.pause()
            await pilot.press("ctrl+s")  # "exported", two paths
            await pilot.pause()
            assert len(app.screen.get_child_by_type(ToastRack).query(Toast)) == 2
            await pilot.press("f5", "b")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "CandidatePicker")
            await pilot.pause(0.3)
            box = app.screen.query_one("Vertical").region
            # Neither the picker's notices nor the chat's behind it (the terminal shows both screens).
            racks = [app.screen.get_child_by_type(ToastRack), chat.get_child_by_type(ToastRack)]
            over = [t.region for r in racks for t in r.query(Toast) if t.visible and t.region.overlaps(box)]
            await pilot.press("escape")  # the notices are still there, back on the chat
            await pilot.pause()
            back = [t for t in app.screen.get_child_by_type(ToastRack).query(Toast) if t.visible]
            return over, len(back)

    over, back = run(go())
    assert over == []
    assert back == 2


# ---------------------------------------------------------------- what the next message leaves out


SENTENCE = "Once upon a time there was a little girl named Lily. "  # ~37 tokens of the tiny tokenizer


def status(chat) -> str:
    return str(chat.query_one("#status").render())


def notices(chat) -> list[str]:
    return [str(w.render()) for w in chat.transcript.query(".context-notice")]


def test_the_turns_out_of_context_count_one_thing_live_after_a_switch_and_reopened(tiny, store, tmp_path):
    # Live, the status line counted the last prompt's dropped turns; after a branch switch or a
    # reopen, a prediction for the next message: switching to a same-length sibling (ctrl+r on a
    # greedy preset says the same again) turned "4 turns" into "5 turns" and added a notice. Now it
    # is always the next message's count, said so.
    async def go():
        async with chat_app(tiny, store, tmp_path, temperature=0.0, max_new_tokens=24, seed=1) as (app, pilot, chat):
            await pilot.resize_terminal(140, 32)  # the status line's long form
            for turn in range(8):  # set as a paste would, not typed key by key (100 keys a turn took 15 s)
                chat.query_one("#prompt", Input).value = f"{turn}: " + SENTENCE * 2
                await pilot.press("enter")
                await answered(pilot, chat)
                if chat.dropped_turns:
                    break
            await pilot.pause()
            live = status(chat), notices(chat), chat.dropped_turns
            first = chat.messages[-1].message_id
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: chat.messages[-1].message_id not in (None, first) and not chat.generating)
            await pilot.pause()
            again = status(chat), notices(chat), chat.dropped_turns
            chat.messages[-1].focus()
            await pilot.press("ctrl+left")
            await wait_for(pilot, lambda: chat.messages[-1].message_id == chat.messages[-1].branches[0])
            await pilot.pause()
            switched = status(chat), notices(chat), chat.dropped_turns
            return live, again, switched, chat.messages[-1].content

    live, again, switched, content = run(go())
    line, shown, dropped = live
    assert dropped > 0 and f"next message: {dropped} turn" in line
    assert shown[-1].startswith(f"⋯ the first {dropped} turn" if dropped > 1 else "⋯ the first turn")
    assert again == live and switched == live  # the same answer again, and switched back to: nothing changed


def store_chat(store, model_id: str, answers: list[int]) -> int:
    """A stored chat of len(answers) turns: a short question, then an answer of that many sentences."""
    chat_id = store.create_chat(model_id, "balanced", "", "a long chat")
    for turn, n in enumerate(answers):
        store.add_message(chat_id, "user", f"Tell me story {turn}.")
        store.add_message(chat_id, "assistant", SENTENCE * n, preset="balanced", finish_reason="length", seed=1)
    return chat_id


def test_the_status_line_and_ctrl_t_say_how_full_the_context_is(tiny, store, tmp_path):
    # Nothing said how full the context was until turns went: the status line said "ready", ctrl+t
    # "383 tokens" without "of 512" or the room left, its head cut at the terminal's edge, and its
    # model panel split "LlamaForCausalL / M" at 80 columns.
    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            chat = await loaded(pilot)
            eng, room = chat.engine, 256 - 64  # balanced asks 512 new tokens: a quarter of the context is kept
            for n in range(4, 20):  # an answer that leaves the next prompt between 75% and all of its room
                chat_id = store_chat(store, chat.model_id, [n])
                conv = [{"role": m.role, "content": m.content} for m in store.get_chat(chat_id).messages]
                prompt = len(eng.encode(messages=[*conv, {"role": "user", "content": ""}]))
                if prompt > 0.8 * room:
                    break
            await chat.open_chat(chat_id)
            await pilot.pause()
            full = status(chat), prompt
            await pilot.press("ctrl+t")
            await pilot.pause()
            head = str(app.screen.query_one("#tokens-head").render()), len(app.screen.ids)
            await pilot.press("escape")
            # At 80 columns, a chat whose next message goes without its first turns: the head wraps.
            await pilot.resize_terminal(80, 24)
            chat_id = store_chat(store, chat.model_id, [1, 1, 4])
            await chat.open_chat(chat_id)
            await pilot.pause()
            out = chat.dropped_turns  # (the status line's count)
            await pilot.press("ctrl+t")
            await pilot.pause()
            region = app.screen.query_one("#tokens-head").region
            shown = " ".join(line.strip() for line in screen_lines(app)[region.y : region.bottom])
            return full, head, (out, shown), screen_lines(app)

    (line, prompt), (head, n), (out, shown), screen = run(go())
    assert any("architecture  LlamaForCausalLM " in row for row in screen)  # the model panel: not "…CausalL / M"
    # Counted as ctrl+t counts it, of the whole context, and where turns go: "context 88% full" (of the
    # prompt's room) read as a share of the context, beside ctrl+t's "prompt 168/256" (66%).
    assert prompt <= 192 and f"ready · prompt {prompt}/256 · old turns go past 192" in line
    # ctrl+t counts the next message's prompt (the box empty: an empty message after the chat, as the
    # status line does; it counted the chat alone, 5 tokens fewer than the status line on a chat
    # template) and the room after it.
    assert n == prompt
    assert head.startswith(f" {n} tokens   prompt {n}/256 · answer room {256 - n} (max tokens 256)")  # capped
    assert out == 3 and shown.endswith("without the chat's first 3 turns, which no longer fit the context"), shown


def test_the_status_line_keeps_the_model_name_where_the_states_long_words_do_not_fit():
    # QA: at 120x40 the line read "填空  ready · 2 turns out · prompt 369/512 │ balanced T0.7 ...": the
    # model name went to make room for the state's long words, which did not fit all the same. Where
    # they fit (140 columns), they are shown; where not, the short state beside the model name.
    from textual.app import App

    from tiankong.engine.params import SamplingParams
    from tiankong.tui.widgets.status import StatusBar, params_summary

    class Bar(App):
        def compose(self):
            yield StatusBar()

    long = "ready · next message: 2 turns out of context · prompt 369/512 · old turns go past 384"

    async def go(width: int) -> str:
        app = Bar()
        async with app.run_test(size=(width, 3)) as pilot:
            bar = app.query_one(StatusBar)
            params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, max_new_tokens=512)
            bar.set(model="tiankong-mini", preset="balanced", settings=params_summary(params, 512))
            bar.set(state=long, short_state="ready · 2 turns out · prompt 369/512")
            await pilot.pause()
            return str(bar.render())

    narrow, wide = run(go(120)), run(go(140))
    assert narrow.startswith(" 填空  tiankong-mini │ ready · 2 turns out · prompt 369/512 │ balanced "), narrow
    assert narrow.endswith("seed random") and len(narrow) <= 120
    assert wide.startswith(f" 填空  {long} │ balanced "), wide  # README's words
    assert wide.endswith("seed random") and len(wide) <= 140


def test_ctrl_t_leaves_out_every_turn_the_next_message_leaves_out(tiny, store, tmp_path):
    # QA: each answer filled the context, so the next message goes without every turn ("4 turns
    # out"); ctrl+t fitted the chat as it stood, ending in the last answer: that turn cannot go, the
    # fit failed, and the whole chat showed, "prompt 540/128", with no turn left out.
    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            chat = await loaded(pilot)
            await chat.open_chat(store_chat(store, chat.model_id, [6, 6, 6, 6]))  # each turn past 192 tokens
            await pilot.pause()
            line, counted = status(chat), chat.next_prompt
            await pilot.press("ctrl+t")
            await pilot.pause()
            screen = app.screen
            return line, counted, str(screen.query_one("#tokens-head").render()), len(screen.ids), screen.messages

    line, counted, head, n, messages = run(go())
    assert "next message: 4 turns out of context" in line
    assert n == counted < 192 and f"prompt {n}/256" in head  # what the next message goes out with
    assert "without the chat's first 4 turns, which no longer fit the context" in head
    assert messages == [{"role": "user", "content": ""}]  # the box is empty: an empty message of the user's


def test_the_ctrl_t_head_breaks_between_its_phrases_at_80_and_120_columns(tiny, store, tmp_path):
    # QA: at 80x24 the head's first line wrapped mid-phrase ("… · the next" / "answer's prompt, as chat
    # template"). Each line now holds whole phrases, a new line starting where the next would not fit.

    async def go(width: int):
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=(width, 24)) as pilot:
            chat = await loaded(pilot)
            await chat.open_chat(store_chat(store, chat.model_id, [1, 1, 4]))
            await pilot.pause()
            await pilot.press("ctrl+t")
            await pilot.pause()
            region = app.screen.query_one("#tokens-head").region
            return [line.strip() for line in screen_lines(app)[region.y : region.bottom]], len(app.screen.ids)

    for width in (80, 120):
        lines, n = run(go(width))
        assert lines[0].startswith(f"{n} tokens   prompt"), lines
        phrases = [
            f"prompt {n}/256 · answer room {256 - n} (max tokens 256)",  # the preset's 512, capped
            "the next answer's prompt, as plain text (no chat template)",  # (the tiny model has none)
            "without the chat's first 3 turns, which no longer fit the context",  # (an empty message to come)
        ]
        for phrase in phrases:  # each whole on one line
            assert any(phrase in line for line in lines), (width, lines)
        assert all(not line.startswith("·") and not line.endswith("·") for line in lines), lines


# ---------------------------------------------------------------- a message longer than the context


def test_a_message_too_long_says_how_to_shorten_it_and_is_marked_unanswered_when_reopened(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            said = []
            # ~190 tokens: over the 192 the context leaves a prompt beside 512 new tokens (a quarter
            # kept: 64), within the 255 it leaves beside one: a lower max tokens (f3) would do.
            chat.query_one("#prompt").value = SENTENCE * 5 + "Lily"
            await pilot.press("enter")
            await wait_for(pilot, lambda: bool(notices(chat)))
            lower = notices(chat)
            chat.notify = lambda message, *a, **kw: said.append(message)
            chat.query_one("#prompt").value = SENTENCE * 10  # ~370 tokens: no max tokens makes it fit
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(chat.messages) == 2)
            await pilot.pause()
            longer, told = notices(chat), list(said)
            chat_id = chat.chat_id
            await chat.action_new_chat()
            await chat.open_chat(chat_id)
            await pilot.pause()
            return lower, longer, told, notices(chat), [m.role for m in store.get_chat(chat_id).messages]

    lower, longer, said, reopened, stored = run(go())
    (first,) = lower
    assert first.startswith("⚠ not answered: the last message is ")
    assert first.endswith(
        "shorten the last message: ctrl+l edits the last message, or a lower max tokens (f3; now 512) leaves "
        "the prompt more room"
    )
    assert longer[0] == first
    second = longer[1]
    assert second.endswith("shorten the last message: ctrl+l edits the last message")
    assert said[-1] in second  # notified too
    # Both messages stay stored, turns of the chat; reopened, each is marked as not answered: the
    # last one in the same words, the one another message followed as such.
    assert stored == ["user", "user"]
    assert reopened == [
        "⚠ not answered: no answer is stored for it (the message after it was sent instead)",
        second,
    ]


def test_a_message_too_long_to_tokenize_says_the_length_to_aim_for(tiny, store, tmp_path):
    # QA: a message refused by its characters, before it is tokenized, said "far more than the
    # context can hold; shorten the last message" and no length. The length: the context in
    # config.json less the answer's room (max tokens, at most a quarter of the context: README).
    import json

    ctx = json.loads((tiny / "config.json").read_text())["max_position_embeddings"]
    text = "word " * (100 * ctx)

    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            chat.query_one("#prompt").value = text
            await pilot.press("enter")
            await wait_for(pilot, lambda: bool(notices(chat)))
            return notices(chat), chat.params.max_new_tokens

    (said,), new = run(go())
    room = min(new, ctx // 4)
    assert said == (
        f"⚠ not answered: the last message is {len(text):,} characters, far more than the model's context of "
        f"{ctx} tokens can hold; shorten the last message to about {ctx - room} tokens, which leaves {room} for "
        "the answer: ctrl+l edits the last message"
    )


# ---------------------------------------------------------------- opening a long chat


def test_a_long_chat_opens_a_chunk_at_a_time_saying_so_and_refuses_to_answer_meanwhile(
    tiny, store, tmp_path, monkeypatch
):
    # 1200 messages froze the screen for seconds, the status line saying "ready". Now the last
    # OPEN_CHUNK messages show at once, the rest come in above them from a worker, and the status
    # line says "opening… (N messages)" until the chat is whole. (Here 20 at a time of 130.)
    import tiankong.tui.screens.chat_history as chat_history

    monkeypatch.setattr(chat_history, "OPEN_CHUNK", 20)

    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            chat_id = store.create_chat(chat.model_id, "balanced", "", "long")
            for turn in range(65):
                store.add_message(chat_id, "user", f"question {turn}")
                store.add_message(chat_id, "assistant", f"answer {turn}", finish_reason="eos", seed=1)
            said, seen = [], []
            chat.notify = lambda message, *a, **kw: said.append(message)
            set_status = chat._status

            def record(state=None, *a, **kw):  # what the status line said, and what was shown then
                set_status(state, *a, **kw)
                seen.append((status(chat), [w.content for w in chat.messages]))

            chat._status = record
            await chat.open_chat(chat_id)
            await chat.send("too soon")  # refused: the chat is not whole yet
            await wait_for(pilot, lambda: not chat.opening)
            await pilot.pause()
            return seen, said, status(chat), [w.content for w in chat.messages], chat.transcript

    seen, said, line, shown, transcript = run(go())
    opening = [(line, msgs) for line, msgs in seen if "opening" in line]
    assert "opening… (130 messages)" in opening[0][0] and opening[0][1] == []
    progress = [(line.split("opening… (")[1].split(")")[0], msgs) for line, msgs in seen if "shown)" in line]
    assert progress[0][0] == "20 of 130 shown" and progress[0][1][-1] == "answer 64"  # the end first
    assert len(progress) >= 3  # a chunk at a time, each said
    assert any(m.startswith("still opening this chat (130 messages)") for m in said)
    assert shown == [f"{kind} {turn}" for turn in range(65) for kind in ("question", "answer")]  # in order
    assert "ready" in line and "opening" not in line and "too soon" not in shown
    assert transcript.scroll_y == transcript.max_scroll_y  # at its end


# ---------------------------------------------------------------- search, new chat


def test_a_search_match_opens_at_the_match_marked_and_enter_in_the_box_opens_it(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            chat_id = store.create_chat(chat.model_id, "balanced", "", "long")
            ids = []
            for turn in range(20):
                ids.append(store.add_message(chat_id, "user", f"question {turn}"))
                story = "the lighthouse keeper" if turn == 3 else f"answer {turn}"
                ids.append(store.add_message(chat_id, "assistant", f"{story}\n\n" + SENTENCE * 3, finish_reason="eos"))
            await pilot.press("ctrl+o")
            await pilot.pause()
            await pilot.press("slash", *"lighthouse", "enter")  # enter in the search box opens the match
            await wait_for(pilot, lambda: len(chat.messages) == 40)
            await pilot.pause()
            await pilot.pause()
            found = [w for w in chat.messages if w.has_class("-found")]
            t = chat.transcript
            top, bottom = t.scroll_y, t.scroll_y + t.scrollable_content_region.height
            at = [w.virtual_region.y for w in found]
            return found, ids[7], (top, bottom, t.max_scroll_y, at), app.screen is chat

    found, match, (top, bottom, end, at), back = run(go())
    assert back
    (widget,) = found
    assert widget.message_id == match and widget.content.startswith("the lighthouse keeper")
    assert top <= at[0] < bottom and top < end  # on screen, not the chat's end


def test_ctrl_n_keeps_the_system_prompt_and_says_so(tiny, store, tmp_path):
    # A new chat kept the system prompt without a word, even one that came from a chat opened with ctrl+o.
    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=2) as (app, pilot, chat):
            chat_id = store.create_chat(chat.model_id, "balanced", "You are a pirate.", "old")
            store.add_message(chat_id, "user", "hi")
            await chat.open_chat(chat_id)
            said = []
            chat.notify = lambda message, *a, **kw: said.append(message)
            await pilot.press("ctrl+n")
            await pilot.pause()
            kept = list(said)
            chat.query_one("#system").value = ""
            said.clear()
            await pilot.press("ctrl+n")
            await pilot.pause()
            return kept, said

    kept, cleared = run(go())
    assert kept == ["new chat\nkept the system prompt “You are a pirate.” (clear the system field to drop it)"]
    assert cleared == ["new chat"]


def test_at_80_columns_the_status_line_keeps_its_settings_whole(tiny, store, tmp_path):
    # "inspecting: ← → (or [ ]) move, home/end, esc returns" left no room for the settings, and a
    # long state cut "seed random" to "seed": the state now has a short form, and is cut before them.
    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            chat = await loaded(pilot)
            chat_id, _ = stored_long_answer(store, chat, 40)
            await chat.open_chat(chat_id)
            await pilot.pause()
            await pilot.press("f5")
            await pilot.pause()
            inspecting = screen_lines(app)[0]
            chat._status("a state far too long to fit in eighty columns beside the settings, whatever it says")
            await pilot.pause()
            return inspecting, screen_lines(app)[0]

    inspecting, long = run(go())
    assert "inspecting · esc returns" in inspecting and inspecting.rstrip().endswith("max256 seed random")
    assert long.rstrip().endswith("│ balanced T0.7 k40 p0.9 max256 seed random") and "a state far too long" in long
