"""The bundled model (models/tiankong-mini) and the scripts that build it.

The model must load in tiankong and in transformers with the same logits, carry its chat template,
answer the instructions it was tuned on (greedy, so the checks are exact), and the generators that
made its data must be deterministic. One thread: the model is small and the machine may be busy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

try:
    from tiankong.models import default_model_dir
    from tiankong.models.build import card, corpus, sft_data  # the build scripts: the package models.build
except ImportError:  # the package mapping for models/ is not installed yet
    sys.path.append(str(REPO))
    from models import default_model_dir
    from models.build import card, corpus, sft_data

MODEL = default_model_dir()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine():
    from tiankong.engine.engine import Engine

    return Engine.load(MODEL, device="cpu", dtype="float32")


def greedy(engine, prompt: str, max_new_tokens: int = 300, raw: bool = False):
    from tiankong.engine.sampling import SamplingParams

    ids = engine.encode(prompt=prompt, raw=raw)
    events = list(engine.generate([ids], [SamplingParams(temperature=0.0, seed=0, max_new_tokens=max_new_tokens)]))
    return events[-1]


# ---------------------------------------------------------------- the folder


def test_folder_is_complete_and_small():
    assert MODEL.name == "tiankong-mini" and MODEL.is_dir()
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "README.md",
    ):
        assert (MODEL / name).is_file(), name
    assert (MODEL / "model.safetensors").stat().st_size <= 25 * 1024 * 1024
    config = json.loads((MODEL / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    from safetensors import safe_open

    with safe_open(str(MODEL / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # noqa: SIM118
    card = (MODEL / "README.md").read_text(encoding="utf-8")
    for needle in ("python -m models.build.build", "before SFT", "after SFT", "Known limits", "MIT"):
        assert needle in card


def test_loads_with_a_chat_template(engine):
    info = engine.info()
    assert info["architecture"] == "LlamaForCausalLM" and info["chat_template"]
    assert 1_000_000 < info["parameters"] < 10_000_000
    assert engine.tokenizer.eos_ids == {2} and engine.tokenizer.bos_id == 1
    ids = engine.encode(messages=[{"role": "user", "content": "Hi!"}])
    assert engine.tokenizer.decode(ids).endswith("<|user|>\nHi!\n<|assistant|>\n")


def test_matches_transformers(engine):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(MODEL)
    for text in ("Once upon a time, there was a cat named Tom.", "从前有一只小狗。", "Emoji 😀 and 3 + 4 = 7"):
        assert hf_tok(text)["input_ids"] == engine.tokenizer.encode(text)
    messages = [{"role": "user", "content": "用中文写一个关于小狗的故事。"}]
    hf_ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    hf_ids = hf_ids["input_ids"] if isinstance(hf_ids, dict) or hasattr(hf_ids, "keys") else hf_ids
    assert list(hf_ids) == engine.encode(messages=messages)

    hf = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    tokens = torch.tensor([engine.encode(messages=messages)])
    with torch.no_grad():
        ref = hf(tokens).logits
        ours = engine.model(tokens, torch.arange(tokens.shape[1])[None])
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- what it was tuned to do


@pytest.mark.parametrize(
    "prompt, chinese, words",
    [
        ("Write a short story about a cat named Tom.", False, ["Tom", "cat"]),
        ("Tell me a story about a dog called Biscuit.", False, ["Biscuit", "dog"]),
        ("用中文写一个关于小狗的故事。", True, ["小狗"]),
    ],
)
def test_greedy_story_is_whole_names_its_hero_and_is_in_the_asked_language(engine, prompt, chinese, words):
    # Over 40 fresh (animal, name) requests the card reports how often name and animal are used; these
    # greedy answers are fixed for the bundled weights.
    done = greedy(engine, prompt)
    assert done.finish_reason == "eos", done.text
    assert len(done.text) > 80
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in done.text)
    assert (cjk > len(done.text) / 2) if chinese else (cjk == 0 and len(done.text.split()) > 20), done.text
    for w in words:
        assert w in done.text, done.text


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("What sound does a cow make?", "moo"),
        ("蜜蜂住在哪里？", "蜂巢"),
        ("What colour is a banana?", "yellow"),
        ("What do bees make?", "honey"),
    ],
)
def test_greedy_short_answers(engine, prompt, expected):
    done = greedy(engine, prompt, max_new_tokens=40)
    assert done.finish_reason == "eos", done.text
    assert expected in done.text, done.text


def test_raw_completion_is_text(engine):
    done = greedy(engine, "Once upon a time", max_new_tokens=60, raw=True)
    words = done.text.split()
    assert len(words) > 20 and sum(w.isalpha() for w in words) > 10


def test_presets_give_different_samples(engine):
    """The distributions are spread: creative sampling with different seeds gives different stories."""
    from tiankong.engine.sampling import SamplingParams

    ids = engine.encode(prompt="Write a short story about a rabbit.")
    params = [SamplingParams(temperature=1.0, top_p=0.95, min_p=0.05, seed=s, max_new_tokens=40) for s in range(4)]
    texts = {ev.text for ev in engine.generate([ids] * 4, params) if hasattr(ev, "finish_reason")}
    assert len(texts) == 4


# ---------------------------------------------------------------- the build scripts


def test_generators_are_deterministic_and_bilingual():
    first = corpus.documents(50, seed=1)
    assert first == corpus.documents(50, seed=1)
    assert first != corpus.documents(50, seed=2)
    assert any(d.isascii() for d in first) and any("\u4e00" <= ch <= "\u9fff" for d in first for ch in d)
    rows = sft_data.rows(40, seed=2)
    assert rows == sft_data.rows(40, seed=2)
    for r in rows:
        roles = [m["role"] for m in r["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant" and all(m["content"] for m in r["messages"])


def test_written_files_are_what_the_trainers_read(tmp_path):
    from tiankong.trainers.data import load_conversations, load_texts

    corpus.write_corpus(tmp_path / "c.txt", 30, seed=1)
    corpus.write_corpus(tmp_path / "c2.txt", 30, seed=1)
    assert (tmp_path / "c.txt").read_bytes() == (tmp_path / "c2.txt").read_bytes()
    assert len(load_texts(tmp_path / "c.txt")) == 30
    sft_data.write_rows(tmp_path / "s.jsonl", 30, seed=2)
    stats = sft_data.write_rows(tmp_path / "e.jsonl", 30, seed=2, exclude=tmp_path / "s.jsonl")
    assert stats == {"rows": 0, "dropped_as_duplicates": 30}
    assert len(load_conversations(tmp_path / "s.jsonl")) == 30


def test_sft_answers_are_correct():
    import random

    rng = random.Random(0)
    for _ in range(200):
        q, a = (m["content"] for m in sft_data.math_task(rng))
        nums = [
            int(t)
            for t in q.replace("?", " ")
            .replace("？", " ")
            .replace("加", " + ")
            .replace("减", " - ")
            .replace("等于几", "")
            .replace("等于多少", "")
            .split()
            if t.isdigit()
        ]
        result = nums[0] - nums[1] if ("minus" in q or "-" in q or "减" in q) else nums[0] + nums[1]
        assert str(result) in a.replace(str(nums[0]), "", 1).replace(str(nums[1]), "", 1), (q, a)


def test_build_smoke_data_and_init(tmp_path):
    """The first stages of the real build, at tiny sizes (the full --smoke run trains too: see the card)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.build.build",  # the command the model card gives, from the repository root
            "--smoke",
            "--work",
            str(tmp_path),
            "--out",
            str(tmp_path / "model"),
            "--to-stage",
            "init",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["init"]["parameters"] > 0 and report["corpus_tokens"] > 0
    from tiankong.engine.engine import Engine

    eng = Engine.load(tmp_path / "init", device="cpu")
    assert eng.tokenizer.decode(eng.tokenizer.encode("<|user|>\n你好", add_special_tokens=False)) == "<|user|>\n你好"


