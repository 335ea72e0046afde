"""Critique-in-the-loop stages built from the recipe steps: seed data, critic data and its
held-out evaluation, critique and refinement stages on role groups, loop data, test-time rounds."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pyarrow as pa

from raysys.config import ModelSpec
from raysys.critique import (check_solution, corrupt_solution, critic_sft_rows, gold_critique,
                             parse_critique, refinement_sft_rows, select_refinements, steps_right)
from raysys.critique.selection import direct_sft_rows, feedback_sft_rows
from raysys.critique.stages import (critique_spec, critique_stats, refine_spec, refine_stats,
                                    solution_key)
from raysys.critique.test_time import RoundCost, round_table
from raysys.prompts import build_prompt, critique_prompt, default_stop, refine_prompt, refine_target
from raysys.recipes import steps
from raysys.recipes.critique_config import CritiqueConfig
from raysys.prompts import response_text
from raysys.recipes.steps import StepContext


def synthetic_rows(problems: pa.Table) -> list[dict[str, Any]]:
    """``problems`` rows in the synthetic generator's shape (id, question, solution, answer,
    steps: the per-step ground truth read back from the gold solution's lines)."""
    from raysys.critique.synthetic import gold_steps

    return [{"id": p["id"], "question": p["question"], "solution": p["gold_solution"] or "",
             "answer": p["gold_answer"], "steps": [list(x) for x in gold_steps(p["gold_solution"] or "")]}
            for p in problems.to_pylist()]


def direct_rows(problems: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, str]]:
    """``n`` question -> gold solution rows (zero-shot prompt), drawn without replacement."""
    pick = rng.sample(problems, min(n, len(problems)))
    return [{"prompt": build_prompt(p["question"], "zero_shot"),
             "response": response_text(p["solution"]), "source": f"direct:{p['id']}"} for p in pick]


def seed_data(cfg: CritiqueConfig, ctx: StepContext, problems: pa.Table) -> tuple[list, list]:
    """Iteration-0 rows: direct answers and refinement examples (the authors' ``_0_origin`` and
    ``_0_new``): from the synthetic task's gold critiques, or from ``data.seed_file``."""
    if cfg.data.seed_file is not None:
        from raysys.critique import import_critique_file
        imported = import_critique_file(cfg.data.seed_file)
        return [], [dict(r) for r in imported.sft]
    if cfg.data.seed_calc:
        direct, refine, _ = _calc_rows(cfg, problems)
        return direct, refine
    rng = random.Random(cfg.seed)
    rows = synthetic_rows(problems)
    refine = refinement_sft_rows(rows, [], rng, cfg.seed_sft.refine_mix, style=cfg.style,
                                 variant=cfg.prompt_variant)
    return direct_rows(rows, cfg.seed_sft.direct, rng), refine


def _calc_rows(cfg: CritiqueConfig, problems: pa.Table) -> tuple[list, list, list]:
    from raysys.critique.calc import calc_seed_rows

    return calc_seed_rows(problems.to_pylist(), random.Random(cfg.seed),
                          direct=cfg.seed_sft.direct, refine_mix=cfg.seed_sft.refine_mix,
                          critic_mix=cfg.critic_train.mix, variant=cfg.prompt_variant)


def critic_data(cfg: CritiqueConfig, problems: pa.Table,
                samples: pa.Table | None) -> list[dict[str, str]]:
    """Critic SFT rows: gold critiques of gold, corrupted and the actor's sampled solutions
    (synthetic task); the authors' critiques of ``data.seed_file`` (question + wrong solution
    -> critique); or ``data.seed_calc``'s critiques of GSM8K gold and slipped solutions."""
    if cfg.data.seed_file is not None:
        from raysys.critique import import_critique_file
        return [dict(r) for r in import_critique_file(cfg.data.seed_file).critic_sft]
    if cfg.data.seed_calc:
        return _calc_rows(cfg, problems)[2]
    rows = samples.to_pylist() if samples is not None else []
    return critic_sft_rows(synthetic_rows(problems), rows, random.Random(cfg.seed + 1),
                           cfg.critic_train.mix, style=cfg.style, variant=cfg.prompt_variant)


