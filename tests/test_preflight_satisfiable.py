"""Runs that can never be satisfied, refused before any work (raysys.preflight_models,
raysys.preflight_cluster): against hand-made shapes and nodes, the tiny model's real files, and
this machine's resources as a local Ray would see them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from raysys.config import (ClusterConfig, ConfigError, EngineConfig, ModelSpec, RoleResources,
                           SamplingConfig)
from raysys.preflight_cluster import Request, check_fits, local_node, unplaceable
from raysys.preflight_models import (LLAMA_LINEAR, ModelShape, check_lora_targets,
                                     check_model_limits, check_new_tokens,
                                     check_served_lora_ranks, check_tensor_parallel,
                                     check_train_positions, check_vllm_sampling, linear_names,
                                     shape_of_dir)
from raysys.training.config import LoraConfig, TrainConfig

VLLM = EngineConfig(kind="vllm")


def shape(heads: int | None = None, kv: int | None = None, positions: int | None = None,
          linear: set[str] | None = None, context: int = 2048, key: str = "m.path") -> ModelShape:
    return ModelShape(key, context, heads, kv, positions,
                      frozenset(linear) if linear is not None else None)


# -- the models' shapes -------------------------------------------------------------------------


def test_linear_names_read_from_weight_shapes() -> None:
    tensors = {"model.embed_tokens.weight": ("F32", [512, 128], "a"),
               "model.layers.0.self_attn.q_proj.weight": ("F32", [128, 128], "a"),
               "model.layers.0.mlp.down_proj.weight": ("BF16", [128, 512], "a"),
               "model.layers.0.input_layernorm.weight": ("F32", [128], "a"),
               "model.layers.0.self_attn.q_proj.bias": ("F32", [128], "a")}
    assert linear_names(tensors) == {"q_proj", "down_proj", "lm_head"}


def test_tiny_model_shape_from_its_files(tiny_model_dir: Path) -> None:
    """Heads, positions and linear modules as config.json and the headers say; the linear
    modules are exactly the trainer's (a meta model's nn.Linear leaves), which are the tiny
    Llama's that a `tiny` model gets before it is built."""
    from raysys.training.model_setup import linear_module_names, meta_model

    s = shape_of_dir(tiny_model_dir, "models.strong.path", max_model_len=4096)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert (s.heads, s.kv_heads, s.positions) == (cfg["num_attention_heads"],
                                                  cfg["num_key_value_heads"],
                                                  cfg["max_position_embeddings"])
    assert s.context == cfg["max_position_embeddings"] < 4096
    assert s.linear == frozenset(linear_module_names(meta_model(str(tiny_model_dir)))) == LLAMA_LINEAR


@pytest.mark.parametrize("heads, kv, tp, message", [
    (4, 4, 3, r"^engine\.tensor_parallel_size: 3 ranks cannot split the 4 attention heads of "
              r"m\.path evenly \(vLLM's rule\); expected one of 1, 2, 4$"),
    (6, 3, 2, r"^engine\.tensor_parallel_size: 2 ranks cannot share the 3 key/value heads"),
    (12, 8, 6, r"cannot share the 8 key/value heads"),       # 8 kv heads over 6 ranks
    (8, 2, 8, None),                    # 2 kv heads replicated 4 times over 8 ranks: fine
    (8, 8, 4, None),
])
def test_tensor_parallel_against_heads(heads: int, kv: int, tp: int, message: str | None) -> None:
    engine = EngineConfig(kind="vllm", tensor_parallel_size=tp)
    if message is None:
        check_tensor_parallel(engine, "engine", [shape(heads, kv)])
    else:
        with pytest.raises(ConfigError, match=message):
            check_tensor_parallel(engine, "engine", [shape(heads, kv)])
    # HF engines do not shard; unknown heads (a hub id) are not guessed
    check_tensor_parallel(EngineConfig(kind="hf", tensor_parallel_size=tp), "engine",
                          [shape(heads, kv)])
    check_tensor_parallel(engine, "engine", [shape()])


def test_lora_targets_against_every_model() -> None:
    train = TrainConfig(lora=LoraConfig(target_modules=["q_proj", "c_attn"]))
    a, b = shape(linear={"q_proj", "lm_head"}, key="a.path"), shape(linear={"c_attn"}, key="b.path")
    check_lora_targets(train, "t", [a, b])          # each name in some model
    with pytest.raises(ConfigError, match=r"^t\.lora\.target_modules\[1\]: 'c_attn' is not a linear "
                                          r"module of a\.path; expected one of lm_head, q_proj$"):
        check_lora_targets(train, "t", [a])
    check_lora_targets(train, "t", [a, shape()])    # a hub model's modules are unknown
    train.lora.enabled = False
    check_lora_targets(train, "t", [a])


