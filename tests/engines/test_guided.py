"""GuidedEngine (LLM2 verifier-guided decoding) on real tiny models, fp32 on CPU."""

from __future__ import annotations

import math
from dataclasses import replace
import shutil
from pathlib import Path

import pytest
import torch

from raysys.config import ConfigError, EngineConfig, ModelSpec, from_dict
from raysys.engines import make_engine
from raysys.engines.base import Engine, SamplingParams
from raysys.engines.guided import GuidedEngine
from raysys.engines.guided_scoring import VerifierCache, candidate_mask, pack_candidates
from raysys.engines.hf import HFEngine
from raysys.errors import ModelError
from raysys.models.loading import load_tokenizer
from raysys.models.verifier import HEAD_FILE, TokenVerifier

GREEDY = SamplingParams(max_new_tokens=12, ignore_eos=True, logprobs=True)


def _save_verifier(model_dir: Path, out: Path, head: torch.Tensor | None = None,
                   identity: bool = False) -> Path:
    """A verifier dir (with the LLM's tokenizer) from ``model_dir``.

    ``identity`` zeroes every attention/MLP output so the final hidden state is
    RMSNorm(embedding of the token itself): a head along one token's embedding then scores
    that token highest whatever the context.
    """
    verifier = TokenVerifier.from_pretrained(model_dir)
    with torch.no_grad():
        if identity:
            for name, p in verifier.backbone.named_parameters():
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    p.zero_()
        if head is None:
            head = torch.randn(verifier.head.weight.shape, generator=torch.Generator().manual_seed(7))
        verifier.head.weight.copy_(head.reshape(verifier.head.weight.shape))
    verifier.save_pretrained(out)
    load_tokenizer(str(model_dir)).save_pretrained(out)
    return out


def _prefers(model_dir: Path, out: Path, token: int) -> Path:
    """A verifier that scores ``token`` far above every other token, in any context."""
    from safetensors.torch import load_file

    emb = load_file(str(next(model_dir.glob("*.safetensors"))))["model.embed_tokens.weight"]
    return _save_verifier(model_dir, out, head=emb[token] / emb[token].norm() * 10, identity=True)


