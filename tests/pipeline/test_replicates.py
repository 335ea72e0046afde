"""`raysys compare`: reruns of one recipe side by side, each run's paired difference and their
mean with the training-noise interval; every bad input is one error naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raysys.cli import cli
from raysys.data.io import DataError
from raysys.pipeline.replicates import default_pairs, paired_outcomes, replicates_table
from raysys.pipeline.stats import paired_bootstrap, replicated_diff

IDS = [f"p{i}" for i in range(40)]


def _row(model: str, right: int, maj_right: int | None = None) -> dict[str, Any]:
    """A result row that gets the first ``right`` of the 40 problems right."""
    row: dict[str, Any] = {"model": model, "correct": right, "n": len(IDS),
                           "outcomes": {p: i < right for i, p in enumerate(IDS)}}
    if maj_right is not None:
        row.update(maj_k=4, maj_acc=maj_right / len(IDS),
                   maj_outcomes={p: i < maj_right for i, p in enumerate(IDS)})
    return row


def _run(tmp: Path, name: str, gain: int, method: str = "llm2") -> Path:
    d = tmp / name
    d.mkdir()
    evals = [_row("plain", 10, 12), _row("guided_beta1", 10 + gain, 12 + gain), _row("other", 5)]
    (d / "result.json").write_text(json.dumps({"method": method, "title": name, "evals": evals}))
    return d


def _compare(*args: str) -> Any:
    return CliRunner().invoke(cli, ["compare", *args])


def test_three_reruns_give_each_runs_difference_and_the_pooled_interval(tmp_path: Path) -> None:
    dirs = [str(_run(tmp_path, f"s{s}", gain)) for s, gain in ((0, 8), (1, 4), (2, 6))]
    out = _compare(*dirs, "--pair", "plain:guided_beta1")
    assert out.exit_code == 0, out.output
    lines = [ln for ln in out.output.splitlines() if ln.startswith("| guided") or "mean of" in ln]
    assert [ln.split("|")[2].strip() for ln in lines] == [*dirs, "**mean of 3**"]
    # the first run's cell is its own paired bootstrap; the mean's is replicated_diff's
    def right(k: int) -> list[bool]:          # in the order compare pairs them: sorted ids
        return [int(p[1:]) < k for p in sorted(IDS)]

    assert paired_bootstrap(right(10), right(18)).cell() in lines[0]
    rep = replicated_diff([(right(10), right(10 + g)) for g in (8, 4, 6)])
    assert rep.diff == pytest.approx(0.15)
    assert f"**{rep.cell()}** (t, {rep.df} df; shown)" in lines[3]


def test_default_pairs_are_the_reports_comparisons_plus_maj_votes(tmp_path: Path) -> None:
    result = json.loads((_run(tmp_path, "s0", 8) / "result.json").read_text())
    assert default_pairs(result) == [("plain", "guided_beta1"), ("plain", "other"),
                                     ("plain@maj", "guided_beta1@maj")]
    runs = [("a", result), ("b", result)]
    ids, outcomes = paired_outcomes(runs, "plain@maj", "guided_beta1@maj")
    assert ids == sorted(IDS) and sum(outcomes[0][1]) == 20 and sum(outcomes[0][0]) == 12
    table = replicates_table(runs)
    assert "| **guided_beta1@maj − plain@maj** | **mean of 2** | **+20.0" in table
    assert "| **other − plain** | **mean of 2** | **-12.5" in table and "reversed" in table


def test_only_problems_every_run_graded_are_paired(tmp_path: Path) -> None:
    a, b = _run(tmp_path, "a", 8), _run(tmp_path, "b", 8)
    result = json.loads((b / "result.json").read_text())
    for row in result["evals"]:
        row["outcomes"].pop("p0")
    (b / "result.json").write_text(json.dumps(result))
    ids, _ = paired_outcomes([("a", json.loads((a / "result.json").read_text())), ("b", result)],
                             "plain", "guided_beta1")
    assert "p0" not in ids and len(ids) == 39


@pytest.mark.parametrize(("make", "args", "message"), [
    (lambda t: [_run(t, "s0", 8)], [], "1 run(s): comparing replicates needs at least 2"),
    (lambda t: [_run(t, "s0", 8), _run(t, "s1", 4, method="critique")], [],
     "different methods"),
    (lambda t: [_run(t, "s0", 8), _run(t, "s1", 4)], ["--pair", "plain:guided"],
     "no row 'guided' (rows: plain, guided_beta1, other)"),
    (lambda t: [_run(t, "s0", 8), _run(t, "s1", 4)], ["--pair", "plain"],
     "expected BASELINE:ROW"),
    (lambda t: [_run(t, "s0", 8), _run(t, "s1", 4)], ["--pair", "plain@maj:other@maj"],
     "row 'other' has no maj@k outcomes"),
    (lambda t: [_run(t, "s0", 8), t / "absent"], [], "result.json: not found"),
])
def test_bad_input_is_one_clear_error(tmp_path: Path, make: Any, args: list[str],
                                      message: str) -> None:
    """A DataError (the CLI's main prints it as one `error:` line) or a usage error."""
    out = _compare(*(str(d) for d in make(tmp_path)), *args)
    assert out.exit_code != 0
    if isinstance(out.exception, DataError):
        assert message in str(out.exception)
    else:
        assert message in out.output and "Traceback" not in out.output, out.output


@pytest.mark.parametrize("outcomes", [[True, False], {"p0": 1}, {"p0": "yes"}, "x"])
def test_malformed_outcomes_name_the_run_and_row(tmp_path: Path, outcomes: Any) -> None:
    a, b = _run(tmp_path, "a", 8), _run(tmp_path, "b", 8)
    result = json.loads((b / "result.json").read_text())
    result["evals"][1]["outcomes"] = outcomes
    (b / "result.json").write_text(json.dumps(result))
    out = _compare(str(a), str(b), "--pair", "plain:guided_beta1")
    assert isinstance(out.exception, DataError)
    assert f"{b}/result.json: evals[1] (guided_beta1).outcomes: expected an object of problem " \
           "id -> true/false" in str(out.exception)


def test_runs_without_a_shared_test_set_are_refused(tmp_path: Path) -> None:
    a, b = _run(tmp_path, "a", 8), _run(tmp_path, "b", 8)
    result = json.loads((b / "result.json").read_text())
    for row in result["evals"]:
        row["outcomes"] = {f"other-{k}": v for k, v in row["outcomes"].items()}
    (b / "result.json").write_text(json.dumps(result))
    out = _compare(str(a), str(b), "--pair", "plain:guided_beta1")
    assert isinstance(out.exception, DataError)
    assert "no problem was graded by every run" in str(out.exception)


def test_a_run_counts_once(tmp_path: Path) -> None:
    """The same dir twice (also through a symlink or another spelling) or a copy of a run dir
    would shrink the interval as if it were a replicate: refused, naming both."""
    import shutil

    a, b = _run(tmp_path, "a", 8), _run(tmp_path, "b", 8)
    for d, pid in ((a, 1), (b, 2)):
        (d / "state.json").write_text(json.dumps({"stages": {}, "runs": [{"pid": pid}]}))
    (tmp_path / "link").symlink_to(a)
    shutil.copytree(a, tmp_path / "copy")
    for args, message in [([a, a], f"{a}: the same run dir as {a} (given twice)"),
                          ([a, b, tmp_path / "link"], "link: the same run dir as"),
                          ([a, b, f"{b}/../b"], "under another name"),
                          ([a, tmp_path / "copy"], f"copy: a copy of {a}")]:
        out = _compare(*map(str, args))
        assert isinstance(out.exception, DataError) and message in str(out.exception), out.output
    assert _compare(str(a), str(b)).exit_code == 0
