"""Recipe building blocks: the stages every method is made of, each a resumable run-dir stage.

A recipe module composes these in the order of its paper; it owns no stage machinery. Each step
takes a small :class:`StepContext` (run dir, engine, cluster and its role groups, grading style,
default sampling), never a recipe's config:

* :func:`problems` freezes a dataset split as a ``problems`` stage;
* :func:`sample` / :func:`generate` are the generation stage (``samples`` of problems, or any
  input rows -> any declared output kind) on the role's actor group;
* :func:`data_stage` writes built rows (SFT sets, pairs, token pairs) as a stage;
* :func:`evaluate` is greedy accuracy (+ maj@k, pass@k) with Wilson CIs, as a typed row;
* training and base models are in :mod:`raysys.recipes.model_steps`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysys.config import ClusterConfig, DatasetSpec, EngineConfig, ModelSpec, SamplingConfig
from raysys.data.io import read_stage, write_stage
from raysys.distributed.generation import GenerationSpec
from raysys.errors import StageError
from raysys.pipeline import RunDir
from raysys.pipeline.report_cmd import OUTCOME_KEYS

log = logging.getLogger(__name__)


@dataclass
class StepContext:
    """What every step needs; built once per run by :func:`open_context`."""

    rd: RunDir
    engine: EngineConfig
    cluster: ClusterConfig
    grade_style: str = "default"
    greedy: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    groups: Any = None           # raysys.distributed.roles.RoleGroups (Ray is imported lazily)
    # Pre-trained tiny models by config fingerprint, shared between runs (None: no sharing).
    tiny_cache: Path | None = None
    recipe: Any = None           # the running method's raysys.recipes.record.Recipe

    in_process: bool = False     # no Ray: local groups, training in this process

    def group(self, role: str, model: ModelSpec, *args: Any) -> Callable[[], Any]:
        """A lazy handle on ``role``'s group serving ``model``, started (or served new weights
        in place) when called. The role's actor class comes from the role registry
        (``distributed.roles.ROLE_ACTORS``); ``args`` follow the model in its constructor
        (default: the run's engine, for the text roles)."""
        from raysys.distributed.roles import role_actor

        args = args or (self.engine,)
        return lambda: self.groups.get(role, role_actor(role), model, *args)


@dataclass
class EvalRow:
    """One model's test accuracy (a report row)."""

    model: str
    correct: int
    n: int
    maj_k: int | None = None
    maj_acc: float | None = None
    pass_acc: float | None = None
    # problem_id -> greedy answer correct: paired comparisons between rows of one test split
    outcomes: dict[str, bool] = field(default_factory=dict, repr=False)
    # problem_id -> maj@k vote correct (rows evaluated with maj_k > 1; `raysys compare ROW@maj`)
    maj_outcomes: dict[str, bool] = field(default_factory=dict, repr=False)
    # What the row is, as data the figures plot (raysys.pipeline.figures): ``beta`` (guided
    # decoding; 0 = plain), ``best_of`` (k of a best-of-k row), ``iteration`` and ``branch``
    # (a self-improvement loop; iteration 0 without a branch starts every branch).
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def minus(self, other: EvalRow) -> Any:
        """``self - other`` on the problems both were graded on (paired bootstrap)."""
        from raysys.pipeline.stats import paired_bootstrap

        common = sorted(set(self.outcomes) & set(other.outcomes))
        return paired_bootstrap([other.outcomes[p] for p in common], [self.outcomes[p] for p in common])


@dataclass
class RecipeResult:
    """What every recipe's ``run`` returns (the CLI prints its table and paths)."""

    run_dir: str
    report: str
    evals: list[EvalRow]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> dict[str, float]:
        return {r.model: r.accuracy for r in self.evals}

    def eval_dicts(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in asdict(r).items() if k not in (*OUTCOME_KEYS, "tags")}
                for r in self.evals]


