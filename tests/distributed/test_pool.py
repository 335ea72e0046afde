"""SamplerPool on a real 3-node Ray cluster: placement across nodes, a killed replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from raysys.config import ClusterConfig, EngineConfig, ModelSpec
from raysys.distributed.actors import SamplerPool
from raysys.engines.base import SamplingParams
from raysys.prompts import build_prompt, default_stop

pytestmark = pytest.mark.slow

MAX_NEW = 24


def _prompts(problems: pa.Table) -> list[str]:
    return [build_prompt(q, "zero_shot") for q in problems.column("question").to_pylist()]


def _greedy(model_dir: Path, prompts: list[str], params: SamplingParams) -> list[str]:
    from raysys.engines.hf import HFEngine

    return [c[0].text for c in HFEngine(str(model_dir)).generate(prompts, params)]


def test_pool_spreads_replicas_and_survives_a_killed_actor(
        ray_cluster: dict[str, str], varied_model_factory: Any, problems: pa.Table) -> None:
    import ray

    prompts = _prompts(problems) * 2
    params = SamplingParams(max_new_tokens=MAX_NEW, stop=tuple(default_stop("zero_shot")))
    # New weights are loaded before the kill: the restarted replica (whose constructor loads the
    # original model again) must catch up before it answers the retried call.
    original, trained = varied_model_factory(0), varied_model_factory(1)
    expected = _greedy(trained, prompts, params)
    assert expected != _greedy(original, prompts, params)
    assert len(set(expected)) > 1
    with SamplerPool(2, ModelSpec(path=str(original)), EngineConfig(kind="hf", batch_size=2),
                     ClusterConfig(placement_strategy="STRICT_SPREAD", cpus_per_replica=1)) as pool:
        before = pool.ping()
        assert {p["node_id"] for p in before} == set(ray_cluster.values())
        pool.load_weights(str(trained))

        refs = pool.submit(prompts, params)
        ray.kill(pool.actors[0], no_restart=False)    # its chunk is in flight: Ray must retry it
        out = pool.gather(refs)

        assert [c[0].text for c in out] == expected
        after = pool.ping()
        assert after[0]["pid"] != before[0]["pid"]          # replica 0 really restarted
        assert after[1]["pid"] == before[1]["pid"]
        assert [p["model_path"] for p in after] == [str(trained)] * 2
