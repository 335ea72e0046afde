"""Hang detection on a real local Ray: an actor group call that makes no progress for
``cluster.stall_timeout_s`` fails with a ``StageError`` naming the stage, within that time; a
slow call that keeps making progress does not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raysys.config import ClusterConfig, ConfigError, ModelSpec, from_dict
from raysys.distributed.actors import ActorGroup, RoleActor, StallError
from raysys.distributed.generation import GenerationSpec, run_map
from raysys.errors import StageError

TIMEOUT_S = 3.0
MODEL = ModelSpec(path="no-model")      # RoleActor only records it: nothing is loaded


class Napper(RoleActor):
    """Sleeps as long as each call asks: ``hang`` never returns, ``nap`` sleeps the sum of its
    items (seconds) and echoes them."""

    def hang(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        time.sleep(3600)
        return items

    def nap(self, items: list[float]) -> list[float]:
        time.sleep(sum(items))
        return items

    def generate(self, prompts: list[str], params: Any) -> list[Any]:   # a hung engine
        time.sleep(3600)
        return []


class HungLoader(RoleActor):
    """A replica whose model load never finishes."""

    def __init__(self, model: ModelSpec) -> None:
        super().__init__(model)
        time.sleep(3600)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    import sys

    import ray
    from ray import cloudpickle

    if ray.is_initialized():
        ray.shutdown()
    # Ray workers cannot import this test module: ship Napper by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from raysys.distributed.ray_init import dashboard_init_kwargs  # no stray 8265 State API
    ray.init(address="local", num_cpus=2, object_store_memory=100 * 1024**2,
             log_to_driver=False, **dashboard_init_kwargs(False))
    yield
    ray.shutdown()


@pytest.fixture
def nappers(ray_local: None) -> Iterator[ActorGroup]:
    """A fresh group per test: a replica stuck in ``hang`` would queue every later call."""
    # Starting worker processes can take longer than 3 s on a loaded machine: the short
    # timeout applies to the calls under test only.
    cluster = ClusterConfig(cpus_per_replica=0.5, max_restarts=0, stall_timeout_s=120)
    with ActorGroup(Napper, 2, MODEL, cluster=cluster, role="napper") as group:
        group.stall_timeout_s = TIMEOUT_S
        yield group


def test_a_hung_call_fails_within_the_timeout_naming_role_and_call(nappers: ActorGroup) -> None:
    t0 = time.monotonic()
    with pytest.raises(StallError) as err:
        nappers.map("hang", [{"id": "a"}, {"id": "b"}])
    waited = time.monotonic() - t0
    assert TIMEOUT_S <= waited < TIMEOUT_S + 2.0
    assert str(err.value) == ("napper group (Napper) hang: 2 of 2 call(s) made no progress for 3 s "
                              "(cluster.stall_timeout_s); a replica, its engine or a collective "
                              "is hung (see the Ray dashboard / actor logs)")
    assert isinstance(err.value, StageError)


def test_a_map_stage_on_a_hung_group_raises_a_stage_error_naming_the_stage(
        nappers: ActorGroup, tmp_path: Path) -> None:
    spec = GenerationSpec("critiques", lambda work, comps: [],
                          key=lambda r: (f"{r['problem_id']}#{r['sample_idx']}", 0))
    items = [{"problem_id": "p1", "sample_idx": 0}]
    t0 = time.monotonic()
    with pytest.raises(StageError) as err:
        run_map(items, keys=["p1#0"], spec=spec, method="hang", group=nappers,
                out_dir=tmp_path / "explore", request={"v": 1}, cluster=ClusterConfig(),
                label="token_pairs")
    assert time.monotonic() - t0 < TIMEOUT_S + 2.0
    msg = str(err.value)
    assert msg.startswith("stage 'token_pairs': napper group (Napper) hang: 1 of 1 call(s) made "
                          "no progress for 3 s (cluster.stall_timeout_s)"), msg
    assert not (tmp_path / "explore" / "_MANIFEST.json").exists()


def test_slow_calls_that_keep_making_progress_do_not_time_out(nappers: ActorGroup) -> None:
    # Replica 0 answers after 2 s, replica 1 after 4 s: longer than the 3 s timeout in all,
    # but never 3 s without a result.
    t0 = time.monotonic()
    assert nappers.map("nap", [2.0, 4.0]) == [2.0, 4.0]
    assert time.monotonic() - t0 >= 4.0


def test_a_group_whose_replicas_never_start_fails_and_frees_its_resources(ray_local: None) -> None:
    import ray

    cluster = ClusterConfig(cpus_per_replica=0.5, max_restarts=0, stall_timeout_s=TIMEOUT_S)
    with pytest.raises(StallError, match=r"^loader group \(HungLoader\) start: 1 of 1 call\(s\)"):
        ActorGroup(HungLoader, 1, MODEL, cluster=cluster, role="loader")
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)                 # the kill and the placement group removal are async
    assert ray.available_resources().get("CPU", 0) == 2


def test_stall_timeout_must_be_finite_and_positive() -> None:
    assert from_dict(ClusterConfig, {"stall_timeout_s": 2}).stall_timeout_s == 2.0
    with pytest.raises(ConfigError, match=r"^cluster\.stall_timeout_s: expected a finite number "
                                          r"> 0, got 0\.0$"):
        from_dict(ClusterConfig, {"stall_timeout_s": 0}, "cluster")


def test_a_hung_streamed_stage_fails_naming_it(nappers: ActorGroup, tmp_path: Path) -> None:
    """Streaming between roles waits on chunks in flight: a hung one fails the stage too."""
    from raysys.distributed.streaming import StageStream, run_streams
    from raysys.distributed.stage_writer import GenerationSpec as Spec
    from raysys.engines.base import SamplingParams

    spec = Spec("samples", lambda work, comps: [], key_columns=("problem_id", "sample_idx"))
    stream = StageStream(tmp_path / "critiques_it1", spec, SamplingParams(max_new_tokens=4),
                         {"r": 1}, "critiques_it1")
    chunk = stream.submit(nappers, [{"id": "q1"}], ["q1"], ["prompt"])
    t0 = time.monotonic()
    with pytest.raises(StageError, match=r"^stage\(s\) critiques_it1: no chunk finished for 3 s"):
        run_streams([chunk], lambda c, rows: [])
    assert time.monotonic() - t0 < TIMEOUT_S + 2.0
    with pytest.raises(StageError, match=r"^stage 'critiques_it1': generate: 1 of 1 call\(s\) made "
                                         r"no progress for 3 s"):
        stream.land(chunk)


def _slow_batches(batch: dict[str, Any]) -> dict[str, Any]:
    """A Ray Data UDF: the batch holding id 2 stalls for 8 s (past the 3 s bound), others pass."""
    if 2 in list(batch["id"]):
        time.sleep(8)
    return batch


def test_iter_with_stall_bound_passes_items_errors_and_fails_a_stalled_iterator() -> None:
    from raysys.distributed.actors import iter_with_stall_bound

    assert list(iter_with_stall_bound(iter(range(5)), 1.0, "x")) == [0, 1, 2, 3, 4]

    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("engine crashed")
    got: list[int] = []
    with pytest.raises(ValueError, match="engine crashed"):
        got.extend(iter_with_stall_bound(broken(), 1.0, "x"))
    assert got == [1]

    closed: list[bool] = []

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(True)
    for i in iter_with_stall_bound(endless(), 1.0, "x"):
        if i == 3:
            break                       # the consumer stops: the source is closed, not leaked
    deadline = time.monotonic() + 2
    while not closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed == [True]

    def stalls() -> Iterator[float]:
        yield 0.1
        time.sleep(1.5)                 # past the bound; then the abandoned reader ends
        yield 0.2
    t0, got = time.monotonic(), []
    with pytest.raises(StallError, match=r"^pipeline: no result for 0\.5 s \(cluster\.stall"):
        got.extend(iter_with_stall_bound(stalls(), 0.5, "pipeline"))
    assert got == [0.1] and time.monotonic() - t0 < 2.0


def test_a_stalled_ray_data_pipeline_fails_within_the_timeout(ray_local: None) -> None:
    """The generation stage's Ray Data path reads results through the same bound. When the
    stalled call returns at last, the abandoned reader closes the pipeline instead of leaking it."""
    import threading

    import ray

    from raysys.distributed.actors import iter_with_stall_bound

    ds = ray.data.range(4, override_num_blocks=4).map_batches(_slow_batches, batch_size=1)
    got: list[int] = []
    t0 = time.monotonic()
    with pytest.raises(StallError, match=r"^Ray Data engine actors: no result for 3 s"):
        for batch in iter_with_stall_bound(ds.iter_batches(batch_size=None), TIMEOUT_S,
                                           "Ray Data engine actors"):
            got += [int(i) for i in batch["id"]]
    assert time.monotonic() - t0 < 60           # bounded; Ray Data start-up included
    assert 2 not in got

    def readers() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.name == "stall-bound Ray Data engine actors"]
    deadline = time.monotonic() + 30
    while readers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert readers() == []
