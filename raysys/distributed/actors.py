"""Role actor groups: a model stays loaded across the stages and iterations of a recipe loop.

``ActorGroup`` places ``n`` replicas of any :class:`RoleActor` class (sampler, critic, guided
decoder) with one placement group (one bundle per replica, strategy from ``ClusterConfig``);
``SamplerPool`` is the group of :class:`SamplerActor`. Actors restart after a crash
(``max_restarts``) and Ray retries the in-flight calls (``max_task_retries``). Every call
carries the weights it expects, so a restarted actor (which re-runs its constructor with the
original model) reloads trained weights before answering instead of silently using stale ones.
The driver never waits on a group without a bound: no result for ``cluster.stall_timeout_s``
raises :class:`StallError` (a ``StageError``) naming the role and the call.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

from raysys.config import ClusterConfig, EngineConfig, ModelSpec
from raysys.engines.base import Completion, SamplingParams
from raysys.errors import StageError

log = logging.getLogger(__name__)

Weights = tuple[str, str | None]   # (model_path, adapter)
T = TypeVar("T")

PLACEMENT_TIMEOUT_S = 120.0


class StallError(StageError):
    """An actor group made no progress for ``cluster.stall_timeout_s`` (a hung replica, engine or
    collective); stages re-raise it with their own name."""


def wait_results(refs: list[Any], timeout_s: float, what: str) -> list[Any]:
    """``ray.get(refs)``, but fail with :class:`StallError` when no ref has finished for
    ``timeout_s`` seconds (the clock restarts at every result: a long stage making steady
    progress never times out, one hung replica does). ``what`` names the call in the error."""
    import ray

    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=timeout_s)
        if not ready:
            raise StallError(f"{what}: {len(pending)} of {len(refs)} call(s) made no progress for "
                             f"{timeout_s:g} s (cluster.stall_timeout_s); a replica, its engine or "
                             "a collective is hung (see the Ray dashboard / actor logs)")
        ray.get(ready)            # a replica's error surfaces now, not after the slowest one
    return ray.get(list(refs))    # all finished: returns at once


def iter_with_stall_bound(items: Iterable[T], timeout_s: float, what: str) -> Iterator[T]:
    """``items``, pulled on a daemon thread, failing with :class:`StallError` when none arrives
    for ``timeout_s`` seconds (the clock restarts at every item). For iterators the driver cannot
    wait on with a timeout itself (a Ray Data ``iter_batches``); an error in ``items`` is
    re-raised here. A consumer that stops early (an error while handling an item) stops the
    thread, which closes ``items`` (Ray Data then releases its actors); after a stall the thread
    is abandoned inside the hung call and ends with the process or the cluster."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as e:           # re-raised in the consumer
            put(("error", e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    threading.Thread(target=pull, name=f"stall-bound {what}", daemon=True).start()
    try:
        while True:
            try:
                tag, value = q.get(timeout=timeout_s)
            except queue.Empty:
                raise StallError(f"{what}: no result for {timeout_s:g} s (cluster.stall_timeout_s); "
                                 "a replica or its engine is hung (see the Ray dashboard / actor "
                                 "logs)") from None
            if tag == "end":
                return
            if tag == "error":
                raise value
            yield value
    finally:
        stop.set()


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


class RoleActor:
    """Base of the actors an :class:`ActorGroup` runs (sampler, critic, guided decoder, ...).

    Tracks the weights it serves; :meth:`call` first switches to the weights the caller
    expects, so a restarted actor (whose constructor re-ran with the original model) reloads
    trained weights before answering. Subclasses override :meth:`load_weights` (calling super).
    """

    def __init__(self, model: ModelSpec) -> None:
        self._weights: Weights = (model.path, model.adapter)
        self._tuning: dict[str, Any] = {}

    def call(self, method: str, items: list[Any], *args: Any, weights: Weights | None = None,
             tuning: dict[str, Any] | None = None) -> Any:
        """``self.<method>(items, *args)`` after switching to ``weights`` and ``tuning`` if they
        differ (a restarted actor re-ran its constructor with the group's first arguments)."""
        if weights is not None and tuple(weights) != self._weights:
            self.load_weights(*weights)
        if tuning and tuning != self._tuning:
            self.retune(tuning)
        return getattr(self, method)(items, *args)

    @staticmethod
    def retunable(old_args: tuple, new_args: tuple) -> dict[str, Any] | None:
        """The settings that turn an actor built with ``old_args`` into one built with
        ``new_args`` without a restart (see :meth:`retune`); ``None``: they differ in more
        than that. The base class has no such settings."""
        return None

    def retune(self, tuning: dict[str, Any]) -> None:
        """Apply settings :meth:`retunable` returned, in place."""
        self._tuning = dict(tuning)

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        """Serve new weights (a trained model dir or a LoRA adapter) in place."""
        self._weights = (model_path, adapter)

    def ping(self) -> dict[str, Any]:
        """Where this replica runs and which weights it serves."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "model_path": self._weights[0], "adapter": self._weights[1]}


class SamplerActor(RoleActor):
    """Holds one engine (HF, vLLM, guided: whatever ``make_engine`` builds)."""

    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        from raysys.distributed.artifacts import localize_model
        from raysys.engines import make_engine

        super().__init__(model)
        # This node's copies of the driver's model / adapter / verifier dirs (no shared disk).
        self._engine = make_engine(localize_model(model), localize_model(engine))

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        return self._engine.generate(prompts, params)

    def rerank(self, items: list[tuple[str, list[str]]]) -> list[list[float]]:
        """Scores of each (prompt, completions) item by an engine that can rerank (guided)."""
        if not hasattr(self._engine, "rerank_scores"):
            raise StageError(f"engine {type(self._engine).__name__} cannot rerank completions")
        return self._engine.rerank_scores([p for p, _ in items], [c for _, c in items])

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        from raysys.distributed.artifacts import localize

        self._engine.load_weights(localize(model_path), localize(adapter))
        super().load_weights(model_path, adapter)

    @staticmethod
    def retunable(old_args: tuple, new_args: tuple) -> dict[str, Any] | None:
        """Guided engines that differ only in ``beta``: ``{"beta": new}`` (set per call; both
        models stay loaded). Any other engine change needs a new actor."""
        (old,), (new,) = old_args, new_args
        if old.kind == new.kind == "guided" and replace(old, beta=new.beta) == new:
            return {"beta": new.beta}
        return None

    def retune(self, tuning: dict[str, Any]) -> None:
        self._engine.set_beta(tuning["beta"])
        super().retune(tuning)


class ActorGroup:
    """``n`` replicas of one :class:`RoleActor` class in one placement group (one bundle each).

    ``map(method, items, *args)`` splits ``items`` evenly over the replicas and returns the
    results in item order; every call carries the weights the group serves. Replicas restart
    after a crash (``cluster.max_restarts``) and Ray retries their in-flight calls.
    ``bundle`` overrides the per-replica resources (default: the cluster's replica bundle);
    ``placement_group`` + ``bundle_offset`` place the replicas in an existing group (colocation).
    """

    def __init__(self, actor_cls: type, n: int, model: ModelSpec, *args: Any,
                 cluster: ClusterConfig | None = None, bundle: dict[str, float] | None = None,
                 placement_group: Any = None, role: str = "sampler") -> None:
        import ray
        from ray.util.placement_group import placement_group as make_pg
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from raysys.distributed.ray_init import init_ray

        if n < 1:
            raise ValueError(f"{type(self).__name__}: expected n >= 1, got {n}")
        cluster = cluster or ClusterConfig()
        init_ray(cluster)
        self.role = role
        self.stall_timeout_s = cluster.stall_timeout_s
        self.actor_cls = actor_cls
        self.model = model
        self.args = args
        self._weights: Weights = (model.path, model.adapter)
        self._tuning: dict[str, Any] = {}
        bundle = bundle or replica_bundle(cluster)
        self._own_pg = placement_group is None
        if self._own_pg:
            placement_group = make_pg([dict(bundle) for _ in range(n)],
                                      strategy=cluster.placement_strategy)
            ready, _ = ray.wait([placement_group.ready()], timeout=PLACEMENT_TIMEOUT_S)
            if not ready:
                ray.util.remove_placement_group(placement_group)
                raise StageError(
                    f"cluster: cannot place {n} {role} replicas of {bundle} with strategy "
                    f"{cluster.placement_strategy} (cluster has {ray.cluster_resources()})")
        self._pg = placement_group
        remote_cls = ray.remote(actor_cls)
        self.actors = [
            remote_cls.options(
                num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0),
                max_restarts=cluster.max_restarts,
                # Bounded like restarts: a request that crashes the actor every time must surface.
                max_task_retries=max(cluster.max_restarts, 0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=placement_group, placement_group_bundle_index=i),
            ).remote(model, *args)
            for i in range(n)
        ]
        try:
            # Start-up (model loading) errors and hangs surface here.
            where = self._wait([a.ping.remote() for a in self.actors], "start")
        except BaseException:
            self.shutdown()             # no caller holds the group yet: free its resources
            raise
        log.info("%s group: %d replicas of %s on %d node(s)", role, n, model.path,
                 len({w["node_id"] for w in where}))

    def __len__(self) -> int:
        return len(self.actors)

    @property
    def weights(self) -> Weights:
        """``(model_path, adapter)`` the replicas serve now."""
        return self._weights

    def submit(self, method: str, items: list[Any], *args: Any,
               chunk_args: Callable[[int, tuple], tuple] | None = None) -> list[Any]:
        """Start ``method`` on even chunks of ``items`` without waiting: one ``ObjectRef`` per
        replica chunk, in order. ``chunk_args(start, args)`` may vary the arguments per chunk."""
        refs = []
        for i, (start, end) in enumerate(split_even(len(items), len(self.actors))):
            a = chunk_args(start, args) if chunk_args is not None else args
            refs.append(self.actors[i].call.remote(method, items[start:end], *a,
                                                   weights=self._weights, tuning=self._tuning))
        return refs

    def _wait(self, refs: list[Any], what: str) -> list[Any]:
        """Results of ``refs``; :class:`StallError` naming this role and ``what`` after
        ``stall_timeout_s`` without progress."""
        name = getattr(self.actor_cls, "__name__", str(self.actor_cls))
        return wait_results(refs, self.stall_timeout_s, f"{self.role} group ({name}) {what}")

    def gather(self, refs: list[Any], what: str = "call") -> list[Any]:
        """Wait for :meth:`submit`'s refs; results concatenated in item order. Raises
        :class:`StallError` when no chunk finishes for ``stall_timeout_s``."""
        out: list[Any] = []
        for part in self._wait(refs, what):
            out.extend(part)
        return out

    def map(self, method: str, items: list[Any], *args: Any) -> list[Any]:
        """``method`` over ``items`` split across the replicas; results in item order."""
        return self.gather(ActorGroup.submit(self, method, items, *args), method)

    def submit_generate(self, prompts: list[str], params: SamplingParams) -> list[Any]:
        """Start ``generate`` (every text role has it) on prompt chunks: each chunk gets its own
        seed offset so sampled chunks are not copies of one another; greedy output does not
        depend on the split. :meth:`gather` turns the refs into completions."""
        def seeded(start: int, args: tuple) -> tuple:
            p = args[0]
            return (p if p.seed is None else replace(p, seed=p.seed + start),)
        return ActorGroup.submit(self, "generate", prompts, params, chunk_args=seeded)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """Split ``prompts`` across replicas and return their completions in prompt order."""
        return self.gather(self.submit_generate(prompts, params), "generate")

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        """Make every replica serve new weights in place (a restarted replica catches up on its
        next call, which carries them)."""
        self._weights = (model_path, adapter)
        self._wait([a.load_weights.remote(model_path, adapter) for a in self.actors],
                   "load_weights")

    def retune(self, args: tuple, tuning: dict[str, Any]) -> None:
        """Serve as if built with ``args``: every replica applies ``tuning`` (what
        ``actor_cls.retunable(self.args, args)`` returned) in place, and every later call
        carries it, so a restarted replica applies it too."""
        self.args, self._tuning = args, dict(tuning)
        self._wait([a.retune.remote(self._tuning) for a in self.actors], "retune")

    def ping(self) -> list[dict[str, Any]]:
        """``RoleActor.ping`` of every replica, in replica order."""
        return self._wait([a.ping.remote() for a in self.actors], "ping")

    def shutdown(self) -> None:
        """Kill the replicas and free their placement group (when the group owns it)."""
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        if self._own_pg:
            ray.util.remove_placement_group(self._pg)

    def __enter__(self) -> ActorGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class SamplerPool(ActorGroup):
    """``n`` :class:`SamplerActor` replicas; ``generate`` keeps prompt order."""

    def __init__(self, n: int, model: ModelSpec, engine: EngineConfig,
                 cluster: ClusterConfig | None = None, **kwargs: Any) -> None:
        super().__init__(SamplerActor, n, model, engine, cluster=cluster, **kwargs)

    def submit(self, prompts: list[str], params: SamplingParams) -> list[Any]:  # type: ignore[override]
        """Start generating without waiting (see :meth:`ActorGroup.submit_generate`)."""
        return self.submit_generate(prompts, params)
