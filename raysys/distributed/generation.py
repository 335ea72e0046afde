"""The one generation stage: input rows -> prompts -> completions -> output rows of a declared kind.

Every stage that asks a model for text (samples of problems, critiques of solutions,
refinements of (solution, critique) rows, ...) is this function with a :class:`GenerationSpec`:

input table -> (driver) a stable key and a prompt per row -> work rows, only for the
``(key, index)`` pairs not yet on disk -> completions, from Ray Data engine actors started for the
stage or from a long-lived actor group -> output rows built by ``spec.rows`` -> parquet parts
written by the driver as results stream in (no shared filesystem needed) -> ``_MANIFEST.json``
written last. ``_REQUEST.json`` fingerprints the request: a different request on the same dir is
a ``StageError``; a killed stage re-run generates only the missing pairs, never duplicates.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysys.config import ClusterConfig, EngineConfig, ModelSpec
from raysys.data.io import DataError, is_complete, read_manifest, read_stage, write_manifest
from raysys.data.schema import conform
from raysys.engines.base import Completion, SamplingParams
from raysys.distributed.actors import StallError, iter_with_stall_bound
from raysys.distributed.stage_writer import (GenerationSpec, Progress, claim, dedupe_rows, done_keys,
                                             finalize_parts, land_part, load_generated,
                                             request_fingerprint, row_keys, run_id, sort_rows,
                                             stage_metrics)
from raysys.errors import StageError
from raysys.pipeline.live_metrics import run_name, stage_progress

__all__ = ["GenerationSpec", "LocalGroup", "dedupe_rows", "done_keys", "load_generated",
           "missing_items", "request_fingerprint", "row_keys", "run_generation", "run_map",
           "sort_rows", "udf_batch_size", "udf_num_cpus"]

log = logging.getLogger(__name__)

NODE_COLUMN = "_node_id"          # carried out of the UDF for the manifest, never written
ENGINE_S_COLUMN = "_engine_s"     # engine seconds of the batch (same value on every row)
CPU_RESERVE = 0.5                 # CPUs left free for Ray Data's own tasks on CPU-only clusters
# Wait for every replica's engine before feeding batches: otherwise the first actor up takes
# all the work on small jobs, and a cluster too small for the pool fails with a clear timeout
# instead of hanging.
ACTOR_START_TIMEOUT_S = 900



def missing_items(keys: list[str], prompts: list[str], items: list[dict[str, Any]], n: int,
                  done: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """One work row per input row that still lacks outputs, listing the missing indices."""
    work = []
    for key, prompt, item in zip(keys, prompts, items):
        idxs = [i for i in range(n) if (key, i) not in done]
        if idxs:
            work.append({"key": key, "prompt": prompt, "item": json.dumps(item, default=str),
                         "idxs": idxs})
    return work


def decode_work(work: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Work rows with their input row parsed back from its JSON transport form."""
    return [{**w, "item": json.loads(w["item"]) if isinstance(w["item"], str) else w["item"]}
            for w in work]


def generate_work(generate: Callable[[list[str], SamplingParams], list[list[Completion]]],
                  work: list[dict[str, Any]], params: SamplingParams) -> list[list[Completion]]:
    """Completions for ``work`` rows (one list per row, one per missing index) from an engine's
    or a group's ``generate``: a resumed row may lack only some indices, so there is one call
    per distinct missing count."""
    completions: list[list[Completion]] = [[] for _ in work]
    by_count: dict[int, list[int]] = {}
    for i, w in enumerate(work):
        by_count.setdefault(len(w["idxs"]), []).append(i)
    for count, members in sorted(by_count.items()):
        out = generate([work[i]["prompt"] for i in members], replace(params, n=count))
        for i, comps in zip(members, out, strict=True):
            completions[i] = comps
    return completions


def build_output(spec: GenerationSpec, work: list[dict[str, Any]],
                 completions: list[list[Completion]]) -> pa.Table:
    """Output rows of ``spec.kind`` for work rows and their completions, checked for count."""
    work = decode_work(work)
    for w, comps in zip(work, completions, strict=True):
        if len(comps) != len(w["idxs"]):
            raise StageError(f"engine returned {len(comps)} completions for {w['key']}, "
                             f"expected {len(w['idxs'])}")
    return conform(spec.rows(work, completions), spec.kind)


