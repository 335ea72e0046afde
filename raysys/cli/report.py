"""``raysys report RUN_DIR``: rewrite a finished run's report.md and figures."""

from __future__ import annotations

import click


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--no-figures", is_flag=True, help="Only report.md (skip the PNG figures).")
def report(run_dir: str, no_figures: bool) -> None:
    """Regenerate RUN_DIR/report.md and RUN_DIR/figures/<method>.png from result.json and
    state.json (no Ray, no models)."""
    from raysys.pipeline.report_cmd import regenerate

    out = regenerate(run_dir, figures=not no_figures)
    click.echo(f"report:  {out.report}")
    for png in out.figures:
        click.echo(f"figure:  {png}")
