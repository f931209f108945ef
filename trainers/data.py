"""Training data on disk -> checked Python records, every problem named by file and line.

Two kinds of data live here (preference pairs are `preferences.py`'s):

* text for pretraining: a .txt file, a folder of .txt files, or JSONL lines with a "text" field;
* conversations for SFT: JSONL lines with "messages", "prompt"/"completion" or ShareGPT's
  "conversations" (turns from human, gpt and system).

Policy for bad rows: the whole file is refused at the first bad line, with that line's number and
what is wrong with it. Nothing is skipped silently, so a fixed file can simply be run again and
trains on exactly the rows it holds (and two runs never disagree on what was dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from tiankong.engine.chat import TEMPLATE_FIX, ChatTemplate, validate_messages
from tiankong.engine.errors import ChatTemplateError, ChatTemplateFault, InputError, TiankongError
from tiankong.engine.tokenizer import Tokenizer

from .records import decode_text, parse_line, split_lines

# A line holding only this marker separates documents inside a .txt file (TinyStories' convention).
DOC_SEPARATOR = "<|endoftext|>"
_SEPARATOR_LINE = re.compile(r"^[ \t]*" + re.escape(DOC_SEPARATOR) + r"[ \t]*$", re.MULTILINE)
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


# What fixes a chat template that fails in a trainer, in place of generate's TEMPLATE_FIX (its
# chat_template=PATH and generate --raw are no options of theirs): sft has no --raw; reward score reads
# the template its reward model was trained with, so the fix is there.
SFT_TEMPLATE_FIX = "fix the template or pass another file (--chat-template FILE)"
TRAIN_TEMPLATE_FIX = SFT_TEMPLATE_FIX + ", or train on plain text (--raw)"
SCORE_TEMPLATE_FIX = "fix that file, or train the reward model again with another (--chat-template FILE)"
_FAILED = re.compile(r"chat template failed(?: \(.*?\))?(?=: )")


def trainer_template_line(error: TiankongError, where: str, fix: str, line_fix: str = "") -> InputError:
    """The one line for an error rendering `where` (a data file's line): a template that failed on its
    own (ChatTemplateFault: a ZeroDivisionError, a runaway loop) is named as the thing at fault, with
    the trainer's `fix`; any other error (a template that rejected these messages, a bad message) is
    the line's, followed by `line_fix`."""
    text = str(error).replace(TEMPLATE_FIX, fix)
    if isinstance(error, ChatTemplateFault) and (m := _FAILED.match(text)):
        return InputError(f"{m[0]} on {where}{text[m.end() :]}")
    if isinstance(error, ChatTemplateFault) or TEMPLATE_FIX in str(error):  # the model's own, unusable
        return InputError(f"{where}: {text}")
    return InputError(f"{where}: {text}{line_fix}")


def find_chat_template(
    folder: str | Path, tokenizer: Tokenizer, override: str = "", fix: str = TRAIN_TEMPLATE_FIX
) -> tuple[ChatTemplate | None, str]:
    """The chat template a trainer renders with and where it comes from: the --chat-template file
    `override` ("file"), else the model's own ("model"), else None ("none"). sft, reward, dpo and ppo
    all find theirs here, so a --chat-template file means the same to each; `fix` is what a file
    that is no usable template is told to do."""
    if override:
        path = Path(override).expanduser()
        if not path.exists() and not path.is_symlink():
            raise InputError(
                f"chat template file {path} does not exist; pass a .jinja file or leave --chat-template empty"
            )
        # generate's reader and checks: a regular file, UTF-8, at most 4 MB, a template that reads the messages
        try:
            return ChatTemplate.from_file(path, tokenizer), "file"
        except ChatTemplateError as e:
            raise InputError(str(e).replace(TEMPLATE_FIX, fix)) from None
    found = ChatTemplate.from_folder(folder, tokenizer)
    return (found, "model") if found is not None else (None, "none")


def _existing(path: str | Path, what: str) -> Path:
    if not str(path):
        raise InputError(f"no training data given; pass --data with {what}")
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"data {p} does not exist; pass --data with {what}")
    return p


def _read_utf8(path: Path) -> str:
    """The file as text, a leading byte order mark dropped, as every data file is read (records.py)."""
    return decode_text(path.read_bytes(), str(path))


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object stops here."""
    path = Path(path)
    return jsonl_objects(split_lines(_read_utf8(path)), str(path))


def jsonl_objects(lines: list[str], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of `name`; InputError naming the line otherwise."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        obj = parse_line(line, f"{name} line {n}", "fix or delete the line")
        if not isinstance(obj, dict):
            raise InputError(f"{name} line {n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


# ---- pretraining text


def split_documents(text: str) -> list[str]:
    """A text file's documents: separated by lines holding only <|endoftext|>; blank ones dropped."""
    docs = (d.strip("\n") for d in _SEPARATOR_LINE.split(text))
    return [d for d in docs if d.strip()]


