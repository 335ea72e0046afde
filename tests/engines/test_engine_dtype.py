"""One ModelSpec means the same model input and numerics in HFEngine and VLLMEngine (no vLLM needed)."""

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


def test_vllm_prompts_carry_one_bos_as_hf_encodes_them(tiny_model_dir) -> None:
    # vLLM given text adds BOS itself: a rendered chat prompt that starts with BOS would get two
    from transformers import AutoTokenizer

    from raysys.engines.vllm_engine import prompt_inputs

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos = tok.bos_token_id
    plain, chat = "Question: 2+3?\nAnswer:", f"{tok.bos_token}Question: 2+3?\nAnswer:"
    assert tok(chat)["input_ids"][:2] == [bos, bos]          # what text into vLLM would read
    got = prompt_inputs(tok, [plain, chat])
    assert got[0]["prompt_token_ids"] == tok(plain)["input_ids"]
    assert got[1]["prompt_token_ids"] == got[0]["prompt_token_ids"]
    assert got[1]["prompt_token_ids"][:2] != [bos, bos]
