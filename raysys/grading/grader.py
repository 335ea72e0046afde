"""Grade model outputs against gold answers, one at a time or in batches."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from raysys.grading.bounded import SYMPY_WORKERS
from raysys.grading.equiv import fast_equiv, is_equiv
from raysys.grading.extract import extract_answer, gold_answer

# Worker processes take seconds to start (each imports sympy); below this many pairs that need
# sympy, grading them one by one in this process is faster.
MIN_POOL_PAIRS = 64


def grade(text: str, gold: str, style: str = "default", timeout_s: float = 2.0) -> tuple[str, bool]:
    """Extract the final answer from ``text`` and compare it with ``gold``.

    ``gold`` may be the answer itself or a full solution (``#### x`` / ``\\boxed{x}``).
    Returns ``(pred_answer, correct)``; an output with no answer is never correct.
    """
    pred = extract_answer(text, style)
    return pred, bool(pred) and is_equiv(pred, gold_answer(gold), timeout_s)


def grade_many(rows: list[tuple[str, str]], style: str = "default", processes: int | None = None,
               timeout_s: float = 2.0) -> list[tuple[str, bool]]:
    """:func:`grade` over ``(text, gold)`` rows, in order.

    Every pair is first decided without sympy where possible (strings, numbers, structure).
    The pairs left need sympy; when there are at least ``MIN_POOL_PAIRS`` of them and
    ``processes`` (default: CPU count) is above 1, they are spread over that many killable
    sympy worker processes, otherwise graded here one by one.
    """
    preds = [extract_answer(text, style) for text, _ in rows]
    golds = [gold_answer(gold) for _, gold in rows]
    results: list[bool | None] = [fast_equiv(p, g) if p else False for p, g in zip(preds, golds)]
    hard = [i for i, r in enumerate(results) if r is None]
    workers = processes if processes is not None else (os.cpu_count() or 1)
    if len(hard) >= MIN_POOL_PAIRS and workers > 1:
        # threads off the main thread send every sympy comparison to a worker process
        SYMPY_WORKERS.resize(workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raysys-grade") as pool:
            decided = list(pool.map(lambda i: is_equiv(preds[i], golds[i], timeout_s), hard))
    else:
        decided = [is_equiv(preds[i], golds[i], timeout_s) for i in hard]
    for i, ok in zip(hard, decided):
        results[i] = ok
    return [(p, bool(r)) for p, r in zip(preds, results)]
