"""Critique-in-the-loop building blocks (pure functions; the recipe composes them).

- :mod:`~raysys.critique.format`: render critiques (authors' labels or compact) and parse them;
- :mod:`~raysys.critique.synthetic`: gold critiques, one-slip corruptions and SFT rows for
  critic and refinement training on the synthetic task;
- :mod:`~raysys.critique.selection`: the shortcut barrier, refinement selection, SFT assembly;
- :mod:`~raysys.critique.test_time`: votes over critique -> refine rounds, accuracy/cost table;
- :mod:`~raysys.critique.imports`: the MathCritique ``*_0_new.json`` seed files.
"""

from __future__ import annotations

from raysys.critique.format import ParsedCritique, parse_critique, render_critique, steps_json
from raysys.critique.imports import CritiqueImport, import_critique_file
from raysys.critique.selection import (Selection, assemble_sft, count_numbers, is_shortcut,
                                       select_refinements)
from raysys.critique.synthetic import (check_solution, corrupt_solution, critic_sft_rows,
                                       gold_critique, refinement_sft_rows, steps_right)
from raysys.critique.test_time import RoundCost, Vote, round_table, vote_rounds

__all__ = ["CritiqueImport", "ParsedCritique", "RoundCost", "Selection", "Vote", "assemble_sft",
           "check_solution", "corrupt_solution", "count_numbers", "critic_sft_rows",
           "gold_critique", "import_critique_file", "is_shortcut", "parse_critique",
           "refinement_sft_rows", "render_critique", "round_table", "select_refinements",
           "steps_json", "steps_right", "vote_rounds"]
