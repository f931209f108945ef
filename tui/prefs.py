"""Preference votes in and out: TRL preference datasets, Anthropic HH files, and per-preset stats.

Export follows TRL's "preference" dataset type (https://huggingface.co/docs/trl/dataset_formats):

* standard, when every exported vote is a single user prompt without a system prompt:
  {"prompt": str, "chosen": str, "rejected": str}
* conversational, for every row of the file as soon as one exported vote had a system prompt or
  earlier turns (a single-turn vote's prompt is then its one user message):
  {"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [{"role": "assistant", ...}]}

One form per file: `datasets.load_dataset("json")` (pyarrow) refuses a column that is a string in one
row and a list in another, and TRL picks the form from the first row. tiankong's trainers read both.

A K-way ranking becomes all K(K-1)/2 (better, worse) pairs; a partial one (`3 1 enter` on four answers)
only the pairs it expressed: C > A, and C and A over B and D, never B against D. Every record also carries chosen_preset,
rejected_preset, chosen_model, rejected_model and vote_id, which TRL's trainers ignore. Ties and
both-bad votes say nothing about which answer is better, so they are left out unless asked for; then
each pair of their responses is exported with "tie": true or "both_bad": true, and "chosen"/"rejected"
merely name the two sides.

Import (prefs_import.py) reads those records back, Anthropic HH rows, and the records of `export
--format rankings` as the votes they were, so export -> import moves votes between stores without loss.
The votes go in a batch at a time; an import stopped part-way (Ctrl+C, a kill, a full disk) says how many
it kept, and the same command again imports the rest.

A vote row damaged outside tiankong is skipped by export and stats, with one warning line naming it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tiankong.engine.errors import InputError
from tiankong.engine.files import atomic_open, stdout_errors
from tiankong.trainers.progress import progress
from tiankong.trainers.records import not_a_file
from tiankong.tui.cli_app import data_folder, epilog, output_file
from tiankong.tui.leaderboard import MIN_VOTES, leaderboards, standings_table
from tiankong.tui.prefs_import import import_file as import_file  # part of this module's interface
from tiankong.tui.prefs_import import read_votes, stored_pairs
from tiankong.tui.stops import Stops, Terminated
from tiankong.tui.store import DB_NAME, Response, Store, StoreError, Vote, data_dir
from tiankong.tui.store_base import refuse_in_the_way
from tiankong.tui.store_votes import summarise

IMPORT_BATCH = 1000  # votes per transaction of an import; more than one batch shows progress


# ---------------------------------------------------------------- export


def needs_messages(vote: Vote) -> bool:
    """Whether the vote's prompt needs TRL's conversational form: more than one message of context, or
    a system prompt (Store.any_multi_message asks the same of the whole store, in SQL)."""
    return len(vote.conversation) > 1 or any(m.get("role") == "system" for m in vote.conversation)


def vote_pairs(
    vote: Vote, include_ties: bool = False, include_both_bad: bool = False, conversational: bool = False
) -> list[dict]:
    """The vote as TRL preference records: (better, worse) pairs of a ranking, best pairs first;
    for an included tie or both-bad vote, every pair of its responses with a "tie"/"both_bad" flag.
    conversational: message lists even for a single-turn vote (its file has a multi-turn one)."""
    n = len(vote.responses)
    if vote.outcome == "ranked":
        pairs, flag = vote.pairs(), None  # only what was expressed: an unranked tail stays unordered
    elif (vote.outcome == "tie" and include_ties) or (vote.outcome == "both_bad" and include_both_bad):
        pairs, flag = list(combinations(range(n), 2)), vote.outcome
    else:
        return []
    conv = conversational or needs_messages(vote)
    messages = [{"role": m["role"], "content": m["content"]} for m in vote.conversation]
    prompt: Any = (messages or [{"role": "user", "content": vote.prompt}]) if conv else vote.prompt

    def side(r: Response) -> Any:
        return [{"role": "assistant", "content": r.text}] if conv else r.text

    records = []
    for i, j in pairs:
        good, bad = vote.responses[i], vote.responses[j]
        rec = {
            "prompt": prompt,
            "chosen": side(good),
            "rejected": side(bad),
            "chosen_preset": good.preset,
            "rejected_preset": bad.preset,
            "chosen_model": good.model,
            "rejected_model": bad.model,
            "vote_id": vote.id,
        }
        if flag:
            rec[flag] = True
        records.append(rec)
    return records


def iter_export_records(
    store: Store,
    include_ties: bool = False,
    include_both_bad: bool = False,
    skipped: list[tuple[int, str]] | None = None,
) -> Iterator[dict]:
    """Every vote's TRL records, oldest vote first, read from the store a page at a time (so an export
    of a million votes holds one page, not all of them). Unreadable vote rows are left out (listed in
    `skipped` as they are met). All in one form: conversational if any exported vote needs it."""
    outcomes = ("ranked",) + ("tie",) * include_ties + ("both_bad",) * include_both_bad
    conv = store.any_multi_message(outcomes)  # asked before the first row is written
    for vote in store.iter_votes(oldest_first=True, skipped=skipped):
        yield from vote_pairs(vote, include_ties, include_both_bad, conversational=conv)


def export_records(
    store: Store,
    include_ties: bool = False,
    include_both_bad: bool = False,
    skipped: list[tuple[int, str]] | None = None,
) -> list[dict]:
    """Every vote's TRL records, oldest vote first, as a list (`iter_export_records`)."""
    return list(iter_export_records(store, include_ties, include_both_bad, skipped))


