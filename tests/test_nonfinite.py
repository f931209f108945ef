"""Non-finite numbers at run time: a row whose logits are NaN or inf ends with finish_reason
"error" and a one-line message, never an exception or a token out of range; other rows go on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import make_model

from tiankong.engine.engine import Engine
from tiankong.engine.events import Finished, TokenEvent
from tiankong.engine.sampling import BatchSampler, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12, seed=0)
SAMPLED = SamplingParams(
    temperature=0.9,
    top_p=0.9,
    top_k=40,
    min_p=0.02,
    repetition_penalty=1.2,
    presence_penalty=0.3,
    max_new_tokens=12,
    seed=5,
)


def poison(folder: Path, name: str, edit) -> Path:
    """Change one tensor of the checkpoint in place with edit(tensor)."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors[name])
    save_file(tensors, path, metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("clean"), "llama")


def copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def run(eng, prompts, params):
    tokens: dict[int, list[TokenEvent]] = {i: [] for i in range(len(prompts))}
    done: dict[int, Finished] = {}
    for ev in eng.generate(prompts, params):
        if isinstance(ev, TokenEvent):
            assert ev.row not in done
            assert 0 <= ev.id < eng.cfg.vocab_size
            tokens[ev.row].append(ev)
        else:
            done[ev.row] = ev
    assert sorted(done) == list(range(len(prompts)))
    return tokens, done


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "infinite")])
def test_poisoned_layer_ends_rows_with_error(tmp_path, clean_folder, pack, value, kind):
    folder = poison(
        copy_model(clean_folder, tmp_path / "m"),
        "model.layers.1.mlp.down_proj.weight",
        lambda t: t.__setitem__((0, 0), value),
    )
    eng = Engine.load(folder, device="cpu", dtype="float32", pack=pack)
    prompts = [eng.encode("Once upon a time", raw=True), eng.encode("The quick brown fox", raw=True)]
    tokens, done = run(eng, prompts, [GREEDY, SAMPLED])
    for row in (0, 1):
        fin = done[row]
        assert fin.finish_reason == "error" and tokens[row] == [] and fin.text == ""
        assert fin.usage.completion_tokens == 0 and fin.token_ids == ()
        assert "\n" not in fin.message and "not finite" in fin.message
        assert "layers.1." in fin.message and kind in fin.message
        if pack:  # the packed name (layers.1.w2) says what it was in the checkpoint
            assert "layer 1's feed-forward down projection" in fin.message


@pytest.mark.parametrize("arch, named", [("llama", "layer 0's attention"), ("gemma3", "layers.0.attn.wq.weight")])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nan_in_a_packed_weight_without_the_compiled_step(tmp_path, monkeypatch, arch, named, dtype):
    """QA: under TIANKONG_NATIVE=0 (no compiled step) the weights are oneDNN-packed tensors, which
    torch.isfinite cannot read: a NaN weight gave a NotImplementedError traceback, not the one-line
    error naming the tensor that the compiled step's run gives."""
    from tiankong.engine import native, packed

    if not packed.can_pack(torch.device("cpu"), getattr(torch, dtype)):
        pytest.skip(f"no oneDNN packing for {dtype} on this CPU")
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_reason", "switched off by TIANKONG_NATIVE=0")
    name = "model.layers.0.self_attn.q_proj.weight"
    folder = poison(make_model(tmp_path / arch, arch), name, lambda t: t.__setitem__((3, 0), float("nan")))
    eng = Engine.load(folder, device="cpu", dtype=dtype)
    assert any(t.is_mkldnn for t in eng.model.buffers())  # the torch path's packed form, not the compiled step's
    _, done = run(eng, [eng.encode("Once upon a time", raw=True)], [GREEDY])
    message = done[0].message
    assert done[0].finish_reason == "error" and "\n" not in message
    assert "weight layers.0." in message and named in message and "holds NaN values" in message


def test_finite_weights_that_overflow_say_so(tmp_path, clean_folder):
    folder = poison(copy_model(clean_folder, tmp_path / "m"), "lm_head.weight", lambda t: t.copy_(t.sign() * 3e38))
    eng = Engine.load(folder, device="cpu", dtype="float32")
    _, done = run(eng, [eng.encode("Once", raw=True)], [SAMPLED])
    assert done[0].finish_reason == "error"
    assert "weights are finite" in done[0].message and "float32" in done[0].message


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_nan_row_leaves_the_good_row_untouched(tmp_path, clean_folder, pack, params):
    clean = Engine.load(clean_folder, device="cpu", dtype="float32", pack=pack)
    good = clean.encode("Once upon a time", raw=True)
    alone, alone_done = run(clean, [good], [params])
    used = set(good) | {e.id for e in alone[0]} | {0}  # 0 pads the shorter rows
    bad = clean.encode("def add(a, b): return a + b", raw=True)
    token = next(t for t in bad if t not in used)  # only the bad prompt reads this embedding row
    folder = poison(
        copy_model(clean_folder, tmp_path / "m"), "model.embed_tokens.weight", lambda t: t[token].fill_(float("nan"))
    )
    eng = Engine.load(folder, device="cpu", dtype="float32", pack=pack)
    tokens, done = run(eng, [bad, good, bad], [params, params, SAMPLED])
    assert done[0].finish_reason == done[2].finish_reason == "error"
    assert "embed" in done[0].message or "emb" in done[0].message
    assert [e.id for e in tokens[1]] == [e.id for e in alone[0]]
    assert done[1].text == alone_done[0].text and done[1].finish_reason == alone_done[0].finish_reason


@pytest.mark.parametrize(
    "params", [GREEDY, SAMPLED, SamplingParams(temperature=1.0, seed=1)], ids=["greedy", "filters", "plain"]
)
def test_sampler_never_picks_out_of_range(params):
    V = 384
    logits = torch.randn(4, V)
    logits[0] = float("nan")
    logits[1, 7] = float("nan")
    logits[2] = float("-inf")
    logits[3, 5] = float("inf")
    sampler = BatchSampler([params] * 4, V, torch.device("cpu"), [[1, 2]] * 4)
    for _ in range(3):
        ids = sampler.sample(sampler.process(logits))
        assert ((ids >= 0) & (ids < V)).all()
        sampler.update(ids)


def test_cli_generate_reports_the_error_and_exits_2_when_every_row_failed(monkeypatch, capsys, tmp_path, clean_folder):
    import json

    from helpers import cli

    folder = poison(
        copy_model(clean_folder, tmp_path / "m"),
        "model.layers.0.self_attn.q_proj.weight",
        lambda t: t.fill_(float("nan")),
    )
    code, out, err = cli(
        monkeypatch, capsys, "generate", "-m", folder, "--raw", "-p", "Once", "-p", "The", "--max-new-tokens", "4"
    )
    assert code == 2
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["finish_reason"] for r in recs] == ["error", "error"] and "not finite" in recs[0]["error"]
    lines = [x for x in err.strip().splitlines() if not x.startswith("loading ")]  # the log line before the load
    assert len(lines) == 2 and lines[0].startswith("error: row 1: the model's logits are not finite")
    assert "layers.0." in lines[0] and "Traceback" not in err
    # A healthy model: no error key, exit 0.
    code, out, err = cli(
        monkeypatch, capsys, "generate", "-m", clean_folder, "--raw", "-p", "Once", "--max-new-tokens", "2"
    )
    assert (
        code == 0
        and "error" not in json.loads(out)
        and err.startswith(f"loading {clean_folder.name} (")
        and len(err.splitlines()) == 1
    )
