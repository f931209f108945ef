"""Reward model: a base model plus a scalar head, trained with the Bradley-Terry loss on rankings.

    tiankong train reward --model runs/sft --data prefs.jsonl --output runs/rm
    tiankong reward score --model runs/rm --input answers.jsonl

The head reads the final-norm hidden state of the last real token of prompt + response (the EOS
that ends the response). For a pair where `better` beat `worse`:

    loss = -log sigmoid(r_better - r_worse - margin)

(margin 0 by default; Llama 2 uses a margin that grows with how strongly the rater preferred the
answer: a record's "margin" key, else --margin). Ties kept with --tie-mode soft use the target
1/2: -(log sigmoid(d) + log sigmoid(-d)) / 2, which pulls the two rewards together.

After training the scores are normalised ("N implementation details of RLHF", detail on reward
normalisation): the raw rewards of the reference answers, i.e. every distinct chosen and rejected
response of the training split, get mean 0 and standard deviation 1. `score = scale * raw + bias`,
with both numbers stored in reward_config.json. PPO then sees rewards on a known scale.

Output folder: the (fine-tuned) base model as a Hugging Face causal-LM folder, loadable by
transformers and tiankong (its LM head is untouched unless tied to the embeddings), plus
`reward_head.safetensors` (weight (1, hidden) [, bias (1,)]) and `reward_config.json`. The prompt
format it learned travels with it: `prompt_format` in reward_config.json (raw, max_length) and the
chat template as chat_template.jinja (the model's own or --chat-template's), which `RewardModel.load`
reads back, so `reward score` and PPO see prompts as the training did.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tiankong.engine.config import ModelConfig
from tiankong.engine.errors import InputError, ModelLoadError, TiankongError, quoted
from tiankong.engine.files import atomic_write, atomic_write_text, stdout_errors
from tiankong.engine.model import load_model, save_pretrained

from .auto import n_parameters
from .config import opt
from .data import SCORE_TEMPLATE_FIX, jsonl_objects, trainer_template_line
from .preferences import Encoder, Group, PreferenceConfig, PreferenceTrainer, collate, pad_right
from .records import decode_text, messages_field, not_a_file, split_lines

HEAD_FILE = "reward_head.safetensors"
CONFIG_FILE = "reward_config.json"
FORMAT = "tiankong-reward-model"


def bradley_terry_loss(
    r_better: torch.Tensor,
    r_worse: torch.Tensor,
    target: torch.Tensor | float = 1.0,
    margin: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Per-pair loss: -[t log sigmoid(d) + (1 - t) log sigmoid(-d)], d = r_better - r_worse - margin."""
    d = r_better - r_worse - margin
    return -(target * F.logsigmoid(d) + (1 - target) * F.logsigmoid(-d))


