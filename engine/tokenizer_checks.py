"""Load-time checks on a tokenizer.json from a stranger, made before its pipeline touches any text.

A tokenizer.json is data, but the Rust `tokenizers` library runs what it describes, and some of what a
file can describe fails inside Rust where Python cannot contain it: steps that multiply a text's length
until an allocation aborts the process, regexes that backtrack until the engine panics. `load_tokenizer`
(engine/tokenizer.py) refuses those here, in one line naming the file and the step, and so it does a
post-processor that places a special token it never defines (a panic on every encode) and a vocabulary
that gives two tokens one id. The post-processor's own token ids are read here too, and the vocabulary's
highest id, for tokenizer.py to check against the vocabulary and the embedding.
Everything here reads only the pipeline's saved JSON and knows nothing of the Tokenizer classes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _Backend

from .errors import TokenizerError, quoted

# --- steps that make the text longer ----------------------------------------------------------------

# How many times longer a tokenizer.json's steps may make a text, all together: real ones need at most
# 8 (a "▁" before the text, ByteLevel turning a character into up to four). Steps multiply, so eight
# Replace steps of 16x each are 16**8x together: gigabytes inside the Rust tokenizer, which aborts the
# whole process when an allocation fails and cannot be bounded from Python.
MAX_TEXT_GROWTH = 16


def _steps(component: Any, children: str) -> Iterator[dict[str, Any]]:
    """Every step of a normalizer, pre-tokenizer, post-processor or decoder (a Sequence's `children`
    included, however nested), as the JSON the tokenizers library saves; nothing for a version
    without that state."""
    if component is None:
        return
    try:
        stack = [json.loads(component.__getstate__())]
    except (ValueError, TypeError, AttributeError):
        return
    while stack:
        step = stack.pop()
        if isinstance(step, dict):
            stack.extend(step.get(children) or [])
            yield step


def _growth(step: dict[str, Any], decoding: bool) -> tuple[float, str] | None:
    """(how many times longer the step can make a text, what to call it), or None for a step that
    does not grow text (Sequence, NFC, Strip, Split, ...)."""
    kind = step.get("type")
    if kind == "Replace":
        pattern, content = step.get("pattern") or {}, step.get("content")
        literal, n = pattern.get("String"), len(content) if isinstance(content, str) else 0
        role = "decoder" if decoding else "normalizer"
        if isinstance(literal, str) and literal:
            return n / len(literal), f"a Replace {role} turning {quoted(literal, 20)!r} into {n} characters"
        # A regex (or "") may match the empty string, so the content can land between every two characters.
        return 1 + n, f"a Replace {role} writing {n} characters for each match of a regex"
    if decoding:
        return None  # the decoders' ByteLevel and Metaspace shorten text
    if kind == "Prepend":
        # Before every piece of text between special tokens, which may be one character each.
        n = len(step.get("prepend") or "")
        return 1 + n, f"a Prepend normalizer of {n} characters"
    if kind == "ByteLevel":
        return 4, "a ByteLevel step (one character becomes up to four)"
    if kind == "Metaspace":
        return 2, 'a Metaspace pre-tokenizer ("▁" before each word)'
    return None


def _check_growth(backend: _Backend, path: Path) -> None:
    """Refuse a pipeline whose steps together can make a text more than MAX_TEXT_GROWTH times longer
    while encoding it (normalizer, then pre-tokenizer) or decoding it."""
    stages = {
        "encoding": [*_steps(backend.normalizer, "normalizers"), *_steps(backend.pre_tokenizer, "pretokenizers")],
        "decoding": list(_steps(backend.decoder, "decoders")),
    }
    for stage, steps in stages.items():
        factor, parts = 1.0, Counter[str]()
        for step in steps:
            grows = _growth(step, decoding=stage == "decoding")
            if grows is not None and grows[0] > 1:
                factor *= grows[0]
                parts[grows[1]] += 1
        if factor > MAX_TEXT_GROWTH:
            shown = "; ".join(part if k == 1 else f"{part}, {k} times" for part, k in parts.items())
            raise TokenizerError(
                f"{path}: its steps can make a text {factor:,.0f} times longer when {stage} it ({shown}), "
                f"where real tokenizers need at most {MAX_TEXT_GROWTH}; fix the steps or re-copy the file"
            )


# --- regexes that backtrack without end ---------------------------------------------------------------
#
# On "aaa...b", a pattern like "(a+)+$" or "(a|aa)+$" tries exponentially many ways to match before
# failing. The regex engine then stops at its retry limit by panicking inside Rust, which prints a
# panic report on stderr before Python sees the error, whatever Python does with it. No real tokenizer
# has either shape, so both are refused at load: a repeated group that repeats inside, or whose
# alternatives can start alike. The scan reads escapes, [classes] and (?...) groups as Oniguruma does.

_ANY = "any"  # what an alternative starts with when that is not one known character
_QUANTIFIER = re.compile(r"(?:[+*?]|\{(?:\d+(?:,\d*)?|,\d+)\})[?+]?")
_GROUP_PREFIX = re.compile(r"\?(?:[:=!>]|<[=!]|P?<[^>]*>|'[^']*'|#[^)]*|[a-zA-Z-]*:?)|")
_LITERAL_ESCAPES = frozenset("nrtfvae")  # \w, \p{L}, \d ... stand for many characters


class _Group:
    """What the scan knows about one group of a regex while reading it."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.repeats = False  # holds a quantifier that repeats (see _repeats)
        self.firsts: list[str | None] = [None]  # each alternative's first atom; None while it has none
        self._last_is_first = False

    def atom(self, text: str) -> None:
        self._last_is_first = self.firsts[-1] is None
        if self._last_is_first:
            self.firsts[-1] = text

    def quantify(self, quantifier: str) -> None:
        self.repeats |= _repeats(quantifier)
        if self._last_is_first and (quantifier[0] in "*?" or quantifier.startswith(("{0", "{,"))):
            self.firsts[-1] = _ANY  # optional: the alternative may start with whatever comes next

    def overlaps(self) -> bool:
        """Whether two alternatives may match the same text (unknown starts count as alike)."""
        known = [first.lower() for first in self.firsts if first not in (None, _ANY)]
        return len(self.firsts) > 1 and (len(known) < len(self.firsts) or len(set(known)) < len(known))


