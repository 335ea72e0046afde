"""``raysys run CONFIG``, ``raysys status RUN_DIR`` and ``raysys demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _run_config(path: str | Path, overrides: tuple[str, ...], run_dir: str | None, force: bool) -> Any:
    """Validate the whole config (one ConfigError before any work), then run its recipe."""
    from raysys.recipes import load_run_config, recipe_module

    sets = tuple(overrides) + ((f"run_dir={run_dir}",) if run_dir else ())
    cfg = load_run_config(path, sets)
    return recipe_module(cfg.recipe).run(cfg, force=force)


def _print_result(result: Any) -> None:
    """A recipe's :class:`~raysys.recipes.steps.RecipeResult`: its table and where it wrote."""
    from raysys.pipeline.report import accuracy_table

    click.echo(accuracy_table(result.eval_dicts()))
    click.echo(f"\nrun dir: {result.run_dir}\nreport:  {result.report}")


@click.command()
@click.argument("config", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--run-dir", default=None, help="Override the config's run_dir.")
@click.option("--force", is_flag=True, help="Continue an existing run dir whose config differs.")
def run(config: str, overrides: tuple[str, ...], run_dir: str | None, force: bool) -> None:
    """Run the recipe in CONFIG end to end; re-running resumes where it stopped."""
    _print_result(_run_config(config, overrides, run_dir, force))


@click.command()
@click.argument("run_dir", type=click.Path())
def status(run_dir: str) -> None:
    """Print each stage of RUN_DIR: status, rows, time and metrics."""
    from raysys.pipeline import format_status, load_state

    click.echo(format_status(load_state(run_dir)))
    report = Path(run_dir) / "report.md"
    if report.is_file():
        click.echo(f"report: {report}")


@click.command()
@click.option("--quick", is_flag=True, help="The small plumbing demo (every stage, few steps; minutes, mostly trainer start-up).")
@click.option("--run-dir", default=None, help="Where to write the run (default runs/demo[-quick]).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--force", is_flag=True, help="Continue an existing run dir whose config differs.")
def demo(quick: bool, run_dir: str | None, overrides: tuple[str, ...], force: bool) -> None:
    """Weak-to-strong on the synthetic arithmetic task with tiny models, on local Ray (CPU)."""
    name = "demo_quick.yaml" if quick else "demo.yaml"
    path = REPO_CONFIGS / name
    if not path.is_file():
        raise click.ClickException(f"{path}: demo config not found (run from a source checkout)")
    result = _run_config(path, overrides, run_dir, force)
    _print_result(result)
