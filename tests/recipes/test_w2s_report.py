"""The weak-to-strong report's "paper's direction" section: a claim is shown only when its
paired 95% CI excludes 0; the premise line compares the strong model's few-shot and zero-shot."""

from __future__ import annotations

from raysys.recipes.steps import EvalRow
from raysys.recipes.w2s_data import data_section, direction_section

IDS = [f"p{i}" for i in range(10)]


def _row(name: str, right: set[int]) -> EvalRow:
    return EvalRow(name, len(right), len(IDS), outcomes={p: i in right for i, p in enumerate(IDS)})


def _claims(text: str) -> dict[str, str]:
    rows = [ln.split("|") for ln in text.splitlines() if ln.startswith("| stage")]
    return {r[1].strip(): r[3].strip() for r in rows}


def test_claims_shown_only_when_the_interval_excludes_zero() -> None:
    # stage I right on all 10, ICL on none: +100 [+100, +100]; stage II = stage I: 0 [0, 0]
    evals = [_row("strong_icl", set()), _row("stage1", set(range(10))), _row("stage2", set(range(10)))]
    text = direction_section(evals, None, None)
    assert _claims(text) == {"stage I above strong ICL": "yes",
                             "stage II above stage I": "no: the CI includes 0"}
    assert "+100.0 [+100.0, +100.0] (10/0)" in text
    assert "not training noise" in text             # the caveat comes with the claims


def test_a_reversed_claim_and_the_premise_and_data_lines() -> None:
    evals = [_row("strong_icl", set(range(10))), _row("strong_zero_shot", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}),
             _row("stage1", set())]
    s1 = {"kept": 149, "questions": 1000, "icl_acc": 0.691, "icl_label_acc": 0.47}
    s2 = {"pairs": 316, "chosen_acc": 0.516}
    text = direction_section(evals, s1, s2)
    assert _claims(text) == {"stage I above strong ICL": "no: reversed"}   # no stage-II row
    assert "zero-shot 100.0%, few-shot (strong ICL) 100.0%" in text
    assert "premise (latent ability that prompting only partly elicits) does not hold" in text
    assert "149 of 1000 questions where weak and ICL answers agree, 69.1% of them correct" in text
    assert "train_2: 47.0%" in text and "316 pairs, chosen answers 51.6% correct" in text


def test_premise_holds_when_few_shot_beats_zero_shot_beyond_noise() -> None:
    evals = [_row("strong_icl", set(range(8))), _row("strong_zero_shot", set())]
    text = direction_section(evals, None, None)
    assert "zero-shot 0.0%, few-shot (strong ICL) 80.0%" in text
    assert "the paper's premise holds" in text and _claims(text) == {}
    assert "not training noise" not in text         # no claim measured, no caveat


def test_data_section_one_readable_row_per_data_stage_in_recipe_order() -> None:
    s1 = {"kept": 50, "questions": 400, "kept_frac": 0.125, "icl_acc": 0.76, "weak_acc": 0.76,
          "hybrid_acc": 0.76, "icl_label_acc": 0.6061, "weak_label_acc": 0.1425}
    state = {"stages": {   # state.json's alphabetical order, an iteration-2 relabel, noise
        "iter_0/stage1_hybrid": {"metrics": s1}, "iter_0/stage1_icl": {"metrics": s1},
        "iter_0/stage2_pairs": {"metrics": {"pairs": 68, "chosen_acc": 0.8676,
                                            "branches": {"uncertain": 63, "low_confidence": 266}}},
        "iter_0/strong_icl": {"metrics": {"accuracy": 0.6055, "graded_problems": 398}},
        "iter_0/weak_labels": {"metrics": {"accuracy": 0.1425, "graded_problems": 400}},
        "iter_1/weak_labels": {"metrics": {"accuracy": 0.5, "graded_problems": 400}},
        "iter_0/eval_strong_icl": {"metrics": {"accuracy": 0.593}},
        "iter_0/stage2_samples": {"status": "running"}}}
    rows = [ln.split(" | ") for ln in data_section(state).splitlines()[2:]]
    assert [r[0].lstrip("| ") for r in rows] == ["iter_0/weak_labels", "iter_0/strong_icl",
                                                 "iter_0/stage1_hybrid", "iter_0/stage2_pairs",
                                                 "iter_1/weak_labels"]
    text = {r[0].lstrip("| "): r[1].rstrip(" |") for r in rows}
    assert text["iter_0/weak_labels"] == "weak model's answers: 14.2% right (400 questions)"
    assert text["iter_0/stage1_hybrid"] == (
        "agreement filter kept 50 of 400 questions (12.5%); the agreed answer is right on 76.0% of "
        "them (ICL answers on all questions: 60.6%, weak: 14.2%)")
    # pair rules by count, largest first, underscores as words
    assert text["iter_0/stage2_pairs"] == ("68 pairs, chosen answer right in 86.8%; questions by "
                                           "pair rule: low confidence 266, uncertain 63")
