"""The training-kind registry: a kind registered outside raysys validates, loads its rows and
trains end to end on Ray Train with its own loss and metrics; unknown kinds name the key."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from raysys.config import ConfigError, from_dict
from raysys.training import kinds
from raysys.training.config import TrainConfig
from raysys.training.kinds import KINDS, SFT, TrainingKind, get_kind, register_kind

from conftest import sft_rows, write_jsonl


def _mean_sft_loss(model: Any, batch: dict[str, Any], cfg: TrainConfig,
                   global_units: float) -> tuple[torch.Tensor, dict[str, float]]:
    """SFT as a per-micro-batch token mean (not normalised over the global batch)."""
    from raysys.training.losses import sft_loss

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    tokens = float((batch["labels"][:, 1:] != -100).sum())
    return sft_loss(logits, batch["labels"], reduction="sum") / max(tokens, 1.0), {"tokens": tokens}


MEAN_SFT = TrainingKind("mean_sft", "sft", SFT.tokenize, SFT.collate, SFT.count, _mean_sft_loss,
                        metrics=("tokens",))


@pytest.fixture()
def registered() -> Any:
    register_kind(MEAN_SFT)
    yield MEAN_SFT
    KINDS.pop("mean_sft", None)


def test_builtin_kinds_declare_their_tables() -> None:
    assert {k: KINDS[k].table_kind for k in ("sft", "dpo", "orpo", "verifier")} == {
        "sft": "sft", "dpo": "pairs", "orpo": "pairs", "verifier": "token_pairs"}
    assert KINDS["sft"].token_normalized and not KINDS["dpo"].token_normalized
    assert KINDS["dpo"].prepare is kinds.attach_reference
    assert KINDS["verifier"].load_model is not None


def test_unknown_kind_names_the_key_and_lists_the_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^train\.kind: unknown training kind 'ppo' \(known: dpo, orpo, sft, verifier\)"):
        from_dict(TrainConfig, {"kind": "ppo"}, "train")
    with pytest.raises(ConfigError):
        get_kind("mean_sft")


def test_registered_kind_reads_rows_of_its_table(registered: TrainingKind, tmp_path: Path,
                                                 tiny_model_dir: Path) -> None:
    from raysys.models.loading import load_tokenizer
    from raysys.training.data import load_rows, tokenize_rows

    data = write_jsonl(tmp_path / "d.jsonl", sft_rows(8))
    cfg = from_dict(TrainConfig, {"kind": "mean_sft", "model": str(tiny_model_dir),
                                  "data": str(data), "out": str(tmp_path / "o")})
    rows = load_rows(cfg.data, cfg.kind)
    examples, stats = tokenize_rows(cfg.kind, rows, load_tokenizer(str(tiny_model_dir)), 256,
                                    "truncate", data)
    assert len(examples) == 8 and stats["dropped"] == 0
    batch = registered.collate(examples[:2], 0)
    assert registered.count(batch) == float((batch["labels"][:, 1:] != -100).sum())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_registered_kind_trains_on_ray_train(registered: TrainingKind, tmp_path: Path,
                                             tiny_model_dir: Path) -> None:
    import ray
    from ray import cloudpickle

    from raysys.distributed.ray_init import dashboard_init_kwargs
    from raysys.training.trainer import train

    # The kind's functions live in this test module, which Ray workers cannot import.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             **dashboard_init_kwargs(False), log_to_driver=False)
    try:
        data = write_jsonl(tmp_path / "d.jsonl", sft_rows(64, seed=3))
        cfg = from_dict(TrainConfig, {"kind": "mean_sft", "model": str(tiny_model_dir),
                                      "data": str(data), "out": str(tmp_path / "out"),
                                      "name": "mean", "max_steps": 4, "micro_batch_size": 4,
                                      "zero_stage": 0, "lr": 1e-3, "log_every": 1,
                                      "lora": {"enabled": False}})
        result = train(cfg, run_dir=tmp_path / "rt")
    finally:
        ray.shutdown()
    assert result.completed and (result.out / "model.safetensors").is_file()
    lines = [json.loads(x) for x in (result.out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    # the kind's own stat is averaged per step; not token-normalised: no tokens/s column
    assert all(m["tokens"] > 0 and m["tokens_per_s"] is None for m in lines)


def test_verifier_head_gets_its_own_lr(tiny_model_dir: Path) -> None:
    from raysys.models.verifier import TokenVerifier

    model = TokenVerifier.from_pretrained(str(tiny_model_dir))
    cfg = from_dict(TrainConfig, {"kind": "verifier", "lr": 3e-4, "head_lr": 3e-3})
    body, head = KINDS["verifier"].param_groups(cfg, model)
    assert (body["lr"], head["lr"]) == (3e-4, 3e-3)
    assert [id(p) for p in head["params"]] == [id(model.head.weight)]
    assert len(body["params"]) + 1 == len([p for p in model.parameters() if p.requires_grad])
    same = from_dict(TrainConfig, {"kind": "verifier", "lr": 1e-4})
    assert [g["lr"] for g in KINDS["verifier"].param_groups(same, model)] == [1e-4, 1e-4]
    with pytest.raises(ConfigError, match=r"head_lr: expected > 0"):
        from_dict(TrainConfig, {"head_lr": 0})


def test_dpo_kind_adds_the_chosen_per_token_nll(tiny_model_dir: Path) -> None:
    """``dpo_nll_weight`` reaches the dpo kind's loss as alpha * mean(-log p(chosen) / tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import pair_rows

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    dpo = KINDS["dpo"]
    examples, _ = dpo.tokenize(pair_rows(3), tok, 256, "truncate")
    batch = dpo.collate(examples, tok.pad_token_id)
    batch["ref_chosen_logps"] = batch["ref_rejected_logps"] = torch.zeros(3)
    with torch.no_grad():
        pc, _, nc, _ = kinds.pair_logps(model, batch)
        plain, _ = dpo.loss(model, batch, from_dict(TrainConfig, {"kind": "dpo"}), 3.0)
        rpo, _ = dpo.loss(model, batch, from_dict(TrainConfig, {"kind": "dpo",
                                                                "dpo_nll_weight": 0.5}), 3.0)
    assert bool((nc > 1).all())
    torch.testing.assert_close(rpo - plain, 0.5 * (-pc / nc).mean())
    with pytest.raises(ConfigError, match=r"dpo_nll_weight: expected >= 0, got -0.1"):
        from_dict(TrainConfig, {"dpo_nll_weight": -0.1})
    for bad, msg in (("abc", "expected float, got 'abc'"), (float("nan"), "expected a finite float"),
                     ([1], "expected float, got \\[1\\]")):
        with pytest.raises(ConfigError, match=rf"^dpo_nll_weight: {msg}"):
            from_dict(TrainConfig, {"dpo_nll_weight": bad})
