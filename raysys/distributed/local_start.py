"""Starting a private local Ray instance on a machine whose cores are all busy.

Ray's start-up timeouts are fixed in Ray 2.60: the driver waits 30 s for its raylet to
register, and the raylet waits about 15 s for its dashboard agent to write its port file, then
aborts (``node_manager.cc: Check failed ... Timed out waiting for file .../metrics_agent_port_*``;
``RAY_agent_register_timeout_ms`` does not reach that wait). With another run training and the
machine's load average at 26-30 on 2 cores, the agent's Python start alone took 18 s, and
``raysys eval`` died in ``ray.init`` with "The current node timed out during startup" (issue 28,
``benchmarks/two_instances.py``). A second try, after stopping what the failed one left behind
(its GCS, dashboard and monitors are children of this process and outlive the failure), starts
once the burst of start-up work has passed.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCAL_START_ATTEMPTS = 2
# What ray._private.node.Node raises when its raylet did not register in time.
STARTUP_TIMEOUT_MARK = "timed out during startup"


def is_startup_timeout(err: BaseException) -> bool:
    """Whether ``err`` is Ray's "node timed out during startup" (worth one more try)."""
    return STARTUP_TIMEOUT_MARK in str(err)


def failed_start_pids(procs: Iterable[tuple[int, int, str]], driver_pid: int) -> list[int]:
    """The pids among ``procs`` (``(pid, ppid, cmdline)``) that a failed local start by
    ``driver_pid`` left running: its direct children whose command line names one of its own
    Ray sessions (a local session dir is ``session_<date>_<time>_<usec>_<driver pid>``)."""
    own = re.compile(rf"session_[0-9_-]+_{driver_pid}(?![0-9])")
    return [pid for pid, ppid, cmd in procs if ppid == driver_pid and own.search(cmd)]


def proc_table(proc: Path = Path("/proc")) -> Iterator[tuple[int, int, str]]:
    """``(pid, ppid, cmdline)`` of every readable process (Linux procfs; nothing elsewhere)."""
    try:
        entries = list(proc.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:                     # exited meanwhile
            continue
        # the command name in parentheses may hold spaces: the ppid is the 2nd field after it
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        yield int(entry.name), ppid, cmd


def stop_processes(pids: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM ``pids`` (this process's children), SIGKILL those alive after ``grace_s``, and
    reap them."""
    def alive(pid: int) -> bool:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            return done == 0
        except ChildProcessError:           # not ours to wait for, or reaped already
            return Path(f"/proc/{pid}").exists()

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while (pids := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not pids:
            return


def start_local(init: Callable[..., Any], kwargs: dict[str, Any],
                attempts: int = LOCAL_START_ATTEMPTS,
                leftovers: Callable[[], list[int]] | None = None,
                stop: Callable[[list[int]], None] = stop_processes) -> Any:
    """``init(**kwargs)`` (``ray.init`` of a new local instance), tried up to ``attempts`` times
    while it fails with Ray's start-up timeout; before each retry the failed start's processes
    (``leftovers()``, default: :func:`failed_start_pids` of this process that were not running
    before the attempt) are stopped.

    Only what the attempt itself started is stopped: another local instance this process runs
    (``ray.cluster_utils.Cluster`` in a test session, a benchmark's second instance) has its
    processes as children of this process too, with session dirs named after the same pid."""
    if attempts < 1:
        raise ValueError(f"attempts: expected >= 1, got {attempts}")
    before: set[int] = set()
    if leftovers is None:
        def leftovers() -> list[int]:
            return [p for p in failed_start_pids(proc_table(), os.getpid()) if p not in before]
    for attempt in range(1, attempts + 1):
        before = set(failed_start_pids(proc_table(), os.getpid()))
        try:
            return init(**kwargs)
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
            if attempt == attempts or not is_startup_timeout(e):
                raise
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            log.warning("local Ray did not start in Ray's start-up time (load average %.1f); "
                        "stopping what it started and trying again (%d/%d)",
                        load, attempt + 1, attempts)
            stop(leftovers())
    raise AssertionError("unreachable: the last attempt returns or raises")
