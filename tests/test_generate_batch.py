"""`tiankong generate --input` as a batch user meets it (QA 18): what an input line means, which
checks come before the model loads, what a resumed run says about the records it cannot reuse, a
full disk at the final merge, the closing line and the --preset flag.

References are literal: the records a line must give, the lines stderr must say, and the output of
a run never interrupted (which test_cli and test_generate_sharded pin further).
"""

from __future__ import annotations

import contextlib
import json

import pytest
from helpers import cli, one_thread  # noqa: F401 (one_thread is an autouse fixture)
from tiny_models import make_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("gen-batch"), "llama")


def said(err: str) -> str:
    return " ".join(err.split())


def without_timing(text: str) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "timing"} for x in text.splitlines()]


# ---------------------------------------------------------------- what an input line is


LINES = ['"just a string"', "hello there", '{"prompt": "an object", "id": 7}', "42", "[1,2]", "true", "null"]


def test_a_json_lines_file_reads_a_json_string_as_its_text_and_refuses_other_values(tmp_path):
    """QA: `"just a string"` in a .jsonl became the prompt with its quotes, and 42 the prompt "42"."""
    from tiankong.engine.errors import InputError
    from tiankong.trainers.records import read_prompt_records

    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(LINES[:3]) + "\n")
    assert [job for _, _, job in read_prompt_records(good)] == [
        {"prompt": "just a string"},
        {"prompt": "hello there"},  # not JSON: plain text, as in any prompts file
        {"prompt": "an object", "id": 7},
    ]
    for line, kind in [("42", "number"), ("[1,2]", "list"), ("true", "constant"), ("null", "constant")]:
        bad = tmp_path / "bad.JSONL"
        bad.write_text(f'"fine"\n\n{line}\n')
        with pytest.raises(InputError) as error:
            read_prompt_records(bad)
        message = str(error.value)
        assert message.startswith(f"{bad} line 3: {line} is a JSON {kind}, not a prompt; "), message
        assert '"prompt" or "messages", a JSON string' in message and '{"prompt": ...}' in message


def test_a_text_file_keeps_every_line_as_it_stands(tmp_path):
    """Plain text prompts are not JSON: a line that looks like a number or a JSON string is that text."""
    from tiankong.trainers.records import read_prompt_records

    text = tmp_path / "prompts.txt"
    text.write_text("\n".join(LINES) + "\n")
    want = [{"prompt": line} for line in LINES]
    want[2] = {"prompt": "an object", "id": 7}  # a "{" line is a JSON object in any file
    assert [job for _, _, job in read_prompt_records(text)] == want


def test_an_input_check_needs_no_model(monkeypatch, capsys, model_dir, tmp_path):
    """QA: a line with both "prompt" and "messages" was refused only after the model had loaded."""
    from tiankong.tui import cli_generate

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(cli_generate, "_load", no_loading)
    both = tmp_path / "both.jsonl"
    both.write_text('{"prompt": "x"}\n{"prompt": "x", "messages": [{"role": "user", "content": "y"}]}\n')
    code, out, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-i", both)
    assert code == 2 and out == "", err
    assert err.strip() == (
        f'error: {both} line 2: has both "prompt" and "messages"; keep one: "prompt" for a text, '
        '"messages" for a conversation'
    )
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-p", "ok", "-p", "caf\udce9")
    assert code == 2 and "--prompt 2 is not valid text at character 4" in err, err
    # generate's own records give "prompt": null beside "messages": that is one prompt, not two
    from tiankong.trainers.records import read_prompt_records

    own = tmp_path / "own.jsonl"
    own.write_text('{"prompt": null, "messages": [{"role": "user", "content": "y"}]}\n')
    assert read_prompt_records(own)[0][2]["messages"] == [{"role": "user", "content": "y"}]


