"""Sampling throughput: naive HF loop vs HFEngine vs VLLMEngine vs Ray Data vs plain vLLM.

Usage: ``.venv/bin/python benchmarks/sampling.py [--quick] [--out benchmarks/RESULTS.sampling.md]``
``--model-dir DIR --gsm8k`` runs the same rows on a real model (``make real-model``) with GSM8K
test questions in its chat template (``benchmarks/real_data.py``) instead of the tiny model.

Every row runs in this one process on the same tiny model (``build_tiny_model`` defaults:
hidden 128, 2 layers, 2 heads of dim 64, fp32), the same prompts (zero-shot prompts of
synthetic problems; 512, or 64 with ``--quick``) and greedy decoding of exactly
``--max-new-tokens`` tokens (EOS ignored, so every row generates the same token count; the
Ray Data row cannot ignore EOS through the stage config, so its actual token count is shown).
Wall time excludes one-time start-up (model load, vLLM engine start, Ray start), which is
reported in its own column. A Ray Data stage starts its actors (imports + model load) on every
run, so its wall includes that; the start-up column shows the cost, measured by a
one-problem-per-replica run of the same stage.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))     # real_data


@dataclass
class Row:
    name: str
    tokens: int
    wall_s: float
    startup_s: float | None
    note: str = ""

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def cpu_times() -> tuple[float, float]:
    """(idle, total) jiffies of all cores from /proc/stat ((0, 0) where there is none)."""
    try:
        vals = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    return vals[3] + vals[4], sum(vals)      # idle + iowait


def idle_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all cores' time left idle between two :func:`cpu_times` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else float("nan")


def make_prompts(n: int, model_dir: str | None = None) -> tuple[list[str], list[dict]]:
    """``n`` zero-shot prompts of synthetic problems; with ``model_dir``: GSM8K test questions
    in that model's chat template."""
    if model_dir is not None:
        from real_data import chat_prompts, gsm8k_problems

        problems = gsm8k_problems(n)
        return chat_prompts(model_dir, problems), problems
    from raysys.data.synthetic import make_problems
    from raysys.prompts import build_prompt

    problems = make_problems(n, seed=0)
    return [build_prompt(p["question"]) for p in problems], problems


def warm(engine, prompts: list[str], params):
    """One small call first: first-call set-up is start-up, not throughput."""
    engine.generate(prompts[:4], params)
    return engine


def count_tokens(out: list) -> int:
    return sum(len(c.token_ids) for comps in out for c in comps)


# -- rows -----------------------------------------------------------------------------------


def naive_row(model_dir: str, prompts: list[str], max_new: int) -> Row:
    """(1) One ``model.generate`` per prompt: what a first script does."""
    import torch
    from transformers import GenerationConfig

    from raysys.models.loading import load_model, load_tokenizer

    (model, tok), startup = timed(lambda: (load_model(model_dir, dtype="float32"),
                                           load_tokenizer(model_dir)))
    cfg = GenerationConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=[],
                           pad_token_id=tok.pad_token_id)

    def run() -> int:
        n = 0
        with torch.inference_mode():
            for p in prompts:
                ids = tok(p, return_tensors="pt")
                out = model.generate(**ids, generation_config=cfg)
                n += out.shape[1] - ids["input_ids"].shape[1]
        return n

    tokens, wall = timed(run)
    return Row("(1) naive loop: model.generate per prompt", int(tokens), wall, startup)


def hf_engine_row(model_dir: str, prompts: list[str], params, batch_size: int) -> Row:
    """(2) HFEngine: length-sorted batches, left padding, KV cache."""
    from raysys.engines.hf import HFEngine

    engine, startup = timed(lambda: warm(HFEngine(model_dir, batch_size=batch_size, dtype="float32"),
                                         prompts, params))
    out, wall = timed(lambda: engine.generate(prompts, params))
    engine.close()
    return Row(f"(2) HFEngine, batch {batch_size}", count_tokens(out), wall, startup)


