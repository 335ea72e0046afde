"""Training throughput: plain PyTorch vs raysys (Ray Train + DeepSpeed) 1 and 2 workers, and
raysys DPO vs TRL's DPOTrainer, on the same tiny model, data and batch.

    .venv/bin/python benchmarks/training.py [--steps 40] [--out benchmarks/RESULTS.training.md]

Step times are wall-clock means over the steps after a warm-up, measured inside each loop
(Ray / DeepSpeed start-up excluded; reported apart). Needs ``trl`` for the TRL row. ``--profile``
adds where one step's time goes (plain loop vs the worker's ``_train_step``, in this process).
The real model's rows (full and LoRA): ``benchmarks/real_model.py --section training``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARMUP = 10   # raysys logs every 10 steps by default: its first point is step 10
GLOBAL_BATCH = 16
EASY = {"min_steps": 1, "max_steps": 1, "max_operand": 5, "ops": "+"}


class Timers:
    """Accumulated wall seconds per named part: ``with timers("part", on): ...``."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, on: bool = True) -> Iterator[None]:
        t = time.perf_counter()
        yield
        if on:
            self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - t

    def wrap(self, name: str, fn: Callable[..., Any], gate: list[bool]) -> Callable[..., Any]:
        """``fn`` timed under ``name`` while ``gate[0]`` is true."""
        def timed_fn(*a: Any, **kw: Any) -> Any:
            with self(name, gate[0]):
                return fn(*a, **kw)
        return timed_fn

    def per_step(self, steps: int) -> dict[str, float]:
        return {k: 1000 * v / steps for k, v in self.total.items()}


def _rows(n: int) -> tuple[list[dict], list[dict]]:
    from raysys.data.synthetic import make_problems

    probs = make_problems(n, 0, **EASY)
    sft = [{"prompt": p["question"] + "\n", "response": p["solution"]} for p in probs]
    pairs = [{"prompt": p["question"] + "\n", "chosen": p["solution"],
              "rejected": p["solution"].rsplit("#### ", 1)[0] + f"#### {int(p['answer']) + 1}"}
             for p in probs]
    return sft, pairs


def _per_step_ms(points: list[tuple[int, float]]) -> float:
    """Mean ms per step after the warm-up, from ``(step, cumulative wall seconds)`` points, so
    everything a loop does between steps (reports, logging, metrics lines) counts."""
    first = next(p for p in points if p[0] >= WARMUP)
    last = points[-1]
    return 1000 * (last[1] - first[1]) / (last[0] - first[0])


def plain_sft(model_dir: Path, rows: list[dict], steps: int, micro: int = GLOBAL_BATCH,
              parts: dict[str, float] | None = None, max_len: int = 256, model: Any = None) -> float:
    """A single-process PyTorch loop doing the same work: AdamW, clipping, cosine LR.
    ``parts`` (if given) receives ms/step of collate, forward+loss, backward and the optimizer
    step (clip, AdamW, schedule, zero_grad) after the warm-up. ``model``: one built (e.g. LoRA)."""
    import torch

    from raysys.models.loading import load_model, load_tokenizer
    from raysys.training.collators import SFTCollator, tokenize_sft
    from raysys.training.losses import sft_loss
    from raysys.training.schedule import lr_factor, micro_batches

    torch.manual_seed(0)
    tok = load_tokenizer(str(model_dir), padding_side="right")
    model = (model or load_model(str(model_dir), dtype="float32")).train()
    examples, _ = tokenize_sft(rows, tok, max_len)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, 0.0))
    collate = SFTCollator(tok.pad_token_id)
    elapsed = []
    t0 = time.perf_counter()
    acc = Timers()
    for step in range(steps):
        on = step >= WARMUP
        with acc("collate", on):
            (idx,) = micro_batches(step, len(examples), 0, rank=0, world=1, micro=micro, accum=1)
            batch = collate([examples[i] for i in idx])
        with acc("forward + loss", on):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = sft_loss(logits, batch["labels"])
        with acc("backward", on):
            loss.backward()
        with acc("optimizer step", on):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        elapsed.append((step + 1, time.perf_counter() - t0))
    if parts is not None:
        parts.update(acc.per_step(steps - WARMUP))
    return _per_step_ms(elapsed)


def _cfg_dict(model_dir: Path, data: Path, tmp: Path, name: str, kind: str, workers: int,
              steps: int, **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "model": str(model_dir), "data": str(data), "out": str(tmp / name),
            "name": name, "num_workers": workers, "micro_batch_size": GLOBAL_BATCH // workers,
            "max_steps": steps, "lr": 1e-3, "lora": {"enabled": False}, "zero_stage": 2, **kw}


