"""TRL preference records, parsed without torch: shared by the trainers and `tiankong prefs import`.

The formats are listed in `preferences.py`. Everything here raises InputError with a message that
names the field; callers add the file name and line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from tiankong.engine.errors import InputError, quoted
from tiankong.engine.files import lone_surrogate

Prompt = str | list[dict]
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which some editors put first
ROLES = ("system", "user", "assistant")


def messages_field(value: Any, what: str) -> list[dict]:
    """A non-empty list of {"role", "content"} messages with known roles -> plain copies."""
    if not isinstance(value, list) or not value:
        raise InputError(f'"{what}" must be a non-empty list of {{"role", "content"}} messages')
    out = []
    for i, m in enumerate(value, 1):
        if not (isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise InputError(f'"{what}" message {i} must be {{"role": str, "content": str}}')
        if m["role"] not in ROLES:
            raise InputError(f'"{what}" message {i} has role {quoted(m["role"])!r}; use system, user or assistant')
        out.append({"role": m["role"], "content": m["content"]})
    return out


def reply_field(value: Any, what: str) -> str:
    """The text of a one-message assistant list (TRL conversational "chosen"/"rejected")."""
    msgs = messages_field(value, what)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise InputError(f'"{what}" must be exactly one assistant message')
    return msgs[0]["content"]


def implicit_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Implicit-prompt text pair: the shared start is the prompt, cut back to the last whitespace so
    no word is split (the answers keep their leading space, as TRL does). Identical sides give
    (chosen, "", "")."""
    n = len(os.path.commonprefix([chosen, rejected]))
    if n == len(chosen) == len(rejected):
        return chosen, "", ""
    space = max(chosen.rfind(" ", 0, n), chosen.rfind("\n", 0, n))
    cut = space if space > 0 else n
    return chosen[:cut], chosen[cut:], rejected[cut:]


def implicit_messages(chosen: Any, rejected: Any) -> tuple[list[dict], str, str]:
    """Implicit-prompt message lists: the shared leading messages are the prompt. Identical sides
    give (all but the last message, its text, its text)."""
    c, r = messages_field(chosen, "chosen"), messages_field(rejected, "rejected")
    if c == r:
        return c[:-1], c[-1]["content"], r[-1]["content"]
    k = 0
    while k < min(len(c), len(r)) and c[k] == r[k]:
        k += 1
    if k == 0:
        raise InputError('"chosen" and "rejected" share no leading messages, so there is no prompt; add a "prompt"')
    return c[:k], reply_field(c[k:], "chosen"), reply_field(r[k:], "rejected")


def explicit(prompt: Any, chosen: Any, rejected: Any) -> tuple[Prompt, str, str]:
    """A record with a "prompt": all strings (standard) or all message lists (conversational)."""
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        return prompt, chosen, rejected
    if isinstance(prompt, list) and isinstance(chosen, list) and isinstance(rejected, list):
        return messages_field(prompt, "prompt"), reply_field(chosen, "chosen"), reply_field(rejected, "rejected")
    raise InputError(
        '"prompt", "chosen" and "rejected" must all be strings (standard format) '
        "or all message lists (conversational format)"
    )


def parse_record(row: Any) -> tuple[Prompt, str, str]:
    """(prompt, chosen text, rejected text) from one TRL preference record; InputError if malformed.

    Identical sides come back as they are (the caller skips or refuses them)."""
    if not isinstance(row, Mapping):
        raise InputError(f'expected a JSON object with "chosen" and "rejected", got {type(row).__name__}')
    for key in ("chosen", "rejected"):
        if key not in row:
            raise InputError(f'no "{key}"; a preference record needs "chosen" and "rejected" (and usually "prompt")')
    prompt, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
    if prompt is not None:
        return explicit(prompt, chosen, rejected)
    if isinstance(chosen, str) and isinstance(rejected, str):
        return implicit_text(chosen, rejected)
    if isinstance(chosen, list) and isinstance(rejected, list):
        return implicit_messages(chosen, rejected)
    raise InputError('"chosen" and "rejected" must both be strings or both be message lists')


def split_lines(text: str) -> list[str]:
    """The lines of a data file: split at "\\n" only, each without a trailing "\\r".

    Not str.splitlines(), which also splits at U+2028, U+0085, form feeds and the other characters
    that json.dumps(ensure_ascii=False) (and so `tiankong generate -o`) leaves raw inside strings: it
    cut valid JSONL lines in two, made two prompts of one text line, and misnumbered the lines after.
    """
    return [line.removesuffix("\r") for line in text.split("\n")]


def decode_text(raw: bytes, name: str) -> str:
    """A data file's bytes as text (a leading UTF-8 byte order mark dropped); InputError naming the
    line and byte of the first that is not UTF-8, so the bad line can be found and fixed."""
    bom = len(BOM) if raw.startswith(BOM) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start  # in the file, from 0
        line = raw.count(b"\n", 0, at) + 1
        column = at - raw.rfind(b"\n", 0, at)  # from 1, as the line and the file's byte below
        raise InputError(
            f"{name} line {line}: not UTF-8 text ({e.reason} at byte {column} of the line, "
            f"byte {at + 1} of the file); convert the file to UTF-8"
        ) from None


