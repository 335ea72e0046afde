"""Sharded, resumable sampling with Ray Data: one code path from 1 CPU to many GPU nodes.

problems -> prompts (driver) -> work rows (only the missing ``(problem_id, sample_idx)`` pairs)
-> ``map_batches(EngineUDF, compute=ActorPoolStrategy(size=replicas))`` (generate + grade) ->
parquet parts written by the driver as batches stream in (no shared filesystem needed) ->
``_MANIFEST.json`` with metrics, written last. Re-running on the same ``out_dir`` generates only
what is missing; a sealed stage is returned as is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raysys.config import ClusterConfig, EngineConfig, ModelSpec, SamplingConfig
from raysys.data.io import (DataError, atomic_write_json, is_complete, read_manifest, read_stage,
                            write_manifest, write_part)
from raysys.data.schema import conform
from raysys.distributed.actors import OnDemandPool, SamplerPool
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


# ------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------


def to_sampling_params(sampling: SamplingConfig, stop: list[str] | tuple[str, ...] = ()) -> SamplingParams:
    """Engine parameters from the config section; ``sampling.stop`` wins over ``stop``."""
    return SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k, max_new_tokens=sampling.max_new_tokens,
                          stop=tuple(sampling.stop or stop), seed=sampling.seed)


def done_pairs(samples: pa.Table) -> set[tuple[str, int]]:
    """The ``(problem_id, sample_idx)`` pairs present in ``samples``."""
    return set(zip(samples.column("problem_id").to_pylist(), samples.column("sample_idx").to_pylist()))


def dedupe_samples(samples: pa.Table) -> pa.Table:
    """Keep the first row of each ``(problem_id, sample_idx)``; order is otherwise kept."""
    seen: set[tuple[str, int]] = set()
    keep = []
    for i, key in enumerate(zip(samples.column("problem_id").to_pylist(),
                                samples.column("sample_idx").to_pylist())):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return samples if len(keep) == samples.num_rows else samples.take(pa.array(keep, pa.int64()))


def sort_samples(samples: pa.Table, problem_order: list[str] | None = None) -> pa.Table:
    """Rows in problem order (``problem_order``, else by id), then by ``sample_idx``."""
    if problem_order is None:
        return samples.sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
    rank = {pid: i for i, pid in enumerate(problem_order)}
    keys = [(rank.get(p, len(rank)), s) for p, s in zip(samples.column("problem_id").to_pylist(),
                                                        samples.column("sample_idx").to_pylist())]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return samples.take(pa.array(order, pa.int64()))


def missing_work(problem_ids: list[str], prompts: list[str], golds: list[str | None], n: int,
                 done: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """One work row per problem that still lacks samples, listing the missing indices."""
    rows = []
    for pid, prompt, gold in zip(problem_ids, prompts, golds):
        idxs = [i for i in range(n) if (pid, i) not in done]
        if idxs:
            rows.append({"problem_id": pid, "prompt": prompt, "gold_answer": gold, "sample_idxs": idxs})
    return rows


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
    """Problems per engine call: ``cluster.batch_size``, smaller when every replica needs work."""
    return max(1, min(cluster.batch_size, math.ceil(n_work / cluster.replicas)))


def completion_rows(work: list[dict[str, Any]], completions: list[list[Completion]], *,
                    grade_style: str, model_name: str, iteration: int) -> list[dict[str, Any]]:
    """``samples`` rows for work rows and their completions (one list per row, one per index)."""
    from raysys.grading import extract_answer, grade

    rows = []
    for w, comps in zip(work, completions, strict=True):
        if len(comps) != len(w["sample_idxs"]):
            raise StageError(f"engine returned {len(comps)} completions for problem {w['problem_id']}, "
                             f"expected {len(w['sample_idxs'])}")
        gold = w["gold_answer"]
        for idx, c in zip(w["sample_idxs"], comps):
            if gold is None or gold == "":
                pred, correct = extract_answer(c.text, grade_style), None
            else:
                pred, correct = grade(c.text, gold, grade_style)
            rows.append({"problem_id": w["problem_id"], "sample_idx": int(idx), "prompt": w["prompt"],
                         "completion": c.text, "pred": pred or "", "correct": correct,
                         "model": model_name, "iteration": iteration,
                         "num_tokens": len(c.token_ids), "cumulative_logprob": c.cumulative_logprob,
                         "finish_reason": c.finish_reason})
    return rows


def generate_work(generate: Callable[[list[str], SamplingParams], list[list[Completion]]],
                  work: list[dict[str, Any]], params: SamplingParams) -> list[list[Completion]]:
    """Completions for ``work`` rows (one list per row, one per missing index) from an engine's
    or a pool's ``generate``: a resumed problem may lack only some indices, so there is one
    call per distinct missing count."""
    completions: list[list[Completion]] = [[] for _ in work]
    by_count: dict[int, list[int]] = {}
    for i, w in enumerate(work):
        by_count.setdefault(len(w["sample_idxs"]), []).append(i)
    for count, members in sorted(by_count.items()):
        out = generate([work[i]["prompt"] for i in members], replace(params, n=count))
        for i, comps in zip(members, out, strict=True):
            completions[i] = comps
    return completions


def request_fingerprint(request: dict[str, Any]) -> str:
    """Stable hash of what a stage was asked to produce (to refuse mixing two requests)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# The Ray Data stage
