"""Math answer equivalence: canonical strings and exact numbers first, structure (tuples,
intervals, sets, matrices, ``±``) next, and sympy, time-bounded, only for what is left.

Order of decisions in :func:`is_equiv`:
1. equal canonical strings (:func:`raysys.grading.normalize.normalize`) -> equal;
2. two plain numbers -> exact rational comparison (never sympy). A percent sign is dropped
   (MATH convention: ``50\\%`` == ``50``), and ``50\\%`` also equals ``0.5``;
3. bracketed structures compare element-wise: tuples and intervals in order with the same
   brackets (``[1,2)`` != ``[1,2]``), sets / comma lists / unions in any order, matrices by
   shape and cells;
4. plain words (``east``) only by string;
5. otherwise both sides are parsed with latex2sympy2_extended (never ``eval``) and compared
   symbolically and numerically, bounded in time (:mod:`raysys.grading.bounded`); a timeout
   or a parse failure means "not equal".
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from raysys.grading.bounded import SYMPY_WORKERS, call_with_alarm, in_main_thread
from raysys.grading.normalize import normalize, parse_number

_MATRIX = re.compile(r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.S)
_OPEN = {"(": ")", "[": "]", "{": "}"}
_PLAIN_WORDS = re.compile(r"^[a-z]{3,}(?: [a-z]+)*$")
_DIGIT_RUN = re.compile(r"\d{41,}")
_EXPONENT = re.compile(r"\^\s*(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}|\\?[a-zA-Z0-9]+)")
_FACTORIAL = re.compile(r"(\d+)\s*!")
# Longer "answers" are prose or garbage: compared as strings only.
MAX_SYMPY_CHARS = 400


class NeedsSympy(Exception):
    """Raised by the sympy-free pass when a pair can only be decided by sympy."""


# ------------------------------------------------------------------------------------------
# Structure
# ------------------------------------------------------------------------------------------


def split_top(s: str, sep: str = ",") -> list[str]:
    """Split ``s`` at ``sep`` outside any (), [], {} or ``\\{ \\}`` group."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _wraps_whole(s: str) -> bool:
    """True when the bracket opening ``s`` closes at its last character ((a,b) or [a,b))."""
    depth = 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


def structure(key: str) -> tuple[str, str, list[str]] | None:
    """``(kind, brackets, items)`` of a canonical answer, or ``None`` for a scalar.

    Kinds: ``matrix`` (brackets = shape), ``seq`` (tuple / interval; brackets = "()", "[)", ...),
    ``set`` (``\\{..\\}``, comma lists, ``\\cup`` unions, ``a \\pm b``: order-free).
    """
    m = _MATRIX.match(key)
    if m:
        rows = [r for r in (x.strip() for x in re.split(r"\\\\", m.group(2))) if r]
        cells = [split_top(r, "&") for r in rows]
        shape = f"{len(rows)}x{len(cells[0]) if cells else 0}"
        return "matrix", shape, [c for r in cells for c in r]
    union = split_top(key, "\\cup")
    if len(union) > 1:
        return "set", "", union
    if key.startswith("\\{") and key.endswith("\\}") and _set_wraps_whole(key):
        return "set", "", _expand_pm(split_top(key[2:-2]))
    if len(key) >= 2 and key[0] in "([" and key[-1] in ")]" and _wraps_whole(key):
        items = split_top(key[1:-1])
        if len(items) > 1:
            return "seq", key[0] + key[-1], items
        return None
    items = split_top(key)
    if len(items) > 1 and parse_number(key) is None:
        return "set", "", _expand_pm(items)
    pm = _expand_pm([key])
    if len(pm) > 1:
        return "set", "", pm
    return None


def _set_wraps_whole(key: str) -> bool:
    depth = 0
    i = 0
    while i < len(key):
        if key.startswith("\\{", i):
            depth += 1
            i += 2
            continue
        if key.startswith("\\}", i):
            depth -= 1
            if depth == 0:
                return i == len(key) - 2
            i += 2
            continue
        i += 1
    return False


def _expand_pm(items: list[str]) -> list[str]:
    """``a\\pm b`` -> ``a+b``, ``a-b`` (one top-level ``\\pm`` per item)."""
    out = []
    for item in items:
        halves = split_top(item, "\\pm")
        if len(halves) == 2 and halves[1]:
            a, b = halves
            out += [f"{a}+{b}" if a else b, f"{a}-{b}" if a else f"-{b}"]
        else:
            out.append(item)
    return out


def _unwrap_parens(key: str) -> str:
    while len(key) >= 2 and key[0] == "(" and key[-1] == ")" and _wraps_whole(key) \
            and len(split_top(key[1:-1])) == 1:
        key = key[1:-1].strip()
    return key


# ------------------------------------------------------------------------------------------
# Sympy (bounded)
# ------------------------------------------------------------------------------------------


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


@lru_cache(maxsize=1)
def load_sympy() -> None:
    """Import sympy and the LaTeX parser and build its parser tables once, outside any time
    bound (this takes seconds on a busy machine and would eat the first call's budget)."""
    _to_sympy("x+1")


