"""Preference data for the reward and DPO trainers: TRL records -> token ids, grouped by ranking.

Accepted records, one JSON object per line (a JSON array of them works too), as TRL defines them
(https://huggingface.co/docs/trl/dataset_formats, "preference") and `tiankong prefs export` writes:

* standard:            {"prompt": str, "chosen": str, "rejected": str}
* conversational:      {"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...]}
* implicit prompt:     {"chosen": str, "rejected": str}, the shared start being the prompt (cut back to
                       the last whitespace, so no word is split); or {"chosen": [messages], "rejected":
                       [messages]}, the shared leading messages being the prompt.
* tiankong's rankings: the records of `tiankong prefs export --format rankings` (one K-way vote a line,
                       with "responses" and "ranking"), read as `--format trl` exports them: every pair
                       the vote ranked, a tie's or both-bad vote's pairs as ties.

Other keys are metadata and ignored, except "margin" (a number: the Bradley-Terry margin of this pair)
and the playground's "tie": true / "both_bad": true, which say the two sides are equally good (or bad).

Refuse or skip. A row that is *malformed* (not JSON, not an object, no "chosen"/"rejected", wrong
types, a broken message list, a non-numeric margin, a chat template that rejects it) stops loading
with an InputError naming the file and line: training on whatever happened to parse would silently
learn from a different data set than the one given. A row that is well-formed but *carries no usable
preference* is skipped and reported (by line number) in `PreferenceData.summary()`: ties and both-bad
rows under tie_mode "drop" (the default), pairs whose two sides are identical (after tokenization and
truncation), and rows whose prompt alone fills max_length. A file with no usable pair is refused.

Token ids. A prompt is rendered exactly as the engine renders it (`render_prompt`: the chat template
when the model has one or --chat-template gives one, else plain text with the tokenizer's BOS), so the
trainers see what generation sees. A response is tokenized *together with* its prompt and split where
the two token lists part (a merge across the boundary counts as response), and it ends with one EOS
token, as a finished generation does; text after the last EOS a template writes (e.g. a newline after
<|im_end|>) is dropped.

Grouping. The pairs of one K-way ranking (K(K-1)/2 of them, sharing their K responses) form one group:
a group is a connected set of pairs under the same prompt, found by the responses they share. The
trainers take whole groups as batch items, so each response of a ranking goes through the model once
per step and its pairs are always in the same batch (InstructGPT); independent pairs are groups of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from tiankong.engine.chat import RAW_MESSAGE_SEPARATOR, ChatTemplate, render_prompt
from tiankong.engine.errors import InputError, TiankongError
from tiankong.engine.tokenizer import Tokenizer, load_tokenizer
from tiankong.tui.generate_input import say as say_line

from . import auto
from .common import Trainer
from .config import TrainConfig, opt
from .data import TRAIN_TEMPLATE_FIX, find_chat_template, trainer_template_line
from .records import Prompt, parse_record, read_rows

TIE_MODES = ("drop", "soft")


# ---------------------------------------------------------------- text -> ids


class Encoder:
    """Prompts and (prompt, response) pairs -> token ids, the way the engine renders prompts."""

    def __init__(
        self, tokenizer: Tokenizer, template: ChatTemplate | None, raw: bool = False, max_length: int = 0
    ) -> None:
        self.tokenizer, self.template = tokenizer, template
        self.raw = raw or template is None
        self.max_length = max_length  # 0 = no limit
        eos = tokenizer.encode(tokenizer.eos_token, add_special_tokens=False) if tokenizer.eos_token else []
        if len(eos) == 1 and eos[0] in tokenizer.eos_ids:
            self.eos_id = eos[0]
        elif tokenizer.eos_ids:
            self.eos_id = min(tokenizer.eos_ids)
        else:
            raise InputError(
                "the model's tokenizer has no EOS token, which marks where an answer ends; "
                "set eos_token in tokenizer_config.json"
            )

    @classmethod
    def from_folder(
        cls, folder: str | Path, raw: bool = False, max_length: int = 0, chat_template: str = ""
    ) -> Encoder:
        """The model's tokenizer with its own template, or the --chat-template file `chat_template`."""
        tokenizer = load_tokenizer(folder)
        return cls(tokenizer, find_chat_template(folder, tokenizer, chat_template)[0], raw, max_length)

    def template_files(self) -> dict[str, str]:
        """The template these ids are rendered with, as the chat_template.jinja of a folder saved for
        them, so that whoever loads it (chat, generate, RewardModel.load) renders as they were; none in
        raw mode."""
        return {} if self.raw or self.template is None else {"chat_template.jinja": self.template.source}

    def no_template_note(self, model: str | Path) -> str | None:
        """A line for the start of a run when `model` has no chat template (a base GGUF file, an Ollama
        model whose template is Go, not Jinja): its prompts are then plain text without roles, as
        `generate` warns for messages; None when it has one (its own or --chat-template's). Not said for
        a run given --raw."""
        if self.template is not None:
            return None
        from tiankong.engine.model_names import display_name
        from tiankong.engine.ollama import GO_TEMPLATE, go_template

        why = f" ({GO_TEMPLATE})" if go_template(model) else ""
        return (
            f"note: {display_name(model)} has no chat template{why}: the prompts are trained on as plain text "
            "without roles, as `generate --raw` reads them; to train with roles, pass --chat-template FILE "
            "(a Jinja template; the output saves it)"
        )

    def prompt(self, prompt: Prompt) -> list[int]:
        """Same ids as Engine.encode(prompt=...) / Engine.encode(messages=...). Messages that end with
        an assistant message (a vote at the token where two branches of an answer part) are the
        messages before it, then that message's text: the start the two answers share."""
        prompt, start = _split_start(prompt)
        kw = {"prompt": prompt} if isinstance(prompt, str) else {"messages": prompt}
        ids = render_prompt(self.template, self.tokenizer, raw=self.raw, **kw)
        if start:  # encoded with what precedes it, as the answer is (a space or merge at the seam comes out the same)
            text = _raw_text(prompt) if self.raw else self.template.render(prompt, add_generation_prompt=True)
            ids = self.tokenizer.encode(text + start, add_special_tokens=self.raw)
        if not ids:  # tokenizers without BOS still start from a start-of-text token (as Engine.encode)
            start = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.eos_id
            ids = [start]
        return ids

    def pair(self, prompt: Prompt, response: str) -> tuple[list[int], int] | None:
        """(prompt + response ids ending in EOS, index where the response starts), or None when the
        prompt alone reaches max_length."""
        tok = self.tokenizer
        p_ids = self.prompt(prompt)
        prompt, start = _split_start(prompt)
        response = start + response  # a shared start and the continuation: one assistant message
        if self.raw:
            text = _raw_text(prompt)
            if tok.encode(text, add_special_tokens=True):
                full = tok.encode(text + response, add_special_tokens=True)
            else:  # empty prompt: the start token, then the response
                full = p_ids + tok.encode(response, add_special_tokens=False)
        else:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            rendered = self.template.render(
                messages + [{"role": "assistant", "content": response}], add_generation_prompt=False
            )
            full = tok.encode(rendered, add_special_tokens=False)
        start = 0
        while start < min(len(p_ids), len(full)) and p_ids[start] == full[start]:
            start += 1
        start = max(start, 1)  # the first response token needs a token before it
        ends = [i for i in range(start, len(full)) if full[i] in tok.eos_ids]
        full = full[: ends[-1] + 1] if ends else full + [self.eos_id]
        if self.max_length:
            if start >= self.max_length:
                return None
            full = full[: self.max_length]
        return full, start


