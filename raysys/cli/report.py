"""``raysys report RUN_DIR``: rewrite a finished run's report.md and figures."""

from __future__ import annotations

import click


def recipe_layout(method: str) -> dict | None:
    """The layout (baseline, differences, panels) of the recipe that wrote a result, from its
    record; None for a name no recipe has (the report then uses the defaults)."""
    from raysys.config import ConfigError
    from raysys.recipes import get_recipe

    try:
        return get_recipe(method).layout()
    except ConfigError:
        return None


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--no-figures", is_flag=True, help="Only report.md (skip the PNG figures).")
def report(run_dir: str, no_figures: bool) -> None:
    """Regenerate RUN_DIR/report.md and RUN_DIR/figures/<method>.png from result.json and
    state.json (no Ray, no models)."""
    from raysys.pipeline.report_cmd import load_result, regenerate

    out = regenerate(run_dir, figures=not no_figures,
                     layout=recipe_layout(load_result(run_dir)["method"]))
    click.echo(f"report:  {out.report}")
    for png in out.figures:
        click.echo(f"figure:  {png}")
