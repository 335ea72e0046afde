"""A child process that compares LaTeX answers with sympy, so the parent can kill it.

Started by :class:`raysys.grading.bounded.SympyWorker` as ``python -m
raysys.grading.sympy_worker`` (not through multiprocessing, so the parent's ``__main__`` is never
re-imported). Protocol, one JSON line each way: ``["a", "b"]`` -> ``true`` / ``false``; the
first line it writes is ``"ready"``.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    """Serve comparisons on stdin/stdout until stdin closes."""
    from raysys.grading.symbolic import load_sympy, sympy_equal

    load_sympy()
    out = sys.stdout
    out.write('"ready"\n')
    out.flush()
    for line in sys.stdin:
        a, b = json.loads(line)
        out.write("true\n" if sympy_equal(a, b) else "false\n")
        out.flush()


if __name__ == "__main__":
    main()
