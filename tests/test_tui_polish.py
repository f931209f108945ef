"""Issue 12 item 5, the polish a new user found, checked at 80x24, 100x30 and 160x45: footer and
status line fit, four compare columns go two by two, toasts leave the vote bar and the f3 dialog's
hint alone, the compare head says "revealed" after a vote and "0" is named by the count, answers end
with the same words live and reopened, Chinese lines never start with "。", exports go to the data
folder's exports/."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from screen_text import screen_lines
from test_tui_chat import answered, loaded, make_app, send, slow_down, wait_for
from textual.geometry import Region
from textual.widgets import Input
from textual.widgets._footer import FooterKey
from textual.widgets._toast import Toast, ToastRack
from tiny_models import make_model, with_template

from tiankong.presets import load_presets
from tiankong.tui.screens.chat_sending import TITLE_CHARS, chat_title
from tiankong.tui.screens.compare import CompareScreen
from tiankong.tui.screens.preset_editor import PresetEditor
from tiankong.tui.store import DB_NAME, Store
from tiankong.tui.widgets.kinsoku import NO_LINE_START
from tiankong.tui.widgets.status import StatusBar

SIZES = [(80, 24), (100, 30), (160, 45)]
CHINESE = (
    "从前有一只小猫，它住在一个很大的花园里。每天早上，它都会去找它的好朋友小狗玩！"
    "它们一起跑，一起跳，一起唱歌。小猫说：“我们永远是好朋友吗？”小狗说：“当然！”"
) * 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return with_template(make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama"))


def short_presets(max_new_tokens: int = 10) -> dict:
    return {
        n: dataclasses.replace(p, params=p.params.replace(max_new_tokens=max_new_tokens))
        for n, p in load_presets().items()
    }


def toasts(app) -> list[Region]:
    """Where the screen's toasts are drawn."""
    return [t.region for t in app.screen.get_child_by_type(ToastRack).query(Toast) if t.region]