@lru_cache(maxsize=4096)
def _to_sympy(latex: str) -> Any:
    from latex2sympy2_extended import NormalizationConfig, latex2sympy

    config = NormalizationConfig(basic_latex=True, units=True, malformed_operators=True,
                                 nits=False, boxed="none", equations=False)
    return latex2sympy(latex, normalization_config=config)


def _expr_equal(x: Any, y: Any) -> bool:
    import sympy

    if x == y:
        return True
    if isinstance(x, sympy.MatrixBase) or isinstance(y, sympy.MatrixBase):
        if not (isinstance(x, sympy.MatrixBase) and isinstance(y, sympy.MatrixBase)):
            return False
        return x.shape == y.shape and all(_expr_equal(a, b) for a, b in zip(x, y))
    if isinstance(x, sympy.Tuple) or isinstance(y, sympy.Tuple):
        return (isinstance(x, sympy.Tuple) and isinstance(y, sympy.Tuple) and len(x) == len(y)
                and all(_expr_equal(a, b) for a, b in zip(x, y)))
    if isinstance(x, sympy.Set) or isinstance(y, sympy.Set):
        return (isinstance(x, sympy.Set) and isinstance(y, sympy.Set)
                and bool(sympy.simplify(x) == sympy.simplify(y)))
    relational = sympy.core.relational.Relational
    if isinstance(x, relational) or isinstance(y, relational):
        if type(x) is not type(y):
            return False
        dx, dy = x.lhs - x.rhs, y.lhs - y.rhs
        return _expr_equal(dx, dy) or _expr_equal(dx, -dy)
    if not (isinstance(x, sympy.Expr) and isinstance(y, sympy.Expr)):
        return False
    diff = x - y
    if diff == 0:
        return True
    if not diff.free_symbols:
        value = complex(sympy.N(diff, 30))
        scale = max(1.0, abs(complex(sympy.N(y, 30))))
        if abs(value) <= 1e-9 * scale:
            return True
    return bool(sympy.simplify(diff) == 0)


def sympy_equal(a: str, b: str) -> bool:
    """Parse both LaTeX strings and compare (unbounded: use :func:`bounded_sympy_equal`)."""
    try:
        return _expr_equal(_to_sympy(a), _to_sympy(b))
    except Exception:   # unparsable or unsupported by sympy: not provably equal
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


# ------------------------------------------------------------------------------------------
# Equivalence
# ------------------------------------------------------------------------------------------


def _numbers_equal(a: str, pa: bool, b: str, pb: bool) -> bool | None:
    x, y = parse_number(a), parse_number(b)
    if x is None or y is None:
        return None
    if x == y:
        return True
    if pa != pb:   # "50%" vs "0.5"
        return (x / 100 == y) if pa else (y / 100 == x)
    return False


def _match_unordered(xs: list[str], ys: list[str], sym: float | None) -> bool:
    return (all(any(_keys_equiv(x, y, sym) for y in ys) for x in xs)
            and all(any(_keys_equiv(x, y, sym) for x in xs) for y in ys))


def _keys_equiv(a: str, b: str, sym: float | None, pa: bool = False, pb: bool = False) -> bool:
    """Equivalence of canonical forms; ``sym`` is the sympy timeout, or None to raise
    :class:`NeedsSympy` instead of calling it."""
    if a == b:
        return True
    if not a or not b:
        return False
    num = _numbers_equal(a, pa, b, pb)
    if num is not None:
        return num
    sa, sb = structure(a), structure(b)
    if sa is not None or sb is not None:
        if sa is None or sb is None:
            return False
        (ka, ba, ia), (kb, bb, ib) = sa, sb
        if ka == "set" or kb == "set":
            return _match_unordered(ia, ib, sym) if ka == kb else False
        if ka != kb or ba != bb or len(ia) != len(ib):
            return False
        return all(_keys_equiv(x, y, sym) for x, y in zip(ia, ib))
    ua, ub = _unwrap_parens(a), _unwrap_parens(b)
    if (ua, ub) != (a, b):
        return _keys_equiv(ua, ub, sym, pa, pb)
    if _PLAIN_WORDS.match(a) or _PLAIN_WORDS.match(b):
        return False
    if len(a) > MAX_SYMPY_CHARS or len(b) > MAX_SYMPY_CHARS:
        return False
    if sym is None:
        raise NeedsSympy
    return bounded_sympy_equal(a, b, sym)


def is_equiv(pred: str, gold: str, timeout_s: float = 2.0) -> bool:
    """Whether answer ``pred`` means the same as answer ``gold`` (rules: module docstring).

    An empty ``pred`` (or ``gold``) is never equivalent to anything. Every sympy call is
    bounded by ``timeout_s`` seconds.
    """
    a, pa = normalize(pred)
    b, pb = normalize(gold)
    if not a or not b:   # nothing to compare: even two empty answers are not a match
        return False
    return _keys_equiv(a, b, timeout_s, pa, pb)


def fast_equiv(pred: str, gold: str) -> bool | None:
    """:func:`is_equiv` without sympy: ``None`` when only sympy could decide."""
    a, pa = normalize(pred)
    b, pb = normalize(gold)
    if not a or not b:
        return False
    try:
        return _keys_equiv(a, b, None, pa, pb)
    except NeedsSympy:
        return None
