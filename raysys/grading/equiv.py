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
   symbolically and numerically, then by Math-Verify, bounded in time
   (:mod:`raysys.grading.symbolic`); a timeout or a parse failure means "not equal".

Answers with a label or a chain (``(p,q)=(3,2)``, ``|AB|=1``, ``x = 5+5+1 = 11``) are compared
by their last side when the other answer has no ``=``. ``NaN`` never equals anything.
Policy options (module constants, defaults as the MATH / GSM8K graders): decimal commas
(``1,22`` == ``1.22``) only where no thousands reading exists (:data:`DECIMAL_COMMA`); a decimal
with at least :data:`MIN_APPROX_DECIMALS` places equals a fraction it rounds or truncates
(``0.0833333`` == ``\\frac{1}{12}``, but ``0.33`` != ``\\frac13``). An interval equals the
inequality it describes (``(0,1)`` == ``0<x<1``, via Math-Verify's set-relation comparison).
Answers longer than ``MAX_ANSWER_CHARS`` or nested deeper than :data:`MAX_DEPTH` compare as
strings only, so hostile input cannot make the structural pass slow.
"""

from __future__ import annotations

import re
from fractions import Fraction

from raysys.grading.normalize import MAX_ANSWER_CHARS, normalize, parse_number
# _to_sympy, load_sympy, risky and sympy_equal are re-exported for callers of the old layout
from raysys.grading.symbolic import (_to_sympy, bounded_sympy_equal, load_sympy,  # noqa: F401
                                     risky, sympy_equal)

_MATRIX = re.compile(r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.S)
_OPEN = {"(": ")", "[": "]", "{": "}"}
_PLAIN_WORDS = re.compile(r"^[a-z]{3,}(?: [a-z]+)*$")
_RELATION = re.compile(r"[<>]|\\[lg]e(?![a-zA-Z])")
_NAN = re.compile(r"(?<![a-zA-Z])nan(?![a-zA-Z])", re.I)
_DECIMAL_COMMA = re.compile(r"^(-?)(0|\d+(?=,(?:\d{1,2}|\d{4,})$)),(\d+)$")
_DECIMAL = re.compile(r"^-?\d*\.(\d+)$")
DECIMAL_COMMA = True
MIN_APPROX_DECIMALS = 6
# Longer "answers" are prose or garbage: compared as strings only.
MAX_SYMPY_CHARS = 400
MAX_DEPTH = 40


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
    listed = split_top(key, ";")   # "(1,2); (3,4)"
    if len(listed) > 1:
        return "set", "", listed
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
    ratio = split_top(key, ":")   # "11:21": ordered parts, never a division
    if len(ratio) > 1 and all(ratio):
        return "seq", ":", ratio
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
# Equivalence
# ------------------------------------------------------------------------------------------


def decimal_comma(key: str) -> Fraction | None:
    """``0,111`` / ``1,22`` / ``12,5`` as decimals; ``None`` where a comma could separate
    thousands (``1,000``) or is not inside one number."""
    m = _DECIMAL_COMMA.match(key) if DECIMAL_COMMA else None
    if m is None:
        return None
    value = Fraction(f"{m.group(2)}.{m.group(3)}")
    return -value if m.group(1) else value


def _approx_equal(a: str, x: Fraction, y: Fraction) -> bool:
    """Whether decimal ``a`` (value ``x``) has enough places to stand for ``y`` rounded or
    truncated to them (``0.0833333`` for 1/12)."""
    m = _DECIMAL.match(a)
    if m is None or len(m.group(1)) < MIN_APPROX_DECIMALS:
        return False
    return abs(x - y) < Fraction(1, 10 ** len(m.group(1)))


def _numbers_equal(a: str, pa: bool, b: str, pb: bool) -> bool | None:
    x, y = parse_number(a), parse_number(b)
    if x is None and y is not None:
        x = decimal_comma(a)
    elif y is None and x is not None:
        y = decimal_comma(b)
    if x is None or y is None:
        return None
    if pa != pb:   # "50%" vs "0.5"; MATH drops the sign, so "50%" == "50" too
        x2, y2 = (x / 100, y) if pa else (x, y / 100)
        if x2 == y2:
            return True
    return x == y or _approx_equal(a, x, y) or _approx_equal(b, y, x)


def _last_side(a: str, b: str) -> tuple[str, str] | None:
    """``(a', b')`` with the labels / chain of the side that has a top-level ``=`` dropped
    when only one side has one (``("", "")`` when that side is a real equation); ``None`` when
    both or neither have one."""
    ea, eb = split_top(a, "="), split_top(b, "=")
    if (len(ea) > 1) == (len(eb) > 1) or len(split_top(a)) > 1 or len(split_top(b)) > 1:
        return None
    sides = ea if len(ea) > 1 else eb
    if not all(_is_label(part) for part in sides[:-1]):
        return "", ""   # an equation such as x^2+y^2=4 is not its right-hand side: unequal
    return (ea[-1], b) if len(ea) > 1 else (a, eb[-1])


def _is_label(part: str) -> bool:
    """A left-hand side that names a value (``x``, ``(p,q)``, ``|AB|``, ``S_{\\triangle ABC}``,
    ``f(2)``) or computes one from numbers only (``5+5+1``, ``3\\times4``)."""
    core = re.sub(r"\\[a-zA-Z]+", " ", part)
    if not re.search(r"[a-zA-Z]", core):
        return True
    return not re.search(r"[-+*/^]", re.sub(r"_\{[^{}]*\}|_\w", "", core))


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
    sides = _last_side(a, b)
    if sides is not None:
        return all(sides) and _keys_equiv(*sides, sym, pa, pb)
    sa, sb = structure(a), structure(b)
    if (sa is None) != (sb is None) and _RELATION.search(a if sa is None else b):
        pass   # an interval against the inequality it describes: decided symbolically
    elif sa is not None or sb is not None:
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


def too_complex(key: str) -> bool:
    """Answers longer than ``MAX_ANSWER_CHARS`` or nested deeper than ``MAX_DEPTH`` brackets
    are compared as strings only, so the structural pass stays fast on hostile input
    (``((((...1...))))`` with 20k levels)."""
    if len(key) > MAX_ANSWER_CHARS:
        return True
    depth = deepest = 0
    for ch in key:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest > MAX_DEPTH


def is_equiv(pred: str, gold: str, timeout_s: float = 2.0) -> bool:
    """Whether answer ``pred`` means the same as answer ``gold`` (rules: module docstring).

    An empty ``pred`` (or ``gold``) is never equivalent to anything. Every sympy call is
    bounded by ``timeout_s`` seconds.
    """
    a, pa = normalize(pred)
    b, pb = normalize(gold)
    if not a or not b or _NAN.search(a) or _NAN.search(b):   # even two empty answers differ
        return False
    if too_complex(a) or too_complex(b):
        return a == b
    return _keys_equiv(a, b, timeout_s, pa, pb)


def fast_equiv(pred: str, gold: str) -> bool | None:
    """:func:`is_equiv` without sympy: ``None`` when only sympy could decide."""
    a, pa = normalize(pred)
    b, pb = normalize(gold)
    if not a or not b or _NAN.search(a) or _NAN.search(b):
        return False
    if too_complex(a) or too_complex(b):
        return a == b
    try:
        return _keys_equiv(a, b, None, pa, pb)
    except NeedsSympy:
        return None
