"""Tokenizer parity with transformers, on tiny tokenizers built here and on stories260K's SentencePiece model.

The tiny folders are written by transformers' own save_pretrained, so both sides read identical files.
The builders are reused by test_chat.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from tiankong.engine.errors import ModelLoadError, TokenizerError
from tiankong.engine.tokenizer import IncrementalDecoder, SentencePieceTokenizer, load_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STORIES = SHARED / "models" / "stories260K"
needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason="shared stories260K model folder is absent")


# transformers reads tokenizer.model through protobuf; without it AutoTokenizer cannot load such a folder.
def _has_protobuf() -> bool:
    try:
        return importlib.util.find_spec("google.protobuf") is not None
    except ModuleNotFoundError:  # no "google" package at all
        return False


needs_protobuf = pytest.mark.skipif(not _has_protobuf(), reason="transformers needs protobuf for tokenizer.model")

CORPUS = [
    "Once upon a time there was a little girl named Lily. She liked to play in the park with her friend Tom.",
    "The quick brown fox jumps over the lazy dog. Hello, world! How are you today?",
    "你好，世界。我们今天去公园玩。天空很蓝。",
    "Numbers like 12345 and 3.14 appear too; so do tabs\tand new\nlines.",
    "Emoji are fun 😀 🎉 and so are accents: café, naïve, Zürich.",
] * 3

TEXTS = [
    "Once upon a time",
    "  leading spaces and trailing spaces   ",
    "multiple   inner    spaces",
    "line one\nline two\n\n\nline five\n",
    "你好，世界！天空",
    "emoji 😀🎉 and a rare one 🦜",
    "mixed 中文 and English, café 😀",
    "\n",
    " ",
    "",
]

LLAMA_SPECIALS = ["<|user|>", "<|assistant|>", "<|system|>"]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


# --- tiny tokenizer folders ----------------------------------------------------------------------------


def make_bytelevel_folder(folder: Path) -> Path:
    """A GPT-2 / Qwen2 style byte-level BPE without BOS, with ChatML special tokens and two EOS ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=CHATML_SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    ids = [tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": ids}))
    return folder


def make_llama_folder(folder: Path) -> Path:
    """A Llama/Mistral style tokenizer.json: Metaspace, byte fallback <0xNN>, a BOS post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # Train merges on "▁"-marked words, then lay the vocabulary out like Llama's: specials, 256 bytes, pieces.
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer_tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece in sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=LLAMA_SPECIALS,
    )
    fast.save_pretrained(folder)
    return folder


def _folders(request) -> list[tuple[str, Path]]:
    return [(name, request.getfixturevalue(name)) for name in ("bytelevel_folder", "llama_folder")]


def _stream(tokenizer, ids, prompt_ids=(), skip_special_tokens=True) -> list[str]:
    decoder = IncrementalDecoder(tokenizer, prompt_ids, skip_special_tokens=skip_special_tokens)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


# --- parity with transformers ----------------------------------------------------------------------------


def _assert_parity(folder: Path, texts: list[str]) -> None:
    from transformers import AutoTokenizer

    ours, theirs = load_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    for text in texts:
        for add in (True, False):
            ids = theirs.encode(text, add_special_tokens=add)
            assert ours.encode(text, add_special_tokens=add) == ids, (text, add)
            for skip in (True, False):
                assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


def test_bytelevel_matches_transformers(bytelevel_folder):
    specials = ["<|im_start|>user\nhi<|im_end|>\n", "a<|endoftext|>b", " <|im_start|> x <|im_end|> "]
    _assert_parity(bytelevel_folder, TEXTS + specials)


def test_llama_style_matches_transformers(llama_folder):
    specials = ["<s>hello</s>", "<|user|>\nhi</s>\n<|assistant|>\n", "a <s> b", "x<unk>y", "[INST] hi [/INST]"]
    _assert_parity(llama_folder, TEXTS + specials)


@needs_stories
@needs_protobuf
def test_sentencepiece_matches_transformers():
    _assert_parity(STORIES, TEXTS + ["hi</s> there<s>x", "<s>Once", "a  <s>  b", 'Lily said: "Tom!"'])


@needs_stories
@needs_protobuf
def test_sentencepiece_config_flags_match_transformers(tmp_path):
    # Same model, different tokenizer_config: no BOS, an extra special token, add_eos_token.
    shutil.copy(STORIES / "tokenizer.model", tmp_path / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": False,
        "add_eos_token": True,
        "added_tokens_decoder": {"512": {"content": "<|end|>", "special": True}},
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    _assert_parity(tmp_path, TEXTS + ["one<|end|>two", "<|end|>"])
    ours = load_tokenizer(tmp_path)
    assert not ours.add_bos and ours.encode("<|end|>", add_special_tokens=False) == [512]


@needs_stories
def test_sentencepiece_matches_raw_sentencepiece():
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(STORIES / "tokenizer.model"))
    tok = load_tokenizer(STORIES)
    assert isinstance(tok, SentencePieceTokenizer)
    # Plain text (no special-token strings, no leading space): the converted BPE is SentencePiece's.
    texts = [t for t in TEXTS if t and not t[0].isspace()] + [" ".join(CORPUS[:5])]
    for text in texts:
        assert tok.encode(text) == [processor.bos_id(), *processor.encode(text)], text
        assert tok.decode(tok.encode(text), skip_special_tokens=True) == processor.decode(processor.encode(text))
    # Special-token strings in text are single tokens, as in a rendered chat prompt.
    assert tok.encode("hi</s>", add_special_tokens=False)[-1] == tok.encode("</s>", add_special_tokens=False)[0] == 2


# --- metadata ------------------------------------------------------------------------------------------


@needs_stories
def test_stories_metadata():
    tok = load_tokenizer(STORIES)
    assert (tok.vocab_size, tok.bos_id, tok.eos_ids, tok.add_bos) == (512, 1, frozenset({2}), True)
    assert (tok.bos_token, tok.eos_token) == ("<s>", "</s>")
    assert tok.special_ids == {0, 1, 2}
    assert tok.id_to_piece(13) == "<0x0A>" and tok.token_text(13) == "\n"
    once = tok.encode("Once", add_special_tokens=False)[0]
    assert tok.id_to_piece(once) == "▁Once" and tok.token_text(once) == " Once"
    assert tok.token_text(tok.encode("你", add_special_tokens=False)[-1]).startswith("<0x")


def test_bytelevel_metadata(bytelevel_folder):
    tok = load_tokenizer(bytelevel_folder)
    im_end, eot = tok.encode("<|im_end|><|endoftext|>", add_special_tokens=False)
    assert tok.eos_ids == {im_end, eot}  # generation_config.json lists both
    assert tok.pad_id == eot and tok.bos_id is None and not tok.add_bos
    assert tok.eos_token == "<|im_end|>" and {im_end, eot} <= tok.special_ids
    assert tok.encode("", add_special_tokens=True) == []
    the = tok.encode(" the", add_special_tokens=False)
    assert len(the) == 1 and tok.id_to_piece(the[0]) == "Ġthe" and tok.token_text(the[0]) == " the"
    # A lone byte of a split character is shown as <0xNN>, never as a replacement character.
    for token in tok.encode("🦜", add_special_tokens=False):
        assert "\ufffd" not in tok.token_text(token)
    assert "<0xF0>" in "".join(tok.token_text(t) for t in tok.encode("🦜", add_special_tokens=False))
    with pytest.raises(IndexError):
        tok.id_to_piece(10_000)


def test_llama_style_metadata(llama_folder):
    tok = load_tokenizer(llama_folder)
    assert tok.add_bos and tok.bos_id == 1 and tok.eos_ids == {2}
    assert tok.encode("", add_special_tokens=True) == [1]
    user = tok.encode("<|user|>", add_special_tokens=False)
    assert len(user) == 1 and user[0] in tok.special_ids
    assert tok.named_special_tokens == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    once = tok.encode("Once", add_special_tokens=False)[0]
    assert tok.id_to_piece(once) == "▁Once" and tok.token_text(once) == " Once"
    carriage = tok.encode("\r", add_special_tokens=False)[-1]  # not in the training text: a byte piece
    assert tok.id_to_piece(carriage) == "<0x0D>" and tok.token_text(carriage) == "\r"


def test_missing_tokenizer_raises(tmp_path):
    with pytest.raises(TokenizerError, match="tokenizer.json and tokenizer.model"):
        load_tokenizer(tmp_path)
    assert issubclass(TokenizerError, ModelLoadError)
    with pytest.raises(TokenizerError):
        load_tokenizer(tmp_path / "nope")


def test_broken_tokenizer_files_raise(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer.model").write_bytes(b"garbage")
    with pytest.raises(TokenizerError, match="SentencePiece"):
        load_tokenizer(tmp_path)


# --- incremental decoding --------------------------------------------------------------------------------


def _stream_cases(request):
    cases = _folders(request)
    if STORIES.is_dir():
        cases.append(("stories", STORIES))
    return cases


def test_stream_equals_full_decode(request):
    for name, folder in _stream_cases(request):
        tok = load_tokenizer(folder)
        for text in TEXTS + [" ".join(TEXTS)]:
            ids = tok.encode(text, add_special_tokens=False)
            chunks = _stream(tok, ids)
            assert "".join(chunks) == tok.decode(ids, skip_special_tokens=True), (name, text)
            assert not any("\ufffd" in chunk for chunk in chunks), (name, text, chunks)


def test_stream_after_prompt_has_right_boundary(request):
    for name, folder in _stream_cases(request):
        tok = load_tokenizer(folder)
        for text in TEXTS[:7] + [" ".join(TEXTS)]:
            ids = tok.encode(text)
            for cut in range(1, len(ids)):
                prompt_text = tok.decode(ids[:cut], skip_special_tokens=True)
                full_text = tok.decode(ids, skip_special_tokens=True)
                if not full_text.startswith(prompt_text) or prompt_text.endswith("\ufffd"):
                    continue  # the cut splits a character; a real prompt always ends on a boundary
                chunks = _stream(tok, ids[cut:], prompt_ids=ids[:cut])
                assert "".join(chunks) == full_text[len(prompt_text) :], (name, text, cut)
                assert not any("\ufffd" in chunk for chunk in chunks), (name, text, cut)


@needs_stories
def test_stream_first_token_keeps_its_space():
    tok = load_tokenizer(STORIES)
    prompt = tok.encode("Once upon a")
    full = tok.encode("Once upon a time")
    assert full[: len(prompt)] == prompt and tok.id_to_piece(full[-1]) == "▁time"
    decoder = IncrementalDecoder(tok, prompt)
    assert decoder.push(full[-1]) == " time"
    # With no prompt at all, the first word has no space, like decode() of the generated ids.
    assert IncrementalDecoder(tok, [tok.bos_id]).push(full[1]) == "Once"


def test_stream_holds_split_characters(request):
    for name, folder in _folders(request):
        tok = load_tokenizer(folder)
        ids = tok.encode("🦜", add_special_tokens=False)
        assert len(ids) > 1, name  # the test needs a character split over several tokens
        chunks = _stream(tok, ids)
        assert chunks[:-2] == [""] * (len(ids) - 1) and chunks[-2] == "🦜", (name, chunks)


def test_stream_specials(bytelevel_folder):
    tok = load_tokenizer(bytelevel_folder)
    ids = tok.encode("hi there<|im_end|>", add_special_tokens=False)
    assert "".join(_stream(tok, ids)) == "hi there"
    assert "".join(_stream(tok, ids, skip_special_tokens=False)) == "hi there<|im_end|>"


def test_stream_window_stays_bounded(llama_folder):
    tok = load_tokenizer(llama_folder)
    ids = tok.encode(" ".join(CORPUS), add_special_tokens=False)
    decoder = IncrementalDecoder(tok, tok.encode("Once"))
    out = []
    for token in ids:
        out.append(decoder.push(token))
        assert len(decoder._ids) <= 2 * IncrementalDecoder._MAX_PENDING
    assert "".join(out) + decoder.flush() == " " + tok.decode(ids)


def test_tokenizer_json_post_processor_beats_config_flags(tmp_path, llama_folder):
    # transformers ignores add_bos_token/add_eos_token next to a tokenizer.json, even one without post-processor.
    folder = tmp_path / "no_post"
    shutil.copytree(llama_folder, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(add_bos_token=True, add_eos_token=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    _assert_parity(folder, ["hi", ""])
    assert not load_tokenizer(folder).add_bos


def test_bare_tokenizer_json_takes_bos_from_post_processor(tmp_path, llama_folder):
    shutil.copy(llama_folder / "tokenizer.json", tmp_path / "tokenizer.json")
    tok = load_tokenizer(tmp_path)  # no tokenizer_config.json: BOS is whatever the post-processor prepends
    assert (tok.bos_id, tok.bos_token, tok.add_bos) == (1, "<s>", True)


# ---- hostile tokenizer files: refused at load, in one line naming the file


def _hostile(tmp_path: Path, llama_folder: Path, **changes) -> Path:
    """A copy of the Llama-style folder with top-level keys of tokenizer.json replaced."""
    folder = tmp_path / "hostile"
    shutil.copytree(llama_folder, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec.update(changes)
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    return folder


def _replace(old: dict, new: str) -> dict:
    return {"type": "Replace", "pattern": old, "content": new}


def _sequence(kind: str, steps: list) -> dict:
    return {"type": "Sequence", kind: steps}


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
A_TO_16 = _replace({"String": "a"}, "a" * 16)

GROWING = {
    "eight 16x replaces": ({"normalizer": _sequence("normalizers", [A_TO_16] * 8)}, "4,294,967,296 times longer"),
    "nested sequences": (
        {"normalizer": _sequence("normalizers", [A_TO_16, _sequence("normalizers", [A_TO_16])])},
        "256 times longer when encoding",
    ),
    "long prepend": ({"normalizer": {"type": "Prepend", "prepend": "x" * 100_000}}, "Prepend normalizer of 100000"),
    "regex replace": ({"normalizer": _replace({"Regex": "x*"}, "y" * 20)}, "21 times longer"),
    "replace and byte level": (
        {"normalizer": _replace({"String": "a"}, "aaaaa"), "pre_tokenizer": BYTE_LEVEL},
        "20 times longer",
    ),
    "byte level thrice": ({"pre_tokenizer": _sequence("pretokenizers", [BYTE_LEVEL] * 3)}, "ByteLevel step"),
    "decoder replaces": ({"decoder": _sequence("decoders", [A_TO_16] * 2)}, "256 times longer when decoding"),
}


@pytest.mark.parametrize("case", GROWING)
def test_steps_that_together_make_text_far_longer_are_refused(tmp_path, llama_folder, case):
    """Each step alone grows text at most 16x; together they would make gigabytes inside Rust, which
    aborts the whole process when an allocation fails."""
    changes, needle = GROWING[case]
    folder = _hostile(tmp_path, llama_folder, **{"pre_tokenizer": None, **changes})  # Metaspace's 2x aside
    with pytest.raises(TokenizerError) as error:
        load_tokenizer(folder)
    message = str(error.value)
    assert message.startswith(f"{folder / 'tokenizer.json'}: its steps can make a text ") and needle in message
    assert "\n" not in message and len(message) < 500


def test_real_steps_that_grow_text_a_little_load(tmp_path, llama_folder):
    # Llama 2's normalizer ("▁" first, spaces as "▁") before a Llama 3 style split and ByteLevel: 2 * 4
    normalizer = _sequence("normalizers", [{"type": "Prepend", "prepend": "▁"}, _replace({"String": " "}, "▁")])
    split = {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False}
    folder = _hostile(
        tmp_path, llama_folder, normalizer=normalizer, pre_tokenizer=_sequence("pretokenizers", [split, BYTE_LEVEL])
    )
    assert load_tokenizer(folder).encode("Hello world, it's 2024!")


LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
REAL_SPLITS = [
    LLAMA3_SPLIT,
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",  # GPT-2
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",  # o200k
    r" ?[^(\s|[.,!?…。，、।۔،])]+",  # BLOOM
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*",
    r"[一-龥\u3040-ゟ゠-ヿ]+",  # DeepSeek's CJK split
    r"(?:\r\n|\n)+",
]
BACKTRACKING = {
    "(a|aa)+$": "repeats alternatives that can match the same text",
    "(a+)+$": "nests quantifiers",
    r"(\w|\d)+x": "repeats alternatives",
    "(.*a){20}": "nests quantifiers",
    "((a)+)*b": "nests quantifiers",
    "(?:a?b|b)+c": "repeats alternatives",
}


@pytest.mark.parametrize("pattern", REAL_SPLITS)
def test_real_pre_tokenizer_regexes_load(tmp_path, llama_folder, pattern):
    split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
    assert load_tokenizer(_hostile(tmp_path, llama_folder, pre_tokenizer=split)).encode("Hello, world 12345!")


@pytest.mark.parametrize("pattern", BACKTRACKING)
@pytest.mark.parametrize("step", ["pre_tokenizer", "normalizer"])
def test_regexes_that_backtrack_exponentially_are_refused(tmp_path, llama_folder, pattern, step):
    """Refused before any text meets them: on "aaa...b" the regex engine panics inside Rust, which
    prints a panic report on stderr whatever Python then does with the error."""
    if step == "pre_tokenizer":
        changes = {step: {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}}
    else:
        changes = {step: _replace({"Regex": pattern}, "")}
    with pytest.raises(TokenizerError, match=re.escape(BACKTRACKING[pattern])):
        load_tokenizer(_hostile(tmp_path, llama_folder, **changes))


def test_a_backtracking_regex_prints_no_panic(tmp_path, llama_folder):
    from helpers import tiankong

    split = {"type": "Split", "pattern": {"Regex": "(a|aa)+$"}, "behavior": "Isolated", "invert": False}
    folder = _hostile(tmp_path, llama_folder, pre_tokenizer=split)
    code, lines, _ = tiankong("tokenize", "-m", folder, "a" * 3000 + "b")
    assert code == 2 and len(lines) == 1 and "repeats alternatives" in lines[0], lines


TEMPLATE_WITH = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<nope>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [],
    "special_tokens": {"<nope>": {"id": "<nope>", "ids": [99_999_999], "tokens": ["<nope>"]}},
}


def test_a_post_processor_token_outside_the_vocabulary_is_refused(tmp_path, llama_folder):
    folder = _hostile(tmp_path, llama_folder, post_processor=TEMPLATE_WITH)
    with pytest.raises(TokenizerError) as error:
        load_tokenizer(folder)
    assert str(error.value).startswith(
        f"{folder / 'tokenizer.json'}: post_processor token '<nope>' has id 99999999, outside the "
    )


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"config.json": {"eos_token_id": -5}}, "config.json: eos_token_id -5 is not a token id"),
        ({"generation_config.json": {"eos_token_id": [2, -1]}}, "generation_config.json: eos_token_id -1 is not"),
        ({"generation_config.json": {"bos_token_id": -3}}, "generation_config.json: bos_token_id -3 is not"),
    ],
)
def test_negative_token_ids_are_refused_naming_file_and_key(tmp_path, llama_folder, files, needle):
    folder = _hostile(tmp_path, llama_folder)
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match=re.escape(f"{folder / needle}")):
        load_tokenizer(folder)


@pytest.mark.parametrize("key", ["eos_token_id", "bos_token_id", "pad_token_id"])
@pytest.mark.parametrize("value", [10**12, 70_000])
def test_settings_ids_beyond_the_embedding_are_named(tmp_path, llama_folder, key, value):
    from tiankong.engine.tokenizer import check_token_ids

    folder = _hostile(tmp_path, llama_folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop(key.replace("_id", ""), None)  # the id counts only without the token's text
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({key: [value]}))
    tok = load_tokenizer(folder)
    with pytest.raises(TokenizerError) as error:
        check_token_ids(tok, tok.vocab_size, folder)
    assert str(error.value) == (
        f"{folder}: generation_config.json {key} is {value}, beyond the model's {tok.vocab_size} embedding rows "
        "(config.json vocab_size); fix that id or use the model's own files"
    )
    with pytest.raises(IndexError):
        tok.id_to_piece(value)


def test_pad_token_id_minus_one_means_none(tmp_path, llama_folder):
    folder = _hostile(tmp_path, llama_folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("pad_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "config.json").write_text(json.dumps({"pad_token_id": -1, "eos_token_id": 2}))
    assert load_tokenizer(folder).pad_id is None


def test_a_huge_added_token_is_named_in_one_short_line(tmp_path, llama_folder):
    from tiankong.engine.tokenizer import check_token_ids

    folder = _hostile(tmp_path, llama_folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    # An extra special token: a bos_token or eos_token must be in the vocabulary already (check_declared).
    config["additional_special_tokens"] = ["\x1b]2;x\x07" + "B" * 100_000]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(folder)
    with pytest.raises(TokenizerError) as error:
        check_token_ids(tok, tok.vocab_size - 1, folder)
    message = str(error.value)
    assert message.startswith(f"{folder}: ']2;xBBB") and "beyond the model's" in message
    assert len(message) < 500 and "\x1b" not in message
