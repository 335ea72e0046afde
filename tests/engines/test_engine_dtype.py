"""One ModelSpec dtype means the same numerics in HFEngine and VLLMEngine (no vLLM needed)."""

from __future__ import annotations

from raysys.engines.hf import resolve_dtype
from raysys.engines.vllm_engine import engine_dtype


def test_auto_is_resolved_as_hf_resolves_it() -> None:
    # vLLM's own "auto" turns an fp32 checkpoint into bf16 even on CPU, where HFEngine runs
    # fp32: SmolLM2-135M's greedy answers then part after a few tokens (measured: 0 of 8
    # GSM8K answers equal at 128 tokens in bf16, 8 of 8 in fp32).
    assert engine_dtype("auto", on_cpu=True) == "float32" == resolve_dtype("auto", "cpu")
    assert engine_dtype("auto", on_cpu=False) == "bfloat16" == resolve_dtype("auto", "cuda")


def test_an_explicit_dtype_is_kept() -> None:
    for dtype in ("float32", "bfloat16", "float16"):
        assert engine_dtype(dtype, on_cpu=True) == dtype
        assert engine_dtype(dtype, on_cpu=False) == dtype
