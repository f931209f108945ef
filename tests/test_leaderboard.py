"""Bradley-Terry strengths and bootstrap intervals (tiankong.tui.leaderboard) against independent
computations: the two-entry closed form, a direct scipy fit of the likelihood, simulated truths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from tiankong.tui.leaderboard import (
    BASE,
    SCALE,
    bradley_terry,
    by_model,
    by_preset,
    elo,
    games,
    leaderboard,
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
