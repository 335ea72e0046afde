"""Critique-in-the-loop (Xi et al. 2024, MathCritique), top to bottom on Ray.

0. Seed SFT (iteration 0): the base actor learns direct answers and refinement from seed critique
   data (the synthetic task's gold critiques, or the authors' critique file).
1. Critic: a given model, or one trained here on gold critiques of gold, corrupted and the seed
   actor's own solutions; scored on held-out solutions (step verdicts, first wrong step).
2. For each iteration t: the current actor samples ``sample_num`` solutions per train question
   -> graded against gold -> the critic critiques the wrong ones -> the actor refines them ->
   correct refinements past the shortcut barrier, at most ``reserved_new_data`` per question ->
   the SFT set (original data, correct samples, refinements, by the authors' flags) -> the actor
   of iteration t, fine-tuned from the base. The same loop without the critic is the plain
   self-improvement baseline, side by side.
3. Test time: critique -> refine rounds on the final actor (critic-gated, oracle-gated or all),
   accuracy by the last answer, a majority over rounds and pass@rounds, with tokens spent.

Actor and critic are role groups (``cluster.placement``: alternate, split or colocate). Every
step is a stage of the run dir, so a killed run resumes inside any iteration.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pyarrow as pa

from raysys.config import ModelSpec
from raysys.critique import assemble_sft
from raysys.pipeline.stats import TRAINING_NOISE, paired_bootstrap
from raysys.recipes import critique_steps as cs
from raysys.recipes import model_steps as models
from raysys.recipes import steps
from raysys.recipes.critique_config import CritiqueConfig
from raysys.recipes.record import Recipe
from raysys.recipes.steps import EvalRow, RecipeResult, StepContext


def _run(cfg: CritiqueConfig, ctx: StepContext) -> RecipeResult:
    train = steps.problems(ctx, "train", cfg.data.train)
    test = steps.problems(ctx, "test", cfg.data.test)
    seed_problems = steps.problems(ctx, "seed", cfg.data.seed) if cfg.data.seed else train
    base = models.base_model(ctx, "actor", cfg.models.actor, cfg.tiny)
    sections: dict[str, str] = {}

    # 0. seed SFT: direct answers + refinement examples
    direct, refine_rows = cs.seed_data(cfg, ctx, seed_problems)
    seed_path = steps.data_stage(ctx, "seed_sft", direct + refine_rows, "sft",
                                 metrics={"direct": len(direct), "refine": len(refine_rows)})
    actor0 = models.train(ctx, "actor_iter0", "sft", base, seed_path, cfg.seed_sft.train)
    evals = {"iter0": steps.evaluate(ctx, "actor_iter0", test, actor0, "zero_shot",
                                     tags={"iteration": 0})}

    # 1. the critic (given, or trained on gold critiques), scored on held-out solutions
    critic = cfg.models.critic or _train_critic(cfg, ctx, seed_problems, base, actor0)
    sections["Critic on held-out solutions"] = _critic_section(cfg, ctx, test, actor0, critic, base)

    # 2. the loop, with and without the critic, each iteration from the base model
    branches = ["critique", "plain"] if cfg.loop.baseline and cfg.loop.use_critic else ["critique"]
    actors = {b: actor0 for b in branches}
    # each branch's loop data per iteration: later iterations train on it with loop.use_previous
    history: dict[str, dict[str, dict[int, list]]] = {b: {} for b in branches}
    per_iter: list[dict] = []
    for t in range(1, cfg.loop.iterations + 1):
        for b in branches:
            actors[b], stats = _iteration(cfg, ctx, t, b, train, base, actors[b], critic,
                                          direct, refine_rows, history[b])
            evals[f"{b}_iter{t}"] = steps.evaluate(ctx, f"{b}_iter{t}", test, actors[b], "zero_shot",
                                                   tags={"iteration": t, "branch": b})
            per_iter.append({"iteration": t, "branch": b, **stats})
    sections["Self-improvement per iteration"] = _loop_section(evals, per_iter, branches,
                                                               cfg.loop.critiques, cfg.loop.keep)

    # 3. test time: critique -> refine rounds on the final critique-in-the-loop actor
    final = actors["critique"]
    final_name = f"critique_iter{cfg.loop.iterations}"
    greedy = steps.sample(ctx, f"eval_{final_name}", test, final, "zero_shot")
    tt_rows, tt_tables = [], {}
    for gate in cfg.test_time.gates:
        table, answers = cs.test_time_rounds(cfg, ctx, gate, test, greedy, final, critic,
                                             ctx.rd.state["stages"].get(f"iter_0/eval_{final_name}",
                                                                        {}).get("seconds") or 0.0)
        sections[f"Test time, {gate}-gated critique -> refine"] = _rounds_section(table, answers, test)
        tt_tables[gate] = table
        last = table[-1]
        tt_rows.append(EvalRow(f"{final_name}+refine_{gate}_r{cfg.test_time.rounds}",
                               round(last["last"] * last["n"]), int(last["n"]),
                               outcomes=_round_outcomes(answers, test, "last"),
                               tags={"gate": gate, "rounds": cfg.test_time.rounds}))

    return steps.finish(ctx, list(evals.values()) + tt_rows, sections,
                        extra={"per_iteration": per_iter, "test_time": tt_tables})


def _train_critic(cfg: CritiqueConfig, ctx: StepContext, problems: pa.Table, base: ModelSpec,
                  actor0: ModelSpec) -> ModelSpec:
    n = cfg.critic_train.mix.get("sampled", 0)
    sampled = None       # the authors' file and seed_calc critique no sampled solutions
    if cfg.data.seed_file is None and not cfg.data.seed_calc:
        sampled = steps.sample(ctx, "critic_actor_samples", problems.slice(0, max(n, 1)), actor0,
                               "zero_shot", sampling=replace(cfg.greedy, temperature=0.8,
                                                            seed=cfg.seed))
    data = steps.data_stage(ctx, "critic_sft", cs.critic_data(cfg, problems, sampled), "sft")
    init = actor0 if cfg.critic_train.init == "actor" else base
    return models.train(ctx, "critic", "sft", init, data, cfg.critic_train.train)


def _iteration(cfg: CritiqueConfig, ctx: StepContext, t: int, branch: str, train: pa.Table,
               base: ModelSpec, actor: ModelSpec, critic: ModelSpec, direct: list,
               seed_refine: list, history: dict[str, dict[int, list]]) -> tuple[ModelSpec, dict]:
    """Sample -> grade -> critique the wrong ones -> refine -> select -> SFT (one iteration).
    ``history`` collects the branch's loop data per iteration (``loop.use_previous`` trains
    iteration t on iterations 1..t, as the authors' flag does)."""
    lp = cfg.loop
    problems = {p["id"]: p for p in train.to_pylist()}
    if branch == "critique" and lp.stream:
        samples, _, refinements = cs.streamed_iteration(cfg, ctx, t, train, actor, critic)
    else:
        samples, refinements = _sample_critique_refine(cfg, ctx, t, branch, train, problems,
                                                       actor, critic)
    correct, refined, feedback, stats = cs.loop_data(cfg, samples, refinements, problems)
    for key, rows_t in (("correct", correct), ("refined", refined), ("feedback", feedback)):
        history.setdefault(key, {})[t] = rows_t
    rows = loop_sft_rows(lp, t, branch, direct, seed_refine, history)
    data = steps.data_stage(ctx, f"{branch}_sft", rows, "sft", iteration=t, metrics=stats)
    start = base if lp.from_base else actor
    new = models.train(ctx, f"{branch}_actor_iter{t}", "sft", start, data, lp.train)
    return new, {**stats, "sft_rows": len(rows), "diversity": round(cs.diversity(samples), 4)}


