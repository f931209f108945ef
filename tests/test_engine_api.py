"""The engine's Python API as a library user meets it: the bundled model loaded with no argument, the
README's example as written, calls from several threads, a model to train, the hints type checkers
read (py.typed), and error lines that name both the CLI flag and the Python argument."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import weakref
from importlib import resources
from pathlib import Path

import pytest
import torch
from helpers import one_thread  # noqa: F401 (an autouse fixture)

from tiankong.engine import prefill
from tiankong.engine.engine import Engine
from tiankong.engine.errors import ChatTemplateError, InputError, ModelLoadError
from tiankong.engine.events import Finished
from tiankong.engine.kv_cache import KVCache
from tiankong.engine.model import load_model, resolve_device, resolve_dtype
from tiankong.engine.sampling import SamplingParams
from tiankong.models import default_model_dir

REPO = Path(__file__).resolve().parents[1]
MODEL = default_model_dir()


@pytest.fixture(scope="module")
def eng() -> Engine:
    return Engine.load(device="cpu")


# ---------------------------------------------------------------- several threads on one Engine

# Two threads generate different batches on one Engine, again and again; each batch must give the
# tokens it gave alone. Batch B has a prompt twice: its rows share the prompt's cache slots, which
# the compiled step is told per call (it once shared that with the other thread's call: a segfault,
# or another batch's keys). A subprocess, so that a crash fails the test instead of ending pytest.
_THREADS = """
import sys, threading
from tiankong.engine.engine import Engine
from tiankong.engine.events import Finished
from tiankong.engine.sampling import SamplingParams as S

eng = Engine.load(device="cpu")
story, sky, hi = (eng.encode(prompt=t) for t in ("Tell me a story.", "What colour is the sky?", "Hi"))
A = ([story, sky], [S(seed=1, max_new_tokens=40), S(seed=2, temperature=1.2, repetition_penalty=1.3, max_new_tokens=40)])
B = ([hi, hi, story], [S(temperature=0, max_new_tokens=30), S(seed=9, max_new_tokens=30), S(seed=4, max_new_tokens=30)])

def run(job):
    return {e.row: e.token_ids for e in eng.generate(*job) if isinstance(e, Finished)}

alone = [run(A), run(B)]
differ = []

def again(job, want):
    for _ in range(8):
        if run(job) != want:
            differ.append(job is A and "A" or "B")

