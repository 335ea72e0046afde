"""A driver killed with SIGKILL (alone, not its process group: what `kill -9 PID` or an OOM
kill does) leaves no orphaned Ray processes: the local instance raysys started (GCS, raylet,
agents, workers, Ray Train workers) goes with it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_w2s_resume import RAYSYS, REPO, _env, _state

pytestmark = pytest.mark.slow


def _session_pids(session_logs: str) -> list[int]:
    """Processes whose command line names this Ray session (every Ray process carries its
    session dir in its arguments or is a worker started with it)."""
    session = str(Path(session_logs).parent)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if session in cmd:
            pids.append(int(entry.name))
    return pids


def test_killed_driver_leaves_no_ray_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(RAYSYS + ["demo", "--quick", "--run-dir", str(run_dir)], cwd=REPO,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        # wait until a training stage runs: Ray Train workers are the deepest process tree
        while time.monotonic() < deadline:
            stages = _state(run_dir)["stages"]
            if any(v.get("status") == "running" and k.startswith("models/")
                   and not k.endswith("_init") for k, v in stages.items()):
                break
            assert proc.poll() is None, f"driver exited ({proc.returncode}) early"
            time.sleep(0.5)
        time.sleep(3)
        session = (run_dir / "logs" / "ray_session.txt").read_text().strip()
        assert _session_pids(session), "no Ray process found for the run's session"
        os.kill(proc.pid, signal.SIGKILL)          # the driver alone
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _session_pids(session) and time.monotonic() < deadline:
            time.sleep(1)
        assert _session_pids(session) == [], "Ray processes outlived the killed driver"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
