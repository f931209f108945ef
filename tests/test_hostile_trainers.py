"""Hostile inputs to the trainers and to generation sizes: one line, exit code 2, nothing half-written.

Each case runs the real CLI in-process (`helpers.cli`) on a tiny model and asserts exit code 2,
exactly one stderr line that names the problem, and no traceback.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest
from helpers import cli, one_thread  # noqa: F401 (autouse)
from tiny_models import make_model

from tiankong.trainers import checkpoint as ckpt

CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("hostile-llama"), "llama")


def sft(llama_dir, data, out, *extra):
    return [
        "train",
        "sft",
        "--model",
        llama_dir,
        "--data",
        data,
        "--output",
        out,
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]


def one_line_error(code, err, *needles):
    # --no-progress keeps the run's record lines (auto settings, the data summary): not errors; nor is
    # generate's log line before the load
    records = ("auto settings for", "held out")
    lines = [x for x in err.strip().splitlines() if not any(r in x for r in records) and not x.startswith("loading ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


BAD_ROWS = {
    "deep": ("[" * 100_000 + "]" * 100_000, ["line 2", "nested too deeply"]),
    "surrogate": (
        json.dumps({"messages": [{"role": "user", "content": "\ud800"}, {"role": "assistant", "content": "x"}]}),
        ["line 2", "surrogate"],
    ),
    "huge int": ('{"messages": ' + "9" * 5000 + "}", ["line 2"]),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_training_rows_are_one_line_naming_the_line(llama_dir, tmp_path, monkeypatch, capsys, case):
    row, needles = BAD_ROWS[case]
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(CHAT) + "\n" + row + "\n", encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, *sft(llama_dir, data, tmp_path / "out"))
    one_line_error(code, err, str(data), *needles)


@pytest.mark.parametrize(
    "toml,needle",
    [
        ('steps = "abc"', "steps must be int"),
        ("lr = nan", "lr must be a finite"),
        ("batch_size = true", "batch_size must be int"),
        ("lr = [1, 2]", "lr must be float"),
    ],
)
def test_config_values_of_the_wrong_type(llama_dir, tmp_path, monkeypatch, capsys, toml, needle):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(CHAT) + "\n")
    config = tmp_path / "bad.toml"
    config.write_text(toml + "\n")
    code, _, err = cli(monkeypatch, capsys, *sft(llama_dir, data, tmp_path / "out", "--config", config))
    one_line_error(code, err, str(config), needle)


def test_output_that_is_a_file(llama_dir, tmp_path, monkeypatch, capsys):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(CHAT) + "\n")
    (tmp_path / "out").write_text("not a folder")
    code, _, err = cli(monkeypatch, capsys, *sft(llama_dir, data, tmp_path / "out"))
    one_line_error(code, err, "is a file")
    assert (tmp_path / "out").read_text() == "not a folder"


@pytest.mark.parametrize("limit,needle", [(0, "cannot write into --output"), (40_000, "cannot write a checkpoint")])
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(llama_dir, tmp_path, limit, needle):
    """RLIMIT_FSIZE stands in for a full disk (EFBIG, as ENOSPC would): at 0 bytes nothing can be
    written and the run refuses before training; at 40 kB the metrics fit but no checkpoint does."""
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(CHAT) + "\n")
    out = tmp_path / "out"

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = [str(a) for a in sft(llama_dir, data, out)]
    proc = subprocess.run(
        [sys.executable, "-m", "tiankong.tui.cli", *args],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"),  # chosen: no note on a busy box's thread count
    )
    one_line_error(proc.returncode, proc.stderr, needle)
    assert ckpt.latest(out) is None and not list((out / "checkpoints").glob(".*")) if out.exists() else True


def test_a_huge_context_does_not_preallocate_gigabytes(llama_dir, tmp_path, monkeypatch, capsys):
    """The cache is sized from the request and checked against free memory before it is allocated.
    Free memory is pinned at 1 GiB so the case does not depend on the machine (8 rows of 10^6 tokens
    of this model need 3.8 GiB)."""
    from tiankong.engine import kv_cache

    monkeypatch.setattr(kv_cache, "free_memory", lambda device: 2**30)
    big = tmp_path / "big"
    big.mkdir()
    for f in llama_dir.iterdir():
        (big / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((big / "config.json").read_text())
    cfg["max_position_embeddings"] = 10**8
    (big / "config.json").write_text(json.dumps(cfg))
    code, _, err = cli(
        monkeypatch,
        capsys,
        "generate",
        "-m",
        big,
        "--raw",
        "--prompt",
        "a",
        "--n",
        "8",
        "--max-new-tokens",
        "1000000",
        "--format",
        "jsonl",
    )
    one_line_error(code, err, "KV cache", "GiB")


# ---- input files are split at "\n" only

# Characters str.splitlines() also splits at; json.dumps(ensure_ascii=False) leaves them raw in strings.
ODD_BREAKS = "\u2028\u2029\x85\x0c\x0b\x1c\x1d\x1e"


def test_input_files_split_at_newlines_only(tmp_path):
    from tiankong.trainers.data import iter_jsonl
    from tiankong.trainers.records import read_prompt_records, read_rows

    texts = [f"Once{ch}upon" for ch in ODD_BREAKS]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": t, "text": t}, ensure_ascii=False) + "\r\n" for t in texts))
    assert [row["prompt"] for _, _, row in read_rows(jsonl)] == texts
    assert [row["text"] for _, row in iter_jsonl(jsonl)] == texts
    assert [job["prompt"] for _, _, job in read_prompt_records(jsonl)] == texts
    plain = tmp_path / "prompts.txt"
    plain.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    assert [(n, job["prompt"]) for n, _, job in read_prompt_records(plain)] == list(enumerate(texts, 1))


@pytest.mark.parametrize("reader", ["prompts", "rows", "data", "reward score"])
def test_a_bad_line_is_named_by_its_own_number(tmp_path, reader):
    from tiankong.engine.errors import InputError
    from tiankong.trainers.data import iter_jsonl
    from tiankong.trainers.records import read_prompt_records, read_rows
    from tiankong.trainers.reward import score_file

    path = tmp_path / "in.jsonl"
    # No "messages" beside the "prompt": a prompts file refuses a line with both.
    good = json.dumps({"prompt": "a\x0cb", "response": "c\u2028d", "text": "t"}, ensure_ascii=False)
    path.write_text(good + '\n{"prompt": "x", bad\n', encoding="utf-8")
    read = {
        "prompts": read_prompt_records,
        "rows": read_rows,
        "data": lambda p: list(iter_jsonl(p)),
        "reward score": lambda p: score_file(tmp_path / "no-model", str(p), None),
    }[reader]
    with pytest.raises(InputError, match=r"in.jsonl line 2: invalid JSON"):
        read(path)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("reader", ["prompts", "rows", "reward score", "data"])
def test_a_byte_that_is_not_utf8_is_named_by_its_line(tmp_path, reader, bom):
    # QA: five good lines, then "bad \xff line": "five.txt is not UTF-8 text", with no line to fix.
    from tiankong.engine.errors import InputError
    from tiankong.trainers.data import iter_jsonl
    from tiankong.trainers.records import read_prompt_records, read_rows
    from tiankong.trainers.reward import score_file

    path = tmp_path / "in.jsonl"
    good = b"".join(
        b'{"prompt": "p%d", "response": "r\xc3\xa9", "chosen": "a", "rejected": "b"}\n' % i for i in range(5)
    )
    path.write_bytes(bom + good + b'{"prompt": "bad \xff line"}\n')
    read = {
        "prompts": read_prompt_records,
        "rows": read_rows,
        "reward score": lambda p: score_file(tmp_path / "no-model", str(p), None),
        "data": lambda p: list(iter_jsonl(p)),
    }[reader]
    at = path.read_bytes().index(b"\xff")  # the reference: where the byte is, from 0
    column = len(b'{"prompt": "bad ') + 1
    with pytest.raises(InputError) as error:
        read(path)
    assert str(error.value) == (
        f"{path} line 6: not UTF-8 text (invalid start byte at byte {column} of the line, byte {at + 1} of the file); "
        "convert the file to UTF-8"
    )


@pytest.mark.parametrize("name", ["sft.jsonl", "text.jsonl", "text.txt"])
def test_a_byte_order_mark_is_dropped_by_sft_and_pretrain_data(tmp_path, name):
    # QA: SFT refused a file an editor saved with a BOM ("invalid JSON (Unexpected UTF-8 BOM ...)")
    # that pretrain and the preference readers take.
    from tiankong.trainers.data import load_conversations, load_texts

    path = tmp_path / name
    line = {"sft.jsonl": '{"prompt": "hi", "completion": "yo"}', "text.jsonl": '{"text": "Once"}', "text.txt": "Once"}
    path.write_bytes(b"\xef\xbb\xbf" + line[name].encode() + b"\n")
    if name == "sft.jsonl":
        assert load_conversations(path)[0].messages == [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
        ]
    else:
        assert load_texts(path) == ["Once"]  # no "\ufeff" in the text either


def test_a_number_too_long_to_read_says_so(tmp_path):
    from tiankong.engine.errors import InputError
    from tiankong.trainers.records import read_prompt_records

    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "x", "id": ' + "9" * 5000 + "}\n")
    with pytest.raises(InputError) as error:
        read_prompt_records(path)
    assert str(error.value) == (
        f"{path} line 1: a number is too long (over {sys.get_int_max_str_digits()} digits) to be read; "
        'fix the line; a text prompt that starts with "{" goes in as {"prompt": "..."}'
    )


def test_a_prompts_file_that_is_a_folder(tmp_path):
    from tiankong.engine.errors import InputError
    from tiankong.trainers.records import read_prompt_records, read_rows

    for read in (read_prompt_records, read_rows):
        with pytest.raises(InputError, match=f"{tmp_path} is a folder, not a file; give "):
            read(tmp_path)
