"""The `tiankong` CLI: JSONL records, batching invariance, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading

import pytest
from helpers import cli, deadline
from tiny_models import STORIES, make_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("cli-llama"), "llama")


def records(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_generate_jsonl_record(monkeypatch, capsys, model_dir):
    code, out, err = cli(
        monkeypatch,
        capsys,
        "generate",
        "-m",
        model_dir,
        "--raw",
        "-p",
        "Once upon",
        "--preset",
        "creative",
        "--seed",
        "5",
        "--max-new-tokens",
        "6",
        "--top-logprobs",
        "3",
    )
    assert code == 0, err
    (rec,) = records(out)
    assert rec["prompt"] == "Once upon" and rec["preset"] == "creative" and rec["seed"] == 5
    assert rec["params"]["temperature"] == 1.0 and rec["params"]["max_new_tokens"] == 6
    assert rec["usage"]["completion_tokens"] == len(rec["tokens"]) <= 6
    assert rec["finish_reason"] in ("eos", "length")
    assert set(rec["timing"]) == {"prefill_s", "decode_s", "decode_tokens_per_s"}
    tok = rec["tokens"][0]
    assert set(tok) == {"id", "text", "logprob", "p_sample", "entropy", "top"} and len(tok["top"]) == 3
    assert set(tok["top"][0]) == {"id", "text", "logprob", "p_sample"}
    assert "".join(t["text"] for t in rec["tokens"]) == rec["text"]


def test_same_seed_same_text_whatever_the_batch(monkeypatch, capsys, model_dir, tmp_path):
    lines = [
        "Once upon a time",
        json.dumps({"id": "q2", "prompt": "The quick brown fox"}),
        json.dumps({"messages": [{"role": "user", "content": "def add(a, b):"}]}),
        "Emoji are fun",
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    runs = []
    for bs in (1, 3, 8):
        out = tmp_path / f"out{bs}.jsonl"
        code, _, err = cli(
            monkeypatch,
            capsys,
            "generate",
            "-m",
            model_dir,
            "--raw",
            "-i",
            src,
            "--n",
            "2",
            "--seed",
            "100",
            "--max-new-tokens",
            "10",
            "--batch-size",
            bs,
            "-o",
            out,
        )
        assert code == 0, err
        runs.append(records(out.read_text()))
    assert len(runs[0]) == 8
    assert [r["seed"] for r in runs[0]] == [100, 101] * 4
    assert runs[0][2]["id"] == "q2" and runs[0][4]["messages"][0]["content"] == "def add(a, b):"
    for other in runs[1:]:
        assert [r["text"] for r in other] == [r["text"] for r in runs[0]]
    assert runs[0][0]["text"] != runs[0][1]["text"]  # the two samples differ


def test_overrides_switch_filters_off(monkeypatch, capsys, model_dir):
    code, out, err = cli(
        monkeypatch,
        capsys,
        "generate",
        "-m",
        model_dir,
        "--raw",
        "-p",
        "A",
        "--top-k",
        "0",
        "--top-p",
        "1",
        "--min-p",
        "0",
        "--temperature",
        "0",
        "--max-new-tokens",
        "3",
    )
    assert code == 0, err
    p = records(out)[0]["params"]
    assert (p["top_k"], p["top_p"], p["min_p"], p["temperature"]) == (0, 1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "-m", "/nonexistent/model", "-p", "hi"], "does not exist"),
        (["generate", "-m", "{model}", "-p", "hi", "--temperature", "7"], "temperature must be in [0, 2], got 7"),
        (["generate", "-m", "{model}", "-p", "hi", "--preset", "nope"], "nope"),
        (["generate", "-m", "{model}", "-i", "{badfile}"], "line 2: invalid JSON"),
        (["generate", "-m", "{model}", "-p", "x" * 2000, "--raw"], "the model's context is 256"),
        (["info", "-m", "{model}/config.json"], "is a file, not a model folder"),
        (["tokenize", "-m", "/nonexistent", "hi"], "does not exist"),
        (["presets", "nope"], "nope"),
        # click's usage errors: one line that says where the help is, not a five-line box
        (["chat", "--bogus"], "No such option: --bogus (see `tiankong chat --help`)"),
        (["chta"], "No such command 'chta'. Did you mean 'chat'? (see `tiankong --help`)"),
        (["generate", "-p", "hi", "--temperature", "abc"], "Invalid value for '--temperature'"),
        (["tokenize"], "no TEXT to tokenize"),  # and no standard input to read it from (pytest's cannot be read)
        (["train", "reward", "--bogus"], "No such option: --bogus (see `tiankong train reward --help`)"),
    ],
)
def test_errors_are_one_line_exit_2(monkeypatch, capsys, model_dir, tmp_path, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    monkeypatch.delenv("TIANKONG_MODEL", raising=False)
    args = [a.format(model=model_dir, badfile=bad) for a in args]
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 2
    err = "".join(x for x in err.splitlines(True) if not x.startswith("loading "))  # a loaded model's log line
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and message in err
    assert out == ""


def test_bad_input_line_writes_nothing(monkeypatch, capsys, model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"messages": [{"role": "user"}]}\n')
    out = tmp_path / "out.jsonl"
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-i", bad, "-o", out)
    assert code == 2 and "line 2" in err and not out.exists()


def test_tokenize_info_presets(monkeypatch, capsys, model_dir):
    code, out, _ = cli(monkeypatch, capsys, "tokenize", "-m", model_dir, "--format", "jsonl", "Once upon")
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(model_dir)
    got = json.loads(out)
    assert code == 0 and got["ids"] == ref.encode("Once upon")
    assert got["pieces"] == ref.convert_ids_to_tokens(got["ids"])
    code, out, _ = cli(monkeypatch, capsys, "info", "-m", model_dir, "--format", "json")
    facts = json.loads(out)
    assert code == 0 and facts["architecture"] == "LlamaForCausalLM" and facts["layers"] == 2
    assert facts["context_length"] == 256 and facts["chat_template"] is False
    code, out, _ = cli(monkeypatch, capsys, "presets")
    assert code == 0 and all(n in out for n in ("balanced", "precise", "creative", "chat", "deterministic"))
    code, out, _ = cli(monkeypatch, capsys, "presets", "creative")  # QA: its unset seed read "None"
    seed_row = next(line for line in out.splitlines() if line.split("│")[0].strip(" │┃") == "seed")
    assert code == 0 and "random" in seed_row and "None" not in out


def test_console_script_help_has_examples():
    out = subprocess.run(
        [sys.executable, "-m", "tiankong.tui.cli", "generate", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": ""},
        check=True,
    ).stdout
    assert "Examples" in out and "--top-logprobs" in out


@pytest.mark.skipif(not STORIES.exists(), reason="../shared is absent")
def test_stories_from_bos(monkeypatch, capsys):
    code, out, err = cli(
        monkeypatch,
        capsys,
        "generate",
        "-m",
        STORIES,
        "--raw",
        "-p",
        "",
        "--preset",
        "deterministic",
        "--max-new-tokens",
        "40",
    )
    assert code == 0, err
    rec = records(out)[0]
    assert rec["usage"]["prompt_tokens"] == 1 and "Lily" in rec["text"]


@pytest.mark.skipif(not STORIES.exists(), reason="../shared is absent")
@pytest.mark.parametrize("stop", ["little g", "e"])  # a stop string of two tokens, and one inside a token
def test_a_streamed_text_holds_no_part_of_a_stop_string(monkeypatch, capsys, stop):
    """One text prompt streams its tokens as they come; it streamed the stop string too, where the
    JSONL record had it cut."""
    args = ("generate", "-m", STORIES, "--raw", "-p", "Once upon a time", "--preset", "deterministic")
    args += ("--max-new-tokens", "20", "--stop", stop)
    code, out, err = cli(monkeypatch, capsys, *args, "--format", "text")
    assert code == 0, err
    code, record, err = cli(monkeypatch, capsys, *args)
    (rec,) = records(record)
    assert rec["finish_reason"] == "stop" and out == rec["text"] + "\n"


def test_bundled_model_is_the_default(monkeypatch, capsys):
    monkeypatch.delenv("TIANKONG_MODEL", raising=False)
    code, out, err = cli(monkeypatch, capsys, "info", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["folder"].endswith("tiankong-mini")


def test_a_run_resumed_with_another_template_or_dtype_does_its_rows_again(monkeypatch, capsys, model_dir, tmp_path):
    """A finished row is kept on resume only when the settings that made it are the same: the chat
    template and the weights' type decide the text too (once, a resumed run mixed two templates)."""
    from tiankong.tui import shards

    short, long = tmp_path / "short.jinja", tmp_path / "long.jinja"
    short.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    long.write_text("{% for m in messages %}Someone said: {{ m.content }}. Answer:{% endfor %}")
    out = tmp_path / "out.jsonl"
    args = ("generate", "-m", model_dir, "-p", "hi", "-p", "yo", "--max-new-tokens", "3", "-o", out)
    monkeypatch.setattr(shards, "merge", lambda *a, **k: None)  # each run stops before the merge, as if killed

    def rows_kept(*flags: object) -> int:
        code, _, err = cli(monkeypatch, capsys, *args, *flags)
        assert code == 0, err
        return len(shards.read_index(out))

    assert rows_kept("--chat-template", short) == 2
    assert rows_kept("--chat-template", short) == 2  # the same settings: nothing done again
    assert rows_kept("--chat-template", long) == 4  # another template: both rows made again
    assert rows_kept("--chat-template", long, "--dtype", "bfloat16") == 6  # another weights' type: again


