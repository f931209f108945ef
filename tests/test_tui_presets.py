"""Presets in the chat (QA pass 18): f3's save as, f2 over unsaved edits, what a reopened chat says of
its preset and edits, a broken preset file at start, and the editor, footer and status line on a small
terminal. On the tiny random Llama (tests/tiny_models.py), the user's presets in a folder of the test's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_tui_chat import answered, run, send, wait_for
from test_tui_markup import chat_app
from textual.widgets import Input
from textual.widgets._footer import FooterKey
from tiny_models import make_model

from tiankong.engine.errors import InputError
from tiankong.presets import get_preset, load_presets
from tiankong.tui.screens.chat import ChatScreen
from tiankong.tui.screens.preset_editor import FIELDS, PresetEditor, parse_field, parse_stop, stop_text
from tiankong.tui.store import DB_NAME, Store
from tiankong.tui.widgets.status import StatusBar


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


@pytest.fixture
def presets_dir(tmp_path, monkeypatch) -> Path:
    """The user's presets folder, here (the app reads it at start; save as writes there)."""
    monkeypatch.setenv("TIANKONG_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config" / "presets"


def notes(app) -> list[str]:
    return [f"{n.title}\n{n.message}" for n in app._notifications]


async def edit(pilot, **values: str) -> PresetEditor:
    """f3 with `values` typed into their fields -> the editor, still open."""
    await pilot.press("f3")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, PresetEditor))
    editor = pilot.app.screen
    for name, value in values.items():
        editor.query_one(f"#field-{name}", Input).value = value
    return editor


def test_f3_save_as_writes_a_preset_file_and_the_chat_goes_on_with_it(tiny, tmp_path, presets_dir):
    async def go():
        with Store(tmp_path / DB_NAME) as store:
            async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
                await edit(pilot, temperature="0.35", top_k="7")
                await pilot.press("ctrl+n", *"cooler", "enter")
                await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
                after = chat.preset, chat.params, str(chat.query_one(StatusBar).render()), "cooler" in app.presets
                said = notes(app)  # (before f3 again: a dialog opening dismisses the notices that inform)
                # A bundled preset's name, from another preset: refused in the box, which stays open.
                editor = await edit(pilot, top_k="8")
                await pilot.press("ctrl+n", *"creative", "enter")
                await pilot.pause()
                refused = app.screen is editor, str(editor.query_one("#editor-error").render())
                return after, refused, said

    (preset, params, status, listed), (still_open, error), said = run(go())
    assert (presets_dir / "cooler.toml").is_file() and list(presets_dir.iterdir()) == [presets_dir / "cooler.toml"]
    saved = get_preset("cooler")
    assert preset == saved and params == saved.params and listed
    assert (saved.params.temperature, saved.params.top_k) == (0.35, 7)
    assert "cooler T 0.35 · top-k 7" in status and "(edited)" not in status
    assert f"saved preset cooler\n{presets_dir / 'cooler.toml'}" in said
    assert still_open and error.startswith("creative is already a bundled preset; save under another name")
    assert not (presets_dir / "creative.toml").exists()


def test_f2_over_unsaved_edits_warns_first_and_switches_when_pressed_again(tiny, tmp_path, presets_dir):
    async def go():
        with Store(tmp_path / DB_NAME) as store:
            async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
                await edit(pilot, temperature="0.3")
                await pilot.press("enter")
                await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
                await pilot.press("f2")
                first = chat.preset.name, chat.params.temperature
                await pilot.press("f2")
                return first, chat.preset.name, notes(app)

    (name, temperature), after, said = run(go())
    assert (name, temperature) == ("balanced", 0.3)  # the first f2 only warned
    assert after == list(load_presets())[1]
    warned = [n for n in said if n.startswith("balanced has unsaved edits\n")]
    assert len(warned) == 1 and "f2 again drops them, or f3 then ctrl+n saves them as a preset" in warned[0]


def test_a_reopened_chat_says_its_edits_are_not_restored_and_names_a_preset_gone(tiny, tmp_path, presets_dir):
    async def go():
        with Store(tmp_path / DB_NAME) as store:
            async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
                chat.params = chat.params.replace(top_k=5, max_new_tokens=2)  # as f3 would
                await send(pilot, "hi")
                await answered(pilot, chat)
                edited = chat.chat_id
                await pilot.press("ctrl+n")
                chat.params = chat.preset.params
                gone = store.create_chat(chat.model_id, "vanished", "", "old chat")
                store.add_message(gone, "user", "hello")
                app.clear_notifications()
                await chat.open_chat(edited)
                await pilot.pause()
                on_edited = notes(app)[-1]
                await chat.open_chat(gone)
                await pilot.pause()
                return on_edited, notes(app)[-1], chat.preset.name

    on_edited, on_gone, preset = run(go())
    assert "its answers used balanced with f3 edits (T 0.7 · top-k 5 · top-p 0.9 · max 2 · seed " in on_edited
    assert on_edited.endswith(", not restored: new answers use balanced")
    assert "its preset vanished is gone (no such file now); new answers use balanced" in on_gone
    assert preset == "balanced"


