"""Bradley-Terry strengths and bootstrap intervals (tiankong.tui.leaderboard) against independent
computations: the two-entry closed form, a direct scipy fit of the likelihood, simulated truths."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from tiankong.tui.leaderboard import (
    BASE,
    MIN_VOTES,
    SCALE,
    bradley_terry,
    by_model,
    by_preset,
    categories,
    elo,
    games,
    leaderboard,
    leaderboards,
    standings_table,
    win_matrix,
)
from tiankong.tui.store import Response, Vote


def resp(label, preset, model="m"):
    return Response(label, model, preset, {}, 1, label, "eos")


def ranked(presets, ranking, n_ranked=None, model=None):
    rs = [resp("ABCD"[i], p, model or "m") for i, p in enumerate(presets)]
    return Vote(None, "q", [{"role": "user", "content": "q"}], rs, "ranked", ranking, "me", True, n_ranked=n_ranked)


def test_two_entries_closed_form():
    # 7 wins against 3: p1 / p2 = 7 / 3, so the strengths are +-log(7/3)/2 and 400 log10(7/3) apart.
    theta = bradley_terry(np.array([[0.0, 7.0], [3.0, 0.0]]))
    assert theta == pytest.approx([math.log(7 / 3) / 2, -math.log(7 / 3) / 2], abs=1e-9)
    pts = elo(theta)
    assert pts[0] - pts[1] == pytest.approx(400 * math.log10(7 / 3), abs=1e-6)
    assert pts.mean() == pytest.approx(BASE)


def test_matches_a_direct_fit_of_the_likelihood():
    rng = np.random.default_rng(3)
    truth = rng.normal(0, 1, 5)
    wins = np.zeros((5, 5))
    for _ in range(1500):
        i, j = rng.choice(5, 2, replace=False)
        if rng.random() < 1 / (1 + math.exp(truth[j] - truth[i])):
            wins[i, j] += 1
        else:
            wins[j, i] += 1
    wins[0, 1] += 0.5  # a tie between 0 and 1: half a win each way
    wins[1, 0] += 0.5

    def nll(x):
        d = x[:, None] - x[None, :]
        return float((wins * np.logaddexp(0, -d)).sum())  # -sum W_ij log sigmoid(x_i - x_j)

    fit = minimize(nll, np.zeros(5), method="BFGS", options={"gtol": 1e-10}).x
    assert bradley_terry(wins) == pytest.approx(fit - fit.mean(), abs=1e-5)


def test_prior_keeps_an_unbeaten_entry_finite():
    wins = np.array([[0.0, 3.0], [0.0, 0.0]])
    assert np.isinf(bradley_terry(wins)[0])
    # half a virtual game each way: 3.25 wins against 0.25
    theta = bradley_terry(wins, prior=0.5)
    assert theta[0] - theta[1] == pytest.approx(math.log(3.25 / 0.25), abs=1e-9)


def simulated_votes(truth: dict[str, float], n: int, seed: int) -> list[Vote]:
    """n votes on random pairs, each won with the Bradley-Terry probability of the true strengths."""
    rng = np.random.default_rng(seed)
    names = list(truth)
    votes = []
    for _ in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        pa = 1 / (1 + math.exp(truth[names[b]] - truth[names[a]]))
        votes.append(ranked([names[a], names[b]], [0, 1] if rng.random() < pa else [1, 0]))
    return votes


def test_bootstrap_interval_contains_the_truth_and_is_seeded():
    truth = {"balanced": 0.0, "creative": 0.8, "precise": -0.5, "chat": 0.3}
    mean = sum(truth.values()) / len(truth)
    votes = simulated_votes(truth, 1200, seed=11)
    board = {s.name: s for s in leaderboard(votes, by_preset, rounds=200, seed=5)}
    for name, t in truth.items():
        s = board[name]
        true_points = BASE + SCALE * (t - mean)
        assert s.lo < true_points < s.hi, (name, s, true_points)
        assert s.lo <= s.strength <= s.hi
        assert s.hi - s.lo < 150  # 1200 votes pin each entry to well under 150 points
    assert [s.name for s in leaderboard(votes, by_preset, rounds=0)] == ["creative", "chat", "balanced", "precise"]
    again = leaderboard(votes, by_preset, rounds=200, seed=5)
    assert [(s.lo, s.hi) for s in again] == [(board[s.name].lo, board[s.name].hi) for s in again]
    other = {s.name: s for s in leaderboard(votes, by_preset, rounds=200, seed=6)}
    assert any(other[n].lo != board[n].lo for n in truth)


def test_games_count_only_expressed_pairs_and_ties_as_halves():
    partial = ranked(["a", "b", "c", "d"], [2, 0, 1, 3], n_ranked=2)  # c > a > {b, d}
    tie = Vote(None, "q", [], [resp("A", "a"), resp("B", "b")], "tie", [], "me", True)
    same = ranked(["a", "a"], [1, 0])  # two samples of one preset: nothing about presets
    names, g = games([partial, tie, same], by_preset)
    assert names == ["a", "b", "c", "d"]
    w = win_matrix(g, 4)
    expected = np.zeros((4, 4))
    for i, j in [(2, 0), (2, 1), (2, 3), (0, 1), (0, 3)]:  # never b against d
        expected[i, j] = 1
    expected[0, 1] += 0.5
    expected[1, 0] += 0.5
    assert w == pytest.approx(expected)
    board = {s.name: s for s in leaderboard([partial, tie, same], by_preset, rounds=0)}
    assert (board["a"].wins, board["a"].losses, board["a"].ties, board["a"].n) == (2.5, 1.5, 1, 4)
    assert board["a"].win_rate == pytest.approx(2 / 3)  # 2 wins, 1 loss; the tie left out
    assert board["d"].n == 2 and board["d"].win_rate == 0


def test_models_board_by_model():
    v = ranked(["x", "x"], [1, 0])
    v.responses[0].model, v.responses[1].model = "/runs/sft", "/runs/ppo"
    [top, bottom] = leaderboard([v], by_model, rounds=0)
    assert (top.name, bottom.name) == ("/runs/ppo", "/runs/sft") and top.strength > bottom.strength


# ---------------------------------------------------------------- grouped votes (Store.vote_shapes)


def random_votes(n: int, seed: int) -> list[Vote]:
    """Votes of 2-4 responses from 4 presets and 3 models: full and partial rankings, ties, both-bad,
    and two samples of one preset now and then."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(2, 5))
        rs = [
            resp("ABCD"[i], str(rng.choice(["a", "b", "c", "d"])), str(rng.choice(["m1", "m2", "m3"])))
            for i in range(k)
        ]
        kind = rng.random()
        outcome = "ranked" if kind < 0.8 else "tie" if kind < 0.9 else "both_bad"
        ranking = [int(x) for x in rng.permutation(k)] if outcome == "ranked" else []
        n_ranked = int(rng.integers(1, k + 1)) if outcome == "ranked" and rng.random() < 0.3 else None
        out.append(
            Vote(None, "q", [{"role": "user", "content": "q"}], rs, outcome, ranking, "me", True, n_ranked=n_ranked)
        )
    return out