# ---------------------------------------------------------------- the data set


@dataclass
class Pair:
    better: int  # index into the group's seqs
    worse: int
    target: float  # P(better beats worse): 1.0, or 0.5 for a tie kept by tie_mode "soft"
    margin: float | None  # the record's "margin", if it has one
    line: int


@dataclass
class Group:
    """The pairs of one ranking: distinct sequences (prompt + response ids) and pairs among them."""

    seqs: list[list[int]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # where each sequence's response starts
    pairs: list[Pair] = field(default_factory=list)
    prompt: str = ""  # the prompt's text as written (a conversation's last user message), for display


@dataclass
class PreferenceData:
    path: Path
    groups: list[Group]
    skipped: dict[str, list[int]]  # reason -> line numbers

    @property
    def n_pairs(self) -> int:
        return sum(len(g.pairs) for g in self.groups)

    def summary(self) -> str:
        n, g = self.n_pairs, len(self.groups)
        text = f"{self.path}: {n} pair{'' if n == 1 else 's'} in {g} group{'' if g == 1 else 's'}"
        text += " (a group: the pairs that share an answer, as one ranking's do)"
        if self.skipped:
            parts = []
            for reason, lines in self.skipped.items():
                shown = ", ".join(map(str, lines[:5])) + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")
                why = f": {SKIP_WHY[reason]}" if reason in SKIP_WHY else ""
                parts.append(f"{len(lines)} {reason} (line{'s' if len(lines) > 1 else ''} {shown}{why})")
            text += "; skipped " + "; ".join(parts)
        return text


TIES = "tie/both-bad"
# Why a kind of row was skipped, where the reason alone does not say it or how to keep the rows.
SKIP_WHY = {TIES: "--tie-mode drop, the default, leaves ties out; --tie-mode soft trains on them as equally good"}


def _split_start(prompt: Prompt) -> tuple[Prompt, str]:
    """(the prompt, "") or, for messages ending with an assistant message, (the messages before it, its text)."""
    if not isinstance(prompt, str) and prompt and prompt[-1].get("role") == "assistant":
        return list(prompt[:-1]), prompt[-1]["content"]
    return prompt, ""


def _prompt_text(prompt: Prompt) -> str:
    """A prompt as a person reads it: its text, or a conversation's last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else (prompt[-1]["content"] if prompt else "")


def _raw_text(prompt: Prompt) -> str:
    """The prompt as plain completion text, as render_prompt writes it in raw mode."""
    return prompt if isinstance(prompt, str) else RAW_MESSAGE_SEPARATOR.join(m["content"] for m in prompt)


def load_preferences(path: str | Path, encoder: Encoder, tie_mode: str = "drop") -> PreferenceData:
    """Read, validate and tokenize a preference file; see the module docstring for what is refused."""
    if tie_mode not in TIE_MODES:
        raise InputError(f"tie_mode must be one of {', '.join(TIE_MODES)}, got {tie_mode!r}")
    path = Path(path)
    skipped: dict[str, list[int]] = {}
    by_key: dict[tuple, tuple[int, list[int], int]] = {}  # sequence -> (node id, ids, start)
    parent: list[int] = []  # union-find over sequences
    edges: list[tuple[int, int, float, float | None, int]] = []
    texts: dict[int, str] = {}  # sequence -> its prompt as written

    def node(ids: list[int], start: int) -> int:
        key = tuple(ids)
        if key not in by_key:
            by_key[key] = (len(parent), ids, start)
            parent.append(len(parent))
        return by_key[key][0]

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows = read_rows(path)
    if not rows:
        raise InputError(
            f'{path} holds no records; put one preference pair per line: {{"prompt": ..., "chosen": ..., "rejected": ...}}'
        )
    for n, row in _pair_records(path, rows):
        try:
            prompt, chosen, rejected = parse_record(row)
            margin = row.get("margin")
            if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
                raise InputError(f'"margin" must be a number, got {margin!r}')
            tie = row.get("tie") is True or row.get("both_bad") is True
            if tie and tie_mode == "drop":
                _skip(skipped, TIES, n)
                continue
            c, r = encoder.pair(prompt, chosen), encoder.pair(prompt, rejected)
        except TiankongError as e:
            raise trainer_template_line(e, f"{path} line {n}", TRAIN_TEMPLATE_FIX, "; fix that line") from None
        if c is None or r is None:
            _skip(skipped, f"prompt longer than max_length {encoder.max_length}", n)
            continue
        if c[0] == r[0]:
            _skip(skipped, "identical chosen and rejected", n)
            continue
        a, b = node(*c), node(*r)
        texts.setdefault(a, _prompt_text(prompt))
        edges.append((a, b, 0.5 if tie else 1.0, None if tie or margin is None else float(margin), n))
        parent[find(a)] = find(b)

    nodes = sorted(by_key.values())
    groups: dict[int, Group] = {}
    local: dict[int, int] = {}
    for i, ids, start in nodes:
        g = groups.setdefault(find(i), Group())
        g.prompt = g.prompt or texts.get(i, "")
        local[i] = len(g.seqs)
        g.seqs.append(ids)
        g.starts.append(start)
    for a, b, target, margin, n in edges:
        groups[find(a)].pairs.append(Pair(local[a], local[b], target, margin, n))
    data = PreferenceData(path, [g for g in groups.values() if g.pairs], skipped)
    if not data.groups:
        raise InputError(f"{path} has no usable preference pairs ({data.summary()}); {_no_pairs_fix(skipped)}")
    return data


def _pair_records(path: Path, rows: list[tuple[int, str, Any]]) -> Iterator[tuple[int, Any]]:
    """(line, TRL record) for every row; a record of `tiankong prefs export --format rankings` gives
    the pairs `--format trl` makes of its vote (tui/prefs_import.py), each under the row's line."""
    from tiankong.tui.prefs_import import is_ranking_record, ranking_pairs

    for n, _, row in rows:
        if not is_ranking_record(row):
            yield n, row
            continue
        try:
            pairs = ranking_pairs(row)
        except TiankongError as e:
            raise InputError(
                f"{path} line {n}: {e}; fix that line (a rankings record, as `prefs export` writes)"
            ) from None
        for record in pairs:
            yield n, record


def _skip(skipped: dict[str, list[int]], reason: str, line: int) -> None:
    """Note a skipped line once per reason (a ranking's pairs share their line)."""
    lines = skipped.setdefault(reason, [])
    if not lines or lines[-1] != line:
        lines.append(line)


def _no_pairs_fix(skipped: dict[str, list[int]]) -> str:
    """The fix for a file whose every record was skipped, by the reason that skipped most of them."""
    reason = max(skipped, key=lambda k: len(skipped[k]))
    if reason == TIES:
        return "add ranked pairs, or keep ties with --tie-mode soft"
    if reason.startswith("prompt longer"):
        return "shorten the prompts or raise --max-length"
    return 'give records with different "chosen" and "rejected"'


def split_groups(groups: Sequence[Group], eval_fraction: float, seed: int) -> tuple[list[Group], list[Group]]:
    """(train, held-out): whole groups are held out, so held-out prompts and answers are unseen."""
    if eval_fraction <= 0 or len(groups) < 2:
        return list(groups), []
    n_eval = min(len(groups) - 1, max(1, round(eval_fraction * len(groups))))
    order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    held = set(order[:n_eval])
    return [g for i, g in enumerate(groups) if i not in held], [g for i, g in enumerate(groups) if i in held]


@dataclass
class Batch:
    """Several groups flattened: one row per distinct sequence, pairs indexing those rows."""

    seqs: list[list[int]]
    starts: list[int]
    better: torch.Tensor  # (P,) row indices
    worse: torch.Tensor
    target: torch.Tensor  # (P,) float
    margin: torch.Tensor  # (P,) float, the record's margin or the config's


def collate(groups: Sequence[Group], default_margin: float = 0.0) -> Batch:
    seqs, starts, better, worse, target, margin = [], [], [], [], [], []
    for g in groups:
        off = len(seqs)
        seqs += g.seqs
        starts += g.starts
        for p in g.pairs:
            better.append(off + p.better)
            worse.append(off + p.worse)
            target.append(p.target)
            margin.append(p.margin if p.margin is not None else (default_margin if p.target == 1.0 else 0.0))
    return Batch(
        seqs,
        starts,
        torch.tensor(better, dtype=torch.long),
        torch.tensor(worse, dtype=torch.long),
        torch.tensor(target),
        torch.tensor(margin),
    )


def pad_right(
    seqs: Sequence[Sequence[int]], device: torch.device | str, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens (B, L) right-padded, positions (B, L), lengths (B,).

    Right padding needs no attention mask: under causal attention a real token never sees the
    padding after it, so every real position computes exactly what it would alone."""
    L = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    positions = torch.arange(L).expand(len(seqs), L)
    lengths = torch.tensor([len(s) for s in seqs])
    return tokens.to(device), positions.to(device), lengths.to(device)


# ---------------------------------------------------------------- what both preference trainers share

# --chat-template of reward, dpo and ppo: sft's option (trainers/data.py find_chat_template), for prompts.
CHAT_TEMPLATE_HELP = (
    "A Jinja chat template file to render the prompts with instead of the model's own (saved with the "
    "output as chat_template.jinja). Empty: the model's template; a model without one reads them as plain text."
)


def check_template_flags(raw: bool, chat_template: str) -> None:
    """--raw (no template) and --chat-template (this one) contradict each other."""
    if raw and chat_template:
        raise InputError("--raw renders prompts without a chat template and --chat-template gives one; pass one")


@dataclass
class PreferenceConfig(TrainConfig):
    data: str = opt(
        "",
        "Preference records (TRL JSONL: prompt/chosen/rejected, or a `tiankong prefs export --format rankings` "
        "file). Default: the playground's votes.",
    )
    steps: int = opt(
        0,
        "Optimisation steps; 0 = auto: up to 4 passes over the rankings (dpo: 5), fewer the more pairs "
        "they hold, and one pass from 900 pairs (dpo: 1000).",
        auto=0,
    )
    batch_size: int = opt(
        0,
        "Global batch size in rankings (groups of pairs sharing responses; a lone pair is one); "
        "0 = auto from the number of rankings.",
        auto=0,
    )
    # --- data
    tie_mode: str = opt("drop", 'Rows marked "tie" or "both_bad": drop, or soft (both sides equally likely to win).')
    eval_fraction: float = opt(0.1, "Fraction of rankings held out for evaluation (0 = none).")
    max_length: int = opt(0, "Truncate prompt+response to this many tokens; 0 = the model's context.")
    raw: bool = opt(False, "Ignore the model's chat template: plain text prompts, as `generate --raw`.")
    chat_template: str = opt("", CHAT_TEMPLATE_HELP)

    def validate(self) -> None:
        auto.validate_auto(self, super().validate)
        check_template_flags(self.raw, self.chat_template)
        if self.tie_mode not in TIE_MODES:
            self.refuse("tie_mode", f"must be one of {', '.join(TIE_MODES)}")
        if not 0 <= self.eval_fraction < 1:
            self.refuse("eval_fraction", "must be in [0, 1)")
        if self.max_length < 0:
            self.refuse("max_length", "must be >= 0")
        if not self.data:
            raise InputError("no preference data: pass --data FILE (TRL JSONL with prompt/chosen/rejected)")


class PreferenceTrainer(Trainer):
    """Loads the preference file and hands whole groups (rankings) to the loop as items."""

    cfg: PreferenceConfig

    def load_data(self, tokenizer_folder: str | Path, context: int) -> None:
        cfg = self.cfg
        self.encoder = Encoder.from_folder(
            tokenizer_folder, raw=cfg.raw, max_length=cfg.max_length or context, chat_template=cfg.chat_template
        )
        self.data = load_preferences(cfg.data, self.encoder, cfg.tie_mode)
        if self.dist.is_main and not cfg.raw and (note := self.encoder.no_template_note(cfg.model)):
            say_line(note)  # once the data is read: a bad line is then the one line said
        self.train_groups, self.eval_groups = split_groups(self.data.groups, cfg.eval_fraction, cfg.seed)
        if self.dist.is_main:  # kept by --no-progress, which hides bars and plots only
            say_line(
                f"{self.data.summary()}; {len(self.eval_groups)} group{'' if len(self.eval_groups) == 1 else 's'} held out"
            )

    def resolve_auto(self, n_params: int) -> None:
        """Fill in lr, batch_size and steps left at 0 from the model size and the training pairs."""
        cfg, n = self.cfg, len(self.train_groups)
        pairs = sum(len(g.pairs) for g in self.train_groups)
        self.auto = auto.fill(
            cfg,
            self.name,
            n_params,
            pairs,
            "training pairs",
            {
                "lr": lambda: auto.auto_lr(self.name, n_params),
                "batch_size": lambda: auto.auto_batch(n),
                "steps": lambda: auto.auto_steps(self.name, n, cfg.batch_size, pairs),
            },
        )
        if self.auto.values and self.dist.is_main:  # a record of the run, not decoration: kept by --no-progress
            say_line(self.auto.line())

    def n_items(self) -> int:
        return len(self.train_groups)

    def item_weight(self, index: int) -> float:
        return float(len(self.train_groups[index].pairs))  # the loss is a mean over pairs

    def group_loss(self, model: nn.Module, groups: Sequence[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed loss over the groups' pairs, and metrics summed over pairs (the algorithm)."""
        raise NotImplementedError

    def loss(self, items: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.group_loss(self.ddp_model, [self.train_groups[i] for i in items])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss and metrics per pair over the held-out groups, as eval_*."""
        if not self.eval_groups:
            return {}
        self.model.eval()
        sums: dict[str, float] = {}
        total = 0
        chunk = self.cfg.micro_batch_size or self.cfg.batch_size
        for i in range(0, len(self.eval_groups), chunk):
            groups = self.eval_groups[i : i + chunk]
            loss, m = self.group_loss(self.model, groups)
            for k, v in {"loss": float(loss), **m}.items():
                sums[k] = sums.get(k, 0.0) + v
            total += sum(len(g.pairs) for g in groups)
        self.model.train()
        self.last_eval = {f"eval_{k}": v / total for k, v in sums.items()}
        return self.last_eval
