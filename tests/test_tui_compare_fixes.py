"""Fixes from a QA pass on the compare and rank screen: one answer twice is no preference, an unvoted
round is not dropped by an esc meant to stop it, ctrl+b compares the chat's edited preset, t and 0
do not throw away the numbers pressed, an edited prompt file keeps its voted rounds, whole answers
open at their top, the keys and lines fit what is on screen, and blind columns hold back what would
name their model. On answers files (no model), the tiny random Llama and stories260K."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from screen_text import screen_lines
from test_arena import settle
from test_tui_chat import answered, chat_app, loaded, make_app, send, wait_for
from textual.widgets import Input, Static
from tiny_models import STORIES, make_model
from tui_host import Host

from tiankong.engine.engine import Engine
from tiankong.presets import get_preset
from tiankong.tui.queue import answers_queue, prompt_queue
from tiankong.tui.screens.compare import CompareScreen
from tiankong.tui.screens.help import INTRO, HelpScreen
from tiankong.tui.widgets.streaming_text import StreamingText

SUN = "The sun is a star."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Engine:
    return Engine.load(make_model(tmp_path_factory.mktemp("tiny"), "llama"), device="cpu", dtype="float32")


def answers_file(path, rounds: list[tuple[str, list[str]]], **fields) -> object:
    """An answers file as `tiankong generate --n K` writes it: per prompt, its answers (seeds 10, 11, ...)."""
    lines = [
        {"prompt": prompt, "preset": "balanced", "seed": 10 + i, "text": text, "finish_reason": "eos", **fields}
        for prompt, texts in rounds
        for i, text in enumerate(texts)
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def rank_screen(store, path, blind: bool = False) -> CompareScreen:
    return CompareScreen([], [], store, "ann", blind=blind, queue=answers_queue(path))


def bar(screen: CompareScreen) -> str:
    return str(screen.query_one("#vote-bar", Static).content)


def notes(pilot) -> list[str]:
    return [str(n.message) for n in pilot.app._notifications]


def short(name: str, n: int = 4, **params):
    p = get_preset(name)
    return dataclasses.replace(p, params=p.params.replace(max_new_tokens=n, **params))


# ---------------------------------------------------------------- one answer twice is no preference


def test_two_identical_answers_are_stored_as_a_tie_never_as_a_preference(tmp_path, store):
    # QA: "1 Enter" on two columns of the same text stored "A better"; the export then had chosen == rejected.
    screen = rank_screen(store, answers_file(tmp_path / "a.jsonl", [("What is the sun?", [SUN, SUN])]))

    async def run():
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            shown = bar(screen)
            await pilot.press("1", "enter")
            return shown, bar(screen)  # the queue's last vote: said on the bar (no notice over the round)

    shown, said = asyncio.run(run())
    assert "every answer is the same text" in shown
    [vote] = store.list_votes()
    assert (vote.outcome, vote.ranking, [r.text for r in vote.responses]) == ("tie", [], [SUN, SUN])
    assert vote.pairs() == []
    assert "tie (A and B: the same text)" in said


@pytest.mark.skipif(not STORIES.parent.parent.exists(), reason="../shared is absent")
def test_a_compare_whose_columns_say_the_same_stores_a_tie(store):
    # The QA repro, generated: creative's seed 2 writes what deterministic does on this prompt.
    engine = Engine.load(STORIES, device="cpu", dtype="float32")
    presets = [short("deterministic", 16), short("creative", 16, seed=2)]
    screen = CompareScreen([engine], presets, store, "ann", prompt="Once upon a time")

    async def run():
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await settle(pilot, screen)
            assert screen.round.texts[0] == screen.round.texts[1]
            await pilot.press("2", "enter")

    asyncio.run(run())
    [vote] = store.list_votes()
    assert vote.outcome == "tie" and vote.pairs() == []


def test_columns_of_one_text_share_a_rank_and_are_stored_once(tmp_path, store):
    # Three answers, A and C the same text: pressing A ranks C with it; C is not stored beside A.
    rounds = [("q", [SUN, "A moon.", SUN]), ("r", ["x", "x", "y", "z"]), ("s", [SUN, "A moon.", "A moon."])]
    path = answers_file(tmp_path / "a.jsonl", rounds)
    screen = rank_screen(store, path)

    async def run():
        async with Host(screen).run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            before = bar(screen)
            await pilot.press("1", "3")  # 3 is A's text again: it already has A's rank
            pressed, picks = bar(screen), list(screen.picks)
            await pilot.press("enter")
            await pilot.pause()
            await pilot.press("3", "enter")  # round 2: C > {A, B, D}, A and B the same text, unranked together
            await pilot.pause()
            await pilot.press("1", "2", "enter")  # round 3: A > B = C, the bottom: stored A > {B, C}
            return before, pressed, picks, notes(pilot)

    before, pressed, picks, said = asyncio.run(run())
    assert "A = C (same text)" in before
    assert "A = C > B" in pressed and picks == [0]
    assert any("C is the same text as A, so it shares A's rank" in n for n in said)
    third, second, first = store.list_votes()
    assert [r.label for r in first.responses] == ["A", "B"] and first.ranking == [0, 1]
    assert [(first.responses[i].text, first.responses[j].text) for i, j in first.pairs()] == [(SUN, "A moon.")]
    assert len(second.responses) == 4 and (second.ranking, second.n_ranked) == ([2, 0, 1, 3], 1)
    assert all(second.responses[i].text != second.responses[j].text for i, j in second.pairs())
    assert len(third.responses) == 3 and (third.ranking, third.n_ranked) == ([0, 1, 2], 1)
    assert third.pairs() == [(0, 1), (0, 2)]


# ---------------------------------------------------------------- keys that threw a round or numbers away


def test_an_esc_meant_to_stop_does_not_let_enter_drop_the_unvoted_round(tiny, store):
    # QA: esc as the answers finished went to the prompt box; "1" then Enter ran the prompt "1".
    presets = [short("balanced"), short("creative")]
    screen = CompareScreen([tiny], presets, store, "ann", standalone=True)

    async def run():
        async with Host(screen).run_test(size=(120, 30)) as pilot:
            await pilot.press(*"Tell me a story.", "enter")
            await settle(pilot, screen)
            first = screen.round.number
            await pilot.press("escape")  # meant to stop: the round had just finished
            typing = bar(screen)
            screen.query_one("#prompt-input", Input).value = ""
            await pilot.press("1", "enter")
            kept = (screen.round.number, screen.state)
            await pilot.press("escape")  # back to the answers
            voting = bar(screen)
            await pilot.press("2", "enter")
            voted = screen.state
            await pilot.press("n", *"again", "enter")  # a voted round: no question asked
            await settle(pilot, screen)
            return first, typing, kept, voting, voted, screen.round.prompt, notes(pilot)

    first, typing, kept, voting, voted, prompt, said = asyncio.run(run())
    assert "Typing a new prompt" in typing and "Esc goes back to vote" in typing
    assert kept == (first, "voting") and any("This round has no vote yet" in n for n in said)
    assert voting.startswith("Vote:") and voted == "voted" and prompt == "again"
    [vote] = store.list_votes()
    assert vote.prompt == "Tell me a story."


def test_enter_twice_in_the_prompt_box_leaves_the_round_unvoted_on_purpose(tiny, store):
    screen = CompareScreen([tiny], [short("balanced"), short("creative")], store, "ann", standalone=True)

    async def run():
        async with Host(screen).run_test(size=(120, 30)) as pilot:
            await pilot.press(*"one", "enter")
            await settle(pilot, screen)
            await pilot.press("escape")
            screen.query_one("#prompt-input", Input).value = "two"
            await pilot.press("enter", "enter")
            await settle(pilot, screen)
            return screen.round.prompt

    assert asyncio.run(run()) == "two"
    assert store.list_votes() == []


def test_t_and_0_after_column_numbers_keep_the_numbers_and_say_why(tmp_path, store):
    # QA: "2" then "t" stored a tie and silently dropped the B pressed.
    screen = rank_screen(store, answers_file(tmp_path / "a.jsonl", [("q", ["one", "two"])]))

    async def run():
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("2", "t", "0")
            after = (list(screen.picks), list(store.list_votes()))
            await pilot.press("enter")
            return after, notes(pilot)

    (picks, votes), said = asyncio.run(run())
    assert picks == [1] and votes == []
    assert any("You pressed B: Enter saves that ranking" in n for n in said)
    [vote] = store.list_votes()
    assert (vote.outcome, vote.ranking) == ("ranked", [1, 0])


def test_b_while_voting_sets_blind_mode_for_the_next_round(tmp_path, store):
    # QA: b did nothing while a round waited for its vote; f1 says it sets the next prompt's mode.
    screen = rank_screen(store, answers_file(tmp_path / "a.jsonl", [("q", ["one", "two"]), ("r", ["3", "4"])]))

    async def run():
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("b")
            now = (screen.blind, screen.round.blind)
            await pilot.press("1", "enter")
            await pilot.pause()
            return now, screen.round.blind, notes(pilot)

    (blind, this_round), next_round, said = asyncio.run(run())
    assert blind is True and this_round is False and next_round is True
    assert any("Blind mode on from the next round (this round stays as it is)" in n for n in said)


# ---------------------------------------------------------------- ctrl+b from the chat


def test_ctrl_b_compares_the_preset_as_edited_in_the_chat(tmp_path, store):
    # QA: the status said "balanced (edited) T 1"; the compare and its vote used stock balanced.
    model = make_model(tmp_path / "tiny-llama", "llama")

    async def go():
        async with chat_app(model, store, tmp_path, max_new_tokens=4, temperature=1.0) as (app, pilot, chat):
            await send(pilot, "which is better?")
            await answered(pilot, chat)
            await pilot.press("ctrl+b")
            await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
            screen = app.screen
            await settle(pilot, screen)
            await pilot.press("1", "enter")
            return {e.preset.name: e.preset.params for e in screen.entrants}, chat.params

    presets, edited = asyncio.run(go())
    assert presets["balanced (edited)"] == edited and edited.temperature == 1.0
    assert set(presets) == {"balanced (edited)", "chat"}
    [vote] = store.list_votes()
    mine = next(r for r in vote.responses if r.preset == "balanced (edited)")
    assert mine.params["temperature"] == 1.0 and mine.params["max_new_tokens"] == 4


# ---------------------------------------------------------------- queues


def test_a_prompt_added_to_a_prompt_file_is_the_one_round_left(tmp_path, store, tiny):
    # QA: adding a prompt to a --prompts file started it over at "1 / 5" after 4 had been voted.
    path = tmp_path / "p.txt"
    path.write_text("P one\nP two\n")
    presets = [short("balanced"), short("creative")]

    async def session(vote: bool):
        screen = CompareScreen([tiny], presets, store, "ann", queue=prompt_queue(path))
        async with Host(screen).run_test(size=(120, 30)) as pilot:
            await settle(pilot, screen)
            if vote:
                for _ in range(2):
                    await pilot.press("t")
                    await pilot.pause()
                    await settle(pilot, screen) if screen.queue_active else await pilot.pause()
            return screen.position, screen.round.prompt if screen.round else None, notes(pilot)

    asyncio.run(session(vote=True))
    path.write_text("P one\nP two\nP three\n")
    position, prompt, said = asyncio.run(session(vote=False))
    assert (position, prompt) == (2, "P three")
    assert any("2 rounds passed over" in n for n in said)
    # Another rater's votes are not this rater's rounds.
    other = CompareScreen([tiny], presets, store, "bob", queue=prompt_queue(path))

    async def bob():
        async with Host(other).run_test(size=(120, 30)) as pilot:
            await settle(pilot, other)
            return other.position

    assert asyncio.run(bob()) == 0


def test_rank_says_how_many_prompts_it_left_out_and_a_done_queue_says_so(tmp_path, store):
    # QA: prompts with a single answer were left out silently; the last vote left "4 / 4" over the
    # first prompt, and a done queue reopened showed an empty "Prompt:" and offered a ctrl+z with nothing to undo.
    path = answers_file(tmp_path / "a.jsonl", [("p0", ["a", "b"]), ("lonely", ["c"])])

    async def first():
        screen = rank_screen(store, path)
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            said = notes(pilot)
            await pilot.press("1", "enter")
            await pilot.pause()
            head = str(screen.query_one("#compare-head", Static).content)
            return said, head, str(screen.query_one("#queue-prompt", Static).content), bar(screen)

    said, head, prompt, done = asyncio.run(first())
    assert any("1 prompt of" in n and "with a single answer was left out" in n for n in said)
    assert head.startswith("all 1 done") and prompt.startswith("Last round's prompt: p0")
    assert "All 1 rounds done" in done and "ctrl+z undo" in done

    async def again():
        screen = rank_screen(store, path)
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            return screen.query_one("#queue-prompt").display, bar(screen)

    shown, done = asyncio.run(again())
    assert shown is False and "ctrl+z" not in done


# ---------------------------------------------------------------- what the screen shows


LONG = "\n".join(f"line {i} of a long answer" for i in range(60))


def test_whole_answers_open_at_their_top_in_rank_after_undo_and_once_generated(tmp_path, store, tiny):
    # QA: rank, finished columns and ctrl+z showed a long answer scrolled to its end.
    path = answers_file(tmp_path / "a.jsonl", [("p0", [LONG, LONG + " too"]), ("p1", [LONG, "short"])])
    screen = rank_screen(store, path)

    def tops() -> list[float]:
        bodies = [c.query_one(StreamingText) for c in screen.columns]
        assert all(b.max_scroll_y > 0 for b in bodies[:1])
        return [b.scroll_y for b in bodies]

    async def run():
        async with Host(screen).run_test(size=(80, 20)) as pilot:
            await pilot.pause()
            opened = tops()
            await pilot.press("1", "enter")
            await pilot.pause()
            await pilot.press("ctrl+z")
            await pilot.pause()
            return opened, tops(), "line 0 of" in "\n".join(screen_lines(pilot.app))

    opened, undone, first_line = asyncio.run(run())
    assert opened == [0, 0] and undone == [0, 0] and first_line

    # Seeds whose answers run to their max tokens (another may end at once, and fit the view)
    presets = [short("balanced", 200, seed=1), short("creative", 200, seed=2)]
    generated = CompareScreen([tiny], presets, store, "ann", prompt="hi")

    async def run_generated():
        async with Host(generated).run_test(size=(60, 12)) as pilot:  # two lines of answer in view
            await settle(pilot, generated)
            bodies = [c.query_one(StreamingText) for c in generated.columns]
            return [(b.scroll_y, b.max_scroll_y) for b in bodies]

    for scroll_y, max_y in asyncio.run(run_generated()):
        assert scroll_y == 0 and max_y > 0


def test_blind_columns_hold_back_what_names_their_model_until_the_vote(tmp_path, store):
    # QA: "context full · 502 tokens" gave away the model with the 512-token context before the vote.
    path = tmp_path / "a.jsonl"
    rows = [
        {
            "prompt": "q",
            "model": "small",
            "text": "cut",
            "finish_reason": "context",
            "usage": {"completion_tokens": 502},
        },
        {"prompt": "q", "model": "big", "text": "whole", "finish_reason": "eos", "usage": {"completion_tokens": 9}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    screen = rank_screen(store, path, blind=True)

    def feet() -> dict[str, str]:
        cols = screen.columns
        return {screen.round.texts[c]: str(col._foot.content) for c, col in enumerate(cols)}

    async def run():
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            before = feet()
            await pilot.press("t")
            await pilot.pause()
            return before, feet()

    before, after = asyncio.run(run())
    assert before == {"cut": "cut off", "whole": "finished"}
    assert after["cut"].startswith("context full · 502 tokens") and after["whole"].startswith("end of text · 9 tokens")


def test_at_80_columns_the_seed_and_the_vote_line_stay_whole(tmp_path, store):
    # QA: at 80x24 the foot cut the seed ("seed 122…") and the line after a vote wrapped its last key.
    seed = 1223456789
    path = tmp_path / "a.jsonl"
    rows = [
        {
            "prompt": "q",
            "text": t,
            "preset": t,
            "seed": seed + i,
            "finish_reason": "length",
            "usage": {"completion_tokens": 48},
        }
        for i, t in enumerate(["balanced", "creative"])
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    screen = rank_screen(store, path)

    async def run():
        async with Host(screen).run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            before = bar(screen)
            await pilot.press("1", "enter")
            await pilot.pause(0.2)
            return before, "\n".join(screen_lines(pilot.app)), screen.query_one("#vote-bar").size.height

    before, shown, height = asyncio.run(run())
    assert before.startswith("Vote: 1 Enter = A better")
    assert f"seed {seed} " in shown and f"seed {seed + 1} " in shown  # drawn whole, not "seed 122…"
    assert height == 1


def test_the_footer_names_the_keys_there_are_and_f1_talks_about_compare(tmp_path, store):
    screen = rank_screen(store, answers_file(tmp_path / "a.jsonl", [("q", ["a", "b", "c"])]))

    async def run():
        async with Host(screen).run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            return screen_lines(pilot.app)[-1], dict(screen.help_sections()[0][1])

    footer, keys = asyncio.run(run())
    assert "1-3 rank" in footer and "1-4" not in footer
    intro = screen.help_intro()
    assert "candidates panel" not in intro and "column numbers best first" in intro
    assert "1-3" in keys and "1-4" not in keys and "1-2" not in keys
    assert HelpScreen([], intro).intro == intro and HelpScreen([]).intro == INTRO


def test_the_chat_footer_shows_ctrl_b_compare(tmp_path, store):
    model = make_model(tmp_path / "tiny-llama", "llama")

    async def go(width: int):
        app = make_app(model, store, tmp_path)
        async with app.run_test(size=(width, 32)) as pilot:
            await loaded(pilot)
            await pilot.pause()
            return screen_lines(app)[-1]

    assert "^b compare" in asyncio.run(go(120))
    assert "^b compare" not in asyncio.run(go(80))  # where there is no room, it goes before the main keys


def test_the_revealed_column_titles_stay_readable_right_after_a_vote(tiny, store):
    # QA: at 120x40 the "Saved" notice (top right, as the app docks notices) covered column B's title
    # the moment the vote revealed it ("A · creative   ▌ Saved"); the vote bar says the vote was saved.
    from pathlib import Path

    import tiankong.tui.app

    class AppHost(Host):  # with the app's own styles: where its notices go
        CSS_PATH = Path(tiankong.tui.app.__file__).with_name("app.tcss")

    # seeded: with random seeds the two 4-token answers were now and then the same text, a tie
    presets = [short("balanced", seed=1), short("creative", seed=2)]
    screen = CompareScreen([tiny], presets, store, "ann", standalone=True)

    async def run():
        async with AppHost(screen).run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.press(*"Tell me a story.", "enter")
            await settle(pilot, screen)
            await pilot.press("1", "enter")
            await pilot.pause(0.3)
            names = [screen._column_name(c) for c in range(2)]
            return names, screen_lines(pilot.app), bar(screen)

    names, lines, voted = asyncio.run(run())
    assert voted.startswith("✓ Vote #1 saved: A better")
    [titles] = [line for line in lines if f"A · {names[0]}" in line]
    assert f"B · {names[1]}" in titles
