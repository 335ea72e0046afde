"""Reproducer: a second raysys command (its own local Ray) started while a Ray Train stage runs.

    .venv/bin/python benchmarks/two_instances.py [--tries 3] [--delays 0,8,20] [--burn 2]
                                                 [--steps 120] [--workers 2] [--work DIR]

Each try starts ``raysys train`` (SFT on a tiny model, ``--workers`` Ray Train workers,
``--steps`` steps) and, ``delay`` seconds after its first training step is logged (a negative
delay: that many seconds after the train command started, i.e. during Ray start-up or the
worker group's start), ``raysys eval`` on the same machine, which starts its own local Ray
instance. ``--burn K`` adds K busy-looping processes for the whole try (the "training
benchmark that kept both cores busy" of issue 28). It prints per try: each command's exit code
and wall time, the load average, and for a failed command the error lines of its Ray session
(its local session dir, found by the driver's pid) that say why.

Found with it (2 cores, load average 15-30 from CI and other runs): before the fix the Ray Train
stage of ``raysys train`` died ("A worker health check failed ... Destroying worker since its
placement group was removed") within seconds of any other Ray instance's dashboard coming up on
127.0.0.1:8265, the address Ray advertises as a dashboard-less instance's State API; Ray Train's
PlacementGroupCleaner asked that foreign dashboard about its controller, got "no such actor" and
removed the placement group (``ray_init.dashboard_init_kwargs``). After it: 3 of 3 tries with
the eval's dashboard on 8265 or 8266 finished both. One eval once failed to start at load 26-30
(its raylet aborted after ~15 s waiting for its agent's port file): ``local_start`` retries that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RAYSYS = [sys.executable, "-c", "from raysys.cli import main; main()"]
# Lines of a Ray session's logs that say why a worker or actor went away.
WHY = re.compile(r"health check|ActorDiedError|ActorUnavailable|OutOfMemory|SIGKILL|killed|"
                 r"Worker exit|exit_type|unexpectedly|marked as dead|dead|RpcError|failed",
                 re.IGNORECASE)


def env() -> dict[str, str]:
    """The environment of a user's shell: no inherited Ray address, offline hubs."""
    e = dict(os.environ)
    e.pop("RAY_ADDRESS", None)
    e["HF_HUB_OFFLINE"] = "1"
    return e


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """A tiny model, SFT rows and a GSM8K-format test file under ``work`` (reused if there)."""
    from raysys.data.synthetic import make_problems

    model, sft, test = work / "tiny", work / "sft.jsonl", work / "test.jsonl"
    if not (model / "config.json").is_file():
        subprocess.run(RAYSYS + ["models", "tiny", "--out", str(model)], check=True, env=env(),
                       cwd=ROOT, capture_output=True)
    problems = make_problems(64, 0, min_steps=1, max_steps=2, max_operand=9, ops="+-")
    sft.write_text("".join(json.dumps({"prompt": p["question"] + "\n", "response": p["solution"]})
                           + "\n" for p in problems))
    test.write_text("".join(json.dumps({"question": p["question"], "answer": p["solution"]}) + "\n"
                            for p in problems[:24]))
    return model, sft, test


def session_errors(logs: Path, limit: int = 30) -> list[str]:
    """The lines of every log under ``logs`` (a Ray session's logs dir) that match ``WHY``."""
    hits: list[str] = []
    if not logs.is_dir():
        return [f"(no session logs at {logs})"]
    for f in sorted(logs.rglob("*")):
        if not f.is_file() or f.suffix not in (".log", ".err", ".out", ".txt"):
            continue
        try:
            for line in f.read_text(errors="replace").splitlines():
                if WHY.search(line) and "INFO" not in line[:40]:
                    hits.append(f"{f.name}: {line.strip()[:300]}")
        except OSError:
            continue
    return hits[-limit:]


def first_step_seen(run_dir: Path) -> bool:
    """Whether the train command's Ray Train worker logged its first step."""
    return any(p.stat().st_size > 0 for p in run_dir.glob("*-files/metrics.jsonl"))


def one_try(work: Path, i: int, delay: float, steps: int, workers: int,
            inputs: tuple[Path, Path, Path]) -> dict:
    model, sft, test = inputs
    tdir, edir = work / f"try{i}" / "train", work / f"try{i}" / "eval"
    shutil.rmtree(work / f"try{i}", ignore_errors=True)     # a fresh run, not an earlier try's
    tdir.mkdir(parents=True)
    train_cmd = RAYSYS + ["train", "--kind", "sft", "--model", str(model), "--data", str(sft),
                          "--out", str(tdir / "out"), "--workers", str(workers), "--zero", "0",
                          "--lora-r", "0", "--max-steps", str(steps), "--run-dir", str(tdir / "rt"),
                          "--set", "micro_batch_size=2", "--set", "max_len=96"]
    eval_cmd = RAYSYS + ["eval", "--model", str(model), "--data", f"gsm8k:{test}", "--engine", "hf",
                         "--max-new-tokens", "24", "--out", str(edir)]
    t0 = time.monotonic()
    tr = subprocess.Popen(train_cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    if delay >= 0:
        while not first_step_seen(tdir / "rt") and tr.poll() is None:
            time.sleep(0.2)
        t_step = time.monotonic() - t0
        time.sleep(delay)
    else:
        t_step = None
        time.sleep(-delay)
    t_eval = time.monotonic() - t0
    ev = subprocess.Popen(eval_cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    ev_out, ev_err = ev.communicate(timeout=1800)
    t_eval_done = time.monotonic() - t0
    tr_out, tr_err = tr.communicate(timeout=1800)
    t_train_done = time.monotonic() - t0
    res = {"try": i, "delay": delay, "first_step_s": t_step, "eval_started_s": round(t_eval, 1),
           "eval_rc": ev.returncode, "eval_done_s": round(t_eval_done, 1),
           "train_rc": tr.returncode, "train_done_s": round(t_train_done, 1),
           "loadavg": os.getloadavg()}
    for name, rc, err in (("train", tr.returncode, tr_err), ("eval", ev.returncode, ev_err)):
        if rc != 0:
            res[f"{name}_stderr"] = err.strip().splitlines()[-15:]
    # A local Ray session dir ends with the pid of the driver that started it.
    for name, proc in (("train", tr), ("eval", ev)):
        sessions = sorted(Path("/tmp/ray").glob(f"session_*_{proc.pid}"))
        res[f"{name}_session"] = str(sessions[-1]) if sessions else None
        if proc.returncode != 0 and sessions:
            res[f"{name}_session_errors"] = session_errors(sessions[-1] / "logs")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--delays", default="0,8,20", help="comma-separated seconds, cycled")
    ap.add_argument("--burn", type=int, default=0, help="busy-looping processes to add")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/raysys_two_instances"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    inputs = prepare(args.work)
    delays = [float(d) for d in args.delays.split(",")]
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(args.burn)]
    try:
        for i in range(args.tries):
            res = one_try(args.work, i, delays[i % len(delays)], args.steps, args.workers, inputs)
            print(json.dumps(res, indent=1), flush=True)
    finally:
        for b in burners:
            b.kill()


if __name__ == "__main__":
    main()