def test_lengths_against_positions_and_context() -> None:
    models = [shape(positions=512, context=512), shape(positions=1024, context=1000, key="b")]
    check_train_positions(TrainConfig(max_len=1024), "t", models)
    with pytest.raises(ConfigError, match=r"^t\.max_len: 1025 tokens per example is beyond the "
                                          r"1024 positions of m\.path, b .*expected <= 1024$"):
        check_train_positions(TrainConfig(max_len=1025), "t", models)
    check_train_positions(TrainConfig(max_len=10**5), "t", [*models, shape()])   # unknown
    check_new_tokens(SamplingConfig(max_new_tokens=999), "greedy", models)
    with pytest.raises(ConfigError, match=r"^greedy\.max_new_tokens: 1,000 new tokens never fit in "
                                          r"the 1,000-token context of b .*expected < 1,000$"):
        check_new_tokens(SamplingConfig(max_new_tokens=1000), "greedy", models)


def test_vllm_rules_on_sampling_and_adapters(tmp_path: Path) -> None:
    hot = SamplingConfig(temperature=2.5)
    check_vllm_sampling(EngineConfig(kind="hf"), "engine", hot, "sampling")
    with pytest.raises(ConfigError, match=r"^sampling\.temperature: expected <= 2 with engine\.kind "
                                          r"auto .*got 2\.5$"):
        check_vllm_sampling(EngineConfig(), "engine", hot, "sampling")
    adapter = tmp_path / "adp"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 128}))
    import dataclasses

    # a config serving one adapter of rank 128, and a stage whose rank-16 adapter it serves
    Top = dataclasses.make_dataclass("Top", [("model", ModelSpec), ("train", TrainConfig)])
    top = Top(ModelSpec(path="owner/base", adapter=str(adapter)),
              TrainConfig(merge_output=False, lora=LoraConfig(r=16)))
    with pytest.raises(ConfigError, match=r"^model\.adapter: LoRA rank 128 is above engine\."
                                          r"max_lora_rank 64, so vLLM cannot serve it"):
        check_served_lora_ranks(top, VLLM, "engine")
    check_served_lora_ranks(top, EngineConfig(kind="vllm", max_lora_rank=128), "engine")
    with pytest.raises(ConfigError, match=r"^engine\.max_lora_rank: expected one of 1, 8, 16, 32, "
                                          r"64, 128, 256, 320, 512 .*got 100$"):
        check_served_lora_ranks(top, EngineConfig(kind="vllm", max_lora_rank=100), "engine")
    check_served_lora_ranks(top, EngineConfig(kind="hf"), "engine")


def test_sampling_values_every_engine_refuses() -> None:
    from raysys.config import from_dict

    for data, message in [({"top_p": 0}, r"^s\.top_p: expected 0 < top_p <= 1"),
                          ({"top_k": -2}, r"^s\.top_k: expected -1 or 0 \(off\) or a count >= 1"),
                          ({"stop": ["Q:", ""]}, r"^s\.stop\[1\]: an empty stop string")]:
        with pytest.raises(ConfigError, match=message):
            from_dict(SamplingConfig, data, "s")
    assert from_dict(SamplingConfig, {"top_k": -1, "top_p": 1e-3}).top_k == -1


