"""The driver node's run files, served to every node through Ray: clusters with no shared disk.

A model, adapter or verifier dir that a replica or a Ray Train worker on another node must load,
the trained model a worker writes, Ray Train's checkpoints and rank 0's metrics all live on the
driver's node (the run dir and the inputs the user named there). When the nodes do not share
that disk (``raysys.distributed.storage`` probes it), the driver starts one :class:`RunStore`
actor pinned to its own node, and other processes reach those files through it:
``raysys.distributed.artifacts`` (fetch into a node cache keyed by content, push a dir back,
small run files) and ``raysys.distributed.store_fs`` (Ray Train's ``storage_filesystem``).

Without a store every one of those is the plain local operation, and so it is for processes on
the driver's node unless ``RAYSYS_STORE_COPY=1`` (tests and benchmarks: the copying path on one
machine).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

STORE_NAME = "raysys_run_store"
CHUNK = 16 << 20                      # bytes per read/write call: bounded actor message size
IN_FLIGHT = 4                         # chunk reads in flight while fetching a file
COPY_ENV = "RAYSYS_STORE_COPY"        # "1": copy even on the driver's node


class StoreError(OSError):
    """A path the store will not serve (outside the roots the driver registered)."""


# -- the store actor (driver's node) ------------------------------------------------------------

def _digest_files(root: Path, files: list[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for rel, size in files:
        h.update(f"{rel}\0{size}\0".encode())
        with (root / rel).open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def list_files(root: Path) -> list[tuple[str, int]]:
    """``(relative path, size)`` of every regular file under ``root`` (sorted; symlinks to files
    followed; hidden lock/probe files kept: content is content)."""
    out = []
    for dirpath, _dirs, names in os.walk(root, followlinks=True):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file():
                out.append((p.relative_to(root).as_posix(), p.stat().st_size))
    return sorted(out)


class RunStore:
    """The actor (one per driver, on its node) that reads and writes files under ``roots``.

    Paths are absolute paths on the driver's node; anything outside the registered roots is
    refused, so the store never serves more of the node's disk than the run named."""

    def __init__(self, roots: Sequence[str]) -> None:
        self._roots: list[Path] = []
        self._digests: dict[tuple, str] = {}
        self.add_roots(roots)

    def add_roots(self, roots: Iterable[str]) -> None:
        for r in roots:
            p = Path(r).expanduser().resolve()
            if p not in self._roots:
                self._roots.append(p)

    def node_id(self) -> str:
        import ray
        return ray.get_runtime_context().get_node_id()

    def _path(self, path: str) -> Path:
        p = Path(path).expanduser().resolve()
        if not any(p == r or r in p.parents for r in self._roots):
            raise StoreError(f"{path}: not under a directory this run serves")
        return p

    def manifest(self, path: str) -> dict[str, Any] | None:
        """``{"dir", "files", "digest"}`` of ``path``, or None when it does not exist here."""
        try:
            p = self._path(path)
        except StoreError:
            return None
        if p.is_file():
            root, files = p.parent, [(p.name, p.stat().st_size)]
        elif p.is_dir():
            root, files = p, list_files(p)
        else:
            return None
        # A digest is recomputed only when a file's size or mtime changed.
        key = (str(p), tuple((rel, size, (root / rel).stat().st_mtime_ns) for rel, size in files))
        if key not in self._digests:
            self._digests[key] = _digest_files(root, files)
        return {"dir": p.is_dir(), "files": files, "digest": self._digests[key]}

    def read(self, path: str, offset: int, length: int) -> bytes:
        with self._path(path).open("rb") as f:
            f.seek(offset)
            return f.read(length)

    def stat(self, path: str) -> tuple[str, int, float] | None:
        """``(kind, size, mtime)`` with kind ``file`` or ``dir``; None when absent."""
        p = self._path(path)
        if not p.exists():
            return None
        st = p.stat()
        return ("dir" if p.is_dir() else "file", st.st_size, st.st_mtime)

    def listdir(self, path: str, recursive: bool) -> list[tuple[str, str, int, float]] | None:
        """``(path, kind, size, mtime)`` under ``path`` (absolute paths); None when absent."""
        p = self._path(path)
        if not p.is_dir():
            return None
        items = p.rglob("*") if recursive else p.iterdir()
        out = []
        for q in sorted(items):
            st = q.stat()
            out.append((str(q), "dir" if q.is_dir() else "file", st.st_size, st.st_mtime))
        return out

    def write(self, path: str, data: bytes, offset: int, replace: bool = False) -> None:
        """Write ``data`` at ``offset`` into ``path`` (created with its parents when absent).

        Never truncates unless ``replace`` (a whole-file rewrite): the chunks of one file
        arrive as concurrent calls on this threaded actor in any order, and a chunk at offset 0
        that emptied the file would drop the chunks written before it."""
        p = self._path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else 0), 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        finally:
            os.close(fd)

    def append(self, path: str, data: bytes) -> None:
        p = self._path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("ab") as f:
            f.write(data)

    def mkdir(self, path: str) -> None:
        self._path(path).mkdir(parents=True, exist_ok=True)

    def remove(self, path: str, missing_ok: bool = False) -> None:
        p = self._path(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        elif not missing_ok:
            raise FileNotFoundError(path)

    def clear(self, path: str) -> None:
        p = self._path(path)
        for q in list(p.iterdir()):
            self.remove(str(q))

    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, replacing a ``dst`` dir (a stage output written again)."""
        s, d = self._path(src), self._path(dst)
        d.parent.mkdir(parents=True, exist_ok=True)
        if d.is_dir() and s.is_dir():
            shutil.rmtree(d)
        os.replace(s, d)

    def copy(self, src: str, dst: str) -> None:
        s, d = self._path(src), self._path(dst)
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s, d)


def start_store(roots: Iterable[str | Path]) -> Any:
    """Start this driver's :class:`RunStore` on its own node serving ``roots``, or add ``roots``
    to the one it runs."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    roots = [str(Path(r).expanduser().resolve()) for r in roots]
    cluster = ray.get_runtime_context().gcs_address
    if _owned and _owned[1] == cluster:
        ray.get(_owned[0].add_roots.remote(roots))
        return _owned[0]
    node = ray.get_runtime_context().get_node_id()
    handle = ray.remote(RunStore).options(
        name=STORE_NAME, num_cpus=0, max_concurrency=16, max_restarts=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
    ).remote(roots)
    ray.get(handle.node_id.remote())
    # A non-detached actor dies with its creator's handle: the driver keeps it for the run.
    _owned[:] = [handle, cluster]
    return handle


def stop_store() -> None:
    """Stop this driver's store (a later run on the same driver starts a new one)."""
    import ray

    if _owned:
        ray.kill(_owned[0])
    _handles.clear()
    _owned.clear()


_handles: dict[str, str] = {}           # store actor id -> its node id
_owned: list[Any] = []                  # [the store's creating handle, its cluster]


def _store_and_node() -> tuple[Any, str] | None:
    """The store's handle and node id, or None (no Ray, or no store in this job).

    Looked up on every call (one GCS round trip; callers are model loads and metric lines): a
    worker process outlives a store that a run stopped, and a cached handle would be dead."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    try:
        h = ray.get_actor(STORE_NAME)
    except ValueError:
        return None
    key = h._actor_id.hex()
    if key not in _handles:
        _handles[key] = ray.get(h.node_id.remote())
    return h, _handles[key]


def store() -> Any:
    """This job's :class:`RunStore` handle, or None."""
    found = _store_and_node()
    return None if found is None else found[0]


def _remote_store() -> Any:
    """The store when this process must go through it (another node, or copies forced)."""
    found = _store_and_node()
    if found is None:
        return None
    import ray

    h, node = found
    if node == ray.get_runtime_context().get_node_id() and os.environ.get(COPY_ENV) != "1":
        return None
    return h
