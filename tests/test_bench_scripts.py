"""The benchmark scripts' own logic (bench/*.py), run cheaply: no benchmark is run here.

--help of every script (each option explained, with its default, and nothing run), the notes that
name what is missing when llama-cpp-python or its server is not installed, quant.py's note where
llama.cpp would die on its files (ggml's AMX kernels), the progress a worker tells while the
machine is busy, child processes ended when a benchmark gets SIGTERM, quant.py's median, train.py's
readable summaries and train_vs_trl.py's data step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
STORIES = REPO.parent / "shared" / "models" / "stories260K"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py"))


@pytest.fixture
def bench_path(monkeypatch):
    """bench/ importable as the scripts import each other (`from decode import ...`)."""
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.fixture
def no_llamacpp(monkeypatch):
    """llama-cpp-python not importable, installed or not (find_spec sees None in sys.modules)."""
    monkeypatch.setitem(sys.modules, "llama_cpp", None)


def options(help_text: str) -> list[str]:
    """Each option's entry of an argparse --help page, its wrapped lines joined."""
    entries: list[str] = []
    section = help_text.split("\noptions:\n", 1)[1]
    for line in section.splitlines():
        if line.startswith("  -"):
            entries.append(line.strip())
        elif line.startswith("   ") and entries:
            entries[-1] += " " + line.strip()
    return entries


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_explains_every_option_with_its_default_and_runs_nothing(script):
    out = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:"), out.stdout[:300]
    assert "ticks per core cycle:" not in out.stdout  # pipes.py's measurement
    for entry in options(out.stdout):
        if entry.startswith("-h, --help"):
            continue
        takes_value = re.match(r"(-\w, )?--[\w-]+ ([A-Z_]+|\{)", entry)
        words = re.sub(r"^(-\w, )?--[\w-]+( ([A-Z_]+|\{[^}]*\}))?", "", entry).strip()
        assert words, f"{script}: {entry!r} has no help text"
        if takes_value:
            assert "default" in words, f"{script}: {entry!r} does not give its default"


def test_decode_timeout_help_says_per_framework_and_round():
    out = subprocess.run([sys.executable, str(BENCH / "decode.py"), "--help"], capture_output=True, text=True)
    entry = next(e for e in options(out.stdout) if e.startswith("--timeout"))
    assert "per framework and round" in entry and "1800" in entry


def test_help_shows_no_default_for_flags_and_unset_options(bench_path):
    import decode

    ap = decode.argparse.ArgumentParser(formatter_class=decode.Help)
    ap.add_argument("--n", type=int, default=0, help="a count")
    ap.add_argument("--flag", action="store_true", help="a flag")
    ap.add_argument("--path", help="a path (default: somewhere)")
    text = " ".join(ap.format_help().split())
    assert "a count (default: 0)" in text
    assert "a flag (default" not in text and "(default: None)" not in text
    assert "a path (default: somewhere)" in text


def test_plural(bench_path):
    import decode

    assert [decode.plural(n, "thread") for n in (1, 2)] == ["1 thread", "2 threads"]


# ---------------------------------------------------------------------------------------------
# What is missing, said in one line with what to install
# ---------------------------------------------------------------------------------------------


def test_the_llamacpp_note_names_the_package_and_the_extra(bench_path, no_llamacpp):
    import decode

    note = decode.llamacpp_note("llama.cpp skipped")
    assert note is not None and "\n" not in note
    assert "llama-cpp-python" in note and "pip install -e '.[bench]'" in note and "llama.cpp skipped" in note


def test_quant_falls_back_to_tiankong_quantizing_at_load_and_says_so(bench_path, no_llamacpp, monkeypatch, tmp_path):
    import decode
    import quant

    monkeypatch.setattr(quant, "OUT", tmp_path)  # no quantized file made before
    said: list[str] = []
    assert quant.gguf_or_at_load("q4_0", said.append) == (decode.MODEL_DIR, "q4_0")
    assert len(said) == 1 and "pip install -e '.[bench]'" in said[0] and "at load" in said[0]
    with pytest.raises(SystemExit, match=r"Q4_K_M.*--type q8_0 or q4_0"):
        quant.gguf_or_at_load("q4_k_m", said.append)
    (tmp_path / "smollm-135m-random-q8_0.gguf").write_bytes(b"")  # made earlier: used as it is
    assert quant.gguf_or_at_load("q8_0", said.append) == (tmp_path / "smollm-135m-random-q8_0.gguf", "auto")


