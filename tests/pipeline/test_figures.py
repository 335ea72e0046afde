"""``raysys report``: figures per method (panels, PNG files) and the regenerated report.md."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from raysys.data.io import DataError  # noqa: E402
from raysys.pipeline.figures import method_panels, round_tables  # noqa: E402
from raysys.pipeline.report import phase_throughput  # noqa: E402
from raysys.pipeline.report_cmd import regenerate, render_run_report  # noqa: E402

PX_PER_PANEL = round(5.2 * 110)     # figsize width per panel x dpi in figures.draw_panels


def _row(model: str, wins: list[bool], **kw: Any) -> dict[str, Any]:
    return {"model": model, "correct": sum(wins), "n": len(wins), "maj_k": None, "maj_acc": None,
            "pass_acc": None, "outcomes": {f"p{i}": w for i, w in enumerate(wins)}, **kw}


T, F = True, False
ROUNDS_MD = """| round | last acc [95% CI] | majority acc [95% CI] | pass acc [95% CI] | tokens | tokens total | wall s | wall s total |
|---|---|---|---|---|---|---|---|
| 0 | 25.0 [4.6, 69.9] | 25.0 [4.6, 69.9] | 25.0 [4.6, 69.9] | 100 | 100 | 1.0 | 1.0 |
| 1 | 50.0 [15.0, 85.0] | 25.0 [4.6, 69.9] | 50.0 [15.0, 85.0] | 40 | 140 | 0.5 | 1.5 |"""

STORED_ROUNDS = [
    {"round": 0, "n": 4, "tokens": 100, "tokens_total": 100, "last": 0.25, "last_lo": 0.046,
     "last_hi": 0.699, "majority": 0.25, "majority_lo": 0.046, "majority_hi": 0.699},
    {"round": 1, "n": 4, "tokens": 40, "tokens_total": 140, "last": 0.5, "last_lo": 0.15,
     "last_hi": 0.85, "majority": 0.25, "majority_lo": 0.046, "majority_hi": 0.699}]

# results as the recipes write them: rows tagged with what they are, the recipe's layout
RESULTS: dict[str, dict[str, Any]] = {
    "w2s": {"method": "w2s", "title": "Weak-to-strong: t", "sections": {"Data": "kept 3"}, "extra": {},
            "layout": {"baseline": "strong_icl", "differences": True, "panels": []},
            "evals": [_row("weak", [F, F, F, F]), _row("strong_icl", [T, F, F, F], baseline=True),
                      _row("stage2", [T, T, T, F])]},
    "llm2": {"method": "llm2", "title": "LLM2: t", "extra": {},
             "layout": {"baseline": "plain", "differences": False, "panels": ["beta", "k"]},
             "sections": {"Guided minus plain (paired bootstrap)": "| a | b |"},
             "evals": [_row("plain", [F, F, F, F], maj_k=3, maj_acc=0.25, tags={"beta": 0.0},
                            baseline=True),
                       _row("guided_beta0.5", [T, F, F, F], maj_k=3, maj_acc=0.5, tags={"beta": 0.5}),
                       _row("guided_beta2", [T, T, F, F], tags={"beta": 2.0}),
                       _row("best_of_3", [T, T, T, F], tags={"best_of": 3})]},
    "critique": {"method": "critique", "title": "Critique: t",
                 "layout": {"baseline": "actor_iter0", "differences": True,
                            "panels": ["iterations", "rounds"]},
                 "sections": {"Test time, critic-gated critique -> refine": ROUNDS_MD + "\n\nminus ..."},
                 "extra": {"per_iteration": [], "test_time": {"critic": STORED_ROUNDS}},
                 "evals": [_row("actor_iter0", [F, F, F, F], tags={"iteration": 0}, baseline=True),
                           _row("critique_iter1", [T, F, F, F], tags={"iteration": 1, "branch": "critique"}),
                           _row("plain_iter1", [F, F, F, F], tags={"iteration": 1, "branch": "plain"}),
                           _row("critique_iter2", [T, T, F, F], tags={"iteration": 2, "branch": "critique"}),
                           _row("plain_iter2", [T, F, F, F], tags={"iteration": 2, "branch": "plain"}),
                           {"model": "critique_iter2+refine_critic_r1", "correct": 2, "n": 4}]},
}
PANELS = {"w2s": ["Greedy accuracy (95% CI)"],
          "llm2": ["Greedy accuracy (95% CI)", "Accuracy vs beta", "Accuracy vs k (k=1: greedy)"],
          "critique": ["Greedy accuracy (95% CI)", "Accuracy per iteration",
                       "Test-time rounds: accuracy vs tokens"]}

# sampling 10 s + (6 - 2) s, grading 2 s, training 20 s, data 1 s; 50 s wall -> orchestration 13 s
STATE = {"runs": [{"seconds": 30.0}, {"seconds": 20.0}], "stages": {
    "iter_0/eval_a": {"phase": "sampling", "seconds": 10.0,
                      "metrics": {"tokens_generated": 500, "samples": 20}},
    "iter_0/critiques": {"phase": "sampling", "seconds": 6.0,
                         "metrics": {"tokens_generated": 100, "rows_generated": 4, "grading_s": 2.0}},
    "models/a": {"phase": "training", "seconds": 20.0,
                 "metrics": {"elapsed_s": 5.0, "tokens_per_s": 100.0, "samples_per_s": 4.0}},
    "iter_0/data": {"phase": "data", "seconds": 1.0, "metrics": {}},
    "models/b": {"phase": "training", "seconds": None, "metrics": {}}}}


def _run_dir(tmp_path: Path, method: str) -> Path:
    d = tmp_path / method
    d.mkdir()
    (d / "result.json").write_text(json.dumps(RESULTS[method]))
    (d / "state.json").write_text(json.dumps(STATE))
    return d


def test_phase_throughput_is_hand_computed_and_shares_sum_to_100() -> None:
    t = phase_throughput(STATE)
    assert {k: v["seconds"] for k, v in t.items()} == {
        "sampling": 14.0, "grading": 2.0, "training": 20.0, "data": 1.0, "orchestration": 13.0}
    assert [round(v["share"], 6) for v in t.values()] == [28.0, 4.0, 40.0, 2.0, 26.0]
    assert t["sampling"]["tokens_per_s"] == pytest.approx(600 / 14)
    assert t["sampling"]["samples_per_s"] == pytest.approx(24 / 14)
    assert t["grading"]["samples_per_s"] == pytest.approx(4 / 2)
    assert t["training"]["tokens_per_s"] == pytest.approx(500 / 20)
    assert t["training"]["samples_per_s"] == pytest.approx(20 / 20)
    assert t["data"]["tokens_per_s"] is None and t["orchestration"]["samples_per_s"] is None


def test_llm2_panels_put_plain_at_beta_zero_and_maj_at_k() -> None:
    beta, k = method_panels(RESULTS["llm2"])[1:]
    (s,) = beta.series
    assert (s.x, s.y) == ([0.0, 0.5, 2.0], [0.0, 0.25, 0.5])
    assert s.lo[0] == 0.0 and s.hi[0] == pytest.approx(0.4899, abs=1e-4)   # Wilson 0/4
    assert [(x.label, x.x, x.y) for x in k.series] == [
        ("plain maj@k", [1, 3], [0.0, 0.25]), ("guided_beta0.5 maj@k", [1, 3], [0.25, 0.5]),
        ("best_of_3", [3], [0.75])]


def test_critique_panels_start_each_branch_at_iteration_zero() -> None:
    it, rounds = method_panels(RESULTS["critique"])[1:]
    assert [(s.label, s.x, s.y) for s in it.series] == [
        ("critique", [0, 1, 2], [0.0, 0.25, 0.5]), ("plain", [0, 1, 2], [0.0, 0.0, 0.25])]
    assert [(s.label, s.x, s.y, s.notes) for s in rounds.series] == [
        ("critic-gated, last", [100.0, 140.0], [0.25, 0.5], ["r0", "r1"]),
        ("critic-gated, majority", [100.0, 140.0], [0.25, 0.25], [])]


def test_round_tables_are_the_stored_ones_never_the_section_text() -> None:
    assert round_tables(RESULTS["critique"]) == {"critic": STORED_ROUNDS}
    # a result whose round table is only in a section's text has no rounds panel: figures read
    # structured data, never headings or Markdown
    bare = {**RESULTS["critique"], "extra": {}}
    assert round_tables(bare) == {}
    assert [p.title for p in method_panels(bare)] == ["Greedy accuracy (95% CI)", "Accuracy per iteration"]


def test_panels_follow_the_tags_not_the_row_names() -> None:
    """A row named like a guided row but untagged is not on the beta panel; a tagged row with
    any name is. Without a layout every panel with data is drawn."""
    rows = [_row("guided_beta9", [T, F]), _row("anything", [T, T], tags={"beta": 0.5}),
            _row("base", [F, F], tags={"beta": 0.0})]
    (beta,) = [p for p in method_panels({"evals": rows}) if p.title == "Accuracy vs beta"]
    assert beta.series[0].x == [0.0, 0.5] and beta.series[0].y == [0.0, 1.0]
    only_bars = method_panels({"evals": rows, "layout": {"panels": []}})
    assert [p.title for p in only_bars] == ["Greedy accuracy (95% CI)"]


def test_old_results_read_with_the_recipe_record_layout(tmp_path: Path) -> None:
    """A result.json written before results carried a layout: `raysys report` takes the
    baseline and panels from the recipe's record (w2s: strong_icl, not the first row)."""
    from click.testing import CliRunner

    from raysys.cli import cli

    old = {k: v for k, v in RESULTS["w2s"].items() if k != "layout"}
    old["evals"] = [{k: v for k, v in r.items() if k != "baseline"} for r in old["evals"]]
    d = tmp_path / "old"
    d.mkdir()
    (d / "result.json").write_text(json.dumps(old))
    (d / "state.json").write_text(json.dumps(STATE))
    out = CliRunner().invoke(cli, ["report", str(d), "--no-figures"])
    assert out.exit_code == 0, out.output
    text = (d / "report.md").read_text()
    assert "Paired differences against strong_icl" in text and "| weak − strong_icl |" in text


