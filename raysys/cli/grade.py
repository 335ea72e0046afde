"""``raysys grade IN.jsonl --out OUT.jsonl``: grade predictions against gold answers."""

from __future__ import annotations

import click

from raysys.grading.extract import STYLES   # pure string code: cheap to import at CLI start


# Grading a whole file is bounded, not only each row (2 s of sympy at most): 100,000 rows that
# all need sympy would otherwise run for days. An hour is far past a real file (10,000 rows of
# MATH outputs grade in under a minute; most rows never reach sympy) and ends such a file with
# one line, nothing written.
DEFAULT_BUDGET_S = 3600.0
# Sympy worker processes (each imports sympy, ~100 MB): more than 256 is a typo, not a machine.
MAX_PROCESSES = 256


def grade_file(in_path: str, out_path: str, style: str = "default",
               processes: int | None = None, budget_s: float | None = DEFAULT_BUDGET_S) -> tuple[int, int]:
    """Grade every row (``pred``, ``gold``) of ``in_path`` into ``out_path`` (written atomically,
    only after every row was read and checked, and only when all were graded within
    ``budget_s`` seconds). Returns ``(correct, total)``."""
    import math
    from pathlib import Path

    from raysys.data.io import (DataError, atomic_write_jsonl, check_not_an_input,
                                check_output_file, read_records)
    from raysys.grading import grade_many
    from raysys.grading.grader import BudgetExceeded


    # before reading or grading anything; --out over IN.jsonl would replace the predictions
    check_not_an_input(out_path, {"IN.jsonl": in_path}, "--out")
    check_output_file(out_path, "--out")
    records = read_records(in_path)
    for lineno, row in records:
        for field in ("pred", "gold"):
            if field not in row:
                raise DataError(f"{in_path}:{lineno}: missing field {field!r} "
                                "(each row needs 'pred' and 'gold' strings)")
            if not isinstance(row[field], (str, int, float)) or isinstance(row[field], bool):
                raise DataError(f"{in_path}:{lineno}: field {field!r} must be a string or number, "
                                f"got {type(row[field]).__name__}")
            if isinstance(row[field], float) and not math.isfinite(row[field]):
                # "nan" would grade equal to "nan": refuse it rather than grade it
                raise DataError(f"{in_path}:{lineno}: field {field!r} is {row[field]}; "
                                "expected a finite number or a string")
    pairs = [(str(row["pred"]), str(row["gold"])) for _, row in records]
    try:
        graded = grade_many(pairs, style=style, processes=processes, budget_s=budget_s)
    except BudgetExceeded as e:
        raise DataError(f"{in_path}: {e} (--time-budget {budget_s:g}); nothing written: raise "
                        "--time-budget or grade the file in parts") from None
    out_rows = [{**row, "pred_answer": ans, "correct": ok}
                for (_, row), (ans, ok) in zip(records, graded)]
    atomic_write_jsonl(Path(out_path).expanduser(), out_rows)   # where it was checked (~ expanded)
    return sum(ok for _, ok in graded), len(graded)


@click.command("grade")
@click.argument("in_path", metavar="IN.jsonl", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Output JSONL: input rows plus pred_answer and correct.")
@click.option("--style", default="default", show_default=True,
              type=click.Choice(STYLES),
              help="How the final answer is extracted from pred.")
@click.option("--processes", type=click.IntRange(min=1, max=MAX_PROCESSES), default=None,
              help="Worker processes for pairs that need sympy (default: CPU count).")
@click.option("--time-budget", "budget_s", type=float, default=DEFAULT_BUDGET_S, show_default=True,
              metavar="SECONDS", help="Stop (writing nothing) when the whole file takes longer; "
                                      "each row is bounded too (2 s of sympy).")
def grade(in_path: str, out_path: str, style: str, processes: int | None, budget_s: float) -> None:
    """Grade rows with `pred` (model output or answer) and `gold` (answer or solution)."""
    import math

    from raysys.grading.metrics import wilson_interval

    if not (math.isfinite(budget_s) and budget_s > 0):
        raise click.BadParameter(f"expected a finite number of seconds > 0, got {budget_s}",
                                 param_hint="--time-budget")
    correct, total = grade_file(in_path, out_path, style, processes, budget_s)
    lo, hi = wilson_interval(correct, total)
    click.echo(f"accuracy: {correct}/{total} = {correct / total:.2%} "
               f"[95% CI {lo:.2%}, {hi:.2%}] -> {out_path}")
