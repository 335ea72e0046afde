"""Symbolic comparison, always time-bounded: our sympy rules first, Math-Verify second.

:func:`sympy_equal` parses both canonical answers with latex2sympy2_extended and compares them
(:func:`expr_equal`); when that does not prove them equal, Math-Verify's ``verify`` decides
(relations with sides flipped, intervals against the inequality they describe, equations up to
rearrangement). Math-Verify's own timeouts use ``SIGALRM`` and only work in a main thread, so
they are switched off here and every call runs under :mod:`raysys.grading.bounded` instead (an
alarm in the main thread, a killable worker process everywhere else).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from raysys.grading.bounded import SYMPY_WORKERS, call_with_alarm, in_main_thread

_DIGIT_RUN = re.compile(r"\d{41,}")
_EXPONENT = re.compile(r"\^\s*(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}|\\?[a-zA-Z0-9]+)")
_FACTORIAL = re.compile(r"(\d+)\s*!")
# Words of 3+ letters that are math, not prose (Math-Verify would pull a number out of prose).
_MATH_WORDS = {"sqrt", "log", "exp", "sin", "cos", "tan", "cot", "sec", "csc", "infty", "inf",
               "frac", "dfrac", "tfrac", "cdot", "times", "div", "left", "right", "begin", "end",
               "pmatrix", "bmatrix", "matrix", "array", "circ", "cup", "cap", "emptyset",
               "varnothing", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "mathrm"}


class _Untimed:
    """Math-Verify call options: its signal timeouts off (we bound every call ourselves)."""
    parse = {"parsing_timeout": None}
    verify = {"timeout_seconds": None, "allow_set_relation_comp": True}


def risky(latex: str) -> bool:
    """Inputs that could start a C-level computation a signal cannot interrupt (huge powers,
    factorials, very long numbers): these go to the killable worker process."""
    if _DIGIT_RUN.search(latex):
        return True
    for m in _EXPONENT.finditer(latex):
        exp = m.group(1)
        if "^" in exp or "!" in exp or re.search(r"\d{4,}", exp):
            return True
    return any(int(m.group(1)) > 500 for m in _FACTORIAL.finditer(latex))


def is_prose(key: str) -> bool:
    """Whether a canonical answer holds words (3+ letters that are not math commands)."""
    return any(w.lower() not in _MATH_WORDS for w in re.findall(r"[a-zA-Z]{3,}", key))


@lru_cache(maxsize=1)
def load_sympy() -> None:
    """Import sympy, the LaTeX parser and Math-Verify and build their parser tables once,
    outside any time bound (this takes seconds on a busy machine)."""
    import math_verify.grader
    import math_verify.parser

    # we pass timeouts of None on purpose; silence the one-time warning about it
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    _to_sympy("x+1")
    mv_equal("x+1", "1+x")


@lru_cache(maxsize=4096)
def _to_sympy(latex: str) -> Any:
    from latex2sympy2_extended import NormalizationConfig, latex2sympy

    config = NormalizationConfig(basic_latex=True, units=True, malformed_operators=True,
                                 nits=False, boxed="none", equations=False)
    return latex2sympy(latex, normalization_config=config)


def _number_equal(x: Any, y: Any) -> bool:
    """Two constant expressions: exact when both are rational (``2^{100}`` vs ``2^{100}+1``),
    otherwise within 1e-9 relative after 30-digit evaluation; never for infinities or NaN."""
    import sympy

    diff = x - y
    if diff.is_Rational or (x.is_rational and y.is_rational):
        return bool(diff == 0)
    value = complex(sympy.N(diff, 30))
    scale = max(1.0, abs(complex(sympy.N(y, 30))))
    finite = all(abs(v) < float("inf") for v in (value, scale))
    return finite and abs(value) <= 1e-9 * scale


def expr_equal(x: Any, y: Any) -> bool:
    """Whether two parsed answers are equal: matrices / tuples / sets by parts, equations up to
    a nonzero constant factor, numbers exactly or numerically, expressions by ``simplify``."""
    import sympy

    if x.has(sympy.nan) or y.has(sympy.nan):
        return False
    if x == y:
        return True
    if isinstance(x, sympy.MatrixBase) or isinstance(y, sympy.MatrixBase):
        if not (isinstance(x, sympy.MatrixBase) and isinstance(y, sympy.MatrixBase)):
            return False
        return x.shape == y.shape and all(expr_equal(a, b) for a, b in zip(x, y))
    if isinstance(x, sympy.Tuple) or isinstance(y, sympy.Tuple):
        return (isinstance(x, sympy.Tuple) and isinstance(y, sympy.Tuple) and len(x) == len(y)
                and all(expr_equal(a, b) for a, b in zip(x, y)))
    if isinstance(x, sympy.Set) or isinstance(y, sympy.Set):
        return (isinstance(x, sympy.Set) and isinstance(y, sympy.Set)
                and bool(sympy.simplify(x) == sympy.simplify(y)))
    relational = sympy.core.relational.Relational
    if isinstance(x, relational) or isinstance(y, relational):
        if type(x) is not type(y):
            return False
        dx, dy = x.lhs - x.rhs, y.lhs - y.rhs
        if expr_equal(dx, dy) or expr_equal(dx, -dy):
            return True
        if isinstance(x, sympy.Eq) and dy != 0:   # 2x+2y=2 is x+y=1
            ratio = sympy.simplify(dx / dy)
            return not ratio.free_symbols and ratio != 0 and ratio.is_finite is True
        return False
    if not (isinstance(x, sympy.Expr) and isinstance(y, sympy.Expr)):
        return False
    if x.has(sympy.zoo, sympy.oo, -sympy.oo) or y.has(sympy.zoo, sympy.oo, -sympy.oo):
        return False   # x == y above already matched equal infinities
    if not (x - y).free_symbols:
        return _number_equal(x, y)
    return bool(sympy.simplify(x - y) == 0)


def mv_equal(a: str, b: str) -> bool:
    """Math-Verify's verdict on two LaTeX answers (``b`` is the gold), its timeouts off."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold = parse(f"${b}$", config, **_Untimed.parse)
    pred = parse(f"${a}$", config, **_Untimed.parse)
    if not gold or not pred:
        return False
    if any(getattr(e, "has", None) and e.has(_nan()) for e in (*gold, *pred)):
        return False
    return bool(verify(gold, pred, **_Untimed.verify))


def _nan() -> Any:
    import sympy

    return sympy.nan


def sympy_equal(a: str, b: str) -> bool:
    """Our sympy rules, then Math-Verify (unbounded: use :func:`bounded_sympy_equal`)."""
    try:
        if expr_equal(_to_sympy(a), _to_sympy(b)):
            return True
    except Exception:   # unparsable or unsupported by sympy: Math-Verify may still parse it
        pass
    if is_prose(a) or is_prose(b):
        return False
    try:
        return mv_equal(a, b)
    except Exception:
        return False


def bounded_sympy_equal(a: str, b: str, timeout_s: float) -> bool:
    """:func:`sympy_equal` under a wall-clock bound; ``False`` on timeout.

    Main thread and harmless input: in-process under an alarm. Otherwise: in the killable
    child process.
    """
    if in_main_thread() and not (risky(a) or risky(b)):
        load_sympy()
        finished, result = call_with_alarm(sympy_equal, (a, b), timeout_s)
        return bool(finished and result)
    return bool(SYMPY_WORKERS.equal(a, b, timeout_s))