# ------------------------------------------------------------------------------------------


class EngineUDF:
    """Ray Data callable class: one engine per actor, built once per replica per run."""

    def __init__(self, model: ModelSpec, engine: EngineConfig, params: SamplingParams,
                 grade_style: str, model_name: str, iteration: int) -> None:
        import ray

        from raysys.engines import make_engine

        self.engine = make_engine(model, engine)
        self.params = params
        self.grade_style = grade_style
        self.model_name = model_name
        self.iteration = iteration
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        work = batch.to_pylist()
        t0 = time.perf_counter()
        completions = generate_work(self.engine.generate, work, self.params)
        engine_s = time.perf_counter() - t0
        rows = completion_rows(work, completions, grade_style=self.grade_style,
                               model_name=self.model_name, iteration=self.iteration)
        table = conform(rows, "samples")
        table = table.append_column(NODE_COLUMN, pa.array([self.node_id] * table.num_rows, pa.string()))
        return table.append_column(ENGINE_S_COLUMN, pa.array([engine_s] * table.num_rows, pa.float64()))


class _Progress:
    """Running totals the driver logs as parts land."""

    def __init__(self, n: int, total_problems: int, existing: pa.Table) -> None:
        self.n = n
        self.total_problems = total_problems
        self.counts: dict[str, int] = {}
        self.correct = 0
        self.graded = 0
        self.new_rows = 0
        self.new_tokens = 0
        self.engine_s = 0.0
        self.nodes: set[str] = set()
        self._add(existing)

    def _add(self, t: pa.Table) -> None:
        for pid in t.column("problem_id").to_pylist():
            self.counts[pid] = self.counts.get(pid, 0) + 1
        correct = t.column("correct")
        self.graded += len(correct) - correct.null_count
        self.correct += int(pc.sum(correct.cast(pa.int64())).as_py() or 0)

    def add(self, t: pa.Table) -> None:
        self._add(t)
        self.new_rows += t.num_rows
        self.new_tokens += int(pc.sum(t.column("num_tokens")).as_py() or 0)

    def line(self) -> str:
        done = sum(1 for c in self.counts.values() if c >= self.n)
        acc = f"{100 * self.correct / self.graded:.1f}%" if self.graded else "n/a"
        return f"sampling: {done}/{self.total_problems} problems done, accuracy so far {acc}"


