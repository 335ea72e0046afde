"""The header every recipe config shares, and its checks (as TRL's trainer configs share
``TrainingArguments``): a recipe config subclasses :class:`RecipeConfig`, declares its own
sections, redeclares a header field only to change its default, and puts its own value checks
in :meth:`RecipeConfig.check`. ``run_recipe`` reads these fields, never a recipe's own ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raysys.config import ClusterConfig, ConfigError, EngineConfig, SamplingConfig


@dataclass(kw_only=True)
class RecipeData:
    """The part of ``data`` every recipe has: how answers are graded against gold."""

    grade_style: str = "default"


@dataclass(kw_only=True)
class RecipeConfig:
    """``recipe``, ``run_dir``, ``data`` (with ``grade_style``), ``tiny_cache``, ``greedy`` (the
    default sampling: greedy), ``engine``, ``cluster`` and ``seed``."""

    recipe: str                          # the recipe's name or an alias (record.get_recipe)
    run_dir: str
    data: RecipeData
    tiny_cache: str | None = None        # see raysys.recipes.model_steps.tiny_model
    greedy: SamplingConfig = field(default_factory=SamplingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    seed: int = 0

    def validate(self, path: str) -> None:
        """The header's checks, then the recipe's own (:meth:`check`)."""
        from raysys.recipes.record import get_recipe

        rec = get_recipe(self.recipe, key=f"{path}.recipe" if path else "recipe")
        if not isinstance(self, rec.config):
            raise ConfigError(f"recipe: {self.recipe!r} is read by {rec.config.__name__}, not "
                              f"{type(self).__name__}")
        if self.greedy.temperature != 0.0:
            raise ConfigError(f"greedy.temperature: expected 0 (greedy), got {self.greedy.temperature}")
        self.check(path)

    def check(self, path: str) -> None:
        """A recipe's own value checks (cross-field ones; a section checks itself)."""

    @property
    def grade_style(self) -> str:
        return self.data.grade_style
