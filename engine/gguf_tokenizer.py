"""The tokenizer and chat template of a GGUF file, rebuilt from its metadata to match llama.cpp.

A GGUF file carries no tokenizer.json: llama.cpp's converter stores the vocabulary as metadata
(`tokenizer.ggml.*`), and llama.cpp tokenizes with its own code. We rebuild the same tokenizer as a
`tokenizers.Tokenizer` pipeline, so the rest of the engine sees an `HFTokenizer` like any other:

* `tokenizer.ggml.model == "llama"`: SentencePiece-style. Pieces with "▁" for spaces, `<0xNN>` byte
  pieces for byte fallback, and a score per piece; llama.cpp merges the adjacent pair whose union has
  the highest score, which is a BPE whose merges are ranked by that score. llama.cpp puts the "▁"
  prefix before every stretch of text that starts the prompt or follows a special token, and before a
  leading space too ("  hi" -> "▁▁▁hi"): a Prepend normalizer, not transformers' Metaspace "first".
* `tokenizer.ggml.model == "gpt2"`: byte-level BPE with `tokenizer.ggml.merges`, split first by the
  regexes that `tokenizer.ggml.pre` names (llama.cpp's `llm_tokenizer_bpe` table; `PRE_TOKENIZERS`).

Tokens typed control or unknown become special tokens and user-defined ones plain added tokens, so
both are matched whole in the text, as llama.cpp does with `parse_special` (for Phi-3 they also eat
the whitespace after them, llama.cpp's rule by model name). Decoding joins llama.cpp's token pieces;
llama.cpp's `llama_detokenize` also drops spaces before punctuation for some pre-tokenizers
(clean_spaces), which we leave out, as transformers does, so text round-trips. Everything read from the
file is checked for type, count and size first (files come from strangers): a bad field is one
`TokenizerError` line naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gguf import GGUFReader, GGUFValueType
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as _Backend

from .chat import TEMPLATE_FILE_MAX_BYTES
from .errors import TokenizerError
from .tokenizer import HFTokenizer
from .tokenizer_build import _FolderSettings, merges_by_rank, sentencepiece_backend

# tokenizer.ggml.token_type values (gguf.TokenType; 0 is llama.cpp's "undefined", read as normal)
UNDEFINED, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = range(7)

# Ceilings on what a file may ask us to build; the largest real vocabularies (Gemma 3: 262,144
# tokens, Qwen: 151,387 merges) sit far below them.
MAX_TOKENS = 1 << 20
MAX_MERGES = 1 << 21
MAX_TOKEN_BYTES = 4096
MAX_VOCAB_BYTES = 64 << 20
# Deriving SentencePiece merges cuts every piece at every position: the sum of len(piece)**2.
MAX_MERGE_WORK = 200_000_000

# The regexes llama.cpp splits text with before byte-level BPE, by `tokenizer.ggml.pre`
# (llama-vocab.cpp, llm_tokenizer_bpe). Each regex splits the pieces the previous one left, keeping
# both the matches and the text between them, which is what an "isolated" Split does.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# llama.cpp spells the case-insensitive contractions (?i:'s|...) as explicit classes; so do we.
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_DEFAULT = (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")
_FALCON = (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]")
# llama.cpp writes "an uppercase letter" as "a letter that is not a-z" (and lowercase alike), which
# is what these rows mean in llama.cpp, non-ASCII letters included.
_UPPER, _LOWER = r"((?=[\p{L}])([^a-z]))", r"((?=[\p{L}])([^A-Z]))"
_TEKKEN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class PreTokenizer:
    """One row of the table: the split regexes, and whether a whole word found in the vocabulary
    skips the merges (llama.cpp's ignore_merges, tokenizers' BPE(ignore_merges=True))."""

    def __init__(self, regexes: tuple[str, ...], ignore_merges: bool = False, add_bos: bool = False) -> None:
        self.regexes = regexes
        self.ignore_merges = ignore_merges
        self.add_bos = add_bos  # llama.cpp's default when the file has no tokenizer.ggml.add_bos_token


_LLAMA3_ROW = PreTokenizer((_LLAMA3,), ignore_merges=True, add_bos=True)
_QWEN2_ROW = PreTokenizer((_QWEN2,))
_GPT2_ROW = PreTokenizer((_GPT2,))
_SMOLLM_ROW = PreTokenizer((r"\p{N}", _GPT2))
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer(_DEFAULT),
    "falcon": PreTokenizer(_FALCON),
    "tekken": PreTokenizer((_TEKKEN,), ignore_merges=True, add_bos=True),
    **dict.fromkeys(("gpt-4o", "llama4"), PreTokenizer((_GPT4O,))),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "lfm2"), _LLAMA3_ROW),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((_LLAMA3,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan"), _QWEN2_ROW),
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4", "trillion"), _GPT2_ROW),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"), _SMOLLM_ROW),
}

# Token texts llama.cpp ends generation on whatever their type says (llama-vocab.cpp, special_eog_ids),
# and treats as control tokens.
EOG_TEXTS = frozenset(
    (
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|eom_id|>",
        "<EOT>",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "</s>",
        "<eos>",
    )
)


def tokenizer_from_gguf(reader: GGUFReader, path: Path) -> HFTokenizer:
    """The tokenizer a GGUF file describes, giving the ids llama.cpp gives on the same file."""
    fields = _Fields(reader, path)
    kind = fields.string("tokenizer.ggml.model")
    tokens, types, vocab = _vocabulary(fields)
    defaults: tuple[int | None, int | None, int | None]  # BOS, EOS, UNK when the file names none
    if kind == "llama":
        # llama.cpp's SPM defaults: BOS added; <s> = 1, </s> = 2, <unk> = 0 when the file names none
        backend, add_bos, defaults = _sentencepiece(fields, tokens, vocab), True, (1, 2, 0)
    elif kind == "gpt2":
        pre = _pre_tokenizer(fields)
        backend, add_bos, defaults = _byte_level(fields, vocab, pre), pre.add_bos, (None, None, None)
    else:
        raise TokenizerError(
            f"{path}: tokenizer.ggml.model is {kind[:40]!r}; supported are 'llama' (SentencePiece) "
            "and 'gpt2' (byte-level BPE)"
        )
    settings = _settings(fields, tokens, types, defaults)
    settings.add_bos_flag = fields.flag("tokenizer.ggml.add_bos_token", add_bos)
    settings.add_eos_flag = fields.flag("tokenizer.ggml.add_eos_token", False)
    for flag, name in ((settings.add_bos_flag, "bos"), (settings.add_eos_flag, "eos")):
        if flag and settings.named.get(f"{name}_token") is None:
            raise TokenizerError(f"{path}: tokenizer.ggml.add_{name}_token is true but the file names no {name} token")
    return HFTokenizer(backend, settings)


def chat_template_from_gguf(reader: GGUFReader, path: Path | str = "the GGUF file") -> str | None:
    """The file's `tokenizer.chat_template` (Jinja source), or None when it has none (or an empty one)."""
    if "tokenizer.chat_template" not in reader.fields:
        return None
    source = _Fields(reader, Path(path)).string("tokenizer.chat_template", TEMPLATE_FILE_MAX_BYTES)
    return source if source.strip() else None


