"""Every branch of the weak-to-strong data builders, with hand-worked expectations."""

from __future__ import annotations

import json
import random

import pytest

from raysys.recipes.w2s_pairs import (Labeled, PairRule, agrees, build_pairs_for_question,
                                      build_stage1, build_stage2, labels_accuracy, majority)

pytest.importorskip("raysys.grading.metrics")


def prompt_of(q: str) -> str:
    return f"Question: {q}\nAnswer:"


def L(pred: str, tag: str = "") -> Labeled:
    return Labeled(response=f"resp[{tag or pred}] #### {pred}", pred=pred)


# -- stage I ---------------------------------------------------------------------------------


def test_agrees_uses_equivalence_and_rejects_empty() -> None:
    assert agrees("1,000", "1000", _eq())
    assert agrees("0.5", "1/2", _eq())
    assert not agrees("", "", _eq())            # empty weak answer never passes the filter
    assert not agrees("", "3", _eq())
    assert not agrees("3", "4", _eq())


def _eq():
    from raysys.grading import is_equiv
    return is_equiv


QS = [{"id": "a", "question": "qa", "gold_answer": "5"},
      {"id": "b", "question": "qb", "gold_answer": "7"},
      {"id": "c", "question": "qc", "gold_answer": "9"},
      {"id": "d", "question": "qd", "gold_answer": "1"}]


def test_build_stage1_keeps_agreeing_questions_and_writes_three_variants() -> None:
    weak = {"a": L("5", "wa"), "b": L("6", "wb"), "c": L("", "wc"), "d": L("2", "wd")}
    icl = {"a": L("5.0", "ia"), "b": L("7", "ib"), "c": L("", "ic"), "d": L("2", "id")}
    sets, stats = build_stage1(QS, weak, icl, prompt_of)
    # a agrees (5 == 5.0, correct); b disagrees; c both empty (dropped); d agrees on a wrong 2
    assert [r["source"] for r in sets["weak"]] == ["weak:a", "weak:d"]
    assert [r["source"] for r in sets["icl"]] == ["icl:a", "icl:d"]
    assert [r["source"] for r in sets["hybrid"]] == ["weak:a", "icl:a", "weak:d", "icl:d"]
    assert sets["hybrid"][1] == {"prompt": "Question: qa\nAnswer:", "response": "resp[ia] #### 5.0",
                                 "source": "icl:a"}
    assert stats == {"questions": 4, "kept": 2, "kept_frac": 0.5, "weak_acc": 0.5,
                     "icl_acc": 0.5, "hybrid_acc": 0.5}


def test_build_stage1_without_gold_reports_no_accuracy_and_missing_labels_skip() -> None:
    qs = [{"id": "a", "question": "qa"}, {"id": "z", "question": "qz"}]
    sets, stats = build_stage1(qs, {"a": L("3")}, {"a": L("3"), "z": L("3")}, prompt_of)
    assert len(sets["hybrid"]) == 2 and stats["weak_acc"] is None and stats["hybrid_acc"] is None


def test_labels_accuracy() -> None:
    labels = {"a": L("5"), "b": L("7"), "c": L(""), "d": L("2")}
    assert labels_accuracy(QS, labels) == 0.5                  # a, b right; c empty; d wrong
    assert labels_accuracy([{"id": "x", "question": "q"}], labels) is None


# -- majority --------------------------------------------------------------------------------


def test_majority_groups_equivalent_answers_and_ignores_empty() -> None:
    maj, conf, voters = majority(["3", "4", "3.0", "", "", "", "3"])
    assert maj in ("3", "3.0") and voters == [0, 2, 6] and conf == pytest.approx(3 / 7)
    assert majority([]) == ("", 0.0, [])
    maj, conf, voters = majority(["", ""])
    assert maj == "" and conf == 1.0 and voters == [0, 1]


# -- stage II: one test per branch -------------------------------------------------------------


def samples(*preds: str) -> list[Labeled]:
    return [L(p, f"s{i}") for i, p in enumerate(preds)]


def test_no_samples_branch() -> None:
    assert build_pairs_for_question("p", L("1"), [], random.Random(0)) == ([], "no_samples")


def test_low_confidence_branch() -> None:
    # majority 1 holds 5/10 = 0.5 < 0.6: skipped even though the weak answer agrees
    got = build_pairs_for_question("p", L("1"), samples(*"1111122334"), random.Random(0))
    assert got == ([], "low_confidence")


