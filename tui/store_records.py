"""What the store holds, as Python records (chats, messages, responses, votes), and how each becomes a
row and back: JSON columns, seeds as signed integers, a vote's row and its content hash.

Apart from the Store class so that the schema (a migration hashes votes), the chat and vote halves of
the store, and the modules that only pass votes around (prefs, the leaderboard, the screens) share one
definition without importing the database code.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tiankong.engine.errors import InputError

OUTCOMES = ("ranked", "tie", "both_bad")
MIN_RESPONSES, MAX_RESPONSES = 2, 4


# ---------------------------------------------------------------- records


@dataclass
class ChatSummary:
    id: int
    title: str
    model: str
    preset: str
    created_at: str
    updated_at: str
    n_messages: int


@dataclass
class ChatMatch:
    """A chat found by Store.search_chats: its summary and its newest message containing the query."""

    chat: ChatSummary
    message_id: int
    snippet: str  # that message on one line, cut around the first match


@dataclass
class Message:
    id: int
    chat_id: int
    role: str
    content: str
    preset: str | None
    params: dict | None
    seed: int | None
    finish_reason: str | None
    tokens: list[dict] | None
    created_at: str
    parent_id: int | None = None  # the message this one follows (None: the chat's first)
    siblings: list[int] = field(
        default_factory=list
    )  # ids of the branches at this point, itself included, oldest first
    model: str | None = None  # an answer's: the model that wrote it (a model_key); None for the user's
    # An answer's: how many of the chat's oldest turns its prompt left out (they no longer fitted the
    # context); None where that is not known (an answer stored before tiankong kept it).
    dropped: int | None = None


@dataclass
class Chat:
    id: int
    title: str
    model: str
    preset: str
    system_prompt: str
    created_at: str
    updated_at: str
    messages: list[Message] = field(default_factory=list)  # the active branch, first to last


@dataclass
class Response:
    label: str
    model: str
    preset: str
    params: dict
    seed: int | None  # None only for imported responses, whose seed is unknown
    text: str
    finish_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "model": self.model,
            "preset": self.preset,
            "params": self.params,
            "seed": self.seed,
            "text": self.text,
            "finish_reason": self.finish_reason,
        }


@dataclass
class Vote:
    id: int | None
    prompt: str
    conversation: list[dict]  # the chat so far, system prompt included, ending with the user prompt
    responses: list[Response]
    outcome: str  # "ranked" | "tie" | "both_bad"
    ranking: list[int]  # indices into responses, best first; all of them for "ranked", [] otherwise
    rater: str
    blind: bool
    created_at: str = ""  # "" = now, filled in by add_vote
    source: str = "playground"  # "import:FILE" for imported votes
    # How many leading entries of `ranking` the rater put in order; the rest is one unordered group
    # (pressing `3 1 enter` on four answers: C > A > {B, D}). None = the whole ranking is ordered.
    n_ranked: int | None = None
    prompt_id: str | None = None  # which prompt of a prompt file or answers file this vote is about

    def tiers(self) -> list[list[int]]:
        """The ranking as groups of response indices, best first; responses within a group are unordered.
        A ranked vote: one group per ranked response, then the unranked rest; a tie or both-bad: one group."""
        if self.outcome != "ranked":
            return [list(range(len(self.responses)))]
        k = len(self.ranking) if self.n_ranked is None else self.n_ranked
        tiers = [[i] for i in self.ranking[:k]]
        return tiers + [list(self.ranking[k:])] if self.ranking[k:] else tiers

    def pairs(self) -> list[tuple[int, int]]:
        """(better, worse) response indices the rater expressed: every response beats those in lower
        groups; responses in one group (the unranked tail, a tie) are never paired with each other."""
        if self.outcome != "ranked":
            return []
        tiers = self.tiers()
        return [(i, j) for a, tier in enumerate(tiers) for i in tier for lower in tiers[a + 1 :] for j in lower]


def same_answer(a: str, b: str) -> bool:
    """Whether two answers are one answer as far as a preference goes: the same text, which no rater
    can prefer to itself (a deterministic preset says the same again; tiny models often do). A pair of
    them is no preference: the chat's branch votes and compare's rankings store none."""
    return a == b


def validate_vote(v: Vote) -> None:
    """Raise InputError unless the vote is storable: 2-4 responses, a known outcome, a matching ranking."""
    if v.outcome not in OUTCOMES:
        raise InputError(f"vote outcome {v.outcome!r} is unknown; use one of {', '.join(OUTCOMES)}")
    n = len(v.responses)
    if not MIN_RESPONSES <= n <= MAX_RESPONSES:
        raise InputError(f"a vote needs {MIN_RESPONSES} to {MAX_RESPONSES} responses, got {n}")
    if not all(isinstance(r, Response) for r in v.responses):
        raise InputError("vote responses must be Response objects")
    if v.outcome == "ranked":
        if sorted(v.ranking) != list(range(n)):
            raise InputError(
                f"a ranked vote's ranking must order all {n} responses once each "
                f"(a permutation of 0..{n - 1}), got {list(v.ranking)}"
            )
        if v.n_ranked is not None and not (isinstance(v.n_ranked, int) and 1 <= v.n_ranked <= n):
            raise InputError(
                f"a ranked vote's n_ranked (responses put in order) must be 1 to {n} or None, got {v.n_ranked!r}"
            )
    elif list(v.ranking):
        raise InputError(f"a {v.outcome} vote has no ranking; pass ranking=[], got {list(v.ranking)}")
    if not isinstance(v.prompt, str):
        raise InputError(f"vote prompt must be a string, got {type(v.prompt).__name__}")
    for i, m in enumerate(v.conversation):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise InputError(f'vote conversation message {i + 1} must be {{"role": str, "content": str}}')


# ---------------------------------------------------------------- rows


_INSERT_VOTE = (
    "INSERT INTO votes (prompt, conversation, responses, outcome, ranking, rater, blind, source, "
    "created_at, n_ranked, prompt_id, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _vote_row(v: Vote, t: str, content_hash: str | None = None) -> tuple:
    """The values of _INSERT_VOTE for `v`; t is the time for a vote without created_at."""
    return (
        v.prompt,
        _dumps(v.conversation),
        _dumps([r.to_dict() for r in v.responses]),
        v.outcome,
        _dumps(list(v.ranking)),
        v.rater,
        int(bool(v.blind)),
        v.source,
        v.created_at or t,
        v.n_ranked,
        v.prompt_id,
        content_hash,
    )


def vote_hash(v: Vote) -> str:
    """The content hash of an imported vote: prompt, conversation, responses, outcome and ranking, as
    stored (rater, source and time are not content: the same pair imported under another name is a duplicate)."""
    row = _vote_row(v, "")
    parts = [row[0], row[1], row[2], row[3], row[4], None if v.n_ranked is None else str(v.n_ranked)]
    return _content_hash(None if x is None else x.encode("utf-8", "surrogatepass") for x in parts)


def _pair_key(v: Vote) -> str:
    """What a branch vote is about, whichever way it went: its conversation and its two answers' texts
    in sorted order (kept in content_hash; the leading tag keeps it apart from vote_hash's)."""
    assert len(v.responses) == 2, "a branch vote compares two answers"
    texts = sorted(r.text for r in v.responses)
    parts = ["branch pair", _dumps(v.conversation) or "", *texts]
    return _content_hash(x.encode("utf-8", "surrogatepass") for x in parts)


def _content_hash(parts: Iterable[bytes | None]) -> str:
    h = hashlib.sha256()
    for part in parts:  # length-prefixed, so no two different rows hash the same bytes
        h.update(b"\xff" * 8 if part is None else len(part).to_bytes(8, "little"))
        h.update(part or b"")
    return h.hexdigest()


def _seed_in(seed: int | None) -> int | None:
    """A seed (0 .. 2^64 - 1, as the sampler takes it) as SQLite's signed 64-bit INTEGER: the upper
    half wraps to negative numbers, so no seed is refused or turned into a lossy REAL."""
    return None if seed is None else seed - 2**64 if seed >= 2**63 else seed


def _seed_out(value: int | None) -> int | None:
    """_seed_in undone."""
    return None if value is None else value + 2**64 if value < 0 else value


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _summary(r: sqlite3.Row) -> ChatSummary:
    return ChatSummary(r["id"], r["title"], r["model"], r["preset"], r["created_at"], r["updated_at"], r["n"])


def _message(r: sqlite3.Row) -> Message:
    return Message(
        r["id"],
        r["chat_id"],
        r["role"],
        r["content"],
        r["preset"],
        _loads(r["params"]),
        _seed_out(r["seed"]),
        r["finish_reason"],
        _loads(r["tokens"]),
        r["created_at"],
        r["parent_id"],
        model=r["model"],
        dropped=r["dropped"],
    )


def _vote(r: sqlite3.Row) -> Vote:
    return Vote(
        id=r["id"],
        prompt=r["prompt"],
        conversation=_loads(r["conversation"]),
        responses=[Response(**d) for d in _loads(r["responses"])],
        outcome=r["outcome"],
        ranking=_loads(r["ranking"]),
        rater=r["rater"],
        blind=bool(r["blind"]),
        created_at=r["created_at"],
        source=r["source"],
        n_ranked=r["n_ranked"],
        prompt_id=r["prompt_id"],
    )
