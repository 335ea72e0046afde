"""Models for engine tests, derived from the session's tiny model.

A freshly initialised tiny model (std 0.02) is nearly uniform and greedy-decodes the same
token for every prompt, which would make "HF == vLLM" true by accident. Re-drawing its
matrices at std 0.15 gives prompt-dependent continuations with clear argmax margins.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    """Eight prompts of different lengths (so left padding is exercised)."""
    out = [f"Question: Tom has {i} apples and buys {3 * i + 1} more. How many now?\nAnswer:"
           for i in range(1, 9)]
    out[2] = "Question: 7+8?\nAnswer:"
    out[5] = "Hi"
    return out


def _rescaled_copy(src: Path, out: Path, seed: int, tied: bool = False) -> Path:
    """``src``'s architecture and tokenizer, matrices ~ N(0, 0.15²), output head untied
    (``tied``: one matrix for input embedding and head, as SmolLM2)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from raysys.models.loading import load_tokenizer, save_pretrained_atomic

    config = AutoConfig.from_pretrained(src)
    config.tie_word_embeddings = tied
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
    return save_pretrained_atomic(model, load_tokenizer(str(src)), out)


@pytest.fixture(scope="session")
def varied_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its matrices re-drawn at std 0.15 (seed 1)."""
    return _rescaled_copy(tiny_model_dir, tmp_path_factory.mktemp("varied") / "model", seed=1)


@pytest.fixture(scope="session")
def other_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture and tokenizer as ``varied_model_dir``, other weights (seed 2)."""
    return _rescaled_copy(tiny_model_dir, tmp_path_factory.mktemp("other") / "model", seed=2)


@pytest.fixture(scope="session")
def lora_dir(varied_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEFT LoRA adapter on ``varied_model_dir`` whose B matrices are non-zero (so it
    changes the outputs; a freshly initialised adapter is the identity)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(varied_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                  target_modules=["q_proj", "v_proj", "o_proj"]))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    out = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tied_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As ``varied_model_dir`` with tied input/output embeddings (seed 4)."""
    return _rescaled_copy(tiny_model_dir, tmp_path_factory.mktemp("tied") / "model", seed=4,
                          tied=True)


@pytest.fixture(scope="session")
def tied_other_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same layout as ``tied_model_dir``, other weights (seed 5)."""
    return _rescaled_copy(tiny_model_dir, tmp_path_factory.mktemp("tied_other") / "model",
                          seed=5, tied=True)
