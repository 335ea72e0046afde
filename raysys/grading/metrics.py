"""Sample-set metrics: majority vote, maj@k, unbiased pass@k, Wilson intervals. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence

from raysys.grading.equiv import is_equiv
from raysys.grading.normalize import normalize


def majority_vote(answers: Sequence[str], timeout_s: float = 2.0) -> str:
    """The most common answer, grouping answers that are equivalent (or equal when normalized).

    Ties go to the group seen first; an empty answer wins only when every answer is empty.
    Returns the first-seen spelling of the winning group.
    """
    groups: list[list[str]] = []   # each group: its spellings, first-seen first
    by_key: dict[str, int] = {}
    for ans in answers:
        if not ans.strip():
            continue
        key = normalize(ans)[0]
        idx = by_key.get(key)
        if idx is None:
            idx = next((i for i, g in enumerate(groups) if is_equiv(ans, g[0], timeout_s)), None)
            if idx is None:
                groups.append([])
                idx = len(groups) - 1
            by_key[key] = idx
        groups[idx].append(ans)
    if not groups:
        return answers[0] if answers else ""
    best = max(range(len(groups)), key=lambda i: (len(groups[i]), -i))
    return groups[best][0]


def maj_at_k_correct(answers: Sequence[str], gold: str, k: int | None = None,
                     timeout_s: float = 2.0) -> bool:
    """Whether the majority vote of the first ``k`` answers (all when ``None``) equals ``gold``."""
    pool = list(answers if k is None else answers[:k])
    winner = majority_vote(pool, timeout_s)
    return bool(winner.strip()) and is_equiv(winner, gold, timeout_s)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021):
    ``1 - C(n-c, k) / C(n, k)``, computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion; ``(0.0, 1.0)`` when ``n == 0``."""
    if n == 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n, got {successes}/{n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
