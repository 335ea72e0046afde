"""Artifacts between the driver's node and the others, through the run store.

:func:`localize` (before a remote process loads a model): the content is pulled once into a
node-local cache keyed by its digest, so a node that has a copy does not fetch it again;
:func:`push_dir` (rank 0 after training): a dir lands whole on the driver's node;
:func:`append_text` / :func:`read_text` / :func:`write_text`: small run files (metrics lines).
Without a store, or on the driver's node, each is the plain local operation.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raysys.distributed.run_store import CHUNK, IN_FLIGHT, _remote_store, list_files

log = logging.getLogger(__name__)

CACHE_ENV = "RAYSYS_NODE_CACHE"       # where a node keeps fetched artifacts
COMPLETE = ".complete"                # <digest>.complete: written after the copy is whole


def cache_root() -> Path:
    """This node's artifact cache: ``$RAYSYS_NODE_CACHE`` or ``~/.cache/raysys/artifacts``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/raysys/artifacts").expanduser()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)        # two processes on one node fetch one copy
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fetch_file(h: Any, src: str, dst: Path, size: int) -> None:
    import ray

    offsets = list(range(0, size, CHUNK)) or [0]
    with dst.open("wb") as f:
        pending: list[Any] = []
        for off in offsets:
            pending.append(h.read.remote(src, off, CHUNK))
            if len(pending) >= IN_FLIGHT:
                f.write(ray.get(pending.pop(0)))
        for ref in pending:
            f.write(ray.get(ref))
    if dst.stat().st_size != size:
        raise OSError(f"{src}: fetched {dst.stat().st_size} of {size} bytes")


def through_store() -> bool:
    """Whether this process reaches the driver's files through the store (another node, or
    copies forced), rather than in place."""
    return _remote_store() is not None


def localize(path: str | None) -> str | None:
    """A path on this node with the content ``path`` has on the driver's node.

    Without a store, on the driver's node, or for a path the driver does not have (a hub id, a
    dir the user placed on every node), ``path`` itself. Otherwise the content is fetched once
    into ``cache_root()/<digest>`` (a file keeps its name inside that dir)."""
    if path is None:
        return None
    h = _remote_store()
    if h is None:
        return path
    import ray

    m = ray.get(h.manifest.remote(str(path)))
    if m is None:
        return path
    entry = cache_root() / m["digest"]
    marker = cache_root() / f"{m['digest']}{COMPLETE}"      # beside the copy: not in a model dir
    target = entry if m["dir"] else entry / m["files"][0][0]
    if marker.exists():
        return str(target)
    with _locked(cache_root() / f"{m['digest']}.lock"):
        if not marker.exists():
            t0, nbytes = time.perf_counter(), sum(s for _, s in m["files"])
            tmp = Path(tempfile.mkdtemp(prefix=f".{m['digest'][:12]}-", dir=cache_root()))
            src_root = Path(path) if m["dir"] else Path(path).parent
            for rel, size in m["files"]:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                _fetch_file(h, str(src_root / rel), tmp / rel, size)
            if entry.exists():                 # a copy left without its marker: replace it
                shutil.rmtree(entry)
            os.rename(tmp, entry)
            marker.write_text(json.dumps({"source": str(path), "bytes": nbytes}))
            log.info("fetched %s (%.1f MB) in %.2f s", path, nbytes / 1e6, time.perf_counter() - t0)
    return str(target)


# -- any node -> driver ------------------------------------------------------------------------

def push_dir(local_dir: str | Path, dest: str | Path) -> None:
    """Send ``local_dir`` to ``dest`` on the driver's node; ``dest`` appears (replaced) only
    when every file arrived. Without a store (or on the driver's node): a local rename."""
    local_dir, dest = Path(local_dir), Path(dest)
    tmp = dest.parent / f".{dest.name}.incoming-{uuid.uuid4().hex[:8]}"
    h = _remote_store()
    if h is None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(local_dir), str(tmp))       # a copy when /tmp is another filesystem
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return
    import ray

    try:
        for rel, size in list_files(local_dir):
            with (local_dir / rel).open("rb") as f:
                refs, off = [], 0
                while True:
                    block = f.read(CHUNK)
                    if not block and off:
                        break
                    refs.append(h.write.remote(str(tmp / rel), block, off))
                    off += len(block)
                    if len(refs) >= IN_FLIGHT:
                        ray.get(refs.pop(0))
                    if not block:
                        break
                ray.get(refs)
        ray.get(h.mkdir.remote(str(tmp)))          # an empty dir is still a dir
        ray.get(h.move.remote(str(tmp), str(dest)))
    except BaseException:
        with contextlib.suppress(Exception):
            ray.get(h.remove.remote(str(tmp), True))
        raise


def append_text(path: str | Path, text: str) -> None:
    """Append to a run file on the driver's node (locally without a store)."""
    h = _remote_store()
    if h is None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with Path(path).open("a") as f:
            f.write(text)
        return
    import ray
    ray.get(h.append.remote(str(path), text.encode()))


def read_text(path: str | Path) -> str | None:
    """A run file's text on the driver's node, or None when it does not exist."""
    h = _remote_store()
    if h is None:
        p = Path(path)
        return p.read_text() if p.is_file() else None
    import ray
    st = ray.get(h.stat.remote(str(path)))
    if st is None or st[0] != "file":
        return None
    return ray.get(h.read.remote(str(path), 0, st[1])).decode()


def write_text(path: str | Path, text: str) -> None:
    """Replace a run file's text on the driver's node."""
    h = _remote_store()
    if h is None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        return
    import ray
    ray.get(h.write.remote(str(path), text.encode(), 0, replace=True))


def localize_model(spec: Any) -> Any:
    """``spec`` (a ModelSpec or EngineConfig) with its ``path`` / ``adapter`` / ``verifier``
    replaced by this node's copies (:func:`localize`)."""
    import dataclasses

    if spec is None:
        return None
    changes = {f: localize(getattr(spec, f)) for f in ("path", "adapter", "verifier")
               if hasattr(spec, f) and getattr(spec, f)}
    return dataclasses.replace(spec, **changes) if changes else spec
