"""LLM2 (Yang et al. 2024): a token-level process verifier (System 2) beside the LLM (System 1).

1. Token quality exploration: a teacher-forced pass of the LLM (and optionally an expert) over
   gold solutions; at each response position, plausible tokens other than the gold one are
   drawn as negatives -> the ``token_pairs`` table (or the authors' JSONL, imported and checked).
2. Verifier: the LLM's body + a scalar head, trained with the pairwise loss on those pairs
   (Ray Train, DeepSpeed); held-out pair accuracy against the LLM's own ranking of the pairs.
3. Verifier-guided decoding: candidate logits += beta * verifier score, batched with KV caches.
4. Evaluation: plain vs guided greedy (and a beta sweep), plain vs guided maj@k, best-of-k by the
   verifier's mean score; paired bootstrap differences -> ``report.md``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from raysys.config import EngineConfig, ModelSpec
from raysys.pipeline.stats import TRAINING_NOISE
from raysys.recipes import model_steps as models
from raysys.recipes import steps
from raysys.recipes.llm2_config import LLM2Config
from raysys.recipes.record import Recipe
from raysys.recipes.steps import EvalRow, RecipeResult, StepContext


def _run(cfg: LLM2Config, ctx: StepContext) -> RecipeResult:
    explore = steps.problems(ctx, "explore", cfg.data.explore)
    test = steps.problems(ctx, "test", cfg.data.test)
    llm = models.base_model(ctx, "llm", cfg.models.llm, cfg.tiny)
    sections: dict[str, str] = {}

    # 1-2. token pairs and the verifier (unless a trained verifier is given)
    verifier = cfg.models.verifier
    if verifier is None:
        train_pairs, heldout_pairs = _token_pairs(cfg, ctx, explore, llm)
        verifier = models.train(ctx, "verifier", "verifier", llm, train_pairs, cfg.verifier_train).path
        sections["Verifier on held-out token pairs"] = _pair_section(ctx, str(verifier), llm,
                                                                     heldout_pairs)

    # 3-4. plain vs guided decoding on the test split
    d = cfg.decode
    plain = steps.evaluate(ctx, "plain", test, llm, cfg.template, maj_k=d.maj_k,
                           temperature=d.temperature, tags={"beta": 0.0})
    guided = _guided(cfg, ctx, test, llm, str(verifier), d.beta, maj_k=d.maj_k)
    rows = [plain, guided] + [_guided(cfg, ctx, test, llm, str(verifier), b) for b in d.beta_sweep
                              if b != d.beta]
    if d.rerank and d.maj_k > 1:
        rows.append(_best_of_k(cfg, ctx, test, llm, str(verifier)))
    sections["Guided minus plain (paired bootstrap)"] = _differences(plain, guided, rows, d.maj_k)

    return steps.finish(ctx, rows, sections)


def _token_pairs(cfg: LLM2Config, ctx: StepContext, explore: pa.Table,
                 llm: ModelSpec) -> tuple[Path, list[dict]]:
    """Explore (or import) token pairs; the last ``data.heldout`` problems' pairs are held out."""
    if cfg.data.pairs_file is not None:
        rows = _imported_pairs(cfg, ctx, llm)
    else:
        rows = _explored_pairs(cfg, ctx, explore, llm)
    held_ids = set(explore.column("id").to_pylist()[-cfg.data.heldout:]) if cfg.data.heldout else set()
    train = [r for r in rows if r["samples"] and r.get("source") not in held_ids]
    held = [r for r in rows if r["samples"] and r.get("source") in held_ids]
    n_pairs = sum(len(r["samples"]) for r in train)
    path = steps.data_stage(ctx, "token_pairs_train", train, "token_pairs",
                            metrics={"sequences": len(train), "pairs": n_pairs,
                                     "heldout_sequences": len(held)})
    return path, held


def _explored_pairs(cfg: LLM2Config, ctx: StepContext, explore: pa.Table,
                    llm: ModelSpec) -> list[dict]:
    from dataclasses import asdict

    rows = explore.to_pylist()
    expert = cfg.models.expert
    return steps.map_rows(ctx, "token_pairs", rows, keys=[r["id"] for r in rows],
                          spec=steps.GenerationSpec("token_pairs", _no_rows, key=_pairs_key),
                          method="explore", chunk_rows=32, summarize=_pairs_summary,
                          group=ctx.group("explorer", llm, expert, cfg.explore, cfg.template),
                          request={"llm": asdict(llm), "expert": expert and asdict(expert),
                                   "explore": asdict(cfg.explore), "template": cfg.template}
                          ).to_pylist()