def loop_sft_rows(lp: Any, t: int, branch: str, seed: list, seed_feedback: list,
                  history: dict[str, dict[int, list]]) -> list[dict]:
    """Iteration ``t``'s SFT set by the authors' flags (``lp``: the loop config): the seed data
    (``use_original``), then iteration t's (or with ``use_previous`` every iteration's 1..t)
    correct samples, kept refinements as direct answers (critique branch) and, with
    ``use_selfimprove_feedback``, as critique-conditioned examples (critique branch only: the
    plain branch has no critiques). ``history``: ``correct`` / ``refined`` / ``feedback`` rows
    by iteration."""
    critiqued = branch == "critique"
    return assemble_sft(t, use_original=lp.use_original, use_previous=lp.use_previous,
                        use_critic=critiqued,
                        use_selfimprove_feedback=critiqued and lp.use_selfimprove_feedback,
                        seed=seed, seed_feedback=seed_feedback, correct=history["correct"],
                        refined=history["refined"], feedback=history["feedback"])


def _sample_critique_refine(cfg: CritiqueConfig, ctx: StepContext, t: int, branch: str,
                            train: pa.Table, problems: dict, actor: ModelSpec,
                            critic: ModelSpec) -> tuple[pa.Table, list[dict]]:
    """The iteration's three stages with barriers: all samples, then critiques, then refinements."""
    lp = cfg.loop
    samples = steps.sample(ctx, f"{branch}_samples", train, actor, "zero_shot", iteration=t,
                           sampling=replace(cfg.greedy, n=lp.sample_num, temperature=lp.temperature,
                                            seed=cfg.seed + t))
    if branch != "critique":
        return samples, []
    sols = samples.to_pylist()
    todo = [s for s in sols if not s["correct"]] if lp.critique_gate == "gold" else sols
    if lp.critiques == "gold":      # diagnostic: what a perfect critic would have written
        crits = cs.gold_critiques(cfg, todo, train)
    else:
        crits = cs.critique(cfg, ctx, "critiques", todo,
                            {k: p["question"] for k, p in problems.items()}, critic, iteration=t)
    by_key = {(c["problem_id"], c["sample_idx"]): c for c in crits}
    pairs = [{**s, **by_key[(s["problem_id"], s["sample_idx"])]} for s in todo]
    if lp.critique_gate == "critic":
        pairs = [p for p in pairs if p["verdict"] == "wrong"]
    return samples, cs.refine(cfg, ctx, "refinements", pairs, problems, actor, n=lp.sample_num,
                              temperature=lp.temperature, iteration=t)


