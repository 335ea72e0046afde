"""The pure torch pieces of token quality exploration, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from raysys.config import ConfigError, ModelSpec, from_dict
from raysys.llm2 import ExploreConfig
from raysys.llm2.exploration import (
    candidate_mask, draw_negatives, explore_sequence, make_generator, row_seed, sampling_logits,
)

ROWS = torch.tensor([[2.0, 1.0, 0.0, -1.0],     # z - max = [0, -1, -2, -3]
                     [0.0, 0.5, 3.0, 2.9]])     # z - max = [-3, -2.5, 0, -0.1]
T, F = True, False


@pytest.mark.parametrize("alpha, top_k, expected", [
    (0.3, 0, [[T, T, F, F], [F, F, T, T]]),      # ln 0.3 = -1.20
    (0.1, 0, [[T, T, T, F], [F, F, T, T]]),      # ln 0.1 = -2.30
    (0.04, 0, [[T, T, T, T], [T, T, T, T]]),     # ln 0.04 = -3.22
    (0.0, 2, [[T, T, F, F], [F, F, T, T]]),
    (0.0, 1, [[T, F, F, F], [F, F, T, F]]),
    (0.1, 2, [[T, T, F, F], [F, F, T, T]]),      # intersection: top-k is the stricter in row 0
    (0.04, 3, [[T, T, T, F], [F, T, T, T]]),     # intersection: top-k decides both rows
    (0.3, 1, [[T, F, F, F], [F, F, T, F]]),      # and here top-k is the stricter in row 1
    (0.0, 0, [[T, T, T, T], [T, T, T, T]]),      # both off: every token
    (1.0, 0, [[T, F, F, F], [F, F, T, F]]),      # only the argmax
    (0.3, 9, [[T, T, F, F], [F, F, T, T]]),      # k above V: top-k keeps everything
])
def test_candidate_mask_hand_computed(alpha: float, top_k: int, expected: list) -> None:
    assert candidate_mask(ROWS, alpha, top_k).tolist() == expected


def test_candidate_mask_is_shift_invariant_and_batched() -> None:
    z = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0))
    m = candidate_mask(z, 0.2, 4)
    assert m.shape == z.shape
    assert torch.equal(m, candidate_mask(z + 7.5, 0.2, 4))
    assert torch.equal(m, candidate_mask(torch.log_softmax(z, -1), 0.2, 4))
    assert (m.sum(-1) <= 4).all() and (m.sum(-1) >= 1).all()


def test_candidate_mask_rejects_bad_knobs() -> None:
    with pytest.raises(ValueError, match="alpha"):
        candidate_mask(ROWS, 1.5, 0)
    with pytest.raises(ValueError, match="top_k"):
        candidate_mask(ROWS, 0.1, -1)


def test_sampling_logits_modes() -> None:
    z1, z2 = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 1.0, 0.0]])
    assert sampling_logits(z1, z2, "uniform", 1.0).tolist() == [[0.0, 0.0, 0.0]]
    assert sampling_logits(z1, None, "base", 1.0).tolist() == [[1.0, 2.0, 3.0]]
    assert sampling_logits(z1, z2, "expert", 1.0).tolist() == [[3.0, 1.0, 0.0]]
    # z1 + 0.5 (z1 - z2) = [1 - 1, 2 + 0.5, 3 + 1.5]
    assert sampling_logits(z1, z2, "contrast", 0.5).tolist() == [[0.0, 2.5, 4.5]]
    assert sampling_logits(z1, z2, "contrast", 0.0).tolist() == z1.tolist()
    with pytest.raises(ValueError, match="expert model's logits"):
        sampling_logits(z1, None, "contrast", 1.0)
    with pytest.raises(ValueError, match="mode"):
        sampling_logits(z1, z2, "greedy", 1.0)


def test_draw_never_returns_gold_pad_or_non_candidates() -> None:
    pad, eos, V, P = 0, 1, 12, 9
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(P, V, generator=g) * 3
        mask = torch.rand(P, V, generator=g) < 0.4
        gold = torch.randint(0, V, (P,), generator=g)
        mask[torch.arange(P), gold] = True            # gold is often a candidate
        mask[:, pad] = mask[:, eos] = True            # and so are pad/eos: both must be excluded
        mask[3] = False
        mask[3, gold[3]] = True                       # row 3: gold is the only candidate
        drawn = draw_negatives(logits, mask, gold, 5, 0.7, make_generator("k", seed),
                               exclude=[pad, eos])
        rows, toks = drawn[:, 0], drawn[:, 1]
        assert (toks != gold[rows]).all()
        assert not ((toks == pad) | (toks == eos)).any()
        assert mask[rows, toks].all()
        assert 3 not in rows.tolist()
        assert rows.tolist() == sorted(rows.tolist())
        allowed = mask.clone()
        allowed[torch.arange(P), gold] = False
        allowed[:, [pad, eos]] = False
        # every position with an allowed token gets exactly num_samples draws
        for r in range(P):
            assert (rows == r).sum().item() == (5 if allowed[r].any() else 0)


@pytest.mark.parametrize("temperature, p_two", [(1.0, 0.75), (2.0, math.sqrt(3) / (1 + math.sqrt(3)))])
def test_draw_follows_softmax_over_allowed(temperature: float, p_two: float) -> None:
    # allowed {1, 2} with p ∝ [1, 3]; token 0 is gold (highest logit), 3 not a candidate
    logits = torch.log(torch.tensor([[50.0, 1.0, 3.0, 40.0]]))
    mask = torch.tensor([[T, T, T, F]])
    drawn = draw_negatives(logits, mask, torch.tensor([0]), 20000, temperature,
                           torch.Generator().manual_seed(1))
    toks = drawn[:, 1]
    assert set(toks.tolist()) == {1, 2}
    assert abs((toks == 2).float().mean().item() - p_two) < 0.015


def test_draw_is_deterministic_per_generator_and_empty_inputs() -> None:
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(4, 7, dtype=torch.bool)
    gold = torch.tensor([0, 1, 2, 3])
    a = draw_negatives(logits, mask, gold, 3, 1.0, make_generator("row", 5))
    b = draw_negatives(logits, mask, gold, 3, 1.0, make_generator("row", 5))
    c = draw_negatives(logits, mask, gold, 3, 1.0, make_generator("row", 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert draw_negatives(logits[:0], mask[:0], gold[:0], 3, 1.0, make_generator("r", 0)).shape == (0, 2)
    assert row_seed("x", 0) == row_seed("x", 0) != row_seed("x", 1)


def _hand_logits() -> torch.Tensor:
    big, small = 5.0, -20.0
    z = torch.full((4, 6), small)
    z[0, 1] = z[0, 4] = big      # predicts ids[1] = 1: candidates {1, 4}
    z[1, 2] = big                # predicts ids[2] = 2: only gold
    z[2, 3] = z[2, 0] = big      # predicts ids[3] = 3: gold and pad (excluded)
    return z


def test_explore_sequence_hand_built() -> None:
    ids, z = [5, 1, 2, 3], _hand_logits()
    kw = dict(alpha=0.1, top_k=0, mode="base", gamma=1.0, num_samples=2, temperature=1.0,
              exclude=[0])
    triples, stats = explore_sequence(ids, z, None, (1, 4), generator=make_generator("a", 0), **kw)
    assert triples == [(1, 1, 4), (1, 1, 4)]
    assert stats == {"positions": 3, "positions_with_candidate": 1, "negatives": 2, "candidates": 1}
    # the same rows passed as a slice starting at row start - 1 = 0 .. 2, and from row 1 only
    same, _ = explore_sequence(ids, z[:3], None, (1, 4), generator=make_generator("a", 0),
                               first_row=0, **kw)
    assert same == triples
    later, st = explore_sequence(ids, z[1:3], None, (2, 4), generator=make_generator("a", 0),
                                 first_row=1, **kw)
    assert later == [] and st["positions"] == 2
    # an expert whose candidates at row 0 are {1, 5}: the shared set minus gold is empty
    expert = _hand_logits()
    expert[0, 4], expert[0, 5] = -20.0, 5.0
    none, st = explore_sequence(ids, z, expert, (1, 4), generator=make_generator("a", 0),
                                **{**kw, "mode": "contrast"})
    assert none == [] and st["positions_with_candidate"] == 0
    with pytest.raises(ValueError, match="do not cover"):
        explore_sequence(ids, z[1:3], None, (1, 4), generator=make_generator("a", 0),
                         first_row=1, **kw)


def test_explore_config_defaults_and_errors() -> None:
    cfg = from_dict(ExploreConfig, {}, "explore")
    assert (cfg.alpha, cfg.top_k, cfg.mode, cfg.gamma, cfg.temperature, cfg.num_samples) == \
        (0.1, 0, "base", 1.0, 1.0, 2)
    for data, message in [
        ({"alpha": "nan"}, r"explore\.alpha: expected a finite (number|float)"),
        ({"alpha": 1.5}, r"explore\.alpha: expected a value in \[0, 1\]"),
        ({"top_k": -1}, r"explore\.top_k: expected an int >= 0"),
        ({"temperature": 0}, r"explore\.temperature: expected a value > 0"),
        ({"gamma": "inf"}, r"explore\.gamma: expected a finite (number|float)"),
        ({"num_samples": 0}, r"explore\.num_samples: expected an int >= 1"),
        ({"mode": "greedy"}, r"explore\.mode: expected one of"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_dict(ExploreConfig, data, "explore")
    contrast = ExploreConfig(mode="contrast")
    with pytest.raises(ConfigError, match=r"explore\.mode: 'contrast' needs an expert model, but "
                                          r"models\.expert is not set"):
        contrast.check_expert(None, "explore", "models.expert")
    contrast.check_expert(ModelSpec("some/model"), "explore")
    ExploreConfig(mode="uniform").check_expert(None, "explore")
