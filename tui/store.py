"""Chats and preference votes in one SQLite file: the Store that the playground, `tiankong prefs`, the
arena and the trainers open.

Store is built in parts, each a module of its own, read in this order:

* store_base.py: the connection (durability, threads, opening, migrating, the one transaction every
  write goes through), the data folder, StoreError;
* store_schema.py: the tables, as the list of migrations;
* store_records.py: the records a store hands out (Chat, Message, Response, Vote) and their rows;
* store_chats.py: chats, their branches, search and exports;
* store_votes.py: votes, their statistics, and the prompt queues (their rounds and claims: store_queue.py).

The rest of tiankong imports Store, StoreError, DB_NAME, data_dir and the records Chat, Message,
Response and Vote from here; any other name from the module that holds it.
"""

from __future__ import annotations

from tiankong.tui.store_base import DB_NAME, StoreError, data_dir
from tiankong.tui.store_chats import ChatStore
from tiankong.tui.store_records import Chat, Message, Response, Vote
from tiankong.tui.store_votes import VoteStore

__all__ = ["DB_NAME", "Chat", "Message", "Response", "Store", "StoreError", "Vote", "data_dir"]


class Store(ChatStore, VoteStore):
    """The playground's database. Open it once per process; every method is thread-safe."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
