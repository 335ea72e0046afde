"""Typed dataclass configs from plain data: :func:`from_dict` checks keys and types recursively
(every error a ``ConfigError`` naming the dotted key path and what was expected), :func:`to_dict`
turns a config back into plain data, and the small value checks sections use in ``validate``.

The bounds on what a config may ask the machines for (:data:`MAX_TOKENS`, ...) live here too:
they are value checks, known without reading any model or data file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from raysys.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


class NonFiniteFloat(float):
    """Annotation for a float field that may be ``inf`` / ``nan`` (opt-in; every other float
    field refuses them in :func:`_coerce`, so ``lr: .nan`` fails before any work)."""


# Every integer setting is a signed 64-bit integer: numpy, torch, Arrow and Ray take them as such,
# and a larger one (a typo, a pasted id) would fail inside a worker with an OverflowError.
MAX_CONFIG_INT = 2**63 - 1

# -- Upper bounds on what a config asks the machines for ----------------------------------------
# Each is far past any real experiment and below where the request itself breaks something
# (memory, Ray's placement, an engine's up-front allocation), so a value past one is a typo (an
# extra zero, `--n 1000000000000`) refused in the driver instead of a hang or a killed replica.
# Completions per prompt (sampling.n): maj@k / pass@k studies stop near k = 1,024, and one
# prompt's samples are generated together by one replica: a million is an out-of-memory there.
MAX_SAMPLES_PER_PROMPT = 4096
# Tokens (max_new_tokens, max_model_len, a training max_len): no model served here has a context
# window over 2**20 (1M) tokens, and engines size their KV cache from these before the first step.
MAX_TOKENS = 2**20
# Replicas, Ray Train workers, tensor-parallel ranks: one placement-group bundle (or GPU) each;
# Ray waits forever on a placement group larger than the cluster, and 4,096 is past any here.
MAX_REPLICAS = 4096
# Prompts per engine forward or Ray Data batch, examples per training micro-batch: 65,536 prompts
# of even 100 tokens is a KV cache of hundreds of GB.
MAX_BATCH = 2**16


def check_int_range(value: int | None, key: str, lo: int, hi: int, why: str = "") -> None:
    """``ConfigError`` naming ``key`` unless ``lo <= value <= hi`` (None passes); ``why`` says
    what the bound protects."""
    if value is not None and not lo <= value <= hi:
        raise ConfigError(f"{key}: expected {lo:,} <= value <= {hi:,}, got {value:,}"
                          + (f" ({why})" if why else ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the converted value.

    Floats must be finite unless the field is annotated :class:`NonFiniteFloat`.
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            # `X | None`: the error inside X names the exact key (a nested typo, a bad value).
            raise errors[0]
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if isinstance(value, str) and get_args(tp) and get_args(tp)[0] is str:
            # `--set train.lora.target_modules=q_proj,v_proj`
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        out = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected bool, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_CONFIG_INT:
                raise ConfigError(f"{key}: {value} is out of range (a setting is a 64-bit "
                                  "integer, at most 2**63 - 1 in size)")
            return value
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if tp is float or tp is NonFiniteFloat:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # PyYAML follows YAML 1.1, where `1e-4` (no dot) is a string, not a float.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected float, got {value!r}")
        if tp is float and not math.isfinite(number):
            # NaN/inf would pass every range check (NaN compares False) and fail much later.
            raise ConfigError(f"{key}: expected a finite float, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected str, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and types recursively.

    Dataclasses may define ``validate(self, path: str) -> None`` for value checks (ranges,
    files that must exist); it runs after construction and must raise :class:`ConfigError`.
    """
    where = path or "<config>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for k in data:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"{_join(path, str(k))}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required field missing (expected {_type_name(hints[name])})")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path)
    return obj


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (for ``config show`` and ``<run_dir>/config.yaml``)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def check_file(path: str | None, key: str, *, dir_ok: bool = False) -> None:
    """Raise ``ConfigError`` naming ``key`` when a configured local path is missing."""
    if path is None or path.startswith("hf://"):
        return
    p = Path(path).expanduser()
    if not dir_ok and p.is_dir():
        raise ConfigError(f"{key}: expected a file, got a directory: {path}")
    if not (p.is_file() or (dir_ok and p.is_dir())):
        kind = "file or directory" if dir_ok else "file"
        raise ConfigError(f"{key}: {kind} not found: {path}")


def check_range(value: float | None, key: str, lo: float, hi: float) -> None:
    if value is not None and not (lo <= value <= hi):
        raise ConfigError(f"{key}: expected a value in [{lo}, {hi}], got {value}")


def find_sections(cfg: Any, cls: type | tuple[type, ...], key: str = "") -> list[tuple[str, Any]]:
    """Every instance of ``cls`` inside a config, with its dotted key path (``models.strong``,
    ``stages[1].train``), in field order: nested dataclasses, dicts and lists are walked; an
    instance found is not walked into."""
    if isinstance(cfg, cls):
        return [(key, cfg)]
    found: list[tuple[str, Any]] = []
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            found += find_sections(getattr(cfg, f.name), cls, _join(key, f.name))
    elif isinstance(cfg, dict):
        for k, v in cfg.items():
            found += find_sections(v, cls, _join(key, str(k)))
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            found += find_sections(v, cls, f"{key}[{i}]")
    return found