def test_the_chat_starts_with_a_broken_preset_file_and_names_it(tiny, tmp_path, presets_dir):
    presets_dir.mkdir(parents=True)
    (presets_dir / "mine.toml").write_text("[params]\ntemperature = -1\n")

    async def go():
        with Store(tmp_path / DB_NAME) as store:
            async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
                return notes(app), list(app.presets), app.is_running

    said, names, running = run(go())
    line = f"{presets_dir / 'mine.toml'}: [params] temperature must be in [0, 2], got -1.0"
    assert running and f"1 preset not loaded\n{line}" in said and "mine" not in names


def test_the_editor_on_80x24_keeps_every_error_reachable(tiny, tmp_path, presets_dir):
    # QA: nine invalid fields at 80x24 hid the last three error lines, and the box could not scroll.
    async def go():
        with Store(tmp_path / DB_NAME) as store:
            async with chat_app(tiny, store, tmp_path, size=(80, 24)) as (app, pilot, chat):
                editor = await edit(pilot, **{name: "x" for name in FIELDS})
                await pilot.press("enter")
                await pilot.pause()
                box, error = editor.query_one("#editor").region, editor.query_one("#editor-error")
                shown = str(error.render()).splitlines(), box.contains_region(error.region)
                editor.query_one("#field-max_new_tokens", Input).focus()  # a field the list left out
                await pilot.pause()
                seed_hint = [str(w.render()) for w in editor.query(".field-hint")][FIELDS.index("seed")]
                return shown, str(editor.query_one("#editor-help").render()), seed_hint

    (lines, inside), help_line, seed_hint = run(go())
    assert inside and len(lines) == 3
    assert lines[0].startswith("temperature must be a number") and lines[2].startswith("… and 7 more: each red field")
    assert help_line == "max_new_tokens must be an integer in [1, 256], got 'x'"  # the model's range, as its hint
    assert seed_hint == "[0, 18446744073709551615]"  # as the engine's own error says it


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("", "max_new_tokens must be an integer in [1, 256], got ''"),
        ("0", "max_new_tokens must be in [1, 256], got 0"),
        ("2.5", "max_new_tokens must be an integer in [1, 256], got 2.5"),
        ("257", "max_new_tokens must be in [1, 256], got 257 (no answer is longer than the model's 256-token context)"),
    ],
)
def test_the_editor_refuses_max_tokens_in_the_range_its_hint_shows(tiny, tmp_path, presets_dir, typed, said):
    # QA: max tokens cleared said "must be an integer in [1, 1000000], got ''" beside a hint of
    # "[1, 256]" (the tiny model's context): one range, the model's.
    async def go():
        with Store(tmp_path / DB_NAME) as store:
            async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
                editor = await edit(pilot, max_new_tokens=typed)
                await pilot.press("enter")
                await pilot.pause()
                hint = [str(w.render()) for w in editor.query(".field-hint")][FIELDS.index("max_new_tokens")]
                return app.screen is editor, str(editor.query_one("#editor-error").render()), hint

    still, error, hint = run(go())
    assert still and error == said and hint.startswith("[1, 256]")


def test_the_editor_refuses_what_is_no_plain_number():
    # QA: 1e309 said "got inf"; 1_0 was taken as 10.
    with pytest.raises(InputError, match=r"^temperature must be in \[0, 2\], got 1e309 \(too large\)$"):
        parse_field("temperature", "1e309")
    for text in ("1_0", "inf", "nan", "0x10", "١٠"):
        with pytest.raises(InputError, match=r"^top_k must be an integer in \[0, 1000000\], got"):
            parse_field("top_k", text)
    with pytest.raises(InputError, match=r"^seed must be an integer in \[0, 18446744073709551615\] \(empty = random\)"):
        parse_field("seed", "1_0")
    assert [parse_field("top_k", "40"), parse_field("top_p", ".5"), parse_field("max_new_tokens", "1e3")] == [
        40,
        0.5,
        1000.0,
    ]


