"""Loading real Hugging Face folders: logits equal transformers' on the same weights; bad folders fail clearly."""

from __future__ import annotations

import json
import math
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
    "phi3": ("phi3", {}),  # long-rope (long factors past 16 positions), RoPE over 12 of 16 head dims
    # Phi-3-mini-4k's shape: plain RoPE over whole heads, a window over every layer
    "phi3-4k-window": ("phi3", dict(rope_parameters=None, partial_rotary_factor=1.0, sliding_window=8)),
    "gemma2": ("gemma2", {}),
    "gemma3": ("gemma3", {}),
    "gemma3-bias-untied": ("gemma3", dict(attention_bias=True, tie_word_embeddings=False)),
    "gemma3-vision": ("gemma3-vision", {}),  # an image-text checkpoint: its text model (saved alone)
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
    tokens = torch.randint(0, cfg.vocab_size, (2, 24))  # 24 > the windows (8, 6) and Phi-3's 16 short positions
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
    with pytest.raises(
        ModelLoadError,
        match="Phi3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, GPT2LMHeadModel",
    ):
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


def test_an_architecture_not_supported_is_refused_whatever_its_model_type(tmp_path):
    """Only config.json without `architectures` falls back to model_type: a folder naming a class
    tiankong lacks (custom code, a classifier) is refused by name, not loaded as a Llama."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_labels=1,
            pad_token_id=0,
        )
    ).save_pretrained(tmp_path / "seqcls")
    with pytest.raises(
        ModelLoadError, match=r"LlamaForSequenceClassification is a classifier \(score head\), not a causal LM"
    ):
        load_model(tmp_path / "seqcls")
    config = json.loads((tmp_path / "seqcls" / "config.json").read_text())
    assert config["model_type"] == "llama"
    supported = "tiankong supports LlamaForCausalLM, MistralForCausalLM"
    for archs in (["EvilModel"], ["FooForCausalLM"], ["LlamaForCausalLM", "EvilModel"]):
        evil = {**config, "architectures": archs, "auto_map": {"AutoModelForCausalLM": "evil.EvilModel"}}
        with pytest.raises(ModelLoadError, match=rf"unsupported architecture \({archs[-1]}\); {supported}"):
            ModelConfig.from_hf_config(evil)
    del config["architectures"]
    assert ModelConfig.from_hf_config(config).architecture == "LlamaForCausalLM"
    shown = str(
        pytest.raises(
            ModelLoadError, ModelConfig.from_hf_config, {**config, "architectures": ["\x1b[2J" + "E" * 10**5]}
        ).value
    )
    assert "\x1b" not in shown and len(shown) < 1000 and "E…" in shown


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
    "name",
    [
        "llama",
        "llama-tied-headdim-llama3",
        "qwen2-bias",
        "qwen3",
        "qwen3-bias-untied",
        "phi3",
        "gemma2",
        "gemma3",
        "gemma3-vision",
        "gpt2",
    ],
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
    tokens = torch.arange(20)[None]  # past Phi-3's 16 short positions and the Gemma window of 6
    with torch.no_grad():
        ours = again(tokens, torch.arange(20)[None])
    torch.testing.assert_close(ours, hf_logits(out, tokens), atol=2e-5, rtol=1e-5)
    if cfg.architecture == "Phi3ForCausalLM":  # saved fused, as transformers names them
        assert "model.layers.0.self_attn.qkv_proj.weight" in load_file(out / "model.safetensors")


@pytest.mark.parametrize("path", ["plain", "torch"])
@pytest.mark.parametrize("name", ["qwen3", "phi3", "phi3-4k-window", "gemma2", "gemma3"])
def test_greedy_padded_batch_matches_transformers(folders, name, path):
    """Generation through the features that differ from Llama (Qwen3's q/k norms, Phi-3's fused
    weights, long-rope and partial rotary, Gemma's local layers and soft-caps): three prompts of
    different lengths in one left-padded batch, decoding past the windows and Phi-3's 16 short
    positions; each row's greedy tokens equal transformers'. In the plain modules and the packed
    torch path (PackedLlama without the compiled step; Gemma: oneDNN-packed linears)."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from tiankong.engine.engine import Engine
    from tiankong.engine.events import TokenEvent
    from tiankong.engine.llama_packed import PackedLlama
    from tiankong.engine.packed import PackedLinear, can_pack, pack_linears
    from tiankong.engine.sampling import SamplingParams

    folder = folders[name]
    eng = Engine.load(folder, device="cpu", dtype="float32", pack=False)
    if path == "torch":
        if not can_pack(torch.device("cpu"), torch.float32):
            pytest.skip("oneDNN packing is unavailable here")
        plain = load_model(folder, "cpu", "float32")[0]
        model = pack_linears(plain) if name.startswith("gemma") else PackedLlama(plain, native=False)
        assert not isinstance(model, PackedLlama) or not model.native
        assert isinstance(model, PackedLlama) or isinstance(model.layers[0].attn.wq, PackedLinear)
        eng = replace(eng, model=model)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    texts = [("Once upon a time there was", "The dog", "A cat sat on the mat and")]  # 20 tokens at most
    if name == "phi3":  # and a batch 8 wide, whose decoding crosses the 16 short positions
        texts.append(("The dog", "Once", "A cat sat"))
    n = 16
    greedy = SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, max_new_tokens=n, seed=0)
    for batch in texts:
        prompts = [eng.encode(t, raw=True) for t in batch]
        ours = {i: [] for i in range(len(prompts))}
        for ev in eng.generate(prompts, [greedy] * len(prompts)):
            if isinstance(ev, TokenEvent):
                ours[ev.row].append(ev.id)
        # Phi-3: each row switches to long-rope's long factors when its own positions pass 16, as
        # transformers does for that prompt alone (its padded batch switches every row at once).
        refs = [hf_greedy(hf, [ids], n)[0] for ids in prompts]
        for i, ref in enumerate(refs):
            assert ours[i] and ours[i] == ref[: len(ours[i])], i  # a row may end early on EOS
    if path == "torch":
        ids = torch.tensor([prompts[0] + prompts[2]])
        with torch.inference_mode():
            logits = eng.model(ids, torch.arange(ids.shape[1])[None])
        # Summation orders differ (oneDNN; Phi-3's attention factor folded into the q/k rows):
        # measured up to 3.7e-5 on logits of ~10, while a wrong rotation or mask is off by ~1.
        torch.testing.assert_close(logits, hf(ids).logits, atol=1e-4, rtol=1e-4)


