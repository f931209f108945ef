"""The list of past chats (ctrl+o on the chat screen): open one, search their messages, delete one.

A modal screen of its own: it needs only the store, and hands back the chat to open (`Picked`), with
the message a search found in it.
"""

from __future__ import annotations

from typing import NamedTuple

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from tiankong.engine.model_names import display_name
from tiankong.tui.store import Store, StoreError
from tiankong.tui.widgets.status import plural

QUOTED_CHARS = 40  # a query quoted back in "no message contains …" is cut here


class Picked(NamedTuple):
    """The chat to open, and the message to open it at (a search's match; None: its end)."""

    chat_id: int
    message_id: int | None = None


def quoted(query: str) -> str:
    """`query` to quote in a line: a 12,000-character paste filled the list, said back whole."""
    return query if len(query) <= QUOTED_CHARS else query[:QUOTED_CHARS].rstrip() + "…"


class ChatListScreen(ModalScreen[Picked | None]):
    """Past chats, newest first: Enter opens one, d twice deletes it, Esc closes. `/` goes to the search
    box, which keeps the chats with a message containing its text (Store.search_chats) and shows where;
    Enter there opens the highlighted one, at that message."""

    BINDINGS = [
        Binding("escape", "dismiss_none", "close"),
        Binding("d", "delete", "delete"),
        Binding("slash", "search", "search", show=False),
    ]
    DEFAULT_CSS = """
    ChatListScreen { align: center middle; }
    ChatListScreen > Vertical { width: 90%; max-width: 100; height: 80%; border: round $accent; background: $surface; }
    ChatListScreen OptionList, ChatListScreen OptionList:focus { height: 1fr; border: none; }
    ChatListScreen #chat-search { margin: 0 0 1 0; }
    """

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self._armed: int | None = None  # a chat id that the next `d` deletes
        self._found: dict[int, int] = {}  # chat id -> the message the search found in it

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "chats"
            box.border_subtitle = "enter open · / search · d d delete · esc close"
            yield Input(placeholder="/ search messages", id="chat-search", compact=True)
            yield OptionList(id="chat-list")

    def on_mount(self) -> None:
        self._fill()
        self.query_one(OptionList).focus()

    def _fill(self) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        query = " ".join(self.query_one("#chat-search", Input).value.split())
        try:
            self._found = {}
            if query:
                found = self.store.search_chats(query)
                self._found = {m.chat.id: m.message_id for m in found}
                chats = [(m.chat, m.snippet) for m in found]
            else:
                chats = [(c, "") for c in self.store.list_chats()]
        except StoreError as e:  # a damaged or locked database: said here, the chat behind stays open
            options.add_option(Option(Text(str(e), style="bold red"), id="none", disabled=True))
            return
        for c, where in chats:
            line = Text(c.title or f"chat {c.id}", style="bold")
            line.append(
                f"  {c.preset} · {plural(c.n_messages, 'message')} · {display_name(c.model)} · "
                f"{c.updated_at[:16].replace('T', ' ')}",
                style="dim",
            )
            if where:  # the message that matched, on one line (Chinese is two cells a character), query highlighted
                snip = Text(where, style="italic")
                snip.truncate(max(20, options.size.width - 4), overflow="ellipsis")
                snip.highlight_words([query], "bold reverse", case_sensitive=False)
                line.append_text(Text("\n  ").append_text(snip))
            options.add_option(Option(line, id=str(c.id)))
        if not chats:
            empty = f"no message contains “{quoted(query)}”" if query else "no chats yet"
            options.add_option(Option(Text(empty, style="dim"), id="none", disabled=True))
        else:
            options.highlighted = 0

    @on(Input.Changed, "#chat-search")
    def _search_changed(self) -> None:
        self._armed = None
        self._fill()

    @on(Input.Submitted, "#chat-search")
    def _search_submitted(self) -> None:
        """Enter in the box opens the highlighted chat (the footer says "enter open"); with none
        found, the focus goes to the list."""
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            option = options.get_option_at_index(options.highlighted)
            if option.id and option.id != "none":
                self._open(int(option.id))
                return
        options.focus()

    def action_search(self) -> None:
        self.query_one("#chat-search", Input).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id and event.option.id != "none":
            self._open(int(event.option.id))

    def _open(self, chat_id: int) -> None:
        """Open the chat: at the message the search found in it, or at its end."""
        self.dismiss(Picked(chat_id, self._found.get(chat_id)))

    def action_delete(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return
        option = options.get_option_at_index(options.highlighted)
        if not option.id or option.id == "none":
            return
        chat_id = int(option.id)
        if self._armed != chat_id:
            self._armed = chat_id
            self.notify("press d again to delete this chat")
            return
        try:
            self.store.delete_chat(chat_id)
        except StoreError as e:
            self.notify(str(e), title="not deleted", severity="error", markup=False)
            return
        self._armed = None
        self.notify("chat deleted")
        self._fill()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
