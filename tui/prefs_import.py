"""Preference files read as votes, for `tiankong prefs import`: TRL preference rows, Anthropic HH rows,
and the records of `tiankong prefs export --format rankings`.

* TRL preference records (standard, conversational, or the implicit-prompt variants where chosen/rejected
  hold the whole conversation) and Anthropic HH rows: each a ranked vote of two answers, chosen first.
  prefs.py's own TRL export comes back so too, its tie and both-bad pairs as such.
* The records of `export --format rankings`: each the vote it was (every answer with its model, preset,
  params and seed; the ranking groups, tie or both-bad; rater, prompt id, source and time), so export ->
  import is how votes move between stores without loss.

One bad row stops the import with its line number and nothing is imported. Each imported vote carries a
content hash, so rows already in the store (a file imported twice, one that overlaps, a store's own
rankings export) are skipped and reported as duplicates. A store's own TRL export is too: its rows are
pairs of votes, not votes (a ranking of four answers is six rows), so no hash matches them; each names
its vote (vote_id), and a row that is one of the pairs of the stored vote of that id is a duplicate
(`stored_pairs`). Another store's ids name other votes there, whose pairs are not these.

Every row is parsed and checked here, before the database is opened; storing them (a batch at a time,
skipping duplicates) is the store's (VoteStore.import_batches), and the command around both is prefs.py's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tiankong.engine.errors import InputError
from tiankong.engine.files import lone_surrogate
from tiankong.trainers.records import parse_record, read_rows
from tiankong.tui.queue import prompt_id
from tiankong.tui.store import Response, Store, Vote
from tiankong.tui.store_records import MAX_RESPONSES, MIN_RESPONSES, OUTCOMES, validate_vote

IMPORTED_PRESET, IMPORTED_MODEL, IMPORT_RATER = "imported", "unknown", "import"
HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def import_file(store: Store, path: Path, rater: str | None = None) -> int:
    """Add every row of a TRL preference or Anthropic HH file (JSONL or a JSON array) as a ranked
    2-response vote, chosen first, and every record of `export --format rankings` as the vote it was;
    rows already stored are skipped. Returns how many votes were added. rater: see read_votes."""
    origins: list[int | None] = []
    votes = read_votes(path, rater, origins=origins)
    known = stored_pairs(store, votes, origins)
    return store.import_votes([v for i, v in enumerate(votes) if i not in known])[0]


def read_votes(
    path: Path, rater: str | None = None, margins: list[str] | None = None, origins: list[int | None] | None = None
) -> list[Vote]:
    """Every row of the file as a vote; one bad row raises InputError naming it (nothing is imported).
    rater: the name every vote is stored under; None keeps a rankings record's own rater and names the
    votes of other rows "import". A vote has no margin, so the rows that carry a "margin" are noted in
    `margins` (their places). `origins` gets each vote's row's vote_id (a TRL export's), else None."""
    path = Path(path)
    rows = _read_rows(path)
    source = f"import:{path.name}"
    votes = []
    for where, row in rows:
        try:
            if lone_surrogate(row) is not None:
                raise InputError(
                    "it holds a lone surrogate (a \\ud800-\\udfff escape that is not half of a pair), which is not text"
                )
            if is_ranking_record(row):
                votes.append(_ranking_vote(row, rater, source))
                if origins is not None:
                    origins.append(None)  # its content hash finds it (store_votes.import_batches)
                continue
            votes.append(_row_vote(row, rater or IMPORT_RATER, source))
            if origins is not None:
                vote_id = row.get("vote_id")
                origins.append(vote_id if isinstance(vote_id, int) and not isinstance(vote_id, bool) else None)
            if margins is not None and isinstance(row, dict) and row.get("margin") is not None:
                margins.append(where)
        except InputError as e:
            raise InputError(f"{path} {where}: {e}; fix that row (nothing was imported)") from None
    return votes


def stored_pairs(store: Store, votes: list[Vote], origins: list[int | None]) -> set[int]:
    """The indices of the votes (TRL rows, read by read_votes with their `origins`) that are one of the
    pairs of the stored vote their row's vote_id names: the store's own TRL export coming back, each pair
    compared as both sides read it (through vote_pairs, then _row_vote), ties and both-bad included."""
    from tiankong.tui.prefs import vote_pairs  # prefs.py imports this module

    stored = store.votes_by_id({i for i in origins if i is not None})
    pairs: dict[int, set[tuple]] = {}
    for vote_id, vote in stored.items():
        keys = pairs.setdefault(vote_id, set())
        for conversational in (False, True):  # an export is conversational when any vote in it needs it
            for rec in vote_pairs(vote, include_ties=True, include_both_bad=True, conversational=conversational):
                try:
                    keys.add(_pair_content(_row_vote(rec, IMPORT_RATER, "")))
                except InputError:  # a pair no row could give (the same text twice): nothing to match
                    pass
    return {
        i
        for i, (vote, vote_id) in enumerate(zip(votes, origins, strict=True))
        if vote_id in pairs and _pair_content(vote) in pairs[vote_id]
    }


def _pair_content(vote: Vote) -> tuple[str, str, str, str]:
    """What a TRL row says of a 2-answer vote: the conversation, chosen, rejected, and the outcome."""
    conversation = json.dumps(vote.conversation, sort_keys=True, ensure_ascii=False)
    return conversation, vote.responses[0].text, vote.responses[1].text, vote.outcome


def _read_rows(path: Path) -> list[tuple[str, Any]]:
    """(where, parsed row) pairs; where is "line N" for JSONL, "item N" for a JSON array."""
    try:
        rows = [(where, row) for _, where, row in read_rows(path, fix="fix that line (nothing was imported)")]
    except RecursionError:
        raise InputError(
            f"{path} is nested too deeply to be preference data; fix the file (nothing was imported)"
        ) from None
    if not rows:
        raise InputError(f"{path} has no rows; put one preference pair (a JSON object) per line")
    return rows


def is_ranking_record(row: Any) -> bool:
    """Whether a row is a record of `export --format rankings` (not a TRL or HH preference row)."""
    return isinstance(row, dict) and "responses" in row and "ranking" in row and "chosen" not in row


def ranking_pairs(row: dict) -> list[dict]:
    """A record of `export --format rankings` as the TRL records `export --format trl` gives for its
    vote (all K(K-1)/2 pairs of a full K-way ranking), a tie's or both-bad vote's pairs flagged so;
    InputError naming the field when it is malformed. The trainers read such files through this."""
    from tiankong.tui.prefs import vote_pairs  # prefs.py imports this module

    return vote_pairs(_ranking_vote(row, None, "file"), include_ties=True, include_both_bad=True)


def _row_vote(row: Any, rater: str, source: str) -> Vote:
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        raise InputError(
            'expected a JSON object with "chosen" and "rejected" (TRL preference or Anthropic HH), '
            'or with "responses" and "ranking" (tiankong prefs export --format rankings)'
        )
    conversation, chosen, rejected = _split_row(row.get("prompt"), row["chosen"], row["rejected"])
    if chosen == rejected and row.get("tie") is not True:  # the trainers would refuse it later, naming no row
        raise InputError('"chosen" and "rejected" are the same text, which teaches nothing')
    users = [m["content"] for m in conversation if m["role"] == "user"]

    def meta(key: str, default: str) -> str:
        value = row.get(key)
        return value if isinstance(value, str) and value else default

    responses = [
        Response(
            "A", meta("chosen_model", IMPORTED_MODEL), meta("chosen_preset", IMPORTED_PRESET), {}, None, chosen, ""
        ),
        Response(
            "B",
            meta("rejected_model", IMPORTED_MODEL),
            meta("rejected_preset", IMPORTED_PRESET),
            {},
            None,
            rejected,
            "",
        ),
    ]
    # Our own tie/both-bad exports come back as such; everything else is "chosen beats rejected".
    outcome = "tie" if row.get("tie") is True else "both_bad" if row.get("both_bad") is True else "ranked"
    return Vote(
        id=None,
        prompt=users[-1] if users else "",
        conversation=conversation,
        responses=responses,
        outcome=outcome,
        ranking=[0, 1] if outcome == "ranked" else [],
        rater=rater,
        blind=False,
        source=source,
        prompt_id=prompt_id(conversation),  # as a queue round's: the same prompt has the same id everywhere
    )


def _ranking_vote(row: dict, rater: str | None, source: str) -> Vote:
    """A record of `export --format rankings` (ranking_record) back as the vote it was. Its vote_id is
    the old store's and is not kept; rater, blind, source and created_at are kept where given (--rater
    overrides the rater)."""
    answers = row["responses"]
    if not isinstance(answers, list) or not MIN_RESPONSES <= len(answers) <= MAX_RESPONSES:
        got = f"{len(answers)} answers" if isinstance(answers, list) else type(answers).__name__
        raise InputError(f'"responses" must be a list of {MIN_RESPONSES} to {MAX_RESPONSES} answers, got {got}')
    responses = [_response(r, i) for i, r in enumerate(answers)]
    outcome = row.get("outcome", "ranked")
    if outcome not in OUTCOMES:
        raise InputError(f'"outcome" is {outcome!r}; use one of {", ".join(OUTCOMES)}')
    ranking, n_ranked = _from_groups(row["ranking"], len(responses), outcome)
    conversation = row.get("conversation")
    if not isinstance(conversation, list) or not conversation:
        raise InputError('"conversation" must be the list of {"role", "content"} messages the answers reply to')
    users = [m.get("content") for m in conversation if isinstance(m, dict) and m.get("role") == "user"]
    vote = Vote(
        id=None,
        prompt=_field(row, "prompt", str, users[-1] if users and isinstance(users[-1], str) else ""),
        conversation=conversation,
        responses=responses,
        outcome=outcome,
        ranking=ranking,
        rater=rater or _field(row, "rater", str, IMPORT_RATER) or IMPORT_RATER,
        blind=_field(row, "blind", bool, False),
        created_at=_field(row, "created_at", str, ""),  # "": stamped now
        source=_field(row, "source", str, "") or source,
        n_ranked=n_ranked,
        prompt_id=_field(row, "prompt_id", str, None),
    )
    validate_vote(vote)  # the conversation's messages, among others
    return vote


def _field(row: dict, key: str, kind: type, default: Any) -> Any:
    """row[key] when it is of `kind`; `default` when missing or null; InputError naming it otherwise."""
    value = row.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InputError(f'"{key}" must be {_KINDS[kind]}, got {type(value).__name__}')
    return value


_KINDS = {str: "a string", bool: "true or false", dict: "an object"}


def _response(r: Any, i: int) -> Response:
    """One answer of a rankings record: text, model and preset required; params, seed, finish_reason
    and label as exported (the label defaults to the answer's letter)."""
    if not isinstance(r, dict):
        raise InputError(f'response {i + 1} must be an object with "text", "model" and "preset"')
    for key in ("text", "model", "preset"):
        if not isinstance(r.get(key), str):
            raise InputError(f'response {i + 1} needs "{key}" as a string')
    seed = r.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64):
        raise InputError(f'response {i + 1}: "seed" must be an integer from 0 to 2^64 - 1, or null; got {seed!r}')
    try:
        return Response(
            label=_field(r, "label", str, "ABCD"[i]),
            model=r["model"],
            preset=r["preset"],
            params=_field(r, "params", dict, {}),
            seed=seed,
            text=r["text"],
            finish_reason=_field(r, "finish_reason", str, ""),
        )
    except InputError as e:
        raise InputError(f"response {i + 1}: {e}") from None


