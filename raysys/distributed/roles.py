"""The role groups a recipe uses (sampler, critic, guided decoder), placed by ``cluster.placement``.

``RoleGroups.get(role, actor_cls, model, *args)`` returns the live :class:`ActorGroup` of that
role, started on first use (so a resumed run whose stages are complete starts nothing). When the
role's group already runs the same actor class with the same arguments (engine config) and a
compatible model, new weights are served in place (a live refresh: an adapter request or an in-place reload) instead of a new group.
Placement policies (see ``ClusterConfig.placement``):

* ``alternate``: starting one role's group stops the others; :meth:`before_training` stops all;
* ``split``: each role's group has its own placement group; all stay alive through training;
* ``colocate``: one shared placement group whose bundle ``i`` holds replica ``i`` of every role
  in ``cluster.roles`` (its resources are the sum of theirs); all stay alive.
"""

from __future__ import annotations

import logging
from typing import Any

from raysys.config import ClusterConfig, ModelSpec
from raysys.distributed.actors import ActorGroup

log = logging.getLogger(__name__)


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
    """Live actor groups by role, placed by the cluster's policy; a context manager."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self._live: dict[str, ActorGroup] = {}
        self._shared_pg: Any = None

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
        if self.cluster.placement == "alternate":
            self.stop()
        res = self.cluster.role(role)
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
        if role is None and self._shared_pg is not None:
            import ray

            ray.util.remove_placement_group(self._shared_pg)
            self._shared_pg = None

    def before_training(self) -> None:
        """Under ``alternate``, give the cluster back to the trainer."""
        if self.cluster.placement == "alternate":
            self.stop()

    def __enter__(self) -> RoleGroups:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