def raysys_run(model_dir: Path, data: Path, tmp: Path, name: str, kind: str, workers: int,
               steps: int, **kw: Any) -> tuple[float, float, float]:
    """(mean ms/step after warm-up, wall seconds including Ray Train + DeepSpeed start-up,
    mean ms inside ``_train_step`` at the logged steps after warm-up: the worker's own clock)."""
    from raysys.config import from_dict
    from raysys.training.config import TrainConfig
    from raysys.training.trainer import train

    cfg = from_dict(TrainConfig, _cfg_dict(model_dir, data, tmp, name, kind, workers, steps, **kw))
    t0 = time.perf_counter()
    res = train(cfg, run_dir=tmp / "ray_train")
    wall = time.perf_counter() - t0
    lines = [json.loads(ln) for ln in (res.out / "metrics.jsonl").read_text().splitlines()]
    inside = [m["step_time_s"] for m in lines if m["step"] > WARMUP]
    return (_per_step_ms([(m["step"], m["elapsed_s"]) for m in lines]), wall,
            1000 * sum(inside) / len(inside))


def trl_dpo(model_dir: Path, pairs: list[dict], tmp: Path, steps: int) -> float | None:
    """TRL DPOTrainer on the same pairs and batch; mean ms/step via a callback."""
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import DPOConfig, DPOTrainer
    except ImportError:
        return None
    from raysys.models.loading import load_model, load_tokenizer

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.elapsed: list[tuple[int, float]] = []
            self.t0 = 0.0

        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            self.elapsed.append((state.global_step, time.perf_counter() - self.t0))

    timer = StepTimer()
    tok = load_tokenizer(str(model_dir), padding_side="right")
    args = DPOConfig(output_dir=str(tmp / "trl"), per_device_train_batch_size=GLOBAL_BATCH,
                     max_steps=steps, learning_rate=1e-3, beta=0.1, logging_steps=10**6,
                     save_strategy="no", report_to=[], use_cpu=True, bf16=False,
                     dataloader_num_workers=0, max_length=256, seed=0)
    trainer = DPOTrainer(model=load_model(str(model_dir), dtype="float32").train(), args=args,
                         train_dataset=Dataset.from_list(pairs), processing_class=tok,
                         callbacks=[timer])
    trainer.train()
    return _per_step_ms(timer.elapsed)


def in_process_run(model_dir: Path, data: Path, tmp: Path, kind_name: str, steps: int,
                   micro: int = GLOBAL_BATCH, **kw: Any) -> Any:
    """The worker's ``_Run`` built as ``worker._setup`` builds it (same model, AdamW, schedule,
    DeepSpeed config) but in this process, without Ray: a gloo world of 1."""
    import socket

    import deepspeed

    from raysys.config import from_dict
    from raysys.models.loading import load_tokenizer
    from raysys.training.config import TrainConfig
    from raysys.training.data import load_rows, tokenize_rows
    from raysys.training.kinds import get_kind, load_model
    from raysys.training.schedule import lr_factor
    from raysys.training.worker import _Run, deepspeed_config

    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(sk.getsockname()[1]),
                              RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    name = f"prof-{kind_name}-{micro}-z{kw.get('zero_stage', 2)}"
    cfg = from_dict(TrainConfig, _cfg_dict(model_dir, data, tmp, name, kind_name, 1, steps,
                                           micro_batch_size=micro, **kw))
    kind = get_kind(kind_name)
    tok = load_tokenizer(str(model_dir), padding_side="right")
    examples, _ = tokenize_rows(kind_name, load_rows(data, kind_name), tok, cfg.max_len,
                                cfg.overflow, data)
    work = Path(tempfile.mkdtemp(prefix=name + "-work-", dir=tmp))   # never the out dir
    (torch := __import__("torch")).manual_seed(cfg.seed)
    model = load_model(kind, cfg)
    if kind.prepare is not None:
        kind.prepare(cfg, model, examples, tok.pad_token_id, 0, 1, work)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, cfg.warmup_ratio))
    deepspeed.init_distributed(dist_backend="gloo")
    engine, _, _, sched = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                               config=deepspeed_config(cfg, 1))
    return _Run(cfg, kind, engine, sched, tok, examples, tok.pad_token_id, 0, 1, steps,
                work / "metrics.jsonl", None)       # keys: the default shuffled order


