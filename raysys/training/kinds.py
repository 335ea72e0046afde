"""The training-kind registry: one :class:`TrainingKind` entry per loss (sft, dpo, orpo, verifier).

An entry declares everything the trainer needs to know about a kind: the stage table it reads,
how rows become examples, how examples become a batch, what a batch's loss is, and the
optional model hooks (a different model class, LoRA placement, a pre-training pass such as
DPO's reference log-probs). The per-worker loop (``worker.py``) is kind-agnostic; adding a kind
is one :func:`register_kind` call, no edits elsewhere.

Loss scaling contract (``token_normalized``): a token-normalised kind returns, per micro-batch,
its summed loss divided by the loss-bearing units of the *whole* global batch (all workers,
all accumulation steps), so a step's gradient does not depend on how the batch is split;
other kinds return the micro-batch mean, and equal-sized micro-batches are averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from raysys.errors import ConfigError

# A raysys.training.config.TrainConfig. Not imported, not even for type checkers:
# TrainConfig.validate checks kind names against this registry, so this module is above it.
TrainSettings = Any

Batch = dict[str, Any]
Examples = list[dict[str, Any]]
Tokenize = Callable[[list[dict[str, Any]], Any, int, str], tuple[Examples, dict[str, int]]]
Loss = Callable[[Any, Batch, TrainSettings, float], tuple[torch.Tensor, dict[str, float]]]
Prepare = Callable[[TrainSettings, Any, Examples, int, int, int, Path], None]


@dataclass(frozen=True)
class TrainingKind:
    """Everything kind-specific about training; see the module docstring for the loss contract."""

    name: str
    table_kind: str                         # the stage table it reads (raysys.data.schema)
    tokenize: Tokenize                      # validated rows -> (examples, stats)
    collate: Callable[[Examples, int], Batch]   # (examples, pad_id) -> tensors
    count: Callable[[Batch], float]         # loss-bearing units of a batch (tokens or pairs)
    loss: Loss                              # (model, batch, cfg, global_units) -> (loss, stats)
    token_normalized: bool = False
    load_model: Callable[[TrainSettings], Any] | None = None   # default: a causal LM
    apply_lora: Callable[[TrainSettings, Any], Any] | None = None  # default: wrap the whole model
    prepare: Prepare | None = None          # before LoRA: (cfg, model, examples, pad, rank, world, dir)
    metrics: tuple[str, ...] = field(default=())   # the stats ``loss`` reports
    # optimizer parameter groups (e.g. a head with its own lr); default: every trainable param
    param_groups: Callable[[TrainSettings, Any], list[dict[str, Any]]] | None = None


KINDS: dict[str, TrainingKind] = {}


def register_kind(kind: TrainingKind) -> TrainingKind:
    """Add (or replace) a training kind; returns it, so it can be used as a module constant."""
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str, key: str = "kind") -> TrainingKind:
    """The registered kind ``name``; ``ConfigError`` naming ``key`` when there is none."""
    if name not in KINDS:
        raise ConfigError(f"{key}: unknown training kind {name!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[name]


# ------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------


def count_pairs(batch: Batch) -> float:
    """Pair kinds: a batch holds chosen rows then rejected rows."""
    return float(batch["input_ids"].shape[0] // 2)


def pair_logps(model: Any, batch: Batch) -> tuple[torch.Tensor, ...]:
    """Summed log-probs and token counts of the chosen and rejected halves of a pair batch."""
    from raysys.training.losses import sequence_logps

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, n = sequence_logps(logits, batch["labels"])
    b = logp.shape[0] // 2
    return logp[:b], logp[b:], n[:b], n[b:]


def _pair_collate(examples: Examples, pad_id: int) -> Batch:
    from raysys.training.collators import PairCollator

    return PairCollator(pad_id)(examples)


def _tokenize_pairs(rows: list[dict[str, Any]], tokenizer: Any, max_len: int,
                    overflow: str) -> tuple[Examples, dict[str, int]]:
    from raysys.training.collators import tokenize_pairs

    return tokenize_pairs(rows, tokenizer, max_len, overflow)


# ------------------------------------------------------------------------------------------
# sft
# ------------------------------------------------------------------------------------------


def _sft_tokenize(rows: list[dict[str, Any]], tokenizer: Any, max_len: int,
                  overflow: str) -> tuple[Examples, dict[str, int]]:
    from raysys.training.collators import tokenize_sft

    return tokenize_sft(rows, tokenizer, max_len, overflow)


def _sft_collate(examples: Examples, pad_id: int) -> Batch:
    from raysys.training.collators import SFTCollator

    return SFTCollator(pad_id)(examples)


def _sft_count(batch: Batch) -> float:
    return float((batch["labels"][:, 1:] != -100).sum())


def _sft_loss(model: Any, batch: Batch, cfg: TrainSettings,
              global_units: float) -> tuple[torch.Tensor, dict[str, float]]:
    from raysys.training.losses import sft_loss

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sft_loss(logits, batch["labels"], reduction="sum") / max(global_units, 1.0), {}


SFT = register_kind(TrainingKind("sft", "sft", _sft_tokenize, _sft_collate, _sft_count, _sft_loss,
                                 token_normalized=True))


# ------------------------------------------------------------------------------------------
# dpo (reference log-probs precomputed once, before LoRA wraps the model)
# ------------------------------------------------------------------------------------------


@torch.no_grad()
def reference_logps(model: Any, examples: Examples, indices: list[int], pad_id: int,
                    batch_size: int) -> dict[int, tuple[float, float]]:
    """Summed log-probs of chosen and rejected under the frozen reference model, per index."""
    was_training = model.training
    model.eval()
    out: dict[int, tuple[float, float]] = {}
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        pc, pr, _, _ = pair_logps(model, _pair_collate([examples[j] for j in idx], pad_id))
        for j, c, r in zip(idx, pc.tolist(), pr.tolist()):
            out[j] = (c, r)
    model.train(was_training)
    return out


def attach_reference(cfg: TrainSettings, model: Any, examples: Examples, pad_id: int, rank: int,
                     world: int, work_dir: Path) -> None:
    """Give each DPO example its reference log-probs, computed once and stored on disk (the
    reference is the starting model: with LoRA, the base before the adapter exists)."""
    import json

    import torch.distributed as dist

    if all("ref_chosen_logp" in e and "ref_rejected_logp" in e for e in examples):
        return   # the pairs already carry reference log-probs (meta)
    ref_path = work_dir / "ref_logps.json"
    if ref_path.is_file():
        ref = {int(k): v for k, v in json.loads(ref_path.read_text()).items()}
    else:
        mine = reference_logps(model, examples, list(range(rank, len(examples), world)), pad_id,
                               cfg.micro_batch_size)
        gathered: list[Any] = [None] * world
        if world > 1:
            dist.all_gather_object(gathered, mine)
        else:
            gathered = [mine]
        ref = {k: v for part in gathered for k, v in part.items()}
        if rank == 0:
            from raysys.data.io import atomic_write_json

            atomic_write_json(ref_path, {str(k): v for k, v in sorted(ref.items())})
    for i, e in enumerate(examples):
        e["ref_chosen_logp"], e["ref_rejected_logp"] = ref[i]


def _dpo_loss(model: Any, batch: Batch, cfg: TrainSettings,
              global_units: float) -> tuple[torch.Tensor, dict[str, float]]:
    from raysys.training.losses import dpo_loss

    pc, pr, nc, _ = pair_logps(model, batch)
    loss, cr, rr = dpo_loss(pc, pr, batch["ref_chosen_logps"], batch["ref_rejected_logps"],
                            beta=cfg.dpo_beta, label_smoothing=cfg.dpo_label_smoothing,
                            nll_weight=cfg.dpo_nll_weight, chosen_tokens=nc)
    return loss.mean(), {"reward_accuracy": float((cr > rr).float().mean()),
                         "reward_margin": float((cr - rr).mean()),
                         "chosen_reward": float(cr.mean()), "rejected_reward": float(rr.mean())}


DPO = register_kind(TrainingKind("dpo", "pairs", _tokenize_pairs, _pair_collate, count_pairs,
                                 _dpo_loss, prepare=attach_reference,
                                 metrics=("reward_accuracy", "reward_margin", "chosen_reward",
                                          "rejected_reward")))


# ------------------------------------------------------------------------------------------
# orpo
# ------------------------------------------------------------------------------------------


def _orpo_loss(model: Any, batch: Batch, cfg: TrainSettings,
               global_units: float) -> tuple[torch.Tensor, dict[str, float]]:
    from raysys.training.losses import orpo_loss

    pc, pr, nc, nr = pair_logps(model, batch)
    avg_c, avg_r = pc / nc.clamp(min=1), pr / nr.clamp(min=1)
    loss, log_odds = orpo_loss(-avg_c, avg_c, avg_r, lam=cfg.orpo_lambda)
    return loss.mean(), {"log_odds": float(log_odds.mean()),
                         "reward_accuracy": float((log_odds > 0).float().mean())}


ORPO = register_kind(TrainingKind("orpo", "pairs", _tokenize_pairs, _pair_collate, count_pairs,
                                  _orpo_loss, metrics=("log_odds", "reward_accuracy")))


# ------------------------------------------------------------------------------------------
# verifier (LLM2: TokenVerifier, pairwise token loss over packed negatives)
# ------------------------------------------------------------------------------------------


def _verifier_tokenize(rows: list[dict[str, Any]], tokenizer: Any, max_len: int,
                       overflow: str) -> tuple[Examples, dict[str, int]]:
    from raysys.training.collators import tokenize_token_pairs

    return tokenize_token_pairs(rows, tokenizer, max_len, overflow)


def _verifier_collate(examples: Examples, pad_id: int) -> Batch:
    from raysys.training.collators import TokenPairCollator

    return TokenPairCollator(pad_id)(examples)


def _verifier_count(batch: Batch) -> float:
    return float(batch["input_ids"].shape[0])


def _verifier_loss(model: Any, batch: Batch, cfg: TrainSettings,
                   global_units: float) -> tuple[torch.Tensor, dict[str, float]]:
    from raysys.models.verifier import score_token_pairs
    from raysys.training.losses import pairwise_token_loss

    s_gt, s_neg, mask = score_token_pairs(model, batch["input_ids"], batch["attention_mask"],
                                          batch["samples"], batch["sample_mask"])
    loss = pairwise_token_loss(s_gt, s_neg, mask)
    m = mask.bool() if mask is not None else torch.ones_like(s_gt, dtype=torch.bool)
    return loss, {"pair_accuracy": float(((s_gt > s_neg) & m).sum() / m.sum().clamp(min=1))}


def _verifier_model(cfg: TrainSettings) -> Any:
    from raysys.models.verifier import TokenVerifier

    return TokenVerifier.from_pretrained(
        cfg.model, dtype=torch.bfloat16 if cfg.use_bf16 else torch.float32,
        trust_remote_code=cfg.trust_remote_code, seed=cfg.seed)


def _verifier_lora(cfg: TrainSettings, model: Any) -> Any:
    """LoRA on the backbone only: the scalar head stays fully trained."""
    from raysys.training.model_setup import apply_lora

    model.backbone = apply_lora(model.backbone, cfg, causal_lm=False)
    return model


def _verifier_groups(cfg: TrainSettings, model: Any) -> list[dict[str, Any]]:
    """The scalar head starts from (near) zero and learns faster than the body it reads:
    ``head_lr`` (default ``lr``) for the head, ``lr`` for the body."""
    head = [p for p in model.head.parameters() if p.requires_grad]
    ids = {id(p) for p in head}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr or cfg.lr}]


VERIFIER = register_kind(TrainingKind("verifier", "token_pairs", _verifier_tokenize,
                                      _verifier_collate, _verifier_count, _verifier_loss,
                                      load_model=_verifier_model, apply_lora=_verifier_lora,
                                      metrics=("pair_accuracy",), param_groups=_verifier_groups))


# ------------------------------------------------------------------------------------------
# Model hooks with defaults
# ------------------------------------------------------------------------------------------


def load_model(kind: TrainingKind, cfg: TrainSettings) -> Any:
    """The kind's model (a causal LM unless the kind says otherwise)."""
    if kind.load_model is not None:
        return kind.load_model(cfg)
    from raysys.training.model_setup import load_causal_lm

    return load_causal_lm(cfg.model, bf16=cfg.use_bf16, trust_remote_code=cfg.trust_remote_code)


def with_lora(kind: TrainingKind, cfg: TrainSettings, model: Any) -> Any:
    """Apply LoRA when configured, where the kind says."""
    if not cfg.lora.enabled:
        return model
    if kind.apply_lora is not None:
        return kind.apply_lora(cfg, model)
    from raysys.training.model_setup import apply_lora

    return apply_lora(model, cfg)
