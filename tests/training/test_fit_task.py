"""The task that runs ``TorchTrainer.fit()`` on a real local Ray: its environment, which the
Train controller inherits, names this cluster and the controller's poll interval, and turns the
preemption watcher off on a private local instance."""

from __future__ import annotations

import os

import pytest

from raysys.config import ConfigError
from raysys.training.trainer import (HEALTH_CHECK_INTERVAL_ENV, HEALTH_CHECK_INTERVAL_S,
                                     PREEMPTION_WATCHER_ENV, _fit_pinned_to_this_cluster, fit_env,
                                     poll_interval_s)


def _env_probe() -> object:
    """A stand-in trainer whose ``fit`` returns the variables the Train controller would see
    (defined in a function so Ray ships the class by value)."""

    class EnvProbe:
        def fit(self) -> dict[str, str | None]:
            return {k: os.environ.get(k) for k in ("RAY_ADDRESS", HEALTH_CHECK_INTERVAL_ENV,
                                                   PREEMPTION_WATCHER_ENV)}

    return EnvProbe()


def test_fit_task_names_this_cluster_and_polls_every_half_second(
        ray_local, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.delenv(HEALTH_CHECK_INTERVAL_ENV, raising=False)
    env = _fit_pinned_to_this_cluster(_env_probe())
    assert env["RAY_ADDRESS"] == ray.get_runtime_context().gcs_address
    # Ray's own default is 2 s, paid after every stage's last step
    assert env[HEALTH_CHECK_INTERVAL_ENV] == HEALTH_CHECK_INTERVAL_S == "0.5"


def test_the_preemption_watcher_is_off_only_on_a_local_instance_raysys_started(
        ray_local, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from raysys.distributed import ray_init

    monkeypatch.delenv(PREEMPTION_WATCHER_ENV, raising=False)
    # ray_local is ray.init'ed by the fixture, not by init_ray: Ray Train's default stays
    assert not ray_init.started_local_instance()
    assert _fit_pinned_to_this_cluster(_env_probe())[PREEMPTION_WATCHER_ENV] is None
    # as if init_ray had started this instance (it records the session it started)
    monkeypatch.setattr(ray_init, "_local_session", ray.get_runtime_context().get_session_name())
    assert ray_init.started_local_instance()
    assert _fit_pinned_to_this_cluster(_env_probe())[PREEMPTION_WATCHER_ENV] == "0"
    monkeypatch.setattr(ray_init, "_local_session", "session_of_an_earlier_instance")
    assert not ray_init.started_local_instance()


def test_fit_env_passes_a_preemption_watcher_setting_of_the_user_on() -> None:
    assert fit_env("a:1", {}, local=True)[PREEMPTION_WATCHER_ENV] == "0"
    assert fit_env("a:1", {}, local=False) == {"RAY_ADDRESS": "a:1", HEALTH_CHECK_INTERVAL_ENV: "0.5"}
    # set by the user: passed on as is, local or joined (a joined cluster's processes would not
    # inherit the driver's environment otherwise)
    for local in (True, False):
        assert fit_env("a:1", {PREEMPTION_WATCHER_ENV: "1"}, local)[PREEMPTION_WATCHER_ENV] == "1"
    assert fit_env("a:1", {PREEMPTION_WATCHER_ENV: "0"}, False)[PREEMPTION_WATCHER_ENV] == "0"


def test_a_poll_interval_set_in_the_environment_wins(ray_local, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HEALTH_CHECK_INTERVAL_ENV, "3")
    assert _fit_pinned_to_this_cluster(_env_probe())[HEALTH_CHECK_INTERVAL_ENV] == "3"


@pytest.mark.parametrize("value", ["", "abc", "0", "-1", "nan", "inf"])
def test_a_bad_poll_interval_is_one_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"environment variable {HEALTH_CHECK_INTERVAL_ENV}: "
                                          rf"expected a finite number of seconds > 0, got '{value}'"):
        poll_interval_s({HEALTH_CHECK_INTERVAL_ENV: value})


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, [{"CPU": 1.0}]),                                             # Ray Train's default
    ({"resources_per_worker": {"CPU": 2}}, [{"CPU": 2.0}]),           # the demos' long stages
    ({"num_workers": 3, "resources_per_worker": {"CPU": 1.5, "mem_slot": 1}},
     [{"CPU": 1.5, "mem_slot": 1.0}] * 3),
    ({"use_gpu": True}, [{"GPU": 1.0}]),                              # no CPU asked beside a GPU
    ({"num_workers": 2, "use_gpu": True, "resources_per_worker": {"CPU": 4, "GPU": 0}},
     [{"CPU": 4.0, "GPU": 1.0}] * 2),                                 # a zero GPU is Ray's default
])
def test_worker_bundles_are_what_ray_train_reserves(fields: dict, expected: list) -> None:
    from raysys.training.config import TrainConfig
    from raysys.training.trainer import scaling_config, worker_bundles

    cfg = TrainConfig(**fields)
    assert worker_bundles(cfg) == expected
    assert scaling_config(cfg).placement_strategy == "PACK"    # what before_training assumes