def profile_worker_step(run: Any, steps: int) -> tuple[float, dict[str, float]]:
    """ms/step of ``worker._train_step`` in this process, and ms/step per part: the kind's
    collate / count / loss (forward + loss), ``_all_reduce_sum``, ``engine.backward``,
    ``engine.step``, ``get_global_grad_norm``; "rest" is the step minus those parts."""
    from dataclasses import replace

    import raysys.training.worker as worker

    acc, gate, kind = Timers(), [False], run.kind
    run.kind = replace(kind, collate=acc.wrap("collate", kind.collate, gate),
                       count=acc.wrap("count", kind.count, gate),
                       loss=acc.wrap("forward + loss", kind.loss, gate))
    eng = run.engine
    for attr, part in (("backward", "backward"), ("step", "optimizer step (DeepSpeed)"),
                       ("get_global_grad_norm", "get_global_grad_norm")):
        object.__setattr__(eng, attr, acc.wrap(part, getattr(eng, attr), gate))
    saved = worker._all_reduce_sum, worker._to_device
    worker._all_reduce_sum = acc.wrap("_all_reduce_sum", saved[0], gate)
    worker._to_device = acc.wrap("to_device", saved[1], gate)
    elapsed = []
    try:
        t0 = time.perf_counter()
        for step in range(steps):
            gate[0] = step >= WARMUP
            with acc("step total", gate[0]):
                worker._train_step(run, step)
            elapsed.append((step + 1, time.perf_counter() - t0))
    finally:
        worker._all_reduce_sum, worker._to_device = saved
        run.kind = kind
    parts = acc.per_step(steps - WARMUP)
    total = parts.pop("step total")
    parts["rest (plan, metrics dict, float(loss))"] = total - sum(parts.values())
    return _per_step_ms(elapsed), parts


def gloo_all_reduce_ms(numel: int, iters: int = 20) -> float:
    """Mean ms of one gloo all-reduce of ``numel`` fp32 values between 2 local processes (the
    gradient all-reduce 2 data-parallel workers add to every step)."""
    import torch.multiprocessing as mp
    q = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_gloo_worker, args=(numel, iters, q), nprocs=2, join=True)
    return q.get()


def _gloo_worker(rank: int, numel: int, iters: int, q: Any) -> None:
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=rank, world_size=2)
    t, t0 = torch.ones(numel), 0.0
    for i in range(iters + 3):           # 3 warm-up calls
        t0 = time.perf_counter() if i == 3 else t0
        dist.all_reduce(t)
    if rank == 0:
        q.put(1000 * (time.perf_counter() - t0) / iters)
    dist.destroy_process_group()


def _keep(best: dict[str, tuple[float, dict[str, float]]], name: str, ms: float, parts: dict) -> None:
    best[name] = min(best.get(name, (ms, parts)), (ms, parts), key=lambda x: x[0])