@pytest.mark.parametrize("method", ["w2s", "llm2", "critique"])
def test_report_command_writes_png_with_the_method_panels(tmp_path: Path, method: str) -> None:
    from click.testing import CliRunner
    from matplotlib.image import imread

    from raysys.cli import cli

    d = _run_dir(tmp_path, method)
    out = CliRunner().invoke(cli, ["report", str(d)])
    assert out.exit_code == 0, out.output
    png = d / "figures" / f"{method}.png"
    assert f"figure:  {png}" in out.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    side = json.loads(png.with_suffix(".json").read_text())
    assert side["panels"] == PANELS[method]       # titles of the axes actually drawn
    height, width = imread(png).shape[:2]
    assert (width, height) == (PX_PER_PANEL * len(PANELS[method]), round(4.4 * 110))
    text = (d / "report.md").read_text()
    assert f"![{method}](figures/{method}.png)" in text


def test_report_text_has_rows_differences_and_phase_shares(tmp_path: Path) -> None:
    text = render_run_report(RESULTS["w2s"], STATE, ["figures/w2s.png"])
    assert "| stage2 | 75.0% | [30.1, 95.4] | 4 |" in text
    # paired against strong_icl: +2 gained, 0 lost on 4 problems -> +50 points
    assert re.search(r"\| stage2 − strong_icl \| \+50\.0 \[[-+0-9., ]+\] \(2/0\) \| 4 \|", text)
    assert "| weak − strong_icl | -25.0 [" in text
    assert "## Data\n\nkept 3" in text
    rows = re.findall(r"^\| (\w+) \| ([0-9.]+) \| ([0-9]+\.[0-9])% \|", text, re.M)
    assert [r[0] for r in rows] == ["sampling", "grading", "training", "data", "orchestration"]
    assert sum(float(r[2]) for r in rows) == pytest.approx(100.0, abs=0.2)
    assert "| sampling | 14.0 | 28.0% | 42.9 | 1.7 |" in text
    assert "| total | 50.0 | 100% | | |" in text
    # LLM2 writes its own paired-bootstrap section: no second table of the same comparisons
    assert "Paired differences" not in render_run_report(RESULTS["llm2"], STATE)


