"""Fixes from a second QA pass of `tiankong chat`: `b` refuses an answer another model wrote, ctrl+c
stops a streaming answer, f2 mid-answer says the new preset applies to the next one, the status line
and ctrl+t count the context alike, the footer names what esc does now, tab moves between the
places that take keys, the f3 editor says an error once, the texts fit 80 columns, and a blank
message is said to be blank. On tiny random Llamas (tests/tiny_models.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from screen_text import screen_lines, template_note_shown
from test_tui_chat import answered, chat_app, loaded, make_app, open_newest_chat, run, send, slow_down, wait_for
from textual.widgets import Input
from tiny_models import make_model, with_template

from tiankong.tui.screens.branch import CandidatePicker
from tiankong.tui.screens.chat_sending import NotAnswered
from tiankong.tui.screens.preset_editor import PresetEditor
from tiankong.tui.widgets.prompt import PromptInput
from tiankong.tui.widgets.status import StatusBar


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny Llama with a chat template (without one, the chat opens with a notice saying so)."""
    return with_template(make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama"))


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """Another model (other weights, so other tokens than `tiny` would write)."""
    return make_model(tmp_path_factory.mktemp("other") / "other-llama", "llama", seed=1)


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


# ---------------------------------------------------------------- b on another model's answer


def test_b_refuses_an_answer_another_model_wrote_but_its_tokens_can_still_be_viewed(tiny, other, store, tmp_path):
    """b on an answer written by another model (the chat reopened with ctrl+o under this one) took the
    picked token's id as this model's, so the branch mixed the two models' tokens."""

    async def write():
        async with chat_app(other, store, tmp_path, max_new_tokens=6, seed=3, stop=()) as (app, pilot, chat):
            await send(pilot, "hi")
            await answered(pilot, chat)

    async def reopen(model):
        async with chat_app(model, store, tmp_path) as (app, pilot, chat):
            await open_newest_chat(pilot, chat, 2)
            app.clear_notifications()
            answer = chat.messages[-1]
            await pilot.press("f5", "right")
            await wait_for(pilot, lambda: chat.inspected is answer)
            viewed = str(chat.candidates.render())
            await pilot.press("b")
            await pilot.pause()
            picker = isinstance(app.screen, CandidatePicker)
            await pilot.press("escape", "escape", "f6")  # the picker if open, inspect mode; the heatmap
            await pilot.pause()
            heat = answer.heatmap and answer._show_tokens()
            return picker, notices(app), viewed, heat

    run(write())
    picker, said, viewed, heat = run(reopen(tiny))
    assert not picker
    (refusal,) = [n for n in said if "written by" in n]
    assert "\n" not in refusal and "other-llama" in refusal and "open the chat with that model" in refusal
    assert "token 2 of" in viewed and "chosen" in viewed and heat  # the tokens are still there to view
    picker, said, _, _ = run(reopen(other))  # the model that wrote it: b picks a candidate
    assert picker and not [n for n in said if "written by" in n]


# ---------------------------------------------------------------- keys while an answer streams


async def streaming(pilot, chat, text: str = "tell me a long story") -> None:
    """Send `text` and wait until its answer has a few tokens (the engine slowed down: it runs on)."""
    slow_down(chat.engine, 0.02)
    await send(pilot, text)
    await wait_for(pilot, lambda: chat.generating and len(chat.messages[-1].tokens) >= 3)


def test_ctrl_c_stops_a_streaming_answer_as_esc_does_and_otherwise_says_how_to_quit(tiny, store, tmp_path):
    """ctrl+c mid-answer only said "Do you want to quit? Press ctrl+q", and the answer ran on."""

    async def go():
        async with chat_app(tiny, store, tmp_path, seed=1, max_new_tokens=1_000_000) as (app, pilot, chat):
            await streaming(pilot, chat)
            await pilot.press("ctrl+c")
            answer = await answered(pilot, chat)
            during = [n.title for n in app._notifications]
            await pilot.press("ctrl+c")  # nothing streams: Textual's own hint
            await pilot.pause()
            return store.get_message(answer.message_id), during, [n.title for n in app._notifications]

    stored, during, idle = run(go())
    assert stored.finish_reason == "cancelled" and 3 <= len(stored.tokens) < 200
    assert "Do you want to quit?" not in during and "Do you want to quit?" in idle


def test_f2_mid_answer_applies_from_the_next_answer_and_says_so(tiny, store, tmp_path):
    """f2 while an answer streamed showed the new preset in the status line at once, beside an answer
    still being written with the old one."""

    async def go():
        async with chat_app(tiny, store, tmp_path, seed=1, max_new_tokens=1_000_000) as (app, pilot, chat):
            bar = chat.query_one(StatusBar)
            await streaming(pilot, chat)
            await pilot.press("f2", "f2")  # (the first only warns: the test's params are edits)
            await pilot.pause()
            during, now, said = bar._parts["preset"], chat.preset.name, notices(app)
            await pilot.press("escape")
            answer = await answered(pilot, chat)
            return during, now, bar._parts["preset"], store.get_message(answer.message_id).preset, said

    during, now, after, stored, said = run(go())
    assert now != "balanced" and during == stored == "balanced (edited)" and after == now
    assert any("from the next answer: this one goes on with balanced (edited)" in n for n in said), said


# ---------------------------------------------------------------- what the screen says


def test_the_footer_names_what_esc_does_now(tiny, store, tmp_path):
    """The footer said "esc stop" with nothing streaming, and in inspect mode, where esc goes back."""

    async def go():
        async with chat_app(tiny, store, tmp_path, seed=1, max_new_tokens=40) as (app, pilot, chat):

            async def footer(esc: str) -> str:
                # The footer once the screen is in the state (esc_means, what the footer's esc binding
                # follows) and drawn: a line that is not blank and the same two frames running. A fixed
                # 0.1 s pause read a footer not yet drawn (blank) on a busy machine.
                await wait_for(pilot, lambda: chat.esc_means() == esc)
                lines = []

                def same_twice() -> bool:
                    lines.append(screen_lines(app)[-1])
                    return bool(lines[-1].strip()) and lines[-2:] == [lines[-1]] * 2

                await wait_for(pilot, same_twice)
                return lines[-1]

            seen = {"idle": await footer("prompt")}
            await streaming(pilot, chat)
            seen["streaming"] = await footer("stop")
            await answered(pilot, chat)
            seen["answered"] = await footer("prompt")
            await pilot.press("f5")
            seen["inspect"] = await footer("back")
            await pilot.press("escape", "ctrl+l")
            seen["editing"] = await footer("edit")
            await pilot.press("escape")
            seen["after"] = await footer("prompt")
            return seen

    seen = run(go())
    for state in ("idle", "answered", "after"):
        assert "esc" not in seen[state], (state, seen[state])
    assert "esc stop" in seen["streaming"] and "esc back" in seen["inspect"] and "esc cancel edit" in seen["editing"]


def test_tab_reaches_the_system_prompt_first_and_the_transcript_only_when_it_scrolls(tiny, store, tmp_path):
    """tab stopped on the transcript, which takes no typing and showed no focus, with nothing to
    scroll; a key typed there was lost."""

    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.engine is not None)
            chat = app.chat
            chat.params = chat.params.replace(max_new_tokens=4)
            prompt = chat.query_one("#prompt", PromptInput)
            await send(pilot, "hi")
            await answered(pilot, chat)
            await pilot.press("tab")
            first = app.focused.id
            short = [w.id or type(w).__name__ for w in chat.focus_chain]
            for n in range(8):  # a transcript taller than the screen
                await send(pilot, f"message {n}")
                await answered(pilot, chat)
            long = [w.id or type(w).__name__ for w in chat.focus_chain]
            plain = chat.transcript.styles.background_tint
            chat.transcript.focus()
            await pilot.pause()
            focused = chat.transcript.styles.background_tint
            await pilot.press("x")  # not a key of the transcript's: into the message box
            typed = app.focused is prompt, prompt.text
            chat.messages[-1].focus()
            await pilot.press("c")  # the answer's own key (copy): not typed
            copied = app.focused is chat.messages[-1]
            await pilot.press("y")
            return first, short, long, plain, focused, typed, (copied, prompt.text)

    first, short, long, plain, focused, typed, text = run(go())
    assert first == "system"
    assert short == ["system", "UserMessage", "AssistantMessage", "prompt"]
    assert long[:2] == ["system", "transcript"] and long[-1] == "prompt"
    assert plain.a == 0 and focused.a > 0  # focused, it shows it
    assert typed == (True, "x") and text == (True, "xy")


