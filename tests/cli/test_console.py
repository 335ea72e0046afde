"""raysys's console: quiet by default (its own short lines; library output in RUN_DIR/logs),
progress lines with rate and ETA, ``raysys status`` elapsed time for live stages."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow as pa
import pytest

from raysys.console import (CONSOLE_LINE, RaysysOnly, Throttle, fmt_duration, progress_text,
                            rate_eta, run_logging)



def test_rate_and_eta_from_hand_values() -> None:
    # 30 done of 120, 10 of them done before this invocation, 10 s: 20 rows / 10 s = 2 rows/s;
    # 90 rows left at 2 rows/s = 45 s.
    assert rate_eta(30, 120, 10.0, start_done=10) == (2.0, 45.0)
    assert rate_eta(10, 120, 10.0, start_done=10) == (None, None)     # nothing new yet
    assert progress_text("samples", 30, 120, 10.0, start_done=10) == \
        "samples: 30/120 rows (25%), 2 rows/s, ETA 45s"
    assert progress_text("train weak", 20, 60, 8.0, unit="steps") == \
        "train weak: 20/60 steps (33%), 2.5 steps/s, ETA 16s"
    assert progress_text("x", 0, 5, 3.0) == "x: 0/5 rows (0%)"


def test_stage_end_line() -> None:
    from raysys.pipeline.run_dir import stage_end_line

    assert stage_end_line("iter_0/weak_labels", 48, 4.76, 96.2) == \
        "iter_0/weak_labels: done, 48 rows in 4.8s (run 1m36s)"
    m = {"step": 30, "loss": 1.97040, "samples_per_s": 148.149, "lr": 0.0}
    assert stage_end_line("models/weak", None, 34.7, 53.0, m) == \
        "models/weak: done in 34.7s, 30 steps, loss 1.9704, 148.1 samples/s (run 53s)"


def test_fmt_duration() -> None:
    assert [fmt_duration(s) for s in (0, 42.4, 185, 3720, None, float("nan"))] == \
        ["0s", "42s", "3m05s", "1h02m", "?", "?"]


def test_generation_progress_line_counts_this_invocation() -> None:
    from raysys.distributed.stage_writer import GenerationSpec, Progress

    spec = GenerationSpec("samples", rows=lambda w, c: [])
    table = lambda ids: pa.table({"problem_id": ids, "sample_idx": [0] * len(ids),  # noqa: E731
                                  "correct": [True, False][: len(ids)] * (len(ids) // 2 or 1)})
    p = Progress(spec, 1, 10, table(["a", "b"]), label="weak_labels")   # 2 rows from a past run
    p.add(table(["c", "d"]))
    p.add(table(["e", "f"]))
    # 4 new rows in 8 s = 0.5 rows/s; 4 rows left -> 8 s; 3 of 6 graded correct.
    assert p.line(now=p.t0 + 8.0) == \
        "weak_labels: 6/10 rows (60%), 0.5 rows/s, ETA 8s, accuracy so far 50.0%"


def test_train_progress_line() -> None:
    from raysys.training.trainer import last_metrics, train_progress_line

    m = {"step": 10, "loss": 2.75591, "samples_per_s": 144.61, "elapsed_s": 4.0}
    # 10 steps in 4 s = 2.5 steps/s; 20 left -> 8 s
    assert train_progress_line("weak", m, 30, 31.0) == \
        "train weak: 10/30 steps (33%), 2.5 steps/s, ETA 8s, loss 2.7559, 144.6 samples/s (running 31s)"
    assert last_metrics(Path("/nonexistent/metrics.jsonl")) is None


def test_last_metrics_skips_a_partial_line(tmp_path: Path) -> None:
    from raysys.training.trainer import last_metrics

    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert last_metrics(p) == {"step": 2, "loss": 1.5}


def _record(name: str, msg: str, created: float, level: int = logging.INFO) -> logging.LogRecord:
    r = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    r.created = created
    return r


def test_console_filters() -> None:
    only = RaysysOnly()
    assert only.filter(_record("raysys.pipeline.run_dir", "x", 0))
    assert not only.filter(_record("ray.train", "x", 0))
    assert not only.filter(_record("transformers.modeling_utils", "x", 0))
    assert not only.filter(_record("raysys.distributed.actors", "group started", 0))
    assert only.filter(_record("raysys.distributed.actors", "lost", 0, logging.WARNING))
    th = Throttle(("p",), every_s=30, reset_on=("stage",))
    shown = [t for t in (0, 10, 29, 31, 45, 62, 100)
             if th.filter(_record("p", f"samples: {t}/100 rows", t))]
    assert shown == [31, 62, 100]            # first after 30 s of the stage, then every 30 s
    assert th.filter(_record("p", "other: 1/2 rows", 100)) is False   # its own clock
    assert th.filter(_record("q", "not progress", 0))
    # a stage ended: the next stage's "samples" label starts a new clock
    assert th.filter(_record("stage", "iter_0/a: done", 101))
    assert not th.filter(_record("p", "samples: 1/100 rows", 120))
    assert th.filter(_record("p", "samples: 9/100 rows", 151))


def test_heartbeat_env() -> None:
    from raysys.config import ConfigError
    from raysys.console import HEARTBEAT_S, heartbeat_s

    assert heartbeat_s({}) == HEARTBEAT_S
    assert heartbeat_s({"RAYSYS_PROGRESS_EVERY_S": "5"}) == 5.0
    for bad in ("0", "-3", "soon", "inf"):
        with pytest.raises(ConfigError, match="RAYSYS_PROGRESS_EVERY_S: expected a positive"):
            heartbeat_s({"RAYSYS_PROGRESS_EVERY_S": bad})


def test_run_logging_splits_console_and_driver_log(tmp_path: Path, capsys) -> None:
    with run_logging(tmp_path / "run", capture_fds=False) as logs:
        logging.getLogger("raysys.pipeline.run_dir").info("iter_0/samples: done")
        logging.getLogger("transformers.modeling_utils").warning("a library warning")
        logging.getLogger("raysys.training.trainer").debug("training data: stats")
        print("a library print")
        import warnings
        warnings.warn("a python warning", UserWarning, stacklevel=1)
    out = capsys.readouterr()
    console = (out.out + out.err).splitlines()
    assert len(console) == 1 and CONSOLE_LINE.match(console[0])
    assert console[0].endswith(" iter_0/samples: done")
    text = (logs / "driver.log").read_text()
    for expected in ("iter_0/samples: done", "a library warning", "training data: stats",
                     "a library print", "a python warning"):
        assert expected in text
    assert logs == (tmp_path / "run" / "logs").absolute()
    print("after")                                          # streams are restored
    assert capsys.readouterr().out == "after\n"


def test_run_logging_verbose_shows_libraries(tmp_path: Path, capsys) -> None:
    # A library logger without handlers of its own (Ray's and transformers' hold the stream of
    # whichever test imported them first, so capsys cannot see them in a full run).
    with run_logging(tmp_path, verbose=True) as logs:
        logging.getLogger("some_library.module").info("library info")
    assert "library info" in capsys.readouterr().err
    assert "library info" in (logs / "driver.log").read_text()


def test_status_shows_elapsed_of_live_running_stage(tmp_path: Path) -> None:
    import socket

    from raysys.cli.run import with_live_elapsed
    from raysys.pipeline.report import format_status

    state = {"runs": [{"start": "2026-01-01T00:00:00Z", "end": None, "pid": os.getpid(),
                       "host": socket.gethostname()}],
             "stages": {"iter_0/a": {"status": "complete", "rows": 48, "seconds": 4.2},
                        "iter_0/b": {"status": "running", "start": "2026-01-01T00:01:00Z"}}}
    now = 1767225600.0 + 60 + 95          # 2026-01-01T00:01:00Z + 95 s
    text = format_status(with_live_elapsed(state, now=now))
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["iter_0/a", "complete", "48", "4.2s"]
    assert lines[2].split()[:4] == ["iter_0/b", "running", "-", "95.0s"]
    dead = {**state, "runs": [{**state["runs"][0], "pid": 2**22 + 12345}]}
    assert with_live_elapsed(dead, now=now) == dead
