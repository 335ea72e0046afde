"""The LLM2 recipe's typed config (``recipe: llm2``).

Decoding defaults are the authors' evaluation script (alpha 0.1, beta 0.25); the verifier's
training defaults follow their config (lr 2e-5 full fine-tune, cosine, warmup 0.1) except where
a tiny demo overrides them. Every value check runs at load time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from raysys.config import ConfigError, DatasetSpec, ModelSpec, SamplingConfig, check_file
from raysys.llm2.explore_config import ExploreConfig
from raysys.recipes.config_base import RecipeConfig, RecipeData
from raysys.recipes.model_steps import TinyModel
from raysys.training.config import LoraConfig, TrainConfig


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclass(kw_only=True)
class LLM2Data(RecipeData):
    explore: DatasetSpec                 # problems with gold solutions to explore on
    test: DatasetSpec
    heldout: int = 200                   # explore problems held out for pair accuracy
    pairs_file: str | None = None        # the authors' LLM2 JSONL instead of exploring here

    def validate(self, path: str) -> None:
        check_file(self.pairs_file, _key(path, "pairs_file"))
        if self.heldout < 0:
            raise ConfigError(f"{_key(path, 'heldout')}: expected >= 0, got {self.heldout}")


@dataclass
class LLM2Models:
    llm: ModelSpec                       # System 1 (``tiny``: built and pre-trained here)
    expert: ModelSpec | None = None      # for explore.mode expert / contrast
    verifier: str | None = None          # a trained verifier dir: skip exploration and training


@dataclass
class DecodeConfig:
    """Verifier-guided decoding (the ``guided`` engine) and the evaluation around it."""

    beta: float = 0.25                   # the authors' script
    alpha: float = 0.1                   # the authors' script: candidates p >= alpha * p_max
    top_k_candidates: int = 0            # 0: no cap
    beta_sweep: list[float] = field(default_factory=list)   # extra guided-greedy rows
    maj_k: int = 8                       # the paper reports maj@20; 0 turns maj@k off
    temperature: float = 0.7             # for the k samples (plain and guided)
    rerank: bool = True                  # best-of-k by the verifier's mean token score

    def validate(self, path: str) -> None:
        for name, v in [("beta", self.beta), ("temperature", self.temperature)] + \
                [(f"beta_sweep[{i}]", b) for i, b in enumerate(self.beta_sweep)]:
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{_key(path, name)}: expected a finite value >= 0, got {v}")
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"{_key(path, 'alpha')}: expected 0 < alpha <= 1, got {self.alpha}")
        if self.maj_k < 0 or self.maj_k == 1:
            raise ConfigError(f"{_key(path, 'maj_k')}: expected 0 (off) or >= 2, got {self.maj_k}")
        from raysys.config import MAX_SAMPLES_PER_PROMPT, check_int_range
        check_int_range(self.maj_k, _key(path, "maj_k"), 0, MAX_SAMPLES_PER_PROMPT,
                        "completions per prompt: one replica generates a prompt's samples together")
        # each beta is one report row, guided_beta<beta:g>: two that print alike would be one
        # row twice (its comparisons ambiguous) and one stage dir written twice
        rows = {f"{self.beta:g}": "beta"}
        for i, b in enumerate(self.beta_sweep):
            if b == self.beta:
                continue                      # the recipe skips it: the guided row already is it
            name = f"{b:g}"
            if name in rows:
                raise ConfigError(f"{_key(path, f'beta_sweep[{i}]')}: {b} is the same row "
                                  f"(guided_beta{name}) as {rows[name]}; list each beta once")
            rows[name] = f"beta_sweep[{i}]"


def _verifier_train() -> TrainConfig:
    return TrainConfig(lr=2e-5, warmup_ratio=0.1, epochs=2, lora=LoraConfig(enabled=False))


@dataclass(kw_only=True)
class LLM2Config(RecipeConfig):
    """``recipe: llm2``: explore -> token_pairs -> verifier -> guided decoding vs plain."""

    data: LLM2Data
    models: LLM2Models
    tiny: TinyModel | None = None        # required when models.llm.path is 'tiny'
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    verifier_train: TrainConfig = field(default_factory=_verifier_train)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    # The prompt format of exploration and decoding alike, so the verifier scores tokens in the
    # context it was trained in. chat: the model's chat template (instruct models, the authors'
    # setting); zero_shot: "Question: q\nAnswer:" with the solution after one space, token
    # pairs rendered as text (base models trained on Q/A text, like the tiny demo's).
    template: Literal["chat", "zero_shot"] = "chat"
    greedy: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=512))

    def check(self, path: str) -> None:
        self.verifier_train.check_stage("verifier_train")
        self.explore.check_expert(self.models.expert, "explore", "models.expert")
        if self.models.llm.path == "tiny" and self.tiny is None:
            raise ConfigError("tiny: required when models.llm.path is 'tiny'")
        want = "chat" if self.template == "chat" else "qa"
        if self.tiny is not None and self.tiny.pretrain_format != want:
            raise ConfigError(f"tiny.pretrain_format: expected {want!r} with template "
                              f"{self.template!r} (the tiny LLM must be trained in the format it "
                              f"is explored and decoded in)")
        if self.engine.kind == "guided":
            raise ConfigError("engine.kind: the run's plain engine (hf, vllm or auto); guided "
                              "decoding is set up by the recipe from decode.*")
