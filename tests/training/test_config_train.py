"""TrainConfig's own checks that used to call up into the trackers module."""

from __future__ import annotations

import pytest

from raysys.config import ConfigError, from_dict
from raysys.training.config import TRACKER_NAMES, TrainConfig, check_tracker_names


def test_tracker_names_are_the_trackers_module_s() -> None:
    """TrainConfig names the trackers itself (the trackers module takes a TrainConfig, so it may
    not be imported from here); the two lists must be the same."""
    from raysys.training.trackers import TRACKER_PACKAGES

    assert TRACKER_NAMES == tuple(TRACKER_PACKAGES)


def test_tracker_names_checked_when_the_config_is_read() -> None:
    with pytest.raises(ConfigError, match=r"^t\.trackers\[1\]: expected one of tensorboard, wandb, "
                                          r"mlflow, got 'comet'$"):
        from_dict(TrainConfig, {"trackers": ["wandb", "comet"]}, "t")
    with pytest.raises(ConfigError, match=r"^trackers\[2\]: 'wandb' is listed twice$"):
        check_tracker_names(["wandb", "mlflow", "wandb"])
    assert from_dict(TrainConfig, {"trackers": list(TRACKER_NAMES)}).trackers == list(TRACKER_NAMES)