def open_context(rd: RunDir, *, engine: EngineConfig, cluster: ClusterConfig, grade_style: str,
                 greedy: SamplingConfig, seed: int, tiny_cache: str | None = None,
                 inputs: Sequence[str] = (), in_process: bool = False) -> StepContext:
    """Start (or join) Ray for the run and make the role groups; close with :func:`close_context`.

    ``inputs`` (the local paths the config names) and the run dir are what other nodes may need:
    before any work, :func:`~raysys.distributed.storage.use_storage` checks that every node sees
    them, or serves them through Ray (``cluster.storage``). ``in_process``: no Ray at all, every
    role a local group and training in this process (tiny models: tests, small runs)."""
    from raysys.distributed.roles import RoleGroups

    cache = Path(tiny_cache).expanduser() if tiny_cache else None
    if in_process:
        return StepContext(rd, engine, cluster, grade_style, greedy, seed,
                           RoleGroups(cluster, in_process=True), cache, in_process=True)
    from raysys.distributed.ray_init import init_ray
    from raysys.distributed.storage import use_storage

    init_ray(cluster)
    use_storage(cluster.storage, rd.path, [*inputs, *([tiny_cache] if tiny_cache else [])])
    return StepContext(rd, engine, cluster, grade_style, greedy, seed, RoleGroups(cluster), cache)


def run_recipe(recipe: Any, cfg: Any, *, force: bool = False,
               in_process: bool = False) -> RecipeResult:
    """Open the run dir of a recipe config (its :class:`~raysys.recipes.config_base.RecipeConfig`
    header), run ``recipe.body(cfg, ctx)``, always close it. ``recipe`` is the method's
    :class:`~raysys.recipes.record.Recipe`."""
    from raysys.config import config_inputs, to_dict

    rd = RunDir(cfg.run_dir, to_dict(cfg), force=force)
    ctx = open_context(rd, engine=cfg.engine, cluster=cfg.cluster, grade_style=cfg.grade_style,
                       greedy=cfg.greedy, seed=cfg.seed, tiny_cache=cfg.tiny_cache,
                       inputs=list(config_inputs(cfg).values()), in_process=in_process)
    ctx.recipe = recipe
    try:
        return recipe.body(cfg, ctx)
    except StageError as e:
        if "resum" in str(e):
            raise
        # A lost node or worker: complete stages are kept, so the same command picks up there.
        raise StageError(f"{e}; re-running the same command resumes from the last complete "
                         "stage") from e
    finally:
        close_context(ctx)


def close_context(ctx: StepContext) -> None:
    """Stop every role group and close this invocation's entry in ``state.json``."""
    try:
        if ctx.groups is not None:
            ctx.groups.stop()
    finally:
        ctx.rd.finish()


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def problems(ctx: StepContext, split: str, spec: DatasetSpec) -> pa.Table:
    """Freeze a split as a ``problems`` stage, so a resumed run sees exactly the same rows."""
    from raysys.data.sources import load_problems

    def fn(out: Path) -> None:
        write_stage(out, load_problems(spec, key=f"data.{split}"), "problems")
    res = ctx.rd.stage(f"problems_{split}", kind="problems", phase="data", fn=fn)
    return read_stage(res.path, "problems")


def stage_metrics(ctx: StepContext, name: str, iteration: int = 0) -> dict[str, Any] | None:
    """The metrics a complete stage recorded (None when it did not run), from the run's
    in-memory state rather than a re-read of ``state.json``."""
    key = ctx.rd.stage_dir(name, iteration).relative_to(ctx.rd.path).as_posix()
    entry = ctx.rd.state["stages"].get(key) or {}
    return entry.get("metrics") if entry.get("status") == "complete" else None


def without_ids(table: pa.Table, ids: set[str]) -> pa.Table:
    """``problems`` rows whose id is not in ``ids`` (order kept)."""
    keep = [i for i, pid in enumerate(table.column("id").to_pylist()) if pid not in ids]
    return table.take(keep)


def data_stage(ctx: StepContext, name: str,
               rows: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]], kind: str, *,
               iteration: int = 0,
               metrics: dict[str, Any] | Callable[[list[dict]], dict[str, Any]] | None = None,
               on_write: Callable[[list[dict[str, Any]]], None] | None = None) -> Path:
    """Built rows (SFT set, pairs, token pairs, ...) as stage ``name``; ``on_write`` runs
    before the manifest (e.g. an export), so an export exists whenever the stage is complete.
    ``rows`` may be a function that builds them, called only when the stage runs (a complete
    stage costs nothing on resume), and ``metrics`` a function of the rows."""
    def fn(out: Path) -> None:
        built = rows() if callable(rows) else rows
        if on_write is not None:
            on_write(built)
        stats = metrics(built) if callable(metrics) else metrics
        write_stage(out, built, kind, extra={"metrics": stats or {}})
    return ctx.rd.stage(name, iteration=iteration, kind=kind, phase="data", fn=fn).path


# ------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------


