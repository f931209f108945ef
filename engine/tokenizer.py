"""Tokenizers for local Hugging Face model folders, matching `transformers` token for token.

Both file formats end up in the same place, a `tokenizers.Tokenizer`:

* `tokenizer.json` is loaded as-is by the `tokenizers` library (GPT-2 byte-level BPE, Llama-3, Qwen, ...).
* `tokenizer.model` alone (SentencePiece, e.g. Llama-2 era checkpoints) is converted the way transformers 5 does
  for `LlamaTokenizer`: the pieces become a byte-fallback BPE whose merge order is the piece id, with a
  Metaspace pre-tokenizer. Running it through `tokenizers` rather than `sentencepiece.encode` is what keeps
  us identical to transformers around special tokens and leading spaces, where the two libraries differ.

The special-token settings come from `tokenizer_config.json`, `special_tokens_map.json` and
`generation_config.json`. Nothing in the folder is executed: only JSON and the SentencePiece model are read.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as _Backend

from .errors import TokenizerError, error_line, quoted
from .files import model_file, read_model_bytes, read_model_object, read_model_text

# The special-token attributes transformers knows by name; chat templates see these as variables.
NAMED_SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class Tokenizer(ABC):
    """Text <-> ids for one model, plus the special tokens generation and chat templates need."""

    vocab_size: int  # every id the tokenizer can produce, added tokens included
    bos_id: int | None
    eos_ids: frozenset[int]
    pad_id: int | None
    bos_token: str | None
    eos_token: str | None
    add_bos: bool  # whether encode(add_special_tokens=True) prepends BOS
    special_ids: frozenset[int]
    named_special_tokens: dict[str, str]  # e.g. {"bos_token": "<s>", ...}, as templates receive them
    # The ids the tokenizer emits on its own that are not just its vocabulary's, with where each is set:
    # ("generation_config.json eos_token_id", 2), ("tokenizer.json post_processor token '<s>'", 1).
    own_ids: Sequence[tuple[str, int]] = ()

    @abstractmethod
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    @abstractmethod
    def id_to_piece(self, id: int) -> str:
        """The raw vocabulary entry, e.g. "▁the", "<0x0A>", "Ġthe"."""

    @abstractmethod
    def token_text(self, id: int) -> str:
        """One token as a person should see it in a candidate list: " the", "\\n", "<0xE4>"."""


class HFTokenizer(Tokenizer):
    """A tokenizer backed by the `tokenizers` library, loaded from a model folder's tokenizer.json."""

    def __init__(self, backend: _Backend, settings: _FolderSettings) -> None:
        self._backend = backend
        self._cleanup = settings.cleanup_spaces and type(backend.model).__name__ != "BPE"
        _register_special_tokens(backend, settings.special_tokens, settings.plain_added_tokens)

        named = {key: value for key, value in settings.named.items() if value is not None}
        self.named_special_tokens = named
        self.bos_token = named.get("bos_token")
        self.eos_token = named.get("eos_token")
        self.bos_id = self._id_of(self.bos_token)
        own_ids = [(f"{settings.gen_source} eos_token_id", i) for i in settings.gen_eos_ids]
        if self.bos_id is None and settings.gen_bos_id is not None:
            self.bos_id = settings.gen_bos_id
            self.bos_token = _piece_or_none(backend, settings.gen_bos_id)
            own_ids.append((f"{settings.gen_source} bos_token_id", settings.gen_bos_id))

        processor_ids = _post_processor_ids(backend)  # tokenizer.json's own, kept or replaced here
        if settings.flags_rule_post_processor or backend.post_processor is None:
            processor_ids = []  # ours, made of tokens looked up in the vocabulary
            backend.post_processor = _template_processor(
                self.bos_token if settings.add_bos_flag else None,
                self.eos_token if settings.add_eos_flag else None,
                backend,
            )
        lead = self._probe_leading_special()
        if self.bos_id is None and lead is not None:
            # No bos_token configured, but the post-processor prepends one (tokenizer.json alone): that is BOS.
            self.bos_id, self.bos_token = lead, _piece_or_none(backend, lead)
        self.add_bos = lead is not None and lead == self.bos_id

        eos = {self._id_of(self.eos_token)} | set(settings.gen_eos_ids)
        self.eos_ids = frozenset(i for i in eos if i is not None)
        self.pad_id = self._id_of(named.get("pad_token"))
        if self.pad_id is None and settings.gen_pad_id is not None:
            self.pad_id = settings.gen_pad_id
            own_ids.append((f"{settings.gen_source} pad_token_id", settings.gen_pad_id))
        self.own_ids = own_ids + processor_ids
        added = backend.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, token in added.items() if token.special)
        self._added_ids = frozenset(added)
        self.vocab_size = max([backend.get_vocab_size(with_added_tokens=True), *(i + 1 for i in added)])
        self._style = _piece_style(backend)

    def to_json(self) -> str:
        """The whole pipeline as a tokenizer.json (what transformers and load_tokenizer read back)."""
        return self._backend.to_str()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        try:
            return self._backend.encode(text, add_special_tokens=add_special_tokens).ids
        except BaseException as error:  # Rust: a bare Exception (a WordLevel model with no unk_token), or a
            # panic, a BaseException (a pre-tokenizer regex that hits Oniguruma's backtracking limit)
            if isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            raise TokenizerError(
                f"the tokenizer cannot encode {quoted(text, 20)!r} ({error_line(error) or type(error).__name__}); "
                "change the text, or fix tokenizer.json (its unk_token, pre-tokenizer regex)"
            ) from None

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        text = self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return _clean_up_spaces(text) if self._cleanup else text

    def id_to_piece(self, id: int) -> str:
        piece = _piece_or_none(self._backend, id)
        if piece is None:
            raise IndexError(f"token id {id} is outside the vocabulary (size {self.vocab_size})")
        return piece

    def token_text(self, id: int) -> str:
        piece = self.id_to_piece(id)
        if id in self._added_ids:
            return piece  # added tokens are stored as their literal text
        if self._style == "byte_level":
            raw = _byte_level_bytes(piece)
            if raw is not None:
                return _render_bytes(raw)
        elif self._style == "metaspace":
            match = _BYTE_PIECE.fullmatch(piece)
            if match:
                return _render_bytes(bytes([int(match.group(1), 16)]))
            return piece.replace("▁", " ")
        return self._backend.decode([id], skip_special_tokens=False)

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self._backend.token_to_id(token)

    def _probe_leading_special(self) -> int | None:
        """The id encode(add_special_tokens=True) puts before the text, if any.

        The post-processor decides what encode() adds; ask it rather than re-deriving its rules.
        """
        plain = self.encode("a", add_special_tokens=False)
        full = self.encode("a", add_special_tokens=True)
        return full[0] if len(full) > len(plain) and full[: len(plain)] != plain else None