def _repeats(quantifier: str) -> bool:
    """Whether a quantifier can repeat what it follows: +, *, {2}, {1,3}, {2,} (not ? or {1})."""
    if quantifier[0] in "+*":
        return True
    low, comma, high = quantifier.strip("{}?+").partition(",")
    most = high if comma else low
    return bool(comma and not high) or len(most) > 1 or most > "1"


def _escape_end(pattern: str, i: int) -> int:
    end = i + 2
    if pattern[i + 1 : i + 2] in ("p", "P", "x", "o") and pattern[end : end + 1] == "{":
        end = pattern.find("}", end) + 1 or len(pattern)  # \p{L}, \x{1F600}
    return end


def _class_end(pattern: str, i: int) -> int:
    """Where the [class] starting at i ends; Oniguruma classes nest ([a-z&&[^b]])."""
    depth, j = 0, i
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
            continue
        if pattern[j] == "[":
            depth += 1
            j += 1 + pattern.startswith("^", j + 1)
            j += pattern.startswith("]", j)  # a "]" right after "[" or "[^" is a character
            continue
        if pattern[j] == "]":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return len(pattern)


def _backtracking_part(pattern: str) -> tuple[str, str] | None:
    """(part, what is wrong) for the first group of `pattern` that can backtrack exponentially."""
    groups = [_Group(0)]
    i = 0
    while i < len(pattern):
        c, group = pattern[i], groups[-1]
        quantifier = _QUANTIFIER.match(pattern, i)
        end = i + 1
        if c == "\\":
            end = _escape_end(pattern, i)
            letter = pattern[i + 1 : i + 2]
            group.atom(pattern[i:end] if not letter.isalnum() or letter in _LITERAL_ESCAPES else _ANY)
        elif c == "[":
            end = _class_end(pattern, i)
            group.atom(_ANY)
        elif c == "(":
            end = _GROUP_PREFIX.match(pattern, i + 1).end()  # type: ignore[union-attr]  # matches "" at worst
            groups.append(_Group(i))
        elif c == ")" and len(groups) > 1:
            inner, outer = groups.pop(), groups[-1]
            after = _QUANTIFIER.match(pattern, end)
            end = after.end() if after else end
            if after and _repeats(after.group(0)):
                if inner.repeats:
                    return pattern[inner.start : end], "nests quantifiers"
                if inner.overlaps():
                    return pattern[inner.start : end], "repeats alternatives that can match the same text"
            outer.repeats |= inner.repeats
            if inner.firsts != [None]:  # not an empty or flags-only group like "(?i)"
                outer.atom(_ANY)
                if after:
                    outer.quantify(after.group(0))
        elif c == "|":
            group.firsts.append(None)
        elif quantifier:
            end = quantifier.end()
            group.quantify(quantifier.group(0))
        elif c not in "^$":  # anchors match no character
            group.atom(_ANY if c == "." else c)
        i = end
    return None


