"""Build a database of many votes for timing `tiankong prefs stats` and `prefs export` (see the
docstring of tiankong/tui/leaderboard.py for the figures).

    python bench/million_votes.py bench/out/votes-1m --votes 1000000
    /usr/bin/time -v tiankong prefs stats --data-dir bench/out/votes-1m > /dev/null
    /usr/bin/time -v tiankong prefs export --data-dir bench/out/votes-1m -o /tmp/prefs.jsonl

The votes look like the playground's: 2-4 responses of ~300 characters from 4 presets and 3 models,
full and partial rankings, ties and both-bad votes, a two-turn conversation. Rows are written with
the store's own row encoding (`_vote_row`) in large transactions, seeded, so the file is the same
each time.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
from pathlib import Path

from decode import Help

from tiankong.tui.store import DB_NAME, Response, Store, Vote
from tiankong.tui.store_records import _vote_row

PRESETS = ["balanced", "creative", "precise", "chat"]
MODELS = ["/runs/sft", "/runs/ppo", "/runs/dpo"]
WORDS = "the a model answer blue sky red river token cloze 填空 story fox jumps over lazy dog".split()


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def vote(rng: random.Random, i: int) -> Vote:
    k = rng.choice([2, 2, 2, 3, 4])
    responses = [
        Response(
            "ABCD"[a],
            rng.choice(MODELS),
            rng.choice(PRESETS),
            {"temperature": 0.7, "top_p": 0.9},
            rng.randrange(1 << 31),
            text(rng, 60),
            "eos",
        )
        for a in range(k)
    ]
    r = rng.random()
    outcome = "ranked" if r < 0.8 else "tie" if r < 0.9 else "both_bad"
    ranking, n_ranked = [], None
    if outcome == "ranked":
        ranking = rng.sample(range(k), k)
        n_ranked = rng.choice([None, 1]) if k > 2 else None
    prompt = f"{text(rng, 12)} {i}"
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": prompt},
    ]
    return Vote(None, prompt, conversation, responses, outcome, ranking, "ann", True, n_ranked=n_ranked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Help)
    ap.add_argument("folder", type=Path, help="the data folder to write (its tiankong.db must not exist yet)")
    ap.add_argument("--votes", type=int, default=1_000_000, help="votes to write")
    ap.add_argument("--seed", type=int, default=0, help="seed of the votes' contents")
    args = ap.parse_args()
    path = args.folder / DB_NAME
    if path.exists():
        raise SystemExit(f"{path} exists; delete it to rebuild")
    Store(path).close()  # the schema, by the store itself
    rng = random.Random(args.seed)
    t = "2025-01-01T00:00:00.000000Z"
    insert = (
        "INSERT INTO votes (prompt, conversation, responses, outcome, ranking, rater, blind, source, "
        "created_at, n_ranked, prompt_id, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for start in range(0, args.votes, 50_000):
            rows = [_vote_row(vote(rng, i), t) for i in range(start, min(start + 50_000, args.votes))]
            conn.executemany(insert, rows)
            conn.commit()
    conn.close()
    print(f"{args.votes} votes in {path} ({path.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
