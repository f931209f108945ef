"""A batcher request's row count as its consumer sees it (engine/batcher.py Request)."""

from __future__ import annotations

from tiankong.engine.batcher import Request
from tiankong.engine.sampling import SamplingParams


def test_a_finished_row_is_free_when_its_answer_goes_out():
    """QA (CI under load): serve with --max-queue 0 answered a client that asked again at once after
    its answer with 429 "2 of the server's 2 rows are busy": the row was counted free only after its
    Finished had gone out. The sink sees the count already lowered; `done` is set after the last."""
    seen: list[tuple[int, bool]] = []

    def sink(ev) -> None:
        seen.append((req.rows_left, req.done.is_set()))

    req = Request([1, 2], [SamplingParams(), SamplingParams()], 0, sink, lambda: None)
    req.finish_unstarted("cancelled")
    assert seen == [(1, False), (0, False)] and req.done.is_set() and req.rows_left == 0
