"""Training losses as small pure functions over tensors: SFT, DPO, ORPO and LLM2's pairwise token loss.

Conventions shared by every function here:
- ``labels`` has the same shape as ``input_ids``; prompt and padding positions hold
  ``ignore_index`` (-100), so only response tokens are trained on.
- Causal shift: the logits at position ``t`` predict the token at position ``t + 1``.
  :func:`token_logps` does the shift itself and returns values aligned to the *label* positions,
  so callers never shift.
- Reductions that could divide by zero (no response tokens, no valid pairs) return 0 while keeping
  the autograd graph, so a worker with an empty micro-batch still joins the backward all-reduce.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def _label_mask(labels: Tensor, ignore_index: int) -> Tensor:
    """Positions (aligned to ``labels``) that are trained on: not ignored, and not position 0.

    Position 0 has no preceding logits, so it can never be predicted.
    """
    mask = labels != ignore_index
    mask[:, 0] = False
    return mask


def token_logps(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Per-token log-probabilities of ``labels`` under ``logits``, aligned to the label positions.

    ``logits`` is ``[B, T, V]`` and ``labels`` ``[B, T]``. The output ``out`` is ``[B, T]`` with
    ``out[b, t] = log softmax(logits[b, t - 1])[labels[b, t]]`` for ``t = 1 .. T-1``;
    ``out[b, 0]`` is always 0 (nothing predicts the first token) and ``out[b, t]`` is 0 wherever
    ``labels[b, t] == ignore_index``. The result is float32 (or float64 for float64 logits).

    Memory: at most one extra ``[B, T, V]``-sized tensor is alive at a time. Full-precision logits
    use ``gather - logsumexp``; half-precision logits are upcast one sequence at a time, since an
    upcast of the whole batch would itself be a second ``[B, T, V]`` tensor.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"token_logps: expected logits [B, T, V] and labels [B, T], "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    shifted = logits[:, :-1, :]
    targets = labels[:, 1:]
    valid = targets != ignore_index
    # Ignored labels (-100) are not valid gather indices; any in-range id works, it is zeroed below.
    index = torch.where(valid, targets, torch.zeros_like(targets)).unsqueeze(-1)
    if shifted.dtype in (torch.float32, torch.float64):
        picked = shifted.gather(-1, index).squeeze(-1)
        logps = picked - torch.logsumexp(shifted, dim=-1)
    else:
        rows = []
        for row_logits, row_index in zip(shifted, index):
            row_logps = F.log_softmax(row_logits.float(), dim=-1)
            rows.append(row_logps.gather(-1, row_index).squeeze(-1))
        logps = torch.stack(rows)
    logps = torch.where(valid, logps, torch.zeros_like(logps))
    return F.pad(logps, (1, 0), value=0.0)


def sequence_logps(logits: Tensor, labels: Tensor,
                   ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """Return ``(sum of response-token log-probs, number of response tokens)``, each ``[B]``.

    The count excludes position 0 (never predicted) and ignored labels; it is a float tensor so
    ``sum / count`` (a length-normalised log-prob) needs no cast.
    """
    logps = token_logps(logits, labels, ignore_index)
    count = _label_mask(labels, ignore_index).sum(dim=-1).to(logps.dtype)
    return logps.sum(dim=-1), count


def sft_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX,
             reduction: Literal["mean", "sum"] = "mean") -> Tensor:
    """Causal-LM negative log-likelihood over response tokens (labels != ``ignore_index``).

    ``"mean"`` divides by this batch's response-token count (0 tokens gives 0, not NaN);
    ``"sum"`` returns the total so a trainer can divide by the token count summed over workers
    and gradient-accumulation steps, which weights every token equally however they are split.
    Padding never changes the result: padded labels are ``ignore_index``.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"sft_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    total = -token_logps(logits, labels, ignore_index).sum()
    if reduction == "sum":
        return total
    count = _label_mask(labels, ignore_index).sum()
    return total / count.clamp(min=1)


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float = 0.1,
             label_smoothing: float = 0.0, nll_weight: float = 0.0,
             chosen_tokens: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Sigmoid DPO loss (Rafailov et al. 2023), with conservative label smoothing and an NLL term.

    With ``z = beta * ((pi_c - ref_c) - (pi_r - ref_r))`` the per-example loss is
    ``-(1 - eps) * logsigmoid(z) - eps * logsigmoid(-z)``, where ``eps = label_smoothing`` is the
    assumed probability that a preference label is flipped (cDPO). ``nll_weight = alpha > 0``
    adds ``-alpha * pi_c / chosen_tokens``, the chosen answer's per-token NLL (Pang et al. 2024,
    iterative RPO: plain DPO can lower the chosen answer's likelihood along with the rejected
    one's). Inputs are summed sequence log-probs ``[B]``; ``chosen_tokens [B]`` counts the
    chosen answers' tokens. Returns ``(loss [B], chosen_rewards [B], rejected_rewards [B])``; the
    rewards ``beta * (pi - ref)`` are detached, for logging reward accuracy and margins.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if nll_weight < 0 or (nll_weight > 0 and chosen_tokens is None):
        raise ValueError(f"dpo_loss: nll_weight must be >= 0 and needs chosen_tokens, got "
                         f"{nll_weight} with chosen_tokens={chosen_tokens}")
    chosen_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_ratio = policy_rejected_logps - ref_rejected_logps
    z = beta * (chosen_ratio - rejected_ratio)
    loss = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    if nll_weight > 0:
        loss = loss - nll_weight * policy_chosen_logps / chosen_tokens.clamp(min=1)
    return loss, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


