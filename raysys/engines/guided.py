"""GuidedEngine: LLM2's verifier-guided decoding, batched, behind the ordinary Engine protocol.

At each step the LLM proposes candidates (alpha-plausible tokens, optionally capped at the
top-k); wherever a row has more than one, ALL candidates of all such rows are scored by the
token verifier in one forward over the verifier's per-row KV cache (see
:mod:`raysys.engines.guided_scoring`). Candidate logits get ``+ beta * score``, every other
token ``-inf``; then greedy or temperature / top-k / top-p sampling. Steps where no row has a
choice skip the verifier (its cache catches up at the next call).

Unlike the authors' code (one sequence at a time), rows are batched with left padding and
per-row KV caches for both models; finished rows leave the batch. Batching, seeding, EOS and
stop-string trimming, and the returned :class:`Completion` are HFEngine's, so the two engines
are interchangeable: with ``beta = 0`` this engine decodes exactly HFEngine's greedy tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raysys.config import ModelSpec
from raysys.prompts import encode_prompt
from raysys.engines.base import Completion, SamplingParams
from raysys.engines.guided_scoring import VerifierCache, candidate_mask, pack_candidates
from raysys.engines.hf import HFEngine, _StopOnStrings, chunks, length_order
from raysys.errors import ModelError


@dataclass
class GuidedStats:
    """Work counters since construction (or :meth:`GuidedEngine.reset_stats`)."""

    steps: int = 0               # decoding steps (one LLM forward each)
    tokens: int = 0              # tokens generated, over all rows
    verifier_calls: int = 0      # verifier forwards (at most one per step)
    rows_scored: int = 0         # (row, step) pairs with more than one candidate
    candidates_scored: int = 0   # candidates scored, over all calls

    @property
    def candidates_per_call(self) -> float:
        """Mean candidates scored per verifier call (0 when no call was made)."""
        return self.candidates_scored / self.verifier_calls if self.verifier_calls else 0.0


def check_verifier_dir(path: str | Path) -> Path:
    """``path`` as a directory holding a saved verifier head, else one ``ModelError``."""
    from raysys.models.verifier import CONFIG_FILE, HEAD_FILE

    root = Path(path).expanduser()
    if not root.is_dir():
        raise ModelError(f"verifier directory not found: {root}")
    missing = [f for f in (HEAD_FILE, CONFIG_FILE) if not (root / f).is_file()]
    if missing:
        raise ModelError(f"verifier directory {root}: missing {', '.join(missing)} (expected a "
                         f"dir written by TokenVerifier.save_pretrained / `raysys train --kind "
                         f"verifier`, not a plain model dir)")
    return root


def check_same_vocab(llm_tokenizer: Any, verifier_dir: Path, verifier: Any) -> None:
    """Raise ``ModelError`` unless the verifier reads token ids as the LLM writes them.

    Compares the vocabularies when the verifier dir (or its adapter's base) carries a
    tokenizer; otherwise the verifier's embedding size against the LLM tokenizer's size.
    """
    from raysys.models.loading import adapter_base, is_adapter_dir, load_tokenizer

    tok_dir = verifier_dir
    if is_adapter_dir(tok_dir) and not (tok_dir / "tokenizer_config.json").is_file():
        tok_dir = Path(adapter_base(tok_dir))
    if (tok_dir / "tokenizer_config.json").is_file():
        theirs = load_tokenizer(str(tok_dir)).get_vocab()
        mine = llm_tokenizer.get_vocab()
        if theirs != mine:
            diff = sorted(set(theirs.items()) ^ set(mine.items()))[:3]
            raise ModelError(f"verifier {verifier_dir}: its tokenizer differs from the LLM's "
                             f"({len(theirs)} vs {len(mine)} tokens; e.g. {diff}); guided "
                             "decoding needs a verifier trained on the LLM's tokenizer")
        return
    size = verifier.backbone.get_input_embeddings().weight.shape[0]
    if size < len(llm_tokenizer):
        raise ModelError(f"verifier {verifier_dir}: embeds {size} token ids but the LLM's "
                         f"tokenizer has {len(llm_tokenizer)}; expected the LLM's tokenizer")


def _check_beta(beta: Any) -> None:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
        raise ModelError(f"GuidedEngine beta: expected a finite number >= 0, got {beta!r}")


class GuidedEngine(HFEngine):
    """An :class:`HFEngine` whose decoding loop is guided by a token verifier (LLM2)."""

    def __init__(self, model: ModelSpec | str, verifier: str, *, beta: float = 0.25,
                 alpha: float = 0.1, top_k: int = 0, batch_size: int = 64,
                 device: str | None = None, dtype: str = "auto") -> None:
        _check_beta(beta)
        if not 0 < alpha <= 1:
            raise ModelError(f"GuidedEngine alpha: expected 0 < alpha <= 1, got {alpha!r}")
        if top_k < 0:
            raise ModelError(f"GuidedEngine top_k: expected >= 0 (0 = no cap), got {top_k!r}")
        check_verifier_dir(verifier)      # before loading anything: a typo costs no model load
        self.beta, self.alpha, self.top_k = float(beta), float(alpha), int(top_k)
        self.verifier: Any = None
        self.verifier_path: str | None = None
        self.stats = GuidedStats()
        super().__init__(model, batch_size=batch_size, device=device, dtype=dtype)
        self.load_verifier(verifier)

    # -- lifecycle -----------------------------------------------------------------------

    def load_verifier(self, path: str) -> None:
        """Serve the verifier saved at ``path`` (same dtype and device as the LLM)."""
        from raysys.models.verifier import TokenVerifier

        root = check_verifier_dir(path)
        verifier = TokenVerifier.from_pretrained(root, dtype=self.dtype,
                                                 trust_remote_code=self.spec.trust_remote_code)
        if hasattr(verifier.backbone, "merge_and_unload"):    # LoRA: fold in for speed
            verifier.backbone = verifier.backbone.merge_and_unload()
        check_same_vocab(self.tokenizer, root, verifier)
        self.verifier, self.verifier_path = verifier.to(self.device).eval(), str(path)

    def set_beta(self, beta: float) -> None:
        """Weigh the verifier by ``beta`` from the next batch on; the models stay loaded (a beta
        sweep reuses one engine instead of reloading both models per value)."""
        _check_beta(beta)
        self.beta = float(beta)

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        """Serve a new LLM; the verifier stays and must still share its tokenizer."""
        super().load_weights(model_path, adapter)
        if getattr(self, "verifier", None) is not None:
            check_same_vocab(self.tokenizer, Path(self.verifier_path), self.verifier)

    def close(self) -> None:
        """Drop both models."""
        self.verifier = None
        super().close()

    def reset_stats(self) -> GuidedStats:
        """Return the counters so far and start new ones."""
        old, self.stats = self.stats, GuidedStats()
        return old

    # -- decoding --------------------------------------------------------------------------

    def _generate_batch(self, ids: list[list[int]], params: SamplingParams,
                        greedy: bool) -> list[Completion]:
        """Decode one batch of prompts (HFEngine.generate batches, orders and seeds them)."""
        from transformers import DynamicCache

        if self.verifier is None:
            raise RuntimeError("GuidedEngine.generate: the engine was closed")
        dev = self.device
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        seq = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=dev)
        real = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=dev)
        rows = torch.arange(len(ids), device=dev)         # batch index of each active row
        out_ids: list[list[int]] = [[] for _ in ids]
        out_lp: list[list[float]] = [[] for _ in ids]
        llm_cache, vcache = DynamicCache(config=self.model.config), VerifierCache(self.verifier)
        warpers = self._warpers(params, greedy)
        stop = _StopOnStrings(self.tokenizer, params.stop, width) if params.stop else None
        eos = torch.tensor(sorted(self.eos_ids), device=dev, dtype=torch.long)
        # As transformers' generate: positions count real tokens; padding gets position 0.
        pos = (real.cumsum(-1) - 1).masked_fill(real == 0, 0)
        step_ids = seq
        # beta 0 adds nothing to any logit: candidate-restricted decoding without the verifier
        scoring = self.beta != 0.0
        with torch.inference_mode():
            if scoring:
                vcache.prefill(seq, real)
            for step in range(params.max_new_tokens):
                logits = self.model(input_ids=step_ids, attention_mask=real, position_ids=pos,
                                    past_key_values=llm_cache, use_cache=True,
                                    logits_to_keep=1).logits[:, -1].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                chosen = self._choose(seq, real, logits, logprobs, vcache if scoring else None,
                                      warpers, greedy)
                seq = torch.cat([seq, chosen[:, None]], dim=1)
                real = torch.cat([real, torch.ones_like(real[:, :1])], dim=1)
                self.stats.steps += 1
                self.stats.tokens += len(chosen)
                lp = logprobs.gather(1, chosen[:, None]).squeeze(1)
                for r, t, v in zip(rows.tolist(), chosen.tolist(), lp.tolist()):
                    out_ids[r].append(t)
                    out_lp[r].append(v)
                done = torch.zeros_like(chosen, dtype=torch.bool)
                if not params.ignore_eos:
                    done |= torch.isin(chosen, eos)
                if stop is not None:
                    done |= stop(seq, logits)
                if step + 1 == params.max_new_tokens or bool(done.all()):
                    break
                if bool(done.any()):                       # finished rows leave the batch
                    keep = (~done).nonzero().squeeze(1)
                    seq, real, rows, chosen = seq[keep], real[keep], rows[keep], chosen[keep]
                    llm_cache.batch_select_indices(keep)
                    if scoring:
                        vcache.select(keep)
                step_ids = chosen[:, None]
                pos = real.sum(-1, keepdim=True) - 1
        return [self._completion(t, lp, params) for t, lp in zip(out_ids, out_lp)]

    def _choose(self, seq: torch.Tensor, real: torch.Tensor, logits: torch.Tensor,
                logprobs: torch.Tensor, vcache: VerifierCache | None, warpers: list[Any],
                greedy: bool) -> torch.Tensor:
        """The next token of every row: verifier-adjusted logits, then greedy or sampling
        (``vcache`` None: candidates only, no verifier)."""
        mask = candidate_mask(logprobs, self.alpha, self.top_k)
        cand_ids, cand_valid, counts = pack_candidates(logits, mask)
        scored = counts > 1
        if vcache is None:
            scored = torch.zeros_like(scored)
        guided = logits.masked_fill(~mask, float("-inf"))
        if bool(scored.any()):
            # Rows with one candidate ride along: their pending tokens are fed (needed later
            # anyway) and their single candidate fills the slot they would pad, so every
            # row's chosen token is in a candidate slot and keep() never recomputes it.
            base = seq.shape[1]
            scores = vcache.score(seq, real, cand_ids, cand_valid)
            bonus = torch.where(cand_valid & scored[:, None], self.beta * scores,
                                torch.zeros_like(scores))
            guided.scatter_add_(1, cand_ids, bonus.masked_fill(~cand_valid, 0.0))
            self.stats.verifier_calls += 1
            self.stats.rows_scored += int(scored.sum())
            self.stats.candidates_scored += int(counts[scored].sum())
        for warp in warpers:
            guided = warp(seq, guided)
        if greedy:
            chosen = guided.argmax(dim=-1)
        else:
            chosen = torch.multinomial(torch.softmax(guided, dim=-1), 1).squeeze(1)
        if bool(scored.any()):
            vcache.keep(base, (cand_ids == chosen[:, None]).float().argmax(dim=-1))
        return chosen

    @staticmethod
    def _warpers(params: SamplingParams, greedy: bool) -> list[Any]:
        """transformers' temperature / top-k / top-p warpers for a sampled request."""
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        if greedy:
            return []
        out: list[Any] = []
        if params.temperature != 1.0:
            out.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            out.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            out.append(TopPLogitsWarper(params.top_p))
        return out

    # -- reranking -------------------------------------------------------------------------

    def rerank_scores(self, prompts: list[str], completions: list[list[Completion | str]]
                      ) -> list[list[float]]:
        """The verifier's mean token score over each completion's ``token_ids`` (given its
        prompt), for best-of-k reranking; an empty completion scores ``-inf``. A completion given
        as text (a stored sample) is tokenized without special tokens."""
        if self.verifier is None:
            raise RuntimeError("GuidedEngine.rerank_scores: the engine was closed")
        if len(prompts) != len(completions):
            raise ValueError(f"rerank_scores: {len(prompts)} prompts but {len(completions)} "
                             "completion lists")
        def ids(c: Completion | str) -> list[int]:
            if isinstance(c, str):
                return list(self.tokenizer(c, add_special_tokens=False)["input_ids"])
            return list(c.token_ids)
        jobs = [(i, j, encode_prompt(self.tokenizer, p), ids(c))
                for i, (p, comps) in enumerate(zip(prompts, completions))
                for j, c in enumerate(comps)]
        out = [[float("-inf")] * len(comps) for comps in completions]
        order = length_order([len(p) + len(c) for _, _, p, c in jobs])
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for batch in chunks(order, self.batch_size):
                seqs = [jobs[k][2] + list(jobs[k][3]) for k in batch]
                width = max(len(s) for s in seqs)
                # Right padding: default position ids (0, 1, ...) are then right for real tokens.
                ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self.device)
                mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs],
                                    device=self.device)
                scores = self.verifier(ids, attention_mask=mask).cpu()
                for row, k in enumerate(batch):
                    i, j, prompt, comp = jobs[k]
                    if comp:
                        out[i][j] = float(scores[row, len(prompt):len(prompt) + len(comp)].mean())
        return out
