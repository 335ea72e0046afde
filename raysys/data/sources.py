"""Dataset sources -> the ``problems`` table (id, source, question, gold_answer, gold_solution, meta).

``load_problems(spec)`` dispatches on ``spec.name``; each loader turns one source's rows into
problem rows. Files are JSONL, a JSON list or parquet (``raysys.data.io.read_records``); a
``path`` of ``hf://owner/name[/file]`` is fetched with ``huggingface_hub.snapshot_download`` first.

Gold answers: GSM8K-style sources take the text after ``####`` (commas removed); MATH takes the
last ``\\boxed{}``/``\\fbox{}`` of the solution. Both use :mod:`raysys.grading.extract`, the same
extraction that grades model output.

Fields read per source:

- ``gsm8k``: question, answer (worked solution ending ``#### n``); optional id.
- ``math``: problem, solution; meta: level, type, unique_id.
- ``math500``: problem, solution, answer; meta: subject, level, unique_id.
- ``w2s``: train_1/train_2 rows id, question, answer (``#### n``); test rows source, question,
  solution, answer, tag.
- ``olympiad`` (OlympicArena's published rows): id, problem, answer (list or string; a list is
  joined with ", "), solution; meta: answer_type, unit, subject, language, modality, answer list.
  Options ``language`` (e.g. ``EN``) and ``exclude_answer_types`` (e.g. ``[CODE, OT]``) filter rows.
- ``jsonl``: any file with ``spec.fields`` mapping our column -> their field (default: same
  name); options ``source`` (source column) and ``gold_from_solution`` (``hash``/``boxed``).
- ``synthetic``: :func:`raysys.data.synthetic.make_problems`; options n, seed, min_steps,
  max_steps, max_operand, ops.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysys.config import ConfigError, DatasetSpec
from raysys.data.io import DataError, read_records
from raysys.data.schema import conform
from raysys.data.synthetic import make_problems

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
# The row converters live in source_rows; these names are re-exported for callers of sources.
from raysys.data.source_rows import (FILE_SOURCES, GENERIC_COLUMNS, FileSource,  # noqa: F401
                                     RowContext, _check_generic_spec, gsm8k_gold, olympiad_gold,
                                     strip_calculator_annotations)


SYNTHETIC_OPTIONS = frozenset({"n", "seed", "min_steps", "max_steps", "max_operand", "ops"})
# Bounds of the synthetic task's knobs. Problems are built in memory in the driver (~300 bytes
# each, and a problems table of n rows follows them through every stage): 10 million is 3 GB of
# text and hours of sampling per pass, far past any experiment here (the demos use <= 10,000),
# so a larger n is a typo (an extra 0, `1e12`), refused instead of filling the memory. Steps
# chain operations on the running value: with '*' a value grows by up to max_operand per step,
# so 32 steps of operands <= 1,000,000 stay under 200 digits (Python refuses to print ints over
# 4,300 digits, and a model cannot learn such numbers anyway).
MAX_SYNTHETIC_PROBLEMS = 10_000_000
MAX_SYNTHETIC_STEPS = 32
MAX_SYNTHETIC_OPERAND = 1_000_000
# Seeds reach numpy/torch/Arrow as 64-bit integers; a larger one fails deep inside them.
MAX_SEED = 2**63 - 1
KNOWN_SOURCES: tuple[str, ...] = tuple(sorted([*FILE_SOURCES, "synthetic"]))


# ------------------------------------------------------------------------------------------
# Paths: local files, directories, hf:// and bundled samples
# ------------------------------------------------------------------------------------------


def bundled_path(name: str) -> Path:
    """Path of a file shipped in ``raysys/data/bundled`` (e.g. ``gsm8k_sample.jsonl``)."""
    root = importlib.resources.files("raysys.data") / "bundled"
    target = root / name
    if not target.is_file():
        have = sorted(p.name for p in root.iterdir() if p.is_file()) if root.is_dir() else []
        raise DataError(f"bundled data '{name}' not found (available: {', '.join(have) or 'none'})")
    return Path(str(target))


def _hf_download(path: str, key: str) -> Path:
    """``hf://owner/name[/file]`` -> a local file or snapshot directory."""
    parts = path[len("hf://"):].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise ConfigError(f"{key}.path: expected hf://owner/name[/file], got {path!r}")
    repo_id, file = "/".join(parts[:2]), "/".join(parts[2:]) or None
    try:
        import huggingface_hub
        from huggingface_hub import constants as hf_constants
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        raise DataError(f"{path}: huggingface_hub is not installed; download the file and "
                        "pass a local path") from None
    # HF_HUB_OFFLINE is read once at import; re-check so a late setting is honoured too.
    offline = hf_constants.HF_HUB_OFFLINE or \
        os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    try:
        local = huggingface_hub.snapshot_download(
            repo_id, repo_type="dataset", allow_patterns=[file] if file else None,
            local_files_only=offline)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as e:
        why = "offline (HF_HUB_OFFLINE is set) and not in the local cache" if offline else \
            f"cannot download it ({type(e).__name__})"
        raise DataError(f"{path}: dataset '{repo_id}' is unavailable: {why}; download it "
                        "elsewhere and set the path to the local file") from None
    out = Path(str(local)) / file if file else Path(str(local))
    if not out.exists():
        raise DataError(f"{path}: '{file}' not found in dataset '{repo_id}'")
    return out


