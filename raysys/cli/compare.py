"""``raysys compare RUN_DIR RUN_DIR ...``: one recipe's reruns (other seeds) side by side."""

from __future__ import annotations

import click


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise click.BadParameter(f"expected BASELINE:ROW (two row names of the report's table), "
                                 f"got {text!r}", param_hint="--pair")
    return a, b


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--pair", "pairs", multiple=True, metavar="BASELINE:ROW",
              help="A comparison, ROW minus BASELINE (repeatable; default: every row against "
                   "the method's baseline, as in each run's report). NAME@maj compares a row's "
                   "maj@k votes, e.g. plain@maj:guided_beta1@maj.")
def compare(run_dirs: tuple[str, ...], pairs: tuple[str, ...]) -> None:
    """Each run's paired difference and their mean, with an interval that covers training
    noise: for runs of one config with other seeds, graded on the same test problems."""
    from raysys.cli.report import recipe_layout
    from raysys.pipeline.replicates import check_distinct_runs, replicates_table
    from raysys.pipeline.report_cmd import load_result, with_layout

    check_distinct_runs(run_dirs)
    results = [(d, load_result(d)) for d in run_dirs]
    # each run's baseline row: marked in its result.json, else its recipe record's
    runs = [(d, with_layout(r, recipe_layout(r["method"]))) for d, r in results]
    click.echo(replicates_table(runs, [_pair(p) for p in pairs] or None))