def ranking_record(vote: Vote) -> dict:
    """The vote as cast: "ranking" lists groups of response indices, best first, each group unordered
    (a partial ranking's unranked tail is one group; a tie or both-bad vote is a single group)."""
    return {
        "vote_id": vote.id,
        "prompt_id": vote.prompt_id,
        "prompt": vote.prompt,
        "conversation": vote.conversation,
        "responses": [r.to_dict() for r in vote.responses],
        "outcome": vote.outcome,
        "ranking": vote.tiers(),
        "rater": vote.rater,
        "blind": vote.blind,
        "source": vote.source,
        "created_at": vote.created_at,
    }


def iter_ranking_records(store: Store, skipped: list[tuple[int, str]] | None = None) -> Iterator[dict]:
    """Every vote as a raw K-way ranking with ties (`ranking_record`), oldest vote first, a page at a time."""
    for vote in store.iter_votes(oldest_first=True, skipped=skipped):
        yield ranking_record(vote)


def ranking_records(store: Store, skipped: list[tuple[int, str]] | None = None) -> list[dict]:
    """Every vote as a raw K-way ranking with ties (`ranking_record`), oldest vote first, as a list."""
    return list(iter_ranking_records(store, skipped))


# ---------------------------------------------------------------- stats


def stats_report(
    store: Store,
    skipped: list[tuple[int, str]] | None = None,
    shapes: tuple[list[Vote], list[int]] | None = None,
) -> dict[str, Any]:
    """vote_stats() plus each preset's win rate (wins / decided pairs) and vote totals (counted in SQL).
    shapes: Store.vote_shapes() already read (then `skipped` is not filled again)."""
    presets = {}
    per_preset, per_outcome = summarise(*(store.vote_shapes(skipped) if shapes is None else shapes))
    for name, s in per_preset.items():
        decided = s["wins"] + s["losses"]
        presets[name] = {**s, "win_rate": s["wins"] / decided if decided else None}
    totals = {"votes": sum(per_outcome.values())}
    for outcome in ("ranked", "tie", "both_bad"):
        totals[outcome] = per_outcome[outcome]
    totals["pairs"] = sum(s["wins"] for s in presets.values())
    return {"presets": presets, "totals": totals}


# ---------------------------------------------------------------- CLI

prefs_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Export, import and summarise preference votes.",
)


def _err() -> Console:
    """A console on stderr made per use, so it takes the terminal's width (COLUMNS) of that moment; emoji
    off: model names and paths like ollama:cat:cool print as typed."""
    return Console(stderr=True, emoji=False)


# Defined here rather than imported from cli.py: cli.py imports this module while it is loading.
DataDirOpt = typer.Option(
    None,
    "--data-dir",
    help="Where chats and votes are kept.",
    envvar="TIANKONG_DATA_DIR",
    show_default=False,
    parser=data_folder,  # --data-dir "" refused, not the current folder
    metavar="<path>",  # as a Path option's type shows (a parser's would show "<Path>")
)


def _store(folder: Optional[Path]) -> Store:
    """The store an import writes into, made if need be; checked whole for damage before a vote goes in."""
    return Store(data_dir(folder) / DB_NAME, full_check=True, on_busy=_say_waiting)