def load_texts(path: str | Path) -> list[str]:
    """Documents for pretraining, in a fixed order.

    A .jsonl/.json file: one {"text": ...} object per line. A folder: every *.txt file below it,
    sorted by path. Any other file: plain UTF-8 text, split into documents by DOC_SEPARATOR lines.
    """
    p = _existing(path, 'a .txt file, a folder of .txt files or JSONL with a "text" field')
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if not files:
            raise InputError(f"{p} holds no .txt files; put the training text in .txt files")
        docs = [d for f in files for d in split_documents(_read_utf8(f))]
    elif p.suffix.lower() in JSONL_SUFFIXES:
        docs = []
        for n, obj in iter_jsonl(p):
            text = obj.get("text")
            if not isinstance(text, str):
                got = 'no "text" field' if text is None else f'"text" is {type(text).__name__}'
                raise InputError(f'{p} line {n}: {got}; every line needs a string "text"')
            if text.strip():
                docs.append(text)
    else:
        docs = split_documents(_read_utf8(p))
    if not docs:
        raise InputError(f"{p} has no text to train on")
    return docs


# ---- SFT conversations


@dataclass
class Conversation:
    line: int  # 1-based line in the data file, for error messages later on (e.g. from the template)
    messages: list[dict[str, Any]]


def _as_messages(value: Any, role: str, key: str) -> list[dict[str, Any]]:
    """A prompt or completion: a string (one `role` message) or a list of messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return validate_messages(value)
    raise InputError(f'"{key}" must be a string or a list of messages, got {type(value).__name__}')


# ShareGPT's speakers ("from") -> roles; its rows are {"conversations": [{"from": ..., "value": ...}, ...]}.
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def sharegpt_messages(turns: Any) -> list[dict[str, Any]]:
    """A ShareGPT "conversations" list as messages: human -> user, gpt -> assistant, system -> system."""
    if not isinstance(turns, list):
        raise InputError(f'"conversations" must be a list of {{"from", "value"}} turns, got {type(turns).__name__}')
    out = []
    for i, turn in enumerate(turns, 1):
        if not (isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str)):
            raise InputError(f'"conversations" turn {i} must be {{"from": str, "value": str}} (ShareGPT)')
        if turn["from"] not in SHAREGPT_ROLES:
            raise InputError(
                f'"conversations" turn {i} is from {turn["from"]!r}; ShareGPT turns are from '
                f'{", ".join(SHAREGPT_ROLES)} (or write "messages" with roles system, user and assistant)'
            )
        out.append({"role": SHAREGPT_ROLES[turn["from"]], "content": turn["value"]})
    return out


def parse_conversation(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """One SFT row -> its messages; raises InputError (without the line number) when it is bad."""
    if "messages" in obj:
        messages = validate_messages(obj["messages"])
    elif "conversations" in obj:  # ShareGPT
        messages = validate_messages(sharegpt_messages(obj["conversations"]))
    elif "prompt" in obj and "completion" in obj:
        messages = _as_messages(obj["prompt"], "user", "prompt") + _as_messages(
            obj["completion"], "assistant", "completion"
        )
    else:
        raise InputError(
            'needs "messages" (a list of {"role", "content"}), "prompt" and "completion", '
            'or ShareGPT\'s "conversations" (a list of {"from", "value"})'
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise InputError("has no assistant message, so there is no answer to learn")
    return messages


def load_conversations(path: str | Path) -> list[Conversation]:
    """SFT rows from JSONL; the first bad line refuses the file (see the module docstring)."""
    p = _existing(path, 'a JSONL file of {"messages": [...]} or {"prompt": ..., "completion": ...} lines')
    if p.is_dir():
        raise InputError(f"{p} is a folder; pass the JSONL file itself")
    rows = []
    for n, obj in iter_jsonl(p):
        try:
            rows.append(Conversation(n, parse_conversation(obj)))
        except InputError as e:
            raise InputError(f"{p} line {n}: {e}") from None
    if not rows:
        raise InputError(f"{p} has no rows; put one JSON object per line")
    return rows


# ---- held-out split


def split_holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) item indices, both sorted: a seeded random `fraction` of range(n) held out.

    At least one item is held out when fraction > 0, and at least one is always left to train on.
    """
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    k = min(n - 1, max(1, round(fraction * n)))
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    held = set(torch.randperm(n, generator=g)[:k].tolist())
    return [i for i in range(n) if i not in held], sorted(held)
