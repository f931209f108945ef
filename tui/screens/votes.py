"""Votes screen: browse past votes, read one in full, delete one, and see how each preset fares.

Top: filters (preset, outcome). Middle: a table of votes, newest first, its prompt and lineup columns
(and the model's, from MODEL_COLUMN_AT columns on) sharing the terminal's width. Bottom: the
highlighted vote with every response, and the per-preset counts (`summarise` of the vote shapes; one
table per model when the votes have several, as one preset name on two models is two things) with a
bar per win rate, then the Bradley-Terry leaderboards of presets and models (tiankong.tui.leaderboard;
worked out in a thread, once per set of votes). Below `WIDE` columns the bottom shows one of the two at
a time (`s` switches). `d` twice deletes the highlighted vote (Store.delete_vote), whichever session
cast it.
"""

from __future__ import annotations

from datetime import datetime

from rich.bar import Bar
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Select, Static

from tiankong.engine.model_names import display_name, stored_model
from tiankong.tui.leaderboard import leaderboards, short_names, standings_table
from tiankong.tui.store import Store, StoreError, Vote
from tiankong.tui.store_votes import summarise
from tiankong.tui.widgets.status import cut_name, plural

WIDE = 120  # from this many columns on, vote detail and statistics sit side by side
MODEL_COLUMN_AT = 100  # from this many columns on, the table has a model column (the detail always names it)
OUTCOMES = [("ranked", "ranked"), ("tie", "tie"), ("both bad", "both_bad")]
ORDINALS = ["1st", "2nd", "3rd", "4th"]
# The winner column: wide enough for the longest winner listed ("chat (edited)" was cut to "chat (edited"),
# within these bounds; a longer name is cut with "…", its " (edited)" kept.
WINNER_MIN, WINNER_MAX = 12, 20


def can_go_back(screen: Screen) -> bool:
    """True when a screen with content lies under this one (not just the app's empty default)."""
    stack = screen.app.screen_stack
    if not stack or stack[-1] is not screen:
        return False
    return any(s.id != "_default" or s.children for s in stack[:-1])


def local_time(stamp: str, short: bool = False) -> str:
    """'2025-01-31T12:00:00.000Z' -> '2025-01-31 13:00' (short: '01-31 13:00') in local time."""
    try:
        t = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone()
        return t.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


