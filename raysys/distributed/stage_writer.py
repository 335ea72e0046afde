"""Writing one stage's table as parts: the contract every generation and map stage keeps.

A stage dir holds ``_REQUEST.json`` (the fingerprint of what was asked: a different request on
the same dir is a ``StageError``), parquet parts named per invocation (a resumed run never
overwrites an earlier part), and ``_MANIFEST.json`` written last. Output rows map back to their
``(input key, index)`` through the :class:`GenerationSpec`, so resume generates only what is
missing and finalising checks every expected row is there (duplicates compacted away).

:class:`Stage` is that contract as one object (claim -> missing work -> write part -> seal),
used by batch generation (``generation.run_generation``), row mapping (``generation.run_map``)
and streaming (``streaming.StageStream``) alike; :func:`live_group` is the one place a role
group given as "a group, or a callable that starts one" is resolved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raysys.data.io import (DataError, atomic_write_json, is_complete, read_manifest, read_stage,
                            write_manifest, write_part)
from raysys.engines.base import Completion
from raysys.errors import StageError

log = logging.getLogger(__name__)

REQUEST_FILE = "_REQUEST.json"
RowBuilder = Callable[[list[dict[str, Any]], list[list[Completion]]], list[dict[str, Any]]]


@dataclass(frozen=True)
class GenerationSpec:
    """What a generation stage makes of its input rows.

    ``rows(work, completions)`` turns work rows (``key``, ``prompt``, ``item`` = the input row,
    ``idxs`` = the missing indices) and their completions (one list per work row, one completion
    per index) into output rows of ``kind``; it runs inside the engine actors on the Ray Data
    path and on the driver with an actor group, so it must be picklable (a module-level
    function or a ``functools.partial`` of one). Each output row must map back to its
    ``(input key, index)``: through ``key_columns`` (two output columns holding them), or through
    ``key`` (a function of the output row) when the input key is not a column.
    """

    kind: str
    rows: RowBuilder
    key_columns: tuple[str, str] = ("problem_id", "sample_idx")
    key: Callable[[dict[str, Any]], tuple[str, int]] | None = None


def row_keys(table: pa.Table, spec: GenerationSpec) -> list[tuple[str, int]]:
    """The ``(input key, index)`` of every output row, in table order."""
    if spec.key is not None:
        return [spec.key(r) for r in table.to_pylist()]
    k, i = spec.key_columns
    return list(zip(table.column(k).to_pylist(), table.column(i).to_pylist()))


def done_keys(table: pa.Table, spec: GenerationSpec) -> set[tuple[str, int]]:
    """The ``(key, index)`` pairs present in ``table``."""
    return set(row_keys(table, spec))


def dedupe_rows(table: pa.Table, spec: GenerationSpec) -> pa.Table:
    """Keep the first row of each ``(key, index)``; order is otherwise kept."""
    seen: set[tuple[str, int]] = set()
    keep = []
    for n, key in enumerate(row_keys(table, spec)):
        if key not in seen:
            seen.add(key)
            keep.append(n)
    return table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))


def sort_rows(table: pa.Table, spec: GenerationSpec, order: list[str] | None = None) -> pa.Table:
    """Rows in key order (``order``, else by key), then by index."""
    keys = row_keys(table, spec)
    if order is None:
        ranked = keys
    else:
        rank = {key: n for n, key in enumerate(order)}
        ranked = [(rank.get(a, len(rank)), b) for a, b in keys]
    return table.take(pa.array(sorted(range(len(keys)), key=ranked.__getitem__), pa.int64()))


def missing_items(keys: list[str], prompts: list[str], items: list[dict[str, Any]], n: int,
                  done: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """One work row per input row that still lacks outputs, listing the missing indices."""
    work = []
    for key, prompt, item in zip(keys, prompts, items):
        idxs = [i for i in range(n) if (key, i) not in done]
        if idxs:
            work.append({"key": key, "prompt": prompt, "item": json.dumps(item, default=str),
                         "idxs": idxs})
    return work


def request_fingerprint(request: dict[str, Any]) -> str:
    """Stable hash of what a stage was asked to produce (to refuse mixing two requests)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Progress:
    """Running totals the driver logs as parts land (accuracy where rows are graded)."""

    def __init__(self, spec: GenerationSpec, n: int, total: int, existing: pa.Table | None,
                 label: str = "generation") -> None:
        self.spec, self.n, self.total, self.label = spec, n, total, label
        self.counts: dict[str, int] = {}
        self.correct = self.graded = self.new_rows = self.new_tokens = 0
        self.engine_s = 0.0
        self.nodes: set[str] = set()
        if existing is not None:
            self._add(existing)
        # rate and ETA count this invocation's rows only (a resumed stage starts part done)
        self.t0 = time.monotonic()
        self.start_done = self.done()

    def _add(self, t: pa.Table) -> None:
        for key, _ in row_keys(t, self.spec):
            self.counts[key] = self.counts.get(key, 0) + 1
        if "correct" in t.column_names:
            correct = t.column("correct")
            self.graded += len(correct) - correct.null_count
            self.correct += int(pc.sum(correct.cast(pa.int64())).as_py() or 0)

    def add(self, t: pa.Table) -> None:
        self._add(t)
        self.new_rows += t.num_rows
        if "num_tokens" in t.column_names:
            self.new_tokens += int(pc.sum(t.column("num_tokens")).as_py() or 0)

    def done(self) -> int:
        """Input rows with all ``n`` outputs present."""
        return sum(1 for c in self.counts.values() if c >= self.n)

    def line(self, now: float | None = None) -> str:
        """``label: done/total rows (pct%), rate rows/s, ETA t[, accuracy so far a%]``."""
        from raysys.console import progress_text

        elapsed = (time.monotonic() if now is None else now) - self.t0
        acc = f", accuracy so far {100 * self.correct / self.graded:.1f}%" if self.graded else ""
        return progress_text(self.label, self.done(), self.total, elapsed,
                             start_done=self.start_done) + acc