def test_the_preset_editor_says_a_range_error_once_and_recommends_no_more_than_the_context(tiny, store, tmp_path):
    """f3, temperature 5, enter: two identical "temperature must be in [0, 2], got 5.0" lines (the error
    list and the focused field's help line); and max tokens "rec 128–2048" beside a 256-token model."""

    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            await pilot.press("f3")
            await pilot.pause()
            editor = app.screen
            assert isinstance(editor, PresetEditor)
            hint = [str(w.render()) for w in editor.query(".field-hint")][
                list(editor.query(Input)).index(editor.query_one("#field-max_new_tokens"))
            ]
            field = editor.query_one("#field-max_new_tokens", Input)
            field.value = "300"
            await pilot.pause()
            outside = field.has_class("-outside")
            editor.query_one("#field-temperature", Input).value = "5"
            await pilot.press("enter")
            await pilot.pause()
            return hint, outside, screen_lines(app)

    hint, outside, lines = run(go())
    assert hint.endswith("· rec 128–256") and outside  # balanced recommends 128–2048
    assert sum("temperature must be in [0, 2], got 5.0" in line for line in lines) == 1, lines


def test_the_status_line_and_the_candidates_hint_fit_80_columns(tiny, store, tmp_path):
    """At 80 columns the status line read "stopped: kept the partial an…" and "building the compiled
    decode…", and the panel "send a message: each token's candidat…"."""
    from tiankong.engine import native

    async def go():
        app = make_app(tiny, store, tmp_path, preset="creative")  # the longest settings of the bundled presets
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.engine is not None)
            chat = app.chat

            def hint() -> str:  # the panel's inside (its loading indicator goes once the model is in)
                panel = chat.candidates.region  # read each time: the first layout may not have placed it yet
                rows = screen_lines(app)[panel.y + 1 : panel.bottom - 1]
                return " ".join(line[panel.x + 2 : panel.right - 2].strip() for line in rows).strip()

            await wait_for(pilot, lambda: "send a message" in hint())
            shown = hint()
            say = native.on_build(None)  # the app's: what it says while the compiled step builds
            await asyncio.to_thread(say, "once per machine")
            await pilot.pause()
            building = screen_lines(app)[0]
            chat.params = chat.params.replace(seed=1, max_new_tokens=1_000_000)
            await streaming(pilot, chat)
            await pilot.press("escape")
            await answered(pilot, chat)
            await pilot.pause()
            return shown, building, screen_lines(app)[0]

    hint, building, stopped = run(go())
    assert "send a message: each token's candidates show here as it streams" in hint, hint
    assert " compiling… │ creative " in building and "…" not in building.replace("compiling…", ""), building
    assert " stopped │ creative " in stopped and not stopped.rstrip().endswith("…"), stopped