threads = [threading.Thread(target=again, args=pair) for pair in zip((A, B), alone)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("differ:", differ)
"""


def test_two_threads_generate_what_each_gives_alone():
    done = subprocess.run([sys.executable, "-c", _THREADS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "differ: []", done.stdout


# ---------------------------------------------------------------- loading, the README's example


def test_load_with_no_argument_is_the_bundled_model(eng):
    assert eng.folder == MODEL
    assert Engine.load(None, device="cpu").folder == MODEL


def test_readme_python_example_runs_as_written():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = section[
        section.index("```python") + len("```python") : section.index("```\n", section.index("```python") + 9)
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("Finished(row=0, text=") and "seed=1" in last


def test_device_and_dtype_names_in_any_case():
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_dtype("BFLOAT16", torch.device("cpu")) == torch.bfloat16
    eng = Engine.load(device="Cpu", dtype="Float32")
    assert eng.device == torch.device("cpu") and eng.dtype == torch.float32


def test_a_quantized_model_says_its_weight_types():
    eng = Engine.load(device="cpu", dtype="Q8_0")
    assert eng.dtype == torch.float32  # what it computes in
    assert eng.quantized == ["q8_0"]
    assert eng.info()["dtype"] == "float32 (quantized weights: q8_0)"


def test_float_model_is_not_quantized(eng):
    assert eng.quantized == [] and eng.info()["dtype"] == "float32"


# ---------------------------------------------------------------- a model to train


def test_load_model_comes_frozen_unless_trainable():
    frozen, _ = load_model(MODEL, "cpu", "float32")
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    model, cfg = load_model(MODEL, "cpu", "float32", trainable=True)
    params = list(model.parameters())
    assert model.training and all(p.requires_grad for p in params)
    tokens = torch.tensor([[1, 368, 471, 369, 13]])
    logits = model(tokens, torch.arange(5).unsqueeze(0))  # positions (B, T); causal without a mask
    assert logits.shape == (1, 5, cfg.vocab_size)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in params)


def test_a_quantized_model_is_not_trainable():
    with pytest.raises(InputError, match=r"loaded as q4_0 cannot be trained.*load float32 or bfloat16"):
        load_model(MODEL, "cpu", "Q4_0", trainable=True)
    with pytest.raises(InputError, match="trainable must be True or False"):
        load_model(MODEL, "cpu", "float32", trainable="yes")


# ---------------------------------------------------------------- hints for type checkers


def test_every_package_ships_py_typed():
    """PEP 561: a checker uses an installed package's hints only where it holds py.typed; each package
    of pyproject's layout has one, and package-data puts it in the wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = setup["package-data"]
    for package, folder in setup["package-dir"].items():
        assert (REPO / folder / "py.typed").is_file(), folder
        assert "py.typed" in data.get("*", []) + data.get(package, []), package
        assert resources.files(package).joinpath("py.typed").is_file(), package  # the installed copy


# ---------------------------------------------------------------- error lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_errors_name_the_device_flag_and_argument():
    with pytest.raises(ModelLoadError) as error:
        Engine.load(device="cuda:1")
    line = str(error.value)
    assert line.startswith("device cuda:1 requested but no CUDA GPU is visible")
    assert "--device cpu" in line and "device='cpu'" in line


def test_unknown_device_is_refused():
    with pytest.raises(ModelLoadError, match=r"unknown device 'tpu'; choose one of auto, cpu, cuda, mps"):
        resolve_device("tpu")
    with pytest.raises(ModelLoadError, match="unknown device 'cuda:x'"):
        resolve_device("cuda:x")


def test_missing_folder_names_flag_and_argument(tmp_path):
    with pytest.raises(ModelLoadError) as error:
        load_model(tmp_path / "nowhere")
    assert "--model DIR" in str(error.value) and "its path in Python" in str(error.value)


def test_template_text_for_chat_template_is_refused_by_name(tmp_path):
    text = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(InputError, match=r"chat_template is the path of a template file, not the template's text"):
        Engine.load(device="cpu", chat_template=text)
    path = tmp_path / "t.jinja"  # the same text in a file is a template
    path.write_text(text)
    eng = Engine.load(device="cpu", chat_template=path)
    assert eng.template is not None and eng.template.source == text


def test_type_names_take_their_article(eng):
    with pytest.raises(InputError, match=r"got an int \(-1\)"):
        eng.token_text(-1)
    with pytest.raises(InputError, match=r"prompt_cache must be a PromptCache or None, got an object"):
        eng.generate([[1]], [SamplingParams(seed=0)], prompt_cache=object())


# ---------------------------------------------------------------- decode, the cache's lifetime


def test_decode_gives_the_answers_text(eng):
    ids = eng.encode(prompt="Hi")
    events = list(eng.generate([ids], [SamplingParams(temperature=0, max_new_tokens=40)]))
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.finish_reason == "eos"
    assert eng.decode(fin.token_ids, skip_special_tokens=True) == fin.text
    assert eng.decode(torch.tensor(ids)) == eng.tokenizer.decode(ids)
    with pytest.raises(InputError, match="outside the vocabulary"):
        eng.decode([10**6])


def test_kv_cache_is_freed_at_the_last_finished(eng, monkeypatch):
    """A caller that stops reading at the last Finished, and keeps the generator, holds no KV cache."""
    made: list[weakref.ref] = []

    class Recorded(KVCache):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(prefill, "KVCache", Recorded)
    ids = eng.encode(prompt="Tell me a story.")
    gen = eng.generate([ids, ids[:-1]], [SamplingParams(seed=1, max_new_tokens=8)] * 2)
    finished = 0
    while finished < 2:
        finished += isinstance(next(gen), Finished)
    assert made and all(ref() is None for ref in made)
    assert next(gen, None) is None  # and the stream ends there
    del gen


def test_a_template_error_names_the_flag_and_the_argument(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("Hello there, assistant:")  # never reads the messages
    with pytest.raises(ChatTemplateError) as error:
        Engine.load(device="cpu", chat_template=path)
    assert re.search(r"--chat-template FILE, or chat_template=PATH in Python", str(error.value))