def sample_problems(problems: pa.Table, *, model: ModelSpec, engine: EngineConfig,
                    sampling: SamplingConfig, cluster: ClusterConfig, out_dir: str | Path,
                    prompt_template: str = "zero_shot", demos: Sequence[Sequence[str]] | None = None,
                    grade_style: str = "default", model_name: str | None = None, iteration: int = 0,
                    on_part: Callable[[Path], None] | None = None,
                    pool: SamplerPool | OnDemandPool | None = None) -> dict[str, Any]:
    """Write ``sampling.n`` graded samples per problem to the ``samples`` stage ``out_dir``.

    Resumable: only missing ``(problem_id, sample_idx)`` pairs are generated; a sealed stage
    (manifest present) is returned untouched. ``on_part(path)`` is called after each part is
    written (progress hooks). Returns the manifest, whose ``metrics`` hold tokens generated,
    tokens/s, wall time per phase and accuracy.

    Without ``pool``, Ray Data starts ``cluster.replicas`` engine actors for this call. With a
    long-lived ``pool`` serving ``model`` (a recipe that samples one model in several stages),
    its replicas generate instead and no engine is started; an :class:`OnDemandPool` starts
    only if there is something to generate.
    """
    import ray

    from raysys.distributed.metrics import summarize_samples
    from raysys.distributed.ray_init import init_ray
    from raysys.prompts import build_prompt, default_stop

    t0 = time.perf_counter()
    out = Path(out_dir)
    if problems.num_rows == 0:
        raise DataError("problems: empty dataset (no rows to sample)")
    ids = problems.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        raise DataError("problems.id: ids must be unique (duplicates would merge samples)")
    name = model_name or Path(model.path).name
    request = {"model": asdict(model), "sampling": asdict(sampling), "template": prompt_template,
               "demos": demos, "grade_style": grade_style, "model_name": name, "iteration": iteration,
               "problem_ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    _claim(out, request)
    if is_complete(out):
        log.info("samples stage %s is complete; skipping", out)
        return read_manifest(out) or {}

    tokenizer = None
    if prompt_template == "chat":
        from raysys.models.loading import load_tokenizer
        tokenizer = load_tokenizer(model.adapter or model.path, trust_remote_code=model.trust_remote_code)
    questions = problems.column("question").to_pylist()
    prompts = [build_prompt(q, prompt_template, demos=demos, tokenizer=tokenizer) for q in questions]
    golds = (problems.column("gold_answer").to_pylist() if "gold_answer" in problems.column_names
             else [None] * len(ids))
    params = to_sampling_params(sampling, default_stop(prompt_template))
    existing = dedupe_samples(read_stage(out, "samples"))
    work = missing_work(ids, prompts, golds, sampling.n, done_pairs(existing))
    progress = _Progress(sampling.n, len(ids), existing)
    t_prepare = time.perf_counter() - t0

    t1 = time.perf_counter()
    replicas = cluster.replicas
    missing = sum(len(w["sample_idxs"]) for w in work)
    if work and pool is not None:
        live = pool.get() if isinstance(pool, OnDemandPool) else pool
        if live.weights != (model.path, model.adapter):
            raise StageError(f"{out}: the sampler pool serves {live.weights}, not the requested "
                             f"model {(model.path, model.adapter)}")
        replicas = len(live)
        log.info("sampling %d problems (%d rows missing) with a pool of %d replica(s)", len(work),
                 missing, replicas)
        _run_pool(live, work, out, progress, on_part, params=params, cluster=cluster,
                  grade_style=grade_style, model_name=name, iteration=iteration)
    elif work:
        init_ray(cluster)
        log.info("sampling %d problems (%d rows missing) with %d replica(s)", len(work), missing,
                 replicas)
        _run_pipeline(ray, work, out, progress, on_part, model=model, engine=engine, params=params,
                      cluster=cluster, grade_style=grade_style, model_name=name, iteration=iteration)
    t_generate = time.perf_counter() - t1

    t2 = time.perf_counter()
    samples = _finalize_parts(out, ids, sampling.n)
    metrics = summarize_samples(samples, [])
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
    metrics["wall_s"] = {"prepare": round(t_prepare, 3), "generate": round(t_generate, 3),
                         "finalize": round(time.perf_counter() - t2, 3)}
    manifest = write_manifest(out, "samples", extra={"metrics": metrics,
                                                     "request": request_fingerprint(request)})
    log.info("%s; wrote %d rows to %s", progress.line(), manifest["rows"], out)
    return manifest


def _claim(out: Path, request: dict[str, Any]) -> None:
    """Record the request on first use of ``out``; refuse a different request on resume."""
    fp = request_fingerprint(request)
    path = out / REQUEST_FILE
    if path.is_file():
        old = json.loads(path.read_text()).get("fingerprint")
        if old != fp:
            raise StageError(f"{out}: holds samples of a different request (model, sampling, prompts or "
                             "problems changed); use a new output directory or delete this one")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"fingerprint": fp, "request": request})


