"""A torch JIT-build lock left by a killed process is removed; one a live builder holds is not.

The lock holders here run torch's own ``FileBaton`` (what ``cpp_extension.load`` guards a build
with) in a child process, and are killed with SIGKILL as a lost or OOM-killed builder would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch.utils.file_baton import FileBaton

from raysys.training.build_locks import clear_stale_build_locks, is_stale, lock_holders

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")

_HOLD = ("import sys, time\n"
         "from torch.utils.file_baton import FileBaton\n"
         "assert FileBaton(sys.argv[1]).try_acquire()\n"
         "print('held', flush=True)\n"
         "time.sleep(120)\n")


def _hold(lock: Path) -> subprocess.Popen[str]:
    """A child process that takes the build baton at ``lock`` and keeps building."""
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def _ext_lock(root: Path, name: str = "deepspeed_shm_comm") -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    return root / name / "lock"


def test_a_live_builders_lock_stays_and_a_killed_ones_goes(tmp_path: Path) -> None:
    lock = _ext_lock(tmp_path)
    child = _hold(lock)
    try:
        assert lock_holders(lock) == {child.pid}
        assert clear_stale_build_locks(tmp_path) == []
        assert lock.exists()
    finally:
        _kill(child)
    assert lock.exists()                       # SIGKILL: torch never released it
    assert lock_holders(lock) == set()
    assert clear_stale_build_locks(tmp_path) == [lock]
    assert not lock.exists()
    # what a resumed run's build then does: takes the baton at once instead of waiting forever
    baton = FileBaton(str(lock))
    assert baton.try_acquire()
    baton.release()


def test_only_stale_locks_go_among_several_extensions(tmp_path: Path) -> None:
    live, dead = _ext_lock(tmp_path, "live_op"), _ext_lock(tmp_path, "dead_op")
    holder, killed = _hold(live), _hold(dead)
    _kill(killed)
    try:
        assert clear_stale_build_locks(tmp_path) == [dead]
        assert live.exists() and not dead.exists()
    finally:
        _kill(holder)


def test_a_lock_gone_before_the_check_is_not_stale(tmp_path: Path) -> None:
    assert not is_stale(_ext_lock(tmp_path))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_start_goes_past_a_killed_builds_lock(tmp_path: Path) -> None:
    """The driver's DeepSpeed comm-op build, as ``train`` runs it, in a fresh extensions dir
    where a first build was SIGKILLed holding its lock (the case that hung a resumed run
    forever): it removes the lock and builds the op. Loading an op that was built before does
    not wait on the lock, so only a never-finished build shows the hang."""
    root = tmp_path / "torch_extensions"
    lock = _ext_lock(root)
    _kill(_hold(lock))
    assert lock.exists()
    code = ("import os; os.environ['TORCH_EXTENSIONS_DIR'] = os.sys.argv[1]\n"
            "from raysys.training.trainer import prebuild_cpu_comm_op\n"
            "prebuild_cpu_comm_op(); print('built')\n")
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("built")
    assert "removed" in done.stderr and str(lock) in done.stderr
    assert not lock.exists()


def test_without_procfs_only_an_old_lock_is_stale(tmp_path: Path) -> None:
    no_proc = tmp_path / "not_proc"
    no_proc.mkdir()
    root = tmp_path / "ext"
    lock = _ext_lock(root)
    lock.touch()
    assert lock_holders(lock, proc=no_proc) is None
    assert clear_stale_build_locks(root, proc=no_proc, stale_after_s=600) == []
    hour_ago = time.time() - 3600
    os.utime(lock, (hour_ago, hour_ago))
    assert clear_stale_build_locks(root, proc=no_proc, stale_after_s=600) == [lock]
    assert not lock.exists()


def test_no_extensions_dir_is_nothing_to_do(tmp_path: Path) -> None:
    assert clear_stale_build_locks(tmp_path / "absent") == []


def test_each_python_environment_gets_its_own_extensions_dir(tmp_path: Path) -> None:
    """Two checkouts' .venvs sharing one dir rebuilt DeepSpeed's op whenever the other had run:
    its build.ninja names the environment's paths."""
    import sys

    from raysys.training.trainer import EXTENSIONS_CACHE, default_extensions_dir

    a, b = default_extensions_dir("/work/a/.venv"), default_extensions_dir("/work/b/.venv")
    assert a != b and a.parent == b.parent == Path(EXTENSIONS_CACHE).expanduser()
    assert default_extensions_dir("/work/a/.venv") == a                  # stable across runs
    assert default_extensions_dir() == default_extensions_dir(sys.prefix)
