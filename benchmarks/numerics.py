"""Does this machine train the tiny models bit for bit like the one that measured the tables?

    .venv/bin/python benchmarks/numerics.py [--steps 40]

The demo's tables come from tiny models trained for hundreds of steps, and that training
amplifies last-bit differences in the math kernels: another torch/transformers version or another
CPU instruction set gives other weights, and accuracies that differ by points. This script trains
the demo's tiny Llama shape (2 layers, hidden 128, seeded) for ``--steps`` AdamW steps on fixed
tokens in a fresh process per kernel setting and prints a fingerprint of the final logits, the
ISA torch dispatched to, and the wall time relative to the default setting (same run). Two
machines with the same fingerprint on the default row train the demo's models identically.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Kernel settings compared with the default: the ATen vector kernels and MKL's code path held to
# AVX2, as a machine without AVX-512 would run them.
SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "MKL held to AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "ATen held to AVX2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "both held to AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}

CHILD = """
import hashlib, sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2)
model = LlamaForCausalLM(cfg)
x = torch.randint(0, 512, (16, 96), generator=torch.Generator().manual_seed(1))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
start = time.perf_counter()
for _ in range(int(sys.argv[1])):
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    opt.zero_grad()
seconds = time.perf_counter() - start
with torch.no_grad():
    logits = model(input_ids=x).logits
print(hashlib.sha256(logits.numpy().tobytes()).hexdigest()[:12],
      torch.backends.cpu.get_cpu_capability(), f"{seconds:.3f}")
"""


def run_setting(env_extra: dict[str, str], steps: int) -> tuple[str, str, float]:
    """(logits fingerprint, ATen capability, training seconds) in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", **env_extra}
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps)], env=env, check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout.split()
    return out[0], out[1], float(out[2])


def cpu_name() -> str:
    """The CPU model and its widest vector extensions (from /proc/cpuinfo where there is one)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    wide = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{name} ({' '.join(wide) or 'no AVX2'})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args(argv)
    import torch
    import transformers

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_name()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {args.steps} steps, 2 threads")
    print("| kernels | ATen ISA | logits fingerprint | same as default | train s | x default |")
    print("|---|---|---|---|---|---|")
    base: tuple[str, str, float] | None = None
    for name, env in SETTINGS.items():
        fp, isa, secs = run_setting(env, args.steps)
        base = base or (fp, isa, secs)
        print(f"| {name} | {isa} | `{fp}` | {'yes' if fp == base[0] else 'no'} | {secs:.2f} | "
              f"{secs / base[2]:.2f} |")
    # The same setting twice: the fingerprint is a property of the machine, not of the run.
    fp, _, _ = run_setting({}, args.steps)
    print(f"| default, again | | `{fp}` | {'yes' if fp == base[0] else 'no'} | | |")


if __name__ == "__main__":
    main()
