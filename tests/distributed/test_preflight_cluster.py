"""A joined cluster's requests checked against ``ray.nodes()`` once connected, before any stage
(raysys.preflight_cluster.check_cluster_resources), on the package's real 3-node cluster: a head
with no CPUs and two 1-CPU nodes carrying the custom resources node_a / node_b."""

from __future__ import annotations

import dataclasses

import pytest

from raysys.config import ClusterConfig, ConfigError
from raysys.preflight_cluster import check_cluster_resources, check_local_resources
from raysys.training.config import TrainConfig

Top = dataclasses.make_dataclass("Top", [("cluster", ClusterConfig), ("train", TrainConfig)])


def test_requests_against_the_joined_clusters_nodes(ray_cluster: dict[str, str]) -> None:
    # two 1-CPU replicas, one per node; a 2-worker training stage likewise (PACK spills over)
    check_cluster_resources(Top(ClusterConfig(replicas=2), TrainConfig(num_workers=2)))
    with pytest.raises(ConfigError, match=r"^cluster\.replicas: the sampler group asks 3 x 1 CPU = "
                                          r"3 CPU at once, more than the cluster \(3 alive node\(s\)\)"
                                          r" has \(2 CPU\); Ray would wait for it forever; expected "
                                          r"at most 2 replicas of 1 CPU$"):
        check_cluster_resources(Top(ClusterConfig(replicas=3), TrainConfig()))
    with pytest.raises(ConfigError, match=r"^cluster\.replicas: the sampler group's 2 replicas of 1 "
                                          r"CPU do not fit on one node of the cluster"):
        check_cluster_resources(Top(ClusterConfig(replicas=2, placement_strategy="STRICT_PACK"),
                                    TrainConfig()))
    with pytest.raises(ConfigError, match=r"^train\.resources_per_worker: training stage train asks "
                                          r"2 node_a per worker, more than any node of the cluster "
                                          r"\(3 alive node\(s\)\) has \(1 node_a\)"):
        check_cluster_resources(Top(ClusterConfig(), TrainConfig(resources_per_worker={"node_a": 2})))


def test_a_joined_cluster_is_not_judged_by_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an address (or RAY_ADDRESS) the local check is skipped: the cluster's nodes decide,
    once connected; without one, a bare TrainConfig (``raysys train``) runs on this machine."""
    huge = TrainConfig(num_workers=4096)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_local_resources(Top(ClusterConfig(address="10.0.0.1:6379"), huge))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    check_local_resources(huge)
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(ConfigError, match=r"^num_workers: training stage train asks 4096 x 1 "
                                          r"CPU"):
        check_local_resources(huge)
