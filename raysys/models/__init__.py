"""Models: ``loading`` (load HF dirs, hub ids, LoRA adapters, merges, ``models info``),
``model_dir`` (a dir's layout: config.json, safetensors headers, adapters, hub ids), ``usable``
(config.json against the weights and the tokenizer: what serving and training need), ``tiny``
(locally built tiny Llama models for tests and the CPU demo), ``verifier`` (the LLM2
TokenVerifier).

Import from the submodules; this package stays import-light (no torch/transformers on import).
"""
