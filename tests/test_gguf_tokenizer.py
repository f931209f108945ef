"""GGUF tokenizers (engine/gguf_tokenizer.py) against three independent references on the same files.

Each tokenizer folder is written into a tokenizer-only GGUF the way llama.cpp's converter writes it
(tests/gguf_vocab.py), then read back with tiankong and compared with:
  (a) the source folder's tokenizer (engine.tokenizer.load_tokenizer, itself pinned to transformers),
  (b) transformers' own GGUF tokenizer (AutoTokenizer.from_pretrained(dir, gguf_file=...)),
  (c) llama.cpp (llama-cpp-python, vocab_only), skipped when llama_cpp is not installed.
llama.cpp is the one tiankong follows where they disagree: a SentencePiece vocabulary gets its "▁"
prefix before every stretch of text that follows a special token, and before a leading space too
(transformers' Metaspace "first" does neither). Those texts are compared with (c) and with
SentencePiece itself, fragment by fragment, not with (a) and (b).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
from gguf_vocab import finish, set_fields, tokenizer_only_gguf
from test_tokenizer import CHATML_SPECIALS, CORPUS, STORIES

from tiankong.engine.chat import ChatTemplate
from tiankong.engine.errors import TokenizerError
from tiankong.engine.gguf_tokenizer import PRE_TOKENIZERS, chat_template_from_gguf, tokenizer_from_gguf
from tiankong.engine.tokenizer import check_token_ids, load_tokenizer

# Texts every implementation splits the same way.
TEXTS = [
    "Once upon a time",
    "multiple   inner    spaces and trailing   ",
    "line one\nline two\n\n\nline five\n\ttab",
    "你好，世界！天空",
    "emoji 😀🎉 and a rare one 🦜, café",
    "bytes \x01\x7f and ꙮ need byte fallback",
    "I've 'RE numbers 1234567 3.14",
    "\n",
    "",
    "<|im_start|>",
    "<think>why</think> so",
]
# Texts where llama.cpp's SentencePiece prefix differs from transformers' (leading spaces, text after
# a special token); byte-level vocabularies agree on these too.
PREFIX_TEXTS = [
    " leading space",
    "  two leading",
    " ",
    "<s>Hi</s> there",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|user|> hi<|assistant|>\n",
]
# Text that every pre-tokenizer splits differently (punctuation runs, digit groups, newlines, case).
SPLIT_TEXT = (
    "Hello!!! ... ,,, $100+200=300 (x) <tag> ~^| 'll 'D I'M x\r\n\ny \u00a0nbsp 12345678901 ΑΒΓ aBc .\n\n"
    "CamelCase HTTPServer ÉcoleÉTÉ you're `code`/path/ `a` `b` `c` `d`"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BOS_TEMPLATE = "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}{{ eos_token }}{% endfor %}"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "你好 😀 <think>?"},
    {"role": "assistant", "content": " Hi there"},
]

# tokenizer.json pre-tokenizer regexes (transformers' spellings, as the real models' files have them)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = _QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


# --- tokenizer folders and their GGUF files ------------------------------------------------------------


def make_bpe_folder(folder: Path, style: str) -> Path:
    """A byte-level BPE shaped like a real family's tokenizer.json: "qwen2" (Split regex, ChatML,
    <think> as a plain added token), "llama-bpe" (Llama 3: Split regex, ignore_merges, a BOS
    post-processor), "smollm" (individual digits, then GPT-2's regex), or "unsplit" (merges learned
    across every boundary, so any pre-tokenizer's splits show in the ids)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=style == "smollm")
    first = {
        "qwen2": [pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated")],
        "llama-bpe": [pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated")],
        "smollm": [pre_tokenizers.Digits(individual_digits=True)],
        "unsplit": [],
    }[style]
    specials = ["<|begin_of_text|>", "<|eot_id|>", *CHATML_SPECIALS]
    tok = Tokenizer(models.BPE(ignore_merges=style == "llama-bpe"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([*first, byte_level])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=900 if style == "unsplit" else 460,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS + [SPLIT_TEXT] * 5, trainer)
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False), AddedToken("</think>", normalized=False)])
    if style == "llama-bpe":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", bos)],
        )
        named = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        named = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **named)
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(folder)
    return folder


