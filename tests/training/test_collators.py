"""Tokenization per loss kind and padding collators, with the tiny model's real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from raysys.data.io import DataError
from raysys.training.collators import (PairCollator, SFTCollator, TokenPairCollator,
                                       render_chat_ids, tokenize_pairs, tokenize_sft,
                                       tokenize_token_pairs)

PROMPT = "Question: Tom has 3 apples and buys 4 more. How many?\nAnswer:"
RESPONSE = " 3+4=7\n#### 7"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _lens(tok: Any, prompt: str, response: str) -> tuple[int, int]:
    """Prompt length with BOS, response length with EOS, counted independently of the code."""
    return (len(tok(prompt)["input_ids"]),
            len(tok(response, add_special_tokens=False)["input_ids"]) + 1)


def test_sft_labels_cover_exactly_the_response(tokenizer: Any) -> None:
    examples, stats = tokenize_sft([{"prompt": PROMPT, "response": RESPONSE}], tokenizer, 256)
    assert stats == {"kept": 1, "truncated": 0, "dropped": 0}
    ids, labels = examples[0]["input_ids"], examples[0]["labels"]
    n_prompt, n_response = _lens(tokenizer, PROMPT, RESPONSE)
    assert len(ids) == len(labels) == n_prompt + n_response
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(labels[n_prompt:-1]) == RESPONSE
    assert tokenizer.decode(ids[:n_prompt], skip_special_tokens=True) == PROMPT


def test_sft_truncation_and_drop_counts(tokenizer: Any) -> None:
    n_prompt, n_response = _lens(tokenizer, PROMPT, RESPONSE)
    rows = [
        {"prompt": PROMPT, "response": RESPONSE},          # fits exactly
        {"prompt": PROMPT, "response": RESPONSE + " 99"},  # 2+ tokens too long
        {"prompt": PROMPT + PROMPT, "response": "1"},      # prompt alone exceeds max_len
    ]
    max_len = n_prompt + n_response
    examples, stats = tokenize_sft(rows, tokenizer, max_len, overflow="truncate")
    assert stats == {"kept": 2, "truncated": 1, "dropped": 1}
    cut = examples[1]
    assert len(cut["input_ids"]) == max_len
    assert cut["input_ids"][-1] != tokenizer.eos_token_id  # the tail (and EOS) was cut
    assert sum(label != -100 for label in cut["labels"]) == max_len - n_prompt
    examples, stats = tokenize_sft(rows, tokenizer, max_len, overflow="drop")
    assert stats == {"kept": 1, "truncated": 0, "dropped": 2}
    # A prompt of exactly max_len leaves no response token: dropped too.
    _, stats = tokenize_sft([{"prompt": PROMPT, "response": "1"}], tokenizer, n_prompt)
    assert stats == {"kept": 0, "truncated": 0, "dropped": 1}


def test_sft_bad_rows_name_the_row_and_field(tokenizer: Any) -> None:
    with pytest.raises(DataError, match="sft row 1: missing field 'response'"):
        tokenize_sft([{"prompt": "a", "response": "b"}, {"prompt": "a"}], tokenizer, 64)
    with pytest.raises(DataError, match="sft row 0: field 'prompt' must be a string, got int"):
        tokenize_sft([{"prompt": 3, "response": "b"}], tokenizer, 64)
    with pytest.raises(ValueError, match="overflow"):
        tokenize_sft([], tokenizer, 64, overflow="wrap")  # type: ignore[arg-type]


def test_sft_collator_pads_right(tokenizer: Any) -> None:
    examples, _ = tokenize_sft([{"prompt": PROMPT, "response": RESPONSE},
                                {"prompt": "Q: 1+1?", "response": " 2"}], tokenizer, 256)
    batch = SFTCollator(pad_id=tokenizer.pad_token_id)(examples)
    long_len, short_len = len(examples[0]["input_ids"]), len(examples[1]["input_ids"])
    assert batch["input_ids"].shape == batch["labels"].shape == (2, long_len)
    assert batch["input_ids"][1, short_len:].eq(tokenizer.pad_token_id).all()
    assert batch["labels"][1, short_len:].eq(-100).all()
    assert batch["attention_mask"].sum(1).tolist() == [long_len, short_len]
    assert batch["labels"][1, :short_len].tolist() == examples[1]["labels"]


def test_pairs_share_prompt_carry_ref_logps_and_stack_chosen_first(tokenizer: Any) -> None:
    rows = [
        {"prompt": PROMPT, "chosen": RESPONSE, "rejected": " 3+4=8\n#### 8",
         "meta": json.dumps({"ref_chosen_logp": -3.5, "ref_rejected_logp": -4.25})},
        {"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5 because 2+2 is five",
         "meta": json.dumps({"ref_chosen_logp": -1.0, "ref_rejected_logp": -9.0, "x": 1})},
    ]
    examples, stats = tokenize_pairs(rows, tokenizer, 256)
    assert stats == {"kept": 2, "truncated": 0, "dropped": 0}
    n_prompt = len(tokenizer(PROMPT)["input_ids"])
    first = examples[0]
    assert first["chosen_input_ids"][:n_prompt] == first["rejected_input_ids"][:n_prompt]
    assert first["chosen_labels"][:n_prompt] == [-100] * n_prompt
    assert first["rejected_labels"][n_prompt:] == first["rejected_input_ids"][n_prompt:]
    assert (first["ref_chosen_logp"], first["ref_rejected_logp"]) == (-3.5, -4.25)

    batch = PairCollator(pad_id=tokenizer.pad_token_id)(examples)
    assert batch["input_ids"].shape[0] == 4
    order = [e["chosen_input_ids"] for e in examples] + [e["rejected_input_ids"] for e in examples]
    for row, ids in enumerate(order):
        assert batch["input_ids"][row, :len(ids)].tolist() == ids
        assert batch["attention_mask"][row].sum().item() == len(ids)
    assert batch["ref_chosen_logps"].tolist() == [-3.5, -1.0]
    assert batch["ref_rejected_logps"].tolist() == [-4.25, -9.0]


def test_pairs_overflow_and_missing_refs(tokenizer: Any) -> None:
    n_prompt = len(tokenizer(PROMPT)["input_ids"])
    rows = [{"prompt": PROMPT, "chosen": " 7", "rejected": " 8 " * 20, "meta": None}]
    examples, stats = tokenize_pairs(rows, tokenizer, n_prompt + 5)
    assert stats == {"kept": 1, "truncated": 1, "dropped": 0}
    assert len(examples[0]["rejected_input_ids"]) == n_prompt + 5
    assert "ref_chosen_logp" not in examples[0]
    assert "ref_chosen_logps" not in PairCollator(0)(examples)
    _, stats = tokenize_pairs(rows, tokenizer, n_prompt + 5, overflow="drop")
    assert stats == {"kept": 0, "truncated": 0, "dropped": 1}
    with pytest.raises(DataError, match="pairs row 0: field 'meta' is not valid JSON"):
        tokenize_pairs([{**rows[0], "meta": "{oops"}], tokenizer, 64)
    with pytest.raises(DataError, match="pairs row 0: meta.ref_chosen_logp must be a number"):
        tokenize_pairs([{**rows[0], "meta": '{"ref_chosen_logp": "x"}'}], tokenizer, 64)


def _token_pair_row(tokenizer: Any) -> tuple[dict[str, Any], list[int]]:
    messages = [{"role": "user", "content": "What is 3+4?"},
                {"role": "assistant", "content": "3+4=7\n#### 7"}]
    ids = render_chat_ids(messages, tokenizer)
    last = len(ids) - 2
    samples = [[3, ids[3], 7], [last, ids[last], 9], [last, ids[last], 10]]
    return {"messages": json.dumps(messages), "samples": samples}, ids


def test_token_pairs_render_truncate_and_collate(tokenizer: Any) -> None:
    row, ids = _token_pair_row(tokenizer)
    assert ids[0] == tokenizer.bos_token_id
    assert ids == list(tokenizer.apply_chat_template(json.loads(row["messages"]),
                                                     tokenize=True, return_dict=False))
    examples, stats = tokenize_token_pairs([row], tokenizer, 1024)
    assert stats == {"kept": 1, "truncated": 0, "dropped": 0, "samples_dropped": 0}
    assert examples[0] == {"input_ids": ids, "samples": row["samples"]}

    max_len = len(ids) - 3  # cuts the two samples at position len - 2
    examples, stats = tokenize_token_pairs([row, row], tokenizer, max_len)
    assert stats == {"kept": 2, "truncated": 2, "dropped": 0, "samples_dropped": 4}
    assert examples[0]["input_ids"] == ids[:max_len] and examples[0]["samples"] == [row["samples"][0]]
    _, stats = tokenize_token_pairs([row], tokenizer, 3)  # no sample survives
    assert stats == {"kept": 0, "truncated": 0, "dropped": 1, "samples_dropped": 3}
    _, stats = tokenize_token_pairs([row], tokenizer, max_len, overflow="drop")
    assert stats == {"kept": 0, "truncated": 0, "dropped": 1, "samples_dropped": 3}

    full, _ = tokenize_token_pairs([row], tokenizer, 1024)
    batch = TokenPairCollator(pad_id=tokenizer.pad_token_id)(full + examples[:1])
    assert batch["samples"].shape == (2, 3, 3)
    assert batch["samples"][1, 1:].eq(-1).all()
    assert batch["sample_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["attention_mask"].sum(1).tolist() == [len(ids), max_len]
    assert batch["input_ids"][1, max_len:].eq(tokenizer.pad_token_id).all()


def test_token_pairs_bad_rows(tokenizer: Any) -> None:
    row, ids = _token_pair_row(tokenizer)
    wrong_gt = {**row, "samples": [[3, ids[3] + 1, 7]]}
    with pytest.raises(DataError, match=f"token_pairs row 0 sample 0: rendered token at position "
                                        f"3 is {ids[3]}"):
        tokenize_token_pairs([wrong_gt], tokenizer, 1024)
    with pytest.raises(DataError, match="position 999 outside"):
        tokenize_token_pairs([{**row, "samples": [[999, 1, 2]]}], tokenizer, 1024)
    with pytest.raises(DataError, match="token_pairs row 1: field 'messages' is not valid JSON"):
        tokenize_token_pairs([row, {**row, "messages": "[{"}], tokenizer, 1024)
    with pytest.raises(DataError, match="expected \\[position, gt_id, neg_id\\]"):
        tokenize_token_pairs([{**row, "samples": [[3, ids[3]]]}], tokenizer, 1024)
    with pytest.raises(DataError, match=r"sample 0: expected \[position, gt_id, neg_id\] ints, "
                                        r"got \[True, "):
        tokenize_token_pairs([{**row, "samples": [[True, ids[1], 7]]}], tokenizer, 1024)
    for neg in (-1, len(tokenizer)):
        with pytest.raises(DataError, match=rf"sample 0: neg_id {neg} is not a token id of this "
                                            rf"tokenizer \(0\.\.{len(tokenizer) - 1}\)"):
            tokenize_token_pairs([{**row, "samples": [[3, ids[3], neg]]}], tokenizer, 1024)
    with pytest.raises(DataError, match="token_pairs row 0: field 'samples' must be a list of "
                                        r"\[position, gt_id, neg_id\], got int"):
        tokenize_token_pairs([{**row, "samples": 5}], tokenizer, 1024)


def test_final_eos_is_trained_when_eos_is_also_pad(tokenizer: Any) -> None:
    # SmolLM2-Instruct's EOS and PAD are one token (<|im_end|>, id 2). Padding is marked by
    # lengths, never by `id == pad`, so the response's own final EOS keeps its label and its
    # attention; masking it would teach the model never to stop.
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.pad_token = tok.eos_token
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos
    short, _ = tokenize_sft([{"prompt": PROMPT, "response": " 7"}], tok, 256)
    long, _ = tokenize_sft([{"prompt": PROMPT, "response": RESPONSE}], tok, 256)
    batch = SFTCollator(tok.pad_token_id)([short[0], long[0]])
    n = len(short[0]["input_ids"])
    assert batch["input_ids"][0, n - 1] == eos and batch["labels"][0, n - 1] == eos
    assert batch["attention_mask"][0, n - 1] == 1
    assert batch["input_ids"][0, n:].tolist() == [eos] * (batch["input_ids"].shape[1] - n)
    assert batch["labels"][0, n:].tolist() == [-100] * (batch["input_ids"].shape[1] - n)
    assert batch["attention_mask"][0, n:].sum() == 0
    assert batch["labels"][1, -1] == eos            # the longest row ends in its EOS label
    pairs, _ = tokenize_pairs([{"prompt": PROMPT, "chosen": " 7", "rejected": RESPONSE}], tok, 256)
    pb = PairCollator(tok.pad_token_id)(pairs)
    m = len(pairs[0]["chosen_input_ids"])
    assert pb["labels"][0, m - 1] == eos and pb["labels"][1, -1] == eos
    assert pb["attention_mask"][0, m - 1] == 1 and pb["attention_mask"][0, m:].sum() == 0