def test_a_blank_message_is_said_to_be_blank(tiny, store, tmp_path):
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            await pilot.press("space", "space", "enter")
            await pilot.pause()
            return notices(app), chat.messages, store.list_chats()

    said, shown, stored = run(go())
    assert said == ["the message is blank: nothing sent"] and shown == [] and stored == []


def test_a_notice_from_before_a_dialog_opened_does_not_cover_it(tiny, store, tmp_path):
    """The chat's notices ("preset chat ...", "opened ...") stayed over the ctrl+o list and the f3 editor
    for their five seconds; the ones that only inform go as a dialog opens, a warning stays, and the
    dialog's own notices show."""

    async def go():
        app = make_app(tiny, store, tmp_path)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await wait_for(pilot, lambda: app.engine is not None)
            seen = []
            for key in ("ctrl+o", "f3"):
                app.notify("an earlier notice")
                app.notify("an earlier warning", severity="warning")
                await pilot.press(key)
                await pilot.pause()
                app.notify("the dialog's own")
                await pilot.pause()
                seen.append((type(app.screen).__name__, notices(app)))
                await pilot.press("escape")
                app.clear_notifications()
            return seen

    assert run(go()) == [
        ("ChatListScreen", ["an earlier warning", "the dialog's own"]),
        ("PresetEditor", ["an earlier warning", "the dialog's own"]),
    ]


