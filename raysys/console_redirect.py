"""Pointing this process's output (Python streams, logging handlers, file descriptors 1 and
2) at a log file for the length of a run, and back: the plumbing of :mod:`raysys.console`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import IO, Any


def _retarget(old: tuple[Any, ...], new: IO[str]) -> list[tuple[logging.StreamHandler, Any]]:
    """Point every existing StreamHandler writing to one of ``old`` at ``new``; return what to
    undo. (Handlers created at import, before the redirect, hold the real streams.)"""
    changed = []
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            # handlers whose stream is a property (logging's lastResort, Ray's) already
            # follow sys.stderr at emit time
            if isinstance(h, logging.StreamHandler) and "stream" in vars(h) \
                    and any(h.stream is s for s in old):
                changed.append((h, h.stream))
                h.stream = new
    return changed


@contextlib.contextmanager
def redirect_output(target: IO[str], capture_fds: bool) -> Iterator[IO[str]]:
    """Send this process's stdout/stderr (Python streams, and fds 1/2 when ``capture_fds``:
    C++ and child-process output too) to ``target``; yield a stream to the real console."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds: list[tuple[int, int]] = []
    console: IO[str] = sys.stdout
    if capture_fds:
        try:
            for fd in (1, 2):
                saved_fds.append((fd, os.dup(fd)))
        except OSError:
            saved_fds = []
        if saved_fds:
            console = os.fdopen(os.dup(saved_fds[0][1]), "w", buffering=1)
            for fd, _ in saved_fds:
                os.dup2(target.fileno(), fd)
    old_streams = (sys.stdout, sys.stderr)
    changed = _retarget((sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__), target)
    sys.stdout = sys.stderr = target
    try:
        yield console
    finally:
        sys.stdout, sys.stderr = old_streams
        for h, stream in changed:
            h.stream = stream
        target.flush()
        for fd, copy in saved_fds:
            os.dup2(copy, fd)
            os.close(copy)
        if console is not old_streams[0]:
            console.close()
