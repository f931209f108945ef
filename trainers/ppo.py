"""PPO against a reward model, with a per-token KL penalty to the starting policy.

    tiankong train ppo --model runs/sft --reward runs/rm --prompts prompts.txt --output runs/ppo

Four models: the policy (trained, from --model), a frozen reference copy of it, a value model
(trained; starts as the reward model, base + head, with the head's normalisation folded in) and the
frozen reward model. One step of the shared loop is one PPO iteration, following TRL's PPO trainer
and "The N Implementation Details of RLHF with PPO":

1. Rollouts: --batch-size prompts (over all processes) answered by the engine's KV-cached, batched
   generation around the live policy, sampling at --temperature with no other filter, up to
   --response-length tokens; each row gets a seed derived from (--seed, step, row), so a resumed
   run draws the same answers.
2. One forward pass each of policy and reference over prompt + answer gives the log-probs of the
   sampled tokens at the sampling temperature (logits / T); the value model gives V(s_t) for the
   state before each answer token; the reward model scores the whole sequence at its last token.
   Its training answers all end with EOS, so an answer cut off by --response-length is scored with
   an EOS appended (for the reward model only) and loses --missing-eos-penalty instead.
3. Rewards per answer token: r_t = -kl_coef * (log pi(a_t) - log pi_ref(a_t)), plus the score at
   the last real token (optionally whitened, --whiten-rewards). GAE (gamma 1, lambda 0.95 by
   default) gives advantages, whitened over the batch, and returns = advantages + values.
4. --ppo-epochs passes over the rollouts in --num-mini-batches shuffled minibatches, one optimiser
   step each, minimising  clipped policy loss + vf_coef * clipped value loss  (token means).
   Our models have no dropout, so log-probs in training equal those of the rollout before the
   first update (ratio 1), as the implementation-details paper requires.

Prompts (--prompts): text lines, or JSONL lines with "prompt" (text) or "messages"; a malformed line
stops the run with its number. A conversation too long for context - response_length loses its
oldest turns (engine/context.py fit_messages, as in the chat); any other prompt too long is skipped;
both are reported with their line numbers. They are cycled through in shuffled order, --batch-size per iteration.

Prompt format: the policy's chat template, or --chat-template FILE's (saved with the output as
chat_template.jinja, as sft saves it), or plain text (--raw, or a model without one). The reward model
scores the policy's own token ids, so it must have learned that same format (its folder records it:
reward_config.json's prompt_format and chat_template.jinja); a run whose format differs from it is
refused at start with the flag that makes them agree, not trained towards scores of text it never saw.

--kl-target > 0 turns on the adaptive KL controller of Ziegler et al. (2019); its coefficient is
part of the trainer state, so --resume continues with it. Output: the policy as a Hugging Face
folder (`tiankong generate -m OUTPUT` and transformers load it) and the value model in OUTPUT/value
(a reward-model folder: base + value head).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from tiankong.engine.errors import InputError
from tiankong.engine.model import load_model, save_pretrained
from tiankong.tui.generate_input import say as say_line

from . import auto
from .common import Trainer
from .config import TrainConfig, opt
from .optim import SEED_STRIDE
from .ppo_rollout import PPORollouts, token_logprobs
from .preferences import CHAT_TEMPLATE_HELP, Encoder, check_template_flags
from .reward import RewardModel
from .verdict import reward_model_doubts

# ---------------------------------------------------------------- the PPO losses, as pure functions


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate max(-A r, -A clip(r, 1-eps, 1+eps)), r = pi/pi_old; also whether
    the clipped term was the one taken, and the ratio."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float(), ratio


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token 0.5 max((V - G)^2, (V_clip - G)^2), V_clip = V_old + clip(V - V_old, -eps, eps)."""
    step = values - old_values
    v_clip = old_values + torch.clamp(step, -cliprange_value, cliprange_value)
    a, b = (values - returns) ** 2, (v_clip - returns) ** 2
    # "clipped" = the clip was active and its loss was the larger (v_clip != v by rounding alone must not count)
    return 0.5 * torch.maximum(a, b), ((step.abs() > cliprange_value) & (b > a)).float()


