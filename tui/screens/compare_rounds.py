"""What a compare round is made of: the entrants (a model and a preset per column), the round itself
(prompt, answers, seeds, texts, vote), and how entrants and their seeds are chosen.

Apart from the screen (compare.py) because it is plain data and pure functions: no widgets, and
tested without an app.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tiankong.engine.context import drop_turns, turn_starts
from tiankong.engine.errors import InputError
from tiankong.engine.model_names import display_name, model_key
from tiankong.engine.params import SamplingParams, with_seeds
from tiankong.engine.remote import RemoteEngine
from tiankong.presets import Preset
from tiankong.tui.queue import Answer

if TYPE_CHECKING:  # the engine module imports torch, which `tiankong rank` (answers from a file) never needs
    from tiankong.engine.engine import Engine

LABELS = "ABCD"


def model_name(engine: Engine | RemoteEngine) -> str:
    """How a model is shown: its folder's name (a server's: MODEL@HOST:PORT)."""
    return engine.name if isinstance(engine, RemoteEngine) else display_name(engine.folder)


def model_identity(engine: Engine | RemoteEngine) -> str:
    """How a model is stored in a vote: as chats store it (resolve.model_key: a folder's resolved
    path, a GGUF file's own name, not its cache blob's); a server's: URL/models/MODEL."""
    if isinstance(engine, RemoteEngine):
        return engine.folder
    return model_key(engine.folder)


@dataclass
class Entrant:
    """What writes one column: a model and a preset."""

    engine: Engine
    preset: Preset


@dataclass
class Round:
    """One prompt and its K answers, in column (label) order."""

    number: int
    prompt: str
    conversation: list[dict]  # history + the user prompt; what the vote stores
    entrants: list[Entrant]  # what generates each column ([] for answers read from a file)
    params: list[SamplingParams]  # seeds filled ([] for answers read from a file)
    blind: bool
    shuffle_seed: int | None  # None when not blind (columns in the given order)
    answers: list[Answer] = field(default_factory=list)  # who wrote each column, as the vote stores it
    prompt_id: str | None = None
    position: int | None = None  # the round's place in the queue, if any
    texts: list[str] = field(default_factory=list)
    finish: list[str | None] = field(default_factory=list)
    stats: list[str] = field(default_factory=list)
    done: bool = False
    revealed: bool = False
    vote_id: int | None = None
    error: str | None = None  # generation failed: nothing to vote on
    retry: bool = True  # after an error, whether r may help: not for a prompt too long for the context
    # Columns whose generation failed (their engine raised part-way, or their logits went non-finite)
    # -> why: shown, marked, and never stored in a vote; the others are ranked when two or more are left.
    failed: dict[int, str] = field(default_factory=dict)
    dropped: int = 0  # the conversation's oldest turns left out of the prompt (fit_prompt): they no longer fit
    verdict: str = ""  # the stored vote, in words ("A better", "B > A > C", "tie")
    cancel: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if not self.answers:
            self.answers = [
                Answer(model_identity(e.engine), model_name(e.engine), e.preset.name, p.to_dict(), p.seed)
                for e, p in zip(self.entrants, self.params, strict=True)
            ]
        k = len(self.answers)
        self.texts, self.finish, self.stats = [""] * k, [None] * k, [""] * k

    @property
    def answered(self) -> list[int]:
        """The columns a vote on this round holds: every one but those that failed."""
        return [c for c in range(len(self.answers)) if c not in self.failed]


def label_list(columns: list[int]) -> str:
    """'A', 'A and C', 'A, B and D'."""
    names = [LABELS[c] for c in columns]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def fit_prompt(engine: Engine | RemoteEngine, conversation: list[dict], max_new_tokens: int) -> tuple[list[int], int]:
    """A round's prompt, built as the chat builds its own (engine.fit): when the conversation and room
    for the answer no longer fit the context, its oldest turns go, never the system prompt.
    -> (prompt ids, turns dropped). When the last turn alone leaves less room than max_new_tokens,
    every earlier turn goes and the answer gets the room there is (generate refuses only a prompt
    that fills the context)."""
    try:
        return engine.fit(conversation, max_new_tokens)
    except InputError:
        dropped = max(0, len(turn_starts(conversation)) - 1)
        return engine.encode(messages=drop_turns(conversation, dropped)), dropped


def build_entrants(engines: list[Engine], presets: list[Preset]) -> list[Entrant]:
    """Columns in the given order: one engine x N presets, N engines x one preset, or pairs."""
    if not engines or not presets:
        raise ValueError("compare needs at least one engine and one preset")
    if len(engines) == 1:
        entrants = [Entrant(engines[0], p) for p in presets]
    elif len(presets) == 1:
        entrants = [Entrant(e, presets[0]) for e in engines]
    elif len(engines) == len(presets):
        entrants = [Entrant(e, p) for e, p in zip(engines, presets, strict=True)]
    else:
        raise ValueError(
            f"compare {len(engines)} models with one preset or one model with several presets, "
            f"got {len(engines)} models and {len(presets)} presets"
        )
    if not 2 <= len(entrants) <= len(LABELS):
        raise ValueError(f"compare needs 2 to {len(LABELS)} columns, got {len(entrants)}")
    return entrants


def fill_seeds(entrants: list[Entrant], fresh: bool) -> list[SamplingParams]:
    """Each column's params with a seed; `fresh` replaces the presets' own seeds.

    Different models under one preset share the seed (a fair model comparison samples with the same
    random numbers); columns of one model always get different seeds, so "balanced vs balanced" shows
    two samples rather than the same one twice."""

    shared: dict[str, tuple[int, set[int]]] = {}  # preset name -> (seed, engines that used it)
    out = []
    for ent in entrants:
        p = ent.preset.params.replace(seed=None) if fresh else ent.preset.params
        if p.seed is None:
            seed, users = shared.get(ent.preset.name, (None, set()))
            if seed is None or id(ent.engine) in users:
                seed, users = with_seeds([p])[0].seed, set()
                shared[ent.preset.name] = (seed, users)
            users.add(id(ent.engine))
            p = p.replace(seed=seed)
        out.append(p)
    return out
