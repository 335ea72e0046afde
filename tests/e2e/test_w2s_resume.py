"""End to end: the quick weak-to-strong demo, and a driver killed mid-run that resumes.

One uninterrupted quick demo is the reference. A second run of the same recipe (its trained
base models given as model dirs, so pre-training is not paid twice) is killed during stage 3
(strong ICL sampling) and again during stage 5 (stage-I training); re-running finishes it and
its accuracy table and stage data equal the reference's (greedy decoding, fixed seeds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raysys.data.io import read_manifest, read_stage

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RAYSYS = [sys.executable, "-c", "from raysys.cli import main; main()"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)          # always a private local Ray instance
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(RAYSYS + args, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"stages": {}}


def _run_until_killed(args: list[str], run_dir: Path, stage: str, ready, timeout: float) -> None:
    """Start the driver in its own process group; SIGKILL the group once ``stage`` is running
    and ``ready(run_dir)`` holds (the local Ray processes it started die with it)."""
    proc = subprocess.Popen(RAYSYS + args, cwd=REPO, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            entry = _state(run_dir)["stages"].get(stage, {})
            if entry.get("status") == "running" and ready(run_dir):
                break
            assert proc.poll() is None, f"driver exited ({proc.returncode}) before {stage} ran"
            time.sleep(0.5)
        else:
            pytest.fail(f"{stage} never started within {timeout}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert _state(run_dir)["stages"][stage]["status"] == "running"   # really killed mid-stage


def _accuracy_section(run_dir: Path) -> str:
    """The report's accuracy table (the first table of its "Test accuracy" section)."""
    text = (run_dir / "report.md").read_text()
    section = text.split("## Test accuracy", 1)[1].split("\n## ", 1)[0].strip()
    return section.split("\n\n", 1)[0]


@pytest.fixture(scope="module")
def reference(quick_all: tuple[Path, str, str]) -> Path:
    """The weak-to-strong run of the quick demo of every recipe (tests/e2e/conftest.py)."""
    parent, stdout, _ = quick_all
    run_dir = parent / "w2s"
    assert "| stage1 |" in stdout and str(run_dir) in stdout
    return run_dir


def test_quick_demo_writes_a_complete_run(reference: Path) -> None:
    state = _state(reference)
    assert all(e["status"] == "complete" for e in state["stages"].values())
    for name in ("weak", "strong_icl", "strong_zero_shot", "stage1", "stage2"):
        m = read_manifest(reference / "iter_0" / f"eval_{name}")
        assert m is not None and m["rows"] == 32
    # the stage-I filter keeps exactly the questions whose weak and ICL answers agree
    hybrid = read_stage(reference / "iter_0" / "stage1_hybrid", "sft")
    weak_only = read_stage(reference / "iter_0" / "stage1_weak", "sft")
    assert hybrid.num_rows == 2 * weak_only.num_rows > 0
    # stage II samples n answers for only the first stage2.questions train_2 questions
    questions = read_stage(reference / "iter_0" / "problems_train_2", "problems").column("id").to_pylist()
    samples = read_stage(reference / "iter_0" / "stage2_samples", "samples")
    assert sorted(set(samples.column("problem_id").to_pylist())) == sorted(questions[:40])
    assert samples.num_rows == 40 * 6
    info = json.loads((reference / "llamafactory" / "dataset_info.json").read_text())
    assert info["stage2_pairs_iter0"]["ranking"] is True
    table = _accuracy_section(reference)
    assert [ln.split("|")[1].strip() for ln in table.splitlines() if ln.startswith("| ")][1:] == [
        "weak", "strong_icl", "strong_zero_shot", "stage1", "stage2"]
    status = _run(["status", str(reference)], timeout=60).stdout
    assert "models/stage1_iter0" in status and "running" not in status
    # the report states each of the paper's claims with its verdict, and the measured reasons
    direction = (reference / "report.md").read_text().split("## The paper's direction", 1)[1]
    kept = read_manifest(reference / "iter_0" / "stage1_hybrid")["metrics"]["kept"]
    assert "| stage I above strong ICL |" in direction and "| stage II above stage I |" in direction
    assert f"from the {kept} of 48 questions where weak and ICL answers agree" in direction


def test_killed_driver_resumes_to_the_same_tables(reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    args = ["run", str(REPO / "configs" / "demo_quick.yaml"), "--run-dir", str(run_dir),
            "--set", f"models.weak.path={reference / 'models' / 'weak'}",
            "--set", f"models.strong.path={reference / 'models' / 'strong_pretrained'}",
            "--set", "weak_sft.enabled=false"]

    # stage 3: killed while the strong model's ICL answers are being sampled
    _run_until_killed(args, run_dir, "iter_0/strong_icl", lambda d: True, timeout=400)
    # stage 5: killed while the stage-I model trains (the weak/ICL stages are complete by then)
    _run_until_killed(args, run_dir, "models/stage1_iter0",
                      lambda d: (d / "ray_train" / "stage1_iter0").exists(), timeout=400)
    assert not (run_dir / "models" / "stage1_iter0").exists()     # no half-written model
    _run(args, timeout=900)

    assert _accuracy_section(run_dir) == _accuracy_section(reference)
    cols = {"samples": ["problem_id", "sample_idx", "completion", "pred"],
            "sft": ["prompt", "response", "source"], "pairs": ["prompt", "chosen", "rejected"]}
    for stage, kind in (("weak_labels", "samples"), ("strong_icl", "samples"),
                        ("stage1_hybrid", "sft"), ("stage2_samples", "samples"), ("stage2_pairs", "pairs")):
        got = read_stage(run_dir / "iter_0" / stage, kind).select(cols[kind]).to_pylist()
        want = read_stage(reference / "iter_0" / stage, kind).select(cols[kind]).to_pylist()
        key = lambda r: json.dumps(r, sort_keys=True)                     # noqa: E731
        assert sorted(got, key=key) == sorted(want, key=key), stage      # no duplicates, same rows
    assert len(_state(run_dir)["runs"]) == 3
