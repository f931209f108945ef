"""Text that a user, a model or a file wrote is never read as Rich/Textual markup.

Textual reads a str given to Static, a border title, a toast or a DataTable cell as markup, and Rich
reads one in a Table cell or console.print: "what does [/] mean?" raised MarkupError (a chat that
crashed on every reopen), "[y]" vanished, "[@click=app.quit]x[/]" became a link that ran an
action. Each check below shows such text and expects it back exactly as written.
"""

from __future__ import annotations

import ast
import contextlib
import io
from pathlib import Path

import pytest
from helpers import cli
from rich.console import Console
from screen_text import screen_lines
from test_tui_chat import answered, loaded, make_app, open_newest_chat, run, send, wait_for
from textual.content import Content
from textual.widgets import Select
from textual.widgets._toast import Toast
from tiny_models import make_model

import tiankong.tui
from tiankong.presets import load_presets
from tiankong.trainers.verdict import Verdict
from tiankong.tui.app import literal
from tiankong.tui.leaderboard import Standing, standings_table
from tiankong.tui.screens.branch import CandidatePicker
from tiankong.tui.screens.tokens import info_table
from tiankong.tui.screens.votes import stats_table
from tiankong.tui.store import Response, Store, Vote
from tiankong.tui.widgets.message import AssistantMessage

# Each a different way markup went wrong: an error, a dropped tag, a style, an escape eaten, links.
TRICKY = [
    "what does [/] mean in a regex?",
    "a [y] b",
    "[bold]c[/bold]",
    "\\[e]",
    '[link="file:///etc/passwd"]x[/link]',
    "[@click=app.quit]quit[/]",
    "ends in a backslash\\",
]
MESSAGE = "what does [/] mean? [@click=app.quit]quit[/] a [y] b \\[e]"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


@contextlib.asynccontextmanager
async def chat_app(model, store, tmp_path, size=(100, 32), **kw):
    """The app on `model`, headless with its toasts drawn, loaded -> (app, pilot, chat)."""
    app = make_app(model, store, tmp_path, **kw)
    async with app.run_test(size=size, notifications=True) as pilot:
        yield app, pilot, await loaded(pilot)


def toast_texts(app) -> list[str]:
    """Every toast on the screen as drawn (title, newline, message)."""
    return [t.render().plain for t in app.screen.query(Toast)]


async def toasted(pilot, text: str) -> list[str]:
    """Wait for a toast that shows `text`; the toasts on the screen then (or, timed out, an error listing them)."""
    try:
        await wait_for(pilot, lambda: any(text in t for t in toast_texts(pilot.app)), timeout=10)
    except AssertionError:
        raise AssertionError(f"no toast shows {text!r}: {toast_texts(pilot.app)}") from None
    return toast_texts(pilot.app)