def _existing_store(folder: Optional[Path]) -> Store:
    """The store of a command that only reads it (export, stats): a folder without one is a mistyped
    --data-dir or TIANKONG_DATA_DIR far more often than a new user, and opening it would create an empty
    database there (and export an empty file) without a word. So it is refused, and nothing is created.
    It is opened read-only (a read-only copy is read as it is) and checked whole for damage, as the
    command reads all of it anyway."""
    where = data_dir(folder)
    refuse_in_the_way(where / DB_NAME)  # in the words import says it
    if not (where / DB_NAME).is_file():
        raise InputError(
            f"no tiankong data in {where} (no {DB_NAME} there); check --data-dir and TIANKONG_DATA_DIR "
            "(votes are stored by tiankong compare, rank and prefs import)"
        )
    return Store(where / DB_NAME, read_only=True, full_check=True, on_busy=_say_waiting)


def _say_waiting(path: Path) -> None:
    _err().print(
        f"waiting: {path} is busy (another tiankong or another program is writing to it) ...",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def warn_skipped(store: Store, skipped: list[tuple[int, str]]) -> None:
    """One warning line naming the vote rows that could not be read (ids, and the first reason)."""
    if not skipped:
        return
    ids = sorted({i for i, _ in skipped})
    shown = ", ".join(map(str, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    _err().print(
        f"warning: skipped {len(ids)} damaged vote row{'s' if len(ids) > 1 else ''} in {store.path} "
        f"(id {shown}; id {skipped[0][0]}: {skipped[0][1]}); repair or delete them with sqlite3",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@prefs_app.command(
    epilog=epilog(
        "tiankong prefs export > prefs.jsonl",
        "tiankong prefs export --output prefs.jsonl --include-ties",
        "tiankong prefs export --data-dir ~/tiankong-data -o prefs.jsonl",
        "tiankong prefs export --format rankings -o rankings.jsonl",
        notes="""Records are TRL preference rows (prompt/chosen/rejected) plus chosen_preset, rejected_preset, chosen_model, rejected_model and vote_id. A ranking of K answers gives K(K-1)/2 pairs; a partial one only the pairs it expressed.

Every row of a file has one form, as datasets.load_dataset("json") needs: plain strings, or, once any exported vote has a system prompt or earlier turns, TRL's conversational message lists (a single-turn prompt is then one user message).

--format rankings writes each vote whole instead: its responses (model, preset, params, seed, text), "ranking" as groups of response indices best first (a group is unordered: the unranked rest, or a tie), outcome, rater, prompt_id.

--output is written whole or not at all (a temporary file renamed over it): Ctrl+C leaves it unchanged and says so, and the next export removes what a killed one left. A symlink is written through, a folder or device is refused.""",
    )
)
def export(
    format: str = typer.Option("trl", "--format", help="trl (TRL preference pairs) or rankings (K-way, with ties)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout (- is stdout)."),
    include_ties: bool = typer.Option(False, "--include-ties", help='Add ties, flagged "tie": true.'),
    include_both_bad: bool = typer.Option(
        False, "--include-both-bad", help='Add both-bad votes, flagged "both_bad": true.'
    ),
    data_dir: Optional[Path] = DataDirOpt,
) -> None:
    """Write your votes as JSONL for DPO or reward-model training: TRL preference pairs, or whole rankings."""
    if format not in ("trl", "rankings"):
        raise InputError(f"unknown --format {format!r}; use trl or rankings")
    output = output_file(output)  # "-" is stdout
    try:
        with Stops():  # SIGTERM as Ctrl+C: either says what became of the output
            written = _export(format, output, include_ties, include_both_bad, data_dir)
    except KeyboardInterrupt as stop:
        if output is None:
            _say_stopped(stop, "the export to standard output is cut short")
        what = "unchanged" if os.path.lexists(output) else "not written"
        _say_stopped(stop, f"{output} {what} (it is written whole or not at all)")
    if output is not None:
        what = "rankings" if format == "rankings" else "preference pairs"
        _err().print(f"wrote {written} {what} to {output}", highlight=False, markup=False)  # a path may hold "[/]"


def _export(
    format: str, output: Optional[Path], include_ties: bool, include_both_bad: bool, data_dir: Optional[Path]
) -> int:
    """Write the export to `output` (None: stdout), streamed; -> how many records it holds."""
    skipped: list[tuple[int, str]] = []
    written = 0
    with _existing_store(data_dir) as store:  # before the output is opened: no store, no empty file
        records = (
            iter_ranking_records(store, skipped)
            if format == "rankings"
            else iter_export_records(
                store, include_ties=include_ties, include_both_bad=include_both_bad, skipped=skipped
            )
        )

        def lines() -> Iterator[str]:  # streamed: one page of votes in memory at a time
            nonlocal written
            for r in records:
                written += 1
                yield json.dumps(r, ensure_ascii=False) + "\n"

        if output is None:
            with stdout_errors():
                sys.stdout.writelines(lines())
        else:
            with atomic_open(output) as f:
                f.writelines(lines())
        warn_skipped(store, skipped)
    return written


@prefs_app.command(
    "import",
    epilog=epilog(
        "tiankong prefs import prefs.jsonl",
        "tiankong prefs import hh-rlhf-test.jsonl --rater anthropic",
        "tiankong prefs export --format rankings -o votes.jsonl\ntiankong prefs import votes.jsonl --data-dir ~/other",
        notes="""Rows may be TRL preference records (standard, conversational, or with an implicit prompt) or Anthropic HH rows, each becoming a ranked vote of two answers, chosen first; or the records of `prefs export --format rankings`, each becoming the vote it was (its answers' models, presets, params and seeds, its ranking groups, tie or both-bad, rater, prompt id), so export and import move votes between stores without loss.

Every row is checked before anything is stored: one bad row stops the import with its line number, and nothing is imported. The votes then go in as batches of 1000, each kept once written: an import stopped part-way (Ctrl+C, a kill, a full disk) says how many votes it kept, and the same command again imports the rest. Rows already in the store are skipped and counted as duplicates, so importing a file again changes nothing; so are the rows of the store's own TRL export (each names its vote_id).""",
    ),
)
def import_(
    file: Path = typer.Argument(
        ..., metavar="FILE", help="JSONL (or JSON array) of preference rows.", show_default=False
    ),
    data_dir: Optional[Path] = DataDirOpt,
    rater: Optional[str] = typer.Option(
        None,
        help="Name recorded as the rater of these votes (default: a rankings record's own rater, else import).",
        show_default=False,
    ),
) -> None:
    """Add preference pairs, or votes exported with --format rankings, from a file as votes."""
    if not file.is_file():  # checked before opening (and perhaps creating) the database
        raise InputError(f"{file} {not_a_file(file)}; give a JSONL (or JSON array) file of preference pairs")
    margins: list[str] = []
    origins: list[int | None] = []
    with Stops() as stops:  # SIGTERM as Ctrl+C: either says what was kept
        try:
            # every row checked before the database opens
            votes = read_votes(file, rater=rater, margins=margins, origins=origins)
        except KeyboardInterrupt as stop:
            _say_stopped(stop, f"while reading {file}, before any vote was stored; nothing was imported")
        with _store(data_dir) as store:
            known = stored_pairs(store, votes, origins)  # this store's own TRL export, come back
            added = _import(store, [v for i, v in enumerate(votes) if i not in known], stops, len(known))
            duplicates = len(votes) - added
            dup = f"; {duplicates} duplicate{'' if duplicates == 1 else 's'} skipped" if duplicates else ""
            _err().print(
                f"imported {added} vote{'' if added == 1 else 's'} from {file} into {store.path}{dup}",
                highlight=False,
                markup=False,  # paths may hold "[/]"
                soft_wrap=True,
            )
    if margins:  # said, not dropped silently: the trainers read a file's margins only from the file itself
        _err().print(
            f"note: {len(margins)} row{'s' if len(margins) > 1 else ''} ({margins[0]}{' first' if len(margins) > 1 else ''}) "
            f'{"carry" if len(margins) > 1 else "carries"} a "margin", which votes do not store; '
            f"to train with them, give the file itself: tiankong train reward --data {file}",
            highlight=False,
            markup=False,
            soft_wrap=True,  # one line, as the terminal or a log wraps it
        )


def _import(store: Store, votes: list[Vote], stops: Stops, known: int = 0) -> int:
    """Store the votes a batch at a time, with progress on stderr past one batch (a bar on a terminal,
    else a line now and then); -> how many were added. A stop (Ctrl+C, SIGTERM) or a write that fails
    part-way ends the command with one line saying how many votes are kept and what to run, counting
    the `known` rows already left out as duplicates (stored_pairs) among those gone through."""
    added = done = 0
    batches = store.import_batches(votes, batch_size=IMPORT_BATCH)
    try:
        with progress("importing", len(votes), enabled=len(votes) > IMPORT_BATCH, console=_err()) as advance:
            while True:
                with stops.held():  # a stop during a batch waits for its commit: the counts are then exact
                    step = next(batches, None)
                    if step is None:
                        break
                    for _ in range(step[1] - done):
                        advance()
                    added, done = step
    except KeyboardInterrupt as stop:  # the bar has ended: the line goes under it
        _say_stopped(stop, _kept(added, done + known, len(votes) + known, store))
    except StoreError as e:  # a full disk, a lock held too long: the batches before it are kept
        raise StoreError(f"{e}; {_kept(added, done + known, len(votes) + known, store)}") from None
    return added


def _kept(added: int, done: int, total: int, store: Store) -> str:
    """What an import stopped part-way left in the store, and how to finish it."""
    dup = f" ({done - added} duplicate{'' if done - added == 1 else 's'} skipped)" if done > added else ""
    rest = (
        "run the same command again to import the rest (the votes already in are skipped as duplicates)"
        if done < total
        else "every row was gone through"
    )
    return f"{added} of {total} vote{'' if total == 1 else 's'} imported into {store.path}{dup}; {rest}"


def _say_stopped(stop: KeyboardInterrupt, what: str) -> NoReturn:
    """One line for an import stopped by Ctrl+C or SIGTERM, then exit 130 or 143 as a shell expects."""
    how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "stopped (Ctrl+C)"
    _err().print(f"{how}: {what}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(128 + signal.SIGTERM if isinstance(stop, Terminated) else 130)


@prefs_app.command(
    epilog=epilog(
        "tiankong prefs stats",
        "tiankong prefs stats --format json",
        "tiankong prefs stats --bootstrap 1000 --seed 1",
        notes=f"""Each ranked vote counts per pair of answers: the better-ranked preset gets a win, the other a loss. Win rate = wins / (wins + losses). Two answers of one preset decide no pair: a vote imported from rows that name no presets (both answers "imported") counts in the imported row, with no win or loss.

The total row counts each vote once: votes, tie votes and both-bad votes; its wins and losses stay blank, as each decided pair is one win and one loss above. The line under the table gives the ranked votes and the decided pairs.

The leaderboards below give Bradley-Terry strengths on an Elo-like scale (1000 = average; 400 points = 10:1 odds) for presets and for models, with 95% intervals from resampling the votes ("—" for an entry in fewer than {MIN_VOTES} votes, too few to resample); "games" counts an entry's answer pairs, "votes" the votes they come from.""",
    )
)
def stats(
    data_dir: Optional[Path] = DataDirOpt,
    format: str = typer.Option("table", "--format", help="table or json."),
    bootstrap: int = typer.Option(200, "--bootstrap", min=0, help="Resamples for the confidence intervals (0: none)."),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the resampling (the same votes and seed give the same intervals)."
    ),
) -> None:
    """How each preset fares in your votes (wins, losses, ties, win rate), and leaderboards of presets and models."""
    if format not in ("table", "json"):
        raise InputError(f"unknown --format {format!r}; use table or json")
    skipped: list[tuple[int, str]] = []
    with _existing_store(data_dir) as store:
        shapes, counts = store.vote_shapes(skipped)  # one scan in SQL, no texts
        report = stats_report(store, shapes=(shapes, counts))
        boards = leaderboards(shapes, rounds=bootstrap, seed=seed, counts=counts)
        warn_skipped(store, skipped)
    report["leaderboard"] = {kind: [s.to_dict() for s in rows] for kind, rows in boards.items()}
    if format == "json":
        print(json.dumps(report))
        return
    t = report["totals"]
    table = Table(show_edge=False)
    table.add_column("preset", no_wrap=True)
    for col in ("votes", "wins", "losses", "ties", "both bad", "win rate"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, s in sorted(report["presets"].items(), key=lambda kv: -(kv[1]["win_rate"] or 0)):
        rate = "–" if s["win_rate"] is None else f"{100 * s['win_rate']:.1f}%"
        table.add_row(
            Text(name), str(s["votes"]), str(s["wins"]), str(s["losses"]), str(s["ties"]), str(s["both_bad"]), rate
        )
    table.add_section()
    # A decided pair is one preset's win and another's loss: the total is pairs, not wins and losses
    # (it read "wins 2 losses 2" for 293 votes imported without presets).
    table.add_row("total", str(t["votes"]), "", "", str(t["tie"]), str(t["both_bad"]), "")
    con = Console(emoji=False)
    con.print(table)
    con.print(
        f"{t['ranked']} ranked vote{'' if t['ranked'] == 1 else 's'}; {t['pairs']} decided "
        f"pair{'' if t['pairs'] == 1 else 's'} between presets, each one win and one loss "
        "above (two answers of one preset decide no pair: a vote imported without presets counts in the "
        "imported row, with no win or loss)",
        style="dim",
        highlight=False,
    )
    for kind, rows in boards.items():
        if rows:
            con.print()
            con.print(standings_table(rows, title=kind, paths=kind == "models"))
