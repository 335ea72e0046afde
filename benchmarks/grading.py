"""Grading throughput and agreement: raysys vs Math-Verify, side by side in one process.

Usage: ``.venv/bin/python benchmarks/grading.py [--data ../shared/data] [--out RESULTS.md]``

Pairs:
* GSM8K: the 1,319 test solutions as model outputs against their ``####`` numbers. Every 4th
  output ends "The answer is <gold+1>." (wrong), every 4th + 1 ends with ``\\boxed{gold}``,
  every 4th + 2 writes the gold with thousands commas; the rest are the solutions as they are.
* MATH500: each ``solution`` against its ``answer`` field.
* Hard set: :data:`HARD_SET`, hand-written (pred_text, gold, expected verdict, category) pairs for
  the categories of issue 11 (and issue 12's grader inputs); agreement with the expected
  verdict per category, for both graders.

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

# (pred_text, gold, expected_verdict, category): written for issue 11's categories (own cases,
# equal and unequal in each); "robust" holds issue 12's grader inputs.
B = r"\boxed{%s}"   # pred text: the answer in a box
HARD_SET: list[tuple[str, str, bool, str]] = [(p, g, e, c) for c, rows in {
    "identical_text": [
        (B % r"\text{odd } n", r"\text{odd } n", True),
        (B % r"\text{all even } n", r"\text{all odd } n", False),
        (r"So $\boxed{\text{no real solutions}}$.", r"\text{no real solutions}", True),
        (B % r"\text{Tuesday}", r"\text{Wednesday}", False),
        (B % r"\text{if } k \geq 2", r"\text{if } k \geq 2", True),
        (B % r"f(x)=x \text{ for all } x", r"f(x)=x \text{ for all } x", True),
        (B % r"f(x)=x \text{ for all } x", r"f(x)=-x \text{ for all } x", False),
        (B % r"\text{(C)}", r"\text{(C)}", True), (B % r"\text{(C)}", r"\text{(D)}", False),
        (B % r"\text{Alice wins iff } n \equiv 1 \pmod 3",
         r"\text{Alice wins iff } n \equiv 1 \pmod 3", True),
        (B % r"\text{Alice wins iff } n \equiv 1 \pmod 3",
         r"\text{Alice wins iff } n \equiv 2 \pmod 3", False),
        (B % r"\text{the set of all } x > 0", r"\text{the set of all } x > 0", True),
        (B % r"\textbf{(B) } 7", r"\textbf{(B) } 7", True),
        (B % r"\text{infinitely many}", r"\text{finitely many}", False),
        (B % r"\mathbb{Z}", r"\mathbb{Z}", True), (B % r"\mathbb{Z}", r"\mathbb{Q}", False),
        (r"The answer is $n$ is prime.", r"$n$ is prime", True),
    ],
    "relations": [
        (B % "2 = x", "x=2", True), (B % "2>x", "x<2", True),
        (B % r"x \le 5", r"5 \geq x", True), (B % "x <= 5", r"x \leq 5", True),
        (B % r"x \lt 3", "x<3", True), (B % "x != 1", r"x \ne 1", True),
        (B % r"a \geqslant 1", r"a \ge 1", True), (B % "x < 2", r"x \le 2", False),
        (B % "x > 2", "x<2", False), (B % r"x \geq -3", r"x \leq -3", False),
        (B % r"x \ne 2", r"x \neq 3", False), (B % r"x \in [-2,7]", r"-2 \le x \le 7", True),
        (B % r"-2 \le x \le 7", "[-2,7]", True), (B % r"x \in (-2,7]", r"-2 \le x \le 7", False),
        (B % "(0,1)", "0<f(x)<1", True), (B % "0 < x < 1", "(0,1)", True),
        (B % r"0 \le x < 1", "(0,1)", False), (B % "x > 3", r"(3,\infty)", True),
        (B % r"x \geq 3", r"(3,\infty)", False), (B % "y=2x+1", "y=2x+1", True),
    ],
    "labelled": [
        (B % "(p,q)=(3,2)", "(3,2)", True), (B % "(p,q)=(2,3)", "(3,2)", False),
        (B % "|AB|=1", "1", True), (B % "|AB|=2", "1", False),
        (B % "V_1:V_2=11:21", "11:21", True), (B % "V_1:V_2=21:11", "11:21", False),
        (B % "AB=4, CD=5", "4, 5", True), (B % "AB=4, CD=6", "4, 5", False),
        (B % r"a=3,\ b=-4", "a=3, b=-4", True), (B % "m = 7", "7", True), (B % "n=8", "7", False),
        (B % r"\angle ABC = 45^\circ", "45", True),
        (B % r"S_{\triangle ABC} = 6\sqrt{3}", r"6\sqrt3", True),
        (B % r"S_{\triangle ABC} = 6\sqrt{2}", r"6\sqrt3", False),
        (B % "f(2) = 10", "10", True), (B % r"P(A)=\frac{1}{3}", r"\frac13", True),
        (B % "x:y:z = 1:2:3", "1:2:3", True), (B % "1:2:3", "1:3:2", False),
        (B % "k=-2", "-2", True),
    ],
    "several": [
        (r"The solutions are $\boxed{1}$ and $\boxed{2}$.", r"\{1,2\}", True),
        (r"So $x=\boxed{2}$ or $x=\boxed{1}$.", "1, 2", True),
        (r"We get $\boxed{1}$ and $\boxed{3}$.", "1,2", False),
        (B % r"1 \text{ and } 2 \text{ and } 3", "1,2,3", True),
        ("The answer is 1 and 2 and 3.", "3,2,1", True),
        (B % r"x=1 \text{ or } x=-1", r"\pm 1", True),
        (B % r"x=1 \text{ or } x=2", "1,-2", False),
        (B % r"\{3,1,2\}", r"\{1,2,3\}", True), (B % r"\{1,2\}", r"\{1,2,3\}", False),
        (B % "-3, 5", "5, -3", True), (B % "(1,2); (3,4)", "(3,4), (1,2)", True),
        (B % "(1,2); (3,5)", "(3,4), (1,2)", False),
        (B % r"x=2 \quad \text{and} \quad y=3", "2, 3", True),
        (B % r"x=3 \quad \text{and} \quad y=4", "x=2,y=3", False),
        (B % r"\frac{1}{2}, -\frac{1}{2}", r"\pm\frac12", True),
        (B % r"2 \text{ or } 3", "2, 3", True), (B % "2", "2, 3", False),
        (B % "2, 3", "2", False),
    ],
    "matrices": [
        (B % r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
         r"\begin{bmatrix} 1 & 2 \\ 3 & 4 \end{bmatrix}", True),
        (B % r"\left[\begin{array}{cc} 1 & 2 \\ 3 & 4 \end{array}\right]",
         r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", True),
        (B % r"\left[\begin{array}{cc} 1 & 2 \\ 3 & 5 \end{array}\right]",
         r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", False),
        (B % r"\begin{pmatrix} \frac{1}{2} & 0 \\ 0 & \frac{1}{3} \end{pmatrix}",
         r"\begin{pmatrix} 0.5 & 0 \\ 0 & 1/3 \end{pmatrix}", True),
        (B % r"\begin{pmatrix} 1/\sqrt{2} \\ 1/\sqrt{2} \end{pmatrix}",
         r"\begin{pmatrix} \frac{\sqrt{2}}{2} \\ \frac{\sqrt{2}}{2} \end{pmatrix}", True),
        (B % r"\begin{pmatrix} 1/\sqrt{2} \\ -1/\sqrt{2} \end{pmatrix}",
         r"\begin{pmatrix} \frac{\sqrt{2}}{2} \\ \frac{\sqrt{2}}{2} \end{pmatrix}", False),
        (B % r"\begin{pmatrix} \cos\theta & -\sin\theta \\ \sin\theta & \cos\theta \end{pmatrix}",
         r"\begin{pmatrix} \cos\theta & -\sin\theta \\ \sin\theta & \cos\theta \end{pmatrix}", True),
        (B % r"\begin{pmatrix} \cos\theta & \sin\theta \\ -\sin\theta & \cos\theta \end{pmatrix}",
         r"\begin{pmatrix} \cos\theta & -\sin\theta \\ \sin\theta & \cos\theta \end{pmatrix}", False),
        (B % r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 1 & 2 \end{pmatrix}", False),
        (B % r"\begin{pmatrix} 2 \\ -1 \end{pmatrix}", r"\begin{pmatrix}2\\-1\end{pmatrix}", True),
        (B % r"\begin{pmatrix} a & b \\ c & d \end{pmatrix}",
         r"\begin{pmatrix} a & b \\ c & d \end{pmatrix}", True),
        (B % r"\begin{pmatrix} a & b \\ c & d \end{pmatrix}",
         r"\begin{pmatrix} a & c \\ b & d \end{pmatrix}", False),
        (B % r"\begin{bmatrix} -\frac{3}{5} & \frac{4}{5} \end{bmatrix}",
         r"\begin{pmatrix} -0.6 & 0.8 \end{pmatrix}", True),
        (B % r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}",
         r"\begin{pmatrix} 1 & 0 \\ 0 & -1 \end{pmatrix}", False),
        (B % r"\begin{pmatrix} \frac{1}{\sqrt{3}} \\ \frac{1}{\sqrt{3}} \\ \frac{1}{\sqrt{3}} \end{pmatrix}",
         r"\begin{pmatrix} \sqrt{3}/3 \\ \sqrt{3}/3 \\ \sqrt{3}/3 \end{pmatrix}", True),
    ],
    "percent": [
        ("The answer is 25 percent.", "0.25", True), ("The answer is 25 percent.", "25", True),
        ("The answer is 30 percent.", "0.25", False), (B % r"12.5\text{ percent}", "0.125", True),
        (B % r"12.5\text{ percent}", "0.0125", False), ("#### 40 pct", "0.4", True),
        ("#### 40 pct", "0.04", False), (B % r"75\%", "3/4", True), (B % r"75\%", "0.7", False),
        ("The answer is 5 percent", r"5\%", True), ("The answer is 5 percent", "0.5", False),
        (B % r"150\text{ percent}", "1.5", True), ("#### 20 %", "0.2", True),
        (B % "0.2", r"20\%", True), (B % "2", r"20\%", False),
        (B % r"64 \text{ percentage}", "0.64", True),
    ],
    "plain_text": [
        (B % "sqrt(3)", r"\sqrt{3}", True), ("The answer is sqrt(3).", r"\sqrt{3}", True),
        ("The answer is sqrt(2).", r"\sqrt{3}", False), (B % "2**(1/4)", r"\sqrt[4]{2}", True),
        (B % "2**(1/3)", r"\sqrt[4]{2}", False), (B % "-1 + sqrt(3)", r"\sqrt{3}-1", True),
        (B % "-1 - sqrt(3)", r"\sqrt{3}-1", False), (B % "3*pi/2", r"\frac{3\pi}{2}", True),
        (B % "pi/3", r"\frac{\pi}{6}", False), (B % "x^2 + 2*x + 1", "(x+1)^2", True),
        (B % "(1+sqrt(5))/2", r"\frac{1+\sqrt5}{2}", True),
        (B % "(1-sqrt(5))/2", r"\frac{1+\sqrt5}{2}", False), (B % "2^(10)", "1024", True),
        (B % "log(8)/log(2)", "3", True), (B % "1/(2*sqrt(2))", r"\frac{\sqrt{2}}{4}", True),
        (B % "1/(2*sqrt(3))", r"\frac{\sqrt{2}}{4}", False),
    ],
    "decimal_comma": [
        (B % "0,111", "0.111", True), (B % "1,22", "1.22", True), (B % r"2,74 \$", "2.74", True),
        (B % "1,000", "1000", True), (B % "1,000", "1", False), (B % "12,5", "12.5", True),
        (B % "12,5", "125", False), (B % "3,14", "3.14", True), (B % "3,14", "314", False),
        ("#### 1,234,567", "1234567", True), (B % "0,5", r"\frac12", True),
        (B % "0,25", "0.52", False), (B % "12{,}345", "12345", True),
        (B % "0,111", "111", False),
    ],
    "wrappers": [
        ("所以答案是 $\\boxed{12}$。", "12", True), ("答案是：12", "12", True),
        ("答案是：13", "12", False), ("最终答案：\\frac{1}{2}", "0.5", True),
        ("La réponse est 42.", "42", True), ("Donc, la réponse finale est $\\frac{3}{4}$.", "0.75", True),
        ("La réponse est 41.", "42", False), ("<think>maybe 3</think><answer>5</answer>", "5", True),
        ("<think>maybe 5</think><answer>3</answer>", "5", False),
        ("<think>so the answer is 6, no wait</think>\n\n$7$", "7", True),
        ("<think>x=4 so the answer is 4</think>\nThus we get 9.", "4", False),
        ("<answer>\\frac{2}{3}</answer>", "2/3", True), ("<answer>x = 2</answer>", "2", True),
        ("Réponse finale : 17", "17", True), ("因此，答案为 $\\sqrt{2}$", r"\sqrt2", True),
        ("答案为 $\\sqrt{3}$", r"\sqrt2", False),
    ],
    "equations": [
        (B % r"y = -\frac{x}{2} + \frac{3}{4}", "2x+4y-3=0", True),
        (B % r"y = -\frac{x}{2} + \frac{3}{4}", "2x+4y+3=0", False),
        (B % "x + y = 1", "2x+2y=2", True), (B % "x + y = 1", "x+y=2", False),
        (B % "x^2+y^2=4", "x^2 + y^2 - 4 = 0", True), (B % "x = 5+5+1 = 11", "11", True),
        (B % "5+5+1 = 12", "11", False), (B % r"3 \times 4 = 12", "12", True),
        (B % r"\mathrm{e}", "e", True), (B % r"\mathrm{e}^2", "e^{2}", True),
        (B % r"\mathrm{e}^2", "e^{3}", False), (B % r"2\mathrm{e}", "2e", True),
        ("#### 185\\", "185", True), ("The answer is 185\\", "185", True),
        ("The answer is 186\\", "185", False), (B % "0.0833333", r"\frac{1}{12}", True),
        (B % "0.3333333", r"\frac13", True), (B % "0.33", r"\frac{1}{3}", False),
        (B % "0.1428571", r"\frac{1}{7}", True), (B % "0.142", r"\frac{1}{7}", False),
        (B % "2y = 4x + 6", "y=2x+3", True), (B % "y = 2x+3", "y=3x+2", False),
    ],
    "robust": [
        (B % "nan", "nan", False), (B % "NaN", "NaN", False),
        (B % r"10^{10^{10}}", r"10^{10^{10}}+1", False), (B % r"10^{10^{10}}", r"10^{10^{10}}", True),
        (B % r"\infty", r"\infty", True), (B % r"-\infty", r"\infty", False),
        (B % r"9^{9^{9}}", r"9^{9^{9}}+1", False), (B % "2^{100}", "1267650600228229401496703205376", True),
        (B % "2^{100}", "1267650600228229401496703205377", False),
        (B % "1/0", "0", False), (B % r"\frac{0}{0}", "0", False),
    ],
}.items() for p, g, e in rows]


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


def hard_set_table() -> tuple[str, list[str]]:
    """Agreement with :data:`HARD_SET`'s verdicts per category (raysys, Math-Verify) as a
    markdown table, and the pairs either grader gets wrong."""
    from raysys.grading import grade

    ours = [grade(text, gold, "default")[1] for text, gold, _, _ in HARD_SET]
    theirs = run_math_verify([(text, gold) for text, gold, _, _ in HARD_SET], "default")
    cats: dict[str, list[int]] = {}
    misses = []
    for (text, gold, want, cat), a, b in zip(HARD_SET, ours, theirs):
        row = cats.setdefault(cat, [0, 0, 0])
        row[0] += 1
        row[1] += a == want
        row[2] += b == want
        if a != want or b != want:
            misses.append(f"- [{cat}] `{text[-50:].replace(chr(10), ' ')}` vs `{gold}` (expected {want}): raysys "
                          f"{a}, Math-Verify {b}")
    total = [sum(r[i] for r in cats.values()) for i in range(3)]
    lines = ["| category | pairs | raysys agreement | Math-Verify agreement |", "|---|---|---|---|"]
    for cat, (n, a, b) in [*cats.items(), ("**all**", total)]:
        lines.append(f"| {cat} | {n} | {a}/{n} ({a / n:.1%}) | {b}/{n} ({b / n:.1%}) |")
    return "\n".join(lines), misses


_MV_SCRIPT = """import json, sys
from math_verify import parse, verify
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
with open(sys.argv[2], "w") as out:
    for r in rows:
        ok = bool(verify(parse("$" + r["gold"] + "$"), parse(r["pred"])))
        out.write(json.dumps({**r, "correct": ok}) + "\\n")