def test_an_escape_sequence_in_a_strangers_file_never_reaches_the_terminal(monkeypatch, capsys, model_dir, tmp_path):
    """Error lines and tables quote model folders, presets and caches; an ESC ] 2 ; ... in them
    retitled the terminal (BEL was the only control left out before)."""
    import shutil

    evil = tmp_path / "evil"
    shutil.copytree(model_dir, evil)
    config = json.loads((evil / "config.json").read_text())
    config.update(architectures=["Evil\x1b]2;TITLE\x1b\\\x1b[31mRED\x9b1m"], model_type="evil")
    (evil / "config.json").write_text(json.dumps(config))
    code, out, err = cli(monkeypatch, capsys, "info", "-m", evil)
    assert code == 2 and "Evil]2;TITLE" in err.replace("\n", "")
    assert not any(ch in out + err for ch in "\x1b\x9b\x07")


# ---------------------------------------------------------------- generate as a script user runs it


def prompts_file(tmp_path, n, name="p.txt"):
    path = tmp_path / name
    path.write_text("".join(f"Once upon a time {i}\n" for i in range(n)))
    return path


def test_records_go_to_stdout_when_stderr_is_a_terminal(model_dir, tmp_path):
    """`generate --input F > out.jsonl` at a shell: stderr is a terminal, so the bar is drawn there;
    the records went there too (rich's bar takes over sys.stdout by default) and out.jsonl stayed empty."""
    src, out = prompts_file(tmp_path, 3), tmp_path / "out.jsonl"
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100", "OMP_NUM_THREADS": "1"}
    for var in ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR", "FORCE_COLOR"):
        env.pop(var, None)
    master, slave = pty.openpty()
    screen = bytearray()

    def drain():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    args = ["generate", "-m", str(model_dir), "--raw", "-i", str(src), "--max-new-tokens", "4", "--seed", "1"]
    with out.open("w") as stdout:
        proc = subprocess.run(
            [sys.executable, "-m", "tiankong.tui.cli", *args], stdout=stdout, stderr=slave, env=env, timeout=120
        )
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    assert proc.returncode == 0, bytes(screen).decode(errors="replace")[-2000:]
    assert len(records(out.read_text())) == 3
    assert b'"prompt"' not in screen and b"generating" in screen  # the bar was drawn, and only the bar


