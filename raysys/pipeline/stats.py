"""Statistics for reports: paired bootstrap of an accuracy difference on the same problems."""

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
                  "run's small effect is not yet a replicated one.")


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
