"""Paired bootstrap of accuracy differences: hand-computed differences, flips, determinism."""

from __future__ import annotations

import pytest

from raysys.pipeline.stats import paired_bootstrap


def test_identical_outcomes_give_a_zero_interval() -> None:
    d = paired_bootstrap([True, False, True], [True, False, True])
    assert (d.diff, d.lo, d.hi, d.gained, d.lost) == (0.0, 0.0, 0.0, 0, 0)
    assert not d.significant


def test_difference_flips_and_interval_of_a_clear_gain() -> None:
    a = [False] * 50 + [True] * 50
    b = [True] * 40 + [False] * 10 + [True] * 50          # 40 gained, none lost
    d = paired_bootstrap(a, b, n_boot=1000, seed=1)
    assert d.diff == pytest.approx(0.4) and (d.gained, d.lost, d.n) == (40, 0, 100)
    assert 0.25 < d.lo < 0.4 < d.hi < 0.55 and d.significant
    assert d.cell().startswith("+40.0 [")
    assert paired_bootstrap(a, b, n_boot=1000, seed=1) == d          # seeded


def test_a_balanced_swap_is_not_significant() -> None:
    a = [True] * 10 + [False] * 10
    b = [False] * 10 + [True] * 10
    d = paired_bootstrap(a, b, n_boot=1000)
    assert d.diff == 0.0 and d.lo < 0 < d.hi and (d.gained, d.lost) == (10, 10)


def test_unpaired_input_is_refused() -> None:
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([True], [True, False])
