"""The shared cache of pre-trained tiny models (``tiny_cache``): fingerprints, atomic publishing,
and a run that finds its model there copies it instead of training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from raysys.config import ClusterConfig, EngineConfig
from raysys.models.tiny import build_tiny_model
from raysys.pipeline import RunDir
from raysys.pipeline.run_dir import MODEL_MARKER
from raysys.recipes import load_run_config, steps
from raysys.recipes.model_steps import TinyModel, publish_model, tiny_cache_entry, tiny_model

REPO = Path(__file__).resolve().parents[2]


def test_fingerprint_covers_every_setting(tmp_path: Path) -> None:
    tiny = TinyModel(pretrain_problems=100)
    assert tiny_cache_entry(None, tiny) is None
    same = tiny_cache_entry(tmp_path, TinyModel(pretrain_problems=100))
    assert same == tiny_cache_entry(tmp_path, tiny) and same.parent == tmp_path
    changed = [replace(tiny, seed=1), replace(tiny, layers=4), replace(tiny, pretrain_max_demos=2),
               replace(tiny, pretrain_options={"max_operand": 10}),
               replace(tiny, pretrain=replace(tiny.pretrain, max_steps=7))]
    names = {tiny_cache_entry(tmp_path, t).name for t in changed}
    assert len(names) == len(changed) and same.name not in names


@pytest.mark.parametrize("quick", [False, True])
def test_demo_recipes_share_the_actor_pretraining(quick: bool) -> None:
    """`demo --recipe all` trains the weak-to-strong strong model once: the critique actor has
    identical settings (LLM2's base is a different model and is not shared)."""
    q = "_quick" if quick else ""
    w2s = load_run_config(REPO / "configs" / f"demo{q}.yaml", ())
    crit = load_run_config(REPO / "configs" / f"critique_demo{q}.yaml", ())
    llm2 = load_run_config(REPO / "configs" / f"llm2_demo{q}.yaml", ())
    entry = tiny_cache_entry(Path("c"), w2s.tiny.strong)
    assert tiny_cache_entry(Path("c"), crit.tiny) == entry
    assert tiny_cache_entry(Path("c"), llm2.tiny) != entry


def _model(path: Path, seed: int) -> Path:
    build_tiny_model(path, hidden=64, layers=1, heads=1, vocab_size=300, seed=seed)
    (path / MODEL_MARKER).write_text(json.dumps({"name": "m", "metrics": {"loss": 0.5}}))
    return path


def test_publish_is_atomic_and_keeps_the_first_copy(tmp_path: Path) -> None:
    entry = tmp_path / "cache" / "tiny-abc"
    first, second = _model(tmp_path / "a", 0), _model(tmp_path / "b", 1)
    publish_model(first, entry)
    publish_model(second, entry)
    assert (entry / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    assert (first / "model.safetensors").read_bytes() != (second / "model.safetensors").read_bytes()
    assert [p.name for p in entry.parent.iterdir()] == ["tiny-abc"]     # no temp copy left


def test_a_cached_model_is_copied_into_the_run_without_training(tmp_path: Path) -> None:
    tiny = TinyModel(hidden=64, heads=1, layers=1, pretrain_problems=50)
    cache = tmp_path / "cache"
    cached = _model(tiny_cache_entry(cache, tiny), 3)
    rd = RunDir(tmp_path / "run", {"recipe": "test"})
    # no Ray and no role groups: a cache miss would have to train and would fail here
    ctx = steps.StepContext(rd, EngineConfig(), ClusterConfig(), tiny_cache=cache)
    spec = tiny_model(ctx, "actor", tiny, 512)
    out = Path(spec.path)
    assert out == rd.path / "models" / "actor_pretrained" and not out.is_symlink()
    assert (out / "model.safetensors").read_bytes() == (cached / "model.safetensors").read_bytes()
    metrics = json.loads((out / MODEL_MARKER).read_text())["metrics"]
    assert metrics == {"loss": 0.5, "from_cache": str(cached)}
    assert not (rd.path / "models" / "actor_init").exists()
    rd.finish()


def test_a_run_holding_its_model_reuses_it_and_publishes_it(tmp_path: Path) -> None:
    """A resumed run whose pre-trained model is complete (trained before the cache had it)
    neither trains nor rebuilds the init model, and fills the cache for later runs."""
    tiny = TinyModel(hidden=64, heads=1, layers=1, pretrain_problems=50)
    rd = RunDir(tmp_path / "run", {"recipe": "test"})
    own = _model(rd.model_dir("actor_pretrained"), 4)
    cache = tmp_path / "cache"
    ctx = steps.StepContext(rd, EngineConfig(), ClusterConfig(), tiny_cache=cache)
    assert Path(tiny_model(ctx, "actor", tiny, 512).path) == own
    entry = tiny_cache_entry(cache, tiny)
    assert (entry / "model.safetensors").read_bytes() == (own / "model.safetensors").read_bytes()
    lora = replace(tiny, pretrain=replace(tiny.pretrain, lora=replace(tiny.pretrain.lora, enabled=True)))
    assert tiny_cache_entry(cache, lora) != entry
    rd.finish()
