"""Role actor groups on a real local Ray: a group of a non-sampler actor class, weights carried
by every call, and the placement policies (alternate / split / colocate) of ``RoleGroups``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raysys.config import ClusterConfig, EngineConfig, ModelSpec, RoleResources
from raysys.distributed.actors import ActorGroup, RoleActor, SamplerActor
from raysys.distributed.roles import RoleGroups, colocated_bundles
from raysys.errors import StageError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class TokenCounter(RoleActor):
    """Not a sampler: counts the tokens of texts with the model's tokenizer, tagged with the
    weights it serves (so a test sees which weights answered)."""

    def __init__(self, model: ModelSpec, suffix: str) -> None:
        from raysys.models.loading import load_tokenizer

        super().__init__(model)
        self.suffix = suffix
        self.tok = load_tokenizer(model.path)

    def count(self, texts: list[str], extra: int) -> list[tuple[int, str]]:
        return [(len(self.tok(t + self.suffix)["input_ids"]) + extra, self._weights[0])
                for t in texts]


class RetunableCounter(TokenCounter):
    """A TokenCounter whose suffix can change in place (as a guided engine's beta can)."""

    @staticmethod
    def retunable(old_args: tuple, new_args: tuple) -> dict[str, Any] | None:
        return {"suffix": new_args[0]}

    def retune(self, tuning: dict[str, Any]) -> None:
        self.suffix = tuning["suffix"]
        super().retune(tuning)


@pytest.fixture(scope="module")
def ray_local():
    import sys

    import ray
    from ray import cloudpickle

    # Ray workers cannot import this test module: ship TokenCounter by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from raysys.distributed.ray_init import dashboard_init_kwargs  # no stray 8265 State API
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             log_to_driver=False, **dashboard_init_kwargs(False))
    yield
    ray.shutdown()


