"""Sampling problems: the generation stage with ``problems`` in and graded ``samples`` out.

problems -> prompts (driver, from a template) -> :func:`raysys.distributed.generation.run_generation`
-> ``samples`` rows graded against each problem's gold answer where the completion is made
(inside the engine actors on the Ray Data path). Resume, parts, manifest and the request
fingerprint are the generation stage's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysys.config import ClusterConfig, EngineConfig, ModelSpec, SamplingConfig
from raysys.data.io import DataError
from raysys.distributed.generation import (GenerationSpec, dedupe_rows, done_keys, load_generated,
                                           request_fingerprint, run_generation, sort_rows,
                                           udf_batch_size, udf_num_cpus)
from raysys.engines.base import Completion

log = logging.getLogger(__name__)

SAMPLE_KEYS = ("problem_id", "sample_idx")


def completion_rows(work: list[dict[str, Any]], completions: list[list[Completion]], *,
                    grade_style: str, model_name: str, iteration: int) -> list[dict[str, Any]]:
    """``samples`` rows for work rows (``item`` = the problem) and their completions, graded
    against the problem's gold answer (``correct`` is null without one)."""
    from raysys.grading import extract_answer, grade

    rows = []
    for w, comps in zip(work, completions, strict=True):
        gold = w["item"].get("gold_answer")
        for idx, c in zip(w["idxs"], comps):
            if gold is None or gold == "":
                pred, correct = extract_answer(c.text, grade_style), None
            else:
                pred, correct = grade(c.text, gold, grade_style)
            rows.append({"problem_id": w["key"], "sample_idx": int(idx), "prompt": w["prompt"],
                         "completion": c.text, "pred": pred, "correct": correct, "model": model_name,
                         "iteration": iteration, "num_tokens": len(c.token_ids),
                         "cumulative_logprob": c.cumulative_logprob, "finish_reason": c.finish_reason})
    return rows


def samples_spec(grade_style: str, model_name: str, iteration: int) -> GenerationSpec:
    """The generation spec of graded ``samples`` of problems."""
    return GenerationSpec("samples", partial(completion_rows, grade_style=grade_style,
                                             model_name=model_name, iteration=iteration), SAMPLE_KEYS)


_KEYS = GenerationSpec("samples", completion_rows, SAMPLE_KEYS)   # key handling only


def dedupe_samples(samples: pa.Table) -> pa.Table:
    """Keep the first row of each ``(problem_id, sample_idx)``; order is otherwise kept."""
    return dedupe_rows(samples, _KEYS)


def sort_samples(samples: pa.Table, problem_order: list[str] | None = None) -> pa.Table:
    """Rows in problem order (``problem_order``, else by id), then by ``sample_idx``."""
    return sort_rows(samples, _KEYS, problem_order)


def done_pairs(samples: pa.Table) -> set[tuple[str, int]]:
    """The ``(problem_id, sample_idx)`` pairs present in ``samples``."""
    return done_keys(samples, _KEYS)


def sample_problems(problems: pa.Table, *, model: ModelSpec, engine: EngineConfig,
                    sampling: SamplingConfig, cluster: ClusterConfig, out_dir: str | Path,
                    prompt_template: str = "zero_shot", demos: Sequence[Sequence[str]] | None = None,
                    grade_style: str = "default", model_name: str | None = None, iteration: int = 0,
                    on_part: Callable[[Path], None] | None = None,
                    pool: Any = None, system: str | None = None) -> dict[str, Any]:
    """Write ``sampling.n`` graded samples per problem to the ``samples`` stage ``out_dir``.

    ``system``: a paragraph before every prompt (the task's instruction; a system turn in chat).

    Resumable: only missing ``(problem_id, sample_idx)`` pairs are generated; a sealed stage
    (manifest present) is returned untouched. ``on_part(path)`` is called after each part is
    written. Returns the manifest, whose ``metrics`` hold tokens generated, tokens/s, wall time
    per phase and accuracy.

    Without ``pool``, Ray Data starts ``cluster.replicas`` engine actors for this call. With a
    long-lived actor group serving ``model`` (or a callable returning one, called only when
    there is something to generate), its replicas generate instead.
    """
    from raysys.distributed.metrics import summarize_samples
    from raysys.prompts import build_prompt, default_stop

    if problems.num_rows == 0:
        raise DataError("problems: empty dataset (no rows to sample)")
    ids = problems.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        raise DataError("problems.id: ids must be unique (duplicates would merge samples)")
    name = model_name or Path(model.path).name
    request = {"model": asdict(model), "sampling": asdict(sampling), "template": prompt_template,
               "demos": demos, "grade_style": grade_style, "model_name": name, "iteration": iteration,
               "problem_ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    if system:
        request["system"] = system     # only when set: older stages keep their fingerprints
    tokenizer = None
    if prompt_template == "chat":
        from raysys.models.loading import load_tokenizer
        tokenizer = load_tokenizer(model.adapter or model.path, trust_remote_code=model.trust_remote_code)
    prompts = [build_prompt(q, prompt_template, demos=demos, tokenizer=tokenizer, system=system)
               for q in problems.column("question").to_pylist()]
    golds = (problems.column("gold_answer").to_pylist() if "gold_answer" in problems.column_names
             else [None] * len(ids))
    items = [{"gold_answer": g} for g in golds]
    spec = samples_spec(grade_style, name, iteration)
    return run_generation(items, keys=ids, prompts=prompts, spec=spec,
                          params=sampling.params(default_stop(prompt_template)), out_dir=out_dir,
                          request=request, cluster=cluster, model=model, engine=engine, group=pool,
                          label="sampling", summarize=lambda t: summarize_samples(t, []),
                          on_part=on_part)


def load_samples(out_dir: str | Path) -> pa.Table:
    """Read a samples stage: deduplicated on ``(problem_id, sample_idx)``, sorted."""
    return load_generated(out_dir, _KEYS)


__all__ = ["completion_rows", "dedupe_samples", "done_pairs", "load_samples", "request_fingerprint",
           "sample_problems", "samples_spec", "sort_samples", "udf_batch_size", "udf_num_cpus"]
