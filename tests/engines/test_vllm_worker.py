"""The vLLM worker extension's tied-head repack, on vLLM's own CPU kernel (no engine start).

vLLM on CPU multiplies the output head with a copy packed at engine start
(``UnquantizedEmbeddingMethod.process_weights_after_loading``); an in-place reload of a tied
model writes new values into the shared weight and leaves that copy stale. The end-to-end
check (a reloaded SmolLM2-like tied model equals a fresh engine) is in test_vllm.py.
"""

from __future__ import annotations

import pytest
import torch

from raysys.engines.vllm_worker import repack_tied_head, tied_head

pytestmark = pytest.mark.vllm


class _Model(torch.nn.Module):
    """Embedding + output head of a vLLM-like model; ``tie`` shares one weight."""

    def __init__(self, tie: bool, vocab: int = 128, hidden: int = 64) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(vocab, hidden)
        self.lm_head = torch.nn.Linear(hidden, vocab, bias=False)
        if tie:
            self.lm_head.weight = self.model.embed_tokens.weight
        for p in self.parameters():
            p.requires_grad_(False)


class _LoraWrapped(torch.nn.Module):
    """A LoRA layer in vLLM's style: the real layer as ``base_layer``."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base_layer = base


def test_tied_head_found_by_shared_storage() -> None:
    tied = _Model(tie=True)
    assert tied_head(tied) is tied.lm_head
    assert tied_head(_Model(tie=False)) is None
    # same values, separate storage: not tied
    copy = _Model(tie=False)
    copy.lm_head.weight.copy_(copy.model.embed_tokens.weight)
    assert tied_head(copy) is None
    wrapped = _Model(tie=True)
    head = wrapped.lm_head
    wrapped.lm_head = _LoraWrapped(head)
    assert tied_head(wrapped) is head
    assert tied_head(torch.nn.Linear(4, 4)) is None          # no lm_head at all


def test_repack_refreshes_a_stale_packed_head() -> None:
    pytest.importorskip("vllm")
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("the packed head copy is vLLM's CPU path")
    model = _Model(tie=True)
    head = model.lm_head
    head.quant_method = UnquantizedEmbeddingMethod()
    head.quant_method.process_weights_after_loading(head)        # what engine start does
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))

    def logits() -> torch.Tensor:
        return head.cpu_linear(x, head.weight, None)

    assert torch.allclose(logits(), x @ head.weight.T, atol=1e-5)
    model.model.embed_tokens.weight.mul_(2.0).add_(0.5)          # what an in-place reload does
    assert not torch.allclose(logits(), x @ head.weight.T, atol=1e-3)   # vLLM alone: stale head
    assert repack_tied_head(model) is True
    assert torch.allclose(logits(), x @ head.weight.T, atol=1e-5)


def test_repack_leaves_an_untied_head_alone() -> None:
    model = _Model(tie=False)
    calls = []
    model.lm_head.quant_method = type("Q", (), {
        "process_weights_after_loading": lambda self, layer: calls.append(layer)})()
    assert repack_tied_head(model) is False and calls == []
