"""``init_ray`` starting a private local instance records it, so Ray Train stages there skip
what only a multi-node cluster needs (``trainer.fit_env``); a shut-down or foreign instance
does not count. Without its dashboard, the instance's State API address is served by no one,
not by another instance's dashboard on the machine (issue 28)."""

from __future__ import annotations

import socket

import pytest

from raysys.config import ClusterConfig


def _advertised_state_api() -> tuple[str, int]:
    """The State API (dashboard) address this instance's GCS gives to every ``ray.util.state``
    call made inside it, e.g. Ray Train's PlacementGroupCleaner."""
    from ray._private import ray_constants
    from ray.experimental import internal_kv

    raw = internal_kv._internal_kv_get(ray_constants.DASHBOARD_ADDRESS,
                                       namespace=ray_constants.KV_NAMESPACE_DASHBOARD)
    host, _, port = raw.decode().rpartition(":")
    return host, int(port)


def test_init_ray_records_the_local_instance_it_started(monkeypatch) -> None:
    import ray
    from ray.util.state import get_actor
    from ray.util.state.exception import ServerUnavailable

    monkeypatch.delenv("RAY_ADDRESS", raising=False)      # init_ray would join that instead
    from raysys.distributed.ray_init import (RAY_DASHBOARD_PORTS, init_ray, shutdown_ray,
                                             started_local_instance)

    assert not ray.is_initialized() and not started_local_instance()
    init_ray(ClusterConfig(num_cpus=1), dashboard=False)
    try:
        assert started_local_instance()
        host, port = _advertised_state_api()
        # Ray's default would be 127.0.0.1:8265, where another instance's dashboard answers
        # "no such actor" for this instance's live actors.
        assert port not in RAY_DASHBOARD_PORTS
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=5).close()
        with pytest.raises(ServerUnavailable):      # unavailable, not "actor not found"
            get_actor("ff" * 16, address=ray.get_runtime_context().gcs_address, timeout=5)
    finally:
        shutdown_ray()
    assert not started_local_instance()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert not started_local_instance()      # a new instance this module did not start via init_ray
    finally:
        ray.shutdown()
