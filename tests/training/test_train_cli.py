"""``raysys train`` flag handling and its one-line errors (no training runs here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from raysys.cli import main

from conftest import pair_rows, write_jsonl


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["raysys", "train", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code)


def test_zero_4_is_one_line_error(monkeypatch, capsys, tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(4))
    code = _main(monkeypatch, "--kind", "dpo", "--model", str(tiny_model_dir), "--data", str(data),
                 "--out", str(tmp_path / "o"), "--zero", "4")
    err = capsys.readouterr().err
    assert code == 2 and err == "error: zero_stage: expected one of 0, 1, 2, 3, got 4\n"


def test_set_override_and_config_file_are_validated(monkeypatch, capsys, tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(4))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"kind: dpo\nmodel: {tiny_model_dir}\ndata: {data}\nout: {tmp_path / 'o'}\n")
    code = _main(monkeypatch, "--config", str(cfg), "--set", "lora.target_modules=q_proj,nope")
    err = capsys.readouterr().err
    assert code == 2
    # refused by the preflight's shape check, before Ray (the trainer's own check is later)
    assert err.startswith("error: lora.target_modules[1]: 'nope' is not a linear module of model; "
                          "expected one of down_proj, gate_proj") and err.count("\n") == 1


def test_missing_required_flag_names_the_key(monkeypatch, capsys, tmp_path: Path) -> None:
    code = _main(monkeypatch, "--kind", "sft", "--data", "x", "--out", str(tmp_path / "o"))
    assert code == 2 and capsys.readouterr().err == (
        "error: --model: missing; the model dir to start from (or model: in --config)\n")
