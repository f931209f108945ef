"""Training metrics: one JSON object per step in `metrics.jsonl`, and terminal plots of them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from tiankong.engine.errors import InputError
from tiankong.engine.files import atomic_write_text


class MetricsWriter:
    """Appends rows to metrics.jsonl; on resume, rows past the restored step are dropped first."""

    def __init__(self, path: Path, enabled: bool = True, truncate_after: int | None = None) -> None:
        self.enabled = enabled
        self.f = None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if (row := _row(line)) is not None and row.get("step", 0) <= truncate_after
            ]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self.f = open(path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        if self.f is not None:
            self.f.write(json.dumps(row) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def _row(line: str) -> dict[str, Any] | None:
    """One metrics row; None for a blank line or the torn last line of a killed run."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"no metrics at {path}; pass a training output folder or its metrics.jsonl")
    rows = []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(
                f"{path} line {n}: not UTF-8 text, so not a metrics row; pass a run's metrics.jsonl"
            ) from None
        if (row := _row(line)) is not None:
            rows.append(row)
    return rows


MIN_WIDTH = 20  # the y axis' labels take 8 columns; below this the curve has no room


def plot_metrics(run: str | Path, keys: Sequence[str] | None = None, width: int = 100, height: int = 12) -> str:
    """The curves of a run as terminal text (one small plot per metric)."""
    import plotext as plt

    if width < MIN_WIDTH:  # plotext draws nothing at 0 or below, and an unreadable box just above
        raise InputError(f"--width must be at least {MIN_WIDTH} columns for a readable plot, got {width}")

    rows = read_metrics(run)
    if not rows:
        raise InputError(f"{run} has no metric rows yet")
    skip = {"step", "lr", "grad_norm"}
    known = list(dict.fromkeys(k for r in rows for k, v in r.items() if k != "step" and isinstance(v, (int, float))))
    unknown = [k for k in keys or () if k not in known]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise InputError(f"{run} has no metric {names}; its metrics are {', '.join(known) or 'none'}")
    keys = list(keys or [k for k in rows[-1] if k not in skip and isinstance(rows[-1][k], (int, float))])
    out = []
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if not pts:
            continue
        # A diverged run's NaN or inf (json reads both) would make plotext abort the process: not drawn, said.
        bad = [step for step, v in pts if not math.isfinite(v)]
        note = f"; {len(bad)} non-finite point{'s' * (len(bad) > 1)} from step {bad[0]} not drawn" if bad else ""
        drawn = [(step, v) for step, v in pts if math.isfinite(v)]
        if len(drawn) < 2:  # one point (e.g. an eval at the end only) is a figure, not a curve
            first = f"{drawn[0][1]:.4g} at step {drawn[0][0]} (one point, " if drawn else "no finite value ("
            out.append(f"{key}: {first}nothing to plot{note})")
            continue
        xs, ys = [p[0] for p in drawn], [p[1] for p in drawn]
        title = f"{key}  (last {pts[-1][1]:.4g} at step {pts[-1][0]}{note})"
        out.append(_plot(plt, xs, ys, title, width, height))
    return "\n".join(out)


def diverged_at(rows: Sequence[dict[str, Any]], key: str = "loss") -> int | None:
    """The first step whose `key` is NaN or infinite (a diverged run), or None."""
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and not math.isfinite(v):
            return int(r.get("step", 0))
    return None


def _plot(plt, xs: list, ys: list, title: str, width: int, height: int) -> str:
    """One line plot as text; plotext 5's module-level API, or plotext 6's figure object."""
    if hasattr(plt, "clear_figure"):  # plotext 5
        plt.clear_figure()
        plt.plotsize(width, height)
        plt.theme("clear")
        plt.plot(xs, ys, marker="braille")
        plt.xticks(ticks := step_ticks(xs), [str(t) for t in ticks])
        plt.title(title)
        plt.xlabel("step")
        return plt.build()
    fig = plt.figure  # plotext 6: signals are drawn onto the figure explicitly
    fig.clear()
    fig.plot_size(width, height)
    fig.theme("colorless")
    fig.draw(fig.signal(xs, ys, marker="braille").lines())
    fig.ruler("x").ticks(ticks := step_ticks(xs), [str(t) for t in ticks])
    fig.title(title)
    fig.label("step", axis="x")
    return plt.uncolorize(fig.build())


def step_ticks(steps: Sequence[int], most: int = 7) -> list[int]:
    """Where the step axis is labelled: whole steps, the first and last included, at most `most` of
    them spread evenly (plotext's own ticks read "1.0 4.2 7.3 10.5" on a run of 20 steps)."""
    lo, hi = int(min(steps)), int(max(steps))
    if hi - lo < most:
        return list(range(lo, hi + 1))
    return sorted({round(lo + i * (hi - lo) / (most - 1)) for i in range(most)})
