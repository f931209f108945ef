"""Pretraining: next-token prediction on plain text, for a new model or to continue a checkpoint.

    tiankong train pretrain --data corpus.txt --size tiny --output runs/base

Data: every document becomes [BOS] + tokens + [EOS] (BOS where the tokenizer adds one, as it does
for prompts at inference); the documents are concatenated in order into one stream and cut into
blocks of seq_len + 1 tokens that overlap by one (inputs are a block's first seq_len tokens,
targets its last seq_len), so each token after the first is a target exactly once (a partial last
block is dropped). Blocks cross document boundaries; attention is plain causal, as in GPT-2 and
nanoGPT. A seeded random `eval_fraction` of the blocks is held out; `evaluate()` reports their
mean loss and perplexity (eval_loss, eval_ppl). Unless --steps is given, the run lasts 4 passes over
the training tokens within bounds (trainers/auto.py: auto_pretrain_steps), printed in one line.

Without --model a new Llama-architecture model is built (RoPE, RMSNorm, SwiGLU, grouped-query
attention, tied embeddings) in one of the SIZES below, and a SentencePiece BPE tokenizer with byte
fallback is trained on the data first and written to the output folder, so the output is an
ordinary Llama-style folder (tokenizer.model, config.json, model.safetensors) that tiankong and
transformers both load.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tiankong.engine.config import ModelConfig
from tiankong.engine.errors import InputError
from tiankong.engine.model import build_model, load_model, resolve_dtype, save_pretrained, set_rope_buffers
from tiankong.engine.tokenizer import Tokenizer, load_tokenizer
from tiankong.tui.generate_input import say as say_line

from . import auto
from . import checkpoint as ckpt
from .common import Trainer
from .config import TrainConfig, opt
from .corpus import BATCH_CHARS, encode_documents, train_tokenizer
from .data import load_texts, split_holdout
from .progress import progress

# name -> architecture of a new model. Parameter counts include the (tied) embedding at the
# default vocabulary size; "nano" is the shape of the stories260K checkpoint.
SIZES: dict[str, dict[str, int]] = {
    "nano": dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, ffn_dim=172, vocab_size=512, max_seq_len=512),  # 0.26M
    "micro": dict(dim=128, n_layers=5, n_heads=8, n_kv_heads=4, ffn_dim=344, vocab_size=1024, max_seq_len=1024),  # 1.0M
    "tiny": dict(dim=256, n_layers=6, n_heads=8, n_kv_heads=4, ffn_dim=688, vocab_size=4096, max_seq_len=1024),  # 5.4M
    "small": dict(dim=384, n_layers=8, n_heads=8, n_kv_heads=4, ffn_dim=1024, vocab_size=8192, max_seq_len=2048),  # 16M
}
AUTOCAST_HELP = (
    "Compute in bfloat16 (torch.autocast) with float32 weights and optimizer: about 2-3x faster "
    "on CPUs with AVX512-bf16 or AMX and on recent GPUs, at slightly lower precision."
)


@dataclass
class PretrainConfig(TrainConfig):
    # --- where (overrides)
    output: str = opt("runs/base", "Output folder: a Hugging Face model folder plus metrics.jsonl and trainer state.")
    model: str = opt(
        "",
        "Checkpoint to continue pretraining, with its own tokenizer. Empty: a new model of "
        "--size and a SentencePiece tokenizer trained on --data.",
    )
    data: str = opt(
        "",
        "Training text: a .txt file (documents separated by lines holding only <|endoftext|>), "
        'a folder of .txt files, or JSONL with a "text" field per line (first bad line stops '
        "the run with its number).",
    )
    # --- a new model
    size: str = opt(
        "tiny",
        "Size of a new model (ignored with --model): nano (64 wide, 5 layers, ~0.26M params), micro (128x5, ~1M), "
        "tiny (256x6, ~5.4M), small (384x8, ~16M); counts at the default vocabulary.",
    )
    vocab_size: int = opt(
        0,
        "Vocabulary of a new tokenizer (at most: small data gives fewer). 0: the size's "
        "default (nano 512, micro 1024, tiny 4096, small 8192).",
    )
    # --- data
    seq_len: int = opt(256, "Tokens per training block.")
    eval_fraction: float = opt(0.02, "Fraction of blocks held out for eval_loss and eval_ppl (0 = none).")
    # --- speed
    autocast: bool = opt(False, AUTOCAST_HELP)
    # --- optimisation (overrides; 0 or -1 = auto, see trainers/auto.py)
    steps: int = opt(
        0,
        "Optimisation steps; 0 = auto: 4 passes over the training tokens, at most 4M tokens "
        "(1024 steps of 16 blocks of 256) and at least 50 steps.",
        auto=0,
    )
    batch_size: int = opt(16, "Global batch size in blocks (over all processes).")
    lr: float = opt(1e-3, "Peak learning rate.")
    warmup_steps: int = opt(-1, "Linear warmup steps (0 = none); -1 = auto: a tenth of the steps, at most 50.", auto=-1)

    def validate(self) -> None:
        auto.validate_auto(self, super().validate, names=("steps",))
        if not self.model and self.size not in SIZES:
            raise InputError(f"unknown --size {self.size!r}; choose one of {', '.join(SIZES)}")
        if self.seq_len < 1:
            self.refuse("seq_len", "must be at least 1")
        if not 0 <= self.eval_fraction < 1:
            self.refuse("eval_fraction", "must be in [0, 1)")
        if self.vocab_size and self.vocab_size < 300:
            raise InputError(
                f"vocab_size must be 0 or at least 300 (256 byte tokens come first), got {self.vocab_size}"
            )

    def check_warmup(self) -> None:
        if self.warmup_steps < -1:
            self.refuse("warmup_steps", "must be >= 0")


# ---- a new model (its tokenizer: trainers/corpus.py)


def new_model_config(size: str, vocab_size: int, seq_len: int, dtype: str) -> ModelConfig:
    shape = dict(SIZES[size])
    shape.pop("vocab_size")
    shape["max_seq_len"] = max(shape["max_seq_len"], seq_len)
    return ModelConfig(
        architecture="LlamaForCausalLM",
        family="llama",
        vocab_size=vocab_size,
        norm_eps=1e-5,
        rope_theta=10000.0,
        tie_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype=dtype,
        **shape,
    )


def init_weights(model: nn.Module, n_layers: int) -> None:
    """GPT-2 style: weights N(0, 0.02), the two projections into the residual stream scaled by
    1/sqrt(2 * n_layers) so the residual does not grow with depth; norms 1, biases 0."""
    for name, p in model.named_parameters():
        if p.dim() < 2:
            if name.endswith("bias"):
                nn.init.zeros_(p)
            continue
        std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("attn.wo.weight", "ffn.w2.weight")) else 0.02
        nn.init.normal_(p, mean=0.0, std=std)


# ---- shared by pretrain and sft


def load_trainable(folder: str | Path, device: torch.device, dtype: str) -> tuple[nn.Module, ModelConfig]:
    """A checkpoint ready to train: on `device` in `dtype`, every parameter requiring grad."""
    model, cfg = load_model(folder, device, dtype)
    return model.requires_grad_(True), cfg


def to_device(model: nn.Module, cfg: ModelConfig, device: torch.device, dtype: str) -> nn.Module:
    model.to(device=device, dtype=resolve_dtype(dtype, device))
    return set_rope_buffers(model, cfg, device)  # RoPE frequencies stay float32 whatever the weights are


def token_loss(
    model: nn.Module, tokens: torch.Tensor, weights: torch.Tensor, autocast: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy and the count of correct argmax guesses.

    tokens: (B, T+1) ids; weights: (B, T) 0/1, whether target tokens[:, t+1] counts. Padding at the
    right end needs no attention mask: causal attention never lets a real token see it.
    autocast: run the model in bfloat16 (torch.autocast); the loss is still computed in float32.
    """
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
    positions = torch.arange(inputs.shape[1], device=tokens.device).expand_as(inputs)
    with torch.autocast(device_type=tokens.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(inputs, positions)  # (B, T, V)
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")  # (B*T,)
    w = weights.flatten().to(nll.dtype)
    correct = ((logits.argmax(-1).flatten() == targets.flatten()) * w).sum()
    return (nll * w).sum(), correct.detach()


def evaluate_held_out(
    trainer: Trainer, items: Sequence[int], batch: Callable[[Sequence[int]], tuple], batch_size: int
) -> dict[str, float]:
    """Mean loss and perplexity over held-out items, each process taking its slice."""
    if not items:
        return {}
    mine = list(items)[trainer.dist.rank :: trainer.dist.world]
    loss_sum, count = 0.0, 0.0
    trainer.model.eval()
    with torch.no_grad(), trainer.dist.gathered(trainer.model):  # FSDP: ranks may hold different counts
        for i in range(0, len(mine), batch_size):
            tokens, weights = batch(mine[i : i + batch_size])
            loss, _ = token_loss(trainer.model, tokens, weights, trainer.cfg.autocast)
            loss_sum, count = loss_sum + float(loss), count + float(weights.sum())
    sums = trainer.dist.all_reduce_sum({"loss": loss_sum, "count": count})
    mean = sums["loss"] / max(sums["count"], 1.0)
    return {"eval_loss": mean, "eval_ppl": math.exp(min(mean, 50.0))}


def eos_id(tokenizer: Tokenizer, cfg: ModelConfig) -> int:
    eos = cfg.eos_token_id
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if eos is None and tokenizer.eos_ids:
        eos = min(tokenizer.eos_ids)
    if eos is None:
        raise InputError(
            "the model has no end-of-sequence token (config.json eos_token_id); pretraining needs "
            "one to separate documents"
        )
    return int(eos)


def _from_main(trainer: Trainer, value):
    """Rank 0's `value` on every rank (a no-op in one process)."""
    if not trainer.dist.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---- the trainer


class PretrainTrainer(Trainer):
    name = "pretrain"
    cfg: PretrainConfig

    def setup(self) -> None:
        cfg = self.cfg
        docs = load_texts(cfg.data)
        source = self.resume_model_path() or (Path(cfg.model) if cfg.model else None)
        if source is None:  # a new model: its tokenizer first (rank 0 trains it, the others read it)
            vocab = cfg.vocab_size or SIZES[cfg.size]["vocab_size"]
            max_len = max(SIZES[cfg.size]["max_seq_len"], cfg.seq_len)
            failure = None
            if self.dist.is_main:
                try:
                    train_tokenizer(docs, self.out, vocab, max_len, cfg.seed)
                except InputError as e:
                    failure = str(e)
            failure = _from_main(self, failure)  # the other ranks wait here, and fail with rank 0
            if failure is not None:
                raise InputError(failure)
            self.tokenizer_dir = self.out
            self.tokenizer = load_tokenizer(self.out)
            self.model_cfg = new_model_config(cfg.size, self.tokenizer.vocab_size, cfg.seq_len, cfg.dtype)
            self.model = build_model(self.model_cfg)
            init_weights(self.model, self.model_cfg.n_layers)
            to_device(self.model, self.model_cfg, self.device, cfg.dtype)
        else:
            self.tokenizer_dir = source
            self.tokenizer = load_tokenizer(source)
            with self.loading(source):
                self.model, self.model_cfg = load_trainable(source, self.device, cfg.dtype)
            if self.resume_model_path() is None:
                self.check_finite(self.model, source)
        T = cfg.seq_len
        if T > self.model_cfg.max_seq_len:
            raise InputError(
                f"--seq-len {T} is longer than the model's context ({self.model_cfg.max_seq_len} tokens); "
                "lower --seq-len"
            )
        self.tokens = self._pack(docs)
        n_blocks = (len(self.tokens) - 1) // T
        if n_blocks < 1:
            raise InputError(
                f"{cfg.data} gives only {len(self.tokens)} tokens, fewer than one block of "
                f"--seq-len {T} + 1; give more text or lower --seq-len"
            )
        self.train_blocks, self.eval_blocks = split_holdout(n_blocks, cfg.eval_fraction, cfg.seed)
        self.resolve_auto()

    def resolve_auto(self) -> None:
        """Steps from the training tokens and warmup from the steps (trainers/auto.py), unless given
        (a --resume has them from the run's start: common.py). Printed in one line, kept in train_config.json."""
        cfg, T = self.cfg, self.cfg.seq_len
        n = len(self.train_blocks)
        self.auto = auto.fill(
            cfg,
            self.name,
            auto.n_parameters(self.model),
            n,
            f"blocks of {T} tokens",
            {"steps": lambda: auto.auto_pretrain_steps(n * T, cfg.batch_size, T)},
        )
        if cfg.warmup_steps < 0:
            cfg.warmup_steps = auto.auto_warmup(cfg.steps)
            self.auto.values["warmup_steps"] = cfg.warmup_steps
        if self.auto.values and self.dist.is_main:  # a record of the run, not decoration: kept by --no-progress
            say_line(self.auto.line())

    def _pack(self, docs: Sequence[str]) -> torch.Tensor:
        """[BOS] doc [EOS] [BOS] doc [EOS] ... as one int32 tensor, with a bar in MB of text where the
        corpus takes a while to encode (~1 s a MB a core)."""
        eos = eos_id(self.tokenizer, self.model_cfg)
        stream = array("i")
        total = sum(map(len, docs))
        shown = self.cfg.progress and self.dist.is_main and total > BATCH_CHARS
        with progress("tokenizing, MB", -(-total // 1_000_000), enabled=shown) as advance:
            chars = [0]

            def done(n: int) -> None:
                before, chars[0] = chars[0], chars[0] + n
                advance(steps=-(-chars[0] // 1_000_000) - -(-before // 1_000_000))

            for ids in encode_documents(self.tokenizer, docs, done):
                stream.extend(ids)
                stream.append(eos)
        return torch.frombuffer(stream, dtype=torch.int32).clone()

    def _blocks(self, blocks: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.cfg.seq_len
        tokens = torch.stack([self.tokens[b * T : b * T + T + 1] for b in blocks]).long().to(self.device)  # (B, T+1)
        return tokens, torch.ones(len(blocks), T, device=self.device)

    def n_items(self) -> int:
        return len(self.train_blocks)

    def item_weight(self, index: int) -> float:
        return float(self.cfg.seq_len)  # every block holds seq_len targets: the loss is per token

    def loss(self, items: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        tokens, weights = self._blocks([self.train_blocks[i] for i in items])
        loss, correct = token_loss(self.ddp_model, tokens, weights, self.cfg.autocast)
        return loss, {"accuracy": float(correct)}

    def evaluate(self) -> dict[str, float]:
        return evaluate_held_out(self, self.eval_blocks, self._blocks, self.cfg.micro_batch_size or self.cfg.batch_size)

    def save(self, folder: Path) -> None:
        save_pretrained(
            self.model,
            self.model_cfg,
            folder,
            tokenizer_from=ckpt.tokenizer_source(self.out, self.tokenizer_dir),
            metadata={"trainer": self.name, "step": str(self.step)},
        )
