"""Step 2 from the paper's precomputed weak outputs (real files; no Ray, no model runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysys.config import to_dict
from raysys.data.io import DataError
from raysys.pipeline import RunDir
from raysys.recipes import load_run_config
from raysys.recipes import steps
from raysys.recipes.w2s_data import weak_outputs_stage

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _cfg(shared: Path, tiny: Path, tmp: Path, weak_outputs: Path | None = None):
    w2s_dir = shared / "w2s"
    return load_run_config(CONFIGS / "w2s_gsm8k.yaml", [
        f"run_dir={tmp / 'run'}", f"models.strong.path={tiny}",
        f"data.train_1.path={w2s_dir / 'gsm8k/train_1.jsonl'}",
        f"data.train_2.path={w2s_dir / 'gsm8k/train_2.jsonl'}", "data.train_2.limit=300",
        f"data.test.path={w2s_dir / 'gsm8k/test.jsonl'}",
        f"data.weak_outputs={weak_outputs or w2s_dir / 'weak_outputs/gsm8k_train_2_mistral_7b_zero_shot.jsonl'}"])


def test_precomputed_weak_outputs_become_graded_weak_labels(shared_data_dir: Path, tiny_model_dir: Path,
                                                            tmp_path: Path) -> None:
    cfg = _cfg(shared_data_dir, tiny_model_dir, tmp_path)
    rd = RunDir(cfg.run_dir, to_dict(cfg))
    ctx = steps.StepContext(rd, cfg.engine, cfg.cluster, cfg.data.grade_style)
    train_2 = steps.problems(ctx, "train_2", cfg.data.train_2)
    labels = weak_outputs_stage(ctx, str(cfg.data.weak_outputs), train_2)
    assert labels.num_rows == 300
    assert labels.column("problem_id").to_pylist() == train_2.column("id").to_pylist()
    # our grading of the weak responses agrees with the file's own `result` on (almost) every row
    src = [json.loads(line) for line in open(cfg.data.weak_outputs)][:300]
    ours = labels.column("correct").to_pylist()
    agree = sum(bool(a) == bool(s["result"]) for a, s in zip(ours, src))
    assert agree >= 295, agree
    assert 0.5 < sum(ours) / 300 < 0.8          # the file is 65.8% correct overall


def test_misaligned_weak_outputs_fail_with_file_and_line(shared_data_dir: Path, tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    bad = tmp_path / "weak.jsonl"
    bad.write_text(json.dumps({"id": 0, "prompt": "Question: something else\nAnswer:", "response": "#### 1"})
                   + "\n")
    cfg = _cfg(shared_data_dir, tiny_model_dir, tmp_path, weak_outputs=bad)
    rd = RunDir(cfg.run_dir, to_dict(cfg))
    ctx = steps.StepContext(rd, cfg.engine, cfg.cluster, cfg.data.grade_style)
    train_2 = steps.problems(ctx, "train_2", cfg.data.train_2)
    with pytest.raises(DataError, match=rf"{bad}:1: id 0 is row 0 of data.train_2"):
        weak_outputs_stage(ctx, str(cfg.data.weak_outputs), train_2)
    assert not (rd.stage_dir("weak_labels") / "_MANIFEST.json").exists()
