"""Final-answer extraction from model output and gold solutions.

Pure string functions (no sympy). Each ``style`` follows the answer format of one paper's
prompts; :func:`extract_answer` returns ``""`` when a text holds no answer.
"""

from __future__ import annotations

import re

STYLES = ("default", "w2s", "critique", "llm2", "math")

_BOX_CMDS = ("\\boxed", "\\fbox")
# A number as models write it: sign, thousands commas, decimals, an optional "/denominator".
# A minus right after a digit, letter or bracket is subtraction ("10-3"), not a sign; the sign
# may be the Unicode minus (U+2212) that some models write.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])[-\u2212])?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+)")
# Answer cues: English, Chinese (答案是 / 答案为 / 最终答案) and French (la réponse (finale)
# est, Réponse finale :), each optionally followed by a colon.
_ANSWER_IS = re.compile(
    r"(?:[Tt]he (?:final )?answer is|答案[是为為]|最终答案|[Ll]a réponse (?:finale )?est"
    r"|[Rr]éponse(?: finale)?\s*:)[:：\s]*")
_THINK_END = "</think>"
_TEXT_WRAP = re.compile(r"^\\(?:text|textbf|mathrm|mbox|textrm)\{(.*)\}$", re.S)


def _braced(text: str, start: int, end: int | None = None) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start] == '{'`` and the index after it;
    ``None`` when it does not close before ``end`` (default: the end of the text)."""
    depth = 0
    for i in range(start, len(text) if end is None else end):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces), or ``\\boxed 5``.

    Returns ``None`` when there is no complete box.
    """
    pos = max(text.rfind(cmd) for cmd in _BOX_CMDS)
    # A group that opens before an unterminated box and contains it cannot close either, so
    # each earlier box is searched only up to the last unterminated one: linear, not quadratic.
    limit = len(text)
    while pos >= 0:
        cmd = "\\boxed" if text.startswith("\\boxed", pos) else "\\fbox"
        j = pos + len(cmd)
        k = j
        while k < len(text) and text[k] in " \t":
            k += 1
        if k < len(text) and text[k] == "{":
            got = _braced(text, k, limit)
            if got is not None:
                return got[0]
            limit = pos
        elif j < k < len(text):
            # "\boxed 5": the argument runs to the next '$' or whitespace
            m = re.match(r"[^\s$]+", text[k:])
            if m:
                return m.group(0)
        # an unterminated box: fall back to the one before it
        pos = max(text.rfind(c, 0, pos) for c in _BOX_CMDS)
    return None


def hash_answer(text: str) -> str | None:
    """Raw text after the last ``####`` marker (GSM8K style), stripped; ``None`` when absent.

    Only the rest of the marker's line is taken (commas and units are left as they are); when
    that is empty the next non-blank line is the answer, as in ``"####\\n42"``.
    """
    pos = text.rfind("####")
    if pos < 0:
        return None
    lines = text[pos + 4:].split("\n")
    for line in lines:
        if line.strip():
            return line.strip()
    return None


def last_number(text: str) -> str | None:
    """The last number in ``text`` with thousands commas removed (``"1,234.5"`` -> ``"1234.5"``)
    and a Unicode minus sign written as ``-``."""
    found = None
    for found in _NUMBER.finditer(text):
        pass
    if found is None:
        return None
    return found.group(0).replace(",", "").replace("\u2212", "-")


def clean_answer(ans: str) -> str:
    """Strip the wrapping a model puts around an extracted answer.

    Removes surrounding whitespace, ``$``/``\\(``/``\\[`` delimiters, a leading colon, a trailing
    period, a whole-answer ``\\text{}`` wrapper and a ``\\boxed{}`` around it.
    """
    s = ans.strip()
    for _ in range(3):   # wrappers nest: "$\boxed{5}$." needs several passes
        before = s
        s = s.strip().lstrip(":").strip()
        s = re.sub(r"(?:\\\.|\.|。)+$", "", s).strip()   # a sentence-final period
        s = re.sub(r"(?<!\\)\\$", "", s).strip()   # a stray trailing backslash ("185\\")
        if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
            s = s.strip("$").strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right):
                s = s[len(left):-len(right)].strip()
        boxed = last_boxed(s)
        if boxed is not None and s.lstrip().startswith(_BOX_CMDS) and s.rstrip().endswith("}"):
            s = boxed.strip()
        m = _TEXT_WRAP.match(s)
        if m and _braced(s, s.index("{")) == (m.group(1), len(s)):
            s = m.group(1).strip()
        if s == before:
            break
    return s


