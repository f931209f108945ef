"""Fixes from QA pass 36 on the playground and generate: f3's max tokens no more than the model's
context (a preset's larger one used capped, and said so), a reopened branch's max tokens as set, the
branch keys in a focused message's footer, three cut-offs (the status line in f5 at 80 columns, the
votes table's winner, the rank queue's last round under its notices), and `generate --n` without
--seed drawing one base seed. On the tiny random Llama (tests/tiny_models.py; a 256-token context)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import cli
from screen_text import screen_lines
from test_tui_chat import answered, make_app, open_newest_chat, run, send, wait_for
from test_tui_chat_screen import stored_long_answer
from test_tui_markup import chat_app
from textual.widgets import DataTable, Input, Static
from textual.widgets._footer import FooterKey
from tiny_models import make_model
from tui_host import Host

from tiankong.tui.queue import answers_queue
from tiankong.tui.screens.compare import CompareScreen
from tiankong.tui.screens.preset_editor import PresetEditor
from tiankong.tui.screens.votes import VotesScreen
from tiankong.tui.store import Response, Vote


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


def notes(app) -> list[str]:
    return [f"{n.title}\n{n.message}" for n in app._notifications]


async def open_editor(pilot) -> PresetEditor:
    await pilot.press("f3")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, PresetEditor))
    return pilot.app.screen


def hint_of(editor: PresetEditor, name: str) -> str:
    """The "allowed · recommended" cell beside field `name`."""
    inputs = [w for w in editor.query(Input) if w.id and w.id.startswith("field-") and w.id != "field-stop"]
    index = [w.id for w in inputs].index(f"field-{name}")
    return str(list(editor.query(".field-hint"))[index].render())


# ---------------------------------------------------------------- 2: f3's max tokens and the context


def test_f3_refuses_max_tokens_above_the_context_and_shows_it_as_the_bound(tiny, store, tmp_path):
    # QA: "max_new_tokens 512 [1, 1000000] · rec 128–512" beside a 512-token model, and 1000 accepted.
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            context = chat.engine.cfg.max_seq_len
            before = chat.params
            editor = await open_editor(pilot)
            hint = hint_of(editor, "max_new_tokens")
            editor.query_one("#field-max_new_tokens", Input).value = str(context + 1)
            await pilot.press("enter")
            await pilot.pause()
            still = app.screen is editor
            if not still:  # accepted: what the fix refuses
                return context, None, hint, still, "", False, chat.params
            error = str(editor.query_one("#editor-error", Static).render())
            invalid = editor.query_one("#field-max_new_tokens", Input).has_class("-invalid")
            editor.query_one("#field-max_new_tokens", Input).value = "200"
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.screen is chat)
            return context, before, hint, still, error, invalid, chat.params

    context, before, hint, still, error, invalid, after = run(go())
    assert context == 256
    assert hint.startswith(f"[1, {context}]"), hint
    assert still and invalid
    assert f"max_new_tokens must be in [1, {context}], got {context + 1}" in error, error
    assert after.max_new_tokens == 200 and after.replace(max_new_tokens=before.max_new_tokens) == before


def test_a_preset_above_the_context_opens_capped_says_so_and_stays_unedited(tiny, store, tmp_path):
    # balanced's max tokens, 512, on the 256-token model: used capped. The editor shows 256 and says
    # why; an edit of another field keeps the preset's 512 (no "(edited)" for an edit nobody made there).
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            preset = chat.preset.params.max_new_tokens
            editor = await open_editor(pilot)
            shown = editor.query_one("#field-max_new_tokens", Input).value
            editor.query_one("#field-max_new_tokens", Input).focus()
            await pilot.pause()
            help_line = str(editor.query_one("#editor-help", Static).render())
            await pilot.press("enter")  # applied as it opened: nothing changed
            await wait_for(pilot, lambda: app.screen is chat)
            unchanged = chat.params == chat.preset.params
            editor = await open_editor(pilot)
            editor.query_one("#field-temperature", Input).value = "0.5"
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.screen is chat)
            edited = chat.params
            await pilot.press("f2", "f2")  # (the first only warns of the edit) to chat: 512 too
            await pilot.pause()
            return preset, shown, help_line, unchanged, edited, chat.preset.name, notes(app)

    preset, shown, help_line, unchanged, edited, now, said = run(go())
    assert preset == 512 and shown == "256"
    assert "the preset's 512, used capped at the model's 256-token context" in help_line, help_line
    assert unchanged
    assert edited.max_new_tokens == 512 and edited.temperature == 0.5
    assert now == "chat"
    assert any(
        n.startswith("preset chat") and "max tokens 512: used capped at this model's 256-token" in n for n in said
    )


# ---------------------------------------------------------------- 3: a reopened branch's max tokens


def test_a_reopened_chat_names_the_max_tokens_set_not_a_branch_continuations(tiny, store, tmp_path):
    # QA: max tokens 1000, a branch from token 4, reopened: "… max 996 …" (the continuation's budget).
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            chat.params = chat.params.replace(max_new_tokens=10, seed=3, stop=())  # an f3 edit: "(edited)"
            await send(pilot, "hi")
            old = await answered(pilot, chat)
            await pilot.press("f5", "right", "right", "right", "b")  # token 4, branch
            await pilot.pause()
            await pilot.press("down", "enter")
            await wait_for(pilot, lambda: chat.messages[-1] is not old)
            new = await answered(pilot, chat)
            stored = store.get_message(new.message_id)
            await pilot.press("escape", "ctrl+n")
            await pilot.pause()
            app.clear_notifications()
            await open_newest_chat(pilot, chat, 2)
            return stored, notes(app)

    stored, said = run(go())
    assert sum(t.get("picked", False) for t in stored.tokens) == 1 and stored.tokens[3].get("picked")
    assert stored.params["max_new_tokens"] == 6  # the record replays its continuation (tests/test_branches.py)
    [note] = [n for n in said if "with f3 edits" in n]
    assert "max 10 " in note and "max 6" not in note, note


# ---------------------------------------------------------------- 4: the branch keys in the footer


def test_a_focused_message_with_siblings_shows_the_branch_keys_and_v_in_the_footer(tiny, store, tmp_path):
    # QA: the footer of an answer with "‹ 2/2 ›" named ← → c b and never ctrl+←/→ or v, though both work.
    async def go():
        async with chat_app(tiny, store, tmp_path, size=(140, 32)) as (app, pilot, chat):
            chat.params = chat.params.replace(max_new_tokens=6)

            def footer() -> list[str]:
                return [k.key for k in chat.query(FooterKey) if k.display]

            await send(pilot, "hi")
            first = await answered(pilot, chat)
            first.focus()
            await pilot.pause()
            alone = footer()
            await pilot.press("ctrl+left")  # no branch here: the key still says so
            await pilot.pause()
            said = notes(app)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: chat.messages[-1] is not first)
            second = await answered(pilot, chat)
            second.focus()
            await pilot.pause()
            branched = footer()
            line = screen_lines(app)[-1]
            await pilot.press("ctrl+left")
            await wait_for(pilot, lambda: chat.messages[-1].message_id == first.message_id)
            back = chat.messages[-1]
            back.focus()
            await pilot.pause()
            return alone, said, branched, line, footer(), back.border_subtitle, chat.help_sections()

    alone, said, branched, line, back, label, help_sections = run(go())
    assert not {"ctrl+left", "ctrl+right", "v"} & set(alone), alone
    assert any("no other branch here" in n for n in said), said
    assert {"ctrl+left", "ctrl+right", "v"} <= set(branched), branched
    assert "◀ branch" in line and "branch ▶" in line and "v vote branch" in line, line
    assert {"ctrl+left", "ctrl+right", "v"} <= set(back) and label == "‹ 1/2 ›"
    answer_keys = [k for title, rows in help_sections if title.startswith("an answer") for k, _ in rows]
    assert answer_keys.count("v") == 1 and len(answer_keys) == len(set(answer_keys)), answer_keys


# ---------------------------------------------------------------- 7: cut-offs


def test_cut_state_keeps_whole_parts_before_cutting_a_word():
    from tiankong.tui.widgets.status import cut_state

    assert cut_state("inspecting · esc returns", 15) == "inspecting"
    assert cut_state("inspecting · esc returns", 24) == "inspecting · esc returns"
    assert cut_state("ready · 5 turns out · prompt 300/512", 20) == "ready · 5 turns out"
    assert cut_state("a state far too long to fit", 12) == "a state far…"


def test_f5_at_80_columns_with_an_edited_preset_keeps_the_state_word_whole(tiny, store, tmp_path):
    # QA: "填空  inspecting · e… │ chat (edited) T0.8 k40 p0.95 rep1.1 max1000 seed random" at 80x24.
    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.engine is not None)
            chat = app.chat
            chat_id, _ = stored_long_answer(store, chat, 40)
            await chat.open_chat(chat_id)  # (a balanced chat: the chat preset, edited, after)
            chat._use_preset("chat", quiet=True)
            chat.params = chat.params.replace(max_new_tokens=1000, seed=123456789)  # shown: max256 (capped)
            await pilot.pause()
            await pilot.press("f5")
            await pilot.pause()
            return screen_lines(app)[0]

    status = run(go())
    assert "inspecting │ chat (edited) " in status and "…" not in status, status
    assert status.rstrip().endswith("max256 seed 123456789"), status  # the state cut to "inspecting"


def a_vote(winner: str, other: str) -> Vote:
    responses = [
        Response(label, "/m/a", p, {}, 1, text, "eos") for label, p, text in (("A", winner, "x"), ("B", other, "y"))
    ]
    return Vote(None, "a prompt", [{"role": "user", "content": "a prompt"}], responses, "ranked", [0, 1], "me", True)


@pytest.mark.parametrize("width", [80, 120])
def test_the_votes_table_shows_an_edited_winner_whole(store, width):
    # QA: ctrl+g's winner cell read "chat (edited"; a name past the column's widest is cut with "…", "(edited)" kept.
    store.add_vote(a_vote("chat (edited)", "creative"))
    store.add_vote(a_vote("a-very-long-preset-name-indeed (edited)", "creative"))
    screen = VotesScreen(store)

    async def go():
        async with Host(screen).run_test(size=(width, 24)) as pilot:
            await pilot.pause()
            table = screen.query_one(DataTable)
            cells = [str(table.get_row_at(i)[-1]) for i in range(table.row_count)]
            widths = {c.key.value: c.width for c in table.columns.values()}
            return cells, widths, screen_lines(pilot.app)

    cells, widths, lines = asyncio.run(go())
    assert cells[1] == "chat (edited)" and any("chat (edited) " in line for line in lines), lines
    assert cells[0].endswith("… (edited)") and len(cells[0]) <= widths["winner"]
    assert widths["winner"] >= len("chat (edited)")
    assert sum(widths.values()) + 2 * len(widths) + 2 == width  # the table still fits the screen


def test_the_rank_queues_last_vote_leaves_no_notice_over_the_revealed_round(tmp_path, store):
    # QA (120x40): after the last vote "Saved" and "Queue finished" notices, stacked top right, covered
    # the revealed column titles and the prompt line. The vote bar says both; earlier rounds' go.
    lines = [
        {"prompt": p, "preset": preset, "seed": 10 + i, "text": t, "finish_reason": "eos"}
        for p, texts in (("p1", ["a", "b"]), ("p2", ["c", "d"]))
        for i, (t, preset) in enumerate(zip(texts, ["chat (edited)", "creative"], strict=True))
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    screen = CompareScreen([], [], store, "ann", queue=answers_queue(path))

    async def go():
        async with Host(screen).run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.pause()
            await pilot.press("1", "enter")
            await pilot.pause()
            first = notes(pilot.app)
            await pilot.press("2", "enter")
            await pilot.pause()
            return first, notes(pilot.app), str(screen.query_one("#vote-bar", Static).content)

    first, last, bar = asyncio.run(go())
    assert any(n.startswith("Saved\nVote #1 saved: A better") for n in first), first  # mid-queue: named there
    assert not any(n.startswith(("Saved", "Queue finished")) for n in last), last
    assert bar.startswith("✓ Vote #2 saved: B better · All 2 rounds done"), bar


# ---------------------------------------------------------------- 8: generate --n without --seed


def test_generate_n_without_a_seed_draws_one_base_seed_for_the_run(tiny, monkeypatch, capsys):
    # QA: `generate -p Hi --n 3` gave seeds 461221941, 727226699, 93614050; README says seed, seed+1, ...
    args = ("generate", "-m", tiny, "--raw", "-p", "Hi", "-p", "Ho", "--n", "3", "--max-new-tokens", "2")
    runs = []
    for _ in range(2):
        code, out, err = cli(monkeypatch, capsys, *args, "--format", "jsonl")
        assert code == 0, err
        runs.append([json.loads(line) for line in out.splitlines()])
    for records in runs:
        seeds = [r["seed"] for r in records]
        base = seeds[0]
        assert seeds == [base, base + 1, base + 2] * 2, seeds  # sample i of every prompt: base + i
        assert all(r["params"]["seed"] == r["seed"] for r in records)
    assert runs[0][0]["seed"] != runs[1][0]["seed"]  # drawn afresh for each run
    # --seed with the first record's seed repeats the run.
    code, out, err = cli(monkeypatch, capsys, *args, "--format", "jsonl", "--seed", runs[0][0]["seed"])
    again = [json.loads(line) for line in out.splitlines()]
    assert [(r["seed"], r["text"]) for r in again] == [(r["seed"], r["text"]) for r in runs[0]]
