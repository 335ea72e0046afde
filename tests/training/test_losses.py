"""Losses against hand-computed values on tiny tensors (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raysys.training.losses import (dpo_loss, orpo_loss, pairwise_token_loss, sequence_logps,
                                    sft_loss, token_logps)

LOG3 = math.log(3.0)


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    """B=1, T=3, V=2. logits[0] = [log 3, 0] -> p = (3/4, 1/4); logits[1] = [0, 0] -> (1/2, 1/2);
    logits[2] predicts nothing (no label after it). labels = [-100, 0, 1]:
    out[1] = log p(label 0 | logits[0]) = log(3/4); out[2] = log p(label 1 | logits[1]) = log(1/2).
    """
    logits = torch.tensor([[[LOG3, 0.0], [0.0, 0.0], [100.0, -100.0]]], requires_grad=True)
    labels = torch.tensor([[-100, 0, 1]])
    return logits, labels


def test_token_logps_alignment_and_masking() -> None:
    logits, labels = _toy()
    out = token_logps(logits, labels)
    assert out.shape == labels.shape
    expected = torch.tensor([[0.0, math.log(0.75), math.log(0.5)]])
    torch.testing.assert_close(out, expected)
    # Masking label 2 zeroes exactly that position.
    masked = token_logps(logits, torch.tensor([[-100, 0, -100]]))
    torch.testing.assert_close(masked, torch.tensor([[0.0, math.log(0.75), 0.0]]))


def test_token_logps_half_precision_path_matches_fp32() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11).bfloat16()
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :3] = -100
    low = token_logps(logits, labels)  # row-wise upcast path
    ref = token_logps(logits.float(), labels)  # gather - logsumexp path
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, atol=1e-5, rtol=1e-5)
    # Independent check against cross_entropy on the shifted tensors.
    ce = F.cross_entropy(logits.float()[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1),
                         reduction="none").view(3, 6)
    torch.testing.assert_close(ref[:, 1:], -ce)


def test_sequence_logps_sum_and_count() -> None:
    logits, labels = _toy()
    total, count = sequence_logps(logits, labels)
    # log(3/4) + log(1/2) = log(3/8); two response tokens.
    torch.testing.assert_close(total, torch.tensor([math.log(3 / 8)]))
    torch.testing.assert_close(count, torch.tensor([2.0]))


def test_sft_loss_mean_sum_and_grad() -> None:
    logits, labels = _toy()
    # sum = -(log 3/4 + log 1/2) = log(8/3) = 0.98083; mean = that / 2 tokens.
    total = sft_loss(logits, labels, reduction="sum")
    mean = sft_loss(logits, labels, reduction="mean")
    assert total.item() == pytest.approx(math.log(8 / 3), abs=1e-6)
    assert mean.item() == pytest.approx(math.log(8 / 3) / 2, abs=1e-6)
    mean.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    # d(mean)/d logits[0] = (softmax - onehot(0)) / 2 = ((3/4 - 1)/2, (1/4)/2); logits[2] unused.
    torch.testing.assert_close(grad[0, 0], torch.tensor([-0.125, 0.125]))
    torch.testing.assert_close(grad[0, 2], torch.zeros(2))


def test_sft_loss_unchanged_by_padding() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 9)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    base_mean = sft_loss(logits, labels)
    base_sum = sft_loss(logits, labels, reduction="sum")
    # Three more padded positions with arbitrary logits, plus a fully padded row.
    padded_logits = torch.cat([logits, torch.randn(2, 3, 9) * 50], dim=1)
    padded_logits = torch.cat([padded_logits, torch.randn(1, 8, 9)], dim=0)
    padded_labels = torch.full((3, 8), -100)
    padded_labels[:2, :5] = labels
    torch.testing.assert_close(sft_loss(padded_logits, padded_labels), base_mean)
    torch.testing.assert_close(sft_loss(padded_logits, padded_labels, reduction="sum"), base_sum)
    # Mean equals HF's shifted cross-entropy over the same tokens.
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(base_mean, ref)


def test_sft_loss_no_response_tokens_is_zero_with_grad() -> None:
    logits = torch.randn(1, 4, 5, requires_grad=True)
    loss = sft_loss(logits, torch.full((1, 4), -100))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="reduction"):
        sft_loss(logits, torch.full((1, 4), -100), reduction="avg")  # type: ignore[arg-type]


def test_dpo_equals_log2_when_policy_is_reference() -> None:
    p_c, p_r = torch.tensor([-3.0, -10.0]), torch.tensor([-4.0, -1.0])
    for smoothing in (0.0, 0.2):
        loss, rc, rr = dpo_loss(p_c, p_r, p_c.clone(), p_r.clone(), beta=0.3,
                                label_smoothing=smoothing)
        torch.testing.assert_close(loss, torch.full((2,), math.log(2.0)))
        assert torch.equal(rc, torch.zeros(2)) and torch.equal(rr, torch.zeros(2))


def test_dpo_hand_computed() -> None:
    # beta 0.5; chosen ratio = -1 - (-2) = 1, rejected ratio = -3 - (-2) = -1;
    # z = 0.5 * (1 - (-1)) = 1; loss = -log sigmoid(1) = log(1 + e^-1) = 0.3132617.
    p_c = torch.tensor([-1.0], requires_grad=True)
    loss, rc, rr = dpo_loss(p_c, torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
                            beta=0.5)
    assert loss.item() == pytest.approx(0.31326168751822286, abs=1e-6)
    assert rc.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-0.5)
    assert not rc.requires_grad
    loss.sum().backward()
    # d loss / d p_c = -beta * sigmoid(-z) = -0.5 * 0.2689414 = -0.1344707.
    assert p_c.grad.item() == pytest.approx(-0.5 * (1 / (1 + math.e)), abs=1e-6)
    # cDPO, eps 0.1: 0.9 * log(1 + e^-1) + 0.1 * log(1 + e) = log(1 + e^-1) + 0.1 = 0.4132617.
    smoothed, _, _ = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                              torch.tensor([-2.0]), beta=0.5, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.41326168751822286, abs=1e-6)


def test_dpo_nll_term_hand_computed() -> None:
    # The z = 1 case above plus alpha * per-token NLL of chosen: alpha 2, p_c = -1 over 4 tokens
    # adds 2 * 1 / 4 = 0.5; d/d p_c adds -alpha / 4 = -0.5.
    p_c = torch.tensor([-1.0], requires_grad=True)
    loss, rc, _ = dpo_loss(p_c, torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
                           beta=0.5, nll_weight=2.0, chosen_tokens=torch.tensor([4]))
    assert loss.item() == pytest.approx(0.31326168751822286 + 0.5, abs=1e-6)
    assert rc.item() == pytest.approx(0.5)            # the rewards do not see the NLL term
    loss.sum().backward()
    assert p_c.grad.item() == pytest.approx(-0.5 / (1 + math.e) - 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="chosen_tokens"):
        dpo_loss(p_c, p_c, p_c, p_c, nll_weight=1.0)


def test_orpo_hand_computed() -> None:
    # a = log 0.5 -> odds 1; b = log 0.25 -> odds 1/3; log odds ratio = log 3.
    # loss = nll - lam * log sigmoid(log 3) = 2.0 + 0.1 * log(4/3) = 2.0287682.
    loss, log_odds = orpo_loss(torch.tensor([2.0]), torch.tensor([math.log(0.5)]),
                               torch.tensor([math.log(0.25)]), lam=0.1)
    assert log_odds.item() == pytest.approx(LOG3, abs=1e-6)
    assert loss.item() == pytest.approx(2.0 + 0.1 * math.log(4 / 3), abs=1e-6)


def test_orpo_numerically_stable_at_extremes() -> None:
    a = torch.tensor([-1e-4, 0.0, -30.0, -0.7], requires_grad=True)
    b = torch.tensor([-200.0, -1e-7, -1e-5, -0.69], requires_grad=True)
    loss, log_odds = orpo_loss(torch.zeros(4), a, b, lam=1.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(log_odds).all()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()

    def ref(x: float, y: float) -> float:  # float64 reference
        x, y = min(x, -1e-6), min(y, -1e-6)
        return (x - y) - (math.log(-math.expm1(x)) - math.log(-math.expm1(y)))

    for i in (0, 2, 3):
        expected = ref(a[i].item(), b[i].item())
        assert log_odds[i].item() == pytest.approx(expected, rel=1e-4)


def test_pairwise_token_loss_hand_computed_and_masked() -> None:
    # Valid pairs: diffs 2 and 0 -> (log(1 + e^-2) + log 2) / 2 = (0.1269280 + 0.6931472) / 2.
    s_gt = torch.tensor([2.0, 0.0, float("nan")], requires_grad=True)
    s_neg = torch.tensor([0.0, 0.0, 5.0])
    mask = torch.tensor([True, True, False])
    loss = pairwise_token_loss(s_gt, s_neg, mask)
    assert loss.item() == pytest.approx((0.12692801104297263 + math.log(2)) / 2, abs=1e-6)
    loss.backward()
    # d/ds_gt of -log sigmoid(d) / 2 = -sigmoid(-d) / 2: -0.1192029/2, -0.5/2, padded slot 0.
    torch.testing.assert_close(s_gt.grad, torch.tensor([-0.11920292202211755 / 2, -0.25, 0.0]))
    unmasked = pairwise_token_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert unmasked.item() == pytest.approx(loss.item(), abs=1e-6)


def test_pairwise_token_loss_no_valid_pairs_is_zero_with_grad() -> None:
    s_gt = torch.randn(4, requires_grad=True)
    loss = pairwise_token_loss(s_gt, torch.randn(4), torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(s_gt.grad, torch.zeros(4))
    empty = pairwise_token_loss(torch.zeros(0, requires_grad=True), torch.zeros(0))
    assert empty.item() == 0.0 and empty.requires_grad
