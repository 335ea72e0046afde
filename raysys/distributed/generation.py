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

import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raysys.config import ClusterConfig, EngineConfig, ModelSpec
from raysys.data.io import (DataError, atomic_write_json, is_complete, read_manifest, read_stage,
                            write_manifest, write_part)
from raysys.data.schema import conform
from raysys.engines.base import Completion, SamplingParams
from raysys.errors import StageError

log = logging.getLogger(__name__)

REQUEST_FILE = "_REQUEST.json"
NODE_COLUMN = "_node_id"          # carried out of the UDF for the manifest, never written
ENGINE_S_COLUMN = "_engine_s"     # engine seconds of the batch (same value on every row)
CPU_RESERVE = 0.5                 # CPUs left free for Ray Data's own tasks on CPU-only clusters
# Wait for every replica's engine before feeding batches: otherwise the first actor up takes
# all the work on small jobs, and a cluster too small for the pool fails with a clear timeout
# instead of hanging.
ACTOR_START_TIMEOUT_S = 900

RowBuilder = Callable[[list[dict[str, Any]], list[list[Completion]]], list[dict[str, Any]]]


@dataclass(frozen=True)
class GenerationSpec:
    """What a generation stage makes of its input rows.

    ``rows(work, completions)`` turns work rows (``key``, ``prompt``, ``item`` = the input row,
    ``idxs`` = the missing indices) and their completions (one list per work row, one completion
    per index) into output rows of ``kind``; it runs inside the engine actors on the Ray Data
    path and on the driver with an actor group, so it must be picklable (a module-level
    function or a ``functools.partial`` of one). Each output row must map back to its
    ``(input key, index)``: through ``key_columns`` (two output columns holding them), or through
    ``key`` (a function of the output row) when the input key is not a column.
    """

    kind: str
    rows: RowBuilder
    key_columns: tuple[str, str] = ("problem_id", "sample_idx")
    key: Callable[[dict[str, Any]], tuple[str, int]] | None = None


# ------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------


def row_keys(table: pa.Table, spec: GenerationSpec) -> list[tuple[str, int]]:
    """The ``(input key, index)`` of every output row, in table order."""
    if spec.key is not None:
        return [spec.key(r) for r in table.to_pylist()]
    k, i = spec.key_columns
    return list(zip(table.column(k).to_pylist(), table.column(i).to_pylist()))


def done_keys(table: pa.Table, spec: GenerationSpec) -> set[tuple[str, int]]:
    """The ``(key, index)`` pairs present in ``table``."""
    return set(row_keys(table, spec))


def dedupe_rows(table: pa.Table, spec: GenerationSpec) -> pa.Table:
    """Keep the first row of each ``(key, index)``; order is otherwise kept."""
    seen: set[tuple[str, int]] = set()
    keep = []
    for n, key in enumerate(row_keys(table, spec)):
        if key not in seen:
            seen.add(key)
            keep.append(n)
    return table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))


def sort_rows(table: pa.Table, spec: GenerationSpec, order: list[str] | None = None) -> pa.Table:
    """Rows in key order (``order``, else by key), then by index."""
    keys = row_keys(table, spec)
    if order is None:
        ranked = keys
    else:
        rank = {key: n for n, key in enumerate(order)}
        ranked = [(rank.get(a, len(rank)), b) for a, b in keys]
    return table.take(pa.array(sorted(range(len(keys)), key=ranked.__getitem__), pa.int64()))


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


