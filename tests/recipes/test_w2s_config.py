"""The weak-to-strong config: shipped configs load, bad configs fail with one clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raysys.config import ConfigError
from raysys.recipes import load_run_config
from raysys.recipes.w2s_config import W2SConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def quick(tmp_path: Path, **changes: object) -> dict:
    raw = yaml.safe_load((CONFIGS / "demo_quick.yaml").read_text())
    raw["run_dir"] = str(tmp_path / "run")
    for dotted, value in changes.items():
        cur = raw
        *head, last = dotted.split("__")
        for p in head:
            cur = cur.setdefault(p, {})
        cur[last] = value
    return raw


@pytest.mark.parametrize("name, temperature, variant", [("demo.yaml", 1.0, "icl"),
                                                         ("demo_quick.yaml", 0.5, "hybrid"),
                                                         ("w2s_instruction.yaml", 1.0, "icl")])
def test_demo_configs_load_with_paper_defaults(name: str, temperature: float, variant: str) -> None:
    cfg = load_run_config(CONFIGS / name)
    assert isinstance(cfg, W2SConfig)
    assert W2SConfig.__dataclass_fields__["stage2"].default_factory().temperature == 1.0
    assert W2SConfig.__dataclass_fields__["stage1"].default_factory().variant == "hybrid"
    assert cfg.stage2.min_confidence == 0.6 and cfg.stage2.high_confidence == 0.8
    assert cfg.stage2.temperature == temperature and cfg.stage1.variant == variant
    assert cfg.icl.demos_from == "weak" and cfg.greedy.temperature == 0.0
    assert cfg.pairs_per_question == 1


def test_gsm8k_config_validates_with_supplied_models(shared_data_dir: Path, tiny_model_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CONFIGS.parent)          # split paths are relative to the repo root
    with pytest.raises(ConfigError, match="models.strong.path: model directory not found"):
        load_run_config(CONFIGS / "w2s_gsm8k.yaml")
    cfg = load_run_config(CONFIGS / "w2s_gsm8k.yaml", [f"models.strong.path={tiny_model_dir}"])
    assert cfg.stage2.n == 10 and cfg.data.weak_outputs.endswith("mistral_7b_zero_shot.jsonl")


@pytest.mark.parametrize("changes, message", [
    ({"recipe": "strong_to_weak"}, "recipe: unknown recipe 'strong_to_weak'"),
    ({"data__train_2": {"name": "w2s", "path": "/nope/train_2.jsonl"}},
     "data.train_2.path: file or directory not found: /nope/train_2.jsonl"),
    ({"stage2__min_confidence": 1.5}, r"stage2.min_confidence: expected a value in \[0.0, 1.0\], got 1.5"),
    ({"stage2__high_confidence": -0.1}, r"stage2.high_confidence: expected a value in \[0.0, 1.0\]"),
    ({"stage2__min_confidence": 0.9}, "stage2.min_confidence: expected <= stage2.high_confidence"),
    ({"stage1__variant": "both"}, "stage1.variant: expected one of 'hybrid', 'weak', 'icl'"),
    ({"stage2__method": "ppo"}, "stage2.method: expected one of 'dpo', 'orpo'"),
    ({"stage2__questions": 0}, r"stage2.questions: expected >= 1 or null \(all\), got 0"),
    ({"tiny": {"weak": None, "strong": None}}, "tiny.weak: required when models.weak.path is 'tiny'"),
    ({"icl__k": 0}, "icl.k: expected >= 1"),
    ({"stage1__train__lr": "fast"}, "stage1.train.lr: expected float, got 'fast'"),
    ({"stage2__trian": {}}, "stage2.trian: unknown key \\(did you mean 'train'\\?\\)"),
    ({"greedy__temperature": 0.7}, "greedy.temperature: expected 0"),
    ({"data__train_1": None}, "data.train_1: required to train the weak model"),
    ({"data__train_1": None, "weak_sft__enabled": False, "icl__demos_from": "gold"},
     "data.train_1: required for icl.demos_from 'gold'"),
    ({"data__weak_outputs": "/nope/weak.jsonl"}, "data.weak_outputs: file not found: /nope/weak.jsonl"),
    ({"tiny__strong__pretrain_options": {"max_operand": 10, "n": 5}},
     "tiny.strong.pretrain_options.n: unknown option"),
    ({"tiny__strong__pretrain_min_demos": 3},
     r"tiny.strong.pretrain_min_demos: expected 0 <= value <= pretrain_max_demos \(2\), got 3"),
])
def test_bad_config_is_one_config_error(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config(None, data=quick(tmp_path, **changes))


def test_cli_bad_config_fails_before_any_work(tmp_path: Path) -> None:
    raw = quick(tmp_path, stage2__min_confidence=2.0)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-c", "from raysys.cli import main; main()", "run", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "stage2.min_confidence: expected a value in [0.0, 1.0]" in lines[0]
    assert str(path) in lines[0]
    assert not (tmp_path / "run").exists()              # nothing started, nothing written


def test_pretrain_rows_mix_zero_and_few_shot_prompts_without_self_demos() -> None:
    from raysys.data.synthetic import make_problems
    from raysys.prompts import build_prompt
    from raysys.recipes.model_steps import pretrain_rows

    problems = make_problems(60, seed=5)
    rows = pretrain_rows(problems, max_demos=2, seed=0)
    assert [r["response"] for r in rows] == [" " + p["solution"].strip() for p in problems]
    demos_per_row = [r["prompt"].count("Question:") - 1 for r in rows]
    assert set(demos_per_row) == {0, 1, 2}
    for r, p in zip(rows, problems):
        assert r["prompt"].endswith(build_prompt(p["question"], "zero_shot"))
        assert r["prompt"].count(p["question"]) == 1          # never its own demonstration
    assert pretrain_rows(problems, max_demos=2, seed=0) == rows
    assert all(r["prompt"] == build_prompt(p["question"], "zero_shot")
               for r, p in zip(pretrain_rows(problems, 0, 0), problems))


def test_pretrain_rows_min_demos_leaves_the_zero_shot_format_out() -> None:
    from raysys.data.synthetic import make_problems
    from raysys.recipes.model_steps import pretrain_rows

    problems = make_problems(60, seed=5)
    rows = pretrain_rows(problems, max_demos=2, seed=0, min_demos=1)
    assert {r["prompt"].count("Question:") - 1 for r in rows} == {1, 2}
    assert [r["response"] for r in rows] == [r["response"] for r in pretrain_rows(problems, 2, 0)]
    assert {r["prompt"].count("Question:") - 1 for r in pretrain_rows(problems, 2, 0, 2)} == {2}