def test_model_limits_on_a_real_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The walk over a recipe config: its models, engine, training and sampling sections."""
    from raysys.recipes import load_run_config

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo_quick.yaml"
    sets = (f"models.strong.path={tiny_model_dir}",)
    check_model_limits(load_run_config(demo, sets))
    with pytest.raises(ConfigError, match=r"^stage1\.train\.lora\.target_modules\[0\]: 'qkv' is not"):
        check_model_limits(load_run_config(demo, (*sets, "stage1.train.lora.target_modules=[qkv]")))
    with pytest.raises(ConfigError, match=r"^engine\.tensor_parallel_size: 3 ranks cannot split"):
        check_model_limits(load_run_config(demo, (*sets, "engine.kind=vllm",
                                                  "engine.tensor_parallel_size=3")))


# -- the cluster's resources --------------------------------------------------------------------


NODES = [{"CPU": 4.0, "GPU": 1.0, "memory": 8 * 2**30}, {"CPU": 4.0, "GPU": 1.0, "memory": 8 * 2**30}]


def req(bundles: list[dict[str, float]], strategy: str = "PACK") -> Request:
    return Request("the sampler group", "replica", bundles, strategy, "c.per", "c.count")


@pytest.mark.parametrize("bundles, strategy, message", [
    ([{"CPU": 4.0}] * 2, "PACK", None),                           # one per node
    ([{"CPU": 2.0}] * 4, "SPREAD", None),
    ([{"CPU": 6.0}], "PACK", r"^c\.per: the sampler group asks 6 CPU per replica, more than any "
                             r"node of two nodes has \(4 CPU\); Ray would wait for it forever; "
                             r"expected at most 4 CPU per replica$"),
    ([{"CPU": 1.0, "TPU": 1.0}], "PACK", r"^c\.per: .*expected no TPU in a replica"),
    ([{"GPU": 1.0}] * 3, "PACK", r"^c\.count: the sampler group asks 3 x 1 GPU = 3 GPU at once, "
                                 r"more than two nodes has \(2 GPU\).*expected at most 2 "
                                 r"replicas of 1 GPU$"),
    ([{"CPU": 1.0}] * 3, "STRICT_SPREAD", r"^c\.count: .*each of its 3 replicas on its own node"),
    ([{"CPU": 3.0}] * 2, "STRICT_PACK", r"^c\.count: .*do not fit on one node of two nodes"),
    ([{"CPU": 2.5}] * 3, "PACK", r"^c\.count: .*3 replicas of 2\.5 CPU do not fit on the nodes"),
])
def test_unplaceable_names_the_key_and_the_shortfall(bundles: list, strategy: str,
                                                      message: str | None) -> None:
    why = unplaceable(req(bundles, strategy), NODES, "two nodes")
    if message is None:
        assert why is None
    else:
        assert why is not None and __import__("re").search(message, why), why


def test_local_node_is_what_a_local_ray_would_have() -> None:
    node = local_node(ClusterConfig(num_cpus=3))
    assert node["CPU"] == 3.0
    assert node["GPU"] == float(_visible_gpus())
    assert 0 < node["memory"] and not any(k.startswith("node:") for k in node)
    assert local_node(ClusterConfig())["CPU"] == float(os.cpu_count() or 1)


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def test_training_stages_and_roles_checked_against_nodes() -> None:
    import dataclasses

    Top = dataclasses.make_dataclass("Top", [("cluster", ClusterConfig), ("train", TrainConfig)])
    ok = Top(ClusterConfig(replicas=2), TrainConfig(num_workers=8))
    check_fits(ok, NODES, "two nodes")
    with pytest.raises(ConfigError, match=r"^train\.num_workers: training stage train asks 9 x 1 "
                                          r"CPU = 9 CPU at once"):
        check_fits(Top(ClusterConfig(), TrainConfig(num_workers=9)), NODES, "two nodes")
    with pytest.raises(ConfigError, match=r"^train\.resources_per_worker: Ray Train refuses it "
                                          r"\(use_tpu is False but TPU was found"):
        check_fits(Top(ClusterConfig(), TrainConfig(resources_per_worker={"TPU": 1})), NODES, "n")
    with pytest.raises(ConfigError, match=r"^cluster\.roles\.critic\.gpus_per_replica: the critic "
                                          r"group asks 1 CPU, 2 GPU per replica"):
        check_fits(Top(ClusterConfig(roles={"critic": RoleResources(gpus_per_replica=2.0)}),
                       TrainConfig()), NODES, "two nodes")
    # only CPUs known (Ray's resolution unavailable): a GPU request is left to Ray
    check_fits(Top(ClusterConfig(gpus_per_replica=4), TrainConfig()), [{"CPU": 4.0}], "n",
               frozenset({"CPU"}))


def test_roles_section_from_a_config_is_a_role_resources() -> None:
    """``cluster.roles`` values are RoleResources once loaded (the check reads them)."""
    from raysys.config import from_dict

    c = from_dict(ClusterConfig, {"roles": {"critic": {"replicas": 2, "cpus_per_replica": 3}}})
    from raysys.preflight_cluster import role_requests

    reqs = {r.what: r for r in role_requests(c)}
    assert reqs["the critic group"].bundles == [{"CPU": 3.0}] * 2
    assert reqs["the sampler group"].bundles == [{"CPU": 1.0}]
    colo = role_requests(from_dict(ClusterConfig, {"placement": "colocate", "roles": {
        "critic": {"replicas": 2, "cpus_per_replica": 3}}}))
    assert [r.bundles for r in colo] == [[{"CPU": 4.0}, {"CPU": 3.0}]]


def test_shape_skips_composite_and_adapter_bases(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adp"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "base_model_name_or_path": str(tiny_model_dir)}))
    assert shape_of_dir(adapter, "a", 100).heads == 2          # its local base's shape
    comp = tmp_path / "comp"
    shutil.copytree(tiny_model_dir, comp)
    cfg = json.loads((comp / "config.json").read_text())
    cfg["text_config"] = {"model_type": "llama"}
    (comp / "config.json").write_text(json.dumps(cfg))
    assert shape_of_dir(comp, "c", 100) == ModelShape("c", 100)