def test_empty_majority_branch() -> None:
    # an empty answer wins the vote only when every sample is empty
    got = build_pairs_for_question("p", L("1"), samples("", "", ""), random.Random(0))
    assert got == ([], "empty_majority")
    # 4 of 5 empty: the vote goes to "1", whose share 1/5 is then too low
    got = build_pairs_for_question("p", L("1"), samples("", "", "", "", "1"), random.Random(0))
    assert got == ([], "low_confidence")


def test_weak_agrees_branch_picks_random_non_majority_rejected() -> None:
    s = samples("7", "7", "7", "8", "7", "7", "9", "7")    # 6/8 = 0.75 >= 0.6, majority 7
    pairs, branch = build_pairs_for_question("P", L("7", "weak"), s, random.Random(3))
    assert branch == "weak_agrees" and len(pairs) == 1
    expected_idx = random.Random(3).sample([3, 6], 1)[0]
    assert pairs[0]["chosen"] == "resp[weak] #### 7"
    assert pairs[0]["rejected"] == s[expected_idx].response
    meta = json.loads(pairs[0]["meta"])
    assert meta["branch"] == "weak_agrees" and meta["sample_idx"] == expected_idx
    assert meta["confidence"] == pytest.approx(0.75)


def test_weak_agrees_but_no_negative_branch() -> None:
    got = build_pairs_for_question("P", L("7"), samples("7", "7.0", "7"), random.Random(0))
    assert got == ([], "no_negative")


def test_strong_overrules_branch_picks_random_majority_chosen() -> None:
    s = samples("4", "4", "4", "4", "5")                   # 4/5 = 0.8 >= 0.8, weak says 3
    pairs, branch = build_pairs_for_question("P", L("3", "weak"), s, random.Random(1))
    assert branch == "strong_overrules" and len(pairs) == 1
    idx = random.Random(1).sample([0, 1, 2, 3], 1)[0]
    assert pairs[0]["chosen"] == s[idx].response and pairs[0]["rejected"] == "resp[weak] #### 3"


def test_empty_weak_answer_counts_as_disagreement() -> None:
    pairs, branch = build_pairs_for_question("P", L("", "weak"), samples("4", "4", "4", "4", "4"),
                                             random.Random(0))
    assert branch == "strong_overrules" and pairs[0]["rejected"] == "resp[weak] #### "


def test_uncertain_branch() -> None:
    # 7/10 = 0.7: enough to keep, not enough to overrule the weak answer 3
    got = build_pairs_for_question("P", L("3"), samples(*"4444444556"), random.Random(0))
    assert got == ([], "uncertain")


def test_max_pairs_for_math_like_data() -> None:
    rule = PairRule(max_pairs=3)
    pairs, _ = build_pairs_for_question("P", L("7"), samples("7", "7", "7", "7", "7", "7", "8", "9"),
                                        random.Random(0), rule)
    assert sorted(json.loads(p["meta"])["sample_idx"] for p in pairs) == [6, 7]   # only 2 exist
    pairs, _ = build_pairs_for_question("P", L("1"), samples(*"44444"), random.Random(0), rule)
    assert len(pairs) == 3 and len({p["chosen"] for p in pairs}) == 3


def test_thresholds_come_from_the_rule() -> None:
    s = samples(*"4444444556")                                # 0.7
    assert build_pairs_for_question("P", L("3"), s, random.Random(0),
                                    PairRule(high_confidence=0.7))[1] == "strong_overrules"
    assert build_pairs_for_question("P", L("4"), s, random.Random(0),
                                    PairRule(min_confidence=0.75))[1] == "low_confidence"


def test_build_stage2_is_seeded_and_counts_branches() -> None:
    qs = [{"id": "a", "question": "qa", "gold_answer": "7"},
          {"id": "b", "question": "qb", "gold_answer": "4"},
          {"id": "c", "question": "qc", "gold_answer": "1"},
          {"id": "d", "question": "qd"}]
    weak = {"a": L("7"), "b": L("3"), "c": L("1")}
    smp = {"a": samples(*"7777777889"), "b": samples(*"4444444445"), "c": samples(*"1234512345")}
    pairs, stats = build_stage2(qs, weak, smp, prompt_of, seed=5)
    assert stats["branches"] == {"weak_agrees": 1, "strong_overrules": 1, "low_confidence": 1}
    assert stats["pairs"] == 2 and stats["chosen_acc"] == 1.0
    assert [p["prompt"] for p in pairs] == ["Question: qa\nAnswer:", "Question: qb\nAnswer:"]
    again, _ = build_stage2(qs, weak, smp, prompt_of, seed=5)
    assert again == pairs
