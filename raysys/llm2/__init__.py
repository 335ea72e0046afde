"""LLM2: a token-level verifier beside the LLM (yc1999/LLM2, arXiv 2412.20372).

- :mod:`raysys.llm2.explore_config`: :class:`ExploreConfig`, the typed ``explore`` section;
- :mod:`raysys.llm2.exploration`: pure torch pieces of token quality exploration (candidate
  masks, sampling logits, negative draws, one sequence's ``(pos, gt, neg)`` triples);
- :mod:`raysys.llm2.explorer`: :class:`~raysys.llm2.explorer.TokenExplorer`, the batched
  teacher-forced worker that turns ``problems`` / ``sft`` rows into ``token_pairs`` rows.

Only the config is imported here, so loading a recipe config never imports torch.
"""

from raysys.llm2.explore_config import ExploreConfig

__all__ = ["ExploreConfig"]
