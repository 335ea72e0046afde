"""``raysys train``: fine-tune a model on Ray Train (DeepSpeed + PEFT LoRA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


@click.command("train")
@click.option("--kind", default=None,
              help="Loss: sft, dpo, orpo or verifier (LLM2 token pairs).")
@click.option("--model", "model", default=None, help="Model directory to start from.")
@click.option("--data", default=None, help="Parquet file, stage dir, LLaMA-Factory JSON or JSONL.")
@click.option("--out", default=None, help="Output model / adapter directory.")
@click.option("--workers", type=int, default=None, help="Ray Train workers (default 1).")
@click.option("--zero", type=int, default=None, help="DeepSpeed ZeRO stage 0-3 (default 2).")
@click.option("--lora-r", type=int, default=None, help="LoRA rank; 0 for full fine-tuning.")
@click.option("--lr", type=float, default=None, help="Peak learning rate.")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (overrides epochs).")
@click.option("--run-dir", default=None, help="Ray Train storage / resume dir "
                                             "(default <out>/../ray_train).")
@click.option("--config", "config_path", type=click.Path(), default=None,
              help="YAML file with TrainConfig keys.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set warmup_ratio=0.1 (repeatable).")
@click.option("--verbose", "-v", is_flag=True,
              help="Show Ray Train, DeepSpeed and transformers output and worker logs on the "
                   "console (by default they go to the run dir's logs/).")
def train(kind: str | None, model: str | None, data: str | None, out: str | None,
          workers: int | None, zero: int | None, lora_r: int | None, lr: float | None,
          max_steps: int | None, run_dir: str | None, config_path: str | None,
          overrides: tuple[str, ...], verbose: bool) -> None:
    """Fine-tune MODEL on DATA with one of the sft/dpo/orpo/verifier losses; write OUT."""
    from raysys.config import from_dict
    from raysys.config_yaml import deep_merge, load_yaml, parse_overrides
    from raysys.training.config import TrainConfig, require_run_fields

    raw = load_yaml(config_path) if config_path else {}
    flags = {"kind": kind, "model": model, "data": data, "out": out, "num_workers": workers,
             "zero_stage": zero, "lr": lr, "max_steps": max_steps}
    raw = deep_merge(raw, {k: v for k, v in flags.items() if v is not None})
    if lora_r is not None:
        lora = {"enabled": False} if lora_r == 0 else {"r": lora_r, "enabled": True}
        raw = deep_merge(raw, {"lora": lora})
    raw = deep_merge(raw, parse_overrides(overrides))
    require_run_fields(raw)
    given = {"model": model, "data": data, "out": out}
    keys = {name: f"--{name}" if given[name] is not None else name for name in given}
    inputs = {keys["model"]: raw["model"], keys["data"]: raw["data"], "--config": config_path}
    check_train_outputs(raw["out"], run_dir, inputs, out_key=keys["out"])
    cfg = from_dict(TrainConfig, raw)
    from raysys.models.loading import check_config_models
    from raysys.preflight import check_satisfiable

    check_config_models(cfg)        # the model dir, then what its shape and this machine allow
    check_satisfiable(cfg)
    # Ray Train's storage: --run-dir, or <out>/../ray_train, which a model dir may sit beside
    from raysys.training.trainer import resolve_work_dir
    work_dir = resolve_work_dir(cfg, run_dir)
    check_train_outputs(None, str(work_dir), inputs,
                        run_dir_key="--run-dir" if run_dir else "--run-dir (default: <out>/../ray_train)")
    result = _train_logged(cfg, run_dir, work_dir, verbose)
    status = "done" if result.completed else "halted (rerun to resume)"
    click.echo(f"{status}: {result.out}")
    click.echo(json.dumps({k: v for k, v in result.metrics.items() if v is not None}))


def _train_logged(cfg: Any, run_dir: str | None, work_dir: Path, verbose: bool) -> Any:
    """Train with raysys's console: its own lines here, Ray Train's, DeepSpeed's and the
    libraries' output in ``WORK_DIR/logs/driver.log`` unless ``verbose``. The trainer's input
    checks run inside; a refusal leaves no logs dir behind."""
    import logging
    import time

    from raysys.console import run_logging
    from raysys.pipeline.run_dir import stage_end_line
    from raysys.training.trainer import train as run_train

    log = logging.getLogger("raysys.cli.train")
    t0 = time.monotonic()
    # No logs/ray_session link: the storage probe lists <out>/.. (holding the default work
    # dir) following links, and Ray's session logs change under it (nodes "do not see" it).
    with run_logging(work_dir, verbose=verbose, announce=f"train {cfg.name} ({cfg.kind}): {work_dir}",
                     discard_if_unused=True, link_ray_session=False):
        result = run_train(cfg, run_dir=run_dir)
        took = time.monotonic() - t0
        if result.completed:
            log.info(stage_end_line(f"train {cfg.name}", None, took, took, result.metrics))
        else:
            log.info("train %s: halted at step %s (rerun to resume)", cfg.name,
                     result.metrics.get("step"))
    return result


def check_train_outputs(out: str | None, run_dir: str | None, inputs: dict[str, str | None], *,
                        out_key: str = "--out", run_dir_key: str = "--run-dir") -> None:
    """Before torch or Ray: the output model dir (renamed into place over any old one, so an
    ``--out`` equal to or above ``--model`` deleted the model's weights) and Ray Train's
    storage dir are neither inputs nor inside or around one."""
    from raysys.config import ConfigError
    from raysys.data.io import check_not_an_input

    check_not_an_input(out, inputs, out_key, error=ConfigError)
    check_not_an_input(run_dir, inputs, run_dir_key, error=ConfigError)