def test_80_columns_show_the_preset_keys_and_a_long_preset_name_leaves_the_values(tiny, tmp_path, presets_dir):
    # QA: at 80x24 the footer dropped f2 and f3; an 88-character preset name left "填空  ready │".
    long_name = "n" * 88
    presets = load_presets()
    presets[long_name] = dataclasses.replace(presets["balanced"], name=long_name)

    async def go():
        with Store(tmp_path / DB_NAME) as store:
            async with chat_app(tiny, store, tmp_path, size=(80, 24), presets=presets) as (app, pilot, chat):
                keys = [k.key for k in chat.query(FooterKey) if k.display]
                chat._use_preset(long_name, quiet=True)
                await pilot.pause()
                return keys, str(chat.query_one(StatusBar).render())

    keys, status = run(go())
    assert "f2" in keys and "f3" in keys
    assert "nnnn…" in status and "T0.7 k40 p0.9 max256 seed random" in status and len(status) <= 80  # capped at 256


# ---------------------------------------------------------------- stop strings (QA: f3 showed every value but stop)

TRICKY_STOPS = ("\n\n", 'say "hi"', "a\\b", "\t", "\x7f", "\u2028", "\U000e0001", "你好", "User:")


def test_the_stop_field_reads_back_every_string_it_shows():
    shown = stop_text(TRICKY_STOPS)
    # One line, every character visible: a newline, a tab, DEL and U+2028 as escapes; a quote escaped.
    assert shown.isprintable()
    assert shown.startswith('["\\n\\n", "say \\"hi\\"", "a\\\\b", "\\t", "\\u007f", "\\u2028", ')
    assert parse_stop(shown) == TRICKY_STOPS
    assert stop_text(()) == "" and parse_stop("  ") == ()
    assert parse_stop('"User:"') == ("User:",)  # one quoted string alone: a list of one
    for text, why in (
        ("User:", r"got User: \(expecting value at character 1\)$"),
        ("['a']", r"got \['a'\] \(expecting value at character 2\)$"),
        ("[1]", r"got \[1\]$"),
    ):
        with pytest.raises(
            InputError,
            match=r'^stop must be a list of double-quoted strings, e.g. \["\\n\\n", "User:"\] '
            r"\(empty = none\), " + why,
        ):
            parse_stop(text)
    with pytest.raises(InputError, match=r'^stop strings cannot be empty .*; remove the ""$'):
        parse_stop('["a", ""]')


def test_f3_shows_edits_applies_and_saves_the_stop_strings(tiny, tmp_path, presets_dir):
    presets_dir.mkdir(parents=True)
    # A preset file's stop line, in TOML, with a newline and a quote in it.
    (presets_dir / "stopper.toml").write_text('[params]\nstop = ["\\n", "say \\"hi\\""]\n', encoding="utf-8")

    async def go():
        with Store(tmp_path / DB_NAME) as store:
            async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
                chat._use_preset("stopper", quiet=True)
                editor = await edit(pilot)
                shown = editor.query_one("#field-stop", Input).value
                editor.query_one("#field-stop", Input).value = '["\\n\\nUser:", "###"]'
                await pilot.press("ctrl+s")
                await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
                applied = chat.params.stop
                # Save as: the file written loads back with the same stop strings.
                editor = await edit(pilot, stop='["\\t", "é\\u2028"]')
                await pilot.press("ctrl+n", *"stopper2", "enter")
                await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
                saved = chat.params
                # A stop field that is no list: refused in one line, the box stays open.
                editor = await edit(pilot, stop="User:")
                await pilot.press("ctrl+s")
                await pilot.pause()
                error = str(editor.query_one("#editor-error").render())
                marked = editor.query_one("#field-stop", Input).has_class("-invalid")
                return shown, applied, saved, app.screen is editor, error, marked

    shown, applied, saved, still_open, error, marked = run(go())
    assert shown == '["\\n", "say \\"hi\\""]'
    assert applied == ("\n\nUser:", "###")
    assert saved.stop == ("\t", "é\u2028") and get_preset("stopper2").params == saved
    assert still_open and marked and error.startswith("stop must be a list of double-quoted strings")


def test_the_stop_field_on_80x24_is_reached_and_shown_whole_width(tiny, tmp_path, presets_dir):
    async def go():
        with Store(tmp_path / DB_NAME) as store:
            async with chat_app(tiny, store, tmp_path, size=(80, 24)) as (app, pilot, chat):
                editor = await edit(pilot)
                for _ in FIELDS:  # down from the first field to the stop field
                    await pilot.press("down")
                await pilot.pause()
                stop = editor.query_one("#field-stop", Input)
                box = editor.query_one("#editor").region
                return (
                    editor.focused is stop,
                    box.contains_region(stop.region),
                    stop.region.width,
                    (str(editor.query_one("#editor-help").render())),
                )

    focused, inside, width, help_line = run(go())
    assert focused and inside and width >= 40
    assert help_line.startswith("stop: the answer ends at the first of these it writes")
    assert 'e.g. ["\\n\\n", "User:"]; empty = none' in help_line
