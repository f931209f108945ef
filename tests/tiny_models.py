"""Tiny random checkpoints of every supported architecture, written by transformers itself.

Tests load these folders with tiankong and compare against transformers on the same weights, so
the reference is independent of our code: transformers' own config classes, initialisation,
save_pretrained and forward pass.
"""

from __future__ import annotations

from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STORIES = SHARED / "models" / "stories260K"

CORPUS = [
    "Once upon a time there was a little girl named Lily. She loved to play in the park.",
    "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Emoji are fun 😀🎉 and so is 中文 text. Numbers: 1234567890.",
    "A language model predicts the next token; sampling turns logits into a choice.",
] * 20


def train_tokenizer(folder: Path, kind: str = "bytelevel", vocab_size: int = 384):
    """A small BPE tokenizer.json saved through transformers (so both sides read the same files).

    kind "bytelevel": GPT-2 style. kind "metaspace": Llama style ("▁" + byte fallback, BOS added).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    if kind == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tok.train_from_iterator(CORPUS, trainer)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)]
        )
        tok.train_from_iterator(CORPUS, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


def make_model(folder: Path, arch: str, seed: int = 0, tokenizer: str | None = None, **overrides) -> Path:
    """Write a tiny random `arch` model (plus a tokenizer) to folder; returns folder."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(folder, tokenizer or ("bytelevel" if arch in ("gpt2", "qwen2", "qwen3") else "metaspace"))
    V = len(tok)
    common = dict(vocab_size=V, initializer_range=0.3, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    llama_like = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    if arch == "gpt2":
        cfg = GPT2Config(**{**dict(n_embd=64, n_layer=2, n_head=4, n_positions=256), **common, **overrides})
        cls = GPT2LMHeadModel
    elif arch == "llama":
        cfg, cls = LlamaConfig, LlamaForCausalLM
    elif arch == "mistral":
        cfg, cls = MistralConfig, MistralForCausalLM
    elif arch == "qwen2":
        cfg, cls = Qwen2Config, Qwen2ForCausalLM
    elif arch == "qwen3":
        # Qwen3 as released: tied head, and a head size of its own (24, not hidden / heads = 16).
        cfg, cls = Qwen3Config, Qwen3ForCausalLM
        overrides = dict(head_dim=24, tie_word_embeddings=True) | overrides
    else:
        raise ValueError(arch)
    if arch != "gpt2":
        cfg = cfg(**{**common, **llama_like, **overrides})
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    if arch == "qwen3":
        # Norm gains start at 1, where a q/k-norm gain applied to the wrong dimensions goes unseen.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    return folder
