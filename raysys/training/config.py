"""``TrainConfig``: one typed config for every training kind (sft, dpo, orpo, verifier).

Loaded through :func:`raysys.config.from_dict`, so an unknown key or a wrong type names the
key; :meth:`TrainConfig.validate` adds the value checks (ZeRO stage, paths, batch sizes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from raysys.config import ConfigError, check_range

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraConfig:
    """PEFT LoRA settings; ``enabled: false`` means full fine-tuning."""

    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))

    def validate(self, path: str) -> None:
        if self.r < 1:
            raise ConfigError(f"{path}.r: expected >= 1, got {self.r}")
        check_range(self.dropout, f"{path}.dropout", 0.0, 1.0)
        if self.enabled and not self.target_modules:
            raise ConfigError(f"{path}.target_modules: expected at least one module name")


@dataclass
class TrainConfig:
    """A training run on Ray Train (DeepSpeed + optional LoRA)."""

    kind: Literal["sft", "dpo", "orpo", "verifier"]
    model: str                              # HF model dir (verifier: base LM or TokenVerifier dir)
    data: str                               # parquet file, stage dir, LLaMA-Factory JSON, JSONL
    out: str                                # output model / adapter dir
    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    zero_stage: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: int = 1
    max_steps: int | None = None            # optimizer steps; overrides epochs when set
    micro_batch_size: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.0               # linear warmup, then cosine decay to 0
    max_len: int = 1024
    overflow: Literal["truncate", "drop"] = "truncate"
    seed: int = 0
    lora: LoraConfig = field(default_factory=LoraConfig)
    merge_output: bool = False              # True: merged HF dir; False: adapter dir (LoRA only)
    dpo_beta: float = 0.1
    dpo_label_smoothing: float = 0.0
    orpo_lambda: float = 0.1
    checkpoint_every: int = 0               # optimizer steps between checkpoints; 0: none
    keep_checkpoints: int = 2
    max_failures: int = 0                   # Ray Train restarts from the latest checkpoint
    stop_after_steps: int | None = None     # halt with a checkpoint at this step; rerun resumes
    bf16: Literal["auto"] | bool = "auto"   # auto: bf16 on GPU, fp32 on CPU
    log_every: int = 10                     # steps between metrics lines / progress lines
    trust_remote_code: bool = False
    name: str = "train"                     # Ray Train run name (resume key)

    def validate(self, path: str) -> None:
        def key(name: str) -> str:
            return f"{path}.{name}" if path else name

        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"{key('zero_stage')}: expected one of 0, 1, 2, 3, got {self.zero_stage}")
        for name in ("num_workers", "micro_batch_size", "grad_accum", "epochs", "max_len", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key(name)}: expected >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "stop_after_steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{key(name)}: expected >= 1, got {v}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"{key('checkpoint_every')}: expected >= 0, got {self.checkpoint_every}")
        if self.lr <= 0:
            raise ConfigError(f"{key('lr')}: expected > 0, got {self.lr}")
        check_range(self.warmup_ratio, key("warmup_ratio"), 0.0, 1.0)
        check_range(self.dpo_label_smoothing, key("dpo_label_smoothing"), 0.0, 0.5)
        if not Path(self.model).expanduser().is_dir():
            raise ConfigError(f"{key('model')}: model directory not found: {self.model}")
        if not Path(self.data).expanduser().exists():
            raise ConfigError(f"{key('data')}: file or directory not found: {self.data}")

    @property
    def use_bf16(self) -> bool:
        """bf16 when asked, or on GPU under ``auto`` (CPU bf16 is slower than fp32 here)."""
        return self.use_gpu if self.bf16 == "auto" else bool(self.bf16)
