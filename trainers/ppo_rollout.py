"""Steps 1-3 of a PPO iteration (ppo.py): where the experience comes from. The prompts (read,
encoded, fitted to context - response_length) and the auto settings that need them; the answers
sampled by the engine's batched generation; their log-probs, values and scores, turned into
per-token rewards and GAE advantages. Apart from ppo.py so that file holds the update (the clipped
losses, the config and the trainer) and reads top-down; PPOTrainer takes these methods from
`PPORollouts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn

from tiankong.engine.context import fit_messages
from tiankong.engine.errors import InputError, TiankongError
from tiankong.engine.events import Finished
from tiankong.engine.generate import generate
from tiankong.engine.sampling import SamplingParams
from tiankong.tui.generate_input import say as say_line

from . import auto
from .data import TRAIN_TEMPLATE_FIX, trainer_template_line
from .optim import SEED_STRIDE
from .preferences import Encoder, pad_right
from .records import messages_field, read_prompt_records
from .reward import RewardModel

if TYPE_CHECKING:
    from .distributed import Dist
    from .ppo import PPOConfig

Reduce = Callable[[dict[str, float]], dict[str, float]]


# ---------------------------------------------------------------- rewards and advantages, as pure functions


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, reduce: Reduce | None = None
) -> torch.Tensor:
    """(x - mean) / std over the masked entries (unbiased variance, as TRL); shift_mean=False keeps
    the mean. `reduce` sums statistics over processes, so N ranks whiten like one."""
    reduce = reduce or (lambda d: d)
    s = reduce({"sum": float((x * mask).sum()), "n": float(mask.sum())})
    n = max(s["n"], 1.0)
    mean = s["sum"] / n
    var = reduce({"sq": float((((x - mean) * mask) ** 2).sum())})["sq"] / n
    if n > 1:
        var *= n / (n - 1)
    out = (x - mean) * torch.rsqrt(torch.tensor(var + 1e-8, dtype=x.dtype, device=x.device))
    return out if shift_mean else out + mean


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over answer tokens: (B, R) -> advantages, returns.

    delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1}, V and A past the end 0.
    Padding (mask 0) after an answer's last token contributes nothing."""
    rewards, values = rewards * mask, values * mask
    R = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(R)):
        next_v = values[:, t + 1] if t + 1 < R else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    adv = adv * mask
    return adv, adv + values


