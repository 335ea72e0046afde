"""Every hostile input to every ``raysys`` command ends in one line on stderr
(``error: <file or key>: <what was expected>``), exit code 2, no traceback, and nothing written.

The table is in ``hostile_cases.py`` and ``hostile_cases_unsatisfiable.py`` (runs that can never
be satisfied, datasets the run preflight loads). Each case runs the real entry point (``raysys.cli.main``)
in-process in an empty working directory holding only the case's files; a few run as a
subprocess too, to see the console a user sees (no library noise, no traceback).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile_cases_unsatisfiable
from hostile_cases import CASES as BASE_CASES   # tests/cli is on sys.path (rootdir-less layout)
from hostile_cases import Case

CASES = BASE_CASES + hostile_cases_unsatisfiable.CASES

REPO = Path(__file__).resolve().parents[2]
DEMO_CFG = REPO / "configs" / "demo_quick.yaml"


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(case: Case, root: Path, model: Path) -> list[str]:
    """Write the case's files under ``root``; return its argv with placeholders filled."""
    for rel, content in case.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path, model)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    values = {"model": str(model), "cfg": str(DEMO_CFG), "port": str(_closed_port())}
    return [a.format(**values) for a in case.argv]


def _tree(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Every path under ``root`` (symlinks not followed, so a link into the input or a loop is
    one entry) with its kind, size, mtime and content: a file's sha256, a link's target. Equal
    before and after = nothing written, and every input file has its exact bytes (a rewrite
    with the same size inside one mtime tick would pass a size + mtime comparison)."""
    import hashlib

    out: dict[str, tuple[str, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):          # followlinks=False
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                entry = ("link", 0, st.st_mtime_ns, os.readlink(p))
            elif p.is_dir():
                entry = ("dir", -1, st.st_mtime_ns, "")
            else:
                entry = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            out[str(p.relative_to(root))] = entry
    return out


def _check_one_line(stderr: str, pattern: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert "Traceback" not in stderr
    assert re.search(pattern, line), f"{pattern!r} not in {line!r}"
    return line


def _params() -> list:
    return [pytest.param(c, id=f"{c.category}:{c.id}",
                         marks=[pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else [])
            for c in CASES]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAYSYS_TRACEBACK", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.parametrize("case", _params())
def test_hostile_input_is_one_line_exit_2_nothing_written(
        case: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from raysys.cli import main

    argv = _setup(case, tmp_path, tiny_model_dir)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value.format(root=tmp_path))
    before = _tree(tmp_path)
    model_before = _tree(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["raysys", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    _check_one_line(err, case.error)
    assert _tree(tmp_path) == before, "the failed command wrote or changed files"
    assert _tree(tiny_model_dir) == model_before


def test_table_covers_every_category_with_40_plus_cases() -> None:
    by_cat: dict[str, int] = {}
    for c in CASES:
        by_cat[c.category] = by_cat.get(c.category, 0) + 1
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert {"not text", "outputs", "nan/inf", "model dirs", "run state", "misc"} <= set(by_cat)
    assert by_cat.get("output-is-input", 0) >= 8
    for category in ("checked-in-driver", "resource-bomb", "run-state", "small"):
        assert by_cat.get(category, 0) >= 5, category
    assert by_cat.get("unsatisfiable", 0) >= 8
    # datasets the run preflight loads (they failed in the problems stage, inside Ray)
    assert sum(c.category == "checked-in-driver" and c.id.startswith("run-data")
               for c in hostile_cases_unsatisfiable.CASES) >= 5


@pytest.mark.parametrize("case_id", ["train-binary-data", "run-unreachable-address", "status-state-binary"])
def test_console_of_a_real_process(case_id: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    """As a user runs it: the console holds exactly the one error line (no warnings printed by
    torch/Ray imports, no traceback), and an unreachable Ray address fails in seconds."""
    (case,) = [c for c in CASES if c.id == case_id]
    argv = _setup(case, tmp_path, tiny_model_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYSYS_TRACEBACK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "raysys.cli", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    _check_one_line(proc.stderr, case.error)
    assert proc.stdout == ""
    if case_id == "run-unreachable-address":
        assert seconds < 15, f"took {seconds:.1f} s"


def test_every_argument_says_what_it_is_when_missing() -> None:
    """A missing argument's error says what to give (click arguments carry no help text):
    every positional argument of every command has a reason in ``ARGUMENT_REASONS``."""
    import click

    from raysys.cli import ARGUMENT_REASONS, COMMANDS, cli

    def walk(cmd: click.Command, path: str) -> list[tuple[str, str]]:
        found = [(path, p.name) for p in cmd.params if isinstance(p, click.Argument)]
        for name, sub in getattr(cmd, "commands", {}).items():
            found += walk(sub, f"{path} {name}")
        return found

    ctx = click.Context(cli)
    args = [a for name in COMMANDS for a in walk(cli.get_command(ctx, name), name)]
    assert args and [a for a in args if a not in ARGUMENT_REASONS] == []