# --- the two tokenizer kinds -------------------------------------------------------------------------


def _vocabulary(fields: _Fields) -> tuple[list[str], list[int], dict[str, int]]:
    """The tokens, their types (llama.cpp's end-of-generation texts made control) and token -> id."""
    tokens = fields.strings("tokenizer.ggml.tokens", MAX_TOKENS, MAX_TOKEN_BYTES, MAX_VOCAB_BYTES)
    if not tokens:
        raise TokenizerError(
            f"{fields.path}: tokenizer.ggml.tokens is empty; the file has no vocabulary, re-convert it"
        )
    empty = tokens.count("")
    if 2 * empty > len(tokens):
        # A few empty tokens (unused slots) occur in real files; a vocabulary of mostly empty ones
        # matches no text, so every prompt would become BOS alone.
        raise TokenizerError(
            f"{fields.path}: {empty} of the {len(tokens)} tokens in tokenizer.ggml.tokens are empty strings; "
            "the file has no usable vocabulary, re-convert it"
        )
    tokens = [token or f"[EMPTY_{i}]" for i, token in enumerate(tokens)]  # llama.cpp's name for an empty token
    types = fields.numbers("tokenizer.ggml.token_type", len(tokens), int) or [NORMAL] * len(tokens)
    if any(not UNDEFINED <= t <= BYTE for t in types):
        raise TokenizerError(
            f"{fields.path}: tokenizer.ggml.token_type holds a value outside 0..6; re-convert the file"
        )
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        twice = next(token for i, token in enumerate(tokens) if vocab[token] != i)
        raise TokenizerError(
            f"{fields.path}: token {twice[:40]!r} appears twice in tokenizer.ggml.tokens; re-convert the file"
        )
    types = [CONTROL if token in EOG_TEXTS else t for token, t in zip(tokens, types, strict=True)]
    return tokens, types, vocab


