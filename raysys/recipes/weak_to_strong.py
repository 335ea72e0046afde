"""Weak-to-strong reasoning (Yang et al. 2024), top to bottom on Ray.

1. Weak model: SFT on ``train_1`` (question -> gold solution), or a given weak model.
2. Weak labels: the weak model's greedy zero-shot answers on ``train_2`` (or precomputed ones).
3. Strong ICL: the strong model's greedy few-shot answers on ``train_2`` (weak demonstrations).
4. Stage-I data: questions whose weak and ICL answers agree; hybrid / weak / ICL variants.
5. Stage I: SFT of the strong model on the chosen variant (optionally a second iteration).
6. Stage-II pairs: n samples of the stage-I model vs. the weak answer (``w2s_pairs``).
7. Stage II: DPO or ORPO from the stage-I model.
8. Evaluation of weak, strong ICL, stage I and stage II on the test split -> ``report.md``
   (plus the strong model zero-shot: the bar stage I must clear).

Each model is sampled by one long-lived sampler pool for all of its sampling stages (its
train_2 answers, then its test answers for step 8), stopped before the next training stage.

Every step is a pipeline stage of the run dir: re-running skips what is complete and finishes
what is not. Gold answers of ``train_2`` are only used to report the accuracy of built data.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from raysys.config import ModelSpec, SamplingConfig, to_dict
from raysys.data.io import read_stage, write_stage
from raysys.errors import StageError
from raysys.pipeline import RunDir, load_state, render_report, write_report
from raysys.recipes.w2s_config import StageTrain, TinyModel, W2SConfig
from raysys.recipes.w2s_pairs import Labeled, PairRule, build_stage1, build_stage2, labels_accuracy

if TYPE_CHECKING:
    from raysys.distributed.actors import OnDemandPool

CONFIG = W2SConfig
log = logging.getLogger(__name__)


def run(cfg: W2SConfig, *, force: bool = False) -> dict[str, Any]:
    """Run (or resume) the recipe in ``cfg.run_dir``; returns accuracies and the report path."""
    from raysys.distributed.ray_init import init_ray

    rd = RunDir(cfg.run_dir, to_dict(cfg), force=force)
    init_ray(cfg.cluster)
    try:
        return _run(cfg, rd)
    finally:
        rd.finish()


def _run(cfg: W2SConfig, rd: RunDir) -> dict[str, Any]:
    train_2 = _problems(rd, "train_2", cfg.data.train_2)
    test = _problems(rd, "test", cfg.data.test)

    # 1. the weak model (trained on train_1 gold solutions unless given as trained)
    weak = _weak_model(cfg, rd)
    strong = _base_model(cfg, rd, "strong", cfg.models.strong)

    # Each model is loaded once (a long-lived sampler pool) for all its sampling stages, so its
    # test answers for step 8 are sampled right after its train_2 answers.
    rows: list[dict[str, Any]] = []

    # 2. weak labels on train_2
    with _loaded(cfg, weak) as pool:
        if cfg.data.weak_outputs is not None:
            weak_labels = _stage_from_weak_outputs(cfg, rd, train_2)
        else:
            assert weak is not None
            weak_labels = _sample(cfg, rd, "weak_labels", train_2, weak, "zero_shot", pool=pool)
        if weak is not None:
            rows += _evaluate(cfg, rd, "weak", test, weak, "zero_shot", pool=pool)

    # 3. strong ICL with weak demonstrations (the demo questions leave the ICL pool)
    demos = _icl_demos(cfg, rd, weak_labels)
    icl_pool = _without_ids(train_2, {d[2] for d in demos})
    icl_demos = [[q, a] for q, a, _ in demos]
    with _loaded(cfg, strong) as pool:
        icl = _sample(cfg, rd, "strong_icl", icl_pool, strong, "few_shot", demos=icl_demos, pool=pool)
        rows += _evaluate(cfg, rd, "strong_icl", test, strong, "few_shot", demos=icl_demos, pool=pool)
        if cfg.eval.strong_zero_shot:
            rows += _evaluate(cfg, rd, "strong_zero_shot", test, strong, "zero_shot", pool=pool)

    # 4-5. stage-I data and SFT of the strong model; iteration 2 relabels with the stage-I model
    stage1 = _stage1(cfg, rd, train_2, weak_labels, icl, strong, iteration=0)
    for it in range(1, cfg.stage1.iterations):
        relabels = _sample(cfg, rd, "weak_labels", train_2, stage1, "zero_shot", iteration=it)
        re_demos = _icl_demos(cfg, rd, relabels, iteration=it)
        re_icl = _sample(cfg, rd, "strong_icl", _without_ids(train_2, {d[2] for d in re_demos}),
                         strong, "few_shot", demos=[[q, a] for q, a, _ in re_demos], iteration=it)
        stage1 = _stage1(cfg, rd, train_2, relabels, re_icl, strong, iteration=it)

    # 6-7. stage-II pairs from the stage-I model's samples, then DPO / ORPO
    with _loaded(cfg, stage1) as pool:
        s2_samples = _stage2_samples(cfg, rd, train_2, stage1, pool) if cfg.stage2.enabled else None
        rows += _evaluate(cfg, rd, "stage1", test, stage1, "zero_shot", pool=pool)
    stage2 = (_stage2(cfg, rd, train_2, weak_labels, stage1, s2_samples)
              if s2_samples is not None else None)

    # 8. evaluation on the test split (the other models' rows were sampled above)
    if stage2 is not None:
        rows += _evaluate(cfg, rd, "stage2", test, stage2, "zero_shot")
    sections = {"Training data built from train_2": _data_section(rd)}
    if cfg.stage2.enabled and stage2 is None:
        sections["Stage II"] = "No question met the stage-II criteria: no pairs, no stage-II model."
    rd.finish()     # records this invocation's wall time so far, for the timings table
    report = write_report(rd.path, render_report(f"Weak-to-strong: {rd.path.name}", rows,
                                                 load_state(rd.path), sections))
    rd.log_metrics("evaluation", {r["model"]: r["correct"] / r["n"] for r in rows})
    return {"run_dir": str(rd.path), "report": str(report), "accuracy": {
        r["model"]: r["correct"] / r["n"] for r in rows}, "evals": rows}


# ------------------------------------------------------------------------------------------
# Data stages
# ------------------------------------------------------------------------------------------


def _problems(rd: RunDir, split: str, spec: Any) -> pa.Table:
    """Freeze a split as a ``problems`` stage, so a resumed run sees exactly the same rows."""
    from raysys.data.sources import load_problems

    def fn(out: Path) -> None:
        write_stage(out, load_problems(spec, key=f"data.{split}"), "problems")
    res = rd.stage(f"problems_{split}", kind="problems", phase="data", fn=fn)
    return read_stage(res.path, "problems")


def _without_ids(problems: pa.Table, ids: set[str]) -> pa.Table:
    keep = [i for i, pid in enumerate(problems.column("id").to_pylist()) if pid not in ids]
    return problems.take(keep)


def _response(text: str) -> str:
    """Responses follow ``Answer:`` after one space, as in the few-shot demo blocks."""
    return " " + text.strip()


def _labels(samples: pa.Table) -> dict[str, Labeled]:
    """First sample per problem as a :class:`Labeled` answer."""
    out: dict[str, Labeled] = {}
    for r in samples.to_pylist():
        if r["sample_idx"] == 0:
            out[r["problem_id"]] = Labeled(_response(r["completion"]), r["pred"] or "")
    return out


def _weak_output_target(row: dict[str, Any], lineno: int, path: str, ids: list[str],
                        questions: list[str]) -> str | None:
    """The train_2 problem id a precomputed weak output answers.

    String ids name the problem; integer ids (the paper's files) are row numbers of the split,
    checked against the question in the row's prompt so a misaligned file fails loudly.
    """
    from raysys.data.io import DataError

    rid = row["id"]
    if isinstance(rid, str) and not rid.isdigit():
        return rid if rid in set(ids) else None
    k = int(rid)
    if k >= len(ids):
        return None                      # beyond data.train_2.limit
    if "prompt" in row and questions[k].strip() not in row["prompt"]:
        raise DataError(f"{path}:{lineno}: id {rid} is row {k} of data.train_2, but its prompt "
                        f"does not contain that row's question")
    return ids[k]


def _stage_from_weak_outputs(cfg: W2SConfig, rd: RunDir, train_2: pa.Table) -> pa.Table:
    """Step 2 from a file: precomputed weak outputs (id, prompt, response, ...) as samples."""
    from raysys.data.io import DataError, read_records
    from raysys.grading import extract_answer, is_equiv

    path = str(cfg.data.weak_outputs)

    def build(out: Path) -> dict[str, Any]:
        ids = train_2.column("id").to_pylist()
        questions = train_2.column("question").to_pylist()
        gold = dict(zip(ids, train_2.column("gold_answer").to_pylist()))
        rows: dict[str, dict[str, Any]] = {}
        for lineno, r in read_records(path):
            for field in ("id", "response"):
                if field not in r:
                    raise DataError(f"{path}:{lineno}: missing field '{field}'")
            pid = _weak_output_target(r, lineno, path, ids, questions)
            if pid is None or pid in rows:
                continue
            pred = extract_answer(r["response"], cfg.data.grade_style)
            g = gold[pid]
            rows[pid] = {"problem_id": pid, "sample_idx": 0, "prompt": r.get("prompt", ""),
                         "completion": r["response"], "pred": pred, "model": "weak_outputs",
                         "correct": bool(pred) and g is not None and is_equiv(pred, g), "iteration": 0}
        if not rows:
            raise DataError(f"{path}: no row answers a problem of data.train_2")
        acc = sum(r["correct"] for r in rows.values()) / len(rows)
        write_stage(out, list(rows.values()), "samples",
                    extra={"metrics": {"accuracy": acc, "source": "file", "missing": len(ids) - len(rows)}})
        return {}
    res = rd.stage("weak_labels", kind="samples", phase="data", fn=build)
    return read_stage(res.path, "samples")


def _icl_demos(cfg: W2SConfig, rd: RunDir, weak_labels: pa.Table,
               iteration: int = 0) -> list[tuple[str, str, str]]:
    """``k`` (question, answer, problem_id) demonstrations: weak outputs with an answer, or gold."""
    from raysys.prompts import select_demos

    problems = read_stage(rd.stage_dir("problems_train_2"), "problems").to_pylist()
    by_id = {p["id"]: p for p in problems}
    if cfg.icl.demos_from == "weak":
        pool = [(by_id[r["problem_id"]]["question"], r["completion"].strip(), r["problem_id"])
                for r in weak_labels.to_pylist()
                if r["sample_idx"] == 0 and (r["pred"] or "").strip() and r["problem_id"] in by_id]
    else:   # gold demonstrations come from the labelled train_1, never from train_2
        train_1 = _problems(rd, "train_1", cfg.data.train_1).to_pylist()
        pool = [(p["question"], (p["gold_solution"] or "").strip(), p["id"]) for p in train_1
                if p.get("gold_solution")]
    if len(pool) < cfg.icl.k:
        raise StageError(f"icl.k: {cfg.icl.k} demonstrations asked, only {len(pool)} "
                         f"{cfg.icl.demos_from} answers with a final answer exist")
    return [tuple(d) for d in select_demos(pool, cfg.icl.k, cfg.icl.seed + iteration)]


@contextmanager
def _loaded(cfg: W2SConfig, model: ModelSpec | None) -> Iterator[OnDemandPool | None]:
    """A sampler pool for ``model``, started when a stage first needs it, stopped on exit."""
    if model is None:
        yield None
        return
    from raysys.distributed.actors import OnDemandPool
    with OnDemandPool(cfg.cluster.replicas, model, cfg.engine, cfg.cluster) as pool:
        yield pool


def _sample(cfg: W2SConfig, rd: RunDir, name: str, problems: pa.Table, model: ModelSpec,
            template: str, *, demos: list[list[str]] | None = None, iteration: int = 0,
            sampling: SamplingConfig | None = None, model_name: str | None = None,
            pool: OnDemandPool | None = None) -> pa.Table:
    """A resumable ``samples`` stage of ``model`` on ``problems``: on ``pool`` when given, else
    on Ray Data engine actors started for this stage."""
    from raysys.distributed.sampling import load_samples, sample_problems

    def fn(out: Path) -> None:
        sample_problems(problems, model=model, engine=cfg.engine, sampling=sampling or cfg.greedy,
                        cluster=cfg.cluster, out_dir=out, prompt_template=template, demos=demos,
                        grade_style=cfg.data.grade_style, model_name=model_name or name,
                        iteration=iteration, pool=pool)
    res = rd.stage(name, iteration=iteration, kind="samples", phase="sampling", fn=fn)
    return load_samples(res.path)


def _write_sets(cfg: W2SConfig, rd: RunDir, sets: dict[str, list[dict[str, Any]]],
                stats: dict[str, Any], kind: str, prefix: str, iteration: int) -> Path:
    """Write each variant as a stage (the chosen one last) and export LLaMA-Factory files."""
    chosen = cfg.stage1.variant if kind == "sft" else "pairs"
    for name, rows in sorted(sets.items(), key=lambda kv: kv[0] == chosen):
        if not rows:
            raise StageError(f"{prefix}: no training rows were built ({stats}); the weak and strong "
                             "answers never meet the recipe's criteria on this data")

        def fn(out: Path, rows: list[dict[str, Any]] = rows, name: str = name) -> None:
            if cfg.export_llamafactory:
                from raysys.data.formats import export_llamafactory
                from raysys.data.schema import conform
                export_llamafactory({f"{prefix}_{name}_iter{iteration}": conform(rows, kind)},
                                    rd.path / "llamafactory", legacy_pairs=kind == "pairs")
            write_stage(out, rows, kind, extra={"metrics": stats})
        rd.stage(f"{prefix}_{name}", iteration=iteration, kind=kind, phase="data", fn=fn)
    return rd.stage_dir(f"{prefix}_{chosen}", iteration)


def _stage1(cfg: W2SConfig, rd: RunDir, train_2: pa.Table, weak_labels: pa.Table, icl: pa.Table,
            strong: ModelSpec, iteration: int) -> ModelSpec:
    from raysys.prompts import build_prompt

    questions = train_2.to_pylist()
    weak, strong_icl = _labels(weak_labels), _labels(icl)
    sets, stats = build_stage1(questions, weak, strong_icl, lambda q: build_prompt(q, "zero_shot"))
    stats["weak_label_acc"] = labels_accuracy(questions, weak)
    stats["icl_label_acc"] = labels_accuracy(questions, strong_icl)
    data = _write_sets(cfg, rd, sets, stats, "sft", "stage1", iteration)
    return _train(rd, f"stage1_iter{iteration}", "sft", strong, data, cfg.stage1.train)


def _stage2_samples(cfg: W2SConfig, rd: RunDir, train_2: pa.Table, stage1: ModelSpec,
                    pool: OnDemandPool | None) -> pa.Table:
    """The stage-I model's ``stage2.n`` samples per train_2 question (the pairs' material)."""
    s2 = cfg.stage2
    sampling = replace(cfg.greedy, n=s2.n, temperature=s2.temperature, seed=s2.seed)
    return _sample(cfg, rd, "stage2_samples", train_2, stage1, "zero_shot", sampling=sampling,
                   pool=pool)


def _stage2(cfg: W2SConfig, rd: RunDir, train_2: pa.Table, weak_labels: pa.Table,
            stage1: ModelSpec, samples: pa.Table) -> ModelSpec | None:
    """Stage-II pairs and preference training; None when no question yields a pair."""
    from raysys.prompts import build_prompt

    s2 = cfg.stage2
    by_q: dict[str, list[Labeled]] = {}
    for r in samples.to_pylist():
        by_q.setdefault(r["problem_id"], []).append(Labeled(_response(r["completion"]), r["pred"] or ""))
    rule = PairRule(s2.min_confidence, s2.high_confidence, cfg.pairs_per_question)
    pairs, stats = build_stage2(train_2.to_pylist(), _labels(weak_labels), by_q,
                                lambda q: build_prompt(q, "zero_shot"), rule=rule, seed=s2.seed)
    if not pairs:
        # Nothing to prefer: the stage-I model is left as is and the report says why.
        log.warning("stage II built no pairs (%s); skipping stage-II training", stats)
        rd.log_metrics("stage2_pairs", stats, skipped=True)
        return None
    data = _write_sets(cfg, rd, {"pairs": pairs}, stats, "pairs", "stage2", 0)
    return _train(rd, "stage2", s2.method, stage1, data, s2.train)


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------


def _spec_at(path: Path, like: ModelSpec) -> ModelSpec:
    return ModelSpec(path=str(path), dtype=like.dtype, max_model_len=like.max_model_len,
                     trust_remote_code=like.trust_remote_code)


def _train(rd: RunDir, name: str, kind: str, base: ModelSpec, data: Path,
           st: StageTrain) -> ModelSpec:
    """A training stage: ``base`` + ``data`` -> ``models/<name>`` (merged dir or full model)."""
    from raysys.config import from_dict
    from raysys.models.loading import is_adapter_dir
    from raysys.training.config import TrainConfig
    from raysys.training.trainer import train

    def fn(tmp: Path) -> dict[str, Any]:
        work = rd.path / "ray_train" / name
        shutil.rmtree(work, ignore_errors=True)     # no checkpoints kept: a restart retrains
        fields = st.train_fields()
        fields["merge_output"] = bool(st.merge_output and st.lora.enabled)
        # small built sets (few agreeing questions / pairs) must still fill one global batch
        rows = read_stage(data).num_rows
        per_batch = max(1, rows // (st.num_workers * st.grad_accum))
        if per_batch < st.micro_batch_size:
            log.warning("%s: %d rows; micro_batch_size %d -> %d", name, rows, st.micro_batch_size,
                        per_batch)
            fields["micro_batch_size"] = per_batch
        tcfg = from_dict(TrainConfig, {**fields, "kind": kind, "model": base.path, "data": str(data),
                                       "out": str(tmp), "name": name,
                                       "trust_remote_code": base.trust_remote_code}, f"train.{name}")
        result = train(tcfg, run_dir=work)
        if not result.completed:
            raise StageError(f"{name}: training stopped before the end (metrics {result.metrics})")
        if Path(result.out) != tmp.resolve():
            shutil.move(str(result.out), tmp)
        return {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, bool))}
    res = rd.model_stage(name, fn=fn)
    out = res.path
    if is_adapter_dir(out):
        return ModelSpec(path=base.path, adapter=str(out), dtype=base.dtype,
                         max_model_len=base.max_model_len, trust_remote_code=base.trust_remote_code)
    return _spec_at(out, base)


def _tiny(rd: RunDir, name: str, tiny: TinyModel, max_len: int) -> ModelSpec:
    """Build a tiny model and (optionally) pre-train it on synthetic problems."""
    from raysys.models.tiny import build_tiny_model

    def init_fn(tmp: Path) -> None:
        build_tiny_model(tmp, hidden=tiny.hidden, layers=tiny.layers, heads=tiny.heads,
                         vocab_size=tiny.vocab_size, seed=tiny.seed)
    init = rd.model_stage(f"{name}_init", fn=init_fn)
    spec = ModelSpec(path=str(init.path), max_model_len=max_len)
    if tiny.pretrain_problems == 0:
        return spec

    def corpus(out: Path) -> None:
        from raysys.data.synthetic import make_problems
        problems = make_problems(tiny.pretrain_problems, tiny.pretrain_seed, **tiny.pretrain_options)
        write_stage(out, pretrain_rows(problems, tiny.pretrain_max_demos, tiny.pretrain_seed,
                                       tiny.pretrain_min_demos), "sft")
    data = rd.stage(f"{name}_pretrain_data", kind="sft", phase="data", fn=corpus).path
    return _train(rd, f"{name}_pretrained", "sft", spec, data, tiny.pretrain)


def pretrain_rows(problems: list[dict[str, Any]], max_demos: int, seed: int,
                  min_demos: int = 0) -> list[dict[str, str]]:
    """SFT rows for pre-training a tiny base model: each problem's solution after its question,
    preceded by ``min_demos``..``max_demos`` other solved problems in the few-shot format
    (seeded). ``min_demos >= 1`` leaves the zero-shot format out of pre-training."""
    import random

    from raysys.prompts import build_prompt
    rng = random.Random(seed)
    rows = []
    for i, p in enumerate(problems):
        k = rng.randint(min(min_demos, max_demos), min(max_demos, len(problems) - 1))
        others = [j + (j >= i) for j in rng.sample(range(len(problems) - 1), k)]  # skip i itself
        demos = [(problems[j]["question"], problems[j]["solution"]) for j in others]
        prompt = build_prompt(p["question"], "few_shot", demos=demos) if demos else \
            build_prompt(p["question"], "zero_shot")
        rows.append({"prompt": prompt, "response": _response(p["solution"]), "source": p["id"]})
    return rows


def _base_model(cfg: W2SConfig, rd: RunDir, name: str, spec: ModelSpec) -> ModelSpec:
    if spec.path == "tiny":
        return _tiny(rd, name, getattr(cfg.tiny, name), spec.max_model_len)
    return spec


def _weak_model(cfg: W2SConfig, rd: RunDir) -> ModelSpec | None:
    if cfg.models.weak is None:
        return None
    base = _base_model(cfg, rd, "weak", cfg.models.weak)
    if not cfg.weak_sft.enabled or cfg.data.train_1 is None:
        return base
    train_1 = _problems(rd, "train_1", cfg.data.train_1)

    def gold_sft(out: Path) -> None:
        from raysys.prompts import build_prompt
        rows = [{"prompt": build_prompt(p["question"], "zero_shot"),
                 "response": _response(p["gold_solution"] or f"#### {p['gold_answer']}"),
                 "source": p["id"]} for p in train_1.to_pylist()]
        write_stage(out, rows, "sft")
    data = rd.stage("weak_sft_data", kind="sft", phase="data", fn=gold_sft).path
    return _train(rd, "weak", "sft", base, data, cfg.weak_sft.train)


# ------------------------------------------------------------------------------------------
# Evaluation and report
# ------------------------------------------------------------------------------------------


def _evaluate(cfg: W2SConfig, rd: RunDir, name: str, test: pa.Table, model: ModelSpec,
              template: str, demos: list[list[str]] | None = None,
              pool: OnDemandPool | None = None) -> list[dict[str, Any]]:
    """Greedy accuracy on the test split (and maj@k when configured) as a report row."""
    samples = _sample(cfg, rd, f"eval_{name}", test, model, template, demos=demos, pool=pool)
    greedy = samples.filter(pc.equal(samples.column("sample_idx"), 0))
    correct = sum(bool(c) for c in greedy.column("correct").to_pylist())
    row: dict[str, Any] = {"model": name, "correct": correct, "n": greedy.num_rows}
    if cfg.eval.maj_k > 1:
        from raysys.grading import is_equiv
        from raysys.recipes.w2s_pairs import majority
        k = cfg.eval.maj_k
        sampling = replace(cfg.greedy, n=k, temperature=cfg.eval.temperature, seed=cfg.seed)
        many = _sample(cfg, rd, f"eval_{name}_maj{k}", test, model, template, demos=demos,
                       sampling=sampling, pool=pool)
        gold = dict(zip(test.column("id").to_pylist(), test.column("gold_answer").to_pylist()))
        preds: dict[str, list[str]] = {}
        for r in many.to_pylist():
            preds.setdefault(r["problem_id"], []).append(r["pred"] or "")
        hits = sum(bool(gold[p]) and is_equiv(majority(v)[0], gold[p]) for p, v in preds.items())
        row.update(maj_k=k, maj_acc=hits / len(preds) if preds else None)
    return [row]


def _data_section(rd: RunDir) -> str:
    """A small table of what the data stages measured (label quality, filter, pair branches)."""
    lines = ["| stage | metrics |", "|---|---|"]
    for key, e in load_state(rd.path)["stages"].items():
        name = key.split("/")[-1]
        if name.startswith(("stage1_", "stage2_pairs", "weak_labels", "strong_icl")) and e.get("metrics"):
            m = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in e["metrics"].items()
                 if k in ("accuracy", "kept", "questions", "kept_frac", "weak_acc", "icl_acc",
                          "hybrid_acc", "weak_label_acc", "icl_label_acc", "pairs", "branches",
                          "chosen_acc")}
            if m and not key.endswith(("stage1_weak", "stage1_icl")):
                lines.append(f"| {key} | {m} |")
    return "\n".join(lines)