def _with_template(source: Path, folder: Path, template: str) -> Path:
    """A copy of a tokenizer folder whose tokenizer_config.json carries `template`."""
    shutil.copytree(source, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config["chat_template"] = template
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module", params=["stories", "llama", "bytelevel", "qwen2", "llama-bpe", "smollm"])
def case(request, tmp_path_factory):
    """(kind, source folder, GGUF path) for one tokenizer."""
    name = request.param
    root = tmp_path_factory.mktemp(f"gguf-{name}")
    if name == "stories":
        if not STORIES.is_dir():
            pytest.skip("shared stories260K model folder is absent")
        folder = STORIES
    elif name == "llama":
        folder = _with_template(request.getfixturevalue("llama_folder"), root / "src", BOS_TEMPLATE)
    elif name == "bytelevel":
        folder = _with_template(request.getfixturevalue("bytelevel_folder"), root / "src", CHATML_TEMPLATE)
    else:
        folder = make_bpe_folder(root / "src", name)
    path = tokenizer_only_gguf(folder, root / "model.gguf")
    kind = "spm" if name in ("stories", "llama") else "bpe"
    return kind, folder, path


def _ours(path: Path):
    return tokenizer_from_gguf(gguf.GGUFReader(path), path)


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip("llama_cpp")


def _llama(llama_cpp, path: Path):
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


# --- ids -----------------------------------------------------------------------------------------------


def test_ids_equal_the_source_folder_and_transformers_gguf_tokenizer(case):
    from transformers import AutoTokenizer

    kind, folder, path = case
    ours, source = _ours(path), load_tokenizer(folder)
    theirs = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = TEXTS if kind == "spm" else TEXTS + PREFIX_TEXTS
    for text in texts:
        for add in (True, False):
            ids = ours.encode(text, add_special_tokens=add)
            assert ids == source.encode(text, add_special_tokens=add), (text, add)
            assert ids == theirs.encode(text, add_special_tokens=add), (text, add)
    assert (ours.bos_id, ours.add_bos, ours.vocab_size) == (source.bos_id, source.add_bos, source.vocab_size)
    assert source.eos_ids <= ours.eos_ids


def test_ids_equal_llama_cpp(case, llama_cpp):
    _, _, path = case
    ours, llm = _ours(path), _llama(llama_cpp, path)
    for text in TEXTS + PREFIX_TEXTS:
        for add in (True, False):
            expected = llm.tokenize(text.encode(), add_bos=add, special=True)
            assert ours.encode(text, add_special_tokens=add) == expected, (text, add)
    assert ours.bos_id == llm.token_bos() or not ours.add_bos
    assert llm.token_eos() in ours.eos_ids


def test_sentencepiece_prefix_follows_llama_cpp_fragment_by_fragment(tmp_path):
    """llama.cpp prefixes "▁" to each stretch of text between special tokens, leading spaces
    included: the ids are SentencePiece's own encoding of each stretch (add_dummy_prefix on)."""
    if not STORIES.is_dir():
        pytest.skip("shared stories260K model folder is absent")
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(STORIES / "tokenizer.model"))
    ours = _ours(tokenizer_only_gguf(STORIES, tmp_path / "stories.gguf"))
    for text in PREFIX_TEXTS + TEXTS:
        expected = [ours.bos_id]
        for piece in re.split(r"(<s>|</s>|<unk>)", text):
            if piece in ("<s>", "</s>", "<unk>"):
                expected.append(sp.piece_to_id(piece))
            elif piece:
                expected += sp.encode(piece)
        assert ours.encode(text) == expected, text


