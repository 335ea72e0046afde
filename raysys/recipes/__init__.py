"""Recipes: each reads top to bottom as its paper's method. ``RECIPES`` maps the config's
``recipe:`` value to the module that defines ``CONFIG`` (its typed config) and ``run(cfg, ...)``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from raysys.config import ConfigError, from_dict
from raysys.config_yaml import deep_merge, load_yaml, parse_overrides

RECIPES: dict[str, str] = {
    "weak_to_strong": "raysys.recipes.weak_to_strong",
    "critique": "raysys.recipes.critique",
    "llm2": "raysys.recipes.llm2",
}


def recipe_module(name: Any) -> Any:
    if name not in RECIPES:
        raise ConfigError(f"recipe: unknown recipe {name!r} (known: {', '.join(sorted(RECIPES))})")
    return importlib.import_module(RECIPES[name])


def load_run_config(path: str | Path | None, overrides: tuple[str, ...] | list[str] = (),
                    data: dict | None = None) -> Any:
    """Load a run config: pick the recipe's typed config from ``recipe:`` and validate it all."""
    raw = load_yaml(path) if path is not None else dict(data or {})
    raw = deep_merge(raw, parse_overrides(overrides))
    if "recipe" not in raw:
        raise ConfigError(f"{path or '<config>'}: recipe: required field missing "
                          f"(one of {', '.join(sorted(RECIPES))})")
    mod = recipe_module(raw["recipe"])
    try:
        return from_dict(mod.CONFIG, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
