"""Hostile model folders (issue 16): each case runs the real CLI and ends with exit code 2 and one
stderr line naming the file or field, never a traceback or a hang, within a bounded time.

Every folder is a copy of the real stories260K checkpoint with one thing broken.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from helpers import cli, deadline, tiankong
from tiny_models import STORIES

pytestmark = pytest.mark.skipif(not STORIES.exists(), reason="../shared is absent")
SECRET = "TOP SECRET: the key to everything"
DEEP = "[" * 100_000 + "]" * 100_000


def in_process(monkeypatch, capsys, *args):
    """The real CLI entry point in-process (a subprocess costs seconds): (exit code, stderr lines)."""
    code, _, err = cli(monkeypatch, capsys, *args)
    return code, err.strip().splitlines()


def assert_one_line(code, lines, *words):
    lines = [x for x in lines if not x.startswith("loading ")]  # generate's log line before the load
    assert "Traceback" not in "\n".join(lines)
    assert code == 2, lines
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def folder(tmp_path):
    return shutil.copytree(STORIES, tmp_path / "model")


# --- ways to break a folder ------------------------------------------------------------------------


def edit(name, **changes):
    def apply(folder):
        path = folder / name
        data = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**data, **changes}))  # NaN and Infinity are written as such

    return apply


def write(name, text):
    def apply(folder):
        (folder / name).write_text(text)

    return apply


def link_out(name):
    """`name` becomes a link to a secret file beside the folder."""

    def apply(folder):
        secret = folder.parent / f"secret-{name}"
        secret.write_text(SECRET)
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(secret)

    return apply


def fifo(name):
    def apply(folder):
        (folder / name).unlink(missing_ok=True)
        os.mkfifo(folder / name)

    return apply


def index(content):
    """Sharded instead of single: model.safetensors moves to a shard, the index says `content`."""

    def apply(folder):
        (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
        (folder / "model.safetensors.index.json").write_text(
            content if isinstance(content, str) else json.dumps(content)
        )

    return apply


def pickled(make, **save_options):
    """The weights become pytorch_model.bin holding make(the checkpoint's tensors)."""

    def apply(folder):
        import torch
        from safetensors.torch import load_file

        torch.save(make(load_file(folder / "model.safetensors")), folder / "pytorch_model.bin", **save_options)
        (folder / "model.safetensors").unlink()

    return apply


def extra_tensor(name):
    """model.safetensors gains a tensor called `name`."""

    def apply(folder):
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(folder / "model.safetensors")
        save_file({**tensors, name: torch.zeros(64)}, folder / "model.safetensors")

    return apply


def wordlevel_without_unk(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, **{f"w{i}": i for i in range(4, 512)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[NONE]"))  # not in the vocabulary: "zzz" has no id
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))


# --- config.json values ----------------------------------------------------------------------------

BAD_VALUES = [
    ("hidden_size", "64"),
    ("hidden_size", [64]),
    ("hidden_size", -64),
    ("hidden_size", True),
    ("hidden_size", 60),  # not divisible by 8 heads
    ("vocab_size", None),
    ("vocab_size", 10**30),
    ("vocab_size", 600),  # 600: not the embedding's 512 rows
    ("intermediate_size", float("inf")),
    ("intermediate_size", 0),
    ("num_attention_heads", 0),
    ("num_attention_heads", float("nan")),
    ("num_key_value_heads", 3),
    ("num_key_value_heads", -4),
    ("max_position_embeddings", "512"),
    ("max_position_embeddings", 10**40),
    ("rope_theta", 0),
    ("rope_theta", float("nan")),
    ("rope_theta", "1e4"),
    ("rope_theta", float("-inf")),
    ("sliding_window", "x"),
    ("rms_norm_eps", -1),
    ("rms_norm_eps", float("inf")),
    ("rms_norm_eps", None),
    ("rope_scaling", "linear"),
    ("rope_scaling", [1, 2]),
    ("rope_scaling", {"rope_type": "linear", "factor": 0}),
    ("rope_scaling", {"rope_type": "linear", "factor": float("nan")}),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8, "low_freq_factor": 2, "high_freq_factor": 2}),
    ("architectures", 5),
    ("architectures", [5]),
    ("model_type", ["llama"]),
]


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[f"{k}={str(v)[:12]}" for k, v in BAD_VALUES])
def test_bad_config_value_is_one_line(folder, key, value, monkeypatch, capsys):
    edit("config.json", **{key: value})(folder)
    code, lines = in_process(monkeypatch, capsys, "info", "-m", folder)
    assert_one_line(code, lines, "config.json")
    assert key in lines[0] or (key == "vocab_size" and "embed_tokens" in lines[0]), lines[0]


