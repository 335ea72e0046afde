"""Ray clusters for tests, started with the `ray` CLI as a user starts one, on this machine.

`start_head` starts a head node with token authentication on and every port a free one (the
dashboard and job server on 127.0.0.1); `tests/e2e/test_job_submit.py` and the multi-node tests
share it, and `run_job` (`ray job submit` and wait).

`NoSharedFsCluster` adds worker nodes that share no run storage with the driver or each other,
as on a real cluster without NFS:

* the head runs in the host's mount namespace with ``--num-cpus=0``: the driver (a test's
  `raysys` process, or a `ray job submit` entrypoint, which Ray runs on the head) attaches to it
  like a laptop or a head that submits. Only zero-CPU work can land there: raysys's `fit` task
  (``num_cpus=0``, training/trainer.py), Ray Train's controller, the job supervisor.
* each worker node is ``unshare --mount --propagation private`` + ``mount -t tmpfs`` over
  ``root`` (the parent of the tests' run dirs and model cache) + ``exec ray start --block``, so
  what the driver writes under ``root`` is invisible to every worker, and what a worker writes
  there is invisible to the driver and to the other workers. Everything outside ``root`` (the
  repo, the venv, /tmp with Ray's session dirs, DeepSpeed's JIT-built op under
  ``~/.cache/torch_extensions``) stays shared: only the run storage is private.
* worker 0 is the training node: 1 CPU and ``{"raysys_train": 1}``; the others are role nodes:
  7 CPUs (default) and ``{"raysys_roles": 1}``. Training stages ask for ``raysys_train`` per
  Ray Train worker (`demo_sets`), so they can only run on worker 0; role replicas reserve
  2 CPUs each in the quick configs, which worker 0 does not have, so they run on a role node.
  8 CPUs in all is what the quick configs' ``cluster.num_cpus`` gives a single-node run: the
  CPU shares raysys derives from the cluster's total (``generation.udf_num_cpus``), hence the
  torch thread counts and the numbers, are the single-node demo's.

Each node's `ray start` leads its own process group (``start_new_session``), and Ray's worker
processes, which lead groups of their own, are found below it through /proc's parent links:
stopping the cluster, or `kill_node`, signals exactly this cluster's processes; a bare
``ray stop`` would kill every Ray instance on the machine, other tests' included. Nodes are
stopped without Ray's 30 s drain (``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0``).

On a loaded 2-core machine: start ~40-60 s (head ~20 s, workers ~20-30 s more), stop ~5 s,
`kill_node` + `start_worker` ~15-30 s; Ray marks a killed node DEAD ~18 s after the kill.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAYSYS = [sys.executable, "-c", "from raysys.cli import main; main()"]

TRAIN_RESOURCE = "raysys_train"
ROLES_RESOURCE = "raysys_roles"
# One more resource per worker node, "raysys_node_<i>": tells the nodes apart in Ray's node
# table (they all have this machine's IP) and lets a task be pinned to worker i by resource.
NODE_RESOURCE = "raysys_node_{}"


def free_ports(n: int) -> list[int]:
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


def ray_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``ray ARGS`` from this venv, with ``env``, output captured."""
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def tail(path: Path, chars: int = 1500) -> str:
    """The end of a log file, or ``(none)``."""
    return path.read_text(errors="replace")[-chars:] if path.is_file() else "(none)"


def stop_group(process: subprocess.Popen | None, timeout: float = 60) -> None:
    """Stop a `ray start --block` process and then its whole group. ``process`` must lead
    its own group (``start_new_session``).

    SIGTERM goes to the leader alone, which stops what it started in order (signalled
    together, the GCS could go first and a draining head wait 30 s for a GCS that is gone:
    "Failed to mark the local node as draining"). Whatever is left in the group afterwards
    (or after ``timeout``) gets SIGKILL."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def auth_env(short: Path) -> dict[str, str]:
    """This environment with Ray's token authentication on (a fresh token in ``short``), this
    venv's bin first on PATH, and no ``RAY_ADDRESS`` (a process joins only what it is told)."""
    token = short / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           # A stopped test node is not drained first: on SIGTERM, `ray start --block` marks its
           # node draining and waits up to 30 s for it (the head never finished: Ray Data's
           # detached coordinator actor lives there), for a cluster that is going away anyway.
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


