"""Model-side setup for training: LoRA target checks, applying LoRA, saving the output dir."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysys.errors import ConfigError

if TYPE_CHECKING:
    import torch

# A raysys.training.config.TrainConfig. Not imported, not even for type checkers: the kinds
# registry above TrainConfig calls into this module, and TrainConfig validates kind names.
TrainSettings = Any


def linear_module_names(model: "torch.nn.Module") -> list[str]:
    """Sorted leaf names of the model's ``nn.Linear`` modules (what LoRA can target)."""
    import torch

    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
             if isinstance(mod, torch.nn.Linear) and name}
    return sorted(names)


def check_target_modules(target_modules: list[str], available: list[str], key: str) -> None:
    """Raise one ConfigError naming the unknown LoRA targets and the model's linear modules."""
    unknown = [t for t in target_modules if t not in available]
    if unknown:
        raise ConfigError(f"{key}: unknown module(s) {', '.join(unknown)}; this model's linear "
                          f"modules are: {', '.join(available)}")


def meta_model(path: str, trust_remote_code: bool = False) -> "torch.nn.Module":
    """The model's architecture on the meta device: module names without loading weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def validate_model_for_training(cfg: TrainSettings) -> None:
    """Driver-side checks before any worker starts (LoRA targets exist in the model)."""
    if cfg.lora.enabled:
        model = meta_model(cfg.model, cfg.trust_remote_code)
        check_target_modules(cfg.lora.target_modules, linear_module_names(model),
                             "lora.target_modules")


def load_causal_lm(path: str, *, bf16: bool, trust_remote_code: bool) -> Any:
    """Load an HF causal LM for training (fp32 on CPU, bf16 when asked), in train mode."""
    from raysys.models.loading import load_model

    model = load_model(path, dtype="bfloat16" if bf16 else "float32",
                       trust_remote_code=trust_remote_code)
    return model.train()


def apply_lora(model: Any, cfg: TrainSettings, *, causal_lm: bool = True) -> Any:
    """Wrap ``model`` in a PEFT LoRA model with the configured rank and targets.

    ``causal_lm=False`` wraps a bare backbone (the TokenVerifier's), which has no LM head.
    """
    from peft import LoraConfig, get_peft_model

    check_target_modules(cfg.lora.target_modules, linear_module_names(model), "lora.target_modules")
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules),
                      task_type="CAUSAL_LM" if causal_lm else None)
    return get_peft_model(model, lora)


def save_trained(model: Any, tokenizer: Any, out: str | Path, *, merge: bool,
                 extra_files: tuple[Path, ...] = ()) -> Path:
    """Save a trained model so ``out`` is complete or absent: a LoRA adapter dir, a merged /
    full HF dir, or a TokenVerifier dir (``merge`` then folds its backbone's LoRA).

    ``extra_files`` (e.g. metrics.jsonl) are copied in afterwards.
    """
    from raysys.data.io import atomic_write_bytes
    from raysys.models.loading import save_pretrained_atomic

    if hasattr(model, "backbone") and hasattr(model, "head"):
        if merge and hasattr(model.backbone, "merge_and_unload"):
            model.backbone = model.backbone.merge_and_unload()
    elif merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out_dir = save_pretrained_atomic(model, tokenizer, out)
    for f in extra_files:
        if f.is_file():
            atomic_write_bytes(out_dir / f.name, f.read_bytes())
    return out_dir