@pytest.mark.parametrize("layers", [10**6, 4000])
def test_absurd_layer_count_fails_fast(folder, layers):
    # 10**6 is out of range; 4000 is in range but not the checkpoint's 5: caught from the headers,
    # before 4000 layers of modules are built.
    edit("config.json", num_hidden_layers=layers)(folder)
    code, lines, seconds = tiankong("info", "-m", folder)
    assert_one_line(code, lines, "num_hidden_layers")
    assert seconds < 20  # building 4000 layers first took minutes


# --- files: links out, FIFOs, deep JSON, bad shard indexes, tokenizer settings ---------------------

FOLDERS = {
    "link-added_tokens": (link_out("added_tokens.json"), "added_tokens.json"),
    "link-tokenizer.json": (link_out("tokenizer.json"), "tokenizer.json"),
    "link-tokenizer.model": (link_out("tokenizer.model"), "tokenizer.model"),
    "link-config": (link_out("config.json"), "config.json"),
    "link-weights": (link_out("model.safetensors"), "model.safetensors"),
    "fifo-weights": (fifo("model.safetensors"), "model.safetensors"),
    "fifo-config": (fifo("config.json"), "config.json"),
    "fifo-tokenizer_config": (fifo("tokenizer_config.json"), "tokenizer_config.json"),
    "deep-config": (write("config.json", DEEP), "config.json"),
    "deep-generation_config": (write("generation_config.json", DEEP), "generation_config.json"),
    "deep-tokenizer_config": (write("tokenizer_config.json", DEEP), "tokenizer_config.json"),
    "deep-special_tokens_map": (write("special_tokens_map.json", DEEP), "special_tokens_map.json"),
    "deep-index": (index(DEEP), "model.safetensors.index.json"),
    "deep-tokenizer.json": (write("tokenizer.json", '{"model": ' + DEEP + "}"), "tokenizer.json"),
    "config-not-object": (write("config.json", "[1, 2]"), "config.json"),
    "config-5000-digit-int": (write("config.json", '{"hidden_size": 1' + "0" * 5000 + "}"), "number too long"),
    "index-weight_map-list": (index({"weight_map": ["a", "b"]}), "weight_map"),
    "index-weight_map-ints": (index({"weight_map": {"model.norm.weight": 1}}), "weight_map"),
    "index-no-weight_map": (index({"metadata": {}}), "weight_map"),
    "index-shard-dotdot": (index({"weight_map": {"x": "../model/model-00001-of-00001.safetensors"}}), "shard"),
    "index-shard-absolute": (index({"weight_map": {"x": "/etc/passwd"}}), "shard"),
    "index-shard-missing": (index({"weight_map": {"x": "model-00002-of-00002.safetensors"}}), "missing"),
    "bin-list": (pickled(lambda sd: [1, 2]), "holds a list, not a dict of tensors"),
    "bin-tensor": (pickled(lambda sd: next(iter(sd.values()))), "holds a Tensor, not a dict of tensors"),
    "bin-nested": (pickled(lambda sd: {"state_dict": sd}), "entry 'state_dict' is a dict, not a dict of tensors"),
    "bin-int-entry": (pickled(lambda sd: {**sd, "step": 5}), "entry 'step' is an int, not a dict of tensors"),
    "bin-int-key": (pickled(lambda sd: {**sd, 5: sd["model.norm.weight"]}), "the key 5 (an int)"),
    "index-shard-empty-name": (index({"weight_map": {"model.norm.weight": ""}}), "empty shard file name"),
    "index-weight_map-empty": (index({"weight_map": {}}), "weight_map is empty"),
    "layer-100000": (extra_tensor("model.layers.100000.input_layernorm.weight"), "inconsistent"),
    "tensor-name-100000-chars": (extra_tensor("\x1b[2J" + "x" * 100_000), "does not use: [2Jxxx"),
    "added_tokens_decoder-list": (edit("tokenizer_config.json", added_tokens_decoder=[1]), "added_tokens_decoder"),
    "additional_special_tokens-int": (
        edit("tokenizer_config.json", additional_special_tokens=5),
        "additional_special_tokens",
    ),
    "added_tokens.json-values": (write("added_tokens.json", '{"<x>": "y"}'), "added_tokens.json"),
    "token-beyond-embedding": (edit("tokenizer_config.json", additional_special_tokens=["<extra_0>"]), "512"),
    "generation-eos-beyond-embedding": (edit("generation_config.json", eos_token_id=[2, 10**6]), "1000000"),
}


