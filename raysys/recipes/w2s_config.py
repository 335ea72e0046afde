"""The weak-to-strong recipe's typed config (``recipe: w2s``, or its alias ``weak_to_strong``).

Defaults are the paper's (Yang et al. 2024): greedy zero-shot weak labels, few-shot strong ICL
with weak-model demonstrations, the hybrid stage-I set, stage II with n = 10 samples at T = 1.0,
confidence thresholds 0.6 / 0.8, DPO. Every value check runs at load time, so a bad config is
one ``ConfigError`` naming the key before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raysys.config import ConfigError, DatasetSpec, ModelSpec, SamplingConfig, check_file, check_range
from raysys.recipes.config_base import RecipeConfig, RecipeData
from raysys.recipes.model_steps import TinyModel
from raysys.training.config import TrainConfig

W2S_STOP = ["Question", "Answer"]     # the paper's zero-shot stops (a new Q/A block)


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclass(kw_only=True)
class W2SData(RecipeData):
    """The paper's splits: train_1 (gold, weak SFT), train_2 (unlabelled), test."""

    train_2: DatasetSpec
    test: DatasetSpec
    train_1: DatasetSpec | None = None
    weak_outputs: str | None = None     # precomputed weak labels JSONL (id, prompt, response, ...)
    grade_style: str = "w2s"
    math_like: bool = False             # MATH-like data: several pairs per question in stage II

    def validate(self, path: str) -> None:
        check_file(self.weak_outputs, _key(path, "weak_outputs"))


@dataclass
class W2SModels:
    strong: ModelSpec
    weak: ModelSpec | None = None       # a trained weak model, or the base that weak_sft trains


@dataclass
class TinyModels:
    weak: TinyModel | None = None
    strong: TinyModel | None = None


@dataclass
class WeakSFT:
    """Step 1: SFT of the weak model on train_1 (question -> gold solution)."""

    enabled: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class ICLConfig:
    """Step 3: the strong model's few-shot answers."""

    k: int = 4
    demos_from: Literal["weak", "gold"] = "weak"   # the paper: weak-model outputs
    seed: int = 0

    def validate(self, path: str) -> None:
        if self.k < 1:
            raise ConfigError(f"{_key(path, 'k')}: expected >= 1, got {self.k}")


@dataclass
class Stage1Config:
    variant: Literal["hybrid", "weak", "icl"] = "hybrid"
    iterations: int = 1                 # 2: relabel with the stage-I model and train again
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, path: str) -> None:
        if self.iterations not in (1, 2):
            raise ConfigError(f"{_key(path, 'iterations')}: expected 1 or 2, got {self.iterations}")


@dataclass
class Stage2Config:
    enabled: bool = True
    n: int = 10
    temperature: float = 1.0
    min_confidence: float = 0.6
    high_confidence: float = 0.8
    max_pairs: int | None = None        # default: 1, or 3 when data.math_like
    method: Literal["dpo", "orpo"] = "dpo"
    seed: int = 0
    # Sample (and build pairs on) only the first N train_2 questions; None: all of them. Stage II
    # costs n samples per question, so a large train_2 (for many stage-I labels) can cap it here.
    questions: int | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-6))

    def validate(self, path: str) -> None:
        check_range(self.min_confidence, _key(path, "min_confidence"), 0.0, 1.0)
        check_range(self.high_confidence, _key(path, "high_confidence"), 0.0, 1.0)
        if self.n < 2:
            raise ConfigError(f"{_key(path, 'n')}: expected >= 2 samples for a majority, got {self.n}")
        from raysys.config import MAX_SAMPLES_PER_PROMPT, check_int_range
        check_int_range(self.n, _key(path, "n"), 2, MAX_SAMPLES_PER_PROMPT,
                        "completions per prompt: one replica generates a prompt's samples together")
        if self.temperature <= 0:
            raise ConfigError(f"{_key(path, 'temperature')}: expected > 0, got {self.temperature}")
        if self.questions is not None and self.questions < 1:
            raise ConfigError(f"{_key(path, 'questions')}: expected >= 1 or null (all), got {self.questions}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ConfigError(f"{_key(path, 'max_pairs')}: expected >= 1, got {self.max_pairs}")


@dataclass
class W2SEval:
    maj_k: int = 0                      # > 1: also sample k at ``temperature`` for maj@k
    temperature: float = 0.7
    # The untouched strong model answering zero-shot: the bar stage I must clear to have
    # elicited anything beyond what the base model already does in that format.
    strong_zero_shot: bool = True

    def validate(self, path: str) -> None:
        if self.maj_k < 0 or self.maj_k == 1:
            raise ConfigError(f"{_key(path, 'maj_k')}: expected 0 (off) or >= 2, got {self.maj_k}")
        from raysys.config import MAX_SAMPLES_PER_PROMPT, check_int_range
        check_int_range(self.maj_k, _key(path, "maj_k"), 0, MAX_SAMPLES_PER_PROMPT,
                        "completions per prompt: one replica generates a prompt's samples together")


@dataclass(kw_only=True)
class W2SConfig(RecipeConfig):
    """``recipe: w2s``: the whole method, top to bottom."""

    data: W2SData
    models: W2SModels
    tiny: TinyModels = field(default_factory=TinyModels)
    # A paragraph before every prompt of the task (weak SFT data, weak labels, ICL, stage-I and
    # stage-II data, evaluation); never in a tiny strong model's pre-training.
    # configs/w2s_instruction.yaml (and the quick demo) use one so that the strong base model
    # meets a prompt format it was not pre-trained on; configs/demo.yaml does not.
    instruction: str | None = None
    weak_sft: WeakSFT = field(default_factory=WeakSFT)
    icl: ICLConfig = field(default_factory=ICLConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    eval: W2SEval = field(default_factory=W2SEval)
    greedy: SamplingConfig = field(default_factory=lambda: SamplingConfig(
        max_new_tokens=256, stop=list(W2S_STOP)))
    export_llamafactory: bool = True

    def check(self, path: str) -> None:
        for key, stage in (("weak_sft.train", self.weak_sft.train), ("stage1.train", self.stage1.train),
                           ("stage2.train", self.stage2.train)):
            stage.check_stage(key)
        for name in ("weak", "strong"):
            spec = getattr(self.models, name)
            if spec is not None and spec.path == "tiny" and getattr(self.tiny, name) is None:
                raise ConfigError(f"tiny.{name}: required when models.{name}.path is 'tiny'")
        if self.stage2.min_confidence > self.stage2.high_confidence:
            raise ConfigError(f"stage2.min_confidence: expected <= stage2.high_confidence "
                              f"({self.stage2.high_confidence}), got {self.stage2.min_confidence}")
        if self.data.weak_outputs is None and self.models.weak is None:
            raise ConfigError("models.weak: required unless data.weak_outputs gives weak labels")
        if (self.weak_sft.enabled and self.models.weak is not None and self.data.weak_outputs is None
                and self.data.train_1 is None):
            raise ConfigError("data.train_1: required to train the weak model (weak_sft.enabled); "
                              "set weak_sft.enabled: false to use models.weak as trained")
        if self.icl.demos_from == "gold" and self.data.train_1 is None:
            raise ConfigError("data.train_1: required for icl.demos_from 'gold' (gold demonstrations "
                              "come from the labelled split)")

    @property
    def pairs_per_question(self) -> int:
        if self.stage2.max_pairs is not None:
            return self.stage2.max_pairs
        return 3 if self.data.math_like else 1