def excerpt(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def who(vote: Vote, i: int) -> str:
    """Name of response i: its preset, or its model's folder when every response used one preset."""
    r = vote.responses[i]
    if len({x.preset for x in vote.responses}) == 1 and len({x.model for x in vote.responses}) > 1:
        return display_name(r.model)
    return r.preset


def compared(vote: Vote) -> str:
    return " vs ".join(who(vote, i) for i in range(len(vote.responses)))


def models_of(vote: Vote) -> str:
    """The vote's models by their short names, each once, in answer order: 'tiankong-mini', 'sft, ppo'."""
    return ", ".join(dict.fromkeys(display_name(r.model) for r in vote.responses))


def column_widths(width: int, winner: int = WINNER_MIN) -> dict[str, int]:
    """The table's columns at `width` terminal columns: time, outcome and winner (`winner` cells: see
    winner_width) keep their widths; the prompt and the lineup ("compared") share the rest, and from
    MODEL_COLUMN_AT columns on a model column takes a part of it. Every column's cells have 2 of padding,
    and 2 are kept for the scrollbar. At 80 columns: prompt 20, compared 17 (QA: at 120 they were 20 and
    18, and some 45 columns stayed empty)."""
    fixed = {"time": 11, "outcome": 8, "winner": winner}
    model = 0 if width < MODEL_COLUMN_AT else min(32, 14 + (width - MODEL_COLUMN_AT) // 3)
    columns = len(fixed) + 2 + (1 if model else 0)
    # Below 80 columns the table scrolls sideways (a wider winner column leaves the prompt less at 80)
    room = max(37 + WINNER_MIN - winner, width - sum(fixed.values()) - model - 2 * columns - 2)
    prompt = (room * 6 + 5) // 11
    widths = {"time": 11, "prompt": prompt, "compared": room - prompt}
    return {**widths, **({"model": model} if model else {}), "outcome": 8, "winner": winner}


def winner_width(votes: list[Vote]) -> int:
    """The winner column's cells for `votes`: their longest winner, within WINNER_MIN and WINNER_MAX."""
    return min(WINNER_MAX, max([WINNER_MIN, *(cell_len(winner(v)) for v in votes)]))


def winner(vote: Vote) -> str:
    if vote.outcome != "ranked" or not vote.ranking:
        return "—"
    return who(vote, vote.ranking[0])


def tiers_text(tiers: list[list[str]], better: bool = True) -> str:
    """Labels best first: 'A better' (two answers, when `better`), 'B > A > C', an unordered group in
    braces: 'C > A > {B, D}'."""
    if better and len(tiers) == 2 and all(len(t) == 1 for t in tiers):
        return f"{tiers[0][0]} better"
    return " > ".join(t[0] if len(t) == 1 else "{" + ", ".join(t) + "}" for t in tiers)


def verdict(vote: Vote) -> str:
    """The outcome in words: 'A better', 'B > A > C', 'C > A > {B, D}' (partial), 'tie', 'both bad'."""
    if vote.outcome == "tie":
        return "tie"
    if vote.outcome == "both_bad":
        return "both bad" if len(vote.responses) == 2 else "all bad"
    return tiers_text([[vote.responses[i].label for i in tier] for tier in vote.tiers()])


def win_rate(s: dict[str, int]) -> float | None:
    """Wins over decided pairwise comparisons (ties and both-bad votes excluded); None if none."""
    decided = s.get("wins", 0) + s.get("losses", 0)
    return s.get("wins", 0) / decided if decided else None


WIN_RATE = "win rate = wins ÷ (wins + losses), over ranked pairs"
# Under one table per model, a pair of one preset on two models (a --models round) is a win and a loss
# here, where `tiankong prefs stats` (by preset alone) counts it as neither: said, as the counts differ.
BY_MODEL = (
    "; counted by preset and model, so a pair of one preset on two models counts here and in neither column "
    "of `tiankong prefs stats`"
)


def stats_table(stats: dict[str, dict[str, int]], title: str = "Presets", caption: bool | str = True) -> RenderableType:
    """One table of per-preset counts; caption: True for the win rate's line, a str for that line and it."""
    if not stats:
        return Text("No votes yet.", style="dim")
    table = Table(
        box=None,
        padding=(0, 1),
        expand=False,
        title=title,
        title_justify="left",
        title_style="bold",
        caption=WIN_RATE + (caption if isinstance(caption, str) else "") if caption else None,
        caption_justify="left",
        caption_style="dim",
    )
    table.add_column("preset", no_wrap=True, overflow="ellipsis", max_width=16)
    for name in ("votes", "wins", "losses", "ties", "bad"):
        table.add_column(name, justify="right")
    table.add_column("win rate", justify="right")
    table.add_column("", width=12)
    order = sorted(stats, key=lambda p: (-(win_rate(stats[p]) or -1), p))
    for preset in order:
        s = stats[preset]
        rate = win_rate(s)
        table.add_row(
            Text(preset),  # a str cell is read as markup; a preset's name is a file's name
            str(s.get("votes", 0)),
            str(s.get("wins", 0)),
            str(s.get("losses", 0)),
            str(s.get("ties", 0)),
            str(s.get("both_bad", 0)),
            "—" if rate is None else f"{rate:.0%}",
            Bar(1.0, 0.0, rate or 0.0, width=12, color="green", bgcolor="grey23"),
        )
    return table


def stats_tables(stats: dict[tuple[str, str], dict[str, int]]) -> list[RenderableType]:
    """Per-preset counts keyed by (preset, model): one table, or one per model when there are several
    (one preset name on two models is two entries: their counts were merged)."""
    models = sorted({m for _, m in stats})
    if len(models) <= 1:
        return [stats_table({p: s for (p, _), s in stats.items()})]
    short, last = short_names(models), len(models) - 1
    tables: list[RenderableType] = []
    for n, model in enumerate(models):
        mine = {p: s for (p, m), s in stats.items() if m == model}
        tables += [Text("")] if n else []
        tables.append(stats_table(mine, title=f"Presets on {short[model]}", caption=n == last and BY_MODEL))
    return tables


def vote_detail(vote: Vote) -> RenderableType:
    """Everything about one vote: who, when, the context, each response (best first when ranked)."""
    head = Text.assemble(
        (f"Vote #{vote.id}", "bold"),
        f" · {local_time(vote.created_at)} · {models_of(vote)} · rater {vote.rater} · ",
        ("blind" if vote.blind else "not blind"),
        f" · {vote.source}",
    )
    result = Text.assemble(("Outcome: ", "bold"), (verdict(vote), "bold cyan"))
    if vote.outcome == "ranked":
        result.append(
            "  (" + tiers_text([[who(vote, i) for i in tier] for tier in vote.tiers()], better=False) + ")", style="dim"
        )
    parts: list[RenderableType] = [head, result]
    for m in vote.conversation[:-1]:  # the context before the prompt
        parts.append(Text.assemble((f"{m.get('role', '?')}: ", "bold dim"), (str(m.get("content", "")), "dim")))
    parts.append(Text.assemble(("Prompt: ", "bold"), vote.prompt))
    tiers = vote.tiers() if vote.outcome == "ranked" else []
    rank = {i: n for n, tier in enumerate(tiers) for i in tier}
    place = {i: ORDINALS[n] if len(tier) == 1 else "unranked" for n, tier in enumerate(tiers) for i in tier}
    order = list(vote.ranking) if rank else list(range(len(vote.responses)))
    for i in order:
        r = vote.responses[i]
        title = f"{r.label} · {r.preset}" + (f" · {place[i]}" if i in place else "")
        seed = "?" if r.seed is None else r.seed
        sub = f"{display_name(r.model)} · seed {seed} · {r.finish_reason}"
        parts.append(
            Panel(
                Text(r.text),
                title=Text(title, style="bold"),
                title_align="left",
                subtitle=Text(sub, style="dim"),
                subtitle_align="right",
                border_style="green" if rank.get(i) == 0 else "grey50",
            )
        )
    return Group(*parts)


class VotesScreen(Screen):
    """Past votes, one in full, and per-preset statistics."""

    CSS_PATH = "votes.tcss"

    BINDINGS = [
        Binding("escape", "close", "back", tooltip="back to the previous screen"),
        Binding(
            "s",
            "toggle_stats",
            "stats/vote",
            tooltip="switch between the vote and the preset statistics (narrow terminals)",
        ),
        Binding("ctrl+r", "reload", "reload", tooltip="read the votes again"),
        Binding("d", "delete", "delete", tooltip="delete the highlighted vote (press d twice)"),
    ]

    HELP = """\
## Votes

Every vote you cast in the compare screen, newest first.
**Up/Down** choose a vote; its prompt, model and every response show below.
Filter by preset or outcome with the menus at the top (**Tab** to reach them).
**d** twice deletes the highlighted vote, from any session (ctrl+z in the compare screen takes back
only that window's own votes); a prompt file's round it was cast in stays done.
**s** switches between the vote and the per-preset statistics on narrow terminals.
**ctrl+r** reloads · **Esc** goes back.
"""

    def __init__(
        self, store: Store, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.store = store
        self.votes: dict[int, Vote] = {}  # shown rows by vote id
        self._preset_names: list[str] = []  # the preset filter's options
        self.shown: Vote | None = None  # the vote shown in full
        self._boards: tuple[tuple[str, int | None], list[RenderableType]] | None = None  # (votes key, tables)
        self._armed: int | None = None  # the vote id the next `d` deletes
        self._widths: dict[str, int] = {}  # the table's columns as laid out

    def compose(self) -> ComposeResult:
        with Horizontal(id="votes-filters"):
            yield Select([], prompt="All presets", id="filter-preset")
            yield Select(OUTCOMES, prompt="All outcomes", id="filter-outcome")
            yield Static(id="votes-count")
        yield DataTable(id="votes-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="votes-bottom"):
            with VerticalScroll(id="vote-detail-scroll"):
                yield Static(id="vote-detail")
            with VerticalScroll(id="votes-stats-scroll"):
                yield Static(id="votes-stats")
        yield Footer()

    def on_mount(self) -> None:
        self._relayout()
        self.reload()
        self.query_one("#votes-table", DataTable).focus()

    def on_screen_resume(self) -> None:
        self.reload()  # votes may have been cast since the screen was last shown

    def on_resize(self, event: events.Resize) -> None:
        self._relayout()

    def _relayout(self) -> None:
        self.query_one("#votes-bottom").set_class(self.size.width < WIDE, "-narrow")
        if self._widths and self._columns(list(self.votes.values())) != self._widths:
            self._fill(list(self.votes.values()))  # the columns follow the width; the votes are not read again

    def _fill(self, votes: list[Vote]) -> None:
        """The table's rows, in columns made for the screen's width (again, if it changed), cursor kept."""
        table = self.query_one("#votes-table", DataTable)
        keep = table.cursor_row
        table.clear()
        widths = self._columns(votes)
        if widths != self._widths:
            self._widths = widths
            table.clear(columns=True)
            for key, width in widths.items():
                table.add_column(key, key=key, width=width)
        for v in votes:
            cells = {  # Text: a str cell is read as markup
                "time": Text(local_time(v.created_at, short=True)),
                "prompt": Text(excerpt(v.prompt, widths["prompt"])),
                "compared": Text(excerpt(compared(v), widths["compared"])),
                "model": Text(excerpt(models_of(v), widths.get("model", 1))),
                "outcome": Text(v.outcome.replace("_", " ")),
                "winner": Text(cut_name(winner(v), widths["winner"])),
            }
            table.add_row(*(cells[k] for k in widths), key=str(v.id))
        if votes:
            table.move_cursor(row=min(keep, len(votes) - 1))

    def _columns(self, votes: list[Vote]) -> dict[str, int]:
        return column_widths(self.size.width, winner_width(votes))

    # ------------------------------------------------------------------ data

    def _filters(self) -> tuple[str | None, str | None]:
        preset = self.query_one("#filter-preset", Select).value
        outcome = self.query_one("#filter-outcome", Select).value
        return (preset if isinstance(preset, str) else None, outcome if isinstance(outcome, str) else None)

    def reload(self) -> None:
        """Read votes and statistics from the store and redraw everything."""
        detail = self.query_one("#vote-detail", Static)
        try:
            shapes, counts = self.store.vote_shapes()
            preset, outcome = self._filters()
            votes = self.store.list_votes(preset=preset, outcome=outcome)
        except Exception as exc:  # a locked or vanished database: say so rather than show nothing
            detail.update(Text(f"Cannot read votes: {exc}", style="bold red"))
            return
        stats = summarise(shapes, counts, by=lambda r: (r.preset, stored_model(r.model)))[0]
        self._show_stats(stats)
        select = self.query_one("#filter-preset", Select)
        names = sorted({p for p, _ in stats})
        if names != self._preset_names:
            self._preset_names = names
            with select.prevent(Select.Changed):
                select.set_options([(Text(n), n) for n in names])  # Text: a str prompt is read as markup
                if preset in names:
                    select.value = preset
        self.votes = {v.id: v for v in votes if v.id is not None}  # newest first, as listed
        self._fill(votes)
        total = len(votes)
        self.query_one("#votes-count", Static).update(
            Text(plural(total, "vote") + (" (filtered)" if preset or outcome else ""), style="dim")
        )
        if votes:
            self._show(votes[self.query_one("#votes-table", DataTable).cursor_row])
        else:
            self.shown = None
            detail.update(
                Text("No votes here yet. Compare answers (tiankong compare) and vote; they show up here.", style="dim")
            )

    def _show_stats(self, stats: dict[tuple[str, str], dict[str, int]]) -> None:
        """Counts now; the leaderboards when the thread has them (at once if the votes are unchanged)."""
        newest = self.store.list_votes(limit=1)
        key = (repr(stats), newest[0].id if newest else 0)  # the same counts and newest vote: the same votes
        panel = self.query_one("#votes-stats", Static)
        if self._boards is not None and self._boards[0] == key:
            panel.update(Group(*stats_tables(stats), *self._boards[1]))
            return
        panel.update(Group(*stats_tables(stats), Text("\nWorking out the leaderboard…", style="dim")))
        self._work_out_boards(stats, key)

    @work(thread=True, exclusive=True, group="leaderboard")
    def _work_out_boards(self, stats: dict[tuple[str, str], dict[str, int]], key: tuple[str, int | None]) -> None:
        try:
            shapes, counts = self.store.vote_shapes()  # counted in SQL: no vote's text is read
            boards = leaderboards(shapes, counts=counts)
        except Exception as exc:  # a locked database: the counts above still stand
            tables: list[RenderableType] = [Text(f"\nNo leaderboard: {exc}", style="red")]
        else:
            tables = [
                standings_table(rows, title=f"Leaderboard: {kind}", paths=kind == "models")
                for kind, rows in boards.items()
                if rows
            ]
        tables = [item for t in tables for item in (Text(""), t)]
        self.app.call_from_thread(self._boards_ready, stats, key, tables)

    def _boards_ready(
        self, stats: dict[tuple[str, str], dict[str, int]], key: tuple[str, int | None], tables: list[RenderableType]
    ) -> None:
        self._boards = (key, tables)
        self.query_one("#votes-stats", Static).update(Group(*stats_tables(stats), *tables))

    def _show(self, vote: Vote) -> None:
        self.shown = vote
        self.query_one("#vote-detail", Static).update(vote_detail(vote))
        self.query_one("#vote-detail-scroll", VerticalScroll).scroll_home(animate=False)

    @on(DataTable.RowHighlighted, "#votes-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None and int(event.row_key.value) in self.votes:
            self._show(self.votes[int(event.row_key.value)])

    @on(Select.Changed)
    def _filter_changed(self, event: Select.Changed) -> None:
        self.reload()

    # ------------------------------------------------------------------ actions

    def action_close(self) -> None:
        if can_go_back(self):
            self.dismiss()

    def action_reload(self) -> None:
        self.reload()

    def action_toggle_stats(self) -> None:
        self.query_one("#votes-bottom").toggle_class("-show-stats")

    def action_delete(self) -> None:
        """`d` arms the highlighted vote, a second `d` on it deletes it (one durable transaction)."""
        vote = self.shown
        if vote is None or vote.id is None:
            return
        if self._armed != vote.id:
            self._armed = vote.id
            self.notify(f"press d again to delete vote #{vote.id}", markup=False)
            return
        self._armed = None
        try:
            deleted = self.store.delete_vote(vote.id)
        except StoreError as e:  # a locked or read-only database: the vote stays
            self.notify(str(e), title="not deleted", severity="error", markup=False)
            return
        self.notify(f"vote #{vote.id} deleted" if deleted else f"vote #{vote.id} was already gone", markup=False)
        self.reload()
