"""Did the run work? A verdict in words and figures after every training run (and verdict.json).

    reward  held-out pairwise accuracy with a 95% Wilson interval and the number of pairs; warns
            when there are too few votes or the interval includes 0.5 (at chance).
    ppo/dpo fresh answers of the starting model (before) and the trained one (after), same prompts
            and seeds: reward-model score (PPO) or DPO's implicit reward beta * log(pi / pi_ref),
            the KL to the reference (mean over answers of log pi(y) - log pi_ref(y), y from pi),
            answer length, EOS rate, the share of distinct answers and that of answers in another
            script than their prompt (language drift: Chinese in answers to English requests); warns
            when the score rises while the answers collapse (repeats, lengths at the limit), when the
            answers drift into another language, or when nothing moved; and shows a few answers
            side by side, each prompt as written. PPO's also carries the --reward model's own failed
            verdict (reward_model_doubts); DPO's also has reward's warnings on its votes (vote_warnings),
            its held-out accuracy being that of its implicit reward.
    sft     first and last training loss, and the held-out loss when there is one.

`verdict_for(trainer, advance)` computes it from the trainer object the run leaves (models still
loaded), calling `advance()` once per fresh answer sampled (`fresh_answers(trainer)` of them: the
slow part, minutes on a CPU); `Verdict.render()` gives rich renderables, `Verdict.to_dict()` what
verdict.json holds. Library code: no printing here (tui/train_cli.py prints, and draws the bar).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from tiankong.engine.files import atomic_write_text

from .metrics import diverged_at, read_metrics

FEW_VOTES = 50  # fewer pairs than this: say so
N_FRESH = 32  # fresh answers before and after, for the policy verdicts
N_SHOWN = 3  # answers shown side by side


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (successes may be fractional: ties count 1/2)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Verdict:
    trainer: str
    summary: str  # one or two sentences in words
    figures: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    examples: list[dict[str, str]] = field(default_factory=list)  # prompt, before, after
    settings: dict[str, Any] = field(default_factory=dict)  # what "auto" resolved to
    # How the examples were sampled, in the table's title: a reader who chats at a preset's filters took
    # pure temperature-1 answers of the starting model for a broken model.
    sampled: str = ""

    @property
    def ok(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def write(self, folder: Path) -> Path:
        path = Path(folder) / "verdict.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    def render(self) -> list[Any]:
        """rich renderables: the words, the figures, the warnings, the answers side by side."""
        from rich.table import Table
        from rich.text import Text

        out: list[Any] = [Text(f"Verdict ({self.trainer}): {self.summary}", style="bold")]
        figures = Table(show_header=False, box=None, padding=(0, 2))
        for k, v in self.figures.items():
            figures.add_row(k.replace("_", " "), _fmt(v))
        out.append(figures)
        for w in self.warnings:
            out.append(Text(f"warning: {w}", style="bold yellow"))
        if self.examples:
            how = f", sampled at {self.sampled}" if self.sampled else ""
            table = Table(title=f"fresh answers, same prompt and seed{how}", show_lines=True, expand=True)
            for col in ("prompt", "before", "after"):
                table.add_column(col, overflow="fold", ratio=1 if col == "prompt" else 3)
            for ex in self.examples:
                table.add_row(Text(ex["prompt"]), Text(ex["before"]), Text(ex["after"]))  # a str is read as markup
            out.append(table)
        return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)) and all(isinstance(x, float) for x in v):
        return " - ".join(f"{x:.3g}" for x in v)
    return str(v)


def fresh_answers(trainer: Any) -> int:
    """How many answers verdict_for samples for this run (before and after together; 0: none)."""
    return 2 * N_FRESH if trainer.name in ("ppo", "dpo") and _diverged(trainer) is None else 0


def _metric_rows(trainer: Any) -> list[dict[str, Any]]:
    return read_metrics(trainer.out) if (trainer.out / "metrics.jsonl").exists() else []


def _diverged(trainer: Any) -> int | None:
    """The first step of this run whose training loss was NaN or infinite, or None."""
    return diverged_at(_metric_rows(trainer))


def verdict_for(trainer: Any, advance: Callable[[], None] | None = None) -> Verdict:
    """The verdict of a finished run, from its trainer (see the module docstring); `advance()` is
    called after each of the fresh_answers(trainer) answers it samples."""
    step = _diverged(trainer)
    if step is not None:  # its weights are NaN too: nothing to sample or score, and the cause is what matters
        v = diverged_verdict(trainer, step)
    elif trainer.name in ("ppo", "dpo"):
        v = policy_verdict(trainer, advance)
    else:
        v = reward_verdict(trainer) if trainer.name == "reward" else loss_verdict(trainer)
    if trainer.name == "ppo" and getattr(trainer, "reward_doubts", None):  # its scores were the target
        v.warnings.append(trainer.reward_doubts)
    resolved = getattr(trainer, "auto", None)
    if resolved is not None:
        v.settings = dict(resolved.values)
    return v


def diverged_verdict(trainer: Any, step: int) -> Verdict:
    """A run whose loss became NaN or inf at `step`: one warning with the fix. A loss that is not finite
    at step 1 was computed before any update, so no learning rate caused it: the model or data did."""
    rows = _metric_rows(trainer)
    figures = {"steps": rows[-1].get("step"), "loss_first": rows[0].get("loss"), "diverged_at_step": step}
    if step <= 1:
        summary = "the training loss was not finite from the first step; the saved model is not usable."
        warning = (
            "the loss was NaN or inf before any update: the starting model or the data holds non-finite values; "
            "check that `tiankong generate` loads the --model, and check the data"
        )
    else:
        summary = f"the training loss diverged (NaN or inf from step {step}); the saved model is not usable."
        warning = (
            f"the loss diverged at step {step}: train again with a lower --lr (a tenth of {trainer.cfg.lr:g}, say)"
        )
    return Verdict(trainer.name, summary, figures, [warning])


# ---------------------------------------------------------------- reward


def reward_verdict(trainer: Any) -> Verdict:
    n_pairs = trainer.data.n_pairs
    n_eval = sum(len(g.pairs) for g in trainer.eval_groups)
    ev = held_out(trainer)
    return accuracy_verdict(n_pairs, n_eval, ev.get("eval_accuracy"), ev.get("eval_margin"))


def held_out(trainer: Any) -> dict[str, Any]:
    """The run's last held-out evaluation (eval_*): this process's, else metrics.jsonl's last (a run
    resumed only to write its verdict evaluates nothing)."""
    ev = getattr(trainer, "last_eval", {}) or {}
    if ev:
        return ev
    rows = [r for r in _metric_rows(trainer) if any(k.startswith("eval_") for k in r)]
    return rows[-1] if rows else {}


def accuracy_verdict(n_pairs: int, n_eval: int, accuracy: float | None, margin: float | None = None) -> Verdict:
    """Held-out pairwise accuracy with its interval, in words, and the warnings."""
    figures: dict[str, Any] = {"pairs": n_pairs, "held_out_pairs": n_eval}
    warnings = vote_warnings(n_pairs, n_eval, accuracy)
    if not n_eval or accuracy is None:
        return Verdict("reward", "accuracy unknown: nothing was held out.", figures, warnings)
    lo, hi = wilson(accuracy * n_eval, n_eval)
    figures.update(held_out_accuracy=float(accuracy), ci95=[lo, hi])
    if margin is not None:
        figures["held_out_margin"] = float(margin)
    right = accuracy * n_eval
    words = (
        f"the reward model ranks {right:.3g} of {n_eval} held-out pairs right (accuracy {accuracy:.2f}, "
        f"95% CI {lo:.2f}-{hi:.2f})"
    )
    if lo <= 0.5:
        summary = words + "; that is not distinguishable from chance."
    elif lo >= 0.7:
        summary = words + "; it has learned the taste in these votes."
    else:
        summary = words + "; better than chance, but not reliable yet (more votes would tell)."
    return Verdict("reward", summary, figures, warnings)


def vote_warnings(
    n_pairs: int,
    n_eval: int,
    accuracy: float | None,
    ranker: str = "this reward model",
    learner: str = "the reward model",
) -> list[str]:
    """The warnings of a run trained on votes (train reward's, and DPO's with its implicit reward as the
    `ranker`): too few pairs; nothing held out; a held-out accuracy whose 95% interval includes 0.5."""
    warnings = []
    if n_pairs < FEW_VOTES:
        warnings.append(f"only {n_pairs} pairs: too few votes to learn or to judge a taste; rank a few hundred")
    if not n_eval or accuracy is None:
        warnings.append(
            "no held-out pairs (--eval-fraction 0, or a single ranking), so nothing says whether "
            f"{learner} learned your taste"
        )
        return warnings
    lo, hi = wilson(accuracy * n_eval, n_eval)
    if lo <= 0.5:
        warnings.append(
            f"at chance: the 95% interval {lo:.2f}-{hi:.2f} includes 0.5, so {ranker} may "
            "rank answers no better than a coin; give more (or more consistent) votes"
        )
    return warnings


def reward_model_doubts(folder: str | Path) -> str | None:
    """One line for a --reward model whose own verdict (verdict.json in its folder) failed: its
    warnings' heads ("only 16 pairs", "at chance") and the fix, or None (no verdict there, or ok).
    PPO trains towards that model's scores whatever they are worth, so it says this at start and
    carries it into its own verdict."""
    path = Path(folder) / "verdict.json"
    try:
        own = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a checkpoint folder, or a reward model from elsewhere: nothing to go on
    warnings = own.get("warnings") if isinstance(own, dict) else None
    if not isinstance(warnings, list) or not warnings or own.get("trainer") != "reward":
        return None
    heads = "; ".join(str(w).split(":")[0] for w in warnings)
    votes = any(str(w).startswith(("only ", "at chance")) for w in warnings)
    fix = "give more (or more consistent) votes, then run `tiankong train reward` again" if votes else f"see {path}"
    return (
        f"the --reward model {folder} failed its own verdict ({heads}; {path}), so its scores may not "
        f"follow your taste and this run learns them anyway; {fix}"
    )


# ---------------------------------------------------------------- ppo and dpo


@torch.no_grad()
def policy_verdict(trainer: Any, advance: Callable[[], None] | None = None) -> Verdict:
    from .ppo_rollout import sample
    from .preferences import pad_right

    cfg, name = trainer.cfg, trainer.name
    tok = trainer.encoder.tokenizer
    eos_ids = tok.eos_ids
    if name == "ppo":
        prompts, where = trainer.prompts, "the training prompts (PPO holds none out)"
        temperature, limit = cfg.temperature, cfg.response_length
        policy, mcfg = trainer.policy, trainer.mcfg
    else:
        groups = trainer.eval_groups or trainer.train_groups
        where = "the prompts of held-out rankings" if trainer.eval_groups else "training prompts (none held out)"
        by_ids = {tuple(g.seqs[0][: g.starts[0]]): g.prompt for g in groups}  # prompt ids -> as written
        prompts = list(by_ids)
        temperature, policy, mcfg = 1.0, trainer.model, trainer.mcfg
        limit = max(16, min(256, mcfg.max_seq_len - max(len(p) for p in prompts)))
    rows = [list(prompts[i % len(prompts)]) for i in range(N_FRESH)]
    seeds = [1_000_000 + cfg.seed * 7919 + i for i in range(N_FRESH)]  # not the training seeds
    chunk = cfg.micro_batch_size or 16
    before = sample(trainer.ref, mcfg, tok, rows, seeds, temperature, limit, chunk, advance)
    after = sample(policy, mcfg, tok, rows, seeds, temperature, limit, chunk, advance)

    def logps(model: Any, answers: Sequence[Sequence[int]]) -> torch.Tensor:
        """(N,) log pi(answer | prompt) at the sampling temperature, summed over answer tokens."""
        from .dpo import sequence_logprobs

        out = []
        for i in range(0, N_FRESH, chunk):
            seqs = [r + list(a) for r, a in zip(rows[i : i + chunk], answers[i : i + chunk], strict=True)]
            tokens, positions, lengths = pad_right(seqs, trainer.device)
            starts = torch.tensor([len(r) for r in rows[i : i + chunk]], device=trainer.device)
            out.append(sequence_logprobs(model(tokens, positions).float() / temperature, tokens, starts, lengths))
        return torch.cat(out)

    def stats(answers: Sequence[Sequence[int]]) -> dict[str, float]:
        texts = [tok.decode([x for x in a if x not in eos_ids], skip_special_tokens=True) for a in answers]
        ended = [any(x in eos_ids for x in a) for a in answers]
        return {
            "length": sum(map(len, answers)) / len(answers),
            "eos_rate": sum(ended) / len(ended),
            "at_limit": sum(len(a) >= limit and not e for a, e in zip(answers, ended, strict=True)) / len(answers),
            "distinct": len(set(texts)) / len(texts),
            "shared_passage": shared_passage(answers),
        }

    if name == "ppo":
        score = lambda answers: _ppo_scores(trainer, rows, answers)  # noqa: E731
        score_name = "reward-model score"
    else:
        score = lambda answers: cfg.beta * (logps(policy, answers) - logps(trainer.ref, answers))  # noqa: E731
        score_name = "implicit reward"
    s_before, s_after = score(before), score(after)
    kl = kl_estimate(logps(policy, after), logps(trainer.ref, after))
    b, a = stats(before), stats(after)
    key = "score" if name == "ppo" else "implicit_reward"
    figures = {
        f"{key}_before": float(s_before.mean()),
        f"{key}_after": float(s_after.mean()),
        "kl_to_reference": kl,
        "answers": N_FRESH,
        "response_limit": limit,
        **{f"{k}_before": v for k, v in b.items()},
        **{f"{k}_after": v for k, v in a.items()},
    }
    rise = float(s_after.mean() - s_before.mean())
    spread = float(torch.cat([s_before, s_after]).std()) or 1.0
    summary = (
        f"on {N_FRESH} fresh answers to {where}, the mean {score_name} went from "
        f"{figures[f'{key}_before']:.3g} to {figures[f'{key}_after']:.3g} with KL {kl:.3g} nats to the "
        f"starting model ({kl_words(kl)}); {a['distinct']:.0%} of answers distinct, "
        f"{a['shared_passage']:.0%} sharing one {PASSAGE}-token passage (before {b['shared_passage']:.0%}), "
        f"{a['eos_rate']:.0%} ended (EOS)."
    )
    warnings = collapse_warning(name, score_name, rise, b, a, limit, cfg.lr)
    warnings += stall_warning(score_name, rise, spread, kl)
    decode = lambda a: tok.decode([x for x in a if x not in eos_ids], skip_special_tokens=True)  # noqa: E731
    texts = getattr(trainer, "prompt_texts", None) if name == "ppo" else list(by_ids.values())

    def prompt_text(i: int) -> str:
        if texts and texts[i % len(texts)]:  # as written (a messages list: its last message), not the template's
            p = texts[i % len(texts)]
            return p if isinstance(p, str) else str(p[-1].get("content", ""))
        return tok.decode(rows[i], skip_special_tokens=True)

    drift = language_drift(
        [prompt_text(i) for i in range(N_FRESH)], list(map(decode, before)), list(map(decode, after))
    )
    for key, (b_share, a_share) in drift.items():
        figures.update({f"{key}_before": b_share, f"{key}_after": a_share})
    warnings += drift_warning(name, drift, kl, cfg.lr)
    if name == "dpo":  # trained on votes, as a reward model is: the same warnings on how many, how telling
        n_eval = sum(len(g.pairs) for g in trainer.eval_groups)
        accuracy = held_out(trainer).get("eval_reward_accuracy")
        figures.update(pairs=trainer.data.n_pairs, held_out_pairs=n_eval)
        if n_eval and accuracy is not None:
            figures.update(held_out_reward_accuracy=float(accuracy), ci95=list(wilson(accuracy * n_eval, n_eval)))
        ranker, learner = "the tuned model's implicit reward", "the tuned model"
        warnings += vote_warnings(trainer.data.n_pairs, n_eval, accuracy, ranker, learner)
    shown = range(min(len(prompts), N_SHOWN))
    examples = [{"prompt": prompt_text(i), "before": decode(before[i]), "after": decode(after[i])} for i in shown]
    # ppo_rollout.sample draws from softmax(logits / T) alone: no top-k, top-p, min-p or penalty
    sampled = f"temperature {temperature:g}, no filters (no top-k, top-p, min-p or penalties)"
    return Verdict(name, summary, figures, warnings, examples, sampled=sampled)


def collapse_warning(
    trainer: str, score_name: str, rise: float, b: dict[str, float], a: dict[str, float], limit: int, lr: float
) -> list[str]:
    """The warning for a score that rose while the answers narrowed (b and a: policy_verdict's stats
    before and after): fewer distinct answers, more cut at the `limit`, or more holding one PASSAGE-token
    passage. It leads with the figures that fired, before -> after, then gives the others: a warning
    that opened on "100% of answers distinct (before 100%)" read as a contradiction of its "collapsed",
    the shared passage (28% -> 69%) that fired it buried in the middle."""
    signals = [  # (fired, the figure in words)
        (
            a["shared_passage"] >= max(0.2, b["shared_passage"] + 0.15),
            f"answers holding one {PASSAGE}-token passage {b['shared_passage']:.0%} -> {a['shared_passage']:.0%}",
        ),
        (a["distinct"] < min(0.8, b["distinct"] - 0.1), f"distinct answers {b['distinct']:.0%} -> {a['distinct']:.0%}"),
        (
            a["at_limit"] > max(0.5, b["at_limit"] + 0.2),
            f"answers cut at the {limit}-token limit {b['at_limit']:.0%} -> {a['at_limit']:.0%}",
        ),
    ]
    fired = [words for hit, words in signals if hit]
    if rise <= 0 or not fired:
        return []
    rest = "".join(f", {words}" for hit, words in signals if not hit)
    return [
        f"the {score_name} rose while the answers narrowed: {'; '.join(fired)} (fresh answers, before -> after"
        f"{rest}); it may be gaming the reward: {stay_closer(trainer, lr)}"
    ]


def kl_estimate(policy_logps: torch.Tensor, ref_logps: torch.Tensor) -> float:
    """KL(pi || pi_ref) in nats per answer from answers drawn from pi: the mean of log pi(y) -
    log pi_ref(y). A KL is never below 0; an estimate that comes out below is rounding (a policy
    that hardly moved read "KL -9.54e-07 nats") or sampling noise, and is 0."""
    return max(0.0, float((policy_logps - ref_logps).mean()))


def stall_warning(score_name: str, rise: float, spread: float, kl: float) -> list[str]:
    """The warning for a policy that hardly moved (a score change under a tenth of the scores' `spread`
    and KL under 0.05 nats), or else for a score that did not rise."""
    if abs(rise) < 0.1 * spread and kl < 0.05:
        return [f"the policy hardly moved (KL {kl:.3g} nats, {score_name} change {rise:.3g}); raise --lr or --steps"]
    return [f"the {score_name} did not rise ({rise:.3g}) on fresh answers"] if rise <= 0 else []


def stay_closer(trainer: str, lr: float) -> str:
    """The fix that keeps a policy nearer its starting model, in flags its own command has: DPO's
    --beta, PPO's --kl-coef (DPO's verdict once told to raise --kl-coef, which `train dpo` lacks)."""
    if trainer == "dpo":
        return (
            f"train again with a much higher --beta (such as 2; it holds the policy nearer the starting model) "
            f"or a lower --lr (such as {lr / 5:.2g})"
        )
    return f"train again with a higher --kl-coef, a lower --lr (such as {lr / 5:.2g}) or fewer --steps"


PASSAGE = 8  # tokens: longer than a common opening's words, short enough to catch a template's sentence


def shared_passage(answers: Sequence[Sequence[int]], n: int = PASSAGE) -> float:
    """The share of answers that hold the n-token passage held by the most answers: a policy collapsed
    onto one template ("Baby bird fell out of its nest..." in 26 of 120 answers, 3 before) still has
    distinct answers, each differing somewhere, so the share of distinct answers misses it."""
    counts: Counter[tuple[int, ...]] = Counter()
    for a in answers:
        counts.update({tuple(a[i : i + n]) for i in range(len(a) - n + 1)})
    return max(counts.values(), default=0) / max(1, len(answers))


def kl_words(kl: float) -> str:
    """How far a KL (nats per answer, to the starting model) is, in words: rough bands, a reading aid
    and no test of the run (the README's PPO runs moved 5.3 and 7.5 nats and kept their answers'
    language and endings; past 10 nats, look at the answers before trusting the score)."""
    if kl < 0.5:
        return "hardly moved"
    if kl < 3:
        return "a small drift"
    if kl < 10:
        return "a moderate drift"
    return "a large drift: read the answers"


# Han, kana and hangul: the scripts a model may slip into (tiankong-mini writes English and Chinese).
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[A-Za-z]+")
DRIFT = 0.1  # a rise in the share of answers' text in another script than their prompt's that is warned about


def foreign_share(prompt: str, answer: str) -> float:
    """How much of an answer is in the other script than its prompt's: of its CJK characters and Latin
    words (a CJK character counts as a word, about as much text), the share of CJK characters for a
    prompt without any, or of Latin words for a prompt written in CJK."""
    cjk, words = len(CJK.findall(answer)), len(LATIN_WORD.findall(answer))
    if not cjk + words:
        return 0.0
    return (words if CJK.search(prompt) else cjk) / (cjk + words)


def language_drift(
    prompts: Sequence[str], before: Sequence[str], after: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """The mean foreign_share of the answers, before and after, for the prompts without CJK
    ("cjk_in_answers") and for those written in it ("latin_in_answers"), where there are such prompts."""
    out = {}
    for key, cjk_prompt in (("cjk_in_answers", False), ("latin_in_answers", True)):
        rows = [i for i, p in enumerate(prompts) if bool(CJK.search(p)) == cjk_prompt]
        if rows:
            out[key] = tuple(
                sum(foreign_share(prompts[i], texts[i]) for i in rows) / len(rows) for texts in (before, after)
            )
    return out  # type: ignore[return-value]


def drift_warning(trainer: str, drift: dict[str, tuple[float, float]], kl: float, lr: float) -> list[str]:
    """The warning for answers that drifted into another script (language_drift) by DRIFT or more,
    with the settings that keep a policy closer to its start. For DPO, measured on the bundled model
    and 68 votes (answers to English prompts holding Chinese, of 80): the auto settings 42, --beta 0.5
    41, half the --lr 39, --steps 10 13, --beta 2 5 and a sixth of the --lr 4 (the starting model 2)."""
    words = {
        "cjk_in_answers": "Chinese (CJK) text in answers to prompts without any",
        "latin_in_answers": "English words in answers to Chinese prompts",
    }
    drifted = [f"{words[k]} {b:.0%} -> {a:.0%}" for k, (b, a) in drift.items() if a - b >= DRIFT]
    if not drifted:
        return []
    return [
        f"language drift: {'; '.join(drifted)} of their text (fresh answers, before -> after), with KL {kl:.3g} "
        f"nats to the starting model; {stay_closer(trainer, lr)}"
    ]


def _ppo_scores(trainer: Any, rows: list[list[int]], answers: Sequence[Sequence[int]]) -> torch.Tensor:
    """Normalised reward-model scores, an answer without EOS read with one appended (as in rollouts)."""
    eos, ctx = trainer.encoder.eos_id, trainer.mcfg.max_seq_len
    seqs = []
    for r, a in zip(rows, answers, strict=True):
        s = r + list(a)
        if not any(x in trainer.encoder.tokenizer.eos_ids for x in a):
            s = s + [eos] if len(s) < ctx else s[:-1] + [eos]
        seqs.append(s)
    rm = trainer.reward_model
    return torch.cat([rm.normalize(rm.raw_scores(seqs[i : i + 16])) for i in range(0, len(seqs), 16)])


# ---------------------------------------------------------------- sft and the rest


def loss_verdict(trainer: Any) -> Verdict:
    rows = [r for r in read_metrics(trainer.out) if "loss" in r] if (trainer.out / "metrics.jsonl").exists() else []
    if not rows:
        return Verdict(trainer.name, "no metrics were written.")
    first, last = rows[0]["loss"], rows[-1]["loss"]
    figures: dict[str, Any] = {"steps": rows[-1].get("step"), "loss_first": first, "loss_last": last}
    evals = [r for r in rows if "eval_loss" in r]
    if evals:
        figures["held_out_loss"] = evals[-1]["eval_loss"]
    warnings = (
        []
        if last < first
        else [f"the training loss did not fall ({first:.3g} -> {last:.3g}); raise --lr or --steps, or check the data"]
    )
    steps = rows[-1].get("step")
    summary = f"training loss {first:.3g} -> {last:.3g} over {steps} step{'' if steps == 1 else 's'}" + (
        f"; held-out loss {figures['held_out_loss']:.3g}." if evals else "."
    )
    return Verdict(trainer.name, summary, figures, warnings)
