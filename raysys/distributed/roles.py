"""The role groups a recipe uses (``config.ROLES``: sampler, critic, decoder, explorer), placed by
``cluster.placement``.

:data:`ROLE_ACTORS` is the one table of which actor class serves a role (:func:`role_actor`);
recipes ask for a role by name (``StepContext.group``), never for a class.

``RoleGroups.get(role, actor_cls, model, *args)`` returns the live :class:`ActorGroup` of that
role, started on first use (so a resumed run whose stages are complete starts nothing). When the
role's group already runs the same actor class with the same arguments (engine config) and a
compatible model, new weights are served in place (a live refresh: an adapter request or an in-place reload) instead of a new group.
Placement policies (see ``ClusterConfig.placement``):

* ``alternate``: starting one role's group stops the others; :meth:`before_training` stops all;
* ``split``: each role's group has its own placement group; all stay alive through training
  where they fit (below);
* ``colocate``: one shared placement group whose bundle ``i`` holds replica ``i`` of every role
  in ``cluster.roles`` (its resources are the sum of theirs); all stay alive where training fits.

Under ``split``, a group or training stage that would not fit beside the live groups (e.g. on a
2-CPU cluster joined by a config written for 8 logical CPUs) gets them stopped first, as under
``alternate``, with one warning per run, instead of waiting for resources that never free; under
``colocate`` a training stage does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from raysys.config import ClusterConfig, ModelSpec
from raysys.distributed.actors import ActorGroup

log = logging.getLogger(__name__)

RELEASE_WAIT_S = 3.0    # how long _make_room waits for a finished stage to release its resources

# Role -> the actor class serving it ("module:Class", imported when the role is first used:
# the explorer lives with its method library). Text roles hold one engine (generate, rerank).
ROLE_ACTORS: dict[str, str] = {
    "sampler": "raysys.distributed.actors:SamplerActor",
    "critic": "raysys.distributed.actors:SamplerActor",
    "decoder": "raysys.distributed.actors:SamplerActor",     # guided decoding, verifier scores
    "explorer": "raysys.llm2.workers:ExplorerActor",          # LLM2's token exploration
}


def role_actor(role: str) -> type:
    """The actor class of ``role`` (:data:`ROLE_ACTORS`)."""
    import importlib

    if role not in ROLE_ACTORS:
        raise ValueError(f"role {role!r}: no actor class (known roles: {', '.join(ROLE_ACTORS)})")
    module, _, name = ROLE_ACTORS[role].partition(":")
    return getattr(importlib.import_module(module), name)


def missing_resources(need: Mapping[str, float], free: Mapping[str, float]) -> dict[str, float]:
    """The part of ``need`` (resource -> amount) that ``free`` cannot cover: resource ->
    amount short; empty when everything fits."""
    return {k: v - free.get(k, 0.0) for k, v in need.items() if v > 0 and free.get(k, 0.0) + 1e-9 < v}


def total(bundles: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Resource -> amount summed over ``bundles``."""
    out: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            out[k] = out.get(k, 0.0) + v
    return out


def bundles_fit(bundles: Sequence[Mapping[str, float]], nodes: Sequence[Mapping[str, float]],
                strategy: str = "PACK") -> bool:
    """Whether ``bundles`` can be placed on the free resources of ``nodes`` (one mapping per
    node) as a placement group of ``strategy`` places them: each bundle inside one node;
    ``STRICT_PACK`` all on one node; ``STRICT_SPREAD`` each on its own node.

    First fit, largest bundle first: exact for one node or equal bundles (every raysys group
    and Ray Train worker group), a close bound otherwise (bin packing is NP-hard)."""
    want = [{k: v for k, v in b.items() if v > 0} for b in bundles]
    if strategy == "STRICT_PACK":
        want = [total(want)]
    free = [dict(n) for n in nodes]
    used: set[int] = set()
    for b in sorted(want, key=lambda b: (b.get("GPU", 0.0), sum(b.values())), reverse=True):
        for i, node in enumerate(free):
            if (strategy == "STRICT_SPREAD" and i in used) or missing_resources(b, node):
                continue
            for k, v in b.items():
                node[k] = node.get(k, 0.0) - v
            used.add(i)
            break
        else:
            return False
    return True


