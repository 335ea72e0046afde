"""The driver-side model checks read from a model dir's small files: config.json fields, their
agreement with the safetensors headers, and the tokenizer files (no weights, no model built)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from raysys.errors import ModelError
from raysys.models.loading import (check_config_matches_weights, check_model_config,
                                   check_model_usable, check_tokenizer_files, known_model_types,
                                   tokenizer_size)

LLAMA = {"model_type": "llama", "vocab_size": 512, "hidden_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 512,
         "head_dim": 64}


def _tensors(vocab: int = 512, hidden: int = 128, kv_out: int = 128, layers: int = 2,
             dtype: str = "F32") -> dict[str, tuple[str, list[int], str]]:
    out = {"model.embed_tokens.weight": (dtype, [vocab, hidden], "model.safetensors")}
    for i in range(layers):
        pre = f"model.layers.{i}."
        out.update({pre + "self_attn.q_proj.weight": (dtype, [128, hidden], "model.safetensors"),
                    pre + "self_attn.k_proj.weight": (dtype, [kv_out, hidden], "model.safetensors"),
                    pre + "mlp.down_proj.weight": (dtype, [hidden, 512], "model.safetensors")})
    return out


def test_known_model_types_without_importing_transformers() -> None:
    known = known_model_types()
    assert known is not None and {"llama", "qwen2", "gpt2"} <= known


def test_config_fields() -> None:
    check_model_config(LLAMA, "c.json")
    check_model_config({**LLAMA, "num_key_value_heads": None, "head_dim": None}, "c.json")
    for bad, message in [
        ({"model_type": None}, r"^c\.json: no model_type"),
        ({"model_type": "frobnicator"}, r"model_type 'frobnicator' is not an architecture"),
        ({"hidden_size": "128"}, r"^c\.json: hidden_size: expected a positive integer, got '128'"),
        ({"vocab_size": 0}, r"vocab_size: expected a positive integer, got 0"),
        ({"num_hidden_layers": True}, r"num_hidden_layers: expected a positive integer"),
        ({"num_attention_heads": 3, "head_dim": None}, r"hidden_size 128 is not a multiple of "
                                                       r"num_attention_heads 3 \(and no head_dim"),
        ({"num_key_value_heads": 3}, r"num_attention_heads 2 is not a multiple of num_key_value_heads 3"),
    ]:
        with pytest.raises(ModelError, match=message):
            check_model_config({**LLAMA, **bad}, "c.json")
    # custom code (auto_map, allowed): its model_type is its own
    check_model_config({**LLAMA, "model_type": "mine", "auto_map": {"AutoConfig": "c.C"}}, "c.json",
                       trust_remote_code=True)
    # a composite config keeps its sizes in sub-configs: nothing at the top to check
    check_model_config({"model_type": "llava", "text_config": {"model_type": "llama"}}, "c.json")


def test_config_against_weight_shapes() -> None:
    check_config_matches_weights(LLAMA, _tensors(), "c.json")
    with pytest.raises(ModelError, match=r"stores model\.embed_tokens\.weight as \[500, 128\], "
                                         r"config\.json implies 512 rows \(vocab_size\)"):
        check_config_matches_weights(LLAMA, _tensors(vocab=500), "c.json")
    with pytest.raises(ModelError, match=r"k_proj\.weight as \[64, 128\], config\.json implies "
                                         r"\[128, 128\] \(num_key_value_heads \* head_dim x hidden_size\)"):
        check_config_matches_weights(LLAMA, _tensors(kv_out=64), "c.json")
    with pytest.raises(ModelError, match=r"num_hidden_layers is 4 but the weights hold no layer 2, 3"):
        check_config_matches_weights({**LLAMA, "num_hidden_layers": 4}, _tensors(), "c.json")
    # quantized packings store other shapes: not compared
    check_config_matches_weights(LLAMA, _tensors(kv_out=64, dtype="U8"), "c.json")
    # another family: only the vocab rows are compared (OPT projects its embeddings)
    opt = {"model_type": "opt", "vocab_size": 512, "hidden_size": 1024, "num_hidden_layers": 2,
           "num_attention_heads": 2}
    check_config_matches_weights(opt, _tensors(hidden=512, kv_out=64), "c.json")
    # more layers stored than configured (extra prediction heads): fine
    check_config_matches_weights({**LLAMA, "num_hidden_layers": 1}, _tensors(), "c.json")


def test_tokenizer_size() -> None:
    assert tokenizer_size({"model": {"vocab": {"a": 0, "b": 7}}, "added_tokens": [{"id": 9}]}) == 10
    assert tokenizer_size({"model": {"vocab": [["a", 0.0], ["b", -1.0]]}}) == 2
    assert tokenizer_size({"model": {"type": "WordLevel"}}) is None


def test_tokenizer_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    main, n = check_tokenizer_files(tiny_model_dir)
    assert main.name == "tokenizer.json" and n == 512
    d = tmp_path / "t"
    d.mkdir()
    with pytest.raises(ModelError, match=r"model directory .*/t: no tokenizer"):
        check_tokenizer_files(d)
    (d / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    assert check_tokenizer_files(d) == (d / "vocab.json", 2)
    (d / "tokenizer_config.json").write_text("[1]")
    with pytest.raises(ModelError, match=r"tokenizer_config\.json: expected a JSON object"):
        check_tokenizer_files(d)
    (d / "tokenizer_config.json").unlink()
    (d / "tokenizer.json").write_text('{"version": "1.0"}')
    with pytest.raises(ModelError, match=r"tokenizer\.json: not a tokenizers file"):
        check_tokenizer_files(d)


def test_usable_model_adapter_and_verifier_dirs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """What raysys itself writes passes: the tiny model, a LoRA adapter (its base checked), a
    token-verifier dir (a backbone without an LM head, plus its head file)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from raysys.models.verifier import TokenVerifier

    check_model_usable(tiny_model_dir, False, "model")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "lora")
    check_model_usable(tmp_path / "lora", False, "adapter")
    verifier = TokenVerifier.from_pretrained(tiny_model_dir)
    verifier.save_pretrained(tmp_path / "verifier")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / f, tmp_path / "verifier" / f)
    check_model_usable(tmp_path / "verifier", False, "model")
    # the adapter's base broken: named with the key
    broken = tmp_path / "base"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "tokenizer.json").unlink()
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(broken)
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"^adapter: model directory .*base: no tokenizer"):
        check_model_usable(tmp_path / "lora", False, "adapter")