# ---------------------------------------------------------------- prompt formats


def check_prompt_format(policy: Encoder, reward: Encoder, folder: Path) -> None:
    """Refuse a run whose prompts the reward model would read in a format it was not trained on: it
    scores the policy's token ids as they are (ppo_rollout.py), never rendered again its own way."""
    mine = None if policy.raw or policy.template is None else policy.template.source
    its = None if reward.raw or reward.template is None else reward.template.source
    if mine == its:
        return
    saved = folder / "chat_template.jinja"
    use = f"--chat-template {saved}" if saved.is_file() else "--chat-template FILE with its template"
    if its is None:
        raise InputError(
            f"the reward model {folder} learned plain-text prompts (no chat template) but this run renders "
            "them with a chat template; pass --raw (without --chat-template), or train the reward model with "
            "this run's template (--chat-template FILE)"
        )
    if mine is None:
        raise InputError(
            f"the reward model {folder} learned prompts in a chat template but this run renders them as "
            f"plain text; pass {use} (without --raw)"
        )
    raise InputError(
        f"the reward model {folder} learned prompts in another chat template than this run's; pass {use}, "
        "or train the reward model with --chat-template FILE of this run"
    )


# ---------------------------------------------------------------- modules


class PolicyAndValue(nn.Module):
    """The two trained models as one module, so one optimiser and one DDP wrapper cover both."""

    def __init__(self, policy: nn.Module, value: RewardModel) -> None:
        super().__init__()
        self.policy, self.value = policy, value

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(tokens, positions), self.value(tokens, positions)  # (B, L, V), (B, L)


# ---------------------------------------------------------------- the trainer


