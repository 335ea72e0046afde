"""What a run needs besides a valid config, checked in the driver before Ray starts or anything
is written: outputs that alias none of the inputs, a writable run dir, the model dirs and
datasets the config names, nothing it asks for that can never be satisfied (the models' shapes,
the engine's rules, this machine's resources), a reachable Ray address. ``raysys run`` and
``demo`` call :func:`preflight` first."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def check_satisfiable(cfg: Any) -> None:
    """What a run asks for that can never be given, refused before any work: parallelism, LoRA
    targets, lengths and sampling its models' shapes and its engine do not allow
    (:mod:`raysys.preflight_models`), and, on a local Ray, role groups and training stages this
    machine cannot hold (:mod:`raysys.preflight_cluster`; on a joined cluster
    ``preflight_cluster.check_cluster_resources`` runs once connected). Needs the config's
    model dirs checked first (:func:`raysys.models.loading.check_config_models`)."""
    from raysys.preflight_cluster import check_local_resources
    from raysys.preflight_models import check_model_limits

    check_model_limits(cfg)
    check_local_resources(cfg)


def preflight(cfg: Any, *, force: bool = False, config_path: str | Path | None = None) -> None:
    """What a run needs besides a valid config, checked in the driver before any work (and
    before RUN_DIR/logs is written): outputs (run dir, ``tiny_cache``) that are none of its
    inputs (``config_path`` is the config file, an input too), a run dir it can write (not a
    file, not an unrelated directory; an existing run's state, manifests and config), a
    writable ``tiny_cache`` that is not an unrelated directory, every model dir it names
    (config.json and safetensors headers), every dataset it names (its source options, and a
    local file's rows: a dataset that would fail only in its stage inside Ray fails here), what
    can never be satisfied (:func:`check_satisfiable`: the models' shapes, the engine's rules,
    this machine's resources on a local Ray), and a reachable Ray address (bounded wait)."""
    from raysys.config import to_dict
    from raysys.data.io import check_output_dir
    from raysys.data.sources import check_config_data
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
    check_config_data(cfg)      # every local dataset loads: options, rows, unique ids
    check_satisfiable(cfg)
    cluster = getattr(cfg, "cluster", None)
    if cluster is not None:
        check_ray_address(cluster.address)