@pytest.mark.parametrize("case", list(FOLDERS))
def test_hostile_folder_is_one_line(folder, case, monkeypatch, capsys):
    mutate, word = FOLDERS[case]
    mutate(folder)
    with deadline(20):  # a FIFO opened by mistake would wait for a writer forever
        code, lines = in_process(monkeypatch, capsys, "info", "-m", folder)
    assert_one_line(code, lines, word)
    assert SECRET not in lines[0]
    # Stranger text is quoted at most ~200 characters long; no suggestion names an absurd value.
    assert len(lines[0]) < 1000 and "100001" not in lines[0] and "to 0 " not in lines[0]


def test_legacy_format_pytorch_bin_loads(folder):
    """torch.save(_use_new_zipfile_serialization=False) cannot be memory-mapped but is safe to read."""
    import torch

    from tiankong.engine.model import load_model

    pickled(lambda sd: sd, _use_new_zipfile_serialization=False)(folder)
    model, _ = load_model(folder, device="cpu", dtype="float32")
    reference, _ = load_model(STORIES, device="cpu", dtype="float32")
    tokens = torch.tensor([[1, 5, 9, 20]])
    positions = torch.arange(4)[None]
    assert torch.equal(model(tokens, positions), reference(tokens, positions))


def test_wordlevel_without_unk_on_unknown_text(folder):
    wordlevel_without_unk(folder)
    code, lines, _ = tiankong("generate", "-m", folder, "--raw", "--prompt", "a zzz", "--max-new-tokens", 2)
    assert_one_line(code, lines, "zzz")


def test_generate_refuses_fifo_weights_without_hanging(folder):
    fifo("model.safetensors")(folder)
    code, lines, _ = tiankong("generate", "-m", folder, "--raw", "--prompt", "x", "--max-new-tokens", 2)
    assert_one_line(code, lines, "FIFO")


def test_training_output_never_gets_a_linked_secret(folder, tmp_path):
    from tiankong.engine.errors import ModelLoadError
    from tiankong.engine.model import load_model, save_pretrained

    model, cfg = load_model(STORIES, device="cpu", dtype="float32")
    link_out("added_tokens.json")(folder)
    out = tmp_path / "run"
    with pytest.raises(ModelLoadError, match="added_tokens.json"):
        save_pretrained(model, cfg, out, tokenizer_from=folder)
    assert not (out / "added_tokens.json").exists()
    assert all(SECRET not in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())


def test_hf_cache_layout_loads(tmp_path):
    """snapshots/<rev>/<file> -> ../../blobs/<sha>: links that stay inside the cached repository."""
    repo = tmp_path / "models--tiny--stories"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for i, src in enumerate(sorted(STORIES.iterdir())):
        shutil.copyfile(src, repo / "blobs" / f"blob{i}")
        (snap / src.name).symlink_to(f"../../blobs/blob{i}")
    code, lines, _ = tiankong("info", "-m", snap, "--format", "json")
    assert code == 0, lines


def cache_repo_with_link(tmp_path, repo_name, marks, target):
    """A copy of stories260K as snapshots/evil in `repo_name` (with `marks`: blobs, refs), whose
    added_tokens.json links to `target` (relative to the repository) holding a secret."""
    repo = tmp_path / repo_name
    for mark in marks:
        (repo / mark).mkdir(parents=True)
    snap = shutil.copytree(STORIES, repo / "snapshots" / "evil")
    (repo / target).parent.mkdir(parents=True, exist_ok=True)
    (repo / target).write_text(json.dumps({SECRET: 1}))
    (snap / "added_tokens.json").symlink_to(f"../../{target}")
    return snap


@pytest.mark.parametrize(
    "repo_name,marks,target",
    [
        ("models--evil--model", ("blobs", "refs"), ".ssh/id_rsa_like.json"),  # a real cache, a link beside blobs/
        ("home", ("blobs",), ".ssh/id_rsa_like.json"),  # only a parent named snapshots
        ("home", (), "blobs/id_rsa_like.json"),  # not a cache repo: blobs/ is no exception
    ],
    ids=["cache-repo-outside-blobs", "snapshots-parent", "fake-blobs"],
)
def test_a_snapshot_may_link_only_into_its_cache_blobs(tmp_path, repo_name, marks, target, monkeypatch, capsys):
    from tiankong.engine.errors import ModelLoadError
    from tiankong.engine.model import load_model, save_pretrained

    snap = cache_repo_with_link(tmp_path, repo_name, marks, target)
    code, lines = in_process(monkeypatch, capsys, "info", "-m", snap)
    assert_one_line(code, lines, "added_tokens.json", "outside the model folder")
    model, cfg = load_model(STORIES, device="cpu", dtype="float32")
    out = tmp_path / "run"
    with pytest.raises(ModelLoadError, match="outside the model folder"):
        save_pretrained(model, cfg, out, tokenizer_from=snap)
    assert all(SECRET not in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())


