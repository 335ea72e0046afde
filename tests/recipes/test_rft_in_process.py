"""The rejection-sampling fine-tuning recipe run in this process (no Ray) on a tiny model: each
iteration keeps only accepted answers (the grader's, or a verifier's scores when one is given),
at most ``loop.keep`` distinct per problem, and fine-tunes on them; its report and figure come
from the recipe's record; a second run reruns nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysys.data.io import read_stage
from recipe_runs import TINY, synthetic, run_in_process, tiny_cache  # noqa: F401 (fixtures)

OVERRIDES = [synthetic("data.train", 8, 41), synthetic("data.test", 8, 42), f"tiny={TINY}",
             "loop.iterations=2", "loop.k=3", "loop.keep=2", "loop.train.max_steps=2",
             "loop.train.micro_batch_size=2", "greedy.max_new_tokens=20"]


@pytest.fixture(scope="module")
def rft_run(run_in_process, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    run_dir = tmp_path_factory.mktemp("rft") / "run"
    return run_dir, run_in_process("rft_demo_quick.yaml", run_dir, OVERRIDES)


def _kept_by_problem(rows: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["source"].removeprefix("rft:"), []).append(r["response"])
    return out


def test_each_iteration_trains_on_the_right_answers_it_sampled(rft_run) -> None:
    from raysys.prompts import response_text

    run_dir, _ = rft_run
    result = json.loads((run_dir / "result.json").read_text())
    trained = [r["model"] for r in result["evals"]]
    assert trained[0] == "base" and result["evals"][0].get("baseline") is True
    for t in (1, 2):
        samples = read_stage(run_dir / f"iter_{t}" / "rft_samples", "samples").to_pylist()
        assert len(samples) == 8 * 3 and {r["sample_idx"] for r in samples} == {0, 1, 2}
        sft = read_stage(run_dir / f"iter_{t}" / "rft_sft", "sft").to_pylist()
        right = {(r["problem_id"], response_text(r["completion"])) for r in samples if r["correct"]}
        kept = _kept_by_problem(sft)
        assert {(pid, text) for pid, texts in kept.items() for text in texts} <= right
        assert all(len(texts) == len(set(texts)) <= 2 for texts in kept.values())
        # every problem with a right answer keeps min(keep, its distinct right answers)
        for pid in {p for p, _ in right}:
            assert len(kept[pid]) == min(2, len({x for p, x in right if p == pid}))
        if f"rft_iter{t}" in trained:
            assert (run_dir / "models" / f"rft_iter{t}").is_dir()
    # iteration 2 samples from the iteration-1 model (a different request than iteration 1's)
    first = json.loads((run_dir / "iter_1" / "rft_samples" / "_REQUEST.json").read_text())
    second = json.loads((run_dir / "iter_2" / "rft_samples" / "_REQUEST.json").read_text())
    if "rft_iter1" in trained:
        assert second["request"]["model"]["path"].endswith("models/rft_iter1")
    assert first["request"]["model"]["path"] != second["request"]["model"]["path"] or \
        "rft_iter1" not in trained


def test_report_and_figure_come_from_the_record(rft_run) -> None:
    run_dir, _ = rft_run
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# Rejection-sampling fine-tuning: run")
    assert "## Rejection sampling per iteration" in report and "| 0 |" in report
    assert "Paired differences against base" in report or len(
        json.loads((run_dir / "result.json").read_text())["evals"]) == 1
    side = json.loads((run_dir / "figures" / "rft.json").read_text())
    assert side["panels"][0] == "Greedy accuracy (95% CI)"
    result = json.loads((run_dir / "result.json").read_text())
    if len(result["evals"]) > 1:
        assert side["panels"] == ["Greedy accuracy (95% CI)", "Accuracy per iteration"]


def test_a_verifier_accepts_by_its_scores_not_by_the_gold_answer(
        run_in_process, rft_run, tmp_path: Path) -> None:
    """An (untrained) verifier with a threshold below every score accepts wrong answers too;
    above every score it accepts nothing, and no model is trained."""
    from raysys.models.verifier import TokenVerifier

    base_dir, _ = rft_run
    verifier = TokenVerifier.from_pretrained(str(base_dir / "models" / "base_pretrained"))
    vdir = verifier.save_pretrained(tmp_path / "verifier")
    low = run_in_process("rft_demo_quick.yaml", tmp_path / "low", OVERRIDES + [
        f"models.verifier={vdir}", "loop.iterations=1", "loop.accept_score=-1.0e9"])
    samples = read_stage(tmp_path / "low" / "iter_1" / "rft_samples", "samples").to_pylist()
    kept = _kept_by_problem(read_stage(tmp_path / "low" / "iter_1" / "rft_sft", "sft").to_pylist())
    assert set(kept) == {r["problem_id"] for r in samples}         # every problem keeps answers
    if not all(r["correct"] for r in samples):
        from raysys.prompts import response_text
        wrong = {(r["problem_id"], response_text(r["completion"])) for r in samples if not r["correct"]}
        assert wrong & {(p, x) for p, xs in kept.items() for x in xs}
    assert [r.model for r in low.evals] == ["base", "rft_iter1"]
    high = run_in_process("rft_demo_quick.yaml", tmp_path / "high", OVERRIDES + [
        f"models.verifier={vdir}", "loop.iterations=1", "loop.accept_score=1.0e9"])
    assert [r.model for r in high.evals] == ["base"]
    assert read_stage(tmp_path / "high" / "iter_1" / "rft_sft", "sft").num_rows == 0
    assert "(not trained: nothing accepted)" in (tmp_path / "high" / "report.md").read_text()


def test_a_second_run_reruns_nothing(rft_run, run_in_process) -> None:
    run_dir, first = rft_run
    before = json.loads((run_dir / "state.json").read_text())["stages"]
    again = run_in_process("rft_demo_quick.yaml", run_dir, OVERRIDES)
    after = json.loads((run_dir / "state.json").read_text())["stages"]
    assert {k: v["end"] for k, v in after.items()} == {k: v["end"] for k, v in before.items()}
    assert again.accuracy == first.accuracy
