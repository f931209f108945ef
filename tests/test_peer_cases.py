"""The peers' own test cases, run against tiankong: llama.cpp's tests/test-sampling.cpp and
tests/test-chat-template.cpp, transformers' tests/generation/test_logits_process.py.

The cases are data in tests/peers/*.json, each file naming its source (repository, file, test
function, version) and what it leaves out and why; this module only says how each peer test maps
onto tiankong's pure sampling stages and its chat template renderer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np  # after torch: importing numpy first crashes this torch build
import pytest
import torch

from tiankong.engine.chat import ChatTemplate
from tiankong.engine.errors import InputError
from tiankong.engine.sampling import BatchSampler, SamplingParams
from tiankong.engine.sampling_stages import (
    apply_penalties,
    apply_temperature,
    min_p_filter,
    top_k_filter,
    top_p_filter,
)

PEERS = Path(__file__).parent / "peers"
LLAMA_SAMPLING = json.loads((PEERS / "llama_cpp_test_sampling.json").read_text())
HF_LOGITS = json.loads((PEERS / "transformers_test_logits_process.json").read_text())
LLAMA_CHAT = json.loads((PEERS / "llama_cpp_test_chat_template.json").read_text(encoding="utf-8"))


def log_of(probs: list[float]) -> torch.Tensor:
    """(1, V) float32 logits log(p), as llama.cpp's sampler_tester builds them (logf)."""
    return torch.tensor([probs], dtype=torch.float32).log()


def case_id(case: dict) -> str:
    args = {k: v for k, v in case.items() if k not in ("test", "probs", "expected", "order", "tiankong")}
    return f"{case['test']}{args}"


# --- llama.cpp tests/test-sampling.cpp ------------------------------------------------------------


def _llama_stage(case: dict, x: torch.Tensor) -> torch.Tensor:
    """The tiankong stage a llama.cpp test function exercises: (1, V) logits -> (1, V) logits."""
    test = case["test"]
    if test == "test_temp":
        if case["temp"] == 0:  # greedy lives in the sampler: a one-hot on the argmax
            s = BatchSampler([SamplingParams(temperature=0, seed=0)], x.shape[-1], torch.device("cpu"), [[]])
            return s.process(x).log()
        return apply_temperature(x, case["temp"])
    if test == "test_top_k":
        return top_k_filter(x, case["k"])
    if test == "test_top_p":
        return top_p_filter(x, case["p"])
    if test == "test_min_p":
        return min_p_filter(x, case["p"])
    if test == "test_penalties":
        V = x.shape[-1]
        tokens = torch.tensor(case["last_tokens"])
        seen = torch.zeros(1, V, dtype=torch.bool)
        seen[0, tokens] = True
        counts = torch.bincount(tokens, minlength=V).reshape(1, V)
        return apply_penalties(x, seen, counts, case["repeat_penalty"], case["alpha_presence"], case["alpha_frequency"])
    raise AssertionError(f"no tiankong stage for {test}")


@pytest.mark.parametrize("case", LLAMA_SAMPLING["cases"], ids=case_id)
def test_llama_cpp_sampling_cases(case):
    if "tiankong" in case:  # outside tiankong's ranges: rejected up front instead
        with pytest.raises(InputError):
            SamplingParams(min_p=case["p"])
        return
    x = log_of(case["probs"])
    out = _llama_stage(case, x)[0]
    kept = torch.isfinite(out) | (case["test"] == "test_temp")  # llama.cpp keeps every candidate
    probs = out.softmax(dim=-1)[kept].double()
    if case["order"] == "descending":
        probs = probs.sort(descending=True).values
    assert probs.tolist() == pytest.approx(case["expected"], abs=1e-5)


def _f32(x) -> np.float32:
    if isinstance(x, str):  # "9997.9f/9999.0f"
        a, b = x.split("/")
        return np.float32(a.rstrip("f")) / np.float32(b.rstrip("f"))
    return np.float32(x)