class SentencePieceTokenizer(HFTokenizer):
    """A folder with only tokenizer.model, converted to a `tokenizers` pipeline like transformers' LlamaTokenizer."""

    @classmethod
    def from_model_bytes(cls, path: Path, data: bytes, settings: _FolderSettings) -> SentencePieceTokenizer:
        try:
            import sentencepiece
        except ImportError as error:  # pragma: no cover - sentencepiece is a dependency
            raise TokenizerError(
                f"{path} needs the sentencepiece package; install it with `pip install sentencepiece`"
            ) from error
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(data)
        except (OSError, RuntimeError, TypeError) as error:
            raise TokenizerError(
                f"{path} is not a readable SentencePiece model; re-copy tokenizer.model from the original model"
            ) from error

        pieces = [processor.IdToPiece(i) for i in range(processor.GetPieceSize())]
        vocab = {piece: i for i, piece in enumerate(pieces)}
        backend = sentencepiece_backend(vocab, merges_by_rank(vocab), settings.add_prefix_space)
        # legacy=False (transformers' default) prefixes only the very start of the text, not each chunk
        # between special tokens; add_prefix_space=False turns the prefix off entirely.
        if settings.add_prefix_space:
            scheme = "always" if settings.legacy else "first"
        else:
            scheme = "never"
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)

        control = [pieces[i] for i in range(len(pieces)) if processor.IsControl(i)]
        settings.special_tokens = [*control, *settings.special_tokens]
        # Without tokenizer.json there is no post-processor, so add_bos_token/add_eos_token decide.
        settings.flags_rule_post_processor = True
        return cls(backend, settings)


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """Load the tokenizer of a model folder: tokenizer.json if present, else tokenizer.model; or the
    one a GGUF file describes (engine/gguf_tokenizer.py)."""
    from .gguf_model import GGUFModel, is_gguf

    folder = Path(folder)
    if is_gguf(folder):
        return GGUFModel(folder).tokenizer()
    if not folder.is_dir():
        raise TokenizerError(f"{folder} is not a folder; pass the model folder that holds tokenizer.json")
    settings = _FolderSettings.read(folder)
    text = read_model_text(folder, "tokenizer.json")  # bounded, and only a regular file inside the folder
    if text is not None:
        try:
            backend = _Backend.from_str(text)
        except Exception as error:  # the Rust side raises a bare Exception for malformed files
            raise TokenizerError(
                f"{folder / 'tokenizer.json'} cannot be parsed ({error_line(error) or type(error).__name__}); "
                "re-copy it from the original model"
            ) from None
        _check_growth(backend, folder / "tokenizer.json")
        _check_regexes(backend, folder / "tokenizer.json")
        # transformers drops add_bos_token/add_eos_token when tokenizer.json exists: its post-processor rules
        settings.flags_rule_post_processor = False
        settings.add_bos_flag = settings.add_eos_flag = False
        tokenizer = HFTokenizer(backend, settings)
        _check_post_processor(tokenizer, folder / "tokenizer.json")
        return tokenizer
    model_bytes = read_model_bytes(folder, "tokenizer.model")
    if model_bytes is not None:
        return SentencePieceTokenizer.from_model_bytes(folder / "tokenizer.model", model_bytes, settings)
    raise TokenizerError(
        f"no tokenizer in {folder}: looked for {' and '.join(_TOKENIZER_FILES)}; "
        "copy the tokenizer files from the original model into the folder"
    )


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