def udf_num_cpus(cluster: ClusterConfig, total_cpus: float) -> float:
    """CPUs each engine actor asks for.

    On GPU replicas: ``cpus_per_replica``. On CPU-only replicas, capped so that all replicas
    together leave ``CPU_RESERVE`` free: otherwise (2 CPUs, 2 actors x 1 CPU) Ray Data's input
    tasks never get a CPU and the pipeline deadlocks.
    """
    if cluster.gpus_per_replica > 0:
        return cluster.cpus_per_replica
    share = (total_cpus - CPU_RESERVE) / cluster.replicas
    return round(max(0.1, min(cluster.cpus_per_replica, share)), 3)


def udf_batch_size(n_work: int, cluster: ClusterConfig) -> int:
    """Rows per engine call: ``cluster.batch_size``, smaller when every replica needs work."""
    return max(1, min(cluster.batch_size, math.ceil(n_work / cluster.replicas)))


# ------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------


def report_live(progress: Progress, out: Path, t_start: float) -> None:
    """Publish the stage's progress as live metrics (Ray dashboard / Prometheus, tagged with
    the stage label and run): rows done of total, output rows and tokens per second since
    ``t_start`` (``time.perf_counter()``). A no-op without Ray."""
    elapsed = time.perf_counter() - t_start
    done = progress.done()
    per_s = 1.0 / elapsed if elapsed > 0 else 0.0
    # A map stage counts no tokens: no tokens/s series rather than a flat zero.
    stage_progress(progress.label, done, progress.total, progress.new_rows * per_s,
                   progress.new_tokens * per_s if progress.new_tokens else None, run=run_name(out))


@contextmanager
def named_stall(label: str) -> Iterator[None]:
    """Re-raise a group's :class:`StallError` as a ``StageError`` that names the stage."""
    try:
        yield
    except StallError as e:
        raise StageError(f"stage '{label}': {e}") from None


# ------------------------------------------------------------------------------------------
# The stage
# ------------------------------------------------------------------------------------------


