"""The LLM2 recipe run in this process (no Ray) on a tiny model: token exploration, verifier
training, plain vs guided decoding with a beta sweep, maj@k and best-of-k; its tables and
report; a second run reruns nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recipe_runs import TINY, synthetic, run_in_process, tiny_cache  # noqa: F401 (fixtures)

OVERRIDES = [synthetic("data.explore", 16, 31), synthetic("data.test", 8, 32), "data.heldout=4",
             f"tiny={TINY}", "explore.num_samples=2", "verifier_train.max_steps=2",
             "decode.maj_k=3", "greedy.max_new_tokens=24"]


@pytest.fixture(scope="module")
def llm2_run(run_in_process, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    run_dir = tmp_path_factory.mktemp("llm2") / "run"
    return run_dir, run_in_process("llm2_demo_quick.yaml", run_dir, OVERRIDES)


def test_guided_vs_plain_rows_pairs_and_report(llm2_run) -> None:
    run_dir, _ = llm2_run
    result = json.loads((run_dir / "result.json").read_text())
    rows = {r["model"]: r for r in result["evals"]}
    assert list(rows) == ["plain", "guided_beta0.25", "guided_beta1", "best_of_3"]
    # what each row is, as data the figure plots (no name parsing)
    assert [rows[m]["tags"] for m in rows] == [{"beta": 0.0}, {"beta": 0.25}, {"beta": 1.0},
                                               {"best_of": 3}]
    assert rows["plain"].get("baseline") is True and result["layout"]["differences"] is False
    voted = [r for r in rows.values() if r["maj_k"]]
    assert {r["model"] for r in voted} == {"plain", "guided_beta0.25"}
    for r in voted:
        assert len(r["maj_outcomes"]) == r["n"] == 8
        assert sum(r["maj_outcomes"].values()) == round(r["maj_acc"] * r["n"])
    report = (run_dir / "report.md").read_text()
    assert "held-out pairs: verifier ranks gold above the negative" in report
    assert "guided_beta0.25 − plain greedy" in report and "guided maj@3 − plain maj@3" in report
    assert "Paired differences against" not in report     # its own section has them
    side = json.loads((run_dir / "figures" / "llm2.json").read_text())
    assert side["panels"] == ["Greedy accuracy (95% CI)", "Accuracy vs beta",
                              "Accuracy vs k (k=1: greedy)"]


def test_token_pairs_index_the_decoders_text_rendering(llm2_run) -> None:
    from raysys.models.loading import load_tokenizer
    from raysys.prompts import build_prompt
    from raysys.training.collators import render_pair_ids

    run_dir, _ = llm2_run
    pairs = json.loads((run_dir / "iter_0" / "token_pairs" / "_MANIFEST.json").read_text())
    assert pairs["rows"] == 16 and pairs["metrics"]["pairs"] > 0     # every explored problem
    (model,) = (run_dir / "models").glob("llm_pretrained")
    tok = load_tokenizer(str(model))
    questions = pq.read_table(run_dir / "iter_0" / "problems_test").column("question").to_pylist()
    decoded = pq.read_table(run_dir / "iter_0" / "eval_plain").column("prompt").to_pylist()
    assert set(decoded) == {build_prompt(q, "zero_shot") for q in questions}
    for r in pq.read_table(run_dir / "iter_0" / "token_pairs").to_pylist():
        assert r["render"] == "text"
        ids = render_pair_ids(json.loads(r["messages"]), tok, r["render"])
        assert all(ids[p] == gt and neg != gt for p, gt, neg in r["samples"])


def test_a_second_run_reruns_nothing(llm2_run, run_in_process) -> None:
    run_dir, first = llm2_run
    before = json.loads((run_dir / "state.json").read_text())["stages"]
    again = run_in_process("llm2_demo_quick.yaml", run_dir, OVERRIDES)
    after = json.loads((run_dir / "state.json").read_text())["stages"]
    assert {k: v["end"] for k, v in after.items()} == {k: v["end"] for k, v in before.items()}
    assert again.accuracy == first.accuracy
