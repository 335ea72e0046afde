"""Does a critique run's critic tell right from wrong? Read from a finished (or stopped) run dir.

    .venv/bin/python benchmarks/critic_effect.py runs/real-critique

A critique run with ``data.seed_calc`` has the critic (after its SFT) and the untrained base
critique the same held-out solutions: each test problem's worked solution and a copy with one
slip in the line computing the answer (stages ``critic_heldout`` and ``critic_heldout_base``).
The report compares final-verdict accuracy, which a critic that says "wrong" to everything
already puts at 50%. This script adds what that number hides, per critic:

- verdict counts, and final-verdict accuracy with its Wilson 95% interval;
- discrimination: P(says wrong | slipped) - P(says wrong | worked solution), paired per
  problem (a bootstrap over problems: ``raysys.pipeline.stats.paired_bootstrap``); 0 for a
  critic whose verdict ignores the solution, whatever its accuracy;
- problems where it calls the worked solution correct AND the slip wrong (both right), and
  problems where it gives both copies the same verdict.

Then the paired difference critic minus base in final-verdict accuracy (the report's cell).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def verdicts(run_dir: Path, stage: str) -> dict[tuple[str, int], str]:
    """``(problem_id, sample_idx) -> verdict`` (wrong / correct / unknown) of one critique stage."""
    from raysys.critique.format import parse_critique
    from raysys.data.stage_dir import read_stage

    dirs = list(run_dir.glob(f"iter_*/{stage}"))
    if not dirs:
        raise SystemExit(f"{run_dir}: no stage {stage} (did the run reach the critic's held-out "
                         "scoring? it needs data.seed_calc)")
    rows = read_stage(dirs[0]).to_pylist()
    return {(r["problem_id"], int(r["sample_idx"])): parse_critique(r["critique"]).verdict
            for r in rows}


def summary(name: str, v: dict[tuple[str, int], str], problems: list[str]) -> tuple[str, list, list]:
    """A markdown row for one critic, and per problem (said wrong on gold, said wrong on slip)."""
    from raysys.grading.metrics import wilson_interval
    from raysys.pipeline.stats import paired_bootstrap

    gold_wrong = [v[(p, 0)] == "wrong" for p in problems]
    slip_wrong = [v[(p, 1)] == "wrong" for p in problems]
    right = ([v[(p, 0)] == "correct" for p in problems] + slip_wrong)
    n, k = len(right), sum(right)
    lo, hi = wilson_interval(k, n)
    disc = paired_bootstrap(gold_wrong, slip_wrong)
    both = sum(v[(p, 0)] == "correct" and v[(p, 1)] == "wrong" for p in problems)
    counts = {c: sum(x == c for x in v.values()) for c in ("wrong", "correct", "unknown")}
    row = (f"| {name} | {counts['wrong']} / {counts['correct']} / {counts['unknown']} | "
           f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] | "
           f"{100 * sum(slip_wrong) / len(problems):.1f}% | {100 * sum(gold_wrong) / len(problems):.1f}% | "
           f"{disc.cell()} | {both}/{len(problems)} |")
    return row, right, [v[(p, 0)] for p in problems]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args()
    from raysys.pipeline.stats import paired_bootstrap

    critic = verdicts(args.run_dir, "critic_heldout")
    base = verdicts(args.run_dir, "critic_heldout_base")
    problems = sorted({p for p, i in critic if (p, 0) in critic and (p, 1) in critic})
    print(f"{len(problems)} held-out problems: worked solution (sample 0) and its one-slip copy "
          "(sample 1), critiqued greedily by each critic.\n")
    print("| critic | verdicts wrong / correct / unknown | final verdict right [Wilson 95%] | "
          "says wrong: slipped | says wrong: worked | discrimination (slipped - worked, paired "
          "bootstrap, points, problems +/-) | problems with both right |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for name, v in (("after SFT", critic), ("untrained base", base)):
        row, right, _ = summary(name, v, problems)
        rows[name] = right
        print(row)
    diff = paired_bootstrap(rows["untrained base"], rows["after SFT"])
    print(f"\nfinal verdict right, after SFT minus base (paired bootstrap over the "
          f"{2 * len(problems)} solutions, points, gained/lost): {diff.cell()}")
    for name, v in (("after SFT", critic), ("untrained base", base)):
        same = sum(v[(p, 0)] == v[(p, 1)] for p in problems)
        print(f"- {name}: the same verdict on a worked solution and its slip for {same} of "
              f"{len(problems)} problems")

if __name__ == "__main__":
    main()
