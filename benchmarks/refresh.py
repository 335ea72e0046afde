"""Live weight refresh: a running SamplerPool serving new weights in place vs a fresh pool.

    .venv/bin/python benchmarks/refresh.py [--rounds 2] [--vllm] [--out benchmarks/RESULTS.refresh.md]
    .venv/bin/python benchmarks/refresh.py --model-dir models/smollm2-135m-instruct [--vllm]

A pool of one 1-CPU replica serves model A. For each target (a full model dir B; a LoRA adapter
built with PEFT on A) and each round, the script times ``pool.load_weights(target)`` against
starting a fresh ``SamplerPool`` on the target (actor start, imports and model load: the pool
constructor returns once every replica answers ``ping``), then asserts that greedy outputs of
the refreshed pool equal the fresh pool's token for token (and differ from A's, so the refresh
was not a no-op). The first ``generate`` after each is timed apart. Ray start-up is excluded from
both. ``--vllm`` repeats it with ``EngineConfig(kind="vllm")`` (minutes of start-up on CPU).

``--model-dir``: A is that model (a real one: tied embeddings, chat template), B a copy with
every matrix perturbed (``real_data.perturbed_copy``), prompts GSM8K test questions in its chat
template.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))     # real_data

N_PROMPTS = 32
MAX_NEW = 16


@dataclass
class Result:
    """One round of one target: seconds for the refresh and for the fresh pool."""

    engine: str
    target: str
    round: int
    refresh_s: float
    fresh_s: float
    refresh_gen_s: float
    fresh_gen_s: float
    steady_gen_s: float = 0.0       # a second generate on the refreshed pool (warm)

    @property
    def speedup(self) -> float:
        return self.fresh_s / self.refresh_s if self.refresh_s > 0 else float("inf")

    @property
    def speedup_served(self) -> float:
        """Until the first batch is served: a LoRA request is free, its first use loads it."""
        return (self.fresh_s + self.fresh_gen_s) / (self.refresh_s + self.refresh_gen_s)

    @property
    def speedup_excess(self) -> float:
        """As :attr:`speedup_served` with the same generation work taken out of both sides:
        each first generate counts only its excess over a warm one (a real model's generate
        costs seconds that either path pays; its first use of new weights may cost more)."""
        extra = lambda gen: max(gen - self.steady_gen_s, 0.0)  # noqa: E731
        return (self.fresh_s + extra(self.fresh_gen_s)) / (self.refresh_s + extra(self.refresh_gen_s))


def build_varied(out: Path, seed: int) -> Path:
    """A tiny model whose greedy output depends on the prompt (matrices scaled by 5, as in
    tests/distributed/conftest.py: a fresh tiny model repeats one token for every prompt), with
    an untied LM head (the real-model rows cover a tied one)."""
    import torch

    from raysys.models.loading import load_model, load_tokenizer, save_pretrained_atomic
    from raysys.models.tiny import build_tiny_model

    base = build_tiny_model(out.with_name(out.name + "-base"), seed=seed)
    model, tok = load_model(str(base)), load_tokenizer(str(base))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(5.0)
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.clone())
    return Path(save_pretrained_atomic(model, tok, out))


def build_adapter(base: Path, out: Path, seed: int = 0, zero: bool = False) -> Path:
    """A LoRA adapter on ``base`` with random (non-zero) A and B, saved by PEFT with the
    tokenizer beside it (what a LoRA training stage leaves); ``zero``: PEFT's default B = 0,
    an adapter that changes nothing."""
    import torch
    from peft import LoraConfig, get_peft_model

    from raysys.models.loading import load_model, load_tokenizer

    torch.manual_seed(seed)
    model = load_model(str(base))
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                     init_lora_weights=zero)   # PEFT's default (True) has B = 0
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(str(base)).save_pretrained(str(out))
    return out


def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def ids(out: list) -> list[list[int]]:
    return [list(c[0].token_ids) for c in out]


def bench_engine(kind: str, a: Path, b: Path, adapter: Path, zero: Path, prompts: list[str],
                 rounds: int) -> list[Result]:
    """All rounds of both targets on one engine kind; asserts refresh == fresh outputs.

    vLLM enables LoRA only when the engine starts with an adapter (``EngineConfig`` has no
    switch for it), and a LoRA request on an engine without it restarts the engine; so the vLLM
    pool serves A through the zero adapter (same outputs as A), as a LoRA recipe loop would."""
    from raysys.config import ClusterConfig, EngineConfig, ModelSpec
    from raysys.distributed.actors import SamplerPool
    from raysys.engines.base import SamplingParams

    params = SamplingParams(max_new_tokens=MAX_NEW, ignore_eos=True)
    engine = EngineConfig(kind=kind, batch_size=64)
    cluster = ClusterConfig(num_cpus=2, cpus_per_replica=1)
    a_lora = str(zero) if kind == "vllm" else None
    spec_a = ModelSpec(path=str(a), adapter=a_lora, dtype="float32")
    targets = {"full model dir B": (str(b), None), "LoRA adapter on A": (str(a), str(adapter))}
    results = []
    with SamplerPool(1, spec_a, engine, cluster) as pool:
        out_a = ids(pool.generate(prompts, params))
        for r in range(rounds):
            for name, (path, lora) in targets.items():
                pool.load_weights(str(a), a_lora)                # back to A, untimed
                _, refresh_s = timed(lambda: pool.load_weights(path, lora))
                out_r, refresh_gen = timed(lambda: pool.generate(prompts, params))
                _, steady_gen = timed(lambda: pool.generate(prompts, params))
                fresh_spec = ModelSpec(path=path, adapter=lora, dtype="float32")
                fresh, fresh_s = timed(lambda: SamplerPool(1, fresh_spec, engine, cluster))
                try:
                    out_f, fresh_gen = timed(lambda: fresh.generate(prompts, params))
                finally:
                    fresh.shutdown()
                assert ids(out_r) == ids(out_f), f"{kind} {name}: refreshed != fresh outputs"
                assert ids(out_r) != out_a, f"{kind} {name}: outputs equal model A's (no-op?)"
                results.append(Result(kind, name, r + 1, refresh_s, fresh_s, refresh_gen,
                                      fresh_gen, steady_gen))
                print(results[-1], f"speed-up {results[-1].speedup:.1f}x", flush=True)
    return results


def table(results: list[Result]) -> str:
    lines = ["| engine | target | round | refresh s | fresh pool start s | speed-up | "
             "1st generate after refresh s | 1st generate on fresh pool s | speed-up incl. "
             "1st generate | warm generate s | speed-up, 1st generate's excess over warm only "
             "| greedy equal |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.engine} | {r.target} | {r.round} | {r.refresh_s:.2f} | "
                     f"{r.fresh_s:.2f} | {r.speedup:.1f}x | {r.refresh_gen_s:.2f} | "
                     f"{r.fresh_gen_s:.2f} | {r.speedup_served:.1f}x | {r.steady_gen_s:.2f} | "
                     f"{r.speedup_excess:.1f}x | yes ({N_PROMPTS} prompts "
                     f"x {MAX_NEW} tokens) |")
    return "\n".join(lines)


def summarize(results: list[Result]) -> str:
    """One line per (engine, target): the worst round's speed-up, including the first generate
    (the conservative figure), against the >= 5x target."""
    worst: dict[tuple[str, str], tuple[float, float]] = {}
    for r in results:
        key = (r.engine, r.target)
        old = worst.get(key, (float("inf"), float("inf")))
        worst[key] = (min(old[0], r.speedup_served), min(old[1], r.speedup_excess))
    return "\n".join(f"- {e}, {t}: worst-round speed-up incl. first generate {s:.1f}x (target "
                     f">= 5x: {'met' if s >= 5 else 'NOT met'}); counting only the first "
                     f"generate's excess over a warm one {x:.1f}x ({'met' if x >= 5 else 'NOT met'})"
                     for (e, t), (s, x) in worst.items())


def main() -> None:
    global N_PROMPTS, MAX_NEW
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--vllm", action="store_true", help="also the VLLMEngine pool (slow on CPU)")
    ap.add_argument("--no-hf", action="store_true", help="skip the HFEngine pool")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--model-dir", default=None, help="model A (default: a tiny model built here)")
    ap.add_argument("--prompts", type=int, default=N_PROMPTS)
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW)
    args = ap.parse_args()
    N_PROMPTS, MAX_NEW = args.prompts, args.max_new_tokens

    import torch

    from raysys.config import ClusterConfig
    from raysys.data.synthetic import make_problems
    from raysys.distributed.ray_init import init_ray, shutdown_ray
    from raysys.prompts import build_prompt

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    load0 = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: list[Result] = []
    failures: list[str] = []
    try:
        if args.model_dir:
            from real_data import chat_prompts, describe, gsm8k_problems, perturbed_copy

            a, what = Path(args.model_dir), describe(args.model_dir)
            b = perturbed_copy(a, work / "B", seed=1)
            prompts = chat_prompts(a, gsm8k_problems(N_PROMPTS))
        else:
            a, b = build_varied(work / "A", 0), build_varied(work / "B", 1)
            prompts = [build_prompt(p["question"]) for p in make_problems(N_PROMPTS, seed=0)]
            what = ("tiny Llama (hidden 128, 2 layers, fp32, matrices x5 so greedy output varies "
                    "per prompt, untied LM head)")
        adapter = build_adapter(a, work / "lora")
        zero = build_adapter(a, work / "lora0", zero=True)
        _, ray_s = timed(lambda: init_ray(ClusterConfig(num_cpus=2), dashboard=False))
        try:
            if not args.no_hf:
                results += bench_engine("hf", a, b, adapter, zero, prompts, args.rounds)
            if args.vllm:
                try:
                    results += bench_engine("vllm", a, b, adapter, zero, prompts, args.rounds)
                except Exception as e:   # the HF rows must still be reported
                    failures.append(f"vLLM pool: {type(e).__name__}: {str(e)[:200]}")
        finally:
            shutdown_ray()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    summary = summarize(results)
    report = (f"# Live weight refresh\n\nRun {started}; {os.cpu_count()} CPU cores, no GPU; "
              f"shared machine (1-min load average {load0[0]:.1f} before, {load1[0]:.1f} after). "
              f"Pool of 1 replica (1 CPU, 1 torch thread) serving A; {what}"
              f"{'; B: A with every matrix x (1 + 0.05 N(0,1))' if args.model_dir else ''}; "
              f"LoRA r=8 on q/v/o (the vLLM pool serves A through a zero adapter so LoRA is "
              f"enabled from its start). Ray start-up ({ray_s:.1f} s) excluded from both columns. Greedy outputs "
              f"after refresh asserted equal to a fresh pool's ({N_PROMPTS} prompts x {MAX_NEW} "
              f"tokens, EOS ignored) and different from A's. Command: "
              f"`.venv/bin/python benchmarks/refresh.py {' '.join(sys.argv[1:])}`.\n\n"
              f"{table(results)}\n\n{summary}\n"
              + "".join(f"- FAILED: {f}\n" for f in failures))
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