def parse_line(text: str, where: str, fix: str = "fix that line") -> Any:
    """One JSON document of a data file; every way it can be bad is one InputError naming `where`
    ("data.jsonl line 3"): invalid JSON, nesting too deep to parse, a number too long to convert,
    or a string with a lone surrogate ("\\ud800"), which no tokenizer can take."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: invalid JSON ({e.msg}); {fix}") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply to be a record; {fix}") from None
    except ValueError:  # the only other one: an integer of more digits than Python converts
        raise InputError(
            f"{where}: a number is too long (over {sys.get_int_max_str_digits()} digits) to be read; {fix}"
        ) from None
    if lone_surrogate(value) is not None:
        raise InputError(f'{where}: a string holds a lone surrogate escape (like "\\ud800"), which is not text; {fix}')
    return value


def read_rows(path: str | Path, fix: str = "fix that line") -> list[tuple[int, str, Any]]:
    """(number, "line N" or "item N", parsed JSON) for every record of a JSONL file (blank lines
    skipped) or a JSON array; InputError naming the file and line otherwise. `fix` ends the message
    for a line that is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} {not_a_file(path)}; give a JSONL file (or a JSON array) of preference records")
    text = decode_text(path.read_bytes(), str(path))
    if text.lstrip().startswith("["):  # a JSON array of records
        items = parse_line(text, str(path), "fix the file")
        if not isinstance(items, list):
            raise InputError(f"{path}: expected a JSON array of records; fix the file")
        return [(i, f"item {i}", item) for i, item in enumerate(items, 1)]
    rows = []
    for n, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        rows.append((n, f"line {n}", parse_line(line, f"{path} line {n}", fix)))
    return rows


# Names of files read as JSON lines throughout: a line of any JSON is JSON there (see read_prompt_records).
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")


def read_prompt_records(source: str | Path) -> list[tuple[int, str, dict[str, Any]]]:
    """(number, "NAME line N", record) for every prompt of a prompts file, "-" for stdin.

    A plain text line is {"prompt": line}; a line that starts with "{" is a JSON object with a text
    "prompt" or a "messages" list, not both (TRL's conversational "prompt" list becomes "messages"),
    kept whole so its other fields (an "id") travel along. Callers check the messages.

    In a file named .jsonl (.ndjson, .json) any line that is JSON is read as JSON: a string is the
    prompt's text (without its quotes) and any other value (a number, a list, true, false, null) is
    refused, since no reading of it as a prompt is sure. A line that is not JSON is text there too. In
    other files and on stdin every line but a "{" one is text as it stands: `42` is the prompt "42",
    and `"hi"` keeps its quotes.

    Every line is read before anything runs: a bad one is one InputError naming the file and line.
    Blank lines are skipped.
    """
    name = "stdin" if str(source) == "-" else str(source)
    if name != "stdin" and not Path(source).is_file():
        raise InputError(
            f"prompts file {source} {not_a_file(Path(source))}; give text lines or JSONL with "
            '"prompt" or "messages" (or - for stdin)'
        )
    text = decode_text(sys.stdin.buffer.read() if name == "stdin" else Path(source).read_bytes(), name)
    json_lines = name != "stdin" and Path(source).suffix.lower() in JSON_LINES_SUFFIXES
    out = []
    for n, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        where = f"{name} line {n}"
        record = _prompt_line(line, where, json_lines)
        if isinstance(record.get("prompt"), list) and "messages" not in record:
            record["messages"] = record.pop("prompt")
        if "messages" not in record and not isinstance(record.get("prompt"), str):
            raise InputError(f'{where}: a JSON line needs a text "prompt" or a "messages" list')
        if "messages" in record and record.get("prompt") is not None:
            raise InputError(
                f'{where}: has both "prompt" and "messages"; keep one: "prompt" for a text, "messages" for a conversation'
            )
        out.append((n, where, record))
    if not out:
        raise InputError(f"{name} has no prompts; put one prompt (or JSON object) per line")
    return out


def _prompt_line(line: str, where: str, json_lines: bool) -> dict[str, Any]:
    """One line of a prompts file as a record (read_prompt_records says which lines are JSON)."""
    if line.lstrip().startswith("{"):
        fix = 'fix the line; a text prompt that starts with "{" goes in as {"prompt": "..."}'
        return parse_line(line, where, fix)  # JSON that starts with "{" is an object, or it is no JSON
    if not json_lines:
        return {"prompt": line}
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return {"prompt": line}  # not JSON: a text line, as in any file
    except (ValueError, RecursionError):
        pass  # JSON that cannot be read (a number of too many digits, deep nesting): parse_line says so
    value = parse_line(line, where, 'fix the line, or give its text as {"prompt": "..."}')
    if isinstance(value, str):
        return {"prompt": value}
    kind = "list" if isinstance(value, list) else "number" if type(value) in (int, float) else "constant"
    raise InputError(
        f"{where}: {quoted(line.strip(), 40)} is a JSON {kind}, not a prompt; in a JSON lines file a line is "
        'an object with "prompt" or "messages", a JSON string (the prompt\'s text) or plain text: for this '
        'line as the prompt, write {"prompt": ...} or quote it as a string'
    )


def not_a_file(path: Path) -> str:
    """Why a path given as an input file cannot be read as one: a folder, something else that is not
    a regular file (/dev/null, a pipe, a socket), a link to nothing, or nothing there."""
    if path.is_dir():
        return "is a folder, not a file"
    if path.exists():
        return "is not a regular file (a device, a pipe or a socket)"
    return "is a link to nothing" if path.is_symlink() else "does not exist"
