"""The weak-to-strong recipe run in this process (no Ray) on tiny models: every stage of the
quick demo, shrunk (tests/recipes/conftest.py), its tables and report; a second run reruns
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysys.data.io import read_manifest, read_stage
from recipe_runs import TINY, synthetic, run_in_process, tiny_cache  # noqa: F401 (fixtures)

OVERRIDES = [synthetic("data.train_1", 96, 1), synthetic("data.train_2", 16, 2),
             synthetic("data.test", 8, 3), f"tiny.strong={TINY}", f"tiny.weak={TINY}",
             "weak_sft.train.max_steps=4", "stage1.train.max_steps=2", "stage2.n=4",
             "stage2.questions=12", "stage2.train.max_steps=2", "greedy.max_new_tokens=32"]


@pytest.fixture(scope="module")
def w2s_run(run_in_process, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    run_dir = tmp_path_factory.mktemp("w2s") / "run"
    return run_dir, run_in_process("demo_quick.yaml", run_dir, OVERRIDES)


def test_every_stage_and_the_report(w2s_run) -> None:
    run_dir, result = w2s_run
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"] and all(e["status"] == "complete" for e in state["stages"].values())
    rows = json.loads((run_dir / "result.json").read_text())
    names = [r["model"] for r in rows["evals"]]
    assert names[:4] == ["weak", "strong_icl", "strong_zero_shot", "stage1"]
    assert rows["method"] == "w2s" and rows["layout"]["baseline"] == "strong_icl"
    assert [r["model"] for r in rows["evals"] if r.get("baseline")] == ["strong_icl"]
    for r in rows["evals"]:
        assert r["n"] == 8 and len(r["outcomes"]) == 8 and sum(r["outcomes"].values()) == r["correct"]
        assert read_manifest(run_dir / "iter_0" / f"eval_{r['model']}")["rows"] == 8
    assert result.accuracy == {r["model"]: r["correct"] / 8 for r in rows["evals"]}
    # the stage-I filter keeps the questions whose weak and ICL answers agree: hybrid = both
    hybrid = read_stage(run_dir / "iter_0" / "stage1_hybrid", "sft")
    weak_only = read_stage(run_dir / "iter_0" / "stage1_weak", "sft")
    assert hybrid.num_rows == 2 * weak_only.num_rows > 0
    # stage II samples stage2.n answers for the first stage2.questions train_2 questions
    ids = read_stage(run_dir / "iter_0" / "problems_train_2", "problems").column("id").to_pylist()
    samples = read_stage(run_dir / "iter_0" / "stage2_samples", "samples")
    assert sorted(set(samples.column("problem_id").to_pylist())) == sorted(ids[:12])
    assert samples.num_rows == 12 * 4
    report = (run_dir / "report.md").read_text()
    assert "## The paper's direction" in report and "Paired differences against strong_icl" in report
    assert (run_dir / "figures" / "w2s.png").is_file()
    if "stage2" in names:
        assert read_manifest(run_dir / "iter_0" / "stage2_pairs")["rows"] > 0
    else:
        assert "No question met the stage-II criteria" in report


def test_instruction_heads_every_task_prompt_and_no_pretraining_one(w2s_run) -> None:
    """``instruction`` is the task's prompt format: every prompt the models and the stages'
    data see starts with it; the tiny models' pre-training never."""
    import yaml

    run_dir, _ = w2s_run
    instruction = yaml.safe_load((run_dir / "config.yaml").read_text())["instruction"]
    it = run_dir / "iter_0"
    for name, kind in (("weak_sft_data", "sft"), ("weak_labels", "samples"), ("strong_icl", "samples"),
                       ("eval_strong_zero_shot", "samples"), ("stage1_icl", "sft"),
                       ("stage2_samples", "samples")):
        prompts = read_stage(it / name, kind).column("prompt").to_pylist()
        assert prompts and all(p.startswith(instruction + "\n\nQuestion: ") for p in prompts), name
    # weak and strong share one tiny model's settings: pre-trained once, then copied from the
    # shared cache (so this run may have no pre-training data of its own)
    for data in it.glob("*_pretrain_data"):
        pretrain = read_stage(data, "sft").column("prompt").to_pylist()
        assert pretrain and not any(instruction in p for p in pretrain)
    from raysys.recipes.model_steps import pretrain_rows
    from raysys.data.synthetic import make_problems
    rows = pretrain_rows(make_problems(8, 1000, max_steps=1, min_steps=1), 2, 1000)
    assert rows and not any(instruction in r["prompt"] for r in rows)


def test_a_second_run_reruns_nothing(w2s_run, run_in_process) -> None:
    run_dir, first = w2s_run
    before = json.loads((run_dir / "state.json").read_text())
    again = run_in_process("demo_quick.yaml", run_dir, OVERRIDES)
    after = json.loads((run_dir / "state.json").read_text())
    assert {k: v["end"] for k, v in after["stages"].items()} == \
        {k: v["end"] for k, v in before["stages"].items()}
    assert len(after["runs"]) == len(before["runs"]) + 1
    assert again.accuracy == first.accuracy