def vllm_rows(model_dir: str, prompts: list[str], params, max_new: int, rounds: int) -> list[Row]:
    """(3) VLLMEngine and (5) plain ``vllm.LLM.generate`` (same engine settings), both alive
    at once and timed in alternating rounds, best round each: on a shared machine the load
    drifts by 2-3x within minutes, and interleaving exposes both to the same drift."""
    import vllm
    from vllm.platforms import current_platform

    from raysys.config import EngineConfig, ModelSpec
    from raysys.engines.vllm_engine import CPU_KV_CACHE_BYTES, VLLMEngine

    spec = ModelSpec(path=model_dir, dtype="float32", max_model_len=1024)
    engine, ours_start = timed(lambda: warm(VLLMEngine(spec, EngineConfig(kind="vllm")), prompts, params))
    kwargs = dict(model=model_dir, dtype="float32", max_model_len=1024, seed=0)
    if current_platform.is_cpu():
        kwargs.update(kv_cache_memory_bytes=CPU_KV_CACHE_BYTES, enforce_eager=True)
    sp = vllm.SamplingParams(temperature=0, max_tokens=max_new, ignore_eos=True)

    def start() -> vllm.LLM:
        llm = vllm.LLM(**kwargs)
        llm.generate(prompts[:4], sp, use_tqdm=False)      # first-call set-up, as in warm()
        return llm

    llm, plain_start = timed(start)
    vllm_tokens = lambda out: sum(len(o.outputs[0].token_ids) for o in out)  # noqa: E731
    runs = {"ours": (lambda: engine.generate(prompts, params), count_tokens),
            "plain": (lambda: llm.generate(prompts, sp, use_tqdm=False), vllm_tokens),
            # The wrapper's own overhead, free of process placement: the same vllm.LLM, bare.
            "same": (lambda: engine.llm.generate(prompts, sp, use_tqdm=False), vllm_tokens)}
    walls: dict[str, list[tuple[float, int]]] = {k: [] for k in runs}
    try:
        for r in range(rounds):
            # Reversed order every other round: no path always runs first (or after the same one).
            for key in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                out, wall = timed(runs[key][0])
                walls[key].append((wall, runs[key][1](out)))
    finally:
        engine.close()
        llm.llm_engine.engine_core.shutdown()
    note = (f"best of {rounds} interleaved rounds (order reversed every other round); all: "
            + "; ".join(f"{k} " + ", ".join(f"{w:.1f}" for w, _ in v) + " s" for k, v in walls.items()))
    (w3, t3), (w5, t5), (w6, t6) = (min(walls[k]) for k in runs)
    return [Row("(3) VLLMEngine", t3, w3, ours_start, note),
            Row("(5) plain vllm.LLM.generate, own engine", t5, w5, plain_start, ""),
            Row("(5b) plain vllm.LLM.generate on (3)'s vllm.LLM", t6, w6, None,
                "isolates wrapper overhead")]


