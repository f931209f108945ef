"""Branches of an answer: "what if the model had said X?" and "this continuation is better".

In the token-by-token view (f5) `b` opens `CandidatePicker` on the token at the cursor; the chosen
candidate starts a sibling answer: the old answer's tokens up to there, the candidate, then
whatever the model generates from the prompt plus those forced tokens (`forced_token` builds the
candidate's token record). `branch_vote` turns two branches into a preference vote at the token
where they part: the prompt is the conversation as the model saw it (its oldest turns left out where
they no longer fitted the context) plus the answers' common start, chosen and rejected are the two
continuations.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rich.cells import set_cell_size
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tiankong.engine.context import drop_turns
from tiankong.engine.tokenizer import IncrementalDecoder
from tiankong.tui.queue import prompt_id
from tiankong.tui.store import Message, Response, Vote
from tiankong.tui.store_records import same_answer
from tiankong.tui.widgets.candidates import pct, show_token


class CandidatePicker(ModalScreen[dict | None]):
    """The other candidates for one token, most likely first: enter continues the answer from the
    highlighted one, esc cancels."""

    BINDINGS = [Binding("escape", "dismiss_none", "cancel")]
    DEFAULT_CSS = """
    CandidatePicker { align: center middle; }
    CandidatePicker > Vertical { width: 56; height: auto; max-height: 80%; border: round $accent; background: $surface; }
    CandidatePicker OptionList, CandidatePicker OptionList:focus { height: auto; max-height: 20; border: none; }
    """

    def __init__(self, token: dict[str, Any], position: int) -> None:
        super().__init__()
        self.others = [c for c in token.get("top") or [] if c["id"] != token["id"]]
        self.chosen, self.position = token, position

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            # Content, not a str (read as markup): the token's text is the model's, "[/]" included.
            box.border_title = Content(
                f"branch at token {self.position + 1}: instead of “{show_token(self.chosen['text'])}”"
            )
            box.border_subtitle = "enter continue from it · esc cancel"
            options = [
                Option(
                    Text.assemble(
                        (set_cell_size(show_token(c["text"]), 24), "bold"),  # cells: 小 is two wide
                        f" model {pct(math.exp(c['logprob']))}",
                        (f" · preset {pct(c['p_sample'])}", "dim"),
                    ),
                    id=str(n),
                )
                for n, c in enumerate(self.others)
            ]
            yield OptionList(*options or [Option("no other candidates were recorded", disabled=True)])

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.dismiss(self.others[int(event.option.id)])

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


def forced_token(
    tokenizer: Any, context: Sequence[int], at: dict[str, Any], candidate: dict[str, Any]
) -> dict[str, Any]:
    """The token record (TokenEvent.to_dict's shape, marked "picked") of `candidate` put in place of
    the token `at`, whose candidates and entropy it shares; its text decoded after `context` (the
    prompt and the answer's tokens before it), so a leading space or a multi-byte character comes
    out right."""
    decoder = IncrementalDecoder(tokenizer, list(context))
    text = decoder.push(candidate["id"]) + decoder.flush()
    return {
        "id": candidate["id"],
        "text": text,
        "logprob": candidate["logprob"],
        "p_sample": candidate["p_sample"],
        "entropy": at.get("entropy", 0.0),
        "top": at.get("top") or [],
        "picked": True,  # by you, not the sampler: the candidates panel says so (it may be a token the preset cut)
    }


def forced_count(tokens: Sequence[dict[str, Any]] | None) -> int:
    """How many of an answer's tokens a branch forced (the old answer's up to the last token picked, that
    one included); 0 for an answer the model wrote from its start. The answer was generated with its
    max tokens less these, and stored so (that call replays it): the max tokens set is this more."""
    picked = [i for i, t in enumerate(tokens or ()) if t.get("picked")]
    return picked[-1] + 1 if picked else 0


def common_tokens(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> int:
    """How many leading tokens two answers share (by id)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x["id"] != y["id"]:
            break
        n += 1
    return n


def _continuation(m: Message, start: str, k: int) -> str:
    """The answer's text after its first k tokens (whose text is `start`)."""
    if m.content.startswith(start):
        return m.content[len(start) :]
    return "".join(t["text"] for t in (m.tokens or [])[k:])


def branch_vote(conversation: list[dict[str, str]], chosen: Message, rejected: Message, model: str, rater: str) -> Vote:
    """A ranked vote, chosen first, at the token where the two answers part: the conversation (up to
    the user's message) as the model saw it, plus an assistant message holding their common start,
    when they have one, then the two continuations.

    As the model saw it: without the oldest turns that no longer fitted its context when the answers
    were written (Message.dropped; of two answers that saw different amounts, the turns both saw; an
    answer stored before tiankong kept the count gives the whole conversation, as votes held then),
    so that training on the vote (prefs export, the reward and DPO trainers) pairs the answers with
    their prompt. Each response names the model that wrote it; `model` stands in for an answer that
    does not say (a Message made by hand)."""
    seen = [dict(m) for m in drop_turns(conversation, max(chosen.dropped or 0, rejected.dropped or 0))]
    k = common_tokens(chosen.tokens or [], rejected.tokens or [])
    start = "".join(t["text"] for t in (chosen.tokens or [])[:k])
    conv = seen + ([{"role": "assistant", "content": start}] if start else [])
    users = [m["content"] for m in conversation if m["role"] == "user"]

    def response(label: str, m: Message) -> Response:
        return Response(
            label,
            m.model or model,
            m.preset or "",
            m.params or {},
            m.seed,
            _continuation(m, start, k),
            m.finish_reason or "",
        )

    return Vote(
        None,
        users[-1] if users else "",
        conv,
        [response("A", chosen), response("B", rejected)],
        "ranked",
        [0, 1],
        rater,
        blind=False,
        source="branch",
        prompt_id=prompt_id(seen),  # the prompt's, as compare's: the shared start is not part of it
    )


def branch_votes(
    conversation: list[dict[str, str]], chosen: Message, rejected: list[Message], model: str, rater: str
) -> list[Vote]:
    """`branch_vote` of `chosen` over each of `rejected`, one vote per distinct pair: a sibling whose
    text is the chosen one's states no preference (a deterministic preset's ctrl+r says the same
    again), and siblings with the same text as each other are one pair, not one vote each."""
    votes: list[Vote] = []
    for r in rejected:
        vote = branch_vote(conversation, chosen, r, model, rater)
        better, worse = (resp.text for resp in vote.responses)
        same_pair = any(v.conversation == vote.conversation and same_answer(v.responses[1].text, worse) for v in votes)
        if not same_answer(better, worse) and not same_pair:
            votes.append(vote)
    return votes
