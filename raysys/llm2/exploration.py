"""Token quality exploration, the pure torch part: candidates, sampling logits, negative draws.

Semantics (METHODS.md, LLM2 "Token quality exploration", with the authors' bugs left out):

- teacher forcing: row ``r`` of a model's logits over ``ids`` predicts ``ids[r + 1]``, so the
  pair for gold token ``ids[p]`` is read from row ``p - 1`` and stored with ``pos = p``, the
  gold token's own index in the :func:`raysys.training.collators.render_chat_ids` ids;
- a model's candidates at a position: ``log p(v) >= max log p + ln alpha`` (``alpha > 0``)
  and/or its ``top_k`` tokens (``top_k > 0``); both set gives the intersection, neither gives
  every token;
- allowed negatives: candidates of *both* models (base and, when given, expert) minus the gold
  token and the excluded ids (pad/eos), as explicit boolean masks: the authors mark gold with a
  dtype minimum and compare against another dtype's minimum, which lets gold be drawn;
- draws: ``num_samples`` with replacement from ``softmax(z / T)`` over the allowed tokens, ``z``
  from :func:`sampling_logits`; a position with no allowed token gives nothing. Draws are not
  deduplicated (the authors' data repeats triples).

Randomness comes only from the caller's ``torch.Generator`` (CPU), consumed in a fixed amount
per position, so a row's triples depend on its seed and logits alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

Triple = tuple[int, int, int]
STAT_KEYS = ("positions", "positions_with_candidate", "negatives", "candidates")


def candidate_mask(logits: Tensor, alpha: float, top_k: int) -> Tensor:
    """Boolean ``[..., V]`` mask of one model's candidate tokens at each position.

    ``alpha > 0``: ``z(v) - max z >= ln alpha``, which is ``log p(v) >= max log p + ln alpha``
    (the log-softmax normaliser cancels). ``top_k > 0``: the ``top_k`` largest logits (ties
    broken by ``torch.topk``). Both: the intersection. Neither: every token.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    if top_k < 0:
        raise ValueError(f"top_k: expected >= 0, got {top_k}")
    z = logits.float()
    mask = torch.ones_like(z, dtype=torch.bool)
    if alpha > 0:
        mask &= (z - z.max(dim=-1, keepdim=True).values) >= math.log(alpha)
    if top_k > 0:
        idx = z.topk(min(top_k, z.shape[-1]), dim=-1).indices
        top = torch.zeros_like(mask).scatter_(-1, idx, True)
        mask &= top
    return mask


def sampling_logits(z_base: Tensor, z_expert: Tensor | None, mode: str, gamma: float) -> Tensor:
    """The logits negatives are drawn from: ``uniform`` 0, ``base`` z1, ``expert`` z2,
    ``contrast`` ``z1 + gamma (z1 - z2)`` (favours tokens the base model over-prefers).

    Raw logits are fine: each model's per-position shift is constant over the vocabulary and
    cancels in the softmax of every mode.
    """
    z1 = z_base.float()
    if mode == "uniform":
        return torch.zeros_like(z1)
    if mode == "base":
        return z1
    if mode not in ("expert", "contrast"):
        raise ValueError(f"mode: expected uniform, base, expert or contrast, got {mode!r}")
    if z_expert is None:
        raise ValueError(f"mode {mode!r} needs the expert model's logits")
    if z_expert.shape != z_base.shape:
        raise ValueError(f"expert logits {tuple(z_expert.shape)} do not match base logits "
                         f"{tuple(z_base.shape)}")
    z2 = z_expert.float()
    return z2 if mode == "expert" else z1 + gamma * (z1 - z2)


def draw_negatives(logits: Tensor, mask: Tensor, gold: Tensor, num_samples: int,
                   temperature: float, generator: torch.Generator,
                   exclude: Sequence[int] = ()) -> Tensor:
    """Draw negatives at ``P`` positions; returns a long ``[N, 2]`` tensor of (row, token id).

    ``logits`` [P, V] are sampling logits, ``mask`` [P, V] the candidates of both models,
    ``gold`` [P] the gold ids. The allowed set is ``mask`` minus gold, minus ``exclude`` (pad,
    eos), minus non-finite logits; each row draws ``num_samples`` tokens with replacement from
    ``softmax(logits / temperature)`` over its allowed set, by inverse CDF on uniforms from
    ``generator`` (``P * num_samples`` of them, drawn even for rows that give nothing, so the
    stream does not depend on which rows have candidates). Rows are in ascending order.
    """
    if logits.dim() != 2 or mask.shape != logits.shape or gold.shape != logits.shape[:1]:
        raise ValueError(f"expected logits/mask [P, V] and gold [P], got {tuple(logits.shape)}, "
                         f"{tuple(mask.shape)}, {tuple(gold.shape)}")
    if num_samples < 1 or not temperature > 0:
        raise ValueError(f"num_samples >= 1 and temperature > 0 expected, got {num_samples}, "
                         f"{temperature}")
    rows, vocab = logits.shape
    allowed = allowed_mask(mask, gold, exclude) & torch.isfinite(logits)
    u = torch.rand(rows, num_samples, generator=generator).to(logits.device)
    has = allowed.any(dim=-1)
    if rows == 0 or not bool(has.any()):
        return torch.empty(0, 2, dtype=torch.long)
    z = (logits.float() / temperature).masked_fill(~allowed, -math.inf)
    z[~has] = 0.0   # rows with nothing allowed: any finite value, their draws are dropped below
    probs = torch.softmax(z, dim=-1)
    cdf = probs.cumsum(dim=-1)
    cdf = cdf / cdf[:, -1:]   # exact 1 at the end, so u < 1 always lands on an allowed token
    # The first index whose cdf exceeds u: zero-probability tokens never exceed their predecessor.
    tok = torch.searchsorted(cdf, u.contiguous(), right=True).clamp_(max=vocab - 1)
    row = torch.arange(rows, device=logits.device).unsqueeze(1).expand_as(tok)
    keep = allowed.gather(1, tok) & has.unsqueeze(1)
    return torch.stack([row[keep], tok[keep]], dim=1).cpu()


