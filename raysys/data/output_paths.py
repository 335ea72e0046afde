"""Output paths, checked before any work so a bad ``--out`` costs nothing and leaves nothing:
a path that cannot be written, a directory that is not a raysys output, and an output that is,
contains or lies inside one of the command's inputs (resolved paths, symlinks and hard links
followed)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raysys.errors import DataError

def _check_parents(p: Path, key: str) -> None:
    """Every existing ancestor of ``p`` must be a directory we can write into."""
    for parent in reversed(p.parents):
        if parent.exists() and not parent.is_dir():
            raise DataError(f"{key}: cannot create {p}: {parent} is a file, not a directory")
    existing = next(a for a in p.parents if a.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{key}: cannot create {p}: {existing} is not writable")


def check_output_file(path: str | Path, key: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output *file* path that cannot be written: under a regular
    file, an existing directory, a read-only existing file, or a suffix not in ``suffixes``."""
    p = Path(path).expanduser().absolute()
    if suffixes and p.suffix not in suffixes:
        raise DataError(f"{key}: {path}: expected a {' or '.join(suffixes)} file")
    if p.is_dir():
        raise DataError(f"{key}: {path} is a directory; expected a file path")
    _check_parents(p, key)
    if p.exists() and not os.access(p, os.W_OK):
        raise DataError(f"{key}: {path} is not writable")
    return p


def check_output_dir(path: str | Path, key: str, markers: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output *directory* that cannot be written or that is not
    ours: an existing file, a path under a regular file, or (with ``markers``) a non-empty
    directory holding none of ``markers`` (glob patterns, e.g. ``_MANIFEST.json``), whose files raysys would
    mix with (or replace) unrelated ones."""
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise DataError(f"{key}: {path} is a file; expected a directory")
    _check_parents(p, key)
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise DataError(f"{key}: {path} is not writable")
        if markers and any(p.iterdir()) and not any(any(p.glob(m)) for m in markers):
            raise DataError(f"{key}: {path} is a non-empty directory that is not a raysys output "
                            f"(no {' or '.join(markers)}); use a new or empty directory")
    return p


# -- an output is never one of the inputs: checked on resolved paths before any work ---------


def _resolved(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, made absolute and every symlink of its existing part
    followed (``..`` after a symlink means the symlink target's parent, as the kernel does)."""
    return Path(path).expanduser().resolve()


def _identity(p: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing path, else None: the same object under two names (a
    hard link, a bind mount, another letter case on a case-insensitive file system)."""
    try:
        st = p.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _encloses(outer: Path, inner: Path) -> bool:
    """``inner`` lies strictly below ``outer``: by name, or because an existing ancestor of
    ``inner`` is the very directory ``outer`` is (compared by device and inode)."""
    if outer in inner.parents:
        return True
    outer_id = _identity(outer)
    return outer_id is not None and outer.is_dir() and \
        any(_identity(a) == outer_id for a in inner.parents)


def alias_relation(out: str | Path, inp: str | Path) -> str | None:
    """How output ``out`` aliases input ``inp``: ``"same"``, ``"inside"`` (out lies in the
    input dir), ``"contains"`` (out is a dir above the input: replacing it deletes the input),
    or None. Pure apart from ``stat``: nothing is created."""
    o, i = _resolved(out), _resolved(inp)
    o_id, i_id = _identity(o), _identity(i)
    if o == i or (o_id is not None and o_id == i_id):
        return "same"
    if _encloses(i, o):
        return "inside"
    if _encloses(o, i):
        return "contains"
    return None


def check_not_an_input(out: str | Path | None, inputs: Mapping[str, str | Path | None], out_key: str,
                       *, error: type[Exception] = DataError) -> None:
    """Refuse, before any work, an output path that is, contains or lies inside one of
    ``inputs`` (key -> path; None entries are skipped), compared on resolved paths with
    ``~``, ``..`` and symlinks followed, so a symlink to the input or a not-yet-existing
    output below a symlinked directory is caught too. A writer that replaces its output
    (model dirs, stage dirs, files renamed into place) would otherwise delete the input, and
    one that writes into its output would change it. Raises ``error`` naming both keys and
    paths. Inputs that are not local paths (``hf://``, hub ids) must be left out by the
    caller."""
    def is_path(p: Any) -> bool:     # a wrong type is the config loader's error to report
        return isinstance(p, (str, os.PathLike)) and str(p) != ""

    if not is_path(out):
        return
    o = _resolved(out)
    for in_key, inp in inputs.items():
        if not is_path(inp):
            continue
        relation = alias_relation(out, inp)
        if relation is None:
            continue
        i = _resolved(inp)
        shown = str(out) if str(out) == str(o) else f"{out} ({o})"
        if relation == "same":
            what = "directory" if i.is_dir() else "file" if i.exists() else "path"
            rel, why = f"is the same {what} as", "writing it would overwrite the input"
        elif relation == "inside":
            rel, why = "lies inside", "writing into it would change the input"
        else:
            rel, why = "is a directory that contains", "replacing it would delete the input"
        raise error(f"{out_key}: {shown} {rel} {in_key} ({i}); an output may never be, contain "
                    f"or lie inside an input ({why}): choose another {out_key}")
