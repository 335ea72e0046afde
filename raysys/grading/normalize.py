"""Canonical string forms of answers and the sympy-free number parser (the fast path).

Conventions (MATH / GSM8K graders): a percent sign, a currency sign, degree marks and trailing
unit words are dropped (``50\\%`` == ``50``); thousands separators in every spelling (``1,000``,
``1{,}000``, ``1\\,000``, thin spaces) are removed; ``x = 3`` and ``x \\in [a,b]`` keep only their
right-hand side; plain-word answers compare case-insensitively.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from raysys.grading.extract import clean_answer

MAX_ANSWER_CHARS = 1000
_UNICODE = {"\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00f7": "\\div ",
            "\u00b0": "^\\circ", "\u2009": "", "\u202f": "", "\u00a0": " ", "\u03c0": "\\pi ",
            "\u221e": "\\infty "}
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?|middle)(?![a-zA-Z])")
_SPACING = re.compile(
    r"(?<!\\)\\[!,;:> ]|\\q?quad(?![a-zA-Z])|~|\\displaystyle|\\textstyle|\\limits")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\^\s*\{\s*\\degree\s*\}|\\degree")
_TEXT_CMD = re.compile(
    r"\\(?:text|textrm|textnormal|mbox|mathrm|textbf|mathbf|operatorname)\s*\{([^{}]*)\}")
_UNIT_POWER = r"(?:\s*\^\s*\{?\s*[23]\s*\}?)?"
_TRAILING_WORDS = re.compile(
    r"^(.*[\d}])\s+[a-zA-Z]{2,}\.?(?:\s+[a-zA-Z]+\.?)*" + _UNIT_POWER + r"$")
_ORPHAN_POWER = re.compile(r"(?<=\d)\s+\^\s*\{?\s*[23]\s*\}?\s*$")
_LHS = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*(?:=|\\in(?![a-zA-Z]))\s*(?=\S)")
_INNER_SPACE = re.compile(r"\s+(?![a-zA-Z])|(?<![a-zA-Z])\s+")
_CHOICE = re.compile(r"^\(([a-zA-Z])\)$")
_WORDS = re.compile(r"^[a-zA-Z]+(?: [a-zA-Z]+)*$")

_INT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_DEC = re.compile(rf"^([-+]?)({_INT}(?:\.\d*)?|\.\d+)$")
_SLASH = re.compile(r"^([-+]?)(\d+)/(\d+)$")
_FRAC = re.compile(r"^([-+]?)\\frac\{(-?)(\d+(?:\.\d+)?)\}\{(-?)(\d+(?:\.\d+)?)\}$")
_MIXED = re.compile(r"^([-+]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")


def _fix_shorthand(s: str) -> str:
    r"""``\dfrac``/``\tfrac`` -> ``\frac``; ``\frac12``/``\frac 34``/``\frac9{19}`` and
    ``\sqrt2`` get braces (LaTeX takes one character per undelimited argument)."""
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*([0-9a-zA-Z])\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*([0-9a-zA-Z])", r"\\frac\1{\2}", s)
    s = re.sub(r"\\sqrt\s*([0-9a-zA-Z])", r"\\sqrt{\1}", s)
    return s


def _drop_text(s: str) -> str:
    r"""Unwrap ``\text{}``-like commands; drop them when they are a unit after a number."""
    def repl(m: re.Match) -> str:
        inner = m.group(1).strip()
        if inner.lower() in ("and", "or", ","):
            return ","
        rest = s[:m.start()] + s[m.end():]
        if re.fullmatch(r"[a-zA-Z. ]+", inner) and re.search(r"\d", rest) and len(inner) > 1:
            return " "   # a unit such as "\text{ cm}" next to a number
        return inner
    return _TEXT_CMD.sub(repl, s)


def _strip_outer_braces(s: str) -> str:
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        depth = 0
        for i, ch in enumerate(s):
            depth += ch == "{"
            depth -= ch == "}"
            if depth == 0 and i < len(s) - 1:
                return s
        s = s[1:-1].strip()
    return s


@lru_cache(maxsize=65536)
def normalize(answer: str) -> tuple[str, bool]:
    """Canonical form of an answer and whether it carried a percent sign.

    Spaces are kept only between two letters (``\\cot x``); everything listed in the module
    docstring is removed. Equal canonical forms mean equal answers.
    """
    if len(answer) > MAX_ANSWER_CHARS:   # prose, not an answer: keep the rules linear-time
        return re.sub(r"\s+", " ", answer.strip()), False
    s = clean_answer(answer)
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    s = s.replace("{,}", ",")
    s = _SIZING.sub("", s)
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    pct = "%" in s
    if pct:
        s = s.replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _drop_text(s)
    if _ORPHAN_POWER.search(s):   # "15\mbox{ cm}^2" lost its unit: drop the "^2" too
        s = _ORPHAN_POWER.sub("", s)
    s = s.strip().rstrip(".").strip()
    m = _TRAILING_WORDS.match(s)
    if m and re.search(r"\d", m.group(1)):
        s = m.group(1)
    s = _fix_shorthand(s)
    s = _LHS.sub("", s, count=1)
    s = _INNER_SPACE.sub("", s.strip())
    s = re.sub(r"\s+", " ", s)
    s = _strip_outer_braces(s)
    m = _CHOICE.match(s)
    if m:
        s = m.group(1)
    if _WORDS.match(s):
        s = s.lower()
    return s, pct


def parse_number(key: str) -> Fraction | None:
    r"""Exact value of a plain number in canonical form (``-1,000.5``, ``3/4``, ``\frac{3}{4}``,
    ``2\frac{1}{2}``); ``None`` for anything else."""
    if len(key) > 1000:   # int() refuses strings of more than 4300 digits anyway
        return None
    m = _DEC.match(key)
    if m:
        body = m.group(2).replace(",", "")
        value = Fraction(body.rstrip(".") or "0")
        return -value if m.group(1) == "-" else value
    m = _SLASH.match(key)
    if m:
        if int(m.group(3)) == 0:
            return None
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return -value if m.group(1) == "-" else value
    m = _FRAC.match(key)
    if m:
        num, den = Fraction(m.group(3)), Fraction(m.group(5))
        if den == 0:
            return None
        value = num / den
        negatives = (m.group(1) == "-") + (m.group(2) == "-") + (m.group(4) == "-")
        return -value if negatives % 2 else value
    m = _MIXED.match(key)
    if m and int(m.group(4)) != 0:
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -value if m.group(1) == "-" else value
    return None