def hf_greedy(hf, prompts: list[list[int]], n: int) -> list[list[int]]:
    """transformers' greedy continuations of left-padded prompts in one batch (n tokens each)."""
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(
        ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0, eos_token_id=None
    )
    return out[:, P:].tolist()


@pytest.mark.parametrize("name", ["phi3", "gemma2", "gemma3", "gemma3-vision"])
def test_generate_cli_on_phi3_and_gemma(monkeypatch, capsys, folders, name):
    """`tiankong generate` on a tiny Phi-3 / Gemma folder: greedy tokens equal transformers'."""
    from helpers import cli
    from transformers import AutoModelForCausalLM

    from tiankong.engine.engine import Engine

    n, prompt = 12, "Once upon a time"  # 15 tokens: Phi-3 switches to the long factors while decoding
    code, out, err = cli(
        monkeypatch, capsys, "generate", "-m", folders[name], "--raw", "-p", prompt, "--temperature", "0",
        "--max-new-tokens", str(n), "--top-logprobs", "1",
    )  # fmt: skip
    assert code == 0, err
    (rec,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    ids = Engine.load(folders[name], device="cpu", dtype="float32", pack=False).encode(prompt, raw=True)
    hf = AutoModelForCausalLM.from_pretrained(folders[name], dtype=torch.float32).eval()
    ref = hf_greedy(hf, [ids], n)[0]
    got = [t["id"] for t in rec["tokens"]]
    assert got and got == ref[: len(got)]


def test_config_phi3_and_gemma():
    """Phi-3 and Gemma config.json spellings (4.x and 5.x) map as transformers reads them, and what
    tiankong cannot run is refused in one line."""
    base = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 96}
    base["vocab_size"] = 100
    phi3 = {**base, "architectures": ["Phi3ForCausalLM"], "max_position_embeddings": 1024}
    long = {"short_factor": [1.0] * 8, "long_factor": [2.0] * 8}
    # "su" (Phi-3 as released) is long-rope; original_max_position_embeddings at the top level wins.
    c = ModelConfig.from_hf_config(
        {**phi3, "original_max_position_embeddings": 64, "rope_scaling": {"type": "su", **long}}
    )
    assert c.rope_scaling["rope_type"] == "longrope" and c.rope_scaling["original_max_position_embeddings"] == 64
    from tiankong.engine.config import to_hf_config
    from tiankong.engine.rope import rope_attention_factor

    assert rope_attention_factor(c) == pytest.approx((1 + math.log(16) / math.log(64)) ** 0.5)
    assert to_hf_config(c)["original_max_position_embeddings"] == 64
    # partial rotary from the top level (4.x) or the RoPE settings (5.x): 12 of 16 dims, 6 factors each
    six = {"short_factor": [1.0] * 6, "long_factor": [2.0] * 6}
    v4 = ModelConfig.from_hf_config(
        {**phi3, "partial_rotary_factor": 0.75, "rope_scaling": {"type": "longrope", **six}}
    )
    rp = {"rope_type": "longrope", "partial_rotary_factor": 0.75, "rope_theta": 1e4, **six}
    v5 = ModelConfig.from_hf_config({**phi3, "rope_parameters": rp})
    assert v4.rotary_dim == v5.rotary_dim == 12
    with pytest.raises(ModelLoadError, match="short_factor must be a list of 8 positive numbers"):
        ModelConfig.from_hf_config({**phi3, "rope_scaling": {"type": "su", **long, "short_factor": [1.0] * 7}})
    with pytest.raises(ModelLoadError, match="partial_rotary_factor is 2"):
        ModelConfig.from_hf_config({**phi3, "partial_rotary_factor": 2})
    # Gemma 2: alternate local and global layers from the first; Gemma 3: every sixth is global.
    g2 = ModelConfig.from_hf_config({**base, "architectures": ["Gemma2ForCausalLM"]})
    assert g2.layer_types == ("sliding_attention", "full_attention") * 2 and g2.sliding_window is None
    assert g2.local_window == 4096 and g2.attn_softcap == 50.0 and g2.final_softcap == 30.0 and g2.head_dim == 256
    assert g2.tie_embeddings and g2.attn_scale == 256**-0.5 and g2.local_rope_theta is None
    assert g2.max_seq_len == 8192 and g2.norm_eps == 1e-6  # transformers' defaults, per architecture
    bare_phi3 = ModelConfig.from_hf_config({**base, "architectures": ["Phi3ForCausalLM"]})
    assert bare_phi3.norm_eps == 1e-5 and bare_phi3.max_seq_len == 4096
    gemma3 = {**base, "architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 7}
    g3 = ModelConfig.from_hf_config({**gemma3, "rope_local_base_freq": 5e3, "attn_logit_softcapping": 9.0})
    assert g3.layer_types == ("sliding_attention",) * 5 + ("full_attention", "sliding_attention")
    assert g3.rope_theta == 1e6 and g3.local_rope_theta == 5e3 and g3.qk_norm
    assert g3.attn_softcap is None and g3.final_softcap is None  # transformers' Gemma 3 applies neither here
    nested = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}
    nested["sliding_attention"] = {"rope_type": "default", "rope_theta": 1e4}
    g3 = ModelConfig.from_hf_config({**gemma3, "rope_parameters": nested})
    assert g3.rope_scaling == {"rope_type": "linear", "factor": 8.0} and g3.local_rope_theta == 1e4
    with pytest.raises(ModelLoadError, match="RoPE scaling of the sliding_attention layers"):
        local = {"rope_type": "linear", "factor": 2.0}
        ModelConfig.from_hf_config({**gemma3, "rope_parameters": {**nested, "sliding_attention": local}})
    with pytest.raises(ModelLoadError, match="layer_types must give each of the 7 layers"):
        ModelConfig.from_hf_config({**gemma3, "layer_types": ["full_attention"] * 6 + ["chunked_attention"]})
    with pytest.raises(ModelLoadError, match="use_bidirectional_attention"):
        ModelConfig.from_hf_config({**gemma3, "use_bidirectional_attention": True})
    with pytest.raises(ModelLoadError, match="unsupported hidden_activation 'silu'"):
        ModelConfig.from_hf_config({**gemma3, "hidden_activation": "silu"})
    with pytest.raises(ModelLoadError, match="final_logit_softcapping is 'x'"):
        ModelConfig.from_hf_config({**gemma3, "final_logit_softcapping": "x"})


