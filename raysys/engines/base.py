"""The engine contract shared by HFEngine and VLLMEngine (no Ray in this package)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy (and then ``n`` copies are identical)."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    logprobs: bool = False      # also return per-token logprobs in Completion.token_logprobs
    ignore_eos: bool = False    # generate max_new_tokens regardless of EOS (benchmarks)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n: expected >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature: expected >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens: expected >= 1, got {self.max_new_tokens}")
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass
class Completion:
    """One sampled continuation. ``text`` excludes the stop string that ended it."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    finish_reason: str = "length"          # "stop" (EOS or stop string) or "length"
    token_logprobs: list[float] | None = None


@runtime_checkable
class Engine(Protocol):
    """Generates ``params.n`` completions for each prompt, in prompt order."""

    model_path: str

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]: ...

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        """Serve new weights (a trained model dir or adapter) without a new actor."""
        ...

    def close(self) -> None: ...