def token_logprobs(
    logits: torch.Tensor, at: torch.Tensor, tokens: torch.Tensor, temperature: float, entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, R) of `tokens` under softmax(logits / T) read at positions `at` (B, R), and the
    entropy of that distribution (when asked). logits: (B, L, V)."""
    V = logits.shape[-1]
    lg = logits.gather(1, at[..., None].expand(-1, -1, V)).float() / temperature  # (B, R, V)
    logp = torch.log_softmax(lg, dim=-1)
    ent = -(logp.exp() * logp).sum(-1) if entropy else None
    return logp.gather(-1, tokens[..., None]).squeeze(-1), ent


# ---------------------------------------------------------------- data


@dataclass
class Rollout:
    tokens: torch.Tensor  # (B, L) prompt + answer, right-padded
    at: torch.Tensor  # (B, R) position whose logits predict answer token t (= prompt_len + t - 1)
    answer: torch.Tensor  # (B, R) answer tokens
    mask: torch.Tensor  # (B, R) 1.0 on real answer tokens
    lengths: torch.Tensor  # (B,) prompt + answer lengths
    logprobs: torch.Tensor  # (B, R) under the policy that sampled them (at temperature)
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def read_prompts(path: str | Path) -> list[tuple[int, str | list[dict]]]:
    """(line, prompt) from text lines or JSONL lines with "prompt" (text) or "messages"."""
    out: list[tuple[int, str | list[dict]]] = []
    for n, where, record in read_prompt_records(path):
        if "messages" not in record:
            out.append((n, record["prompt"]))
            continue
        try:
            out.append((n, messages_field(record["messages"], "messages")))
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
    return out


@torch.no_grad()
def sample(
    model: nn.Module,
    mcfg: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    temperature: float,
    max_new_tokens: int,
    chunk: int = 0,
    advance: Callable[[], None] | None = None,
) -> list[tuple[int, ...]]:
    """Answer token ids (EOS included when the answer ended) by the engine's batched generation,
    pure sampling at `temperature`, one seed per row, `chunk` rows at a time (0 = all); `advance()`
    is called as each answer is done (a progress display)."""
    params = [
        SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0, max_new_tokens=max_new_tokens, seed=s)
        for s in seeds
    ]
    answers: list[tuple[int, ...]] = [()] * len(prompts)
    chunk = chunk or len(prompts)
    was_training = model.training
    model.eval()
    for i in range(0, len(prompts), chunk):
        for ev in generate(model, mcfg, tokenizer, [list(p) for p in prompts[i : i + chunk]], params[i : i + chunk]):
            if isinstance(ev, Finished):
                answers[i + ev.row] = ev.token_ids
                if advance is not None:
                    advance()
    model.train(was_training)
    return answers


# ---------------------------------------------------------------- the trainer's rollout stage


class PPORollouts:
    """PPOTrainer's steps 1-3 (see the module docstring). A mixin: PPOTrainer.setup() (ppo.py) loads
    the models these methods read, and the shared loop (common.py) supplies cfg, dist and step."""

    name: str
    cfg: PPOConfig
    dist: Dist
    device: torch.device
    step: int
    mcfg: Any
    encoder: Encoder
    ref: nn.Module  # frozen starting policy
    reward_model: RewardModel  # frozen
    policy: nn.Module  # trained; PPOTrainer's properties
    value: RewardModel
    kl_coef: float
    say: Callable[[str], None]  # the loop's spinner text while setup runs (common.py)

    def load_prompts(self) -> None:
        """Encode the prompts, resolve the auto settings (they need the prompts), then drop prompts
        too long for context - response_length."""
        cfg = self.cfg
        path = cfg.prompts or cfg.data
        encoded: list[tuple[int, list[int]]] = []
        read = read_prompts(path)
        for n, prompt in read:
            try:
                encoded.append((n, self.encoder.prompt(prompt)))
            except TiankongError as e:
                raise trainer_template_line(e, f"{path} line {n}", TRAIN_TEMPLATE_FIX) from None
        self.resolve_auto([ids for _, ids in encoded])
        if cfg.batch_size < self.dist.world:
            raise InputError(f"batch_size {cfg.batch_size} is smaller than the {self.dist.world} processes; raise it")
        limit = self.mcfg.max_seq_len - cfg.response_length
        cut = []  # conversations that keep only their latest turns
        for i, ((n, ids), (_, prompt)) in enumerate(zip(encoded, read, strict=True)):
            if len(ids) > limit and isinstance(prompt, list):
                try:
                    encoded[i] = (n, fit_messages(self.encoder.prompt, prompt, limit)[0])
                    cut.append(n)
                except InputError:  # the last turn alone is too long: skipped below
                    pass
        if cut and self.dist.is_main:
            say_line(
                f"{path}: dropped the oldest turns of {len(cut)} conversation(s) longer than context - "
                f"response_length = {limit} tokens (lines {', '.join(map(str, cut[:5]))}"
                f"{' ...' if len(cut) > 5 else ''})"
            )
        self.prompts = [ids for _, ids in encoded if len(ids) <= limit]
        self.prompt_texts = [
            p for (_, ids), (_, p) in zip(encoded, read, strict=True) if len(ids) <= limit
        ]  # as written
        too_long = [n for n, ids in encoded if len(ids) > limit]
        if too_long and self.dist.is_main:
            say_line(
                f"{path}: skipped {len(too_long)} prompt(s) longer than context - response_length = {limit} "
                f"tokens (lines {', '.join(map(str, too_long[:5]))}{' ...' if len(too_long) > 5 else ''})"
            )
        if not self.prompts:
            raise InputError(
                f"{path}: every prompt is longer than {limit} tokens; shorten them or lower --response-length"
            )

    def resolve_auto(self, prompts: list[list[int]]) -> None:
        """Fill in the settings left at 0; response_length from a probe of the starting policy."""
        cfg = self.cfg
        n_params = auto.n_parameters(self.policy)

        def probe() -> int:
            # 32 answers of the starting policy (the same on --resume; prompts in turn, fixed seeds)
            # with room to end: where do they stop? Prompts leaving no room for 16 tokens are left
            # out here (load_prompts skips them, naming their lines; the probe stopped on them).
            ctx = self.mcfg.max_seq_len
            room = [p for p in prompts if len(p) <= ctx - 16]
            if not room:
                raise InputError(
                    f"{cfg.prompts or cfg.data}: every prompt leaves less than 16 of the model's {ctx} tokens "
                    "for an answer; shorten them"
                )
            cap = max(16, min(256, ctx - max(len(p) for p in room)))
            rows = [room[i % len(room)] for i in range(32)]
            seeds = [cfg.seed * 7919 + i for i in range(32)]
            done = [0]

            def answered() -> None:
                done[0] += 1
                self.say(f"ppo: finding the answer length (--response-length 0 = auto): {done[0]}/32 probe answers")

            self.say("ppo: finding the answer length (--response-length 0 = auto): 0/32 probe answers")
            answers = sample(
                self.ref,
                self.mcfg,
                self.encoder.tokenizer,
                rows,
                seeds,
                cfg.temperature,
                cap,
                cfg.micro_batch_size,
                answered,
            )
            ended = [any(x in self.encoder.tokenizer.eos_ids for x in a) for a in answers]
            return auto.auto_response_length([len(a) for a in answers], ended, cap)

        self.auto = auto.fill(
            cfg,
            self.name,
            n_params,
            len(prompts),
            "prompts",
            {
                "lr": lambda: auto.auto_lr("ppo", n_params),
                "batch_size": lambda: auto.auto_ppo_batch(n_params),
                "num_mini_batches": lambda: max(1, cfg.batch_size // 16),
                "steps": lambda: auto.auto_ppo_steps(len(prompts), cfg.batch_size),
                "response_length": probe,
            },
        )
        if self.auto.values and self.dist.is_main:  # a record of the run, not decoration: kept by --no-progress
            say_line(self.auto.line())

    def _reduce(self, d: dict[str, float]) -> dict[str, float]:
        return self.dist.all_reduce_sum(d)

    # ---- 1-3: rollouts, rewards, advantages
    @torch.no_grad()
    def rollout(
        self, prompts: list[list[int]], seeds: list[int], advance: Callable[[], None] | None = None
    ) -> tuple[Rollout, dict[str, float]]:
        """The answers to `prompts` (`advance()` after each), scored, with their advantages and the stats."""
        cfg, dev = self.cfg, self.device
        tok = self.encoder.tokenizer
        chunk = cfg.micro_batch_size or len(prompts)
        answers = sample(
            self.policy, self.mcfg, tok, prompts, seeds, cfg.temperature, cfg.response_length, chunk, advance
        )

        seqs = [p + list(a) for p, a in zip(prompts, answers, strict=True)]
        tokens, positions, lengths = pad_right(seqs, dev, pad_id=self.encoder.eos_id)
        B, L = tokens.shape
        q_len = torch.tensor([len(p) for p in prompts], device=dev)
        r_len = torch.tensor([len(a) for a in answers], device=dev)
        t = torch.arange(int(r_len.max()), device=dev)[None]  # (1, R)
        mask = (t < r_len[:, None]).float()  # (B, R)
        at = (q_len[:, None] + t - 1).clamp(max=L - 2)  # logits at `at` predict the token at `at + 1`
        answer = tokens.gather(1, at + 1)

        # The reward model was trained on answers that end with EOS (see preferences.py), so it reads
        # every answer that way: one cut off by --response-length gets an EOS for scoring only (the
        # policy is charged for it through --missing-eos-penalty, not through an unfamiliar input).
        has_eos = [any(x in tok.eos_ids for x in a) for a in answers]
        eos, ctx = self.encoder.eos_id, self.mcfg.max_seq_len
        scored = [q if e else q + [eos] if len(q) < ctx else q[:-1] + [eos] for q, e in zip(seqs, has_eos, strict=True)]
        rm_tokens, rm_positions, rm_lengths = pad_right(scored, dev, pad_id=self.encoder.eos_id)

        logprobs, ref_logprobs, entropy, values, raw = [], [], [], [], []
        for i in range(0, B, chunk):
            s = slice(i, i + chunk)
            lp, ent = token_logprobs(self.policy(tokens[s], positions[s]), at[s], answer[s], cfg.temperature)
            ref_lp, _ = token_logprobs(
                self.ref(tokens[s], positions[s]), at[s], answer[s], cfg.temperature, entropy=False
            )
            logprobs.append(lp), entropy.append(ent), ref_logprobs.append(ref_lp)
            values.append(self.value(tokens[s], positions[s]).gather(1, at[s]))
            rewards_s = self.reward_model(rm_tokens[s], rm_positions[s])  # (b, L'), raw
            raw.append(rewards_s.gather(1, (rm_lengths[s] - 1)[:, None]).squeeze(1))
        logprobs, ref_logprobs = torch.cat(logprobs) * mask, torch.cat(ref_logprobs) * mask
        entropy, values = torch.cat(entropy), torch.cat(values) * mask
        scores = self.reward_model.normalize(torch.cat(raw))  # (B,)
        has_eos = torch.tensor(has_eos, device=dev)
        scores = scores - cfg.missing_eos_penalty * (~has_eos).float()

        kl = logprobs - ref_logprobs  # (B, R), 0 on padding
        rewards = -self.kl_coef * kl
        rewards[torch.arange(B, device=dev), r_len - 1] += scores  # the score lands on the last real token
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False, reduce=self._reduce) * mask
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask, reduce=self._reduce) * mask
        # Reported KL: the k3 estimator (ratio - 1 - log ratio, ratio = pi_ref / pi per sampled token)
        # is never negative and unbiased, unlike the k1 sum in the penalty, which dips below 0 by chance.
        k3 = ((-kl).exp() - 1 + kl) * mask
        stats = {
            "reward": float(scores.sum()),
            "kl": float(k3.sum()),
            "kl_k1": float(kl.sum()),
            "non_score_reward": float((-self.kl_coef * kl).sum()),
            "entropy": float((entropy * mask).sum()),
            "response_length": float(r_len.sum()),
            "eos_rate": float(has_eos.float().sum()),
            "value_mean": float(values.sum()),
            "rollouts": float(B),
            "tokens": float(mask.sum()),
        }
        return Rollout(tokens, at, answer, mask, lengths, logprobs, ref_logprobs, values, advantages, returns), stats

    def rollout_seeds(self, n: int) -> list[int]:
        """A seed per row of this step's global batch: the same on every rank and on resume."""
        g = torch.Generator().manual_seed(self.cfg.seed * SEED_STRIDE + self.step)
        return torch.randint(0, 2**31 - 1, (n,), generator=g).tolist()
