"""Streaming between roles on a real local Ray: two chained stages on two actor groups (a
"critic" stage fed chunk by chunk as the "actor" stage's samples land), equal to the same stages
run with barriers (greedy), resumed after a partial first stage without duplicate rows."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from raysys.config import ClusterConfig, EngineConfig, ModelSpec
from raysys.distributed.actors import SamplerPool
from raysys.distributed.generation import GenerationSpec, load_generated, run_generation
from raysys.distributed.sampling import load_samples, samples_spec
from raysys.distributed.streaming import StageStream, run_streams
from raysys.engines.base import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

N = 12
QUESTIONS = {f"q{i}": f"What is {i} + {i + 1}?" for i in range(N)}


def echo_rows(work: list[dict], completions: list[list[Any]]) -> list[dict]:
    """Second-stage rows ("critiques" of each first-stage sample)."""
    return [{"problem_id": w["item"]["problem_id"], "sample_idx": w["item"]["sample_idx"],
             "critique": c.text} for w, comps in zip(work, completions) for c in comps]


def _key(row: dict) -> tuple[str, int]:
    return f"{row['problem_id']}#{row['sample_idx']}", 0


SPEC2 = GenerationSpec("critiques", echo_rows, key=_key)


def _second(samples: list[dict]) -> tuple[list[dict], list[str], list[str]]:
    items = [{"problem_id": s["problem_id"], "sample_idx": s["sample_idx"]} for s in samples]
    keys = [f"{s['problem_id']}#{s['sample_idx']}" for s in samples]
    prompts = [f"Check: {s['completion']}\n" for s in samples]
    return items, keys, prompts


@pytest.fixture(scope="module")
def groups(tiny_model_dir: Path):
    import ray

    from raysys.distributed.ray_init import dashboard_init_kwargs  # no stray 8265 State API
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             log_to_driver=False, **dashboard_init_kwargs(False))
    engine = EngineConfig(kind="hf", batch_size=8)
    cluster = ClusterConfig(cpus_per_replica=0.5)
    model = ModelSpec(path=str(tiny_model_dir))
    actor, critic = SamplerPool(1, model, engine, cluster), SamplerPool(1, model, engine, cluster)
    yield actor, critic
    actor.shutdown()
    critic.shutdown()
    ray.shutdown()


def _streamed(out: Path, actor: Any, critic: Any, chunk: int = 4) -> None:
    params = SamplingParams(n=2, max_new_tokens=8)
    s = StageStream(out / "samples", samples_spec("default", "m", 0), params, {"v": 1}, "samples")
    c = StageStream(out / "critiques", SPEC2, SamplingParams(max_new_tokens=6), {"v": 1}, "critiques")

    def downstream(rows: list[dict]) -> list:
        items, keys, prompts = _second(rows)
        return [c.submit(critic, items, keys, prompts)]

    def on_landed(ch: Any, rows: list[dict]) -> list:
        return downstream(rows + ch.stream.rows_of([w["key"] for w in ch.work])) if ch.stream is s else []
    first = []
    ids = list(QUESTIONS)
    for i in range(0, N, chunk):
        part = ids[i:i + chunk]
        ch = s.submit(actor, [{"gold_answer": None}] * len(part), part,
                      [f"Question: {QUESTIONS[p]}\nAnswer:" for p in part])
        first += [ch] if ch else downstream(s.rows_of(part))
    run_streams(first, on_landed)
    s.close()
    c.close()


def test_streamed_stages_equal_barrier_stages_and_resume(groups: Any, tmp_path: Path) -> None:
    actor, critic = groups
    # barriers: all samples, then all critiques, with the same prompts and greedy decoding
    ref = tmp_path / "ref"
    ids = list(QUESTIONS)
    run_generation([{"gold_answer": None}] * N, keys=ids,
                   prompts=[f"Question: {QUESTIONS[p]}\nAnswer:" for p in ids],
                   spec=samples_spec("default", "m", 0), params=SamplingParams(n=2, max_new_tokens=8),
                   out_dir=ref / "samples", request={"v": 1}, cluster=ClusterConfig(), group=actor)
    items, keys, prompts = _second(load_samples(ref / "samples").to_pylist())
    run_generation(items, keys=keys, prompts=prompts, spec=SPEC2,
                   params=SamplingParams(max_new_tokens=6), out_dir=ref / "critiques",
                   request={"v": 1}, cluster=ClusterConfig(), group=critic)

    got = tmp_path / "got"
    _streamed(got, actor, critic)
    assert load_samples(got / "samples").select(["problem_id", "sample_idx", "completion"]).equals(
        load_samples(ref / "samples").select(["problem_id", "sample_idx", "completion"]))
    assert load_generated(got / "critiques", SPEC2).equals(load_generated(ref / "critiques", SPEC2))

    # a run killed after the first samples chunk: the re-run fills the gaps, no duplicates
    part = tmp_path / "part"
    run_generation([{"gold_answer": None}] * 4, keys=ids[:4],
                   prompts=[f"Question: {QUESTIONS[p]}\nAnswer:" for p in ids[:4]],
                   spec=samples_spec("default", "m", 0), params=SamplingParams(n=2, max_new_tokens=8),
                   out_dir=part / "samples", request={"v": 1}, cluster=ClusterConfig(), group=actor)
    (part / "samples" / "_MANIFEST.json").unlink()      # as if killed before sealing
    _streamed(part, actor, critic)
    assert load_generated(part / "critiques", SPEC2).equals(load_generated(ref / "critiques", SPEC2))
    assert load_samples(part / "samples").num_rows == 2 * N
