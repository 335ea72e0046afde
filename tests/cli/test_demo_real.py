"""`raysys demo --real`: the real configs exist and load, and a missing model or data dir is one
error naming how to get it (no Ray, no model load)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from raysys.cli import run as run_cli


def test_every_real_demo_config_exists_and_names_the_real_model(shared_data_dir: Path) -> None:
    for name, files in run_cli.REAL_DEMO_CONFIGS.items():
        for f in files:
            text = (run_cli.REPO_CONFIGS / f).read_text()
            assert "models/smollm2-135m-instruct" in text, f
            assert "../shared/data/" in text, f


def test_missing_model_names_make_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_cli, "REAL_MODEL_DIR", tmp_path / "nope")
    result = CliRunner().invoke(run_cli.demo, ["--real", "--recipe", "llm2", "--quick"])
    assert result.exit_code != 0
    assert "make real-model" in result.output and "nope" in result.output


def test_missing_data_and_wrong_cwd_are_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(Exception, match=r"shared/data|real data"):
        run_cli.check_real_demo(model, tmp_path / "no-data")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="run it from the repo root"):
        run_cli.check_real_demo(model, tmp_path)


@pytest.mark.parametrize("name, key", [("llm2", "models.llm.path"), ("critique", "models.actor.path"),
                                       ("w2s", "models.strong.path")])
def test_real_demo_configs_load(name: str, key: str, tiny_model_dir: Path,
                                shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from raysys.recipes import load_run_config

    monkeypatch.chdir(run_cli.REPO_CONFIGS.parent)      # the configs' paths are the repo root's
    if shared_data_dir != (run_cli.REPO_CONFIGS.parent / "../shared/data").resolve():
        pytest.skip("the real configs name ../shared/data; RAYSYS_SHARED_DATA points elsewhere")
    for f in run_cli.REAL_DEMO_CONFIGS[name]:
        cfg = load_run_config(run_cli.REPO_CONFIGS / f, [f"{key}={tiny_model_dir}"])
        assert cfg.run_dir.startswith("runs/real-")
