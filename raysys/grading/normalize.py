"""Canonical string forms of answers and the sympy-free number parser (the fast path).

Conventions (MATH / GSM8K graders): a percent sign, a currency sign, degree marks and trailing
unit words are dropped (``50\\%`` == ``50``); thousands separators in every spelling (``1,000``,
``1{,}000``, ``1\\,000``, thin spaces) are removed; ``x \\in [a,b]`` keeps only the set (a label
``x = 3`` is resolved against the other answer in :mod:`raysys.grading.equiv`); plain-word answers
compare case-insensitively. Relations get one spelling (``<=``/``\\leq``/``\\leqslant`` -> ``\\le``,
``!=``/``\\neq`` -> ``\\ne``, ``\\lt`` -> ``<``); ``percent`` / ``percentage`` / ``pct`` count as
``%``; "1 and 2 or 3" becomes the list ``1,2,3``; plain-text math gets LaTeX (``**`` -> ``^``,
``pi``, ``log(``); ``\\left[\\begin{array}...\\right]`` loses its brackets.
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
# "x \\in [a,b]" keeps the set; "lhs = value" is resolved against the other answer (equiv.py)
_LHS = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*\\in(?![a-zA-Z])\s*(?=\S)")
# One spelling per relation: \\le, \\ge, \\ne, <, > (longest spellings first)
_RELATIONS = [(re.compile(p), r) for p, r in (
    (r"\\(?:leqslant|leq|le)(?![a-zA-Z])|<=|\u2264", r"\\le "),
    (r"\\(?:geqslant|geq|ge)(?![a-zA-Z])|>=|\u2265", r"\\ge "),
    (r"\\(?:neq|ne)(?![a-zA-Z])|!=|\u2260", r"\\ne "),
    (r"\\lt(?![a-zA-Z])", "<"), (r"\\gt(?![a-zA-Z])", ">"))]
# Percent spelled out ("25 percent", "12.5\\text{ percent}", "40 pct") counts as a percent sign.
_PERCENT_WORD = re.compile(
    r"(?<=[\d}])\s*(?:\\(?:text|mbox|mathrm)\s*\{\s*(?:percent(?:age)?|pct)\s*\}"
    r"|(?:percent(?:age)?|pct)(?![a-zA-Z]))")
# "1 and 2 or 3" between values: a list (words-only answers are left alone)
_AND_OR = re.compile(r"(?<=[\d}a-zA-Z)])\s+(?:and|or)\s+(?=[-\d\\(a-zA-Z])")
# Plain-text math: "2**(1/4)", "3*pi/2", "log(8)"
_PLAIN_MATH = [(re.compile(r"\*\*"), "^"), (re.compile(r"(?<![a-zA-Z\\])pi(?![a-zA-Z])"), r"\\pi "),
               (re.compile(r"(?<![a-zA-Z\\])(log|ln|exp|sin|cos|tan)(?=\()"), r"\\\1")]
_ARRAY_IN_BRACKETS = re.compile(r"^[\[(]\s*(\\begin\{array\}.*\\end\{array\})\s*[\])]$", re.S)
_INNER_SPACE = re.compile(r"\s+(?![a-zA-Z])|(?<![a-zA-Z])\s+")
_CHOICE = re.compile(r"^\(([a-zA-Z])\)$")
_WORDS = re.compile(r"^[a-zA-Z]+(?: [a-zA-Z]+)*$")

_INT = r"(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)"   # "0,111" is not thousands
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
    for pattern, repl in _RELATIONS:
        s = pattern.sub(repl, s)
    s = _PERCENT_WORD.sub("%", s)
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
    if not _WORDS.match(s):
        s = _AND_OR.sub(",", s)
        for pattern, repl in _PLAIN_MATH:
            s = pattern.sub(repl, s)
    s = _ARRAY_IN_BRACKETS.sub(r"\1", s.strip())
    s = _LHS.sub("", s, count=1)
    s = _INNER_SPACE.sub("", re.sub(r"\s+", " ", s.strip()))
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
