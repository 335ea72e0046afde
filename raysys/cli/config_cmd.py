"""``raysys config show FILE``: print the resolved config (defaults filled, overrides applied)."""

from __future__ import annotations

import click


@click.group()
def config() -> None:
    """Show and validate run configs."""


@config.command("show")
@click.argument("path", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
def show(path: str, overrides: tuple[str, ...]) -> None:
    """Validate PATH and print the resolved config as YAML."""
    from raysys.config import dump_yaml
    from raysys.data.sources import check_config_data
    from raysys.models.loading import check_config_models
    from raysys.preflight_models import check_model_limits
    from raysys.recipes import load_run_config

    cfg = load_run_config(path, overrides)
    check_config_models(cfg)        # model dirs it names: config.json + safetensors headers
    check_config_data(cfg)          # its datasets load: rows well formed, ids unique
    # what its models' shapes and its engine never allow; the machine's resources are the
    # run's check (a config shown here may be meant for a cluster)
    check_model_limits(cfg)
    click.echo(dump_yaml(cfg), nl=False)