def plain(renderable, width: int = 200) -> str:
    """What Rich prints for `renderable` (markup errors raise here)."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, emoji=False).print(renderable)
    return out.getvalue()


# ---------------------------------------------------------------- the chat


def test_a_message_with_markup_shows_as_typed_and_its_chat_reopens(tiny, tmp_path):
    async def go():
        with Store(tmp_path / "data" / "tiankong.db") as store:
            async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
                chat.params = chat.params.replace(max_new_tokens=4)
                await send(pilot, MESSAGE)
                await answered(pilot, chat)
                user = chat.messages[0]
                sent = (user.content, user.render(), app.is_running)
                await pilot.press("ctrl+n")
                await open_newest_chat(pilot, chat, 2)
                # The notice names the chat by its title (the message), "[y]" and all.
                await toasted(pilot, f"opened “{MESSAGE}”")
                reopened = chat.messages[0]
                return sent, reopened.content, reopened.render(), app.is_running

    (content, visual, running), content2, visual2, still_running = run(go())
    for text, shown in ((content, visual), (content2, visual2)):
        assert text == MESSAGE
        assert isinstance(shown, Content) and shown.plain == MESSAGE and not shown.spans  # no style, no link
    assert running and still_running


def test_stored_answers_and_titles_with_markup_open(tiny, tmp_path):
    """A stored chat whose title, answer and model path hold markup opens, shows them, exports."""
    answer = "answer [/] [@click=app.quit]q[/] [y]"
    data = tmp_path / "dd[" / "]x"  # the data folder QA used: '/tmp/.../dd[/]x'

    async def go():
        with Store(data / "tiankong.db") as store:
            chat_id = store.create_chat("/models/m[b]odel", "balanced", title="t (x) [y] OR NOT")
            store.add_message(chat_id, "user", "[b]hi[/b]")
            store.add_message(chat_id, "assistant", answer, preset="balanced", finish_reason="stop", seed=1)
            async with chat_app(tiny, store, data / "exports") as (app, pilot, chat):
                await chat.open_chat(chat_id)
                await toasted(pilot, "opened “t (x) [y] OR NOT”")
                shown = chat.messages[1]
                assert isinstance(shown, AssistantMessage)
                shown._materialize()  # the Markdown widget in place of the preview
                await pilot.pause(0.3)
                lines = screen_lines(app)
                await pilot.press("ctrl+s")
                await toasted(pilot, str(data / "exports" / "tiankong-chat-1.jsonl"))
                return lines, app.is_running

    lines, running = run(go())
    screen = "\n".join(lines)
    assert running
    assert "[b]hi[/b]" in screen and answer in screen
    assert "m[b]odel · balanced" in screen  # the answer's border title: model and preset
    assert (data / "exports" / "tiankong-chat-1.md").is_file()


def test_a_preset_with_markup_in_its_words_is_selected_edited_and_listed(tiny, tmp_path):
    presets_dir = tmp_path / "presets"
    presets_dir.mkdir()
    (presets_dir / "x[b]y.toml").write_text(
        'description = "Cold [/] and calm"\nuse = "use [/] me"\n[params]\ntemperature = 0.1\n'
    )
    presets = load_presets(presets_dir)

    async def go():
        with Store(tmp_path / "tiankong.db") as store:
            async with chat_app(tiny, store, tmp_path, presets=presets) as (app, pilot, chat):
                await pilot.press("shift+f2")  # from the first preset back to the last: this one
                await toasted(pilot, "preset x[b]y\nCold [/] and calm")
                picked = chat.preset.name
                commands = [
                    (Content.from_markup(c.title).plain, Content.from_markup(c.help).plain)
                    for c in app.get_system_commands(chat)
                ]
                await pilot.press("f3")
                await pilot.pause()
                editor = screen_lines(app)
                return picked, commands, editor, app.is_running

    picked, commands, editor, running = run(go())
    assert picked == "x[b]y" and running
    assert ("Preset: x[b]y", "use [/] me") in commands
    assert any("─ preset x[b]y ─" in line for line in editor), editor  # the f3 dialog's border


def test_the_branch_picker_names_a_token_with_markup(tiny, tmp_path):
    token = {
        "id": 5,
        "text": "[/]",
        "logprob": -0.1,
        "p_sample": 0.9,
        "top": [
            {"id": 5, "text": "[/]", "logprob": -0.1, "p_sample": 0.9},
            {"id": 6, "text": "[b]", "logprob": -2.0, "p_sample": 0.1},
        ],
    }

    async def go():
        with Store(tmp_path / "tiankong.db") as store:
            async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
                app.push_screen(CandidatePicker(token, 0))
                await pilot.pause()
                return "\n".join(screen_lines(app))

    screen = run(go())
    assert "instead of “[/]”" in screen and "[b]" in screen


def test_the_votes_screen_shows_presets_and_models_with_markup(tiny, tmp_path):
    def response(label, model, preset):
        return Response(label, model, preset, {}, 1, f"answer {label} [/]", "stop")

    async def go():
        with Store(tmp_path / "tiankong.db") as store:
            for when in ("", "[b]when[/b]"):  # an imported vote's time, not a time: shown as it is
                store.add_vote(
                    Vote(
                        None,
                        "q [/]",
                        [{"role": "user", "content": "q [/]"}],
                        [response("A", "/m/one[i]", "p[/]"), response("B", "/m/two[b]", "p[b]")],
                        "ranked",
                        [0, 1],
                        "me",
                        blind=False,
                        created_at=when,
                    )
                )
            # Wide: the vote and the statistics side by side (votes.WIDE), both drawn.
            async with chat_app(tiny, store, tmp_path, size=(160, 45)) as (app, pilot, chat):
                await pilot.press("ctrl+g")
                await wait_for(pilot, lambda: getattr(app.screen, "_boards", None) is not None)
                await pilot.pause()
                screen = "\n".join(screen_lines(app))
                app.screen.query_one("#filter-preset", Select).expanded = True  # its options: the presets
                await pilot.pause()
                options = "\n".join(screen_lines(app))
                return screen, options, app.is_running

    screen, options, running = run(go())
    assert running
    assert "q [/]" in screen and "answer A [/]" in screen and "one[i]" in screen and "two[b]" in screen
    assert any(line.startswith(" [b]when[/b]  q [/]") for line in screen.split("\n")), screen  # its row
    # A row each in the statistics' table of presets and in the leaderboard of presets.
    assert screen.count("│  p[/]  ") == screen.count("│  p[b]  ") == 2, screen
    assert "▊  p[/]  " in options and "▊  p[b]  " in options, options  # the preset filter's menu


# ---------------------------------------------------------------- tables and console output


def test_tables_show_names_with_markup_as_written():
    assert "p[/]" in plain(stats_table({"p[/]": {"votes": 1, "wins": 1}}))
    board = [Standing("m[/]", 1000.0, 900.0, 1100.0, 2.0, 1.0, 0, 3)]
    assert "m[/]" in plain(standings_table(board, "models"))
    assert "a [b]model[/b]" in plain(info_table({"name": "a [b]model[/b]", "architecture": "[/]"}))
    verdict = Verdict("dpo", "fine", examples=[{"prompt": "p [/]", "before": "[b]x", "after": "[@click=app.quit]q[/]"}])
    out = "".join(plain(part) for part in verdict.render())
    assert "p [/]" in out and "[b]x" in out and "[@click=app.quit]q[/]" in out


@pytest.mark.parametrize("text", TRICKY)
def test_literal_is_textual_markup_that_shows_the_text(text):
    assert Content.from_markup(literal(text)).plain == text


def test_presets_command_shows_words_with_markup(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COLUMNS", "300")  # rich's width: no line wrapped
    monkeypatch.setenv("TIANKONG_CONFIG_DIR", str(tmp_path / "cfg[/]"))
    presets = tmp_path / "cfg[/]" / "presets"
    presets.mkdir(parents=True)
    (presets / "bad.toml").write_text(
        'description = "Cold [/] and calm"\nuse = "use [b]me[/b]"\n[params]\ntemperature = 0.1\nstop = ["[/INST]"]\n'
    )
    code, out, err = cli(monkeypatch, capsys, "presets", "bad")
    assert code == 0, err
    assert "bad: Cold [/] and calm" in out and "use [b]me[/b]" in out and "[/INST]" in out
    assert str(presets / "bad.toml") in out
    code, out, err = cli(monkeypatch, capsys, "presets")
    assert code == 0, err
    assert "use [b]me[/b]" in out and "cfg[/]" in out


def test_tokenize_and_info_show_pieces_and_facts_with_markup(monkeypatch, capsys, tmp_path):
    """Vocabularies hold pieces such as "[/" or "[b]", and a model's name is its maker's words."""
    import tiankong.engine.model_facts
    import tiankong.engine.tokenizer

    pieces = ["[b]", "[/]", "[@click=app.quit]q[/]"]

    class Tok:
        special_ids = {1}

        def encode(self, text, add_special_tokens=True):
            return [0, 1, 2]

        def id_to_piece(self, i):
            return pieces[i]

        def token_text(self, i):
            return pieces[i]

    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr(tiankong.engine.tokenizer, "load_tokenizer", lambda folder: Tok())
    code, out, err = cli(monkeypatch, capsys, "tokenize", "-m", tmp_path, "x")
    assert code == 0, err
    assert "[b]" in out and "[/] (special)" in out and "[@click=app.quit]q[/]" in out
    facts = {"name": "a [b]model[/b]", "architecture": "[/]", "folder": str(tmp_path)}
    monkeypatch.setattr(tiankong.engine.model_facts, "model_facts", lambda *args: facts)
    code, out, err = cli(monkeypatch, capsys, "info", "-m", tmp_path)
    assert code == 0, err
    assert "a [b]model[/b]" in out and "[/]" in out


def test_prefs_stats_export_and_import_show_names_and_paths_with_markup(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COLUMNS", "300")
    with Store(tmp_path / "tiankong.db") as store:
        store.add_vote(
            Vote(
                None,
                "q",
                [{"role": "user", "content": "q"}],
                [Response("A", "m", "p[/]", {}, 1, "a", "stop"), Response("B", "m", "p[b]", {}, 2, "b", "stop")],
                "ranked",
                [0, 1],
                "me",
                blind=False,
            )
        )
    code, out, err = cli(monkeypatch, capsys, "prefs", "stats", "--data-dir", tmp_path)
    assert code == 0, err
    assert "p[/]" in out and "p[b]" in out
    exported = tmp_path / "out[" / "]x.jsonl"  # a folder "out[" holding "]x.jsonl": the path reads out[/]x.jsonl
    exported.parent.mkdir()
    code, out, err = cli(monkeypatch, capsys, "prefs", "export", "--data-dir", tmp_path, "-o", exported)
    assert code == 0, err
    assert f"wrote 1 preference pairs to {exported}" in err
    other = tmp_path / "d[" / "]b"
    code, out, err = cli(monkeypatch, capsys, "prefs", "import", exported, "--data-dir", other)
    assert code == 0, err
    assert f"from {exported} into {other / 'tiankong.db'}" in err


# ---------------------------------------------------------------- every notification


def test_every_notification_with_words_from_elsewhere_is_plain_text():
    """A toast's message is read as markup unless markup=False: any message that is not a fixed
    string (an error, a name, a path, a title) must say markup=False."""
    root = Path(tiankong.tui.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "notify"):
                continue
            if node.args and isinstance(node.args[0], ast.Constant):
                continue
            if not any(k.arg == "markup" and getattr(k.value, "value", True) is False for k in node.keywords):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, found
    assert found == [] and len(list(root.rglob("*.py"))) > 20  # it did look
