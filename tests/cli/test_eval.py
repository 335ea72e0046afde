"""``raysys eval`` end to end on the tiny model (HF engine, local Ray), and its input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raysys.cli import cli
from raysys.config import ConfigError
from raysys.grading import extract_answer

QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples?",
             "A box holds 12 pens; 5 are taken. How many are left?",
             "Sara reads 6 pages a day for 3 days. How many pages?",
             "There are 20 birds and 8 fly away. How many remain?"]
N, MAX_NEW, TEMP = 2, 16, 0.8


@pytest.fixture(autouse=True, scope="module")
def no_ray_running() -> None:
    """These tests check that the CLI starts (and stops) Ray itself, or never starts it: begin
    without a Ray connection left over from another test module."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _write_gsm8k(path: Path, golds: list[str]) -> Path:
    rows = [{"question": q, "answer": f"Work it out.\n#### {g}"} for q, g in zip(QUESTIONS, golds)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _expected_samples(model_dir: Path) -> list[list[str]]:
    """What the one sampler replica will generate (same prompts, params, batch and seed)."""
    from raysys.engines.base import SamplingParams
    from raysys.engines.hf import HFEngine
    from raysys.prompts import build_prompt, default_stop

    engine = HFEngine(str(model_dir))
    out = engine.generate([build_prompt(q, "zero_shot") for q in QUESTIONS],
                          SamplingParams(n=N, temperature=TEMP, max_new_tokens=MAX_NEW, seed=0,
                                         stop=tuple(default_stop("zero_shot"))))
    return [[c.text for c in comps] for comps in out]


def _pass_at_k(n: int, c: int, k: int) -> float:
    from math import comb

    return 1.0 - comb(n - c, k) / comb(n, k)


@pytest.mark.slow
def test_eval_writes_samples_and_metrics_that_match_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    import ray
    from raysys.distributed.sampling import load_samples

    expected = _expected_samples(tiny_model_dir)
    # Gold = the answer of sample 1 for the first two problems: sample 1 is right there, and
    # sample 0 only when it gives the same answer; the other two problems are never right.
    golds = [extract_answer(expected[0][1]) or "1", extract_answer(expected[1][1]) or "1",
             "-987654", "-987653"]
    data = _write_gsm8k(tmp_path / "test.jsonl", golds)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"model: {{path: {tiny_model_dir}}}\ncluster: {{num_cpus: 2}}\n"
                   f"sampling: {{n: 1, max_new_tokens: {MAX_NEW}}}\n")
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, [
        "eval", "--config", str(cfg), "--data", f"gsm8k:{data}", "--limit", "4", "--n", str(N),
        "--temperature", str(TEMP), "--engine", "hf", "--replicas", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert not ray.is_initialized()                  # the command shut down the Ray it started

    samples = load_samples(out / "samples")
    assert samples.num_rows == 4 * N
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in samples.to_pylist():
        rows.setdefault(r["problem_id"], []).append(r)
    by_problem = list(rows.values())
    assert [[r["completion"] for r in rs] for rs in by_problem] == expected
    assert [rs[1]["correct"] for rs in by_problem] == [bool(extract_answer(expected[0][1])),
                                                       bool(extract_answer(expected[1][1])), False, False]

    metrics = json.loads((out / "metrics.json").read_text())
    correct = [[bool(r["correct"]) for r in rs] for rs in by_problem]
    assert metrics["problems"] == 4 and metrics["n"] == N
    assert metrics["accuracy"] == pytest.approx(sum(c[0] for c in correct) / 4)
    assert metrics["pass@1"] == pytest.approx(sum(sum(c) / N for c in correct) / 4)
    assert metrics["pass@2"] == pytest.approx(sum(_pass_at_k(N, sum(c), 2) for c in correct) / 4)
    assert metrics["pass@2"] > 0
    assert metrics["tokens_generated"] == sum(samples.column("num_tokens").to_pylist())
    assert {"load_data", "prepare", "generate", "finalize", "metrics"} <= set(metrics["wall_s"])
    md = (out / "metrics.md").read_text()
    assert f"| accuracy (first sample) | {100 * metrics['accuracy']:.1f}% |" in md
    assert f"| pass@2 | {100 * metrics['pass@2']:.1f}% |" in md

    # `raysys sample` with the same request finds the sealed stage and reuses it (no Ray).
    parts = sorted((out / "samples").glob("part-*.parquet"))
    again = CliRunner().invoke(cli, [
        "sample", "--config", str(cfg), "--data", f"gsm8k:{data}", "--limit", "4", "--n", str(N),
        "--temperature", str(TEMP), "--engine", "hf", "--replicas", "1", "--out", str(out)])
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert f"samples: {4 * N} rows" in again.output
    assert sorted((out / "samples").glob("part-*.parquet")) == parts
    assert not ray.is_initialized()


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return _write_gsm8k(tmp_path / "d.jsonl", ["7", "7", "18", "12"])


@pytest.mark.parametrize("args, message", [
    (["--data", "gsm9k:{data}"], "data.name: unknown dataset 'gsm9k'"),
    (["--model", "{tmp}/no_such_model"], "model.path: model directory not found"),
    (["--n", "0"], "sampling.n: expected n >= 1, got 0"),
    (["--n", "2", "--k", "4"], "k[0]: expected 1 <= k <= sampling.n = 2, got 4"),
    (["--few-shot", "2"], "demos: few_shot = 2 needs a demos file"),
    (["--set", "sampling.nn=2"], "sampling.nn: unknown key (did you mean 'n'?)"),
])
def test_bad_input_is_one_config_error_before_ray(args: list[str], message: str, tiny_model_dir: Path,
                                                  data_file: Path, tmp_path: Path) -> None:
    import ray

    base = {"--model": str(tiny_model_dir), "--data": f"gsm8k:{data_file}", "--out": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value.format(data=data_file, tmp=tmp_path)
    argv = ["eval"] + [x for kv in base.items() for x in kv]
    result = CliRunner().invoke(cli, argv)
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception)
    assert not ray.is_initialized()
    assert not (tmp_path / "o").exists()


def test_command_line_prints_one_line_and_exits_2(tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from raysys.cli import main; main()", "eval", "--model",
         str(tiny_model_dir), "--data", f"gsm8k:{data_file}", "--n", "2", "--k", "3",
         "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: k[0]: expected 1 <= k <= sampling.n = 2, got 3"]


def test_few_shot_flags_pick_the_template_and_draw_demos_from_the_file(
        tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    from raysys.cli.sample import build_config
    from raysys.distributed.evaluate import load_demos, resolve_grade_style

    opts = {"model": str(tiny_model_dir), "data": f"gsm8k:{data_file}", "few_shot": 2,
            "demos": str(data_file), "out": str(tmp_path / "o")}
    cfg = build_config(None, opts, ("demo_seed=5",))
    assert (cfg.template, cfg.few_shot, cfg.demo_seed) == ("few_shot", 2, 5)
    assert resolve_grade_style(cfg) == "default"
    demos = load_demos(cfg)
    assert demos == load_demos(cfg) and len(demos) == 2
    by_question = dict(zip(QUESTIONS, ["7", "7", "18", "12"]))
    for question, solution in demos:
        assert solution == f"Work it out.\n#### {by_question[question]}"