# --- token ids ----------------------------------------------------------------------------------------


def _piece_or_none(backend: _Backend, id: int) -> str | None:
    # The Rust side takes ids as 32-bit unsigned integers and raises OverflowError for others.
    return backend.id_to_token(id) if 0 <= id < 1 << 32 else None


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


def _check_post_processor(tokenizer: HFTokenizer, path: Path) -> None:
    """The post-processor's tokens must be in the vocabulary: encode() would put them in every prompt,
    where nothing can decode or show them."""
    for where, token_id in tokenizer.own_ids:
        if where.startswith("tokenizer.json post_processor") and not 0 <= token_id < tokenizer.vocab_size:
            raise TokenizerError(
                f"{path}: {where.removeprefix('tokenizer.json ')} has id {token_id}, outside the "
                f"{tokenizer.vocab_size} tokens of the vocabulary; fix the post-processor or re-copy the file"
            )


def check_token_ids(tokenizer: Tokenizer, rows: int, folder: str | Path) -> None:
    """Every id the tokenizer can produce on its own must be a row of the model's embedding: its
    vocabulary and added tokens, BOS/EOS/padding from the settings files, the post-processor's tokens.

    A token added beyond the embedding (tokenizer_config.json listing one more special token, say)
    would otherwise fail deep inside the model with an index error the first time it is used.
    """
    top = tokenizer.vocab_size - 1
    if top >= rows:
        raise TokenizerError(
            f"{folder}: {_token_name(tokenizer, top)} has id {top}, beyond the model's {rows} embedding rows "
            "(config.json vocab_size); remove it from the tokenizer files or use the model's own"
        )
    for where, token_id in tokenizer.own_ids:
        if not 0 <= token_id < rows:
            raise TokenizerError(
                f"{folder}: {where} is {token_id}, beyond the model's {rows} embedding rows "
                "(config.json vocab_size); fix that id or use the model's own files"
            )