def profile(model_dir: Path, data_sft: Path, data_pairs: Path, sft: list[dict], tmp: Path,
            steps: int) -> str:
    """Markdown: where a step's time goes, plain loop vs the worker step in-process (no Ray),
    SFT at micro-batch 16 and 8 (what each of 2 workers runs) and DPO at 16."""
    best: dict[str, tuple[float, dict[str, float]]] = {}
    for _ in range(2):    # interleaved repeats, best of 2 each: load drifts on a shared box
        for micro in (GLOBAL_BATCH, GLOBAL_BATCH // 2):
            parts: dict[str, float] = {}
            ms = plain_sft(model_dir, sft, steps, micro, parts)
            _keep(best, f"plain SFT, batch {micro}", ms, parts)
        for kind, data, micro, zero in (("sft", data_sft, GLOBAL_BATCH, 2),
                                        ("sft", data_sft, GLOBAL_BATCH // 2, 2),
                                        ("sft", data_sft, GLOBAL_BATCH, 0),
                                        ("sft", data_sft, GLOBAL_BATCH // 2, 0),
                                        ("dpo", data_pairs, GLOBAL_BATCH, 2)):
            run = in_process_run(model_dir, data, tmp, kind, steps, micro, zero_stage=zero)
            ms, parts = profile_worker_step(run, steps)
            _keep(best, f"raysys {kind.upper()} step, batch {micro}, ZeRO-{zero}", ms, parts)
    cols = [(name, ms, parts) for name, (ms, parts) in best.items()]
    from raysys.models.loading import load_model

    n_params = sum(p.numel() for p in load_model(str(model_dir)).parameters())
    allreduce = gloo_all_reduce_ms(n_params)
    names = list(dict.fromkeys(k for _, _, parts in cols for k in parts))
    lines = ["| part (ms/step) | " + " | ".join(c[0] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for k in names:
        lines.append(f"| {k} | " + " | ".join(f"{parts[k]:.2f}" if k in parts else "-"
                                              for _, _, parts in cols) + " |")
    lines.append("| **step (loop clock)** | " + " | ".join(f"**{ms:.1f}**" for _, ms, _ in cols) + " |")
    return "\n".join(lines) + (f"\n\ngloo all-reduce of the {n_params:,} fp32 gradients between "
                               f"2 local processes (1 thread each): {allreduce:.2f} ms.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.training.md"))
    ap.add_argument("--profile", action="store_true", help="also profile one step's parts")
    ap.add_argument("--profile-only", action="store_true", help="only the profile (printed)")
    args = ap.parse_args()

    import ray
    import torch

    from raysys.models.tiny import build_tiny_model

    # Ray gives each 1-CPU worker one intra-op thread; the in-process loops get the same.
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="raysys-bench-train-"))
    model_dir = build_tiny_model(tmp / "model")
    sft, pairs = _rows(GLOBAL_BATCH * args.steps)
    data_sft, data_pairs = tmp / "sft.jsonl", tmp / "pairs.jsonl"
    data_sft.write_text("".join(json.dumps(r) + "\n" for r in sft))
    data_pairs.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    load_before = os.getloadavg()[0]
    if args.profile_only:
        return print(f"load {load_before:.1f}\n" + profile(model_dir, data_sft, data_pairs, sft,
                                                            tmp, args.steps) + f"load {os.getloadavg()[0]:.1f}")
    prof = profile(model_dir, data_sft, data_pairs, sft, tmp, args.steps) if args.profile else ""

    rows: list[tuple[str, float, float | None, float | None]] = []
    # Plain loop before and after the Ray runs, the faster kept: load swings must not decide.
    plain_first = plain_sft(model_dir, sft, args.steps)
    rows.append(("SFT: plain PyTorch loop, 1 process", plain_first, None, None))
    from raysys.distributed.ray_init import dashboard_init_kwargs  # no stray 8265 State API
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             log_to_driver=False, **dashboard_init_kwargs(False))
    try:
        one = raysys_run(model_dir, data_sft, tmp, "sft1", "sft", 1, args.steps)
        two = raysys_run(model_dir, data_sft, tmp, "sft2", "sft", 2, args.steps)
        # ZeRO-0: plain data parallelism (one gradient all-reduce per step), nothing sharded
        one0 = raysys_run(model_dir, data_sft, tmp, "sft1z0", "sft", 1, args.steps, zero_stage=0)
        two0 = raysys_run(model_dir, data_sft, tmp, "sft2z0", "sft", 2, args.steps, zero_stage=0)
        dpo = raysys_run(model_dir, data_pairs, tmp, "dpo1", "dpo", 1, args.steps)
    finally:
        ray.shutdown()
    rows += [("SFT: raysys, 1 worker (DeepSpeed ZeRO-2)", *one),
             ("SFT: raysys, 2 workers (DeepSpeed ZeRO-2)", *two),
             ("SFT: raysys, 1 worker (DeepSpeed ZeRO-0)", *one0),
             ("SFT: raysys, 2 workers (DeepSpeed ZeRO-0)", *two0)]
    trl = trl_dpo(model_dir, pairs, tmp, args.steps)
    plain = min(plain_first, plain_sft(model_dir, sft, args.steps))
    rows[0] = ("SFT: plain PyTorch loop, 1 process (best of 2)", plain, None, None)
    rows.append(("DPO: raysys, 1 worker (ref log-probs precomputed)", *dpo))
    if trl is not None:
        rows.append(("DPO: TRL DPOTrainer, 1 process", trl, None, None))
    load_after = os.getloadavg()[0]

    def line(name: str, ms: float, wall: float | None, inside: float | None, ref: float) -> str:
        w, i = (f"{wall:.0f}", f"{inside:.1f}") if wall is not None else ("-", "-")
        return f"| {name} | {ms:.1f} | {1000 * GLOBAL_BATCH / ms:.0f} | {ms / ref:.2f} | {i} | {w} |"

    table = ["| run | ms/step | samples/s | ms/step ratio | in-step ms (worker clock) | wall s "
             "(incl. start-up) |", "|---|---|---|---|---|---|"]
    table += [line(*r, plain) for r in rows[:5]]
    table += [line(*r, trl or dpo[0]) for r in rows[5:]]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = "\n".join([
        "# Training throughput", "",
        f"{when}; {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; machine shared with "
        f"other work (1-min load average {load_before:.1f} before, {load_after:.1f} after).",
        f"Tiny Llama (hidden 128, 2 layers, vocab {len(__import__('raysys.models.loading', fromlist=['x']).load_tokenizer(str(model_dir)))}), fp32, "
        f"full fine-tuning, global batch {GLOBAL_BATCH}, {args.steps} steps, mean ms/step after "
        f"{WARMUP} warm-up steps, wall clock inside each loop (raysys: including its metrics "
        f"and progress lines every 10 steps, the default; start-up excluded). Every loop uses one torch thread per process (Ray's setting for a "
        "1-CPU worker). SFT ratios are against the plain loop; DPO ratios against TRL.",
        "", *table, "",
        f"Command: `.venv/bin/python benchmarks/training.py{' --profile' if args.profile else ''}`",
        "", *(["## Profile: one step's parts, in this process (no Ray), after the warm-up", "",
               prof] if prof else [])])
    print(md)
    Path(args.out).write_text(md)


if __name__ == "__main__":
    main()
