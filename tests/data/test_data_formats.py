"""LLaMA-Factory, LLM2 verifier JSONL and OpenAI messages: round trips, real layouts, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from raysys.data.formats import (
    export_llamafactory, export_llm2_jsonl, export_openai_messages, import_llamafactory,
    import_llm2_jsonl, import_openai_messages,
)
from raysys.data.io import DataError
from raysys.data.schema import SchemaError, conform

SFT_ROWS = [
    {"prompt": "Question: What is 2+3?\nAnswer:", "response": "2+3=5\n#### 5", "source": "weak"},
    {"prompt": "Question: Ünïcode – 7-4?\nAnswer:", "response": "7-4=3\n#### 3", "source": None},
]
PAIR_ROWS = [
    {"prompt": "Question: 9-2?\nAnswer:", "chosen": "9-2=7\n#### 7", "rejected": "9-2=6\n#### 6",
     "meta": json.dumps({"problem_id": "p1"})},
    {"prompt": "Question: 4+4?\nAnswer:", "chosen": "#### 8", "rejected": "#### 9", "meta": None},
]


def _sft() -> pa.Table:
    return conform(SFT_ROWS, "sft")


def _pairs() -> pa.Table:
    return conform(PAIR_ROWS, "pairs")


def _write_json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# ------------------------------------------------------------------------------------------
# LLaMA-Factory
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("formatting, legacy", [("alpaca", False), ("alpaca", True), ("sharegpt", False)])
def test_llamafactory_round_trip(tmp_path: Path, formatting: str, legacy: bool) -> None:
    info_path = export_llamafactory({"w2s_sft": _sft(), "w2s_pairs": _pairs()}, tmp_path,
                                    formatting=formatting, legacy_pairs=legacy)
    assert info_path == tmp_path / "dataset_info.json"
    back = import_llamafactory(tmp_path)
    assert set(back) == {"w2s_sft", "w2s_pairs"}
    assert back["w2s_sft"].to_pylist() == SFT_ROWS
    assert back["w2s_pairs"].to_pylist() == PAIR_ROWS


def test_llamafactory_alpaca_layout_matches_the_paper(tmp_path: Path) -> None:
    export_llamafactory({"sft": _sft(), "paired": _pairs()}, tmp_path, legacy_pairs=True)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info == {
        "sft": {"file_name": "sft.json",
                "columns": {"prompt": "instruction", "query": "input", "response": "output"}},
        "paired": {"file_name": "paired.json", "ranking": True,
                   "columns": {"prompt": "instruction", "query": "input", "response": "output"}},
    }
    paired = json.loads((tmp_path / "paired.json").read_text())
    assert paired[0]["instruction"] == PAIR_ROWS[0]["prompt"] and paired[0]["input"] == ""
    assert paired[0]["output"] == [PAIR_ROWS[0]["chosen"], PAIR_ROWS[0]["rejected"]]


def test_llamafactory_current_pairs_and_sharegpt_layout(tmp_path: Path) -> None:
    export_llamafactory({"p": _pairs()}, tmp_path / "a")
    info = json.loads((tmp_path / "a/dataset_info.json").read_text())
    assert info["p"]["columns"] == {"prompt": "instruction", "query": "input",
                                    "chosen": "chosen", "rejected": "rejected"}
    export_llamafactory({"p": _pairs()}, tmp_path / "s", formatting="sharegpt")
    entry = json.loads((tmp_path / "s/dataset_info.json").read_text())["p"]
    assert entry["formatting"] == "sharegpt" and entry["ranking"] is True
    assert entry["columns"] == {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
    row = json.loads((tmp_path / "s/p.json").read_text())[0]
    assert row["conversations"] == [{"from": "human", "value": PAIR_ROWS[0]["prompt"]}]
    assert row["chosen"] == {"from": "gpt", "value": PAIR_ROWS[0]["chosen"]}


def test_llamafactory_export_keeps_other_entries(tmp_path: Path) -> None:
    _write_json(tmp_path / "dataset_info.json", {"alpaca_en": {"hf_hub_url": "x/alpaca"}})
    export_llamafactory({"mine": _sft()}, tmp_path)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"alpaca_en", "mine"}
    # hub-only entries are skipped when importing everything, an error when asked for by name
    assert set(import_llamafactory(tmp_path)) == {"mine"}
    with pytest.raises(DataError, match="entry 'alpaca_en' has no local 'file_name'"):
        import_llamafactory(tmp_path, ["alpaca_en"])


def test_import_paper_style_sft_and_legacy_pairs(tmp_path: Path) -> None:
    # the weak-to-strong paper's files: sft with a `content` prompt column, pairs as output lists
    _write_json(tmp_path / "dataset_info.json", {
        "gsm8k_1": {"file_name": "gsm8k/gsm8k_train_1.json",
                    "columns": {"prompt": "content", "response": "output"}},
        "gsm8k_paired": {"file_name": "gsm8k/paired.json", "ranking": True,
                         "columns": {"prompt": "instruction", "query": "input", "response": "output"}},
    })
    _write_json(tmp_path / "gsm8k/gsm8k_train_1.json",
                [{"id": 0, "content": "Question: Q\nAnswer:", "output": "A\n#### 1"}])
    _write_json(tmp_path / "gsm8k/paired.json",
                [{"id": 0, "instruction": "Question: Q", "input": "extra", "output": ["good", "bad"]}])
    got = import_llamafactory(tmp_path)
    assert got["gsm8k_1"].to_pylist() == [{"prompt": "Question: Q\nAnswer:", "response": "A\n#### 1",
                                           "source": None}]
    # instruction and input are joined with a newline, as LLaMA-Factory does
    assert got["gsm8k_paired"].to_pylist() == [{"prompt": "Question: Q\nextra", "chosen": "good",
                                                "rejected": "bad", "meta": None}]


def test_import_flattens_system_and_history(tmp_path: Path) -> None:
    _write_json(tmp_path / "dataset_info.json", {
        "alp": {"file_name": "alp.jsonl", "columns": {"prompt": "instruction", "query": "input",
                                                      "response": "output", "history": "history",
                                                      "system": "system"}},
        "sg": {"file_name": "sg.json", "formatting": "sharegpt",
               "columns": {"messages": "messages", "system": "sys"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                        "assistant_tag": "assistant"}},
    })
    (tmp_path / "alp.jsonl").write_text(json.dumps({
        "instruction": "Q2", "input": "", "output": "A2", "system": "Be brief.",
        "history": [["Q1", "A1"]]}) + "\n")
    _write_json(tmp_path / "sg.json", [{"sys": "S", "messages": [
        {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]}])
    got = import_llamafactory(tmp_path)
    assert got["alp"].to_pylist()[0]["prompt"] == "Be brief.\n\nQ1\n\nA1\n\nQ2"
    assert got["sg"].to_pylist()[0] == {"prompt": "S\n\nu1\n\na1\n\nu2", "response": "a2", "source": None}


def test_import_bad_ranking_row_names_file_and_item(tmp_path: Path) -> None:
    _write_json(tmp_path / "dataset_info.json", {"p": {"file_name": "p.json", "ranking": True}})
    _write_json(tmp_path / "p.json", [{"instruction": "Q", "output": ["a", "b"]},
                                      {"instruction": "Q", "output": "only one"}])
    with pytest.raises(DataError, match=r"p\.json: item 2: a ranking row needs string fields "
                                        r"'chosen' and 'rejected', or 'output' as \[chosen, rejected\]"):
        import_llamafactory(tmp_path)


def test_import_bad_sharegpt_and_missing_entry(tmp_path: Path) -> None:
    _write_json(tmp_path / "dataset_info.json", {"sg": {"file_name": "sg.jsonl", "formatting": "sharegpt"}})
    (tmp_path / "sg.jsonl").write_text(
        json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
        + "\n" + json.dumps({"conversations": [{"from": "human", "value": "q"}]}) + "\n")
    with pytest.raises(DataError, match=r"sg\.jsonl:2: field 'conversations' must end with a 'gpt' turn"):
        import_llamafactory(tmp_path)
    with pytest.raises(DataError, match="no dataset entry 'nope'"):
        import_llamafactory(tmp_path, ["nope"])


def test_sharegpt_system_must_be_a_string(tmp_path: Path) -> None:
    _write_json(tmp_path / "dataset_info.json", {"sg": {
        "file_name": "sg.json", "formatting": "sharegpt", "columns": {"system": "sys"}}})
    _write_json(tmp_path / "sg.json", [{"sys": ["not", "text"], "conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}])
    with pytest.raises(DataError, match=r"sg\.json: item 1: field 'sys' must be a string, got list"):
        import_llamafactory(tmp_path)


def test_malformed_dataset_info_names_file_and_line(tmp_path: Path) -> None:
    info = tmp_path / "dataset_info.json"
    info.write_text('{\n  "sft": {"file_name": "sft.json"},\n  oops\n}\n')
    with pytest.raises(DataError, match=rf"^{info}:3: malformed JSON"):
        import_llamafactory(tmp_path)
    with pytest.raises(DataError, match=rf"^{info}:3: malformed JSON"):
        export_llamafactory({"sft": _sft()}, tmp_path)   # never overwrites a file it cannot read
    info.write_text("[]")
    with pytest.raises(DataError, match=rf"^{info}: expected a JSON object, got list"):
        import_llamafactory(tmp_path)


def test_export_rejects_tables_that_are_neither_sft_nor_pairs(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="expected an sft"):
        export_llamafactory({"x": pa.table({"prompt": ["p"]})}, tmp_path)
    assert not (tmp_path / "dataset_info.json").exists()


# ------------------------------------------------------------------------------------------
# OpenAI messages
# ------------------------------------------------------------------------------------------


def test_openai_messages_round_trip(tmp_path: Path) -> None:
    path = export_openai_messages(_sft(), tmp_path / "chat.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"messages": [{"role": "user", "content": SFT_ROWS[0]["prompt"]},
                                  {"role": "assistant", "content": SFT_ROWS[0]["response"]}]}
    back = import_openai_messages(path, source="chat")
    assert back.column("prompt").to_pylist() == [r["prompt"] for r in SFT_ROWS]
    assert back.column("response").to_pylist() == [r["response"] for r in SFT_ROWS]
    assert back.column("source").to_pylist() == ["chat", "chat"]


def test_openai_messages_with_system_and_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "system", "content": "S"},
                                             {"role": "user", "content": "U"},
                                             {"role": "assistant", "content": "A"}]}) + "\n")
    assert import_openai_messages(path).to_pylist() == [{"prompt": "S\n\nU", "response": "A", "source": None}]
    with path.open("a") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "U"}]}) + "\n")
    with pytest.raises(DataError, match=r"c\.jsonl:2: 'messages' must end with an assistant message"):
        import_openai_messages(path)


# ------------------------------------------------------------------------------------------
# LLM2 verifier JSONL
# ------------------------------------------------------------------------------------------


def _token_pairs() -> pa.Table:
    return conform([
        {"messages": json.dumps([{"role": "user", "content": "3+4?"},
                                 {"role": "assistant", "content": "3+4=7"}]),
         "samples": [[4, 17, 18], [5, 30, 31]]},
        {"messages": json.dumps([{"role": "user", "content": "x"}]), "samples": []},
    ], "token_pairs")


def test_llm2_round_trip(tmp_path: Path) -> None:
    table = _token_pairs()
    path = export_llm2_jsonl(table, tmp_path / "llm2.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert first["messages"][1] == {"role": "assistant", "content": "3+4=7"}
    assert first["samples"] == [[4, 17, 18], [5, 30, 31]]
    assert import_llm2_jsonl(path).equals(table)


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "user", "content": "q"}], "samples": [[1, 2]]},
     r"bad\.jsonl:2: each sample must be \[position, gt_token_id, neg_token_id\]"),
    ({"messages": [{"role": "user", "content": "q"}], "samples": [[1, -2, 3]]}, r"bad\.jsonl:2: each sample"),
    ({"messages": [{"role": "user"}], "samples": []},
     r"bad\.jsonl:2: each message needs string 'role' and 'content'"),
    ({"samples": []}, r"bad\.jsonl:2: field 'messages' must be a non-empty list"),
])
def test_llm2_bad_rows(tmp_path: Path, record: dict, message: str) -> None:
    good = {"messages": [{"role": "user", "content": "q"}], "samples": [[0, 1, 2]]}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message):
        import_llm2_jsonl(path)
