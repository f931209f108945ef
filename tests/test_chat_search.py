"""Finding old chats (issue 12, item 4): the store's full-text search over messages (FTS5 trigram
index, kept in step by triggers; LIKE without FTS5) and the search box of the chat list (ctrl+o)."""

from __future__ import annotations

import asyncio
import sqlite3
import time

from textual.widgets import Input, OptionList

import tiankong.tui.store_chats as store_chats
import tiankong.tui.store_schema as store_schema
from tiankong.tui.store import DB_NAME, Store
from tiankong.tui.store_schema import MIGRATIONS


def _search_version() -> int:
    """The schema version just before the search index."""
    return next(i for i, m in enumerate(MIGRATIONS) if m.__name__ == "_v4_message_search")


def _fill(store: Store) -> tuple[int, int, int]:
    """An old chat whose third message says "lighthouse" and "小猫很开心", then a newer chat without them."""
    old = store.create_chat("m", "balanced", title="old chat")
    ids = [
        store.add_message(old, role, text)
        for role, text in [
            ("user", "Tell me a story."),
            ("assistant", "Once there was a boat."),
            ("user", "Now add a LightHouse keeper, and 小猫很开心。"),
            ("assistant", "The keeper waved."),
        ]
    ]
    time.sleep(0.002)
    new = store.create_chat("m", "creative", title="new chat")
    store.add_message(new, "user", "What is 2 + 2?")
    return old, new, ids[2]


def test_search_finds_a_word_in_an_old_chat_after_reopening(tmp_path):
    with Store(tmp_path / DB_NAME) as s:
        assert s._read("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'"), "this sqlite3 has FTS5 trigram"
        old, new, third = _fill(s)
    with Store(tmp_path / DB_NAME) as s:
        for query in ("lighthouse", "LIGHThouse", "小猫", "猫", "  keeper,   and "):
            (hit,) = s.search_chats(query)
            assert (hit.chat.id, hit.chat.title, hit.message_id, hit.chat.n_messages) == (old, "old chat", third, 4)
        assert "LightHouse" in s.search_chats("lighthouse")[0].snippet
        assert [h.chat.id for h in s.search_chats("a")] == [new, old]  # newest chat first
        assert s.search_chats("submarine") == [] and s.search_chats("   ") == []
        assert s.search_chats('"; DROP TABLE chats; --') == [] and s.search_chats("100%") == []
        # Kept in step in the same transactions as the messages: edits, truncation, deletion.
        s.update_message(third, "a submarine instead")
        assert [h.chat.id for h in s.search_chats("submarine")] == [old] and s.search_chats("lighthouse") == []
        s.delete_messages_from(old, third)
        assert s.search_chats("submarine") == []
        s.delete_chat(new)
        assert s.search_chats("2 + 2") == []


def test_an_old_schema_database_migrates_and_its_messages_are_searchable(tmp_path):
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db, isolation_level=None)
    for migration in MIGRATIONS[: _search_version()]:  # the schema before the index, with data in it
        migration(conn)
    conn.execute(f"PRAGMA user_version = {_search_version()}")
    conn.execute(
        "INSERT INTO chats (id, title, model, preset, created_at, updated_at) "
        "VALUES (7, 'before search', 'm', 'balanced', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')"
    )
    for i, text in enumerate(["hi", "hello", "the ancient lighthouse", "bye"]):
        conn.execute(
            "INSERT INTO messages (chat_id, role, content, created_at) VALUES (7, ?, ?, '2024')",
            ("user" if i % 2 == 0 else "assistant", text),
        )
    conn.close()
    with Store(db) as s:
        (hit,) = s.search_chats("lighthouse")
        assert (hit.chat.id, hit.chat.title, hit.snippet) == (7, "before search", "the ancient lighthouse")
        s.add_message(7, "user", "and a new lighthouse")  # new messages are indexed too
        assert s.search_chats("new light")[0].chat.id == 7


