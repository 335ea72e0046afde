"""The cluster launcher files load through Ray's own config loader and schema."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name, gpu_type", [("aws-gpu.yaml", "gpu_worker"), ("gcp-gpu.yaml", "gpu_worker"),
                                            ("onprem.yaml", "local.cluster.node")])
def test_launcher_config_passes_ray_validation(name: str, gpu_type: str) -> None:
    cfg = prepare_config(copy.deepcopy(_load(name)))
    validate_config(cfg)
    assert gpu_type in cfg["available_node_types"]
    head_cmds = " ".join(cfg["head_start_ray_commands"])
    # Security defaults: dashboard on loopback, token auth on.
    assert "--dashboard-host=127.0.0.1" in head_cmds and "RAY_AUTH_MODE=token" in head_cmds
    assert any("raysys[gpu]" in c for c in cfg["setup_commands"])


def test_validation_rejects_a_broken_copy() -> None:
    cfg = _load("aws-gpu.yaml")
    cfg["available_node_types"]["gpu_worker"]["min_workers"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(cfg))
    cfg = _load("aws-gpu.yaml")
    cfg["head_node_type"] = "missing"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(cfg))


def test_kuberay_manifest_derives_a_valid_autoscaling_config() -> None:
    cr = _load("kuberay.yaml")
    assert cr["kind"] == "RayCluster" and cr["apiVersion"] == "ray.io/v1"
    auto = _derive_autoscaling_config_from_ray_cr(cr)
    validate_config(auto)
    workers = auto["available_node_types"]["gpu-workers"]
    assert workers["resources"]["GPU"] == 4 and workers["max_workers"] == 4


def test_runtime_env_excludes_heavy_paths() -> None:
    from ray.runtime_env import RuntimeEnv

    env = _load("runtime_env.yaml")
    RuntimeEnv(**env)   # Ray's own runtime_env validation
    for path in (".venv/", "runs/", ".git/"):
        assert path in env["excludes"]
