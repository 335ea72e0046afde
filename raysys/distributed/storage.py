"""Is the run's storage shared? The probe over every node, and the decision it drives
(``cluster.storage``: auto / shared / ray)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from pathlib import Path

from raysys.distributed.run_store import list_files, start_store, store

log = logging.getLogger(__name__)

PROBE_PREFIX = ".raysys-probe-"


def _sees_inputs(inputs: dict[str, list[tuple[str, int]] | None]) -> list[str]:
    """The inputs (paths) whose file list and sizes on this node differ from the driver's."""
    bad = []
    for path, want in inputs.items():
        p = Path(path)
        have = list_files(p) if p.is_dir() else ([(p.name, p.stat().st_size)] if p.is_file() else None)
        if [tuple(x) for x in have or []] != [tuple(x) for x in want or []] or have is None:
            bad.append(path)
    return bad


def unshared(run_dir: str | Path, inputs: Iterable[str | Path] = (),
             timeout_s: float = 60.0) -> dict[str, list[str]]:
    """``{node: [what it does not see]}`` over every alive node: the run dir (a token written
    here, read there) and each input (same files and sizes as here). Empty: storage is shared."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    d = Path(run_dir).expanduser().resolve()
    d.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = d / f"{PROBE_PREFIX}{token}"
    probe.write_text(token)
    want: dict[str, list[tuple[str, int]] | None] = {}
    for i in inputs:
        p = Path(i).expanduser().resolve()
        want[str(p)] = list_files(p) if p.is_dir() else [(p.name, p.stat().st_size)]

    @ray.remote(num_cpus=0, max_retries=0)
    def check(path: str, expect: str, inputs: dict) -> list[str]:
        from raysys.distributed.storage import _sees_inputs
        try:
            ok = Path(path).read_text() == expect
        except OSError:
            ok = False
        return ([] if ok else [str(Path(path).parent)]) + _sees_inputs(inputs)

    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=n["NodeID"], soft=False)).remote(str(probe), token, want) for n in nodes]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        out: dict[str, list[str]] = {}
        for n, ref in zip(nodes, refs):
            name = f"node {n['NodeID'][:8]} ({n.get('NodeManagerAddress', '?')})"
            missing = ray.get(ref) if ref in ready else [f"no answer in {timeout_s:.0f} s"]
            if missing:
                out[name] = missing
        return out
    finally:
        probe.unlink(missing_ok=True)


_decided: dict[str, str] = {}


def use_storage(mode: str, run_dir: str | Path, inputs: Iterable[str | Path] = (),
                outputs: Iterable[str | Path] = ()) -> str:
    """Decide how this run's files reach the other nodes (``cluster.storage``) and start the
    store when they travel through Ray; returns ``shared`` or ``ray``. Decided once per
    cluster and driver; later calls (each training stage) only register more roots.

    ``inputs`` are probed (every node must see the same files and sizes); ``outputs`` (dirs
    results are pushed into, e.g. ``train --out``'s parent) are only served: listing them
    would walk whatever else lives there (``--out /tmp/x`` lists /tmp) and race what other
    processes write into it meanwhile."""
    import ray

    from raysys.errors import ConfigError

    run_dir = Path(run_dir).expanduser().resolve()
    # Inputs inside the run dir travel with it (and change as the run writes there).
    inputs = [p for p in (Path(i).expanduser().resolve() for i in inputs if i)
              if p.exists() and p != run_dir and run_dir not in p.parents]
    roots = [run_dir, *inputs, *(Path(o).expanduser().resolve() for o in outputs if o)]
    key = ray.get_runtime_context().gcs_address
    if key in _decided and (_decided[key] == "shared" or store() is not None):
        if _decided[key] == "ray":
            start_store(roots)
        return _decided[key]
    if mode == "ray":
        start_store(roots)
        _decided[key] = "ray"
        return "ray"
    missing = unshared(run_dir, inputs)
    if not missing:
        _decided[key] = "shared"
        return "shared"
    what = "; ".join(f"{n} does not see {', '.join(m)}" for n, m in missing.items())
    if mode == "shared":
        raise ConfigError(f"cluster.storage: shared, but the nodes do not share the run's "
                          f"storage: {what} (set cluster.storage: auto to move files through Ray)")
    log.info("storage: the nodes share no disk with the driver (%s); models, outputs and "
             "checkpoints travel through Ray", what)
    start_store(roots)
    _decided[key] = "ray"
    return "ray"
