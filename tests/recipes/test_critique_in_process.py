"""The critique-in-the-loop recipe run in this process (no Ray) on a tiny actor: seed SFT,
critic training and held-out scores, two loop iterations with and without the critic
(``loop.use_previous`` on), test-time rounds per gate; the streamed iteration writes what the
barrier one did; a second run reruns nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raysys.data.io import read_stage
from run_tables import assert_streamed_iteration_equal, report_section
from recipe_runs import TINY, synthetic, run_in_process, tiny_cache  # noqa: F401 (fixtures)

OVERRIDES = [synthetic("data.train", 8, 11), synthetic("data.test", 8, 12),
             synthetic("data.seed", 40, 13), f"tiny={TINY}", "seed_sft.direct=20",
             "seed_sft.refine_mix={corrupted: 12, correct: 6}", "seed_sft.train.max_steps=2",
             "critic_train.mix={gold: 8, corrupted: 16, sampled: 8}", "critic_train.heldout=4",
             "critic_train.train.max_steps=2", "loop.iterations=2", "loop.use_previous=true",
             "loop.train.max_steps=2", "greedy.max_new_tokens=20", "critique_tokens=32"]


@pytest.fixture(scope="module")
def critique_run(run_in_process, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    run_dir = tmp_path_factory.mktemp("critique") / "run"
    return run_dir, run_in_process("critique_demo_quick.yaml", run_dir, OVERRIDES)


def test_every_stage_loop_and_test_time_rounds(critique_run) -> None:
    run_dir, _ = critique_run
    report = (run_dir / "report.md").read_text()
    loop = report_section(report, "Self-improvement per iteration")
    for t in (1, 2):
        assert f"| {t} | critique |" in loop and f"| {t} | plain |" in loop
    assert "critique minus plain" in loop and "not training noise" in loop
    for gate in ("critic", "oracle", "gold"):
        rounds = report_section(report, f"Test time, {gate}-gated critique -> refine")
        assert rounds.count("\n| 0 |") == 1 and rounds.count("\n| 1 |") == 1
    result = json.loads((run_dir / "result.json").read_text())
    for r in result["evals"]:
        assert len(r["outcomes"]) == r["n"] == 8 and sum(r["outcomes"].values()) == r["correct"]
    assert {r["model"]: r["tags"] for r in result["evals"][:3]} == {
        "actor_iter0": {"iteration": 0}, "critique_iter1": {"iteration": 1, "branch": "critique"},
        "plain_iter1": {"iteration": 1, "branch": "plain"}}
    assert set(result["extra"]["test_time"]) == {"critic", "oracle", "gold"}
    critic = report_section(report, "Critic on held-out solutions")
    solutions = int(critic.split(" held-out solutions")[0].split()[-1])
    verdicts = next(ln for ln in critic.splitlines() if ln.startswith("| verdicts given"))
    counts = {k: int(v) for k, v in (c.split() for c in verdicts.split(" | ")[1].strip(" |").split(", "))}
    assert sum(counts.values()) == solutions > 0          # one verdict (or none parsable) each
    refs = pq.read_table(run_dir / "iter_1" / "refinements").to_pylist()
    keys = [(r["problem_id"], r["sample_idx"], r["refine_idx"]) for r in refs]
    assert len(keys) == len(set(keys)) and all(r["refined_correct"] is not None for r in refs)
    sft = json.loads((run_dir / "iter_1" / "critique_sft" / "_MANIFEST.json").read_text())
    assert sft["metrics"]["refine_kept"] <= len({r["problem_id"] for r in refs})


def test_use_previous_trains_iteration_two_on_iteration_one_too(critique_run) -> None:
    run_dir, _ = critique_run
    for branch in ("critique", "plain"):
        first, second = ({(r["prompt"], r["response"], r["source"])
                          for r in read_stage(run_dir / f"iter_{t}" / f"{branch}_sft", "sft").to_pylist()}
                         for t in (1, 2))
        looped = {r for r in first if not r[2].startswith(("direct:", "refine:"))}   # not seed rows
        assert looped <= second, branch


def test_a_streamed_iteration_writes_what_the_barrier_iteration_wrote(
        critique_run, run_in_process, tmp_path: Path) -> None:
    """``loop.stream: true``: samples, critiques and refinements of iteration 1 streamed between
    the local actor and critic groups (one chunk: sampled rows depend on what is batched
    together); samples and critiques equal the barrier run's row for row, refinements answer
    the same critiques."""
    run_dir, _ = critique_run
    streamed_dir = tmp_path / "streamed"
    shutil.copytree(run_dir, streamed_dir)
    streamed = ("critique_samples", "critiques", "refinements")
    for name in streamed:
        shutil.rmtree(streamed_dir / "iter_1" / name)
    # one iteration and no test-time rounds: the later stages would hold other requests
    run_in_process("critique_demo_quick.yaml", streamed_dir,
                   OVERRIDES + ["loop.stream=true", "loop.iterations=1",
                                "test_time.rounds=0"], force=True)
    assert_streamed_iteration_equal(run_dir, streamed_dir, streamed)


def test_a_second_run_reruns_nothing(critique_run, run_in_process) -> None:
    run_dir, first = critique_run
    before = json.loads((run_dir / "state.json").read_text())["stages"]
    again = run_in_process("critique_demo_quick.yaml", run_dir, OVERRIDES)
    after = json.loads((run_dir / "state.json").read_text())["stages"]
    assert {k: v["end"] for k, v in after.items()} == {k: v["end"] for k, v in before.items()}
    assert again.accuracy == first.accuracy