def test_grouped_votes_give_the_per_vote_leaderboard(store):
    store.add_votes(random_votes(300, seed=2))
    per_vote = leaderboards(store.list_votes(limit=None), rounds=50, seed=3)
    shapes, counts = store.vote_shapes()
    assert len(shapes) < 300 and sum(counts) == 300  # grouped
    grouped = leaderboards(shapes, rounds=50, seed=3, counts=counts)
    for kind in ("presets", "models"):
        assert [s.name for s in grouped[kind]] == [s.name for s in per_vote[kind]]
        for g, v in zip(grouped[kind], per_vote[kind], strict=True):
            assert (g.wins, g.losses, g.ties, g.n) == (v.wins, v.losses, v.ties, v.n)
            # the same categories in the same order: the same resamples, so the same intervals too
            assert (g.strength, g.lo, g.hi) == pytest.approx((v.strength, v.lo, v.hi), abs=1e-9)


def test_categories_merge_votes_with_the_same_games():
    a_beats_b, b_beats_a = ranked(["a", "b"], [0, 1]), ranked(["b", "a"], [1, 0])  # the same game, other order
    same = ranked(["a", "a"], [1, 0])  # no game: a category of its own, still drawn
    names, g = games([a_beats_b, b_beats_a, same, ranked(["a", "b"], [1, 0])], by_preset)
    cg, per = categories(g, np.array([1, 2, 4, 8]))
    assert names == ["a", "b"] and per.tolist() == [4, 8, 3]  # (), b > a, a > b: sorted by their games
    assert cg.tolist() == [[1, 0, 1, 0.0], [2, 0, 1, 1.0]]