def _sentencepiece(fields: _Fields, tokens: list[str], vocab: dict[str, int]) -> _Backend:
    """llama.cpp's SPM tokenizer as a byte-fallback BPE: merges ranked by the merged piece's score."""
    scores = fields.numbers("tokenizer.ggml.scores", len(tokens), float) or [0.0] * len(tokens)
    if not all(math.isfinite(s) for s in scores):
        raise TokenizerError(f"{fields.path}: tokenizer.ggml.scores holds NaN or infinity; re-convert the file")
    work = sum(len(token) ** 2 for token in tokens)
    if work > MAX_MERGE_WORK:
        raise TokenizerError(
            f"{fields.path}: the SentencePiece tokens are too long to derive merges from "
            f"({work:,} steps, at most {MAX_MERGE_WORK:,}); re-convert the file"
        )
    # Higher score merges first. llama.cpp breaks ties by position, we by id: the same unless scores tie,
    # as in files converted from a tokenizer.json-only vocabulary (convert_hf_to_gguf's _set_vocab_llama_hf
    # writes -1000 for every piece), where a text now and then merges differently (1 of 17 test texts).
    rank = {token: (-score, i) for i, (token, score) in enumerate(zip(tokens, scores, strict=True))}
    unk = fields.token_id("tokenizer.ggml.unknown_token_id", len(tokens))
    add_prefix_space = fields.flag("tokenizer.ggml.add_space_prefix", True)
    unk_token = tokens[unk] if unk is not None else None
    backend = sentencepiece_backend(vocab, merges_by_rank(vocab, rank), add_prefix_space, unk_token)
    if add_prefix_space:
        # Every stretch of text between special tokens gets "▁" in front, even one starting with a space.
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        backend.normalizer = normalizers.Replace(" ", "▁")
    return backend


def _pre_tokenizer(fields: _Fields) -> PreTokenizer:
    name = fields.string("tokenizer.ggml.pre") if "tokenizer.ggml.pre" in fields.reader.fields else "default"
    row = PRE_TOKENIZERS.get(name)
    if row is None:
        raise TokenizerError(
            f"{fields.path}: tokenizer.ggml.pre {name[:60]!r} is not a pre-tokenizer tiankong knows; "
            f"supported: {', '.join(sorted(PRE_TOKENIZERS))}"
        )
    return row


