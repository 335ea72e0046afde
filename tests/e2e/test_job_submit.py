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
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: every socket stays bound until all are drawn, since a port
    drawn twice makes a second Ray process fail to bind, and `--block` then stops the head."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ray(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@dataclass
class RayHead:
    """A running `ray start --head --block` process: its env, dashboard url and logs."""

    env: dict[str, str]
    url: str
    process: subprocess.Popen
    log: Path          # the head command's own output
    temp_dir: Path     # Ray's --temp-dir (session_latest/logs holds the dashboard's logs)

    def diagnostics(self) -> str:
        """The tails of the head's output, Ray's process-exit log and the dashboard's log."""
        logs = self.temp_dir / "session_latest" / "logs"
        parts = [f"head process: {'running' if self.process.poll() is None else 'exited'}"]
        for path in (self.log, logs / "ray_process_exit.log", logs / "dashboard.log"):
            text = path.read_text(errors="replace")[-1500:] if path.is_file() else "(none)"
            parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def token_auth_head(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray head with token auth, dashboard on 127.0.0.1; yields a :class:`RayHead`.
    One for the module: starting and stopping a head costs ~40 s."""
    tmp_path = tmp_path_factory.mktemp("ray_head")
    short = Path(tempfile.mkdtemp(prefix="rsj", dir="/tmp"))   # Ray's socket paths must stay short
    token = short / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    # Every port this head listens on is a free one: Ray's defaults (e.g. the dashboard agent's
    # 52365) collide with any other Ray instance on the machine, and the job server then has
    # "no available agent".
    flags = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port", "metrics-export-port", "ray-client-server-port",
             "node-manager-port", "object-manager-port")
    ports = dict(zip(flags, _free_ports(len(flags)), strict=True))
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--temp-dir={short}",
         "--object-store-memory=400000000", "--include-dashboard=true",
         *(f"--{flag}={port}" for flag, port in ports.items())],
        env=env, cwd=REPO, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    ray_head = RayHead(env, f"http://127.0.0.1:{ports['dashboard-port']}", head,
                       tmp_path / "head.log", short)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if head.poll() is not None:
                pytest.fail(f"ray head exited:\n{ray_head.diagnostics()}")
            if _ray(env, "job", "list", "--address", ray_head.url).returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail(f"the Ray job server did not come up in 120 s:\n{ray_head.diagnostics()}")
        yield ray_head
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


# Answers from a job server that may yet take the job: its agent is not registered yet, or the
# dashboard is not answering for a moment (a CI run once saw "connection refused" right after a
# `job list` had succeeded).
_NOT_READY = ("No available agent", "Connection refused", "Failed to connect to Ray")


def test_submitting_without_the_token_is_refused(token_auth_head: RayHead) -> None:
    env = token_auth_head.env
    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    no_token["HOME"] = tempfile.mkdtemp()           # no ~/.ray/auth_token to fall back on
    r = _ray(no_token, "job", "list", "--address", token_auth_head.url)
    assert r.returncode != 0
    assert _ray(env, "job", "list", "--address", token_auth_head.url).returncode == 0


def test_quick_demo_runs_as_a_ray_job(token_auth_head: RayHead, tmp_path: Path) -> None:
    env, url = token_auth_head.env, token_auth_head.url
    run_dir = tmp_path / "run"
    submit = ["job", "submit", "--address", url, "--no-wait", "--working-dir", str(REPO),
              "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--",
              "python", "jobs/demo.py", "--quick", "--run-dir", str(run_dir)]
    for _ in range(30):
        r = _ray(env, *submit)
        if (r.returncode == 0 or token_auth_head.process.poll() is not None
                or not any(s in r.stderr for s in _NOT_READY)):
            break
        time.sleep(4)
    assert r.returncode == 0, f"{r.stderr[-2000:]}\n{token_auth_head.diagnostics()}"
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
    assert ended[0] in status, (f"{status[-2000:]}\n--- job logs ---\n{logs[-4000:]}\n"
                                f"{token_auth_head.diagnostics()}")
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"] and all(s["status"] == "complete" for s in state["stages"].values())
    report = (run_dir / "report.md").read_text()
    assert "stage" in report.lower() and "weak" in report.lower()
    # The config keeps role groups alive through training (split) on 8 logical CPUs; this head
    # has 2, so the live sampler group (2 CPUs) made room for each training stage instead of
    # leaving it to wait for CPUs it held.
    driver_log = (run_dir / "logs" / "driver.log").read_text()
    assert "cluster.placement split: a training stage needs 1 CPU, 1 CPU short" in driver_log