def test_card_renders_from_the_report():
    report = json.loads((MODEL / "build_report.json").read_text(encoding="utf-8"))
    assert card.render(report) == (MODEL / "README.md").read_text(encoding="utf-8")


def test_sampled_english_stories_stay_in_english(engine):
    # A tuned model that has lost its languages' separation shows it first under sampling: a story that
    # switches to Chinese pieces mid-sentence (an SFT with 4-conversation batches did that to 8 of these 48).
    from tiankong.engine.events import Finished
    from tiankong.presets import load_presets

    balanced = load_presets()["balanced"].params
    asks = [
        "Write a short story about a cat.",
        "Tell me a story about a fox.",
        "Write a story about a bear named Ben.",
        "Tell me a short story about a rabbit.",
        "Write a story about a little bird.",
        "Tell me a story about a dog called Max.",
    ]
    prompts = [engine.encode(messages=[{"role": "user", "content": q}]) for q in asks for _ in range(8)]
    params = [balanced.replace(seed=s, max_new_tokens=200) for _ in asks for s in range(8)]
    done = [ev for ev in engine.generate(prompts, params) if isinstance(ev, Finished)]
    mixed = [d.text for d in done if any("\u4e00" <= ch <= "\u9fff" for ch in d.text)]
    assert len(done) == 48 and len(mixed) <= 1, mixed