class LocalGroup:
    """An engine in this process with the group interface ``run_generation`` uses: a stage
    without Ray (small jobs, tests, a driver that already holds a model)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __len__(self) -> int:
        return 1

    @property
    def weights(self) -> tuple[str, str | None]:
        return (self.engine.model_path, getattr(self.engine, "adapter", None))

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        return self.engine.generate(prompts, params)

    def ping(self) -> list[dict[str, Any]]:
        import os
        import socket

        return [{"node_id": socket.gethostname(), "pid": os.getpid()}]


class GenerationUDF:
    """Ray Data callable class: one engine per actor, built once per replica per stage."""

    def __init__(self, model: ModelSpec, engine: EngineConfig, params: SamplingParams,
                 spec: GenerationSpec) -> None:
        import ray

        from raysys.distributed.artifacts import localize_model
        from raysys.engines import make_engine

        self.engine = make_engine(localize_model(model), localize_model(engine))
        self.params = params
        self.spec = spec
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        work = batch.to_pylist()
        t0 = time.perf_counter()
        completions = generate_work(self.engine.generate, work, self.params)
        engine_s = time.perf_counter() - t0
        table = build_output(self.spec, work, completions)
        table = table.append_column(NODE_COLUMN, pa.array([self.node_id] * table.num_rows, pa.string()))
        return table.append_column(ENGINE_S_COLUMN, pa.array([engine_s] * table.num_rows, pa.float64()))


def _open_stage(out: Path, items: list[dict[str, Any]], keys: list[str], request: dict[str, Any],
                spec: GenerationSpec, what: str) -> pa.Table | dict[str, Any]:
    """Check the input, claim ``out`` for ``request``: the manifest of a sealed stage, else the
    rows already written (deduplicated) to resume from."""
    if not items:
        raise DataError(f"{out}: empty input (no rows to {what})")
    if len(set(keys)) != len(keys):
        raise DataError(f"{out}: input keys must be unique (duplicates would merge outputs)")
    claim(out, request)
    if is_complete(out):
        log.info("stage %s is complete; skipping", out)
        return read_manifest(out) or {}
    return dedupe_rows(read_stage(out, spec.kind), spec)


def run_generation(items: list[dict[str, Any]], *, keys: list[str], prompts: list[str],
                   spec: GenerationSpec, params: SamplingParams, out_dir: str | Path,
                   request: dict[str, Any], cluster: ClusterConfig,
                   model: ModelSpec | None = None, engine: EngineConfig | None = None,
                   group: Any = None, label: str = "generation",
                   summarize: Callable[[pa.Table], dict[str, Any]] | None = None,
                   on_part: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Write ``params.n`` outputs per input row to the stage ``out_dir`` (resumable, atomic).

    ``keys`` (unique, stable) and ``prompts`` are one per input row of ``items``. With
    ``group`` (an actor group with ``generate`` and ``weights``, or a zero-argument callable
    returning one, called only when there is work), its replicas generate; otherwise Ray Data
    starts ``cluster.replicas`` engine actors of ``model`` for this stage. ``summarize(table)``
    adds stage metrics (e.g. per-problem accuracy) to the manifest. Returns the manifest.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    existing = _open_stage(out, items, keys, request, spec, "generate for")
    if isinstance(existing, dict):
        return existing                 # sealed: the manifest
    work = missing_items(keys, prompts, items, params.n, done_keys(existing, spec))
    progress = Progress(spec, params.n, len(keys), existing, label)
    t_prepare = time.perf_counter() - t0

    t1 = time.perf_counter()
    replicas = cluster.replicas
    if work:
        missing = sum(len(w["idxs"]) for w in work)
        if group is not None:
            with named_stall(label):       # starting the group loads its models
                live = group() if callable(group) and not hasattr(group, "generate") else group
            if model is not None and live.weights != (model.path, model.adapter):
                raise StageError(f"{out}: the sampler pool serves {live.weights}, not the requested "
                                 f"model {(model.path, model.adapter)}")
            replicas = len(live)
            log.info("%s: %d rows (%d outputs missing) on %d replica(s)", label, len(work), missing,
                     replicas)
            _run_group(live, work, out, progress, on_part, spec=spec, params=params, cluster=cluster)
        else:
            if model is None or engine is None:
                raise ValueError("run_generation: pass a group, or a model and an engine config")
            from raysys.distributed.ray_init import init_ray

            init_ray(cluster)
            log.info("%s: %d rows (%d outputs missing) with %d replica(s)", label, len(work), missing,
                     replicas)
            with named_stall(label):
                _run_pipeline(work, out, progress, on_part, model=model, engine=engine,
                              params=params, cluster=cluster, spec=spec)
    t_generate = time.perf_counter() - t1

    t2 = time.perf_counter()
    table = finalize_parts(out, spec, keys, params.n)
    metrics = {**(summarize(table) if summarize else {}),
               **stage_metrics(table, progress, t_generate, replicas)}
    metrics["wall_s"] = {"prepare": round(t_prepare, 3), "generate": round(t_generate, 3),
                         "finalize": round(time.perf_counter() - t2, 3)}
    manifest = write_manifest(out, spec.kind, extra={"metrics": metrics,
                                                     "request": request_fingerprint(request)})
    log.info("%s; wrote %d rows to %s", progress.line(), manifest["rows"], out)
    return manifest


def _run_pipeline(work: list[dict[str, Any]], out: Path, progress: Progress,
                  on_part: Callable[[Path], None] | None, *, model: ModelSpec, engine: EngineConfig,
                  params: SamplingParams, cluster: ClusterConfig, spec: GenerationSpec) -> None:
    """Stream work through Ray Data engine actors and write each result batch as one part."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    batch = udf_batch_size(len(work), cluster)
    table = pa.Table.from_pylist(work)
    blocks = [table.slice(s, batch) for s in range(0, table.num_rows, batch)]
    ds = ray.data.from_arrow(blocks).map_batches(
        GenerationUDF,
        fn_constructor_kwargs={"model": model, "engine": engine, "params": params, "spec": spec},
        compute=ActorPoolStrategy(size=cluster.replicas),
        num_gpus=cluster.gpus_per_replica or None,
        num_cpus=udf_num_cpus(cluster, ray.cluster_resources().get("CPU", 1.0)),
        batch_size=batch,
        batch_format="pyarrow",
    )
    rid, t_start = run_id(), time.perf_counter()
    report_live(progress, out, t_start)
    # Ray Data's iterator has no timeout of its own: a hung engine actor would block here forever.
    batches = iter_with_stall_bound(ds.iter_batches(batch_size=None, batch_format="pyarrow"),
                                    cluster.stall_timeout_s, "Ray Data engine actors")
    for i, result in enumerate(batches):
        if result.num_rows == 0:
            continue
        progress.nodes.update(result.column(NODE_COLUMN).to_pylist())
        # A result batch may concatenate several UDF batches: count each batch's time once.
        progress.engine_s += sum(set(result.column(ENGINE_S_COLUMN).to_pylist()))
        land_part(out, f"{rid}-{i:05d}", result.drop_columns([NODE_COLUMN, ENGINE_S_COLUMN]),
                   progress, spec.kind, on_part)
        report_live(progress, out, t_start)