def test_group_of_a_non_sampler_class_keeps_order_and_carries_weights(
        ray_local: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    import ray

    from raysys.models.loading import load_tokenizer

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    texts = [f"{i} + {i}" * (i + 1) for i in range(7)]
    tok = load_tokenizer(str(tiny_model_dir))
    expected = [len(tok(t + "!")["input_ids"]) + 10 for t in texts]
    cluster = ClusterConfig(cpus_per_replica=0.5, max_restarts=1)
    with ActorGroup(TokenCounter, 2, ModelSpec(path=str(tiny_model_dir)), "!", cluster=cluster,
                    role="counter") as group:
        out = group.map("count", texts, 10)
        assert [n for n, _ in out] == expected                      # item order across replicas
        assert {w for _, w in out} == {str(tiny_model_dir)}
        assert len({p["pid"] for p in group.ping()}) == 2
        group.load_weights(str(other))
        # a killed replica restarts with its constructor's weights; the next call carries ours
        ray.kill(group.actors[0], no_restart=False)
        out = group.map("count", texts, 10)
        assert {w for _, w in out} == {str(other)}
        assert [n for n, _ in out] == expected


def test_alternate_stops_the_other_role_and_refreshes_weights_in_place(
        ray_local: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    engine = EngineConfig(kind="hf", batch_size=4)
    cluster = ClusterConfig(cpus_per_replica=0.5, placement="alternate")
    with RoleGroups(cluster) as groups:
        sampler = groups.get("sampler", SamplerActor, ModelSpec(path=str(tiny_model_dir)), engine)
        pids = [p["pid"] for p in sampler.ping()]
        again = groups.get("sampler", SamplerActor, ModelSpec(path=str(other)), engine)
        assert again is sampler and [p["pid"] for p in again.ping()] == pids   # refreshed in place
        assert again.ping()[0]["model_path"] == str(other)
        counter = groups.get("critic", TokenCounter, ModelSpec(path=str(tiny_model_dir)), "?")
        assert groups.live("sampler") is None and groups.live("critic") is counter
        groups.before_training()
        assert groups.live("critic") is None


def test_a_retunable_change_keeps_the_replicas_and_survives_a_restart(
        ray_local: Any, tiny_model_dir: Path) -> None:
    import ray

    from raysys.models.loading import load_tokenizer

    model = ModelSpec(path=str(tiny_model_dir))
    tok = load_tokenizer(str(tiny_model_dir))
    texts = ["1 + 2", "3 - 1"]

    def expected(suffix: str) -> list[int]:
        return [len(tok(t + suffix)["input_ids"]) for t in texts]

    with RoleGroups(ClusterConfig(cpus_per_replica=0.5, max_restarts=1, placement="split")) as groups:
        group = groups.get("counter", RetunableCounter, model, "")
        pids = [p["pid"] for p in group.ping()]
        again = groups.get("counter", RetunableCounter, model, " = 12345")
        assert again is group and [p["pid"] for p in group.ping()] == pids     # no restart
        assert again.args == (" = 12345",)
        assert [n for n, _ in group.map("count", texts, 0)] == expected(" = 12345")
        # A restarted replica re-runs its constructor (suffix ""); the next call carries the tuning.
        ray.kill(group.actors[0], no_restart=False)
        assert [n for n, _ in group.map("count", texts, 0)] == expected(" = 12345")
        # A class without retunable settings (TokenCounter's default) still gets new replicas.
        plain = groups.get("plain", TokenCounter, model, "")
        assert groups.get("plain", TokenCounter, model, "!") is not plain


def test_split_and_colocate_keep_roles_alive_together(ray_local: Any, tiny_model_dir: Path) -> None:
    model = ModelSpec(path=str(tiny_model_dir))
    roles = {"sampler": RoleResources(1, 0.5), "critic": RoleResources(1, 0.25)}
    assert colocated_bundles(ClusterConfig(roles=roles), ["critic", "sampler"]) == [{"CPU": 0.75}]
    for placement in ("split", "colocate"):
        with RoleGroups(ClusterConfig(placement=placement, roles=roles)) as groups:
            a = groups.get("sampler", TokenCounter, model, "a")
            b = groups.get("critic", TokenCounter, model, "b")
            groups.before_training()                       # not alternate: both stay
            assert groups.live("sampler") is a and groups.live("critic") is b
            assert a.map("count", ["x"], 0)[0][0] == b.map("count", ["x"], 0)[0][0]
            if placement == "colocate":
                assert a._pg is b._pg and not a._own_pg    # one shared placement group
            else:
                assert a._pg is not b._pg


def test_split_groups_make_room_for_a_training_stage_that_does_not_fit_beside_them(
        ray_local: Any, tiny_model_dir: Path, caplog) -> None:
    """A config written for 8 logical CPUs on a 2-CPU cluster: a live group holding 1.5 CPUs
    is kept before a training stage that fits beside it and stopped before a 1-CPU one (one
    warning, naming the shortfall); a second role's group that does not fit beside the first
    stops it too, and nothing warns again; inside ``together()`` it is an error instead."""
    import logging
    import time

    import ray

    model = ModelSpec(path=str(tiny_model_dir))
    with caplog.at_level(logging.WARNING, logger="raysys.distributed.roles"), \
            RoleGroups(ClusterConfig(placement="split", cpus_per_replica=1.5)) as groups:
        group = groups.get("sampler", TokenCounter, model, "")
        groups.before_training([{"CPU": 0.5}])
        assert groups.live("sampler") is group
        groups.before_training([{"CPU": 1.0}])
        assert groups.live("sampler") is None
        deadline = time.monotonic() + 30          # the resource view catches up within ~1 s
        while ray.available_resources().get("CPU", 0.0) < 1.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0.0) >= 1.0   # the stage can be placed now
        again = groups.get("sampler", TokenCounter, model, "")
        sampler_count = again.map("count", ["x"], 0)[0]
        assert again is not group and sampler_count[1] == str(tiny_model_dir)
        groups.before_training([{"CPU": 1.0}])
        assert groups.live("sampler") is None
        # a second role's group that does not fit beside the first: the first is stopped
        # (under split it would otherwise wait PLACEMENT_TIMEOUT_S and fail)
        sampler = groups.get("sampler", TokenCounter, model, "")
        critic = groups.get("critic", TokenCounter, model, "")
        assert groups.live("sampler") is None and groups.live("critic") is critic
        assert critic.map("count", ["x"], 0)[0] == sampler_count
        # a streamed step needs its roles at once: there, not fitting is one error, no stop
        with groups.together(), pytest.raises(StageError, match=(
                r"cluster: the sampler group needs 1.5 CPU, 1 CPU short beside the live critic "
                r"group\(s\) \(cluster: 2 CPU\); this step needs its roles at once")):
            groups.get("sampler", TokenCounter, model, "")
        assert groups.live("critic") is critic and groups.live("sampler") is None
    assert [r.getMessage() for r in caplog.records] == [
        "cluster.placement split: a training stage needs 1 CPU, 0.5 CPU short with the role "
        "groups alive (cluster: 2 CPU); groups are stopped when the next one does not fit and "
        "restarted when needed"]


def test_joining_the_running_instance_warns_when_num_cpus_differs(ray_local: Any, caplog) -> None:
    """`demo --recipe all`: a later recipe runs on the instance the first one started; a
    different cluster.num_cpus cannot apply and is named in a warning instead of ignored."""
    import logging

    from raysys.distributed.ray_init import init_ray

    with caplog.at_level(logging.WARNING, logger="raysys.distributed.ray_init"):
        init_ray(ClusterConfig(num_cpus=2))
        assert caplog.records == []
        init_ray(ClusterConfig(num_cpus=8))
    assert [r.getMessage() for r in caplog.records] == [
        "cluster.num_cpus 8 ignored: this process's Ray instance has 2.0 CPUs"]


def test_a_run_that_joins_the_running_instance_names_its_session(ray_local: Any,
                                                                tmp_path: Path) -> None:
    """`demo --recipe all`: the second and third recipes join the first one's Ray instance;
    their logs dirs name that session too (they once had no ray_session.txt)."""
    import ray

    from raysys.console import run_logging
    from raysys.distributed.ray_init import init_ray

    ctx = ray.get_runtime_context()
    session_logs = Path(ctx.get_temp_dir()) / ctx.get_session_name() / "logs"
    for name in ("llm2", "critique"):
        with run_logging(tmp_path / name, capture_fds=False) as logs:
            init_ray(ClusterConfig())
        assert (logs / "ray_session.txt").read_text().strip() == str(session_logs)
        assert (logs / "ray_session").resolve() == session_logs.resolve()
