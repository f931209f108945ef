"""A model folder's special-token settings, and the `tokenizers` pipelines built from them.

`_FolderSettings` reads what tokenizer_config.json, special_tokens_map.json and generation_config.json
(or config.json) say about special tokens; the builders below register those tokens, build the
post-processor transformers derives from add_bos_token / add_eos_token, and turn a SentencePiece
vocabulary into a byte-fallback BPE. They sit apart from engine/tokenizer.py because two loaders share
them: a model folder's (tokenizer.py) and a GGUF file's (engine/gguf_tokenizer.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, processors
from tokenizers import Tokenizer as _Backend

from .errors import TokenizerError, quoted
from .files import model_file, read_model_object

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
        # (file, key, token) for each bos_token / eos_token a settings file names, used or overridden, and
        # the added tokens those files list: each declared token must be one of those or in the vocabulary.
        self.declared: list[tuple[Path, str, str]] = []
        self.listed_added: set[str] = set()

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

        settings._read_declared(folder, config, token_map, added)
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

    def _read_declared(self, folder: Path, config: dict, token_map: dict, added: dict) -> None:
        """`declared` and `listed_added` (see check_declared), from the files transformers reads them from:
        tokenizer_config.json, and special_tokens_map.json only without added_tokens_decoder (see read)."""
        used = {"tokenizer_config.json": config, "special_tokens_map.json": token_map}
        if "added_tokens_decoder" in config:
            del used["special_tokens_map.json"]
        for name, data in used.items():
            self.declared += [
                (folder / name, key, token) for key in _MUST_EXIST if (token := _token_content(data.get(key)))
            ]
        decoder = (config.get("added_tokens_decoder") or {}).values()
        self.listed_added = {token for token in map(_token_content, decoder) if token} | set(added)


_SETTINGS_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "added_tokens.json")
# tokenizer_config.json / special_tokens_map.json keys whose JSON type the reading code relies on
_LIST_OR_OBJECT = ("additional_special_tokens", "extra_special_tokens")
# The named tokens that must be in the vocabulary. transformers adds any other named token it lacks as
# a new one (a "<pad>" for fine-tuning, say), but a BOS or EOS the model has never seen is an edit
# gone wrong: prompts would start with a token the model never learnt, or generation would never stop.
_MUST_EXIST = ("bos_token", "eos_token")
_TOKEN = 'a token: a string, or {"content": "..."} as transformers saves it'


def _check_types(folder: Path, config: dict, token_map: dict, added: dict) -> None:
    """One line naming the file and key when a settings value has a type no tokenizer uses."""

    def bad(name: str, key: str, want: str, value: Any = None) -> TokenizerError:
        shown = "" if value is None else f", not {_shown(value)}"
        return TokenizerError(f"{folder / name}: {key} must be {want}{shown}; fix or re-copy the file")

    if not isinstance(config.get("added_tokens_decoder") or {}, dict):
        raise bad("tokenizer_config.json", "added_tokens_decoder", 'an object of id -> {"content": ...}')
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", token_map)):
        for key in NAMED_SPECIAL_TOKENS:  # null means none, as in transformers
            if data.get(key) is not None and _token_content(data[key]) is None:
                raise bad(name, key, _TOKEN, data[key])
        for key in _LIST_OR_OBJECT:
            if not isinstance(data.get(key) or [], (list, dict)):
                raise bad(name, key, "a list of tokens")
    if not all(isinstance(i, int) and i >= 0 for i in added.values()):
        raise bad("added_tokens.json", "every value", "a token id (a whole number)")


def _shown(value: Any) -> str:
    """A settings value as the file writes it, fit for a one-line message."""
    return quoted(json.dumps(value, ensure_ascii=False), 60)


def check_declared(backend: _Backend, settings: _FolderSettings) -> None:
    """Each bos_token / eos_token the settings files name must be a token of the vocabulary or one they
    add (see _MUST_EXIST); checked before the named tokens are registered as added ones."""
    for path, key, token in settings.declared:
        if token not in settings.listed_added and backend.token_to_id(token) is None:
            raise TokenizerError(
                f"{path}: {key} {quoted(token, 60)!r} is not a token of the vocabulary, so the model never saw it; "
                "name a token the vocabulary has, or add this one to the tokenizer's added tokens"
            )


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
    """The ids under `key`: one id or a list of them (Llama 3 ends on any of three); null is none given.
    Anything else is refused: text, true or 2.5 is no id, and leaving it out silently would hide that
    the edit meant to fix when generation ends does nothing. A negative id is refused too, the Rust
    tokenizer cannot even look it up."""
    value = data.get(key)
    if value is None:
        return []
    ids = value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TokenizerError(
            f"{where}: {key} {_shown(value)} is not a token id; give a whole number or a list of them, or remove it"
        )
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
