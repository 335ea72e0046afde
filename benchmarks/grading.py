"""Grading throughput and agreement: raysys vs Math-Verify, side by side in one process.

Usage: ``.venv/bin/python benchmarks/grading.py [--data ../shared/data] [--out RESULTS.md]``

Pairs:
* GSM8K: the 1,319 test solutions as model outputs against their ``####`` numbers. Every 4th
  output ends "The answer is <gold+1>." (wrong), every 4th + 1 ends with ``\\boxed{gold}``,
  every 4th + 2 writes the gold with thousands commas; the rest are the solutions as they are.
* MATH500: each ``solution`` against its ``answer`` field.

Both graders start cold (their caches cleared, imports and parser tables warmed on an unrelated
pair) and run single-process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gsm8k_pairs(data: Path) -> list[tuple[str, str]]:
    """Model-output-like GSM8K pairs (see module docstring)."""
    pairs = []
    rows = [json.loads(x) for x in (data / "gsm8k" / "test.jsonl").read_text().splitlines() if x]
    for i, row in enumerate(rows):
        body, gold = row["answer"].rsplit("####", 1)
        gold = gold.strip()
        value = int(gold.replace(",", ""))
        if i % 4 == 0:
            text = f"{body}The answer is {value + 1}."
        elif i % 4 == 1:
            text = f"{body}So the final answer is $\\boxed{{{gold}}}$."
        elif i % 4 == 2:
            text = f"{body}#### {value:,}"
        else:
            text = row["answer"]
        pairs.append((text, gold))
    return pairs


def math500_pairs(data: Path) -> list[tuple[str, str]]:
    rows = [json.loads(x) for x in (data / "math500" / "test.jsonl").read_text().splitlines() if x]
    return [(r["solution"], r["answer"]) for r in rows]


def run_raysys(pairs: list[tuple[str, str]], style: str) -> list[bool]:
    from raysys.grading import grade_many

    return [ok for _, ok in grade_many(pairs, style=style, processes=1)]


def reset_raysys() -> None:
    from raysys.grading import grade
    from raysys.grading.equiv import _to_sympy, load_sympy
    from raysys.grading.normalize import normalize

    load_sympy()
    grade(r"\boxed{\sqrt{2}}", r"\frac{2}{\sqrt{2}}")   # warm: imports, parser tables
    normalize.cache_clear()
    _to_sympy.cache_clear()


def run_math_verify(pairs: list[tuple[str, str]], style: str) -> list[bool]:
    from math_verify import parse, verify

    out = []
    for text, gold in pairs:
        gold_parsed = parse(f"${gold}$")
        out.append(bool(verify(gold_parsed, parse(text))))
    return out


def reset_math_verify() -> None:
    from math_verify import parse, verify
    from math_verify import parser as mv_parser

    verify(parse(r"$\frac{2}{\sqrt{2}}$"), parse(r"\boxed{\sqrt{2}}"))
    for name in ("parse_latex_cached", "parse_expr_cached"):
        fn = getattr(mv_parser, name, None)
        if fn is not None and hasattr(fn, "cache_clear"):
            fn.cache_clear()


def timed(fn: Callable[[list[tuple[str, str]], str], list[bool]], pairs: list[tuple[str, str]],
          style: str) -> tuple[list[bool], float]:
    start = time.perf_counter()
    result = fn(pairs, style)
    return result, time.perf_counter() - start


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", text)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("RAYSYS_SHARED_DATA", REPO / "../shared/data")))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.grading.md")
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"shared data not found at {args.data} (set RAYSYS_SHARED_DATA)")

    suites = [("GSM8K test (1,319)", gsm8k_pairs(args.data), "default"),
              ("MATH500 (500)", math500_pairs(args.data), "math")]
    reset_raysys()
    reset_math_verify()
    lines = ["| pairs | raysys pairs/s | Math-Verify pairs/s | ratio | raysys acc | "
             "Math-Verify acc | agreement |", "|---|---|---|---|---|---|---|"]
    disagreements = []
    for name, pairs, style in suites:
        reset_raysys()
        ours, t_ours = timed(run_raysys, pairs, style)
        reset_math_verify()
        theirs, t_theirs = timed(run_math_verify, pairs, style)
        n = len(pairs)
        agree = sum(a == b for a, b in zip(ours, theirs))
        lines.append(f"| {name} | {n / t_ours:,.0f} | {n / t_theirs:,.0f} | "
                     f"{t_theirs / t_ours:.1f}x | {sum(ours) / n:.1%} | {sum(theirs) / n:.1%} | "
                     f"{agree}/{n} ({agree / n:.1%}) |")
        disagreements += [(name, gold, ok, text[-80:]) for (text, gold), ok, mv
                          in zip(pairs, ours, theirs) if ok != mv]
    table = "\n".join(lines)
    print(table)
    for name, gold, ok, tail in disagreements[:20]:
        print(f"  disagree [{name}] gold={gold!r} raysys={ok} tail={tail!r}")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    examples = "".join(f"- [{name}] gold `{gold}`: raysys says {'correct' if ok else 'wrong'}, "
                       f"Math-Verify the opposite; output ends `{tail[-60:]!r}`\n"
                       for name, gold, ok, tail in disagreements[:10]) or "- none\n"
    args.out.write_text(
        f"# Grading benchmark: raysys vs Math-Verify\n\n"
        f"Run {stamp} on {machine()}, shared with other work (load average {load}: timings "
        f"are noisy, the ratio less so since both ran in the same conditions); single process "
        f"each, caches cleared before each run. "
        f"Command: `.venv/bin/python benchmarks/grading.py`.\n\n{table}\n\n"
        f"Disagreements ({len(disagreements)}):\n\n{examples}")


if __name__ == "__main__":
    main()
