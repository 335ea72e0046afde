"""The weak-to-strong report's "paper's direction" section: a claim is shown only when its
paired 95% CI excludes 0; the premise line compares the strong model's few-shot and zero-shot."""

from __future__ import annotations

from raysys.recipes.steps import EvalRow
from raysys.recipes.w2s_data import direction_section

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
