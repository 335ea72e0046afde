"""``raysys grade IN.jsonl --out OUT.jsonl``: grade predictions against gold answers."""

from __future__ import annotations

import click

from raysys.grading.extract import STYLES   # pure string code: cheap to import at CLI start


def grade_file(in_path: str, out_path: str, style: str = "default",
               processes: int | None = None) -> tuple[int, int]:
    """Grade every row (``pred``, ``gold``) of ``in_path`` into ``out_path`` (written atomically,
    only after every row was read and checked). Returns ``(correct, total)``."""
    import math

    from raysys.data.io import (DataError, atomic_write_jsonl, check_not_an_input,
                                check_output_file, read_records)
    from raysys.grading import grade_many

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
    graded = grade_many(pairs, style=style, processes=processes)
    out_rows = [{**row, "pred_answer": ans, "correct": ok}
                for (_, row), (ans, ok) in zip(records, graded)]
    atomic_write_jsonl(out_path, out_rows)
    return sum(ok for _, ok in graded), len(graded)


@click.command("grade")
@click.argument("in_path", metavar="IN.jsonl", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Output JSONL: input rows plus pred_answer and correct.")
@click.option("--style", default="default", show_default=True,
              type=click.Choice(STYLES),
              help="How the final answer is extracted from pred.")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Worker processes for pairs that need sympy (default: CPU count).")
def grade(in_path: str, out_path: str, style: str, processes: int | None) -> None:
    """Grade rows with `pred` (model output or answer) and `gold` (answer or solution)."""
    from raysys.grading.metrics import wilson_interval

    correct, total = grade_file(in_path, out_path, style, processes)
    lo, hi = wilson_interval(correct, total)
    click.echo(f"accuracy: {correct}/{total} = {correct / total:.2%} "
               f"[95% CI {lo:.2%}, {hi:.2%}] -> {out_path}")
