"""A seeded synthetic task: GSM8K-form multi-step arithmetic word problems.

Tiny CPU-trained models can learn this task (see ``LEARNING_SIGNAL.md``), so the demo and the
end-to-end tests can show a method improving a model. Each problem is a short story built from
name/item templates; its solution is one line per arithmetic step and a GSM8K answer line::

    23+15=38
    38-9=29
    #### 29

Every problem carries its per-step ground truth (``steps``: ``[a, op, b, result]``), which
verifier-style methods use as token-level labels. Problem ``i`` of seed ``s`` depends only on
``(s, i)``, so ``make_problems(10, s)`` is a prefix of ``make_problems(100, s)``.
"""

from __future__ import annotations

import random
from typing import Any

NAMES: tuple[str, ...] = (
    "Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Ivy", "Jack", "Kara", "Leo",
    "Mia", "Noah", "Olive", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Victor", "Wendy", "Zoe",
)
ITEMS: tuple[str, ...] = (
    "apples", "marbles", "stickers", "books", "pencils", "cookies", "shells", "coins", "stamps",
    "cards", "eggs", "flowers", "toy cars", "beads", "balloons", "crayons",
)

# One phrase per operation; {b} is the operand, {other} another person, {items} the item noun.
_ADD_PHRASES: tuple[str, ...] = (
    "Then {pron} buys {b} more {items}.",
    "Then {other} gives {obj} {b} {items}.",
    "Then {pron} finds {b} more {items}.",
    "Then {pron} wins {b} {items} at a fair.",
)
_SUB_PHRASES: tuple[str, ...] = (
    "Then {pron} gives {b} {items} to {other}.",
    "Then {pron} loses {b} {items}.",
    "Then {pron} sells {b} {items}.",
    "Then {pron} uses {b} {items} for a project.",
)
_MUL_PHRASES: tuple[str, ...] = (
    "Then {pron} ends up with {b} times as many {items} as before.",
    "Then the number of {items} {pron} has grows {b} times.",
)
_SHE = frozenset({"Ava", "Chloe", "Emma", "Grace", "Ivy", "Kara", "Mia", "Olive", "Rosa", "Tara",
                  "Uma", "Wendy", "Zoe"})
_PRONOUNS: dict[str, tuple[str, str]] = {   # name -> (subject, object)
    name: ("she", "her") if name in _SHE else ("he", "him") for name in NAMES}

VALID_OPS = frozenset("+-*")


def apply_op(a: int, op: str, b: int) -> int:
    """``a op b`` for one of ``+ - *``."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown op {op!r}")


def _check_knobs(min_steps: int, max_steps: int, max_operand: int, ops: str) -> None:
    if min_steps < 1 or max_steps < min_steps:
        raise ValueError(f"steps: expected 1 <= min_steps <= max_steps, got {min_steps}..{max_steps}")
    if max_operand < 2:
        raise ValueError(f"max_operand: expected >= 2, got {max_operand}")
    if not ops or set(ops) - VALID_OPS or set(ops) == {"-"}:
        # "-" alone would run the value down to 0 with no legal step left
        raise ValueError(f"ops: expected '+', '-', '*' characters including '+' or '*', got {ops!r}")


def make_steps(rng: random.Random, n_steps: int, max_operand: int, ops: str) -> list[list[Any]]:
    """Draw ``n_steps`` chained steps ``[a, op, b, result]``; no result is ever negative.

    Subtraction draws ``b <= a``; when the running value is 0 it is not eligible. Multiplication
    draws ``b >= 2`` so it always changes the value.
    """
    value = rng.randint(1, max_operand)
    steps: list[list[Any]] = []
    for _ in range(n_steps):
        eligible = [op for op in ops if not (op == "-" and value == 0)]
        op = rng.choice(eligible)
        if op == "-":
            b = rng.randint(1, min(max_operand, value))
        elif op == "*":
            b = rng.randint(2, max_operand)
        else:
            b = rng.randint(1, max_operand)
        result = apply_op(value, op, b)
        steps.append([value, op, b, result])
        value = result
    return steps


def render_solution(steps: list[list[Any]]) -> str:
    """One ``a<op>b=r`` line per step, then ``#### <final>``."""
    lines = [f"{a}{op}{b}={r}" for a, op, b, r in steps]
    return "\n".join(lines + [f"#### {steps[-1][3]}"])


def render_question(rng: random.Random, steps: list[list[Any]]) -> str:
    """A word problem whose arithmetic is exactly ``steps``."""
    name, other = rng.sample(NAMES, 2)
    items = rng.choice(ITEMS)
    pron, obj = _PRONOUNS[name]
    sentences = [f"{name} has {steps[0][0]} {items}."]
    phrases = {"+": _ADD_PHRASES, "-": _SUB_PHRASES, "*": _MUL_PHRASES}
    for _, op, b, _ in steps:
        phrase = rng.choice(phrases[op])
        sentences.append(phrase.format(pron=pron, obj=obj, other=other, items=items, b=b))
    sentences.append(f"How many {items} does {name} have now?")
    return " ".join(sentences)


def make_problem(seed: int, index: int, *, min_steps: int = 2, max_steps: int = 3,
                 max_operand: int = 20, ops: str = "+-") -> dict[str, Any]:
    """Problem ``index`` of ``seed``: keys id, question, solution, answer, steps."""
    _check_knobs(min_steps, max_steps, max_operand, ops)
    # A string seed is hashed with SHA-512 by `random`, so it is stable across processes
    # (unlike hash()) and independent streams per (seed, index).
    rng = random.Random(f"raysys-synthetic:{seed}:{index}")
    steps = make_steps(rng, rng.randint(min_steps, max_steps), max_operand, ops)
    return {
        "id": f"synthetic-{seed}-{index}",
        "question": render_question(rng, steps),
        "solution": render_solution(steps),
        "answer": str(steps[-1][3]),
        "steps": steps,
    }


def make_problems(n: int, seed: int = 0, *, min_steps: int = 2, max_steps: int = 3,
                  max_operand: int = 20, ops: str = "+-") -> list[dict[str, Any]]:
    """``n`` deterministic problems for ``seed`` (see the module docstring for the format)."""
    if n < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    return [make_problem(seed, i, min_steps=min_steps, max_steps=max_steps,
                         max_operand=max_operand, ops=ops) for i in range(n)]


def corpus_text(n: int, seed: int = 0, **knobs: Any) -> str:
    """Question + solution text of ``n`` problems, blank-line separated (tokenizer training)."""
    return "\n\n".join(f"{p['question']}\n{p['solution']}" for p in make_problems(n, seed, **knobs))
