"""Fixtures for the Ray tests: one small multi-node Ray cluster, problems, greedy references."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from raysys.config import ClusterConfig, DatasetSpec


STORE = 100 * 1024**2


@pytest.fixture(scope="package")
def _three_node_cluster() -> Iterator[str]:
    """A real 3-node Ray cluster on this machine (``ray.cluster_utils.Cluster``).

    The head has no CPUs (only the driver lives there); two worker nodes have 1 CPU each and a
    custom resource naming them, so "spread over nodes" is checked against real node ids.
    Yields its address. Shared by the package: starting it costs 10-50 s here.
    """
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE,
                                                       "include_dashboard": False})
    try:
        c.add_node(num_cpus=1, resources={"node_a": 1}, object_store_memory=STORE)
        c.add_node(num_cpus=1, resources={"node_b": 1}, object_store_memory=STORE)
        c.wait_for_nodes()
        yield c.address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(_three_node_cluster: str) -> dict[str, str]:
    """The driver connected to the package's 3-node cluster; ``{"node_a": id, "node_b": id}``.

    Module-scoped because the root conftest disconnects the driver after every module: a
    package-scoped connection would be gone in the next module, and ``init_ray`` there would
    silently start a fresh single-node Ray instead (CI caught exactly that).
    """
    import ray

    from raysys.distributed.ray_init import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(ClusterConfig(address=_three_node_cluster), dashboard=False)
    nodes = {res: n["NodeID"] for n in ray.nodes() if n["Alive"]
             for res in ("node_a", "node_b") if res in n["Resources"]}
    assert len(nodes) == 2
    assert sum(n["Alive"] for n in ray.nodes()) == 3     # this cluster, not a stray local one
    return nodes


@pytest.fixture(scope="module")
def problems() -> pa.Table:
    """Six synthetic arithmetic problems with gold answers."""
    from raysys.data.sources import load_problems

    return load_problems(DatasetSpec(name="synthetic", options={"n": 6, "seed": 3}))


def build_varied_model(out_dir: Path, seed: int) -> Path:
    """A tiny model whose greedy output depends on the prompt.

    A freshly initialised tiny model (std 0.02) greedily repeats one token for every prompt,
    which would make "equal to the reference" checks vacuous; scaling its matrices by 5 makes
    outputs differ per prompt.
    """
    import torch

    from raysys.models.loading import load_model, load_tokenizer, save_pretrained_atomic
    from raysys.models.tiny import build_tiny_model

    base = build_tiny_model(out_dir.with_name(out_dir.name + "-base"), seed=seed)
    model, tokenizer = load_model(str(base)), load_tokenizer(str(base))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.mul_(5.0)
    return Path(save_pretrained_atomic(model, tokenizer, out_dir))


@pytest.fixture(scope="package")
def varied_model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """``f(seed)`` -> a prompt-sensitive tiny model dir (built once per seed)."""
    built: dict[int, Path] = {}
    root = tmp_path_factory.mktemp("varied")

    def get(seed: int) -> Path:
        if seed not in built:
            built[seed] = build_varied_model(root / f"m{seed}", seed)
        return built[seed]

    return get


@pytest.fixture(scope="package")
def varied_model_dir(varied_model_factory: Callable[[int], Path]) -> Path:
    return varied_model_factory(0)


@pytest.fixture(scope="module")
def greedy_reference(varied_model_dir: Path, problems: pa.Table) -> Callable[[int], dict[str, str]]:
    """``f(max_new_tokens)`` -> {problem id: greedy zero-shot completion} from an in-process HF
    engine: what a single replica must produce."""
    from raysys.engines.base import SamplingParams
    from raysys.engines.hf import HFEngine
    from raysys.prompts import build_prompt, default_stop

    engine = HFEngine(str(varied_model_dir))
    prompts = [build_prompt(q, "zero_shot") for q in problems.column("question").to_pylist()]

    def run(max_new_tokens: int) -> dict[str, str]:
        out = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens,
                                                      stop=tuple(default_stop("zero_shot"))))
        return dict(zip(problems.column("id").to_pylist(), (c[0].text for c in out)))

    return run
