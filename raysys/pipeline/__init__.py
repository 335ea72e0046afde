"""The driver loop: run directories, resumable stages, state.json, status and report."""

from __future__ import annotations

from raysys.pipeline.report import format_status, phase_timings, render_report, write_report
from raysys.pipeline.run_dir import RunDir, StageResult, config_diff, load_state

__all__ = ["RunDir", "StageResult", "config_diff", "format_status", "load_state",
           "phase_timings", "render_report", "write_report"]
