"""What generation yields: one `TokenEvent` per chosen token, one `Finished` per row.

These plain, frozen dataclasses are the whole contract between the engine and its consumers:
the CLI writes them as JSONL, the TUI draws them, the trainers keep their ids and log-probs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Candidate:
    id: int
    text: str  # readable rendering of the token (leading space kept, bytes as <0xNN>)
    logprob: float  # under the model's own distribution (temperature 1, before any processing)
    p_sample: float | None  # probability under the final sampling distribution; 0.0 = filtered out;
    #                         None = unknown (a remote server that does not report it, engine/remote.py)


@dataclass(frozen=True)
class TokenEvent:
    """One generated token of one row.

    `text` is the token's text as it comes, stop strings included: when a row ends on a stop
    string, the streamed texts hold it (or the tokens it spans) and Finished.text does not. To
    stream only the text the answer keeps, pass each text through `engine.generate.HeldText`.
    """

    row: int  # which prompt/row of the request this token belongs to
    index: int  # 0 for the first generated token of the row
    id: int
    text: str  # the text this token adds to the stream ("" while a multi-byte character is incomplete)
    logprob: float  # of the chosen token under the model's own distribution
    p_sample: float | None  # of the chosen token under the sampling distribution (None: unknown, as above)
    entropy: float | None  # of the model's own distribution, in nats (None: a server sent only the top-K)
    candidates: tuple[Candidate, ...] = ()  # top-K by model probability, when asked for

    def to_dict(self) -> dict[str, Any]:
        """The token as the CLI writes it and the store keeps it: {"id", "text", "logprob",
        "p_sample", "entropy", "top": [{"id", "text", "logprob", "p_sample"}]}. Built by hand, not
        with asdict: it runs once per generated token."""
        return {
            "id": self.id,
            "text": self.text,
            "logprob": self.logprob,
            "p_sample": self.p_sample,
            "entropy": self.entropy,
            "top": [
                {"id": c.id, "text": c.text, "logprob": c.logprob, "p_sample": c.p_sample} for c in self.candidates
            ],
        }


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int  # includes the EOS token when generation ended on one


@dataclass(frozen=True)
class Timing:
    prefill_s: float  # prompt processing up to the first token (time to first token)
    decode_s: float  # the remaining tokens
    decode_tokens_per_s: float  # (completion_tokens - 1) / decode_s, 0 when undefined


@dataclass(frozen=True)
class Finished:
    row: int
    text: str  # the whole answer, stop string and EOS removed
    finish_reason: str  # "eos" | "stop" (a stop string) | "length" (max_new_tokens) | "context" (the context is full)
    #                     | "cancelled" | "error" (see message)
    usage: Usage
    timing: Timing
    token_ids: tuple[int, ...] = field(default=())  # generated ids, EOS included
    message: str = ""  # with "error": one line naming what went wrong (non-finite logits) and the fix
    seed: int | None = None  # the row's seed, drawn when its SamplingParams had none: set it to repeat the run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Event = TokenEvent | Finished
FINISH_REASONS = ("eos", "stop", "length", "context", "cancelled", "error")