def _byte_level(fields: _Fields, vocab: dict[str, int], pre: PreTokenizer) -> _Backend:
    """GPT-2 style byte-level BPE over the file's merges, split by the pre-tokenizer's regexes."""
    lines = fields.strings("tokenizer.ggml.merges", MAX_MERGES, 2 * MAX_TOKEN_BYTES + 1, 2 * MAX_VOCAB_BYTES)
    merges = []
    for n, line in enumerate(lines):
        cut = line.find(" ", 1)  # as llama.cpp: the first space after the first character
        left, right = (line[:cut], line[cut + 1 :]) if cut > 0 else ("", "")
        if left not in vocab or right not in vocab or left + right not in vocab:
            raise TokenizerError(
                f"{fields.path}: merge {n} ({line[:40]!r}) names tokens that are not in the vocabulary; "
                "re-convert the file"
            )
        merges.append((left, right))
    backend = _Backend(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre.ignore_merges, dropout=None))
    splits = [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in pre.regexes]
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    return backend


def _settings(
    fields: _Fields, tokens: list[str], types: list[int], defaults: tuple[int | None, int | None, int | None]
) -> _FolderSettings:
    """Special tokens, end-of-generation ids and padding, as HFTokenizer takes them."""
    settings = _FolderSettings()
    default_bos, default_eos, default_unk = defaults
    n = len(tokens)
    ids = {
        "bos_token": fields.token_id("tokenizer.ggml.bos_token_id", n, default_bos),
        "eos_token": fields.token_id("tokenizer.ggml.eos_token_id", n, default_eos),
        "unk_token": fields.token_id("tokenizer.ggml.unknown_token_id", n, default_unk),
        "pad_token": fields.token_id("tokenizer.ggml.padding_token_id", n),
    }
    settings.named = {key: tokens[i] for key, i in ids.items() if i is not None}
    # Control and unknown tokens are matched in text as special tokens, user-defined ones as plain added
    # tokens (both whole, as llama.cpp's tokenizer_st_partition does); byte and unused ones are pieces.
    rstrip = _strips_right(fields)
    settings.special_tokens = [
        AddedToken(token, special=True, normalized=False, rstrip=rstrip(token))
        for token, t in zip(tokens, types, strict=True)
        if t in (CONTROL, UNKNOWN)
    ]
    settings.plain_added_tokens = [
        AddedToken(token, special=False, normalized=False, rstrip=rstrip(token))
        for token, t in zip(tokens, types, strict=True)
        if t == USER_DEFINED
    ]
    eot = fields.token_id("tokenizer.ggml.eot_token_id", n)
    eom = fields.token_id("tokenizer.ggml.eom_token_id", n)
    eog = [i for i, token in enumerate(tokens) if token in EOG_TEXTS]
    settings.gen_eos_ids = [i for i in (eot, eom, *eog) if i is not None]
    settings.gen_pad_id = ids["pad_token"]
    settings.flags_rule_post_processor = True  # no post-processor in the file: add_bos/add_eos decide
    return settings


def _strips_right(fields: _Fields) -> Callable[[str], bool]:
    """Which special and user-defined tokens swallow the whitespace after them (AddedToken rstrip).

    llama.cpp's one per-model token attribute that changes ids: in a model whose general.name says
    Phi-3, all of them but <unk>, <s> and <|endoftext|> (llama-vocab.cpp, "set attributes by model
    name"), as Phi-3's own tokenizer.json marks them.
    """
    field = fields.reader.fields.get("general.name")
    name = bytes(field.parts[field.data[0]][:256]).decode("utf-8", "replace").lower() if field is not None else ""
    if field is not None and field.types == [GGUFValueType.STRING] and ("phi-3" in name or "phi3" in name):
        return lambda token: token not in ("<unk>", "<s>", "<|endoftext|>")
    return lambda token: False


# --- reading metadata safely ---------------------------------------------------------------------------


