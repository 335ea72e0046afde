"""Tokenization of stage tables into training examples, and collators that pad them into batches.

One tokenizer function per loss kind, reading rows of the stage tables in
:mod:`raysys.data.schema`: ``sft`` (prompt, response), ``pairs`` (prompt, chosen, rejected, meta)
and ``token_pairs`` (messages, samples). Each returns ``(examples, stats)``.

Token layout (SFT and pairs): ``encode(prompt)`` with the tokenizer's special tokens (e.g. BOS),
then ``encode(response)`` without them, then EOS. Prompt and response are encoded separately, so
the label mask falls exactly on the response tokens. Labels are ``-100`` on prompt tokens.

Length policy, with ``P`` prompt tokens and ``R`` response tokens (EOS included):
- ``P >= max_len``: no response token would fit, so the example is *dropped* (either overflow mode);
- ``P + R > max_len``: ``overflow="truncate"`` keeps the prompt and cuts the response tail (EOS
  included) and counts the example as *truncated*; ``overflow="drop"`` drops it.
- ``stats = {"kept", "truncated", "dropped"}``; ``kept`` counts returned examples, truncated ones
  among them. For pairs, one over-long side truncates (or drops) the pair.

Collators pad on the right with ``pad_id`` (labels with -100) and return tensors.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from raysys.data.io import DataError
from raysys.data.schema import RENDERS
from raysys.errors import ModelError
from raysys.training.losses import IGNORE_INDEX

Overflow = Literal["truncate", "drop"]
Example = dict[str, Any]


def _new_stats() -> dict[str, int]:
    return {"kept": 0, "truncated": 0, "dropped": 0}


def _check_args(tokenizer: Any, max_len: int, overflow: str) -> None:
    if overflow not in ("truncate", "drop"):
        raise ValueError(f"overflow: expected 'truncate' or 'drop', got {overflow!r}")
    if max_len < 2:
        raise ValueError(f"max_len: expected >= 2, got {max_len}")
    if tokenizer.eos_token_id is None:
        raise ModelError("tokenizer has no eos_token; responses must end with EOS")


def _field(row: dict[str, Any], name: str, kind: str, index: int) -> str:
    """A required string field of row ``index``; a clear DataError otherwise."""
    if name not in row or row[name] is None:
        raise DataError(f"{kind} row {index}: missing field '{name}'")
    value = row[name]
    if not isinstance(value, str):
        raise DataError(f"{kind} row {index}: field '{name}' must be a string, "
                        f"got {type(value).__name__}")
    return value


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids, with the tokenizer's special tokens (BOS) as at inference time (one BOS even
    for a rendered chat prompt: :func:`raysys.prompts.encode_prompt`)."""
    from raysys.prompts import encode_prompt as encode

    return encode(tokenizer, prompt)


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Response ids without special tokens, EOS appended so the model learns to stop."""
    return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def _fit(prompt_ids: list[int], response_ids: list[int], max_len: int
         ) -> tuple[list[int], list[int]] | None:
    """``(input_ids, labels)`` cut to ``max_len`` by the response tail; None if no response fits."""
    if len(prompt_ids) >= max_len:
        return None
    response_ids = response_ids[:max_len - len(prompt_ids)]
    return prompt_ids + response_ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids


def tokenize_sft(rows: list[dict[str, Any]], tokenizer: Any, max_len: int,
                 overflow: Overflow = "truncate") -> tuple[list[Example], dict[str, int]]:
    """Tokenize ``sft`` rows into ``{"input_ids", "labels"}`` examples (see module docstring)."""
    _check_args(tokenizer, max_len, overflow)
    stats = _new_stats()
    examples: list[Example] = []
    for i, row in enumerate(rows):
        prompt_ids = encode_prompt(tokenizer, _field(row, "prompt", "sft", i))
        response_ids = encode_response(tokenizer, _field(row, "response", "sft", i))
        over = len(prompt_ids) + len(response_ids) > max_len
        fitted = _fit(prompt_ids, response_ids, max_len)
        if fitted is None or (over and overflow == "drop"):
            stats["dropped"] += 1
            continue
        stats["truncated"] += int(over)
        stats["kept"] += 1
        examples.append({"input_ids": fitted[0], "labels": fitted[1]})
    return examples, stats


def _ref_logps(meta: Any, index: int) -> dict[str, float]:
    """``ref_chosen_logp`` / ``ref_rejected_logp`` from a pairs row's JSON meta, when present."""
    if meta in (None, ""):
        return {}
    try:
        parsed = json.loads(meta) if isinstance(meta, str) else meta
    except json.JSONDecodeError as e:
        raise DataError(f"pairs row {index}: field 'meta' is not valid JSON ({e.msg})") from None
    if not isinstance(parsed, dict):
        raise DataError(f"pairs row {index}: field 'meta' must be a JSON object")
    out: dict[str, float] = {}
    for key in ("ref_chosen_logp", "ref_rejected_logp"):
        if key in parsed:
            if not isinstance(parsed[key], (int, float)) or isinstance(parsed[key], bool):
                raise DataError(f"pairs row {index}: meta.{key} must be a number, "
                                f"got {parsed[key]!r}")
            out[key] = float(parsed[key])
    return out