@pytest.mark.parametrize("args", LLAMA_SAMPLING["sampler_queue"]["cases"], ids=str)
def test_llama_cpp_sampler_queue(args):
    """test_sampler_queue: after each stage, the number of tokens kept and the lowest one kept
    equal what llama.cpp's own oracle (ported line by line below, float32 included) computes."""
    n_vocab, sequence, top_k, top_p, min_p = args
    top_p, min_p = _f32(top_p), _f32(min_p)
    x = torch.tensor([[math.log(i) if i else -math.inf for i in range(n_vocab)]])
    min_id = 0
    for stage in sequence:
        if stage == "k":
            x = top_k_filter(x, top_k)
        elif stage == "p":
            x = top_p_filter(x, float(top_p))
        else:
            x = min_p_filter(x, float(min_p))
        finite = torch.isfinite(x[0])
        # llama.cpp's candidate list still holds token 0 (probability 0) while token 1 is kept;
        # tiankong's logit for it is -inf from the start.
        size = int(finite.sum()) + int(finite[1])
        lowest = int(finite.nonzero().min())
        if stage == "k":
            expected = min(size, top_k)
            min_id = max(min_id, n_vocab - top_k)
        elif stage == "p":
            divisor = n_vocab * (n_vocab - 1) // 2 - min_id * (min_id - 1) // 2
            target = math.ceil(np.float32(top_p * np.float32(divisor)))
            min_id, expected, cumsum = n_vocab, 0, 0
            while True:  # do-while: at least one token
                min_id -= 1
                expected += 1
                cumsum += min_id
                if cumsum >= target:
                    break
            if min_id == 1:
                min_id, expected = 0, expected + 1
        else:
            expected = max(math.ceil(np.float32((np.float32(1) - min_p) * np.float32(n_vocab))), 1)
            expected = min(expected, size)
            min_id = max(math.floor(np.float32(min_p * np.float32(n_vocab))), 1, n_vocab - size)
            min_id = min(min_id, n_vocab - 1)
        assert size == expected, f"after {stage}"
        assert bool(finite[n_vocab - 1])
        if size < n_vocab:  # the whole vocabulary kept ends at token 0 by definition
            assert lowest == min_id, f"after {stage}"


# --- transformers tests/generation/test_logits_process.py -------------------------------------


def _hf(name: str) -> list[dict]:
    return [c for c in HF_LOGITS["cases"] if c["test"] == name]


@pytest.mark.parametrize("case", _hf("test_top_k_dist_warper"))
def test_transformers_top_k(case):
    scores = torch.tensor(case["scores"], dtype=torch.float32)
    out = top_k_filter(scores, 3)
    assert torch.isinf(out).tolist() == case["expected_inf"]
    assert not torch.equal(out, scores)


@pytest.mark.parametrize("case", _hf("test_top_p_dist_warper"), ids=lambda c: c["warper"])
def test_transformers_top_p(case):
    p = 0.8 if "0.8" in case["warper"] else 0.9
    if "probs" in case:
        out = top_p_filter(torch.tensor(case["probs"]).log(), p)
        expected = torch.tensor(case["expected_probs"])
        torch.testing.assert_close(out.exp(), expected, rtol=case["atol"], atol=case["atol"])
    else:
        out = top_p_filter(torch.tensor(case["scores"], dtype=torch.float32), p)
        assert torch.isfinite(out).sum(dim=-1).tolist() == case["expected_kept_count"]


@pytest.mark.parametrize("case", _hf("test_min_p_dist_warper"))
def test_transformers_min_p(case):
    out = min_p_filter(torch.tensor(case["probs"]).log(), 0.05)
    expected = torch.tensor(case["expected_probs"])
    torch.testing.assert_close(out.exp(), expected, rtol=case["atol"], atol=case["atol"])


@pytest.mark.parametrize("case", _hf("test_temperature_dist_warper"))
def test_transformers_temperature(case):
    scores = torch.tensor(case["scores"])
    before = scores.clone()
    probs = scores.softmax(-1)
    sharp = apply_temperature(scores, case["temperatures"]["sharper"]).softmax(-1)
    smooth = apply_temperature(scores, case["temperatures"]["smoother"]).softmax(-1)
    torch.testing.assert_close(probs[0], sharp[0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(probs[0], smooth[0], rtol=1e-3, atol=1e-3)
    assert probs[1].max() < sharp[1].max() and probs[1].min() > sharp[1].min()
    assert probs[1].max() > smooth[1].max() and probs[1].min() < smooth[1].min()
    assert torch.equal(scores, before)


@pytest.mark.parametrize("case", _hf("test_repetition_penalty_dist_process"))
def test_transformers_repetition_penalty(case):
    scores = torch.tensor(case["scores"])
    seen = torch.zeros_like(scores, dtype=torch.bool)
    for row, ids in enumerate(case["input_ids"]):
        seen[row, ids] = True
    out = apply_penalties(scores, seen, None, 2.0, 0.0, 0.0)
    for where, value in case["expected"].items():
        row, col = map(int, where.split(","))
        assert out[row, col].item() == pytest.approx(value)
    assert not torch.equal(out, scores)


# --- llama.cpp tests/test-chat-template.cpp ----------------------------------------------------


@pytest.mark.parametrize("case", LLAMA_CHAT["cases"], ids=lambda c: c["name"])
def test_llama_cpp_chat_templates(case):
    messages = [dict(m) for m in LLAMA_CHAT["conversation"]]
    if case["system_merged_into_first_user"]:
        system = messages.pop(0)
        messages[0]["content"] = system["content"] + "\n" + messages[0]["content"]
    messages += case["extra_conversation"]
    template = ChatTemplate(case["template"], case["bos_token"], case["eos_token"])
    assert template.render(messages, add_generation_prompt=True) == case["expected"]