def _critic_section(cfg: CritiqueConfig, ctx: StepContext, test: pa.Table, actor0: ModelSpec,
                    critic: ModelSpec, base: ModelSpec) -> str:
    if cfg.data.seed_calc:
        return _calc_critic_section(cfg, ctx, test, critic, base)
    if cfg.data.train.name != "synthetic":
        return "Held-out step accuracy needs per-step ground truth (synthetic task only)."
    answers = steps.sample(ctx, "eval_actor_iter0", test, actor0, "zero_shot")
    sols = cs.critic_eval_rows(cfg, test, answers)
    crits = cs.critique(cfg, ctx, "critic_heldout", sols, {p["id"]: p["question"] for p in
                                                           test.to_pylist()}, critic)
    scores = cs.critic_scores(sols, crits, test)
    ctx.rd.log_metrics("critic_heldout", scores)
    return critic_table(scores)


def _calc_critic_section(cfg: CritiqueConfig, ctx: StepContext, test: pa.Table, critic: ModelSpec,
                         base: ModelSpec) -> str:
    """The critic against the untrained base model as critic, on test problems' worked
    solutions and their one-slip copies (data.seed_calc's truth), paired per solution."""
    import random

    from raysys.critique.calc import critic_scores, heldout_solutions

    sols = heldout_solutions(test.to_pylist(), cfg.critic_train.heldout, random.Random(cfg.seed + 2))
    if not sols:
        return "No test problem has a worked solution to slip: no held-out critic scores."
    questions = {p["id"]: p["question"] for p in test.to_pylist()}
    scores = {}
    for name, model in (("critic_heldout_base", base), ("critic_heldout", critic)):
        crits = cs.critique(cfg, ctx, name, sols, questions, model)
        scores[name] = critic_scores(sols, crits)
        ctx.rd.log_metrics(name, {k: v for k, v in scores[name].items() if k != "final_ok"})
    trained, untrained = scores["critic_heldout"], scores["critic_heldout_base"]
    keys = list(trained["final_ok"])
    diff = paired_bootstrap([untrained["final_ok"][k] for k in keys],
                            [trained["final_ok"][k] for k in keys])
    lines = [f"{len(sols)} held-out solutions: {len(sols) // 2} test problems' worked solutions "
             "and a copy of each with one slip in the line computing the answer (data.seed_calc's "
             "truth), critiqued by the critic after its SFT and by the untrained base model.", "",
             "| the critic's | after SFT | untrained base |", "|---|---|---|"]
    lines += [f"| {what} | {100 * trained[k]:.1f}% | {100 * untrained[k]:.1f}% |"
              for k, what in _CRITIC_ROWS]
    lines.append("| verdicts given (unknown: none parsable) | " + " | ".join(
        ", ".join(f"{v} {s[v]}" for v in ("wrong", "correct", "unknown")) for s in (trained, untrained))
        + " |")
    lines.append(f"\nfinal verdicts right, after SFT minus untrained (paired bootstrap, points, "
                 f"gained/lost): {diff.cell()}")
    return "\n".join(lines)


# what each held-out score measures, in the report's words (critique_steps.critic_scores)
_CRITIC_ROWS = (("step_verdict_acc", "step verdicts that match the per-step ground truth"),
                ("first_error_acc", "solutions whose first wrong step it names exactly (none when right)"),
                ("final_verdict_acc", "final verdicts (correct / wrong) that are right"),
                ("wrong_recall", "wrong solutions it calls wrong (recall)"),
                ("wrong_precision", "solutions it calls wrong that are wrong (precision)"))


