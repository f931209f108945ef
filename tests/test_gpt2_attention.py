"""GPT-2's attention options in config.json (scale_attn_weights, scale_attn_by_inverse_layer_idx,
reorder_and_upcast_attn): the plain module, the packed form and the compiled decode step all
give transformers' logits, and a saved folder keeps the options."""

from __future__ import annotations

import pytest
import torch
from test_models import hf_logits
from test_native import check_decode_steps, need_native
from tiny_models import make_model

from tiankong.engine.config import ModelConfig, to_hf_config
from tiankong.engine.model import load_model

OPTIONS = {
    "inverse-layer": dict(scale_attn_by_inverse_layer_idx=True, n_layer=3),
    "unscaled": dict(scale_attn_weights=False),
    "unscaled-inverse-layer": dict(scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True, n_layer=3),
    "reorder-upcast": dict(reorder_and_upcast_attn=True),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: make_model(tmp_path_factory.mktemp(name), "gpt2", **ov) for name, ov in OPTIONS.items()}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_plain_module_matches_transformers(folders, name):
    model, cfg = load_model(folders[name], device="cpu", dtype="float32")
    torch.manual_seed(1)
    tokens = torch.randint(0, cfg.vocab_size, (2, 24))
    with torch.no_grad():
        ours = model(tokens, torch.arange(24).expand(2, -1))
    ref = hf_logits(folders[name], tokens)
    assert ref.abs().max() > 1  # random weights with large init: logits are not all ~0
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["inverse-layer", "unscaled"])
def test_packed_model_and_compiled_step_match_transformers(folders, name):
    """PackedGPT2 folds each layer's scale into its query rows; prefill (torch) and the compiled
    decode steps both read them."""
    from transformers import AutoModelForCausalLM

    need_native()
    check_decode_steps(AutoModelForCausalLM, folders[name])


def test_saved_config_keeps_the_options():
    base = dict(architectures=["GPT2LMHeadModel"], vocab_size=64, n_embd=32, n_layer=2, n_head=4)
    cfg = ModelConfig.from_hf_config({**base, "scale_attn_weights": False, "scale_attn_by_inverse_layer_idx": True})
    assert [cfg.layer_attn_scale(i) for i in range(2)] == [1.0, 0.5]
    out = to_hf_config(cfg)
    assert out["scale_attn_weights"] is False and out["scale_attn_by_inverse_layer_idx"] is True
    plain = ModelConfig.from_hf_config(base)
    assert plain.layer_attn_scale(1) == 8**-0.5
    assert to_hf_config(plain)["scale_attn_weights"] is True