def _token_name(tokenizer: Tokenizer, id: int) -> str:
    """How an error names a token: "bos_token '<s>'", "'<extra>'", or "a token"."""
    try:
        piece = tokenizer.id_to_piece(id)
    except IndexError:
        return "a token"
    name = next((key for key, value in tokenizer.named_special_tokens.items() if value == piece), None)
    return f"{name} {quoted(piece)!r}" if name else repr(quoted(piece))


class IncrementalDecoder:
    """Turns generated ids into text one token at a time, never splitting a character.

    Decoding a token on its own is wrong twice over: a byte token may hold part of a UTF-8 character, and
    SentencePiece-style decoders drop the leading space of whatever they decode first. So we decode a short
    window of recent ids twice, up to the last emitted token and up to the new one, and emit the difference
    once it no longer ends in U+FFFD (the mark of an incomplete character). The window restarts after each
    emission, so each push costs a bounded amount of work however long the text grows.
    """

    # Window of prompt ids that gives the first generated token its left context (e.g. its leading space).
    _PROMPT_CONTEXT = 6
    # A UTF-8 character spans at most 4 byte tokens; more pending than this means the bytes are invalid
    # and holding them back longer would only stall the stream.
    _MAX_PENDING = 8

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = list(prompt_ids[-self._PROMPT_CONTEXT :]) if prompt_ids else []
        self._read = len(self._ids)  # ids before this have been emitted
        self._emitted_text = self._decode(self._ids)  # text of ids[:read], the window's left context

    def push(self, id: int) -> str:
        """Add one generated id; return the text it completes ("" while a character is still partial)."""
        self._ids.append(id)
        text = self._decode(self._ids)
        pending = len(self._ids) - self._read
        ready = len(text) > len(self._emitted_text) and not text.endswith("\ufffd")
        if not ready and pending < self._MAX_PENDING:
            return ""
        return self._advance(text)

    def flush(self) -> str:
        """Return whatever is still held back (an unfinished character at the very end)."""
        if self._read == len(self._ids):
            return ""
        return self._advance(self._decode(self._ids))

    def _advance(self, text: str) -> str:
        # Decoding more ids only appends text, so the context's text is a prefix of the window's.
        new = text[len(self._emitted_text) :]
        # The tokens just emitted become the next window's context; older ones are no longer needed.
        self._ids = self._ids[self._read :]
        self._read = len(self._ids)
        self._emitted_text = self._decode(self._ids)
        return new

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip) if ids else ""


# --- folder settings ---------------------------------------------------------------------------------


class _FolderSettings:
    """The special-token facts of a model folder, read from its JSON files."""

    def __init__(self) -> None:
        self.named: dict[str, str | None] = {}
        self.special_tokens: list[str | AddedToken] = []
        self.plain_added_tokens: list[AddedToken] = []
        self.add_bos_flag = False
        self.add_eos_flag = False
        self.flags_rule_post_processor = False
        self.add_prefix_space = True
        self.legacy = False
        self.cleanup_spaces = False
        self.gen_eos_ids: list[int] = []
        self.gen_bos_id: int | None = None
        self.gen_pad_id: int | None = None
        self.gen_source = "the tokenizer settings"  # the file the three gen_* ids come from, for errors

    @classmethod
    def read(cls, folder: Path) -> _FolderSettings:
        settings = cls()
        config, token_map, generation, added = (
            read_model_object(folder, name, TokenizerError) for name in _SETTINGS_FILES
        )
        settings.gen_source = "generation_config.json"
        if not generation:  # older models keep eos_token_id only in config.json
            generation = read_model_object(folder, "config.json", TokenizerError)
            settings.gen_source = "config.json"
        _check_types(folder, config, token_map, added)

        for key in NAMED_SPECIAL_TOKENS:
            if key in config:
                settings.named[key] = _token_content(config[key])
        # Like transformers: special_tokens_map.json only counts for configs without added_tokens_decoder.
        if "added_tokens_decoder" not in config:
            for key in NAMED_SPECIAL_TOKENS:
                if key in token_map:
                    settings.named[key] = _token_content(token_map[key])
        if model_file(folder, "tokenizer.json") is None:
            # transformers' LlamaTokenizer defaults, used when building from tokenizer.model
            for key, default in (("unk_token", "<unk>"), ("bos_token", "<s>"), ("eos_token", "</s>")):
                settings.named.setdefault(key, default)

        for entry in (config.get("added_tokens_decoder") or {}).values():
            token = _added_token(entry)
            if token is not None:
                (settings.special_tokens if token.special else settings.plain_added_tokens).append(token)
        settings.special_tokens += [v for v in settings.named.values() if v is not None]
        for key in ("additional_special_tokens", "extra_special_tokens"):
            for source in (config, token_map):
                extras = source.get(key) or []
                extras = list(extras.values()) if isinstance(extras, dict) else extras
                settings.special_tokens += [t for t in map(_token_content, extras) if t]

        settings.add_bos_flag = bool(config.get("add_bos_token", False))
        settings.add_eos_flag = bool(config.get("add_eos_token", False))
        settings.add_prefix_space = config.get("add_prefix_space") is not False
        settings.legacy = bool(config.get("legacy", False))
        settings.cleanup_spaces = bool(config.get("clean_up_tokenization_spaces", False))

        where = folder / settings.gen_source
        settings.gen_eos_ids = _token_ids(generation, "eos_token_id", where)
        settings.gen_bos_id = next(iter(_token_ids(generation, "bos_token_id", where)), None)
        # Old Llama conversions write pad_token_id -1 for "no padding token".
        pad = generation.get("pad_token_id")
        settings.gen_pad_id = next(iter(_token_ids(generation, "pad_token_id", where)), None) if pad != -1 else None
        return settings