def tokenize_pairs(rows: list[dict[str, Any]], tokenizer: Any, max_len: int,
                   overflow: Overflow = "truncate") -> tuple[list[Example], dict[str, int]]:
    """Tokenize ``pairs`` rows into ``chosen_*`` / ``rejected_*`` input_ids and labels.

    Both sides share the prompt tokens. Reference log-probs from ``meta`` are carried as
    ``ref_chosen_logp`` / ``ref_rejected_logp`` when present (DPO computes them once).
    """
    _check_args(tokenizer, max_len, overflow)
    stats = _new_stats()
    examples: list[Example] = []
    for i, row in enumerate(rows):
        prompt_ids = encode_prompt(tokenizer, _field(row, "prompt", "pairs", i))
        example: Example = {}
        over = False
        for side in ("chosen", "rejected"):
            response_ids = encode_response(tokenizer, _field(row, side, "pairs", i))
            over = over or len(prompt_ids) + len(response_ids) > max_len
            fitted = _fit(prompt_ids, response_ids, max_len)
            if fitted is None:
                example = {}
                break
            example[f"{side}_input_ids"], example[f"{side}_labels"] = fitted
        if not example or (over and overflow == "drop"):
            stats["dropped"] += 1
            continue
        example.update(_ref_logps(row.get("meta"), i))
        stats["truncated"] += int(over)
        stats["kept"] += 1
        examples.append(example)
    return examples, stats


def render_chat_ids(messages: list[dict[str, str]], tokenizer: Any) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template.

    The one rendering used for ``token_pairs``: sample positions index into exactly these ids,
    so whatever builds that table must render with this function too.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("tokenizer has no chat_template; token_pairs messages cannot be rendered")
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_pair_ids(messages: list[dict[str, str]], tokenizer: Any, render: str | None) -> list[int]:
    """Token ids a ``token_pairs`` row's positions index into.

    ``chat`` (or None, the authors' files): :func:`render_chat_ids`. ``text``: the user turn
    is an already formatted prompt and the assistant turn its response, tokenized exactly as
    :func:`tokenize_sft` does (prompt with BOS, response, EOS): the rendering of models trained
    and decoded with plain prompt templates (``zero_shot``), whose verifier must score tokens
    in the context the decoder builds.
    """
    if render in (None, "chat"):
        return render_chat_ids(messages, tokenizer)
    if render not in RENDERS:
        raise DataError(f"token_pairs render {render!r}: expected one of {RENDERS}")
    if len(messages) != 2:
        raise DataError(f"token_pairs render 'text': expected [prompt, response] messages, got "
                        f"{len(messages)}")
    return encode_prompt(tokenizer, messages[0]["content"]) + \
        encode_response(tokenizer, messages[1]["content"])


def _parse_messages(row: dict[str, Any], index: int) -> list[dict[str, str]]:
    raw = row.get("messages")
    if raw is None:
        raise DataError(f"token_pairs row {index}: missing field 'messages'")
    try:
        messages = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise DataError(f"token_pairs row {index}: field 'messages' is not valid JSON ({e.msg})") from None
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise DataError(f"token_pairs row {index}: 'messages' must be a JSON list of "
                        f"{{role, content}} string objects")
    return messages


def _int_triple(triple: Any) -> list[int] | None:
    """``triple`` as three ints (numpy ints included, bools not), or None."""
    if isinstance(triple, (str, bytes, dict)) or not hasattr(triple, "__len__") or len(triple) != 3:
        return None
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in triple):
        return None
    return [int(v) for v in triple]


def _parse_samples(row: dict[str, Any], index: int, ids: list[int],
                   vocab_size: int) -> list[list[int]]:
    """Samples as ``[position, gt, neg]`` lists, checked against the rendered ids and vocab."""
    raw = row.get("samples")
    if raw is None:
        raise DataError(f"token_pairs row {index}: missing field 'samples'")
    if isinstance(raw, (str, bytes, dict)) or not hasattr(raw, "__iter__"):
        raise DataError(f"token_pairs row {index}: field 'samples' must be a list of "
                        f"[position, gt_id, neg_id], got {type(raw).__name__}")
    samples: list[list[int]] = []
    for j, triple in enumerate(raw):
        parsed = _int_triple(triple)
        if parsed is None:
            raise DataError(f"token_pairs row {index} sample {j}: expected [position, gt_id, "
                            f"neg_id] ints, got {triple!r}")
        pos, gt, neg = parsed
        if not 0 <= pos < len(ids):
            raise DataError(f"token_pairs row {index} sample {j}: position {pos} outside the "
                            f"{len(ids)} rendered tokens")
        if ids[pos] != gt:
            raise DataError(f"token_pairs row {index} sample {j}: rendered token at position "
                            f"{pos} is {ids[pos]}, sample's gt_id is {gt} (rendered with a "
                            f"different tokenizer or chat template?)")
        # an out-of-range id would only fail later, as an opaque embedding index error
        if not 0 <= neg < vocab_size:
            raise DataError(f"token_pairs row {index} sample {j}: neg_id {neg} is not a token id "
                            f"of this tokenizer (0..{vocab_size - 1})")
        samples.append(parsed)
    return samples