def test_without_fts5_search_falls_back_to_like(tmp_path, monkeypatch):
    monkeypatch.setattr(store_schema, "_has_fts5_trigram", lambda conn: False)
    with Store(tmp_path / DB_NAME) as s:
        assert not s._read("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'")
        old, new, third = _fill(s)
        (hit,) = s.search_chats("LIGHTHOUSE")
        assert (hit.chat.id, hit.message_id) == (old, third)
        assert [h.chat.id for h in s.search_chats("小猫")] == [old]
        assert s.search_chats("100%") == [] and s.search_chats("_") == []


def test_snippet_cuts_around_the_first_match():
    text = "word " * 40 + "needle in the\nhay " + "more " * 40
    snip = store_chats.snippet(text, "NEEDLE IN THE HAY")
    assert snip.startswith("…") and snip.endswith("…") and "needle in the hay" in snip and "\n" not in snip
    assert store_chats.snippet("short text", "absent") == "short text"


# ---------------------------------------------------------------- the chat list's search box (Pilot)


def test_chat_list_search_filters_by_message_content_and_opens_the_match(tmp_path):
    from test_tui_chat import loaded, make_app
    from tiny_models import make_model

    from tiankong.tui.screens.chat_list import ChatListScreen

    model = make_model(tmp_path / "tiny-llama", "llama")
    with Store(tmp_path / "data" / DB_NAME) as store:
        old, new, _ = _fill(store)

        async def go():
            app = make_app(model, store, tmp_path)
            async with app.run_test(size=(100, 30)) as pilot:
                chat = await loaded(pilot)
                await pilot.press("ctrl+o")
                await pilot.pause()
                screen = app.screen
                assert isinstance(screen, ChatListScreen)
                options = screen.query_one(OptionList)
                assert [options.get_option_at_index(i).id for i in range(options.option_count)] == [str(new), str(old)]
                await pilot.press("slash")
                assert screen.focused is screen.query_one("#chat-search", Input)
                await pilot.press(*"lighthouse d")  # a "d" typed here is text, not delete
                await pilot.pause()
                assert screen.query_one("#chat-search", Input).value == "lighthouse d"
                await pilot.press("backspace", "backspace")
                await pilot.pause()
                assert options.option_count == 1 and options.get_option_at_index(0).id == str(old)
                shown = str(options.get_option_at_index(0).prompt)
                assert "old chat" in shown and "add a LightHouse keeper" in shown  # the snippet
                await pilot.press(*"zzz")
                await pilot.pause()
                assert "no message contains “lighthousezzz”" in str(options.get_option_at_index(0).prompt)
                for _ in range(3):
                    await pilot.press("backspace")
                await pilot.press("enter")  # from the box to the list, then open
                await pilot.press("enter")
                await pilot.pause()
                assert app.screen is chat and chat.chat_id == old and len(chat.messages) == 4

        asyncio.run(go())


def test_a_search_that_finds_nothing_quotes_a_long_query_cut_short(tmp_path):
    # A 12,000-character paste in the search box was said back whole, filling the list.
    from textual.app import App

    from tiankong.tui.screens.chat_list import ChatListScreen

    store = Store(tmp_path / DB_NAME)
    _fill(store)
    query = "nowhere to be found " * 600

    class Lists(App[None]):
        def on_mount(self) -> None:
            self.push_screen(ChatListScreen(store))

    async def go():
        async with Lists().run_test(size=(100, 30)) as pilot:
            screen = pilot.app.screen
            screen.query_one("#chat-search", Input).value = query
            await pilot.pause()
            options = screen.query_one(OptionList)
            long = str(options.get_option_at_index(0).prompt)
            screen.query_one("#chat-search", Input).value = "zzz"
            await pilot.pause()
            return options.option_count, long, str(options.get_option_at_index(0).prompt)

    count, long, short = asyncio.run(go())
    store.close()
    assert count == 1 and long == "no message contains “nowhere to be found nowhere to be found…”"
    assert short == "no message contains “zzz”"
