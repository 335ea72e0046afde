"""Bad training input fails before any worker starts, with one error naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysys.config import ConfigError, from_dict
from raysys.data.io import DataError
from raysys.training.config import TrainConfig
from raysys.training.data import load_rows
from raysys.training.trainer import train, with_absolute_paths
from raysys.training.worker import deepspeed_config, progress_line

from conftest import pair_rows, sft_rows, write_jsonl


def _cfg(model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    return from_dict(TrainConfig, {"kind": "dpo", "model": str(model), "data": str(data),
                                   "out": str(out), **kw})


def test_zero_stage_4_is_a_config_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(4))
    with pytest.raises(ConfigError, match=r"^zero_stage: expected one of 0, 1, 2, 3, got 4"):
        _cfg(tiny_model_dir, data, tmp_path / "out", zero_stage=4)


def test_unknown_key_and_wrong_type_name_the_key(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(4))
    with pytest.raises(ConfigError, match=r"^lora\.rank: unknown key \(known: enabled, r, alpha"):
        _cfg(tiny_model_dir, data, tmp_path / "out", lora={"rank": 8})
    with pytest.raises(ConfigError, match=r"^micro_batch_size: expected int, got 'big'"):
        _cfg(tiny_model_dir, data, tmp_path / "out", micro_batch_size="big")
    with pytest.raises(ConfigError, match=r"^model: model directory not found"):
        _cfg(tmp_path / "nope", data, tmp_path / "out")


@pytest.mark.parametrize("value", ["random", "", 1, None, ["keyed"]])
def test_data_order_outside_shuffle_or_keyed_names_the_key(value: object, tiny_model_dir: Path,
                                                           tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(4))
    with pytest.raises(ConfigError, match=r"^order: expected one of 'shuffle', 'keyed', got "):
        _cfg(tiny_model_dir, data, tmp_path / "out", order=value)


def test_pairs_file_missing_chosen_names_file_and_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = pair_rows(3)
    del rows[1]["chosen"]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError) as e:
        train(_cfg(tiny_model_dir, data, tmp_path / "out"))
    assert str(e.value) == (f"{data}:2: missing field 'chosen' "
                            f"(pairs rows need prompt, chosen, rejected)")
    assert not (tmp_path / "out").exists()


def test_empty_dataset_is_one_data_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: empty dataset"):
        train(_cfg(tiny_model_dir, data, tmp_path / "out", kind="sft"))


def test_dataset_smaller_than_a_global_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(5))
    with pytest.raises(DataError, match="5 examples, fewer than one global batch of 8"):
        train(_cfg(tiny_model_dir, data, tmp_path / "out", kind="sft", num_workers=2,
                   micro_batch_size=4))


def test_unknown_lora_target_lists_the_model_linear_modules(tiny_model_dir: Path,
                                                            tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(4))
    cfg = _cfg(tiny_model_dir, data, tmp_path / "out", lora={"target_modules": ["q_proj", "qkv"]})
    with pytest.raises(ConfigError) as e:
        train(cfg)
    assert str(e.value) == ("lora.target_modules: unknown module(s) qkv; this model's linear "
                            "modules are: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, "
                            "up_proj, v_proj")


def test_llama_factory_rows_are_mapped(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "lf.jsonl", [
        {"instruction": "Add 2 and 3.", "input": "", "chosen": "#### 5", "rejected": "#### 6"}])
    (row,) = load_rows(data, "dpo")
    assert (row["chosen"], row["rejected"]) == ("#### 5", "#### 6")
    assert row["prompt"].startswith("Add 2 and 3.")


def test_deepspeed_config_batch_arithmetic_and_optimizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(4))
    cfg = _cfg(tiny_model_dir, data, tmp_path / "out", micro_batch_size=4, grad_accum=3,
               zero_stage=3, max_grad_norm=0.5)
    ds = deepspeed_config(cfg, world=2)
    assert ds["train_batch_size"] == 24 and ds["gradient_accumulation_steps"] == 3
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_clipping"] == 0.5
    assert "optimizer" not in ds and ds["zero_allow_untested_optimizer"] is True
    assert ds["bf16"]["enabled"] is False          # auto on CPU -> fp32


def test_progress_line_extrapolates_eta_from_steps_run_since_restart() -> None:
    m = {"step": 30, "loss": 1.23456, "lr": 2.5e-3, "samples_per_s": 12.34, "elapsed_s": 10.0}
    # Resumed at step 20: 10 steps in 10 s, 70 left -> 70 s.
    assert progress_line("weak", m, 100, 20) == (
        "[weak] step 30/100 loss 1.2346 lr 2.50e-03 12.3 samples/s elapsed 10s eta 70s")
    assert progress_line("weak", m, 100, 0).endswith("eta 23s")     # 30 steps in 10 s


def test_relative_paths_reach_workers_absolute(tiny_model_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray Train runs each worker in its own working directory (a relative model dir broke
    # `make demo`, whose run dir is `runs/demo`).
    write_jsonl(tmp_path / "sft.jsonl", sft_rows(4))
    (tmp_path / "m").symlink_to(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    cfg = with_absolute_paths(from_dict(TrainConfig, {"kind": "sft", "model": "m", "data": "sft.jsonl",
                                                      "out": "runs/out"}))
    assert (cfg.model, cfg.data, cfg.out) == (str(tmp_path / "m"), str(tmp_path / "sft.jsonl"),
                                              str(tmp_path / "runs" / "out"))


def test_token_pairs_rows_keep_their_render(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A text-rendered token_pairs file trains on the text ids (the chat rendering would put
    other tokens at those positions); an unknown render names the file and line."""
    from raysys.models.loading import load_tokenizer
    from raysys.training.collators import render_pair_ids
    from raysys.training.data import tokenize_rows

    tok = load_tokenizer(str(tiny_model_dir))
    messages = [{"role": "user", "content": "Question: 2+3?\nAnswer:"},
                {"role": "assistant", "content": " 2+3=5\n#### 5"}]
    ids = render_pair_ids(messages, tok, "text")
    pos = len(ids) - 3
    row = {"messages": messages, "samples": [[pos, ids[pos], (ids[pos] + 1) % len(tok)]],
           "render": "text"}
    (loaded,) = load_rows(write_jsonl(tmp_path / "t.jsonl", [row]), "verifier")
    assert loaded["render"] == "text"
    examples, _ = tokenize_rows("verifier", [loaded], tok, 512, "truncate", "t.jsonl")
    assert examples[0]["input_ids"] == ids
    with pytest.raises(DataError, match=r"b\.jsonl:1: 'render' must be 'chat' or 'text'"):
        load_rows(write_jsonl(tmp_path / "b.jsonl", [{**row, "render": "xml"}]), "verifier")
