"""Pure helpers of sharded sampling and the sampler pool: hand-computed expectations, no Ray."""

from __future__ import annotations

import pyarrow as pa
import pytest

from raysys.config import ClusterConfig, SamplingConfig
from raysys.data.schema import conform
from raysys.distributed.actors import replica_bundle, split_even
from raysys.distributed.ray_init import local_init_kwargs, resolve_address, runtime_env_vars
from raysys.distributed.generation import missing_items
from raysys.distributed.sampling import (dedupe_samples, done_pairs, request_fingerprint, sort_samples,
                                         udf_batch_size, udf_num_cpus)


def _samples(pairs: list[tuple[str, int]], completions: list[str] | None = None) -> pa.Table:
    comps = completions or [f"{p}/{i}" for p, i in pairs]
    return conform([{"problem_id": p, "sample_idx": i, "prompt": "q", "completion": c}
                    for (p, i), c in zip(pairs, comps)], "samples")


def test_split_even_covers_range_with_balanced_contiguous_chunks() -> None:
    assert split_even(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert split_even(2, 4) == [(0, 1), (1, 2)]
    assert split_even(0, 2) == []
    with pytest.raises(ValueError):
        split_even(3, 0)


def test_replica_bundle_leaves_out_zero_gpus() -> None:
    assert replica_bundle(ClusterConfig(cpus_per_replica=0.5)) == {"CPU": 0.5}
    assert replica_bundle(ClusterConfig(cpus_per_replica=4, gpus_per_replica=1)) == {"CPU": 4.0, "GPU": 1.0}


def test_udf_num_cpus_leaves_room_for_input_tasks_on_cpu() -> None:
    # 2 CPUs, 2 actors: 1 CPU each would starve Ray Data's own tasks -> (2 - 0.5) / 2.
    assert udf_num_cpus(ClusterConfig(replicas=2, cpus_per_replica=1), 2) == 0.75
    assert udf_num_cpus(ClusterConfig(replicas=1, cpus_per_replica=1), 8) == 1
    assert udf_num_cpus(ClusterConfig(replicas=20, cpus_per_replica=1), 2) == 0.1
    # GPU replicas get what they ask for.
    assert udf_num_cpus(ClusterConfig(replicas=2, cpus_per_replica=4, gpus_per_replica=1), 2) == 4


def test_udf_batch_size_gives_every_replica_work() -> None:
    assert udf_batch_size(10, ClusterConfig(replicas=2, batch_size=64)) == 5
    assert udf_batch_size(1000, ClusterConfig(replicas=2, batch_size=64)) == 64
    assert udf_batch_size(1, ClusterConfig(replicas=4)) == 1


def test_missing_work_lists_only_absent_indices() -> None:
    done = {("a", 0), ("a", 1), ("b", 1)}
    items = [{"gold_answer": "1"}, {"gold_answer": None}, {"gold_answer": "3"}]
    work = missing_items(["a", "b", "c"], ["pa", "pb", "pc"], items, 2, done)
    assert work == [{"key": "b", "prompt": "pb", "item": '{"gold_answer": null}', "idxs": [0]},
                    {"key": "c", "prompt": "pc", "item": '{"gold_answer": "3"}', "idxs": [0, 1]}]


def test_dedupe_keeps_first_row_per_pair_and_sort_follows_problem_order() -> None:
    t = _samples([("b", 1), ("a", 0), ("b", 1), ("b", 0)], ["first", "x", "second", "y"])
    d = dedupe_samples(t)
    assert d.num_rows == 3
    assert d.column("completion").to_pylist() == ["first", "x", "y"]
    assert done_pairs(d) == {("b", 1), ("a", 0), ("b", 0)}
    ordered = sort_samples(d, ["b", "a"])
    assert list(zip(ordered.column("problem_id").to_pylist(), ordered.column("sample_idx").to_pylist())) \
        == [("b", 0), ("b", 1), ("a", 0)]
    assert sort_samples(d).column("problem_id").to_pylist() == ["a", "b", "b"]


def test_sampling_params_from_config_prefers_configured_stop() -> None:
    p = SamplingConfig(n=3, temperature=0.7, max_new_tokens=9, seed=5).params(["Q:"])
    assert (p.n, p.temperature, p.max_new_tokens, p.seed, p.stop) == (3, 0.7, 9, 5, ("Q:",))
    assert SamplingConfig(stop=["END"]).params(["Q:"]).stop == ("END",)


def test_request_fingerprint_is_order_independent_and_sensitive() -> None:
    assert request_fingerprint({"a": 1, "b": [1, 2]}) == request_fingerprint({"b": [1, 2], "a": 1})
    assert request_fingerprint({"a": 1}) != request_fingerprint({"a": 2})


def test_resolve_address_never_attaches_to_a_stray_cluster() -> None:
    assert resolve_address(None, {}) == "local"
    assert resolve_address(None, {"RAY_ADDRESS": "10.0.0.1:6379"}) == "10.0.0.1:6379"
    assert resolve_address("auto", {}) == "auto"
    assert resolve_address("ray://h:10001", {"RAY_ADDRESS": "x"}) == "ray://h:10001"


def test_local_init_kwargs_bound_small_machines_and_bind_localhost() -> None:
    small = local_init_kwargs(ClusterConfig(num_cpus=2))
    assert small["num_cpus"] == 2 and small["dashboard_host"] == "127.0.0.1"
    assert small["object_store_memory"] == 512 * 1024**2
    big = local_init_kwargs(ClusterConfig(), cpu_count=64)
    assert big["num_cpus"] == 64 and "object_store_memory" not in big


def test_runtime_env_vars_propagates_only_known_keys() -> None:
    env = {"HF_HUB_OFFLINE": "1", "TORCH_EXTENSIONS_DIR": "/x", "SECRET_TOKEN": "s"}
    assert runtime_env_vars(env) == {"HF_HUB_OFFLINE": "1", "TORCH_EXTENSIONS_DIR": "/x"}


def test_runtime_env_vars_leave_out_what_a_submitted_job_already_sets() -> None:
    import json

    from raysys.distributed.ray_init import runtime_env_vars

    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    assert runtime_env_vars(env) == env
    job = {"runtime_env": {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}, "working_dir": "gcs://x"}}
    inside_job = {**env, "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job)}
    assert runtime_env_vars(inside_job) == {"HF_HUB_OFFLINE": "1"}