def ray_rows(model_dir: str, problems: list[dict], max_new: int, batch_size: int,
             replicas: tuple[int, ...]) -> list[Row]:
    """(4) ``raysys.distributed.sampling.sample_problems`` with 1 and 2 HF replicas."""
    try:
        from raysys.distributed.sampling import sample_problems
    except ImportError as e:
        print(f"Ray Data row skipped: {e}")
        return []
    import pyarrow as pa

    from raysys.config import ClusterConfig, EngineConfig, ModelSpec, SamplingConfig
    from raysys.distributed.ray_init import init_ray, shutdown_ray

    table = pa.table({"id": [p["id"] for p in problems], "source": ["synthetic"] * len(problems),
                      "question": [p["question"] for p in problems],
                      "gold_answer": [p["answer"] for p in problems],
                      "gold_solution": [p["solution"] for p in problems],
                      "meta": ["{}"] * len(problems)})
    cluster0 = ClusterConfig(num_cpus=os.cpu_count())
    _, startup = timed(lambda: init_ray(cluster0, dashboard=False))
    def run(t: pa.Table, r: int) -> tuple[int, float]:
        out = Path(tempfile.mkdtemp(prefix=f"bench-ray{r}-"))
        try:
            cluster = ClusterConfig(replicas=r, num_cpus=os.cpu_count(),
                                    batch_size=max(1, t.num_rows // r))
            manifest = sample_problems(
                t, model=ModelSpec(path=model_dir, dtype="float32"),
                engine=EngineConfig(kind="hf", batch_size=batch_size),
                sampling=SamplingConfig(max_new_tokens=max_new, stop=["@@none@@"]),
                cluster=cluster, out_dir=out)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        metrics = manifest.get("metrics", {})
        return int(metrics.get("tokens_generated", 0)), float(metrics["wall_s"]["generate"])

    rows = []
    try:
        for r in replicas:
            # A stage pays actor start + imports + model load on every run; measured on r
            # problems (one per replica) and subtracted to get the generation time proper.
            _, overhead = run(table.slice(0, r), r)
            tokens, wall = run(table, r)
            # Subtracting the two is too noisy on a shared box (it once gave 0.3 s): report the
            # whole stage wall and the per-run start-up beside it.
            rows.append(Row(f"(4) Ray Data sample_problems, {r} replica{'s' * (r > 1)}", tokens,
                            wall, overhead, "wall includes the per-run actor start-up (start-up "
                            f"column; Ray itself took {startup:.1f} s to start)"))
    finally:
        shutdown_ray()
    return rows


def pool_rows(model_dir: str, prompts: list[str], params, batch_size: int,
              replicas: tuple[int, ...], rounds: int) -> list[Row]:
    """(6) ``SamplerPool`` (long-lived actors, what a recipe keeps between stages) with 1 and 2
    replicas of 1 CPU each (Ray gives a 1-CPU actor one OpenMP / torch thread). Start-up (actor
    start, imports, model load, one warm call) is its own column; both pools stay alive and are
    timed in alternating rounds (best round each), so load drift hits both alike."""
    from raysys.config import ClusterConfig, EngineConfig, ModelSpec
    from raysys.distributed.actors import SamplerPool
    from raysys.distributed.ray_init import init_ray, shutdown_ray

    # Logical CPUs for both pools at once (only one generates at a time; idle actors sleep).
    init_ray(ClusterConfig(num_cpus=sum(replicas)), dashboard=False)
    pools, startups = {}, {}
    try:
        for r in replicas:
            pools[r], startups[r] = timed(lambda: SamplerPool(
                r, ModelSpec(path=model_dir, dtype="float32"),
                EngineConfig(kind="hf", batch_size=batch_size),
                ClusterConfig(cpus_per_replica=1)))
            _, warm_s = timed(lambda: pools[r].generate(prompts[:4 * r], params))
            startups[r] += warm_s
        walls: dict[int, list[tuple[float, int]]] = {r: [] for r in replicas}
        idle: dict[int, list[float]] = {r: [] for r in replicas}
        for _ in range(rounds):
            for r in replicas:
                t0 = cpu_times()
                out, wall = timed(lambda: pools[r].generate(prompts, params))
                walls[r].append((wall, count_tokens(out)))
                # Idle CPU while it ran: ~0 means no free core for another replica to use.
                idle[r].append(idle_share(t0, cpu_times()))
    finally:
        for p in pools.values():
            p.shutdown()
        shutdown_ray()
    rows = []
    for r in replicas:
        wall, tokens = min(walls[r])
        rows.append(Row(f"(6) SamplerPool, {r} replica{'s' * (r > 1)} x 1 CPU", tokens, wall,
                        startups[r], f"best of {rounds} interleaved rounds; all rounds: "
                        + ", ".join(f"{w:.2f}" for w, _ in walls[r]) + " s; idle CPU share "
                        + ", ".join(f"{100 * i:.0f}%" for i in idle[r])))
    return rows


def attempt(name: str, fn: Callable[[], list[Row]]) -> list[Row]:
    """Run one row; a failure becomes a row saying so instead of losing the whole table."""
    try:
        return fn()
    except Exception as e:  # the report must still be written for the other rows
        print(f"{name} failed: {type(e).__name__}: {e}", flush=True)
        return [Row(name, 0, 0.0, None, f"FAILED: {type(e).__name__}: {str(e)[:80]}")]


# -- report ---------------------------------------------------------------------------------


def wrapper_ratios(rows: list[Row]) -> str:
    """VLLMEngine's tokens/s over plain vLLM's (own engine, and (3)'s own ``vllm.LLM``)."""
    by = {r.name.split(" ", 1)[0]: r for r in rows if r.tokens}
    ours = by.get("(3)")
    return "".join(f"- VLLMEngine / {what}: {ours.tok_s / by[k].tok_s:.3f}x\n"
                   for k, what in (("(5)", "plain vllm.LLM.generate, own engine"),
                                   ("(5b)", "plain generate on the same vllm.LLM"))
                   if ours and k in by)


def table(rows: list[Row]) -> str:
    base = rows[0].tok_s if rows else 1.0
    ref = rows[0].name.split(" ", 1)[0] if rows else "(1)"
    lines = [f"| path | tokens | wall s | tokens/s | vs {ref} | start-up s | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        start = f"{r.startup_s:.1f}" if r.startup_s is not None else "-"
        lines.append(f"| {r.name} | {r.tokens:,} | {r.wall_s:.2f} | {r.tok_s:,.0f} | "
                     f"{r.tok_s / base:.1f}x | {start} | {r.note} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({cpu}), {gpu}, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 prompts, 16 tokens")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in this process (vLLM's CPU worker and each Ray replica "
                         "use 1; with more, OpenMP spin-waits collapse on a shared 2-core box)")
    ap.add_argument("--prompts", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--no-naive", action="store_true", help="skip row (1) (minutes on a real model)")
    ap.add_argument("--model-dir", default=None, help="a model dir instead of the tiny model")
    ap.add_argument("--gsm8k", action="store_true",
                    help="GSM8K test questions in the model's chat template (needs --model-dir)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of each vLLM row")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-ray-data", action="store_true", help="skip rows (4), keep (6)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.gsm8k and not args.model_dir:
        ap.error("--gsm8k needs --model-dir (the tiny model has no chat template)")
    n = args.prompts or (64 if args.quick else 512)
    max_new = args.max_new_tokens or (16 if args.quick else 32)

    import torch

    from raysys.engines.base import SamplingParams
    from raysys.models.tiny import build_tiny_model
    from real_data import describe

    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench-sampling-"))
    load0 = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        model_dir = args.model_dir or str(build_tiny_model(work / "tiny"))
        what = (describe(model_dir) if args.model_dir else
                "tiny Llama (hidden 128, 2 layers, head_dim 64, fp32)")
        prompts, problems = make_prompts(n, model_dir if args.gsm8k else None)
        params = SamplingParams(max_new_tokens=max_new, ignore_eos=True)
        rows = [] if args.no_naive else [naive_row(model_dir, prompts, max_new)]
        rows.append(hf_engine_row(model_dir, prompts, params, args.batch_size))
        print(table(rows), flush=True)
        if not args.no_ray and not args.no_ray_data:
            rows += attempt("(4) Ray Data", lambda: ray_rows(model_dir, problems, max_new,
                                                             args.batch_size, (1, 2)))
        if not args.no_ray:
            rows += attempt("(6) SamplerPool", lambda: pool_rows(model_dir, prompts, params,
                                                                 args.batch_size, (1, 2),
                                                                 args.rounds))
            print(table(rows), flush=True)
        if not args.no_vllm:
            rows += attempt("(3)/(5) vLLM", lambda: vllm_rows(model_dir, prompts, params, max_new,
                                                              args.rounds))
        rows.sort(key=lambda r: r.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    report = (f"# Sampling benchmark\n\nRun {started} on {machine()}; shared with other engineers' "
              f"work (load average {load0[0]:.1f} at start, {load1[0]:.1f} at end), so absolute "
              f"numbers are noisy. {n} {'GSM8K test (chat template)' if args.gsm8k else ''} "
              f"prompts, greedy, {max_new} new tokens each, EOS ignored; "
              f"{what}; {args.threads} torch thread(s) "
              f"in the driver. Command: "
              f"`.venv/bin/python benchmarks/sampling.py {' '.join(sys.argv[1:])}`.\n\n"
              f"{table(rows)}\n\n{wrapper_ratios(rows)}")
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