def tokenize_token_pairs(rows: list[dict[str, Any]], tokenizer: Any, max_len: int,
                         overflow: Overflow = "truncate") -> tuple[list[Example], dict[str, int]]:
    """Tokenize ``token_pairs`` rows into ``{"input_ids", "samples"}`` examples.

    Messages are rendered by :func:`render_pair_ids` (the row's ``render``). Truncation keeps the first ``max_len``
    tokens and drops samples at positions ``>= max_len`` (counted in ``stats["samples_dropped"]``);
    an example left with no sample is dropped. ``overflow="drop"`` drops over-long examples.
    """
    _check_args(tokenizer, max_len, overflow)
    stats = {**_new_stats(), "samples_dropped": 0}
    examples: list[Example] = []
    for i, row in enumerate(rows):
        ids = render_pair_ids(_parse_messages(row, i), tokenizer, row.get("render"))
        samples = _parse_samples(row, i, ids, len(tokenizer))
        over = len(ids) > max_len
        if over and overflow == "drop":
            stats["dropped"] += 1
            stats["samples_dropped"] += len(samples)
            continue
        kept = [s for s in samples if s[0] < max_len]
        stats["samples_dropped"] += len(samples) - len(kept)
        if not kept:
            stats["dropped"] += 1
            continue
        stats["truncated"] += int(over)
        stats["kept"] += 1
        examples.append({"input_ids": ids[:max_len], "samples": kept})
    return examples, stats


# ------------------------------------------------------------------------------------------
# Collators
# ------------------------------------------------------------------------------------------


def pad_right(seqs: Sequence[Sequence[int]], value: int) -> Tensor:
    """Stack integer sequences into a ``[N, max_len]`` long tensor, padded on the right."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


def _attention_mask(seqs: Sequence[Sequence[int]]) -> Tensor:
    return pad_right([[1] * len(s) for s in seqs], 0)


class SFTCollator:
    """``list[{"input_ids", "labels"}]`` -> ``{"input_ids", "attention_mask", "labels"}`` [B, L]."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[Example]) -> dict[str, Tensor]:
        ids = [e["input_ids"] for e in examples]
        return {"input_ids": pad_right(ids, self.pad_id),
                "attention_mask": _attention_mask(ids),
                "labels": pad_right([e["labels"] for e in examples], IGNORE_INDEX)}


class PairCollator:
    """Pairs -> one batch of ``2B`` rows: rows ``0..B-1`` chosen, rows ``B..2B-1`` rejected.

    One forward over both halves; split the per-row log-probs with ``[:B]`` / ``[B:]``. Adds
    ``ref_chosen_logps`` / ``ref_rejected_logps`` ``[B]`` when every example carries them.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[Example]) -> dict[str, Tensor]:
        ids = [e["chosen_input_ids"] for e in examples] + [e["rejected_input_ids"] for e in examples]
        labels = [e["chosen_labels"] for e in examples] + [e["rejected_labels"] for e in examples]
        batch = {"input_ids": pad_right(ids, self.pad_id),
                 "attention_mask": _attention_mask(ids),
                 "labels": pad_right(labels, IGNORE_INDEX)}
        for key in ("ref_chosen_logp", "ref_rejected_logp"):
            if examples and all(key in e for e in examples):
                batch[f"{key}s"] = torch.tensor([e[key] for e in examples], dtype=torch.float32)
        return batch


class TokenPairCollator:
    """Token pairs -> ``input_ids``, ``attention_mask`` [B, L], ``samples`` [B, S, 3] and
    ``sample_mask`` [B, S]; padding sample rows are ``[-1, -1, -1]`` (what
    :func:`raysys.models.verifier.score_token_pairs` treats as padding)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[Example]) -> dict[str, Tensor]:
        ids = [e["input_ids"] for e in examples]
        width = max((len(e["samples"]) for e in examples), default=0)
        samples = torch.full((len(examples), width, 3), -1, dtype=torch.long)
        for i, e in enumerate(examples):
            if e["samples"]:
                samples[i, :len(e["samples"])] = torch.as_tensor(e["samples"], dtype=torch.long)
        return {"input_ids": pad_right(ids, self.pad_id),
                "attention_mask": _attention_mask(ids),
                "samples": samples,
                "sample_mask": samples[..., 0] >= 0}
