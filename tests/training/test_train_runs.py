"""Training runs through Ray Train + DeepSpeed on CPU: every loss kind, ZeRO-2 and ZeRO-3,
batch-split invariance, resume, and the trained outputs loading where they are used.

One Ray instance serves the module; each run is a real TorchTrainer with DeepSpeed workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from raysys.config import from_dict
from raysys.data.synthetic import make_problems
from raysys.training.config import TrainConfig
from raysys.training.trainer import TrainResult, train

from conftest import (EASY, greedy_accuracy, greedy_texts, pair_rows, sft_rows, token_pair_rows,
                      write_jsonl)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _run(tmp: Path, model: Path, kind: str, data: Path, name: str, **kw: Any) -> TrainResult:
    cfg = from_dict(TrainConfig, {"kind": kind, "model": str(model), "data": str(data),
                                  "out": str(tmp / name), "name": name, "log_every": 1, **kw})
    return train(cfg, run_dir=tmp / "ray_train")


def _metrics(result: TrainResult) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (result.out / "metrics.jsonl").read_text().splitlines()]


def _pair_margin(model_dir: Path, rows: list[dict[str, str]]) -> float:
    """Mean summed log-prob of chosen minus rejected under a model (or adapter) dir."""
    from raysys.models.loading import load_model, load_tokenizer
    from raysys.training.collators import PairCollator, tokenize_pairs
    from raysys.training.losses import sequence_logps

    tok = load_tokenizer(str(model_dir), padding_side="right")
    model = load_model(str(model_dir), dtype="float32")
    examples, _ = tokenize_pairs(rows, tok, 256)
    batch = PairCollator(tok.pad_token_id)(examples)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, _ = sequence_logps(logits, batch["labels"])
    b = len(examples)
    return float((logp[:b] - logp[b:]).mean())


def test_sft_two_workers_zero2_learns_the_synthetic_task(ray_local, tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(1200, seed=1))
    held_out = make_problems(40, 99, **EASY)
    before = greedy_accuracy(tiny_model_dir, held_out)
    res = _run(tmp_path, tiny_model_dir, "sft", data, "sft", num_workers=2, zero_stage=2,
               micro_batch_size=16, max_steps=70, lr=3e-3, warmup_ratio=0.05,
               lora={"enabled": False})
    losses = [m["loss"] for m in _metrics(res)]
    assert res.completed and len(losses) == 70
    assert sum(losses[-5:]) / 5 < 0.25 * sum(losses[:5]) / 5
    after = greedy_accuracy(res.out, held_out)
    assert after >= before + 0.3, (before, after)
    assert (res.out / "model.safetensors").is_file() and (res.out / "tokenizer.json").is_file()


def test_dpo_lora_grows_the_margin_and_the_adapter_changes_greedy_output(
        ray_local, tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = pair_rows(64)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    res = _run(tmp_path, tiny_model_dir, "dpo", data, "dpo", micro_batch_size=8, max_steps=16,
               lr=1e-2, dpo_beta=0.1, lora={"r": 8, "alpha": 16})
    steps = _metrics(res)
    # The policy starts equal to the reference: zero margin, chance loss log 2.
    assert steps[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert steps[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    first = sum(m["reward_margin"] for m in steps[:4]) / 4
    last = sum(m["reward_margin"] for m in steps[-4:]) / 4
    assert last > first + 0.04 and steps[-1]["reward_accuracy"] >= 0.75, (first, last)
    assert steps[-1]["loss"] < steps[0]["loss"]
    # Reference log-probs were computed once, before training, and stored with the run.
    ref = json.loads((res.work_dir / "ref_logps.json").read_text())
    assert len(ref) == 64
    # Independently of the trainer's metrics: the adapter prefers chosen over rejected more.
    assert (res.out / "adapter_config.json").is_file()
    assert _pair_margin(res.out, rows) > _pair_margin(tiny_model_dir, rows) + 0.4
    prompts = [r["prompt"] for r in rows[:4]]
    assert greedy_texts(res.out, prompts, 8) != greedy_texts(tiny_model_dir, prompts, 8)


def test_orpo_two_workers_zero3_writes_a_merged_model(ray_local, tiny_model_dir: Path,
                                                      tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(32))
    res = _run(tmp_path, tiny_model_dir, "orpo", data, "orpo", num_workers=2, zero_stage=3,
               micro_batch_size=4, max_steps=8, lr=5e-3, orpo_lambda=0.5, merge_output=True,
               lora={"target_modules": ["q_proj", "v_proj"]})
    steps = _metrics(res)
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert not (res.out / "adapter_config.json").exists()
    base, merged = load_file(tiny_model_dir / "model.safetensors"), load_file(res.out / "model.safetensors")
    q = "model.layers.0.self_attn.q_proj.weight"
    # LoRA was merged into its targets and nothing else (gathered from ZeRO-3 shards).
    assert not torch.allclose(base[q], merged[q])
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.k_proj.weight"):
        assert torch.equal(base[name], merged[name])
    assert greedy_texts(res.out, ["Ava has 2 apples.\n"], 4)   # loads with load_model


def test_verifier_through_the_cli(ray_local, tiny_model_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raysys.cli import cli
    from raysys.models.loading import load_tokenizer
    from raysys.models.verifier import TokenVerifier, score_token_pairs
    from raysys.training.collators import TokenPairCollator, tokenize_token_pairs

    tok = load_tokenizer(str(tiny_model_dir), padding_side="right")
    rows = token_pair_rows(32, tok)
    data = write_jsonl(tmp_path / "tp.jsonl", rows)
    out = tmp_path / "verifier"
    r = CliRunner().invoke(cli, [
        "train", "--kind", "verifier", "--model", str(tiny_model_dir), "--data", str(data),
        "--out", str(out), "--workers", "1", "--zero", "2", "--lora-r", "0", "--lr", "3e-3",
        "--max-steps", "12", "--run-dir", str(tmp_path / "rt"), "--set", "micro_batch_size=8"])
    assert r.exit_code == 0, r.output
    assert f"done: {out.resolve()}\n" in r.output

    examples, _ = tokenize_token_pairs(rows, tok, 256)
    batch = TokenPairCollator(tok.pad_token_id)(examples)

    def gap(path: Path) -> float:
        model = TokenVerifier.from_pretrained(path).eval()
        with torch.no_grad():
            s_gt, s_neg, mask = score_token_pairs(model, batch["input_ids"], batch["attention_mask"],
                                                  batch["samples"], batch["sample_mask"])
        return float((s_gt - s_neg)[mask].mean())

    assert (out / "verifier_head.safetensors").is_file()
    assert gap(out) > gap(tiny_model_dir) + 0.5


# ------------------------------------------------------------------------------------------
# Invariance and resume (SFT, full fine-tuning, ZeRO-2)
# ------------------------------------------------------------------------------------------

SPLIT_RUN = {"max_steps": 4, "lr": 2e-3, "lora": {"enabled": False}, "zero_stage": 2}


@pytest.fixture(scope="module")
def split_runs(ray_local, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, Path, dict[str, TrainResult]]:
    tmp = tmp_path_factory.mktemp("split")
    data = write_jsonl(tmp / "sft.jsonl", sft_rows(40, seed=3))
    # The third split (grad-accum 2 x 4) is the resume test's run: one Ray Train run fewer.
    splits = {"2x4": {"num_workers": 2, "micro_batch_size": 4},
              "1x8": {"num_workers": 1, "micro_batch_size": 8}}
    return tmp, data, {k: _run(tmp, tiny_model_dir, "sft", data, k, **SPLIT_RUN, **v)
                       for k, v in splits.items()}


def _assert_same_trajectory(run: TrainResult, ref: TrainResult) -> None:
    got = [(m["loss"], m["grad_norm"]) for m in _metrics(run)]
    want = [(m["loss"], m["grad_norm"]) for m in _metrics(ref)]
    assert len(got) == len(want) == 4 and want[-1][0] < want[0][0]
    assert all(rgn is not None and rgn > 0 for _, rgn in want)    # ZeRO-2 reports a real norm
    for (loss, gn), (rloss, rgn) in zip(got, want):
        assert loss == pytest.approx(rloss, rel=1e-4)
        assert gn == pytest.approx(rgn, rel=1e-3)


def test_two_workers_x4_match_one_worker_x8(split_runs) -> None:
    _, _, runs = split_runs
    _assert_same_trajectory(runs["2x4"], runs["1x8"])


def test_accum_run_resumed_after_a_halt_matches_an_uninterrupted_1x8_run(
        split_runs, tiny_model_dir: Path) -> None:
    tmp, data, runs = split_runs
    cfg = {**SPLIT_RUN, "num_workers": 1, "micro_batch_size": 4, "grad_accum": 2,
           "checkpoint_every": 2, "stop_after_steps": 2}
    first = _run(tmp, tiny_model_dir, "sft", data, "resumed", **cfg)
    assert not first.completed and first.metrics["step"] == 2 and not first.out.exists()
    second = _run(tmp, tiny_model_dir, "sft", data, "resumed", **cfg)
    assert second.completed and second.metrics["step"] == 4
    assert [m["step"] for m in _metrics(second)] == [1, 2, 3, 4]
    # grad-accum 2 x 4 gives the 1 x 8 trajectory, across the halt and resume.
    _assert_same_trajectory(second, runs["1x8"])
    resumed = load_file(second.out / "model.safetensors")
    straight = load_file(runs["1x8"].out / "model.safetensors")
    init = load_file(tiny_model_dir / "model.safetensors")
    for name, w in straight.items():
        # Per tensor, not per element: Adam divides by sqrt(v), so an element whose gradients
        # are ~0 turns summation-order noise (2 x 4 vs 1 x 8) into a visible step (CI once saw
        # 3 of 65,536 elements off by 2.6e-5). A lost or repeated step moves whole tensors.
        moved = (w - init[name]).norm()
        assert (resumed[name] - w).norm() <= 1e-3 * moved + 1e-7, name


def test_keyed_order_trains_the_shared_examples_alike_when_rows_are_added(
        ray_local, tiny_model_dir: Path, tmp_path: Path) -> None:
    """``order: keyed`` (critique vs plain self-improvement): a data set with 8 rows added, none
    among the first two global batches' keys, trains exactly as the smaller set on those steps.
    A worker that ignored the order would shuffle the two sets differently."""
    from raysys.models.loading import load_tokenizer
    from raysys.training.data import tokenize_rows
    from raysys.training.schedule import example_key, keyed_order

    base = sft_rows(40, seed=3)
    tok = load_tokenizer(str(tiny_model_dir), padding_side="right")

    def keys(rows: list[dict[str, str]]) -> list[bytes]:
        examples, _ = tokenize_rows("sft", rows, tok, 1024, "truncate", "test")
        return [example_key(e) for e in examples]

    first = keyed_order(keys(base), 0, 0)[:16]          # steps 0 and 1 at 8 per step
    late = [r for r in sft_rows(60, seed=4)
            if keyed_order(keys(base + [r]), 0, 0).index(40) >= 16][:8]
    assert len(late) == 8
    grown = base[:10] + late[:4] + base[10:] + late[4:]
    to_base = {**{i: i for i in range(10)}, **{i + 4: i for i in range(10, 40)}}
    assert [to_base.get(i) for i in keyed_order(keys(grown), 0, 0)[:16]] == first
    cfg = {"max_steps": 2, "lr": 2e-3, "lora": {"enabled": False}, "zero_stage": 0,
           "micro_batch_size": 8, "order": "keyed"}
    a = _run(tmp_path, tiny_model_dir, "sft", write_jsonl(tmp_path / "a.jsonl", base), "a", **cfg)
    b = _run(tmp_path, tiny_model_dir, "sft", write_jsonl(tmp_path / "b.jsonl", grown), "b", **cfg)
    got, want = [m["loss"] for m in _metrics(b)], [m["loss"] for m in _metrics(a)]
    assert len(got) == len(want) == 2 and got[1] != got[0]
    assert got == pytest.approx(want, rel=1e-6)
