"""Training throughput: plain PyTorch vs raysys (Ray Train + DeepSpeed) 1 and 2 workers, and
raysys DPO vs TRL's DPOTrainer, on the same tiny model, data and batch.

    .venv/bin/python benchmarks/training.py [--steps 40] [--out benchmarks/RESULTS.training.md]

Step times are wall-clock means over the steps after a warm-up, measured inside each loop
(Ray / DeepSpeed start-up excluded; it is reported separately). Needs ``trl`` for the TRL row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARMUP = 10   # raysys logs every 10 steps by default: its first point is step 10
GLOBAL_BATCH = 16
EASY = {"min_steps": 1, "max_steps": 1, "max_operand": 5, "ops": "+"}


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


def plain_sft(model_dir: Path, rows: list[dict], steps: int) -> float:
    """A single-process PyTorch loop doing the same work: AdamW, clipping, cosine LR."""
    import torch

    from raysys.models.loading import load_model, load_tokenizer
    from raysys.training.collators import SFTCollator, tokenize_sft
    from raysys.training.losses import sft_loss
    from raysys.training.schedule import lr_factor, micro_batches

    torch.manual_seed(0)
    tok = load_tokenizer(str(model_dir), padding_side="right")
    model = load_model(str(model_dir), dtype="float32").train()
    examples, _ = tokenize_sft(rows, tok, 256)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, 0.0))
    collate = SFTCollator(tok.pad_token_id)
    elapsed = []
    t0 = time.perf_counter()
    for step in range(steps):
        (idx,) = micro_batches(step, len(examples), 0, rank=0, world=1, micro=GLOBAL_BATCH, accum=1)
        batch = collate([examples[i] for i in idx])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = sft_loss(logits, batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        elapsed.append((step + 1, time.perf_counter() - t0))
    return _per_step_ms(elapsed)


def raysys_run(model_dir: Path, data: Path, tmp: Path, name: str, kind: str, workers: int,
               steps: int, **kw: Any) -> tuple[float, float]:
    """(mean ms/step after warm-up, wall seconds including Ray Train + DeepSpeed start-up)."""
    from raysys.config import from_dict
    from raysys.training.config import TrainConfig
    from raysys.training.trainer import train

    cfg = from_dict(TrainConfig, {
        "kind": kind, "model": str(model_dir), "data": str(data), "out": str(tmp / name),
        "name": name, "num_workers": workers, "micro_batch_size": GLOBAL_BATCH // workers,
        "max_steps": steps, "lr": 1e-3, "lora": {"enabled": False}, "zero_stage": 2, **kw})
    t0 = time.perf_counter()
    res = train(cfg, run_dir=tmp / "ray_train")
    wall = time.perf_counter() - t0
    lines = [json.loads(ln) for ln in (res.out / "metrics.jsonl").read_text().splitlines()]
    return _per_step_ms([(m["step"], m["elapsed_s"]) for m in lines]), wall


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.training.md"))
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

    rows: list[tuple[str, float, float | None]] = []
    # Run the plain loop before and after the Ray runs and keep the faster: on a shared machine
    # load swings between runs would otherwise decide the ratio.
    plain_first = plain_sft(model_dir, sft, args.steps)
    rows.append(("SFT: plain PyTorch loop, 1 process", plain_first, None))
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             include_dashboard=False, log_to_driver=False)
    try:
        one, wall1 = raysys_run(model_dir, data_sft, tmp, "sft1", "sft", 1, args.steps)
        two, wall2 = raysys_run(model_dir, data_sft, tmp, "sft2", "sft", 2, args.steps)
        dpo, wall3 = raysys_run(model_dir, data_pairs, tmp, "dpo1", "dpo", 1, args.steps)
    finally:
        ray.shutdown()
    rows += [("SFT: raysys, 1 worker (DeepSpeed ZeRO-2)", one, wall1),
             ("SFT: raysys, 2 workers (DeepSpeed ZeRO-2)", two, wall2)]
    trl = trl_dpo(model_dir, pairs, tmp, args.steps)
    plain = min(plain_first, plain_sft(model_dir, sft, args.steps))
    rows[0] = ("SFT: plain PyTorch loop, 1 process (best of 2)", plain, None)
    rows.append(("DPO: raysys, 1 worker (ref log-probs precomputed)", dpo, wall3))
    if trl is not None:
        rows.append(("DPO: TRL DPOTrainer, 1 process", trl, None))
    load_after = os.getloadavg()[0]

    def line(name: str, ms: float, wall: float | None, ref: float) -> str:
        w = f"{wall:.0f}" if wall is not None else "-"
        return f"| {name} | {ms:.1f} | {1000 * GLOBAL_BATCH / ms:.0f} | {ms / ref:.2f} | {w} |"

    table = ["| run | ms/step | samples/s | ms/step ratio | wall s (incl. start-up) |",
             "|---|---|---|---|---|"]
    table += [line(n, ms, w, plain) for n, ms, w in rows[:3]]
    table += [line(n, ms, w, trl or dpo) for n, ms, w in rows[3:]]
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
        "Command: `.venv/bin/python benchmarks/training.py`", ""])
    print(md)
    Path(args.out).write_text(md)


if __name__ == "__main__":
    main()