def free_per_node() -> list[dict[str, float]]:
    """Each live node's free resources (Ray's developer API; the cluster-wide sum as one node
    where it is missing, which can only overstate what fits)."""
    import ray

    try:
        from ray._private.state import available_resources_per_node
        return [dict(r) for r in available_resources_per_node().values()]
    except (ImportError, AttributeError):
        return [dict(ray.available_resources())]


def total_per_node() -> list[dict[str, float]]:
    """Each alive node's total resources: what a request can ever be placed on (an
    autoscaler aside)."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def same_model_family(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether a group loaded with ``a`` can switch to ``b`` by loading weights in place."""
    return (a.dtype, a.max_model_len, a.trust_remote_code) == (b.dtype, b.max_model_len,
                                                              b.trust_remote_code)


def colocated_bundles(cluster: ClusterConfig, roles: list[str]) -> list[dict[str, float]]:
    """Bundle ``i`` = the sum of the per-replica resources of every role with a replica ``i``."""
    n = max(cluster.role(r).replicas for r in roles)
    bundles: list[dict[str, float]] = [{} for _ in range(n)]
    for r in roles:
        res = cluster.role(r)
        for i in range(res.replicas):
            for k, v in res.bundle().items():
                bundles[i][k] = bundles[i].get(k, 0.0) + v
    return bundles


