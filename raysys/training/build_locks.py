"""Stale JIT-build locks in the torch extensions dir.

torch's ``cpp_extension.load`` guards each extension's build with ``<root>/<name>/lock``, a file
created with ``O_EXCL`` and removed when the build ends; waiters spin until it is gone, with no
timeout. A process killed mid-build (SIGKILL, OOM killer, a lost node) leaves the file behind,
and every later DeepSpeed start on that machine then hangs silently. The builder keeps the
lock's file descriptor open for the whole build, so on Linux a lock no live process holds open
is stale; where ``/proc`` cannot be read, only a lock older than any build is treated so.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Far above the ~1 min DeepSpeed's CPU comm op takes to build on 2 cores.
STALE_AFTER_S = 1800.0


def lock_holders(lock: Path, proc: Path = Path("/proc")) -> set[int] | None:
    """PIDs of this user's processes with ``lock`` open, or None when ``proc`` is not a
    readable procfs (then nobody can tell)."""
    try:
        entries = list(proc.iterdir())
    except OSError:
        return None
    if not any(e.name == "self" for e in entries):
        return None
    target = os.path.realpath(lock)
    uid = os.getuid()
    holders: set[int] = set()
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:     # another user cannot write our cache dir
                continue
            fds = list((entry / "fd").iterdir())
        except OSError:                        # exited meanwhile, or unreadable
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    holders.add(int(entry.name))
                    break
            except OSError:
                continue
    return holders


def is_stale(lock: Path, proc: Path = Path("/proc"), stale_after_s: float = STALE_AFTER_S,
             recheck_s: float = 0.2) -> bool:
    """True when ``lock`` exists and no live process holds it: no holder in two looks
    ``recheck_s`` apart (a builder closes its descriptor just before removing the file), or,
    without procfs, the lock is older than ``stale_after_s``."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    holders = lock_holders(lock, proc)
    if holders is None:
        return age > stale_after_s
    if holders:
        return False
    time.sleep(recheck_s)
    return lock.exists() and lock_holders(lock, proc) == set()


def clear_stale_build_locks(root: Path | str, proc: Path = Path("/proc"),
                            stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the stale build locks under the extensions dir ``root`` (``<root>/*/lock``),
    logging each; returns the removed paths. The next build re-runs ninja, which redoes any
    step the killed build left unfinished."""
    removed: list[Path] = []
    for lock in sorted(Path(root).expanduser().glob("*/lock")):
        if is_stale(lock, proc, stale_after_s):
            lock.unlink(missing_ok=True)
            removed.append(lock)
            log.warning("removed %s: a torch extension build lock left by a killed process "
                        "(it would make this start wait forever)", lock)
    return removed
