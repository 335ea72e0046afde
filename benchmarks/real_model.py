"""The benchmarks on a real pretrained model (SmolLM2-135M-Instruct from ``make real-model``), one
section each, every ratio measured inside one run of its section:

- ``sampling``: VLLMEngine vs HFEngine vs plain ``vllm.LLM.generate`` on GSM8K test questions in
  the model's chat template (``sampling.py --model-dir --gsm8k``): tokens/s and the
  wrapper / plain ratio;
- ``training``: one Ray Train worker (DeepSpeed ZeRO-2, full and LoRA) vs the plain PyTorch loop
  of ``training.py`` on the same batches of GSM8K SFT rows: ms/step ratio;
- ``refresh``: a live pool's ``load_weights`` (full weights, LoRA adapter) vs a fresh pool, HF and
  vLLM, greedy outputs asserted equal (``refresh.py --model-dir --vllm``);
- ``guided``: LLM2 guided decoding with the model as LLM (verifier: its backbone with a fresh
  head, as the recipe starts one) vs plain HF decoding at batch 16 (``guided.py``).

    .venv/bin/python benchmarks/real_model.py [--quick] [--section NAME ...] [--model-dir DIR]

Sizes are scaled for a shared 2-core CPU box (each section a few minutes there; ``--quick``: a
smoke-size run). Each section prints the 1-minute load average before and after it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from real_data import DEFAULT_MODEL, describe, sft_rows  # noqa: E402

SECTIONS = ("sampling", "training", "refresh", "guided", "profile")
# (full, quick) sizes
SIZES = {
    "sampling": ({"prompts": 64, "tokens": 64, "rounds": 4}, {"prompts": 8, "tokens": 8, "rounds": 1}),
    "training": ({"batch": 2, "max_len": 128, "warmup": 2, "steps": 6},
                 {"batch": 1, "max_len": 128, "warmup": 1, "steps": 3}),
    "refresh": ({"prompts": 8, "tokens": 16, "rounds": 1, "vllm": True},
                {"prompts": 4, "tokens": 8, "rounds": 1, "vllm": False}),
    "guided": ({"prompts": 16, "tokens": 32, "repeats": 2}, {"prompts": 16, "tokens": 4, "repeats": 1}),
    "profile": ({"batch": 2, "max_len": 128, "warmup": 2, "steps": 6},
                {"batch": 1, "max_len": 128, "warmup": 1, "steps": 3}),
}
LORA = {"enabled": True, "r": 16, "alpha": 32}     # the real recipe configs' LoRA


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def script(name: str, *args: object) -> None:
    """Run ``benchmarks/NAME.py ARGS`` with this interpreter; its table goes to stdout."""
    cmd = [sys.executable, str(HERE / f"{name}.py"), *map(str, args)]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def sampling(model: Path, s: dict) -> None:
    script("sampling", "--model-dir", model, "--gsm8k", "--no-naive", "--no-ray",
           "--prompts", s["prompts"], "--max-new-tokens", s["tokens"], "--rounds", s["rounds"],
           "--batch-size", 64)


def refresh(model: Path, s: dict) -> None:
    script("refresh", "--model-dir", model, "--rounds", s["rounds"], "--prompts", s["prompts"],
           "--max-new-tokens", s["tokens"], *(["--vllm"] if s["vllm"] else []))


def guided(model: Path, s: dict) -> None:
    script("guided", "--model", model, "--verifier-from-model", "--gsm8k", "--no-b1",
           "--batch", 16, "--prompts", s["prompts"], "--max-new-tokens", s["tokens"],
           "--top-k-candidates", 0, "--repeats", s["repeats"])


def training(model: Path, s: dict) -> None:
    """Plain loop and one raysys worker, full and LoRA, on the same rows and batch: plain full,
    raysys full, raysys LoRA, plain LoRA (each kind's plain and raysys runs back to back)."""
    import ray
    import torch

    import training as tb
    from raysys.config import from_dict
    from raysys.models.loading import load_model
    from raysys.training.config import TrainConfig
    from raysys.training.model_setup import apply_lora

    torch.set_num_threads(1)           # Ray gives a 1-CPU worker one thread: the plain loop too
    tb.WARMUP = s["warmup"]            # read by the loops' timers and tb._per_step_ms
    batch, steps, max_len = s["batch"], s["steps"], s["max_len"]
    tmp = Path(tempfile.mkdtemp(prefix="raysys-bench-real-train-"))
    rows = sft_rows(model, batch * steps)
    data = tmp / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = dict(micro_batch_size=batch, max_len=max_len, log_every=1, zero_stage=2)
    results: dict[str, tuple[float, float | None]] = {}
    from raysys.distributed.ray_init import dashboard_init_kwargs  # no stray 8265 State API
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             log_to_driver=False, **dashboard_init_kwargs(False))
    try:
        results["full, plain loop"] = (tb.plain_sft(model, rows, steps, batch, max_len=max_len), None)
        ms, wall, _ = tb.raysys_run(model, data, tmp, "real_full", "sft", 1, steps, **common)
        results["full, raysys 1 worker (ZeRO-2)"] = (ms, wall)
        ms, wall, _ = tb.raysys_run(model, data, tmp, "real_full_z0", "sft", 1, steps,
                                    **{**common, "zero_stage": 0})
        results["full, raysys 1 worker (ZeRO-0, the real configs')"] = (ms, wall)
        ms, wall, _ = tb.raysys_run(model, data, tmp, "real_lora", "sft", 1, steps, lora=LORA,
                                    **common)
        results["LoRA r16, raysys 1 worker (ZeRO-2)"] = (ms, wall)
        lora_model = apply_lora(load_model(str(model), dtype="float32"),
                                from_dict(TrainConfig, {"lora": LORA}))
        results["LoRA r16, plain loop"] = (tb.plain_sft(model, rows, steps, batch, max_len=max_len,
                                                        model=lora_model), None)
    finally:
        ray.shutdown()
    print(f"\n{describe(model)}; {len(rows)} GSM8K train SFT rows (chat prompt -> worked "
          f"solution, max_len {max_len}), global batch {batch}, {steps} steps, mean ms/step after "
          f"{s['warmup']} warm-up steps (raysys: metrics line every step); 1 torch thread per "
          "process; lr 1e-3.\n")
    print("| run | ms/step | vs the plain loop of its kind (target <= 1.05x) | wall s incl. start-up |")
    print("|---|---|---|---|")
    for name, (ms, wall) in results.items():
        kind = name.split(",")[0]
        ref = results[f"{kind}, plain loop"][0]
        print(f"| {name} | {ms:.0f} | {ms / ref:.2f}x | {'-' if wall is None else f'{wall:.0f}'} |")


