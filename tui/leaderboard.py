"""A leaderboard from votes: Bradley-Terry strengths with bootstrap confidence intervals.

Bradley-Terry: entry i beats entry j with probability p_i / (p_i + p_j). The strengths are fitted
to the pairwise win counts by Hunter's (2004) MM iterations,

    p_i <- W_i / sum_j N_ij / (p_i + p_j)      (W_i: i's wins, N_ij: games between i and j)

which raise the likelihood at every step and converge to the maximum-likelihood strengths. They are
shown on an Elo-like scale, 1000 + 400 log10(p_i / geometric mean of p), as Chatbot Arena does: 400
points apart means 10:1 odds, and the average entry sits at 1000.

What counts as a game: every pair a vote expressed (`Vote.pairs`, so a partial ranking's unranked
tail gives none), and every pair of a tie or both-bad vote as half a win each way (as Chatbot Arena
counts ties). Pairs of two responses with the same name (two samples of one preset) say nothing about
that name and are skipped. `prior` adds that many virtual games, half won each way, to every pair that
met, so an entry that never lost (or never won) keeps a finite strength; 0 gives the plain maximum-
likelihood fit.

Confidence intervals: the votes are resampled with replacement (`rounds` times, with a seeded
generator, so the same votes always give the same intervals), the strengths refitted on each resample,
and the 2.5th and 97.5th percentiles kept; an entry in fewer than MIN_VOTES votes gets none (nan, shown
"—"), as resamples of so few votes barely differ. Resampling whole votes keeps the pairs of one ranking together.
Votes that give the same games (the same names, pairs and outcomes) are interchangeable, so they are
merged into one category with a count, and a resample of N votes is drawn as multinomial(N, count / N)
over the categories: the same distribution as drawing N votes one by one, at the cost of the number of
categories rather than of votes. The categories are sorted by their games, so the same votes give the
same intervals whether they come one by one (`Store.list_votes`) or grouped (`Store.vote_shapes`, which
counts the votes per shape in SQL and reads no text). Before this, each vote was drawn with
`rng.integers`: the intervals for a given seed differ from those, with the same distribution.

What it costs (`bench/million_votes.py`: 1M votes of 2-4 responses, 1.9 GB database, 198,000 shapes;
2 CPU cores, peak RSS by /usr/bin/time -v): `tiankong prefs stats` took 284 s and 6.0 GB loading every
vote with its texts; from the counts per shape it takes 17 s (13 s of them the SQL scan) and 750 MB, of
which 670 MB is the CLI starting (tui/cli.py imports torch; the prefs app alone peaks at 250 MB). The
same tables come out. `prefs export` streams a page of votes at a time: 203 s and 7.4 GB before, 46 s
and 680 MB (the CLI's start again) now, the same file.

Pure functions on numpy; rendering is a rich Table (no Textual), shared by `tiankong prefs stats` and
the vote browser.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import numpy as np
from rich.table import Table
from rich.text import Text

from tiankong.engine.model_names import display_name, stored_model
from tiankong.tui.store import Response, Vote

SCALE, BASE = 400 / math.log(10), 1000.0  # natural-log strength -> Elo-like points
PRIOR = 0.5  # virtual games per pair that met (half won each way): keeps unbeaten entries finite
# Below this many votes with a game of its own, an entry gets no interval: resamples of one or two votes
# barely vary (one vote: every resample is that vote), so the "interval" had zero width, which reads as
# certainty where there is the least of it. A handful more still mostly repeat the same few votes.
MIN_VOTES = 10


@dataclass(frozen=True)
class Standing:
    name: str
    strength: float  # Elo-like: 1000 + 400 log10(p / geometric mean of p)
    lo: float  # bootstrap confidence interval (nan without bootstrap rounds)
    hi: float
    wins: float  # ties count as half a win
    losses: float
    ties: int
    n: int  # games (pairs) the entry took part in
    votes: int = 0  # votes with a game of the entry's: under MIN_VOTES, lo and hi are nan (no interval)

    @property
    def win_rate(self) -> float | None:
        """Wins over decided games, ties excluded (the stats table's win rate)."""
        decided = self.wins + self.losses - self.ties  # each tie added half to both
        return (self.wins - self.ties / 2) / decided if decided else None

    def to_dict(self) -> dict:
        """JSON-ready: infinite or missing figures become None."""
        d = {**asdict(self), "win_rate": self.win_rate}
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}


