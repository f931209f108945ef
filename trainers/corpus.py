"""The corpus as tokens: a new model's SentencePiece tokenizer trained on it, and its documents
encoded for pretraining (trainers/pretrain.py), in bounded memory whatever the corpus's shape."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from tiankong.engine.errors import InputError
from tiankong.engine.files import atomic_write_bytes
from tiankong.engine.tokenizer import Tokenizer

# Special tokens of a new tokenizer, at SentencePiece's (and Llama's) usual ids.
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
# The tokenizer trainer sees a text line in pieces of at most this many bytes (it drops longer ones).
SENTENCE_BYTES = 1 << 14


def train_tokenizer(docs: Sequence[str], folder: Path, vocab_size: int, model_max_length: int, seed: int = 0) -> None:
    """Train a SentencePiece BPE tokenizer on `docs`; write tokenizer.model and its JSON files.

    Byte fallback (no text is ever <unk>), identity normalisation and kept whitespace (code keeps its
    indentation), digits split, character_coverage 0.9995 so CJK characters get pieces of their own.
    Training sees lines, so newlines are left to byte fallback (<0x0A>), as in Llama's tokenizer.
    """
    import sentencepiece as spm

    lines = (piece for doc in docs for line in doc.split("\n") if line.strip() for piece in _sentences(line))
    buf = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines,
            model_writer=buf,
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            byte_fallback=True,
            character_coverage=0.9995,
            split_digits=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            allow_whitespace_only_pieces=True,
            max_sentence_length=SENTENCE_BYTES,
            input_sentence_size=2_000_000,
            shuffle_input_sentence=True,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            unk_piece=UNK,
            bos_piece=BOS,
            eos_piece=EOS,
            num_threads=max(1, torch.get_num_threads()),
            minloglevel=2,
        )
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1]
        # sentencepiece needs a piece for every distinct character: too small a vocabulary is the
        # one problem a smaller --vocab-size cannot fix.
        fix = "give a larger --vocab-size" if "required_chars" in reason else "give more text or a smaller --vocab-size"
        raise InputError(f"cannot train a tokenizer on the data ({reason}); {fix}") from None
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }
    texts = {
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": UNK}, indent=2) + "\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        atomic_write_bytes(folder / name, text.encode("utf-8"))
    atomic_write_bytes(folder / "tokenizer.model", buf.getvalue())


def _sentences(line: str, limit: int = SENTENCE_BYTES) -> Iterator[str]:
    """`line` in pieces of at most `limit` UTF-8 bytes, cut before a space where there is one in the
    second half of a piece (else at a character boundary): SentencePiece drops longer sentences
    without a word, so a corpus on one huge line would leave it nothing to learn from."""
    raw = line.encode("utf-8")
    while len(raw) > limit:
        cut = limit
        while raw[cut] & 0xC0 == 0x80:  # not inside a character
            cut -= 1
        space = raw.rfind(b" ", limit // 2, cut)
        cut = space if space > 0 else cut
        yield raw[:cut].decode("utf-8")
        raw = raw[cut:]
    yield raw.decode("utf-8")


# A tokenizer holds ~100 bytes of work per character of the text it encodes: a corpus that is one
# 20 MB line took 2.3 GB where the same text in lines took 0.6. Longer documents go in pieces, and
# the tokenizer's threads are given about BATCH_CHARS characters at a time, so the work in hand
# stays ~400 MB whatever the corpus (and a bar can count it: 30 MB took ~40 s on 2 busy cores).
PIECE_CHARS = 1 << 20
BATCH_CHARS = 4 * PIECE_CHARS


def document_pieces(doc: str, piece_chars: int = PIECE_CHARS) -> list[str]:
    """`doc` in pieces of at most `piece_chars` characters, each cut after a newline or before a space
    in its second half where there is one: a word is never split."""
    pieces, start = [], 0
    while start < len(doc):
        end = min(start + piece_chars, len(doc))
        if end < len(doc):
            cut = max(doc.rfind("\n", start + piece_chars // 2, end) + 1, doc.rfind(" ", start + piece_chars // 2, end))
            end = cut if cut > start else end
        pieces.append(doc[start:end])
        start = end
    return pieces


def encode_documents(
    tokenizer: Tokenizer,
    docs: Sequence[str],
    done: Callable[[int], None] = lambda chars: None,
    piece_chars: int = PIECE_CHARS,
    batch_chars: int = BATCH_CHARS,
) -> Iterator[list[int]]:
    """Each document's ids with the tokenizer's special tokens, in order. Short documents are encoded
    together, about `batch_chars` characters at a time; a document longer than `piece_chars` goes
    in document_pieces (only the tokens at a cut may differ from one long encode). `done(chars)`
    is told the characters encoded after each batch (a progress bar's ticks)."""
    group: list[str] = []
    for doc in docs:
        if len(doc) > piece_chars:
            yield from _encode_group(tokenizer, group, done)
            group = []
            yield _encode_long(tokenizer, doc, done, piece_chars, batch_chars)
            continue
        group.append(doc)
        if sum(map(len, group)) >= batch_chars:
            yield from _encode_group(tokenizer, group, done)
            group = []
    yield from _encode_group(tokenizer, group, done)


def _encode_group(tokenizer: Tokenizer, docs: list[str], done: Callable[[int], None]) -> list[list[int]]:
    encoded = tokenizer.encode_batch(docs, add_special_tokens=True) if docs else []
    done(sum(map(len, docs)))
    return encoded


def _encode_long(
    tokenizer: Tokenizer, doc: str, done: Callable[[int], None], piece_chars: int, batch_chars: int
) -> list[int]:
    ids = tokenizer.encode("", add_special_tokens=True)  # BOS, where the tokenizer adds one
    pieces = document_pieces(doc, piece_chars)
    per_batch = max(1, batch_chars // piece_chars)
    for k in range(0, len(pieces), per_batch):
        batch = pieces[k : k + per_batch]
        for piece_ids in tokenizer.encode_batch(batch, add_special_tokens=False):
            ids.extend(piece_ids)
        done(sum(map(len, batch)))
    return ids
