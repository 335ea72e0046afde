"""Answer grading: final-answer extraction, math equivalence, maj@k / pass@k."""

from __future__ import annotations

from raysys.grading.equiv import is_equiv
from raysys.grading.extract import STYLES, extract_answer, gold_answer, hash_answer, last_boxed
from raysys.grading.grader import grade, grade_many
from raysys.grading.metrics import majority_vote, pass_at_k, wilson_interval

__all__ = ["STYLES", "extract_answer", "gold_answer", "grade", "grade_many", "hash_answer",
           "is_equiv", "last_boxed", "majority_vote", "pass_at_k", "wilson_interval"]