def stage_metrics(table: pa.Table, progress: Progress, t_generate: float, replicas: int) -> dict[str, Any]:
    metrics: dict[str, Any] = {"rows": table.num_rows}
    metrics.update({
        "tokens_generated": progress.new_tokens,
        "rows_generated": progress.new_rows,
        "tokens_per_s": round(progress.new_tokens / t_generate, 2) if t_generate > 0 else 0.0,
        # Engine time summed over replicas: throughput without actor start-up and scheduling.
        "engine_s": round(progress.engine_s, 3),
        "tokens_per_engine_s": (round(progress.new_tokens / progress.engine_s, 2)
                                if progress.engine_s > 0 else 0.0),
        "replicas": replicas,
        "nodes": sorted(progress.nodes),
    })
    return metrics


def claim(out: Path, request: dict[str, Any]) -> None:
    """Record the request on first use of ``out``; refuse a different request on resume."""
    fp = request_fingerprint(request)
    path = out / REQUEST_FILE
    if path.is_file():
        old = json.loads(path.read_text()).get("fingerprint")
        if old != fp:
            raise StageError(f"{out}: holds outputs of a different request (model, sampling, prompts or "
                             "inputs changed); use a new output directory or delete this one")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"fingerprint": fp, "request": request})


def run_id() -> str:
    """Names this invocation's parts, so a resumed run never overwrites an earlier part."""
    return f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"


def land_part(out: Path, name: str, table: pa.Table, progress: Progress, kind: str,
               on_part: Callable[[Path], None] | None) -> None:
    """Write one result batch as a part, count it, log progress, call the hook."""
    part = write_part(out, name, table, kind)
    progress.add(table)
    log.info(progress.line())
    if on_part is not None:
        on_part(part)


def finalize_parts(out: Path, spec: GenerationSpec, keys: list[str], n: int) -> pa.Table:
    """Check every expected row is present; compact the parts if a row was written twice."""
    raw = read_stage(out, spec.kind)
    table = dedupe_rows(raw, spec)
    expected = {(k, i) for k in keys for i in range(n)}
    have = done_keys(table, spec)
    if have != expected:
        missing = sorted(expected - have)[:5]
        raise StageError(f"{out}: {len(expected - have)} outputs missing after generation "
                         f"(e.g. {missing}); re-run to finish the stage")
    table = sort_rows(table, spec, keys)
    if table.num_rows != raw.num_rows:
        # Duplicates (e.g. two drivers on one dir): one compact part, written before the old
        # ones go, so a crash in between leaves duplicates that reading dedupes, never a gap.
        old = sorted(out.glob("part-*.parquet"))
        new = write_part(out, f"compact-{uuid.uuid4().hex[:6]}", table, spec.kind)
        for p in old:
            if p != new:
                p.unlink()
    return table


def load_generated(out_dir: str | Path, spec: GenerationSpec) -> pa.Table:
    """Read a generation stage: deduplicated on its key columns, sorted."""
    return sort_rows(dedupe_rows(read_stage(out_dir, spec.kind), spec), spec)


def live_group(group: Any) -> Any:
    """A role group given as the group itself (it has ``generate`` or ``map``) or as a
    zero-argument callable that starts it (a lazy handle: called only when there is work)."""
    if hasattr(group, "generate") or hasattr(group, "map"):
        return group
    return group()


