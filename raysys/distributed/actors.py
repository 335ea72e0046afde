"""Long-lived sampler actors: a model stays loaded across the iterations of a recipe loop.

``SamplerPool`` places ``n`` :class:`SamplerActor` replicas with one placement group (one
bundle per replica, strategy from ``ClusterConfig``). Actors restart after a crash
(``max_restarts``) and Ray retries the in-flight calls (``max_task_retries``). Every call
carries the weights it expects, so a restarted actor (which re-runs its constructor with the
original model) reloads trained weights before answering instead of silently using stale ones.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from raysys.config import ClusterConfig, EngineConfig, ModelSpec
from raysys.engines.base import Completion, SamplingParams
from raysys.errors import StageError

log = logging.getLogger(__name__)

Weights = tuple[str, str | None]   # (model_path, adapter)

PLACEMENT_TIMEOUT_S = 120.0


def split_even(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` ranges covering ``range(total)``; sizes differ by <= 1.

    Empty ranges are dropped, so fewer than ``parts`` ranges come back when ``total < parts``.
    """
    if parts < 1:
        raise ValueError(f"parts: expected >= 1, got {parts}")
    base, extra = divmod(total, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        if size:
            out.append((start, start + size))
        start += size
    return out


def replica_bundle(cluster: ClusterConfig) -> dict[str, float]:
    """One placement-group bundle for a replica; zero-sized resources are left out."""
    bundle = {"CPU": float(cluster.cpus_per_replica)}
    if cluster.gpus_per_replica > 0:
        bundle["GPU"] = float(cluster.gpus_per_replica)
    return bundle


class SamplerActor:
    """Holds one engine. Wrapped with ``ray.remote`` by :class:`SamplerPool`."""

    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        from raysys.engines import make_engine

        self._engine = make_engine(model, engine)
        self._weights: Weights = (model.path, model.adapter)

    def generate(self, prompts: list[str], params: SamplingParams,
                 weights: Weights | None = None) -> list[list[Completion]]:
        """Generate for ``prompts``; first switch to ``weights`` if they differ from ours."""
        if weights is not None and tuple(weights) != self._weights:
            self.load_weights(*weights)
        return self._engine.generate(prompts, params)

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        """Serve new weights (a trained model dir or a LoRA adapter) in place."""
        self._engine.load_weights(model_path, adapter)
        self._weights = (model_path, adapter)

    def ping(self) -> dict[str, Any]:
        """Where this replica runs and which weights it serves."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "model_path": self._weights[0], "adapter": self._weights[1]}


class SamplerPool:
    """``n`` sampler replicas in one placement group; ``generate`` keeps prompt order."""

    def __init__(self, n: int, model: ModelSpec, engine: EngineConfig,
                 cluster: ClusterConfig | None = None) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from raysys.distributed.ray_init import init_ray

        if n < 1:
            raise ValueError(f"SamplerPool: expected n >= 1, got {n}")
        cluster = cluster or ClusterConfig()
        init_ray(cluster)
        self._weights: Weights = (model.path, model.adapter)
        bundle = replica_bundle(cluster)
        self._pg = placement_group([dict(bundle) for _ in range(n)],
                                   strategy=cluster.placement_strategy)
        ready, _ = ray.wait([self._pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            ray.util.remove_placement_group(self._pg)
            raise StageError(
                f"cluster: cannot place {n} sampler replicas of {bundle} with strategy "
                f"{cluster.placement_strategy} (cluster has {ray.cluster_resources()})")
        remote_cls = ray.remote(SamplerActor)
        self.actors = [
            remote_cls.options(
                num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0),
                max_restarts=cluster.max_restarts,
                # Bounded like restarts: a prompt that crashes the engine every time must surface.
                max_task_retries=max(cluster.max_restarts, 0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=i),
            ).remote(model, engine)
            for i in range(n)
        ]
        where = ray.get([a.ping.remote() for a in self.actors])   # start-up errors surface here
        log.info("sampler pool: %d replicas of %s on %d node(s)", n, model.path,
                 len({w["node_id"] for w in where}))

    def __len__(self) -> int:
        return len(self.actors)

    @property
    def weights(self) -> Weights:
        """``(model_path, adapter)`` the replicas serve now."""
        return self._weights

    def submit(self, prompts: list[str], params: SamplingParams) -> list[Any]:
        """Start generating without waiting: one ``ObjectRef`` per replica chunk, in order.

        Each chunk gets its own seed offset so sampled chunks are not copies of one another;
        greedy output does not depend on the split. :meth:`gather` turns the refs into results.
        """
        refs = []
        for i, (start, end) in enumerate(split_even(len(prompts), len(self.actors))):
            chunk_params = params if params.seed is None else replace(params, seed=params.seed + start)
            refs.append(self.actors[i].generate.remote(prompts[start:end], chunk_params, self._weights))
        return refs

    @staticmethod
    def gather(refs: list[Any]) -> list[list[Completion]]:
        """Wait for :meth:`submit`'s refs; completions in prompt order."""
        import ray

        out: list[list[Completion]] = []
        for part in ray.get(refs):
            out.extend(part)
        return out

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """Split ``prompts`` across replicas and return their completions in prompt order."""
        return self.gather(self.submit(prompts, params))

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        """Make every replica serve new weights (restarted replicas catch up on their next call)."""
        import ray

        self._weights = (model_path, adapter)
        ray.get([a.load_weights.remote(model_path, adapter) for a in self.actors])

    def ping(self) -> list[dict[str, Any]]:
        """``SamplerActor.ping`` of every replica, in replica order."""
        import ray

        return ray.get([a.ping.remote() for a in self.actors])

    def shutdown(self) -> None:
        """Kill the replicas and free their placement group."""
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        ray.util.remove_placement_group(self._pg)

    def __enter__(self) -> SamplerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class OnDemandPool:
    """A :class:`SamplerPool` started on first :meth:`get`, so a resumed recipe whose stages
    are already complete starts no engine. ``with OnDemandPool(...) as p:`` stops it at the end
    (before a training stage needs the resources back)."""

    def __init__(self, n: int, model: ModelSpec, engine: EngineConfig,
                 cluster: ClusterConfig | None = None) -> None:
        self._args = (n, model, engine, cluster)
        self._pool: SamplerPool | None = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def get(self) -> SamplerPool:
        """The running pool (started now if it is not yet)."""
        if self._pool is None:
            self._pool = SamplerPool(*self._args)
        return self._pool

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> OnDemandPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
