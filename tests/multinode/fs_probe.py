"""A driver that maps what each node of a cluster sees under a directory; prints one JSON object.

``python fs_probe.py ADDRESS ROOT N_WORKERS`` (Ray's token in the environment). Run as its own
process, as raysys's drivers are, so that the test process never joins the cluster.

Each node, head included, writes ``<label>.txt`` under ROOT from a task pinned to it
(NodeAffinitySchedulingStrategy, soft=False); once every write is back, each node lists which of
the files it sees. The driver does the same from the host. Also reported: the node the driver
is attached to, and where an unpinned zero-CPU task (like raysys's ``fit`` task) runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
def write(root: str, name: str) -> dict:
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)       # on a worker: the empty private tmpfs
    (path / name).write_text(name)
    return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


@ray.remote(num_cpus=0)
def look(root: str) -> dict:
    return {"node": ray.get_runtime_context().get_node_id(),
            "files": sorted(os.listdir(root)) if os.path.isdir(root) else None}


@ray.remote(num_cpus=0)
def where() -> str:
    return ray.get_runtime_context().get_node_id()


def main(address: str, root: str, n_workers: int) -> None:
    ray.init(address=address, log_to_driver=False)
    labels: dict[str, str] = {}
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        res = node["Resources"]
        if "node:__internal_head__" in res:
            labels["head"] = node["NodeID"]
        for i in range(n_workers):
            if f"raysys_node_{i}" in res:
                labels[f"worker{i}"] = node["NodeID"]

    def pinned(fn, label: str):
        return fn.options(scheduling_strategy=NodeAffinitySchedulingStrategy(labels[label], soft=False))

    Path(root).mkdir(parents=True, exist_ok=True)
    Path(root, "driver.txt").write_text("driver")
    written = ray.get([pinned(write, label).remote(root, f"{label}.txt") for label in labels])
    seen = dict(zip(labels, ray.get([pinned(look, label).remote(root) for label in labels]),
                    strict=True))
    print(json.dumps({
        "labels": labels,
        "driver_node": ray.get_runtime_context().get_node_id(),
        "written_on": [w["node"] for w in written],
        "seen": {label: s["files"] for label, s in seen.items()},
        "ran_on": {label: s["node"] for label, s in seen.items()},
        "host_sees": sorted(os.listdir(root)),
        "zero_cpu_task_node": ray.get(where.remote()),
        "resources": ray.cluster_resources(),
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