def grouped_simulation(truth: dict[str, float], n: int, seed: int) -> tuple[list[Vote], list[int]]:
    """simulated_votes, grouped as Store.vote_shapes groups them: one vote per (pair, winner) and its count."""
    counts: dict[tuple[str, str], int] = {}
    for v in simulated_votes(truth, n, seed):
        key = (v.responses[v.ranking[0]].preset, v.responses[v.ranking[1]].preset)
        counts[key] = counts.get(key, 0) + 1
    keys = sorted(counts)
    return [ranked(list(k), [0, 1]) for k in keys], [counts[k] for k in keys]


def test_bootstrap_over_grouped_counts_covers_the_truth_and_is_seeded():
    truth = {"balanced": 0.0, "creative": 0.8, "precise": -0.5, "chat": 0.3}
    mean = sum(truth.values()) / len(truth)
    covered = 0
    for sim in range(10):  # 10 simulated data sets x 4 entries
        shapes, counts = grouped_simulation(truth, 1200, seed=100 + sim)
        assert len(shapes) <= 12 and sum(counts) == 1200
        board = {s.name: s for s in leaderboard(shapes, by_preset, rounds=100, seed=5, counts=counts)}
        for name, t in truth.items():
            s = board[name]
            covered += s.lo < BASE + SCALE * (t - mean) < s.hi
            assert s.lo <= s.strength <= s.hi and s.hi - s.lo < 150
    # Percentile intervals with the prior's shrinkage cover about 92% here: over 40 such data sets, 147 of 160
    # entries, and drawing votes one by one (rng.integers, before grouping) 148. These 10 give 33 of 40.
    assert covered >= 32, covered
    shapes, counts = grouped_simulation(truth, 1200, seed=11)
    first = leaderboard(shapes, by_preset, rounds=100, seed=5, counts=counts)
    again = leaderboard(shapes[::-1], by_preset, rounds=100, seed=5, counts=counts[::-1])  # any order
    assert [(s.name, s.lo, s.hi) for s in again] == [(s.name, s.lo, s.hi) for s in first]
    other = leaderboard(shapes, by_preset, rounds=100, seed=6, counts=counts)
    assert [(s.lo, s.hi) for s in other] != [(s.lo, s.hi) for s in first]


def test_multinomial_resample_draws_like_votes_one_by_one():
    # The count of a category with c of N votes in a resample: binomial(N, c / N), mean c, variance c (1 - c/N).
    rng = np.random.default_rng(0)
    per, n = np.array([5.0, 30.0, 65.0]), 100
    drawn = np.array([rng.multinomial(n, per / n) for _ in range(20000)])
    one_by_one = np.array(
        [np.bincount(np.repeat([0, 1, 2], per.astype(int))[rng.integers(0, n, n)], minlength=3) for _ in range(20000)]
    )
    assert drawn.mean(0) == pytest.approx(one_by_one.mean(0), rel=0.03)
    assert drawn.var(0) == pytest.approx(one_by_one.var(0), rel=0.06)
    assert drawn.var(0) == pytest.approx(per * (1 - per / n), rel=0.06)


# ---------------------------------------------------------------- too few votes for an interval


def board_text(standings, width: int = 120) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(standings_table(standings, title="presets"))
    return console.export_text()


