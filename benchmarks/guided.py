"""Verifier-guided decoding throughput: GuidedEngine vs plain HFEngine, and batch 16 vs batch 1.

Usage: ``.venv/bin/python benchmarks/guided.py [--model DIR --verifier DIR] [--out RESULTS.guided.md]``

A real model: ``--model models/smollm2-135m-instruct --verifier-from-model --gsm8k``: the verifier
is built as the LLM2 recipe builds one before training (``TokenVerifier.from_pretrained`` on the
LLM: its whole backbone and a fresh seeded scalar head; an untrained head scores as fast as a
trained one), and the prompts are GSM8K test questions in the LLM's chat template.

Without ``--model`` a tiny Llama (h256 x 4 layers, the shared tiny tokenizer) is built with its
matrices re-drawn at std 0.15 and its output head scaled by ``--lm-scale``: a random model's
next-token distribution is flat, so alpha-plausibility admits dozens of candidates per row,
far more than a trained model (LEARNING_SIGNAL.md: ~9% of answer positions of a trained tiny
model have a second candidate). The scale sharpens it; candidates per call are reported so the
verifier's load is visible. The verifier is the same backbone with a random head.

Every run decodes the same prompts for ``--max-new-tokens`` tokens with ``ignore_eos`` (fixed
length, so tokens/s compare like for like), greedy, after one warm-up run; the best of
``--repeats`` timed runs is kept. Candidate counts are summed over the timed guided batch-16 runs.
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

import torch

REPO = Path(__file__).resolve().parents[1]


def build_models(root: Path, lm_scale: float, hidden: int, layers: int) -> tuple[Path, Path]:
    """A tiny LLM dir and a verifier dir on the same backbone (random head)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from raysys.models.loading import load_tokenizer, save_pretrained_atomic
    from raysys.models.tiny import build_tiny_model
    from raysys.models.verifier import TokenVerifier

    base = build_tiny_model(root / "base", hidden=hidden, heads=hidden // 64, layers=layers)
    config = AutoConfig.from_pretrained(base)
    config.tie_word_embeddings = False
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
        model.lm_head.weight.mul_(lm_scale)
    tokenizer = load_tokenizer(str(base))
    llm = save_pretrained_atomic(model, tokenizer, root / "llm")
    verifier = TokenVerifier.from_pretrained(llm)
    with torch.no_grad():
        verifier.head.weight.copy_(torch.randn(verifier.head.weight.shape, generator=gen) / hidden ** 0.5)
    verifier.save_pretrained(root / "verifier")
    tokenizer.save_pretrained(root / "verifier")
    return llm, root / "verifier"


def verifier_from_model(llm: Path, out: Path) -> Path:
    """A verifier on ``llm``'s backbone with a fresh head, as the LLM2 recipe starts one."""
    from raysys.models.loading import load_tokenizer
    from raysys.models.verifier import TokenVerifier

    TokenVerifier.from_pretrained(llm).save_pretrained(out)
    load_tokenizer(str(llm)).save_pretrained(out)
    return out


def prompts(n: int) -> list[str]:
    """``n`` arithmetic word problems of varied lengths (left padding is exercised)."""
    return [f"Question: Tom has {i * 7 % 50} apples and buys {3 * i + 1} more, then gives "
            f"{'away ' * (i % 4)}{i % 9} of them. How many now?\nAnswer:" for i in range(n)]


def timed(engine, items: list[str], params, repeats: int = 1) -> tuple[float, int]:
    """Best-of-``repeats`` seconds and the generated tokens of one ``generate`` call (the
    best run is the one least disturbed by other processes on a shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = engine.generate(items, params)
        if engine.device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, sum(len(c.token_ids) for cs in out for c in cs)


def run(args: argparse.Namespace) -> list[str]:
    from raysys.engines.base import SamplingParams
    from raysys.engines.guided import GuidedEngine
    from raysys.engines.hf import HFEngine

    with tempfile.TemporaryDirectory() as tmp:
        if args.model and args.verifier_from_model:
            llm, verifier = Path(args.model), verifier_from_model(Path(args.model), Path(tmp) / "v")
        else:
            llm, verifier = ((Path(args.model), Path(args.verifier)) if args.model else
                             build_models(Path(tmp), args.lm_scale, args.hidden, args.layers))
        if args.gsm8k:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from real_data import chat_prompts, gsm8k_problems

            items = chat_prompts(llm, gsm8k_problems(args.prompts))
        else:
            items = prompts(args.prompts)
        params = SamplingParams(max_new_tokens=args.max_new_tokens, ignore_eos=True)
        rows: list[tuple[str, int, float, float, str]] = []
        for top_k in args.top_k_candidates:
            if args.no_b1:
                hf_tps, g16, cands = interleaved(args, llm, verifier, items, params, top_k)
                rows.append((f"top_k_candidates={top_k}", hf_tps, float("nan"), g16,
                             float("nan"), cands))
                continue
            results: dict[tuple[str, int], float] = {}
            cands = ""
            for kind in ("hf", "guided"):
                for batch in (args.batch, 1):
                    if kind == "hf" and top_k != args.top_k_candidates[0]:
                        continue   # plain HF does not depend on top_k
                    engine = (HFEngine(str(llm), batch_size=batch, device=args.device)
                              if kind == "hf" else
                              GuidedEngine(str(llm), str(verifier), beta=args.beta, alpha=args.alpha,
                                           top_k=top_k, batch_size=batch, device=args.device))
                    timed(engine, items[:batch], params)                   # warm-up
                    if kind == "guided":
                        engine.reset_stats()
                    secs, toks = timed(engine, items, params, args.repeats)
                    results[(kind, batch)] = toks / secs
                    if kind == "guided" and batch == args.batch:
                        cands = candidate_stats(engine)
                    engine.close()
            if ("hf", args.batch) in results:
                hf_tps, hf1 = results[("hf", args.batch)], results[("hf", 1)]
            g16, g1 = results[("guided", args.batch)], results[("guided", 1)]
            rows.append((f"top_k_candidates={top_k}", hf_tps, hf1, g16, g1, cands))
    return table(args, rows)


def candidate_stats(engine) -> str:
    s = engine.stats
    return (f"{s.candidates_per_call:.1f} per call, "
            f"{s.candidates_scored / max(s.rows_scored, 1):.1f} per scored row, "
            f"{s.verifier_calls}/{s.steps} steps call the verifier")


def interleaved(args: argparse.Namespace, llm: Path, verifier: Path, items: list[str], params,
                top_k: int) -> tuple[float, float, str]:
    """(plain HF tok/s, guided tok/s, candidate stats) at ``args.batch``, both engines alive and
    timed in alternating runs (best of ``args.repeats`` each): on a loaded machine the load
    drifts within minutes, and alternating exposes both to the same drift."""
    from raysys.engines.guided import GuidedEngine
    from raysys.engines.hf import HFEngine

    hf = HFEngine(str(llm), batch_size=args.batch, device=args.device)
    guided = GuidedEngine(str(llm), str(verifier), beta=args.beta, alpha=args.alpha, top_k=top_k,
                          batch_size=args.batch, device=args.device)
    best = {"hf": float("inf"), "guided": float("inf")}
    tokens = {}
    for name, eng in (("hf", hf), ("guided", guided)):
        timed(eng, items[:args.batch], params)                           # warm-up
    guided.reset_stats()
    for _ in range(args.repeats):
        for name, eng in (("hf", hf), ("guided", guided)):
            secs, tokens[name] = timed(eng, items, params)
            best[name] = min(best[name], secs)
    cands = candidate_stats(guided)
    hf.close()
    guided.close()
    return tokens["hf"] / best["hf"], tokens["guided"] / best["guided"], cands


def table(args: argparse.Namespace, rows: list[tuple]) -> list[str]:
    """The markdown result block."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    b = args.batch
    lines = [
        f"## Guided decoding throughput ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, device {args.device or 'auto'}, "
        f"torch threads {torch.get_num_threads()}, load average {load}. "
        f"Model: {args.model or f'tiny Llama h{args.hidden}x{args.layers}, lm_head x{args.lm_scale}'}"
        f"{' (verifier: its backbone + a fresh head)' if args.verifier_from_model else ''}; "
        f"{args.prompts} {'GSM8K test (chat template) ' if args.gsm8k else ''}prompts, {args.max_new_tokens} new tokens (ignore_eos), greedy, "
        f"alpha {args.alpha}, beta {args.beta}, best of {args.repeats} runs.",
        "",
        f"| candidates | plain HF tok/s b{b} (b1) | guided tok/s b{b} | slowdown b{b} "
        f"(target <= 2.0x) | guided tok/s b1 | guided b{b} / b1 (target >= 6x) | candidates scored |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, hf_tps, hf1, g16, g1, cands in rows:
        line = (f"| {name} | {hf_tps:.0f} ({hf1:.0f}) | {g16:.0f} | {hf_tps / g16:.2f}x | "
                f"{g1:.0f} | {g16 / g1:.1f}x | {cands} |")
        lines.append(line.replace(" (nan)", "").replace("| nanx |", "| - |").replace("| nan |", "| - |"))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="LLM dir (default: build a tiny one)")
    ap.add_argument("--verifier", help="verifier dir (required with --model)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--beta", type=float, default=0.25)
    ap.add_argument("--top-k-candidates", type=int, nargs="+", default=[0, 4])
    ap.add_argument("--lm-scale", type=float, default=3.0)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per engine (best kept)")
    ap.add_argument("--out", help="append the result block to this markdown file")
    ap.add_argument("--no-b1", action="store_true",
                    help="only batch --batch, plain and guided timed in alternating runs")
    ap.add_argument("--verifier-from-model", action="store_true",
                    help="build the verifier from --model (its backbone, a fresh head)")
    ap.add_argument("--gsm8k", action="store_true",
                    help="GSM8K test questions in --model's chat template as prompts")
    args = ap.parse_args()
    if args.model and not (args.verifier or args.verifier_from_model):
        ap.error("--model needs --verifier or --verifier-from-model")
    if args.gsm8k and not args.model:
        ap.error("--gsm8k needs --model (the tiny model has no chat template)")
    lines = run(args)
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