def test_output_that_is_the_input_is_refused(monkeypatch, capsys, model_dir, tmp_path):
    src = prompts_file(tmp_path, 2)
    before = src.read_bytes()
    link = tmp_path / "link.txt"
    link.symlink_to(src)
    for given in (src, link):
        code, out, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "--raw", "-i", src, "-o", given)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "is the --input file" in err and "write elsewhere" in err
    with src.open() as stdin:  # --input - < p.txt -o p.txt
        monkeypatch.setattr(sys, "stdin", stdin)
        code, out, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "--raw", "-i", "-", "-o", src)
    assert code == 2 and "is the file on standard input" in err
    assert src.read_bytes() == before


def test_full_disk_while_keeping_records_is_one_line(monkeypatch, capsys, model_dir, tmp_path):
    """The part file's buffer cannot be flushed onto a full disk: its close failed the same way again,
    which hid the one-line error behind two tracebacks."""
    from tiankong.tui import shards

    monkeypatch.setattr(shards.PartWriter, "_open", lambda self: open("/dev/full", "wb"))
    src = prompts_file(tmp_path, 3)
    args = ("generate", "-m", model_dir, "--raw", "-i", src, "--max-new-tokens", "2", "-o", tmp_path / "out.jsonl")
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 2, err
    (line,) = [x for x in err.splitlines() if not x.startswith(("generating", "loading "))]
    assert line.startswith("error: cannot write") and "the disk is full" in line