def sample(ctx: StepContext, name: str, table: pa.Table, model: ModelSpec, template: str, *,
           demos: list[list[str]] | None = None, sampling: SamplingConfig | None = None,
           iteration: int = 0, model_name: str | None = None, engine: EngineConfig | None = None,
           role: str = "sampler", system: str | None = None) -> pa.Table:
    """Graded ``samples`` of ``model`` on ``problems`` rows, on ``role``'s group (an engine
    other than the run's, e.g. guided decoding, is a different role); ``system`` is a
    paragraph before every prompt (the task's instruction)."""
    from raysys.distributed.sampling import load_samples, sample_problems

    eng = engine or ctx.engine

    def fn(out: Path) -> None:
        sample_problems(table, model=model, engine=eng, sampling=sampling or ctx.greedy,
                        cluster=ctx.cluster, out_dir=out, prompt_template=template, demos=demos,
                        grade_style=ctx.grade_style, model_name=model_name or name,
                        iteration=iteration, pool=ctx.group(role, model, eng), system=system)
    res = ctx.rd.stage(name, iteration=iteration, kind="samples", phase="sampling", fn=fn)
    return load_samples(res.path)


def generate(ctx: StepContext, name: str, items: list[dict[str, Any]], *, keys: list[str],
             prompts: list[str], spec: GenerationSpec, model: ModelSpec,
             sampling: SamplingConfig | None = None, default_stop: tuple[str, ...] = (),
             group: Callable[[], Any] | None = None, iteration: int = 0,
             request: dict[str, Any] | None = None) -> pa.Table:
    """The generic generation stage: any input rows -> ``spec.kind`` rows (resumable).

    ``group`` is a lazy handle on the role group that generates (default: the sampler role
    serving ``model``); ``request`` adds what else makes this stage's output (prompt version,
    source stage) to its fingerprint.
    """
    import hashlib

    from raysys.distributed.generation import load_generated, run_generation

    sampling = sampling or ctx.greedy
    req = {"stage": name, "model": asdict(model), "sampling": asdict(sampling), "kind": spec.kind,
           "prompts": hashlib.sha256("\n\x00".join(prompts).encode()).hexdigest(),
           "keys": hashlib.sha256("\n".join(keys).encode()).hexdigest(), **(request or {})}

    def fn(out: Path) -> None:
        run_generation(items, keys=keys, prompts=prompts, spec=spec,
                       params=sampling.params(default_stop), out_dir=out, request=req,
                       cluster=ctx.cluster, model=model, engine=ctx.engine,
                       group=group or ctx.group("sampler", model), label=name)
    res = ctx.rd.stage(name, iteration=iteration, kind=spec.kind, phase="sampling", fn=fn)
    return load_generated(res.path, spec)


def map_rows(ctx: StepContext, name: str, rows: list[dict[str, Any]], *, keys: list[str],
             spec: GenerationSpec, method: str, group: Callable[[], Any],
             request: dict[str, Any], iteration: int = 0, chunk_rows: int = 64,
             summarize: Callable[[pa.Table], dict[str, Any]] | None = None) -> pa.Table:
    """A row-mapping stage: each input row -> one ``spec.kind`` row by ``group``'s
    ``method`` (a role worker that is not a text generator, e.g. LLM2's explorer), with the
    generation stage's resume, parts, fingerprint (``request``) and manifest."""
    from raysys.distributed.generation import load_generated, run_map

    def fn(out: Path) -> None:
        run_map(rows, keys=keys, spec=spec, method=method, group=group, out_dir=out,
                request=request, cluster=ctx.cluster, label=name, chunk_rows=chunk_rows,
                summarize=summarize)
    res = ctx.rd.stage(name, iteration=iteration, kind=spec.kind, phase="sampling", fn=fn)
    return load_generated(res.path, spec)


def samples_spec(ctx: StepContext, name: str, iteration: int = 0) -> GenerationSpec:
    """The spec of graded ``samples`` rows (what :func:`sample` writes), for a streamed stage."""
    from raysys.distributed.sampling import samples_spec as spec

    return spec(ctx.grade_style, name, iteration)


def stream(ctx: StepContext, name: str, spec: GenerationSpec, params: Any,
           request: dict[str, Any], *, iteration: int = 0) -> Any:
    """A generation stage fed chunk by chunk (``streaming.StageStream``: ``submit`` chunks to a
    group handle, :func:`run_streams` lands them); :func:`close_stream` seals it."""
    from raysys.distributed.streaming import StageStream

    return StageStream(ctx.rd.stage_dir(name, iteration), spec, params, request, name)