"""


def cli_row(name: str, pairs: list[tuple[str, str]]) -> str:
    """End to end, start-up included: ``raysys grade IN --out OUT`` (one process) against a
    Python script that runs Math-Verify over the same JSONL file."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pairs.jsonl"
        src.write_text("".join(json.dumps({"pred": t, "gold": g}) + "\n" for t, g in pairs))
        cmds = [[sys.executable, "-m", "raysys.cli", "grade", str(src), "--out",
                 f"{tmp}/ours.jsonl", "--processes", "1"],
                [sys.executable, "-c", _MV_SCRIPT, str(src), f"{tmp}/theirs.jsonl"]]
        took = []
        for cmd in cmds:
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
            took.append(time.perf_counter() - start)
    n = len(pairs)
    return (f"| {name}, CLI incl. start-up | {n / took[0]:,.0f} | {n / took[1]:,.0f} | "
            f"{took[1] / took[0]:.1f}x | | | |")


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
    lines.append(cli_row(suites[0][0], suites[0][1]))
    table = "\n".join(lines)
    print(table)
    hard_table, misses = hard_set_table()
    print(hard_table)
    print("\n".join(misses))
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
        f"Disagreements ({len(disagreements)}):\n\n{examples}\n"
        f"## Hard set: agreement with the expected verdict per category\n\n"
        f"{len(HARD_SET)} hand-written pairs (`HARD_SET` in benchmarks/grading.py; written "
        f"while the rules were extended, so raysys's figure is not a held-out score), pred "
        f"graded with style `default`, Math-Verify with `parse(pred)` / `parse('$gold$')`.\n\n"
        f"{hard_table}\n\nPairs either grader gets wrong ({len(misses)}):\n\n"
        + ("\n".join(misses) or "- none") + "\n")


if __name__ == "__main__":
    main()
