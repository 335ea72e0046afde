"""Real-model inputs shared by the benchmark scripts: GSM8K prompts in a model's chat template,
SFT rows built from them, and a perturbed copy of a model (the "trained" weights a refresh
serves).

The model is SmolLM2-135M-Instruct from ``make real-model`` (``DEFAULT_MODEL``); the data is
``../shared/data/gsm8k`` (``DEFAULT_GSM8K``), read with raysys's own loader. Nothing here
downloads anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "smollm2-135m-instruct"
DEFAULT_GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"


def gsm8k_problems(n: int, split: str = "test", root: Path = DEFAULT_GSM8K) -> list[dict[str, Any]]:
    """The first ``n`` GSM8K problems of ``split`` (raysys's ``problems`` rows)."""
    from raysys.config import DatasetSpec
    from raysys.data.sources import load_problems

    path = Path(root) / f"{split}.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: GSM8K {split} split not found (../shared/data, see its README)")
    return load_problems(DatasetSpec(name="gsm8k", path=str(path), limit=n)).to_pylist()


def chat_prompts(model_dir: str | Path, problems: list[dict[str, Any]]) -> list[str]:
    """Each problem's question in the model's chat template (its default system turn, the
    generation prompt appended), as the real recipe configs (``template: chat``) render it."""
    from raysys.models.loading import load_tokenizer
    from raysys.prompts import build_prompt

    tok = load_tokenizer(str(model_dir))
    return [build_prompt(p["question"], "chat", tokenizer=tok) for p in problems]


def sft_rows(model_dir: str | Path, n: int) -> list[dict[str, str]]:
    """``n`` SFT rows from GSM8K train: chat prompt -> the worked solution (``#### n`` last)."""
    problems = gsm8k_problems(n, "train")
    return [{"prompt": prompt, "response": p["gold_solution"]}
            for p, prompt in zip(problems, chat_prompts(model_dir, problems))]


def perturbed_copy(model_dir: str | Path, out: Path, seed: int, scale: float = 0.05) -> Path:
    """``model_dir`` with every matrix multiplied elementwise by ``1 + scale * N(0, 1)``: the
    same layout (config, tokenizer, tied head) with other weights, as a training stage leaves
    them, so greedy outputs differ. Written once per ``out``."""
    if (out / "config.json").is_file():
        return out
    import torch

    from raysys.models.loading import load_model, load_tokenizer, save_pretrained_atomic

    model = load_model(str(model_dir), dtype="float32")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(1 + scale * torch.randn(p.shape, generator=gen))
    return Path(save_pretrained_atomic(model, load_tokenizer(str(model_dir)), out))


def describe(model_dir: str | Path) -> str:
    """``name (hidden h, L layers, P params, tied)`` for report headers."""
    import json

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    tied = ", tied embeddings" if cfg.get("tie_word_embeddings") else ""
    return (f"{Path(model_dir).name} (hidden {cfg.get('hidden_size')}, "
            f"{cfg.get('num_hidden_layers')} layers, vocab {cfg.get('vocab_size')}{tied}, fp32)")
