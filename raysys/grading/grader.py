"""Grade model outputs against gold answers, one at a time or in batches."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from raysys.grading.bounded import SYMPY_WORKERS
from raysys.grading.equiv import fast_equiv, is_equiv, split_top, structure
from raysys.grading.extract import all_boxed, answer_region, extract_answer, gold_answer
from raysys.grading.normalize import normalize

# Styles that read boxes: an output that boxes each of several answers is graded on all of them.
_BOX_STYLES = ("default", "math")

# Worker processes take seconds to start (each imports sympy); below this many pairs that need
# sympy, grading them one by one in this process is faster.
MIN_POOL_PAIRS = 64


def several_boxes(text: str, gold: str, style: str) -> str | None:
    """The last n boxes of ``text`` joined by commas, when the gold answer lists n >= 2 items
    and the output has at least n boxes (``\\boxed{1}`` and ``\\boxed{2}`` against ``\\{1,2\\}``);
    ``None`` otherwise."""
    if style not in _BOX_STYLES or text.count("boxed") + text.count("fbox") < 2:
        return None
    key = normalize(gold)[0]
    shape = structure(key)
    n = len(shape[2]) if shape is not None and shape[0] != "matrix" else 1
    boxes = all_boxed(answer_region(text))
    if n < 2 or len(boxes) < n or len(split_top(key, "=")) > 1 and shape is None:
        return None
    return ", ".join(boxes[-n:])


def grade(text: str, gold: str, style: str = "default", timeout_s: float = 2.0) -> tuple[str, bool]:
    """Extract the final answer from ``text`` and compare it with ``gold``.

    ``gold`` may be the answer itself or a full solution (``#### x`` / ``\\boxed{x}``).
    Returns ``(pred_answer, correct)``; an output with no answer is never correct. When the
    gold lists several answers and the output boxes each one, the boxes are graded together.
    """
    pred, gold = extract_answer(text, style), gold_answer(gold)
    if pred and is_equiv(pred, gold, timeout_s):
        return pred, True
    joined = several_boxes(text, gold, style)
    if joined is not None and is_equiv(joined, gold, timeout_s):
        return joined, True
    return pred, False


class BudgetExceeded(RuntimeError):
    """:func:`grade_many` ran past its whole-call ``budget_s``: ``done`` of ``total`` rows were
    decided (the per-row bound ``timeout_s`` alone lets a file of hard rows run for days)."""

    def __init__(self, done: int, total: int, budget_s: float) -> None:
        super().__init__(f"grading stopped after the {budget_s:g} s budget with {done:,} of "
                         f"{total:,} rows decided")
        self.done, self.total, self.budget_s = done, total, budget_s


def grade_many(rows: list[tuple[str, str]], style: str = "default", processes: int | None = None,
               timeout_s: float = 2.0, budget_s: float | None = None) -> list[tuple[str, bool]]:
    """:func:`grade` over ``(text, gold)`` rows, in order.

    Every pair is first decided without sympy where possible (strings, numbers, structure).
    The pairs left need sympy; when there are at least ``MIN_POOL_PAIRS`` of them and
    ``processes`` (default: CPU count) is above 1, they are spread over that many killable
    sympy worker processes, otherwise graded here one by one.
    """
    deadline = None if budget_s is None else time.monotonic() + budget_s
    total = len(rows)

    def bound(done: int) -> float:
        """The next sympy call's bound: ``timeout_s``, or what is left of the budget."""
        if deadline is None:
            return timeout_s
        left = deadline - time.monotonic()
        if left <= 0:
            raise BudgetExceeded(done, total, budget_s)  # type: ignore[arg-type]
        return min(timeout_s, left)

    preds = [extract_answer(text, style) for text, _ in rows]
    golds = [gold_answer(gold) for _, gold in rows]
    results: list[bool | None] = [fast_equiv(p, g) if p else False for p, g in zip(preds, golds)]
    hard = [i for i, r in enumerate(results) if r is None]
    bound(total - len(hard))
    workers = processes if processes is not None else (os.cpu_count() or 1)
    if len(hard) >= MIN_POOL_PAIRS and workers > 1:
        # threads off the main thread send every sympy comparison to a worker process
        SYMPY_WORKERS.resize(workers)

        def one(i: int) -> bool | None:
            try:
                return is_equiv(preds[i], golds[i], bound(0))
            except BudgetExceeded:
                return None

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raysys-grade") as pool:
            decided = list(pool.map(one, hard))
        if None in decided:
            raise BudgetExceeded(total - decided.count(None), total, budget_s)  # type: ignore[arg-type]
    else:
        decided = []
        for n, i in enumerate(hard):
            decided.append(is_equiv(preds[i], golds[i], bound(total - len(hard) + n)))
    for i, ok in zip(hard, decided):
        results[i] = ok
    out = [(p, bool(r)) for p, r in zip(preds, results)]
    for i, (text, _) in enumerate(rows):   # rare: several boxes against a list (see grade)
        if not out[i][1]:
            joined = several_boxes(text, golds[i], style)
            if joined is not None and is_equiv(joined, golds[i], bound(total)):
                out[i] = (joined, True)
    return out
