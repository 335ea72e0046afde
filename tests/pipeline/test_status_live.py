"""`raysys status` tells a live run from one whose driver was killed: a stage left 'running'
by a dead driver reads 'interrupted', and the summary says re-running resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from raysys.pipeline import RunDir, format_status, load_state
from raysys.pipeline.report import driver_alive


def test_dead_driver_shows_interrupted_and_live_one_running(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = (f"from raysys.pipeline import RunDir; import os, time\n"
            f"rd = RunDir({str(run)!r}, {{}})\n"
            f"rd._record('iter_0/samples', status='running', phase='sampling')\n"
            f"os._exit(0)")                       # killed: no finish(), no end time
    subprocess.run([sys.executable, "-c", code], check=True)
    state = load_state(run)
    assert state["runs"][-1]["end"] is None and driver_alive(state["runs"][-1]) is False
    text = format_status(state)
    assert "iter_0/samples  interrupted" in text and "again to resume" in text

    rd = RunDir(run, {})                          # this process: alive
    rd._record("iter_0/samples", status="running")
    text = format_status(load_state(run))
    assert "iter_0/samples  running" in text and text.endswith("live")
    rd.finish()
    assert format_status(load_state(run)).endswith("stopped")


def test_state_without_pid_is_unknown_not_interrupted(tmp_path: Path) -> None:
    state = {"stages": {"iter_0/a": {"status": "running"}}, "runs": [{"start": "x", "end": None}]}
    text = format_status(json.loads(json.dumps(state)))
    assert "iter_0/a  running" in text and "state unknown" in text
