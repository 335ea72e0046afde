"""``raysys eval`` / ``sample`` / ``train`` use ``run``'s console: raysys's own short lines (with
rates) on the console, Ray's, Ray Data's and the libraries' output in a log file; a command
that refuses its input leaves no log dir behind."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from raysys.console import CONSOLE_LINE, full_log_line, run_logging


def test_full_log_line() -> None:
    assert full_log_line("eval: /r/o", Path("/r/o/logs")) == \
        "eval: /r/o; full log in /r/o/logs/driver.log (--verbose shows it here)"


def test_announce_comes_with_the_first_line_and_never_before_a_refusal(tmp_path: Path,
                                                                        capsys) -> None:
    with run_logging(tmp_path / "a", capture_fds=False, announce="eval: /x") as logs:
        logging.getLogger("ray.data").info("a library line")          # not shown: no announce
        logging.getLogger("raysys.distributed.ray_init").info("Ray started")
        logging.getLogger("raysys.cli").info("next")
    out = capsys.readouterr()
    lines = (out.out + out.err).splitlines()
    assert [ln[9:] for ln in lines] == [full_log_line("eval: /x", logs), "Ray started", "next"]
    assert all(CONSOLE_LINE.match(ln) for ln in lines)
    with pytest.raises(ValueError):
        with run_logging(tmp_path / "b", capture_fds=False, announce="train t (sft): /y"):
            raise ValueError("bad input")     # refused before any line: nothing printed
    out = capsys.readouterr()
    assert out.out + out.err == ""


def test_samples_end_line_from_hand_values() -> None:
    from raysys.distributed.evaluate import samples_end_line

    m = {"rows_generated": 6, "tokens_per_s": 2.954, "wall_s": {"generate": 12.0}}
    # 6 samples in 12 s = 0.5 samples/s
    assert samples_end_line(3, {"rows": 6, "metrics": m}, reused=False) == \
        "samples: 6 samples of 3 problems in 12.0s, 0.5 samples/s, 2.95 tokens/s"
    resumed = {"rows": 8, "metrics": {**m, "rows_generated": 2, "wall_s": {"generate": 4.0}}}
    assert samples_end_line(4, resumed, reused=False) == \
        "samples: 8 samples of 4 problems (2 new) in 4.0s, 0.5 samples/s, 2.95 tokens/s"
    assert samples_end_line(4, {"rows": 8, "metrics": m}, reused=True) == \
        "samples: 8 samples of 4 problems, complete already (nothing generated)"
    assert samples_end_line(1, {"rows": 2, "metrics": {"rows_generated": 2}}, reused=False) == \
        "samples: 2 samples of 1 problems"


def _fail_in(run_dir: Path, write: str | None = None) -> None:
    """Enter ``run_logging(run_dir, discard_if_unused=True)``, optionally write ``write``
    into ``run_dir``, then fail as an input check would."""
    with pytest.raises(ValueError, match="bad input"):
        with run_logging(run_dir, capture_fds=False, discard_if_unused=True):
            logging.getLogger("raysys.test").info("checking")
            if write:
                (run_dir / write).write_text("work\n")
            raise ValueError("bad input")


def test_a_refused_command_leaves_no_logs_dir(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "ray_train"
    _fail_in(target)
    assert list(tmp_path.iterdir()) == []               # the dirs made for the logs too

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "old.txt").write_text("x")
    _fail_in(existing)
    assert sorted(p.name for p in existing.iterdir()) == ["old.txt"]


def test_a_command_that_did_work_keeps_its_log(tmp_path: Path) -> None:
    _fail_in(tmp_path / "a", write="state.json")          # failed after writing: kept
    assert "bad input" in (tmp_path / "a" / "logs" / "driver.log").read_text()
    _fail_in(tmp_path / "a")                              # an earlier run's log: kept
    assert (tmp_path / "a" / "logs" / "driver.log").read_text().count("run failed") == 2
    with run_logging(tmp_path / "b", capture_fds=False, discard_if_unused=True) as logs:
        logging.getLogger("raysys.test").info("fine")   # succeeded: kept
    assert "fine" in (logs / "driver.log").read_text()
    with pytest.raises(ValueError):                       # the default keeps every log
        with run_logging(tmp_path / "c", capture_fds=False):
            raise ValueError("bad input")
    assert (tmp_path / "c" / "logs" / "driver.log").is_file()


# ------------------------------------------------------------------------------------------
# The real commands, as a user runs them (subprocesses: the console is what they print)
# ------------------------------------------------------------------------------------------


def _raysys(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raysys.cli", *args], capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})})


def _console(proc: subprocess.CompletedProcess, results: int) -> tuple[list[str], list[str]]:
    """What the user saw: raysys's log lines, then the command's ``results`` result lines (all
    on stdout); every log line in raysys's short format, no library or worker output, and
    nothing on stderr."""
    lines = proc.stdout.splitlines()
    logged, result = lines[:-results], lines[-results:]
    for line in logged:
        assert CONSOLE_LINE.match(line), f"not a raysys line: {line!r}\n{proc.stdout}"
    assert proc.stderr == ""
    return logged, result


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_eval_and_train_print_raysys_lines_and_log_the_libraries(tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    # eval: 3 problems x 2 samples of 8 tokens; progress lines every second (one per part)
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?",
                                        "answer": f"#### {2 * i}"}) + "\n" for i in range(3)))
    out = tmp_path / "eval"
    proc = _raysys("eval", "--model", str(tiny_model_dir), "--data", f"gsm8k:{data}", "--n", "2",
                   "--max-new-tokens", "8", "--engine", "hf", "--replicas", "1",
                   "--set", "cluster.num_cpus=2", "--out", str(out),
                   env={"RAYSYS_PROGRESS_EVERY_S": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines, (result,) = _console(proc, 1)
    assert 3 <= len(lines) <= 8, proc.stdout
    log_file = out / "logs" / "driver.log"
    assert lines[0].endswith(f"eval: {out}; full log in {log_file} (--verbose shows it here)")
    assert any(re.search(r"sampling: \d+/3 rows \(\d+%\), [\d.e+-]+ rows/s, ETA \S+", ln)
               for ln in lines), proc.stdout
    assert re.search(r"samples: 6 samples of 3 problems in [\d.]+s, [\d.e+-]+ samples/s, "
                     r"[\d.e+-]+ tokens/s$", lines[-1]), proc.stdout
    headline = json.loads(result)
    assert headline["problems"] == 3 and headline["n"] == 2
    text = log_file.read_text()
    # Ray's, Ray Data's and the driver's library output: in the log, not on the console
    for library_line in ("Started a local Ray instance", "Execution plan of Dataset"):
        assert library_line in text and library_line not in proc.stdout
    assert (out / "logs" / "ray_session.txt").is_file()      # where the workers' logs are

    # train: 2 steps of the tiny model
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"{i} + 1 =", "response": f" {i + 1}"}) + "\n"
                           for i in range(8)))
    proc = _raysys("train", "--kind", "sft", "--model", str(tiny_model_dir), "--data", str(sft),
                   "--out", str(tmp_path / "model"), "--max-steps", "2", "--zero", "0",
                   "--set", "micro_batch_size=4", "--set", "log_every=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines, (done, metrics) = _console(proc, 2)
    assert 2 <= len(lines) <= 6, proc.stdout
    log_file = tmp_path / "ray_train" / "logs" / "driver.log"
    assert lines[0].endswith(f"train train (sft): {tmp_path / 'ray_train'}; full log in "
                             f"{log_file} (--verbose shows it here)")
    assert re.search(r"train train: done in [\d.]+s, 2 steps, loss [\d.]+, [\d.]+ samples/s "
                     r"\(run \S+\)$", lines[-1]), proc.stdout
    assert done == f"done: {tmp_path / 'model'}" and json.loads(metrics)["step"] == 2
    text = log_file.read_text()
    for library_line in ("Started a local Ray instance", "Setting accelerator to CPU"):
        assert library_line in text and library_line not in proc.stdout