def critique(cfg: CritiqueConfig, ctx: StepContext, name: str, solutions: list[dict[str, Any]],
             questions: dict[str, str], critic: ModelSpec, *, iteration: int = 0,
             round_: int | None = None) -> list[dict[str, Any]]:
    """One greedy critique per solution row (problem_id, sample_idx, completion) by the critic
    role's group."""
    if not solutions:
        return []
    keys = [solution_key(s["problem_id"], s["sample_idx"]) for s in solutions]
    prompts = [critique_prompt(questions[s["problem_id"]], s["completion"], cfg.prompt_variant)
               for s in solutions]
    items = [{"problem_id": s["problem_id"], "sample_idx": s["sample_idx"]} for s in solutions]
    stop = "critique_short" if cfg.prompt_variant == "short" else "critique"
    table = steps.generate(ctx, name, items, keys=keys, prompts=prompts, spec=critique_spec(round_),
                           model=critic, sampling=replace(cfg.greedy, max_new_tokens=cfg.critique_tokens),
                           default_stop=tuple(default_stop(stop)), iteration=iteration,
                           group=ctx.group("critic", critic))
    return table.to_pylist()


def refine(cfg: CritiqueConfig, ctx: StepContext, name: str, pairs: list[dict[str, Any]],
           problems: dict[str, dict[str, Any]], actor: ModelSpec, *, n: int = 1,
           temperature: float = 0.0, iteration: int = 0, round_: int | None = None) -> list[dict]:
    """``n`` refinements of each (solution, critique) row by the actor, graded against gold."""
    if not pairs:
        return []
    keys = [solution_key(p["problem_id"], p["sample_idx"]) for p in pairs]
    prompts = [refine_prompt(problems[p["problem_id"]]["question"], p["completion"], p["critique"],
                             cfg.prompt_variant) for p in pairs]
    items = [{"problem_id": p["problem_id"], "sample_idx": p["sample_idx"], "critique": p["critique"],
              "verdict": p.get("verdict"), "steps": p.get("steps"),
              "first_wrong_step": p.get("first_wrong_step"),
              "gold_answer": problems[p["problem_id"]]["gold_answer"]} for p in pairs]
    sampling = replace(cfg.greedy, n=n, temperature=temperature, seed=cfg.seed + iteration)
    stop = "refine_short" if cfg.prompt_variant == "short" else "refine"
    table = steps.generate(ctx, name, items, keys=keys, prompts=prompts,
                           spec=refine_spec(ctx.grade_style, round_), model=actor, sampling=sampling,
                           default_stop=tuple(default_stop(stop)), iteration=iteration)
    return table.to_pylist()


def loop_data(cfg: CritiqueConfig, samples: pa.Table, refinements: list[dict[str, Any]],
              problems: dict[str, dict[str, Any]]) -> tuple[list, list, list, dict[str, Any]]:
    """This iteration's SFT rows, with stats: correct samples and kept refinements as direct
    answers, and the kept refinements as critique-conditioned examples (question + original
    solution + critique -> refinement, in the refinement prompt the actor answers: the
    authors' ``use_selfimprove_feedback`` data)."""
    correct = [{"prompt": r["prompt"], "response": response_text(r["completion"]),
                "source": f"sample:{r['problem_id']}"} for r in samples.to_pylist() if r["correct"]]
    by_key = {solution_key(r["problem_id"], r["sample_idx"]): r["completion"]
              for r in samples.to_pylist()}
    rows = [{**r, "original": by_key[solution_key(r["problem_id"], r["sample_idx"])],
             "gold_solution": problems[r["problem_id"]].get("gold_solution")} for r in refinements]
    questions = {pid: p["question"] for pid, p in problems.items()}
    sel = select_refinements(rows, cfg.loop.reserved_new_data,
                             questions=questions if cfg.loop.keep == "working" else None)
    refined = direct_sft_rows(sel.kept, questions, lambda q: build_prompt(q, "zero_shot"),
                              target=response_text)
    variant = cfg.prompt_variant
    feedback = feedback_sft_rows(sel.kept, questions,
                                 lambda q, sol, crit: refine_prompt(q, sol, crit, variant),
                                 target=lambda text: refine_target(text, variant))
    stats = {"correct_samples": len(correct), **{f"refine_{k}": v for k, v in sel.stats.items()},
             **refine_stats(refinements), **working_stats(samples.to_pylist(), sel.kept, problems)}
    return correct, refined, feedback, stats