def _run_pipeline(ray: Any, work: list[dict[str, Any]], out: Path, progress: _Progress,
                  on_part: Callable[[Path], None] | None, *, model: ModelSpec, engine: EngineConfig,
                  params: SamplingParams, cluster: ClusterConfig, grade_style: str, model_name: str,
                  iteration: int) -> None:
    """Stream work through the engine actors and write each result batch as one part."""
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    batch = udf_batch_size(len(work), cluster)
    table = pa.Table.from_pylist(work)
    blocks = [table.slice(s, batch) for s in range(0, table.num_rows, batch)]
    total_cpus = ray.cluster_resources().get("CPU", 1.0)
    ds = ray.data.from_arrow(blocks).map_batches(
        EngineUDF,
        fn_constructor_kwargs={"model": model, "engine": engine, "params": params,
                               "grade_style": grade_style, "model_name": model_name,
                               "iteration": iteration},
        compute=ActorPoolStrategy(size=cluster.replicas),
        num_gpus=cluster.gpus_per_replica or None,
        num_cpus=udf_num_cpus(cluster, total_cpus),
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
                   progress, on_part)


def _run_id() -> str:
    """Names this invocation's parts, so a resumed run never overwrites an earlier part."""
    return f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _land_part(out: Path, name: str, table: pa.Table, progress: _Progress,
               on_part: Callable[[Path], None] | None) -> None:
    """Write one result batch as a part, count it, log progress, call the hook."""
    part = write_part(out, name, table, "samples")
    progress.add(table)
    log.info(progress.line())
    if on_part is not None:
        on_part(part)


def _run_pool(pool: SamplerPool, work: list[dict[str, Any]], out: Path, progress: _Progress,
              on_part: Callable[[Path], None] | None, *, params: SamplingParams,
              cluster: ClusterConfig, grade_style: str, model_name: str, iteration: int) -> None:
    """Generate ``work`` with a long-lived pool: each chunk (one engine batch per replica) is
    split over the replicas and written as one part when it is back."""
    progress.nodes.update(p["node_id"] for p in pool.ping())
    chunk = udf_batch_size(len(work), replace(cluster, replicas=len(pool))) * len(pool)
    run_id = _run_id()
    for i, start in enumerate(range(0, len(work), chunk)):
        part_work = work[start:start + chunk]
        t0 = time.perf_counter()
        completions = generate_work(pool.generate, part_work, params)
        # The driver's wait, not summed replica time as on the Ray Data path: replicas run at once.
        progress.engine_s += time.perf_counter() - t0
        table = conform(completion_rows(part_work, completions, grade_style=grade_style,
                                        model_name=model_name, iteration=iteration), "samples")
        _land_part(out, f"{run_id}-{i:05d}", table, progress, on_part)


def _finalize_parts(out: Path, ids: list[str], n: int) -> pa.Table:
    """Check every expected row is present; compact the parts if a row was written twice."""
    raw = read_stage(out, "samples")
    samples = dedupe_samples(raw)
    expected = {(pid, i) for pid in ids for i in range(n)}
    have = done_pairs(samples)
    if have != expected:
        missing = sorted(expected - have)[:5]
        raise StageError(f"{out}: {len(expected - have)} samples missing after generation "
                         f"(e.g. {missing}); re-run to finish the stage")
    samples = sort_samples(samples, ids)
    if samples.num_rows != raw.num_rows:
        # Duplicates (e.g. two drivers on one dir): one compact part, written before the old
        # ones go, so a crash in between leaves duplicates that reading dedupes, never a gap.
        old = sorted(out.glob("part-*.parquet"))
        new = write_part(out, f"compact-{uuid.uuid4().hex[:6]}", samples, "samples")
        for p in old:
            if p != new:
                p.unlink()
    return samples


def load_samples(out_dir: str | Path) -> pa.Table:
    """Read a samples stage: deduplicated on ``(problem_id, sample_idx)``, sorted."""
    return sort_samples(dedupe_samples(read_stage(out_dir, "samples")))


__all__ = ["EngineUDF", "dedupe_samples", "generate_work", "load_samples", "missing_work",
           "sample_problems", "to_sampling_params", "udf_num_cpus"]
