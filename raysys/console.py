"""What a run prints: raysys's own short lines on the console, everything else in ``RUN_DIR/logs``.

Quiet (the default) for a run started from the CLI:

- the console gets only ``raysys.*`` log records at INFO and above, one short line each
  (``HH:MM:SS message``), and the command's result (printed after the run, streams restored);
  per-part progress lines are throttled to one per :data:`HEARTBEAT_S` per stage;
- ``RUN_DIR/logs/driver.log`` gets the driver's full log: every logger (Ray, DeepSpeed,
  transformers, ...) at INFO, raysys at DEBUG, and whatever the driver process or its child
  processes print (``sys.stdout`` / ``sys.stderr`` and file descriptors 1 and 2 point at it);
- Ray starts with ``log_to_driver=False``, so worker and actor output stays in Ray's session
  logs; ``RUN_DIR/logs/ray_session.txt`` names that directory (and ``logs/ray_session`` links
  to it when it is on this machine).

``--verbose`` keeps today's behaviour: library output and worker logs on the console, and
driver.log still written.

``raysys eval`` / ``sample`` (logs in ``OUT/logs``) and ``raysys train`` (in its Ray Train work
dir's ``logs``) use the same console; a command whose own input checks fail inside the logged
block (``discard_if_unused``) leaves no logs dir behind.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from raysys.console_redirect import redirect_output

log = logging.getLogger("raysys.console")

CONSOLE_DATEFMT = "%H:%M:%S"
CONSOLE_FORMAT = "%(asctime)s %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A raysys log line as the console shows it (tests check every console line against this).
CONSOLE_LINE = re.compile(r"^\d\d:\d\d:\d\d \S")
LOGS_DIR = "logs"
DRIVER_LOG = "driver.log"
RAY_SESSION_FILE = "ray_session.txt"
# Progress lines (per landed part, per training step) reach the console at most this often per
# stage (RAYSYS_PROGRESS_EVERY_S overrides); every one of them is in driver.log. A minute keeps
# the quick demo under 40 lines even on a loaded machine.
HEARTBEAT_ENV = "RAYSYS_PROGRESS_EVERY_S"
HEARTBEAT_S = 60.0
# A record from these loggers (a stage finished) starts the next stage's progress clock.
STAGE_LOGGERS = ("raysys.pipeline.run_dir",)
PROGRESS_LOGGERS = ("raysys.distributed.stage_writer", "raysys.distributed.generation")
# raysys loggers whose INFO lines are detail (actor groups starting, weights served in place):
# driver.log only unless --verbose; their warnings still reach the console.
DETAIL_LOGGERS = ("raysys.distributed.actors", "raysys.distributed.roles")


@dataclass
class _Session:
    logs: Path
    verbose: bool
    link_session: bool = True


_SESSION: _Session | None = None


def heartbeat_s(environ: dict[str, str] | None = None) -> float:
    """Seconds between a stage's console progress lines: ``RAYSYS_PROGRESS_EVERY_S`` or
    :data:`HEARTBEAT_S`; a bad value is a ConfigError naming the variable."""
    from raysys.config import ConfigError

    raw = (os.environ if environ is None else environ).get(HEARTBEAT_ENV)
    if raw is None or raw == "":
        return HEARTBEAT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(f"{HEARTBEAT_ENV}: expected a positive number of seconds, got {raw!r}")
    return value


def active_logs_dir() -> Path | None:
    """``RUN_DIR/logs`` of the run this process is logging, or None outside one."""
    return _SESSION.logs if _SESSION else None


def ray_log_to_driver() -> bool:
    """``log_to_driver`` for ``ray.init``: False only inside a quiet run (worker output then
    stays in Ray's session logs instead of flooding the console)."""
    return _SESSION is None or _SESSION.verbose


# ------------------------------------------------------------------------------------------
# Progress text (pure)
# ------------------------------------------------------------------------------------------


def fmt_duration(seconds: float | None) -> str:
    """``42s`` / ``3m05s`` / ``1h02m``; ``?`` when unknown (None, NaN or infinite)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def rate_eta(done: int, total: int, elapsed_s: float, start_done: int = 0) -> tuple[float | None, float | None]:
    """Units per second over this invocation (``done - start_done`` in ``elapsed_s``) and the
    seconds left for ``total - done`` at that rate; None where not yet measurable."""
    new = done - start_done
    if new <= 0 or elapsed_s <= 0:
        return None, None
    rate = new / elapsed_s
    return rate, max(0, total - done) / rate


def progress_text(label: str, done: int, total: int, elapsed_s: float, *, start_done: int = 0,
                  unit: str = "rows") -> str:
    """``label: done/total unit (pct%), rate unit/s, ETA t`` (rate and ETA over this
    invocation's work, so a resumed stage's earlier rows do not inflate the rate)."""
    rate, eta = rate_eta(done, total, elapsed_s, start_done)
    pct = f" ({100 * done / total:.0f}%)" if total > 0 else ""
    speed = f", {rate:.3g} {unit}/s, ETA {fmt_duration(eta)}" if rate is not None else ""
    return f"{label}: {done}/{total} {unit}{pct}{speed}"


# ------------------------------------------------------------------------------------------
# Handlers and filters
# ------------------------------------------------------------------------------------------


class RaysysOnly(logging.Filter):
    """Pass raysys's own records (logger ``raysys`` and below), but INFO of ``detail``
    loggers only from WARNING up."""

    def __init__(self, detail: tuple[str, ...] = DETAIL_LOGGERS) -> None:
        super().__init__()
        self.detail = detail

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in self.detail and record.levelno < logging.WARNING:
            return False
        return record.name == "raysys" or record.name.startswith("raysys.")


class Throttle(logging.Filter):
    """Progress records of ``loggers``: at most one per ``every_s`` per label (the text before
    the first ``:``), the first only ``every_s`` after that label's first record; a record of
    ``reset_on`` (a stage ended) restarts every clock. Other records pass."""

    def __init__(self, loggers: tuple[str, ...] = PROGRESS_LOGGERS, every_s: float | None = None,
                 reset_on: tuple[str, ...] = STAGE_LOGGERS) -> None:
        super().__init__()
        self.loggers, self.reset_on = loggers, reset_on
        self.every_s = heartbeat_s() if every_s is None else every_s
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in self.reset_on:
            self.last.clear()
        if record.name not in self.loggers:
            return True
        label = str(record.getMessage()).split(":", 1)[0]
        now = record.created
        last = self.last.setdefault(label, now)
        if now - last < self.every_s:
            return False
        self.last[label] = now
        return True


def full_log_line(what: str, logs: Path) -> str:
    """The first console line of a quiet command: ``what; full log in LOGS/driver.log
    (--verbose shows it here)``."""
    return f"{what}; full log in {logs / DRIVER_LOG} (--verbose shows it here)"


class FirstLine(logging.Filter):
    """Put ``text`` on ``handler``'s console just before the first record it shows: a
    command's "full log in ..." line, which a command refusing its input (no line shown
    before the error) never prints. Added last, so it sees only records the others passed."""

    def __init__(self, handler: logging.Handler, text: str) -> None:
        super().__init__()
        self.handler, self.text = handler, text

    def filter(self, record: logging.LogRecord) -> bool:
        text, self.text = self.text, None
        if text is not None:
            self.handler.handle(logging.makeLogRecord(
                {"name": log.name, "levelno": logging.INFO, "levelname": "INFO", "msg": text,
                 "created": record.created}))
        return True


def console_handler(stream: IO[str], verbose: bool, first_line: str | None = None) -> logging.Handler:
    """The console's handler: short lines; raysys only (throttled progress) unless verbose,
    ``first_line`` before the first of them."""
    h = logging.StreamHandler(stream)
    h.setFormatter(logging.Formatter(CONSOLE_FORMAT, CONSOLE_DATEFMT))
    h.setLevel(logging.INFO)
    if not verbose:
        h.addFilter(RaysysOnly())
        h.addFilter(Throttle())
    if first_line is not None:
        h.addFilter(FirstLine(h, first_line))
    return h


QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def _quiet_libraries() -> dict[str, str | None]:
    """Library progress bars off (they are noise even in a log file; the env reaches the
    local Ray workers too); warnings into logging. Returns the env values to restore."""
    saved = {k: os.environ.get(k) for k in QUIET_ENV}
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        # transformers logs through its own stderr handler and does not propagate: route its
        # records through the root logger (-> driver.log) for the run instead.
        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
    with contextlib.suppress(ImportError):
        import datasets
        datasets.disable_progress_bars()
    logging.captureWarnings(True)      # warnings -> logger py.warnings -> driver.log only
    return saved


def _restore_transformers() -> None:
    """Undo :func:`_quiet_libraries`' routing of transformers' logger (its defaults)."""
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging
        hf_logging.disable_propagation()
        hf_logging.enable_default_handler()


def _first_missing(path: Path) -> Path | None:
    """The topmost directory of ``path`` that does not exist yet (None when it exists)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    return missing[-1] if missing else None