@dataclass
class PPOConfig(TrainConfig):
    output: str = opt("runs/ppo", "Output folder: the policy as a Hugging Face folder, the value model in value/.")
    model: str = opt(
        "", "Starting policy (usually the SFT model); also the frozen reference. Default: the bundled tiankong-mini."
    )
    reward: str = opt("", "Reward model folder (from `tiankong train reward`); the value model starts from it.")
    prompts: str = opt("", 'Prompts: text lines, or JSONL with "prompt" or "messages" (default: --data).')
    data: str = opt("", "Same as --prompts.")
    eval_every: int = opt(
        0, "Not used: PPO has no held-out split (the metrics of every step are its record).", hidden=True
    )
    steps: int = opt(
        0,
        "PPO iterations (each: one batch of rollouts, then --ppo-epochs passes over it); "
        "0 = auto: 20, or one pass over the prompts if that is more.",
        auto=0,
    )
    batch_size: int = opt(
        0,
        "Rollouts per iteration, over all processes (prompts are cycled through); "
        "0 = auto: 32 (64 from 100M parameters).",
        auto=0,
    )
    micro_batch_size: int = opt(0, "Rollouts per forward pass (generation and updates); 0 = all at once.")
    lr: float = opt(
        0.0,
        "Peak learning rate (policy and value model); 0 = auto from the model size "
        "(2e-4 at 3M parameters, 3e-6 at 1B).",
        auto=0,
    )
    # --- rollouts
    response_length: int = opt(
        0,
        "Answer length limit in tokens; 0 = auto: long enough for 90% of the "
        "starting policy's answers to end (probed on the prompts), 64 if they never end.",
        auto=0,
    )
    temperature: float = opt(1.0, "Sampling temperature of the rollouts (log-probs use the same).")
    raw: bool = opt(False, "Ignore the model's chat template: plain text prompts, as `generate --raw`.")
    chat_template: str = opt("", CHAT_TEMPLATE_HELP)
    # --- reward
    kl_coef: float = opt(0.05, "KL penalty per token: reward -= kl_coef * (log pi - log pi_ref).")
    kl_target: float = opt(0.0, "Adapt kl_coef towards this KL per answer (nats); 0 = fixed kl_coef.")
    kl_horizon: int = opt(10000, "Adaptive KL controller horizon (in rollouts).")
    missing_eos_penalty: float = opt(0.0, "Subtracted from the score of answers that did not end with EOS.")
    whiten_rewards: bool = opt(False, "Whiten the per-token rewards over the batch (keeping their mean).")
    # --- PPO
    ppo_epochs: int = opt(4, "Passes over each batch of rollouts.")
    num_mini_batches: int = opt(0, "Minibatches (optimiser steps) per pass; 0 = auto: one per 16 rollouts.", auto=0)
    cliprange: float = opt(0.2, "Policy ratio clip epsilon.")
    cliprange_value: float = opt(0.2, "Value clip around the rollout's values.")
    vf_coef: float = opt(0.1, "Weight of the value loss.")
    gamma: float = opt(1.0, "Discount factor.")
    lam: float = opt(0.95, "GAE lambda.")

    def validate(self) -> None:
        auto.validate_auto(self, super().validate)
        if not self.model:
            raise InputError("no starting policy: pass --model DIR (a Hugging Face model folder)")
        if not self.reward:
            raise InputError("no reward model: pass --reward DIR (the output of `tiankong train reward`)")
        if not (self.prompts or self.data):
            raise InputError('no prompts: pass --prompts FILE (text lines or JSONL with "prompt"/"messages")')
        check_template_flags(self.raw, self.chat_template)
        if not 0 < self.temperature <= 2:
            raise InputError(
                f"--temperature must be in (0, 2] for PPO (log-probs are taken at it), got {self.temperature}"
            )
        for name in ("ppo_epochs", "kl_horizon"):
            if getattr(self, name) < 1:
                self.refuse(name, "must be at least 1")
        for name in ("response_length", "num_mini_batches"):
            if getattr(self, name) < 0:
                self.refuse(name, "must be at least 1")
        if self.batch_size and self.num_mini_batches > self.batch_size:
            raise InputError(
                f"--num-mini-batches ({self.num_mini_batches}) cannot exceed --batch-size ({self.batch_size})"
            )
        for name in ("kl_coef", "kl_target", "missing_eos_penalty", "vf_coef"):
            if getattr(self, name) < 0:
                self.refuse(name, "must be >= 0")
        for name in ("cliprange", "cliprange_value"):
            if not getattr(self, name) > 0:
                self.refuse(name, "must be > 0")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                self.refuse(name, "must be in [0, 1]")


