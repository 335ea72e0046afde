"""Sharded sampling on a real 3-node Ray cluster with the HF engine on the tiny model.

One stage directory is interrupted after its first part (1 replica), then resumed with 2
replicas on the two worker nodes; the tests below check the result against an in-process
engine (= an uninterrupted single-replica run), then re-use the sealed stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from raysys.config import ClusterConfig, EngineConfig, ModelSpec, SamplingConfig
from raysys.data.io import is_complete, read_manifest
from raysys.distributed.sampling import load_samples, sample_problems
from raysys.errors import StageError
from raysys.grading import grade

pytestmark = pytest.mark.slow   # 3 engine actors: 30-70 s on the shared 2-core box

MAX_NEW = 24
N = 2


class Interrupt(Exception):
    pass


def _run(problems: pa.Table, model_dir: Path, out: Path, *, replicas: int, n: int = N,
         on_part: Any = None) -> dict:
    return sample_problems(problems, model=ModelSpec(path=str(model_dir)), engine=EngineConfig(kind="hf"),
                           sampling=SamplingConfig(n=n, temperature=0.0, max_new_tokens=MAX_NEW),
                           # batch 1: the resumed run has more batches than replicas, so
                           # both replicas get work even when one engine starts much sooner
                           cluster=ClusterConfig(replicas=replicas, batch_size=1),
                           out_dir=out, model_name="tiny", iteration=1, on_part=on_part)


def _by_pair(table: pa.Table) -> dict[tuple[str, int], str]:
    return {(r["problem_id"], r["sample_idx"]): r["completion"] for r in table.to_pylist()}


@pytest.fixture(scope="module")
def resumed(ray_cluster: dict[str, str], varied_model_dir: Path, problems: pa.Table,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Interrupt a 1-replica run after its first part, then finish it with 2 replicas."""
    out = tmp_path_factory.mktemp("samples") / "s"

    def stop_after_first_part(part: Path) -> None:
        raise Interrupt(part)

    with pytest.raises(Interrupt):
        _run(problems, varied_model_dir, out, replicas=1, on_part=stop_after_first_part)
    complete_after_interrupt = is_complete(out)
    partial = load_samples(out)
    manifest = _run(problems, varied_model_dir, out, replicas=2)
    return {"out": out, "partial": partial, "manifest": manifest,
            "complete_after_interrupt": complete_after_interrupt}


def test_interrupted_run_is_partial_and_unsealed(resumed: dict[str, Any], problems: pa.Table) -> None:
    assert not resumed["complete_after_interrupt"]
    assert 0 < resumed["partial"].num_rows < problems.num_rows * N


def test_resume_generates_only_missing_rows_equal_to_uninterrupted(
        resumed: dict[str, Any], problems: pa.Table, greedy_reference: Any) -> None:
    reference = greedy_reference(MAX_NEW)
    assert len(set(reference.values())) == len(reference)     # prompt-dependent: a real check
    samples = load_samples(resumed["out"])
    ids = problems.column("id").to_pylist()
    manifest = resumed["manifest"]
    assert manifest["rows"] == samples.num_rows == len(ids) * N   # no duplicate on disk either
    assert manifest["metrics"]["rows_generated"] == len(ids) * N - resumed["partial"].num_rows
    assert _by_pair(samples) == {(pid, i): reference[pid] for pid in ids for i in range(N)}


def test_resumed_replicas_ran_on_both_worker_nodes(resumed: dict[str, Any],
                                                   ray_cluster: dict[str, str]) -> None:
    assert sorted(resumed["manifest"]["metrics"]["nodes"]) == sorted(ray_cluster.values())
    assert resumed["manifest"]["metrics"]["replicas"] == 2


def test_rows_are_graded_and_metrics_add_up(resumed: dict[str, Any], problems: pa.Table) -> None:
    samples = load_samples(resumed["out"])
    golds = dict(zip(problems.column("id").to_pylist(), problems.column("gold_answer").to_pylist()))
    for row in samples.to_pylist():
        assert (row["pred"], row["correct"]) == grade(row["completion"], golds[row["problem_id"]], "default")
        assert (row["model"], row["iteration"]) == ("tiny", 1)
    m = resumed["manifest"]["metrics"]
    new = samples.num_rows - resumed["partial"].num_rows
    assert m["tokens_generated"] > 0 and m["tokens_generated"] <= sum(samples.column("num_tokens").to_pylist())
    assert m["rows_generated"] == new
    firsts = [r["correct"] for r in samples.to_pylist() if r["sample_idx"] == 0]
    assert m["accuracy"] == sum(firsts) / len(firsts)
    assert set(m["wall_s"]) == {"prepare", "generate", "finalize"}


def test_sealed_stage_is_reused_and_reading_dedupes(resumed: dict[str, Any], varied_model_dir: Path,
                                                    problems: pa.Table) -> None:
    out = resumed["out"]
    parts = sorted(out.glob("part-*.parquet"))
    assert _run(problems, varied_model_dir, out, replicas=1) == read_manifest(out)
    assert sorted(out.glob("part-*.parquet")) == parts
    shutil.copy(parts[0], out / "part-zz-copy.parquet")
    try:
        assert load_samples(out).num_rows == problems.num_rows * N
    finally:
        (out / "part-zz-copy.parquet").unlink()


def test_changed_request_on_the_same_dir_is_refused(resumed: dict[str, Any], varied_model_dir: Path,
                                                    problems: pa.Table) -> None:
    with pytest.raises(StageError, match="different request"):
        _run(problems, varied_model_dir, resumed["out"], replicas=1, n=3)
