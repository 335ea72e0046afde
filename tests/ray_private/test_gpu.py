"""GPU replicas: Ray Data engine actors and SamplerActors asking for a whole GPU each.

Run on a CUDA machine with ``pytest -m gpu tests/ray_private/test_gpu.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from raysys.config import ClusterConfig, EngineConfig, ModelSpec, SamplingConfig

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def ray_gpu() -> Iterator[None]:
    import ray
    import torch

    from raysys.distributed.ray_init import init_ray

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if ray.is_initialized():
        ray.shutdown()
    init_ray(ClusterConfig(num_cpus=4), dashboard=False)
    yield
    ray.shutdown()


def test_gpu_replica_samples_every_row(ray_gpu: None, tiny_model_dir: Path, problems: pa.Table,
                                       tmp_path: Path) -> None:
    from raysys.distributed.sampling import load_samples, sample_problems

    manifest = sample_problems(
        problems, model=ModelSpec(path=str(tiny_model_dir)),
        engine=EngineConfig(kind="auto", gpu_memory_utilization=0.3),
        sampling=SamplingConfig(n=2, temperature=0.8, max_new_tokens=16),
        cluster=ClusterConfig(replicas=1, gpus_per_replica=1, cpus_per_replica=1), out_dir=tmp_path / "s")
    samples = load_samples(tmp_path / "s")
    assert manifest["rows"] == samples.num_rows == 2 * problems.num_rows
    assert manifest["metrics"]["tokens_generated"] > 0


def test_gpu_sampler_actor_sees_its_gpu(ray_gpu: None, tiny_model_dir: Path) -> None:
    from raysys.distributed.actors import SamplerPool
    from raysys.engines.base import SamplingParams

    with SamplerPool(1, ModelSpec(path=str(tiny_model_dir)), EngineConfig(kind="hf"),
                     ClusterConfig(gpus_per_replica=1, cpus_per_replica=1)) as pool:
        out = pool.generate(["Question: 1+1?\nAnswer:"] * 3, SamplingParams(max_new_tokens=8))
        assert len(out) == 3 and len({c[0].text for c in out}) == 1   # greedy: same prompt, same text
        assert len(pool.ping()[0]["gpu_ids"]) == 1
