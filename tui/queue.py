"""Queues of rounds to vote on: prompts to answer (`tiankong compare --prompts`) or answers made
earlier (`tiankong rank --input`). No Textual here: files in, plain records out.

A queue is keyed by its file's content hash, and its progress (the rounds done) by that, the lineup
that answers (models and presets) and the rater (`PromptQueue.progress_key`), so the store can
remember how far each person got with each lineup and reopen the same file at the next round; an
edited file is a new queue, and another lineup or rater starts it from the beginning.
Every prompt gets a prompt id: the file's own "id" when a line has one, else a hash of the
conversation, so the same prompt has the same id in a prompt file and in generate's output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiankong.engine.chat import validate_messages
from tiankong.engine.errors import InputError, quoted
from tiankong.engine.model_names import display_name
from tiankong.trainers.records import not_a_file, read_prompt_records, read_rows
from tiankong.tui.store_records import MAX_RESPONSES, MIN_RESPONSES

UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True)
class Answer:
    """What wrote one column, as a vote stores it."""

    model: str  # identity: a resolved folder path, or a label from an answers file
    model_name: str  # how it is shown
    preset: str
    params: dict
    seed: int | None


@dataclass(frozen=True)
class Given:
    """An answer read from a file: who wrote it and what it says."""

    answer: Answer
    text: str
    finish_reason: str
    stats: str = ""  # e.g. "37 tokens"


@dataclass(frozen=True)
class Item:
    """One prompt of a queue; `answers` is None when the playground generates them."""

    conversation: list[dict]  # ends with the user prompt
    prompt_id: str
    answers: tuple[Given, ...] | None = None

    @property
    def prompt(self) -> str:
        return self.conversation[-1]["content"]


@dataclass
class PromptQueue:
    key: str  # "compare:" or "rank:" + the file's sha256 (+ the repeat); progress_key adds who labels it
    source: str  # the file, as given
    items: list[Item]
    repeat: int = 1  # rounds per item, one after another (fresh seeds each)
    skipped: int = 0  # prompts of the file left out (rank: fewer than two answers)
    failed: int = 0  # answers of the file left out (rank: their generation failed, finish_reason "error")

    @property
    def total(self) -> int:
        return len(self.items) * self.repeat

    def progress_key(self, lineup: Iterable[str], rater: str) -> str:
        """Where the store keeps one rater's progress through this queue with one lineup (what answers
        each column, e.g. "MODEL · PRESET", in any order; none for answers read from a file): a
        person labelling the file with other presets or models, or another person, has progress of
        their own. `key` alone is where it was kept for everyone before (Store.open_queue's legacy)."""
        who = {"lineup": sorted(lineup), "rater": rater}
        return f"{self.key}:{json.dumps(who, ensure_ascii=False, separators=(',', ':'))}"

    def at(self, position: int) -> tuple[Item, int]:
        """The item of round `position` (0-based) and which of its repeats that round is."""
        return self.items[position // self.repeat], position % self.repeat


def content_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prompt_id(conversation: list[dict]) -> str:
    """A stable id for a prompt: a hash of its conversation (roles and contents)."""
    canon = json.dumps([[m["role"], m["content"]] for m in conversation], ensure_ascii=False)
    return "p" + hashlib.sha256(canon.encode()).hexdigest()[:12]


def _conversation(job: dict[str, Any], where: str) -> list[dict]:
    """The conversation of a prompt record ({"prompt"} or {"messages"}), ending with the user prompt."""
    if job.get("messages") is not None:
        try:
            messages = validate_messages(job["messages"])
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        if messages[-1]["role"] != "user":
            raise InputError(
                f'{where}: "messages" must end with a user message (the prompt to answer); '
                f"it ends with {quoted(messages[-1]['role'])!r}"
            )
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if not isinstance(job.get("prompt"), str):
        raise InputError(f'{where}: needs a string "prompt" or a "messages" list')
    return [{"role": "user", "content": job["prompt"]}]


def _id(job: dict[str, Any], conversation: list[dict]) -> str:
    return str(job["id"]) if job.get("id") is not None else prompt_id(conversation)


def prompt_queue(path: Path, repeat: int = 1) -> PromptQueue:
    """The prompts of a prompt file (text lines, or JSONL with "prompt" or "messages") as a queue,
    read by the same reader as `tiankong generate` and PPO; a bad line stops it with its number."""
    if repeat < 1:
        raise InputError(f"--repeat must be at least 1, got {repeat}")
    if not Path(path).is_file():
        raise InputError(f"prompt file {path} {not_a_file(Path(path))}; give a text file (one prompt a line) or JSONL")
    items = []
    for _, where, job in read_prompt_records(path):
        conv = _conversation(job, where)
        items.append(Item(conv, _id(job, conv)))
    return PromptQueue(f"compare:{content_hash(path)}:x{repeat}", str(path), items, repeat)


def answers_queue(path: Path, model: str | None = None) -> PromptQueue:
    """Answers grouped by prompt (first appearance order) from `tiankong generate` output or any JSONL
    with prompt/messages and text (optional: model, preset, params, seed, finish_reason, id, usage).
    A prompt with more than four answers is split into groups of at most four; one with a single
    answer is left out (counted in `skipped`). An answer whose generation failed (finish_reason
    "error": non-finite logits, a server that broke off) is no answer to rank, as a failed column of
    `compare` is not: it is left out first (counted in `failed`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} {not_a_file(path)}; give the JSONL that `tiankong generate --n K` wrote")
    groups: dict[str, tuple[list[dict], str, list[Given]]] = {}
    failed = 0
    for _, where, rec in read_rows(path, fix="fix that line (nothing was loaded)"):
        where = f"{path} {where}"
        if not isinstance(rec, dict):
            raise InputError(f'{where}: expected a JSON object with "prompt" (or "messages") and "text"')
        conv = _conversation(rec, where)
        if not isinstance(rec.get("text"), str):
            raise InputError(f'{where}: needs the answer as a string "text" (generate\'s output has it)')
        params = rec.get("params") if isinstance(rec.get("params"), dict) else {}
        seed = rec.get("seed", params.get("seed"))
        if seed is not None and not isinstance(seed, int):
            raise InputError(f'{where}: "seed" must be an integer or null, got {quoted(repr(seed))}')
        name = rec.get("model") if isinstance(rec.get("model"), str) and rec.get("model") else model or UNKNOWN_MODEL
        usage = rec.get("usage") if isinstance(rec.get("usage"), dict) else {}
        tokens = usage.get("completion_tokens")
        given = Given(
            Answer(name, display_name(name), str(rec.get("preset") or "unknown"), params, seed),
            rec["text"],
            str(rec.get("finish_reason") or ""),
            f"{tokens} tokens" if isinstance(tokens, int) else "",
        )
        if given.finish_reason == "error":  # checked whole above: a bad line is still named
            failed += 1
            continue
        pid = _id(rec, conv)
        groups.setdefault(json.dumps([pid, conv], ensure_ascii=False), (conv, pid, []))[2].append(given)
    items, skipped = [], 0
    for conv, pid, answers in groups.values():
        if len(answers) < MIN_RESPONSES:
            skipped += 1
            continue
        chunks = -(-len(answers) // MAX_RESPONSES)  # as few groups as possible, sizes differing by at most 1
        size, extra = divmod(len(answers), chunks)
        start = 0
        for c in range(chunks):
            end = start + size + (c < extra)
            items.append(Item(conv, pid, tuple(answers[start:end])))
            start = end
    if not items:
        left_out = f' ({failed} answer{"s" * (failed != 1)} with finish_reason "error" left out)' if failed else ""
        raise InputError(
            f"{path} has no prompt with two or more answers to rank{left_out}; "
            "make them with `tiankong generate --n 2` (or more)"
        )
    return PromptQueue(f"rank:{content_hash(path)}", str(path), items, skipped=skipped, failed=failed)
