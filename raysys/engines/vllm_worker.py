"""Code that runs inside vLLM's worker process (``worker_extension_cls``).

vLLM mixes :class:`ReloadExtension` into its worker class, so :meth:`VLLMEngine.load_weights
<raysys.engines.vllm_engine.VLLMEngine.load_weights>` can reach it by name through
``LLM.collective_rpc``; a callable sent that way needs vLLM's insecure pickle fallback.

Why it exists: a model with tied input/output embeddings (SmolLM2, Llama-3.2, Qwen2.5 small
models) has no ``lm_head.weight`` in its checkpoint. vLLM's in-place ``reload_weights`` loads
the new embedding into the storage the head shares, but on CPU the head multiplies with a
packed copy of the weight made when the engine started (``dispatch_cpu_unquantized_gemm``:
oneDNN or sgl-kernel), which nothing rebuilds: vLLM logs "ParallelLMHead: Failed to load
weights" and keeps serving the old output head. Re-running the head's
``process_weights_after_loading`` repacks it from the reloaded, shared weight.
"""

from __future__ import annotations

from typing import Any


def tied_head(model: Any) -> Any | None:
    """``model.lm_head`` (unwrapped from a LoRA layer) when its weight is another module's
    weight too (the same storage: tied to the input embedding), else None. vLLM's
    ``get_input_embeddings`` takes token ids and returns vectors, so the sharer is found by
    storage, not by name."""
    head = getattr(model, "lm_head", None)
    head = getattr(head, "base_layer", head)
    weight = getattr(head, "weight", None)
    if weight is None or weight.is_meta or weight.numel() == 0:
        return None
    ptr = weight.data_ptr()
    for module in model.modules():
        other = getattr(module, "weight", None)
        if (module is not head and getattr(module, "base_layer", None) is not head
                and other is not None and not other.is_meta and other.numel() > 0
                and other.data_ptr() == ptr):
            return head
    return None


def repack_tied_head(model: Any) -> bool:
    """Rebuild a tied head's kernel state from its (reloaded) weight; True when it had one."""
    head = tied_head(model)
    method = getattr(head, "quant_method", None)
    if head is None or method is None:
        return False
    method.process_weights_after_loading(head)
    return True


class ReloadExtension:
    """Mixed into vLLM's worker (``worker_extension_cls``): an in-place reload that also
    repacks a tied output head."""

    def raysys_reload_weights(self, weights_path: str) -> bool:
        """``reload_weights`` from ``weights_path``, then :func:`repack_tied_head`; returns
        whether a tied head was repacked."""
        self.reload_weights(weights_path=weights_path)       # type: ignore[attr-defined]
        return repack_tied_head(self.model_runner.get_model())  # type: ignore[attr-defined]