def _discard_logs(run_dir: Path, before: set[str] | None, created: Path | None) -> None:
    """Remove the logs dir, and the now empty dirs made for it up to ``created``, when nothing
    else was written into ``run_dir`` (``before``: its entries then, None if it was absent)."""
    import shutil

    if before is not None and LOGS_DIR in before:
        return                              # an earlier run's log, appended to: kept
    if (set(os.listdir(run_dir)) if run_dir.is_dir() else set()) - {LOGS_DIR} != (before or set()):
        return                              # the command wrote something: keep its log
    shutil.rmtree(run_dir / LOGS_DIR, ignore_errors=True)
    for d in (run_dir, *run_dir.parents) if created is not None else ():
        with contextlib.suppress(OSError):
            d.rmdir()
        if d == created:
            break


@contextlib.contextmanager
def run_logging(run_dir: str | Path, *, verbose: bool = False, capture_fds: bool = True,
                announce: str | None = None, discard_if_unused: bool = False,
                link_ray_session: bool = True) -> Iterator[Path]:
    """Log one run: console lines (see module doc) and ``RUN_DIR/logs/driver.log``; yield the
    logs dir. Everything is restored on exit, before an error propagates, so the CLI's one-line
    error (or a bug's traceback) reaches the console; driver.log keeps the traceback too.

    ``announce`` (quiet only): what runs, e.g. ``eval: OUT``; the console's first line is then
    :func:`full_log_line`, printed with the first raysys line (none when the input is refused).

    ``discard_if_unused``: when the block fails before anything else was written into
    ``run_dir`` (a command's own input checks ran inside it and refused the input), the logs dir
    and the directories created for it are removed: bad input leaves nothing behind.
    ``link_ray_session=False``: no ``logs/ray_session`` link, only ``ray_session.txt``."""
    global _SESSION
    run_path = Path(run_dir).expanduser().absolute()
    logs = run_path / LOGS_DIR
    created = _first_missing(run_path)
    before = set(os.listdir(run_path)) if run_path.is_dir() else None
    logs.mkdir(parents=True, exist_ok=True)
    failed = False
    root = logging.getLogger()
    raysys_logger = logging.getLogger("raysys")
    saved = (root.level, raysys_logger.level, _SESSION)
    driver = open(logs / DRIVER_LOG, "a", buffering=1, encoding="utf-8")   # noqa: SIM115
    file_h = logging.StreamHandler(driver)
    file_h.setFormatter(logging.Formatter(FILE_FORMAT))
    file_h.setLevel(logging.DEBUG)
    root.setLevel(logging.INFO)
    raysys_logger.setLevel(logging.DEBUG)
    root.addHandler(file_h)
    handlers: list[logging.Handler] = [file_h]
    saved_env: dict[str, str | None] = {}
    try:
        if verbose:
            con = console_handler(sys.stderr, verbose=True)
            root.addHandler(con)
            handlers.append(con)
            _SESSION = _Session(logs, True, link_ray_session)
            try:
                yield logs
            except BaseException:
                failed = True
                raise
            return
        saved_env = _quiet_libraries()
        with redirect_output(driver, capture_fds) as console:
            con = console_handler(console, verbose=False, first_line=None if announce is None
                                  else full_log_line(announce, logs))
            root.addHandler(con)
            handlers.append(con)
            _SESSION = _Session(logs, False, link_ray_session)
            try:
                yield logs
            except BaseException:
                failed = True
                log.debug("run failed", exc_info=True)
                raise
    finally:
        for h in handlers:
            root.removeHandler(h)
        root.setLevel(saved[0])
        raysys_logger.setLevel(saved[1])
        _SESSION = saved[2]
        logging.captureWarnings(False)
        _restore_transformers()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        driver.close()
        if failed and discard_if_unused:
            _discard_logs(run_path, before, created)


def record_ray_session(logs: Path | None = None) -> Path | None:
    """Write where this Ray session keeps its logs (worker and actor output) into
    ``logs/ray_session.txt`` and link ``logs/ray_session`` to it when it exists here; return the
    session's logs dir. Uses the public runtime context (temp dir + session name)."""
    import ray

    logs = logs or active_logs_dir()
    if logs is None or not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    session_logs = Path(ctx.get_temp_dir()) / ctx.get_session_name() / "logs"
    (logs / RAY_SESSION_FILE).write_text(f"{session_logs}\n")
    link = logs / "ray_session"
    if session_logs.is_dir() and (_SESSION is None or _SESSION.link_session):
        with contextlib.suppress(OSError):
            if link.is_symlink():
                link.unlink()
            link.symlink_to(session_logs, target_is_directory=True)
    log.debug("Ray session logs: %s", session_logs)
    return session_logs


def elapsed_since(t0: float) -> str:
    """Wall time since ``time.monotonic()`` value ``t0``, formatted."""
    return fmt_duration(time.monotonic() - t0)
