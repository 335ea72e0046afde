"""``raysys sample`` and ``raysys eval``: sample a dataset with Ray Data; eval adds metrics.

Flags override a ``--config`` YAML (an ``EvalConfig``), and ``--set key=value`` overrides both.
All input checks run before Ray starts, so a typo costs no cluster start-up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from raysys.config import ConfigError


def parse_data_arg(value: str) -> dict[str, Any]:
    """``gsm8k:path/test.jsonl`` -> ``{"name": "gsm8k", "path": ...}``; ``synthetic`` alone is fine."""
    name, sep, path = value.partition(":")
    if not name:
        raise ConfigError(f"--data {value!r}: expected NAME:PATH, e.g. gsm8k:data/test.jsonl")
    return {"name": name, "path": path} if sep and path else {"name": name}


def flags_to_dict(opts: dict[str, Any]) -> dict[str, Any]:
    """The EvalConfig mapping given on the command line (flags left unset are absent)."""
    out: dict[str, Any] = {}

    def put(section: str | None, key: str, value: Any) -> None:
        if value is None or value == ():
            return
        (out.setdefault(section, {}) if section else out)[key] = value

    if opts.get("model"):
        put("model", "path", opts["model"])
    put("model", "adapter", opts.get("adapter"))
    if opts.get("data"):
        out["data"] = parse_data_arg(opts["data"])
    put("data", "limit", opts.get("limit"))
    put("sampling", "n", opts.get("n"))
    put("sampling", "temperature", opts.get("temperature"))
    put("sampling", "top_p", opts.get("top_p"))
    put("sampling", "seed", opts.get("seed"))
    put("sampling", "max_new_tokens", opts.get("max_new_tokens"))
    put("engine", "kind", opts.get("engine"))
    put("engine", "verifier", opts.get("verifier"))
    put("engine", "beta", opts.get("beta"))
    put("cluster", "replicas", opts.get("replicas"))
    put("cluster", "address", opts.get("address"))
    put(None, "few_shot", opts.get("few_shot"))
    put(None, "demos", opts.get("demos"))
    put(None, "template", opts.get("template"))
    if opts.get("few_shot") and not opts.get("template"):
        out["template"] = "few_shot"
    put(None, "k", list(opts.get("k") or ()) or None)
    put(None, "grade_style", opts.get("grade_style"))
    put(None, "out", opts.get("out"))
    return out


# What every eval / sample needs, named by its flag with what it is (from_dict would only say
# "model: required field missing (expected mapping)").
REQUIRED = (("model", "--model", "the model dir (or hub id) to sample from"),
            ("data", "--data", "the problems, NAME:PATH (e.g. gsm8k:data/test.jsonl) or synthetic"),
            ("out", "--out", "the dir to write samples/ and metrics into"))


def build_config(config_path: str | None, opts: dict[str, Any], overrides: tuple[str, ...]) -> Any:
    """YAML (if any) <- flags <- ``--set`` overrides, validated as an ``EvalConfig``."""
    from raysys.config import from_dict
    from raysys.config_yaml import deep_merge, load_yaml, parse_overrides
    from raysys.distributed.evaluate import EvalConfig

    raw = load_yaml(config_path) if config_path else {}
    raw = deep_merge(deep_merge(raw, flags_to_dict(opts)), parse_overrides(overrides))
    for key, flag, what in REQUIRED:
        if raw.get(key) is None:
            raise ConfigError(f"{flag}: missing; {what} (or {key}: in --config)")
    try:
        return from_dict(EvalConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e}" if config_path else str(e)) from None


def _options(fn: Callable) -> Callable:
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="EvalConfig YAML; flags override it."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config key, e.g. sampling.top_p=0.95."),
        click.option("--model", help="Model dir (or hub id)."),
        click.option("--adapter", help="LoRA adapter dir applied on top of --model."),
        click.option("--data", help="NAME:PATH, e.g. gsm8k:data/gsm8k/test.jsonl."),
        click.option("--limit", type=int, help="Use the first N problems."),
        click.option("--n", type=int, help="Samples per problem."),
        click.option("--temperature", type=float, help="0 = greedy."),
        click.option("--top-p", "top_p", type=float),
        click.option("--seed", type=int),
        click.option("--max-new-tokens", "max_new_tokens", type=int),
        click.option("--few-shot", "few_shot", type=int, help="Demonstrations from --demos."),
        click.option("--demos", type=click.Path(), help="Demo file in the --data format."),
        click.option("--template", type=click.Choice(["zero_shot", "few_shot", "chat", "critique_answer"])),
        click.option("--engine", type=click.Choice(["auto", "vllm", "hf", "guided"]),
                     help="guided: LLM2 verifier-guided decoding (needs a verifier dir: --verifier "
                          "on eval, --set engine.verifier=DIR on sample)."),
        click.option("--replicas", type=int, help="Sampler replicas (Ray Data actors)."),
        click.option("--address", help="Ray address: auto, ray://host:port (default: local)."),
        click.option("--k", "k", type=int, multiple=True,
                     help="maj@k / pass@k to report; repeatable (default 1, 2, 4, ..., n)."),
        click.option("--grade-style", "grade_style", help="Answer style (default: from the dataset)."),
        click.option("--out", help="Output dir: samples/, metrics.json, metrics.md."),
        click.option("--verbose", "-v", is_flag=True,
                     help="Show Ray Data's progress, library output and worker logs on the "
                          "console (by default they go to OUT/logs/)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


# Each input key of an EvalConfig -> (its flag, the click option's name): errors name the flag
# when the user set the input with it, else the config key (from --config / --set).
INPUT_FLAGS = {"model.path": ("--model", "model"), "model.adapter": ("--adapter", "adapter"),
               "data.path": ("--data", "data"), "demos": ("--demos", "demos"),
               "engine.verifier": ("--verifier", "verifier")}


def check_eval_outputs(cfg: Any, opts: dict[str, Any], config_path: str | None) -> None:
    """``out`` (its samples/ parts replaced, metrics files rewritten) may not be, contain or
    lie inside the model, adapter, data, demos, verifier or config file it reads."""
    from raysys.config import ConfigError, config_inputs
    from raysys.data.io import check_not_an_input

    def name(key: str) -> str:
        flag, opt = INPUT_FLAGS.get(key, (key, None))
        return flag if opt and opts.get(opt) else key

    inputs: dict[str, str | None] = {name(k): v for k, v in config_inputs(cfg).items()}
    inputs["--config"] = config_path
    check_not_an_input(cfg.out, inputs, "--out" if opts.get("out") else "out", error=ConfigError)


# What an eval / sample output dir may already hold (a dir with none of them is not ours).
OUTPUT_MARKERS = ("samples", "metrics.json", "metrics.md", "logs/driver.log")


def _run(opts: dict[str, Any], *, with_metrics: bool) -> tuple[Any, dict[str, Any]]:
    """Check everything, then sample (and score) with raysys's console: its own lines here,
    Ray Data's progress tables and library output in ``OUT/logs/driver.log`` unless verbose."""
    from raysys.console import run_logging
    from raysys.distributed.evaluate import prepare_eval, run_eval

    config_path, verbose = opts.pop("config_path"), opts.pop("verbose", False)
    cfg = build_config(config_path, opts, opts.pop("overrides"))
    check_eval_outputs(cfg, opts, config_path)     # before any loading, Ray or torch
    from raysys.models.loading import check_config_models
    from raysys.preflight import check_satisfiable

    check_config_models(cfg)                # adapters and their bases too, before Ray
    prepared = prepare_eval(cfg)            # every input check, before Ray
    check_satisfiable(cfg)                  # resources, model shape, engine rules
    from raysys.data.io import check_output_dir
    from raysys.distributed.ray_init import check_ray_address
    check_output_dir(cfg.out, "out", OUTPUT_MARKERS)
    check_ray_address(cfg.cluster.address)
    import ray

    owns_ray = not ray.is_initialized()
    what = f"{'eval' if with_metrics else 'sample'}: {Path(cfg.out).absolute()}"
    with run_logging(cfg.out, verbose=verbose, announce=what, discard_if_unused=True):
        try:
            return cfg, run_eval(prepared, with_metrics=with_metrics)
        finally:
            if owns_ray and ray.is_initialized():
                ray.shutdown()


@click.command("sample")
@_options
def sample(**opts: Any) -> None:
    """Sample completions for a dataset into OUT/samples (resumable)."""
    cfg, manifest = _run(opts, with_metrics=False)
    click.echo(f"samples: {manifest.get('rows', 0)} rows -> {cfg.out}/samples")


def _eval_options(fn: Callable) -> Callable:
    """Flags only ``eval`` takes: the verifier of ``--engine guided``."""
    fn = click.option("--beta", type=float,
                      help="Guided decoding: candidate logit += beta * verifier score (0.25).")(fn)
    return click.option("--verifier", type=click.Path(file_okay=False),
                        help="Guided decoding: a saved token-verifier dir.")(fn)


@click.command("eval")
@_options
@_eval_options
def eval_cmd(**opts: Any) -> None:
    """Evaluate a model: accuracy (first sample), maj@k, pass@k, throughput."""
    _, metrics = _run(opts, with_metrics=True)
    headline = {k: v for k, v in metrics.items()
                if k in ("problems", "n", "accuracy", "tokens_per_s") or k.startswith(("maj@", "pass@"))}
    click.echo(json.dumps(headline, sort_keys=True))
