"""Supervised fine-tuning: learn to answer, with the loss on the answer tokens only.

    tiankong train sft --model runs/base --data instructions.jsonl --output runs/sft

Each conversation is rendered with the model's chat template and tokenized as one sequence. Which
tokens are "answer" is found by rendering prefixes, so it works for any template: for every
assistant message i,

    before = tokens of render(messages[:i],   add_generation_prompt=True)   # up to "<|assistant|>\\n"
    upto   = tokens of render(messages[:i+1], add_generation_prompt=False)  # ... + the answer + its end

and the answer is the tokens of the whole conversation from len(before) to len(upto): the reply and
whatever the template closes it with (the EOS, or ChatML's <|im_end|>), so the model learns to stop.
Every assistant turn of a multi-turn chat counts; system and user turns and the template's own
markup never do. Templates whose rendering of a prefix is not a prefix of the whole (a token merged
across the boundary, an earlier turn rewritten) are handled by taking the common prefix of the two
token lists instead of its length, i.e. a boundary token shared by prompt and answer is not counted.

A model without a template gets DEFAULT_CHAT_TEMPLATE, and the output saves it in
tokenizer_config.json ("chat_template") so that `tiankong chat`/`generate` and transformers'
apply_chat_template use the format the model was tuned on.

`item_weight` is an example's answer-token count, so the loss is the mean over all answer tokens of
the global batch, however they are spread over examples, micro-batches and processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from tiankong.engine.chat import ChatTemplate
from tiankong.engine.errors import InputError, TiankongError
from tiankong.engine.files import read_model_object
from tiankong.engine.gguf_model import is_gguf
from tiankong.engine.model import save_pretrained
from tiankong.engine.tokenizer import Tokenizer, load_tokenizer
from tiankong.tui.generate_input import say as say_line

from . import auto
from . import checkpoint as ckpt
from .common import Trainer
from .config import TrainConfig, opt
from .data import SFT_TEMPLATE_FIX, find_chat_template, load_conversations, split_holdout, trainer_template_line
from .pretrain import AUTOCAST_HELP, evaluate_held_out, load_trainable, token_loss

# tiankong's chat format for models that have none:
#   <s><|system|>\n{system}\n<|user|>\n{question}\n<|assistant|>\n{answer}</s><|user|>\n...
# Role markers are plain text (no new tokens to learn), each message ends with a newline except the
# assistant's, which ends with the EOS token: the answer is "{answer}</s>".
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass
class SFTConfig(TrainConfig):
    # --- where (overrides)
    output: str = opt("runs/sft", "Output folder: a Hugging Face model folder plus metrics.jsonl and trainer state.")
    model: str = opt("", "Model to fine-tune. Default: the bundled tiankong-mini.")
    data: str = opt(
        "",
        'JSONL, one conversation per line: {"messages": [{"role": ..., "content": ...}, ...]} '
        'or {"prompt": ..., "completion": ...} (strings become a user and an assistant message); '
        "roles are system, user and assistant. ShareGPT's "
        '{"conversations": [{"from": ..., "value": ...}, ...]} is read too (human, gpt, system). '
        "The first bad line stops the run with its line number; nothing is skipped.",
    )
    # --- optimisation (0 = auto, see trainers/auto.py)
    steps: int = opt(0, "Optimisation steps; 0 = auto: up to 3 passes over the conversations.", auto=0)
    batch_size: int = opt(
        0, "Conversations per step (over all processes); 0 = auto from the number of conversations.", auto=0
    )
    lr: float = opt(
        0.0, "Peak learning rate; 0 = auto from the model size (5e-4 at 3M parameters, 2e-5 at 1B).", auto=0
    )
    # --- data
    chat_template: str = opt(
        "",
        "A Jinja chat template file to tune with instead of the model's own (saved as "
        "chat_template.jinja). Empty: the model's template, or tiankong's default "
        "(<|user|>\\n...\\n<|assistant|>\\n...</s>) for a model without one.",
    )
    max_len: int = opt(
        1024,
        "Longest conversation in tokens, at most the model's context length (0 = that); "
        "longer ones are cut at the end. A row with no answer token left is an error.",
    )
    eval_fraction: float = opt(0.0, "Fraction of conversations held out for eval_loss and eval_ppl (0 = none).")
    autocast: bool = opt(False, AUTOCAST_HELP)

    def validate(self) -> None:
        auto.validate_auto(self, super().validate)
        if not self.model:
            raise InputError("sft needs a model to fine-tune: pass --model DIR")
        if self.max_len < 0:
            self.refuse("max_len", "must be >= 0")
        if not 0 <= self.eval_fraction < 1:
            self.refuse("eval_fraction", "must be in [0, 1)")


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def tokenize_conversation(
    template: ChatTemplate, tokenizer: Tokenizer, messages: Sequence[dict[str, Any]]
) -> tuple[list[int], list[bool]]:
    """(ids, answer mask) for one conversation; see the module docstring for how the mask is found."""

    def encode(msgs: Sequence[dict[str, Any]], generation_prompt: bool) -> list[int]:
        # As render_prompt does: the template writes the special tokens itself.
        return tokenizer.encode(
            template.render(msgs, add_generation_prompt=generation_prompt), add_special_tokens=False
        )

    ids = encode(messages, False)
    mask = [False] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _common_prefix(encode(messages[:i], True), ids)
        end = _common_prefix(encode(messages[: i + 1], False), ids)
        for j in range(start, end):
            mask[j] = True
    return ids, mask


def resolve_template(folder: Path, tokenizer: Tokenizer, override: str) -> tuple[ChatTemplate, str]:
    """The template to tune with and where it comes from: "file", "model" or "default"."""
    found, origin = find_chat_template(folder, tokenizer, override, SFT_TEMPLATE_FIX)
    if found is not None:
        return found, origin
    if tokenizer.eos_token is None:
        raise InputError(
            f"{folder} has no chat template and no EOS token for tiankong's default one; pass --chat-template FILE"
        )
    return ChatTemplate(DEFAULT_CHAT_TEMPLATE, tokenizer.bos_token, tokenizer.eos_token), "default"


class SFTTrainer(Trainer):
    name = "sft"
    cfg: SFTConfig

    def setup(self) -> None:
        cfg = self.cfg
        self.source = self.resume_model_path() or Path(cfg.model)
        self.tokenizer = load_tokenizer(self.source)
        with self.loading(self.source):
            self.model, self.model_cfg = load_trainable(self.source, self.device, cfg.dtype)
        if self.resume_model_path() is None:
            self.check_finite(self.model, cfg.model)
        self.template, self.template_from = resolve_template(self.source, self.tokenizer, cfg.chat_template)
        max_len = min(cfg.max_len or self.model_cfg.max_seq_len, self.model_cfg.max_seq_len)
        self.examples: list[tuple[list[int], list[bool]]] = []
        cut: list[int] = []  # lines of the conversations cut at max_len
        for conv in load_conversations(cfg.data):
            try:
                ids, mask = tokenize_conversation(self.template, self.tokenizer, conv.messages)
            except TiankongError as e:  # the template refused these messages
                raise trainer_template_line(e, f"{cfg.data} line {conv.line}", SFT_TEMPLATE_FIX) from None
            if len(ids) > max_len:
                cut.append(conv.line)
            ids, mask = ids[:max_len], mask[:max_len]
            if not any(mask[1:]):
                raise InputError(
                    f"{cfg.data} line {conv.line}: no answer token within the first {max_len} tokens; "
                    "raise --max-len or shorten the conversation"
                )
            self.examples.append((ids, mask))
        if cut and self.dist.is_main:  # what it learns from: kept by --no-progress, as the auto line
            say_line(
                f"{cfg.data}: cut {len(cut)} of {len(self.examples)} conversation{'' if len(self.examples) == 1 else 's'} "
                f"at the end to --max-len {max_len} tokens (line{'s' if len(cut) > 1 else ''} "
                f"{', '.join(map(str, cut[:5]))}{' ...' if len(cut) > 5 else ''})"
            )
        self.pad_id = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        self.train_ids, self.eval_ids = split_holdout(len(self.examples), cfg.eval_fraction, cfg.seed)
        n, n_params = len(self.train_ids), auto.n_parameters(self.model)
        self.auto = auto.fill(
            cfg,
            self.name,
            n_params,
            n,
            "conversations",
            {
                "lr": lambda: auto.auto_lr("sft", n_params),
                "batch_size": lambda: auto.auto_batch(n),
                "steps": lambda: auto.auto_steps("sft", n, cfg.batch_size),
            },
        )
        if self.auto.values and self.dist.is_main:  # a record of the run, not decoration: kept by --no-progress
            say_line(self.auto.line())

    def _batch(self, examples: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded (B, L) ids and (B, L-1) weights: 1 where the target token is an answer token."""
        rows = [self.examples[e] for e in examples]
        L = max(len(ids) for ids, _ in rows)
        tokens = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
        weights = torch.zeros(len(rows), L - 1)
        for r, (ids, mask) in enumerate(rows):
            tokens[r, : len(ids)] = torch.tensor(ids)
            weights[r, : len(ids) - 1] = torch.tensor(mask[1:], dtype=torch.float32)
        return tokens.to(self.device), weights.to(self.device)

    def n_items(self) -> int:
        return len(self.train_ids)

    def item_weight(self, index: int) -> float:
        return float(sum(self.examples[self.train_ids[index]][1][1:]))  # answer tokens that are targets

    def loss(self, items: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        tokens, weights = self._batch([self.train_ids[i] for i in items])
        loss, correct = token_loss(self.ddp_model, tokens, weights, self.cfg.autocast)
        return loss, {"accuracy": float(correct)}

    def evaluate(self) -> dict[str, float]:
        return evaluate_held_out(self, self.eval_ids, self._batch, self.cfg.micro_batch_size or self.cfg.batch_size)

    def save(self, folder: Path) -> None:
        files: dict[str, str] = {}
        source = ckpt.tokenizer_source(self.out, self.source)
        if self.template_from == "file":
            files["chat_template.jinja"] = self.template.source
        elif self.template_from == "default" and is_gguf(source):
            files["chat_template.jinja"] = self.template.source  # its tokenizer_config.json is written anew
        elif self.template_from == "default":
            config = read_model_object(source, "tokenizer_config.json")  # no link out, bounded
            config["chat_template"] = self.template.source
            files["tokenizer_config.json"] = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        save_pretrained(
            self.model,
            self.model_cfg,
            folder,
            tokenizer_from=source,
            extra_files=files,
            metadata={"trainer": self.name, "step": str(self.step)},
        )
