"""Two raysys runs on one machine at once (two experiments): each driver starts its own local
Ray instance (own ports, session and temp dirs), both finish, and their results equal what each
gives alone (greedy decoding, fixed seeds: the other run's load changes timing, not outputs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from test_w2s_resume import RAYSYS, REPO, _env

pytestmark = pytest.mark.slow


def test_two_quick_demos_at_once_both_complete(tmp_path: Path) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen(RAYSYS + ["demo", "--recipe", "llm2", "--quick", "--run-dir", str(r)],
                              cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
             for r in runs]
    outs = [p.communicate(timeout=1500) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "| plain |" in out
    # separate Ray sessions, each recorded in its own run's logs
    sessions = [(r / "logs" / "ray_session.txt").read_text().strip() for r in runs]
    assert sessions[0] != sessions[1]
    # identical work -> identical results: the concurrent run did not leak into this one
    for stage in ("token_pairs", "eval_plain", "eval_guided_beta0.25"):
        a, b = (sorted(map(str, pq.read_table(r / "iter_0" / stage).to_pylist())) for r in runs)
        assert a == b, stage
    assert (runs[0] / "report.md").read_text().split("## ")[1] == \
        (runs[1] / "report.md").read_text().split("## ")[1]
