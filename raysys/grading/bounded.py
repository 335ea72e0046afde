"""Run a function under a wall-clock bound, so no grader call can hang.

Two mechanisms, chosen per call:

* In the main thread, for inputs without C-level hazards, a ``SIGALRM`` interval timer raises
  :class:`SympyTimeout` inside the running Python code (sympy and the LaTeX parser are pure
  Python, so the signal lands between bytecodes). The caller's own alarm (e.g. pytest-timeout)
  is restored afterwards.
* Elsewhere (worker threads, or inputs that could start a huge C-level integer operation that a
  signal cannot interrupt, such as ``9^{9^{9}}``), the comparison runs in a persistent child
  process (:class:`SympyWorker`) that is killed and replaced when it overruns.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The child imports sympy and the LaTeX parser before it says it is ready; that start-up is not
# charged to the first call's bound.
_STARTUP_S = 120.0


class SympyTimeout(BaseException):
    """Raised inside a bounded call when it overruns (a BaseException so that the broad
    ``except Exception`` clauses inside sympy cannot swallow it)."""


def _raise_timeout(signum: int, frame: Any) -> None:
    raise SympyTimeout()


def in_main_thread() -> bool:
    """Signals can be handled only in the main thread; elsewhere use the worker processes."""
    return threading.current_thread() is threading.main_thread()


def call_with_alarm(fn: Callable[..., Any], args: tuple, timeout_s: float) -> tuple[bool, Any]:
    """Run ``fn(*args)`` in this (main) thread; ``(False, None)`` when it overran ``timeout_s``."""
    old_handler = signal.signal(signal.SIGALRM, _raise_timeout)
    # re-fire every 50 ms in case a bare ``except:`` somewhere swallowed the first one
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, timeout_s, 0.05)
    start = time.monotonic()
    try:
        try:
            return True, fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except SympyTimeout:   # also one that lands after fn returned, before the timer stopped
        return False, None
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:   # give the caller's own alarm back, minus the time we used
            left = max(old_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


class SympyWorker:
    """A persistent ``raysys.grading.sympy_worker`` child process; killed and replaced (on the
    next call) when a comparison overruns. Thread-safe: calls are serialized."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        # make this process's raysys importable in the child even when it is not installed
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
        proc = subprocess.Popen([sys.executable, "-m", "raysys.grading.sympy_worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                bufsize=1, env=env)
        if self._readline(proc, _STARTUP_S) != '"ready"':
            self._kill(proc)
            raise RuntimeError("the sympy worker process did not start")
        return proc

    @staticmethod
    def _readline(proc: subprocess.Popen, timeout_s: float) -> str | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = proc.stdout.readline()
        return line.strip() if line else None   # "" means the child died

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._kill(self._proc)
                self._proc = None

    def equal(self, a: str, b: str, timeout_s: float) -> bool | None:
        """Whether sympy proves ``a == b``; ``None`` when it ran past ``timeout_s``."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps([a, b]) + "\n")
                proc.stdin.flush()
            except BrokenPipeError:
                line = None
            else:
                line = self._readline(proc, timeout_s)
            if line in ("true", "false"):
                return line == "true"
            self._kill(proc)
            self._proc = None
            return None


class WorkerPool:
    """Up to ``size`` :class:`SympyWorker` processes shared by threads; a thread borrows an idle
    worker (starting one while fewer than ``size`` exist) and returns it after the call."""

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self._idle: queue.LifoQueue[SympyWorker] = queue.LifoQueue()
        self._all: list[SympyWorker] = []
        self._lock = threading.Lock()

    def resize(self, size: int) -> None:
        """Allow up to ``size`` workers (never shrinks running ones)."""
        with self._lock:
            self.size = max(self.size, size)

    def _borrow(self) -> SympyWorker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._all) < self.size:
                worker = SympyWorker()
                self._all.append(worker)
                return worker
        return self._idle.get()

    def equal(self, a: str, b: str, timeout_s: float) -> bool | None:
        """:meth:`SympyWorker.equal` on a borrowed worker."""
        worker = self._borrow()
        try:
            return worker.equal(a, b, timeout_s)
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every worker process (they also exit on their own when this process does)."""
        with self._lock:
            for worker in self._all:
                worker.close()


SYMPY_WORKERS = WorkerPool()
atexit.register(SYMPY_WORKERS.close)