def assert_footer_fits(app, width: int) -> None:
    keys = [k for k in app.screen.query(FooterKey) if k.display]
    assert keys and all(k.region.right <= width for k in keys), [(k.key, k.region) for k in keys]
    footer = screen_lines(app)[-1]
    assert "▏" not in footer.replace("▏^p palette", "")  # the only separator left is the palette's


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_chat_footer_header_wording_kinsoku_export_and_toasts(tiny, tmp_path, size):
    width, height = size
    with Store(tmp_path / "data" / DB_NAME) as store:
        old = store.create_chat(str(tiny.resolve()), "balanced", title="小猫")
        store.add_message(old, "user", "讲一个故事。")
        store.add_message(
            old, "assistant", CHINESE, preset="balanced", params={}, seed=3, finish_reason="eos", tokens=[]
        )

        async def go():
            app = make_app(tiny, store, None, presets=short_presets(40))  # no export_dir: the default folder
            async with app.run_test(size=size, notifications=True) as pilot:
                chat = await loaded(pilot)
                slow_down(chat.engine, 0.05)
                await send(pilot, "hello")
                await wait_for(pilot, lambda: len(chat.messages[-1].tokens) >= 2)
                # Streaming: the status line keeps every setting, seed included; the footer is whole.
                status = str(chat.query_one(StatusBar).render())
                assert "answering" in status and "seed random" in status and "…" not in status
                assert screen_lines(app)[0].rstrip().endswith("seed random")
                assert_footer_fits(app, width)
                await answered(pilot, chat)
                live = chat.messages[-1].query_one(".answer-info").render()
                # its seed is random: the tiny model ends at its 40 tokens or, now and then, at EOS
                assert str(live).startswith(("max tokens · 40 tokens", "end of text")), str(live)

                # Reopened: the same words ("end of text", not "eos"); Chinese wraps with kinsoku.
                await chat.open_chat(old)
                await pilot.pause(0.3)
                lines = screen_lines(app)
                assert any("end of text · 0 tokens · seed 3" in line for line in lines)
                assert not any(" eos " in line for line in lines)
                starts = [line.strip("│ ║").lstrip()[:1] for line in lines[1:-4]]
                assert not any(c and c in NO_LINE_START for c in starts), lines
                assert sum("小猫" in line for line in lines) >= 3  # the answer is on screen, wrapped

                # ctrl+s: into the data folder's exports/, the toast naming the full paths.
                await pilot.press("ctrl+s")
                await pilot.pause(0.3)
                folder = store.path.parent.absolute() / "exports"
                assert (folder / f"tiankong-chat-{old}.md").read_text(encoding="utf-8") == store.export_chat_markdown(
                    old
                )
                (note,) = [n for n in app._notifications if n.title == "exported"]
                assert str(folder / f"tiankong-chat-{old}.jsonl") in note.message
                # Toasts sit top right, under the status line, off the message box.
                prompt = chat.query_one("#prompt", Input).region
                assert toasts(app) and all(r.y >= 1 and not r.overlaps(prompt) for r in toasts(app))

                # f3: a toast leaves the dialog's hint (its last lines) readable.
                app.clear_notifications()
                await pilot.press("f3")
                await pilot.pause()
                editor = app.screen
                assert isinstance(editor, PresetEditor)
                app.notify("a notification while the dialog is open")
                await pilot.pause(0.3)
                box = editor.query_one("#editor").region
                hint = Region(box.x, box.bottom - 3, box.width, 3)  # help line, error line, border hint
                assert toasts(app) and not any(r.overlaps(hint) for r in toasts(app))

        asyncio.run(go())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compare_four_columns_fit_toasts_blind_head_and_none_good(tiny, tmp_path, size):
    width, height = size
    names = ["deterministic", "balanced", "precise", "creative"]
    with Store(tmp_path / DB_NAME) as store:

        async def go():
            app = make_app(tiny, store, tmp_path, presets=short_presets(), mode="compare", compare_presets=names)
            async with app.run_test(size=size, notifications=True) as pilot:
                await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
                screen = app.screen
                await pilot.press(*"Once upon a time", "enter")
                await wait_for(pilot, lambda: screen.state == "voting")
                await pilot.pause(0.2)
                cols = [c.region for c in screen.columns]
                columns = screen.query_one("#columns")
                assert columns.max_scroll_y == 0  # no scrolling to reach an answer
                assert all(Region(0, 0, width, height).contains_region(r) for r in cols)
                if width >= 4 * 26:
                    assert len({r.y for r in cols}) == 1  # four across
                else:
                    assert (
                        columns.has_class("-grid") and len({r.y for r in cols}) == 2 and len({r.x for r in cols}) == 2
                    )
                # One name for "0" with four answers, in the footer and the vote bar.
                lines = screen_lines(app)
                assert "0 all bad" in lines[-1] and "both bad" not in lines[-1]
                assert any("0 all bad" in line for line in lines[:-1])
                assert_footer_fits(app, width)
                assert lines[0].startswith(" Compare (blind) 4 presets")

                await pilot.press("0")
                await wait_for(pilot, lambda: screen.state == "voted")
                await pilot.pause(0.3)
                head = screen_lines(app)[0]
                assert head.startswith(" Compare (revealed) ") and "blind" not in head
                if width >= 120:  # narrower, the head drops the names: the column titles carry them
                    assert head.startswith(" Compare (revealed) A = ")
                bar = screen.query_one("#vote-bar").region
                assert "all bad" in str(screen.query_one("#vote-bar").render())
                # The vote bar says the vote is saved: no notice covers the titles it revealed (QA).
                assert not toasts(app)
                app.notify("a notification after the vote")  # one there is (an undo's) stays off the bar
                await pilot.pause(0.3)
                assert toasts(app) and not any(r.overlaps(bar) for r in toasts(app))

        asyncio.run(go())


def test_two_answers_name_zero_both_bad(tiny, tmp_path):
    with Store(tmp_path / DB_NAME) as store:

        async def go():
            app = make_app(
                tiny,
                store,
                tmp_path,
                presets=short_presets(),
                mode="compare",
                compare_presets=["deterministic", "balanced"],
            )
            async with app.run_test(size=(80, 24)) as pilot:
                await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
                screen = app.screen
                await pilot.press(*"Hi", "enter")
                await wait_for(pilot, lambda: screen.state == "voting")
                await pilot.pause(0.2)
                lines = screen_lines(app)
                assert "0 both bad" in lines[-1] and any("0 both bad" in line for line in lines[:-1])
                # blind: a column says only how it ended, not its length or seed (they can name a model)
                assert any("finished" in line or "cut off" in line for line in lines)
                assert not any("seed " in line or "max tokens · " in line for line in lines)

        asyncio.run(go())


def test_a_chat_title_is_cut_after_a_word_and_says_so():
    long = "Write a very long story about a dragon and a princess and a castle by the sea"
    assert chat_title("  Hello\n  there ") == "Hello there"
    title = chat_title(long)
    assert title == "Write a very long story about a dragon and a princess and a…"
    assert len(title) <= TITLE_CHARS + 1 and long.startswith(title[:-1])
    assert chat_title("小猫" * 40) == "小猫" * (TITLE_CHARS // 2) + "…"  # no spaces: cut at the limit
