"""``TokenExplorer``: problems / sft rows -> ``token_pairs`` rows, by teacher-forced forwards.

A worker for a Ray Data replica or an actor group: its constructor takes plain picklable
arguments (two ``ModelSpec`` and an ``ExploreConfig``) and loads the models itself; calling it
on a list of rows returns the ``token_pairs`` rows of those that got at least one pair.

Rendering: a problems row ``{question, gold_solution}`` becomes ``[user: question, assistant:
gold_solution]``; an sft row ``{prompt, response}`` becomes ``[user: prompt, assistant:
response]``. Ids are :func:`raysys.training.collators.render_chat_ids` of those messages, and
``pos`` indexes into exactly them. Explored positions are the tokens the model *generates* at
inference: from the end of the prompt rendered with ``add_generation_prompt=True`` (the
longest common prefix with the full rendering) up to and including the first stop token
(eos). The authors also keep the assistant header tokens eligible; we skip them since they
are never decoded, so the verifier is never asked about them. With the tiny models' template
(``<|bos|><|user|>\\n{q}\\n<|assistant|>\\n{a}<|eos|>\\n``) that is ``{a}`` plus ``<|eos|>``:
the trailing newline after eos is never generated and is not explored.

With a plain prompt ``template`` (``zero_shot``, for models trained and decoded without a chat
template) rows render as text instead: a problems row becomes ``[build_prompt(question,
template), response_text(gold_solution)]``, an sft row ``[prompt, response]``, tokenized as SFT
tokenizes them (:func:`raysys.training.collators.render_pair_ids`, ``render: text``), and the
explored span is the response ids plus EOS: the tokens the decoder generates after that prompt.

Determinism: each row's draws come from a generator seeded by a SHA-256 of its messages and
``cfg.seed``, so output does not depend on batch composition, order or the number of workers
(up to float ties: batched matmuls may round differently in the last bit).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from raysys.config import ModelSpec
from raysys.data.io import DataError
from raysys.errors import ModelError
from raysys.llm2.explore_config import ExploreConfig
from raysys.llm2.exploration import STAT_KEYS, explore_sequence, make_generator, summarize

COUNT_KEYS = ("rows", "rows_kept", "rows_truncated", *STAT_KEYS)


def row_messages(row: dict[str, Any], index: int,
                 template: str = "chat") -> list[dict[str, str]]:
    """The ``[user, assistant]`` messages of a problems row (question, gold_solution) or an sft
    row (prompt, response); ``DataError`` naming the row when neither is usable. With a plain
    ``template`` a problems row's question becomes that prompt and its solution the response
    text that follows it (see the module docstring)."""
    if row.get("question") is not None:
        user, assistant, kind = row["question"], row.get("gold_solution"), "problems"
        if assistant is None:
            raise DataError(f"problems row {index} (id {row.get('id')!r}): no gold_solution; "
                            "token exploration teacher-forces the gold solution")
    elif row.get("prompt") is not None and row.get("response") is not None:
        user, assistant, kind = row["prompt"], row["response"], "sft"
    else:
        raise DataError(f"row {index}: expected a problems row (question, gold_solution) or an "
                        f"sft row (prompt, response), got fields {sorted(row)}")
    if not isinstance(user, str) or not isinstance(assistant, str):
        raise DataError(f"{kind} row {index}: the prompt and solution fields must be strings")
    if template != "chat" and kind == "problems":
        from raysys.prompts import build_prompt, response_text
        user, assistant = build_prompt(user, template), response_text(assistant)
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def prompt_ids(messages: list[dict[str, str]], tokenizer: Any) -> list[int]:
    """Ids of ``messages[:-1]`` plus the generation prompt, rendered as ``render_chat_ids``
    renders (template to text, then encode without special tokens)."""
    text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def response_span(ids: list[int], prefix: list[int], stop_ids: set[int]) -> tuple[int, int]:
    """``(start, end)`` of the generated part of ``ids``: start = length of the common prefix
    with ``prefix`` (at least 1), end = just past the first stop id at or after start."""
    start = 0
    for a, b in zip(ids, prefix):
        if a != b:
            break
        start += 1
    start = max(1, min(start, len(ids)))
    end = next((p + 1 for p in range(start, len(ids)) if ids[p] in stop_ids), len(ids))
    return start, end


@dataclass
class _Item:
    index: int
    messages: list[dict[str, str]]
    key: str
    ids: list[int]
    span: tuple[int, int]


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen if isinstance(gen, (list, tuple)) else [gen])
    return {int(i) for i in ids if i is not None}


class TokenExplorer:
    """Teacher-forced base (and optional expert) model over gold solutions -> token pairs.

    ``TokenExplorer(base, expert, cfg)(rows) -> list[token_pairs row]``; :meth:`last_stats` /
    :meth:`total_stats` give the counts of the last call / all calls (positions, positions with
    a candidate, negatives, candidates, rows, rates).
    """

    def __init__(self, base: ModelSpec, expert: ModelSpec | None, cfg: ExploreConfig,
                 device: str | None = None, template: str = "chat") -> None:
        from raysys.models.loading import load_tokenizer

        cfg.validate("explore")
        cfg.check_expert(expert, "explore", "expert")
        if template not in ("chat", "zero_shot"):
            raise ValueError(f"template: expected 'chat' or 'zero_shot', got {template!r}")
        self.cfg = cfg
        self.template = template
        self.render = "chat" if template == "chat" else "text"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(base.path, padding_side="right",
                                        trust_remote_code=base.trust_remote_code)
        self.base = self._load(base)
        self.expert = None
        if expert is not None:
            self._check_same_tokenizer(base, expert)
            self.expert = self._load(expert)
        self.vocab_size = len(self.tokenizer)
        self.stop_ids = _eos_ids(self.tokenizer, self.base)
        # pad and eos are never negatives: the authors' pad is eos, and eos as a "wrong token"
        # would teach the verifier about stopping, which it is never asked at decode time.
        self.exclude = sorted(self.stop_ids | {self.tokenizer.pad_token_id} - {None})
        self._last = dict.fromkeys(COUNT_KEYS, 0)
        self._total = dict.fromkeys(COUNT_KEYS, 0)
        self._seconds = 0.0
        self._last_seconds = 0.0

    def _load(self, spec: ModelSpec) -> Any:
        from raysys.models.loading import load_model

        return load_model(spec.path, dtype=spec.dtype, device=self.device,
                          trust_remote_code=spec.trust_remote_code, adapter=spec.adapter,
                          merge=True)

    def _check_same_tokenizer(self, base: ModelSpec, expert: ModelSpec) -> None:
        from raysys.models.loading import load_tokenizer

        other = load_tokenizer(expert.path, trust_remote_code=expert.trust_remote_code)
        mine, theirs = self.tokenizer.get_vocab(), other.get_vocab()
        if mine != theirs:
            diff = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
            raise ModelError(f"expert model {expert.path}: its tokenizer differs from the base "
                             f"model {base.path}'s ({len(theirs)} vs {len(mine)} tokens, e.g. "
                             f"{diff}); both models must read the same token ids")

    # -------------------------------------------------------------------------------------

    def _prepare(self, rows: list[dict[str, Any]]) -> list[_Item]:
        from raysys.training.collators import encode_prompt, render_pair_ids

        items = []
        for i, row in enumerate(rows):
            messages = row_messages(row, i, self.template)
            key = json.dumps(messages, ensure_ascii=False)
            ids = render_pair_ids(messages, self.tokenizer, self.render)
            prefix = (prompt_ids(messages, self.tokenizer) if self.render == "chat"
                      else encode_prompt(self.tokenizer, messages[0]["content"]))
            start, end = response_span(ids, prefix, self.stop_ids)
            if len(ids) > self.cfg.max_len:
                self._last["rows_truncated"] += 1
                ids = ids[:self.cfg.max_len]
                end = min(end, len(ids))
                start = min(start, end)
            items.append(_Item(i, messages, key, ids, (start, end)))
        return items

    @torch.inference_mode()
    def _logits(self, model: Any, batch: list[_Item], lo: int, hi: int) -> torch.Tensor:
        """``[B, hi - lo, V]`` float logits of rows ``lo .. hi-1`` (right-padded batch): only
        the rows some sequence needs go through the LM head (``logits_to_keep``)."""
        pad = self.tokenizer.pad_token_id
        width = max(len(it.ids) for it in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for b, it in enumerate(batch):
            input_ids[b, :len(it.ids)] = torch.as_tensor(it.ids)
            attention[b, :len(it.ids)] = 1
        keep = torch.arange(lo, hi, device=self.device)
        out = model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                    logits_to_keep=keep, use_cache=False)
        return out.logits[..., :self.vocab_size].float()

    def __call__(self, rows: list[dict[str, Any]], keep_empty: bool = False) -> list[dict[str, Any]]:
        """Token pairs of ``rows`` (problems or sft rows), in input order, each with ``source``
        (the row's ``id`` or ``source``); rows without any pair are left out (counted in the
        stats as ``rows - rows_kept``) unless ``keep_empty`` (one row per input row, as a
        resumable stage needs)."""
        began = time.perf_counter()
        self._last = dict.fromkeys(COUNT_KEYS, 0)
        items = self._prepare(rows)
        samples: dict[int, list[list[int]]] = {}
        # Longest first, so each micro-batch pads little and memory peaks on the first batch.
        order = sorted(items, key=lambda it: -len(it.ids))
        bs = self.cfg.batch_size
        for k in range(0, len(order), bs):
            batch = order[k:k + bs]
            live = [it for it in batch if it.span[1] > it.span[0]]
            if not live:
                continue
            lo = min(it.span[0] for it in live) - 1
            hi = max(it.span[1] for it in live) - 1
            z1 = self._logits(self.base, batch, lo, hi)
            z2 = self._logits(self.expert, batch, lo, hi) if self.expert is not None else None
            for b, it in enumerate(batch):
                triples, st = explore_sequence(
                    it.ids, z1[b], None if z2 is None else z2[b], it.span,
                    alpha=self.cfg.alpha, top_k=self.cfg.top_k, mode=self.cfg.mode,
                    gamma=self.cfg.gamma, num_samples=self.cfg.num_samples,
                    temperature=self.cfg.temperature, exclude=self.exclude,
                    generator=make_generator(it.key, self.cfg.seed), first_row=lo)
                for key in STAT_KEYS:
                    self._last[key] += st[key]
                if triples:
                    samples[it.index] = [list(t) for t in triples]
        out = [{"messages": it.key, "samples": samples.get(it.index, []), "render": self.render,
                "source": rows[it.index].get("id") or rows[it.index].get("source")}
               for it in items if keep_empty or it.index in samples]
        self._last["rows"] = len(rows)
        self._last["rows_kept"] = sum(bool(r["samples"]) for r in out)
        for key in COUNT_KEYS:
            self._total[key] += self._last[key]
        self._seconds += time.perf_counter() - began
        self._last_seconds = time.perf_counter() - began
        return out

    def call_columns(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """:meth:`__call__` for a column batch (``{column: values}``, as Ray Data's
        ``map_batches`` passes): returns ``{"messages": [...], "samples": [...], "render": [...]}``."""
        names = list(batch)
        rows = [dict(zip(names, values)) for values in zip(*(batch[n] for n in names))]
        out = self(rows)
        return {key: [r[key] for r in out] for key in ("messages", "samples", "render")}

    def last_stats(self) -> dict[str, Any]:
        """Counts and rates of the last call (see :func:`raysys.llm2.exploration.summarize`)."""
        return {**summarize(self._last), "seconds": self._last_seconds}

    def total_stats(self) -> dict[str, Any]:
        """Counts and rates summed over every call of this worker."""
        return {**summarize(self._total), "seconds": self._seconds}