class Stage:
    """One stage dir being written: ``claim`` its request (a different request on the dir is a
    ``StageError``), the :meth:`missing` work of a resumed stage, each result batch
    :meth:`write` -n as a part, and :meth:`seal` (every expected row present, manifest last).

    ``n`` outputs per input key; ``label`` names the stage in progress lines and live metrics;
    ``on_part(path)`` runs after each part is written."""

    def __init__(self, out_dir: str | Path, spec: GenerationSpec, n: int, request: dict[str, Any],
                 label: str, *, on_part: Callable[[Path], None] | None = None) -> None:
        self.out, self.spec, self.n, self.label = Path(out_dir), spec, n, label
        self.request, self.on_part = request, on_part
        claim(self.out, request)
        self.sealed = is_complete(self.out)
        # rows already written (a resumed stage; a sealed one only when asked: rows_of)
        self._existing: pa.Table | None = None
        self.progress = Progress(spec, n, 0, None if self.sealed else self.existing, label)
        self._run_id, self._parts = run_id(), 0
        self._t0 = time.perf_counter()

    @classmethod
    def open(cls, out_dir: str | Path, items: list[dict[str, Any]], keys: list[str],
             spec: GenerationSpec, n: int, request: dict[str, Any], label: str,
             what: str = "generate for", **kwargs: Any) -> Stage:
        """Check the input rows (non-empty, unique keys: duplicates would merge outputs), then
        claim the stage for them."""
        out = Path(out_dir)
        if not items:
            raise DataError(f"{out}: empty input (no rows to {what})")
        if len(set(keys)) != len(keys):
            raise DataError(f"{out}: input keys must be unique (duplicates would merge outputs)")
        stage = cls(out, spec, n, request, label, **kwargs)
        stage.progress.total = len(keys)
        if stage.sealed:
            log.info("stage %s is complete; skipping", out)
        return stage

    @property
    def existing(self) -> pa.Table:
        """The rows on disk (deduplicated), read once."""
        if self._existing is None:
            self._existing = dedupe_rows(read_stage(self.out, self.spec.kind), self.spec)
        return self._existing

    def done(self) -> set[tuple[str, int]]:
        """The ``(key, index)`` pairs on disk when the stage was opened."""
        return done_keys(self.existing, self.spec)

    def missing(self, keys: list[str], prompts: list[str],
                items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Work rows for the input rows that still lack outputs (none when sealed)."""
        if self.sealed:
            return []
        return missing_items(keys, prompts, items, self.n, self.done())

    def rows_of(self, keys: list[str]) -> list[dict[str, Any]]:
        """Rows already on disk for input ``keys`` (a resumed or sealed stage)."""
        wanted = set(keys)
        return [r for r, (k, _) in zip(self.existing.to_pylist(), row_keys(self.existing, self.spec))
                if k in wanted]

    def begin(self) -> None:
        """Start the clock of this invocation's rates; publish progress (live metrics)."""
        self._t_live = time.perf_counter()
        report_live(self.progress, self.out, self._t_live)

    def write(self, table: pa.Table) -> None:
        """One result batch as this invocation's next part; counts it, logs and publishes
        progress, calls ``on_part``."""
        land_part(self.out, f"{self._run_id}-{self._parts:05d}", table, self.progress,
                  self.spec.kind, self.on_part)
        self._parts += 1
        report_live(self.progress, self.out, getattr(self, "_t_live", self._t0))

    def seal(self, keys: list[str], seconds: float, replicas: int, *,
             summarize: Callable[[pa.Table], dict[str, Any]] | None = None,
             extra: dict[str, Any] | None = None,
             timings: dict[str, float] | None = None) -> dict[str, Any]:
        """Check every ``(key, index)`` of ``keys`` is there, write the manifest (its metrics:
        ``summarize(table)``, throughput over ``seconds`` of work on ``replicas``, ``extra``,
        and ``timings`` with this finalisation's seconds as ``wall_s``). A sealed stage
        returns its manifest untouched."""
        if self.sealed:
            return read_manifest(self.out) or {}
        t0 = time.perf_counter()
        table = finalize_parts(self.out, self.spec, keys, self.n)
        metrics = {**(summarize(table) if summarize else {}),
                   **stage_metrics(table, self.progress, seconds, replicas), **(extra or {})}
        if timings is not None:
            metrics["wall_s"] = {**timings, "finalize": round(time.perf_counter() - t0, 3)}
        manifest = write_manifest(self.out, self.spec.kind, extra={
            "metrics": metrics, "request": request_fingerprint(self.request)})
        self.sealed = True
        log.info("%s; wrote %d rows to %s", self.progress.line(), manifest["rows"], self.out)
        return manifest


def report_live(progress: Progress, out: Path, t_start: float) -> None:
    """Publish the stage's progress as live metrics (Ray dashboard / Prometheus, tagged with
    the stage label and run): rows done of total, output rows and tokens per second since
    ``t_start`` (``time.perf_counter()``). A no-op without Ray."""
    from raysys.pipeline.live_metrics import run_name, stage_progress

    elapsed = time.perf_counter() - t_start
    done = progress.done()
    per_s = 1.0 / elapsed if elapsed > 0 else 0.0
    # A map stage counts no tokens: no tokens/s series rather than a flat zero.
    stage_progress(progress.label, done, progress.total, progress.new_rows * per_s,
                   progress.new_tokens * per_s if progress.new_tokens else None, run=run_name(out))
