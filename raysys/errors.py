"""Exceptions that mean "bad input from the user": the CLI prints them as one line."""

from __future__ import annotations

from raysys.config import ConfigError
from raysys.data.io import DataError
from raysys.data.schema import SchemaError


class ModelError(ValueError):
    """A model directory / hub id that cannot be used (missing, no weights, remote code)."""


class StageError(RuntimeError):
    """A pipeline stage cannot run (missing inputs, changed config on an existing run dir)."""


class ClusterError(RuntimeError):
    """A Ray cluster that cannot be reached or joined (wrong address, cluster down)."""


USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, SchemaError, ModelError,
                                                StageError, ClusterError, FileNotFoundError)