def test_tokenize_text_that_is_not_utf8_says_so(monkeypatch, capsys, model_dir):
    code, out, err = cli(monkeypatch, capsys, "tokenize", "-m", model_dir, "caf\udce9")  # bytes caf\xe9
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "TEXT is not valid text at character 4" in err and "give UTF-8 text" in err
    assert "tokenizer" not in err


def test_rank_and_compare_name_a_folder_a_folder(monkeypatch, capsys, tmp_path):
    code, _, err = cli(monkeypatch, capsys, "rank", "--input", tmp_path)
    assert code == 2 and f"{tmp_path} is a folder, not a file" in err
    code, _, err = cli(monkeypatch, capsys, "compare", "--prompts", tmp_path)
    assert code == 2 and f"{tmp_path} is a folder, not a file" in err


@pytest.mark.parametrize("to_file", [True, False])
def test_interrupt_says_what_was_kept(monkeypatch, capsys, model_dir, tmp_path, to_file):
    """Ctrl+C in the second batch: a new -o file "was not created" (it said "is unchanged"), and on
    stdout the message says how many records came out whole (it said nothing)."""
    from tiankong.tui import cli_generate

    real = cli_generate._generate_batch
    calls = []

    def stopped_in_the_second_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(cli_generate, "_generate_batch", stopped_in_the_second_batch)
    src, new = prompts_file(tmp_path, 6), tmp_path / "new.jsonl"
    args = ["generate", "-m", model_dir, "--raw", "-i", src, "--max-new-tokens", "2", "--batch-size", "2"]
    code, out, err = cli(monkeypatch, capsys, *args, *(["-o", new] if to_file else []))
    assert code == 130
    said = " ".join(err.split())
    if to_file:
        assert f"interrupted: {new} was not created; the 2 finished records are kept in {new}.part-*" in said
    else:
        assert len(records(out)) == 2
        assert "interrupted: standard output got 2 of 6 records (each complete); the others were not generated" in said


