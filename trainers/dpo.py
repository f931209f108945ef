"""Direct preference optimisation (Rafailov et al. 2023), the sigmoid loss, on the same rankings.

    tiankong train dpo --model runs/sft --data prefs.jsonl --output runs/dpo

For a pair where y_w beat y_l after prompt x, with log pi(y|x) summed over the response tokens
(EOS included) and pi_ref the frozen starting model:

    h    = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)]
    loss = -log sigmoid(beta * h)

--label-smoothing eps (conservative DPO) makes it -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h);
a tie kept by --tie-mode soft uses 1/2 for both terms. The "implicit rewards" beta * (log pi - log pi_ref)
of chosen and rejected answers are logged as in TRL: reward_chosen, reward_rejected, reward_margin and
reward_accuracy (how often the chosen answer's implicit reward is the higher one).

--chat-template FILE renders the prompts with that template (else the model's own) and is saved with
the output as chat_template.jinja, so `tiankong chat -m OUTPUT` talks in the format it was tuned on.

The reference log-probabilities are computed once per distinct answer (the frozen model never
changes) and cached, so later epochs cost one forward pass instead of two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tiankong.engine.errors import InputError
from tiankong.engine.model import load_model, save_pretrained

from .auto import n_parameters
from .config import opt
from .preferences import Group, PreferenceConfig, PreferenceTrainer, collate, pad_right


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    target: torch.Tensor | float = 1.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pair sigmoid DPO loss from sequence log-probs (see the module docstring)."""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    t = target * (1 - label_smoothing) + (1 - target) * label_smoothing  # probability that chosen wins
    return -(t * F.logsigmoid(beta * h) + (1 - t) * F.logsigmoid(-beta * h))


def sequence_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """sum of log p(token_j | tokens_<j) over the response, j in [start, length): (B, L, V) -> (B,)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, L-1, V): predicts tokens[:, 1:]
    tok_lp = logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, L-1)
    j = torch.arange(1, tokens.shape[1], device=tokens.device)[None]  # position of the predicted token
    in_response = (j >= starts[:, None]) & (j < lengths[:, None])
    return (tok_lp * in_response).sum(-1)


@dataclass
class DPOConfig(PreferenceConfig):
    output: str = opt("runs/dpo", "Output folder: the tuned model as a Hugging Face folder, plus metrics.")
    model: str = opt(
        "", "Starting model (usually the SFT model); also the frozen reference. Default: the bundled tiankong-mini."
    )
    lr: float = opt(
        0.0, "Peak learning rate; 0 = auto from the model size (3e-4 at 3M parameters, 1e-6 at 1B).", auto=0
    )
    # --- DPO
    beta: float = opt(0.1, "How far from the reference the policy may move: higher = stay closer.")
    label_smoothing: float = opt(0.0, "Assumed fraction of flipped labels (conservative DPO); 0 = plain DPO.")

    def validate(self) -> None:
        super().validate()
        if not self.model:
            raise InputError("no starting model: pass --model DIR (a Hugging Face model folder, e.g. your SFT model)")
        if not self.beta > 0:
            self.refuse("beta", "must be > 0")
        if not 0 <= self.label_smoothing < 0.5:
            self.refuse("label_smoothing", "must be in [0, 0.5)")


class DPOTrainer(PreferenceTrainer):
    name = "dpo"
    cfg: DPOConfig

    def setup(self) -> None:
        cfg = self.cfg
        start = self.resume_model_path() or cfg.model
        with self.loading(start):
            self.model, self.mcfg = load_model(start, self.device, cfg.dtype)
        self.model.requires_grad_(True)
        with self.loading(cfg.model):
            self.ref, _ = load_model(cfg.model, self.device, cfg.dtype)  # frozen: requires_grad stays False
        self.check_finite(self.ref, cfg.model)  # the policy's start too
        self.load_data(cfg.model, self.mcfg.max_seq_len)
        self.resolve_auto(n_parameters(self.model))
        self._ref_cache: dict[tuple[int, ...], float] = {}
        self.last_eval: dict[str, float] = {}

    @torch.no_grad()
    def ref_logprobs(self, seqs: list[list[int]], starts: list[int]) -> torch.Tensor:
        missing = [i for i, s in enumerate(seqs) if tuple(s) not in self._ref_cache]
        if missing:
            tokens, _, lengths = pad_right([seqs[i] for i in missing], self.device)
            st = torch.tensor([starts[i] for i in missing], device=self.device)
            positions = torch.arange(tokens.shape[1], device=self.device).expand_as(tokens)
            lp = sequence_logprobs(self.ref(tokens, positions), tokens, st, lengths).tolist()
            for i, v in zip(missing, lp, strict=True):
                self._ref_cache[tuple(seqs[i])] = v
        return torch.tensor([self._ref_cache[tuple(s)] for s in seqs], device=self.device)

    def group_loss(self, model: nn.Module, groups: Sequence[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        b = collate(groups)
        tokens, positions, lengths = pad_right(b.seqs, self.device)
        starts = torch.tensor(b.starts, device=self.device)
        pi = sequence_logprobs(model(tokens, positions), tokens, starts, lengths)  # (B,)
        ref = self.ref_logprobs(b.seqs, b.starts)
        w, lo, target = b.better.to(self.device), b.worse.to(self.device), b.target.to(self.device)
        loss = dpo_loss(pi[w], pi[lo], ref[w], ref[lo], cfg.beta, target, cfg.label_smoothing).sum()
        chosen = (cfg.beta * (pi[w] - ref[w])).detach()
        rejected = (cfg.beta * (pi[lo] - ref[lo])).detach()
        right = torch.where(target == 1.0, (chosen > rejected).float(), torch.full_like(chosen, 0.5))
        return loss, {
            "reward_chosen": float(chosen.sum()),
            "reward_rejected": float(rejected.sum()),
            "reward_margin": float((chosen - rejected).sum()),
            "reward_accuracy": float(right.sum()),
            "logp_chosen": float(pi[w].detach().sum()),
            "logp_rejected": float(pi[lo].detach().sum()),
        }

    def save(self, folder: Path) -> None:
        save_pretrained(
            self.model,
            self.mcfg,
            folder,
            tokenizer_from=self.cfg.model,
            extra_files=self.encoder.template_files() if self.cfg.chat_template else None,  # as sft saves it
            metadata={"step": str(self.step), "trainer": "dpo"},
        )