def request_fingerprint(request: dict[str, Any]) -> str:
    """Stable hash of what a stage was asked to produce (to refuse mixing two requests)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


class Progress:
    """Running totals the driver logs as parts land (accuracy where rows are graded)."""

    def __init__(self, spec: GenerationSpec, n: int, total: int, existing: pa.Table,
                 label: str = "generation") -> None:
        self.spec, self.n, self.total, self.label = spec, n, total, label
        self.counts: dict[str, int] = {}
        self.correct = self.graded = self.new_rows = self.new_tokens = 0
        self.engine_s = 0.0
        self.nodes: set[str] = set()
        self._add(existing)

    def _add(self, t: pa.Table) -> None:
        for key, _ in row_keys(t, self.spec):
            self.counts[key] = self.counts.get(key, 0) + 1
        if "correct" in t.column_names:
            correct = t.column("correct")
            self.graded += len(correct) - correct.null_count
            self.correct += int(pc.sum(correct.cast(pa.int64())).as_py() or 0)

    def add(self, t: pa.Table) -> None:
        self._add(t)
        self.new_rows += t.num_rows
        if "num_tokens" in t.column_names:
            self.new_tokens += int(pc.sum(t.column("num_tokens")).as_py() or 0)

    def line(self) -> str:
        done = sum(1 for c in self.counts.values() if c >= self.n)
        acc = f", accuracy so far {100 * self.correct / self.graded:.1f}%" if self.graded else ""
        return f"{self.label}: {done}/{self.total} rows done{acc}"


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

        from raysys.engines import make_engine

        self.engine = make_engine(model, engine)
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
    if not items:
        raise DataError(f"{out}: empty input (no rows to generate for)")
    if len(set(keys)) != len(keys):
        raise DataError(f"{out}: input keys must be unique (duplicates would merge outputs)")
    _claim(out, request)
    if is_complete(out):
        log.info("stage %s is complete; skipping", out)
        return read_manifest(out) or {}
    existing = dedupe_rows(read_stage(out, spec.kind), spec)
    work = missing_items(keys, prompts, items, params.n, done_keys(existing, spec))
    progress = Progress(spec, params.n, len(keys), existing, label)
    t_prepare = time.perf_counter() - t0

    t1 = time.perf_counter()
    replicas = cluster.replicas
    if work:
        missing = sum(len(w["idxs"]) for w in work)
        if group is not None:
            live = group() if callable(group) and not hasattr(group, "generate") else group
            if model is not None and live.weights != (model.path, model.adapter):
                raise StageError(f"{out}: the actor group serves {live.weights}, not the requested "
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
            _run_pipeline(work, out, progress, on_part, model=model, engine=engine, params=params,
                          cluster=cluster, spec=spec)
    t_generate = time.perf_counter() - t1

    t2 = time.perf_counter()
    table = _finalize_parts(out, spec, keys, params.n)
    metrics = {**(summarize(table) if summarize else {}),
               **_metrics(table, progress, t_generate, replicas)}
    metrics["wall_s"] = {"prepare": round(t_prepare, 3), "generate": round(t_generate, 3),
                         "finalize": round(time.perf_counter() - t2, 3)}
    manifest = write_manifest(out, spec.kind, extra={"metrics": metrics,
                                                     "request": request_fingerprint(request)})
    log.info("%s; wrote %d rows to %s", progress.line(), manifest["rows"], out)
    return manifest


def _metrics(table: pa.Table, progress: Progress, t_generate: float, replicas: int) -> dict[str, Any]:
    metrics: dict[str, Any] = {"rows": table.num_rows}
    metrics.update({
        "tokens_generated": progress.new_tokens,
        "rows_generated": progress.new_rows,
        "tokens_per_s": round(progress.new_tokens / t_generate, 2) if t_generate > 0 else 0.0,
        # Engine time summed over replicas: throughput without actor start-up and scheduling.
        "engine_s": round(progress.engine_s, 3),
        "tokens_per_engine_s": (round(progress.new_tokens / progress.engine_s, 2)
                                if progress.engine_s > 0 else 0.0),
        "replicas": replicas,
        "nodes": sorted(progress.nodes),
    })
    return metrics


def _claim(out: Path, request: dict[str, Any]) -> None:
    """Record the request on first use of ``out``; refuse a different request on resume."""
    fp = request_fingerprint(request)
    path = out / REQUEST_FILE
    if path.is_file():
        old = json.loads(path.read_text()).get("fingerprint")
        if old != fp:
            raise StageError(f"{out}: holds outputs of a different request (model, sampling, prompts or "
                             "inputs changed); use a new output directory or delete this one")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"fingerprint": fp, "request": request})


def _run_id() -> str:
    """Names this invocation's parts, so a resumed run never overwrites an earlier part."""
    return f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _land_part(out: Path, name: str, table: pa.Table, progress: Progress, kind: str,
               on_part: Callable[[Path], None] | None) -> None:
    """Write one result batch as a part, count it, log progress, call the hook."""
    part = write_part(out, name, table, kind)
    progress.add(table)
    log.info(progress.line())
    if on_part is not None:
        on_part(part)


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
    run_id = _run_id()
    for i, result in enumerate(ds.iter_batches(batch_size=None, batch_format="pyarrow")):
        if result.num_rows == 0:
            continue
        progress.nodes.update(result.column(NODE_COLUMN).to_pylist())
        # A result batch may concatenate several UDF batches: count each batch's time once.
        progress.engine_s += sum(set(result.column(ENGINE_S_COLUMN).to_pylist()))
        _land_part(out, f"{run_id}-{i:05d}", result.drop_columns([NODE_COLUMN, ENGINE_S_COLUMN]),
                   progress, spec.kind, on_part)


