"""The tiny model builder: tokenizer behaviour, the saved dir, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from raysys.config import ConfigError
from raysys.models.tiny import build_tiny_model

SMALL_CORPUS = ["Natalia sold 48 clips in April and 24 in May. The answer is 72.\n"] * 20


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_digits_are_single_tokens(tok) -> None:
    ids = tok("1234", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["1", "2", "3", "4"]
    # Digits inside words and after spaces split too: BPE must never learn "48" or " 7".
    ids = tok("x=98765, 48 apples", add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    for t in tokens:
        digits = [c for c in t if c.isdigit()]
        assert not digits or t == digits[0], f"token {t!r} mixes a digit with other characters"


@pytest.mark.parametrize("text", [
    "Natalia sold clips to 48 of her friends in April.",
    "  leading spaces,\ttabs\nand newlines\n\n",
    "$\\frac{1}{2} + x^2 = 3.75$ \\boxed{42}",
    "unicode: café, ½, €, 数学",
])
def test_text_round_trips(tok, text: str) -> None:
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_special_tokens_and_padding(tok) -> None:
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert tok.padding_side == "left"
    batch = tok(["1", "1 2 3"], padding=True)
    assert batch["input_ids"][0][0] == tok.pad_token_id   # padded on the left
    assert batch["attention_mask"][0][0] == 0
    for marker in ("<|user|>", "<|assistant|>", "<|system|>"):
        assert len(tok(marker, add_special_tokens=False)["input_ids"]) == 1


def test_chat_template_renders(tok) -> None:
    chat = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": "5"}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<|bos|><|system|>\nBe brief.\n<|user|>\nWhat is 2+3?\n<|assistant|>\n5<|eos|>\n")
    prompt = tok.apply_chat_template(chat[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\nWhat is 2+3?\n<|assistant|>\n")


def test_model_dir_loads_with_only_safetensors(tiny_model_dir: Path, tok) -> None:
    weight_files = sorted(p.name for p in tiny_model_dir.iterdir()
                          if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"})
    assert weight_files == ["model.safetensors"]
    assert not list(tiny_model_dir.parent.glob(".tiny.tmp-*"))   # no leftover staging dir

    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 64
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert (gen["eos_token_id"], gen["pad_token_id"]) == (tok.eos_token_id, tok.pad_token_id)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tok)
    ids = torch.tensor([tok("2+2=4")["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_default_vocab_is_filled(tok) -> None:
    # The default corpus is big enough that BPE reaches the requested 512 entries.
    assert len(tok) == 512


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(d / "model.safetensors")


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a", corpus=SMALL_CORPUS, layers=1, seed=3)
    b = build_tiny_model(tmp_path / "b", corpus=SMALL_CORPUS, layers=1, seed=3)
    c = build_tiny_model(tmp_path / "c", corpus=SMALL_CORPUS, layers=1, seed=4)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert wa.keys() == wb.keys() == wc.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert not torch.equal(wa["model.embed_tokens.weight"], wc["model.embed_tokens.weight"])


def test_seed_does_not_disturb_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", corpus=SMALL_CORPUS, layers=1, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_shape_options_and_corpus_file(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(SMALL_CORPUS))
    d = build_tiny_model(tmp_path / "m", hidden=256, heads=4, kv_heads=2, layers=1,
                         intermediate=96, vocab_size=300, corpus=corpus)
    cfg = json.loads((d / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["num_hidden_layers"], cfg["intermediate_size"]) == (256, 4, 2, 1, 96)
    assert cfg["vocab_size"] <= 300


@pytest.mark.parametrize("kwargs, key", [
    ({"hidden": 100}, "hidden"),
    ({"heads": 4, "hidden": 256, "kv_heads": 3}, "kv_heads"),
    ({"vocab_size": 100}, "vocab_size"),
])
def test_bad_shapes_fail_naming_the_argument(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        build_tiny_model(tmp_path / "m", corpus=SMALL_CORPUS, **kwargs)
    assert not (tmp_path / "m").exists()


def test_missing_corpus_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        build_tiny_model(tmp_path / "m", corpus=tmp_path / "nope.txt")


def test_default_tokenizer_is_shared_across_seeds_and_sizes(tiny_model_dir: Path,
                                                            tmp_path: Path) -> None:
    # Weak, strong and verifier models must agree on token ids (LLM2 pairs store raw ids).
    other = build_tiny_model(tmp_path / "other", hidden=256, heads=4, layers=1, seed=9)
    shared = (tiny_model_dir / "tokenizer.json").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == shared
