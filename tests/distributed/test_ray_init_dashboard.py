"""The dashboard arguments of a private local instance (pure; the real instance is checked in
``test_ray_init_local.py``)."""

from __future__ import annotations

import socket

import pytest

from raysys.distributed.ray_init import (RAY_DASHBOARD_PORTS, dashboard_init_kwargs,
                                         free_local_port)
from raysys.errors import ClusterError


def test_without_dashboard_a_private_port_is_advertised() -> None:
    assert dashboard_init_kwargs(False, free_port=lambda: 41234) == {
        "include_dashboard": False, "dashboard_port": 41234}


def test_with_dashboard_ray_picks_the_port_it_binds() -> None:
    assert dashboard_init_kwargs(True, free_port=lambda: 41234) == {"include_dashboard": True}


def test_free_local_port_is_bindable_and_outside_rays_dashboard_range() -> None:
    port = free_local_port()
    assert port not in RAY_DASHBOARD_PORTS and 1024 <= port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_free_local_port_refuses_when_every_port_is_avoided() -> None:
    with pytest.raises(ClusterError, match="no free local port outside 1-65535"):
        free_local_port(avoid=range(1, 65536))
