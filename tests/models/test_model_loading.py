"""Loading model dirs, LoRA adapters and merges; every bad input is one ModelError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from raysys.errors import ModelError
from raysys.models.loading import (
    is_adapter_dir,
    load_model,
    load_tokenizer,
    merge_adapter,
    resolve_model_path,
    save_pretrained_atomic,
)

PROMPTS = ["Natalia sold 48 clips.", "What is 12 + 30?"]


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def batch(tiny_model_dir: Path) -> dict[str, torch.Tensor]:
    tok = load_tokenizer(str(tiny_model_dir))
    return dict(tok(PROMPTS, return_tensors="pt", padding=True))


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory,
            batch: dict[str, torch.Tensor]) -> tuple[Path, torch.Tensor]:
    """A saved LoRA adapter with non-zero weights, and the PEFT model's logits on ``batch``."""
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
    # LoRA's B starts at zero (a no-op adapter); perturb it so the adapter changes the logits.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    peft_model.eval()
    out = tmp_path_factory.mktemp("adapter") / "lora"
    peft_model.save_pretrained(out)
    return out, _logits(peft_model, batch)


def test_adapter_changes_logits(tiny_model_dir: Path, adapter, batch) -> None:
    _, peft_logits = adapter
    base_logits = _logits(load_model(str(tiny_model_dir)), batch)
    assert not torch.allclose(base_logits, peft_logits, atol=1e-3)


def test_load_with_adapter_matches_peft(tiny_model_dir: Path, adapter, batch) -> None:
    adapter_dir, peft_logits = adapter
    model = load_model(str(tiny_model_dir), adapter=str(adapter_dir))
    assert isinstance(model, PeftModel)
    assert not model.training
    torch.testing.assert_close(_logits(model, batch), peft_logits, atol=1e-5, rtol=0)


def test_adapter_dir_alone_loads_its_base(adapter, batch) -> None:
    adapter_dir, peft_logits = adapter
    assert is_adapter_dir(adapter_dir)
    torch.testing.assert_close(_logits(load_model(str(adapter_dir)), batch), peft_logits,
                               atol=1e-5, rtol=0)
    # The adapter dir has no tokenizer: load_tokenizer falls back to the base's.
    assert load_tokenizer(str(adapter_dir)).pad_token == "<|pad|>"


def test_merge_adapter_matches_peft(tiny_model_dir: Path, adapter, batch, tmp_path: Path) -> None:
    adapter_dir, peft_logits = adapter
    out = merge_adapter(str(tiny_model_dir), str(adapter_dir), tmp_path / "merged")
    assert not is_adapter_dir(out)
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt"))]
    merged = load_model(str(out))
    assert not isinstance(merged, PeftModel)
    torch.testing.assert_close(_logits(merged, batch), peft_logits, atol=1e-5, rtol=0)
    assert load_tokenizer(str(out)).decode(batch["input_ids"][1], skip_special_tokens=True) \
        == PROMPTS[1]


def test_merge_flag_returns_plain_model(tiny_model_dir: Path, adapter, batch) -> None:
    adapter_dir, peft_logits = adapter
    model = load_model(str(tiny_model_dir), adapter=str(adapter_dir), merge=True)
    assert not isinstance(model, PeftModel)
    torch.testing.assert_close(_logits(model, batch), peft_logits, atol=1e-5, rtol=0)


def test_relative_base_resolves_beside_adapter(tiny_model_dir: Path, adapter, batch,
                                               tmp_path: Path) -> None:
    adapter_dir, peft_logits = adapter
    root = tmp_path / "run"
    shutil.copytree(tiny_model_dir, root / "base")
    moved = shutil.copytree(adapter_dir, root / "lora")
    cfg_path = moved / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "../base"
    cfg_path.write_text(json.dumps(cfg))
    torch.testing.assert_close(_logits(load_model(str(moved)), batch), peft_logits,
                               atol=1e-5, rtol=0)


def test_dtype_and_tokenizer_options(tiny_model_dir: Path) -> None:
    model = load_model(str(tiny_model_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert load_tokenizer(str(tiny_model_dir), padding_side="right").padding_side == "right"
    with pytest.raises(ModelError, match="dtype: expected one of"):
        load_model(str(tiny_model_dir), dtype="float8")


def test_save_pretrained_atomic_replaces_existing_dir(tiny_model_dir: Path, batch,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an older save")
    model = load_model(str(tiny_model_dir))
    assert save_pretrained_atomic(model, load_tokenizer(str(tiny_model_dir)), out) == out
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]   # no .tmp-/.old- dirs left behind
    torch.testing.assert_close(_logits(load_model(str(out)), batch), _logits(model, batch),
                               atol=0, rtol=0)


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def test_missing_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelError, match=f"not found: {missing}"):
        resolve_model_path(str(missing))
    with pytest.raises(ModelError, match="not found"):
        load_model(str(missing))


def test_dir_without_config_or_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=rf"{empty}: missing config.json"):
        resolve_model_path(str(empty))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny_model_dir / "config.json", no_weights)
    with pytest.raises(ModelError, match=rf"{no_weights}: no \*.safetensors weights"):
        load_model(str(no_weights))


def test_bin_only_dir_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "bin_only"
    shutil.copytree(tiny_model_dir, d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match=rf"{d}: only pickle weights \(pytorch_model.bin\)"):
        load_model(str(d))


def test_invalid_config_json(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match=rf"{d / 'config.json'}:1: malformed JSON"):
        load_model(d)   # Path arguments are accepted as well as str


def test_adapter_without_safetensors_refused(adapter, tmp_path: Path) -> None:
    d = shutil.copytree(adapter[0], tmp_path / "lora_bin")
    (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")
    with pytest.raises(ModelError, match=rf"{d}: missing adapter_model.safetensors .*found only"):
        load_model(str(d))


def test_adapter_argument_must_be_an_adapter(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="not a LoRA adapter dir"):
        load_model(str(tiny_model_dir), adapter=str(tiny_model_dir))


def test_hub_id_offline_is_one_clear_error() -> None:
    # conftest forces HF_HUB_OFFLINE=1: nothing is cached, so this must fail fast and clearly.
    with pytest.raises(ModelError, match="hub model 'raysys-test/no-such-model'"):
        resolve_model_path("raysys-test/no-such-model")


def test_not_a_path_nor_hub_id() -> None:
    with pytest.raises(ModelError, match="not found"):
        resolve_model_path("no_such_model_anywhere")


CUSTOM_CODE = """
from transformers import LlamaForCausalLM


class CustomLlama(LlamaForCausalLM):
    pass
"""


def test_remote_code_needs_opt_in(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = shutil.copytree(tiny_model_dir, tmp_path / "custom")
    (d / "custom_llama.py").write_text(CUSTOM_CODE)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "custom_llama.CustomLlama"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=rf"{d}: config.json has auto_map .*trust_remote_code"):
        load_model(str(d))
    assert type(load_model(str(d), trust_remote_code=True)).__name__ == "CustomLlama"


@pytest.mark.gpu
def test_cuda_bf16_merged_matches_cpu_peft(tiny_model_dir: Path, adapter, batch) -> None:
    adapter_dir, peft_logits = adapter
    model = load_model(str(tiny_model_dir), adapter=str(adapter_dir), merge=True,
                       dtype="bfloat16", device="cuda")
    param = next(model.parameters())
    assert (param.device.type, param.dtype) == ("cuda", torch.bfloat16)
    logits = _logits(model, {k: v.cuda() for k, v in batch.items()}).float().cpu()
    torch.testing.assert_close(logits, peft_logits, atol=5e-2, rtol=0)
