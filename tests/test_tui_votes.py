"""The votes screen (ctrl+g) beyond browsing: deleting a vote of any session, the model shown, the table
using the terminal's width, and per-preset counts kept apart per model."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console
from screen_text import screen_lines
from textual.widgets import DataTable
from tui_host import Host

from tiankong.tui.screens.votes import VotesScreen, column_widths, stats_tables
from tiankong.tui.store import Response, Store, Vote
from tiankong.tui.store_votes import summarise


def answer(label: str, preset: str, model: str, text: str) -> Response:
    return Response(label, model, preset, {"temperature": 0.7}, 1, text, "eos")


def two_way(prompt: str, a: tuple[str, str], b: tuple[str, str], ranking: list[int] = [1, 0]) -> Vote:  # noqa: B006
    """A ranked vote of two answers, (preset, model) each."""
    return Vote(
        None,
        prompt,
        [{"role": "user", "content": prompt}],
        [answer("A", *a, "first"), answer("B", *b, "second")],
        "ranked",
        ranking,
        "me",
        True,
    )


def test_d_twice_deletes_the_highlighted_vote_of_an_earlier_session(tmp_path):
    """QA: a vote from an earlier session could never be changed or deleted (ctrl+z reaches only the
    window's own votes; the votes screen only browsed). `d` arms the highlighted vote, a second `d`
    deletes it; moving to another vote asks again. Imported votes, which undo never deletes, go too."""
    with Store(tmp_path / "earlier.db") as earlier:  # cast in another session, closed since
        ids = [earlier.add_vote(two_way(f"prompt {n}", ("balanced", "/m/a"), ("creative", "/m/a"))) for n in range(3)]
        earlier.import_votes([two_way("imported", ("balanced", "/m/a"), ("creative", "/m/a"))])
    store = Store(tmp_path / "earlier.db")
    screen = VotesScreen(store)

    async def run():
        app = Host(screen)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            imported = screen.shown.id  # newest first
            assert imported not in ids
            await pilot.press("d")
            assert len(store.list_votes()) == 4  # armed, not deleted
            await pilot.press("down", "d")  # another vote: armed afresh, nothing deleted
            assert len(store.list_votes()) == 4 and screen.shown.id == ids[2]
            await pilot.press("d")
            await pilot.pause()
            assert [v.id for v in store.list_votes()] == [imported, ids[1], ids[0]]
            assert screen.query_one(DataTable).row_count == 3
            await pilot.press("up")
            assert screen.shown.id == imported
            await pilot.press("d", "d")
            await pilot.pause()
            assert [v.id for v in store.list_votes()] == [ids[1], ids[0]]

    asyncio.run(run())
    assert store.delete_vote(ids[0]) is True and store.delete_vote(ids[0]) is False  # gone: False
    store.close()
    assert "**d** twice deletes" in VotesScreen.HELP
    assert any(b.key == "d" and b.action == "delete" for b in VotesScreen.BINDINGS)


def test_the_table_uses_the_width_and_names_the_model(tmp_path):
    """QA: at 120 columns the prompt was cut to 20 characters and the lineup to 18 while some 45 stayed
    empty, and the model showed nowhere but in the answers' panels. Now the columns fill the width, a
    model column comes from 100 columns on, and the vote's head names its model."""
    assert column_widths(80) == {"time": 11, "prompt": 20, "compared": 17, "outcome": 8, "winner": 12}
    for width in (80, 100, 120, 200):
        widths = column_widths(width)
        assert ("model" in widths) == (width >= 100)
        assert sum(widths.values()) + 2 * len(widths) + 2 == width  # cells, their padding, the scrollbar
    assert column_widths(120)["prompt"] >= 30 and column_widths(120)["compared"] >= 25
    long_prompt = "Tell me a long story about a lighthouse keeper and her cat, in the style of a fairy tale."
    store = Store(tmp_path / "t.db")
    store.add_vote(two_way(long_prompt, ("balanced", "/runs/tiankong-sft"), ("creative", "/runs/tiankong-sft")))
    screen = VotesScreen(store)

    async def run():
        app = Host(screen)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            lines = screen_lines(app)
            head = next(line for line in lines if "time" in line and "prompt" in line)
            assert "model" in head.split()
            row = next(line for line in lines if "Tell me" in line)
            assert long_prompt[:28] in row and "tiankong-sft" in row  # 20 characters before
            assert any(line.strip().startswith("Vote #1") and "tiankong-sft" in line for line in lines)
            await pilot.resize_terminal(80, 24)
            await pilot.pause()
            assert "model" not in screen.query_one(DataTable).columns  # too narrow: the head still names it

    asyncio.run(run())
    store.close()


def test_one_preset_on_two_models_is_counted_per_model():
    """QA: the per-preset counts merged one preset name across models: "balanced" on sft and on ppo,
    compared with each other, was one row of two votes with no win or loss. Kept apart, per model."""
    votes = [two_way("p", ("balanced", "/runs/sft"), ("balanced", "/runs/ppo"))] * 2
    votes.append(two_way("q", ("balanced", "/runs/sft"), ("creative", "/runs/sft"), ranking=[0, 1]))
    stats = summarise(votes, [1] * len(votes), by=lambda r: (r.preset, r.model))[0]
    assert stats[("balanced", "/runs/ppo")] == {"votes": 2, "wins": 2, "losses": 0, "ties": 0, "both_bad": 0}
    assert stats[("balanced", "/runs/sft")] == {"votes": 3, "wins": 1, "losses": 2, "ties": 0, "both_bad": 0}
    console = Console(width=80, record=True, file=io.StringIO())
    for table in stats_tables(stats):
        console.print(table)
    text = console.export_text()
    assert "Presets on ppo" in text and "Presets on sft" in text
    assert text.count("win rate = wins") == 1  # one caption, under the last table
    one_model = {("balanced", "/runs/sft"): stats[("balanced", "/runs/sft")]}
    (table,) = stats_tables(one_model)  # one model: one table, as before
    assert table.title == "Presets"


def test_per_model_tables_say_they_count_what_prefs_stats_does_not():
    """QA54: the panel's "balanced 23 votes, 5 wins, 15 losses" on tiankong-mini and `prefs stats`'s
    "balanced 23 votes, 4 wins, 12 losses" disagreed, unexplained: prefs stats counts by preset alone, so
    a pair of balanced on two models is neither a win nor a loss there. The per-model tables now say so."""
    votes = [two_way("p", ("balanced", "/runs/sft"), ("balanced", "/runs/ppo"))]
    stats = summarise(votes, [1], by=lambda r: (r.preset, r.model))[0]
    console = Console(width=300, record=True, file=io.StringIO())
    for table in stats_tables(stats):
        console.print(table)
    text = " ".join(console.export_text().split())
    assert (
        "win rate = wins ÷ (wins + losses), over ranked pairs; counted by preset and model, so a pair of one "
        "preset on two models counts here and in neither column of `tiankong prefs stats`"
    ) in text
    (one,) = stats_tables({("balanced", "/runs/sft"): stats[("balanced", "/runs/sft")]})
    assert one.caption == "win rate = wins ÷ (wins + losses), over ranked pairs"  # one model: nothing differs
