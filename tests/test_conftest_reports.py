"""The suite's own reporting: a failure whose traceback has an entry with no line number (where a
pytest-timeout signal can land) is reported, not an INTERNALERROR that ends the session, and the
failures are listed again in the last lines (CI shows only the tail)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

LINELESS = '''
import sys, types

def test_lineless():
    try:
        raise ValueError("boom")
    except ValueError as e:
        f = sys._getframe()
        lasti = next(i for i in range(0, 1000, 2)
                     if types.TracebackType(None, f, i, -1).tb_lineno is None)
        raise e.with_traceback(types.TracebackType(e.__traceback__, f, lasti, -1))

def test_after():
    pass
'''


def test_a_lineless_traceback_is_reported_and_the_session_goes_on(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(LINELESS)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-o", "addopts=", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "INTERNALERROR" not in out.stdout + out.stderr
    assert out.returncode == 1, out.stdout[-2000:]
    tail = out.stdout.strip().splitlines()[-5:]
    assert "  test_x.py::test_lineless (call, 0 s): ValueError: boom" in tail
    assert "1 failed, 1 passed" in tail[-1]
