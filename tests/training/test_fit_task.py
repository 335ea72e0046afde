"""The task that runs ``TorchTrainer.fit()`` on a real local Ray: its environment, which the
Train controller inherits, names this cluster and the controller's poll interval."""

from __future__ import annotations

import os

import pytest

from raysys.config import ConfigError
from raysys.training.trainer import (HEALTH_CHECK_INTERVAL_ENV, HEALTH_CHECK_INTERVAL_S,
                                     _fit_pinned_to_this_cluster, poll_interval_s)


def _env_probe() -> object:
    """A stand-in trainer whose ``fit`` returns the variables the Train controller would see
    (defined in a function so Ray ships the class by value)."""

    class EnvProbe:
        def fit(self) -> dict[str, str | None]:
            return {k: os.environ.get(k) for k in ("RAY_ADDRESS", HEALTH_CHECK_INTERVAL_ENV)}

    return EnvProbe()


def test_fit_task_names_this_cluster_and_polls_every_half_second(
        ray_local, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.delenv(HEALTH_CHECK_INTERVAL_ENV, raising=False)
    env = _fit_pinned_to_this_cluster(_env_probe())
    assert env["RAY_ADDRESS"] == ray.get_runtime_context().gcs_address
    # Ray's own default is 2 s, paid after every stage's last step
    assert env[HEALTH_CHECK_INTERVAL_ENV] == HEALTH_CHECK_INTERVAL_S == "0.5"


def test_a_poll_interval_set_in_the_environment_wins(ray_local, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HEALTH_CHECK_INTERVAL_ENV, "3")
    assert _fit_pinned_to_this_cluster(_env_probe())[HEALTH_CHECK_INTERVAL_ENV] == "3"


@pytest.mark.parametrize("value", ["", "abc", "0", "-1", "nan", "inf"])
def test_a_bad_poll_interval_is_one_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"environment variable {HEALTH_CHECK_INTERVAL_ENV}: "
                                          rf"expected a finite number of seconds > 0, got '{value}'"):
        poll_interval_s({HEALTH_CHECK_INTERVAL_ENV: value})