def critic_table(scores: dict[str, Any]) -> str:
    """The critic's held-out scores as a readable table: percentages with what each measures,
    then how its verdicts split (a critic that gates refinement lives on recall and precision)."""
    n = scores.get("solutions", 0)
    lines = [f"{n} held-out solutions: the seed actor's own greedy answers and one-slip corruptions "
             "of gold solutions, judged against the synthetic task's per-step ground truth.", "",
             "| the critic's | value |", "|---|---|"]
    lines += [f"| {what} | {100 * scores[k]:.1f}% |" for k, what in _CRITIC_ROWS if k in scores]
    verdicts = ", ".join(f"{k} {scores[k]}" for k in ("wrong", "correct", "unknown") if k in scores)
    if verdicts:
        lines.append(f"| verdicts given (unknown: none parsable) | {verdicts} |")
    if scores.get("empty"):
        lines.append(f"| empty critiques | {scores['empty']} |")
    return "\n".join(lines)


def _loop_section(evals: dict[str, EvalRow], per_iter: list[dict], branches: list[str],
                  critiques: str = "critic", keep: str = "answer") -> str:
    """Accuracy per iteration and branch, hard questions solved (those the seed actor got
    wrong), data kept and diversity; critique minus plain as a paired bootstrap."""
    hard = [pid for pid, ok in evals["iter0"].outcomes.items() if not ok]
    lines = ["Critiques in the loop: the synthetic task's own (`loop.critiques: gold`, what a "
             "perfect critic would write), not the critic's.\n"] if critiques == "gold" else []
    lines += ["| iteration | branch | acc | hard solved | sft rows | refinements kept | diversity |",
              "|---|---|---|---|---|---|---|"]
    for s in per_iter:
        row = evals[f"{s['branch']}_iter{s['iteration']}"]
        solved = sum(row.outcomes.get(p, False) for p in hard) / max(len(hard), 1)
        lines.append(f"| {s['iteration']} | {s['branch']} | {100 * row.accuracy:.1f}% | "
                     f"{100 * solved:.1f}% of {len(hard)} | {s['sft_rows']} | "
                     f"{s.get('refine_kept', 0)} | {s['diversity']:.3f} |")
    working = [s for s in per_iter if s["branch"] == "critique" and "refine_kept_steps_right" in s]
    if working:
        rule = ("its final answer, the shortcut barrier and `loop.keep: working` (no false or "
                "ungrounded equation)" if keep == "working" else
                "its final answer (and the shortcut barrier)")
        lines.append(f"\nA refinement is kept on {rule}; checked step by step against the gold "
                     "derivation, the rows it adds were:")
        lines += [f"- iteration {s['iteration']}: {s['refine_kept_steps_right']} of "
                  f"{s.get('refine_kept', 0)} kept refinements have every step right (the "
                  f"iteration's correct samples: {s['correct_samples_steps_right']} of "
                  f"{s['correct_samples']})" for s in working]
    if len(branches) == 2:
        lines.append("\ncritique minus plain (paired bootstrap, points, gained/lost):")
        for t in sorted({s["iteration"] for s in per_iter}):
            d = evals[f"critique_iter{t}"].minus(evals[f"plain_iter{t}"])
            lines.append(f"- iteration {t}: {d.cell()}")
        lines.append(f"\n{TRAINING_NOISE}")
    return "\n".join(lines)


def _rounds_section(table: list[dict], answers: dict, test: pa.Table) -> str:
    from raysys.critique.test_time import format_round_table

    first = list(_round_outcomes(answers, test, "last", rounds=1).values())
    lines = [format_round_table(table), "", "minus single pass (paired bootstrap, points, gained/lost):"]
    for mode in ("last", "majority"):
        after = list(_round_outcomes(answers, test, mode).values())
        lines.append(f"- {mode}: {paired_bootstrap(first, after).cell()}")
    return "\n".join(lines)


def _round_outcomes(answers: dict, test: pa.Table, mode: str,
                    rounds: int | None = None) -> dict[str, bool]:
    """problem_id -> whether the ``mode`` vote (``last`` / ``majority``) over a problem's first
    ``rounds`` test-time answers (all by default) is right, in test order."""
    from raysys.critique.test_time import vote_rounds

    return {p["id"]: bool(vote_rounds(answers[p["id"]][:rounds], mode, p["gold_answer"]).correct)
            for p in test.to_pylist()}


RECIPE = Recipe(name="critique", title="Critique-in-the-loop", config=CritiqueConfig, body=_run,
                baseline="actor_iter0", panels=("iterations", "rounds"),
                demo=("critique_demo.yaml", "critique_demo_quick.yaml"),
                real_demo=("real_critique.yaml", "real_critique_quick.yaml"), order=30)