def _run_group(group: Any, work: list[dict[str, Any]], out: Path, progress: Progress,
               on_part: Callable[[Path], None] | None, *, spec: GenerationSpec,
               params: SamplingParams, cluster: ClusterConfig) -> None:
    """Generate ``work`` with a long-lived group: each chunk (one engine batch per replica) is
    split over the replicas and written as one part when it is back."""
    progress.nodes.update(p["node_id"] for p in group.ping())
    chunk = udf_batch_size(len(work), replace(cluster, replicas=len(group))) * len(group)
    run_id = _run_id()
    for i, start in enumerate(range(0, len(work), chunk)):
        part_work = work[start:start + chunk]
        t0 = time.perf_counter()
        completions = generate_work(group.generate, part_work, params)
        # The driver's wait, not summed replica time as on the Ray Data path: replicas run at once.
        progress.engine_s += time.perf_counter() - t0
        _land_part(out, f"{run_id}-{i:05d}", build_output(spec, part_work, completions), progress,
                   spec.kind, on_part)


def _finalize_parts(out: Path, spec: GenerationSpec, keys: list[str], n: int) -> pa.Table:
    """Check every expected row is present; compact the parts if a row was written twice."""
    raw = read_stage(out, spec.kind)
    table = dedupe_rows(raw, spec)
    expected = {(k, i) for k in keys for i in range(n)}
    have = done_keys(table, spec)
    if have != expected:
        missing = sorted(expected - have)[:5]
        raise StageError(f"{out}: {len(expected - have)} outputs missing after generation "
                         f"(e.g. {missing}); re-run to finish the stage")
    table = sort_rows(table, spec, keys)
    if table.num_rows != raw.num_rows:
        # Duplicates (e.g. two drivers on one dir): one compact part, written before the old
        # ones go, so a crash in between leaves duplicates that reading dedupes, never a gap.
        old = sorted(out.glob("part-*.parquet"))
        new = write_part(out, f"compact-{uuid.uuid4().hex[:6]}", table, spec.kind)
        for p in old:
            if p != new:
                p.unlink()
    return table


def load_generated(out_dir: str | Path, spec: GenerationSpec) -> pa.Table:
    """Read a generation stage: deduplicated on its key columns, sorted."""
    return sort_rows(dedupe_rows(read_stage(out_dir, spec.kind), spec), spec)


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
    if not items:
        raise DataError(f"{out}: empty input (no rows to map)")
    if len(set(keys)) != len(keys):
        raise DataError(f"{out}: input keys must be unique (duplicates would merge outputs)")
    _claim(out, request)
    if is_complete(out):
        log.info("stage %s is complete; skipping", out)
        return read_manifest(out) or {}
    existing = dedupe_rows(read_stage(out, spec.kind), spec)
    done = done_keys(existing, spec)
    todo = [(k, it) for k, it in zip(keys, items) if (k, 0) not in done]
    progress = Progress(spec, 1, len(keys), existing, label)
    if todo:
        live = group() if callable(group) and not hasattr(group, "map") else group
        progress.nodes.update(p["node_id"] for p in live.ping())
        run_id = _run_id()
        step = max(1, chunk_rows) * len(live)
        for i, start in enumerate(range(0, len(todo), step)):
            chunk = todo[start:start + step]
            t1 = time.perf_counter()
            rows = live.map(method, [it for _, it in chunk])
            progress.engine_s += time.perf_counter() - t1
            _land_part(out, f"{run_id}-{i:05d}", conform(rows, spec.kind), progress, spec.kind, None)
    t_work = time.perf_counter() - t0
    table = _finalize_parts(out, spec, keys, 1)
    metrics = {**(summarize(table) if summarize else {}),
               **_metrics(table, progress, t_work, len(live) if todo else 0)}
    manifest = write_manifest(out, spec.kind, extra={"metrics": metrics,
                                                     "request": request_fingerprint(request)})
    log.info("%s; wrote %d rows to %s", progress.line(), manifest["rows"], out)
    return manifest
