"""Loading real Hugging Face folders: logits equal transformers' on the same weights; bad folders fail clearly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import STORIES, make_model

from tiankong.engine.config import ModelConfig
from tiankong.engine.errors import ModelLoadError
from tiankong.engine.model import load_model

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}
VARIANTS = {
    "llama": ("llama", {}),
    "llama-tied-headdim-llama3": ("llama", dict(tie_word_embeddings=True, head_dim=32, rope_parameters=LLAMA3_ROPE)),
    "mistral-window": ("mistral", dict(sliding_window=8)),
    "qwen2-bias": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "qwen3-bias-untied": ("qwen3", dict(attention_bias=True, tie_word_embeddings=False, head_dim=16)),
    "gpt2": ("gpt2", {}),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: make_model(tmp_path_factory.mktemp(name), arch, **ov) for name, (arch, ov) in VARIANTS.items()}


def hf_logits(folder, tokens):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(tokens).logits


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(folders, name):
    model, cfg = load_model(folders[name], device="cpu", dtype="float32")
    torch.manual_seed(1)
    tokens = torch.randint(0, cfg.vocab_size, (2, 24))  # 24 > the mistral window of 8
    with torch.no_grad():
        ours = model(tokens, torch.arange(24).expand(2, -1))
    ref = hf_logits(folders[name], tokens)
    assert ref.abs().max() > 1  # random weights with large init: logits are not all ~0
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)


def test_stories260k_logits_match_transformers():
    if not STORIES.exists():
        pytest.skip("../shared is absent")
    model, cfg = load_model(STORIES)
    tokens = torch.tensor([[1, 403, 407, 261, 378, 30, 100, 200, 300]])
    with torch.no_grad():
        ours = model(tokens, torch.arange(tokens.shape[1])[None])
    torch.testing.assert_close(ours, hf_logits(STORIES, tokens), atol=1e-5, rtol=1e-5)


def test_config_variants():
    base = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 100,
    }
    # transformers 4.x: rope_theta and rope_scaling at top level, torch_dtype
    v4 = ModelConfig.from_hf_config(
        {**base, "rope_theta": 5e5, "torch_dtype": "bfloat16", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    )
    # transformers 5.x: rope_parameters, dtype
    v5 = ModelConfig.from_hf_config(
        {**base, "dtype": "bfloat16", "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}}
    )
    assert v4.rope_theta == v5.rope_theta == 5e5
    assert v4.rope_scaling == v5.rope_scaling == {"rope_type": "llama3", "factor": 8.0}
    assert v4.torch_dtype == v5.torch_dtype == "bfloat16"
    assert v4.n_kv_heads == 4 and v4.head_dim == 16
    assert ModelConfig.from_hf_config({**base, "head_dim": 32}).head_dim == 32
    with pytest.raises(ModelLoadError, match="Qwen3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, GPT2LMHeadModel"):
        ModelConfig.from_hf_config({**base, "architectures": ["BertForMaskedLM"], "model_type": "bert"})
    with pytest.raises(ModelLoadError, match="yarn"):
        ModelConfig.from_hf_config({**base, "rope_scaling": {"type": "yarn", "factor": 4.0}})
    # Qwen3: q/k norms, head_dim 128 when absent (transformers' default), attention_bias covers o_proj.
    qwen3 = {**base, "architectures": ["Qwen3ForCausalLM"]}
    q = ModelConfig.from_hf_config(qwen3)
    assert q.qk_norm and q.head_dim == 128 and not q.qkv_bias and not q.o_bias
    assert ModelConfig.from_hf_config({**qwen3, "attention_bias": True}).o_bias
    assert not ModelConfig.from_hf_config({**base, "architectures": ["Qwen2ForCausalLM"]}).o_bias
    with pytest.raises(ModelLoadError, match="attention_bias is 'false'"):
        ModelConfig.from_hf_config({**qwen3, "attention_bias": "false"})
    # Qwen2/3 windows: none unless asked; asked, only layers from max_window_layers on are windowed.
    windowed = {**qwen3, "sliding_window": 8, "use_sliding_window": True}
    assert ModelConfig.from_hf_config({**qwen3, "sliding_window": 8}).sliding_window is None
    assert ModelConfig.from_hf_config(windowed).sliding_window is None  # max_window_layers 28 > 2 layers
    assert ModelConfig.from_hf_config({**windowed, "max_window_layers": 0}).sliding_window == 8
    with pytest.raises(ModelLoadError, match="full-attention layers among sliding ones"):
        ModelConfig.from_hf_config({**windowed, "max_window_layers": 1})


def test_sharded_checkpoint(tmp_path, folders):
    from transformers import AutoModelForCausalLM

    src = folders["llama"]
    out = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(src).save_pretrained(out, max_shard_size="40KB")
    assert (out / "model.safetensors.index.json").exists() and not (out / "model.safetensors").exists()
    a, _ = load_model(src)
    b, _ = load_model(out)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)


def test_bfloat16_and_memory_layout(folders):
    model, _ = load_model(folders["qwen2-bias"], dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.inv_freq.dtype == torch.float32  # RoPE frequencies stay exact
    tokens = torch.arange(10)[None]
    with torch.no_grad():
        low = model(tokens, torch.arange(10)[None]).float()
    ref = hf_logits(folders["qwen2-bias"], tokens)
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()


def test_bin_weights_read_safely(tmp_path, folders):
    src = folders["gpt2"]
    out = tmp_path / "bin"
    out.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, out)
    torch.save(load_file(src / "model.safetensors"), out / "pytorch_model.bin")
    a, _ = load_model(src)
    b, _ = load_model(out)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))

    class Evil:  # a pickle that would run code when unpickled without weights_only
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"wte.weight": Evil()}, out / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="cannot read pytorch_model.bin safely"):
        load_model(out)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_bad_folders(tmp_path, folders):
    src = folders["llama"]
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path / "empty")

    bad_json = _copy(src, tmp_path / "badjson")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(bad_json)

    unsupported = _copy(src, tmp_path / "unsupported")
    cfg = json.loads((unsupported / "config.json").read_text())
    cfg.update(architectures=["FalconForCausalLM"], model_type="falcon")
    (unsupported / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unsupported architecture \\(FalconForCausalLM\\)"):
        load_model(unsupported)

    no_weights = _copy(src, tmp_path / "noweights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(no_weights)

    truncated = _copy(src, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(truncated)

    garbage = _copy(src, tmp_path / "garbage")
    (garbage / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(garbage)

    missing = _copy(src, tmp_path / "missing")
    sd = load_file(missing / "model.safetensors")
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, missing / "model.safetensors")
    with pytest.raises(
        ModelLoadError, match=r"lacks 1 tensor\(s\) the model needs: model\.layers\.1\.mlp\.up_proj\.weight$"
    ):
        load_model(missing)

    misshapen = _copy(src, tmp_path / "misshapen")
    cfg = json.loads((misshapen / "config.json").read_text())
    cfg["intermediate_size"] = 100
    (misshapen / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="mlp.*has shape .* but config.json implies"):
        load_model(misshapen)


@pytest.mark.parametrize(
    "name", ["llama", "llama-tied-headdim-llama3", "qwen2-bias", "qwen3", "qwen3-bias-untied", "gpt2"]
)
def test_save_pretrained_round_trip(tmp_path, folders, name):
    """A saved folder (what the trainers write) loads back exactly, and transformers reads it too."""
    from tiankong.engine.model import save_pretrained

    model, cfg = load_model(folders[name])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # so we are not just re-reading the original file
    out = save_pretrained(model, cfg, tmp_path / "saved", tokenizer_from=folders[name])
    assert (out / "tokenizer.json").exists() and not list(out.glob(".*"))
    again, cfg2 = load_model(out)
    assert cfg2.rope_scaling == cfg.rope_scaling and cfg2.tie_embeddings == cfg.tie_embeddings
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    tokens = torch.arange(12)[None]
    with torch.no_grad():
        ours = again(tokens, torch.arange(12)[None])
    torch.testing.assert_close(ours, hf_logits(out, tokens), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("path", ["plain", "torch"])
def test_qwen3_greedy_padded_batch_matches_transformers(folders, path):
    """Qwen3's per-head q/k norms through generation: three prompts of different lengths in one
    left-padded batch, each row's greedy tokens equal to transformers' run of that row alone; in the
    plain modules and in PackedLlama's torch path (q/k norm gains permuted into RoPE-pair order)."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from tiankong.engine.engine import Engine
    from tiankong.engine.events import TokenEvent
    from tiankong.engine.llama_packed import PackedLlama
    from tiankong.engine.packed import can_pack
    from tiankong.engine.sampling import SamplingParams

    folder = folders["qwen3"]
    eng = Engine.load(folder, device="cpu", dtype="float32", pack=False)
    if path == "torch":
        if not can_pack(torch.device("cpu"), torch.float32):
            pytest.skip("oneDNN packing is unavailable here")
        eng = replace(eng, model=PackedLlama(load_model(folder, "cpu", "float32")[0], native=False))
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompts = [eng.encode(t, raw=True) for t in ("Once upon a time there was", "The dog", "A cat sat on the mat and")]
    n = 16
    greedy = SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, max_new_tokens=n, seed=0)
    ours = {i: [] for i in range(len(prompts))}
    for ev in eng.generate(prompts, [greedy] * len(prompts)):
        if isinstance(ev, TokenEvent):
            ours[ev.row].append(ev.id)
    for i, ids in enumerate(prompts):
        ref = hf.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0, eos_token_id=None
        )[0, len(ids) :].tolist()
        assert ours[i] and ours[i] == ref[: len(ours[i])], i  # a row may end early on EOS
    if path == "torch":
        ids = torch.tensor([prompts[0] + prompts[2]])
        with torch.inference_mode():
            logits = eng.model(ids, torch.arange(ids.shape[1])[None])
        torch.testing.assert_close(logits, hf(ids).logits, atol=2e-5, rtol=1e-4)