def allowed_mask(mask: Tensor, gold: Tensor, exclude: Sequence[int] = ()) -> Tensor:
    """``mask`` with each row's gold id and every ``exclude`` id removed (a new tensor)."""
    allowed = mask.clone()
    allowed[torch.arange(mask.shape[0], device=mask.device), gold.to(mask.device)] = False
    if len(exclude):
        allowed[:, torch.as_tensor(sorted(set(exclude)), device=mask.device)] = False
    return allowed


def explore_sequence(ids: Sequence[int], base_logits: Tensor, expert_logits: Tensor | None,
                     span: tuple[int, int], *, alpha: float, top_k: int, mode: str,
                     gamma: float, num_samples: int, temperature: float,
                     generator: torch.Generator, exclude: Sequence[int] = (),
                     first_row: int = 0) -> tuple[list[Triple], dict[str, int]]:
    """The ``(pos, gt_id, neg_id)`` triples of one sequence, and its counts (:data:`STAT_KEYS`).

    ``span = (start, end)``: the response positions ``start <= p < end`` to explore
    (``start >= 1``: position 0 has no prediction). ``base_logits[j]`` (and ``expert_logits[j]``)
    is the model's output at row ``first_row + j``, which predicts ``ids[first_row + j + 1]``:
    pass the whole ``[len(ids), V]`` output with ``first_row=0``, or only rows
    ``start-1 .. end-2`` with ``first_row=start-1``. ``pos`` is the gold token's index in ``ids``.
    """
    start, end = span
    if start < 1 or end > len(ids) or start > end:
        raise ValueError(f"span: expected 1 <= start <= end <= {len(ids)}, got {span}")
    rows = torch.arange(start - 1, end - 1) - first_row
    if end > start and (int(rows[0]) < 0 or int(rows[-1]) >= base_logits.shape[0]):
        raise ValueError(f"logits rows {first_row}..{first_row + base_logits.shape[0] - 1} do "
                         f"not cover the rows {start - 1}..{end - 2} predicting span {span}")
    stats = dict.fromkeys(STAT_KEYS, 0)
    stats["positions"] = end - start
    if end == start:
        return [], stats
    device = base_logits.device
    z1 = base_logits[rows.to(device)]
    z2 = expert_logits[rows.to(expert_logits.device)].to(device) if expert_logits is not None else None
    gold = torch.as_tensor(list(ids[start:end]), dtype=torch.long, device=device)
    mask = candidate_mask(z1, alpha, top_k)
    if z2 is not None:
        mask &= candidate_mask(z2, alpha, top_k)
    z = sampling_logits(z1, z2, mode, gamma)
    drawn = draw_negatives(z, mask, gold, num_samples, temperature, generator, exclude)
    counts = (allowed_mask(mask, gold, exclude) & torch.isfinite(z)).sum(dim=-1)
    stats["positions_with_candidate"] = int((counts > 0).sum())
    stats["candidates"] = int(counts.sum())
    stats["negatives"] = int(drawn.shape[0])
    gold_cpu = gold.cpu()
    triples = [(start + r, int(gold_cpu[r]), t) for r, t in drawn.tolist()]
    return triples, stats


def row_seed(key: str, seed: int) -> int:
    """A stable 63-bit seed for one row from its content ``key`` and the base ``seed``
    (SHA-256, so the same in every process, unlike ``hash``)."""
    digest = hashlib.sha256(f"raysys-llm2-explore:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def make_generator(key: str, seed: int) -> torch.Generator:
    """A CPU generator seeded with :func:`row_seed`."""
    return torch.Generator().manual_seed(row_seed(key, seed))


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    """Add derived rates to summed counts: the share of positions with a candidate, candidates
    per position (all positions, and those with one), negatives per position."""
    out = dict(stats)
    pos, with_c = stats.get("positions", 0), stats.get("positions_with_candidate", 0)
    out["candidate_rate"] = with_c / pos if pos else 0.0
    out["candidates_per_position"] = stats.get("candidates", 0) / pos if pos else 0.0
    out["candidates_per_candidate_position"] = stats.get("candidates", 0) / with_c if with_c else 0.0
    out["negatives_per_position"] = stats.get("negatives", 0) / pos if pos else 0.0
    return out