@pytest.mark.parametrize(
    "variant",
    [
        {"tokenizer.ggml.add_space_prefix": False},
        {"tokenizer.ggml.add_eos_token": True, "tokenizer.ggml.add_bos_token": False},
        {"added_tokens.json": {"<tool>": 512, "[a b]": 513}},
        {"added_tokens.json": {"<|user|>": 512, "<|end|>": 513, "<|endoftext|>": 514}, "general.name": "Phi-3 mini"},
    ],
    ids=["no-space-prefix", "eos-not-bos", "user-defined", "phi3-rstrip"],
)
def test_sentencepiece_options_match_llama_cpp(variant, tmp_path):
    """add_space_prefix off, EOS added instead of BOS, and user-defined tokens (added_tokens.json,
    which the converter types user-defined: matched whole, text after them prefixed like after a
    special token), against llama.cpp when it is installed and closed forms always."""
    if not STORIES.is_dir():
        pytest.skip("shared stories260K model folder is absent")
    folder = tmp_path / "stories"
    shutil.copytree(STORIES, folder)
    variant = dict(variant)
    added = variant.pop("added_tokens.json", None)
    if added:
        (folder / "added_tokens.json").write_text(json.dumps(added))
    path = tokenizer_only_gguf(folder, tmp_path / "variant.gguf", variant)
    ours = _ours(path)
    if importlib.util.find_spec("llama_cpp") is not None:
        import llama_cpp

        llm = _llama(llama_cpp, path)
        texts = [*TEXTS, *PREFIX_TEXTS, *(f"x{token} y{token}{token}\n z" for token in added or ())]
        for text in texts:
            for add in (True, False):
                expected = llm.tokenize(text.encode(), add_bos=add, special=True)
                assert ours.encode(text, add_special_tokens=add) == expected, (text, add)
    if "tokenizer.ggml.add_eos_token" in variant:
        assert ours.encode("hi") == [*ours.encode("hi", False), 2]
    if "tokenizer.ggml.add_space_prefix" in variant:  # the folder tokenizer with add_prefix_space false
        source = load_tokenizer(_no_prefix_copy(STORIES, tmp_path / "no-prefix"))
        for text in [*TEXTS, *PREFIX_TEXTS]:
            assert ours.encode(text) == source.encode(text), text
    if "[a b]" in (added or ()):
        assert _id(ours, "[a b]") == 513 and 513 not in ours.special_ids
    if "general.name" in variant:  # Phi-3: the whitespace after <|user|> goes, after <|endoftext|> stays
        assert ours.encode("<|user|>\n hi", False) == [512, *ours.encode("hi", False)]
        assert ours.encode("<|endoftext|>\n", False) == [514, *ours.encode("\n", False)]


def test_decode_round_trips(case):
    """Byte-level text always comes back; SentencePiece text does where no special token put a "▁"
    before the text after it (llama.cpp decodes "<s>Hi" to "<s> Hi" too: test_decode_matches_llama_cpp)."""
    kind, _, path = case
    ours = _ours(path)
    for text in TEXTS + PREFIX_TEXTS:
        ids = ours.encode(text, add_special_tokens=False)
        if kind == "bpe" or not ours.special_ids & set(ids):
            assert ours.decode(ids) == text, text


def test_decode_matches_llama_cpp(case, llama_cpp):
    """Against llama.cpp's pieces (llama_token_to_piece, what its generation prints) joined, less the
    one leading space a SentencePiece vocabulary strips (llama_detokenize's remove_space). Not
    llama_detokenize itself: for gpt-2/llama-bpe it also drops spaces before punctuation, which would
    not round trip, and transformers does not either."""
    kind, _, path = case
    ours, llm = _ours(path), _llama(llama_cpp, path)
    for text in TEXTS + PREFIX_TEXTS:
        ids = ours.encode(text)
        for skip in (True, False):
            pieces = b"".join(llm.detokenize([i], special=not skip) for i in ids).decode("utf-8")
            expected = pieces[1:] if kind == "spm" and pieces.startswith(" ") else pieces
            assert ours.decode(ids, skip_special_tokens=skip) == expected, (text, skip)


# --- metadata and chat template ------------------------------------------------------------------------


