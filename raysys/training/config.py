"""``TrainConfig``: one typed config for every training kind and every place that trains.

``raysys train`` fills every field from flags/YAML; a recipe's training stage is the same type
with ``kind`` / ``model`` / ``data`` / ``out`` left unset (the recipe sets them:
:meth:`TrainConfig.for_stage`). Loaded through :func:`raysys.config.from_dict`, so an unknown
key or a wrong type names the key; :meth:`TrainConfig.validate` adds the value checks.
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


# The experiment trackers ``trackers`` may name (raysys.training.trackers opens them; its
# TRACKER_PACKAGES holds the package each needs). Named here, not imported from there: the
# trackers module takes a TrainConfig, so this module importing it would close a circle.
TRACKER_NAMES = ("tensorboard", "wandb", "mlflow")


def check_tracker_names(names: list[str], key: str = "trackers") -> None:
    """Every name is a known tracker, listed once (ConfigError naming ``key[i]`` and the
    choices)."""
    for i, name in enumerate(names):
        if name not in TRACKER_NAMES:
            raise ConfigError(f"{key}[{i}]: expected one of {', '.join(TRACKER_NAMES)}, "
                              f"got {name!r}")
        if name in names[:i]:
            raise ConfigError(f"{key}[{i}]: {name!r} is listed twice")


# Fields a recipe sets on its training stages; a recipe config that sets them is an error.
STAGE_SET_FIELDS = ("kind", "model", "data", "out")


@dataclass
class TrainConfig:
    """A training run on Ray Train (DeepSpeed + optional LoRA). Each field's default is shown."""

    kind: str | None = None                 # a registered kind: sft, dpo, orpo, verifier, ...
    model: str | None = None                # HF model dir (verifier: base LM or TokenVerifier dir)
    data: str | None = None                 # parquet file, stage dir, LLaMA-Factory JSON, JSONL
    out: str | None = None                  # output model / adapter dir
    num_workers: int = 1                    # Ray Train workers (data parallel)
    use_gpu: bool = False
    # e.g. {CPU: 2}: Ray gives a worker as many torch threads as CPUs (one by default)
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    zero_stage: int = 2                     # DeepSpeed ZeRO stage 0-3
    lr: float = 1e-4                        # peak learning rate
    head_lr: float | None = None            # verifier: the scalar head's peak lr (None: lr)
    weight_decay: float = 0.0
    epochs: int = 1
    max_steps: int | None = None            # optimizer steps; overrides epochs when set
    micro_batch_size: int = 4               # examples per worker per forward
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.0               # linear warmup, then the lr_schedule
    # cosine: decay to 0 by the last step; constant: hold the peak (a checkpoint still
    # mid-learning, e.g. a base model whose mistakes an LLM2 verifier should learn)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    max_len: int = 1024                     # tokens per example (see overflow)
    overflow: Literal["truncate", "drop"] = "truncate"
    seed: int = 0                           # data order (and torch's seed)
    # shuffle: a seeded permutation of the example indices each epoch; keyed: a seeded hash of
    # each example's tokens and copy number, so two data sets that share examples see them in the
    # same relative order (a paired comparison of data choices; schedule.keyed_order)
    order: Literal["shuffle", "keyed"] = "shuffle"
    lora: LoraConfig = field(default_factory=LoraConfig)
    # True: a merged HF dir; False: the adapter dir (LoRA only). None: merged in recipes (the
    # next stage samples or trains on it), the adapter dir for ``raysys train``.
    merge_output: bool | None = None
    dpo_beta: float = 0.1
    dpo_label_smoothing: float = 0.0
    # DPO + alpha * the chosen answer's per-token NLL (Pang et al. 2024 use 1.0); 0: plain DPO
    dpo_nll_weight: float = 0.0
    orpo_lambda: float = 0.1
    checkpoint_every: int = 0               # optimizer steps between checkpoints; 0: none
    keep_checkpoints: int = 2
    max_failures: int = 0                   # Ray Train restarts from the latest checkpoint
    stop_after_steps: int | None = None     # halt with a checkpoint at this step; rerun resumes
    bf16: Literal["auto"] | bool = "auto"   # auto: bf16 on GPU, fp32 on CPU
    log_every: int = 10                     # steps between metrics lines / progress lines
    trust_remote_code: bool = False
    name: str = "train"                     # Ray Train run name (resume key)
    # Experiment trackers fed by rank 0 every log_every steps: "tensorboard" (offline event
    # files in <work dir>/tensorboard), "wandb" (offline unless WANDB_MODE), "mlflow" (a local
    # file: store unless MLFLOW_TRACKING_URI); each needs its package (raysys.training.trackers).
    # Names are checked here (TRACKER_NAMES); installed packages by the trainer, before Ray.
    trackers: list[str] = field(default_factory=list)

    def validate(self, path: str) -> None:
        def key(name: str) -> str:
            return f"{path}.{name}" if path else name

        if self.kind is not None:
            from raysys.training.kinds import get_kind
            get_kind(self.kind, key("kind"))
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"{key('zero_stage')}: expected one of 0, 1, 2, 3, got {self.zero_stage}")
        for name in ("num_workers", "micro_batch_size", "grad_accum", "epochs", "max_len", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key(name)}: expected >= 1, got {getattr(self, name)}")
        from raysys.config import MAX_BATCH, MAX_REPLICAS, MAX_TOKENS, check_int_range
        check_int_range(self.num_workers, key("num_workers"), 1, MAX_REPLICAS,
                        "one placement-group bundle each")
        check_int_range(self.micro_batch_size, key("micro_batch_size"), 1, MAX_BATCH,
                        "examples per forward")
        check_int_range(self.max_len, key("max_len"), 1, MAX_TOKENS,
                        "no model here has a longer context")
        for name in ("max_steps", "stop_after_steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{key(name)}: expected >= 1, got {v}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"{key('checkpoint_every')}: expected >= 0, got {self.checkpoint_every}")
        if not self.lr > 0 or self.lr == float("inf"):
            raise ConfigError(f"{key('lr')}: expected a finite value > 0, got {self.lr}")
        if self.head_lr is not None and not self.head_lr > 0:
            raise ConfigError(f"{key('head_lr')}: expected > 0, got {self.head_lr}")
        check_range(self.warmup_ratio, key("warmup_ratio"), 0.0, 1.0)
        check_range(self.dpo_label_smoothing, key("dpo_label_smoothing"), 0.0, 0.5)
        if self.dpo_nll_weight < 0:     # non-finite floats are refused when the config is read
            raise ConfigError(f"{key('dpo_nll_weight')}: expected >= 0, got {self.dpo_nll_weight}")
        check_tracker_names(self.trackers, key("trackers"))
        if self.model is not None:
            if not Path(self.model).expanduser().is_dir():
                raise ConfigError(f"{key('model')}: model directory not found: {self.model}")
            # config.json against the weight headers, the tokenizer: no weights loaded
            from raysys.models.loading import check_model_usable
            check_model_usable(self.model, self.trust_remote_code, key("model"))
        if self.out is not None:
            from raysys.data.io import check_not_an_input, check_output_dir
            # the out dir is renamed into place over any old one: never the model or data
            check_not_an_input(self.out, {key("model"): self.model, key("data"): self.data},
                               key("out"), error=ConfigError)
            check_output_dir(self.out, key("out"), ("config.json", "adapter_config.json"))
        if self.data is not None and not Path(self.data).expanduser().exists():
            raise ConfigError(f"{key('data')}: file or directory not found: {self.data}")

    def require_run_fields(self) -> None:
        """A standalone run (``raysys train``) needs kind, model, data and out."""
        require_run_fields({name: getattr(self, name) for name in STAGE_SET_FIELDS})

    def check_stage(self, path: str) -> None:
        """A recipe stage's section must leave kind/model/data/out to the recipe."""
        for name in STAGE_SET_FIELDS:
            if getattr(self, name) is not None:
                raise ConfigError(f"{path}.{name}: set by the recipe for this stage; remove it")

    def for_stage(self, *, kind: str, model: str, data: str, out: str, name: str,
                  trust_remote_code: bool = False) -> TrainConfig:
        """This stage config completed by the recipe (validated again: paths now exist)."""
        from raysys.config import from_dict, to_dict

        merge = self.merge_output if self.merge_output is not None else True
        fields = {**to_dict(self), "kind": kind, "model": model, "data": data, "out": out,
                  "name": name, "trust_remote_code": trust_remote_code,
                  "merge_output": bool(merge and self.lora.enabled)}
        return from_dict(TrainConfig, fields, f"train.{name}")

    @property
    def use_bf16(self) -> bool:
        """bf16 when asked, or on GPU under ``auto`` (CPU bf16 is slower than fp32 here)."""
        return self.use_gpu if self.bf16 == "auto" else bool(self.bf16)


# What ``raysys train`` needs, by field: what to give (the flag and the --config key set it).
RUN_FIELD_REASONS = {
    "kind": "the loss: sft, dpo, orpo or verifier (or a registered kind)",
    "model": "the model dir to start from",
    "data": "the training rows: parquet file, stage dir, LLaMA-Factory JSON or JSONL",
    "out": "the output model / adapter dir",
}


def require_run_fields(raw: dict) -> None:
    """Checked on the raw mapping first, so a missing ``--model`` is named before any path check."""
    for name in STAGE_SET_FIELDS:
        if raw.get(name) is None:
            raise ConfigError(f"--{name}: missing; {RUN_FIELD_REASONS[name]} (or {name}: in "
                              "--config)")