def _after_answer_is(text: str, first: bool) -> str | None:
    """The rest of the line after "The answer is" (first or last occurrence)."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    m = matches[0] if first else matches[-1]
    rest = text[m.end():]
    line = rest.lstrip(" :：\t").split("\n", 1)[0]
    boxed = last_boxed(line)
    if boxed is not None:
        return boxed
    # the sentence ends at ". " (a decimal point is followed by a digit, not a space)
    line = re.split(r"\.\s|。", line, maxsplit=1)[0]
    return line


_COMMAND_OR_TEXT = re.compile(r"\\(?:text|mbox|textbf|mathrm)\{[^{}]*\}|\\[a-zA-Z]+")


def bare_answer(text: str) -> str | None:
    """``text`` itself when it is already just an answer (one line, no prose), else ``None``.

    Prose means a word of 3+ letters outside LaTeX commands and ``\\text{}``; a single word
    (``east``) or a number followed by a unit (``5 dollars``, not ``Answer: 5``) still counts as
    an answer.
    """
    s = text.strip()
    if not s or "\n" in s or len(s) > 200:
        return None
    tokens = s.split()
    if (len(tokens) == 1 or (len(tokens) == 2 and re.search(r"\d", tokens[0]))
            or not re.search(r"[a-zA-Z]{3,}", _COMMAND_OR_TEXT.sub(" ", s))):
        return s
    return None


def _first(*candidates: str | None) -> str:
    for c in candidates:
        if c is not None:
            c = clean_answer(c)
            if c:
                return c
    return ""


def extract_answer(text: str, style: str = "default") -> str:
    """The final answer in a model output or solution; ``""`` when none.

    Styles: ``default`` (``#### x``, "The answer is x", last box, the whole text when it is
    a bare answer such as ``\\frac{1}{4}``, last number: the first found),
    ``w2s`` (after ``####`` or "The answer is:"), ``critique`` (after the FIRST "The answer
    is"), ``llm2`` (last number), ``math`` (last box, "The answer is", bare answer, last number).
    """
    text = answer_region(text)
    if style == "default":
        return _first(hash_answer(text), _after_answer_is(text, first=False),
                      last_boxed(text), bare_answer(text), last_number(text))
    if style == "w2s":
        return _first(hash_answer(text), _after_answer_is(text, first=False))
    if style == "critique":
        return _first(_after_answer_is(text, first=True))
    if style == "llm2":
        return _first(last_number(text))
    if style == "math":
        return _first(last_boxed(text), _after_answer_is(text, first=False), bare_answer(text),
                      last_number(text))
    raise ValueError(f"unknown answer style {style!r}; expected one of {', '.join(STYLES)}")


def answer_region(text: str) -> str:
    """The part of an output that holds its answer: the last ``<answer>...</answer>`` block,
    else the text after the last ``</think>`` (when any), else the whole text."""
    close = text.rfind("</answer>")
    open_ = text.rfind("<answer>", 0, max(close, 0))
    if close >= 0 and open_ >= 0 and text[open_ + 8:close].strip():
        return text[open_ + 8:close]
    if _THINK_END in text:
        after = text.rsplit(_THINK_END, 1)[1]
        if after.strip():
            return after
    return text


def all_boxed(text: str) -> list[str]:
    """Contents of every complete ``\\boxed{...}`` / ``\\fbox{...}`` in order of appearance."""
    closes, stack = {}, []
    for i, ch in enumerate(text):   # one pass pairs every brace (hostile input stays linear)
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            closes[stack.pop()] = i
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        close = closes.get(m.end() - 1)
        if close is not None:
            out.append(text[m.end():close].strip())
    return out


def gold_answer(gold: str) -> str:
    """The answer inside a gold field: a full solution (``####`` / ``\\boxed``) or the answer."""
    if "####" in gold:
        return _first(hash_answer(gold))
    if "\\boxed" in gold or "\\fbox" in gold:
        return _first(last_boxed(gold))
    return clean_answer(gold)