def _pick_file(directory: Path, split: str | None) -> Path:
    """The one data file in ``directory`` (optionally the one whose name contains ``split``)."""
    if any(directory.glob("part-*.parquet")):
        return directory   # a stage directory: read_records reads all its parts
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(directory).parts))
    if split:
        files = [p for p in files if split in p.stem]
    if len(files) == 1:
        return files[0]
    names = ", ".join(str(p.relative_to(directory)) for p in files[:10]) or "none"
    raise DataError(f"{directory}: expected one data file ({'/'.join(DATA_SUFFIXES)})"
                    f"{f' matching split {split!r}' if split else ''}, found: {names}; "
                    "point the path at one file or set options.split")


def resolve_path(spec: DatasetSpec, key: str = "data") -> Path:
    """The local data file (or stage dir) for ``spec.path``."""
    if spec.path is None:
        raise ConfigError(f"{key}.path: required for dataset '{spec.name}'")
    p = _hf_download(spec.path, key) if spec.path.startswith("hf://") else Path(spec.path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: file not found")
    split = spec.options.get("split")
    return _pick_file(p, str(split) if split else None) if p.is_dir() else p


def _split_name(path: Path, spec: DatasetSpec) -> str:
    """``options.split``, else the file name: ``test.jsonl`` and ``test-00000-of-00001.parquet``
    (the hub's shard naming) both give ``test``."""
    if spec.options.get("split"):
        return str(spec.options["split"])
    stem = path.stem if path.is_file() else path.name
    return re.sub(r"-\d+-of-\d+$", "", stem)


# ------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------


def _int_in(lo: int, hi: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


# Every loader option: what it must be (shown in the error) and the check. Checked by every
# command before Ray starts or a run dir is written (``load_problems`` in eval/sample/data
# prepare, ``check_config_data`` in config show and the run preflight), not when a stage inside
# Ray loads its data.
OPTION_CHECKS: dict[str, tuple[str, Any]] = {
    "split": ("a split name (text or a number)", lambda v: _text(v) or _int_in(0, MAX_SEED)(v)),
    "strip_calc": ("true or false", lambda v: isinstance(v, bool)),
    "language": ("a language code (text), e.g. EN", _text),
    "exclude_answer_types": ("a list of answer types (text), e.g. [CODE, OT]",
                             lambda v: isinstance(v, list) and all(_text(x) for x in v)),
    "source": ("a source name (text)", _text),
    "gold_from_solution": ("'hash' or 'boxed'", lambda v: v in ("hash", "boxed")),
    "n": (f"an integer from 1 to {MAX_SYNTHETIC_PROBLEMS:,}", _int_in(1, MAX_SYNTHETIC_PROBLEMS)),
    "seed": ("an integer from 0 to 2**63 - 1", _int_in(0, MAX_SEED)),
    "min_steps": (f"an integer from 1 to {MAX_SYNTHETIC_STEPS}", _int_in(1, MAX_SYNTHETIC_STEPS)),
    "max_steps": (f"an integer from 1 to {MAX_SYNTHETIC_STEPS}", _int_in(1, MAX_SYNTHETIC_STEPS)),
    "max_operand": (f"an integer from 2 to {MAX_SYNTHETIC_OPERAND:,}", _int_in(2, MAX_SYNTHETIC_OPERAND)),
    "ops": ("a string of '+', '-', '*' holding '+' or '*', e.g. '+-*'", _text),
}


def check_synthetic_knobs(options: dict[str, Any], key: str) -> None:
    """The synthetic task's knobs (``min_steps``, ``max_steps``, ``max_operand``, ``ops``, and
    ``n``/``seed`` when present) one by one and together; ``ConfigError`` naming
    ``<key>.<option>``. Also what a tiny model's ``pretrain_options`` must pass."""
    from raysys.data.synthetic import _check_knobs

    for k, v in options.items():
        if k in SYNTHETIC_OPTIONS:
            what, ok = OPTION_CHECKS[k]
            if not ok(v):
                raise ConfigError(f"{key}.{k}: expected {what}, got {v!r}")
    knobs = {"min_steps": 2, "max_steps": 3, "max_operand": 20, "ops": "+-"}
    knobs.update({k: v for k, v in options.items() if k in knobs})
    try:
        _check_knobs(**knobs)
    except ValueError as e:
        raise ConfigError(f"{key}.{e}") from None


def check_options(spec: DatasetSpec, key: str = "data") -> None:
    """Everything about ``spec.options`` and ``spec.fields`` that can be checked without
    reading data: a known source, a path unless synthetic, each option known to the source and
    of the right type and range, the synthetic knobs consistent, a count for synthetic, fields
    only for ``jsonl``. Raises
    ``ConfigError`` naming ``<key>.options.<name>`` (or ``.fields``)."""
    check_name(spec.name, key)
    if spec.name != "synthetic" and spec.path is None:
        raise ConfigError(f"{key}.path: required for dataset '{spec.name}'")
    allowed = SYNTHETIC_OPTIONS if spec.name == "synthetic" else FILE_SOURCES[spec.name].options
    for k, v in spec.options.items():
        if k not in allowed:
            raise ConfigError(f"{key}.options.{k}: unknown option for dataset '{spec.name}' "
                              f"(known: {', '.join(sorted(allowed)) or 'none'})")
        what, ok = OPTION_CHECKS[k]
        if not ok(v):
            raise ConfigError(f"{key}.options.{k}: expected {what}, got {v!r}")
    if spec.name == "synthetic":
        check_synthetic_knobs(spec.options, f"{key}.options")
        if spec.options.get("n") is None and spec.limit is None:
            raise ConfigError(f"{key}.options.n: required for dataset 'synthetic' (or set "
                              f"{key}.limit)")
    elif spec.name == "jsonl":
        _check_generic_spec(spec, key)
    if spec.fields and spec.name != "jsonl":
        raise ConfigError(f"{key}.fields: only dataset 'jsonl' maps fields; '{spec.name}' reads "
                          "its own format's fields (use name jsonl to map columns)")
    for ours, theirs in spec.fields.items():
        if not _text(theirs):
            raise ConfigError(f"{key}.fields.{ours}: expected the file's field name, got {theirs!r}")


def load_records_as_problems(spec: DatasetSpec, key: str = "data") -> list[dict[str, Any]]:
    """Problem rows (dicts) of a file-backed ``spec``; ``spec.limit`` caps the kept rows."""
    src = FILE_SOURCES[spec.name]
    path = resolve_path(spec, key)
    ctx = RowContext(file=path, split=_split_name(path, spec), spec=spec)
    source = spec.options.get("source") if spec.name == "jsonl" else None
    out: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for i, (lineno, row) in enumerate(read_records(path)):
        if spec.limit is not None and len(out) >= spec.limit:
            break
        prob = src.row_fn(i, lineno, row, ctx)
        if prob is None:
            continue
        prob.setdefault("source", source or spec.name)
        # samples, outcomes and comparisons are keyed by problem id: two problems with one id
        # would merge their samples and count as one problem
        seen = first_line.setdefault(str(prob["id"]), lineno)
        if seen != lineno:
            raise DataError(f"{ctx.where(lineno)}: id {str(prob['id'])!r} is already the id of the "
                            f"problem on line {seen}; problem ids must be unique (fix or drop "
                            "one of them)")
        out.append(prob)
    if not out:
        raise DataError(f"{path}: no rows left after filtering (options: {spec.options})")
    return out


def synthetic_problems(spec: DatasetSpec, key: str = "data") -> list[dict[str, Any]]:
    """Problem rows of the synthetic task; ``options.n`` or ``limit`` sets the count."""
    opts = dict(spec.options)
    n = opts.pop("n", None)
    if n is None:
        n = spec.limit
    if n is None:
        raise ConfigError(f"{key}.options.n: required for dataset 'synthetic' (or set {key}.limit)")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{key}.options.n: expected a positive int, got {n!r}")
    if spec.limit is not None:
        n = min(n, spec.limit)
    seed = opts.pop("seed", 0)
    try:
        problems = make_problems(n, seed, **opts)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{key}.options: {e}") from None
    return [{
        "id": p["id"], "source": "synthetic", "question": p["question"],
        "gold_answer": p["answer"], "gold_solution": p["solution"],
        "meta": json.dumps({"steps": p["steps"], "seed": seed}),
    } for p in problems]


def check_name(name: str, key: str = "data", how: str | None = None,
               label: str | None = None) -> None:
    """Raise ``ConfigError`` (naming ``label``, default ``<key>.name``) listing the known datasets
    when ``name`` is not one of them. A name that is really a path gets ``how`` to give it
    (default: the config keys and ``--data NAME:PATH``, what eval, sample and run read)."""
    label = label or f"{key}.name"
    if name not in KNOWN_SOURCES:
        if looks_like_path(name):
            how = how or (f"in a config name: jsonl and path: {name}; on the command line "
                          f"--data jsonl:{name} (NAME:PATH)")
            raise ConfigError(f"{label}: '{name}' looks like a file path, not a dataset name; "
                              f"give the format and the path apart ({how}; names: "
                              f"{', '.join(KNOWN_SOURCES)})")
        raise ConfigError(f"{label}: unknown dataset '{name}' (known: {', '.join(KNOWN_SOURCES)})")


def looks_like_path(name: str) -> bool:
    """True for a dataset "name" that is really a path (``--data test.jsonl`` without ``NAME:``)."""
    return "/" in name or "\\" in name or Path(name).suffix in DATA_SUFFIXES or Path(name).exists()


def load_problems(spec: DatasetSpec, key: str = "data") -> pa.Table:
    """Load ``spec`` as a ``problems`` table; ``key`` is the spec's config path for errors.

    Raises ``ConfigError`` for an unknown dataset name or option and ``DataError`` (naming
    file:line) for bad rows; nothing is written.
    """
    check_options(spec, key)
    if spec.name == "synthetic":
        return conform(synthetic_problems(spec, key), "problems")
    return conform(load_records_as_problems(spec, key), "problems")


def check_config_data(cfg: Any, key: str = "") -> int:
    """Load every local dataset a validated config names (each ``DatasetSpec`` in nested
    dataclasses, dicts and lists; ``hf://`` ones are left to the run), so a bad row, a duplicate
    id or an empty file is one error before any work, not a failed stage inside a run. Returns
    how many datasets were read."""
    import dataclasses

    if isinstance(cfg, DatasetSpec):
        if not (cfg.path or "").startswith("hf://"):
            load_problems(cfg, key or "data")
            return 1
        check_options(cfg, key or "data")       # not fetched here, but its options are known
        return 0
    n = 0
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            n += check_config_data(getattr(cfg, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(cfg, dict):
        for k, v in cfg.items():
            n += check_config_data(v, f"{key}.{k}" if key else str(k))
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            n += check_config_data(v, f"{key}[{i}]")
    return n
