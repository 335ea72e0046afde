"""YAML for typed configs: reading files (duplicate keys refused, non-text named with its line),
``--set a.b=c`` overrides, and loading a dataclass config from both."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml

from raysys.config import ConfigError, from_dict

T = TypeVar("T")


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """``["train.lr=1e-4", "engine.kind=hf"]`` -> nested dict; values parsed as YAML scalars."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"--set {key}: '{p}' is set both as a value and a section")
        cur[parts[-1]] = value
    return out


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key set twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":   # `<<: *anchor` may repeat
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:       # an unhashable key: let PyYAML report it
                continue
            if first != line:
                raise ConfigError(f"{key_node.start_mark.name}:{line}: duplicate key {key!r} "
                                  f"(first set on line {first}); keep one")
        return super().construct_mapping(node, deep=deep)


def _yaml_error_line(p: Path, e: yaml.YAMLError) -> str:
    """A PyYAML error (several lines with context) as one ``file:line: what`` line."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
    return f"{where}: invalid YAML: {' '.join(str(problem).split())}"


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file as a mapping; every problem is one ``ConfigError`` naming the
    file (and line): missing, not UTF-8 text, invalid YAML, a duplicate key, not a mapping."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory; expected a YAML config file")
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    raw = p.read_bytes()
    bad = raw.find(b"\0")          # NUL: a binary file, even where it happens to be UTF-8
    if bad < 0:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = e.start
    if bad >= 0:
        what = "a binary file" if b"\0" in raw[:8192] else "not UTF-8 text"
        line = raw.count(b"\n", 0, bad) + 1
        raise ConfigError(f"{p}:{line}: {what} (byte 0x{raw[bad]:02x} at offset {bad}); "
                          "expected a YAML config file")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)   # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error_line(p, e)) from None
    except ConfigError as e:   # duplicate key: the loader names "<unicode string>", not the file
        raise ConfigError(str(e).replace("<unicode string>", str(p), 1)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                data: dict | None = None) -> T:
    """Load ``cls`` from a YAML file (or ``data``) plus ``--set`` overrides."""
    raw = load_yaml(path) if path is not None else dict(data or {})
    raw = deep_merge(raw, parse_overrides(overrides))
    try:
        return from_dict(cls, raw)
    except ConfigError as e:
        if path is not None:
            raise ConfigError(f"{path}: {e}") from None
        raise