class PPOTrainer(PPORollouts, Trainer):
    name = "ppo"
    cfg: PPOConfig

    def setup(self) -> None:
        cfg = self.cfg
        resume = self.resume_model_path()
        with self.loading(resume or cfg.model):
            policy, self.mcfg = load_model(resume or cfg.model, self.device, cfg.dtype)
        policy.requires_grad_(True)
        with self.loading(cfg.model):
            self.ref, _ = load_model(cfg.model, self.device, cfg.dtype)  # frozen
        with self.loading(cfg.reward, "the --reward model"):
            self.reward_model = RewardModel.load(cfg.reward, self.device, cfg.dtype).requires_grad_(False)
        self.check_finite(self.ref, cfg.model)  # the policy's start too
        self.check_finite(self.reward_model, cfg.reward, "the --reward model")
        # Said at start and again in this run's verdict: PPO's own figures cannot tell a reward model
        # that learned nothing (its score rises all the same).
        self.reward_doubts = reward_model_doubts(cfg.reward)
        if self.reward_doubts and self.dist.is_main:
            say_line(f"warning: {self.reward_doubts}")
        if self.reward_model.cfg.vocab_size != self.mcfg.vocab_size:
            raise InputError(
                f"the reward model's vocabulary ({self.reward_model.cfg.vocab_size}) differs from the "
                f"policy's ({self.mcfg.vocab_size}); train the reward model on the policy's base"
            )
        if resume is not None:
            with self.loading(resume / "value"):
                value = RewardModel.load(resume / "value", self.device, cfg.dtype)
        else:
            value = self.value_from_reward(RewardModel.load(cfg.reward, self.device, cfg.dtype))
        value.requires_grad_(True)
        if not value.cfg.tie_embeddings:
            value.base.output.requires_grad_(False)  # its LM head is not used
        self.model = PolicyAndValue(policy, value)
        self.encoder = Encoder.from_folder(cfg.model, raw=cfg.raw, chat_template=cfg.chat_template)
        probe = "Once upon a time, 1 2 3."
        if self.reward_model.encoder.tokenizer.encode(probe) != self.encoder.tokenizer.encode(probe):
            raise InputError(
                "the reward model's tokenizer differs from the policy's; train the reward model "
                "on the policy's base model"
            )
        check_prompt_format(self.encoder, self.reward_model.encoder, Path(cfg.reward))
        self.load_prompts()
        if self.dist.is_main and not cfg.raw and (note := self.encoder.no_template_note(cfg.model)):
            say_line(note)  # as generate warns: the rollouts' prompts have no roles
        self.kl_coef = cfg.kl_coef

    @staticmethod
    def value_from_reward(rm: RewardModel) -> RewardModel:
        """The value model starts as the reward model; its head gets the normalisation folded in
        (w' = scale w, b' = bias), so its first predictions are on the scale of the scores."""
        value = RewardModel(rm.base, rm.cfg, bias=True, encoder=rm.encoder, meta={"role": "PPO value model"})
        with torch.no_grad():
            value.head.weight.copy_(rm.head.weight * rm.normalization["scale"])
            value.head.bias.fill_(
                rm.normalization["bias"]
                + (float(rm.head.bias) if rm.head.bias is not None else 0.0) * rm.normalization["scale"]
            )
        return value

    # ---- 1-3: rollouts, rewards, advantages: load_prompts, resolve_auto, rollout and rollout_seeds
    # are PPORollouts' (ppo_rollout.py)

    def n_items(self) -> int:
        return len(self.prompts)

    @property
    def policy(self) -> nn.Module:
        return self.model.policy

    @property
    def value(self) -> RewardModel:
        return self.model.value

    # ---- 4: the PPO loss on a few rows of the current rollout
    def loss(self, rows: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed (over answer tokens) clipped policy loss + vf_coef * clipped value loss."""
        cfg, ro = self.cfg, self._ro
        idx = torch.as_tensor(list(rows), device=self.device)
        L = int(ro.lengths[idx].max())
        logits, values = self.ddp_model(ro.tokens[idx, :L], torch.arange(L, device=self.device).expand(len(idx), L))
        at, mask = ro.at[idx].clamp(max=L - 1), ro.mask[idx]  # padding entries may point past this chunk
        logp, _ = token_logprobs(logits, at, ro.answer[idx], cfg.temperature, entropy=False)
        v = values.gather(1, at)
        pg, pg_clipped, ratio = policy_loss(logp, ro.logprobs[idx], ro.advantages[idx], cfg.cliprange)
        vf, vf_clipped = value_loss(v, ro.values[idx], ro.returns[idx], cfg.cliprange_value)
        loss = ((pg + cfg.vf_coef * vf) * mask).sum()
        d = (logp - ro.logprobs[idx]).detach()

        def total(x: torch.Tensor) -> float:
            return float((x.detach() * mask).sum())

        return loss, {
            "policy_loss": total(pg),
            "value_loss": total(vf),
            "clipfrac": total(pg_clipped),
            "value_clipfrac": total(vf_clipped),
            "approx_kl": total(0.5 * d**2),
            "ratio": total(ratio),
        }

    def _zero(self) -> torch.Tensor:
        """A rank with no rows in a minibatch runs row 0 at weight 0: through the DDP model, so it
        joins the gradient all-reduce of the policy and value together."""
        return self.loss([0])[0] * 0.0

    # ---- 5: a step: rollouts, then ppo_epochs passes of minibatch updates on the shared loop's pieces
    def train_step(self, batch: list[int]) -> dict[str, float]:
        """Roll out this step's prompts, then ppo_epochs shuffled passes of num_mini_batches updates
        (set_lr, accumulate, optimizer_step, reduce_mean from common.py), and adapt the KL penalty."""
        cfg, dist = self.cfg, self.dist
        seeds = self.rollout_seeds(len(batch))
        mine = list(range(dist.rank, len(batch), dist.world))
        # The bar moves within the iteration: its first half while this rank's answers are sampled, the
        # second over the minibatch updates (a step takes minutes on a CPU).
        sampled = [0]

        def answered() -> None:
            sampled[0] += 1
            self.phase(0.5 * sampled[0] / len(mine), f"rollouts {sampled[0]}/{len(mine)}")

        self.phase(0.0, f"rollouts 0/{len(mine)}")
        with dist.gathered(self.model):  # FSDP: sampling runs the policy until EOS, a different count per rank
            self._ro, stats = self.rollout([self.prompts[batch[j]] for j in mine], [seeds[j] for j in mine], answered)
        stats = dist.all_reduce_sum(stats)
        n_rows, n_tokens = stats.pop("rollouts"), stats.pop("tokens")
        row = {k: v / (n_tokens if k in ("entropy", "value_mean") else n_rows) for k, v in stats.items()}
        row["rlhf_reward"] = row["reward"] + row["non_score_reward"]

        lr = self.set_lr()
        sums: dict[str, float] = {}
        seen = grad_norm = 0.0
        self.model.train()
        updates, n_updates = 0, cfg.ppo_epochs * cfg.num_mini_batches
        self.phase(0.5, f"updates 0/{n_updates}")
        for epoch in range(cfg.ppo_epochs):
            # Shuffle the *global* batch the same way on every rank, then each rank takes its own rows of
            # each minibatch: N processes make exactly the minibatches one process would.
            g = torch.Generator().manual_seed((cfg.seed * SEED_STRIDE + self.step) * 1009 + epoch)
            order = torch.randperm(len(batch), generator=g)
            for global_mb in order.tensor_split(cfg.num_mini_batches):
                mb = [j // dist.world for j in global_mb.tolist() if j % dist.world == dist.rank]
                n_tok = dist.all_reduce_sum({"n": float(self._ro.mask[mb].sum()) if mb else 0.0})["n"]
                self.accumulate(mb, max(n_tok, 1.0), sums)  # the loss per answer token of the minibatch
                seen += n_tok
                grad_norm = self.optimizer_step()
                updates += 1
                self.phase(0.5 + 0.5 * updates / n_updates, f"updates {updates}/{n_updates}")
        row.update(self.reduce_mean(sums, max(seen, 1.0)))
        row["loss"] = row["policy_loss"] + cfg.vf_coef * row["value_loss"]
        row.update(kl_coef=self.kl_coef, lr=lr, grad_norm=grad_norm)
        if cfg.kl_target > 0:  # Ziegler et al.: proportional control of the KL, clipped at +-20%
            err = max(-0.2, min(0.2, row["kl_k1"] / cfg.kl_target - 1))
            self.kl_coef *= 1 + err * len(batch) / cfg.kl_horizon
        self._ro = None
        return row

    # ---- files and state
    def save(self, folder: Path) -> None:
        # The value model first: the policy's weights (with the step in their metadata) are what
        # --resume checks against trainer_state.pt, so they must be the last model file written.
        self.value.save(folder / "value", tokenizer_from=self.cfg.model, step=self.step)
        save_pretrained(
            self.policy,
            self.mcfg,
            folder,
            tokenizer_from=self.cfg.model,
            extra_files=self.encoder.template_files() if self.cfg.chat_template else None,  # as sft saves it
            metadata={"step": str(self.step), "trainer": "ppo"},
        )

    def extra_state(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_coef}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.kl_coef = float(state.get("kl_coef", self.cfg.kl_coef))