def test_keys_that_generate_does_not_read_are_warned_once(monkeypatch, capsys, model_dir, tmp_path):
    """QA: {"prompt": "x", "temperature": 2} ran at the preset's temperature without a word."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "a", "temperature": 2}\n{"prompt": "b", "id": 1}\n{"prompt": "c", "mesages": []}\n')
    args = ("generate", "-m", model_dir, "--raw", "-i", src, "--max-new-tokens", "2")
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    warnings = [x for x in err.splitlines() if x.startswith("warning:")]
    assert warnings == [
        f'warning: {src} line 1 (and 1 other line) has keys that generate does not read: "temperature", '
        '"mesages"; it reads "prompt" or "messages", and copies "id" into the records. A line cannot set its '
        'own sampling, so "temperature" is not used: give --temperature (for every line)'
    ]
    assert [r["params"]["temperature"] for r in map(json.loads, out.splitlines())] == [0.7] * 3  # balanced's
    src.write_text('{"prompt": "a", "id": 1}\nplain\n')
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0 and "warning" not in err, err


# ---------------------------------------------------------------- resuming, merging, the closing line


def test_a_resumed_run_with_other_settings_says_what_it_does_not_reuse(monkeypatch, capsys, model_dir, tmp_path):
    """QA: a run stopped, then run again with --preset precise, started from zero without a word,
    its part file growing with records it would never use. It says so now; the records stay (the
    first command, run again, still resumes from them) until a run's merge removes every part."""
    from tiankong.tui import shards

    src, out, ref = tmp_path / "p.txt", tmp_path / "out.jsonl", tmp_path / "ref.jsonl"
    src.write_text("Once upon\nA fox\n")
    args = ("generate", "-m", model_dir, "--raw", "-i", src, "--max-new-tokens", "3", "--seed", "4")
    code, _, err = cli(monkeypatch, capsys, *args, "-o", ref)  # never interrupted: the reference
    assert code == 0, err
    real_merge = shards.merge
    monkeypatch.setattr(shards, "merge", lambda *a, **k: None)  # each run stops before the merge, as if killed
    code, _, err = cli(monkeypatch, capsys, *args, "-o", out)
    assert code == 0 and "part-* holds" not in err, err
    code, _, err = cli(monkeypatch, capsys, *args, "-o", out, "--preset", "precise")
    assert code == 0, err
    assert (
        f"{out}.part-* holds 2 records made with other settings or from other input lines (the first: "
        "another --preset, --temperature, --top-k and --top-p); this run does not reuse them, and removes them when it "
        "finishes"
    ) in said(err)
    assert "resuming" not in err
    assert len(shards.read_index(out)) == 4
    monkeypatch.setattr(shards, "merge", real_merge)
    code, _, err = cli(monkeypatch, capsys, *args, "-o", out)  # the first command again: resumed, merged
    assert code == 0, err
    assert f"{out}.part-* holds 2 records made with other settings" in said(err)
    assert f"resuming: 2 of 2 records are already in {out}.part-*; generating the other 0" in said(err)
    assert without_timing(out.read_text()) == without_timing(ref.read_text())
    assert not shards.part_files(out)


def test_a_full_disk_at_the_merge_says_the_records_are_kept(monkeypatch, capsys, model_dir, tmp_path):
    """QA: "cannot write out.jsonl: the disk is full; free some space or write elsewhere", while
    every record was safe in the part file and the same command again would only merge."""
    from tiankong.engine.files import WriteError, why
    from tiankong.tui import cli_generate, shards

    @contextlib.contextmanager
    def full_disk(path, *a, **k):
        try:
            with open("/dev/full", "w") as f:
                yield f
        except OSError as e:
            raise WriteError(path, why(e)) from None

    src, out = tmp_path / "p.txt", tmp_path / "out.jsonl"
    src.write_text("Once upon\nA fox\nThe end\n")
    args = ("generate", "-m", model_dir, "--raw", "-i", src, "--max-new-tokens", "3", "--seed", "4", "-o", out)
    with monkeypatch.context() as m:
        m.setattr(shards, "atomic_open", full_disk)
        code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2, err
    assert err.splitlines()[-1] == (
        f"error: cannot write {out}: the disk is full; all 3 records are kept in {out}.part-*: free some space "
        f"and run the same command again to write {out} (nothing is generated again)"
    )
    assert not out.exists() and len(shards.read_index(out)) == 3
    batches = []
    real = cli_generate._generate_batch
    monkeypatch.setattr(cli_generate, "_generate_batch", lambda *a, **k: batches.append(1) or real(*a, **k))
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0 and batches == [] and len(out.read_text().splitlines()) == 3, err


def test_a_run_to_a_file_ends_with_what_it_wrote(monkeypatch, capsys, model_dir, tmp_path):
    """QA: `generate -o FILE` ended without a word; to stdout the records themselves are the output."""
    out = tmp_path / "out.txt"
    args = ("generate", "-m", model_dir, "--raw", "-p", "a", "-p", "b", "--max-new-tokens", "2")
    code, _, err = cli(monkeypatch, capsys, *args, "-o", out)
    assert code == 0 and err.splitlines()[-1] == f"wrote 2 records to {out}", err
    code, _, err = cli(monkeypatch, capsys, *args, "--format", "text", "-o", out)
    assert code == 0 and err.splitlines()[-1] == f"wrote 2 answers to {out}", err
    code, stdout, err = cli(monkeypatch, capsys, *args)
    assert code == 0 and len(stdout.splitlines()) == 2 and "wrote" not in err, err


def test_one_preset_per_run(monkeypatch, capsys, model_dir):
    """QA: `--preset a --preset b` quietly ran b."""
    base = ("generate", "-m", model_dir, "-p", "hi", "--max-new-tokens", "2")
    code, out, err = cli(monkeypatch, capsys, *base, "--preset", "creative", "--preset", "precise")
    assert code == 2 and out == ""
    assert err.strip() == (
        "error: --preset is given 2 times (creative, precise); one preset per run: run generate once per preset"
    )
    code, _, err = cli(monkeypatch, capsys, *base, "--preset", "balanced,creative")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "got 'balanced,creative'" in err and err.strip().endswith(
        "; one preset per run: run generate once per preset"
    )
    code, out, err = cli(monkeypatch, capsys, *base, "--preset", "precise")
    assert code == 0 and json.loads(out)["preset"] == "precise", err