@pytest.fixture
def quant_engines(bench_path, monkeypatch, tmp_path):
    """quant.make_engines on fake runners and files (nothing loaded), llama-cpp-python reporting
    ggml's AMX kernels as a native build on such a CPU does; returns (quant, args)."""
    import quant

    info = b"CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | "
    monkeypatch.setitem(sys.modules, "llama_cpp", SimpleNamespace(llama_print_system_info=lambda: info))
    monkeypatch.setattr(quant, "llamacpp_missing", list)
    monkeypatch.setattr(quant, "quantized_gguf", lambda qtype, shape: tmp_path / f"{qtype}.gguf")
    monkeypatch.setattr(quant, "tiankong_runner", lambda *a: (None, None, "q8_0"))
    monkeypatch.setattr(quant, "llamacpp_runner", lambda *a: (None, None))
    monkeypatch.setattr(quant, "OUT", tmp_path)
    args = SimpleNamespace(types="q8_0,q4_0", shape="1b", no_batch=True, threads=2, prompt_tokens=3, new_tokens=4)
    return quant, args


def test_quant_leaves_llamacpp_out_where_it_would_die_and_says_why(quant_engines, monkeypatch, tmp_path):
    """llama.cpp's child dies by SIGILL on the first quantized file (simulated: it kills itself), as a
    native build's AMX kernels do on some CPUs: one note naming the signal, the file and the build
    without them; tiankong's rows only, their ratio columns empty; llama.cpp never in this process."""
    quant, args = quant_engines
    monkeypatch.setattr(quant, "LLAMACPP_EVAL", "import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    monkeypatch.setattr(quant, "llamacpp_runner", lambda *a: pytest.fail("llama.cpp ran in the bench's process"))
    said: list[str] = []
    engines = quant.make_engines(args, [1, 2, 3], 4, said.append)
    assert list(engines) == ["tiankong q8_0 gguf", "tiankong q4_0 gguf"]
    assert len(said) == 1 and "\n" not in said[0]
    assert "SIGILL on q8_0.gguf: no llama.cpp rows" in said[0]
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"' in said[0]
    best = {(name, key): 0.01 for name in engines for key in (1, "prefill")}
    from rich.console import Console

    quant.report(engines, best, {}, args, Console(quiet=True))
    rows = json.loads((tmp_path / "quant-1b.json").read_text())["rows"]
    assert [(r["engine"], r["vs_llamacpp"], r["prefill_vs_llamacpp"]) for r in rows] == [
        ("tiankong q8_0 gguf", None, None),
        ("tiankong q4_0 gguf", None, None),
    ]


@pytest.mark.parametrize("amx", [True, False])
def test_quant_runs_llamacpp_where_its_child_lives_or_it_has_no_amx(quant_engines, monkeypatch, amx):
    """With AMX kernels a child tries the first file once and, living, every type gets its llama.cpp
    row; without them no child is started."""
    quant, args = quant_engines
    if not amx:
        monkeypatch.setitem(sys.modules, "llama_cpp", SimpleNamespace(llama_print_system_info=lambda: b"AVX2 = 1 |"))
    run, children = subprocess.run, []
    monkeypatch.setattr(quant, "LLAMACPP_EVAL", "import sys; assert sys.argv[1].endswith('q8_0.gguf')")

    def recorded(*a, **kw) -> subprocess.CompletedProcess:
        done = run(*a, **kw)
        children.append(done.returncode)
        return done

    monkeypatch.setattr(subprocess, "run", recorded)
    said: list[str] = []
    engines = quant.make_engines(args, [1, 2, 3], 4, said.append)
    assert sorted(engines) == sorted(f"{e} {q} gguf" for e in ("tiankong", "llama.cpp") for q in ("q8_0", "q4_0"))
    assert said == [] and children == ([0] if amx else [])


def test_tui_stream_says_why_it_runs_stories260k(bench_path, no_llamacpp, monkeypatch, tmp_path):
    import tui_stream

    monkeypatch.setattr(tui_stream, "DEFAULT_MODEL", tmp_path / "bench" / "out" / "missing-q4_0.gguf")
    monkeypatch.setattr(tui_stream, "ROOT", tmp_path)
    model, note = tui_stream.default_model()
    assert model == tui_stream.STORIES
    assert note is not None and "stories260K" in note and "pip install -e '.[bench]'" in note


def test_serve_checks_for_llamacpp_server_extra(bench_path, monkeypatch):
    import serve

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    note = serve.llamacpp_server_note()
    assert note is not None and "uvicorn" in note and "[server]" in note and "'.[bench]'" in note


def test_the_bench_extra_brings_llamacpp_server():
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    assert "llama-cpp-python[server]" in extra


# ---------------------------------------------------------------------------------------------
# A busy machine: decode.py's waits and repeated runs are told as they happen
# ---------------------------------------------------------------------------------------------


def test_collect_tells_each_wait_disturbed_run_and_the_clean_count(bench_path, monkeypatch):
    import decode

    monkeypatch.setattr(decode, "QUIET_WAIT_S", 0.1)
    monkeypatch.setattr(decode, "foreign_share", lambda a, b: 0.5)  # others always use half the CPUs
    said: list[str] = []
    samples = decode.collect({"single": lambda: {}}, runs=1, say=said.append)
    assert len(samples["single"]) == 3  # 3 x runs attempts, all disturbed
    assert sum("machine busy" in s for s in said) == 3
    assert sum("still busy: running anyway" in s for s in said) == 3
    assert sum("disturbed (others used 50% of the CPUs)" in s for s in said) == 3
    assert said[-1] == "single: 0 clean of 3 runs"


def test_run_streaming_passes_progress_lines_as_they_come(bench_path):
    import decode

    child = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(BENCH)!r})
        import decode
        print("noise")
        decode.say("half way")
        time.sleep(2)
        print("done")
        """
    )
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    code, output = decode.run_streaming(
        [sys.executable, "-c", child], dict(os.environ), 60, lambda m: seen.append((time.monotonic() - start, m))
    )
    assert code == 0 and [m for _, m in seen] == ["half way"]
    assert seen[0][0] < time.monotonic() - start - 1.5  # told before the child went on for 2 s
    assert output.split() == ["noise", "done"]
    assert (
        decode.run_streaming([sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), 0.5, print)[0]
        is None
    )


SPAWN = {
    "subprocess.run": "subprocess.run([sys.executable, '-c', CHILD])",
    "run_streaming": "decode.run_streaming([sys.executable, '-c', CHILD], dict(os.environ), 600, print)",
}


@pytest.mark.parametrize("spawn", sorted(SPAWN))
def test_sigterm_ends_the_child_processes(spawn, tmp_path):
    """What bench/decode.py (run_streaming), train_vs_trl.py and train.py (subprocess.run) do: a
    SIGTERM to the benchmark ends its running child too."""
    pid_file = tmp_path / "child.pid"
    parent = textwrap.dedent(
        f"""
        import os, subprocess, sys
        sys.path.insert(0, {str(BENCH)!r})
        import decode
        decode.end_children_on_sigterm()
        CHILD = "import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(60)"
        {SPAWN[spawn]}
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "the child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    try:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        time.sleep(0.2)
        with pytest.raises(ProcessLookupError):  # the child is gone, not left running under init
            os.kill(child, 0)
        assert code == 128 + signal.SIGTERM
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_prompt_cache_counts_disturbed_runs(bench_path, monkeypatch):
    import decode
    import prompt_cache

    watch = prompt_cache.Watch()
    monkeypatch.setattr(decode, "foreign_share", lambda a, b: 0.02)
    assert watch.time(lambda: 0.25) == 0.25 and watch.busy() == ""
    monkeypatch.setattr(decode, "foreign_share", lambda a, b: 0.4)
    watch.time(lambda: 0.3)
    assert (watch.runs, watch.disturbed) == (2, 1) and "40% of the CPUs: disturbed" in watch.busy()


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def test_quant_median_of_an_even_count_is_the_mean_of_the_middle_two(bench_path):
    import quant

    assert quant.median_and_range([1.9, 1.2, 1.5, 1.7]) == pytest.approx((1.6, 1.2, 1.9))
    assert quant.median_and_range([]) is None