def _run_group(group: Any, work: list[dict[str, Any]], out: Path, progress: Progress,
               on_part: Callable[[Path], None] | None, *, spec: GenerationSpec,
               params: SamplingParams, cluster: ClusterConfig) -> None:
    """Generate ``work`` with a long-lived group: each chunk (one engine batch per replica) is
    split over the replicas and written as one part when it is back. A group that returns
    nothing for ``stall_timeout_s`` fails the stage with a ``StageError`` naming it."""
    with named_stall(progress.label):
        progress.nodes.update(p["node_id"] for p in group.ping())
        chunk = udf_batch_size(len(work), replace(cluster, replicas=len(group))) * len(group)
        rid, t_start = run_id(), time.perf_counter()
        report_live(progress, out, t_start)
        for i, start in enumerate(range(0, len(work), chunk)):
            part_work = work[start:start + chunk]
            t0 = time.perf_counter()
            completions = generate_work(group.generate, part_work, params)
            # The driver's wait, not summed replica time as on the Ray Data path: replicas run
            # at once.
            progress.engine_s += time.perf_counter() - t0
            land_part(out, f"{rid}-{i:05d}", build_output(spec, part_work, completions),
                      progress, spec.kind, on_part)
            report_live(progress, out, t_start)


def run_map(items: list[dict[str, Any]], *, keys: list[str], spec: GenerationSpec, method: str,
            group: Any, out_dir: str | Path, request: dict[str, Any], cluster: ClusterConfig,
            label: str = "map", chunk_rows: int = 64,
            summarize: Callable[[pa.Table], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The generation stage's contract for a worker that maps rows to rows (no prompts): each
    input row becomes one output row (index 0) via ``group.map(method, rows)`` (e.g. token
    quality exploration over gold solutions). Same resume, parts, fingerprint and manifest.
    ``group`` is an actor group or a zero-argument callable returning one (called only when
    there is work)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    existing = _open_stage(out, items, keys, request, spec, "map")
    if isinstance(existing, dict):
        return existing                 # sealed: the manifest
    done = done_keys(existing, spec)
    todo = [(k, it) for k, it in zip(keys, items) if (k, 0) not in done]
    progress = Progress(spec, 1, len(keys), existing, label)
    if todo:
        with named_stall(label):
            live = group() if callable(group) and not hasattr(group, "map") else group
            progress.nodes.update(p["node_id"] for p in live.ping())
            rid, t_start = run_id(), time.perf_counter()
            report_live(progress, out, t_start)
            step = max(1, chunk_rows) * len(live)
            for i, start in enumerate(range(0, len(todo), step)):
                chunk = todo[start:start + step]
                t1 = time.perf_counter()
                rows = live.map(method, [it for _, it in chunk])
                progress.engine_s += time.perf_counter() - t1
                land_part(out, f"{rid}-{i:05d}", conform(rows, spec.kind), progress, spec.kind,
                          None)
                report_live(progress, out, t_start)
    t_work = time.perf_counter() - t0
    table = finalize_parts(out, spec, keys, 1)
    metrics = {**(summarize(table) if summarize else {}),
               **stage_metrics(table, progress, t_work, len(live) if todo else 0)}
    manifest = write_manifest(out, spec.kind, extra={"metrics": metrics,
                                                     "request": request_fingerprint(request)})
    log.info("%s; wrote %d rows to %s", progress.line(), manifest["rows"], out)
    return manifest
