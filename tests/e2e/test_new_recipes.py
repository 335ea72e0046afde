"""End to end on Ray: the quick demos of every recipe through `raysys demo --recipe all`, their
stage tables equal to the same recipe's run in process (no Ray) for the same seed; the critique
run killed inside its first iteration and resumed, a re-run of a finished run and a streamed
iteration (extended: their logic runs without Ray in tests/recipes/test_*_in_process.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from run_tables import assert_streamed_iteration_equal, report_section, stage_tables
from test_w2s_resume import _run, _run_until_killed, _state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def critique_run(quick_all: tuple[Path, str, str]) -> Path:
    """The critique run of the quick demo of every recipe (tests/e2e/conftest.py)."""
    return quick_all[0] / "critique"


def test_demo_all_pretrains_the_shared_actor_once(quick_all: tuple[Path, str, str]) -> None:
    from raysys.cli.run import DEMO_CONFIGS

    parent, stdout, _ = quick_all
    # every recipe with a demo, in the records' order
    assert [ln for ln in stdout.splitlines() if ln.startswith("== ")] == [
        f"== {name} ==" for name in DEMO_CONFIGS]
    strong = parent / "w2s" / "models" / "strong_pretrained"
    actor = parent / "critique" / "models" / "actor_pretrained"
    # every pre-trained tiny model is published; llm2's base has other settings: its own entry
    entries = sorted((parent / "tiny_cache").iterdir())
    assert len(entries) == 2 and all(e.name.startswith("tiny-") for e in entries)
    weights = (strong / "model.safetensors").read_bytes()
    shared = [e for e in entries if (e / "model.safetensors").read_bytes() == weights]
    assert len(shared) == 1
    assert (actor / "model.safetensors").read_bytes() == weights
    marker = json.loads((actor / "_COMPLETE.json").read_text())
    assert marker["metrics"]["from_cache"] == str(shared[0])
    assert not (parent / "critique" / "ray_train" / "actor_pretrained").exists()   # not trained
    stages = _state(parent / "critique")["stages"]
    assert stages["models/actor_pretrained"]["seconds"] < 30
    assert "models/actor_init" not in stages


def test_critique_quick_writes_every_stage_and_report(critique_run: Path) -> None:
    report = (critique_run / "report.md").read_text()
    loop = report_section(report, "Self-improvement per iteration")
    assert "| 1 | critique |" in loop and "| 1 | plain |" in loop
    assert "critique minus plain" in loop and "not training noise" in loop
    for gate in ("critic", "oracle", "gold"):
        rounds = report_section(report, f"Test time, {gate}-gated critique -> refine")
        assert rounds.count("\n| 0 |") == 1 and rounds.count("\n| 1 |") == 1
    # result.json keeps every row's per-problem outcomes (test-time rows: the last round's
    # answer), so `raysys compare` can pair them across reruns
    for r in json.loads((critique_run / "result.json").read_text())["evals"]:
        assert len(r["outcomes"]) == r["n"] and sum(r["outcomes"].values()) == r["correct"], r["model"]
    critic = report_section(report, "Critic on held-out solutions")
    solutions = int(critic.split(" held-out solutions")[0].split()[-1])
    verdicts = next(ln for ln in critic.splitlines() if ln.startswith("| verdicts given"))
    counts = {k: int(v) for k, v in (c.split() for c in verdicts.split(" | ")[1].strip(" |").split(", "))}
    assert set(counts) == {"wrong", "correct", "unknown"}
    assert sum(counts.values()) == solutions > 0          # one verdict (or none parsable) each
    # refinements: unique (solution, refine_idx) keys, each graded; the SFT set holds at most one
    # kept refinement per question (reserved_new_data: 1)
    refs = pq.read_table(critique_run / "iter_1" / "refinements").to_pylist()
    keys = [(r["problem_id"], r["sample_idx"], r["refine_idx"]) for r in refs]
    assert len(keys) == len(set(keys)) and all(r["refined_correct"] is not None for r in refs)
    sft = json.loads((critique_run / "iter_1" / "critique_sft" / "_MANIFEST.json").read_text())
    assert sft["metrics"]["refine_kept"] <= len({r["problem_id"] for r in refs})


@pytest.mark.extended      # kill/resume stays in CI with weak-to-strong's (test_w2s_resume.py)
def test_critique_killed_inside_an_iteration_resumes_to_the_same_tables(
        critique_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    args = ["demo", "--recipe", "critique", "--quick", "--run-dir", str(run_dir)]
    _run_until_killed(args, run_dir, "iter_1/refinements", lambda d: True, timeout=900)
    proc = _run(args, timeout=1200)
    assert "critique_iter1" in proc.stdout
    ref, got = stage_tables(critique_run), stage_tables(run_dir)
    # the reference (inside `demo --recipe all`) copied its pre-trained actor; this run trained it
    assert set(got) - set(ref) == {"iter_0/actor_pretrain_data"} and set(ref) <= set(got)
    got.pop("iter_0/actor_pretrain_data")
    assert [k for k in ref if ref[k] != got[k]] == []


@pytest.mark.extended      # covered without Ray: tests/recipes/test_*_in_process.py
def test_finished_run_reruns_nothing(critique_run: Path) -> None:
    before = _state(critique_run)["stages"]
    _run(["demo", "--recipe", "critique", "--quick", "--run-dir", str(critique_run)], timeout=300)
    after = _state(critique_run)["stages"]
    assert {k: v.get("end") for k, v in after.items()} == {k: v.get("end") for k, v in before.items()}


def test_llm2_in_process_writes_the_ray_runs_tables(quick_all: tuple[Path, str, str],
                                                    tmp_path: Path) -> None:
    """The LLM2 quick demo's config run again in this process (no Ray: local role groups,
    training in this process; its pre-trained tiny model copied from the demo's tiny_cache)
    writes the Ray run's stage tables row for row and the same report rows: same seed, same
    engines, same worker loop."""
    from multinode.reference import accuracy_rows
    from raysys.recipes import get_recipe, load_run_config

    ray_dir, here = quick_all[0] / "llm2", tmp_path / "llm2"
    cfg = load_run_config(ray_dir / "config.yaml", [f"run_dir={here}"])
    assert cfg.tiny_cache            # `demo --recipe all` shares pre-trained models
    get_recipe(cfg.recipe).run(cfg, in_process=True)
    ref, got = stage_tables(ray_dir), stage_tables(here)
    assert set(ref) - set(got) <= {"iter_0/llm_pretrain_data"} and set(got) <= set(ref)
    assert [k for k in got if got[k] != ref[k]] == []
    assert accuracy_rows(here) == accuracy_rows(ray_dir)


def test_llm2_quick_reports_guided_vs_plain_and_pair_accuracy(quick_all: tuple[Path, str, str]) -> None:
    run_dir = quick_all[0] / "llm2"
    llm2_table = quick_all[1].split("== llm2 ==", 1)[1].split("== critique ==", 1)[0]
    for row in ("| plain |", "| guided_beta0.25 |", "| guided_beta1 |", "| best_of_3 |"):
        assert row in llm2_table
    report = (run_dir / "report.md").read_text()
    assert "held-out pairs: verifier ranks gold above the negative" in report
    diffs = report_section(report, "Guided minus plain (paired bootstrap)")
    assert "guided_beta0.25 − plain greedy" in diffs and "guided maj@3 − plain maj@3" in diffs
    assert "not training noise" in diffs
    # result.json keeps each maj@k row's per-problem votes, agreeing with its maj@k accuracy
    rows = json.loads((run_dir / "result.json").read_text())["evals"]
    voted = [r for r in rows if r["maj_k"]]
    assert {r["model"] for r in voted} == {"plain", "guided_beta0.25"}   # the quick config's beta
    for r in voted:
        assert len(r["maj_outcomes"]) == r["n"]
        assert sum(r["maj_outcomes"].values()) == round(r["maj_acc"] * r["n"])
    assert all(not r["maj_outcomes"] for r in rows if not r["maj_k"])
    # every explored problem has a row; pairs index the gold token of the zero-shot text
    # rendering, whose prompt is exactly the one the decoder is given
    pairs = json.loads((run_dir / "iter_0" / "token_pairs" / "_MANIFEST.json").read_text())
    assert pairs["rows"] == 64 and pairs["metrics"]["pairs"] > 0
    from raysys.models.loading import load_tokenizer
    from raysys.prompts import build_prompt
    from raysys.training.collators import render_pair_ids

    tok = load_tokenizer(str(run_dir / "models" / "llm_pretrained"))
    questions = pq.read_table(run_dir / "iter_0" / "problems_test").column("question").to_pylist()
    decoded = pq.read_table(run_dir / "iter_0" / "eval_plain").column("prompt").to_pylist()
    assert set(decoded) == {build_prompt(q, "zero_shot") for q in questions}
    for r in pq.read_table(run_dir / "iter_0" / "token_pairs").to_pylist()[:10]:
        assert r["render"] == "text"
        messages = json.loads(r["messages"])
        assert messages[0]["content"].startswith("Question: ") and \
            messages[0]["content"].endswith("\nAnswer:")
        ids = render_pair_ids(messages, tok, r["render"])
        assert all(ids[p] == gt and neg != gt for p, gt, neg in r["samples"])


def test_quick_demo_console_is_short_and_raysys_only(quick_all: tuple[Path, str, str]) -> None:
    """What `raysys demo --recipe all --quick` prints: raysys's own timestamped lines, the
    recipes' headings and result tables, under 40 lines a recipe; library output goes to each
    run's logs/driver.log, and logs/ray_session.txt points at Ray's session logs."""
    from raysys.console import CONSOLE_LINE

    from raysys.cli.run import DEMO_CONFIGS

    parent, stdout, stderr = quick_all
    console = (stdout + stderr).splitlines()
    assert len(console) < len(DEMO_CONFIGS) * 40, "\n".join(console)
    result_line = re.compile(r"^(\|.*\||run dir: .*|report: .*|== (%s) ==|)$" % "|".join(DEMO_CONFIGS))
    foreign = [ln for ln in console if not (CONSOLE_LINE.match(ln) or result_line.match(ln))]
    assert foreign == [], "\n".join(foreign)
    assert any("models/weak: done" in ln for ln in console)
    assert "Started a local Ray instance" in (parent / "w2s" / "logs" / "driver.log").read_text()
    sessions = {recipe: Path((parent / recipe / "logs" / "ray_session.txt").read_text().strip())
                for recipe in ("w2s", "llm2", "critique")}
    # one Ray instance served the recipes (critique's file is rewritten when the resume tests
    # run it again)
    assert sessions["llm2"] == sessions["w2s"]
    assert all(s.name == "logs" and s.parent.name.startswith("session_") for s in sessions.values())


@pytest.mark.extended      # covered without Ray: tests/recipes/test_critique_in_process.py
def test_a_streamed_iteration_writes_what_the_barrier_iteration_wrote(
        critique_run: Path, tmp_path: Path) -> None:
    """`loop.stream: true` on the quick config's split placement: actor and critic groups work
    at once, inside `RoleGroups.together()`. The iteration's samples and critiques equal the
    barrier run's row for row; its refinements answer the same critiques (their sampled text
    may differ: chunks batch, and so pad, other rows together)."""
    import shutil

    run_dir = tmp_path / "streamed"
    shutil.copytree(critique_run, run_dir)
    streamed = ("critique_samples", "critiques", "refinements")
    for name in streamed:
        shutil.rmtree(run_dir / "iter_1" / name)
    _run(["run", str(run_dir / "config.yaml"), "--run-dir", str(run_dir), "--force",
          "--set", "loop.stream=true"], timeout=900)
    got = assert_streamed_iteration_equal(critique_run, run_dir, streamed)
    assert len(got["iter_1/refinements"]) > 0