def _log1m_exp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate at both ends (Maechler 2012).

    Near 0 ``1 - exp(x)`` cancels, so ``log(-expm1(x))`` is used there; for very negative ``x``
    ``exp(x)`` underflows gracefully in ``log1p(-exp(x))``.
    """
    near_zero = x > -0.6931471805599453  # -log 2, the crossover point of the two forms
    # Each branch is evaluated on a clamped input so the unused one cannot produce inf/NaN
    # (NaN would leak into gradients through torch.where).
    a = torch.log(-torch.expm1(torch.where(near_zero, x, torch.full_like(x, -1.0))))
    b = torch.log1p(-torch.exp(torch.where(near_zero, torch.full_like(x, -1.0), x)))
    return torch.where(near_zero, a, b)


def orpo_loss(chosen_nll: Tensor, chosen_avg_logps: Tensor, rejected_avg_logps: Tensor,
              lam: float = 0.1) -> tuple[Tensor, Tensor]:
    """ORPO (Hong et al. 2024): NLL on chosen plus ``lam`` times the odds-ratio loss.

    ``chosen_avg_logps`` / ``rejected_avg_logps`` are length-normalised log-probs ``[B]`` (sum
    over response tokens / their count), so ``exp`` of them is a probability in (0, 1). With
    ``a``, ``b`` those values, ``log_odds = (a - b) - (log(1 - e^a) - log(1 - e^b))`` and the
    per-example loss is ``chosen_nll - lam * logsigmoid(log_odds)``. Average log-probs are
    clamped just below 0 because a probability of exactly 1 has infinite odds.
    Returns ``(loss [B], log_odds_ratio [B] detached)``.
    """
    a = chosen_avg_logps.clamp(max=-1e-6)
    b = rejected_avg_logps.clamp(max=-1e-6)
    log_odds = (a - b) - (_log1m_exp(a) - _log1m_exp(b))
    loss = chosen_nll - lam * F.logsigmoid(log_odds)
    return loss, log_odds.detach()


def pairwise_token_loss(s_gt: Tensor, s_neg: Tensor, mask: Tensor | None = None) -> Tensor:
    """LLM2 verifier loss: mean of ``-logsigmoid(s_gt - s_neg)`` over valid pairs.

    ``s_gt`` / ``s_neg`` are ``[N]`` verifier scores of the ground-truth and the negative token at
    the same prefix; ``mask`` (bool ``[N]``) marks real pairs among padding. No valid pair gives
    0 connected to the graph (not NaN), so distributed backward passes stay in lockstep.
    """
    if s_gt.shape != s_neg.shape:
        raise ValueError(f"pairwise_token_loss: s_gt {tuple(s_gt.shape)} and s_neg "
                         f"{tuple(s_neg.shape)} differ in shape")
    diff = s_gt - s_neg
    if mask is None:
        per_pair = -F.logsigmoid(diff)
        return per_pair.mean() if per_pair.numel() else per_pair.sum()
    mask = mask.to(torch.bool)
    # Mask the *input* of logsigmoid with where (not the output, not by multiplying): a padded
    # slot may hold inf/NaN scores, and NaN would reach the gradient through either of those.
    diff = torch.where(mask, diff, torch.zeros_like(diff))
    per_pair = torch.where(mask, -F.logsigmoid(diff), torch.zeros_like(diff))
    return per_pair.sum() / mask.sum().clamp(min=1)
