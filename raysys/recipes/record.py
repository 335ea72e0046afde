"""What a recipe is: one :class:`Recipe` record per method module, found by the registry.

A method module (``raysys/recipes/<module>.py``) defines ``RECIPE = Recipe(...)``: its canonical
name (the ``recipe:`` value, ``raysys demo --recipe``, ``result.json``'s ``method``, the figure's
file name), the names users may also type (``aliases``), its typed config, the body that runs it
on a :class:`~raysys.recipes.steps.StepContext`, how its report and figure read (baseline row,
paired-differences table, figure panels) and its demo configs. The CLI, ``report``, ``compare``
and the figures read this record; none of them names a method. :func:`recipes` finds every
record by importing the modules of this package, so a new method is one new module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raysys.config import ConfigError


@dataclass(frozen=True)
class Recipe:
    """One method, as every part of raysys that is not the method itself sees it."""

    name: str                           # canonical: recipe:, demo --recipe, result.json method
    title: str                          # the report's title, before ": <run dir name>"
    config: type                        # its typed config (a RecipeConfig subclass)
    body: Callable[[Any, Any], Any]     # body(cfg, ctx) -> RecipeResult; ctx: steps.StepContext
    aliases: tuple[str, ...] = ()       # other names accepted where users type one
    # The report row every other row is compared with (paired bootstrap); None: the first row.
    baseline: str | None = None
    # False when the recipe's own sections already hold its paired comparisons (LLM2).
    differences: bool = True
    # Figure panels after the accuracy bars, by name (raysys.pipeline.figures.PANELS).
    panels: tuple[str, ...] = ()
    # (full, quick) demo config files in configs/: tiny models on the synthetic task, and the
    # --real ones (SmolLM2-135M-Instruct on real data); None: no such demo.
    demo: tuple[str, str] | None = None
    real_demo: tuple[str, str] | None = None
    order: int = 100                    # position in `raysys demo --recipe all`
    names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", (self.name, *self.aliases))

    def run(self, cfg: Any, *, force: bool = False, in_process: bool = False) -> Any:
        """Run (or resume) ``cfg`` in its ``run_dir``; returns the
        :class:`~raysys.recipes.steps.RecipeResult`. ``in_process``: no Ray (every role a
        local group, training in this process; tiny models)."""
        from raysys.recipes.steps import run_recipe

        return run_recipe(self, cfg, force=force, in_process=in_process)

    def layout(self) -> dict[str, Any]:
        """How the report and figure read a result of this recipe (stored in ``result.json``)."""
        return {"baseline": self.baseline, "differences": self.differences,
                "panels": list(self.panels)}


_FOUND: dict[str, Recipe] | None = None


def recipes() -> dict[str, Recipe]:
    """Every recipe by canonical name, in demo order: the ``RECIPE`` of each module of
    ``raysys.recipes`` (imported once). Two records claiming one name is a bug, not a choice."""
    global _FOUND
    if _FOUND is None:
        import raysys.recipes as pkg

        found: dict[str, Recipe] = {}
        owner: dict[str, str] = {}
        for info in pkgutil.iter_modules(pkg.__path__):
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            rec = getattr(mod, "RECIPE", None)
            if not isinstance(rec, Recipe):
                continue
            for name in rec.names:
                if name in owner:
                    raise RuntimeError(f"recipe name {name!r} claimed by {owner[name]} and "
                                       f"{mod.__name__}")
                owner[name] = mod.__name__
            found[rec.name] = rec
        _FOUND = dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))
    return _FOUND


def get_recipe(name: Any, key: str = "recipe") -> Recipe:
    """The recipe called ``name`` (its canonical name or an alias): the one place aliases are
    resolved. ``ConfigError`` naming ``key`` and the known names otherwise."""
    for rec in recipes().values():
        if name in rec.names:
            return rec
    known = ", ".join(n for r in recipes().values() for n in r.names)
    raise ConfigError(f"{key}: unknown recipe {name!r} (known: {known})")