@pytest.fixture(scope="module")
def verifier_dir(varied_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_verifier(varied_model_dir, tmp_path_factory.mktemp("verifier") / "v")


@pytest.fixture(scope="module")
def hf_greedy(varied_model_dir: Path, prompts: list[str]):
    return HFEngine(str(varied_model_dir), batch_size=8).generate(prompts, GREEDY)


@pytest.fixture(scope="module")
def guided8(varied_model_dir: Path, verifier_dir: Path) -> GuidedEngine:
    return GuidedEngine(str(varied_model_dir), str(verifier_dir), beta=2.0, batch_size=8)


# -- pure pieces ----------------------------------------------------------------------------


def test_candidate_mask_alpha_and_top_k() -> None:
    logprobs = torch.tensor([[0.5, 0.3, 0.04, 0.16]]).log()
    # p >= 0.1 * 0.5 = 0.05 keeps 0.5, 0.3, 0.16; top-2 of those keeps 0.5, 0.3.
    assert candidate_mask(logprobs, 0.1).tolist() == [[True, True, False, True]]
    assert candidate_mask(logprobs, 0.1, top_k=2).tolist() == [[True, True, False, False]]
    assert candidate_mask(logprobs, 1.0).tolist() == [[True, False, False, False]]
    ids, valid, counts = pack_candidates(logprobs.repeat(2, 1),
                                         torch.tensor([[True, True, False, True], [False] * 3 + [True]]))
    assert ids.tolist() == [[0, 1, 3], [3, 3, 3]] and counts.tolist() == [3, 1]
    assert valid.tolist() == [[True, True, True], [True, False, False]]


@pytest.mark.parametrize("prefill", [False, True])
def test_kv_cached_scores_equal_a_full_forward(verifier_dir: Path, prefill: bool) -> None:
    """Three left-padded rows over three calls (with tokens fed between calls and a chosen
    candidate kept), the prompts cached by the first call or by a 2D-mask prefill: every
    candidate score equals a from-scratch forward of prefix + token."""
    verifier = TokenVerifier.from_pretrained(verifier_dir).eval()
    with torch.no_grad():    # unit-norm head: scores O(1), so atol 1e-5 is a strict fp32 check
        verifier.head.weight.div_(verifier.head.weight.norm())
    rows = [[1, 40, 41, 42, 43], [1, 50], [1, 60, 61]]
    gen = torch.Generator().manual_seed(0)
    width = max(len(r) for r in rows)
    seq = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    real = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    cache = VerifierCache(verifier)
    with torch.inference_mode():
        if prefill:
            cache.prefill(seq, real)
        for step, extra in enumerate([0, 2, 1]):
            for _ in range(extra):           # tokens chosen on steps the verifier skipped
                seq = torch.cat([seq, torch.randint(70, 200, (3, 1), generator=gen)], dim=1)
                real = torch.cat([real, torch.ones(3, 1, dtype=real.dtype)], dim=1)
            cand = torch.randint(70, 400, (3, 4), generator=gen)
            valid = torch.tensor([[True] * 4, [True, True, False, False], [True] + [False] * 3])
            base = seq.shape[1]
            scores = cache.score(seq, real, cand, valid)
            for b in range(3):
                prefix = seq[b][real[b].bool()].tolist()
                for k in range(int(valid[b].sum())):
                    full = verifier(torch.tensor([prefix + [int(cand[b, k])]]))[0, -1]
                    assert abs(float(scores[b, k]) - float(full)) < 1e-5, (step, b, k)
            slot = torch.tensor([3, 1, 0])
            cache.keep(base, slot)
            assert cache.length == base + 1
            seq = torch.cat([seq, cand.gather(1, slot[:, None])], dim=1)
            real = torch.cat([real, torch.ones(3, 1, dtype=real.dtype)], dim=1)
        # The kept slots hold exactly the keys/values a plain causal pass computes.
        fresh = VerifierCache(verifier)
        fresh.score(seq, real, cand[:, :1], torch.ones(3, 1, dtype=torch.bool))
        for mine, theirs in zip(cache.cache.layers, fresh.cache.layers):
            keep = real.bool()[:, None, :, None]
            diff = ((mine.keys - theirs.keys[:, :, :seq.shape[1]]) * keep).abs().max()
            assert float(diff) < 1e-5


# -- decoding -------------------------------------------------------------------------------


def test_beta_zero_is_plain_greedy(varied_model_dir: Path, verifier_dir: Path,
                                   prompts: list[str], hf_greedy) -> None:
    # beta 0 skips the verifier (it could only add zeros); a negligible beta runs the whole
    # scoring path (prefill, candidate scoring, cache keep/select), which must not disturb
    # the LLM's own decoding either.
    for beta, calls in ((0.0, 0), (1e-9, GREEDY.max_new_tokens)):
        engine = GuidedEngine(str(varied_model_dir), str(verifier_dir), beta=beta, batch_size=8)
        out = engine.generate(prompts, GREEDY)
        assert [c[0].token_ids for c in out] == [c[0].token_ids for c in hf_greedy]
        assert [c[0].text for c in out] == [c[0].text for c in hf_greedy]
        for mine, theirs in zip(out, hf_greedy):
            assert mine[0].token_logprobs == pytest.approx(theirs[0].token_logprobs, abs=1e-5)
        assert engine.stats.verifier_calls == calls
    # The verifier really ran at beta 1e-9: many candidates per call.
    assert engine.stats.candidates_per_call > 2 * len(prompts)


def test_guided_changes_output_and_batch_8_equals_batch_1(varied_model_dir: Path, verifier_dir: Path,
                                                          prompts: list[str], guided8, hf_greedy) -> None:
    batched = guided8.generate(prompts, GREEDY)
    alone = GuidedEngine(str(varied_model_dir), str(verifier_dir), beta=2.0,
                         batch_size=1).generate(prompts, GREEDY)
    assert [c[0].token_ids for c in alone] == [c[0].token_ids for c in batched]
    changed = sum(a[0].token_ids != b[0].token_ids for a, b in zip(batched, hf_greedy))
    assert changed >= 4       # beta 2 with a random head must change most rows


def test_verifier_preference_picks_its_token_among_candidates(varied_model_dir: Path,
                                                              prompts: list[str], hf_greedy,
                                                              tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(varied_model_dir).eval()
    tok = load_tokenizer(str(varied_model_dir))
    with torch.no_grad():
        logprobs = torch.log_softmax(lm(torch.tensor([tok(prompts[0])["input_ids"]])).logits[0, -1], -1)
    plausible = candidate_mask(logprobs[None], 0.1)[0]
    ranked = logprobs.argsort(descending=True).tolist()
    second, implausible = ranked[1], ranked[-1]
    assert bool(plausible[second]) and not bool(plausible[implausible])
    one = SamplingParams(max_new_tokens=1, ignore_eos=True)
    picked = GuidedEngine(str(varied_model_dir), str(_prefers(varied_model_dir, tmp_path / "a", second)),
                          beta=100.0).generate(prompts[:1], one)[0][0]
    assert picked.token_ids == [second] != hf_greedy[0][0].token_ids[:1]
    # A token outside the candidate set is never chosen, however much the verifier likes it.
    refused = GuidedEngine(str(varied_model_dir),
                           str(_prefers(varied_model_dir, tmp_path / "b", implausible)),
                           beta=100.0).generate(prompts[:1], one)[0][0]
    assert refused.token_ids[0] != implausible and bool(plausible[refused.token_ids[0]])


def test_stop_strings_and_eos_match_hf(varied_model_dir: Path, verifier_dir: Path,
                                       prompts: list[str], hf_greedy) -> None:
    plain = HFEngine(str(varied_model_dir), batch_size=8)
    guided = GuidedEngine(str(varied_model_dir), str(verifier_dir), beta=0.0, batch_size=8)
    # Stop string: a piece from the middle of prompt 0's greedy text.
    text = hf_greedy[0][0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    params = SamplingParams(max_new_tokens=12, stop=(stop,))
    want, got = plain.generate(prompts, params), guided.generate(prompts, params)
    assert [(c[0].text, c[0].token_ids, c[0].finish_reason) for c in got] == \
        [(c[0].text, c[0].token_ids, c[0].finish_reason) for c in want]
    assert got[0][0].finish_reason == "stop" and stop not in got[0][0].text
    # EOS: declare prompt 0's 5th greedy token the EOS; rows end there and leave the batch.
    eos = hf_greedy[0][0].token_ids[4]
    plain.eos_ids = guided.eos_ids = {eos}
    params = SamplingParams(max_new_tokens=12)
    want, got = plain.generate(prompts, params), guided.generate(prompts, params)
    assert [(c[0].token_ids, c[0].finish_reason) for c in got] == \
        [(c[0].token_ids, c[0].finish_reason) for c in want]
    assert got[0][0].token_ids[-1] == eos and got[0][0].finish_reason == "stop"
    assert len(got[0][0].token_ids) <= 5


def test_top_k_candidates_caps_the_verifier_work(varied_model_dir: Path, verifier_dir: Path,
                                                 prompts: list[str]) -> None:
    capped = GuidedEngine(str(varied_model_dir), str(verifier_dir), beta=2.0, top_k=2)
    capped.generate(prompts, GREEDY)
    # The varied model's rows nearly always have > 2 plausible tokens: exactly 2 are scored.
    assert capped.stats.rows_scored > len(prompts) * GREEDY.max_new_tokens // 2
    assert capped.stats.candidates_scored == 2 * capped.stats.rows_scored
    assert capped.reset_stats().verifier_calls == GREEDY.max_new_tokens
    assert capped.stats.verifier_calls == 0


def test_sampling_n_seeded(guided8: GuidedEngine, prompts: list[str]) -> None:
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, ignore_eos=True, seed=5)
    first, again = guided8.generate(prompts[:3], params), guided8.generate(prompts[:3], params)
    assert [[c.token_ids for c in cs] for cs in first] == [[c.token_ids for c in cs] for cs in again]
    assert all(len(cs) == 3 for cs in first)
    assert len({tuple(c.token_ids) for cs in first for c in cs}) >= 6
    other = guided8.generate(prompts[:3], SamplingParams(n=3, temperature=1.0, max_new_tokens=8,
                                                         ignore_eos=True, seed=6))
    assert [[c.token_ids for c in cs] for cs in other] != [[c.token_ids for c in cs] for cs in first]


def test_rerank_scores_are_mean_token_scores(guided8: GuidedEngine, verifier_dir: Path,
                                             prompts: list[str]) -> None:
    comps = guided8.generate(prompts[:2], SamplingParams(n=2, temperature=1.0, max_new_tokens=6,
                                                         ignore_eos=True))
    scores = guided8.rerank_scores(prompts[:2], comps)
    verifier = TokenVerifier.from_pretrained(verifier_dir).eval()
    for i, p in enumerate(prompts[:2]):
        ids = guided8.tokenizer(p)["input_ids"]
        for j, c in enumerate(comps[i]):
            with torch.no_grad():
                full = verifier(torch.tensor([ids + c.token_ids]))[0, len(ids):]
            assert scores[i][j] == pytest.approx(float(full.mean()), abs=1e-5)


def test_protocol_swap_verifier_and_close(varied_model_dir: Path, verifier_dir: Path,
                                          prompts: list[str], tmp_path: Path) -> None:
    engine = make_engine(ModelSpec(path=str(varied_model_dir)),
                         EngineConfig(kind="guided", verifier=str(verifier_dir), beta=2.0))
    assert isinstance(engine, GuidedEngine) and isinstance(engine, Engine)
    assert engine.model_path == str(varied_model_dir) and engine.beta == 2.0
    before = engine.generate(prompts[:4], GREEDY)
    engine.load_verifier(str(_save_verifier(varied_model_dir, tmp_path / "v2",
                                            head=torch.randn(128, generator=torch.Generator().manual_seed(9)))))
    after = engine.generate(prompts[:4], GREEDY)
    assert [c[0].token_ids for c in after] != [c[0].token_ids for c in before]
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate(prompts[:1], GREEDY)


# -- bad input ------------------------------------------------------------------------------


def test_verifier_dir_without_head(varied_model_dir: Path, verifier_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=rf"{varied_model_dir}: missing verifier_head"):
        GuidedEngine(str(varied_model_dir), str(varied_model_dir))
    headless = shutil.copytree(verifier_dir, tmp_path / "headless")
    (headless / HEAD_FILE).unlink()
    with pytest.raises(ModelError, match=rf"{headless}: missing {HEAD_FILE}"):
        GuidedEngine(str(varied_model_dir), str(headless))
    with pytest.raises(ModelError, match="verifier directory not found"):
        GuidedEngine(str(varied_model_dir), str(tmp_path / "nope"))


def test_verifier_with_another_tokenizer(varied_model_dir: Path, tmp_path: Path) -> None:
    from raysys.models.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", corpus=["one two three four five"] * 20,
                             vocab_size=300, hidden=64, heads=1, layers=1)
    bad = _save_verifier(other, tmp_path / "bad_verifier", head=torch.ones(64))
    with pytest.raises(ModelError, match=rf"verifier {bad}: its tokenizer differs"):
        GuidedEngine(str(varied_model_dir), str(bad))


def test_set_beta_decodes_as_an_engine_built_with_that_beta(
        varied_model_dir: Path, verifier_dir: Path, prompts: list[str], guided8, hf_greedy) -> None:
    retuned = GuidedEngine(str(varied_model_dir), str(verifier_dir), beta=0.0, batch_size=8)
    assert [c[0].token_ids for c in retuned.generate(prompts, GREEDY)] == \
        [c[0].token_ids for c in hf_greedy]
    retuned.set_beta(2.0)             # guided8 was built with beta 2.0
    assert [c[0].token_ids for c in retuned.generate(prompts, GREEDY)] == \
        [c[0].token_ids for c in guided8.generate(prompts, GREEDY)]
    with pytest.raises(ModelError, match="beta: expected a finite number >= 0"):
        retuned.set_beta(-1.0)
    assert retuned.beta == 2.0        # a refused value changes nothing


def test_sampler_actor_retunes_guided_beta_only() -> None:
    from raysys.distributed.actors import SamplerActor

    guided = EngineConfig(kind="guided", verifier="v", beta=1.0)
    assert SamplerActor.retunable((guided,), (replace(guided, beta=0.25),)) == {"beta": 0.25}
    assert SamplerActor.retunable((guided,), (replace(guided, beta=0.25, alpha=0.2),)) is None
    assert SamplerActor.retunable((guided,), (replace(guided, verifier="w"),)) is None
    hf = EngineConfig(kind="hf")
    assert SamplerActor.retunable((hf,), (replace(hf, beta=2.0),)) is None   # not a guided engine


@pytest.mark.parametrize("beta", [-0.5, math.nan, math.inf])
def test_bad_beta(varied_model_dir: Path, verifier_dir: Path, beta: float) -> None:
    with pytest.raises(ModelError, match="beta: expected a finite number >= 0"):
        GuidedEngine(str(varied_model_dir), str(verifier_dir), beta=beta)


@pytest.mark.parametrize("raw, key", [
    ({"kind": "guided"}, "engine.verifier"),
    ({"kind": "guided", "verifier": "v", "beta": -1.0}, "engine.beta"),
    ({"verifier": "v", "beta": ".nan"}, "engine.beta"),
    ({"verifier": "v", "alpha": 0.0}, "engine.alpha"),
    ({"verifier": "v", "alpha": 1.5}, "engine.alpha"),
    ({"top_k_candidates": -1}, "engine.top_k_candidates"),
])
def test_engine_config_validation(raw: dict, key: str) -> None:
    if raw.get("beta") == ".nan":
        raw = {**raw, "beta": math.nan}
    with pytest.raises(ConfigError, match=key):
        from_dict(EngineConfig, raw, "engine")


def test_eval_cli_flags() -> None:
    from raysys.cli.sample import eval_cmd, flags_to_dict, sample

    opts = {"engine": "guided", "verifier": "/v", "beta": 0.5}
    assert flags_to_dict(opts)["engine"] == {"kind": "guided", "verifier": "/v", "beta": 0.5}
    names = {p.name for p in eval_cmd.params}
    assert {"verifier", "beta"} <= names and not {"verifier", "beta"} & {p.name for p in sample.params}
