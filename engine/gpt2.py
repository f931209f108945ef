"""The GPT-2 family: learned absolute position embeddings, LayerNorm, GELU (tanh) MLP.

Same forward signature as `llama.Llama`, so generation and training treat both alike. GPT-2
checkpoints store linear layers as `Conv1D` with (in, out) weights; the loader transposes the
names listed in TRANSPOSED into nn.Linear's (out, in).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache, Runs, attend_runs, sdpa, visible_runs
from .weights import embedding


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        # 1/sqrt(head_dim) unless scale_attn_weights is false, / (layer + 1) with
        # scale_attn_by_inverse_layer_idx; PackedGPT2 folds this same number into its query rows.
        self.scale = cfg.layer_attn_scale(layer)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)  # q, k and v in one matmul
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | Runs | None, cache: KVCache | None, layer: int, start: int
    ) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        if cache is not None:
            k, v = cache.update(layer, start, k, v)  # (B, H, S, hd)
        y = attend_runs(self.attend, q, k, v, mask)  # a decode step's Runs: each row from its first slot
        return self.proj(y.transpose(1, 2).reshape(B, T, D))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return sdpa(q, k, v, mask, self.scale)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.proj = nn.Linear(cfg.ffn_dim, cfg.dim)
        # gelu_new / gelu_pytorch_tanh / gelu_fast are the tanh approximation; "gelu" is exact.
        self.approximate = "none" if cfg.activation == "gelu" else "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.ln2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, mask, cache, layer, start):
        x = x + self.attn(self.ln1(x), mask, cache, layer, start)
        return x + self.mlp(self.ln2(x))


class GPT2(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = embedding(cfg.max_seq_len, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_emb.weight

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        last_only: bool = False,
        hidden: bool = False,
    ) -> torch.Tensor:
        """Same contract as `Llama.forward`: (B, T) tokens and positions -> (B, T, V) logits."""
        x = self.tok_emb(tokens)  # (B, T, D)
        x = x + self.pos_emb(positions).to(x.dtype)  # a float32 one beside float16 weights (weights._float_dtype)
        runs = visible_runs(mask, tokens)  # a decode step's mask as each row's run of slots
        for i, layer in enumerate(self.layers):
            x = layer(x, runs, cache, i, start)
        if last_only:
            x = x[:, -1:]
        x = self.norm(x)
        return x if hidden else self.output(x)


WEIGHT_MAP: dict[str, str] = {
    "wte.weight": "tok_emb.weight",
    "wpe.weight": "pos_emb.weight",
    "h.{}.ln_1.weight": "layers.{}.ln1.weight",
    "h.{}.ln_1.bias": "layers.{}.ln1.bias",
    "h.{}.attn.c_attn.weight": "layers.{}.attn.qkv.weight",
    "h.{}.attn.c_attn.bias": "layers.{}.attn.qkv.bias",
    "h.{}.attn.c_proj.weight": "layers.{}.attn.proj.weight",
    "h.{}.attn.c_proj.bias": "layers.{}.attn.proj.bias",
    "h.{}.ln_2.weight": "layers.{}.ln2.weight",
    "h.{}.ln_2.bias": "layers.{}.ln2.bias",
    "h.{}.mlp.c_fc.weight": "layers.{}.mlp.fc.weight",
    "h.{}.mlp.c_fc.bias": "layers.{}.mlp.fc.bias",
    "h.{}.mlp.c_proj.weight": "layers.{}.mlp.proj.weight",
    "h.{}.mlp.c_proj.bias": "layers.{}.mlp.proj.bias",
    "ln_f.weight": "norm.weight",
    "ln_f.bias": "norm.bias",
    "lm_head.weight": "output.weight",
}
# Conv1D weights are stored (in, out).
TRANSPOSED: frozenset[str] = frozenset(
    k for k in WEIGHT_MAP if k.endswith(".weight") and (".c_attn." in k or ".c_proj." in k or ".c_fc." in k)
)
# Old checkpoints store the causal mask as buffers; we build masks ourselves.
IGNORED: tuple[str, ...] = ("h.{}.attn.bias", "h.{}.attn.masked_bias")
# transformers >= 4.x saves GPT2LMHeadModel with this prefix; the original gpt2 repo has none.
PREFIX = "transformer."
