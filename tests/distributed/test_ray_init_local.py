"""``init_ray`` starting a private local instance records it, so Ray Train stages there skip
what only a multi-node cluster needs (``trainer.fit_env``); a shut-down or foreign instance
does not count."""

from __future__ import annotations

from raysys.config import ClusterConfig


def test_init_ray_records_the_local_instance_it_started(monkeypatch) -> None:
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)      # init_ray would join that instead
    from raysys.distributed.ray_init import init_ray, shutdown_ray, started_local_instance

    assert not ray.is_initialized() and not started_local_instance()
    init_ray(ClusterConfig(num_cpus=1), dashboard=False)
    try:
        assert started_local_instance()
    finally:
        shutdown_ray()
    assert not started_local_instance()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert not started_local_instance()      # a new instance this module did not start via init_ray
    finally:
        ray.shutdown()
