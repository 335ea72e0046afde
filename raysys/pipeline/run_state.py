"""A run directory's state on disk, and the checks of an existing one before anything is
written to it: the layout's names, ``state.json`` (read and validated field by field), every
complete stage's manifest, parts and model dir, and the config the run was started with.

Each error says what is wrong and how to recover (delete the damaged file or stage and re-run:
complete stages are found again from their manifests and model markers).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from raysys.data.io import DataError, check_output_dir, read_json, read_manifest, read_text
from raysys.errors import StageError

STATE = "state.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
MODEL_MARKER = "_COMPLETE.json"
# What makes an existing non-empty directory a run dir (anything else is refused as run_dir).
RUN_DIR_MARKERS = (STATE, CONFIG, "iter_*", "models", "logs")
# Config keys that say where things live, not what the run computes: changing them between a
# run and its resume is not a config change (``tiny_cache`` only holds identical copies).
LOCATION_KEYS = ("run_dir", "tiny_cache")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values), for config diffs."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out.update(flatten(v, key) if isinstance(v, dict) and v else {key: v})
        return out
    return {prefix: data}


def config_diff(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs (added and removed keys included)."""
    a, b = flatten(old), flatten(new)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k, "<unset>") != b.get(k, "<unset>")
            and not any(k == i or k.startswith(i + ".") for i in ignore)]


