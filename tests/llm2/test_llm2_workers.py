"""Held-out pair accuracy: the verifier's ranking and the LLM's own logit ranking of the same
pairs, checked against per-pair computations done here by hand (one sequence at a time)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from raysys.config import ModelSpec
from raysys.llm2.workers import pair_accuracy
from raysys.models.loading import load_model, load_tokenizer
from raysys.models.verifier import TokenVerifier
from raysys.training.collators import render_chat_ids


def _rows(tok) -> list[dict]:
    rows = []
    for i, (q, a) in enumerate([("What is 2+3?", "2+3=5\n#### 5"), ("What is 7-4?", "7-4=3\n#### 3"),
                                ("What is 1+1?", "1+1=2\n#### 2")]):
        messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        ids = render_chat_ids(messages, tok)
        pos = [p for p in range(len(ids) - 6, len(ids) - 1)]
        samples = [[p, ids[p], (ids[p] + 7 + j) % 300 + 20] for j, p in enumerate(pos)]
        rows.append({"messages": json.dumps(messages), "samples": samples, "source": f"p{i}"})
    return rows + [{"messages": rows[0]["messages"], "samples": [], "source": "empty"}]


def test_pair_accuracy_matches_per_pair_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    rows = _rows(tok)
    verifier_dir = tmp_path / "v"
    TokenVerifier.from_pretrained(str(tiny_model_dir), seed=3).save_pretrained(verifier_dir)
    got = pair_accuracy(str(verifier_dir), ModelSpec(path=str(tiny_model_dir)), rows, batch_size=2)

    verifier = TokenVerifier.from_pretrained(str(verifier_dir)).eval()
    lm = load_model(str(tiny_model_dir), dtype="float32").eval()
    v_ok = l_ok = n = 0
    with torch.no_grad():
        for r in rows:
            ids = render_chat_ids(json.loads(r["messages"]), tok)
            x = torch.tensor([ids])
            logits = lm(input_ids=x).logits[0]
            for p, gt, neg in r["samples"]:
                n += 1
                l_ok += bool(logits[p - 1, gt] > logits[p - 1, neg])
                alt = x.clone()
                alt[0, p] = neg
                s_gt = verifier(x[:, :p + 1])[0, p]
                s_neg = verifier(alt[:, :p + 1])[0, p]
                v_ok += bool(s_gt > s_neg)
    assert got["pairs"] == n == 15
    assert got["llm_pair_acc"] == l_ok / n
    assert got["verifier_pair_acc"] == v_ok / n