def replace_bomb(folder):
    """A normalizer that turns every "a" into 1000 characters: a prompt of a's would become gigabytes."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, **{f"w{i}": i for i in range(4, 512)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace("a", "b" * 1000)])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))


def test_a_normalizer_that_multiplies_the_text_is_refused_at_load(folder):
    replace_bomb(folder)
    code, lines, _ = tiankong("generate", "-m", folder, "--raw", "--prompt", "a" * 1000, "--max-new-tokens", 2)
    assert_one_line(code, lines, "Replace normalizer")


def regex_bomb(folder):
    """A pre-tokenizer regex with nested quantifiers: exponential backtracking on "aaa...b"."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, **{f"w{i}": i for i in range(4, 512)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+$"), behavior="isolated")
    tok.save(str(folder / "tokenizer.json"))


def test_a_catastrophic_pre_tokenizer_regex_is_refused_at_load(folder):
    """Refused before any text runs into it: at encode time the regex engine panics inside Rust,
    which prints a panic report on stderr whatever Python does with the error."""
    regex_bomb(folder)
    code, lines, _ = tiankong("generate", "-m", folder, "--raw", "--prompt", "a" * 40 + "b", "--max-new-tokens", 2)
    assert_one_line(code, lines, "nests quantifiers")


# --- second QA pass: names written in files, dtypes, file sizes, special-token values ---------------


def header_dtype(tensor, dtype):
    """model.safetensors' header says `tensor` is `dtype`; its bytes (float32) stay, so sizes still fit."""

    def apply(folder):
        import struct

        data = (folder / "model.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        header[tensor]["dtype"] = dtype
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])

    return apply


def int_weight(sd):
    import torch

    return {**sd, "model.norm.weight": sd["model.norm.weight"].view(torch.int32)}


def padded(name, megabytes):
    """`name` becomes a valid JSON object of `megabytes` MB (a long junk string)."""
    return write(name, json.dumps({"junk": "x" * (megabytes << 20)}))


def tokenizer_json(change):
    """The folder gains a tokenizer.json (ours, written from tokenizer.model), changed by `change`."""

    def apply(folder):
        from tiankong.engine.tokenizer import load_tokenizer

        spec = json.loads(load_tokenizer(STORIES).to_json())
        change(spec)
        (folder / "tokenizer.json").write_text(json.dumps(spec))

    return apply


def added_token(id, content):
    """An added_tokens entry of tokenizer.json, every field given (the tokenizers library wants them all)."""
    flags = dict.fromkeys(("single_word", "lstrip", "rstrip", "normalized"), False)
    return {"id": id, "content": content, **flags, "special": True}


def added_token_id(spec):
    spec["added_tokens"].append(added_token(99999, "<big>"))


def vocab_gap(spec):
    spec["model"]["vocab"]["zzz"] = 700


def vocab_repeat(spec):
    spec["model"]["vocab"]["zzz"] = 5