def test_report_on_an_unfinished_or_corrupt_run_names_the_file(tmp_path: Path) -> None:
    d = _run_dir(tmp_path, "w2s")
    (d / "result.json").unlink()
    with pytest.raises(DataError, match=r"result\.json: not found \(the run has not finished"):
        regenerate(d)
    (d / "result.json").write_text('{"method": "w2s",\n "evals": [}')
    with pytest.raises(DataError, match=r"result\.json:2: malformed JSON"):
        regenerate(d)
    (d / "result.json").write_text(json.dumps({"method": "w2s", "evals": [{"model": "a"}]}))
    with pytest.raises(DataError, match=r"evals\[0\] lacks \['correct', 'n'\]"):
        regenerate(d)
    (d / "result.json").write_text(json.dumps({"method": "w2s", "evals": [
        {"model": "a", "correct": 5, "n": 4}]}))
    with pytest.raises(DataError, match=r"evals\[0\] \(a\): expected integers 0 <= correct <= n, "
                                        r"got correct=5 n=4"):
        regenerate(d)
    (d / "result.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(DataError, match=r"result\.json:1: not UTF-8 text"):
        regenerate(d)
    assert not (d / "figures").exists()


def test_report_without_figures_and_with_no_rows(tmp_path: Path) -> None:
    d = _run_dir(tmp_path, "llm2")
    out = regenerate(d, figures=False)
    assert out.figures == [] and not (d / "figures").exists()
    assert "![" not in out.report.read_text()
    (d / "result.json").write_text(json.dumps({**RESULTS["llm2"], "evals": []}))
    out = regenerate(d)        # a run with no test rows: the report, and nothing to plot
    assert out.figures == [] and "## Timings" in out.report.read_text()


def test_compute_shares_are_hand_computed() -> None:
    """STATE: no sampling stage reports engine_s, training a's steps 5 of its 20 s."""
    from raysys.pipeline.report import compute_shares, shares_line

    state = {**STATE, "stages": {**STATE["stages"],
                                 "iter_0/eval_a": {"phase": "sampling", "seconds": 10.0,
                                                   "metrics": {"engine_s": 7.5}},
                                 "iter_0/critiques": {"phase": "sampling", "seconds": 6.0,
                                                      "metrics": {"engine_s": 3.0, "grading_s": 2.0}}}}
    c = compute_shares(state)
    # generation 7.5 + 3; steps 5; start-up (10 - 7.5) + (6 - 3 - 2) + (20 - 5) = 18.5; wall 50
    assert c == {"generation_s": 10.5, "training_steps_s": 5.0, "startup_s": 18.5, "wall_s": 50.0,
                 "generation_share": 21.0, "training_steps_share": 10.0, "startup_share": 37.0,
                 "idle_share": 69.0}
    assert "idle (no model computing) 69.0%" in shares_line(state)
    # stages that ran in invocations with no recorded wall time: the stage seconds bound it below
    assert compute_shares({**state, "runs": []})["wall_s"] == 37.0
