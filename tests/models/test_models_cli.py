"""``raysys models tiny`` and ``raysys models info``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from raysys.cli import cli
from raysys.config import ConfigError
from raysys.errors import ModelError


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def test_tiny_builds_requested_shape(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Ava has 12 apples. Then she buys 3 more apples.\n12+3=15\n#### 15\n" * 10)
    out = tmp_path / "m"
    res = _invoke("models", "tiny", "--out", str(out), "--layers", "1", "--hidden", "256",
                  "--heads", "4", "--kv-heads", "1", "--vocab-size", "300", "--corpus",
                  str(corpus), "--seed", "7")
    assert res.exit_code == 0, res.output
    model = AutoModelForCausalLM.from_pretrained(out)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
            cfg.num_key_value_heads) == (1, 256, 4, 1)
    assert res.stdout.strip() == f"wrote {out} ({model.num_parameters():,} parameters)"


def test_tiny_bad_shape_is_a_config_error(tmp_path: Path) -> None:
    res = _invoke("models", "tiny", "--out", str(tmp_path / "m"), "--hidden", "100")
    assert isinstance(res.exception, ConfigError)
    assert str(res.exception).startswith("hidden: expected heads * 64 = 128")


def test_info_full_model(tiny_model_dir: Path) -> None:
    res = _invoke("models", "info", str(tiny_model_dir), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert summary["kind"] == "full"
    assert summary["params"] == model.num_parameters()
    assert summary["config"]["num_hidden_layers"] == model.config.num_hidden_layers
    assert summary["tokenizer"]["vocab_size"] == model.config.vocab_size
    assert summary["tokenizer"]["chat_template"] is True

    text = _invoke("models", "info", str(tiny_model_dir)).output
    assert "kind:       full model" in text
    assert f"parameters: {model.num_parameters():,}" in text


def test_info_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    lora_params = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    peft_model.save_pretrained(tmp_path / "lora")
    summary = json.loads(_invoke("models", "info", str(tmp_path / "lora"), "--json").stdout)
    assert summary["kind"] == "adapter"
    assert summary["params"] == lora_params
    assert summary["config"]["r"] == 2
    assert Path(summary["base"]) == tiny_model_dir
    assert summary["tokenizer"]["vocab_size"] == base.config.vocab_size

    text = _invoke("models", "info", str(tmp_path / "lora")).output
    assert f"kind:       LoRA adapter on {tiny_model_dir}" in text


def test_info_missing_dir(tmp_path: Path) -> None:
    res = _invoke("models", "info", str(tmp_path / "nope"))
    assert isinstance(res.exception, ModelError)
    assert str(tmp_path / "nope") in str(res.exception)


@pytest.mark.parametrize("args", [["models", "--help"], ["models", "tiny", "--help"]])
def test_help_lists_options(args: list[str]) -> None:
    res = _invoke(*args)
    assert res.exit_code == 0
    assert ("--vocab-size" in res.output) == (args[1] == "tiny")


def test_tiny_size_bound_before_torch() -> None:
    from raysys.cli.models import MAX_TINY_PARAMS, tiny_param_count

    assert tiny_param_count(hidden=128, layers=2, heads=2, kv_heads=None, intermediate=None,
                            vocab_size=512) == 590_464          # the session's tiny model
    res = _invoke("models", "tiny", "--out", "unused", "--hidden", "8192", "--heads", "128",
                  "--layers", "64")
    assert isinstance(res.exception, ConfigError)
    assert f"a tiny model is at most {MAX_TINY_PARAMS:,}" in str(res.exception)


def test_tiny_refuses_a_corpus_inside_its_out_dir(tmp_path: Path) -> None:
    """--out is replaced whole: a corpus inside it would be gone before it is read."""
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{}")              # an old raysys model dir: replaceable
    corpus = out / "corpus.txt"
    corpus.write_text("1 + 1 = 2\n")
    r = CliRunner().invoke(cli, ["models", "tiny", "--out", str(out), "--corpus", str(corpus)])
    assert r.exit_code != 0 and "--corpus" in str(r.exception)
    assert corpus.read_text() == "1 + 1 = 2\n" and (out / "config.json").read_text() == "{}"
