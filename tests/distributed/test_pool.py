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


def test_sample_problems_on_a_long_lived_pool_resumes_and_equals_the_reference(
        ray_cluster: dict[str, str], varied_model_dir: Path, problems: pa.Table,
        greedy_reference: Any, tmp_path: Path) -> None:
    from raysys.config import SamplingConfig
    from raysys.data.io import is_complete
    from raysys.distributed.actors import SamplerActor
    from raysys.distributed.roles import RoleGroups
    from raysys.distributed.sampling import load_samples, sample_problems
    from raysys.errors import StageError

    model = ModelSpec(path=str(varied_model_dir))
    engine, cluster = EngineConfig(kind="hf"), ClusterConfig(replicas=2, batch_size=1)

    def run(out: Path, pool: Any, on_part: Any = None, m: ModelSpec = model) -> dict:
        return sample_problems(problems, model=m, engine=engine, cluster=cluster,
                               sampling=SamplingConfig(n=2, max_new_tokens=MAX_NEW), out_dir=out,
                               model_name="tiny", pool=pool, on_part=on_part)

    class Interrupt(Exception):
        pass

    def stop(part: Path) -> None:
        raise Interrupt(part)

    reference = greedy_reference(MAX_NEW)
    with RoleGroups(cluster) as groups:
        # a lazy handle on the sampler role (what StepContext.group gives a recipe)
        pool = lambda: groups.get("sampler", SamplerActor, model, engine)   # noqa: E731
        assert groups.live("sampler") is None
        with pytest.raises(Interrupt):
            run(tmp_path / "s", pool, stop)        # one part (2 problems x 2 samples), unsealed
        assert groups.live("sampler") is not None and not is_complete(tmp_path / "s")
        first = pool().ping()
        manifest = run(tmp_path / "s", pool)      # the same replicas finish the stage
        assert [p["pid"] for p in pool().ping()] == [p["pid"] for p in first]
        with pytest.raises(StageError, match="sampler pool serves"):
            run(tmp_path / "other", groups.live("sampler"),
                m=ModelSpec(path=str(varied_model_dir) + "-base"))
    samples = load_samples(tmp_path / "s")
    assert manifest["rows"] == samples.num_rows == problems.num_rows * 2
    assert manifest["metrics"]["rows_generated"] == problems.num_rows * 2 - 4
    assert sorted(manifest["metrics"]["nodes"]) == sorted(ray_cluster.values())
    assert {(r["problem_id"], r["sample_idx"]): r["completion"] for r in samples.to_pylist()} == {
        (pid, i): reference[pid] for pid in problems.column("id").to_pylist() for i in range(2)}
    # A sealed stage starts nothing: the lazy handle is never called.
    with RoleGroups(cluster) as idle:
        assert run(tmp_path / "s", lambda: idle.get("sampler", SamplerActor, model, engine)) \
            == manifest and idle.live("sampler") is None