QA2_FOLDERS = {
    # item 2: a NUL byte gets the line of every other bad shard name, the NUL shown escaped (JSON)
    "index-shard-nul": (index({"weight_map": {"model.norm.weight": "a\0b"}}), 'shard "a\\u0000b" is not a file name'),
    # A newline was dropped from the name shown ("shard ab ... is missing" for "a\nb").
    "index-shard-newline": (index({"weight_map": {"model.norm.weight": "a\nb"}}), 'shard "a\\nb" listed in'),
    # item 3: a float weight whose file says it holds integers
    "dtype-I32": (
        header_dtype("model.embed_tokens.weight", "I32"),
        "model.embed_tokens.weight in model.safetensors is I32",
    ),
    "dtype-U32-norm": (header_dtype("model.norm.weight", "U32"), "model.norm.weight in model.safetensors is U32"),
    "bin-int32-weight": (pickled(int_weight), "model.norm.weight in pytorch_model.bin is int32"),
    # item 4: each small JSON file has a cap of its kind, checked before parsing
    "config-5MB": (padded("config.json", 5), "config.json is larger than 4 MB"),
    "generation_config-2MB": (padded("generation_config.json", 2), "generation_config.json is larger than 1 MB"),
    "tokenizer_config-17MB": (padded("tokenizer_config.json", 17), "tokenizer_config.json is larger than 16 MB"),
    "index-33MB": (index(json.dumps({"junk": "x" * (33 << 20)})), "index.json is larger than 32 MB"),
    # item 6: ids as the file writes them; a junk template list says what a template list is
    "added-token-id-99999": (tokenizer_json(added_token_id), "'<big>' has id 99999 in tokenizer.json"),
    "vocab-id-700": (tokenizer_json(vocab_gap), "'zzz' has id 700 in tokenizer.json"),
    "vocab-repeated-id": (tokenizer_json(vocab_repeat), "'<0x02>' and 'zzz' both have id 5"),
    "chat_template-ints": (
        edit("tokenizer_config.json", chat_template=[1, 2, 3]),
        '"chat_template" must be a string or a list of {"name": ..., "template": ...} objects, not [1, 2, 3]',
    ),
}
# item 7: special-token values that are no token, refused like -1 and 99999 already were
for value in ("</s>", True, 2.5, [[2]], [2, None]):
    QA2_FOLDERS[f"eos_token_id-{json.dumps(value)}"] = (
        edit("generation_config.json", eos_token_id=value),
        f"generation_config.json: eos_token_id {json.dumps(value)} is not a token id",
    )
for value in (["<s>"], {"foo": 1}, 1):
    QA2_FOLDERS[f"bos_token-{json.dumps(value)}"] = (
        edit("special_tokens_map.json", bos_token=value),
        f'special_tokens_map.json: bos_token must be a token: a string, or {{"content": "..."}} '
        f"as transformers saves it, not {json.dumps(value)}",
    )
QA2_FOLDERS["eos_token-not-in-vocabulary"] = (
    edit("tokenizer_config.json", eos_token="<|im_end|>"),
    "tokenizer_config.json: eos_token '<|im_end|>' is not a token of the vocabulary",
)


@pytest.mark.parametrize("case", list(QA2_FOLDERS))
def test_hostile_folder_second_pass_is_one_line(folder, case, monkeypatch, capsys):
    mutate, word = QA2_FOLDERS[case]
    mutate(folder)
    with deadline(20):
        code, lines = in_process(monkeypatch, capsys, "info", "-m", folder)
    assert_one_line(code, lines, word)
    assert len(lines[0]) < 1000


def test_an_integer_weight_is_refused_by_generate_too(folder):
    header_dtype("model.embed_tokens.weight", "I32")(folder)
    code, lines, _ = tiankong("generate", "-m", folder, "--raw", "--prompt", "Once", "--max-new-tokens", 2)
    assert_one_line(code, lines, "model.embed_tokens.weight in model.safetensors is I32")


REAL_SETTINGS = {
    # what real checkpoints ship, which must still load
    "eos-list": {"generation_config.json": {"eos_token_id": [2, 1], "bos_token_id": 1, "pad_token_id": None}},
    "eos-null": {"generation_config.json": {"eos_token_id": None}},
    "pad-minus-one": {"config.json": {"pad_token_id": -1}},
    "added-token-dicts": {
        "special_tokens_map.json": {"bos_token": {"content": "<s>", "lstrip": False}, "eos_token": None},
        "tokenizer_config.json": {"eos_token": {"content": "</s>", "__type": "AddedToken"}, "pad_token": None},
    },
}


@pytest.mark.parametrize("case", list(REAL_SETTINGS))
def test_real_special_token_settings_load(folder, case, monkeypatch, capsys):
    for name, changes in REAL_SETTINGS[case].items():
        edit(name, **changes)(folder)
    code, lines = in_process(monkeypatch, capsys, "info", "-m", folder)
    assert code == 0, lines


def test_an_eos_token_from_tokenizer_json_added_tokens_is_known(folder, monkeypatch, capsys):
    # "<|im_end|>" takes the place of a byte piece no merge uses (a row of the embedding), as an added token
    def replace_piece(spec):
        vocab = spec["model"]["vocab"]
        row = vocab.pop("<0x7F>")
        vocab["<|im_end|>"] = row
        spec["added_tokens"].append(added_token(row, "<|im_end|>"))

    tokenizer_json(replace_piece)(folder)
    edit("tokenizer_config.json", eos_token="<|im_end|>")(folder)
    edit("special_tokens_map.json", eos_token="<|im_end|>")(folder)
    code, lines = in_process(monkeypatch, capsys, "info", "-m", folder, "--format", "json")
    assert code == 0, lines