def test_train_summaries_read_as_lines_not_dicts(bench_path):
    import train

    votes = train.readable(
        "votes", {"candidates": 1536, "taste_share": 0.123456, "pairs": 300, "minutes": 0.45000000001}
    )
    assert votes == "votes: 0.45 min; candidates 1536, taste share 0.123, pairs 300"
    m = {"answers": 240, "taste_share": 0.379, "eos_rate": 0.996, "chinese_kept": None}
    ppo = train.readable(
        "ppo",
        {
            "minutes": 6.2,
            "settings": {"lr": 1e-05},
            "before": m,
            "after": dict(m, taste_share=0.929),
            "kl_to_reference": 5.3,
            "examples": ["Once upon\na time"],
        },
    )
    assert ppo.splitlines() == [
        "ppo: 6.2 min; taste share 0.379 -> 0.929, eos rate 0.996 -> 0.996, chinese kept n/a -> n/a, kl to reference 5.3",
        "  settings: lr 1e-05",
        "  example: Once upon a time",
    ]
    assert "{" not in train.readable("reward", {"minutes": 1.0, "ci95": [0.89, 1.0]})


@pytest.mark.skipif(not STORIES.is_dir(), reason="needs ../shared/models/stories260K")
def test_train_vs_trl_builds_its_preference_data(bench_path, monkeypatch, tmp_path):
    """The step that crashed (bench/train.py's `sample` is gone): pairs sampled, written for TRL."""
    import argparse

    import train_vs_trl
    from rich.console import Console

    monkeypatch.setattr(train_vs_trl, "WORK", tmp_path)
    args = argparse.Namespace(model=STORIES, word="the", pairs=2, length=8, max_length=64, seed=0, threads=1)
    data = train_vs_trl.build_data(args, Console(quiet=True))
    assert data["pairs"] == 2 and len(data["chosen_ids"]) == 2
    assert (tmp_path / "prefs.jsonl").read_text().count("Once upon a time") == 2