def test_the_bar_counts_what_is_kept_and_a_resumed_run_says_so(monkeypatch, capsys, model_dir, tmp_path):
    """QA: a Ctrl+C while a batch was half done left the bar at 55/200 beside "the 48 finished records
    are kept": the bar counted rows of a batch not yet saved. The run again showed only its own rows
    (generating 15/150), nothing saying that 50 of 200 were done before."""
    from tiankong.engine.engine import Engine

    real, calls = Engine.generate, []

    def stopped_after_one_row_of_the_second_batch(self, *a, **k):
        calls.append(1)
        for ev in real(self, *a, **k):
            yield ev
            if len(calls) == 2 and hasattr(ev, "finish_reason"):
                raise KeyboardInterrupt  # one row of the batch finished, the other not yet

    src, new = prompts_file(tmp_path, 6), tmp_path / "new.jsonl"
    args = ["generate", "-m", model_dir, "--raw", "-i", src, "--max-new-tokens", "2", "--batch-size", "2"]
    for to_file in (False, True):
        calls.clear()
        monkeypatch.setattr(Engine, "generate", stopped_after_one_row_of_the_second_batch)
        code, out, err = cli(monkeypatch, capsys, *args, *(["-o", new] if to_file else []))
        assert code == 130
        # Not a terminal: the bar's last line is where it stood when stopped.
        (last,) = [x for x in err.splitlines() if x.startswith("generating")][-1:]
        assert last.startswith("generating 2/6 "), err
        assert ("the 2 finished records are kept" if to_file else "standard output got 2 of 6") in " ".join(err.split())
    monkeypatch.setattr(Engine, "generate", real)
    code, out, err = cli(monkeypatch, capsys, *args, "-o", new)
    assert code == 0, err
    assert f"resuming: 2 of 6 records are already in {new}.part-*; generating the other 4" in " ".join(err.split())
    assert [x for x in err.splitlines() if x.startswith("generating")][-1].startswith("generating 6/6 (100%)")
    assert len(records(new.read_text())) == 6


def test_a_second_run_on_one_output_is_refused_at_its_start(monkeypatch, capsys, model_dir, tmp_path):
    """QA: the same command in two terminals: the first to finish merged and removed the part files,
    and the other then said its rows "are in no part file; run the same command again". The run
    writing OUTPUT holds OUTPUT.part-lock (flock, its pid inside); a second is refused before loading."""
    import fcntl

    src, out = prompts_file(tmp_path, 2), tmp_path / "out.jsonl"
    args = ["generate", "-m", model_dir, "--raw", "-i", src, "--max-new-tokens", "2", "-o", out]
    lock = tmp_path / "out.jsonl.part-lock"
    with open(lock, "w") as held:  # another run, as that run holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        code, _, err = cli(monkeypatch, capsys, *args)
        assert code == 2 and err.splitlines() == [
            f"error: --output {out} is being written by another run (pid 4242); wait for it to end or choose "
            "another --output"
        ], err
        assert not out.exists() and lock.read_text() == "4242\n"
    # The file left unlocked (its run was killed): taken, and removed at the end.
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.jsonl", "p.txt"]


def test_sigterm_is_handled_as_ctrl_c(model_dir, tmp_path):
    src = prompts_file(tmp_path, 400)
    args = ["generate", "-m", str(model_dir), "--raw", "-i", str(src), "--max-new-tokens", "16", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiankong.tui.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = proc.stdout.readline()  # generating: the handler is in place
        proc.send_signal(signal.SIGTERM)
        # Read on through the same buffer: readline may have read the next records ahead, and
        # communicate() reads the pipe itself, past them (the test then counted one record too few).
        with deadline(60):
            rest, err = proc.stdout.read(), proc.stderr.read()
            proc.wait()
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    whole = len(records(first + rest))
    assert f"terminated (SIGTERM): standard output got {whole} of 400 records (each complete)" in " ".join(err.split())


def test_top_logprobs_with_text_and_a_text_prompt_starting_with_a_brace(monkeypatch, capsys, model_dir, tmp_path):
    code, _, err = cli(
        monkeypatch, capsys, "generate", "-m", model_dir, "-p", "hi", "--top-logprobs", "3", "--format", "text"
    )
    assert code == 2 and "--top-logprobs needs --format jsonl" in err
    src = tmp_path / "p.txt"
    src.write_text("{curly} the bear said hello\n")
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", model_dir, "-i", src)
    assert code == 2 and 'a text prompt that starts with "{" goes in as {"prompt": "..."}' in " ".join(err.split())