class RoleGroups:
    """Live actor groups by role, placed by the cluster's policy; a context manager.

    ``in_process``: every role is a :class:`~raysys.distributed.generation.LocalGroup` in this
    process (no Ray, no placement); under ``alternate`` one lives at a time, as on Ray."""

    def __init__(self, cluster: ClusterConfig, *, in_process: bool = False) -> None:
        self.cluster = cluster
        self.in_process = in_process
        self._live: dict[str, ActorGroup] = {}
        self._shared_pg: Any = None
        self._warned_short = False
        self._together = False

    def live(self, role: str) -> ActorGroup | None:
        """The running group of ``role``, if any."""
        return self._live.get(role)

    def get(self, role: str, actor_cls: type, model: ModelSpec, *args: Any) -> ActorGroup:
        """The group of ``role`` serving ``model`` (started, refreshed, retuned or replaced as
        needed: a change the actor class calls :meth:`~RoleActor.retunable` keeps its replicas)."""
        group = self._live.get(role)
        if group is not None:
            same = group.actor_cls is actor_cls and same_model_family(group.model, model)
            tuning = None if not same or group.args == args else actor_cls.retunable(group.args, args)
            if tuning is not None:
                log.info("%s group: retuned in place (%s)", role,
                         ", ".join(f"{k} {v}" for k, v in tuning.items()))
                group.retune(args, tuning)
            if same and group.args == args:
                if group.weights != (model.path, model.adapter):
                    log.info("%s group: serving %s in place", role, model.adapter or model.path)
                    group.load_weights(model.path, model.adapter)
                return group
            self.stop(role)
        if self.in_process:
            from raysys.distributed.generation import LocalGroup

            if self.cluster.placement == "alternate":
                self.stop()
            # a replica's CPUs as its torch threads, as Ray gives an actor
            threads = max(1, int(self.cluster.role(role).cpus_per_replica))
            self._live[role] = LocalGroup.of(actor_cls, model, *args, threads=threads)
            return self._live[role]
        res = self.cluster.role(role)
        if self.cluster.placement == "alternate":
            self.stop()
        elif self.cluster.placement == "split":
            self._make_room([res.bundle()] * res.replicas, f"the {role} group",
                            self.cluster.placement_strategy)
        kwargs: dict[str, Any] = {"cluster": self.cluster, "bundle": res.bundle(), "role": role}
        if self.cluster.placement == "colocate":
            kwargs["placement_group"] = self._colocated_pg(role)
        group = ActorGroup(actor_cls, res.replicas, model, *args, **kwargs)
        self._live[role] = group
        return group

    def _colocated_pg(self, role: str) -> Any:
        import ray
        from ray.util.placement_group import placement_group

        from raysys.distributed.actors import PLACEMENT_TIMEOUT_S
        from raysys.errors import StageError

        if self._shared_pg is None:
            roles = sorted(set(self.cluster.roles) | {role})
            bundles = colocated_bundles(self.cluster, roles)
            pg = placement_group(bundles, strategy=self.cluster.placement_strategy)
            ready, _ = ray.wait([pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
            if not ready:
                ray.util.remove_placement_group(pg)
                raise StageError(f"cluster: cannot place colocated bundles {bundles} for roles "
                                 f"{roles} (cluster has {ray.cluster_resources()})")
            self._shared_pg = pg
        return self._shared_pg

    def stop(self, role: str | None = None) -> None:
        """Stop ``role``'s group, or every group (and free the shared placement group)."""
        for r in [role] if role is not None else list(self._live):
            group = self._live.pop(r, None)
            if group is not None:
                group.shutdown()
        if role is None and self._shared_pg is not None and not self.in_process:
            import ray

            ray.util.remove_placement_group(self._shared_pg)
            self._shared_pg = None

    def before_training(self, bundles: Sequence[Mapping[str, float]] | None = None) -> None:
        """Make room for a training stage whose workers need ``bundles`` (one per worker, placed
        as Ray Train places them: PACK): under ``alternate`` stop every group; otherwise stop
        them only when the bundles do not fit on the nodes' free resources beside them."""
        if self.cluster.placement == "alternate":
            self.stop()
        elif bundles:
            self._make_room(bundles, "a training stage", "PACK")

    @contextmanager
    def together(self) -> Iterator[None]:
        """Inside, the live groups are all needed at once (a streamed step): a group that does
        not fit beside them is a StageError naming the shortfall instead of stopping them."""
        self._together = True
        try:
            yield
        finally:
            self._together = False

    def _make_room(self, bundles: Sequence[Mapping[str, float]], what: str, strategy: str) -> None:
        """Stop every live group when ``bundles`` (placed by ``strategy``) do not fit on the
        nodes' free resources beside them (one warning per run)."""
        if not self._live or self.in_process:
            return
        import time

        import ray

        # A stage that just ended may still be releasing its placement group: look again for a
        # moment before stopping groups (not once the cluster is known to be too small).
        deadline = time.monotonic() + (0.0 if self._warned_short else RELEASE_WAIT_S)
        while not (fits := bundles_fit(bundles, nodes := free_per_node(), strategy)) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        if fits:
            return
        need = total(bundles)
        short = missing_resources(need, total(nodes))
        lack = (f"{_fmt(short)} short" if short else
                f"no node has room for its {_fmt(max(bundles, key=lambda b: sum(b.values())))} "
                f"bundles ({strategy})")
        if self._together:
            from raysys.errors import StageError

            raise StageError(f"cluster: {what} needs {_fmt(need)}, {lack} beside the live "
                             f"{', '.join(sorted(self._live))} group(s) (cluster: "
                             f"{_fmt(ray.cluster_resources(), keys=need)}); this step needs its "
                             "roles at once: give the cluster more, or lower cluster.roles / "
                             "cpus_per_replica")
        if not self._warned_short:
            log.warning("cluster.placement %s: %s needs %s, %s with the role groups alive "
                        "(cluster: %s); groups are stopped when the next one does not fit and "
                        "restarted when needed", self.cluster.placement, what, _fmt(need),
                        lack, _fmt(ray.cluster_resources(), keys=need))
            self._warned_short = True
        self.stop()

    def __enter__(self) -> RoleGroups:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _fmt(res: Mapping[str, float], keys: Mapping[str, float] | None = None) -> str:
    """``{"CPU": 2.0}`` -> ``2 CPU``; only ``keys``' resources when given."""
    items = [(k, v) for k, v in res.items() if keys is None or k in keys]
    return ", ".join(f"{v:g} {k}" for k, v in sorted(items)) or "none"
