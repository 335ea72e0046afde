"""The driver's view of a training stage in progress: bounded progress lines from rank 0's
``metrics.jsonl`` while the workers run, and a stage that fails instead of waiting forever when
no node can hold its workers."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def train_progress_line(name: str, m: dict[str, Any], n_steps: int, elapsed_s: float) -> str:
    """The driver's line for the latest logged step ``m`` (``step``, ``loss``,
    ``samples_per_s``) of an ``n_steps`` run: step/total, loss, rate and ETA; ``elapsed_s``
    is the wall time since :func:`train` started the workers (start-up included)."""
    from raysys.console import fmt_duration, progress_text

    step = int(m["step"])
    text = progress_text(f"train {name}", step, n_steps, float(m.get("elapsed_s") or 0.0),
                         unit="steps")
    loss = m.get("loss")
    sps = m.get("samples_per_s")
    return (text + (f", loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
            + (f", {sps:.1f} samples/s" if isinstance(sps, (int, float)) else "")
            + f" (running {fmt_duration(elapsed_s)})")


def last_metrics(path: Path) -> dict[str, Any] | None:
    """The last complete JSON line of rank 0's ``metrics.jsonl`` (None when absent or empty;
    a line being written is skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if isinstance(m, dict) and "step" in m:
            return m
    return None


def _wait_with_progress(ref: Any, name: str, metrics_path: Path, n_steps: int,
                        every_s: float | None = None, poll_s: float = 2.0,
                        bundles: list[dict[str, float]] | None = None,
                        infeasible_s: float = 1800.0) -> Any:
    """``ray.get(ref)`` while logging a bounded number of progress lines from the metrics
    rank 0 writes: one when training passes half its steps, and one every ``every_s`` (default
    :func:`raysys.console.heartbeat_s`) of wall time; a worker's per-step lines stay in its
    own log.

    ``bundles`` (one per Ray Train worker): when no alive node can hold them (a lost node, a
    resource no node has), one warning names what is missing within seconds, and after
    ``infeasible_s`` of that the stage fails: Ray Train would otherwise retry its placement
    group forever."""
    import time

    import ray

    from raysys.console import fmt_duration, heartbeat_s
    from raysys.distributed.roles import bundles_fit, total_per_node

    every = heartbeat_s() if every_s is None else every_s
    t0 = time.monotonic()
    next_line, halfway_shown = t0 + every, False
    infeasible_since: float | None = None
    while True:
        ready, _ = ray.wait([ref], timeout=poll_s)
        if ready:
            return ray.get(ref)
        now = time.monotonic()
        if bundles and not bundles_fit(bundles, total_per_node()):
            if infeasible_since is None:
                infeasible_since = now
                log.warning("train %s: no alive node can hold a worker's %s; waiting up to %s "
                            "for one (cluster.stall_timeout_s)", name, bundles[0],
                            fmt_duration(infeasible_s))
            elif now - infeasible_since > infeasible_s:
                ray.cancel(ref, force=True)
                from raysys.errors import StageError
                raise StageError(f"training '{name}': no alive node could hold a worker's "
                                 f"{bundles[0]} for {fmt_duration(infeasible_s)} (a node lost?)")
        else:
            infeasible_since = None
        m = last_metrics(metrics_path)
        halfway = m is not None and not halfway_shown and n_steps / 2 <= m["step"] < n_steps
        if halfway or now >= next_line:
            log.info(train_progress_line(name, m, n_steps, now - t0) if m else
                     f"train {name}: starting workers ({fmt_duration(now - t0)})")
            halfway_shown = halfway_shown or halfway
            next_line = now + every
