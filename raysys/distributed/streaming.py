"""Streaming between roles: a generation stage fed in chunks as its upstream rows land.

:class:`StageStream` keeps the stage contract of :func:`raysys.distributed.generation.run_generation`
(request fingerprint, parts per invocation, only missing ``(key, index)`` pairs generated on
resume, manifest written last by :meth:`StageStream.close`) but takes its input a chunk at a time
and generates asynchronously on an actor group, so several stages on different role groups
(an actor's samples, a critic's critiques, the actor's refinements) run at the same time on
different questions. :func:`run_streams` drives the chunks: whenever a chunk lands, a callback
may submit its downstream chunk to the next stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysys.distributed.generation import build_output, named_stall
from raysys.distributed.stage_writer import GenerationSpec, Stage, live_group
from raysys.engines.base import SamplingParams
from raysys.errors import StageError

log = logging.getLogger(__name__)


@dataclass
class Chunk:
    """Work submitted to a group: the work rows and, per distinct missing count, the refs."""

    stream: StageStream
    work: list[dict[str, Any]]
    calls: list[tuple[list[int], list[Any]]] = field(default_factory=list)
    tag: Any = None
    timeout_s: float = 1800.0    # the group's stall bound (cluster.stall_timeout_s)
    local: bool = False          # generated in this process: the "refs" are the results

    @property
    def refs(self) -> list[Any]:
        return [r for _, refs in self.calls for r in refs]


class StageStream(Stage):
    """One stage fed in chunks; see the module docstring. ``close`` seals it."""

    def __init__(self, out_dir: str | Path, spec: GenerationSpec, params: SamplingParams,
                 request: dict[str, Any], label: str) -> None:
        super().__init__(out_dir, spec, params.n, request, label)
        self.params = params
        self.keys: list[str] = []
        self.replicas = 0

    def submit(self, group: Any, items: list[dict[str, Any]], keys: list[str],
               prompts: list[str], tag: Any = None) -> Chunk | None:
        """Start generating the missing outputs of these input rows on ``group`` (without
        waiting); None when nothing is missing (their rows: :meth:`rows_of`)."""
        self.keys += keys
        self.progress.total = len(self.keys)
        work = self.missing(keys, prompts, items)
        if not work:
            return None
        live = live_group(group)
        self.replicas = max(self.replicas, len(live))
        chunk = Chunk(self, work, tag=tag,
                      timeout_s=getattr(live, "stall_timeout_s", None) or 1800.0,
                      local=getattr(live, "local", False))
        by_count: dict[int, list[int]] = {}
        for i, w in enumerate(work):
            by_count.setdefault(len(w["idxs"]), []).append(i)
        for count, members in sorted(by_count.items()):
            refs = live.submit_generate([work[i]["prompt"] for i in members],
                                        replace(self.params, n=count))
            chunk.calls.append((members, refs))
        return chunk

    def land(self, chunk: Chunk) -> list[dict[str, Any]]:
        """Collect a finished chunk, write it as one part; returns its output rows."""
        from raysys.distributed.actors import wait_results

        completions: list[Any] = [[] for _ in chunk.work]
        for members, refs in chunk.calls:
            if chunk.local:
                parts = refs
            else:
                with named_stall(self.label):
                    parts = wait_results(refs, chunk.timeout_s, "generate")
            out = [c for part in parts for c in part]
            for i, comps in zip(members, out, strict=True):
                completions[i] = comps
        table = build_output(self.spec, chunk.work, completions)
        self.write(table)
        return table.to_pylist()

    def close(self, summarize: Callable[[pa.Table], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Check every row of every key submitted is there; write the manifest (once)."""
        return self.seal(self.keys, time.perf_counter() - self._t0, self.replicas,
                         summarize=summarize, extra={"streamed": True})


def run_streams(first: list[Chunk | None], on_landed: Callable[[Chunk, list[dict]], list[Chunk | None]]
                ) -> None:
    """Wait on every chunk in flight; as each lands, ``on_landed(chunk, rows)`` may return the
    downstream chunks it submitted (None entries are chunks with nothing to generate, already
    handled by the callback). Returns when nothing is in flight. Chunks of local groups
    (generated when submitted) land first, in submission order, without Ray."""
    inflight = [c for c in first if c is not None]
    while inflight:
        done = next((c for c in inflight if c.local), None)
        if done is not None:         # generated in this process already: land in order
            inflight = [c for c in inflight if c is not done]
            inflight += [c for c in on_landed(done, done.stream.land(done)) if c is not None]
            continue
        import ray

        owner = {r.binary(): c for c in inflight for r in c.refs}
        timeout = min(c.timeout_s for c in inflight)
        ready, _ = ray.wait([r for c in inflight for r in c.refs], num_returns=1, timeout=timeout)
        if not ready:
            stages = sorted({c.stream.label for c in inflight})
            raise StageError(f"stage(s) {', '.join(stages)}: no chunk finished for {timeout:g} s "
                             "(cluster.stall_timeout_s); a replica or its engine is hung (see the "
                             "Ray dashboard / actor logs)")
        chunk = owner[ready[0].binary()]
        ray.wait(chunk.refs, num_returns=len(chunk.refs))   # the rest of this chunk, if any
        inflight = [c for c in inflight if c is not chunk]
        rows = chunk.stream.land(chunk)
        inflight += [c for c in on_landed(chunk, rows) if c is not None]
