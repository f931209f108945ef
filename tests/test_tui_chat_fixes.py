"""Fixes from a QA pass on the chat playground: a draft survives ctrl+l, a new or opened chat
focuses the prompt, the candidates panel names a token picked with `b`, f5/esc in a narrow
terminal leaves the panel as it was, and the f3 editor's error goes once the value is fixed.
On the tiny random Llama (tests/tiny_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.color import Color, ColorSystem
from screen_text import screen_lines
from test_tui_chat import answered, chat_app, open_newest_chat, run, send, wait_for
from textual.widgets import Input
from tiny_models import make_model

from tiankong.tui.screens.preset_editor import PresetEditor
from tiankong.tui.widgets.answer_tokens import HEAT, heat_style
from tiankong.tui.widgets.candidates import CandidatesPanel
from tiankong.tui.widgets.message import AssistantMessage
from tiankong.tui.widgets.prompt import PromptInput

DRAFT = "Hello 你好 🐱 café\nsecond line"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


def test_a_draft_typed_before_ctrl_l_comes_back_after_esc_and_after_the_resend(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=4) as (app, pilot, chat):
            prompt = chat.query_one("#prompt", PromptInput)
            await send(pilot, "hi")
            await answered(pilot, chat)
            prompt.text = DRAFT
            await pilot.press("ctrl+l")
            editing = prompt.text
            await pilot.press("escape")
            after_esc = prompt.text
            await pilot.press("ctrl+l", "ctrl+l")  # twice: the draft is kept, not the message it showed
            prompt.text = "hello again"
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.messages[0].content == "hello again")
            await answered(pilot, chat)
            return editing, after_esc, prompt.text, chat.editing_id

    editing, after_esc, after_resend, editing_id = run(go())
    assert editing == "hi"
    assert after_esc == DRAFT
    assert after_resend == DRAFT and editing_id is None


def test_a_new_chat_focuses_the_prompt_though_an_answer_had_the_focus(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=4) as (app, pilot, chat):
            prompt = chat.query_one("#prompt", PromptInput)
            await send(pilot, "hi")
            answer = await answered(pilot, chat)
            answer.focus()
            await pilot.press("ctrl+n")
            await pilot.press("x")  # (on a focused answer: nothing; b and v would act on it)
            return app.focused is prompt, prompt.text, chat.messages

    assert run(go()) == (True, "x", [])


def test_an_opened_chat_focuses_the_prompt(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=4) as (app, pilot, chat):
            prompt = chat.query_one("#prompt", PromptInput)
            await send(pilot, "hi")
            answer = await answered(pilot, chat)
            answer.focus()  # (shift+tab) the screen would give it the focus back, but it is gone
            await open_newest_chat(pilot, chat, 2)
            await pilot.pause()
            await pilot.press("y")
            return app.focused is prompt, prompt.text

    assert run(go()) == (True, "y")


@pytest.mark.parametrize("system", [ColorSystem.EIGHT_BIT, ColorSystem.STANDARD], ids=["256", "16"])
def test_the_heatmap_colours_stay_apart_in_256_and_16_colour_terminals(system):
    # As rich draws them there (Color.downgrade): in tmux's 256 colours <30% and <60% were both 94.
    codes = [Color.parse(colour).downgrade(system).number for _, colour, _ in HEAT]
    assert len(set(codes)) == len(HEAT), codes
    assert [heat_style(p) for p in (0.05, 0.299, 0.588, 0.8, 0.95)] == [f"on {c}" for _, c, _ in HEAT]


def _panel_text(token: dict) -> str:
    panel = CandidatesPanel()
    panel._token = token
    return panel._build(40).plain


def test_the_candidates_panel_says_a_token_was_picked_not_chosen_or_cut():
    top = [
        {"id": 1, "text": " cat", "logprob": -0.1, "p_sample": 1.0},
        {"id": 2, "text": " dog", "logprob": -4.0, "p_sample": 0.0},
    ]
    sampled = {"id": 1, "text": " cat", "logprob": -0.1, "p_sample": 1.0, "entropy": 0.5, "top": top}
    picked = {**top[1], "entropy": 0.5, "top": top, "picked": True}
    older = {k: v for k, v in picked.items() if k != "picked"}  # a branch stored before tokens were marked
    text = _panel_text(picked)
    assert text.startswith("picked (branch) ␣dog") and "chosen" not in text
    (row,) = [line for line in text.splitlines() if line.startswith("▶")]
    assert "␣dog" in row and row.endswith("picked") and "cut" not in row
    assert _panel_text(older) == text
    kept = _panel_text({**top[0], "entropy": 0.5, "top": top, "picked": True})  # one the preset kept: its share
    assert kept.startswith("picked (branch) ␣cat") and "100%" in kept.splitlines()[-2]
    text = _panel_text(sampled)
    assert text.startswith("chosen ␣cat") and "picked" not in text
    assert [line for line in text.splitlines() if line.startswith("✗")][0].endswith("cut")


def test_a_token_picked_with_b_is_stored_as_picked_and_shown_so_in_f5(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=6, seed=3, stop=()) as (app, pilot, chat):
            await send(pilot, "hi")
            old = await answered(pilot, chat)
            await pilot.press("f5", "right", "right", "b")
            await pilot.pause()
            await pilot.press("down", "enter")
            await wait_for(pilot, lambda: chat.messages[-1] is not old)
            new = await answered(pilot, chat)
            await pilot.press("f5")
            await wait_for(pilot, lambda: chat.inspected is new)
            new.cursor = 0
            await pilot.press("right", "right")
            await pilot.pause()
            shown = str(chat.candidates.render())
            stored = store.get_message(new.message_id).tokens
            return shown, stored

    shown, stored = run(go())
    assert [bool(t.get("picked")) for t in stored[:4]] == [False, False, True, False]
    assert "picked (branch)" in shown and "token 3 of" in shown


def test_the_preset_editor_error_goes_once_the_value_is_fixed(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            await pilot.press("f3")
            editor = app.screen
            assert isinstance(editor, PresetEditor)
            error = editor.query_one("#editor-error")
            field = {name: editor.query_one(f"#field-{name}", Input) for name in ("top_p", "temperature")}
            field["top_p"].value, field["temperature"].value = "1.5", "5"
            await pilot.press("enter")
            await pilot.pause()
            seen = [str(error.render())]
            field["top_p"].value = "0.9"  # fixed: its line goes, the other stays
            await pilot.pause()
            seen.append(str(error.render()))
            field["temperature"].value = "0.7"
            await pilot.pause()
            seen.append(str(error.render()))
            return seen, [f.has_class("-invalid") for f in field.values()], app.screen is editor

    (both, one, none), invalid, still_open = run(go())
    assert "top_p must be in [0, 1], got 1.5" in both and "temperature must be in [0, 2], got 5.0" in both
    assert "top_p" not in one and "temperature must be in [0, 2], got 5.0" in one
    assert none == "" and invalid == [False, False] and still_open  # nothing applied until enter


def test_an_export_folder_that_is_a_file_is_named_so(tiny, store, tmp_path):
    blocker = tmp_path / "exports"
    blocker.write_text("not a folder")

    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=2) as (app, pilot, chat):
            chat.export_dir = blocker
            await send(pilot, "hi")
            await answered(pilot, chat)
            await pilot.press("ctrl+s")
            await pilot.pause()
            return [n.message for n in app._notifications]

    notes = run(go())
    assert f"could not export to {blocker}: {blocker} is a file, not a folder; move that file away" in notes, notes
    assert blocker.read_text() == "not a folder"


def test_leaving_inspect_mode_puts_the_candidates_panel_back_as_it_was(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path, max_new_tokens=4) as (app, pilot, chat):
            await send(pilot, "hi")
            await answered(pilot, chat)
            seen = []
            for size, f4 in (((60, 20), False), ((100, 32), False), ((100, 32), True)):
                await pilot.resize_terminal(*size)
                await pilot.pause()
                if f4:  # hidden by hand, on a wide screen
                    await pilot.press("f4")
                before = chat.candidates.display
                await pilot.press("f5")
                await wait_for(pilot, lambda: chat.inspected is not None)
                during = chat.candidates.display
                await pilot.press("escape")
                await pilot.pause()
                seen.append((before, during, chat.candidates.display))
            return seen

    narrow, wide, hidden = run(go())
    assert narrow == (False, True, False)  # it stayed open over half of a 60-column transcript
    assert wide == (True, True, True) and hidden == (False, True, False)


POEM = (
    "Roses are red,\nViolets are blue,\nSugar is sweet.\n\n"
    "- a list item\n  on two lines\n- b\n\n```\ncode one\ncode two\n```\n\nThe end."
)


def test_an_answer_keeps_the_models_single_line_breaks_streaming_finished_and_reopened():
    # Markdown joins single newlines into one paragraph ("Roses are red, Violets are blue, …"), while
    # f5, ctrl+t and the exports showed the model's lines. Code fences and lists stay as they were.
    from textual.app import App

    class One(App[None]):
        CSS_PATH = Path(__file__).parents[1] / "tui" / "screens" / "chat.tcss"

        def compose(self):
            yield AssistantMessage(title="live")
            yield AssistantMessage(POEM, [], title="lazy", lazy=True)

    def rows(app, widget) -> list[str]:
        region = widget.content_region
        lines = screen_lines(app)[region.y : region.bottom]
        return [line[region.x : region.right].rstrip() for line in lines if line[region.x : region.right].strip()]

    async def go():
        async with One().run_test(size=(60, 40)) as pilot:
            live, lazy = pilot.app.query(AssistantMessage)
            live.start_stream()
            for i in range(0, len(POEM), 7):
                await live.append(POEM[i : i + 7], [])
                await pilot.pause()
            streaming = rows(pilot.app, live)
            await live.finish(POEM, "")
            await pilot.pause(0.1)
            return streaming, rows(pilot.app, live), rows(pilot.app, lazy)

    streaming, finished, reopened = run(go())
    assert finished[:3] == ["Roses are red,", "Violets are blue,", "Sugar is sweet."]
    assert [r.strip() for r in finished[3:5]] == ["• a list item", "on two lines"]
    assert "code one" in finished[6] and "code two" in finished[7] and finished[-1] == "The end."
    assert streaming == finished == reopened
