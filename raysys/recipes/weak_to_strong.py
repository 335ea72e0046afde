"""Weak-to-strong reasoning (Yang et al. 2024), top to bottom on Ray.

1. Weak model: SFT on ``train_1`` (question -> gold solution), or a given weak model.
2. Weak labels: the weak model's greedy zero-shot answers on ``train_2`` (or precomputed ones).
3. Strong ICL: the strong model's greedy few-shot answers on ``train_2`` (weak demonstrations).
4. Stage-I data: questions whose weak and ICL answers agree; hybrid / weak / ICL variants.
5. Stage I: SFT of the strong model on the chosen variant (optionally a second iteration).
6. Stage-II pairs: n samples of the stage-I model vs. the weak answer (``w2s_pairs``), on all
   of ``train_2`` or its first ``stage2.questions``.
7. Stage II: DPO or ORPO from the stage-I model.
8. Evaluation of weak, strong ICL, stage I and stage II on the test split -> ``report.md``
   (plus the strong model zero-shot: the bar stage I must clear).

Each model's test answers are sampled right after its train_2 answers, on the same sampler
group (one model load for both); the group serves the next model in place and stops before each
training stage. Every step is a stage of the run dir: re-running skips what is complete and
finishes what is not. Gold answers of ``train_2`` only report the accuracy of built data.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from raysys.config import ModelSpec
from raysys.recipes import model_steps as models
from raysys.recipes import steps
from raysys.recipes import w2s_data as w2s
from raysys.prompts import response_text
from raysys.recipes.steps import EvalRow, RecipeResult, StepContext
from raysys.recipes.record import Recipe
from raysys.recipes.w2s_config import W2SConfig
from raysys.recipes.w2s_pairs import Labeled, PairRule, build_stage1, build_stage2, labels_accuracy

log = logging.getLogger(__name__)


def _run(cfg: W2SConfig, ctx: StepContext) -> RecipeResult:
    train_2 = steps.problems(ctx, "train_2", cfg.data.train_2)
    test = steps.problems(ctx, "test", cfg.data.test)
    rows: list[EvalRow] = []

    # 1. the weak model (trained on train_1 gold solutions unless given as trained)
    weak = _weak_model(cfg, ctx)
    strong = models.base_model(ctx, "strong", cfg.models.strong, cfg.tiny.strong)

    # 2. weak labels on train_2 (and the weak model's test answers, on the same group)
    if cfg.data.weak_outputs is not None:
        weak_labels = w2s.weak_outputs_stage(ctx, str(cfg.data.weak_outputs), train_2)
    else:
        assert weak is not None
        weak_labels = steps.sample(ctx, "weak_labels", train_2, weak, "zero_shot", system=cfg.instruction)
    if weak is not None:
        rows.append(_evaluate(cfg, ctx, "weak", test, weak, "zero_shot"))

    # 3. strong ICL with weak demonstrations (the demo questions leave the ICL pool)
    demos = _icl_demos(cfg, ctx, train_2, weak_labels, 0)
    icl_demos = [[q, a] for q, a, _ in demos]
    icl_pool = steps.without_ids(train_2, {d[2] for d in demos})
    icl = steps.sample(ctx, "strong_icl", icl_pool, strong, "few_shot", demos=icl_demos,
                       system=cfg.instruction)
    rows.append(_evaluate(cfg, ctx, "strong_icl", test, strong, "few_shot", demos=icl_demos))
    if cfg.eval.strong_zero_shot:
        rows.append(_evaluate(cfg, ctx, "strong_zero_shot", test, strong, "zero_shot"))

    # 4-5. stage-I data and SFT of the strong model; iteration 2 relabels with the stage-I model
    stage1 = _stage1(cfg, ctx, train_2, weak_labels, icl, strong, iteration=0)
    for it in range(1, cfg.stage1.iterations):
        relabels = steps.sample(ctx, "weak_labels", train_2, stage1, "zero_shot", iteration=it,
                                system=cfg.instruction)
        re_demos = _icl_demos(cfg, ctx, train_2, relabels, it)
        re_icl = steps.sample(ctx, "strong_icl", steps.without_ids(train_2, {d[2] for d in re_demos}),
                              strong, "few_shot", demos=[[q, a] for q, a, _ in re_demos], iteration=it,
                              system=cfg.instruction)
        stage1 = _stage1(cfg, ctx, train_2, relabels, re_icl, strong, iteration=it)

    # 6-7. stage-II pairs from the stage-I model's samples, then DPO / ORPO
    stage2 = None
    if cfg.stage2.enabled:
        s2 = cfg.stage2
        s2_questions = train_2 if s2.questions is None else train_2.slice(0, s2.questions)
        s2_samples = steps.sample(ctx, "stage2_samples", s2_questions, stage1, "zero_shot",
                                  sampling=replace(cfg.greedy, n=s2.n, temperature=s2.temperature,
                                                   seed=s2.seed),
                                  system=cfg.instruction)
    rows.append(_evaluate(cfg, ctx, "stage1", test, stage1, "zero_shot"))
    if cfg.stage2.enabled:
        stage2 = _stage2(cfg, ctx, s2_questions, weak_labels, stage1, s2_samples)

    # 8. evaluation on the test split (the other models' rows were sampled above) and report
    if stage2 is not None:
        rows.append(_evaluate(cfg, ctx, "stage2", test, stage2, "zero_shot"))
    last = cfg.stage1.iterations - 1
    sections = {"The paper's direction": w2s.direction_section(
                    rows, w2s.stage_metrics(ctx, f"stage1_{cfg.stage1.variant}", last),
                    w2s.stage_metrics(ctx, "stage2_pairs", 0)),
                "Training data built from train_2": w2s.data_section(ctx.rd.state)}
    if cfg.stage2.enabled and stage2 is None:
        sections["Stage II"] = "No question met the stage-II criteria: no pairs, no stage-II model."
    return steps.finish(ctx, rows, sections)


def _evaluate(cfg: W2SConfig, ctx: StepContext, name: str, test: pa.Table, model: ModelSpec,
              template: str, demos: list[list[str]] | None = None) -> EvalRow:
    return steps.evaluate(ctx, name, test, model, template, demos=demos, maj_k=cfg.eval.maj_k,
                          temperature=cfg.eval.temperature, system=cfg.instruction)


def _icl_demos(cfg: W2SConfig, ctx: StepContext, train_2: pa.Table, weak_labels: pa.Table,
               iteration: int) -> list[tuple[str, str, str]]:
    """``icl.k`` (question, answer, problem_id) demonstrations: weak outputs, or gold from train_1."""
    if cfg.icl.demos_from == "weak":
        pool = w2s.weak_demo_pool(train_2, weak_labels)
    else:
        pool = w2s.gold_demo_pool(steps.problems(ctx, "train_1", cfg.data.train_1))
    return w2s.icl_demos(ctx, pool, cfg.icl.k, cfg.icl.seed + iteration, cfg.icl.demos_from)


def _write_sets(cfg: W2SConfig, ctx: StepContext, sets: dict[str, list[dict]], stats: dict,
                kind: str, prefix: str, iteration: int) -> Path:
    """Each variant as a data stage (the chosen one last), exported for LLaMA-Factory too."""
    from raysys.errors import StageError

    chosen = cfg.stage1.variant if kind == "sft" else "pairs"
    for name, rows in sorted(sets.items(), key=lambda kv: kv[0] == chosen):
        if not rows:
            raise StageError(f"{prefix}: no training rows were built ({stats}); the weak and strong "
                             "answers never meet the recipe's criteria on this data")

        def export(rows: list[dict], name: str = name) -> None:
            if cfg.export_llamafactory:
                from raysys.data.formats import export_llamafactory
                from raysys.data.schema import conform
                export_llamafactory({f"{prefix}_{name}_iter{iteration}": conform(rows, kind)},
                                    ctx.rd.path / "llamafactory", legacy_pairs=kind == "pairs")
        steps.data_stage(ctx, f"{prefix}_{name}", rows, kind, iteration=iteration, metrics=stats,
                         on_write=export)
    return ctx.rd.stage_dir(f"{prefix}_{chosen}", iteration)


def _stage1(cfg: W2SConfig, ctx: StepContext, train_2: pa.Table, weak_labels: pa.Table,
            icl: pa.Table, strong: ModelSpec, iteration: int) -> ModelSpec:
    from raysys.prompts import build_prompt

    questions = train_2.to_pylist()
    weak, strong_icl = w2s.labels(weak_labels), w2s.labels(icl)
    sets, stats = build_stage1(questions, weak, strong_icl,
                               lambda q: build_prompt(q, "zero_shot", system=cfg.instruction))
    stats["weak_label_acc"] = labels_accuracy(questions, weak)
    stats["icl_label_acc"] = labels_accuracy(questions, strong_icl)
    data = _write_sets(cfg, ctx, sets, stats, "sft", "stage1", iteration)
    return models.train(ctx, f"stage1_iter{iteration}", "sft", strong, data, cfg.stage1.train)


def _stage2(cfg: W2SConfig, ctx: StepContext, questions: pa.Table, weak_labels: pa.Table,
            stage1: ModelSpec, samples: pa.Table) -> ModelSpec | None:
    """Stage-II pairs and preference training; None when no question yields a pair."""
    from raysys.prompts import build_prompt

    s2 = cfg.stage2
    by_q: dict[str, list[Labeled]] = {}
    for r in samples.to_pylist():
        by_q.setdefault(r["problem_id"], []).append(Labeled(response_text(r["completion"]), r["pred"] or ""))
    rule = PairRule(s2.min_confidence, s2.high_confidence, cfg.pairs_per_question)
    pairs, stats = build_stage2(questions.to_pylist(), w2s.labels(weak_labels), by_q,
                                lambda q: build_prompt(q, "zero_shot", system=cfg.instruction),
                                rule=rule, seed=s2.seed)
    if not pairs:
        # Nothing to prefer: the stage-I model is left as is and the report says why.
        log.warning("stage II built no pairs (%s); skipping stage-II training", stats)
        ctx.rd.log_metrics("stage2_pairs", stats, skipped=True)
        return None
    data = _write_sets(cfg, ctx, {"pairs": pairs}, stats, "pairs", "stage2", 0)
    return models.train(ctx, "stage2", s2.method, stage1, data, s2.train)


def _weak_model(cfg: W2SConfig, ctx: StepContext) -> ModelSpec | None:
    if cfg.models.weak is None:
        return None
    base = models.base_model(ctx, "weak", cfg.models.weak, cfg.tiny.weak)
    if not cfg.weak_sft.enabled or cfg.data.train_1 is None:
        return base
    from raysys.prompts import build_prompt

    train_1 = steps.problems(ctx, "train_1", cfg.data.train_1)
    rows = [{"prompt": build_prompt(p["question"], "zero_shot", system=cfg.instruction),
             "response": response_text(p["gold_solution"] or f"#### {p['gold_answer']}"),
             "source": p["id"]} for p in train_1.to_pylist()]
    data = steps.data_stage(ctx, "weak_sft_data", rows, "sft")
    return models.train(ctx, "weak", "sft", base, data, cfg.weak_sft.train)


RECIPE = Recipe(name="w2s", aliases=("weak_to_strong",), title="Weak-to-strong", config=W2SConfig,
                body=_run, baseline="strong_icl", demo=("demo.yaml", "demo_quick.yaml"),
                real_demo=("real_w2s.yaml", "real_w2s_quick.yaml"), order=10)
