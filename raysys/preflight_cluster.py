"""Whether a config's resource requests can ever be placed, checked before any work.

A run asks the cluster for role groups (``cluster.replicas`` / ``cluster.roles.<role>``: one
placement-group bundle per replica, placed by ``cluster.placement_strategy``; under
``placement: colocate`` one shared group whose bundle ``i`` sums replica ``i`` of every role)
and training stages (``num_workers`` Ray Train workers of ``resources_per_worker``, or one GPU
each with ``use_gpu``, packed). Each must fit the cluster on its own: alternate placement stops
every other group first, and split / colocate placements stop them when it does not fit beside
them. A request that does not fit the nodes' *total* resources never will, and Ray would wait
for it forever, so it is refused with one ``ConfigError`` naming the key:

- on a local Ray (no ``cluster.address``, no ``RAY_ADDRESS``) against this machine's resources
  as Ray will see them (``cluster.num_cpus`` or the CPUs, the GPUs, the memory), before Ray
  starts (:func:`check_local_resources`, called by the run preflight);
- on a cluster it joins, against ``ray.nodes()`` once connected and before any stage
  (:func:`check_cluster_resources`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raysys.config import ROLES, ClusterConfig, ConfigError, find_sections

Bundle = Mapping[str, float]


@dataclass(frozen=True)
class Request:
    """One group of bundles that must be placed together."""

    what: str                       # "the sampler group", "training stage weak_sft.train"
    unit: str                       # what one bundle is: "replica", "worker"
    bundles: list[dict[str, float]]
    strategy: str                   # PACK, SPREAD, STRICT_PACK, STRICT_SPREAD
    per_bundle_key: str             # the key that sets a bundle's size
    count_key: str                  # the key that sets how many bundles


def _fmt(res: Bundle) -> str:
    """``{"CPU": 2.0, "GPU": 1.0}`` -> ``2 CPU, 1 GPU`` (memory in GiB)."""
    def one(k: str, v: float) -> str:
        if k in ("memory", "object_store_memory"):
            return f"{v / 2**30:,.1f} GiB {k}"
        return f"{v:g} {k}"
    return ", ".join(one(k, v) for k, v in sorted(res.items())) or "nothing"


def role_requests(cluster: ClusterConfig, key: str = "cluster") -> list[Request]:
    """The role groups a recipe can start: ``sampler`` (every recipe samples) and each role
    ``cluster.roles`` names; under ``colocate`` the one shared group of all of them."""
    from raysys.distributed.roles import colocated_bundles

    roles = sorted(set(cluster.roles) | {"sampler"}, key=ROLES.index)
    if cluster.placement == "colocate":
        return [Request(f"the colocated group of {', '.join(roles)} ({key}.placement colocate)",
                        "replica", colocated_bundles(cluster, roles), cluster.placement_strategy,
                        f"{key}.roles", f"{key}.roles")]
    out = []
    for role in roles:
        res = cluster.role(role)
        where = f"{key}.roles.{role}" if role in cluster.roles else key
        per = f"{where}.gpus_per_replica" if res.gpus_per_replica else f"{where}.cpus_per_replica"
        out.append(Request(f"the {role} group", "replica", [res.bundle()] * res.replicas,
                           cluster.placement_strategy, per, f"{where}.replicas"))
    return out


def training_requests(cfg: Any) -> list[Request]:
    """Each training stage's Ray Train worker group (``trainer.worker_bundles``, packed)."""
    from raysys.training.config import TrainConfig
    from raysys.training.trainer import worker_bundles

    out = []
    for key, train in find_sections(cfg, TrainConfig):
        # a bare TrainConfig (`raysys train`): its keys are top-level
        at = f"{key}." if key else ""
        per = f"{at}resources_per_worker" if train.resources_per_worker else \
            f"{at}use_gpu" if train.use_gpu else f"{at}num_workers"
        try:
            bundles = worker_bundles(train)
        except ValueError as e:         # Ray Train's ScalingConfig refuses it (e.g. TPU)
            first = " ".join(str(e).split()).replace("`", "")
            raise ConfigError(f"{per}: Ray Train refuses it ({first})") from None
        out.append(Request(f"training stage {key or 'train'}", "worker", bundles, "PACK", per,
                           f"{at}num_workers"))
    return out