def local_env() -> dict[str, str]:
    """A driver environment for a private local Ray instance (no cluster to join)."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_raysys(args: Sequence[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``raysys ARGS`` as a user runs it, in its own session (its Ray processes with it)."""
    return subprocess.run([*RAYSYS, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True)


@dataclass
class RayHead:
    """A running `ray start --head --block` process: its env, addresses and logs."""

    env: dict[str, str]
    url: str           # the dashboard / job server
    address: str       # the GCS, what `ray.init(address=...)` and `ray start --address` take
    process: subprocess.Popen
    log: Path          # the head command's own output
    temp_dir: Path     # Ray's --temp-dir (session_latest/logs holds the dashboard's logs)

    def diagnostics(self) -> str:
        """The tails of the head's output, Ray's process-exit log and the dashboard's log."""
        logs = self.temp_dir / "session_latest" / "logs"
        parts = [f"head process: {'running' if self.process.poll() is None else 'exited'}"]
        for path in (self.log, logs / "ray_process_exit.log", logs / "dashboard.log"):
            parts.append(f"--- {path.name} ---\n{tail(path)}")
        return "\n".join(parts)

    def stop(self) -> None:
        stop_group(self.process)


# Every port the head listens on is a free one: Ray's defaults (e.g. the dashboard agent's
# 52365) collide with any other Ray instance on the machine, and the job server then has
# "no available agent".
HEAD_PORT_FLAGS = ("port", "dashboard-port", "dashboard-agent-listen-port",
                   "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
                   "ray-client-server-port", "node-manager-port", "object-manager-port")


def start_head(log_dir: Path, *, num_cpus: int, object_store_memory: int,
               timeout_s: float = 120, attempts: int = 2) -> RayHead:
    """Start a head with token auth, dashboard on 127.0.0.1, in its own process group; return
    once its job server answers (`ray job list`). Fails the test with the head's logs if not.

    A head whose `ray start` exits is started again (fresh ports), up to ``attempts`` times:
    Ray gives its raylet a fixed 30 s to register, which a loaded 2-core machine can exceed.
    Ray 2.60 has no flag to bind the GCS and raylets to loopback only (they listen on every
    interface, and ``--node-ip-address=127.0.0.1`` is replaced by the machine's address), so
    what token authentication guards is not only local; the dashboard and job server do bind
    127.0.0.1."""
    short = Path(tempfile.mkdtemp(prefix="rsj", dir="/tmp"))   # Ray's socket paths must stay short
    env = auth_env(short)
    for attempt in range(1, attempts + 1):
        ports = dict(zip(HEAD_PORT_FLAGS, free_ports(len(HEAD_PORT_FLAGS)), strict=True))
        log = log_dir / ("head.log" if attempt == 1 else f"head.{attempt}.log")
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={num_cpus}",
             "--dashboard-host=127.0.0.1", f"--temp-dir={short}",
             f"--object-store-memory={object_store_memory}", "--include-dashboard=true",
             *(f"--{flag}={port}" for flag, port in ports.items())],
            env=env, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        ray_head = RayHead(env, f"http://127.0.0.1:{ports['dashboard-port']}",
                           f"127.0.0.1:{ports['port']}", head, log, short)
        deadline = time.time() + timeout_s
        while time.time() < deadline and head.poll() is None:
            if ray_cli(env, "job", "list", "--address", ray_head.url).returncode == 0:
                return ray_head
            time.sleep(2)
        if head.poll() is None:
            ray_head.stop()
            pytest.fail(f"the Ray job server did not come up in {timeout_s:.0f} s:\n"
                        f"{ray_head.diagnostics()}")
        stop_group(head)                    # whatever it started before it gave up
    pytest.fail(f"ray head exited {attempts} times while starting:\n{ray_head.diagnostics()}")