# ---------------------------------------------------------------- what resolve says about the model


def test_an_unfinished_training_run_is_named_inside_the_playground(tiny, store, tmp_path):
    """QA31: `chat --model runs/ppo` after Ctrl+C at step 4 said it was an unfinished run only on stderr,
    hidden by the app until it ended."""
    import json
    import shutil

    from tiankong.engine.resolve import resolve_model

    run_dir = tmp_path / "runs" / "ppo"
    shutil.copytree(tiny, run_dir)
    (run_dir / "train_config.json").write_text(json.dumps({"steps": 20, "resume_command": "tiankong train ppo X"}))
    (run_dir / "checkpoints" / "step-4").mkdir(parents=True)
    model = resolve_model(str(run_dir))
    assert model.note

    async def main():
        async with chat_app(model, store, tmp_path) as (app, pilot, chat):
            await pilot.pause()
            return notices(app)

    (said,) = [n for n in run(main()) if "unfinished training run" in n]
    assert "step 4 of 20" in said and "tiankong train ppo X" in said


# ---------------------------------------------------------------- a message the chat template refuses

BOOM_TEMPLATE = (
    "{% for m in messages %}{% if 'boom' in m.content %}{{ raise_exception('no boom allowed') }}{% endif %}"
    "<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_a_message_the_chat_template_refuses_is_named_with_the_way_out(tiny, store, tmp_path):
    """QA: after "boom" (refused by the template), every later message said only "not answered: the chat
    template rejected the messages: no boom allowed", neither which message nor how to get out."""
    template = tmp_path / "boom.jinja"
    template.write_text(BOOM_TEMPLATE)

    def refusals(chat) -> list[str]:
        return [str(w.render()) for w in chat.transcript.query(NotAnswered)]

    async def main():
        app = make_app(tiny, store, tmp_path, chat_template=template)
        async with app.run_test(size=(120, 40)) as pilot:
            chat = await loaded(pilot)
            chat.params = chat.params.replace(max_new_tokens=4)
            await send(pilot, "boom")
            await pilot.pause()
            first = refusals(chat)
            await send(pilot, "hello")
            await pilot.pause()
            later = refusals(chat)
            await pilot.press("ctrl+n")  # the way out the second line names
            await send(pilot, "hello")
            after_new = (await answered(pilot, chat)).message_id, refusals(chat)
            await pilot.press("ctrl+n")
            await send(pilot, "boom")
            await pilot.pause()
            await pilot.press("ctrl+l")  # the way out the first line names
            chat.query_one("#prompt", PromptInput).text = "calm"
            await pilot.press("enter")
            after_edit = (await answered(pilot, chat)).message_id, refusals(chat)
            await pilot.press("ctrl+n")
            chat.query_one("#system", Input).value = "boom: be brief"
            await send(pilot, "hi")
            await pilot.pause()
            return first, later, after_new, after_edit, refusals(chat)

    first, later, (new_answer, new_refusals), (edited_answer, edit_refusals), system = run(main())
    refused = "⚠ not answered: the chat template rejected the messages: no boom allowed"
    assert first == [f"{refused} (your last message): ctrl+l edits it"]
    assert (
        later[-1]
        == f'{refused} (your earlier message "boom", sent again with each later one): ctrl+n starts a new chat'
    )
    assert new_answer is not None and new_refusals == []  # answered (stored)
    assert edited_answer is not None and edit_refusals == []
    assert system == [f'{refused} (the system prompt "boom: be brief"): edit it (tab goes to it)']


def test_a_model_without_a_chat_template_is_said_in_a_line_that_stays(tiny, store, tmp_path):
    """QA: `tiankong chat -m ollama:NAME` on a model without a chat template (Ollama's is a Go template,
    not read) opened in silence and joined the messages without roles, where generate, serve and the
    trainers say it. Said as they say it, with the fix; a model with a template: nothing. Then QA
    again: said in a 15 s notification, it covered the top of the candidates panel just as one first
    looks there (stories260K, which has no template). Now a line under the system prompt, beside the
    panel rather than over it, that a new chat keeps; compare says it under its head line."""
    import shutil

    from tiankong.tui.screens.compare import CompareScreen

    bare = without_template(tiny, tmp_path / "bare-llama")

    def left_text(app, panel_x: int) -> str:
        """The words left of the candidates panel, from the third row (under the status line and the
        system prompt) to the first blank one, joined as one line."""
        words = []
        for row in screen_lines(app)[2:]:
            if not row[:panel_x].strip():
                break
            words.append(row[:panel_x].strip())
        return " ".join(words)

    async def opened(model) -> tuple[list[str], str, str, str]:
        async with chat_app(model, store, tmp_path) as (app, pilot, chat):
            await pilot.pause()
            panel = chat.candidates.region
            panel_top = screen_lines(app)[panel.y][panel.x : panel.right]  # its border and title, not covered
            first = left_text(app, panel.x)
            await pilot.press("ctrl+n")
            await pilot.pause()
            return notices(app), first, panel_top, left_text(app, panel.x)

    said, first, panel_top, kept = run(opened(bare))
    want = "⚠ no chat template (--chat-template FILE)"  # one row beside the panel (the whole sentence: below)
    assert first == want
    assert panel_top.startswith("╭─ candidates ─") and panel_top.endswith("╮"), panel_top
    assert not any("no chat template" in n for n in said), said  # no notification over the panel
    assert kept == want  # a new chat: still said
    said, first, _, _ = run(opened(tiny))
    assert "no chat template" not in first and not any("no chat template" in n for n in said)

    async def compared(**kw) -> tuple[list[str], list[str]]:
        app = make_app(bare, store, tmp_path, mode="compare", **kw)
        async with app.run_test(size=(160, 45)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
            await pilot.pause()
            return notices(app), screen_lines(app)

    said, rows = run(compared())
    assert rows[1].strip() == want, rows[:3]  # under the head
    assert "╭" in rows[2] and not any("no chat template" in n for n in said), said
    # QA58: two models without a template named only the first, as if the second had one. Each one
    # without is named, in one line; one with a template is not.
    also = tmp_path / "also-bare"
    shutil.copytree(bare, also)
    _, rows = run(compared(compare_models=[bare, tiny, also]))
    assert rows[1].strip() == want.replace("⚠ ", "⚠ bare-llama, also-bare: "), rows[:3]
    assert "╭" in rows[2], rows[:3]


def without_template(model: Path, dest: Path) -> Path:
    """A copy of `model` at `dest` without a chat template (a base model's folder)."""
    import json
    import shutil

    shutil.copytree(model, dest)
    config = json.loads((dest / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(config))
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    return dest


def test_the_no_template_line_is_one_row_at_80_columns_and_says_the_rest_on_hover(tiny, store, tmp_path):
    # QA: at 80x24 the line took three rows of the chat's column beside the candidates panel (44
    # characters wide) and two of compare's: the whole sentence generate and serve say. Now one row,
    # with the fix; the sentence, as generate says it (tests/test_cli_fixes.py), on hover.

    bare = without_template(tiny, tmp_path / "bare-llama")
    also = without_template(tiny, tmp_path / "also-bare")

    async def shown(mode: str, **kw) -> tuple[int, str, list[str], object]:
        app = make_app(bare, store, tmp_path, **({"mode": mode} if mode == "compare" else {}), **kw)
        return await template_note_shown(app, mode == "compare")

    for mode, kw, reader in [("chat", {}, "the chat"), ("compare", {}, "compare")] + [
        ("compare", {"compare_models": [bare, also]}, "compare")
    ]:
        height, line, rows, tip = run(shown(mode, **kw))
        assert height == 1, (mode, kw, line)
        assert line.endswith("no chat template (--chat-template FILE)")
        assert any(line in row for row in rows), rows[:4]  # whole on the screen: the fix is not cut
        assert tip == f"no chat template: {reader} joins the messages' contents without roles"