def run_streams(first: list[Any], on_landed: Callable[[Any, list[dict]], list[Any]]) -> None:
    """Land every submitted chunk; ``on_landed(chunk, rows)`` returns the chunks it submits
    downstream (``streaming.run_streams``)."""
    from raysys.distributed.streaming import run_streams as run

    run(first, on_landed)


def close_stream(ctx: StepContext, s: Any, name: str, *, iteration: int = 0) -> pa.Table:
    """Seal a streamed stage (samples get their accuracy metrics) and record it as a complete
    stage of the run; returns its rows."""
    from raysys.distributed.generation import load_generated
    from raysys.distributed.metrics import summarize_samples

    s.close((lambda tb: summarize_samples(tb, [])) if s.spec.kind == "samples" else None)
    ctx.rd.stage(name, iteration=iteration, kind=s.spec.kind, phase="sampling", fn=lambda out: None)
    return load_generated(ctx.rd.stage_dir(name, iteration), s.spec)


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


def evaluate(ctx: StepContext, name: str, test: pa.Table, model: ModelSpec, template: str, *,
             demos: list[list[str]] | None = None, maj_k: int = 0, temperature: float = 0.7,
             iteration: int = 0, engine: EngineConfig | None = None,
             role: str = "sampler", system: str | None = None,
             tags: dict[str, Any] | None = None) -> EvalRow:
    """Greedy accuracy on ``test``; with ``maj_k > 1`` also maj@k and pass@k over ``maj_k``
    samples at ``temperature`` (one maj@k for the whole tree: equivalence-based voting).
    ``tags``: what the row is, for the figures (:attr:`EvalRow.tags`)."""
    from raysys.distributed.metrics import maj_outcomes, summarize_samples

    greedy = sample(ctx, f"eval_{name}", test, model, template, demos=demos, iteration=iteration,
                    engine=engine, role=role, system=system)
    m = summarize_samples(greedy, [])
    outcomes = {r["problem_id"]: bool(r["correct"]) for r in greedy.to_pylist()
                if r["sample_idx"] == 0 and r["correct"] is not None}
    row = EvalRow(name, int(m.get("correct_first") or 0), int(m.get("graded_problems") or 0),
                  outcomes=outcomes, tags=dict(tags or {}))
    if maj_k > 1:
        sampling = replace(ctx.greedy, n=maj_k, temperature=temperature, seed=ctx.seed)
        many = sample(ctx, f"eval_{name}_maj{maj_k}", test, model, template, demos=demos,
                      sampling=sampling, iteration=iteration, engine=engine, role=role,
                      system=system)
        mk = summarize_samples(many, [maj_k])
        row.maj_k, row.maj_acc, row.pass_acc = maj_k, mk.get(f"maj@{maj_k}"), mk.get(f"pass@{maj_k}")
        row.maj_outcomes = maj_outcomes(many, maj_k)
    return row


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------

def finish(ctx: StepContext, evals: list[EvalRow], sections: dict[str, str],
           extra: dict[str, Any] | None = None) -> RecipeResult:
    """Close the run: ``result.json`` (the rows with per-problem outcomes and tags, the report
    sections, the recipe's report layout: what ``raysys report`` re-renders from), then
    ``report.md`` with timings, paired differences and ``figures/<recipe>.png``."""
    import json

    from raysys.data.io import atomic_write_text
    from raysys.pipeline import load_state
    from raysys.pipeline.report import compute_shares, phase_timings
    from raysys.pipeline.report_cmd import RESULT_FILE, regenerate

    rec = ctx.recipe
    ctx.rd.finish()     # records this invocation's wall time so far, for the timings table
    result = RecipeResult(str(ctx.rd.path), "", evals, extra=dict(extra or {}))
    rows = [{**asdict(r), **({"baseline": True} if r.model == rec.baseline else {})}
            for r in evals]
    payload = {"method": rec.name, "title": f"{rec.title}: {ctx.rd.path.name}", "evals": rows,
               "sections": sections, "extra": result.extra, "layout": rec.layout()}
    atomic_write_text(ctx.rd.path / RESULT_FILE, json.dumps(payload, indent=1, default=str))
    report = regenerate(ctx.rd.path).report     # report.md and figures/, as `raysys report` does
    ctx.rd.log_metrics("evaluation", result.accuracy)
    state = load_state(ctx.rd.path)
    ctx.rd.log_metrics("timings", {**phase_timings(state), **compute_shares(state)})
    result.report = str(report)
    return result