# Answers from a job server that may yet take the job: its agent is not registered yet, or the
# dashboard is not answering for a moment (a CI run once saw "connection refused" right after a
# `job list` had succeeded).
NOT_READY = ("No available agent", "Connection refused", "Failed to connect to Ray")


@dataclass
class JobOutcome:
    """A finished (or timed-out) Ray job: its id, the last `ray job status` output, its logs."""

    job_id: str
    status: str
    logs: str

    @property
    def succeeded(self) -> bool:
        return f"Job '{self.job_id}' succeeded" in self.status

    def explain(self, head: RayHead) -> str:
        return (f"{self.status[-2000:]}\n--- job logs ---\n{self.logs[-4000:]}\n"
                f"{head.diagnostics()}")


def run_job(head: RayHead, entrypoint: Sequence[str], *, timeout_s: float) -> JobOutcome:
    """`ray job submit` ``entrypoint`` with this repo as its working dir and
    cluster/runtime_env.yaml (as the README says), then wait until it ends or ``timeout_s``."""
    env, url = head.env, head.url
    submit = ["job", "submit", "--address", url, "--no-wait", "--working-dir", str(REPO),
              "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--", *entrypoint]
    for _ in range(30):
        r = ray_cli(env, *submit)
        if (r.returncode == 0 or head.process.poll() is not None
                or not any(s in r.stderr for s in NOT_READY)):
            break
        time.sleep(4)
    assert r.returncode == 0, f"{r.stderr[-2000:]}\n{head.diagnostics()}"
    job_id = next(w for line in r.stdout.splitlines() for w in line.replace("'", " ").split()
                  if w.startswith("raysubmit_"))
    deadline = time.time() + timeout_s
    status = ""
    ended = [f"Job '{job_id}' {word}" for word in ("succeeded", "failed", "was stopped")]
    while time.time() < deadline:
        r = ray_cli(env, "job", "status", "--address", url, job_id)
        status = r.stdout + r.stderr            # the CLI logs the final state on stderr
        if any(e in status for e in ended):
            break
        time.sleep(5)
    logs = ray_cli(env, "job", "logs", "--address", url, job_id).stdout
    return JobOutcome(job_id, status, logs)


# ------------------------------------------------------------------------------------------
# Worker nodes in their own mount namespaces
# ------------------------------------------------------------------------------------------

# The worker's private run storage: a tmpfs over ROOT in a new mount namespace whose mounts do
# not propagate back to the host; `exec` keeps the process the group leader Popen started.
_PRIVATE_ROOT = 'mount -t tmpfs -o size=4g,mode=0755 raysys-private "$1" && shift && exec "$@"'


