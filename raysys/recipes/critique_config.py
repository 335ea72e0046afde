"""The critique-in-the-loop recipe's typed config (``recipe: critique``).

Loop defaults are the authors' (MathCritique README: ``sample_num`` 5, ``temperature`` 0.7,
``reserved_new_data`` 1, ``use_original`` on, ``use_previous`` off, three iterations, every
iteration fine-tuned from the base model). Every value check runs at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raysys.config import ConfigError, DatasetSpec, ModelSpec, SamplingConfig, check_file
from raysys.recipes.config_base import RecipeConfig, RecipeData
from raysys.recipes.model_steps import TinyModel
from raysys.training.config import LoraConfig, TrainConfig


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _tiny_stage(lr: float = 1e-3) -> TrainConfig:
    return TrainConfig(lr=lr, lora=LoraConfig(enabled=False), merge_output=False, zero_stage=0,
                       micro_batch_size=16, warmup_ratio=0.05)


@dataclass(kw_only=True)
class CritiqueData(RecipeData):
    train: DatasetSpec                   # questions the loop samples (gold answers grade them)
    test: DatasetSpec
    seed: DatasetSpec | None = None      # seed-SFT / critic-data problems (default: train)
    seed_file: str | None = None         # the authors' *_0_new.json critique file (real models)
    # Real data without that file: seed critiques built from the seed problems' GSM8K worked
    # solutions (raysys.critique.calc: a one-step slip in the line computing the answer, and the
    # gold solution, each with the critique a perfect critic writes), for the seed SFT
    # (seed_sft.direct, seed_sft.refine_mix: corrupted, correct) and a critic trained here
    # (critic_train.mix: gold, corrupted).
    seed_calc: bool = False

    def validate(self, path: str) -> None:
        check_file(self.seed_file, _key(path, "seed_file"))
        if self.seed_calc and self.seed_file is not None:
            raise ConfigError(f"{_key(path, 'seed_calc')}: set seed_file or seed_calc, not both")


@dataclass
class CritiqueModels:
    actor: ModelSpec                     # the base actor (``tiny``: built and pre-trained here)
    critic: ModelSpec | None = None      # a given critic; None: trained here (critic_train)


@dataclass
class SeedSFT:
    """Iteration 0: the actor's SFT on seed data: direct answers plus refinement examples
    (question + wrong solution + gold critique -> right solution; "correct" critiques -> the
    solution itself, so a refinement does not rewrite a right answer)."""

    direct: int = 2000                   # question -> gold solution rows
    refine_mix: dict[str, int] = field(default_factory=lambda: {
        "corrupted": 1400, "sampled": 0, "correct": 700})
    train: TrainConfig = field(default_factory=_tiny_stage)


@dataclass
class CriticTrain:
    """A critic trained here: question + solution -> critique (gold critiques of gold,
    one-slip corrupted and the seed actor's sampled solutions)."""

    init: Literal["actor", "base"] = "actor"
    mix: dict[str, int] = field(default_factory=lambda: {"gold": 1500, "corrupted": 3000,
                                                         "sampled": 1500})
    heldout: int = 300                   # held-out problems for step / first-error accuracy
    train: TrainConfig = field(default_factory=_tiny_stage)


@dataclass
class LoopConfig:
    """Train-time critique-in-the-loop self-improvement (the authors' parameters)."""

    iterations: int = 3
    sample_num: int = 5
    temperature: float = 0.7
    reserved_new_data: int = 1
    use_critic: bool = True
    use_original: bool = True
    # Iteration t trains on the loop data of iterations 1..t, not t alone (the authors' flag).
    use_previous: bool = False
    # The critique branch also trains on its kept refinements as critique-conditioned examples
    # (question + original solution + critique -> refinement), as the seed refinement data is.
    use_selfimprove_feedback: bool = False
    # Which samples get a critique: gold decides which are wrong (the authors'), or every
    # sample is critiqued and the critic's verdict decides.
    critique_gate: Literal["gold", "critic"] = "gold"
    # Who writes the critiques the actor refines with: the trained critic (the method), or the
    # synthetic task's own per-step critique (a diagnostic: what a perfect critic would give;
    # synthetic data only, barrier mode).
    critiques: Literal["critic", "gold"] = "critic"
    # Which correct refinements are kept: "answer" (the authors': right final answer, shortcut
    # barrier, reserved_new_data) or "working" (also no equation that fails to evaluate or uses
    # a number found neither in the question nor earlier: `critique.selection.unworked`).
    keep: Literal["answer", "working"] = "answer"
    baseline: bool = True                # also run plain self-improvement (use_critic off)
    # Stream the critique branch: each chunk of questions is critiqued as soon as its samples
    # land and refined as soon as its critiques land, actor and critic groups working at once
    # (needs cluster.placement split or colocate). Off: stage barriers.
    stream: bool = False
    stream_chunk: int = 64               # questions per streamed chunk
    from_base: bool = True               # each iteration fine-tunes the base (the authors')
    train: TrainConfig = field(default_factory=_tiny_stage)

    def validate(self, path: str) -> None:
        if self.iterations < 1:
            raise ConfigError(f"{_key(path, 'iterations')}: expected >= 1, got {self.iterations}")
        if self.sample_num < 1:
            raise ConfigError(f"{_key(path, 'sample_num')}: expected >= 1, got {self.sample_num}")
        from raysys.config import MAX_SAMPLES_PER_PROMPT, check_int_range
        check_int_range(self.sample_num, _key(path, "sample_num"), 1, MAX_SAMPLES_PER_PROMPT,
                        "completions per prompt: one replica generates a prompt's samples together")
        if not 0 < self.temperature < float("inf"):
            raise ConfigError(f"{_key(path, 'temperature')}: expected a finite value > 0, "
                              f"got {self.temperature}")
        if self.reserved_new_data < 0:
            raise ConfigError(f"{_key(path, 'reserved_new_data')}: expected >= 0")


@dataclass
class TestTime:
    """Test-time critique -> refine rounds on the final actor."""

    rounds: int = 2
    # critic: refine where the critic says wrong; oracle: only wrong answers (gold decides),
    # with the critic's critique; all: everything; gold: wrong answers with the synthetic task's
    # true critique (synthetic data only: the bound a perfect critic would reach).
    gates: list[Literal["critic", "oracle", "all", "gold"]] = field(
        default_factory=lambda: ["critic", "oracle", "gold"])

    def validate(self, path: str) -> None:
        if self.rounds < 0:
            raise ConfigError(f"{_key(path, 'rounds')}: expected >= 0, got {self.rounds}")
        for i, gate in enumerate(self.gates):
            if gate in self.gates[:i]:      # one report row and stage per gate: twice is one row twice
                raise ConfigError(f"{_key(path, f'gates[{i}]')}: {gate!r} is listed twice; list "
                                  "each gate once")


@dataclass(kw_only=True)
class CritiqueConfig(RecipeConfig):
    """``recipe: critique``: critique-in-the-loop, train time and test time."""

    data: CritiqueData
    models: CritiqueModels
    tiny: TinyModel | None = None        # required when models.actor.path is 'tiny'
    seed_sft: SeedSFT = field(default_factory=SeedSFT)
    critic_train: CriticTrain = field(default_factory=CriticTrain)
    loop: LoopConfig = field(default_factory=LoopConfig)
    test_time: TestTime = field(default_factory=TestTime)
    style: Literal["compact", "authors"] = "compact"      # critique format
    prompt_variant: Literal["short", "full"] = "short"    # short: tiny models' Q/A format
    greedy: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64))
    critique_tokens: int = 96

    def check(self, path: str) -> None:
        for key, stage in (("seed_sft.train", self.seed_sft.train),
                           ("critic_train.train", self.critic_train.train),
                           ("loop.train", self.loop.train)):
            stage.check_stage(key)
        if self.models.actor.path == "tiny" and self.tiny is None:
            raise ConfigError("tiny: required when models.actor.path is 'tiny'")
        synthetic = self.data.train.name == "synthetic"
        seeded = self.data.seed_file is not None or self.data.seed_calc
        if self.models.critic is None and not synthetic and not seeded:
            raise ConfigError("models.critic: required unless the critic can be trained here "
                              "(synthetic data, data.seed_file with the authors' critiques, or "
                              "data.seed_calc)")
        if self.loop.stream and self.cluster.placement == "alternate":
            raise ConfigError("loop.stream: needs cluster.placement split or colocate (with "
                              "alternate the actor and critic groups cannot be alive at once)")
        if self.loop.critiques == "gold" and (not synthetic or self.loop.stream):
            raise ConfigError("loop.critiques: 'gold' needs the synthetic task's per-step truth "
                              "and loop.stream false")
        if "gold" in self.test_time.gates and not synthetic:
            raise ConfigError("test_time.gates: 'gold' needs the synthetic task's per-step truth")
        if not synthetic and not seeded:
            raise ConfigError("data.seed_file: required for non-synthetic data (the seed SFT and "
                              "refinement examples come from the authors' critique file), or "
                              "data.seed_calc: true (seed critiques from GSM8K worked solutions)")
        if synthetic and self.data.seed_calc:
            raise ConfigError("data.seed_calc: for real GSM8K-style data (the synthetic task "
                              "builds its own seed critiques)")
        if self.data.seed_calc:
            for key, mix, allowed in (("seed_sft.refine_mix", self.seed_sft.refine_mix,
                                       ("corrupted", "correct")),
                                      ("critic_train.mix", self.critic_train.mix,
                                       ("gold", "corrupted"))):
                bad = sorted(k for k, v in mix.items() if k not in allowed and v)
                if bad:
                    raise ConfigError(f"{key}: with data.seed_calc only {', '.join(allowed)} "
                                      f"(no per-step truth for {', '.join(bad)}), got {mix}")
