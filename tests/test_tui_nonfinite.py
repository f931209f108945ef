"""A model whose logits go NaN in the chat playground: the reason is on screen, the app stays usable."""

from __future__ import annotations

from test_nonfinite import copy_model, poison
from test_tui_chat import SIZE, answered, loaded, make_app, run, send, wait_for
from tiny_models import make_model

from tiankong.engine.engine import Engine
from tiankong.engine.events import Finished
from tiankong.engine.sampling import SamplingParams

GOOD, BAD = "Once upon a time", "def add(a, b): return a + b"


def test_a_nan_answer_is_shown_and_the_next_prompt_works(store, tmp_path):
    folder = make_model(tmp_path / "m", "llama")
    clean = Engine.load(folder, device="cpu", dtype="float32")
    params = SamplingParams(temperature=0.0, max_new_tokens=8, seed=0)
    good = clean.encode(messages=[{"role": "user", "content": GOOD}])
    good_answer = [ev for ev in clean.generate([good], [params]) if isinstance(ev, Finished)][0]
    used = set(good) | set(good_answer.token_ids) | {0}
    token = next(t for t in clean.encode(messages=[{"role": "user", "content": BAD}]) if t not in used)
    nan_folder = poison(
        copy_model(folder, tmp_path / "nan"), "model.embed_tokens.weight", lambda t: t[token].fill_(float("nan"))
    )

    async def go():
        app = make_app(nan_folder, store, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            chat = await loaded(pilot)
            chat.params = params
            await send(pilot, BAD)
            await wait_for(pilot, lambda: any("not finite" in str(n.message) for n in app._notifications))
            await wait_for(pilot, lambda: not chat.generating)
            failed = (
                str(chat.query_one("#status").render()),
                [str(n.message) for n in app._notifications],
                len(chat.messages),
            )
            await pilot.press("ctrl+n")  # a new chat: the poisoned prompt is not in its history
            await pilot.pause()
            await send(pilot, GOOD)
            answer = await answered(pilot, chat)
            return failed, answer.content, str(chat.query_one("#status").render()), app.is_running

    (status, notes, shown), content, status_after, alive = run(go())
    assert "generation failed" in status
    assert any(n.startswith("generation failed: the model's logits are not finite") and "emb" in n for n in notes), (
        notes
    )
    assert shown == 1  # the question stays, the empty failed answer is not shown
    assert alive and content == good_answer.text and "failed" not in status_after


def nan_compare(store, tmp_path, good_models: int):
    """A compare screen, open (not blind), on `good_models` tiny models (different weights) and, last,
    one whose logits are NaN from the first token: its column ends "error"."""
    from test_tui_compare import preset

    from tiankong.tui.screens.compare import CompareScreen

    folders = [make_model(tmp_path / f"good{i}", "llama", seed=i) for i in range(good_models)]
    bad = poison(
        copy_model(folders[0], tmp_path / "nan"),
        "model.layers.0.self_attn.q_proj.weight",
        lambda t: t.fill_(float("nan")),
    )
    engines = [Engine.load(f, device="cpu", dtype="float32") for f in (*folders, bad)]
    return CompareScreen(engines, [preset("deterministic", 8)], store, rater="ann", blind=False, prompt=GOOD)


def test_compare_of_two_where_one_column_fails_takes_no_vote_and_stores_no_failed_answer(store, tmp_path):
    # QA: the NaN column was stored in the vote, as an answer with finish_reason "error".
    import asyncio

    from test_tui_compare import finish
    from tui_host import Host

    screen = nan_compare(store, tmp_path, good_models=1)

    async def go():
        async with Host(screen).run_test(size=(100, 24)) as pilot:
            await finish(pilot, screen)
            shown = list(screen.round.finish), [screen._foot(c) for c in range(2)], screen.state, screen.round.error
            await pilot.press("t", "1", "enter", "0")
            await pilot.pause()
            return shown, str(screen.query_one("#vote-bar").render())

    (finished, feet, state, error), bar = asyncio.run(go())
    assert finished[0] in ("eos", "length") and finished[1] == "error"
    assert any("not finite" in line for line in feet[1])  # the foot: its line, then shorter forms
    assert state == "failed" and error.startswith("B failed part-way, so this round takes no vote (it needs two")
    assert bar.startswith("Generation failed: B failed part-way") and "r retry" in bar
    assert store.list_votes() == []


def test_compare_ranks_the_answers_that_came_and_leaves_the_failed_column_out(store, tmp_path):
    # QA: one column of three failing left the round with no vote at all.
    import asyncio

    from test_tui_compare import finish
    from tui_host import Host

    screen = nan_compare(store, tmp_path, good_models=2)

    async def go():
        async with Host(screen).run_test(size=(120, 24), notifications=True) as pilot:
            await finish(pilot, screen)
            titles = [str(col.query_one(".answer-title").render()) for col in screen.columns]
            shown = screen.state, list(screen.round.finish), titles, str(screen.query_one("#vote-bar").render())
            await pilot.press("3")  # the failed column: refused, with why
            await pilot.pause()
            refused = list(screen.picks), [str(n.message) for n in pilot.app._notifications]
            await pilot.press("2", "enter")
            await pilot.pause()
            return shown, refused, screen.round.verdict

    (state, finished, titles, bar), (picks, notes), verdict = asyncio.run(go())
    assert state == "voting" and finished[2] == "error" and finished[0] != "error" and finished[1] != "error"
    assert titles[2].startswith("C ✗ failed, not in the vote") and "failed" not in titles[0] + titles[1]
    assert bar.startswith("Rank A and B best first, then Enter (C failed: not in the vote)")
    assert any(n.startswith("C failed part-way and is left out of the vote: rank A and B.") for n in notes)
    assert picks == [] and "C failed, so it is not in the vote: rank A and B." in notes
    [vote] = store.list_votes()
    assert [r.label for r in vote.responses] == ["A", "B"]
    assert all(r.finish_reason != "error" for r in vote.responses)
    if vote.outcome == "ranked":  # (two random tiny models that wrote one text store a tie)
        assert vote.ranking == [1, 0] and verdict == "B better"
