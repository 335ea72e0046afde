"""``loop.use_previous`` and ``loop.use_selfimprove_feedback`` shape the SFT set as the authors'
flags do (METHODS.md, "SFT assembly and training"), and the loop data carries the
critique-conditioned rows the second flag adds."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from raysys.recipes.critique import loop_sft_rows
from raysys.recipes.critique_config import LoopConfig


def _rows(tag: str, t: int) -> list[dict]:
    return [{"prompt": f"{tag}{t}", "response": "r", "source": f"{tag}{t}"}]


HISTORY = {k: {t: _rows(k, t) for t in (1, 2)} for k in ("correct", "refined", "feedback")}
SEED, SEED_FB = _rows("seed", 0), _rows("seedfb", 0)


def _sources(lp: LoopConfig, t: int, branch: str) -> list[str]:
    return [r["source"] for r in loop_sft_rows(lp, t, branch, SEED, SEED_FB, HISTORY)]


def test_defaults_train_iteration_t_on_its_own_data() -> None:
    lp = LoopConfig()
    assert _sources(lp, 2, "critique") == ["seed0", "seedfb0", "correct2", "refined2"]
    assert _sources(lp, 2, "plain") == ["seed0", "seedfb0", "correct2"]


def test_use_previous_adds_every_earlier_iteration() -> None:
    lp = LoopConfig(use_previous=True, use_original=False)
    assert _sources(lp, 2, "critique") == ["correct1", "refined1", "correct2", "refined2"]
    assert _sources(lp, 1, "critique") == ["correct1", "refined1"]
    assert _sources(lp, 2, "plain") == ["correct1", "correct2"]


def test_selfimprove_feedback_only_where_there_are_critiques() -> None:
    lp = LoopConfig(use_selfimprove_feedback=True, use_original=False)
    assert _sources(lp, 2, "critique") == ["correct2", "refined2", "feedback2"]
    assert _sources(lp, 2, "plain") == ["correct2"]
    both = LoopConfig(use_selfimprove_feedback=True, use_previous=True, use_original=False)
    assert _sources(both, 2, "critique") == ["correct1", "refined1", "feedback1",
                                             "correct2", "refined2", "feedback2"]


def test_loop_data_builds_critique_conditioned_rows_of_the_kept_refinements() -> None:
    from raysys.prompts import refine_prompt
    from raysys.recipes import load_run_config
    from raysys.recipes.critique_steps import loop_data

    cfg = load_run_config(Path(__file__).resolve().parents[2] / "configs" / "critique_demo_quick.yaml")
    gold = "2+3=5\n#### 5"
    problems = {"q": {"id": "q", "question": "What is 2+3?", "gold_answer": "5", "gold_solution": gold}}
    samples = pa.Table.from_pylist([
        {"problem_id": "q", "sample_idx": 0, "prompt": "P", "completion": " 2+2=4\n#### 4",
         "correct": False},
        {"problem_id": "q", "sample_idx": 1, "prompt": "P", "completion": " " + gold, "correct": True}])
    refinements = [{"problem_id": "q", "sample_idx": 0, "refine_idx": 0, "critique": "Step 1: wrong",
                    "verdict": "wrong", "refined": " " + gold, "refined_pred": "5",
                    "refined_correct": True, "num_tokens": 4}]
    correct, refined, feedback, stats = loop_data(cfg, samples, refinements, problems)
    assert [r["source"] for r in correct] == ["sample:q"] and len(refined) == 1
    assert feedback == [{"prompt": refine_prompt("What is 2+3?", " 2+2=4\n#### 4", "Step 1: wrong",
                                                 cfg.prompt_variant),
                         "response": " " + gold, "source": "feedback:q"}]
    assert stats["correct_samples"] == 1