def _imported_pairs(cfg: LLM2Config, ctx: StepContext, llm: ModelSpec) -> list[dict]:
    """The authors' JSONL, every triple checked against the LLM's rendering of its messages."""
    from raysys.data.formats import import_llm2_jsonl
    from raysys.data.io import read_stage, write_stage
    from raysys.models.loading import load_tokenizer

    def fn(out: Path) -> None:
        table = import_llm2_jsonl(cfg.data.pairs_file, tokenizer=load_tokenizer(llm.path))
        write_stage(out, table, "token_pairs", extra={"metrics": _pairs_summary(table)})
    return read_stage(ctx.rd.stage("token_pairs", kind="token_pairs", phase="data", fn=fn).path,
                      "token_pairs").to_pylist()


def _no_rows(work: list, completions: list) -> list:   # exploration makes no text
    raise AssertionError("token pairs come from the explorer, not from generation")


def _pairs_key(row: dict) -> tuple[str, int]:
    return str(row["source"]), 0


def _pairs_summary(table: pa.Table) -> dict:
    samples = table.column("samples").to_pylist()
    return {"sequences": len(samples), "with_pairs": sum(bool(s) for s in samples),
            "pairs": sum(len(s) for s in samples)}


def _guided_engine(cfg: LLM2Config, verifier: str, beta: float) -> EngineConfig:
    d = cfg.decode
    return replace(cfg.engine, kind="guided", verifier=verifier, beta=beta, alpha=d.alpha,
                   top_k_candidates=d.top_k_candidates)


def _guided(cfg: LLM2Config, ctx: StepContext, test: pa.Table, llm: ModelSpec, verifier: str,
            beta: float, maj_k: int = 0) -> EvalRow:
    return steps.evaluate(ctx, f"guided_beta{beta:g}", test, llm, cfg.template, maj_k=maj_k,
                          temperature=cfg.decode.temperature,
                          engine=_guided_engine(cfg, verifier, beta), role="decoder",
                          tags={"beta": beta})


def _best_of_k(cfg: LLM2Config, ctx: StepContext, test: pa.Table, llm: ModelSpec,
               verifier: str) -> EvalRow:
    """Best of the plain maj@k samples by the verifier's mean token score."""
    k = cfg.decode.maj_k
    many = steps.sample(ctx, f"eval_plain_maj{k}", test, llm, cfg.template,
                        sampling=replace(cfg.greedy, n=k, temperature=cfg.decode.temperature,
                                         seed=cfg.seed))
    by_q: dict[str, list[dict]] = {}
    for r in many.to_pylist():
        by_q.setdefault(r["problem_id"], []).append(r)
    items = [(rs[0]["prompt"], [r["completion"] for r in rs]) for rs in by_q.values()]
    scores = ctx.group("decoder", llm, _guided_engine(cfg, verifier, cfg.decode.beta))().map(
        "rerank", items)
    outcomes = {pid: bool(rs[max(range(len(rs)), key=sc.__getitem__)]["correct"])
                for (pid, rs), sc in zip(by_q.items(), scores)}
    return EvalRow(f"best_of_{k}", sum(outcomes.values()), len(outcomes), outcomes=outcomes,
                   tags={"best_of": k})


def _pair_section(ctx: StepContext, verifier: str, llm: ModelSpec, held: list[dict]) -> str:
    from raysys.llm2.workers import pair_accuracy

    if not held:
        return "No held-out pairs (data.heldout: 0)."
    m = pair_accuracy(verifier, llm, held)
    ctx.rd.log_metrics("pair_accuracy", m)
    return (f"{m['pairs']} held-out pairs: verifier ranks gold above the negative for "
            f"{100 * m['verifier_pair_acc']:.1f}%, the LLM's own logits for "
            f"{100 * m['llm_pair_acc']:.1f}% (the verifier helps decoding only above that bar).")


def _differences(plain: EvalRow, guided: EvalRow, rows: list[EvalRow], k: int) -> str:
    lines = ["| comparison | difference, points [95% CI] (gained/lost) |", "|---|---|"]
    for r in rows[1:]:
        lines.append(f"| {r.model} − plain greedy | {r.minus(plain).cell()} |")
    if k > 1:
        # the rows' maj@k votes (steps.evaluate), paired like their greedy answers
        a_row = EvalRow("a", 0, 0, outcomes=plain.maj_outcomes)
        b_row = EvalRow("b", 0, 0, outcomes=guided.maj_outcomes)
        lines.append(f"| guided maj@{k} − plain maj@{k} | {b_row.minus(a_row).cell()} |")
    return "\n".join([*lines, "", TRAINING_NOISE])


RECIPE = Recipe(name="llm2", title="LLM2", config=LLM2Config, body=_run, baseline="plain",
                differences=False, panels=("beta", "k"),
                demo=("llm2_demo.yaml", "llm2_demo_quick.yaml"),
                real_demo=("real_llm2.yaml", "real_llm2_quick.yaml"), order=20)