def load_state(run_dir: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Read a run dir's ``state.json`` (for ``raysys status``); StageError when absent/corrupt.

    With ``verify`` every stage it shows complete is checked on disk too (:func:`check_run_data`:
    manifests, parts and their checksums, model dirs), so status never shows a stage complete
    whose data is gone or changed."""
    d = Path(run_dir).expanduser()
    p = d / STATE
    if not p.is_file():
        raise StageError(f"{run_dir}: not a run directory (no {STATE})")
    state = _read_state(p)
    if verify:
        check_run_data(d, state)
    return state


def check_run(path: str | Path, config: dict[str, Any], *, force: bool = False,
              ignore_keys: tuple[str, ...] = LOCATION_KEYS) -> Path:
    """Everything that can be wrong with (an existing) run dir, found before anything is
    written to it: the path, the state, every stage's manifest and model marker, and a config
    that differs from the stored one (unless ``force``). Returns the absolute path."""
    run_dir = check_run_dir(path)
    _read_state(run_dir / STATE)
    check_run_state(run_dir)
    cfg_path = run_dir / CONFIG
    if cfg_path.exists() and not force:
        diff = config_diff(_read_old_config(cfg_path), config, ignore_keys)
        if diff:
            shown = ", ".join(diff[:10]) + (f" (+{len(diff) - 10} more)" if len(diff) > 10 else "")
            raise StageError(f"{run_dir}: config differs from the run's config.yaml in {shown}; "
                             "use a new run dir or --force to continue with the new config")
    return run_dir


def check_run_dir(path: str | Path, key: str = "run_dir") -> Path:
    """The absolute run dir path; ``StageError`` when it cannot be one (an existing file, a path
    under a regular file, a non-empty directory that is not a run dir)."""
    try:
        return check_output_dir(path, key, RUN_DIR_MARKERS)
    except DataError as e:
        raise StageError(str(e)) from None


def _read_state(p: Path) -> dict[str, Any]:
    """``state.json`` as a dict (empty when absent). It is only ever replaced atomically, so a
    bad one was damaged outside raysys: deleting it is safe, a re-run rebuilds it from the
    stage manifests and model markers."""
    if not p.exists():
        return {}
    fix = f"; delete it (rm {p}) and re-run: complete stages are found again from their manifests"
    try:
        state = read_json(p, StageError)
    except StageError as e:
        raise StageError(f"corrupt run state: {e}{fix}") from None
    if not isinstance(state, dict) or not isinstance(state.get("stages", {}), dict) \
            or not isinstance(state.get("runs", []), list) \
            or not all(isinstance(v, dict) for v in state.get("stages", {}).values()):
        raise StageError(f"corrupt run state: {p}: expected an object with 'stages' (an object of "
                         f"objects) and 'runs' (a list){fix}")
    wrong = state_problem(state)
    if wrong:
        raise StageError(f"corrupt run state: {p}: {wrong}{fix}")
    return state


STAGE_STATUSES = ("running", "complete", "failed")
# Stage metrics the report's timings and throughput compute with (raysys.pipeline.report).
REPORTED_METRICS = ("grading_s", "engine_s", "elapsed_s", "tokens_per_s", "samples_per_s",
                    "tokens_generated", "samples", "rows_generated")
_STAGE_KEY = re.compile(r"^(iter_\d+|models)/[^/\\]+$")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def state_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with the fields of a ``state.json`` object (its shape already checked), or
    None: stage keys (``iter_<k>/<name>``, ``models/<name>``), each stage's status, seconds and
    rows (finite, >= 0), metrics (an object), times and texts; each run's fields. Pure."""
    def kind(v: Any) -> str:
        return repr(v)[:60]

    for key, e in state.get("stages", {}).items():
        where = f"stages[{key!r}]"
        if not _STAGE_KEY.match(str(key)) or ".." in str(key):
            return f"{where}: expected a stage key iter_<k>/<name> or models/<name>"
        if e.get("status") is not None and e.get("status") not in STAGE_STATUSES:
            return f"{where}.status: expected one of {', '.join(STAGE_STATUSES)}, got {kind(e.get('status'))}"
        for name in ("seconds", "rows"):
            v = e.get(name)
            if v is not None and not _number(v) or name == "rows" and v is not None and not isinstance(v, int):
                what = "an integer" if name == "rows" else "a finite number"
                return f"{where}.{name}: expected {what} >= 0 or null, got {kind(v)}"
        if e.get("metrics") is not None and not isinstance(e["metrics"], dict):
            return f"{where}.metrics: expected an object, got {kind(e['metrics'])}"
        for name in REPORTED_METRICS:
            v = (e.get("metrics") or {}).get(name)
            if v is not None and not _number(v):
                return f"{where}.metrics.{name}: expected a finite number >= 0, got {kind(v)}"
        for name in ("start", "end", "phase", "kind", "path", "error"):
            if e.get(name) is not None and not isinstance(e[name], str):
                return f"{where}.{name}: expected text or null, got {kind(e[name])}"
    for i, r in enumerate(state.get("runs", [])):
        if not isinstance(r, dict):
            return f"runs[{i}]: expected an object, got {kind(r)}"
        if r.get("seconds") is not None and not _number(r["seconds"]):
            return f"runs[{i}].seconds: expected a finite number >= 0 or null, got {kind(r['seconds'])}"
        for name in ("start", "end", "host"):
            if r.get(name) is not None and not isinstance(r[name], str):
                return f"runs[{i}].{name}: expected text or null, got {kind(r[name])}"
        pid = r.get("pid")
        if pid is not None and not (isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31):
            return f"runs[{i}].pid: expected a process id or null, got {kind(pid)}"
    return None


def _check_model_stage(d: Path) -> None:
    """A complete model stage that holds a model (config.json or adapter_config.json) still
    has its weights (their safetensors headers whole); ``ModelError`` otherwise."""
    from raysys.models.loading import check_model_dir

    if (d / "config.json").is_file() or (d / "adapter_config.json").is_file():
        check_model_dir(d)


def check_run_data(run_dir: Path, state: dict[str, Any]) -> None:
    """Every stage ``state`` shows complete is complete on disk: a data stage's manifest with
    its parts whole (:func:`raysys.data.io.verify_stage`), a model stage's dir with its marker
    and weights (config.json and safetensors headers). ``StageError`` naming the stage and the
    recovery: delete it and re-run, which rebuilds it."""
    from raysys.data.io import MANIFEST, verify_stage
    from raysys.errors import ModelError

    for key, e in state.get("stages", {}).items():
        if e.get("status") != "complete":
            continue
        d = run_dir / key
        fix = (f"; delete {d} and re-run the run's command (`raysys run {run_dir / CONFIG}`) to "
               f"rebuild stage {key}")
        try:
            if key.startswith("models/"):
                if not (d / MODEL_MARKER).is_file():
                    raise StageError(f"{d}: its {MODEL_MARKER} is gone, though {STATE} shows the "
                                     "model complete")
                _check_model_stage(d)
            else:
                if not (d / MANIFEST).is_file():
                    raise StageError(f"{d}: its {MANIFEST} is gone, though {STATE} shows the stage "
                                     "complete")
                verify_stage(d)
        except (DataError, ModelError, StageError) as err:
            raise StageError(f"damaged run data: {err}{fix}") from None


def read_model_marker(p: Path) -> dict[str, Any]:
    """A model stage's ``_COMPLETE.json``; a damaged one means the model cannot be trusted."""
    try:
        info = read_json(p, StageError)
        if not isinstance(info, dict):
            raise StageError(f"{p}: expected a JSON object")
    except StageError as e:
        raise StageError(f"corrupt model marker: {e}; delete {p.parent} to train the model again") \
            from None
    return info


def _read_old_config(p: Path) -> dict[str, Any]:
    """The run's stored ``config.yaml`` (to compare with the new config)."""
    fix = "; re-run with --force to replace it with the current config"
    from raysys.config import ConfigError
    from raysys.config_yaml import load_yaml_text

    text = read_text(p, StageError, "the run's YAML config")
    try:
        old = load_yaml_text(text, str(p)) or {}
    except yaml.YAMLError as e:
        raise StageError(f"{p}: invalid YAML ({str(e).splitlines()[0]}){fix}") from None
    except ConfigError as e:          # nesting, alias expansion, a duplicate key
        raise StageError(f"{e}{fix}") from None
    if not isinstance(old, dict):
        raise StageError(f"{p}: expected a mapping{fix}")
    return old


def check_run_state(run_dir: Path) -> None:
    """Read every stage manifest and model marker of ``run_dir`` once, so a damaged one fails
    before Ray starts (not in the middle of a run)."""
    from raysys.data.io import verify_stage
    from raysys.errors import ModelError

    for manifest in sorted(run_dir.glob(f"iter_*/*/{'_MANIFEST.json'}")):
        try:
            read = read_manifest(manifest.parent)
        except DataError as e:
            raise StageError(f"corrupt run state: {e}") from None
        try:
            verify_stage(manifest.parent, read)
        except DataError as e:
            # a complete stage whose parts are gone or changed would be skipped, its data wrong
            raise StageError(f"damaged run data: {e}; delete {manifest.parent} and re-run to "
                             f"rebuild the stage") from None
    for marker in sorted(run_dir.glob(f"models/*/{MODEL_MARKER}")):
        read_model_marker(marker)
        try:
            _check_model_stage(marker.parent)
        except ModelError as e:
            raise StageError(f"damaged run data: {e}; delete {marker.parent} and re-run to train "
                             "the model again") from None