def _check_regexes(backend: _Backend, path: Path) -> None:
    """Refuse a pre-tokenizer or normalizer regex that can backtrack exponentially (see above)."""
    steps = [*_steps(backend.pre_tokenizer, "pretokenizers"), *_steps(backend.normalizer, "normalizers")]
    for step in steps:
        pattern = (step.get("pattern") or {}).get("Regex")
        found = _backtracking_part(pattern) if isinstance(pattern, str) else None
        if found is not None:
            part, problem = found
            raise TokenizerError(
                f"{path}: the {step.get('type')} regex {problem} ({quoted(part, 60)!r}), which can take "
                "exponential time on some text; fix the pattern or re-copy the file"
            )


# --- the post-processor's token ids -------------------------------------------------------------------


def _post_processor_ids(backend: _Backend) -> list[tuple[str, int]]:
    """(where, id) for each special token the post-processor puts into encodings: TemplateProcessing's
    special_tokens, BERT's and RoBERTa's cls and sep."""
    found: list[tuple[str, int]] = []
    for step in _steps(backend.post_processor, "processors"):
        specials = step.get("special_tokens")
        for name, token in (specials if isinstance(specials, dict) else {}).items():
            ids = token.get("ids") if isinstance(token, dict) else None
            found += [(f"tokenizer.json post_processor token {quoted(name, 40)!r}", i) for i in ids or []]
        for key in ("cls", "sep"):
            pair = step.get(key)
            if isinstance(pair, list) and len(pair) == 2:
                found.append((f"tokenizer.json post_processor {key} {quoted(pair[0], 40)!r}", pair[1]))
    return [(where, i) for where, i in found if isinstance(i, int)]


def _check_post_processor_tokens(backend: _Backend, path: Path) -> None:
    """Refuse a TemplateProcessing post-processor whose templates place a special token that its
    special_tokens does not define: the tokenizers library panics inside Rust on every encode (a
    panic report on stderr, "no entry found for key"), whatever the text."""
    for step in _steps(backend.post_processor, "processors"):
        if step.get("type") != "TemplateProcessing":
            continue
        defined = step.get("special_tokens")
        defined = defined if isinstance(defined, dict) else {}
        for which in ("single", "pair"):
            for piece in step.get(which) or []:
                token = piece.get("SpecialToken") if isinstance(piece, dict) else None
                name = token.get("id") if isinstance(token, dict) else None
                if isinstance(name, str) and name not in defined:
                    raise TokenizerError(
                        f"{path}: the post_processor's {which!r} template places the special token "
                        f"{quoted(name, 40)!r}, which its special_tokens does not define; add it there "
                        "with its id, or re-copy the file"
                    )


# --- the vocabulary's ids -----------------------------------------------------------------------------


def _vocab_top(backend: _Backend, path: Path) -> tuple[str, int] | None:
    """(token, id) of the highest id of the vocabulary (the model's, not the added tokens), as
    tokenizer.json writes it; None for an empty one. Refuses two tokens with one id: the library keeps
    one of them for decoding, and the other's text becomes ids that mean something else.

    The library counts a vocabulary by its entries, so a file whose ids are exactly 0..n-1 is the
    common case, found with one id_to_token per id (about a microsecond each; a 2M-entry vocabulary
    in 2 s) and no Python dict of the vocabulary. Only a vocabulary with gaps, repeats or ids past its
    size is read whole (get_vocab, a few microseconds an entry) to find which."""
    model = backend.model
    size = backend.get_vocab_size(with_added_tokens=False)
    if None not in map(model.id_to_token, range(size)):  # ids 0..size-1 all taken, by size entries
        return (model.id_to_token(size - 1), size - 1) if size else None
    by_id: dict[int, list[str]] = {}
    for token, i in backend.get_vocab(with_added_tokens=False).items():
        by_id.setdefault(i, []).append(token)
    shared = sorted(i for i, tokens in by_id.items() if len(tokens) > 1)
    if shared:
        first, second = sorted(by_id[shared[0]])[:2]
        more = sum(len(by_id[i]) for i in shared)
        raise TokenizerError(
            f"{path}: {quoted(first, 60)!r} and {quoted(second, 60)!r} both have id {shared[0]} in its "
            f"vocabulary ({more} tokens share an id), and each token needs an id of its own; fix the ids "
            "or re-copy the file"
        )
    top = max(by_id, default=None)
    return None if top is None else (by_id[top][0], top)
