"""raysys: Ray-distributed training and sampling of LLM reasoners."""
__version__ = "0.1.0"