def working_stats(samples: list[dict[str, Any]], kept: list[dict[str, Any]],
                  problems: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many correct samples and kept refinements also have every step right (synthetic
    task: checked against the gold derivation); ``{}`` where a problem has no per-step truth.
    A refinement is kept on its final answer alone, so these counts show how many of the rows
    it adds are right by luck."""
    def count(rows: list[dict[str, Any]], text: str) -> int | None:
        checks = [steps_right(problems[r["problem_id"]].get("gold_solution"), r[text]) for r in rows]
        return None if any(c is None for c in checks) else sum(checks)

    right = [r for r in samples if r["correct"]]
    n_samples, n_kept = count(right, "completion"), count(kept, "refined")
    if n_samples is None or n_kept is None:
        return {}
    return {"correct_samples_steps_right": n_samples, "refine_kept_steps_right": n_kept}


def diversity(samples: pa.Table) -> float:
    """Mean share of distinct solutions among a question's samples (1.0: all different)."""
    by_q: dict[str, list[str]] = {}
    for r in samples.to_pylist():
        by_q.setdefault(r["problem_id"], []).append(r["completion"].strip())
    return sum(len(set(v)) / len(v) for v in by_q.values()) / max(len(by_q), 1)


def critic_eval_rows(cfg: CritiqueConfig, problems: pa.Table, answers: pa.Table) -> list[dict]:
    """Held-out solutions to judge: the actor's own greedy answers and one-slip corruptions."""
    rng = random.Random(cfg.seed + 2)
    rows = synthetic_rows(problems)[:cfg.critic_train.heldout]
    own = {r["problem_id"]: r["completion"] for r in answers.to_pylist() if r["sample_idx"] == 0}
    out = [{"problem_id": p["id"], "sample_idx": 0, "completion": own[p["id"]]} for p in rows
           if p["id"] in own]
    out += [{"problem_id": p["id"], "sample_idx": 1, "completion": corrupt_solution(p, rng)}
            for p in rows]
    return out


def critic_scores(solutions: list[dict], critiques: list[dict], problems: pa.Table) -> dict[str, Any]:
    """Step-verdict, first-error-step and final-verdict agreement with the gold critiques."""
    gold = {p["id"]: p for p in synthetic_rows(problems)}
    by_key = {solution_key(c["problem_id"], c["sample_idx"]): c for c in critiques}
    steps_ok = steps_n = first_ok = final_ok = tp = fp = fn = 0
    for s in solutions:
        c = by_key[solution_key(s["problem_id"], s["sample_idx"])]
        truth = check_solution(gold[s["problem_id"]]["solution"], s["completion"])
        parsed = parse_critique(c["critique"])
        for i, v in enumerate(truth.verdicts):
            steps_n += 1
            steps_ok += i < len(parsed.step_verdicts) and parsed.step_verdicts[i] == v
        first_ok += parsed.first_wrong_step == truth.first_wrong_step
        said_wrong, is_wrong = parsed.verdict == "wrong", not truth.final_correct
        final_ok += said_wrong == is_wrong
        tp += said_wrong and is_wrong
        fp += said_wrong and not is_wrong
        fn += is_wrong and not said_wrong
    n = len(solutions)
    return {"solutions": n, "step_verdict_acc": steps_ok / max(steps_n, 1),
            "first_error_acc": first_ok / max(n, 1), "final_verdict_acc": final_ok / max(n, 1),
            "wrong_recall": tp / max(tp + fn, 1), "wrong_precision": tp / max(tp + fp, 1),
            **critique_stats(critiques)}


def gold_critiques(cfg: CritiqueConfig, solutions: list[dict[str, Any]],
                   problems: pa.Table) -> list[dict]:
    """Critiques of the synthetic task's per-step ground truth (what a perfect critic says)."""
    gold = {p["id"]: p for p in synthetic_rows(problems)}
    out = []
    for s in solutions:
        p = gold[s["problem_id"]]
        text = gold_critique(p["question"], p["solution"], s["completion"], cfg.style)
        parsed = parse_critique(text)
        out.append({"problem_id": s["problem_id"], "sample_idx": s["sample_idx"], "critique": text,
                    "verdict": parsed.verdict, "num_tokens": 0})
    return out


def test_time_rounds(cfg: CritiqueConfig, ctx: StepContext, gate: str, test: pa.Table,
                     greedy: pa.Table, actor: ModelSpec, critic: ModelSpec,
                     greedy_seconds: float = 0.0) -> tuple[list, dict]:
    """Critique -> refine rounds on the test split from the actor's greedy answers; returns the
    per-round accuracy/cost table and each question's answers per round. Gates: ``critic``
    (refine where the critic says wrong), ``oracle`` (refine only wrong answers, with the
    critic's critique), ``all`` (refine everything), ``gold`` (wrong answers with the synthetic
    task's true critique: the upper bound a perfect critic would give)."""
    problems = {p["id"]: p for p in test.to_pylist()}
    questions = {pid: p["question"] for pid, p in problems.items()}
    current = {r["problem_id"]: {**r, "sample_idx": 0} for r in greedy.to_pylist() if r["sample_idx"] == 0}
    answers = {pid: [[r["pred"] or ""]] for pid, r in current.items()}
    costs = [RoundCost(sum(int(r["num_tokens"] or 0) for r in current.values()), greedy_seconds)]
    for rnd in range(1, cfg.test_time.rounds + 1):
        todo = [r for r in current.values() if gate not in ("oracle", "gold") or not r["correct"]]
        if gate == "gold":     # diagnostic: the synthetic task's own critique (no critic call)
            crits = gold_critiques(cfg, todo, test)
        else:
            crits = critique(cfg, ctx, f"tt_{gate}_critique", todo, questions, critic,
                             iteration=rnd, round_=rnd)
        by_key = {solution_key(c["problem_id"], c["sample_idx"]): c for c in crits}
        pairs = [{**r, **by_key[solution_key(r["problem_id"], r["sample_idx"])]} for r in todo]
        if gate == "critic":
            pairs = [p for p in pairs if p["verdict"] == "wrong"]
        refs = refine(cfg, ctx, f"tt_{gate}_refine", pairs, problems, actor, iteration=rnd, round_=rnd)
        tokens = sum(int(r["num_tokens"] or 0) for r in crits + refs)
        costs.append(RoundCost(tokens, _stage_seconds(ctx, f"iter_{rnd}/tt_{gate}_")))
        for pid in answers:
            answers[pid].append([])
        for r in refs:
            answers[r["problem_id"]][rnd].append(r["refined_pred"] or "")
            current[r["problem_id"]] = {**current[r["problem_id"]], "completion": r["refined"],
                                        "pred": r["refined_pred"], "correct": r["refined_correct"]}
    golds = {pid: p["gold_answer"] for pid, p in problems.items()}
    return round_table(answers, golds, costs), answers


def _stage_seconds(ctx: StepContext, prefix: str) -> float:
    return float(sum(e.get("seconds") or 0.0 for k, e in ctx.rd.state["stages"].items()
                     if k.startswith(prefix)))


def streamed_iteration(cfg: CritiqueConfig, ctx: StepContext, t: int, train: pa.Table,
                       actor: ModelSpec, critic: ModelSpec) -> tuple[pa.Table, list, list]:
    """Samples -> critiques of the wrong ones -> refinements, streamed: each chunk of questions
    is critiqued as soon as its samples land and refined as soon as its critiques land, so the
    actor and critic groups work at the same time (``cluster.placement`` split or colocate).
    Writes the same three stages as the barrier path; returns (samples, critiques, refinements)."""
    from dataclasses import asdict

    lp = cfg.loop
    problems = {p["id"]: p for p in train.to_pylist()}
    actor_group, critic_group = ctx.group("sampler", actor), ctx.group("critic", critic)
    s_params = replace(cfg.greedy, n=lp.sample_num, temperature=lp.temperature,
                       seed=cfg.seed + t).params(default_stop("zero_shot"))
    c_stop = "critique_short" if cfg.prompt_variant == "short" else "critique"
    r_stop = "refine_short" if cfg.prompt_variant == "short" else "refine"
    c_params = replace(cfg.greedy, max_new_tokens=cfg.critique_tokens).params(default_stop(c_stop))
    r_params = replace(cfg.greedy, n=lp.sample_num, temperature=lp.temperature,
                       seed=cfg.seed + t).params(default_stop(r_stop))
    base = {"iteration": t, "actor": asdict(actor), "critic": asdict(critic), "streamed": True}
    S = steps.stream(ctx, "critique_samples", steps.samples_spec(ctx, "critique_samples", t),
                     s_params, {**base, "stage": "samples"}, iteration=t)
    C = steps.stream(ctx, "critiques", critique_spec(None), c_params,
                     {**base, "stage": "critiques"}, iteration=t)
    R = steps.stream(ctx, "refinements", refine_spec(ctx.grade_style, None), r_params,
                     {**base, "stage": "refinements"}, iteration=t)

    def critique_chunk(samples: list[dict]) -> list:
        wrong = [s for s in samples if not s["correct"]]
        keys = [solution_key(s["problem_id"], s["sample_idx"]) for s in wrong]
        prompts = [critique_prompt(problems[s["problem_id"]]["question"], s["completion"],
                                   cfg.prompt_variant) for s in wrong]
        items = [{"problem_id": s["problem_id"], "sample_idx": s["sample_idx"]} for s in wrong]
        chunk = C.submit(critic_group, items, keys, prompts, tag=wrong) if wrong else None
        return [chunk] if chunk else refine_chunk(wrong, C.rows_of(keys))

    def refine_chunk(solutions: list[dict], crits: list[dict]) -> list:
        by_key = {solution_key(c["problem_id"], c["sample_idx"]): c for c in crits}
        pairs = [{**s, **by_key[solution_key(s["problem_id"], s["sample_idx"])]} for s in solutions
                 if solution_key(s["problem_id"], s["sample_idx"]) in by_key]
        if not pairs:
            return []
        keys = [solution_key(p["problem_id"], p["sample_idx"]) for p in pairs]
        prompts = [refine_prompt(problems[p["problem_id"]]["question"], p["completion"],
                                 p["critique"], cfg.prompt_variant) for p in pairs]
        items = [{"problem_id": p["problem_id"], "sample_idx": p["sample_idx"],
                  "critique": p["critique"], "verdict": p.get("verdict"), "steps": p.get("steps"),
                  "first_wrong_step": p.get("first_wrong_step"),
                  "gold_answer": problems[p["problem_id"]]["gold_answer"]} for p in pairs]
        return [R.submit(actor_group, items, keys, prompts)]

    def on_landed(chunk: Any, rows: list[dict]) -> list:
        before = chunk.stream.rows_of([w["key"] for w in chunk.work])   # a resumed chunk's old rows
        if chunk.stream is S:
            return critique_chunk(rows + before)
        if chunk.stream is C:
            return refine_chunk(chunk.tag, rows + before)
        return []

    first: list = []
    ids = list(problems)
    size = max(1, cfg.loop.stream_chunk)
    with ctx.groups.together():     # both roles at once: one not fitting is an error, not a stop
        for i in range(0, len(ids), size):
            part = ids[i:i + size]
            prompts = [build_prompt(problems[p]["question"], "zero_shot") for p in part]
            items = [{"gold_answer": problems[p]["gold_answer"]} for p in part]
            chunk = S.submit(actor_group, items, part, prompts)
            first += [chunk] if chunk else critique_chunk(S.rows_of(part))
        steps.run_streams(first, on_landed)
    return (steps.close_stream(ctx, S, "critique_samples", iteration=t),
            steps.close_stream(ctx, C, "critiques", iteration=t).to_pylist(),
            steps.close_stream(ctx, R, "refinements", iteration=t).to_pylist())
