"""make_engine: which engine each ``engine.kind`` gets, and a clear error for unknown kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysys.config import ConfigError, EngineConfig, ModelSpec, from_dict
from raysys.engines import make_engine, pick_kind
from raysys.engines.base import SamplingParams


@pytest.mark.parametrize("kind, has_vllm, has_cuda, expected", [
    ("auto", True, True, "vllm"),
    ("auto", True, False, "hf"),      # CPU: vLLM's ~1 min start-up loses to HF on small jobs
    ("auto", False, True, "hf"),
    ("auto", False, False, "hf"),
    ("vllm", False, False, "vllm"),   # forced (make_engine then checks it is installed)
    ("hf", True, True, "hf"),
])
def test_pick_kind(kind: str, has_vllm: bool, has_cuda: bool, expected: str) -> None:
    assert pick_kind(kind, has_vllm=has_vllm, has_cuda=has_cuda) == expected


def test_unknown_kind_is_config_error() -> None:
    with pytest.raises(ConfigError, match="engine.kind: expected one of auto, vllm, hf, guided, got 'tgi'"):
        make_engine("unused", EngineConfig(kind="tgi"))  # type: ignore[arg-type]
    # Through the config loader the same mistake is caught before any work starts.
    with pytest.raises(ConfigError, match="engine.kind"):
        from_dict(EngineConfig, {"kind": "tgi"}, "engine")


def test_auto_on_this_machine_and_forced_hf(varied_model_dir: Path) -> None:
    import torch

    from raysys.engines.hf import HFEngine

    spec = ModelSpec(path=str(varied_model_dir))
    forced = make_engine(spec, EngineConfig(kind="hf", batch_size=3))
    assert isinstance(forced, HFEngine) and forced.batch_size == 3
    out = forced.generate(["Question: 1+1?\nAnswer:"], SamplingParams(n=2, max_new_tokens=3))
    assert len(out) == 1 and len(out[0]) == 2
    if not torch.cuda.is_available():
        assert isinstance(make_engine(spec), HFEngine)
