"""Evaluate a model on a dataset: the ``samples`` stage plus ``metrics.json`` / ``metrics.md``.

``EvalConfig`` is what ``raysys eval`` / ``raysys sample`` build from flags or a YAML file.
Every check that can fail on user input runs in :func:`prepare_eval` before Ray starts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from raysys.config import (ClusterConfig, ConfigError, DatasetSpec, EngineConfig, ModelSpec,
                           SamplingConfig, _join, check_file)

log = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"

# The answer style a dataset's solutions are written in (see raysys.grading.extract_answer).
_DATASET_STYLE = {"math": "math", "math500": "math", "olympiad": "math", "w2s": "w2s"}


@dataclass
class EvalConfig:
    """One evaluation: a model, a dataset, how to prompt and sample, where to write."""

    model: ModelSpec
    data: DatasetSpec
    out: str
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=256))
    engine: EngineConfig = field(default_factory=EngineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    template: Literal["zero_shot", "few_shot", "chat", "critique_answer"] = "zero_shot"
    few_shot: int = 0                   # demonstrations drawn from ``demos``
    demos: str | None = None            # a file in the same format as ``data``
    demo_seed: int = 0
    k: list[int] = field(default_factory=list)   # maj@k / pass@k; empty: 1, 2, 4, ..., n
    grade_style: str = "auto"           # auto: from the dataset (math -> boxed, gsm8k -> ####)
    model_name: str | None = None       # the samples' ``model`` column (default: dir name)

    def validate(self, path: str) -> None:
        from raysys.data.sources import check_name
        from raysys.grading import STYLES

        check_name(self.data.name, _join(path, "data"))
        n = self.sampling.n
        for i, k in enumerate(self.k):
            if not 1 <= k <= n:
                raise ConfigError(f"{_join(path, 'k')}[{i}]: expected 1 <= k <= sampling.n = {n}, got {k}")
        if self.few_shot < 0:
            raise ConfigError(f"{_join(path, 'few_shot')}: expected >= 0, got {self.few_shot}")
        if self.few_shot > 0 and self.demos is None:
            raise ConfigError(f"{_join(path, 'demos')}: few_shot = {self.few_shot} needs a demos file")
        if self.template == "few_shot" and self.few_shot == 0:
            raise ConfigError(f"{_join(path, 'few_shot')}: template 'few_shot' needs few_shot >= 1")
        check_file(self.demos, _join(path, "demos"))
        if self.grade_style != "auto" and self.grade_style not in STYLES:
            raise ConfigError(f"{_join(path, 'grade_style')}: expected auto or one of "
                              f"{', '.join(STYLES)}, got {self.grade_style!r}")


def resolve_grade_style(cfg: EvalConfig) -> str:
    """``grade_style`` unless ``auto``: critique prompts end with "The answer is X"; otherwise the
    dataset's own answer format decides."""
    if cfg.grade_style != "auto":
        return cfg.grade_style
    if cfg.template == "critique_answer":
        return "critique"
    return _DATASET_STYLE.get(cfg.data.name, "default")


def k_list(cfg: EvalConfig) -> list[int]:
    """The k values to report: ``cfg.k`` or 1, 2, 4, ..., n."""
    from raysys.distributed.metrics import default_k_list

    return sorted(set(cfg.k)) if cfg.k else default_k_list(cfg.sampling.n)


def load_demos(cfg: EvalConfig) -> list[tuple[str, str]] | None:
    """``few_shot`` ``(question, worked solution)`` pairs from ``cfg.demos`` (same loader as data)."""
    from raysys.data.sources import load_problems
    from raysys.prompts import select_demos

    if cfg.few_shot == 0 or cfg.demos is None:
        return None
    spec = DatasetSpec(name=cfg.data.name, path=cfg.demos, fields=cfg.data.fields,
                       options=cfg.data.options)
    rows = load_problems(spec, "demos").to_pylist()
    pairs = [(r["question"], r["gold_solution"] or r["gold_answer"] or "") for r in rows]
    return [tuple(p) for p in select_demos(pairs, cfg.few_shot, cfg.demo_seed)]


@dataclass
class PreparedEval:
    """Everything read and checked before Ray starts."""

    cfg: EvalConfig
    problems: pa.Table
    demos: list[tuple[str, str]] | None
    load_s: float