class RewardModel(nn.Module):
    """base (a causal LM of the engine) + a linear head on its final hidden states.

    forward gives a raw reward at every position (B, T); the score of a sequence is the one at its
    last token. PPO's value model is the same module with a bias, read at every response position.
    """

    def __init__(
        self,
        base: nn.Module,
        cfg: ModelConfig,
        bias: bool = False,
        normalization: dict[str, float] | None = None,
        encoder: Encoder | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.base, self.cfg = base, cfg
        self.head = nn.Linear(cfg.dim, 1, bias=bias, device=next(base.parameters()).device)  # float32
        # "N implementation details": init the head with std 1/sqrt(d_model + 1).
        nn.init.normal_(self.head.weight, std=1 / (cfg.dim + 1) ** 0.5)
        if bias:
            nn.init.zeros_(self.head.bias)
        self.normalization = dict(normalization or {"scale": 1.0, "bias": 0.0})
        self.encoder = encoder
        self.meta = dict(meta or {})

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.base(tokens, positions, mask, hidden=True)  # (B, T, D)
        return self.head(h.float()).squeeze(-1)  # (B, T), raw rewards

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def raw_scores(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B,) raw reward of each full sequence, read at its last token."""
        tokens, positions, lengths = pad_right(seqs, self.device)
        return self(tokens, positions).gather(1, (lengths - 1)[:, None]).squeeze(1)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return self.normalization["scale"] * raw + self.normalization["bias"]

    @torch.no_grad()
    def score(self, prompts: Sequence[str | list[dict]], responses: Sequence[str], batch_size: int = 16) -> list[float]:
        """Normalised scores of (prompt, response) pairs; prompts are text or chat messages."""
        if len(prompts) != len(responses):
            raise InputError(f"{len(prompts)} prompts but {len(responses)} responses; give one response per prompt")
        if self.encoder is None:
            raise InputError("this reward model has no tokenizer attached; load it with RewardModel.load(folder)")
        seqs = []
        for p, r in zip(prompts, responses, strict=True):
            pair = self.encoder.pair(p, r)
            if pair is None:
                raise InputError(f"a prompt is longer than the reward model's max_length {self.encoder.max_length}")
            seqs.append(pair[0])
        out: list[float] = []
        for i in range(0, len(seqs), batch_size):
            out += self.normalize(self.raw_scores(seqs[i : i + batch_size])).tolist()
        return out

    # ---- files
    def save(
        self, folder: str | Path, tokenizer_from: str | Path | None = None, step: int | None = None, **meta: Any
    ) -> Path:
        """Head and its config, then the base as a Hugging Face folder, weights last (each file atomic;
        model.safetensors carries the training step, which --resume checks against the trainer state)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        head = {k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()}
        info = {
            "format": FORMAT,
            "version": 1,
            "head": {
                "file": HEAD_FILE,
                "in_features": self.cfg.dim,
                "out_features": 1,
                "bias": self.head.bias is not None,
                "dtype": "float32",
                "reads": "final-norm hidden state of the last real token (the response's EOS)",
            },
            "normalization": {**self.normalization, "formula": "score = scale * raw + bias"},
            "base": {
                "architecture": self.cfg.architecture,
                "family": self.cfg.family,
                "hidden_size": self.cfg.dim,
                "vocab_size": self.cfg.vocab_size,
            },
            "prompt_format": {
                "raw": bool(self.encoder.raw) if self.encoder else False,
                "max_length": self.encoder.max_length if self.encoder else 0,
            },
            **self.meta,
            **meta,
            **({"step": step} if step is not None else {}),
        }
        atomic_write(folder / HEAD_FILE, lambda tmp: save_file(head, str(tmp), metadata={"format": "pt"}))
        atomic_write_text(folder / CONFIG_FILE, json.dumps(info, indent=2) + "\n")
        save_pretrained(
            self.base,
            self.cfg,
            folder,
            tokenizer_from=tokenizer_from,
            extra_files=self.encoder.template_files() if self.encoder else None,  # the template it learned
            metadata={"step": str(step)} if step is not None else None,
        )
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype | None = "auto"
    ) -> RewardModel:
        folder = Path(folder).expanduser()
        info = read_reward_config(folder)
        base, cfg = load_model(folder, device, dtype)
        check_against_model(info, folder / CONFIG_FILE, cfg)
        head = info["head"]
        from safetensors.torch import load_file

        path = folder / head.get("file", HEAD_FILE)
        if not path.is_file():
            raise ModelLoadError(f"{folder} has no {path.name}; re-run `tiankong train reward` to write it")
        from safetensors import SafetensorError

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:  # the wording trainers.common.loading() recognises
            raise ModelLoadError(
                f"{path} is truncated or corrupt ({e}); train the reward model again (`tiankong train reward`)"
            ) from None
        if "bias" in head and head["bias"] != ("bias" in state):
            has = "has" if "bias" in state else "has no"
            raise ModelLoadError(
                f"{folder / CONFIG_FILE}: head.bias is {json.dumps(head['bias'])} but {path.name} {has} bias; {_RERUN}"
            )
        fmt = info.get("prompt_format", {})
        encoder = Encoder.from_folder(folder, raw=fmt.get("raw", False), max_length=fmt.get("max_length", 0))
        meta = {
            k: v
            for k, v in info.items()
            if k not in ("format", "version", "head", "normalization", "base", "prompt_format", "step")
        }
        norm = {"scale": float(info["normalization"]["scale"]), "bias": float(info["normalization"]["bias"])}
        model = cls(base, cfg, bias="bias" in state, normalization=norm, encoder=encoder, meta=meta)
        try:
            model.head.load_state_dict({k: v.to(model.device) for k, v in state.items()})
        except RuntimeError as e:
            reason = str(e).splitlines()[-1].strip()
            raise ModelLoadError(f"{path} does not match a ({cfg.dim} -> 1) head: {reason}") from None
        return model.eval()