def test_quantized_phi3_matches_its_plain_module(tmp_path, folders):
    """`--dtype q8_0` on Phi-3: quantized weights are not folded, so the packed form puts q/k rows
    into partial-rotary pair order and long-rope's attention factor on RoPE's magnitude over the
    pairs that turn. Its torch path equals the plain quantized module's logits before and past the
    16 short positions, with RoPE over whole heads and over 3/4 of each (the factor squared on the
    query scale, as it was, is off by ~1 there).
    The packed path's products (tk_matmul) round their inputs to 8 bits, so the plain module's
    quantized layers see theirs rounded alike (test_quant_prefill's reference and tolerance: to
    float rounding but where an input within an ulp of a rounding tie rounds the other way, 3e-3
    of the scale at one position here; a wrong pair order or scale is off by ~1e-1)."""
    from test_quant import rounding_reference
    from test_quant_prefill import assert_close_logits
    from tiny_models import phi3_long_rope

    from tiankong.engine import native
    from tiankong.engine.model import prepare_for_inference

    if native.library() is None:
        pytest.skip(f"quantized weights need the compiled step: {native.reason()}")
    rope = phi3_long_rope(torch.Generator().manual_seed(0), head_dim=16, partial=1.0)
    long_rope = make_model(tmp_path / "long", "phi3", partial_rotary_factor=1.0, rope_parameters=rope)
    partial = make_model(tmp_path / "partial", "phi3", rope_parameters=None)  # 12 of 16 dims turn
    # folders["phi3"]: long-rope over 3/4 of each head. Its seed is 2: with 1, one input at position
    # 22 lies within an ulp of a rounding tie (2e-2 there and at 23, which reads its keys; 3e-7 at
    # the other 22), the tie the tolerance allows for but at 7x its usual cost on this model.
    for folder, seed in ((long_rope, 1), (partial, 1), (folders["phi3"], 2)):
        plain, cfg = load_model(folder, "cpu", "q8_0")
        packed = prepare_for_inference(load_model(folder, "cpu", "q8_0")[0])
        plain = rounding_reference(plain)
        assert packed.quantized
        tokens = torch.randint(0, cfg.vocab_size, (1, 24), generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            for T in (12, 24):  # short factors, long factors
                ours, ref = packed(tokens[:, :T], torch.arange(T)[None]), plain(tokens[:, :T], torch.arange(T)[None])
                assert_close_logits(ours, ref, pad=torch.tensor([0]))
