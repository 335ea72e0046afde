"""The typed-config machinery: every error names the key path and what was expected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from raysys.config import (ClusterConfig, ConfigError, DatasetSpec, ModelSpec, SamplingConfig,
                           dump_yaml, from_dict)
from raysys.config_yaml import load_config, parse_overrides


@dataclass
class Lora:
    r: int = 8
    target_modules: list[str] = field(default_factory=lambda: ["q_proj"])


@dataclass
class Train:
    lr: float = 1e-4
    kind: Literal["sft", "dpo"] = "sft"
    lora: Lora = field(default_factory=Lora)
    note: str | None = None


@dataclass
class Top:
    name: str
    train: Train = field(default_factory=Train)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    extra: Lora | None = None


def test_defaults_and_nested_values() -> None:
    cfg = from_dict(Top, {"name": "x", "train": {"lr": 3, "lora": {"r": 4}}})
    assert cfg.train.lr == 3.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.lora.r == 4 and cfg.train.lora.target_modules == ["q_proj"]
    assert cfg.sampling.n == 1


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "train": {"lr": "fast"}}, "train.lr: expected float, got 'fast'"),
    ({"name": "x", "train": {"lrr": 1.0}}, "train.lrr: unknown key (did you mean 'lr'?)"),
    ({}, "name: required field missing"),
    ({"name": "x", "train": {"kind": "ppo"}}, "train.kind: expected one of 'sft', 'dpo', got 'ppo'"),
    ({"name": "x", "train": {"lora": {"r": 2.5}}}, "train.lora.r: expected int, got 2.5"),
    ({"name": "x", "train": {"lora": {"r": True}}}, "train.lora.r: expected int, got True"),
    ({"name": "x", "train": {"lora": {"target_modules": [1, {}]}}}, "train.lora.target_modules[1]: expected str"),
    ({"name": "x", "train": 3}, "train: expected mapping, got 3"),
    ({"name": "x", "sampling": {"n": 0}}, "sampling.n: expected n >= 1, got 0"),
    ({"name": "x", "sampling": {"top_p": 1.5}}, "sampling.top_p: expected a value in [0.0, 1.0], got 1.5"),
])
def test_errors_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Top, data)
    assert message in str(e.value)


def test_overrides_parse_yaml_scalars_and_nest() -> None:
    assert parse_overrides(["train.lr=0.001", "train.lora.r=16", "name=run1", "train.note=null"]) == {
        "train": {"lr": 1e-3, "lora": {"r": 16}, "note": None}, "name": "run1"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["train.lr"])


def test_load_config_applies_overrides_over_file(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: a\ntrain:\n  lr: 1e-4\n")
    assert load_config(Top, p).train.lr == 1e-4   # YAML 1.1 reads `1e-4` as a string
    cfg = load_config(Top, p, ["train.lr=0.5", "train.lora.target_modules=q_proj,v_proj"])
    assert cfg.train.lr == 0.5 and cfg.train.lora.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match=r"c.yaml: train.lr: expected float, got 'slow'"):
        load_config(Top, p, ["train.lr=slow"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Top, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Top, tmp_path / "bad.yaml")


def test_dump_round_trips() -> None:
    import yaml
    cfg = from_dict(Top, {"name": "x", "train": {"kind": "dpo"}})
    again = from_dict(Top, yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg


def test_shared_sections_check_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="model.path: model directory not found: ./nope"):
        from_dict(ModelSpec, {"path": "./nope"}, "model")
    assert from_dict(ModelSpec, {"path": "owner/some-model"}).path == "owner/some-model"  # hub id
    with pytest.raises(ConfigError, match="data.path: file or directory not found"):
        from_dict(DatasetSpec, {"name": "gsm8k", "path": str(tmp_path / "x.jsonl")}, "data")
    with pytest.raises(ConfigError, match="data.path: required for dataset 'gsm8k'"):
        from_dict(DatasetSpec, {"name": "gsm8k"}, "data")
    assert from_dict(DatasetSpec, {"name": "synthetic"}).path is None
    with pytest.raises(ConfigError, match="cluster.placement_strategy"):
        from_dict(ClusterConfig, {"placement_strategy": "RANDOM"}, "cluster")


def test_error_inside_an_optional_section_names_the_nested_key() -> None:
    assert from_dict(Top, {"name": "x", "extra": {"r": 2}}).extra == Lora(r=2)
    with pytest.raises(ConfigError, match=r"^extra\.r: expected int, got 'big'$"):
        from_dict(Top, {"name": "x", "extra": {"r": "big"}})
    with pytest.raises(ConfigError, match=r"^extra\.rr: unknown key \(did you mean 'r'\?\)$"):
        from_dict(Top, {"name": "x", "extra": {"rr": 2}})
