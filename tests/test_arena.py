"""Labelling at arena speed: partial rankings stored and exported as expressed, prompt queues that
resume where they stopped, and `tiankong rank` on the real output of `tiankong generate`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest
from helpers import cli, imports_torch
from textual.widgets import Static
from tiny_models import make_model
from tui_host import Host

from tiankong.engine.engine import Engine
from tiankong.engine.errors import InputError
from tiankong.engine.model_names import model_key
from tiankong.models import default_model_dir
from tiankong.presets import get_preset
from tiankong.tui.prefs import export_records, ranking_records, vote_pairs
from tiankong.tui.queue import answers_queue, prompt_id, prompt_queue
from tiankong.tui.screens.compare import CompareScreen
from tiankong.tui.store import Response, Store, Vote


async def settle(pilot, screen: CompareScreen, timeout: float = 60) -> None:
    """Until the current round has finished generating."""
    deadline = time.monotonic() + timeout
    await pilot.pause()
    while screen.round is None or screen.state == "generating":
        assert time.monotonic() < deadline, "generation did not finish"
        await pilot.pause(0.05)
    await pilot.pause()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Engine:
    return Engine.load(make_model(tmp_path_factory.mktemp("tiny"), "llama"), device="cpu", dtype="float32")


def short(name: str):
    p = get_preset(name)
    # creative hotter than its own: four tokens of two presets drawn with random seeds must not
    # come out the same, or a vote on them is stored as a tie (identical answers are no preference)
    hot = {"temperature": 1.8} if name == "creative" else {}
    return dataclasses.replace(p, params=p.params.replace(max_new_tokens=4, **hot))


def answers_file(path, n_prompts=1, k=4):
    """An answers file as generate writes it: k samples per prompt, seeds 10, 11, ..."""
    lines = [
        {
            "prompt": f"prompt {p}",
            "preset": "balanced",
            "params": {"temperature": 0.7, "seed": 10 + i},
            "seed": 10 + i,
            "text": f"answer {p}.{i}",
            "finish_reason": "eos",
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }
        for p in range(n_prompts)
        for i in range(k)
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


# ---------------------------------------------------------------- partial rankings


def test_partial_ranking_exports_exactly_the_expressed_pairs(store):
    # `3 1 enter` on four answers: C > A, and C, A > {B, D}; nothing about B against D.
    rs = [Response(label, "m", "balanced", {}, 1, f"text {label}", "eos") for label in "ABCD"]
    v = Vote(None, "q", [{"role": "user", "content": "q"}], rs, "ranked", [2, 0, 1, 3], "me", True, n_ranked=2)
    v.id = store.add_vote(v)
    [stored] = store.list_votes()
    assert stored.n_ranked == 2 and stored.tiers() == [[2], [0], [1, 3]]
    pairs = [(r["chosen"], r["rejected"]) for r in export_records(store)]
    assert sorted(pairs) == sorted(
        [("text C", "text A"), ("text C", "text B"), ("text C", "text D"), ("text A", "text B"), ("text A", "text D")]
    )
    assert [(r["chosen"], r["rejected"]) for r in vote_pairs(stored)] == pairs
    [raw] = ranking_records(store)
    assert raw["ranking"] == [[2], [0], [1, 3]] and raw["outcome"] == "ranked" and raw["vote_id"] == v.id
    # A full ranking still gives all six pairs.
    full = Vote(None, "q", [], rs, "ranked", [2, 0, 1, 3], "me", True)
    assert len(vote_pairs(full)) == 6


def test_pressing_3_1_enter_on_four_answers_stores_a_partial_ranking(tmp_path, store):
    queue = answers_queue(answers_file(tmp_path / "a.jsonl", k=4))
    screen = CompareScreen([], [], store, "ann", blind=False, queue=queue)

    async def run():
        async with Host(screen).run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            assert screen.state == "voting" and len(screen.columns) == 4
            await pilot.press("3", "1")
            assert "C > A > {B, D}" in str(screen.query_one("#vote-bar", Static).content)
            await pilot.press("enter")

    asyncio.run(run())
    [vote] = store.list_votes()
    assert (vote.ranking, vote.n_ranked) == ([2, 0, 1, 3], 2)
    texts = [(r["chosen"], r["rejected"]) for r in export_records(store)]
    assert ("answer 0.1", "answer 0.3") not in texts and ("answer 0.3", "answer 0.1") not in texts
    assert len(texts) == 5
    assert store.vote_stats() == {"balanced": {"votes": 1, "wins": 0, "losses": 0, "ties": 0, "both_bad": 0}}


# ---------------------------------------------------------------- prompt queues


def test_prompt_queue_resumes_at_the_right_prompt(tmp_path, store, tiny):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        'Tell me a story.\n{"prompt": "Name a colour.", "id": "colour"}\n'
        '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}\n'
    )
    queue = prompt_queue(path, repeat=2)  # read from the file, as `tiankong compare --prompts` does
    assert [i.prompt_id for i in queue.items][1] == "colour"
    assert queue.items[2].conversation[0] == {"role": "system", "content": "Be brief."}
    assert queue.total == 6
    presets = [short("balanced"), short("creative")]

    async def first_session():
        screen = CompareScreen([tiny], presets, store, "ann", queue=queue)
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await settle(pilot, screen)
            head = str(screen.query_one("#compare-head", Static).content)
            assert head.startswith("1 / 6 round 1/2")
            assert "Tell me a story." in str(screen.query_one("#queue-prompt", Static).content)
            seeds = [a.seed for a in screen.round.answers]
            await pilot.press("1", "enter")  # round 1: voted, the next starts by itself
            await settle(pilot, screen)
            assert screen.round.prompt == "Tell me a story." and screen.position == 1
            assert {a.seed for a in screen.round.answers}.isdisjoint(seeds)  # the repeat draws new seeds
            await pilot.press("t")  # round 2: a tie
            await settle(pilot, screen)
            assert screen.round.prompt == "Name a colour."
            await pilot.press("s")  # round 3: skipped, no vote
            await settle(pilot, screen)
            assert screen.position == 3 and "4 / 6" in str(screen.query_one("#compare-head", Static).content)
        # the app quits here, in the middle of round 4

    asyncio.run(first_session())
    votes = store.list_votes()
    # round 1's "1 enter" ranks A over B, unless the random tiny model wrote the same text twice
    # (both ended at once, say): identical answers are stored as a tie (test_tui_compare_fixes)
    same = len({r.text for r in votes[1].responses}) == 1
    outcomes = ["tie", "tie" if same else "ranked"]
    assert [v.outcome for v in votes] == outcomes
    assert {v.prompt_id for v in votes} == {prompt_id([{"role": "user", "content": "Tell me a story."}])}
    key = CompareScreen([tiny], presets, store, "ann", queue=queue).queue_key  # this lineup's and rater's
    assert store.queue_position(key) == 3 and store.queue_rounds(key) == {0, 1, 2}

    async def second_session():
        screen = CompareScreen([tiny], presets, store, "ann", queue=prompt_queue(path, repeat=2))
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await settle(pilot, screen)
            assert screen.position == 3 and screen.round.prompt == "Name a colour."  # round 4 = colour, again
            assert str(screen.query_one("#compare-head", Static).content).startswith("4 / 6 round 2/2")
            await pilot.press("2", "enter")
            await settle(pilot, screen)
            assert screen.round.conversation == [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ]
            await pilot.press("ctrl+z")  # undo: back to round 4, its answers as they were
            await pilot.pause()
            assert screen.position == 3 and screen.round.prompt == "Name a colour." and screen.state == "voting"

    asyncio.run(second_session())
    assert [v.outcome for v in store.list_votes()] == outcomes  # round 4's vote undone
    assert store.queue_position(key) == 3


FOUR = ["Tell me a story about a cat.", "Tell me a story about a dog.", "Tell me a story about a bird.", "fish?"]


def four_prompts(tmp_path):
    path = tmp_path / "four.txt"
    path.write_text("".join(p + "\n" for p in FOUR))
    return prompt_queue(path)


def test_ctrl_z_undoes_this_windows_vote_never_another_raters(tmp_path, store, tiny):
    # QA: alice voted, bob voted in another window on the same data folder, alice's ctrl+z removed bob's vote.
    presets = [short("balanced"), short("creative")]
    alice = CompareScreen([tiny], presets, store, "alice", queue=four_prompts(tmp_path))
    bob = CompareScreen([tiny], presets, store, "bob", queue=four_prompts(tmp_path))

    async def run():
        async with Host(alice).run_test(size=(100, 30)) as pilot:
            await settle(pilot, alice)
            await pilot.press("1", "enter")  # alice: round 1
            await settle(pilot, alice)
            await pilot.app.push_screen(bob)  # bob's window, on the same store
            await settle(pilot, bob)
            await pilot.press("2", "enter")  # bob: his round 1, the newest vote in the database
            await settle(pilot, bob)
            pilot.app.pop_screen()
            await pilot.pause()
            assert [v.rater for v in store.list_votes()] == ["bob", "alice"]
            await pilot.press("ctrl+z")
            await pilot.pause()
            assert [v.rater for v in store.list_votes()] == ["bob"]  # alice's own vote went, bob's stayed
            assert alice.position == 0 and alice.round.prompt == FOUR[0] and alice.state == "voting"
            await pilot.press("ctrl+z")  # nothing of alice's left to undo: bob's vote is never touched
            await pilot.pause()
            assert [v.rater for v in store.list_votes()] == ["bob"]

    asyncio.run(run())


def test_each_undo_goes_back_to_the_round_of_the_vote_it_removed(tmp_path, store, tiny):
    # QA: a second ctrl+z removed round 1's vote but stayed on round 2, and round 1 was never asked again.
    presets = [short("balanced"), short("creative")]
    screen = CompareScreen([tiny], presets, store, "ann", queue=four_prompts(tmp_path))

    async def run():
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await settle(pilot, screen)
            await pilot.press("1", "enter")  # round 1
            await settle(pilot, screen)
            await pilot.press("s")  # round 2 skipped
            await settle(pilot, screen)
            await pilot.press("2", "enter")  # round 3
            await settle(pilot, screen)
            assert screen.position == 3 and len(store.list_votes()) == 2
            await pilot.press("ctrl+z")
            await pilot.pause()
            assert (screen.position, screen.round.prompt, screen.state) == (2, FOUR[2], "voting")
            assert "3 / 4" in str(screen.query_one("#compare-head", Static).content)
            await pilot.press("ctrl+z")  # round 1's vote: back to round 1, not left on round 3
            await pilot.pause()
            assert (screen.position, screen.round.prompt, screen.state) == (0, FOUR[0], "voting")
            assert store.list_votes() == [] and store.queue_rounds(screen.queue_key) == {1}
            await pilot.press("2", "enter")  # round 1 again; round 2 stays skipped, round 3 comes back
            await settle(pilot, screen)
            assert (screen.position, screen.round.prompt) == (2, FOUR[2])

    asyncio.run(run())
    assert store.queue_position(screen.queue_key) == 2  # reopens at round 3: no round left unlabelled
    assert [v.prompt for v in store.list_votes()] == [FOUR[0]]


def test_queue_progress_is_per_lineup_and_rater_and_never_moves_back(tmp_path, store, tiny):
    # QA: (b) two windows on one file: the last to save set the position back; (a) another preset pair
    # and rater were told the file was done, and their --restart reset the first lineup too.
    presets = [short("balanced"), short("creative")]
    early = CompareScreen([tiny], presets, store, "ann", queue=four_prompts(tmp_path))  # opened first, at round 1
    late = CompareScreen([tiny], presets, store, "ann", queue=four_prompts(tmp_path))

    async def two_windows():
        async with Host(early).run_test(size=(100, 30)) as pilot:
            await settle(pilot, early)
            await pilot.app.push_screen(late)
            await settle(pilot, late)
            assert late.position == 1  # round 0 is the first window's
            await pilot.press("1", "enter")  # the other window: rounds 1 and 2
            await settle(pilot, late)
            await pilot.press("1", "enter")
            await settle(pilot, late)
            assert late.position == 3
            pilot.app.pop_screen()  # that window closes
            await settle(pilot, early)
            assert early.position == 0  # its own round, which no other window took
            await pilot.press("2", "enter")
            await settle(pilot, early)
            assert early.position == 3 and early.round.prompt == FOUR[3]  # rounds 1 and 2 are done: passed over

    asyncio.run(two_windows())
    assert sorted(v.prompt for v in store.list_votes()) == sorted(FOUR[:3])  # every vote stored, each round once
    assert store.queue_position(early.queue_key) == 3  # not set back by the window that saved last
    others = [short("precise"), short("chat")]
    carol = CompareScreen([tiny], others, store, "carol", queue=four_prompts(tmp_path))
    dave = CompareScreen([tiny], presets, store, "dave", queue=four_prompts(tmp_path))
    restart = CompareScreen([tiny], others, store, "carol", queue=four_prompts(tmp_path), restart=True)

    async def other(screen):
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await settle(pilot, screen)
            return screen.position, screen.round.prompt

    assert asyncio.run(other(carol)) == (0, FOUR[0])  # another lineup and rater: from the start
    assert asyncio.run(other(dave)) == (0, FOUR[0])  # the same lineup, another rater: too
    assert asyncio.run(other(restart)) == (0, FOUR[0])
    assert store.queue_position(early.queue_key) == 3  # carol's --restart left ann's progress alone
    assert len({early.queue_key, carol.queue_key, dave.queue_key}) == 3


def test_esc_never_leaves_a_queue_for_the_chat(tmp_path, store, tiny):
    # QA: esc in `tiankong compare --prompts`, answers done, dropped the labeller into the chat screen.
    from tiankong.presets import load_presets
    from tiankong.tui.arena import QueueApp

    presets = {n: short(n) for n in load_presets()}
    app = QueueApp(
        tiny.folder,
        store=store,
        mode="compare",
        compare_presets=["balanced", "creative"],
        presets=presets,
        queue=four_prompts(tmp_path),
        show_timing=False,
    )

    async def run():
        async with app.run_test(size=(100, 30)) as pilot:
            deadline = time.monotonic() + 60
            while not isinstance(app.screen, CompareScreen):
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
            screen = app.screen
            await settle(pilot, screen)
            assert screen.state == "voting"
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen and screen.position == 0  # still labelling
            await pilot.press("1", "enter")
            await settle(pilot, screen)
            assert screen.position == 1

    asyncio.run(run())


def test_prompt_queue_refuses_a_conversation_not_ending_with_the_user(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
    with pytest.raises(InputError, match="line 1: .*must end with a user message"):
        prompt_queue(path)


# ---------------------------------------------------------------- tiankong rank


def test_rank_reads_generates_jsonl_and_stores_the_metadata(tmp_path, monkeypatch, capsys, store):
    prompts, out = tmp_path / "prompts.txt", tmp_path / "answers.jsonl"
    prompts.write_text("Tell me a story about a cat.\n用中文写一个关于小猫的故事。\n")
    code, _, err = cli(
        monkeypatch,
        capsys,
        "generate",
        "-m",
        default_model_dir(),
        "--input",
        prompts,
        "--n",
        "2",
        "--max-new-tokens",
        "4",
        "--preset",
        "creative",
        "--seed",
        "7",
        "-o",
        out,
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4
    queue = answers_queue(out, model="tiankong-mini")
    assert len(queue.items) == 2 and [len(i.answers) for i in queue.items] == [2, 2]
    screen = CompareScreen([], [], store, "rita", queue=queue)

    async def run():
        async with Host(screen).run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            assert screen.state == "voting" and "1 / 2" in str(screen.query_one("#compare-head", Static).content)
            shown = list(screen.round.texts)
            await pilot.press("2", "enter")
            await pilot.pause()
            assert screen.round.prompt == "用中文写一个关于小猫的故事。"
            return shown

    shown = asyncio.run(run())
    [vote] = store.list_votes()
    assert vote.rater == "rita" and vote.ranking == [1, 0] and vote.source == "rank:answers.jsonl"
    assert vote.prompt == "Tell me a story about a cat." and vote.blind
    assert vote.prompt_id == prompt_id([{"role": "user", "content": vote.prompt}])
    assert [r.text for r in vote.responses] == shown
    by_seed = {r["seed"]: r for r in records if r["prompt"] == vote.prompt}
    assert sorted(by_seed) == [7, 8]
    for r in vote.responses:  # the answers' metadata, as generate wrote it
        rec = by_seed[r.seed]
        assert (r.text, r.preset, r.params, r.finish_reason, r.model) == (
            rec["text"],
            "creative",
            rec["params"],
            rec["finish_reason"],
            rec["model"],
        )
    # generate names the model as a compare vote on it does (QA: rank stored "unknown"); it wins over --model.
    # The bundled model by its name, not its install's path (QA: a second install was another model).
    assert rec["model"] == model_key(default_model_dir()) == "tiankong-mini"
    assert store.queue_position(screen.queue_key) == 1
    # Reopened, the same file starts at its second prompt.
    again = CompareScreen([], [], store, "rita", queue=answers_queue(out))

    async def reopen():
        async with Host(again).run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            return again.round.prompt

    assert asyncio.run(reopen()) == "用中文写一个关于小猫的故事。"


def test_answers_queue_groups_and_splits(tmp_path):
    queue = answers_queue(answers_file(tmp_path / "six.jsonl", n_prompts=2, k=6))
    assert [len(i.answers) for i in queue.items] == [3, 3, 3, 3]  # six answers: two rounds of three
    lone = tmp_path / "lone.jsonl"
    lone.write_text(json.dumps({"prompt": "a", "text": "x"}) + "\n")
    with pytest.raises(InputError, match="no prompt with two or more answers"):
        answers_queue(lone)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "text": "x"}) + "\n" + json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(InputError, match='line 2: needs the answer as a string "text"'):
        answers_queue(bad)


def test_cli_rank_and_compare_errors_are_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "rank", "--input", tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(monkeypatch, capsys, "compare", "--prompts", tmp_path / "nope.txt")
    assert code == 2 and "nope.txt does not exist" in err
    code, _, err = cli(monkeypatch, capsys, "compare", "--repeat", "2")
    assert code == 2 and "add --prompts FILE" in err
    # QA: --models with two presets ran the first preset only, without a word.
    code, _, err = cli(monkeypatch, capsys, "compare", "--models", "./sft", "--presets", "balanced,creative")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--models compares two models under one preset; give one --presets, e.g. --presets balanced" in err


def test_compare_models_take_one_preset(monkeypatch, capsys, tmp_path):
    import tiankong.tui.app as app_module

    calls = []
    monkeypatch.setattr(app_module, "run_app", lambda model, **kw: calls.append(kw))
    other = tmp_path / "ppo"
    other.mkdir()
    (other / "config.json").write_text("{}")  # a model folder as the resolver sees one; run_app never loads it
    assert cli(monkeypatch, capsys, "compare", "--models", other)[0] == 0  # against the bundled model
    assert cli(monkeypatch, capsys, "compare", "--models", other, "--presets", "creative")[0] == 0
    assert cli(monkeypatch, capsys, "compare")[0] == 0
    assert [kw["compare_presets"] for kw in calls] == [["balanced"], ["creative"], ["balanced", "creative"]]


def test_compare_models_refuses_one_model_twice_and_counts_before_looking_up(monkeypatch, capsys, tmp_path):
    """QA: --models X,X was accepted, and its votes decide no pair on any leaderboard; --models a,b,c
    said "no model 'a'" before the real mistake, the count."""
    import tiankong.tui.app as app_module

    monkeypatch.setattr(app_module, "run_app", lambda model, **kw: pytest.fail("the app must not open"))
    bundled = str(default_model_dir())
    for args in (
        ("--models", f"{bundled},{bundled}"),
        ("--models", f"{bundled}/,{bundled}/."),  # spelt two ways, one folder
        ("--models", "tiankong-mini"),  # by its name, against the default --model: the same one
        ("-m", bundled, "--models", bundled),
    ):
        code, _, err = cli(monkeypatch, capsys, "compare", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert "--models names one model twice" in err and "give two different models" in err, err
    code, _, err = cli(monkeypatch, capsys, "compare", "--models", "a,b,c")
    assert code == 2 and "--models takes one or two folders, got 3" in err and "no model" not in err, err


def test_prefs_stats_leaderboard_and_rankings_export(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    with Store(data / "tiankong.db") as s:
        rs = [
            Response(label, f"/runs/{m}", p, {"seed": 1}, 1, label, "eos")
            for label, m, p in (("A", "sft", "balanced"), ("B", "ppo", "creative"), ("C", "ppo", "precise"))
        ]
        for _ in range(3):
            s.add_vote(
                Vote(
                    None,
                    "q",
                    [{"role": "user", "content": "q"}],
                    rs,
                    "ranked",
                    [1, 0, 2],
                    "me",
                    True,
                    n_ranked=1,
                    prompt_id="q1",
                )
            )
    code, out, err = cli(
        monkeypatch,
        capsys,
        "prefs",
        "stats",
        "--data-dir",
        data,
        "--format",
        "json",
        "--bootstrap",
        "20",
        "--seed",
        "3",
    )
    assert code == 0, err
    board = json.loads(out)["leaderboard"]
    presets = {s["name"]: s for s in board["presets"]}
    assert board["presets"][0]["name"] == "creative" and presets["creative"]["n"] == 6
    assert presets["balanced"]["n"] == 3 and presets["precise"]["n"] == 3  # no balanced-precise games
    assert presets["creative"]["votes"] == 3 and presets["creative"]["lo"] is None  # too few votes for an interval
    assert [s["name"] for s in board["models"]] == ["/runs/ppo", "/runs/sft"]
    code, out, _ = cli(monkeypatch, capsys, "prefs", "stats", "--data-dir", data)
    assert code == 0 and "presets" in out and "models" in out and "95% CI" in out and "ppo" in out
    code, _, err = cli(
        monkeypatch, capsys, "prefs", "export", "--data-dir", data, "--format", "rankings", "-o", tmp_path / "r.jsonl"
    )
    assert code == 0 and "wrote 3 rankings" in err
    rec = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert rec["ranking"] == [[1], [0, 2]] and rec["prompt_id"] == "q1" and rec["rater"] == "me"
    assert rec["responses"][0] == {
        "label": "A",
        "model": "/runs/sft",
        "preset": "balanced",
        "params": {"seed": 1},
        "seed": 1,
        "text": "A",
        "finish_reason": "eos",
    }


def test_vote_browser_shows_a_partial_ranking_as_expressed():
    from rich.console import Console

    from tiankong.tui.screens.votes import verdict, vote_detail

    rs = [
        Response(label, "m", p, {}, 1, f"text {label}", "eos")
        for label, p in zip("ABCD", ("balanced", "creative", "precise", "chat"), strict=True)
    ]
    v = Vote(7, "q", [{"role": "user", "content": "q"}], rs, "ranked", [2, 0, 1, 3], "me", True, n_ranked=2)
    assert verdict(v) == "C > A > {B, D}"
    console = Console(width=100, record=True)
    console.print(vote_detail(v))
    text = console.export_text()
    assert "(precise > balanced > {creative, chat})" in text
    assert "C · precise · 1st" in text and "B · creative · unranked" in text and "D · chat · unranked" in text


def test_answers_holding_line_separators_are_ranked(tmp_path):
    """generate -o writes JSON with ensure_ascii=False, so U+2028 and U+0085 stay raw inside strings."""
    path = answers_file(tmp_path / "answers.jsonl", k=2)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row, odd in zip(rows, ("\u2028", "\x85"), strict=True):
        row["text"] += odd + "more"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    queue = answers_queue(path)
    assert [given.text for given in queue.items[0].answers] == ["answer 0.0\u2028more", "answer 0.1\x85more"]


def test_a_prompt_queue_names_a_stranger_role_in_one_short_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "\x1b]2;x\x07" + "r" * 10_000, "content": "hi"}]}) + "\n")
    with pytest.raises(InputError) as error:
        prompt_queue(path)
    assert "\x1b" not in str(error.value) and len(str(error.value)) < 400


def test_an_answers_file_with_a_huge_seed_is_named_in_one_short_line(tmp_path):
    path = answers_file(tmp_path / "answers.jsonl", k=2)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["seed"] = ["\x1b]2;x\x07" + "9" * 10_000]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(InputError, match=r'answers.jsonl line 1: "seed" must be an integer or null') as error:
        answers_queue(path)
    assert "\x1b" not in str(error.value) and len(str(error.value)) < 400


def test_rank_help_says_a_records_own_model_wins(tmp_path, monkeypatch, capsys):
    # QA: --help said generate's records have no "model" field; they do, and it wins over --model.
    monkeypatch.setenv("COLUMNS", "400")
    code, text, _ = cli(monkeypatch, capsys, "rank", "--help")
    text = " ".join(text.replace("│", " ").split())
    assert code == 0 and "has none" not in text
    assert 'generate writes one in every record, and a line\'s own "model" wins over this' in text
    answers = tmp_path / "a.jsonl"
    answers.write_text(
        "".join(
            json.dumps({"prompt": "p", "text": t, "preset": "balanced", "params": {}, "seed": 1, "model": "own"}) + "\n"
            for t in ("x", "y")
        )
    )
    [item] = answers_queue(answers, model="given").items
    assert {g.answer.model for g in item.answers} == {"own"}


# ---------------------------------------------------------------- tiankong rank: keys and start-up


def rank_app(tmp_path, store):
    from tiankong.tui.arena import RankApp

    return RankApp(store=store, queue=answers_queue(answers_file(tmp_path / "a.jsonl", n_prompts=2, k=2)))


def test_rank_esc_never_leaves_and_the_footer_says_ctrl_q_quits(tmp_path, store):
    # QA: the footer said "esc back", and esc quit `tiankong rank` mid-round; the README gives it compare's keys.
    from screen_text import screen_lines

    app = rank_app(tmp_path, store)

    async def run():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            screen = app.screen
            footer = screen_lines(app)[-1]
            assert "^q quit" in footer and "esc" not in footer
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen and app.return_code is None  # still ranking
            await pilot.press("1", "enter")
            await pilot.pause()
            await pilot.press("2", "enter")
            await pilot.pause()
            assert "All 2 rounds done" in str(screen.query_one("#vote-bar", Static).content)
            assert "ctrl+q quits" in str(screen.query_one("#vote-bar", Static).content)
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen and app.return_code is None
            await pilot.press("ctrl+q")
            await pilot.pause()

    asyncio.run(run())
    assert len(store.list_votes()) == 2 and app.return_code == 0


def test_a_narrow_rank_footer_still_says_how_to_quit(tmp_path, store):
    from screen_text import screen_lines

    app = rank_app(tmp_path, store)

    async def run():
        async with app.run_test(size=(60, 20)) as pilot:
            await pilot.pause()
            return screen_lines(app)[-1]

    footer = asyncio.run(run())
    # Two answers a prompt: "1-2", the keys there are (QA: it said "1-4").
    assert "^q quit" in footer and "1-2 rank" in footer and footer.rstrip() == footer[:60].rstrip()


def test_the_key_list_of_a_standalone_compare_says_what_its_keys_do(tmp_path, store):
    # QA: f1 in `tiankong compare`/`rank` listed "esc back to the previous screen" (there is none), had no
    # ctrl+q, and left out the keys that scroll an answer column.
    from tiankong.tui.screens.help import HelpScreen

    app = rank_app(tmp_path, store)

    async def run():
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            await pilot.press("f1")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            return [row for _, keys in app.screen.sections for row in keys]

    rows = asyncio.run(run())
    keys, whats = {k for k, _ in rows}, " | ".join(what for _, what in rows)
    assert "previous screen" not in whats and "esc" not in keys  # rank: esc does nothing
    assert ("^q", "quit (a prompt or answers file reopens at the round shown)") in rows
    assert "tab / shift+tab" in keys and "↑ ↓ home end" in keys
    assert "n" not in keys and "r" not in keys  # no prompt to type or rerun in rank
    assert [k for k, _ in rows].count("0") == 1  # two answers a round: "0" is both bad, listed once
    # The compare the chat opens (ctrl+b): esc goes back to the chat, and ctrl+q is the app's.
    from_chat = CompareScreen([], [], store, "ann", queue=answers_queue(tmp_path / "a.jsonl"))

    async def chat_keys():
        async with Host(from_chat).run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            return from_chat.help_sections()[0][1]

    rows = asyncio.run(chat_keys())
    assert ("esc", "back to the chat") in rows and "^q" not in {k for k, _ in rows}


def test_rank_does_not_import_torch(tmp_path):
    """`tiankong rank` runs no model: it must not pay torch's import (~0.5 GB, seconds) to open."""
    answers = answers_file(tmp_path / "a.jsonl", n_prompts=2, k=2)
    code = (
        "import asyncio, sys\n"
        "import tiankong.tui.cli\n"
        "from tiankong.tui.arena import RankApp\n"
        "from tiankong.tui.queue import answers_queue\n"
        "from tiankong.tui.store import Store\n"
        "async def main():\n"
        f"    store = Store({str(tmp_path / 'data' / 't.db')!r})\n"
        f"    app = RankApp(store=store, queue=answers_queue({str(answers)!r}))\n"
        "    async with app.run_test() as pilot:\n"
        "        await pilot.pause()\n"
        "        for key in ('1', 'enter', 'ctrl+z', 't', 'f1', 'escape', 'ctrl+g'):\n"
        "            await pilot.press(key)\n"
        "            await pilot.pause()\n"
        "    assert len(store.list_votes()) == 1, store.list_votes()\n"
        "asyncio.run(main())\n"
    )
    assert not imports_torch(code)