def test_no_interval_from_too_few_votes():
    # QA: one vote gave "1140 – 1140", an interval of zero width that reads as certainty.
    one = [ranked(["balanced", "creative"], [0, 1])]
    four_way = [ranked(["a", "b", "c", "d"], [0, 1, 2, 3])]
    for votes in (one, one * 2, four_way, one * (MIN_VOTES - 1)):
        board = leaderboard(votes, by_preset, rounds=50)
        assert all(math.isnan(s.lo) and math.isnan(s.hi) for s in board)
        assert all(s.to_dict()["lo"] is None and s.to_dict()["hi"] is None for s in board)
        text = board_text(board)
        assert " – " not in text and "—" in text
    assert [s.votes for s in leaderboard(four_way, by_preset, rounds=0)] == [1, 1, 1, 1]
    enough = [ranked(["balanced", "creative"], [0, 1])] * 7 + [ranked(["balanced", "creative"], [1, 0])] * 3
    board = leaderboard(enough, by_preset, rounds=50)
    assert all(s.votes == MIN_VOTES and s.lo < s.hi for s in board)
    assert " – " in board_text(board)


def test_the_caption_keeps_n_equals_games_on_one_line():
    # QA: at 120 columns the caption wrapped as "n =" / "games" under a narrow table (rich wraps at
    # no-break spaces too); where it broke depended on the names' width.
    for n in range(1, 25):
        board = leaderboard([ranked(["a" * n, "b" * n], [0, 1])], by_preset, rounds=0)
        lines = [line.rstrip().replace("\u00a0", " ") for line in board_text(board).splitlines()]
        assert lines[-2:] == [
            "Bradley-Terry, Elo-like; games = answer pairs",
            f"CI by bootstrap; — under {MIN_VOTES} votes",
        ]


def test_the_table_shows_the_votes_the_interval_rule_counts():
    # QA: "creative ... — ... 44% 11" beside "— under 10 votes": the rule counts votes, the column was
    # games. Three 4-way votes give "a" 9 games in 3 votes: the table shows both, and the dash.
    votes = [ranked(["a", "b", "c", "d"], [0, 1, 2, 3])] * 3
    (a,) = [s for s in leaderboard(votes, by_preset, rounds=20) if s.name == "a"]
    assert (a.n, a.votes) == (9, 3) and math.isnan(a.lo)
    lines = board_text([a]).splitlines()
    assert lines[1].split() == ["name", "strength", "95%", "CI", "win", "rate", "games", "votes"]
    assert lines[2].split()[-4:] == ["—", "100%", "9", "3"]  # CI, win rate, games, votes


# ---------------------------------------------------------------- the bundled model, one entry


def test_the_bundled_model_is_stored_by_name_and_old_path_records_count_with_it(tmp_path):
    """QA: votes stored the bundled model under its install's path (/tmp/qa16/main/models/tiankong-mini),
    so a second install counted as another model while the screens said "tiankong-mini". A vote now
    stores the name (model_key, as compare and generate name a model), which resolves to the bundled
    model again; an older vote's path of it, from any install, counts as that name."""
    import os

    from tiankong.engine.model_names import model_key
    from tiankong.engine.resolve import resolve_model
    from tiankong.models import default_model_dir

    bundled = default_model_dir()
    link = tmp_path / "mini"
    os.symlink(bundled, link)
    assert model_key(bundled) == model_key(link) == model_key(str(bundled) + "/") == "tiankong-mini"
    assert os.path.samefile(resolve_model(model_key(bundled)), bundled)
    assert model_key(tmp_path) == str(tmp_path.resolve())  # any other folder: its path, as before

    def vote(a: str, b: str) -> Vote:
        return Vote(None, "q", [], [resp("A", "balanced", a), resp("B", "balanced", b)], "ranked", [0, 1], "me", True)

    votes = [vote("/old/install/models/tiankong-mini", "/runs/ppo"), vote("tiankong-mini", "/runs/ppo")]
    votes.append(vote("/runs/ppo", "/tmp/qa16/main/models/tiankong-mini"))
    votes.append(vote("http://host:8000/v1/models/tiankong-mini", "/runs/ppo"))  # a server's: its own entry
    board = {s.name: s for s in leaderboard(votes, by_model, rounds=0)}
    assert sorted(board) == ["/runs/ppo", "http://host:8000/v1/models/tiankong-mini", "tiankong-mini"]
    assert (board["tiankong-mini"].n, board["tiankong-mini"].wins) == (3, 2)
