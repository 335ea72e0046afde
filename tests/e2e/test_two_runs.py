"""Two raysys runs on one machine at once (two experiments): each driver starts its own local
Ray instance (own ports, session and temp dirs), both finish, and their results equal what each
gives alone (greedy decoding, fixed seeds: the other run's load changes timing, not outputs).

An ``eval`` started while ``raysys train`` is inside its Ray Train stage: the training's local
instance runs without a dashboard, the eval's with one. Ray used to advertise 127.0.0.1:8265 as
the dashboard-less instance's State API, where the eval's dashboard (or any other instance's)
answered; Ray Train's PlacementGroupCleaner, asking there whether its controller was alive, was
told "no such actor" and removed the training's placement group ("A worker health check
failed", issue 28; ``raysys.distributed.ray_init.dashboard_init_kwargs``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from test_w2s_resume import RAYSYS, REPO, _env

pytestmark = pytest.mark.slow


# ~110 s on an idle 2-core machine: in `make test-extended` for CI's 45 minutes; the test below
# (an eval started inside a Ray Train stage) is the one that caught the placement-group bug.
@pytest.mark.extended
def test_two_quick_demos_at_once_both_complete(tmp_path: Path) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen(RAYSYS + ["demo", "--recipe", "llm2", "--quick", "--run-dir", str(r)],
                              cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
             for r in runs]
    outs = [p.communicate(timeout=1500) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "| plain |" in out
    # separate Ray sessions, each recorded in its own run's logs
    sessions = [(r / "logs" / "ray_session.txt").read_text().strip() for r in runs]
    assert sessions[0] != sessions[1]
    # identical work -> identical results: the concurrent run did not leak into this one
    for stage in ("token_pairs", "eval_plain", "eval_guided_beta0.25"):
        a, b = (sorted(map(str, pq.read_table(r / "iter_0" / stage).to_pylist())) for r in runs)
        assert a == b, stage
    assert (runs[0] / "report.md").read_text().split("## ")[1] == \
        (runs[1] / "report.md").read_text().split("## ")[1]


STEPS = 1500              # ~1-3 min of training on 2 cores: outlives the eval's Ray start-up


def _session_logs(pid: int) -> Path | None:
    """The logs dir of the local Ray session the driver with ``pid`` started (a session dir's
    name ends with its driver's pid), or None before it exists."""
    root = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
    found = sorted(root.glob(f"session_*_{pid}"))
    return found[-1] / "logs" if found else None


def _dashboard_serving(pid: int) -> bool:
    logs = _session_logs(pid)
    log = logs / "dashboard.log" if logs else None
    return bool(log and log.is_file() and "http server initialized" in log.read_text(errors="replace"))


def _last_step(metrics: Path) -> int:
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return json.loads(lines[-1])["step"] if lines else 0


def _wait(cond, what: str, procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                pytest.fail(f"exited {p.returncode} before {what}: {err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(0.2)


def test_eval_started_inside_a_ray_train_stage_both_complete(tiny_model_dir: Path,
                                                             tmp_path: Path) -> None:
    from raysys.data.synthetic import make_problems

    problems = make_problems(64, 0, min_steps=1, max_steps=2, max_operand=9, ops="+-")
    sft, test = tmp_path / "sft.jsonl", tmp_path / "test.jsonl"
    sft.write_text("".join(json.dumps({"prompt": p["question"] + "\n", "response": p["solution"]})
                           + "\n" for p in problems))
    test.write_text("".join(json.dumps({"question": p["question"], "answer": p["solution"]}) + "\n"
                            for p in problems[:24]))
    out, rt, ev_out = tmp_path / "trained", tmp_path / "rt", tmp_path / "eval"
    popen = {"cwd": REPO, "env": _env(), "stdout": subprocess.PIPE, "stderr": subprocess.PIPE,
             "text": True, "start_new_session": True}
    train = subprocess.Popen(RAYSYS + [
        "train", "--kind", "sft", "--model", str(tiny_model_dir), "--data", str(sft),
        "--out", str(out), "--workers", "2", "--zero", "0", "--lora-r", "0",
        "--max-steps", str(STEPS), "--run-dir", str(rt),
        "--set", "micro_batch_size=2", "--set", "max_len=96"], **popen)
    ev = None
    try:
        metrics = rt / "train-files" / "metrics.jsonl"
        _wait(lambda: _last_step(metrics) > 0, "a first training step", [train], 900)
        ev = subprocess.Popen(RAYSYS + [
            "eval", "--model", str(tiny_model_dir), "--data", f"gsm8k:{test}", "--engine", "hf",
            "--max-new-tokens", "16", "--out", str(ev_out)], **popen)
        pid = ev.pid
        _wait(lambda: _dashboard_serving(pid), "eval dashboard", [train, ev], 600)
        time.sleep(5)          # Ray Train's cleaner polls every second
        step = _last_step(metrics)
        assert train.poll() is None and step < STEPS, \
            "training ended before the eval's dashboard had served 5 s: raise STEPS"
        ev_stdout, ev_err = ev.communicate(timeout=900)
        tr_stdout, tr_err = train.communicate(timeout=1200)
    finally:
        for p in (train, ev):
            if p is not None and p.poll() is None:
                p.kill()
    assert ev.returncode == 0, ev_err[-3000:]
    assert train.returncode == 0, tr_err[-3000:]
    # the training ran every step and wrote its model
    assert f"done: {out.resolve()}" in tr_stdout
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert steps[-1]["step"] == STEPS and steps[-1]["loss"] < steps[0]["loss"]
    assert (out / "model.safetensors").is_file()
    # the eval graded every problem, one greedy completion each
    m = json.loads((ev_out / "metrics.json").read_text())
    assert m["problems"] == m["graded_problems"] == m["samples"] == 24
    rows = pq.read_table(ev_out / "samples").to_pylist()
    assert sorted(r["problem_id"] for r in rows) == sorted(f"gsm8k-test-{i}" for i in range(24))
    assert all(p["question"] in r["prompt"] for p, r in
               zip(problems, sorted(rows, key=lambda r: int(r["problem_id"].rsplit("-", 1)[1]))))
