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
    ({"name": "x", "sampling": {"top_p": 1.5}}, "sampling.top_p: expected 0 < top_p <= 1 (1 = off), got 1.5"),
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
    assert from_dict(DatasetSpec, {"name": "synthetic", "options": {"n": 3}}).path is None
    # what the source needs (a path, a count) is the data layer's check, run by the preflight
    # and every command that loads data (before Ray), not by the config layer
    from raysys.data.sources import check_config_data
    with pytest.raises(ConfigError, match="data.path: required for dataset 'gsm8k'"):
        check_config_data(from_dict(DatasetSpec, {"name": "gsm8k"}, "data"), "data")
    with pytest.raises(ConfigError, match=r"data\.options\.n: required for dataset 'synthetic'"):
        check_config_data(from_dict(DatasetSpec, {"name": "synthetic"}, "data"), "data")
    with pytest.raises(ConfigError, match="cluster.placement_strategy"):
        from_dict(ClusterConfig, {"placement_strategy": "RANDOM"}, "cluster")


def test_error_inside_an_optional_section_names_the_nested_key() -> None:
    assert from_dict(Top, {"name": "x", "extra": {"r": 2}}).extra == Lora(r=2)
    with pytest.raises(ConfigError, match=r"^extra\.r: expected int, got 'big'$"):
        from_dict(Top, {"name": "x", "extra": {"r": "big"}})
    with pytest.raises(ConfigError, match=r"^extra\.rr: unknown key \(did you mean 'r'\?\)$"):
        from_dict(Top, {"name": "x", "extra": {"rr": 2}})


def test_yaml_bounds_before_anything_is_built(tmp_path) -> None:
    """Alias expansion, nesting and digits are bounded while loading, each one line naming the
    file and line; anchors used normally still work."""
    import yaml

    from raysys.config_yaml import MAX_YAML_DEPTH, MAX_YAML_NODES, expanded_size, load_yaml_text

    assert load_yaml_text("a: &x {b: 1}\nc: *x\n", "f.yaml") == {"a": {"b": 1}, "c": {"b": 1}}
    node = yaml.compose("a: &x [1, 2, 3]\nb: [*x, *x]\n")
    assert expanded_size(node) == (1 + 1 + 4 + 1 + 1 + 2 * 4, 4)   # mapping, keys, lists, items
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i > 1 else '*a'] * 10)}]\n" for i in range(1, 6))
    with pytest.raises(ConfigError, match=rf"^f\.yaml: its anchors and aliases expand to [\d,]+ "
                                          rf"values \(at most {MAX_YAML_NODES:,} values"):
        load_yaml_text(laughs, "f.yaml")
    with pytest.raises(ConfigError, match=rf"^f\.yaml:3: nested deeper than {MAX_YAML_DEPTH} levels"):
        load_yaml_text("a: 1\nb: 2\nc: " + "[" * 5000 + "]" * 5000, "f.yaml")
    # deep only once expanded: 40 levels aliased inside 40 more
    deep = "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40 + "\n"
    with pytest.raises(ConfigError, match=r"expand to \d+ levels of nesting"):
        load_yaml_text(deep, "f.yaml")
    with pytest.raises(ConfigError, match=r"^f\.yaml:1: an alias to a value that contains it"):
        load_yaml_text("a: &a {b: *a}\n", "f.yaml")
    with pytest.raises(ConfigError, match=r"^f\.yaml:2: an integer of 4,400 characters"):
        load_yaml_text("a: 1\nb: " + "1" * 4400 + "\n", "f.yaml")
    with pytest.raises(ConfigError, match=r"^--set a:1: nested deeper"):
        parse_overrides(["a=" + "[" * 100 + "]" * 100])
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (5 << 20) + "\n")
    from raysys.config_yaml import load_yaml
    with pytest.raises(ConfigError, match=r"big\.yaml: 5,242,884 bytes; a config file is at most"):
        load_yaml(big)


def test_ints_are_64_bit_and_sizes_are_bounded() -> None:
    from raysys.config import MAX_SAMPLES_PER_PROMPT, check_int_range, from_dict

    assert from_dict(SamplingConfig, {"seed": 2**63 - 1}).seed == 2**63 - 1
    with pytest.raises(ConfigError, match=r"^seed: 9223372036854775808 is out of range"):
        from_dict(SamplingConfig, {"seed": 2**63})
    with pytest.raises(ConfigError, match=rf"^s\.n: expected 1 <= value <= {MAX_SAMPLES_PER_PROMPT:,}"):
        from_dict(SamplingConfig, {"n": 10**6}, "s")
    with pytest.raises(ConfigError, match=r"^max_new_tokens: expected 1 <= value <= 1,048,576"):
        from_dict(SamplingConfig, {"max_new_tokens": 2**21})
    with pytest.raises(ConfigError, match=r"^replicas: expected 1 <= value <= 4,096"):
        from_dict(ClusterConfig, {"replicas": 5000})
    with pytest.raises(ConfigError, match=r"^k: expected 0 <= value <= 3, got 4 \(why\)$"):
        check_int_range(4, "k", 0, 3, "why")
    check_int_range(None, "k", 0, 3)