class _Fields:
    """Typed, bounded reads of one GGUF file's metadata; every failure is one TokenizerError line."""

    def __init__(self, reader: GGUFReader, path: Path) -> None:
        self.reader = reader
        self.path = path

    def _field(self, key: str, want: tuple[GGUFValueType, ...]) -> Any:
        field = self.reader.fields.get(key)
        if field is None:
            raise TokenizerError(f"{self.path}: the file has no {key}; re-convert it with llama.cpp's converter")
        if tuple(field.types) != want:
            raise TokenizerError(
                f"{self.path}: {key} is {_shown(field.types)}, not {_shown(want)}; re-convert the file"
            )
        return field

    def string(self, key: str, limit: int = MAX_TOKEN_BYTES) -> str:
        field = self._field(key, (GGUFValueType.STRING,))
        return self._decode(key, field.parts[field.data[0]], limit)

    def strings(self, key: str, max_count: int, max_bytes: int, max_total: int) -> list[str]:
        field = self._field(key, (GGUFValueType.ARRAY, GGUFValueType.STRING))
        if len(field.data) > max_count:
            raise TokenizerError(f"{self.path}: {key} has {len(field.data):,} entries, at most {max_count:,}")
        sizes = [field.parts[i].nbytes for i in field.data]  # views into the file: nothing copied yet
        if sizes and max(sizes) > max_bytes:
            raise TokenizerError(f"{self.path}: {key} holds a {max(sizes):,}-byte entry, at most {max_bytes:,}")
        if sum(sizes) > max_total:
            raise TokenizerError(f"{self.path}: {key} holds {sum(sizes):,} bytes, at most {max_total:,}")
        return [self._decode(key, field.parts[i], max_bytes) for i in field.data]

    def numbers(self, key: str, count: int, kind: type) -> list:
        """An int32/float32 array of exactly `count` entries, or [] when the key is absent."""
        if key not in self.reader.fields:
            return []
        field = self.reader.fields[key]
        allowed = (GGUFValueType.INT32,) if kind is int else (GGUFValueType.FLOAT32, GGUFValueType.INT32)
        if field.types[:1] != [GGUFValueType.ARRAY] or field.types[-1] not in allowed:
            raise TokenizerError(f"{self.path}: {key} must be an array of {kind.__name__}; re-convert the file")
        if len(field.data) != count:
            raise TokenizerError(
                f"{self.path}: {key} has {len(field.data):,} entries for {count:,} tokens; re-convert the file"
            )
        return [kind(field.parts[i][0]) for i in field.data]

    def flag(self, key: str, default: bool) -> bool:
        if key not in self.reader.fields:
            return default
        field = self._field(key, (GGUFValueType.BOOL,))
        return bool(field.parts[field.data[0]][0])

    def token_id(self, key: str, n_tokens: int, default: int | None = None) -> int | None:
        """A token id from the file, or `default` (when it is a token) if absent; out of range is an error."""
        field = self.reader.fields.get(key)
        if field is None:
            return default if default is not None and default < n_tokens else None
        if len(field.types) != 1 or field.types[0] not in _INTEGER_TYPES:
            raise TokenizerError(f"{self.path}: {key} must be a whole number; re-convert the file")
        value = int(field.parts[field.data[0]][0])
        if not 0 <= value < n_tokens:
            raise TokenizerError(
                f"{self.path}: {key} is {value}, outside the vocabulary of {n_tokens:,} tokens; re-convert the file"
            )
        return value

    def _decode(self, key: str, raw: Any, limit: int) -> str:
        if raw.nbytes > limit:
            raise TokenizerError(f"{self.path}: {key} is {raw.nbytes:,} bytes, at most {limit:,}")
        try:
            return raw.tobytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise TokenizerError(
                f"{self.path}: {key} is not UTF-8 ({error.reason} at byte {error.start}); re-convert the file"
            ) from None


def _shown(types: Any) -> str:
    """A GGUF value type in words: "a string", "an array of int32"."""
    names = [t.name.lower() for t in types]
    return "an array of " + names[-1] if names[0] == "array" else "a " + names[0]


_INTEGER_TYPES = (
    GGUFValueType.UINT8,
    GGUFValueType.INT8,
    GGUFValueType.UINT16,
    GGUFValueType.INT16,
    GGUFValueType.UINT32,
    GGUFValueType.INT32,
    GGUFValueType.UINT64,
    GGUFValueType.INT64,
)
