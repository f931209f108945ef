"""Tokenizers for local Hugging Face model folders, matching `transformers` token for token.

Both file formats end up in the same place, a `tokenizers.Tokenizer`:

* `tokenizer.json` is loaded as-is by the `tokenizers` library (GPT-2 byte-level BPE, Llama-3, Qwen, ...).
* `tokenizer.model` alone (SentencePiece, e.g. Llama-2 era checkpoints) is converted the way transformers 5 does
  for `LlamaTokenizer`: the pieces become a byte-fallback BPE whose merge order is the piece id, with a
  Metaspace pre-tokenizer. Running it through `tokenizers` rather than `sentencepiece.encode` is what keeps
  us identical to transformers around special tokens and leading spaces, where the two libraries differ.

The special-token settings come from `tokenizer_config.json`, `special_tokens_map.json` and
`generation_config.json`. Nothing in the folder is executed: only JSON and the SentencePiece model are read.

The parts live beside this file, each imported by it and none importing it: the folder settings and the
builders of `tokenizers` pipelines in `tokenizer_build.py` (shared with engine/gguf_tokenizer.py), the
load-time checks on a stranger's tokenizer.json in `tokenizer_checks.py`, and how a single token is shown
in `tokenizer_display.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as _Backend
from tokenizers import pre_tokenizers

from .errors import TiankongError, TokenizerError, error_line, quoted
from .files import json_limit, parse_json, read_model_bytes, read_model_text
from .tokenizer_build import (
    _clean_up_spaces,
    _FolderSettings,
    _register_special_tokens,
    _template_processor,
    check_declared,
    merges_by_rank,
    sentencepiece_backend,
)
from .tokenizer_checks import (
    _check_growth,
    _check_post_processor_tokens,
    _check_regexes,
    _post_processor_ids,
    _vocab_top,
)
from .tokenizer_display import _BYTE_PIECE, _byte_level_bytes, _piece_style, _render_bytes

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


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
    # The vocabulary's highest id and its token as tokenizer.json writes them (None elsewhere): the
    # token an error names when the vocabulary reaches past the model's embedding rows.
    vocab_top: tuple[str, int] | None = None

    @abstractmethod
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        """encode() of each text; a tokenizer that can encodes them on several threads at once."""
        return [self.encode(text, add_special_tokens) for text in texts]

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

    def __init__(self, backend: _Backend, settings: _FolderSettings, vocab_top: tuple[str, int] | None = None) -> None:
        self._backend = backend
        self.vocab_top = vocab_top
        self._cleanup = settings.cleanup_spaces and type(backend.model).__name__ != "BPE"
        check_declared(backend, settings)
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
        # The library counts entries, so an id past them ("▁Once": 1000000 in 512 entries) counts too.
        top = [vocab_top[1] + 1] if vocab_top else []
        self.vocab_size = max([backend.get_vocab_size(with_added_tokens=True), *top, *(i + 1 for i in added)])
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
                "change the text, or fix tokenizer.json (its unk_token, pre-tokenizer regex, post_processor)"
            ) from None

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        try:  # the tokenizers library's own threads (all cores unless TOKENIZERS_PARALLELISM=false)
            return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)]
        except BaseException as error:
            if isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            return super().encode_batch(texts, add_special_tokens)  # one at a time: the error names its text

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
    # Bounded (files.JSON_LIMITS), and only a regular file inside the folder.
    text = read_model_text(folder, "tokenizer.json", json_limit("tokenizer.json"))
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
        _check_post_processor_tokens(backend, folder / "tokenizer.json")
        top = _vocab_top(backend, folder / "tokenizer.json")
        # transformers drops add_bos_token/add_eos_token when tokenizer.json exists: its post-processor rules
        settings.flags_rule_post_processor = False
        settings.add_bos_flag = settings.add_eos_flag = False
        tokenizer = HFTokenizer(backend, settings, top)
        _check_post_processor(tokenizer, folder / "tokenizer.json")
        return tokenizer
    model_bytes = read_model_bytes(folder, "tokenizer.model")
    if model_bytes is not None:
        return SentencePieceTokenizer.from_model_bytes(folder / "tokenizer.model", model_bytes, settings)
    raise TokenizerError(
        f"no tokenizer in {folder}: looked for {' and '.join(_TOKENIZER_FILES)}; "
        "copy the tokenizer files from the original model into the folder"
    )


def load_checked_tokenizer(folder: str | Path, config: bool = False) -> Tokenizer:
    """load_tokenizer, then check_token_ids against the model's embedding rows where they are known
    without the weights (config.json's vocab_size, a GGUF file's token_embd.weight), as loading the
    model checks them: `tiankong tokenize` shows no id the model could not run. A config that cannot be
    read leaves the ids unchecked (the tokenizer needs none; loading the model names the fault), unless
    `config`: then its error is raised, as loading the model would raise it (chat and compare, before
    their screen opens: a GGUF file whose metadata builds no model opened an app that could only say
    "model not loaded"). No torch is imported either way."""
    from .config import ModelConfig
    from .gguf_model import GGUFModel, is_gguf

    folder = Path(folder)
    gguf = GGUFModel(folder) if is_gguf(folder) else None
    tokenizer = gguf.tokenizer() if gguf else load_tokenizer(folder)
    try:
        if gguf is None:  # config.json, validated whole either way
            rows: object = ModelConfig.from_folder(folder).vocab_size
        else:  # the file's metadata: validated whole (as load_model does) where `config` asks
            rows = gguf.config().vocab_size if config else gguf.hf_config.get("vocab_size")
    except TiankongError:
        if config:
            raise
        return tokenizer
    if isinstance(rows, int) and rows > 0:
        check_token_ids(tokenizer, rows, folder)
    return tokenizer


# --- token ids ----------------------------------------------------------------------------------------


def _piece_or_none(backend: _Backend, id: int) -> str | None:
    # The Rust side takes ids as 32-bit unsigned integers and raises OverflowError for others.
    return backend.id_to_token(id) if 0 <= id < 1 << 32 else None


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
    if not Path(folder).is_dir():  # a GGUF file: its tokens and its embedding come in the one file
        _check_gguf_ids(tokenizer, rows, folder)
        return
    if tokenizer.vocab_size > rows:
        raise TokenizerError(_beyond_rows(tokenizer, rows, Path(folder)))
    for where, token_id in tokenizer.own_ids:
        if not 0 <= token_id < rows:
            raise TokenizerError(
                f"{folder}: {where} is {token_id}, beyond the model's {rows} embedding rows "
                "(config.json vocab_size); fix that id or use the model's own files"
            )


def _check_gguf_ids(tokenizer: Tokenizer, rows: int, path: str | Path) -> None:
    """check_token_ids for a GGUF file, named in the file's own terms: nothing in it is for a person
    to edit (no config.json, no tokenizer files), so the fix is another conversion of the model."""
    beyond = f"beyond the {rows} embedding rows of its token_embd.weight"
    fix = "the file was converted wrongly: convert the model to GGUF again, or use another GGUF file of it"
    if tokenizer.vocab_size != rows:  # fewer: the rows past it are ids no token is (llama.cpp refuses both)
        more = "more" if tokenizer.vocab_size > rows else "fewer"
        raise TokenizerError(
            f"{path}: its vocabulary (tokenizer.ggml.tokens) has {tokenizer.vocab_size} tokens, {more} than the "
            f"{rows} embedding rows of its token_embd.weight; {fix}"
        )
    for where, token_id in tokenizer.own_ids:
        if not 0 <= token_id < rows:
            raise TokenizerError(f"{path}: {where} is {token_id}, {beyond}; {fix}")


def _beyond_rows(tokenizer: Tokenizer, rows: int, folder: Path) -> str:
    """Why a tokenizer has more ids than the model has embedding rows, naming the token and its id as
    tokenizer.json writes them. The tokenizers library's own numbers can be nowhere in the file: it
    renumbers an added token whose id is past the vocabulary (99999 becomes 512), and counts a
    vocabulary by its entries, so a gap (ids 0-510 and 700) or a repeated id makes the count one more
    than the ids used. The vocabulary's own highest id is known from the load (vocab_top); only an
    added token past the rows makes an error read tokenizer.json a second time."""
    beyond = f"beyond the model's {rows} embedding rows (config.json vocab_size)"
    fix = "remove it from the tokenizer files or use the model's own"
    if tokenizer.vocab_top is not None and tokenizer.vocab_top[1] >= rows:
        token, i = tokenizer.vocab_top
        return f"{folder}: {_token_name(tokenizer, token)} has id {i} in tokenizer.json, {beyond}; {fix}"
    written = _written_ids(folder)
    past = [(token, i) for token, i in written if i >= rows]
    if past:
        token, i = max(past, key=lambda entry: entry[1])
        return f"{folder}: {_token_name(tokenizer, token)} has id {i} in tokenizer.json, {beyond}; {fix}"
    first: dict[int, str] = {}
    for token, i in written:
        other = first.setdefault(i, token)
        if other != token:
            return (
                f"{folder / 'tokenizer.json'}: {quoted(other, 60)!r} and {quoted(token, 60)!r} both have id {i}, "
                "and each token needs an id of its own; fix the ids or re-copy the file"
            )
    top = tokenizer.vocab_size - 1  # a token the settings files add past the vocabulary: our number
    try:
        name = _token_name(tokenizer, tokenizer.id_to_piece(top))
    except IndexError:
        name = "a token"
    return f"{folder}: {name} has id {top}, {beyond}; {fix}"


def _written_ids(folder: Path) -> list[tuple[str, int]]:
    """(token, id) for each entry of tokenizer.json's vocabulary, then of its added tokens, as written;
    [] for a folder without tokenizer.json (or a GGUF file)."""
    text = read_model_text(folder, "tokenizer.json", json_limit("tokenizer.json")) if folder.is_dir() else None
    data = parse_json(text, str(folder / "tokenizer.json"), TokenizerError) if text is not None else None
    if not isinstance(data, dict):
        return []
    model = data.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):  # BPE, WordPiece, WordLevel: token -> id
        entries = list(vocab.items())
    elif isinstance(vocab, list):  # Unigram: [piece, score], the id being the place
        entries = [(piece[0] if isinstance(piece, list) and piece else piece, i) for i, piece in enumerate(vocab)]
    else:
        entries = []
    added = data.get("added_tokens")
    for entry in added if isinstance(added, list) else []:
        if isinstance(entry, dict):
            entries.append((entry.get("content"), entry.get("id")))
    return [(t, i) for t, i in entries if isinstance(t, str) and isinstance(i, int) and not isinstance(i, bool)]


def _token_name(tokenizer: Tokenizer, piece: str) -> str:
    """How an error names a token: "bos_token '<s>'" or "'<extra>'"."""
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
