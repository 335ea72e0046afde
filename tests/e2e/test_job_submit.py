"""`ray job submit` of the quick demo to a local head started with token authentication on.

The head is started with `ray start --head --block` in its own process group so that stopping
it tears down exactly the cluster this test started (a plain `ray stop` would kill every Ray
instance on the machine, including other tests').
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture()
def token_auth_head(tmp_path):
    """A local Ray head with token auth, dashboard on 127.0.0.1; yields (env, dashboard url)."""
    short = Path(tempfile.mkdtemp(prefix="rsj", dir="/tmp"))   # Ray's socket paths must stay short
    token = short / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    # Every port this head listens on is a free one: Ray's defaults (e.g. the dashboard agent's
    # 52365) collide with any other Ray instance on the machine, and the job server then has
    # "no available agent".
    ports = {flag: _free_port() for flag in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port", "ray-client-server-port", "node-manager-port", "object-manager-port")}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={short}",
         "--object-store-memory=400000000", "--include-dashboard=true",
         *(f"--{flag}={port}" for flag, port in ports.items())],
        env=env, cwd=REPO, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if head.poll() is not None:
                pytest.fail(f"ray head exited: {(tmp_path / 'head.log').read_text()[-2000:]}")
            if _ray(env, "job", "list", "--address", url).returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail("the Ray job server did not come up in 120 s")
        yield env, url
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def test_submitting_without_the_token_is_refused(token_auth_head) -> None:
    env, url = token_auth_head
    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    no_token["HOME"] = tempfile.mkdtemp()           # no ~/.ray/auth_token to fall back on
    r = _ray(no_token, "job", "list", "--address", url)
    assert r.returncode != 0


def test_quick_demo_runs_as_a_ray_job(token_auth_head, tmp_path) -> None:
    env, url = token_auth_head
    run_dir = tmp_path / "run"
    submit = ["job", "submit", "--address", url, "--no-wait", "--working-dir", str(REPO),
              "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--",
              "python", "jobs/demo.py", "--quick", "--run-dir", str(run_dir)]
    for _ in range(30):   # the job server answers before its agent can take jobs
        r = _ray(env, *submit)
        if r.returncode == 0 or "No available agent" not in r.stderr:
            break
        time.sleep(4)
    assert r.returncode == 0, r.stderr[-3000:]
    job_id = next(w for line in r.stdout.splitlines() for w in line.replace("'", " ").split()
                  if w.startswith("raysubmit_"))
    deadline = time.time() + 900   # the quick demo: ~4 min on an idle 2-core box
    status = ""
    ended = [f"Job '{job_id}' {word}" for word in ("succeeded", "failed", "was stopped")]
    while time.time() < deadline:
        r = _ray(env, "job", "status", "--address", url, job_id)
        status = r.stdout + r.stderr            # the CLI logs the final state on stderr
        if any(e in status for e in ended):
            break
        time.sleep(5)
    logs = _ray(env, "job", "logs", "--address", url, job_id).stdout
    assert ended[0] in status, f"{status[-2000:]}\n--- job logs ---\n{logs[-4000:]}"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"] and all(s["status"] == "complete" for s in state["stages"].values())
    report = (run_dir / "report.md").read_text()
    assert "stage" in report.lower() and "weak" in report.lower()