def private_mount_command(root: Path, command: Sequence[str]) -> list[str]:
    """``command`` run in a new mount namespace where ``root`` is a fresh, empty tmpfs."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _PRIVATE_ROOT, "sh",
            str(root), *command]


def mount_namespace_unsupported() -> str | None:
    """Why worker nodes with private storage cannot run here (no `unshare`, or mounting is not
    permitted: not root, no CAP_SYS_ADMIN, seccomp in a container), or None if they can."""
    with tempfile.TemporaryDirectory(prefix="rsmn-probe") as d:
        root = Path(d)
        try:
            r = subprocess.run(private_mount_command(root, ["sh", "-c", f"touch {shlex.quote(d)}/x"]),
                               capture_output=True, text=True, timeout=30)
        except (FileNotFoundError, subprocess.TimeoutExpired) as e:
            return f"unshare/mount not available: {e}"
        if r.returncode != 0:
            return f"cannot mount a private tmpfs in a new mount namespace: {r.stderr.strip()[:300]}"
        if (root / "x").exists():
            return "a file written under a private tmpfs showed on the host: mounts propagate"
    return None


@dataclass
class WorkerNode:
    """One worker node: what it offers and its current `ray start --block` process."""

    index: int
    num_cpus: int
    resources: dict[str, float]
    temp_dir: Path
    process: subprocess.Popen | None = None
    log: Path | None = None
    spawns: int = 0                                      # `ray start`s so far (log names)
    incarnations: int = 0                                # starts asked for (retries excluded)
    node_ids: list[str] = field(default_factory=list)   # one per incarnation, oldest first

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NoSharedFsCluster:
    """A head (host mount namespace, no CPUs) and worker nodes whose ``root`` is private.

    ``base`` holds the logs and ``root`` (``base/private``). Start with :meth:`start`, stop with
    :meth:`stop`; :meth:`kill_node` / :meth:`start_worker` take a worker down and bring a fresh
    one (empty storage, as a replaced machine) up again.
    """

    def __init__(self, base: Path, *, worker_cpus: Sequence[int] = (1, 7),
                 object_store_memory: int = 1_000_000_000) -> None:
        self.base = base
        self.root = base / "private"
        self.root.mkdir(parents=True, exist_ok=True)
        self.object_store_memory = object_store_memory
        self.short = Path(tempfile.mkdtemp(prefix="rsw", dir="/tmp"))   # per-node Ray temp dirs
        self.head: RayHead | None = None
        self.workers = [
            WorkerNode(i, cpus, {TRAIN_RESOURCE if i == 0 else ROLES_RESOURCE: 1.0,
                                 NODE_RESOURCE.format(i): 1.0}, self.short / f"w{i}")
            for i, cpus in enumerate(worker_cpus)]
        self.timings: dict[str, float] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout_s: float = 180) -> None:
        t0 = time.monotonic()
        self.head = start_head(self.base, num_cpus=0, object_store_memory=self.object_store_memory,
                               timeout_s=timeout_s)
        self.timings["head_s"] = time.monotonic() - t0
        for w in self.workers:
            w.incarnations += 1
            self._spawn(w)
        self.wait_for_workers(timeout_s)
        self.timings["start_s"] = time.monotonic() - t0

    def stop(self) -> None:
        """Stop the workers, then the head."""
        t0 = time.monotonic()
        for w in self.workers:
            stop_group(w.process)           # ~1-3 s each
        if self.head is not None:
            self.head.stop()
        self.timings["stop_s"] = time.monotonic() - t0

    @property
    def address(self) -> str:
        assert self.head is not None
        return self.head.address

    def driver_env(self) -> dict[str, str]:
        """What a driver on the host needs to join: the token (no RAY_ADDRESS: the address is
        given explicitly, as ``cluster.address``), the hub offline."""
        assert self.head is not None
        return {**self.head.env, "HF_HUB_OFFLINE": "1"}

    def _spawn(self, w: WorkerNode) -> None:
        assert self.head is not None
        w.temp_dir.mkdir(parents=True, exist_ok=True)
        flags = ("node-manager-port", "object-manager-port", "metrics-export-port",
                 "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                 "runtime-env-agent-port")
        ports = dict(zip(flags, free_ports(len(flags)), strict=True))
        ray_start = [str(BIN / "ray"), "start", "--block", f"--address={self.address}",
                     f"--num-cpus={w.num_cpus}",
                     f"--resources={json.dumps(w.resources)}",
                     f"--object-store-memory={self.object_store_memory}",
                     f"--temp-dir={w.temp_dir}",
                     *(f"--{flag}={port}" for flag, port in ports.items())]
        w.log = self.base / f"worker{w.index}.{w.spawns}.log"
        w.spawns += 1
        # The head's environment: the token, and (from tests/conftest.py) the hub offline; the
        # node's artifact cache lives in its private storage, so each node fetches its own copy.
        env = {**self.driver_env(), "RAYSYS_NODE_CACHE": str(self.root / "node_cache")}
        w.process = subprocess.Popen(private_mount_command(self.root, ray_start),
                                     env=env, cwd=REPO, stdout=open(w.log, "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self, i: int, timeout_s: float = 180) -> None:
        """Start worker ``i`` again (a fresh node: new id, empty private storage)."""
        w = self.workers[i]
        assert not w.alive, f"worker {i} is running"
        w.incarnations += 1
        self._spawn(w)
        self.wait_for_workers(timeout_s)

    def kill_node(self, i: int) -> None:
        """SIGKILL everything worker ``i`` runs: its group (`ray start`, raylet, object store,
        agents) and every process below it. Ray's worker processes (tasks, actors, Ray Train
        workers) lead their own process groups, so the group alone would miss them and they
        would outlive their node for a moment. The node is lost as when its machine dies, and
        its private storage with it (the mount namespace ends with its last process)."""
        w = self.workers[i]
        assert w.process is not None
        for pid in [w.process.pid, *self._descendants(w.process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(w.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        w.process.wait(timeout=30)

    # -- state ---------------------------------------------------------------------------

    def nodes(self) -> list[dict[str, Any]]:
        """Ray's node table (the State API, through the head's dashboard)."""
        assert self.head is not None
        r = ray_cli(self.head.env, "list", "nodes", "--address", self.head.url, "--format",
                    "json", "--detail", "--limit", "1000")
        if r.returncode != 0:
            return []
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError:
            return []

    def wait_for_workers(self, timeout_s: float = 180, attempts: int = 3) -> None:
        """Until every worker that was started is up: its `ray start` said "Ray runtime
        started." (printed once its raylet is registered: a node can show ALIVE in the GCS and
        its `ray start` still give up, as below) and its node is ALIVE; records the node id.

        A `ray start` that exits is started again, up to ``attempts`` times: Ray waits a fixed
        30 s for its raylet to register, and on a loaded 2-core machine a GCS call inside that
        wait took 34 s ("Failed to get node info b'RPC error: Deadline Exceeded'", then "The
        current node timed out during startup").
        """
        deadline = time.monotonic() + timeout_s
        tries = {w.index: 1 for w in self.workers}
        while True:
            pending = [w for w in self.workers if w.process is not None and not self._current_id(w)]
            if not pending:
                return
            for w in pending:
                if w.alive:
                    continue
                if tries[w.index] >= attempts:
                    pytest.fail(f"worker {w.index} exited {attempts} times while starting:\n"
                                f"{self.diagnostics()}")
                tries[w.index] += 1
                self._spawn(w)
            if time.monotonic() > deadline:
                pytest.fail(f"workers {[w.index for w in pending]} did not start in "
                            f"{timeout_s:.0f} s:\n{self.diagnostics()}")
            started = {self._raylet_node_id(w): w for w in pending if w.alive and w.log is not None
                       and "Ray runtime started." in w.log.read_text(errors="replace")}
            started.pop(None, None)
            if started:
                for node in self.nodes():
                    w = started.get(node.get("node_id"))
                    if w is not None and node.get("state") == "ALIVE":
                        w.node_ids.append(node["node_id"])
            time.sleep(1)

    def _raylet_node_id(self, w: WorkerNode) -> str | None:
        """The node id worker ``w``'s raylet runs as (its ``--node_id`` flag): a node that a
        failed or killed start left ALIVE in the GCS for a while is not taken for this one."""
        for _, cmd in self.processes(w.index):
            if "/raylet " in cmd and "--node_id=" in cmd:
                return cmd.split("--node_id=", 1)[1].split()[0]
        return None

    def _current_id(self, w: WorkerNode) -> str | None:
        """The node id of ``w``'s running incarnation, once it is up."""
        return w.node_ids[-1] if w.alive and len(w.node_ids) == w.incarnations else None

    def node_id(self, i: int) -> str:
        node = self._current_id(self.workers[i])
        assert node is not None, f"worker {i} is not up"
        return node

    def processes(self, i: int) -> list[tuple[int, str]]:
        """(pid, command line) of every process worker ``i`` runs (its `ray start` and all
        below it). Ray titles its worker processes ``ray::IDLE``, ``ray::<Actor>`` or
        ``ray::<Actor>.<method>`` (``ray::RayTrainWorker``, ``ray::SamplerActor.call``)."""
        w = self.workers[i]
        if not w.alive:
            return []
        out = []
        for pid in self._descendants(w.process.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            out.append((pid, cmd.replace(b"\0", b" ").decode(errors="replace").strip()))
        return out

    @staticmethod
    def _descendants(root: int) -> list[int]:
        """Every live process below ``root``, from /proc's parent links."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        out, todo = [], [root]
        while todo:
            for child in children.get(todo.pop(), []):
                out.append(child)
                todo.append(child)
        return out

    def diagnostics(self) -> str:
        """Tails of the head's logs and of each worker's `ray start` output and raylet log."""
        parts = [self.head.diagnostics() if self.head else "head: not started"]
        for w in self.workers:
            parts.append(f"=== worker {w.index}: {'running' if w.alive else 'not running'}, "
                         f"node ids {w.node_ids} ===")
            if w.log is not None:
                parts.append(f"--- {w.log.name} ---\n{tail(w.log)}")
            sessions = sorted(w.temp_dir.glob("session_2*"), key=lambda p: p.stat().st_mtime)
            if sessions:
                logs = sessions[-1] / "logs"
                for name in ("raylet.out", "raylet.err", "ray_process_exit.log"):
                    if (logs / name).is_file():
                        parts.append(f"--- {name} ---\n{tail(logs / name, 1000)}")
        return "\n".join(parts)

    # -- raysys on this cluster -----------------------------------------------------------

    def demo_sets(self, recipe: str, *, address: bool = True) -> list[str]:
        """``--set`` values for ``raysys demo --recipe RECIPE --quick`` on this cluster: its
        address (``address=False``: leave it to RAY_ADDRESS, as in a Ray job), the tiny-model
        cache under the private root, and every training stage of the recipe on the training
        node (one CPU, as Ray Train's default, plus ``raysys_train``)."""
        per_worker = json.dumps({"CPU": 1, TRAIN_RESOURCE: 1})
        sets = [f"tiny_cache={self.root / 'tiny_cache'}"]
        if address:
            sets.append(f"cluster.address={self.address}")
        sets += [f"{section}.resources_per_worker={per_worker}"
                 for section in train_sections(recipe)]
        return sets

    def demo_args(self, recipe: str, run_dir: Path) -> list[str]:
        """``raysys`` arguments of the recipe's quick demo on this cluster into ``run_dir``."""
        sets = [a for s in self.demo_sets(recipe) for a in ("--set", s)]
        return ["demo", "--recipe", recipe, "--quick", "--run-dir", str(run_dir), *sets]

    def run_raysys(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
        return run_raysys(args, self.driver_env(), timeout)

    def popen_raysys(self, args: Sequence[str], log: Path) -> subprocess.Popen:
        """A `raysys` driver in the background, its own process group, output in ``log``."""
        return subprocess.Popen([*RAYSYS, *map(str, args)], cwd=REPO, env=self.driver_env(),
                                stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)


def train_sections(recipe: str) -> list[str]:
    """Dotted paths of every training stage (a ``TrainConfig``) in the recipe's quick demo
    config, found by walking the loaded config: a stage added later is covered too, and a
    stage left out would train wherever a CPU is free, on either node."""
    from dataclasses import fields, is_dataclass

    from raysys.cli.run import DEMO_CONFIGS, REPO_CONFIGS
    from raysys.recipes import load_run_config
    from raysys.training.config import TrainConfig

    cfg = load_run_config(REPO_CONFIGS / DEMO_CONFIGS[recipe][1], ())
    found: list[str] = []

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, TrainConfig):
            found.append(path)
        elif is_dataclass(obj):
            for f in fields(obj):
                walk(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)

    walk(cfg, "")
    assert found, f"{recipe}: no training stage found in its quick config"
    return found
