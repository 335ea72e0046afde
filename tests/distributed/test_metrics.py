"""summarize_samples against hand-computed accuracy, maj@k and pass@k; per-problem maj@k votes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from raysys.data.schema import conform
from raysys.distributed.metrics import (default_k_list, maj_outcomes, metrics_markdown,
                                        summarize_samples)


def _table(rows: list[tuple[str, int, str, bool | None]]) -> pa.Table:
    return conform([{"problem_id": p, "sample_idx": i, "prompt": "q", "completion": "c", "pred": pred,
                     "correct": ok} for p, i, pred, ok in rows], "samples")


# Problem a: samples 5, 7, 7, 7 with gold 7 -> first wrong, majority right, 3 of 4 correct.
# Problem b: samples 2, 3, 4, 2 with gold 2 -> first right, maj@2 tie (2 first) right, 2 of 4.
# Problem c: samples 1, 1, 9, 9 with gold 9 -> first wrong, maj@4 tie goes to 1 (seen first), 2 of 4.
ROWS = [("a", 3, "7", True), ("a", 0, "5", False), ("a", 1, "7", True), ("a", 2, "7", True),
        ("b", 0, "2", True), ("b", 1, "3", False), ("b", 2, "4", False), ("b", 3, "2", True),
        ("c", 0, "1", False), ("c", 1, "1", False), ("c", 2, "9", True), ("c", 3, "9", True)]


def test_default_k_list() -> None:
    assert default_k_list(1) == [1]
    assert default_k_list(4) == [1, 2, 4]
    assert default_k_list(6) == [1, 2, 4, 6]


def test_summarize_samples_matches_hand_computed_values() -> None:
    m = summarize_samples(_table(ROWS), [1, 2, 4])
    assert (m["problems"], m["samples"], m["n"]) == (3, 12, 4)
    assert m["accuracy"] == pytest.approx(1 / 3)          # only b's first sample is right
    assert m["maj@1"] == pytest.approx(1 / 3)
    # maj@2: a {5, 7} tie -> 5 wrong; b {2, 3} -> 2 right; c {1, 1} -> wrong.
    assert m["maj@2"] == pytest.approx(1 / 3)
    # maj@4: a -> 7 right; b -> 2 right; c 1 vs 9 tie -> 1 wrong.
    assert m["maj@4"] == pytest.approx(2 / 3)
    # pass@1 = mean c/n = (3/4 + 2/4 + 2/4) / 3.
    assert m["pass@1"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    # pass@2 = 1 - C(n-c, 2)/C(4, 2): a 1 - 0 = 1, b and c 1 - 1/6.
    assert m["pass@2"] == pytest.approx((1 + 5 / 6 + 5 / 6) / 3)
    assert m["pass@4"] == pytest.approx(1.0)


def test_problems_without_gold_are_not_graded() -> None:
    rows = ROWS[:4] + [("z", 0, "1", None), ("z", 1, "2", None), ("z", 2, "", None), ("z", 3, "", None)]
    m = summarize_samples(_table(rows), [1])
    assert (m["problems"], m["graded_problems"]) == (2, 1)
    assert m["accuracy"] == 0.0 and m["pass@1"] == pytest.approx(0.75)


def test_maj_outcomes_per_problem_match_the_hand_computed_votes() -> None:
    """The per-problem votes behind maj@k (what `raysys compare ROW@maj` pairs); a problem
    with an ungraded sample is left out."""
    assert maj_outcomes(_table(ROWS), 2) == {"a": False, "b": True, "c": False}
    assert maj_outcomes(_table(ROWS), 4) == {"a": True, "b": True, "c": False}
    rows = ROWS + [("z", 0, "1", None), ("z", 1, "2", None), ("z", 2, "", None), ("z", 3, "", None)]
    assert set(maj_outcomes(_table(rows), 4)) == {"a", "b", "c"}


def test_k_above_n_is_an_error() -> None:
    with pytest.raises(ValueError, match="k=8"):
        summarize_samples(_table(ROWS), [8])


def test_markdown_lists_each_metric_as_percent() -> None:
    md = metrics_markdown({**summarize_samples(_table(ROWS), [1, 4]), "tokens_generated": 10,
                           "tokens_per_s": 2.5, "tokens_per_engine_s": 5.0, "wall_s": {"generate": 4.0}})
    assert "| accuracy (first sample) | 33.3% |" in md
    assert "| maj@4 | 66.7% |" in md and "| pass@4 | 100.0% |" in md
    assert "| wall time: generate | 4.00 s |" in md
    assert "| tokens/s (wall, incl. engine start) | 2.5 |" in md
