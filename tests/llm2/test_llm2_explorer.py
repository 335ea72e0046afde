"""TokenExplorer on the tiny model: positions index the rendered ids, determinism, the JSONL."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from raysys.config import ModelSpec
from raysys.data.formats import export_llm2_jsonl, import_llm2_jsonl
from raysys.data.io import DataError
from raysys.data.schema import conform
from raysys.data.synthetic import make_problems
from raysys.errors import ModelError
from raysys.llm2 import ExploreConfig
from raysys.llm2.explorer import TokenExplorer, prompt_ids, response_span, row_messages
from raysys.training.collators import render_chat_ids

# top_k keeps the random-init tiny model (nearly flat logits) to a handful of candidates
CFG = ExploreConfig(alpha=0.1, top_k=6, num_samples=3, batch_size=4)


def _problems(n: int, seed: int = 0) -> list[dict]:
    return [{"id": p["id"], "question": p["question"], "gold_solution": p["solution"]}
            for p in make_problems(n, seed)]


@pytest.fixture(scope="module")
def explorer(tiny_model_dir: Path) -> TokenExplorer:
    return TokenExplorer(ModelSpec(str(tiny_model_dir)), None, CFG, device="cpu")


def test_tiny_template_span_is_the_solution_plus_eos(explorer: TokenExplorer) -> None:
    tok = explorer.tokenizer
    row = _problems(1)[0]
    messages = row_messages(row, 0)
    ids = render_chat_ids(messages, tok)
    start, end = response_span(ids, prompt_ids(messages, tok), explorer.stop_ids)
    # <|bos|><|user|>\n{q}\n<|assistant|>\n{a}<|eos|>\n: explore {a}<|eos|>, not the trailing \n
    assert tok.decode(ids[:start]) == f"<|bos|><|user|>\n{row['question']}\n<|assistant|>\n"
    assert tok.decode(ids[start:end]) == row["gold_solution"] + "<|eos|>"
    assert end == len(ids) - 1


def test_positions_index_the_gold_token(explorer: TokenExplorer) -> None:
    rows = _problems(12)
    out = explorer(rows)
    tok = explorer.tokenizer
    stats = explorer.last_stats()
    assert stats["rows"] == 12 and stats["rows_kept"] == len(out) > 0
    assert stats["negatives"] == sum(len(r["samples"]) for r in out)
    banned = {tok.pad_token_id, tok.eos_token_id}
    for r in out:
        messages = json.loads(r["messages"])
        ids = render_chat_ids(messages, tok)
        start, end = response_span(ids, prompt_ids(messages, tok), explorer.stop_ids)
        for pos, gt, neg in r["samples"]:
            assert ids[pos] == gt
            assert start <= pos < end
            assert neg != gt and neg not in banned
    # every explored position has at most num_samples draws, and a position with a candidate
    # gets exactly num_samples
    assert stats["negatives"] == CFG.num_samples * stats["positions_with_candidate"]
    assert stats["candidates"] <= CFG.top_k * stats["positions"]


def test_max_len_cuts_positions(tiny_model_dir: Path, explorer: TokenExplorer) -> None:
    rows = _problems(6)
    prompt_lens = [len(prompt_ids(row_messages(r, 0), explorer.tokenizer)) for r in rows]
    max_len = min(prompt_lens) + 4     # a few response tokens of the shortest prompt at most
    short = TokenExplorer(ModelSpec(str(tiny_model_dir)), None,
                          dataclasses.replace(CFG, max_len=max_len), device="cpu")
    out = short(rows)
    stats = short.last_stats()
    assert stats["rows_truncated"] == 6
    assert 0 < stats["positions"] <= sum(max(0, max_len - n) for n in prompt_lens)
    assert out and all(pos < max_len for r in out for pos, _, _ in r["samples"])
    # the kept triples are exactly the full run's triples at positions < max_len
    full = {r["messages"]: [s for s in r["samples"] if s[0] < max_len] for r in explorer(rows)}
    assert {r["messages"]: r["samples"] for r in out} == {k: v for k, v in full.items() if v}


def test_sft_rows_and_bad_rows(explorer: TokenExplorer) -> None:
    problem = _problems(1)[0]
    sft = {"prompt": problem["question"], "response": problem["gold_solution"]}
    drop = lambda rows: [{k: v for k, v in r.items() if k != "source"} for r in rows]  # noqa: E731
    assert drop(explorer([sft])) == drop(explorer([problem]))
    assert explorer([problem])[0]["source"] == problem["id"] and explorer([sft])[0]["source"] is None
    with pytest.raises(DataError, match=r"problems row 1 \(id 'p'\): no gold_solution"):
        explorer([problem, {"id": "p", "question": "q", "gold_solution": None}])
    with pytest.raises(DataError, match=r"row 0: expected a problems row"):
        explorer([{"text": "x"}])


def test_column_batches_as_ray_data_passes_them(explorer: TokenExplorer) -> None:
    import numpy as np

    rows = _problems(3)
    ref = explorer(rows)
    cols = {k: np.array([r[k] for r in rows]) for k in ("id", "question", "gold_solution")}
    assert explorer.call_columns(cols) == {"messages": [r["messages"] for r in ref],
                                           "samples": [r["samples"] for r in ref],
                                           "render": ["chat"] * len(ref)}


def test_output_independent_of_batch_size_and_order(tiny_model_dir: Path,
                                                    explorer: TokenExplorer) -> None:
    rows = _problems(10, seed=3)
    ref = explorer(rows)
    by_key = {r["messages"]: r["samples"] for r in ref}
    for bs in (1, 3, 10):
        other = TokenExplorer(ModelSpec(str(tiny_model_dir)), None,
                              dataclasses.replace(CFG, batch_size=bs), device="cpu")
        got = other(rows[::-1])
        assert {r["messages"]: r["samples"] for r in got} == by_key
        assert [r["messages"] for r in got] == [r["messages"] for r in ref][::-1]
    # a different seed draws differently
    reseeded = TokenExplorer(ModelSpec(str(tiny_model_dir)), None,
                             dataclasses.replace(CFG, seed=1), device="cpu")
    assert {r["messages"]: r["samples"] for r in reseeded(rows)} != by_key


def test_contrast_with_itself_equals_base(tiny_model_dir: Path, explorer: TokenExplorer) -> None:
    spec = ModelSpec(str(tiny_model_dir))
    rows = _problems(4)
    contrast = TokenExplorer(spec, spec, dataclasses.replace(CFG, mode="contrast", gamma=2.0),
                             device="cpu")
    # z1 + gamma (z1 - z1) = z1 and identical candidate sets: the very same draws
    assert contrast(rows) == explorer(rows)


def test_expert_with_another_tokenizer_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from raysys.models.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", corpus=["abc def ghi"] * 20, vocab_size=300)
    with pytest.raises(ModelError, match=r"expert model .*other: its tokenizer differs"):
        TokenExplorer(ModelSpec(str(tiny_model_dir)), ModelSpec(str(other)), CFG, device="cpu")


def test_llm2_jsonl_round_trip_checks_every_triple(explorer: TokenExplorer,
                                                   tmp_path: Path) -> None:
    tok = explorer.tokenizer
    table = conform(explorer(_problems(3)), "token_pairs")
    path = export_llm2_jsonl(table, tmp_path / "pairs.jsonl")
    # the authors' JSONL has no provenance column: messages and samples round-trip
    assert import_llm2_jsonl(path, tokenizer=tok).select(["messages", "samples"]).equals(
        table.select(["messages", "samples"]))
    lines = path.read_text().splitlines()
    second = json.loads(lines[1])
    pos, gt, neg = second["samples"][2]
    ids = render_chat_ids(second["messages"], tok)

    def corrupt(triple: list[int], name: str) -> Path:
        rec = json.loads(lines[1])
        rec["samples"][2] = triple
        bad = tmp_path / name
        bad.write_text("\n".join([lines[0], json.dumps(rec), *lines[2:]]) + "\n")
        return bad

    wrong_gt = (gt + 1) % len(tok)
    with pytest.raises(DataError, match=rf"wrong_gt\.jsonl:2: triple 2 \[{pos}, {wrong_gt}, "
                                        rf"{neg}\]: the token at position {pos} is {gt} "):
        import_llm2_jsonl(corrupt([pos, wrong_gt, neg], "wrong_gt.jsonl"), tokenizer=tok)
    beyond = len(ids) + 5
    with pytest.raises(DataError, match=rf"beyond\.jsonl:2: triple 2 \[{beyond}, {gt}, {neg}\]: "
                                        rf"position {beyond} is beyond the sequence "
                                        rf"\(the messages render to {len(ids)} tokens"):
        import_llm2_jsonl(corrupt([beyond, gt, neg], "beyond.jsonl"), tokenizer=tok)
    with pytest.raises(DataError, match=r"neg\.jsonl:2: triple 2 .*not a token id"):
        import_llm2_jsonl(corrupt([pos, gt, len(tok) + 3], "neg.jsonl"), tokenizer=tok)
    # without a tokenizer only the shape is checked, as before
    assert import_llm2_jsonl(corrupt([pos, wrong_gt, neg], "unchecked.jsonl")).num_rows == 3
    # max_len drops the triples the authors' trainer would skip (pos >= max_len)
    cut = import_llm2_jsonl(path, tokenizer=tok, max_len=pos)
    kept = cut.column("samples").to_pylist()[1]
    assert kept == [s for s in second["samples"] if s[0] < pos] and len(kept) < 3


# --- zero_shot template: token pairs rendered as text, in the decoder's context ----------------


@pytest.fixture(scope="module")
def text_explorer(tiny_model_dir: Path) -> TokenExplorer:
    return TokenExplorer(ModelSpec(str(tiny_model_dir)), None, CFG, device="cpu",
                         template="zero_shot")


def test_text_rendering_is_the_decoders_context(text_explorer: TokenExplorer) -> None:
    from raysys.prompts import build_prompt
    from raysys.training.collators import encode_prompt, render_pair_ids, tokenize_sft

    tok = text_explorer.tokenizer
    row = _problems(1, seed=5)[0]
    messages = row_messages(row, 0, "zero_shot")
    prompt = build_prompt(row["question"], "zero_shot")
    assert messages == [{"role": "user", "content": prompt},
                        {"role": "assistant", "content": " " + row["gold_solution"]}]
    ids = render_pair_ids(messages, tok, "text")
    # exactly the ids SFT trains on (prompt with BOS, response, EOS) ...
    sft, _ = tokenize_sft([{"prompt": prompt, "response": " " + row["gold_solution"]}], tok, 512)
    assert ids == sft[0]["input_ids"]
    # ... and the prompt part is what the engines encode before decoding
    start = len(encode_prompt(tok, prompt))
    assert ids[:start] == encode_prompt(tok, prompt)
    assert tok.decode(ids[start:]) == " " + row["gold_solution"] + "<|eos|>"


def test_text_pairs_index_the_response(text_explorer: TokenExplorer) -> None:
    from raysys.training.collators import encode_prompt, render_pair_ids, tokenize_token_pairs

    tok = text_explorer.tokenizer
    out = text_explorer(_problems(10, seed=6))
    assert out and all(r["render"] == "text" for r in out)
    for r in out:
        messages = json.loads(r["messages"])
        ids = render_pair_ids(messages, tok, "text")
        start = len(encode_prompt(tok, messages[0]["content"]))
        assert all(ids[pos] == gt and start <= pos < len(ids) for pos, gt, _ in r["samples"])
    # training reads the row's render: the same ids, every sample kept
    examples, stats = tokenize_token_pairs(out, tok, 512)
    assert stats["kept"] == len(out)
    assert [e["input_ids"] for e in examples] == \
        [render_pair_ids(json.loads(r["messages"]), tok, "text") for r in out]
    # rendered as chat instead, the same triples would not index their gold tokens
    with pytest.raises(DataError, match="rendered token at position"):
        tokenize_token_pairs([{**out[0], "render": "chat"}], tok, 512)


def test_text_rows_round_trip_through_the_jsonl(text_explorer: TokenExplorer,
                                                tmp_path: Path) -> None:
    out = text_explorer(_problems(4, seed=7))
    path = export_llm2_jsonl(conform(out, "token_pairs"), tmp_path / "pairs.jsonl")
    back = import_llm2_jsonl(path, tokenizer=text_explorer.tokenizer)
    assert back.column("render").to_pylist() == ["text"] * len(out)
    assert back.column("samples").to_pylist() == [r["samples"] for r in out]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": json.loads(out[0]["messages"]),
                               "samples": out[0]["samples"], "render": "html"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'render' must be"):
        import_llm2_jsonl(bad, tokenizer=text_explorer.tokenizer)


def test_unknown_template_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="template: expected 'chat' or 'zero_shot'"):
        TokenExplorer(ModelSpec(str(tiny_model_dir)), None, CFG, device="cpu", template="few_shot")