def prepare_eval(cfg: EvalConfig) -> PreparedEval:
    """Load problems and demos; raises ConfigError/DataError/ModelError on bad input.

    The model is checked as ``run`` and ``train`` check theirs, from its small files (config.json
    against the safetensors headers, the tokenizer): a hub id once fetched too, and the verifier
    of guided decoding (its dir and backbone weights), so none of it fails inside a replica."""
    from raysys.models.loading import check_model_dir, check_model_usable, resolve_model_path

    t0 = time.perf_counter()
    # out is checked with ~ expanded (check_output_dir): written there too, not at "./~/..."
    cfg.out = str(Path(cfg.out).expanduser())
    model_dir = resolve_model_path(cfg.model.path)   # a missing/unusable model fails here, not on Ray
    check_model_usable(model_dir, cfg.model.trust_remote_code, "model.path")
    if cfg.engine.kind == "guided":
        from raysys.engines.guided import check_verifier_dir
        verifier = check_verifier_dir(cfg.engine.verifier)
        check_model_dir(verifier, cfg.model.trust_remote_code, "engine.verifier")
    from raysys.data.sources import load_problems

    problems = load_problems(cfg.data, "data")
    try:
        demos = load_demos(cfg)
    except ConfigError as e:     # select_demos names its own key; eval's is few_shot
        raise ConfigError(str(e).replace("prompt.num_demos:", "few_shot:", 1)) from None
    return PreparedEval(cfg, problems, demos, time.perf_counter() - t0)


def samples_end_line(problems: int, manifest: dict[str, Any], reused: bool) -> str:
    """The console's line for the finished ``samples`` stage of ``problems`` problems (its
    ``manifest``): samples, the new ones when resumed, generation time and rates; ``reused``:
    the stage was complete before this command (nothing generated)."""
    rows = manifest.get("rows", 0)
    head = f"samples: {rows} samples of {problems} problems"
    if reused:
        return f"{head}, complete already (nothing generated)"
    m = manifest.get("metrics") or {}
    new = int(m.get("rows_generated") or 0)
    seconds = (m.get("wall_s") or {}).get("generate")
    text = head + (f" ({new} new)" if new != rows else "")
    if isinstance(seconds, (int, float)) and seconds > 0:
        text += f" in {seconds:.1f}s, {new / seconds:.3g} samples/s"
        if isinstance(m.get("tokens_per_s"), (int, float)):
            text += f", {m['tokens_per_s']:.3g} tokens/s"
    return text


def run_eval(prepared: PreparedEval, *, with_metrics: bool = True) -> dict[str, Any]:
    """Sample (resumably) into ``<out>/samples``; with metrics, also write metrics.json/.md.

    Returns the metrics (or the samples manifest when ``with_metrics`` is false).
    """
    from raysys.data.io import atomic_write_json, atomic_write_text
    from raysys.distributed.metrics import metrics_markdown, summarize_samples
    from raysys.distributed.sampling import load_samples, sample_problems

    from raysys.config import config_inputs
    from raysys.distributed.ray_init import init_ray
    from raysys.distributed.storage import use_storage

    from raysys.data.io import is_complete

    cfg = prepared.cfg
    out = Path(cfg.out).expanduser()
    init_ray(cfg.cluster)
    # The model / adapter / verifier reach replicas on nodes without the driver's disk.
    use_storage(cfg.cluster.storage, out, list(config_inputs(cfg).values()))
    reused = is_complete(out / SAMPLES_DIR)
    manifest = sample_problems(
        prepared.problems, model=cfg.model, engine=cfg.engine, sampling=cfg.sampling,
        cluster=cfg.cluster, out_dir=out / SAMPLES_DIR, prompt_template=cfg.template,
        demos=prepared.demos, grade_style=resolve_grade_style(cfg), model_name=cfg.model_name)
    log.info(samples_end_line(prepared.problems.num_rows, manifest, reused))
    if not with_metrics:
        return manifest
    t0 = time.perf_counter()
    samples = load_samples(out / SAMPLES_DIR)
    metrics = summarize_samples(samples, k_list(cfg))
    stage = manifest.get("metrics", {})
    for key in ("tokens_generated", "rows_generated", "tokens_per_s", "engine_s",
                "tokens_per_engine_s", "replicas", "nodes"):
        if key in stage:
            metrics[key] = stage[key]
    metrics["wall_s"] = {"load_data": round(prepared.load_s, 3), **stage.get("wall_s", {}),
                         "metrics": round(time.perf_counter() - t0, 3)}
    metrics.update({"model": cfg.model.path, "data": f"{cfg.data.name}:{cfg.data.path}",
                    "template": cfg.template, "temperature": cfg.sampling.temperature,
                    "grade_style": resolve_grade_style(cfg)})
    atomic_write_json(out / METRICS_JSON, metrics)
    atomic_write_text(out / METRICS_MD, metrics_markdown(metrics, f"Evaluation: {Path(cfg.model.path).name}"
                                                                  f" on {cfg.data.name}"))
    return metrics
