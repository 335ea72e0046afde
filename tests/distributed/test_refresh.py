"""Live weight refresh: a running SamplerPool given new weights answers exactly like a fresh pool
started on them (greedy, token for token), for a full model dir and for a LoRA adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from raysys.config import ClusterConfig, EngineConfig, ModelSpec
from raysys.distributed.actors import SamplerPool
from raysys.engines.base import SamplingParams
from raysys.prompts import build_prompt

pytestmark = pytest.mark.slow

PARAMS = SamplingParams(max_new_tokens=12, ignore_eos=True)
CLUSTER = ClusterConfig(cpus_per_replica=1)
ENGINE = EngineConfig(kind="hf", batch_size=4)


def _lora_adapter(base: Path, out: Path) -> Path:
    """A PEFT LoRA adapter on ``base`` with non-zero B (PEFT's default B = 0 is a no-op),
    saved with the tokenizer as a training stage leaves it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from raysys.models.loading import load_model, load_tokenizer

    torch.manual_seed(0)
    model = get_peft_model(load_model(str(base)), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(str(base)).save_pretrained(str(out))
    return out


def _ids(pool: SamplerPool, prompts: list[str]) -> list[list[int]]:
    return [list(c[0].token_ids) for c in pool.generate(prompts, PARAMS)]


def test_refreshed_pool_equals_a_fresh_pool(ray_cluster: dict[str, str], varied_model_factory: Any,
                                            problems: pa.Table, tmp_path: Path) -> None:
    prompts = [build_prompt(q, "zero_shot") for q in problems.column("question").to_pylist()]
    a, b = varied_model_factory(0), varied_model_factory(1)
    adapter = _lora_adapter(a, tmp_path / "lora")
    with SamplerPool(1, ModelSpec(path=str(a)), ENGINE, CLUSTER) as pool:
        pid = pool.ping()[0]["pid"]
        out_a = _ids(pool, prompts)
        for path, lora in ((str(b), None), (str(a), str(adapter))):
            pool.load_weights(path, lora)
            refreshed = _ids(pool, prompts)
            with SamplerPool(1, ModelSpec(path=path, adapter=lora), ENGINE, CLUSTER) as fresh:
                assert refreshed == _ids(fresh, prompts)
            assert refreshed != out_a                   # the new weights really took effect
            served = pool.ping()[0]
            assert (served["pid"], served["model_path"], served["adapter"]) == (pid, path, lora)
        pool.load_weights(str(a))                       # and back: A's outputs again
        assert _ids(pool, prompts) == out_a