def profile(model: Path, s: dict) -> None:
    """Where a full fine-tuning step's time goes: the plain loop's parts vs the worker's
    ``_train_step`` run in this process without Ray (``training.profile_worker_step``),
    DeepSpeed ZeRO-2 and ZeRO-0, same rows and batch."""
    import torch

    import training as tb

    torch.set_num_threads(1)
    tb.WARMUP = s["warmup"]
    batch, steps, max_len = s["batch"], s["steps"], s["max_len"]
    tmp = Path(tempfile.mkdtemp(prefix="raysys-bench-real-prof-"))
    rows = sft_rows(model, batch * steps)
    data = tmp / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cols: dict[str, tuple[float, dict[str, float]]] = {}
    parts: dict[str, float] = {}
    cols["plain loop"] = (tb.plain_sft(model, rows, steps, batch, parts, max_len=max_len), parts)
    for zero in (2, 0):
        run = tb.in_process_run(model, data, tmp, "sft", steps, batch, zero_stage=zero,
                                max_len=max_len, log_every=1)
        cols[f"worker step, ZeRO-{zero}"] = tb.profile_worker_step(run, steps)
        del run
    names = list(dict.fromkeys(k for _, p in cols.values() for k in p))
    print(f"\nms per step after {s['warmup']} warm-up steps, global batch {batch}, max_len "
          f"{max_len}, 1 torch thread, full fine-tuning, in this process (no Ray)\n")
    print("| part | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for k in names:
        print(f"| {k} | " + " | ".join(f"{p[k]:.0f}" if k in p else "-" for _, p in cols.values()) + " |")
    print("| **step (loop clock)** | " + " | ".join(f"**{ms:.0f}**" for ms, _ in cols.values()) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke-size runs")
    ap.add_argument("--section", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    args = ap.parse_args()
    if not (args.model_dir / "config.json").is_file():
        raise SystemExit(f"{args.model_dir}: no model (run `make real-model`)")
    for name in args.section:
        sizes = SIZES[name][1 if args.quick else 0]
        print(f"\n## {name}: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load "
              f"average {load()} before; sizes {sizes}", flush=True)
        t0 = time.perf_counter()
        globals()[name](args.model_dir, sizes)
        print(f"\n{name}: {time.perf_counter() - t0:.0f} s, load average {load()} after", flush=True)


if __name__ == "__main__":
    main()