def test_chat_template_renders_as_transformers_renders_it(case):
    from transformers import AutoTokenizer

    _, folder, path = case
    reader = gguf.GGUFReader(path)
    source = chat_template_from_gguf(reader)
    if folder == STORIES:
        assert source is None
        return
    theirs = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    template = ChatTemplate.for_tokenizer(source, _ours(path))
    for add in (True, False):
        expected = theirs.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=add)
        assert template.render(MESSAGES, add_generation_prompt=add) == expected


def test_chat_prompt_and_its_ids_equal_llama_cpp(case, llama_cpp):
    """The prompt llama-cpp-python's chat formatter renders from the file's template, with llama.cpp's
    own BOS/EOS texts, and llama.cpp's ids for it. Files without a BOS id are left out: llama.cpp then
    takes id 11 as BOS (its old Falcon default), which tiankong does not copy."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    _, folder, path = case
    ours, llm = _ours(path), _llama(llama_cpp, path)
    source = chat_template_from_gguf(gguf.GGUFReader(path))
    if source is None or ours.bos_id is None:
        pytest.skip("no chat template or no BOS in this file")
    bos, eos = (llm.detokenize([i], special=True).decode() for i in (llm.token_bos(), llm.token_eos()))
    assert (bos, eos) == (ours.bos_token, ours.eos_token)
    prompt = Jinja2ChatFormatter(source, eos_token=eos, bos_token=bos)(messages=MESSAGES).prompt
    assert ChatTemplate.for_tokenizer(source, ours).render(MESSAGES) == prompt
    assert ours.encode(prompt, add_special_tokens=False) == llm.tokenize(prompt.encode(), add_bos=False, special=True)


def test_special_tokens_and_eos_ids(case):
    kind, folder, path = case
    ours = _ours(path)
    if kind == "spm":
        assert (ours.bos_token, ours.eos_token, ours.add_bos) == ("<s>", "</s>", True)
        assert {ours.id_to_piece(i) for i in ours.special_ids} >= {"<s>", "</s>", "<unk>"}
    else:
        # llama.cpp ends generation on these whatever the file's eos says
        assert {_id(ours, text) for text in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>")} - {None} <= ours.eos_ids
        assert _id(ours, "<think>") not in ours.special_ids  # user-defined: matched whole, kept when decoding
        assert ours.decode(ours.encode("<think>a"), skip_special_tokens=True) == "<think>a"
    check_token_ids(ours, ours.vocab_size, path)
    with pytest.raises(TokenizerError, match="embedding rows"):
        check_token_ids(ours, ours.vocab_size - 1, path)


def _id(tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 and tokenizer.id_to_piece(ids[0]) == text else None


@pytest.fixture(scope="module")
def unsplit_folder(tmp_path_factory) -> Path:
    return make_bpe_folder(tmp_path_factory.mktemp("unsplit"), "unsplit")


@pytest.mark.parametrize("name", sorted(PRE_TOKENIZERS))
def test_every_pre_tokenizer_splits_as_llama_cpp(name, unsplit_folder, tmp_path, llama_cpp):
    """Each tokenizer.ggml.pre row against llama.cpp, on a vocabulary whose merges cross every
    boundary some pre-tokenizer draws (so a wrong split changes the ids)."""
    overrides = {"tokenizer.ggml.pre": name, "tokenizer.ggml.add_bos_token": False}
    path = tokenizer_only_gguf(unsplit_folder, tmp_path / "pre.gguf", overrides)
    ours, llm = _ours(path), _llama(llama_cpp, path)
    for text in [SPLIT_TEXT, *TEXTS, *PREFIX_TEXTS]:
        assert ours.encode(text) == llm.tokenize(text.encode(), add_bos=False, special=True), text


def test_the_pre_tokenizer_rows_differ_on_the_split_text(unsplit_folder, tmp_path):
    """The test above can fail: the distinct rows give distinct ids on SPLIT_TEXT."""
    ids = set()
    rows = ("default", "gpt-2", "llama3", "qwen2", "smollm", "falcon", "tekken", "gpt-4o")
    for name in rows:
        overrides = {"tokenizer.ggml.pre": name, "tokenizer.ggml.add_bos_token": False}
        path = tokenizer_only_gguf(unsplit_folder, tmp_path / f"{name}.gguf", overrides)
        ids.add(tuple(_ours(path).encode(SPLIT_TEXT, add_special_tokens=False)))
    assert len(ids) == len(rows)


def test_llama3_rows_take_a_whole_word_found_in_the_vocabulary(tmp_path):
    """ignore_merges: "abc" is a token no merge reaches; Llama-3-style pre-tokenizers emit it whole."""
    tokens = {"tokenizer.ggml.tokens": ["<s>", "a", "b", "c", "ab", "abc"], "tokenizer.ggml.token_type": [3] + [1] * 5}
    for pre, expected in (("llama-bpe", [5]), ("gpt-2", [4, 3])):
        path = _write(tmp_path / f"{pre}.gguf", {**tokens, "tokenizer.ggml.pre": pre, "tokenizer.ggml.bos_token_id": 0})
        assert _ours(path).encode("abc", add_special_tokens=False) == expected
        if importlib.util.find_spec("llama_cpp") is not None:
            import llama_cpp

            assert _llama(llama_cpp, path).tokenize(b"abc", add_bos=False, special=True) == expected


# --- files written by llama.cpp's own converter --------------------------------------------------------

# llama.cpp's convert_hf_to_gguf.py is not on PyPI: a llama.cpp checkout (or the vendor/llama.cpp of
# llama-cpp-python's sdist) named by LLAMA_CPP_DIR, as in test_gguf.py.
CONVERTER = Path(os.environ.get("LLAMA_CPP_DIR", "/tmp/llama.cpp-convert")) / "convert_hf_to_gguf.py"
# --vocab-only for every folder in one process. The converter names a byte-level pre-tokenizer by a hash
# of a real model's output, which tiny tokenizers match none of: it is given gguf_vocab's name instead.
_RUN_CONVERTER = """
import json, runpy, sys
from pathlib import Path
root, tests, jobs = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
sys.path[:0] = [str(root / "gguf-py"), str(root), tests]
from conversion.base import TextModel
from gguf_vocab import _pre_name
def pre(self, tokenizer):
    return _pre_name(json.loads((self.dir_model / "tokenizer.json").read_text())["pre_tokenizer"])