def read_reward_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{folder} is not a reward model (no {CONFIG_FILE}); train one with "
            "`tiankong train reward` or pass its output folder"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path} is not valid JSON ({e}); re-run `tiankong train reward`") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or "head" not in info or "normalization" not in info:
        raise ModelLoadError(f"{path} is not a tiankong reward model config; re-run `tiankong train reward`")
    check_fields(info, path)
    return info


# The fix for a reward_config.json value that `save` never writes: the file was edited or damaged.
_RERUN = "re-run `tiankong train reward` to write it again"


def _refuse(path: Path, field: str, must: str, value: Any) -> ModelLoadError:
    """One line naming the field of reward_config.json, what it must be, and the fix."""
    shown = quoted(json.dumps(value) if not isinstance(value, float) else repr(value), 60)
    return ModelLoadError(f"{path}: {field} must be {must}, not {shown}; {_RERUN}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no number


def _section(info: dict[str, Any], name: str, path: Path, required: bool = False) -> dict[str, Any]:
    section = info.get(name, None if required else {})
    if not isinstance(section, dict):
        raise _refuse(path, name, "an object", section)
    return section


def check_fields(info: dict[str, Any], path: Path) -> None:
    """The values of reward_config.json that need no model, as `RewardModel.save` writes them: a
    value it never writes is refused by field at load, not taken (a NaN scale would score every
    answer NaN, "no" read as a true prompt_format.raw would render prompts without the template)."""
    if info.get("version") != 1 or not _is_int(info.get("version")):
        raise ModelLoadError(
            f"{path}: version {quoted(json.dumps(info.get('version')), 40)} is not one this tiankong reads (1); "
            "upgrade tiankong or re-run `tiankong train reward`"
        )
    head, norm, fmt = (
        _section(info, name, path, name != "prompt_format") for name in ("head", "normalization", "prompt_format")
    )
    name = head.get("file", HEAD_FILE)
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise _refuse(path, "head.file", f"the name of a file in the folder ({HEAD_FILE})", name)
    for field, fits, must in (
        ("out_features", lambda v: _is_int(v) and v == 1, "1 (one score)"),
        ("bias", lambda v: isinstance(v, bool), "true or false"),
        ("dtype", lambda v: v == "float32", '"float32"'),
    ):
        if field in head and not fits(head[field]):
            raise _refuse(path, f"head.{field}", must, head[field])
    for field in ("scale", "bias"):
        value = norm.get(field)
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            raise _refuse(path, f"normalization.{field}", "a finite number", value)
    if norm["scale"] <= 0:  # 1 / the standard deviation of the raw rewards
        raise _refuse(path, "normalization.scale", "above 0", norm["scale"])
    if "raw" in fmt and not isinstance(fmt["raw"], bool):
        raise _refuse(path, "prompt_format.raw", "true or false", fmt["raw"])
    if "max_length" in fmt and not (_is_int(fmt["max_length"]) and fmt["max_length"] >= 0):
        raise _refuse(path, "prompt_format.max_length", "a whole number of tokens (0: the context)", fmt["max_length"])


def check_against_model(info: dict[str, Any], path: Path, cfg: ModelConfig) -> None:
    """The values of reward_config.json that describe the model beside it (check_fields passed)."""
    head, base = info["head"], _section(info, "base", path)
    if head.get("in_features") != cfg.dim or not _is_int(head.get("in_features")):
        raise ModelLoadError(
            f"{path}: head expects hidden size {head.get('in_features')} "
            f"but the model has {cfg.dim}; the head belongs to another base model"
        )
    for field, has in (("hidden_size", cfg.dim), ("vocab_size", cfg.vocab_size)):
        if field in base and (base[field] != has or not _is_int(base[field])):
            raise ModelLoadError(
                f"{path}: base.{field} is {quoted(json.dumps(base[field]), 40)} but the model in the folder has "
                f"{has}; the config belongs to another base model; {_RERUN}"
            )
    length = info.get("prompt_format", {}).get("max_length", 0)
    if length > cfg.max_seq_len:
        raise ModelLoadError(
            f"{path}: prompt_format.max_length {length} is longer than the model's context ({cfg.max_seq_len} "
            f"tokens); {_RERUN}"
        )


# ---------------------------------------------------------------- training


@dataclass
class RewardConfig(PreferenceConfig):
    output: str = opt("runs/rm", "Output folder: base model files + reward_head.safetensors + reward_config.json.")
    model: str = opt(
        "",
        "Base model (a Hugging Face folder, usually the SFT model) the reward head sits on. Default: the bundled tiankong-mini.",
    )
    lr: float = opt(
        0.0, "Peak learning rate; 0 = auto from the model size (3e-3 at 3M parameters, 1e-5 at 1B).", auto=0
    )
    # --- reward model
    margin: float = opt(0.0, 'Margin subtracted from r_better - r_worse for pairs without their own "margin".')
    normalize: bool = opt(True, "After training, shift and scale scores so the training answers have mean 0, std 1.")
    norm_samples: int = opt(2048, "At most this many training answers (a fixed sample) set the normalisation.")

    def validate(self) -> None:
        super().validate()
        if not self.model:
            raise InputError("no base model: pass --model DIR (a Hugging Face model folder, e.g. your SFT model)")


class RewardTrainer(PreferenceTrainer):
    name = "reward"
    cfg: RewardConfig

    def setup(self) -> None:
        cfg = self.cfg
        resume = self.resume_model_path()
        if resume is not None:
            with self.loading(resume):
                self.model = RewardModel.load(resume, self.device, cfg.dtype)
        else:
            with self.loading(cfg.model):
                base, mcfg = load_model(cfg.model, self.device, cfg.dtype)
            self.check_finite(base, cfg.model)
            self.model = RewardModel(base, mcfg)
        self.model.requires_grad_(True)
        mcfg = self.model.cfg
        if not mcfg.tie_embeddings:
            self.model.base.output.requires_grad_(False)  # the LM head plays no part in the reward
        self.load_data(cfg.model, mcfg.max_seq_len)
        self.resolve_auto(n_parameters(self.model))
        self.model.encoder = self.encoder
        self.last_eval: dict[str, float] = {}

    def group_loss(self, model: nn.Module, groups: Sequence[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed loss over the groups' pairs; each distinct response goes through the model once."""
        b = collate(groups, self.cfg.margin)
        tokens, positions, lengths = pad_right(b.seqs, self.device)
        r = model(tokens, positions).gather(1, (lengths - 1)[:, None]).squeeze(1)  # (B,) raw rewards
        dev = r.device
        r_better, r_worse = r[b.better.to(dev)], r[b.worse.to(dev)]
        target = b.target.to(dev)
        loss = bradley_terry_loss(r_better, r_worse, target, b.margin.to(dev)).sum()
        d = (r_better - r_worse).detach()
        # A decided pair is right when the better answer scores higher; a kept tie counts one half.
        right = torch.where(target == 1.0, (d > 0).float(), torch.full_like(d, 0.5))
        return loss, {"accuracy": float(right.sum()), "margin": float(d.sum())}

    @torch.no_grad()
    def normalization(self) -> dict[str, float]:
        """scale and bias giving the training answers' raw rewards mean 0 and std 1."""
        seqs = [s for g in self.train_groups for s in g.seqs]
        if len(seqs) > self.cfg.norm_samples:
            keep = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(self.cfg.seed))
            seqs = [seqs[i] for i in keep[: self.cfg.norm_samples].tolist()]
        chunk = max(1, self.cfg.micro_batch_size or self.cfg.batch_size)
        raw = torch.cat([self.model.raw_scores(seqs[i : i + chunk]) for i in range(0, len(seqs), chunk)]).double()
        mean = float(raw.mean())
        std = float(raw.std()) if len(raw) > 1 else 0.0
        scale = 1.0 / std if std > 1e-6 else 1.0
        return {
            "scale": scale,
            "bias": -mean * scale,
            "reference": "distinct chosen and rejected answers of the training split",
            "count": len(seqs),
            "raw_mean": mean,
            "raw_std": std,
        }

    def prepare_save(self) -> None:
        """The normalization scores answers with the model: on every rank (FSDP needs them all)."""
        self._norm: dict[str, Any] = {}
        if self.cfg.normalize:
            was_training = self.model.training
            self.model.eval()
            with self.dist.gathered(self.model):
                self._norm = self.normalization()
            self.model.train(was_training)

    def save(self, folder: Path) -> None:
        norm = dict(self._norm)
        if norm:
            self.model.normalization = {"scale": norm.pop("scale"), "bias": norm.pop("bias")}
        self.model.save(
            folder, tokenizer_from=self.cfg.model, step=self.step, normalization_reference=norm, **self.last_eval
        )


# ---------------------------------------------------------------- tiankong reward score


def _prompt_of(obj: dict) -> Any:
    """A record's prompt: its "prompt", else its "messages" (`tiankong generate` writes "prompt": null
    beside the messages of a conversation's record)."""
    return obj["prompt"] if obj.get("prompt") is not None or "messages" not in obj else obj["messages"]


def _response_key(obj: dict) -> str:
    """The answer of a line: "response", or "text" in `tiankong generate`'s records (README chains them)."""
    return "response" if "response" in obj else "text"


def score_file(model: Path, input: str, output: Path | None, device: str = "auto", show_progress: bool = False) -> int:
    """Score JSONL lines {"prompt": str | messages, "response": str, ...}; each line comes back with
    "score" added. Every line is checked before the model loads; a bad one stops it with its number.
    Returns the number of lines scored; show_progress: a progress display on stderr for input longer
    than one batch."""
    if input == "-":
        lines, name = split_lines(sys.stdin.read()), "stdin"
    else:
        path = Path(input)
        if not path.is_file():
            raise InputError(f"input file {input} {not_a_file(path)}; give a JSONL file with prompt and response, or -")
        lines, name = split_lines(decode_text(path.read_bytes(), input)), input
    rows: list[tuple[int, dict]] = []
    for n, obj in jsonl_objects(lines, name):
        if ("response" not in obj and "text" not in obj) or ("prompt" not in obj and "messages" not in obj):
            raise InputError(
                f'{name} line {n}: expected an object with "prompt" (or "messages") and "response" '
                '(or "text", as `tiankong generate` writes)'
            )
        prompt = _prompt_of(obj)
        try:
            if isinstance(prompt, list):  # messages: checked as preference records' prompts are
                messages_field(prompt, "prompt")
            elif not isinstance(prompt, str):
                raise InputError(f'"prompt" must be text or a list of messages, got {type(prompt).__name__}')
            key = _response_key(obj)
            if not isinstance(obj[key], str):
                raise InputError(f'"{key}" must be text, got {type(obj[key]).__name__}')
        except InputError as e:
            raise InputError(f"{name} line {n}: {e}") from None
        rows.append((n, obj))
    if not rows:
        raise InputError(f"{name} has no lines to score; put one JSON object with prompt and response per line")
    from .common import loading

    with loading("reward model", model, "train the reward model again (`tiankong train reward`)"):
        rm = RewardModel.load(model, device)
    scores = _score_rows(rm, rows, name, show_progress)
    text = "".join(
        json.dumps({**o, "score": s}, ensure_ascii=False) + "\n" for (_, o), s in zip(rows, scores, strict=True)
    )
    if output is None:
        with stdout_errors():
            sys.stdout.write(text)
        return len(rows)
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # atomic_write_text names what is wrong with the folder, in one line
    atomic_write_text(output, text)  # whole or not at all; a symlink is written through
    return len(rows)


def _score_rows(rm: RewardModel, rows: list[tuple[int, dict]], name: str, show_progress: bool) -> list[float]:
    """The score of each (line number, record) of file `name`, a batch at a time; a line the reward
    model refuses (e.g. a template that rejects its messages) is named."""
    from rich.console import Console

    from .progress import progress

    scores: list[float] = []
    batch = 16
    shown = show_progress and len(rows) > batch  # one batch is one forward pass: nothing to follow
    with progress("scoring", len(rows), enabled=shown, console=Console(stderr=True)) as advance:
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            try:
                scores += rm.score(
                    [_prompt_of(o) for _, o in chunk],
                    [o[_response_key(o)] for _, o in chunk],
                )
            except TiankongError as e:  # find the line
                for n, o in chunk:
                    try:
                        rm.score([_prompt_of(o)], [o[_response_key(o)]])
                    except TiankongError as e1:
                        raise trainer_template_line(e1, f"{name} line {n}", SCORE_TEMPLATE_FIX) from None
                raise e
            for _ in chunk:
                advance()
    return scores
