"""Statistics for reports: paired bootstrap of an accuracy difference on the same problems, and
the same difference over retrained runs (seeds), training noise included."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedDiff:
    """``b - a`` in accuracy on the same problems, its 95% bootstrap interval, and flips."""

    diff: float
    lo: float
    hi: float
    gained: int          # problems b gets right and a gets wrong
    lost: int            # problems a gets right and b gets wrong
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes no effect."""
        return self.lo > 0 or self.hi < 0

    def cell(self) -> str:
        """``+2.5 [+0.5, +4.5] (12/2)`` in points."""
        return (f"{100 * self.diff:+.1f} [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}] "
                f"({self.gained}/{self.lost})")


# What a paired-bootstrap CI leaves out, for reports that call a difference shown. Measured: the
# same tiny configs on two machines moved differences by up to 5 points and flipped small ones
# (benchmarks/RESULTS.md, "Reproducibility of the tiny-model tables").
TRAINING_NOISE = ("The CIs cover the draw of test problems, not training noise: a retrained "
                  "model (another seed, CPU or library version) moves a difference too, so one "
                  "run's small effect is not yet a replicated one; `raysys compare` over reruns "
                  "with other seeds measures it.")


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], *, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> PairedDiff:
    """Percentile bootstrap of ``mean(b) - mean(a)`` resampling problems (pairs) with
    replacement; seeded, so a report is reproducible."""
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap: {len(a)} vs {len(b)} outcomes (must be paired)")
    n = len(a)
    if n == 0:
        return PairedDiff(0.0, 0.0, 0.0, 0, 0, 0)
    d = [int(bool(y)) - int(bool(x)) for x, y in zip(a, b)]
    rng = random.Random(seed)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    k = int((1 - level) / 2 * n_boot)
    return PairedDiff(sum(d) / n, means[k], means[n_boot - 1 - k], d.count(1), d.count(-1), n)


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile ``P(T <= t) = p`` for ``df >= 1`` degrees of freedom, ``p`` in
    (0.5, 1): exact for 1 and 2, Cornish-Fisher (Abramowitz & Stegun 26.7.5) from 3 on, where
    it is within 0.1% (3.179 for the table's 3.182 at df 3, p 0.975)."""
    import math
    from statistics import NormalDist

    if df < 1 or not 0.5 < p < 1:
        raise ValueError(f"t_quantile: need df >= 1 and 0.5 < p < 1, got df={df}, p={p}")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g = ((z**3 + z) / 4,
         (5 * z**5 + 16 * z**3 + 3 * z) / 96,
         (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


@dataclass(frozen=True)
class ReplicatedDiff:
    """``b - a`` over runs that retrained the same recipe (other seeds) and were graded on the
    same test problems: the mean of the runs' differences and an interval that covers both
    training noise (how the runs disagree) and the draw of problems."""

    per_run: tuple[float, ...]
    diff: float
    lo: float
    hi: float
    df: int              # Welch-Satterthwaite degrees of freedom of the interval
    n_problems: int

    @property
    def significant(self) -> bool:
        """The interval excludes no effect."""
        return self.lo > 0 or self.hi < 0

    def cell(self) -> str:
        """``+2.5 [+0.5, +4.5]`` in points."""
        return f"{100 * self.diff:+.1f} [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}]"


def replicated_diff(runs: Sequence[tuple[Sequence[bool], Sequence[bool]]], *,
                    level: float = 0.95) -> ReplicatedDiff:
    """Mean over runs of ``mean(b) - mean(a)``, with a t interval from two variance parts.

    Each run gives paired outcomes ``(a, b)`` on the same problems in the same order. With
    ``d[s][i]`` the difference of run ``s`` on problem ``i`` (-1, 0 or 1): training noise is the
    variance of the runs' mean differences over ``S`` runs; the draw of problems is the variance
    over problems of ``d`` averaged across runs, over ``n``. The interval is mean ± t × the
    root of their sum, t at Welch-Satterthwaite degrees of freedom (rounded down: wider).
    The run-to-run variance also holds some per-problem noise, so the interval errs wide.
    Needs at least 2 runs (one run cannot show training noise).
    """
    import math

    if len(runs) < 2:
        raise ValueError(f"replicated_diff: {len(runs)} run(s); at least 2 are needed")
    n = len(runs[0][0])
    for s, (a, b) in enumerate(runs):
        if not len(a) == len(b) == n:
            raise ValueError(f"replicated_diff: run {s} has {len(a)} / {len(b)} outcomes, "
                             f"expected {n} paired")
    if n < 2:
        raise ValueError(f"replicated_diff: {n} problem(s); at least 2 are needed")
    d = [[int(bool(y)) - int(bool(x)) for x, y in zip(a, b)] for a, b in runs]
    k = len(d)
    per_run = [sum(row) / n for row in d]
    mean = sum(per_run) / k
    per_problem = [sum(d[s][i] for s in range(k)) / k for i in range(n)]
    var_train = sum((v - mean) ** 2 for v in per_run) / (k - 1) / k
    var_problems = sum((v - mean) ** 2 for v in per_problem) / (n - 1) / n
    se2 = var_train + var_problems
    if se2 == 0:
        return ReplicatedDiff(tuple(per_run), mean, mean, mean, k - 1, n)
    df = se2**2 / (var_train**2 / (k - 1) + var_problems**2 / (n - 1))
    dof = max(1, math.floor(df))
    half = t_quantile(0.5 + level / 2, dof) * math.sqrt(se2)
    return ReplicatedDiff(tuple(per_run), mean, mean - half, mean + half, dof, n)
