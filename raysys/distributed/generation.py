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
from raysys.data.schema import conform
from raysys.engines.base import Completion, SamplingParams
from raysys.distributed.actors import StallError, iter_with_stall_bound
from raysys.distributed.stage_writer import (GenerationSpec, Stage, dedupe_rows, done_keys,
                                             live_group, load_generated, missing_items,
                                             request_fingerprint, row_keys, sort_rows)
from raysys.errors import StageError

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


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` inside (as Ray sets them for an actor or worker of
    ``n`` CPUs), restored after; ``None`` leaves them. In-process work on a shared machine runs
    several times faster with the threads its CPUs allow than with every core contended."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LocalGroup:
    """A role's group in this process, without Ray: an engine (``LocalGroup(engine)``) or a role
    actor built here (:meth:`of`), with the interface of an ``ActorGroup`` that stages and
    ``RoleGroups`` use (``generate``, ``map``, ``submit_generate``/``gather``, ``weights``,
    ``load_weights``, ``retune``, ``ping``). Small jobs, tests, the in-process context."""

    stall_timeout_s = None          # nothing to wait on: calls return when done
    local = True                    # submit_generate's "refs" are results (streaming lands them)

    def __init__(self, engine: Any, *, threads: int | None = None) -> None:
        self.engine = engine
        self.threads = threads          # torch threads for its calls (None: as they are)
        self.actor_cls: type | None = None
        self.model: ModelSpec | None = None
        self.args: tuple = ()

    @classmethod
    def of(cls, actor_cls: type, model: ModelSpec, *args: Any,
           threads: int | None = None) -> LocalGroup:
        """One ``actor_cls(model, *args)`` (a ``RoleActor``) built in this process; its calls
        run with ``threads`` torch threads (a replica's CPUs)."""
        with torch_threads(threads):
            group = cls(actor_cls(model, *args), threads=threads)
        group.actor_cls, group.model, group.args = actor_cls, model, args
        return group

    def __len__(self) -> int:
        return 1

    @property
    def weights(self) -> tuple[str, str | None]:
        own = getattr(self.engine, "_weights", None)      # a RoleActor tracks what it serves
        if own is not None:
            return tuple(own)                               # type: ignore[return-value]
        return (self.engine.model_path, getattr(self.engine, "adapter", None))

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        with torch_threads(self.threads):
            return self.engine.generate(prompts, params)

    def map(self, method: str, items: list[Any], *args: Any) -> list[Any]:
        """``method`` over ``items`` (one call: one replica)."""
        with torch_threads(self.threads):
            return list(getattr(self.engine, method)(items, *args))

    def submit_generate(self, prompts: list[str], params: SamplingParams) -> list[Any]:
        """Generate now; the "refs" are the finished results (:meth:`gather` reads them)."""
        return [self.generate(prompts, params)]

    def gather(self, refs: list[Any], what: str = "call") -> list[Any]:
        return [x for part in refs for x in part]

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        with torch_threads(self.threads):
            self.engine.load_weights(model_path, adapter)

    def retune(self, args: tuple, tuning: dict[str, Any]) -> None:
        self.args = args
        self.engine.retune(tuning)

    def ping(self) -> list[dict[str, Any]]:
        import os
        import socket

        return [{"node_id": socket.gethostname(), "pid": os.getpid()}]

    def shutdown(self) -> None:
        """Drop the engine (its model memory goes with the last reference)."""
        self.engine = None


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
    stage = Stage.open(out_dir, items, keys, spec, params.n, request, label, on_part=on_part)
    if stage.sealed:
        return stage.seal(keys, 0.0, 0)           # the manifest
    work = stage.missing(keys, prompts, items)
    t_prepare = time.perf_counter() - t0

    t1 = time.perf_counter()
    replicas = cluster.replicas
    if work:
        missing = sum(len(w["idxs"]) for w in work)
        if group is not None:
            with named_stall(label):       # starting the group loads its models
                live = live_group(group)
            if model is not None and live.weights != (model.path, model.adapter):
                raise StageError(f"{stage.out}: the sampler pool serves {live.weights}, not the "
                                 f"requested model {(model.path, model.adapter)}")
            replicas = len(live)
            log.info("%s: %d rows (%d outputs missing) on %d replica(s)", label, len(work), missing,
                     replicas)
            _run_group(live, work, stage, params=params, cluster=cluster)
        else:
            if model is None or engine is None:
                raise ValueError("run_generation: pass a group, or a model and an engine config")
            from raysys.distributed.ray_init import init_ray

            init_ray(cluster)
            log.info("%s: %d rows (%d outputs missing) with %d replica(s)", label, len(work), missing,
                     replicas)
            with named_stall(label):
                _run_pipeline(work, stage, model=model, engine=engine, params=params,
                              cluster=cluster)
    t_generate = time.perf_counter() - t1
    return stage.seal(keys, t_generate, replicas, summarize=summarize,
                      timings={"prepare": round(t_prepare, 3), "generate": round(t_generate, 3)})


def _run_pipeline(work: list[dict[str, Any]], stage: Stage, *, model: ModelSpec,
                  engine: EngineConfig, params: SamplingParams, cluster: ClusterConfig) -> None:
    """Stream work through Ray Data engine actors and write each result batch as one part."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    batch = udf_batch_size(len(work), cluster)
    table = pa.Table.from_pylist(work)
    blocks = [table.slice(s, batch) for s in range(0, table.num_rows, batch)]
    ds = ray.data.from_arrow(blocks).map_batches(
        GenerationUDF,
        fn_constructor_kwargs={"model": model, "engine": engine, "params": params, "spec": stage.spec},
        compute=ActorPoolStrategy(size=cluster.replicas),
        num_gpus=cluster.gpus_per_replica or None,
        num_cpus=udf_num_cpus(cluster, ray.cluster_resources().get("CPU", 1.0)),
        batch_size=batch,
        batch_format="pyarrow",
    )
    stage.begin()
    # Ray Data's iterator has no timeout of its own: a hung engine actor would block here forever.
    batches = iter_with_stall_bound(ds.iter_batches(batch_size=None, batch_format="pyarrow"),
                                    cluster.stall_timeout_s, "Ray Data engine actors")
    for result in batches:
        if result.num_rows == 0:
            continue
        stage.progress.nodes.update(result.column(NODE_COLUMN).to_pylist())
        # A result batch may concatenate several UDF batches: count each batch's time once.
        stage.progress.engine_s += sum(set(result.column(ENGINE_S_COLUMN).to_pylist()))
        stage.write(result.drop_columns([NODE_COLUMN, ENGINE_S_COLUMN]))


def _run_group(group: Any, work: list[dict[str, Any]], stage: Stage, *, params: SamplingParams,
               cluster: ClusterConfig) -> None:
    """Generate ``work`` with a long-lived group: each chunk (one engine batch per replica) is
    split over the replicas and written as one part when it is back. A group that returns
    nothing for ``stall_timeout_s`` fails the stage with a ``StageError`` naming it."""
    with named_stall(stage.label):
        stage.progress.nodes.update(p["node_id"] for p in group.ping())
        chunk = udf_batch_size(len(work), replace(cluster, replicas=len(group))) * len(group)
        stage.begin()
        for start in range(0, len(work), chunk):
            part_work = work[start:start + chunk]
            t0 = time.perf_counter()
            completions = generate_work(group.generate, part_work, params)
            # The driver's wait, not summed replica time as on the Ray Data path: replicas run
            # at once.
            stage.progress.engine_s += time.perf_counter() - t0
            stage.write(build_output(stage.spec, part_work, completions))


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
    stage = Stage.open(out_dir, items, keys, spec, 1, request, label, what="map")
    if stage.sealed:
        return stage.seal(keys, 0.0, 0)           # the manifest
    done = stage.done()
    todo = [(k, it) for k, it in zip(keys, items) if (k, 0) not in done]
    replicas = 0
    if todo:
        with named_stall(label):
            live = live_group(group)
            replicas = len(live)
            stage.progress.nodes.update(p["node_id"] for p in live.ping())
            stage.begin()
            step = max(1, chunk_rows) * len(live)
            for start in range(0, len(todo), step):
                chunk = todo[start:start + step]
                t1 = time.perf_counter()
                rows = live.map(method, [it for _, it in chunk])
                stage.progress.engine_s += time.perf_counter() - t1
                stage.write(conform(rows, spec.kind))
    return stage.seal(keys, time.perf_counter() - t0, replicas, summarize=summarize)