# ---------------------------------------------------------------- games


def games(votes: Iterable[Vote], key: Callable[[Response], str]) -> tuple[list[str], np.ndarray]:
    """Every game in the votes: (names sorted, array (G, 4) of [vote index, i, j, score of i]) where
    i and j index names and the score is 1 (i won) or 0.5 (a tie)."""
    rows, names = [], {}
    for v, vote in enumerate(votes):
        if vote.outcome == "ranked":
            pairs, score = vote.pairs(), 1.0
        else:
            k = len(vote.responses)
            pairs, score = [(a, b) for a in range(k) for b in range(a + 1, k)], 0.5
        for a, b in pairs:
            na, nb = key(vote.responses[a]), key(vote.responses[b])
            if na != nb:
                rows.append((v, names.setdefault(na, len(names)), names.setdefault(nb, len(names)), score))
    order = sorted(names)
    remap = np.array([order.index(n) for n in names], dtype=np.int64) if names else np.zeros(0, np.int64)
    g = np.array(rows, dtype=np.float64).reshape(-1, 4)
    if len(g):
        g[:, 1], g[:, 2] = remap[g[:, 1].astype(np.int64)], remap[g[:, 2].astype(np.int64)]
    return order, g


def categories(g: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Votes that give the same games merged: (games, counts) where column 0 of games now indexes the
    categories and counts[c] is how many votes fall in category c (votes with no games, e.g. two samples
    of one preset, make a category of their own: they are drawn in a resample too). `counts[v]` is how
    many votes the row v of `games()` stands for. Categories are sorted by their games (each game
    written with i < j), so the result does not depend on how the votes were ordered or grouped."""
    counts = np.asarray(counts, dtype=np.float64)
    v = g[:, 0].astype(np.int64)
    i, j, s2 = g[:, 1].astype(np.int64), g[:, 2].astype(np.int64), np.rint(2 * g[:, 3]).astype(np.int64)
    flip = i > j  # (j, i, 1 - s) is the same game as (i, j, s)
    i, j, s2 = np.where(flip, j, i), np.where(flip, i, j), np.where(flip, 2 - s2, s2)
    n = int(j.max()) + 1 if len(g) else 1
    code = (i * n + j) * 3 + s2  # one integer per game
    # Each vote's games as one row of codes, ascending, padded with -1: equal rows, equal games.
    per_vote = np.bincount(v, minlength=len(counts))
    order = np.lexsort((code, v))
    v, code = v[order], code[order]
    start = np.cumsum(per_vote) - per_vote
    rows = np.full((len(counts), max(int(per_vote.max(initial=0)), 1)), -1, dtype=np.int64)
    rows[v, np.arange(len(v)) - start[v]] = code
    keep = counts > 0
    unique, inverse = np.unique(rows[keep], axis=0, return_inverse=True)
    per = np.bincount(inverse.reshape(-1), weights=counts[keep], minlength=len(unique))
    c, col = np.nonzero(unique >= 0)
    code = unique[c, col]
    pair, s2 = code // 3, code % 3
    cg = np.stack([c, pair // n, pair % n, s2 / 2]).T.astype(np.float64)
    return cg.reshape(-1, 4), per


def win_matrix(g: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """W[i, j] = (weighted) wins of i over j; a tie adds half to both. weights: per game."""
    w = np.ones(len(g)) if weights is None else weights
    i, j, s = g[:, 1].astype(np.int64), g[:, 2].astype(np.int64), g[:, 3]
    wins = np.zeros((n, n))
    np.add.at(wins, (i, j), w * s)
    np.add.at(wins, (j, i), w * (1 - s))
    return wins


# ---------------------------------------------------------------- the fit


def bradley_terry(wins: np.ndarray, prior: float = 0.0, tol: float = 1e-10, max_iter: int = 100_000) -> np.ndarray:
    """Maximum-likelihood log-strengths (natural log, mean 0 over entries that played) from W[i, j] =
    wins of i over j, by MM iterations. Entries with no games get nan; with prior 0, an entry with no
    wins gets -inf (and one with no losses +inf, as the likelihood has no maximum then)."""
    wins = np.asarray(wins, dtype=np.float64)
    games_ = wins + wins.T  # (K, K) games between i and j
    if prior:
        wins = wins + (prior / 2) * (games_ > 0)
        games_ = wins + wins.T
    played = games_.sum(1) > 0
    total = wins.sum(1)
    theta = np.full(len(wins), np.nan)
    if not played.any():
        return theta
    w, n = total[played], games_[np.ix_(played, played)]
    p = np.ones(len(w))
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(max_iter):
            new = w / (n / (p[:, None] + p[None, :])).sum(1)
            alive = new > 0
            if not alive.any():
                break
            new = new / np.exp(np.log(new[alive]).mean())  # fix the scale: geometric mean 1
            done = np.nanmax(np.abs(np.log(new[alive]) - np.log(p[alive]))) < tol
            p = new
            if done:
                break
        t = np.log(p)
    finite = np.isfinite(t)
    t = t - t[finite].mean() if finite.any() else t
    # An unbeaten entry's p keeps growing relative to the rest: report it as +inf rather than "large".
    unbeaten = (wins.sum(0)[played] == 0) & (w > 0) & (prior == 0) & (len(w) > 1)
    t[unbeaten] = np.inf
    theta[played] = t
    return theta


def elo(theta: np.ndarray) -> np.ndarray:
    """Natural-log strengths (mean 0) on the Elo-like scale."""
    return BASE + SCALE * np.asarray(theta)


def bootstrap(
    g: np.ndarray,
    n: int,
    counts: np.ndarray,
    rounds: int = 200,
    seed: int = 0,
    prior: float = PRIOR,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) Elo-like bounds per entry: refit on `rounds` resamples of the votes (with replacement).
    g: games whose column 0 indexes `counts`, the number of votes in each category (`categories`); a
    resample of the N votes draws multinomial(N, counts / N) of them from the categories."""
    counts = np.asarray(counts, dtype=np.float64)
    total = int(round(counts.sum()))
    if rounds <= 0 or total == 0:
        return np.full(n, np.nan), np.full(n, np.nan)
    rng = np.random.default_rng(seed)
    p = counts / counts.sum()
    cat = g[:, 0].astype(np.int64)
    fits = np.empty((rounds, n))
    for r in range(rounds):
        drawn = rng.multinomial(total, p).astype(np.float64)  # votes of each category in this resample
        fits[r] = elo(bradley_terry(win_matrix(g, n, drawn[cat]), prior=prior))
    tail = 100 * (1 - level) / 2
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanpercentile(fits, [tail, 100 - tail], axis=0)
    return lo, hi


def leaderboard(
    votes: Iterable[Vote],
    key: Callable[[Response], str],
    rounds: int = 200,
    seed: int = 0,
    prior: float = PRIOR,
    level: float = 0.95,
    counts: Sequence[int] | None = None,
) -> list[Standing]:
    """Standings of every name `key` gives the votes' responses, strongest first. counts: how many
    votes each of `votes` stands for (the shapes of Store.vote_shapes); None: one each."""
    votes = list(votes)
    names, g = games(votes, key)
    if not names:
        return []
    g, per = categories(g, np.ones(len(votes)) if counts is None else np.asarray(counts, dtype=np.float64))
    weight = per[g[:, 0].astype(np.int64)]  # votes behind each game
    wins = win_matrix(g, len(names), weight)
    strength = elo(bradley_terry(wins, prior=prior))
    lo, hi = bootstrap(g, len(names), per, rounds=rounds, seed=seed, prior=prior, level=level)
    # Votes behind each entry: a category counts once for each entry in its games (however many games).
    cat = g[:, 0].astype(np.int64)
    member = np.zeros((len(per), len(names)), dtype=bool)
    member[cat, g[:, 1].astype(np.int64)] = True
    member[cat, g[:, 2].astype(np.int64)] = True
    votes_in = np.rint(per @ member).astype(np.int64)
    few = votes_in < MIN_VOTES
    lo, hi = np.where(few, np.nan, lo), np.where(few, np.nan, hi)
    tie = g[:, 3] == 0.5
    tie_count = np.zeros(len(names))
    np.add.at(tie_count, g[tie, 1].astype(np.int64), weight[tie])
    np.add.at(tie_count, g[tie, 2].astype(np.int64), weight[tie])
    out = [
        Standing(
            name,
            float(strength[k]),
            float(lo[k]),
            float(hi[k]),
            float(wins[k].sum()),
            float(wins[:, k].sum()),
            int(round(tie_count[k])),
            int(round(wins[k].sum() + wins[:, k].sum())),
            int(votes_in[k]),
        )
        for k, name in enumerate(names)
    ]
    return sorted(out, key=lambda s: (-s.strength, s.name))


def by_preset(r: Response) -> str:
    return r.preset


def by_model(r: Response) -> str:
    return stored_model(r.model)  # the bundled model's path in an older vote: its name


def leaderboards(
    votes: Iterable[Vote], rounds: int = 200, seed: int = 0, counts: Sequence[int] | None = None
) -> dict[str, list[Standing]]:
    """The preset and the model leaderboards of the same votes (counts: as in `leaderboard`)."""
    votes = list(votes)
    return {
        "presets": leaderboard(votes, by_preset, rounds, seed, counts=counts),
        "models": leaderboard(votes, by_model, rounds, seed, counts=counts),
    }


# ---------------------------------------------------------------- rendering


NAME_WIDTH = 32  # the name column's cells: with the five number columns the table fits 80 columns


def short_names(names: list[str], width: int = NAME_WIDTH) -> dict[str, str]:
    """Each model by the least that tells it from the others, in at most `width` characters: a
    server's model (URL/models/ID) by ID@HOST:PORT, as the chat names it (a long host cut in its
    middle before the ID is), a path by its folder (or file) name; where two would read the same, by
    as many of its last path parts as tell it apart (cut in the middle, keeping the end)."""
    tails = [_short_name(n, width) for n in names]
    out = {}
    for n, t in zip(names, tails, strict=True):
        if tails.count(t) == 1:
            out[n] = t
            continue
        parts, others = n.split("/"), [m.split("/") for m in names if m != n]
        k = next((k for k in range(2, len(parts)) if all(o[-k:] != parts[-k:] for o in others)), len(parts))
        out[n] = fit_name("/".join(parts[-k:]), width)
    return out


def _short_name(name: str, width: int) -> str:
    base, sep, model = name.rpartition("/models/")
    if not (sep and base.lower().startswith(("http://", "https://"))):
        return fit_name(display_name(name), width)
    host = urlsplit(base).netloc
    room = max(width - len(model) - 1, min(len(host), 10))  # the host's share: what the ID leaves, its port at least
    return f"{fit_name(model, width - 1 - room)}@{fit_name(host, room)}"


def fit_name(name: str, width: int = NAME_WIDTH) -> str:
    """name in at most `width` characters, cut in the middle: the start and the end (a path's file, a
    server's port) are what tell two names apart; "…" cut on the right made two models on one
    long host read the same."""
    if len(name) <= width:
        return name
    head = (width - 1) // 3
    return name[:head] + "…" + name[len(name) - (width - 1 - head) :]


def standings_table(standings: list[Standing], title: str, paths: bool = False, level: float = 0.95) -> Table:
    """name, strength, confidence interval, win rate, games, votes; `paths` shortens model paths to folder names."""
    names = [s.name for s in standings]
    shown = short_names(names) if paths else {n: fit_name(n) for n in names}
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=None,
        padding=(0, 1),
        # Two short lines: a caption longer than the table is wrapped to its width (a narrow table broke
        # it inside "n = games": rich breaks at no-break spaces too), and each line fits the narrowest table.
        # The interval's rule counts votes, so the votes are a column beside the games (QA: "— under 10
        # votes" read wrong next to an n of 11 games).
        caption=f"Bradley-Terry, Elo-like; games = answer pairs\nCI by bootstrap; — under {MIN_VOTES} votes",
        caption_justify="left",
        caption_style="dim",
    )
    table.add_column("name", no_wrap=True, overflow="ellipsis", max_width=NAME_WIDTH)
    for col in ("strength", f"{level:.0%} CI", "win rate", "games", "votes"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in standings:
        rate = s.win_rate
        table.add_row(
            Text(shown[s.name]),  # a str cell is read as markup: model paths and preset names may hold "["
            _points(s.strength),
            "—" if math.isnan(s.lo) or math.isnan(s.hi) else f"{_points(s.lo)} – {_points(s.hi)}",
            "–" if rate is None else f"{rate:.0%}",
            str(s.n),
            str(s.votes),
        )
    return table


def _points(x: float) -> str:
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.0f}"
