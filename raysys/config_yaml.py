"""YAML for typed configs: reading files (duplicate keys refused, non-text named with its line),
``--set a.b=c`` overrides, and loading a dataclass config from both."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml

from raysys.config import ConfigError, from_dict

T = TypeVar("T")

# Bounds on what a YAML document may make the loader build (config files, ``--set`` and
# ``--option`` values). A config is a few KB with a few hundred values nested at most ~6 deep;
# the bounds leave that room many times over while refusing, with one line naming the file,
# what would otherwise hang, fill the memory or end in a RecursionError traceback:
# - a file over 4 MiB is data, not a config (data files have their own readers);
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# - nesting deeper than 64 levels: PyYAML composes recursively (a RecursionError near 1,000),
#   and every config walker after it (from_dict, deep_merge, to_dict) recurses too;
MAX_YAML_DEPTH = 64
# - more than 100,000 values once anchors and aliases are expanded: nine anchors of nine aliases
#   each ("billion laughs") are a 1 KB file that expands to 387 million values when the config
#   is merged, dumped or compared;
MAX_YAML_NODES = 100_000


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
        if not raw.strip():
            # silently setting "" (a run_dir of "", a model path of "") is never what was meant
            raise ConfigError(f"--set {key.strip()}=: no value; write {key.strip()}='' for empty "
                              f"text or {key.strip()}=null for none")
        try:
            value = load_yaml_text(raw, f"--set {key}")
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


class _BoundedLoader(_UniqueKeyLoader):
    """:class:`_UniqueKeyLoader` that refuses nesting deeper than :data:`MAX_YAML_DEPTH` while
    composing, and integers Python cannot read (over 4,300 digits) as one line."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"{mark.name}:{mark.line + 1}: nested deeper than "
                                  f"{MAX_YAML_DEPTH} levels; a config is a few levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise ConfigError(f"{node.start_mark.name}:{node.start_mark.line + 1}: an integer of "
                              f"{len(str(node.value)):,} characters; too large to be a setting "
                              "(quote it if it is text)") from None


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(values, depth) of a composed YAML node graph with every alias expanded, computed
    without expanding it (each node once, iteratively); a node that contains itself through an
    alias is infinite: ``ValueError("<line>: ...")``. Pure."""
    memo: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            memo[key] = (1 + sum(memo[id(k)][0] for k in kids),
                         1 + max((memo[id(k)][1] for k in kids), default=0))
            continue
        if key in memo:
            continue
        if key in on_path:
            raise ValueError(f"{node.start_mark.line + 1}: an alias to a value that contains "
                             "it (the value would be infinite)")
        on_path.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in on_path:
                raise ValueError(f"{kid.start_mark.line + 1}: an alias to a value that "
                                 "contains it (the value would be infinite)")
            if id(kid) not in memo:
                stack.append((kid, False))
    return memo[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml_text(text: str, name: str) -> Any:
    """Parse one YAML document (a config file's text, a ``--set`` value) with duplicate keys
    refused and the :data:`MAX_YAML_DEPTH` / :data:`MAX_YAML_NODES` bounds checked before any
    value is built; ``name`` (the file, the flag) starts every message. Raises ``ConfigError``
    for a bound or a duplicate key, ``yaml.YAMLError`` for invalid YAML."""
    loader = _BoundedLoader(text)
    loader.name = name                  # marks name the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size, depth = expanded_size(node)
        except ValueError as e:
            raise ConfigError(f"{name}:{e}") from None
        if size > MAX_YAML_NODES or depth > MAX_YAML_DEPTH:
            what = (f"{size:,} values" if size > MAX_YAML_NODES else f"{depth} levels of nesting")
            raise ConfigError(f"{name}: its anchors and aliases expand to {what} (at most "
                              f"{MAX_YAML_NODES:,} values, {MAX_YAML_DEPTH} levels); a config "
                              "needs a few hundred")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_error_line(p: Path, e: yaml.YAMLError) -> str:
    """A PyYAML error (several lines with context) as one ``file:line: what`` line."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
    return f"{where}: invalid YAML: {' '.join(str(problem).split())}"


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file as a mapping; every problem is one ``ConfigError`` naming the
    file (and line): missing, not UTF-8 text, invalid YAML, a duplicate key, not a mapping."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a YAML config file")
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found")
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,} "
                          "bytes (configs are a few KB: data belongs in data files they name)")
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
        data = load_yaml_text(text, str(path))
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error_line(Path(path), e)) from None
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
