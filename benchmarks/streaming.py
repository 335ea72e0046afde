"""Streaming between roles vs stage barriers: one critique-in-the-loop iteration's three stages
(actor samples -> critic critiques of the wrong ones -> actor refinements) on two actor groups
alive at once (split placement), run with barriers and streamed chunk by chunk, in one run.

    .venv/bin/python benchmarks/streaming.py [--questions 240] [--chunk 40] [--out benchmarks/RESULTS.streaming.md]

Both paths use the recipe's own code (`raysys.recipes.critique_steps.streamed_iteration` and the
barrier stages of `raysys.recipes.critique`), the same tiny actor and critic (built here, not
trained: every answer is wrong, so every sample is critiqued and refined: the heaviest case).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=240)
    ap.add_argument("--chunk", type=int, default=40)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from raysys.config import ModelSpec, to_dict
    from raysys.models.tiny import build_tiny_model
    from raysys.pipeline import RunDir
    from raysys.recipes import critique as recipe
    from raysys.recipes import critique_steps as cs
    from raysys.recipes import load_run_config, steps
    from raysys.distributed.actors import SamplerActor

    tmp = Path(tempfile.mkdtemp(prefix="raysys-stream-"))
    actor = build_tiny_model(tmp / "actor", hidden=128, layers=2, heads=2, seed=1)
    critic = build_tiny_model(tmp / "critic", hidden=128, layers=2, heads=2, seed=2)
    rows = []
    for mode in ("barriers", "streamed"):
        cfg = load_run_config(ROOT / "configs" / "critique_demo_quick.yaml", [
            f"run_dir={tmp / mode}", f"data.train.options.n={args.questions}",
            "cluster.placement=split", f"loop.stream={'true' if mode == 'streamed' else 'false'}",
            f"loop.stream_chunk={args.chunk}", "loop.sample_num=2",
            "cluster.roles={sampler: {replicas: 1, cpus_per_replica: 1}, "
            "critic: {replicas: 1, cpus_per_replica: 1}}"])
        rd = RunDir(cfg.run_dir, to_dict(cfg))
        ctx = steps.open_context(rd, engine=cfg.engine, cluster=cfg.cluster,
                                 grade_style=cfg.data.grade_style, greedy=cfg.greedy, seed=cfg.seed)
        try:
            train = steps.problems(ctx, "train", cfg.data.train)
            a, c = ModelSpec(path=str(actor)), ModelSpec(path=str(critic))
            # start both groups before timing: start-up is not what streaming changes
            ctx.groups.get("sampler", SamplerActor, a, ctx.engine)
            ctx.groups.get("critic", SamplerActor, c, ctx.engine)
            t0 = time.perf_counter()
            if mode == "streamed":
                samples, crits, refs = cs.streamed_iteration(cfg, ctx, 1, train, a, c)
            else:
                problems = {p["id"]: p for p in train.to_pylist()}
                samples, refs = recipe._sample_critique_refine(cfg, ctx, 1, "critique", train,
                                                               problems, a, c)
            wall = time.perf_counter() - t0
            rows.append((mode, wall, samples.num_rows, len(refs)))
        finally:
            steps.close_context(ctx)
    base = rows[0][1]
    load = os.getloadavg()
    lines = [f"## Streaming between roles ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
             f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}. One iteration: {args.questions} "
             f"questions x 2 samples, critiques of the wrong ones, 2 refinements each; actor and "
             f"critic groups of 1 replica x 1 CPU alive at once (split); chunks of {args.chunk}.",
             "", "| path | wall s | samples | refinements | speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {w:.1f} | {s} | {r} | {base / w:.2f}x |" for m, w, s, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