# --- third pass: vocabularies whose ids lie, post-processors naming no token, a huge tokenizer.json ---


def vocab_shared_ids(spec):
    for token in list(spec["model"]["vocab"])[3:]:  # every entry past the third: id 5
        spec["model"]["vocab"][token] = 5


def vocab_id_past_rows(spec):
    spec["model"]["vocab"]["▁Once"] = 1_000_000


def post_processor_unknown_token(spec):
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<evil>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [],
        "special_tokens": {},
    }


QA3_FOLDERS = {
    # "Once upon a" became 2 tokens, and the model generated from them
    "vocab-shared-ids": (
        tokenizer_json(vocab_shared_ids),
        "tokenizer.json: '!' and '\"' both have id 5 in its vocabulary (509 tokens share an id)",
    ),
    # info passed; generate blamed the prompt ("pass token ids from eng.encode(text)")
    "vocab-id-1000000": (
        tokenizer_json(vocab_id_past_rows),
        "'▁Once' has id 1000000 in tokenizer.json, beyond the model's 512 embedding rows",
    ),
    # a Rust panic report, then "cannot encode 'a' ... fix its unk_token, pre-tokenizer regex"
    "post-processor-unknown-token": (
        tokenizer_json(post_processor_unknown_token),
        "tokenizer.json: the post_processor's 'single' template places the special token '<evil>', "
        "which its special_tokens does not define",
    ),
    # parsed, and refused as a JSON syntax error; real ones are up to ~35 MB
    "tokenizer.json-65MB": (padded("tokenizer.json", 65), "tokenizer.json is larger than 64 MB"),
}


@pytest.mark.parametrize("command", ["info", "tokenize"])
@pytest.mark.parametrize("case", list(QA3_FOLDERS))
def test_hostile_tokenizer_third_pass_is_one_line(folder, case, command, monkeypatch, capsys):
    mutate, word = QA3_FOLDERS[case]
    mutate(folder)
    text = ["Once upon a"] if command == "tokenize" else []
    with deadline(20):
        code, lines = in_process(monkeypatch, capsys, command, "-m", folder, *text)
    assert_one_line(code, lines, word)


def test_a_vocabulary_past_the_rows_is_named_without_parsing_tokenizer_json_again(folder, monkeypatch, capsys):
    # A 2M-entry vocabulary took 21.6 s and 1.38 GB to be refused, most of it a second parse in Python.
    import tiankong.engine.tokenizer as module

    def refuse(_folder):
        raise AssertionError("tokenizer.json parsed a second time")

    tokenizer_json(vocab_id_past_rows)(folder)
    monkeypatch.setattr(module, "_written_ids", refuse)
    code, lines = in_process(monkeypatch, capsys, "info", "-m", folder)
    assert_one_line(code, lines, "'▁Once' has id 1000000 in tokenizer.json")


def test_a_post_processor_without_its_token_prints_no_panic(folder):
    tokenizer_json(post_processor_unknown_token)(folder)
    code, lines, _ = tiankong("tokenize", "-m", folder, "a")
    assert_one_line(code, lines, "post_processor's 'single' template places the special token '<evil>'")


def test_a_config_of_null_is_named_as_not_an_object(folder, monkeypatch, capsys):
    # Was "unsupported architecture (none given)", as though the file had no "architectures".
    write("config.json", "null")(folder)
    code, lines = in_process(monkeypatch, capsys, "info", "-m", folder)
    assert_one_line(code, lines, f"{folder / 'config.json'} should hold a JSON object, not null; fix or re-copy")


def test_a_checkpoint_dtype_torch_does_not_know_is_marked(folder, monkeypatch, capsys):
    edit("config.json", torch_dtype="float128")(folder)
    code, out, err = cli(monkeypatch, capsys, "info", "-m", folder, "--format", "json")
    assert code == 0, err
    facts = json.loads(out)
    assert facts["checkpoint_dtype"] == "float128 (not a dtype torch knows; each weight's own type is used)"
    assert facts["dtype"] == "float32"


def test_a_folder_named_like_weights_weighs_nothing(folder):
    # "loading model (4.1 KB)…" for a model.safetensors that is a folder: its directory entry's size
    from tiankong.engine.model_list import weight_bytes

    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").mkdir()
    assert weight_bytes(folder) == 0
