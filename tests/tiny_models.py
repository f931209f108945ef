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
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Phi3Config,
        Phi3ForCausalLM,
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
    elif arch == "phi3":
        # Phi-3.5 as released: long-rope with short and long factors (the long ones apply past 16
        # positions here, inside the tests' sequences), and RoPE over 3/4 of each head (Phi-4-mini).
        cfg, cls = Phi3Config, Phi3ForCausalLM
        overrides = dict(rope_parameters=phi3_long_rope(torch.Generator().manual_seed(seed))) | overrides
        overrides = dict(original_max_position_embeddings=16, partial_rotary_factor=0.75, pad_token_id=0) | overrides
    elif arch in ("gemma2", "gemma3", "gemma3-vision"):
        # Every feature within the tests' reach: a window of 6 on the local layers (layers 0 and 2
        # of 3 for Gemma 2, 0 and 1 for Gemma 3), soft-caps that cap (random logits reach ~30),
        # query_pre_attn_scalar apart from head_dim, a local RoPE base apart from the global one.
        cfg, cls = (Gemma2Config, Gemma2ForCausalLM) if arch == "gemma2" else (Gemma3TextConfig, Gemma3ForCausalLM)
        gemma = dict(
            head_dim=24, num_hidden_layers=3, sliding_window=6, query_pre_attn_scalar=20, tie_word_embeddings=True
        )
        if arch == "gemma2":
            gemma |= dict(attn_logit_softcapping=3.0, final_logit_softcapping=8.0)
        else:
            gemma |= dict(
                sliding_window_pattern=3,
                final_logit_softcapping=8.0,
                rope_parameters={
                    "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                },
            )
        overrides = gemma | overrides
    else:
        raise ValueError(arch)
    if arch == "gemma3-vision":
        # Gemma 3 as released from 4B up: an image-text checkpoint (a one-layer vision tower here)
        # whose text model is the gemma3 one above.
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration

        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        text = {**common, **llama_like, **overrides}
        # The image token past the vocabulary: inside it, transformers attends both ways around it.
        ids = dict(image_token_index=V, boi_token_index=3, eoi_token_index=4, mm_tokens_per_image=4)
        vision |= dict(image_size=28, patch_size=14)
        cfg, cls = (
            Gemma3Config(text_config=text, vision_config=vision, initializer_range=0.3, **ids),
            Gemma3ForConditionalGeneration,
        )
    elif arch != "gpt2":
        cfg = cfg(**{**common, **llama_like, **overrides})
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    if arch in ("qwen3", "phi3", "gemma2", "gemma3", "gemma3-vision"):
        # Norm gains start at 1, where a q/k-norm gain applied to the wrong dimensions goes unseen.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):  # Gemma's gain is 1 + w
                    p.uniform_(-0.5, 0.5) if arch.startswith("gemma") else p.uniform_(0.5, 1.5)
    if arch in ("qwen2", "gpt2"):
        # Biases start at 0, where a bias dropped (or added twice) goes unseen.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.uniform_(-0.2, 0.2)
    model.save_pretrained(folder)
    return folder


def phi3_long_rope(gen: torch.Generator, head_dim: int = 16, partial: float = 0.75) -> dict:
    """Long-rope settings for a tiny Phi-3: random per-pair factors (short near 1, long larger)."""
    pairs = int(head_dim * partial) // 2
    return {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "partial_rotary_factor": partial,
        "short_factor": (1 + torch.rand(pairs, generator=gen) * 0.2).tolist(),
        "long_factor": (1 + torch.rand(pairs, generator=gen) * 8).tolist(),
    }


# A plain chat template for the playground's tiny models: without one the chat opens with a notice
# saying so (tui/app.py), which tests of the screen's own notices and layout do not want.
PLAIN_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def with_template(folder: Path) -> Path:
    """`folder` with PLAIN_TEMPLATE as its chat_template.jinja."""
    (folder / "chat_template.jinja").write_text(PLAIN_TEMPLATE)
    return folder
