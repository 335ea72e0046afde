"""CUDA-only VLLMEngine behaviour: tensor parallelism, LoRA, sleep/wake (run with ``-m gpu``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysys.config import EngineConfig, ModelSpec
from raysys.engines.base import SamplingParams
from raysys.engines.hf import HFEngine

pytestmark = [pytest.mark.gpu, pytest.mark.vllm]

GREEDY = SamplingParams(max_new_tokens=24, ignore_eos=True)


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ids(out) -> list[list[int]]:
    return [comps[0].token_ids for comps in out]


@pytest.fixture
def fp32_spec(varied_model_dir: Path) -> ModelSpec:
    return ModelSpec(path=str(varied_model_dir), dtype="float32", max_model_len=512)


@pytest.mark.skipif(_cuda_devices() < 2, reason="needs 2 CUDA GPUs")
def test_tensor_parallel_2_equals_hf(fp32_spec: ModelSpec, prompts: list[str]) -> None:
    from raysys.engines.vllm_engine import VLLMEngine

    eng = VLLMEngine(fp32_spec, EngineConfig(kind="vllm", tensor_parallel_size=2,
                                             gpu_memory_utilization=0.3))
    try:
        assert ids(eng.generate(prompts, GREEDY)) == ids(
            HFEngine(fp32_spec, device="cuda").generate(prompts, GREEDY))
    finally:
        eng.close()


@pytest.mark.skipif(_cuda_devices() < 1, reason="needs a CUDA GPU")
def test_lora_sleep_wake_and_reload_on_cuda(fp32_spec: ModelSpec, lora_dir: Path,
                                            other_model_dir: Path, prompts: list[str]) -> None:
    from raysys.engines.vllm_engine import VLLMEngine

    eng = VLLMEngine(fp32_spec, EngineConfig(kind="vllm", gpu_memory_utilization=0.3, max_lora_rank=8),
                     enable_lora=True, enable_sleep_mode=True)
    try:
        base = ids(eng.generate(prompts, GREEDY))
        assert base == ids(HFEngine(fp32_spec, device="cuda").generate(prompts, GREEDY))
        eng.load_weights(fp32_spec.path, adapter=str(lora_dir))
        lora_spec = ModelSpec(path=fp32_spec.path, adapter=str(lora_dir), dtype="float32")
        assert ids(eng.generate(prompts, GREEDY)) == ids(
            HFEngine(lora_spec, device="cuda").generate(prompts, GREEDY))
        eng.load_weights(fp32_spec.path)
        assert eng.supports_sleep
        eng.sleep(level=1)
        eng.wake_up()
        assert ids(eng.generate(prompts, GREEDY)) == base
        eng.load_weights(str(other_model_dir))
        assert eng.reloads["in_place"] == 1
        assert ids(eng.generate(prompts, GREEDY)) == ids(
            HFEngine(str(other_model_dir), device="cuda", dtype="float32").generate(prompts, GREEDY))
    finally:
        eng.close()


@pytest.mark.skipif(_cuda_devices() < 1, reason="needs a CUDA GPU")
def test_hf_engine_bf16_on_cuda(varied_model_dir: Path, prompts: list[str]) -> None:
    import torch

    eng = HFEngine(str(varied_model_dir))
    assert eng.device == "cuda" and next(eng.model.parameters()).dtype == torch.bfloat16
    out = eng.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=1))
    assert [len(c) for c in out] == [2] * len(prompts)
