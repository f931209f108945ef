"""Writing a Hugging Face folder's tokenizer into a GGUF file the way llama.cpp's converter does.

`convert_hf_to_gguf.py` is not on PyPI, but the `gguf` package ships the pieces it uses:
`gguf.SentencePieceVocab` / `gguf.LlamaHfVocab` (tokens, scores, token types) and `gguf.SpecialVocab`
(merges, special token ids, add_bos/add_eos, chat template). `add_tokenizer` follows the converter's
`_set_vocab_sentencepiece`, `_set_vocab_llama_hf` and `_set_vocab_gpt2`, with two differences noted
where they happen: the pre-tokenizer name is read from tokenizer.json instead of a hash of known
models' outputs (tiny test tokenizers match no known hash), and a tokenizer.json SentencePiece
vocabulary gets score -id (the converter writes -1000 for all, which llama.cpp then merges leftmost-
first, unlike every other implementation). Left out: the converter's per-model quirks (CodeLlama's
FIM ids, add_bos false for a 49,152-token Llama vocabulary). test_gguf_tokenizer.py checks the output
key by key against the real converter where a llama.cpp checkout is at hand (LLAMA_CPP_DIR).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf

# tokenizer.json pre-tokenizer regexes -> llama.cpp's tokenizer.ggml.pre names
_SPLIT_NAMES = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


def add_tokenizer(writer: gguf.GGUFWriter, folder: Path, pre: str | None = None) -> None:
    """The tokenizer of `folder` as tokenizer.* metadata of `writer`; `pre` names the byte-level
    pre-tokenizer instead of reading it from tokenizer.json."""
    folder = Path(folder)
    config = folder / "tokenizer_config.json"
    add_prefix_space = json.loads(config.read_text()).get("add_prefix_space") if config.is_file() else None
    if add_prefix_space is not None:  # the converter's LlamaModel.set_vocab, for every kind of vocabulary
        writer.add_add_space_prefix(add_prefix_space)
    if (folder / "tokenizer.json").is_file():
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        if data["model"].get("byte_fallback"):
            _add_llama_hf(writer, folder)
        else:
            _add_byte_level(writer, folder, pre or _pre_name(data["pre_tokenizer"]))
    else:
        _add_sentencepiece(writer, folder)


def tokenizer_only_gguf(folder: Path, path: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A GGUF file holding `folder`'s tokenizer, with `overrides` replacing or adding metadata."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(Path(folder).name)
    overrides = overrides or {}
    add_tokenizer(writer, folder, overrides.get("tokenizer.ggml.pre"))
    set_fields(writer, overrides)
    return finish(writer)


def finish(writer: gguf.GGUFWriter) -> Path:
    """Add the few llama hyperparameters llama.cpp reads even with vocab_only=True, then write the
    file (no tensors)."""
    tokens = writer.kv_data[0].get("tokenizer.ggml.tokens")
    writer.add_vocab_size(len(tokens.value) if tokens is not None else 0)
    writer.add_context_length(512)
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_rope_dimension_count(16)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(writer.path)


def set_fields(writer: gguf.GGUFWriter, fields: dict[str, Any]) -> None:
    """Write raw metadata values, replacing keys already written; None removes a key. Types follow
    the Python value: str, bool, int (uint32), float (float32), list or bytes list (array)."""
    for key, value in fields.items():
        for kv in writer.kv_data:
            kv.pop(key, None)
        if value is None:
            continue
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_array(key, value)


def _rows(folder: Path) -> int:
    """config.json's vocab_size (the embedding's rows), 0 where it gives none."""
    import json

    config = folder / "config.json"
    return int(json.loads(config.read_text()).get("vocab_size") or 0) if config.is_file() else 0


def _pad(folder: Path, tokens: tuple, scores: tuple, types: tuple) -> tuple[list, list, list]:
    """The converter's padding of a SentencePiece vocabulary to config.json's vocab_size: [PADi]
    tokens of score -1000 and type UNUSED (llama.cpp refuses a vocabulary shorter than the embedding)."""
    extra = range(len(tokens), max(len(tokens), _rows(folder)))
    return (
        [*tokens, *(f"[PAD{i}]" for i in extra)],
        [*scores, *(-1000.0 for _ in extra)],
        [*types, *(gguf.TokenType.UNUSED for _ in extra)],
    )


def _add_sentencepiece(writer: gguf.GGUFWriter, folder: Path) -> None:
    """convert_hf_to_gguf's _set_vocab_sentencepiece: tokenizer.model pieces, scores and types."""
    vocab = gguf.SentencePieceVocab(folder)
    tokens, scores, types = _pad(folder, *zip(*vocab.all_tokens(), strict=True))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(list(tokens))
    writer.add_token_scores(list(scores))
    writer.add_token_types(list(types))
    gguf.SpecialVocab(folder, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def _add_llama_hf(writer: gguf.GGUFWriter, folder: Path) -> None:
    """convert_hf_to_gguf's _set_vocab_llama_hf, but with score -id (see the module docstring)."""
    vocab = gguf.LlamaHfVocab(folder)
    tokens, _, types = _pad(folder, *zip(*vocab.all_tokens(), strict=True))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(list(tokens))
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_types(list(types))
    gguf.SpecialVocab(folder, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def _add_byte_level(writer: gguf.GGUFWriter, folder: Path, pre: str) -> None:
    """convert_hf_to_gguf's _set_vocab_gpt2 (get_vocab_base): added tokens are control when special or
    when they look special (<|...|>), else user-defined; merges and special ids from SpecialVocab."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    reverse = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(max(max(reverse) + 1, _rows(folder))):  # the converter pads to config.json's vocab_size
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token not in added:
            types.append(gguf.TokenType.NORMAL)
        elif decoder[i].special or (token.startswith("<|") and token.endswith("|>")):
            types.append(gguf.TokenType.CONTROL)
        else:
            types.append(gguf.TokenType.USER_DEFINED)
        tokens.append(token)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def _pre_name(pre: dict) -> str:
    """The llama.cpp pre-tokenizer name for a tokenizer.json pre_tokenizer (what the converter's hash
    would have found for the real model with this pre-tokenizer)."""
    steps = pre.get("pretokenizers", [pre])
    kinds = [step["type"] for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0]["pattern"].get("Regex") in _SPLIT_NAMES:
        return _SPLIT_NAMES[steps[0]["pattern"]["Regex"]]
    raise ValueError(f"no llama.cpp pre-tokenizer name for {kinds}")