TextModel.get_vocab_base_pre = pre
for outfile, folder in zip(jobs[::2], jobs[1::2]):
    sys.argv = [str(root / "convert_hf_to_gguf.py"), folder, "--outfile", outfile, "--vocab-only"]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""
CONVERTED = ["stories", "stories-no-prefix", "bytelevel", "qwen2", "llama-bpe", "smollm"]


@pytest.fixture(scope="module")
def converted(request, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (the converter's GGUF, gguf_vocab's GGUF) of the same tokenizer folder."""
    if not CONVERTER.is_file():
        pytest.skip(f"llama.cpp's converter is absent ({CONVERTER}; set LLAMA_CPP_DIR)")
    root = tmp_path_factory.mktemp("converted")
    folders = {}
    for name in CONVERTED:
        if name.startswith("stories"):
            if STORIES.is_dir():
                folders[name] = STORIES if name == "stories" else _no_prefix_copy(STORIES, root / name)
            continue
        if name == "bytelevel":
            folder = _with_template(request.getfixturevalue("bytelevel_folder"), root / name, CHATML_TEMPLATE)
        else:
            folder = make_bpe_folder(root / name, name)
        vocab = json.loads((folder / "tokenizer.json").read_text())
        size = 1 + max([*vocab["model"]["vocab"].values(), *(t["id"] for t in vocab["added_tokens"])])
        config = {"architectures": ["LlamaForCausalLM"], "vocab_size": size, "hidden_size": 64}
        config |= {"num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 128}
        (folder / "config.json").write_text(json.dumps(config))
        folders[name] = folder
    jobs = [str(arg) for name, folder in folders.items() for arg in (root / f"{name}.gguf", folder)]
    cmd = [sys.executable, "-c", _RUN_CONVERTER, str(CONVERTER.parent), str(Path(__file__).parent), *jobs]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"llama.cpp's converter failed here: {proc.stderr.strip().splitlines()[-1:]}")
    return {
        name: (root / f"{name}.gguf", tokenizer_only_gguf(folder, root / f"{name}-ours.gguf"))
        for name, folder in folders.items()
    }


@pytest.mark.parametrize("name", CONVERTED)
def test_the_converter_writes_the_vocabulary_gguf_vocab_writes(name, converted):
    """tests/gguf_vocab.py against convert_hf_to_gguf.py on the same folder: every tokenizer key
    equal, but add_bos/add_eos, which the converter's newer gguf-py also writes for a byte-level
    post-processor (as false, the default for these files)."""
    if name not in converted:
        pytest.skip("shared stories260K model folder is absent")
    theirs, ours = (_tokenizer_fields(path) for path in converted[name])
    flags = {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"}
    assert {k: v for k, v in theirs.items() if k not in flags} == {k: v for k, v in ours.items() if k not in flags}
    for key in flags & set(theirs) - set(ours):
        assert theirs[key] is False
    assert theirs.get("tokenizer.ggml.add_space_prefix") == (False if name == "stories-no-prefix" else None)


@pytest.mark.parametrize("name", CONVERTED)
def test_converter_files_tokenize_as_llama_cpp(name, converted, llama_cpp):
    if name not in converted:
        pytest.skip("shared stories260K model folder is absent")
    path = converted[name][0]
    ours, llm = _ours(path), _llama(llama_cpp, path)
    for text in [*TEXTS, *PREFIX_TEXTS, SPLIT_TEXT]:
        for add in (True, False):
            assert ours.encode(text, add_special_tokens=add) == llm.tokenize(text.encode(), add_bos=add, special=True)


def _no_prefix_copy(source: Path, folder: Path) -> Path:
    """A copy of a SentencePiece folder whose tokenizer_config.json turns the "▁" prefix off."""
    shutil.copytree(source, folder)
    config_path = folder / "tokenizer_config.json"
    config_path.chmod(0o644)
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "add_prefix_space": False}))
    return folder


def _tokenizer_fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer.")}


# --- hostile metadata ----------------------------------------------------------------------------------

_TOKENS = ["<unk>", "<s>", "</s>", "a", "b", "ab"]


def _write(path: Path, overrides: dict | None = None) -> Path:
    """A tokenizer-only GGUF from raw field values; a value of None leaves the key out."""
    writer = gguf.GGUFWriter(path, "llama")
    base = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": _TOKENS,
        "tokenizer.ggml.token_type": [3, 3, 3, 1, 1, 1],
        "tokenizer.ggml.merges": ["a b"],
    }
    set_fields(writer, {**base, **(overrides or {})})
    return finish(writer)


def test_a_well_formed_minimal_file_loads(tmp_path):
    tok = _ours(_write(tmp_path / "ok.gguf"))
    assert tok.encode("abab</s>", add_special_tokens=False) == [5, 5, 2]


def test_a_few_empty_tokens_load_as_llama_cpp_names_them(tmp_path):
    tokens = ["<s>", "</s>", "", "a", "b", "ab"]  # an unused slot left empty, as real files have
    tok = _ours(_write(tmp_path / "one_empty.gguf", {"tokenizer.ggml.tokens": tokens}))
    assert tok.id_to_piece(2) == "[EMPTY_2]"
    assert tok.encode("abab", add_special_tokens=False) == [5, 5]


def test_chat_template_absent_empty_too_large_or_not_a_string(tmp_path, monkeypatch):
    import tiankong.engine.gguf_tokenizer as module

    def template(value):
        return chat_template_from_gguf(gguf.GGUFReader(_write(tmp_path / "t.gguf", {"tokenizer.chat_template": value})))

    assert template(None) is None and template(" \n") is None
    assert template("{{ bos_token }}") == "{{ bos_token }}"
    with pytest.raises(TokenizerError, match="tokenizer.chat_template is an array of int32, not a string"):
        template([1, 2])
    monkeypatch.setattr(module, "TEMPLATE_FILE_MAX_BYTES", 10)
    with pytest.raises(TokenizerError, match="tokenizer.chat_template is 15 bytes, at most 10"):
        template("{{ bos_token }}")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tokenizer.ggml.tokens": None}, "has no tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.merges": None}, "has no tokenizer.ggml.merges"),
        ({"tokenizer.ggml.tokens": [1, 2, 3]}, "tokenizer.ggml.tokens is an array of int32, not an array of string"),
        ({"tokenizer.ggml.model": None}, "has no tokenizer.ggml.model"),
        ({"tokenizer.ggml.token_type": [1, 1]}, "token_type has 2 entries for 6 tokens"),
        ({"tokenizer.ggml.token_type": [1, 1, 1, 1, 1, 99]}, "outside 0..6"),
        ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.scores": [0.0] * 5}, "scores has 5 entries"),
        ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.scores": [float("nan")] * 6}, "NaN"),
        ({"tokenizer.ggml.tokens": ["a", "b", "a"], "tokenizer.ggml.token_type": None}, "appears twice"),
        # Every token "": every text became BOS alone (llama.cpp names an empty token [EMPTY_i] and goes on).
        ({"tokenizer.ggml.tokens": [""] * 6}, "6 of the 6 tokens in tokenizer.ggml.tokens are empty strings"),
        ({"tokenizer.ggml.tokens": ["", "", "", "", "a", "b"]}, "4 of the 6 tokens"),
        ({"tokenizer.ggml.tokens": ["x" * 5000], "tokenizer.ggml.token_type": None}, "5,000-byte entry"),
        ({"tokenizer.ggml.merges": ["a c"]}, "merge 0"),
        ({"tokenizer.ggml.merges": ["ab"]}, "merge 0"),
        ({"tokenizer.ggml.eos_token_id": 600}, "eos_token_id is 600, outside the vocabulary of 6"),
        ({"tokenizer.ggml.pre": "no-such-pre"}, "'no-such-pre' is not a pre-tokenizer"),
        ({"tokenizer.ggml.model": "bert"}, "tokenizer.ggml.model is 'bert'"),
        ({"tokenizer.ggml.model": "m" * 10_000}, "10,000 bytes"),
        ({"tokenizer.ggml.add_bos_token": True}, "add_bos_token is true but the file names no bos"),
        ({"tokenizer.ggml.add_bos_token": 1}, "add_bos_token is a uint32, not a bool"),
    ],
)
def test_hostile_metadata_is_one_line(tmp_path, fields, message):
    path = _write(tmp_path / "bad.gguf", fields)
    with pytest.raises(TokenizerError) as error:
        _ours(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("ceiling", "value", "message"),
    [
        ("MAX_TOKENS", 4, "tokenizer.ggml.tokens has 6 entries, at most 4"),
        ("MAX_VOCAB_BYTES", 8, "tokenizer.ggml.tokens holds 16 bytes, at most 8"),
        ("MAX_MERGES", 0, "tokenizer.ggml.merges has 1 entries, at most 0"),
    ],
)
def test_counts_and_sizes_past_the_ceilings_are_refused_before_building(tmp_path, monkeypatch, ceiling, value, message):
    """The ceilings (a million tokens, 64 MB of token text, two million merges) lowered to this file."""
    import tiankong.engine.gguf_tokenizer as module

    monkeypatch.setattr(module, ceiling, value)
    with pytest.raises(TokenizerError, match=re.escape(message)):
        _ours(_write(tmp_path / "big.gguf"))


def test_non_utf8_tokens_and_long_sentencepiece_pieces_are_refused(tmp_path):
    no_types = {"tokenizer.ggml.token_type": None}
    path = _write(tmp_path / "bytes.gguf", {"tokenizer.ggml.tokens": [b"\xff\xfe", b"a"], **no_types})
    with pytest.raises(TokenizerError, match="not UTF-8"):
        _ours(path)
    # 100 pieces of 2,000 characters: deriving merges would cut each at every position (4e8 steps).
    long = [f"{i:03d}" + "x" * 1997 for i in range(100)]
    path = _write(tmp_path / "long.gguf", {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": long, **no_types})
    with pytest.raises(TokenizerError, match="too long to derive merges"):
        _ours(path)
