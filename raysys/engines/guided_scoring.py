"""The tensor side of verifier-guided decoding: candidate sets and the verifier's KV cache.

At a decoding step every active row of a batch has a candidate set (its plausible next tokens).
:class:`VerifierCache` scores all candidates of all rows in ONE verifier forward over the
verifier's own KV cache: the row's tokens not yet in that cache are fed first (causal), then
each candidate is appended at position ``n_real`` (the row's number of real tokens) and
attends to the row's real prefix and to itself only, exactly the attention it would get as the
real next token. Hence the chosen candidate's key/value vectors ARE the next token's, and
:meth:`VerifierCache.keep` moves them into place instead of recomputing them.

Slots of the cache mirror the engine's token matrix column for column (left padding
included), because every call feeds every active row: rows stay in lockstep, and the cache's
real-slot mask is the engine's ``seq_real[:, :cache_len]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def candidate_mask(logprobs: Tensor, alpha: float, top_k: int = 0) -> Tensor:
    """``[B, V]`` bool: the alpha-plausible tokens, ``log p >= max log p + ln(alpha)``.

    With ``top_k > 0`` only the ``top_k`` most likely of them survive (the intersection, as
    the authors' exploration does when both are set); it also bounds the verifier's work on
    flat distributions, where alpha alone can admit hundreds of tokens. The argmax token is
    always a candidate.
    """
    best = logprobs.max(dim=-1, keepdim=True).values
    mask = logprobs >= best + math.log(alpha)
    if 0 < top_k < logprobs.shape[-1]:
        top = torch.zeros_like(mask).scatter_(1, logprobs.topk(top_k, dim=-1).indices, True)
        mask &= top
    return mask


def pack_candidates(logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Candidate ids ``[B, K]`` (most likely first), a validity mask ``[B, K]`` and counts ``[B]``.

    ``K`` is the largest candidate count of the batch; shorter rows are padded with their
    own best token (a valid id, so padding slots never index out of the vocabulary).
    """
    counts = mask.sum(dim=-1)
    width = int(counts.max())
    masked = logits.float().masked_fill(~mask, float("-inf"))
    ids = masked.topk(width, dim=-1).indices
    valid = torch.arange(width, device=logits.device)[None, :] < counts[:, None]
    ids = torch.where(valid, ids, ids[:, :1])
    return ids, valid, counts


def step_inputs(seq_real: Tensor, cached: int, cand_valid: Tensor, dtype: torch.dtype
                ) -> tuple[Tensor, Tensor]:
    """Position ids ``[B, W+K]`` and a 4D additive mask ``[B, 1, W+K, L+K]`` for one call.

    ``seq_real [B, L]`` marks the real (non-padding) columns of the rows' tokens, of which the
    first ``cached`` are already in the cache; the ``W = L - cached`` others are fed now,
    followed by ``K`` candidate slots. A fed token sees real keys up to itself; a valid
    candidate sees every real key and itself; padding queries see only themselves (an empty
    softmax row would be NaN with some kernels).
    """
    batch, length = seq_real.shape
    width = cand_valid.shape[1]
    fed = length - cached
    device = seq_real.device
    real = seq_real.bool()
    allowed = torch.zeros(batch, fed + width, length + width, dtype=torch.bool, device=device)
    key_idx = torch.arange(length, device=device)
    causal = key_idx[None, :] <= (cached + torch.arange(fed, device=device))[:, None]
    allowed[:, :fed, :length] = causal[None] & real[:, None, :] & real[:, cached:, None]
    allowed[:, fed:, :length] = real[:, None, :] & cand_valid[:, :, None]
    q_idx = torch.arange(fed + width, device=device)
    allowed[:, q_idx, cached + q_idx] = True
    mask = torch.zeros(batch, 1, fed + width, length + width, dtype=dtype, device=device)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)

    seq_pos = (real.long().cumsum(-1) - 1).clamp(min=0)
    cand_pos = real.long().sum(-1, keepdim=True).expand(batch, width)
    return torch.cat([seq_pos[:, cached:], cand_pos], dim=1), mask


class VerifierCache:
    """A :class:`~raysys.models.verifier.TokenVerifier`'s KV cache over one batch of rows."""

    def __init__(self, verifier: Any) -> None:
        from transformers import DynamicCache

        self.verifier = verifier
        self.cache = DynamicCache(config=verifier.backbone.config)
        self.dtype = verifier.backbone_dtype

    @property
    def length(self) -> int:
        """Number of token columns held (the engine's columns ``[0, length)``)."""
        return self.cache.get_seq_length()

    def prefill(self, seq: Tensor, seq_real: Tensor) -> None:
        """Cache the rows' prompts with the ordinary 2D padding mask (the model's own causal
        mask), so later calls feed few tokens and their 4D masks stay ``[B, 1, W+K, L+K]``
        with small ``W + K`` rather than quadratic in the prompt length."""
        position_ids = (seq_real.long().cumsum(-1) - 1).clamp(min=0)
        self.verifier.backbone(input_ids=seq, attention_mask=seq_real, position_ids=position_ids,
                               past_key_values=self.cache, use_cache=True)

    def score(self, seq: Tensor, seq_real: Tensor, cand_ids: Tensor, cand_valid: Tensor) -> Tensor:
        """Scores ``[B, K]`` (float32) of each candidate as the next token of each row.

        ``seq [B, L]`` holds every row's tokens so far (left-padded; ``seq_real`` marks real
        ones); columns not yet cached are fed in the same forward. Afterwards the cache holds
        ``L + K`` columns until :meth:`keep` picks one candidate per row.
        """
        cached = self.length
        position_ids, mask = step_inputs(seq_real, cached, cand_valid, self.dtype)
        input_ids = torch.cat([seq[:, cached:], cand_ids], dim=1)
        out = self.verifier.backbone(input_ids=input_ids, attention_mask=mask,
                                     position_ids=position_ids, past_key_values=self.cache,
                                     use_cache=True)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        fed = seq.shape[1] - cached
        return self.verifier.head(hidden[:, fed:]).squeeze(-1).float()

    def keep(self, base: int, slot: Tensor) -> None:
        """After :meth:`score` over ``base`` columns: keep candidate ``slot[b]`` of each row as
        column ``base`` and drop the other candidate slots.

        Plain dynamic layers get the chosen key/value vectors moved into place (they equal
        the next token's); other layer kinds (sliding windows) are cropped back to ``base``
        columns and the chosen token is fed again at the next call.
        """
        from transformers.cache_utils import DynamicLayer

        extra = self.length - base
        layers = self.cache.layers
        if not all(type(layer) is DynamicLayer for layer in layers):
            for layer in layers:
                layer.crop(-extra)
            return
        for layer in layers:
            b, h, _, d = layer.keys.shape
            idx = (base + slot).view(b, 1, 1, 1).expand(b, h, 1, d)
            # In place, then a view: no copy of the cache (the next update's cat copies anyway).
            layer.keys[:, :, base:base + 1] = layer.keys.gather(2, idx)
            layer.values[:, :, base:base + 1] = layer.values.gather(2, idx)
            layer.keys, layer.values = layer.keys[:, :, :base + 1], layer.values[:, :, :base + 1]

    def select(self, rows: Tensor) -> None:
        """Keep only the batch rows ``rows`` (rows that finished leave the batch)."""
        self.cache.batch_select_indices(rows)
