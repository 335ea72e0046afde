"""Models: ``loading`` (HF dirs, hub ids, LoRA adapters, merges), ``tiny`` (locally built tiny
Llama models for tests and the CPU demo), ``verifier`` (the LLM2 TokenVerifier).

Import from the submodules; this package stays import-light (no torch/transformers on import).
"""
