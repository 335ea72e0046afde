"""The fixed cost of a stage: a short Ray Train stage and a sampler-group start, on local Ray.

    .venv/bin/python benchmarks/stage_overhead.py [--pairs 2] [--steps 5]

Every demo recipe is a chain of stages; a Ray Train stage pays a fixed start-up and shut-down
around its steps, and a sampler group pays one start per model family. This script runs SFT
stages of ``--steps`` steps on a tiny model (1 worker, 2 CPUs, ZeRO-0, as the demos' training
stages) through ``raysys.training.trainer.train`` on one local Ray instance (8 logical CPUs, as
the demo configs): one warm-up stage per setting (the two settings run the fit task in
different runtime envs, so each starts its own worker once), then ``--pairs`` pairs of stages
with Ray Train's PreemptionWatcher on (its default, the baseline) and off (raysys's default on
a local instance it started, ``trainer.fit_env``), alternating so drift in the machine's speed
hits both. Then it starts a 1-replica HF sampler group and swaps its weights in place. It
prints, per stage, the wall time, the time of the steps themselves and the rest, the mean fixed
cost of each setting and their ratio; then, for the last stage, when each Ray process of it started (from the Ray
session's ``python-core-worker-*.log`` files) relative to the call, so a reader sees where the
fixed cost goes. Ray start-up is excluded. Absolute numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_FIRST_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def process_starts(session_logs: Path, since: float) -> list[tuple[float, str]]:
    """(seconds after ``since``, actor class or "task") of every Ray worker process whose core
    log began after ``since`` (a wall-clock epoch time)."""
    out = []
    for log in session_logs.glob("python-core-worker-*.log"):
        first = log.open().readline()
        m = _FIRST_LINE.match(first)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if t < since:
            continue
        pid = log.stem.rsplit("_", 1)[-1]
        name = "task"
        for err in session_logs.glob(f"worker-*-{pid}.err"):
            for line in err.open():
                if line.startswith(":actor_name:"):
                    name = line.split(":", 2)[2].strip()
                    break
        out.append((t - since, name))
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    if args.pairs < 1:
        ap.error("--pairs: expected >= 1")

    import ray

    from raysys.config import ClusterConfig, EngineConfig, ModelSpec, from_dict
    from raysys.data.synthetic import make_problems
    from raysys.distributed.actors import SamplerPool
    from raysys.distributed.ray_init import init_ray
    from raysys.models.tiny import build_tiny_model
    from raysys.training.config import TrainConfig
    from raysys.training.trainer import PREEMPTION_WATCHER_ENV, train

    tmp = Path(tempfile.mkdtemp(prefix="raysys-overhead-"))
    model = build_tiny_model(tmp / "tiny")
    data = tmp / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": p["question"] + "\n", "response": p["solution"]}) + "\n"
                            for p in make_problems(256, 0)))
    init_ray(from_dict(ClusterConfig, {"num_cpus": 8}))
    ctx = ray.get_runtime_context()
    session_logs = Path(ctx.get_temp_dir()) / ctx.get_session_name() / "logs"

    rows, starts = [], []
    fixed: dict[str, list[float]] = {"on": [], "off": []}
    # a warm-up stage per setting, then on/off pairs; "on" is set in the driver's environment,
    # which fit_env passes on to the fit task (Ray Train's default)
    settings = ["off", "on"] + ["on", "off"] * args.pairs
    for i, watcher in enumerate(settings):
        if watcher == "on":
            os.environ[PREEMPTION_WATCHER_ENV] = "1"
        else:
            os.environ.pop(PREEMPTION_WATCHER_ENV, None)
        cfg = from_dict(TrainConfig, {
            "kind": "sft", "model": str(model), "data": str(data), "out": str(tmp / f"m{i}"),
            "name": f"m{i}", "max_steps": args.steps, "micro_batch_size": 16, "zero_stage": 0,
            "lora": {"enabled": False}, "resources_per_worker": {"CPU": 2}})
        t_wall, t0 = time.time(), time.monotonic()
        result = train(cfg, run_dir=tmp / "ray_train")
        wall = time.monotonic() - t0
        steps_s = float(result.metrics.get("elapsed_s") or 0.0)
        what = f"watcher {watcher}" + (", warm-up" if i < 2 else "")
        rows.append((f"Ray Train stage {i + 1} ({args.steps} steps, {what})", wall, steps_s))
        if i >= 2:
            fixed[watcher].append(wall - steps_s)
        starts = process_starts(session_logs, t_wall)
    os.environ.pop(PREEMPTION_WATCHER_ENV, None)

    spec = ModelSpec(path=str(model))
    t0 = time.monotonic()
    pool = SamplerPool(1, spec, EngineConfig(kind="hf", batch_size=16),
                       ClusterConfig(cpus_per_replica=2, num_cpus=8))
    rows.append(("sampler group start (HF, 1 replica)", time.monotonic() - t0, 0.0))
    t0 = time.monotonic()
    pool.load_weights(str(tmp / "m0"))
    rows.append(("same group, new weights in place", time.monotonic() - t0, 0.0))
    pool.shutdown()

    print("| what | wall s | steps s | fixed s |\n|---|---|---|---|")
    for what, wall, steps_s in rows:
        print(f"| {what} | {wall:.1f} | {steps_s:.1f} | {wall - steps_s:.1f} |")
    on, off = (sum(fixed[k]) / len(fixed[k]) for k in ("on", "off"))
    print(f"\nMean fixed cost of a stage: {on:.1f} s with Ray Train's PreemptionWatcher (its "
          f"default), {off:.1f} s without (raysys on a local instance): {off / on:.2f}x.")
    print(f"\nRay processes the last stage (watcher off) started (seconds after train() was called; "
          f"{len(starts)} in all):\n\n| s | process |\n|---|---|")
    for t, name in starts:
        print(f"| {t:.1f} | {name} |")


if __name__ == "__main__":
    main()
