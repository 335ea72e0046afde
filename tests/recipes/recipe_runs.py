"""In-process recipe runs (no Ray) on tiny models, shrunk from the quick demos so each recipe's
whole logic runs in the fast suite: one pre-trained tiny model shared by every recipe and role
(``tiny_cache``), few problems, few steps. Test modules import the fixtures from here (a
module of its own name: ``from conftest import`` would find another directory's conftest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# The one tiny model every role starts from (the quick demos' strong model, pre-trained less):
# same settings everywhere, so the shared tiny_cache trains it once per session.
# One-step problems on small operands (what the task's generator calls min/max_steps 1): a
# model pre-trained for a few steps answers them in the task's format, so every stage has data.
TASK = "min_steps: 1, max_steps: 1, max_operand: 5"
TINY = ("{hidden: 128, layers: 2, heads: 2, seed: 2, pretrain_problems: 960, pretrain_seed: 1000, "
        f"pretrain_options: {{{TASK}}}, pretrain_max_demos: 2, pretrain: {{lr: 3.0e-3, "
        "max_steps: 120, micro_batch_size: 16, zero_stage: 0, warmup_ratio: 0.05, "
        "lora: {enabled: false}, merge_output: false}}")


def synthetic(key: str, n: int, seed: int) -> str:
    return f"{key}={{name: synthetic, options: {{n: {n}, seed: {seed}, {TASK}}}}}"


@pytest.fixture(scope="session")
def tiny_cache() -> Path:
    """Pre-trained tiny models shared by the in-process recipe runs: kept between sessions
    under ``$RAYSYS_TEST_TINY_CACHE`` (default ``/tmp/raysys-test-tiny-cache``). Safe to share:
    an entry is named by the fingerprint of every setting it was trained with and published
    by a rename (``model_steps.tiny_cache_entry``)."""
    root = Path(os.environ.get("RAYSYS_TEST_TINY_CACHE", "/tmp/raysys-test-tiny-cache"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def run_in_process(tiny_cache: Path) -> Any:
    """``run(config_name, run_dir, overrides) -> RecipeResult``: the recipe of a demo config
    run in this process (no Ray), with the shared tiny cache."""
    from raysys.recipes import get_recipe, load_run_config

    def run(config: str, run_dir: Path, overrides: list[str], force: bool = False) -> Any:
        # one torch thread per replica: on a shared 2-core machine two contend (several times
        # slower); in process, cpus_per_replica is only that
        cfg = load_run_config(CONFIGS / config, [f"run_dir={run_dir}", f"tiny_cache={tiny_cache}",
                                                 "cluster.cpus_per_replica=1", *overrides])
        return get_recipe(cfg.recipe).run(cfg, force=force, in_process=True)
    return run