def unplaceable(req: Request, nodes: Sequence[Bundle], where: str) -> str | None:
    """Why ``req`` can never be placed on ``nodes`` (their total resources), as one line
    ``key: what is asked, what there is; expected ...``; None when it fits. ``where`` names the
    nodes ("this machine's local Ray (2 CPU, 0 GPU)")."""
    from raysys.distributed.roles import bundles_fit, missing_resources, total

    if not req.bundles or bundles_fit(req.bundles, nodes, req.strategy):
        return None
    n, one = len(req.bundles), max(req.bundles, key=lambda b: (b.get("GPU", 0.0), sum(b.values())))
    never = "Ray would wait for it forever"
    if not any(not missing_resources(one, nd) for nd in nodes):
        best = max(nodes, key=lambda nd: len(missing_resources(one, nd)) == 0 or
                   -sum(missing_resources(one, nd).values()), default={})
        short = missing_resources(one, best)
        has = {k: best.get(k, 0.0) for k in one}
        none = [k for k in short if not best.get(k)]
        want = (f"no {', '.join(none)} in a {req.unit} (there is none)" if none else
                f"at most {_fmt({k: best.get(k, 0.0) for k in short})} per {req.unit}")
        return (f"{req.per_bundle_key}: {req.what} asks {_fmt(one)} per {req.unit}, more than "
                f"any node of {where} has ({_fmt(has)}); {never}; expected {want}")
    need, have = total(req.bundles), total(nodes)
    short = missing_resources(need, have)
    if short:
        return (f"{req.count_key}: {req.what} asks {n} x {_fmt(one)} = {_fmt(need)} at once, "
                f"more than {where} has ({_fmt({k: have.get(k, 0.0) for k in need})}); {never}; "
                f"expected at most {_most(one, have)} {req.unit}s of {_fmt(one)}")
    if req.strategy == "STRICT_SPREAD":
        return (f"{req.count_key}: {req.what} puts each of its {n} {req.unit}s on its own node "
                f"(STRICT_SPREAD), and {where} has {len(nodes)} node(s); {never}; expected at "
                "most that many, or placement_strategy PACK or SPREAD")
    other = " or placement_strategy PACK" if req.strategy == "STRICT_PACK" else ""
    return (f"{req.count_key}: {req.what}'s {n} {req.unit}s of {_fmt(one)} do not fit on "
            f"{'one node' if req.strategy == 'STRICT_PACK' else 'the nodes'} of {where} "
            f"({req.strategy}; nodes: {'; '.join(_fmt(nd) for nd in nodes)}); {never}; expected "
            f"fewer {req.unit}s{other}")


def _most(one: Bundle, have: Bundle) -> int:
    """How many bundles ``one`` fit in ``have`` by totals."""
    return int(min(have.get(k, 0.0) // v for k, v in one.items() if v > 0))


def check_fits(cfg: Any, nodes: Sequence[Bundle], where: str,
               only: frozenset[str] | None = None) -> None:
    """``ConfigError`` for the first role group or training stage of ``cfg`` that can never be
    placed on ``nodes`` (each node's total resources); ``only``: the resources known (others
    are not checked)."""
    cluster = getattr(cfg, "cluster", None)
    requests = role_requests(cluster) if isinstance(cluster, ClusterConfig) else []
    for req in requests + training_requests(cfg):
        if only is not None:
            kept = [{k: v for k, v in b.items() if k in only} for b in req.bundles]
            req = Request(req.what, req.unit, kept, req.strategy, req.per_bundle_key,
                          req.count_key)
        why = unplaceable(req, nodes, where)
        if why:
            raise ConfigError(why)


def local_node(cluster: ClusterConfig) -> dict[str, float]:
    """This machine's resources as the local Ray instance ``init_ray`` starts will have them:
    ``cluster.num_cpus`` (or the CPUs), the GPUs and accelerators Ray detects (respecting
    ``CUDA_VISIBLE_DEVICES``), its memory and object store. Read with Ray's own resolution
    (no Ray started); where that is unavailable, CPUs only (and no GPU check)."""
    import os

    from raysys.distributed.ray_init import local_init_kwargs

    kwargs = local_init_kwargs(cluster)
    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        spec = ResourceAndLabelSpec(num_cpus=kwargs["num_cpus"],
                                    object_store_memory=kwargs.get("object_store_memory"))
        res = dict(spec.resolve(is_head=True).to_resource_dict())
        res.setdefault("GPU", 0.0)          # resolved: absent means none
        return {k: float(v) for k, v in res.items() if not k.startswith("node:")}
    except Exception:  # noqa: BLE001 - Ray's private API moved: check what is certain
        return {"CPU": float(kwargs.get("num_cpus") or os.cpu_count() or 1)}


def check_local_resources(cfg: Any) -> None:
    """On a local Ray (no ``cluster.address`` and no ``RAY_ADDRESS``): every role group and
    training stage of ``cfg`` fits this machine, before Ray starts. A config without a
    ``cluster`` section (``raysys train``'s TrainConfig) runs on the default local Ray. A
    resource the machine's description lacks is only checked when Ray's own resolution was
    available."""
    from raysys.distributed.ray_init import resolve_address

    cluster = getattr(cfg, "cluster", None)
    if not isinstance(cluster, ClusterConfig):
        cluster = ClusterConfig()
    if resolve_address(cluster.address) != "local":
        return
    node = local_node(cluster)
    shown = {k: node[k] for k in ("CPU", "GPU") if k in node}
    where = (f"this machine's local Ray ({_fmt(shown)}"
             f"{', CPUs from cluster.num_cpus' if cluster.num_cpus is not None else ''})")
    # without Ray's resolution only the CPUs are certain: GPUs and the rest are left to Ray
    check_fits(cfg, [node], where, None if "GPU" in node else frozenset({"CPU"}))


def check_cluster_resources(cfg: Any) -> None:
    """On a joined cluster, once connected and before any stage: every role group and training
    stage of ``cfg`` fits the alive nodes' total resources (``ray.nodes()``)."""
    from raysys.distributed.roles import total_per_node

    nodes = [{k: v for k, v in n.items() if not k.startswith("node:")} for n in total_per_node()]
    check_fits(cfg, nodes, f"the cluster ({len(nodes)} alive node(s))")