_SETTINGS_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "added_tokens.json")
# tokenizer_config.json / special_tokens_map.json keys whose JSON type the reading code relies on
_LIST_OR_OBJECT = ("additional_special_tokens", "extra_special_tokens")


def _check_types(folder: Path, config: dict, token_map: dict, added: dict) -> None:
    """One line naming the file and key when a settings value has a type no tokenizer uses."""

    def bad(name: str, key: str, want: str) -> TokenizerError:
        return TokenizerError(f"{folder / name}: {key} must be {want}; fix or re-copy the file")

    if not isinstance(config.get("added_tokens_decoder") or {}, dict):
        raise bad("tokenizer_config.json", "added_tokens_decoder", 'an object of id -> {"content": ...}')
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", token_map)):
        for key in _LIST_OR_OBJECT:
            if not isinstance(data.get(key) or [], (list, dict)):
                raise bad(name, key, "a list of tokens")
    if not all(isinstance(i, int) and i >= 0 for i in added.values()):
        raise bad("added_tokens.json", "every value", "a token id (a whole number)")


def _token_content(value: Any) -> str | None:
    """Special tokens are stored as a string or as an AddedToken dict with "content"."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _added_token(entry: Any) -> AddedToken | None:
    content = _token_content(entry)
    if content is None:
        return None
    flags = entry if isinstance(entry, Mapping) else {}
    return AddedToken(
        content,
        single_word=bool(flags.get("single_word", False)),
        lstrip=bool(flags.get("lstrip", False)),
        rstrip=bool(flags.get("rstrip", False)),
        normalized=bool(flags.get("normalized", False)),
        special=bool(flags.get("special", True)),
    )


def _token_ids(data: dict, key: str, where: Path) -> list[int]:
    """The ids under `key`: one id or a list of them. Other values (null, text) are left out, as
    transformers does; a negative id is refused, the Rust tokenizer cannot even look it up."""
    value = data.get(key)
    ids = [i for i in (value if isinstance(value, list) else [value]) if isinstance(i, int) and not isinstance(i, bool)]
    negative = next((i for i in ids if i < 0), None)
    if negative is not None:
        raise TokenizerError(f"{where}: {key} {negative} is not a token id (ids count from 0); fix or remove it")
    return ids


# --- building the backend ----------------------------------------------------------------------------


def _register_special_tokens(
    backend: _Backend, special: Sequence[str | AddedToken], plain: Sequence[AddedToken]
) -> None:
    """Make special-token strings in text match as single tokens, as transformers does on load.

    Tokens tokenizer.json already lists are left alone, so their flags (lstrip, normalized, ...) stay.
    """
    known = {token.content for token in backend.get_added_tokens_decoder().values()}
    missing: list[AddedToken] = []
    for token in special:
        if isinstance(token, str):
            token = AddedToken(token, special=True, normalized=False)
        if token.content not in known:
            known.add(token.content)
            missing.append(token)
    if missing:
        backend.add_special_tokens(missing)
    plain_missing = [token for token in plain if token.content not in known]
    if plain_missing:
        backend.add_tokens(plain_missing)


def _template_processor(bos: str | None, eos: str | None, backend: _Backend) -> processors.TemplateProcessing:
    """The post-processor transformers builds from add_bos_token / add_eos_token."""
    bos_id = backend.token_to_id(bos) if bos is not None else None
    eos_id = backend.token_to_id(eos) if eos is not None else None
    head = f"{bos}:0 " if bos_id is not None else ""
    tail = f" {eos}:0" if eos_id is not None else ""
    special = [(token, i) for token, i in ((bos, bos_id), (eos, eos_id)) if i is not None]
    return processors.TemplateProcessing(
        single=f"{head}$A:0{tail}",
        pair=f"{head}$A:0{tail} {head.replace(':0', ':1')}$B:1{tail.replace(':0', ':1')}",
        special_tokens=special,
    )


def sentencepiece_backend(
    vocab: dict[str, int], merges: list[tuple[str, str]], add_prefix_space: bool, unk_token: str | None = None
) -> _Backend:
    """SentencePiece pieces as a byte-fallback BPE with transformers' LlamaTokenizer decoder.

    The caller decides how the "▁" prefix gets into the text (a Metaspace pre-tokenizer for
    tokenizer.model, a normalizer for GGUF files); `add_prefix_space` strips it again when decoding.
    """
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token=unk_token, fuse_unk=True, byte_fallback=True, dropout=None)
    backend = _Backend(bpe)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix_space:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    return backend


def merges_by_rank(vocab: dict[str, int], rank: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """BPE merges for a SentencePiece vocabulary, ranked the way transformers derives them.

    SentencePiece BPE has no merge list: a piece's id is its rank (or `rank[piece]`, any sortable key,
    smaller merges first). Every split of a piece into two known pieces is a merge, ordered by the merged
    piece's rank, then by the lengths of the halves. Costs the sum of len(piece)**2 over the vocabulary.
    """
    merges: list[tuple[Any, int, int, int, int, str, str]] = []
    for piece, i in vocab.items():
        key = i if rank is None else rank[piece]
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((key, len(left), len(right), vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: m[:5])
    return [(m[5], m[6]) for m in merges]


def _clean_up_spaces(text: str) -> str:
    # transformers' clean_up_tokenization, applied only to non-BPE tokenizers that ask for it
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


# --- showing single tokens ---------------------------------------------------------------------------


def _piece_style(backend: _Backend) -> str:
    """How vocabulary pieces encode text: "byte_level" (GPT-2 "Ġ"), "metaspace" ("▁", <0xNN>), or "other"."""
    decoder = backend.decoder
    if decoder is None:
        return "other"
    state = decoder.__getstate__()
    description = state.decode("utf-8") if isinstance(state, bytes) else str(state)
    if '"ByteLevel"' in description:
        return "byte_level"
    if "▁" in description or '"ByteFallback"' in description:
        return "metaspace"
    return "other"


def _gpt2_byte_table() -> dict[str, int]:
    """GPT-2's reversible byte -> printable character table, inverted: printable character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[str, int] = {chr(b): b for b in printable}
    shift = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shift)] = b  # bytes without a printable form are moved past U+00FF
            shift += 1
    return table


_GPT2_BYTES = _gpt2_byte_table()


def _byte_level_bytes(piece: str) -> bytes | None:
    try:
        return bytes(_GPT2_BYTES[char] for char in piece)
    except KeyError:
        return None


def _render_bytes(raw: bytes) -> str:
    """Decode what is valid UTF-8 and show each stray byte (part of a split character) as <0xNN>."""
    text = raw.decode("utf-8", errors="surrogateescape")
    return "".join(f"<0x{ord(c) - 0xDC00:02X}>" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)
