"""Exceptions that mean "bad input from the user": the CLI prints them as one line.

Every user error is defined here, and this module imports nothing from raysys, so any layer
can raise them without importing the layers above it (the config layer raises ``ConfigError``
without knowing about models or data). The modules that introduced them re-export them:
``raysys.config.ConfigError``, ``raysys.data.io.DataError`` and
``raysys.data.schema.SchemaError`` are these classes.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config problem, always phrased as ``<key.path>: <what was expected>``."""


class DataError(ValueError):
    """Bad input data; the message names the file (and line) and what was expected."""


class SchemaError(ValueError):
    """A table does not match its stage schema."""


class ModelError(ValueError):
    """A model directory / hub id that cannot be used (missing, no weights, remote code)."""


class StageError(RuntimeError):
    """A pipeline stage cannot run (missing inputs, changed config on an existing run dir)."""


class ClusterError(RuntimeError):
    """A Ray cluster that cannot be reached or joined (wrong address, cluster down)."""


USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, SchemaError, ModelError,
                                                StageError, ClusterError, FileNotFoundError)
