"""The recipe records: one name per method (aliases resolved in one place), the shared config
header and its checks, and the CLI's demo table read from the records."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from raysys.config import ConfigError, from_dict
from raysys.recipes import get_recipe, load_run_config, recipes
from raysys.recipes.config_base import RecipeConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_every_method_module_has_one_record_and_names_are_unique() -> None:
    recs = recipes()
    assert list(recs)[:3] == ["w2s", "llm2", "critique"]          # demo order
    names = [n for r in recs.values() for n in r.names]
    assert len(names) == len(set(names))
    for name, rec in recs.items():
        assert rec.name == name and issubclass(rec.config, RecipeConfig)
        assert get_recipe(name) is rec
        assert rec.baseline is None or isinstance(rec.baseline, str)


def test_the_alias_resolves_to_the_canonical_name() -> None:
    assert get_recipe("weak_to_strong") is get_recipe("w2s")
    with pytest.raises(ConfigError, match=r"recipe: unknown recipe 'strong_to_weak' \(known: w2s, "
                                          r"weak_to_strong, llm2, critique"):
        get_recipe("strong_to_weak")


def test_a_config_typed_with_either_name_loads_the_same_recipe() -> None:
    alias = load_run_config(CONFIGS / "demo_quick.yaml")        # recipe: weak_to_strong
    canonical = load_run_config(CONFIGS / "demo_quick.yaml", ["recipe=w2s"])
    assert type(alias) is type(canonical) is get_recipe("w2s").config
    assert alias.recipe == "weak_to_strong" and canonical.recipe == "w2s"   # as the user typed it
    assert alias.grade_style == "default" and alias.tiny_cache is None


def test_a_config_class_refuses_another_recipes_name() -> None:
    w2s = get_recipe("w2s").config
    raw = load_run_config(CONFIGS / "demo_quick.yaml")
    from raysys.config import to_dict

    with pytest.raises(ConfigError, match=r"recipe: 'llm2' is read by LLM2Config, not W2SConfig"):
        from_dict(w2s, {**to_dict(raw), "recipe": "llm2"})


@pytest.mark.parametrize("name", ["w2s", "llm2", "critique"])
def test_the_header_checks_run_for_every_recipe(name: str) -> None:
    quick = CONFIGS / get_recipe(name).demo[1]
    with pytest.raises(ConfigError, match=r"greedy\.temperature: expected 0 \(greedy\), got 0\.5"):
        load_run_config(quick, ["greedy.temperature=0.5"])
    with pytest.raises(ConfigError, match=r"run_dir: required field missing"):
        load_run_config(None, data={"recipe": name})


def test_demo_configs_keep_their_shape_and_load() -> None:
    """``raysys.cli.run.DEMO_CONFIGS`` (imported by tests/multinode) is name -> (full, quick)
    from the records; every file exists and loads as its recipe."""
    from raysys.cli.run import DEMO_CONFIGS, REAL_DEMO_CONFIGS, REPO_CONFIGS

    assert DEMO_CONFIGS["w2s"] == ("demo.yaml", "demo_quick.yaml")
    assert REAL_DEMO_CONFIGS["critique"] == ("real_critique.yaml", "real_critique_quick.yaml")
    for name, files in DEMO_CONFIGS.items():
        assert len(files) == 2
        for f in files:
            assert type(load_run_config(REPO_CONFIGS / f)) is get_recipe(name).config, f


def test_demo_recipe_choices_come_from_the_records() -> None:
    from raysys.cli.run import demo

    out = CliRunner().invoke(demo, ["--recipe", "nope"])
    assert out.exit_code == 2
    for name in ("w2s", "weak_to_strong", "llm2", "critique", "all"):
        assert f"'{name}'" in out.output


def test_demo_defaults_to_the_first_recipe_in_order() -> None:
    from raysys.cli.run import _first_recipe

    assert _first_recipe() == next(iter(recipes())) == "w2s"
