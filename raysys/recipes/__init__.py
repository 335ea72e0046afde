"""Recipes: each reads top to bottom as its paper's method. Every method module defines
``RECIPE`` (:class:`~raysys.recipes.record.Recipe`: its name, typed config, body, report layout
and demo configs); :func:`recipes` finds them all, :func:`get_recipe` resolves a name or alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raysys.config import ConfigError, from_dict
from raysys.config_yaml import deep_merge, load_yaml, parse_overrides
from raysys.recipes.record import Recipe, get_recipe, recipes

__all__ = ["Recipe", "get_recipe", "load_run_config", "recipes"]


def load_run_config(path: str | Path | None, overrides: tuple[str, ...] | list[str] = (),
                    data: dict | None = None) -> Any:
    """Load a run config: pick the recipe's typed config from ``recipe:`` and validate it all."""
    raw = load_yaml(path) if path is not None else dict(data or {})
    raw = deep_merge(raw, parse_overrides(overrides))
    where = f"{path}: " if path else ""
    if "recipe" not in raw:
        raise ConfigError(f"{path or '<config>'}: recipe: required field missing "
                          f"(one of {', '.join(recipes())})")
    try:
        return from_dict(get_recipe(raw["recipe"]).config, raw)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None