def _from_groups(groups: Any, n: int, outcome: str) -> tuple[list[int], int | None]:
    """A rankings record's "ranking" (groups of response indices, best first) as the store's (ranking,
    n_ranked), Vote.tiers undone: a ranked vote is single answers in order, then perhaps one unordered
    group of the rest; a tie or both-bad vote is one group of every answer."""
    if not (
        isinstance(groups, list)
        and all(isinstance(g, list) and g and all(type(i) is int for i in g) for g in groups)
        and sorted(i for g in groups for i in g) == list(range(n))
    ):
        raise InputError(
            f'"ranking" must be groups of response indices, best first, each of 0..{n - 1} in one group; got {groups!r}'
        )
    if outcome != "ranked":
        if len(groups) != 1:
            raise InputError(f'a {outcome} vote\'s "ranking" is one group of every answer; got {groups!r}')
        return [], None
    if any(len(g) > 1 for g in groups[:-1]):
        raise InputError(
            f'a ranked vote\'s "ranking" is single answers best first, then perhaps one group of the unranked '
            f"rest; got {groups!r}"
        )
    ranking = [i for g in groups for i in g]
    return ranking, (len(groups) - 1 if len(groups[-1]) > 1 else None)


def _split_row(prompt: Any, chosen: Any, rejected: Any) -> tuple[list[dict], str, str]:
    """(conversation ending with the user prompt, chosen text, rejected text) from any supported row."""
    if (
        prompt is None
        and isinstance(chosen, str)
        and isinstance(rejected, str)
        and HH_ASSISTANT in chosen
        and "Human:" in chosen
    ):
        return _hh(chosen, rejected)
    head, chosen, rejected = parse_record(
        {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if prompt is not None
        else {"chosen": chosen, "rejected": rejected}
    )
    if prompt is None and chosen == rejected:  # the implicit prompt swallowed both answers
        raise InputError('"chosen" and "rejected" are identical; there is no preference to learn')
    return ([{"role": "user", "content": head}] if isinstance(head, str) else head), chosen, rejected


def _hh(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """Anthropic HH: both are transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..."; everything up to the
    last "\\n\\nAssistant:" is the shared prompt, the rest is the answer."""
    cut = chosen.rfind(HH_ASSISTANT) + len(HH_ASSISTANT)
    head = chosen[:cut]
    if not rejected.startswith(head):
        raise InputError('HH row: "chosen" and "rejected" differ before the last "\\n\\nAssistant:" turn')
    text = head[: -len(HH_ASSISTANT)]
    if not text.startswith("\n\n"):  # some HH-style files start with "Human:" directly
        text = "\n\n" + text
    parts = re.split(r"\n\n(Human|Assistant):", text)
    conversation = [{"role": "system", "content": parts[0].strip()}] if parts[0].strip() else []
    for speaker, said in zip(parts[1::2], parts[2::2], strict=False):
        conversation.append({"role": "user" if speaker == "Human" else "assistant", "content": said.strip()})
    if not conversation or conversation[-1]["role"] != "user":
        raise InputError('HH row: the turn before the last "\\n\\nAssistant:" must be a "Human:" turn')
    return conversation, chosen[cut:].strip(), rejected[cut:].strip()
