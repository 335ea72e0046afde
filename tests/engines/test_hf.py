"""HFEngine on a real tiny model: batching, n samples, seeds, stop strings, EOS, logprobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raysys.config import ModelSpec
from raysys.engines.base import Engine, SamplingParams
from raysys.engines.hf import HFEngine, chunks, cut_at_eos, first_stop, length_order, resolve_dtype

GREEDY = SamplingParams(max_new_tokens=16, ignore_eos=True, logprobs=True)


@pytest.fixture(scope="module")
def engine(varied_model_dir: Path) -> HFEngine:
    return HFEngine(str(varied_model_dir), batch_size=8)


@pytest.fixture(scope="module")
def greedy_out(engine: HFEngine, prompts: list[str]):
    return engine.generate(prompts, GREEDY)


# -- pure helpers ---------------------------------------------------------------------------


def test_length_order_longest_first_and_stable() -> None:
    assert length_order([3, 7, 3, 9, 7]) == [3, 1, 4, 0, 2]


def test_chunks() -> None:
    assert chunks([5, 1, 4, 2, 3], 2) == [[5, 1], [4, 2], [3]]


def test_first_stop_is_earliest_of_all() -> None:
    assert first_stop("ab\n\nQuestion: x", ("Question:", "\n\nQuestion")) == 2
    assert first_stop("abc", ("x", "")) is None


def test_cut_at_eos_keeps_eos_token() -> None:
    assert cut_at_eos([5, 6, 2, 7, 2], {2}) == ([5, 6, 2], True)
    assert cut_at_eos([5, 6], {2}) == ([5, 6], False)


def test_dtype_auto_is_fp32_on_cpu_bf16_on_cuda() -> None:
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda:0") == "bfloat16"
    assert resolve_dtype("float16", "cpu") == "float16"


# -- generation -----------------------------------------------------------------------------


def test_implements_engine_protocol(engine: HFEngine, varied_model_dir: Path) -> None:
    assert isinstance(engine, Engine)
    assert engine.model_path == str(varied_model_dir)
    assert next(engine.model.parameters()).dtype == torch.float32


def test_greedy_shape_length_and_order(engine: HFEngine, prompts: list[str], greedy_out) -> None:
    assert [len(c) for c in greedy_out] == [1] * len(prompts)
    for comps in greedy_out:
        assert len(comps[0].token_ids) == 16 and comps[0].finish_reason == "length"
    # Order restored after length sorting: each prompt alone gives its own row.
    for i in (0, 2, 5):
        alone = engine.generate([prompts[i]], GREEDY)[0][0]
        assert alone.token_ids == greedy_out[i][0].token_ids


def test_batching_invariance(varied_model_dir: Path, prompts: list[str], greedy_out) -> None:
    one_by_one = HFEngine(str(varied_model_dir), batch_size=1).generate(prompts, GREEDY)
    assert [c[0].token_ids for c in one_by_one] == [c[0].token_ids for c in greedy_out]
    # Outputs really depend on the prompt (else this test would prove nothing).
    assert len({tuple(c[0].token_ids) for c in greedy_out}) >= 6


def test_logprobs_match_a_full_forward_pass(engine: HFEngine, prompts: list[str], greedy_out) -> None:
    comp = greedy_out[0][0]
    ids = engine.tokenizer(prompts[0])["input_ids"]
    full = torch.tensor([ids + comp.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(engine.model(full).logits[0].float(), dim=-1)
    expected = [logp[len(ids) - 1 + k, t].item() for k, t in enumerate(comp.token_ids)]
    assert comp.token_logprobs == pytest.approx(expected, abs=1e-4)
    assert comp.cumulative_logprob == pytest.approx(sum(expected), abs=1e-3)
    # Greedy picks the argmax, so each chosen token is the most likely one.
    assert all(logp[len(ids) - 1 + k].argmax().item() == t for k, t in enumerate(comp.token_ids))


def test_no_logprobs_unless_asked(engine: HFEngine, prompts: list[str]) -> None:
    c = engine.generate(prompts[:1], SamplingParams(max_new_tokens=4))[0][0]
    assert c.cumulative_logprob is None and c.token_logprobs is None


def test_n_samples_distinct_when_sampling_identical_when_greedy(engine: HFEngine,
                                                                 prompts: list[str]) -> None:
    sampled = engine.generate(prompts[:2], SamplingParams(n=4, temperature=1.0, max_new_tokens=12,
                                                          ignore_eos=True, seed=7))
    for comps in sampled:
        assert len(comps) == 4 and len({tuple(c.token_ids) for c in comps}) == 4
    greedy = engine.generate(prompts[:2], SamplingParams(n=3, max_new_tokens=12, ignore_eos=True))
    for comps in greedy:
        assert len(comps) == 3 and len({tuple(c.token_ids) for c in comps}) == 1


def test_seed_reproducible_and_global_rng_untouched(engine: HFEngine, prompts: list[str]) -> None:
    p = SamplingParams(n=2, temperature=0.9, top_p=0.95, max_new_tokens=10, seed=11, ignore_eos=True)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = engine.generate(prompts[:3], p)
    assert torch.rand(1) == before            # the engine used a private RNG stream
    b = engine.generate(prompts[:3], p)
    c = engine.generate(prompts[:3], SamplingParams(**{**p.__dict__, "seed": 12}))
    ids = lambda out: [[x.token_ids for x in comps] for comps in out]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_greedy_ignores_seed(engine: HFEngine, prompts: list[str], greedy_out) -> None:
    out = engine.generate(prompts[:2], SamplingParams(max_new_tokens=16, ignore_eos=True, seed=99))
    assert [c[0].token_ids for c in out] == [c[0].token_ids for c in greedy_out[:2]]


def test_top_k_1_sampling_is_greedy(engine: HFEngine, prompts: list[str], greedy_out) -> None:
    out = engine.generate(prompts, SamplingParams(temperature=1.5, top_k=1, max_new_tokens=16,
                                                  ignore_eos=True, seed=3))
    assert [c[0].token_ids for c in out] == [c[0].token_ids for c in greedy_out]


def test_stop_string_cuts_text_and_tokens(engine: HFEngine, prompts: list[str], greedy_out) -> None:
    full = greedy_out[0][0]
    full_text = engine.tokenizer.decode(full.token_ids, skip_special_tokens=True)
    # A stop string the model really produces, from the middle of its output.
    head = engine.tokenizer.decode(full.token_ids[:6], skip_special_tokens=True)
    stop = engine.tokenizer.decode(full.token_ids[6:8], skip_special_tokens=True)
    assert stop and stop not in head
    out = engine.generate(prompts[:1], SamplingParams(max_new_tokens=16, stop=(stop, "@@never@@"),
                                                      ignore_eos=True, logprobs=True))[0][0]
    assert out.finish_reason == "stop"
    assert out.text == full_text[:full_text.index(stop)]
    assert stop not in out.text
    # Tokens run through the one that completed the stop string, and no further.
    assert out.token_ids == full.token_ids[:len(out.token_ids)]
    assert stop in engine.tokenizer.decode(out.token_ids)
    assert stop not in engine.tokenizer.decode(out.token_ids[:-1])
    assert len(out.token_logprobs) == len(out.token_ids)


def test_stop_string_in_prompt_does_not_stop(engine: HFEngine, prompts: list[str]) -> None:
    out = engine.generate(prompts[:1], SamplingParams(max_new_tokens=8, stop=("Question:",),
                                                      ignore_eos=True))[0][0]
    assert out.finish_reason == "length" and len(out.token_ids) == 8


def test_eos_ends_a_row(varied_model_dir: Path, prompts: list[str], greedy_out) -> None:
    # Declare the 4th greedy token of prompt 0 an EOS token: generation must stop there.
    eng = HFEngine(str(varied_model_dir), batch_size=8)
    full = greedy_out[0][0].token_ids
    eos = full[3]
    eng.eos_ids = {eos}
    out = eng.generate(prompts, SamplingParams(max_new_tokens=16))
    first = out[0][0]
    assert first.finish_reason == "stop"
    assert first.token_ids == full[:full.index(eos) + 1]
    assert first.text == eng.tokenizer.decode(full[:full.index(eos)], skip_special_tokens=True)
    # With ignore_eos the same engine runs to max_new_tokens.
    again = eng.generate(prompts[:1], SamplingParams(max_new_tokens=16, ignore_eos=True))[0][0]
    assert again.token_ids == full and again.finish_reason == "length"


def test_load_weights_swaps_model(varied_model_dir: Path, other_model_dir: Path,
                                  prompts: list[str], greedy_out) -> None:
    eng = HFEngine(ModelSpec(path=str(varied_model_dir)), batch_size=8)
    eng.load_weights(str(other_model_dir))
    swapped = eng.generate(prompts, GREEDY)
    fresh = HFEngine(str(other_model_dir), batch_size=8).generate(prompts, GREEDY)
    assert [c[0].token_ids for c in swapped] == [c[0].token_ids for c in fresh]
    assert [c[0].token_ids for c in swapped] != [c[0].token_ids for c in greedy_out]
    assert eng.model_path == str(other_model_dir)


def test_adapter_changes_output(varied_model_dir: Path, lora_dir: Path, prompts: list[str],
                                greedy_out) -> None:
    eng = HFEngine(ModelSpec(path=str(varied_model_dir), adapter=str(lora_dir)), batch_size=8)
    out = eng.generate(prompts, GREEDY)
    assert [c[0].token_ids for c in out] != [c[0].token_ids for c in greedy_out]
    eng.load_weights(str(varied_model_dir))          # adapter dropped: back to the base outputs
    assert eng.generate(prompts[:2], GREEDY)[0][0].token_ids == greedy_out[0][0].token_ids


def test_closed_engine_refuses(varied_model_dir: Path) -> None:
    eng = HFEngine(str(varied_model_dir))
    eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.generate(["x"], SamplingParams(max_new_tokens=2))


def test_missing_model_dir_is_model_error(tmp_path: Path) -> None:
    from raysys.errors import ModelError

    with pytest.raises(ModelError, match="not found"):
        HFEngine(str(tmp_path / "nope"))
