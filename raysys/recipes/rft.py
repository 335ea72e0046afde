"""Rejection-sampling fine-tuning (STaR, Zelikman et al. 2022; RFT, Yuan et al. 2023), top to
bottom on the shared steps.

1. The base model (given, or a tiny one pre-trained here) answers the test split: iteration 0.
2. For t = 1..N: the current model samples ``k`` answers per train problem (T > 0); the grader
   accepts the right ones (with ``models.verifier``, a verifier mean token score of at least
   ``loop.accept_score`` accepts instead of the gold answer); at most ``loop.keep`` distinct
   accepted answers per problem are the SFT set; the model of iteration t is fine-tuned on it
   from the base (STaR restarts each iteration) or from the last model; its test accuracy.
3. Report: accuracy per iteration, samples accepted and problems covered per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pyarrow as pa

from raysys.config import MAX_SAMPLES_PER_PROMPT, ConfigError, DatasetSpec, ModelSpec, check_int_range
from raysys.prompts import response_text
from raysys.recipes import model_steps as models
from raysys.recipes import steps
from raysys.recipes.config_base import RecipeConfig, RecipeData
from raysys.recipes.model_steps import TinyModel
from raysys.recipes.record import Recipe
from raysys.recipes.steps import RecipeResult, StepContext
from raysys.training.config import TrainConfig


@dataclass(kw_only=True)
class RFTData(RecipeData):
    train: DatasetSpec                   # the problems answers are sampled for (gold grades them)
    test: DatasetSpec


@dataclass
class RFTModels:
    base: ModelSpec                      # ``tiny``: built and pre-trained here
    verifier: str | None = None          # a trained verifier dir (LLM2's): it accepts, not gold


@dataclass
class RFTLoop:
    iterations: int = 3
    k: int = 8                           # samples per train problem
    temperature: float = 0.7
    keep: int = 4                        # distinct accepted answers kept per problem (RFT)
    accept_score: float = 0.0            # the verifier's mean token score that accepts
    from_base: bool = True               # each iteration fine-tunes the base (STaR)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, path: str) -> None:
        for name in ("iterations", "keep"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}: expected >= 1, got {getattr(self, name)}")
        check_int_range(self.k, f"{path}.k", 1, MAX_SAMPLES_PER_PROMPT, "samples per problem")
        if not 0 < self.temperature < float("inf"):
            raise ConfigError(f"{path}.temperature: expected a finite value > 0, got {self.temperature}")
        self.train.check_stage(f"{path}.train")


@dataclass(kw_only=True)
class RFTConfig(RecipeConfig):
    """``recipe: rft``: sample, keep what is accepted, fine-tune, repeat."""

    data: RFTData
    models: RFTModels
    tiny: TinyModel | None = None        # required when models.base.path is 'tiny'
    loop: RFTLoop = field(default_factory=RFTLoop)

    def check(self, path: str) -> None:
        if self.models.base.path == "tiny" and self.tiny is None:
            raise ConfigError("tiny: required when models.base.path is 'tiny'")


def _run(cfg: RFTConfig, ctx: StepContext) -> RecipeResult:
    train = steps.problems(ctx, "train", cfg.data.train)
    test = steps.problems(ctx, "test", cfg.data.test)
    base = models.base_model(ctx, "base", cfg.models.base, cfg.tiny)
    rows = [steps.evaluate(ctx, "base", test, base, "zero_shot", tags={"iteration": 0})]
    lp, model, per_iter = cfg.loop, base, []
    for t in range(1, lp.iterations + 1):
        sampling = replace(cfg.greedy, n=lp.k, temperature=lp.temperature, seed=cfg.seed + t)
        samples = steps.sample(ctx, "rft_samples", train, model, "zero_shot", sampling=sampling,
                               iteration=t)
        data = steps.data_stage(ctx, "rft_sft", lambda: _accepted(cfg, ctx, samples, model), "sft",
                                iteration=t, metrics=lambda kept: _stats(samples, kept))
        stats = steps.stage_metrics(ctx, "rft_sft", t) or {}
        per_iter.append({"iteration": t, **stats})
        if not stats.get("kept"):        # nothing accepted: the last model is the result
            break
        model = models.train(ctx, f"rft_iter{t}", "sft", base if lp.from_base else model, data,
                             lp.train)
        rows.append(steps.evaluate(ctx, f"rft_iter{t}", test, model, "zero_shot",
                                   tags={"iteration": t, "branch": "rft"}))
    sections = {"Rejection sampling per iteration": _section(rows, per_iter, cfg)}
    return steps.finish(ctx, rows, sections, extra={"per_iteration": per_iter})


def _accepted(cfg: RFTConfig, ctx: StepContext, samples: pa.Table, model: ModelSpec) -> list[dict]:
    """SFT rows of the accepted samples: per problem at most ``loop.keep`` distinct answers."""
    by_q: dict[str, list[dict]] = {}
    for r in samples.to_pylist():
        by_q.setdefault(r["problem_id"], []).append(r)
    if cfg.models.verifier is None:
        ok = [[bool(r["correct"]) for r in rs] for rs in by_q.values()]
    else:                                # the verifier's mean token score over each answer
        engine = replace(cfg.engine, kind="guided", verifier=cfg.models.verifier)
        scores = ctx.group("decoder", model, engine)().map(
            "rerank", [(rs[0]["prompt"], [r["completion"] for r in rs]) for rs in by_q.values()])
        ok = [[s >= cfg.loop.accept_score for s in sc] for sc in scores]
    out = []
    for (pid, rs), accept in zip(by_q.items(), ok):
        kept: list[str] = []
        for r, yes in zip(rs, accept):
            text = response_text(r["completion"])
            if yes and text.strip() not in kept and len(kept) < cfg.loop.keep:
                kept.append(text.strip())
                out.append({"prompt": r["prompt"], "response": text, "source": f"rft:{pid}"})
    return out


def _stats(samples: pa.Table, kept: list[dict]) -> dict:
    rows = samples.to_pylist()
    return {"samples": len(rows), "correct": sum(bool(r["correct"]) for r in rows),
            "problems": len({r["problem_id"] for r in rows}),
            "problems_solved": len({r["problem_id"] for r in rows if r["correct"]}),
            "kept": len(kept), "problems_kept": len({r["source"] for r in kept})}


def _section(rows: list, per_iter: list[dict], cfg: RFTConfig) -> str:
    judge = f"the verifier (score >= {cfg.loop.accept_score:g})" if cfg.models.verifier else "the grader"
    acc = {r.tags["iteration"]: r for r in rows}
    lines = [f"Answers accepted by {judge}, at most {cfg.loop.keep} distinct per problem; each "
             f"iteration fine-tunes {'the base' if cfg.loop.from_base else 'the last model'}.", "",
             "| iteration | test acc | samples right | problems solved | answers kept | "
             "problems kept |", "|---|---|---|---|---|---|",
             f"| 0 | {100 * acc[0].accuracy:.1f}% | | | | |"]
    for s in per_iter:
        t, row = s["iteration"], acc.get(s["iteration"])
        cell = f"{100 * row.accuracy:.1f}%" if row else "(not trained: nothing accepted)"
        lines.append(f"| {t} | {cell} | {s.get('correct', 0)} of {s.get('samples', 0)} | "
                     f"{s.get('problems_solved', 0)} of {s.get('problems', 0)} | "
                     f"{s.get('kept', 0)} | {s.get('problems_kept', 0)} |")
    return "\n".join(lines)


RECIPE = Recipe(name="rft", title="Rejection-sampling fine-tuning", config=RFTConfig, body=_run,
                baseline="base", panels=("iterations",), demo=("rft_demo.yaml", "rft_demo_quick.yaml"),
                order=40)
