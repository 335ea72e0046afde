"""Paired bootstrap of accuracy differences: hand-computed differences, flips, determinism; the
t quantile and the difference over replicate runs."""

from __future__ import annotations

import math

import pytest

from raysys.pipeline.stats import paired_bootstrap, replicated_diff, t_quantile


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


# Student's t table, two-sided 95% (p = 0.975) and one 90% value.
@pytest.mark.parametrize(("p", "df", "table"), [
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776),
    (0.975, 10, 2.228), (0.975, 30, 2.042), (0.95, 10, 1.812)])
def test_t_quantile_matches_the_table(p: float, df: int, table: float) -> None:
    assert t_quantile(p, df) == pytest.approx(table, abs=0.004)


def test_t_quantile_refuses_what_it_cannot_give() -> None:
    for p, df in ((0.975, 0), (0.4, 3), (1.0, 3)):
        with pytest.raises(ValueError, match="t_quantile"):
            t_quantile(p, df)


def test_replicated_diff_by_hand() -> None:
    # run 0: d = [0, 1, 0, 0] (mean 0.25); run 1: d = [0, 1, 0, 1] (mean 0.5); mean 0.375.
    # training: var of (0.25, 0.5) = 0.03125, / 2 runs = 1/64. problems: d averaged over runs
    # = [0, 1, 0, 0.5], var 0.6875 / 3 = 0.229167, / 4 = 11/192. sum 7/96.
    # Welch df = (7/96)^2 / ((1/64)^2 / 1 + (11/192)^2 / 3) = 3.97 -> 3.
    runs = [([1, 0, 0, 1], [1, 1, 0, 1]), ([1, 0, 1, 0], [1, 1, 1, 1])]
    r = replicated_diff(runs)
    assert r.per_run == (0.25, 0.5) and r.diff == 0.375 and r.n_problems == 4 and r.df == 3
    half = t_quantile(0.975, 3) * math.sqrt(7 / 96)
    assert (r.lo, r.hi) == pytest.approx((0.375 - half, 0.375 + half))
    assert not r.significant
    assert r.cell() == f"+37.5 [{100 * (0.375 - half):+.1f}, {100 * (0.375 + half):+.1f}]"


def test_runs_that_disagree_widen_the_interval_beyond_one_runs_bootstrap() -> None:
    """Same problems, same pooled mean: runs that agree give about the problem-only width;
    runs that split +20 / 0 add training noise, and the interval takes it in."""
    n = 100
    base = [False] * n
    gain20 = [True] * 20 + [False] * 80
    gain10 = [True] * 10 + [False] * 90
    agree = replicated_diff([(base, gain10), (base, gain10), (base, gain10)])
    split = replicated_diff([(base, gain20), (base, base), (base, gain10)])
    assert agree.diff == pytest.approx(0.1) and split.diff == pytest.approx(0.1)
    assert agree.df == n - 1 and split.df < n - 1
    assert split.hi - split.lo > 2 * (agree.hi - agree.lo)
    single = paired_bootstrap(base, gain10)
    assert agree.hi - agree.lo == pytest.approx(single.hi - single.lo, rel=0.15)


def test_replicated_diff_refuses_one_run_and_unpaired_runs() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        replicated_diff([([True, False], [True, True])])
    with pytest.raises(ValueError, match="run 1 has 2 / 3"):
        replicated_diff([([True, False], [True, True]), ([True, False], [True, True, False])])
    same = replicated_diff([([False, False], [True, True])] * 2)
    assert same.lo == same.hi == same.diff == 1.0          # no variance at all: a point
