"""The generic generation stage on rows that are not problems (critique-shaped input), in
process (``LocalGroup`` over a real HFEngine on the tiny model): output kind, resume after a kill
without duplicates, equality with an uninterrupted run, and the request fingerprint."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from raysys.config import ClusterConfig
from raysys.data.io import is_complete, read_stage
from raysys.distributed.generation import (GenerationSpec, LocalGroup, load_generated,
                                           run_generation)
from raysys.engines.base import Completion, SamplingParams
from raysys.errors import StageError

ITEMS = [{"problem_id": f"p{i}", "sample_idx": s, "question": f"What is {i} + {s}?",
          "solution": f"{i}+{s}={i + s}\n#### {i + s}"} for i in range(5) for s in range(2)]


def critique_rows(work: list[dict[str, Any]], completions: list[list[Completion]],
                  *, tag: str) -> list[dict[str, Any]]:
    """(question, solution) rows -> one ``critiques`` row per completion."""
    out = []
    for w, comps in zip(work, completions):
        for idx, c in zip(w["idxs"], comps):
            assert idx == 0
            out.append({"problem_id": w["item"]["problem_id"], "sample_idx": w["item"]["sample_idx"],
                        "critique": f"{tag}:{c.text}", "verdict": None})
    return out


def _spec(tag: str = "c") -> GenerationSpec:
    # The input key (problem, solution) is not one column: the spec maps rows back by a function.
    return GenerationSpec("critiques", partial(critique_rows, tag=tag),
                          key=lambda r: (f"{r['problem_id']}#{r['sample_idx']}", 0))


def _run(out: Path, group: LocalGroup, spec: GenerationSpec, *, stop_after: int | None = None,
         request: dict[str, Any] | None = None) -> dict[str, Any]:
    parts: list[Path] = []

    def on_part(p: Path) -> None:
        parts.append(p)
        if stop_after is not None and len(parts) >= stop_after:
            raise KeyboardInterrupt("killed after a part")   # what a kill leaves behind
    keys = [f"{r['problem_id']}#{r['sample_idx']}" for r in ITEMS]
    prompts = [f"Question: {r['question']}\nSolution: {r['solution']}\nCritique:" for r in ITEMS]
    return run_generation(ITEMS, keys=keys, prompts=prompts, spec=spec,
                          params=SamplingParams(max_new_tokens=6), out_dir=out,
                          request=request or {"v": 1}, cluster=ClusterConfig(batch_size=3),
                          group=lambda: group, on_part=on_part)


@pytest.fixture(scope="module")
def group(tiny_model_dir: Path) -> LocalGroup:
    from raysys.engines.hf import HFEngine

    return LocalGroup(HFEngine(str(tiny_model_dir), batch_size=4))


def test_non_problem_rows_resume_after_a_kill_and_equal_an_uninterrupted_run(
        group: LocalGroup, tmp_path: Path) -> None:
    ref = _run(tmp_path / "ref", group, _spec())
    assert ref["kind"] == "critiques" and ref["rows"] == len(ITEMS)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "run", group, _spec(), stop_after=1)
    assert not is_complete(tmp_path / "run")
    partial_rows = read_stage(tmp_path / "run", "critiques").num_rows
    assert 0 < partial_rows < len(ITEMS)            # one batch of 3 landed, then the kill
    resumed = _run(tmp_path / "run", group, _spec())
    assert resumed["metrics"]["rows_generated"] == len(ITEMS) - partial_rows
    a, b = load_generated(tmp_path / "ref", _spec()), load_generated(tmp_path / "run", _spec())
    assert a.num_rows == b.num_rows == len(ITEMS)     # no duplicate rows after the resume
    assert a.to_pylist() == b.to_pylist()
    # rows follow the input order, each critique is "c:<greedy text>" of its own prompt
    assert [(r["problem_id"], r["sample_idx"]) for r in b.to_pylist()] == \
        [(r["problem_id"], r["sample_idx"]) for r in ITEMS]
    assert all(r["critique"].startswith("c:") for r in b.to_pylist())


def test_sealed_stage_is_returned_without_generating(group: LocalGroup, tmp_path: Path) -> None:
    first = _run(tmp_path / "s", group, _spec())

    class Refuses:
        def __call__(self) -> LocalGroup:
            raise AssertionError("a sealed stage must not start its group")
    keys = [f"{r['problem_id']}#{r['sample_idx']}" for r in ITEMS]
    again = run_generation(ITEMS, keys=keys, prompts=["x"] * len(ITEMS), spec=_spec(),
                           params=SamplingParams(max_new_tokens=6), out_dir=tmp_path / "s",
                           request={"v": 1}, cluster=ClusterConfig(), group=Refuses())
    assert again == first


def test_a_different_request_on_the_same_dir_is_refused(group: LocalGroup, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "s", group, _spec(), stop_after=1)
    with pytest.raises(StageError, match="different request"):
        _run(tmp_path / "s", group, _spec(), request={"v": 2})


def test_duplicate_input_keys_are_an_error(group: LocalGroup, tmp_path: Path) -> None:
    from raysys.data.io import DataError

    with pytest.raises(DataError, match="keys must be unique"):
        run_generation(ITEMS[:2], keys=["a", "a"], prompts=["x", "y"], spec=_spec(),
                       params=SamplingParams(), out_dir=tmp_path / "d", request={},
                       cluster=ClusterConfig(), group=group)
    assert not (tmp_path / "d").exists()


def test_samples_keep_their_column_keys(tmp_path: Path) -> None:
    """The samples spec maps rows back through its key columns (no function)."""
    from raysys.distributed.generation import dedupe_rows, sort_rows
    from raysys.distributed.sampling import samples_spec
    from raysys.data.schema import conform

    t = conform([{"problem_id": p, "sample_idx": i, "prompt": "q", "completion": c}
                 for p, i, c in [("b", 1, "x"), ("a", 0, "y"), ("b", 1, "dup"), ("b", 0, "z")]],
                "samples")
    spec = samples_spec("default", "m", 0)
    d = dedupe_rows(t, spec)
    assert d.column("completion").to_pylist() == ["x", "y", "z"]
    assert sort_rows(d, spec, ["b", "a"]).column("completion").to_pylist() == ["z", "x", "y"]
    assert isinstance(d, pa.Table)
