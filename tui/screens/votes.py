"""Votes screen: browse past votes, read one in full, and see how each preset fares.

Top: filters (preset, outcome). Middle: a table of votes, newest first. Bottom: the highlighted
vote with every response, and the per-preset counts from `Store.vote_stats()` with a bar per win
rate, then the Bradley-Terry leaderboards of presets and models (tiankong.tui.leaderboard; worked out
in a thread, once per set of votes). Below `WIDE` columns the bottom shows one of the two at a time
(`s` switches).
"""

from __future__ import annotations

from datetime import datetime

from rich.bar import Bar
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

from tiankong.engine.model_names import display_name
from tiankong.tui.leaderboard import leaderboards, standings_table
from tiankong.tui.store import Store, Vote
from tiankong.tui.widgets.status import plural

WIDE = 120  # from this many columns on, vote detail and statistics sit side by side
OUTCOMES = [("ranked", "ranked"), ("tie", "tie"), ("both bad", "both_bad")]
ORDINALS = ["1st", "2nd", "3rd", "4th"]


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


def stats_table(stats: dict[str, dict[str, int]]) -> RenderableType:
    if not stats:
        return Text("No votes yet.", style="dim")
    table = Table(
        box=None,
        padding=(0, 1),
        expand=False,
        title="Presets",
        title_justify="left",
        title_style="bold",
        caption="win rate = wins ÷ (wins + losses), over ranked pairs",
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


def vote_detail(vote: Vote) -> RenderableType:
    """Everything about one vote: who, when, the context, each response (best first when ranked)."""
    head = Text.assemble(
        (f"Vote #{vote.id}", "bold"),
        f" · {local_time(vote.created_at)} · rater {vote.rater} · ",
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
    ]

    HELP = """\
## Votes

Every vote you cast in the compare screen, newest first.
**Up/Down** choose a vote; its prompt and every response show below.
Filter by preset or outcome with the menus at the top (**Tab** to reach them).
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
        table = self.query_one("#votes-table", DataTable)
        # Widths that fit 80 columns; the detail below shows everything in full.
        table.add_column("time", key="time")
        table.add_column("prompt", key="prompt", width=20)
        table.add_column("compared", key="compared", width=18)
        table.add_column("outcome", key="outcome", width=8)
        table.add_column("winner", key="winner", width=12)
        self._relayout()
        self.reload()
        table.focus()

    def on_screen_resume(self) -> None:
        self.reload()  # votes may have been cast since the screen was last shown

    def on_resize(self, event: events.Resize) -> None:
        self._relayout()

    def _relayout(self) -> None:
        self.query_one("#votes-bottom").set_class(self.size.width < WIDE, "-narrow")

    # ------------------------------------------------------------------ data

    def _filters(self) -> tuple[str | None, str | None]:
        preset = self.query_one("#filter-preset", Select).value
        outcome = self.query_one("#filter-outcome", Select).value
        return (preset if isinstance(preset, str) else None, outcome if isinstance(outcome, str) else None)

    def reload(self) -> None:
        """Read votes and statistics from the store and redraw everything."""
        detail = self.query_one("#vote-detail", Static)
        try:
            stats = self.store.vote_stats()
            preset, outcome = self._filters()
            votes = self.store.list_votes(preset=preset, outcome=outcome)
        except Exception as exc:  # a locked or vanished database: say so rather than show nothing
            detail.update(Text(f"Cannot read votes: {exc}", style="bold red"))
            return
        self._show_stats(stats)
        select = self.query_one("#filter-preset", Select)
        names = sorted(stats)
        if names != self._preset_names:
            self._preset_names = names
            with select.prevent(Select.Changed):
                select.set_options([(Text(n), n) for n in names])  # Text: a str prompt is read as markup
                if preset in names:
                    select.value = preset
        self.votes = {v.id: v for v in votes if v.id is not None}
        table = self.query_one("#votes-table", DataTable)
        keep = table.cursor_row
        table.clear()
        for v in votes:
            table.add_row(
                Text(local_time(v.created_at, short=True)),  # Text: a str cell is read as markup
                Text(excerpt(v.prompt, 60)),
                Text(excerpt(compared(v), 40)),
                Text(v.outcome.replace("_", " ")),
                Text(winner(v)),
                key=str(v.id),
            )
        total = len(votes)
        self.query_one("#votes-count", Static).update(
            Text(plural(total, "vote") + (" (filtered)" if preset or outcome else ""), style="dim")
        )
        if votes:
            table.move_cursor(row=min(keep, len(votes) - 1))
            self._show(votes[min(keep, len(votes) - 1)])
        else:
            self.shown = None
            detail.update(
                Text("No votes here yet. Compare answers (tiankong compare) and vote; they show up here.", style="dim")
            )

    def _show_stats(self, stats: dict[str, dict[str, int]]) -> None:
        """Counts now; the leaderboards when the thread has them (at once if the votes are unchanged)."""
        newest = self.store.list_votes(limit=1)
        key = (repr(stats), newest[0].id if newest else 0)  # the same counts and newest vote: the same votes
        panel = self.query_one("#votes-stats", Static)
        if self._boards is not None and self._boards[0] == key:
            panel.update(Group(stats_table(stats), *self._boards[1]))
            return
        panel.update(Group(stats_table(stats), Text("\nWorking out the leaderboard…", style="dim")))
        self._work_out_boards(stats, key)

    @work(thread=True, exclusive=True, group="leaderboard")
    def _work_out_boards(self, stats: dict[str, dict[str, int]], key: tuple[str, int | None]) -> None:
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
        self, stats: dict[str, dict[str, int]], key: tuple[str, int | None], tables: list[RenderableType]
    ) -> None:
        self._boards = (key, tables)
        self.query_one("#votes-stats", Static).update(Group(stats_table(stats), *tables))

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
