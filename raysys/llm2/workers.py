"""LLM2 on Ray: the explorer role actor, and held-out pair accuracy of a trained verifier
against the LLM's own ranking of the same pairs (the bar the verifier must clear to help)."""

from __future__ import annotations

import json
from typing import Any

import torch

from raysys.config import ModelSpec
from raysys.distributed.actors import RoleActor
from raysys.llm2.explore_config import ExploreConfig


class ExplorerActor(RoleActor):
    """Holds a :class:`~raysys.llm2.explorer.TokenExplorer` (base + optional expert model)."""

    def __init__(self, model: ModelSpec, expert: ModelSpec | None, cfg: ExploreConfig,
                 template: str = "chat") -> None:
        from raysys.distributed.artifacts import localize_model
        from raysys.llm2.explorer import TokenExplorer

        super().__init__(model)
        self.explorer = TokenExplorer(localize_model(model), localize_model(expert), cfg,
                                      template=template)

    def explore(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One ``token_pairs`` row per input row (empty ``samples`` when no position had a
        negative), so the stage can check every row was done."""
        return self.explorer(rows, keep_empty=True)

    def stats(self, _: list[Any]) -> list[dict[str, Any]]:
        return [self.explorer.total_stats()]


@torch.no_grad()
def pair_accuracy(verifier_dir: str, llm: ModelSpec, rows: list[dict[str, Any]],
                  batch_size: int = 16) -> dict[str, Any]:
    """Share of held-out pairs ranked right (gold above negative) by the verifier's scores and
    by the LLM's own next-token logits at the same positions; ties count as wrong."""
    from raysys.models.loading import load_model, load_tokenizer
    from raysys.models.verifier import TokenVerifier, score_token_pairs
    from raysys.training.collators import TokenPairCollator, tokenize_token_pairs

    tok = load_tokenizer(llm.path, padding_side="right")
    examples, _ = tokenize_token_pairs(
        [{"messages": r["messages"] if isinstance(r["messages"], list) else json.loads(r["messages"]),
          "samples": r["samples"], "render": r.get("render")} for r in rows if r["samples"]],
        tok, 4096, "truncate")
    verifier = TokenVerifier.from_pretrained(verifier_dir).eval()
    lm = load_model(llm.path, dtype="float32", device="cpu", adapter=llm.adapter, merge=True).eval()
    collate = TokenPairCollator(tok.pad_token_id)
    v_ok = l_ok = n = 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i:i + batch_size])
        s_gt, s_neg, mask = score_token_pairs(verifier, batch["input_ids"], batch["attention_mask"],
                                              batch["samples"], batch["sample_mask"])
        m = mask.bool()
        v_ok += int(((s_gt > s_neg) & m).sum())
        n += int(m.sum())
        logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        smp = batch["samples"].clamp(min=0)
        rows_idx = torch.arange(smp.shape[0])[:, None].expand_as(smp[..., 0])
        prev = (smp[..., 0] - 1).clamp(min=0)          # position p is predicted at p - 1
        z = logits[rows_idx, prev]
        z_gt = z.gather(-1, smp[..., 1:2]).squeeze(-1)
        z_neg = z.gather(-1, smp[..., 2:3]).squeeze(-1)
        l_ok += int(((z_gt > z_neg) & m.view_as(z_gt)).sum())
    return {"pairs": n, "verifier_pair_acc": v_ok / max(n, 1), "llm_pair_acc": l_ok / max(n, 1)}
