"""The typed config of LLM2 token quality exploration (the ``token_pairs`` stage).

The authors' repository sets no values for gamma, the temperature or the number of samples
(CLI arguments without defaults, no driver script), so every default below says where it
comes from or why it was chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from raysys.config import ConfigError

if TYPE_CHECKING:
    from raysys.config import ModelSpec

SampleMode = Literal["uniform", "base", "expert", "contrast"]
EXPERT_MODES = ("expert", "contrast")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _finite(value: float, key: str) -> None:
    # YAML/`--set` accept "nan" and "inf" as floats; neither means anything here.
    if not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value}")


@dataclass
class ExploreConfig:
    """Token quality exploration: which tokens are candidates, and how negatives are drawn.

    At each response position of a teacher-forced gold solution, a token is a candidate of a
    model when it passes the ``alpha`` plausibility test and/or is in its ``top_k``; negatives
    are the candidates of *both* models (base and, when given, expert) minus the gold token and
    pad/eos, drawn ``num_samples`` times with replacement from ``softmax(z / temperature)``,
    ``z`` chosen by ``mode``.
    """

    # Plausibility: keep v when p(v) >= alpha * max p. 0.1 is the default and the
    # authors' decoding script's value, so training negatives come from the same candidate set
    # the guided decoder will score. 0 turns the test off.
    alpha: float = 0.1
    # Top-k cut; 0 turns it off. With both alpha and top_k set the candidates are the
    # intersection, as in the authors' code. Off by default: alpha alone adapts to the model's
    # confidence (one candidate where it is sure, several where it hesitates); a fixed k does not.
    top_k: int = 0
    # Sampling logits z: uniform (z = 0), base (z1), expert (z2), contrast (z1 + gamma (z1 - z2)).
    # "base" by default: it needs no second model, and its negatives are the tokens the base
    # model itself would plausibly emit, i.e. exactly the mistakes guided decoding must reject.
    mode: SampleMode = "base"
    # Contrast strength (contrast mode only). 1.0 weighs the base-vs-expert disagreement as much
    # as the base logits themselves (z = 2 z1 - z2): tokens the small model over-prefers are
    # boosted clearly, yet the base model's ranking still dominates where both agree. 0 = base.
    gamma: float = 1.0
    # Softmax temperature of the draw. 1.0 keeps the model's own distribution, the one the
    # authors' evaluation samples from (temperature 1.0); lower values concentrate the draws on
    # the top wrong candidate, higher ones spread them towards uniform.
    temperature: float = 1.0
    # Draws per position, with replacement and not deduplicated (frequent mistakes weigh more,
    # as in the authors' data). 2: the authors' README example holds 2 draws per position; on
    # tiny models (LEARNING_SIGNAL.md) few positions have more than 2 candidates anyway.
    num_samples: int = 2
    # Base seed; each row's generator is seeded from a stable hash of its content plus this, so
    # the draws do not depend on batch composition, order or the number of workers.
    seed: int = 0
    # Longest rendered sequence (tokens) fed to the models; positions past it give no pairs.
    # 2048 is the authors' verifier max_length (and their inference truncation).
    max_len: int = 2048
    # Sequences per teacher-forced forward pass. Only speed and memory depend on it: the
    # forward keeps float logits of batch_size x (response span) x vocab, e.g. 8 x 512 x 152k
    # x 4 bytes = 2.5 GB for a Qwen-size vocabulary; lower it for long solutions.
    batch_size: int = 8

    @property
    def needs_expert(self) -> bool:
        """True when ``mode`` reads the expert model's logits."""
        return self.mode in EXPERT_MODES

    def validate(self, path: str = "") -> None:
        """Raise ``ConfigError("<path>.<key>: expected ...")`` for a value out of range."""
        for key in ("alpha", "gamma", "temperature"):
            _finite(getattr(self, key), _join(path, key))
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"{_join(path, 'alpha')}: expected a value in [0, 1] (0 turns the "
                              f"plausibility test off), got {self.alpha}")
        if self.top_k < 0:
            raise ConfigError(f"{_join(path, 'top_k')}: expected an int >= 0 (0 turns top-k "
                              f"off), got {self.top_k}")
        if self.mode not in ("uniform", "base", "expert", "contrast"):
            raise ConfigError(f"{_join(path, 'mode')}: expected one of 'uniform', 'base', "
                              f"'expert', 'contrast', got {self.mode!r}")
        if self.gamma < 0:
            raise ConfigError(f"{_join(path, 'gamma')}: expected a value >= 0, got {self.gamma}")
        if self.temperature <= 0:
            raise ConfigError(f"{_join(path, 'temperature')}: expected a value > 0, "
                              f"got {self.temperature}")
        for key, lo in (("num_samples", 1), ("max_len", 2), ("batch_size", 1)):
            value = getattr(self, key)
            if value < lo:
                raise ConfigError(f"{_join(path, key)}: expected an int >= {lo}, got {value}")

    def check_expert(self, expert: ModelSpec | None, path: str = "",
                     expert_key: str = "expert") -> None:
        """Raise ``ConfigError`` when ``mode`` needs an expert model and none is configured.

        For the recipe's own ``validate``: ``cfg.explore.check_expert(cfg.expert, "explore",
        "expert")``; ``expert_key`` is the config key that names the expert model.
        """
        if self.needs_expert and expert is None:
            raise ConfigError(f"{_join(path, 'mode')}: {self.mode!r} needs an expert model, but "
                              f"{expert_key} is not set (set it, or use mode 'base' or "
                              f"'uniform')")
