"""RunDir: skip complete stages, finish partial ones, refuse a changed config, status text."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from raysys.data.io import read_stage, write_manifest, write_part
from raysys.errors import StageError
from raysys.pipeline import RunDir, config_diff, format_status, load_state, phase_timings

CFG = {"recipe": "weak_to_strong", "seed": 0, "train": {"lr": 1e-4, "lora": {"r": 8}}}


def _sft_stage(rows: list[dict], calls: list[int]):
    """A stage fn that writes one part per row, resuming from the parts already there."""

    def fn(out: Path) -> dict:
        calls.append(1)
        for i, r in enumerate(rows):
            if not (out / f"part-{i:05d}.parquet").exists():
                write_part(out, f"{i:05d}", [r], "sft")
        write_manifest(out, "sft", {"metrics": {"n": len(rows)}})
        return {"extra": 1.5}
    return fn


ROWS = [{"prompt": f"q{i}", "response": f"a{i}", "source": "t"} for i in range(3)]


def test_stage_runs_once_then_skips(tmp_path: Path) -> None:
    calls: list[int] = []
    run = RunDir(tmp_path, CFG)
    res = run.stage("s", fn=_sft_stage(ROWS, calls), kind="sft", phase="data")
    assert not res.skipped and res.rows == 3 and res.metrics == {"n": 3, "extra": 1.5}
    assert res.path == tmp_path / "iter_0" / "s"
    run.finish()
    again = RunDir(tmp_path, CFG)
    res2 = again.stage("s", fn=_sft_stage(ROWS, calls), kind="sft")
    assert res2.skipped and res2.rows == 3 and len(calls) == 1
    state = load_state(tmp_path)
    assert state["stages"]["iter_0/s"]["status"] == "complete"
    assert len(state["runs"]) == 2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["metrics"]["n"] == 3


def test_partial_stage_is_finished_without_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "iter_1" / "s"
    write_part(out, "00000", [ROWS[0]], "sft")            # a killed run left one part, no manifest
    run = RunDir(tmp_path, CFG)
    res = run.stage("s", iteration=1, fn=_sft_stage(ROWS, []), kind="sft")
    assert not res.skipped and res.rows == 3
    assert sorted(read_stage(res.path, "sft").column("prompt").to_pylist()) == ["q0", "q1", "q2"]


def test_stage_without_manifest_or_wrong_kind_is_error(tmp_path: Path) -> None:
    run = RunDir(tmp_path, CFG)
    with pytest.raises(StageError, match="without writing _MANIFEST"):
        run.stage("nothing", fn=lambda out: None)
    assert load_state(tmp_path)["stages"]["iter_0/nothing"]["status"] == "failed"
    with pytest.raises(StageError, match="expected 'pairs'"):
        run.stage("s", fn=_sft_stage(ROWS, []), kind="pairs")


def test_failed_stage_records_error_and_reraises(tmp_path: Path) -> None:
    run = RunDir(tmp_path, CFG)

    def boom(out: Path) -> None:
        raise RuntimeError("engine died")
    with pytest.raises(RuntimeError):
        run.stage("s", fn=boom)
    entry = load_state(tmp_path)["stages"]["iter_0/s"]
    assert entry["status"] == "failed" and "engine died" in entry["error"]


def test_changed_config_is_stage_error_unless_forced(tmp_path: Path) -> None:
    RunDir(tmp_path, CFG).finish()
    changed = {**CFG, "seed": 1, "train": {"lr": 1e-4, "lora": {"r": 16}}}
    with pytest.raises(StageError, match=r"seed, train\.lora\.r"):
        RunDir(tmp_path, changed)
    RunDir(tmp_path, {**CFG, "run_dir": "/elsewhere"})          # run_dir is not part of identity
    RunDir(tmp_path, {**CFG, "tiny_cache": "/shared"})          # nor where tiny models are kept
    RunDir(tmp_path, changed, force=True)
    assert "r: 16" in (tmp_path / "config.yaml").read_text()


def test_config_diff_reports_added_removed_and_changed() -> None:
    assert config_diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "d": 2}}) == ["a.c", "a.d"]
    assert config_diff({"x": [1, 2]}, {"x": [1, 2]}) == []
    assert config_diff({"x": 1, "run_dir": "a"}, {"x": 2, "run_dir": "b"}, ignore=("run_dir",)) == ["x"]


def test_model_stage_is_atomic_and_skipped_when_complete(tmp_path: Path) -> None:
    run = RunDir(tmp_path, CFG)

    def crash(out: Path) -> None:
        out.mkdir()
        (out / "model.safetensors").write_text("half")
        raise KeyboardInterrupt                            # killed mid-write
    with pytest.raises(KeyboardInterrupt):
        run.model_stage("m", fn=crash)
    assert not (tmp_path / "models" / "m").exists()

    def ok(out: Path) -> dict:
        out.mkdir()
        (out / "model.safetensors").write_text("whole")
        return {"loss": 0.5}
    res = run.model_stage("m", fn=ok)
    assert (res.path / "model.safetensors").read_text() == "whole" and not res.skipped
    assert not (tmp_path / "models" / ".m.tmp").exists()
    res2 = RunDir(tmp_path, CFG).model_stage("m", fn=crash)
    assert res2.skipped and res2.metrics == {"loss": 0.5}
    with pytest.raises(StageError, match="wrote nothing"):
        run.model_stage("empty", fn=lambda out: None)


def test_state_json_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path, CFG)
    run.stage("s", fn=_sft_stage(ROWS, []), kind="sft")
    before = (tmp_path / "state.json").read_text()
    real_replace = os.replace

    def fail_replace(src, dst):                           # the crash lands between write and rename
        if str(dst).endswith("state.json"):
            raise OSError("disk full")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError):
        run.stage("t", fn=_sft_stage(ROWS, []), kind="sft")
    monkeypatch.undo()
    assert (tmp_path / "state.json").read_text() == before     # old state whole, no temp left
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    json.loads(before)


def test_complete_on_disk_but_not_in_state_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "iter_0" / "s"
    write_part(out, "00000", ROWS, "sft")
    write_manifest(out, "sft")                           # killed before state.json was updated
    run = RunDir(tmp_path, CFG)
    assert run.stage("s", fn=lambda o: pytest.fail("must not run")).skipped
    assert load_state(tmp_path)["stages"]["iter_0/s"]["rows"] == 3


def test_status_and_phase_timings() -> None:
    state = {"stages": {
        "iter_0/weak_labels": {"status": "complete", "rows": 64, "seconds": 10.0, "phase": "sampling",
                               "metrics": {"accuracy": 0.25, "grading_s": 2.0}},
        "models/stage1": {"status": "running", "seconds": None, "phase": "training", "metrics": {}},
        "models/weak": {"status": "complete", "seconds": 30.0, "phase": "training", "metrics": {}},
    }, "runs": [{"start": "t0", "seconds": 50.0}]}
    text = format_status(state)
    lines = text.splitlines()
    assert lines[0].split() == ["stage", "status", "rows", "time", "metrics"]
    assert lines[1].split()[:4] == ["iter_0/weak_labels", "complete", "64", "10.0s"]
    assert "accuracy=0.25" in lines[1]
    assert lines[2].split()[:4] == ["models/stage1", "running", "-", "-"]
    t = phase_timings(state)
    assert t == {"sampling": 8.0, "grading": 2.0, "training": 30.0, "data": 0.0,
                 "orchestration": 10.0, "total": 50.0}


def test_load_state_on_non_run_dir(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="not a run directory"):
        load_state(tmp_path)


def test_report_has_accuracy_with_wilson_interval_and_timings(tmp_path: Path) -> None:
    from raysys.pipeline import render_report, write_report

    evals = [{"model": "weak", "correct": 5, "n": 20},
             {"model": "stage1", "correct": 0, "n": 10, "maj_k": 4, "maj_acc": 0.1}]
    state = {"stages": {"models/weak": {"seconds": 12.0, "phase": "training"}},
             "runs": [{"seconds": 20.0}]}
    text = render_report("W2S", evals, state, {"Data": "kept 3"})
    # Wilson 95%: 5/20 -> centre (0.25 + 1.96²/40) / (1 + 1.96²/20) ± ... = [11.2, 46.9]
    assert "| weak | 25.0% | [11.2, 46.9] | 20 | - |" in text
    assert "| stage1 | 0.0% | [0.0, 27.8] | 10 | 10.0% (k=4) |" in text
    assert "## Data\n\nkept 3" in text
    assert "| training | 12.0 |" in text and "| orchestration | 8.0 |" in text
    out = write_report(tmp_path, text)
    assert out.read_text() == text


def test_status_command_prints_each_stage(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raysys.cli.run import status

    run = RunDir(tmp_path, CFG)
    run.stage("weak_labels", fn=_sft_stage(ROWS, []), kind="sft", phase="sampling")
    run.finish()
    result = CliRunner().invoke(status, [str(tmp_path)])
    assert result.exit_code == 0, result.output
    row = [line for line in result.output.splitlines() if line.startswith("iter_0/weak_labels")]
    assert row and row[0].split()[1:3] == ["complete", "3"] and "n=3" in row[0]
    bad = CliRunner().invoke(status, [str(tmp_path / "nope")])
    assert bad.exit_code != 0 and "not a run directory" in str(bad.exception)


def test_a_relative_run_dir_hands_out_absolute_stage_paths(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Stage and model paths go to Ray actors and Ray Train workers in other working directories.
    monkeypatch.chdir(tmp_path)
    rd = RunDir("runs/demo", {"a": 1})
    assert rd.path == tmp_path / "runs" / "demo" and rd.path.is_absolute()
