"""Weights through Ray vs through a disk: what a node without the driver's disk pays per refresh.

    .venv/bin/python benchmarks/transfer.py [--rounds 3] [--real models/smollm2-135m-instruct]

A 2-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: the head holds the driver
and the run store, a worker node runs the consumers). For each artifact (the tiny model's full
weights and a LoRA adapter on it; with ``--real``, the 135M model's full weights and an adapter),
it times:

- **through Ray, first fetch**: a task on the worker node calls ``artifacts.localize`` with an
  empty node cache (manifest + content digest on the store + chunks + rename);
- **through Ray, cached**: the same call again (a node that has a copy does not fetch);
- **push back**: ``artifacts.push_dir`` of the same dir from the worker node to the driver's
  run dir (what rank 0 does with a trained model);
- **disk baseline**: writing the dir to a new place and reading every byte back, on the worker
  (what a shared disk costs at best: the local page cache, no network);
- **first weights of a replica on another node**: a ``SamplerActor`` (HF engine) started on
  the worker node, until it answers, through Ray vs with the path on a shared disk.

Bytes are the artifact's size. Each figure is the median of ``--rounds``; the store's digest is
computed once per content (later rounds reuse it), as in a run where many replicas fetch the
same stage output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter (r=8 on q/v projections) on ``base``, as a stage that trained LoRA saves."""
    from peft import LoraConfig, get_peft_model

    from raysys.models.loading import load_model

    model = get_peft_model(load_model(base, dtype="float32", device="cpu"),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(out, safe_serialization=True)
    return out


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def _fetch(path: str, cache: str) -> tuple[float, float]:
    """(first fetch s, cached s) of ``path`` on this node into an empty ``cache``."""
    os.environ["RAYSYS_NODE_CACHE"] = cache
    from raysys.distributed.artifacts import localize

    t0 = time.perf_counter()
    localize(path)
    t1 = time.perf_counter()
    localize(path)
    return t1 - t0, time.perf_counter() - t1


def _push(path: str, dest: str) -> float:
    from raysys.distributed.artifacts import push_dir

    tmp = Path(tempfile.mkdtemp()) / "m"
    shutil.copytree(path, tmp)
    t0 = time.perf_counter()
    push_dir(tmp, dest)
    return time.perf_counter() - t0


def _disk(path: str) -> float:
    """Write the dir to a new place and read every byte back (page cache dropped not: best case)."""
    tmp = Path(tempfile.mkdtemp()) / "m"
    t0 = time.perf_counter()
    shutil.copytree(path, tmp)
    for p in tmp.rglob("*"):
        if p.is_file():
            with p.open("rb") as f:
                while f.read(1 << 24):
                    pass
    dt = time.perf_counter() - t0
    shutil.rmtree(tmp.parent)
    return dt


def _replica_ready(node: str, model: str, cache: str, adapter: str | None) -> float:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from raysys.config import EngineConfig, ModelSpec
    from raysys.distributed.actors import SamplerActor

    t0 = time.perf_counter()
    actor = ray.remote(SamplerActor).options(
        num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        runtime_env={"env_vars": {"RAYSYS_NODE_CACHE": cache}},
    ).remote(ModelSpec(path=model, adapter=adapter), EngineConfig(kind="hf"))
    ray.get(actor.ping.remote())
    dt = time.perf_counter() - t0
    ray.kill(actor)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--real", default=str(ROOT / "models" / "smollm2-135m-instruct"),
                    help="the imported 135M model dir (make real-model); skipped when absent")
    args = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from raysys.distributed import run_store
    from raysys.models.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="raysys-transfer-"))
    arts: list[tuple[str, Path]] = []
    tiny = build_tiny_model(work / "tiny", hidden=128, layers=2, heads=2, vocab_size=512, seed=0)
    arts += [("tiny full", Path(tiny)), ("tiny LoRA adapter", _adapter(Path(tiny), work / "tiny_lora"))]
    real = Path(args.real)
    if (real / "config.json").is_file():
        arts += [("135M full", real), ("135M LoRA adapter", _adapter(real, work / "real_lora"))]
    else:
        print(f"(no {real}: run `make real-model` for the 135M rows)")

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    c.add_node(num_cpus=2, resources={"worker": 1}, object_store_memory=2 << 30)
    ray.init(address=c.address)
    try:
        node = next(n["NodeID"] for n in ray.nodes() if "worker" in n["Resources"])
        run_store.start_store([work, real] if real.exists() else [work])

        def on_worker(fn: Any, *a: Any) -> Any:
            task = ray.remote(num_cpus=0)(fn).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False))
            return ray.get(task.remote(*a))

        rows = []
        for name, path in arts:
            first, cached, push, disk = [], [], [], []
            for r in range(args.rounds):
                f, cch = on_worker(_fetch, str(path), str(work / f"cache_{name}_{r}".replace(" ", "_")))
                first.append(f)
                cached.append(cch)
                push.append(on_worker(_push, str(path), str(work / "run" / f"{name}_{r}".replace(" ", "_"))))
                disk.append(on_worker(_disk, str(path)))
            rows.append((name, _size(path), *(statistics.median(x) for x in (first, cached, push, disk))))
        ready = []
        for name, path in arts[:1] + arts[2:3]:
            through = statistics.median(_replica_ready(node, str(path), str(work / f"rc_{name}_{r}"), None)
                                        for r in range(args.rounds))
            os.environ["RAYSYS_STORE_COPY"] = "0"
            run_store.stop_store()              # no store: the replica opens the shared path
            local = statistics.median(_replica_ready(node, str(path), str(work / "unused"), None)
                                      for _ in range(args.rounds))
            run_store.start_store([work, real] if real.exists() else [work])
            ready.append((name, through, local))
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.rounds} rounds each, medians; 2-node Ray cluster on one machine "
          f"({os.cpu_count()} CPUs)\n")
    print("| artifact | MB | through Ray, first fetch s | MB/s | cached s | push back s | "
          "disk write+read s | first fetch / disk |")
    print("|---|---|---|---|---|---|---|---|")
    for name, size, f, cch, p, d in rows:
        print(f"| {name} | {size / 1e6:.1f} | {f:.3f} | {size / 1e6 / f:.0f} | {cch:.4f} | {p:.3f} | "
              f"{d:.3f} | {f / d:.1f}x |")
    print("\n| replica on another node, until it answers | through Ray s | shared path s | ratio |")
    print("|---|---|---|---|")
    for name, t, loc in ready:
        print(f"| {name} | {t:.2f} | {loc:.2f} | {t / loc:.2f}x |")


if __name__ == "__main__":
    main()
