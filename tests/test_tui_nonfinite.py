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


def test_compare_shows_the_failed_column_and_the_round_can_be_voted(store, tmp_path):
    import asyncio

    from test_tui_compare import Host, finish, preset

    from tiankong.tui.screens.compare import CompareScreen

    folder = make_model(tmp_path / "good", "llama")
    bad = poison(
        copy_model(folder, tmp_path / "nan"), "model.layers.0.self_attn.q_proj.weight", lambda t: t.fill_(float("nan"))
    )
    engines = [Engine.load(f, device="cpu", dtype="float32") for f in (folder, bad)]
    screen = CompareScreen(engines, [preset("deterministic", 8)], store, rater="ann", prompt=GOOD)

    async def go():
        async with Host(screen).run_test(size=(100, 24)) as pilot:
            await finish(pilot, screen)
            finished = list(screen.round.finish)
            feet = [screen._foot(c) for c in range(2)]
            await pilot.press("t")
            await pilot.pause()
            return finished, feet

    finished, feet = asyncio.run(go())
    assert "error" in finished and finished[1 - finished.index("error")] in ("eos", "length")
    assert any("not finite" in line for foot in feet for line in foot)  # each foot: its line, then shorter forms
    [vote] = store.list_votes()
    assert sorted(r.finish_reason for r in vote.responses) == sorted(finished)
