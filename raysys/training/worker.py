"""The per-worker training loop run by Ray Train: DeepSpeed (ZeRO 0-3) + optional PEFT LoRA.

One loop serves every kind; only :func:`micro_loss` differs. Loss scaling is chosen so the
gradient of an optimizer step is independent of how its global batch is split: SFT divides the
summed token NLL by the token count of the whole global batch (all workers, all accumulation
steps); pair kinds average equal-sized micro-batch means. DeepSpeed averages gradients over
workers and divides by ``grad_accum``, so each micro loss is pre-multiplied by ``world * accum``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from raysys.training.config import TrainConfig
from raysys.training.schedule import lr_factor, micro_batches, total_steps

DS_TAG = "ds"
STATE_FILE = "trainer_state.json"


def deepspeed_config(cfg: TrainConfig, world: int) -> dict[str, Any]:
    """The DeepSpeed config dict for ``cfg`` on ``world`` workers."""
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.use_bf16},
        # A torch AdamW, not "Adam" in the config: that would JIT-compile FusedAdam (~90 s).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def ensure_compiler() -> None:
    """DeepSpeed on CPU JIT-compiles a C++ comm op: fail clearly when no compiler exists."""
    if shutil.which("c++") is None:
        raise RuntimeError("DeepSpeed on CPU JIT-compiles a C++ communication op, but no C++ "
                           "compiler ('c++') is on PATH; install one (e.g. apt-get install g++)")


# ------------------------------------------------------------------------------------------
# Batches and losses
# ------------------------------------------------------------------------------------------


def collate(kind: str, examples: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Collate tokenized examples of ``kind`` into a batch of tensors."""
    from raysys.training.collators import PairCollator, SFTCollator, TokenPairCollator

    if kind == "sft":
        return SFTCollator(pad_id)(examples)
    if kind in ("dpo", "orpo"):
        return PairCollator(pad_id)(examples)
    return TokenPairCollator(pad_id)(examples)


def count_tokens(kind: str, batch: dict[str, Any]) -> float:
    """Loss-bearing tokens of a batch (SFT normalisation); pair kinds count pairs."""
    if kind == "sft":
        labels = batch["labels"]
        return float((labels[:, 1:] != -100).sum())
    return float(batch["input_ids"].shape[0] // (2 if kind in ("dpo", "orpo") else 1))


def _pair_logps(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    from raysys.training.losses import sequence_logps

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, n = sequence_logps(logits, batch["labels"])
    b = logp.shape[0] // 2
    return logp[:b], logp[b:], n[:b], n[b:]


def micro_loss(kind: str, model: Any, batch: dict[str, Any], cfg: TrainConfig,
               global_tokens: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Return ``(loss as this micro-batch's share of the step loss, stats to average)``.

    SFT returns ``sum NLL / global_tokens``; pair kinds return the micro-batch mean. The caller
    multiplies by ``world * accum`` before DeepSpeed's backward.
    """
    from raysys.training import losses

    if kind == "sft":
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = losses.sft_loss(logits, batch["labels"], reduction="sum") / max(global_tokens, 1.0)
        return loss, {}
    if kind == "dpo":
        pc, pr, _, _ = _pair_logps(model, batch)
        loss, cr, rr = losses.dpo_loss(pc, pr, batch["ref_chosen_logps"], batch["ref_rejected_logps"],
                                       beta=cfg.dpo_beta, label_smoothing=cfg.dpo_label_smoothing)
        return loss.mean(), {"reward_accuracy": float((cr > rr).float().mean()),
                             "reward_margin": float((cr - rr).mean()),
                             "chosen_reward": float(cr.mean()), "rejected_reward": float(rr.mean())}
    if kind == "orpo":
        pc, pr, nc, nr = _pair_logps(model, batch)
        avg_c, avg_r = pc / nc.clamp(min=1), pr / nr.clamp(min=1)
        loss, log_odds = losses.orpo_loss(-avg_c, avg_c, avg_r, lam=cfg.orpo_lambda)
        return loss.mean(), {"log_odds": float(log_odds.mean()),
                             "reward_accuracy": float((log_odds > 0).float().mean())}
    from raysys.models.verifier import score_token_pairs

    s_gt, s_neg, mask = score_token_pairs(model, batch["input_ids"], batch["attention_mask"],
                                          batch["samples"], batch["sample_mask"])
    loss = losses.pairwise_token_loss(s_gt, s_neg, mask)
    m = mask.bool() if mask is not None else torch.ones_like(s_gt, dtype=torch.bool)
    acc = float(((s_gt > s_neg) & m).sum() / m.sum().clamp(min=1))
    return loss, {"pair_accuracy": acc}


@torch.no_grad()
def reference_logps(model: Any, examples: list[dict[str, Any]], indices: list[int], pad_id: int,
                    batch_size: int) -> dict[int, tuple[float, float]]:
    """Summed log-probs of chosen and rejected under the frozen reference model, per index."""
    from raysys.training.collators import PairCollator

    was_training = model.training
    model.eval()
    out: dict[int, tuple[float, float]] = {}
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        batch = PairCollator(pad_id)([examples[j] for j in idx])
        pc, pr, _, _ = _pair_logps(model, batch)
        for j, c, r in zip(idx, pc.tolist(), pr.tolist()):
            out[j] = (c, r)
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------


def _load_model(cfg: TrainConfig) -> Any:
    from raysys.training.model_setup import load_causal_lm

    if cfg.kind == "verifier":
        from raysys.models.verifier import TokenVerifier

        return TokenVerifier.from_pretrained(
            cfg.model, dtype=torch.bfloat16 if cfg.use_bf16 else torch.float32,
            trust_remote_code=cfg.trust_remote_code, seed=cfg.seed)
    return load_causal_lm(cfg.model, bf16=cfg.use_bf16, trust_remote_code=cfg.trust_remote_code)


def _with_lora(cfg: TrainConfig, model: Any) -> Any:
    """Apply LoRA when configured (to the verifier's backbone; its head stays fully trained)."""
    from raysys.training.model_setup import apply_lora

    if not cfg.lora.enabled:
        return model
    if cfg.kind == "verifier":
        model.backbone = apply_lora(model.backbone, cfg, causal_lm=False)
        return model
    return apply_lora(model, cfg)


def _attach_reference(cfg: TrainConfig, model: Any, examples: list[dict[str, Any]], pad_id: int,
                      rank: int, world: int, ref_path: Path) -> None:
    """Give each DPO example its reference log-probs, computed once and stored on disk."""
    import torch.distributed as dist

    if all("ref_chosen_logp" in e and "ref_rejected_logp" in e for e in examples):
        return   # the pairs already carry reference log-probs (meta)
    if ref_path.is_file():
        ref = {int(k): v for k, v in json.loads(ref_path.read_text()).items()}
    else:
        mine = reference_logps(model, examples, list(range(rank, len(examples), world)), pad_id,
                               cfg.micro_batch_size)
        gathered: list[Any] = [None] * world
        if world > 1:
            dist.all_gather_object(gathered, mine)
        else:
            gathered = [mine]
        ref = {k: v for part in gathered for k, v in part.items()}
        if rank == 0:
            from raysys.data.io import atomic_write_json

            atomic_write_json(ref_path, {str(k): v for k, v in sorted(ref.items())})
    for i, e in enumerate(examples):
        e["ref_chosen_logp"], e["ref_rejected_logp"] = ref[i]


def _all_reduce_sum(values: list[float]) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config`` holds ``cfg`` (a TrainConfig dict), ``examples`` (an
    ObjectRef of tokenized examples), ``work_dir`` (metrics, reference log-probs) and
    ``torch_extensions_dir``."""
    import deepspeed
    import ray
    import ray.train
    from raysys.config import from_dict
    from raysys.models.loading import load_tokenizer

    if not config["cfg"].get("use_gpu"):
        ensure_compiler()
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", config["torch_extensions_dir"])
    cfg = from_dict(TrainConfig, config["cfg"])
    work_dir = Path(config["work_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)

    ckpt = ray.train.get_checkpoint()
    state: dict[str, Any] = {"step": 0}
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = json.loads((Path(d) / STATE_FILE).read_text())
        if state.get("done"):
            return

    examples = ray.get(config["examples"])
    tokenizer = load_tokenizer(cfg.model, padding_side="right",
                               trust_remote_code=cfg.trust_remote_code)
    pad_id = tokenizer.pad_token_id
    model = _load_model(cfg)
    if cfg.kind == "dpo":
        # The reference is the starting model (with LoRA: the base, before the adapter exists).
        _attach_reference(cfg, model, examples, pad_id, rank, world, work_dir / "ref_logps.json")
    model = _with_lora(cfg, model)
    model.train()

    global_batch = world * cfg.micro_batch_size * cfg.grad_accum
    n_steps = total_steps(len(examples), global_batch, cfg.epochs, cfg.max_steps)
    if n_steps < 1 or len(examples) < global_batch:
        raise ValueError(f"{len(examples)} examples after tokenization: fewer than one global "
                         f"batch of {global_batch}")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, n_steps, cfg.warmup_ratio))
    deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler,
        config=deepspeed_config(cfg, world))
    device = engine.device
    if ckpt is not None:
        with ckpt.as_directory() as d:
            engine.load_checkpoint(d, tag=DS_TAG, load_module_strict=False)

    metrics_path = work_dir / "metrics.jsonl"
    if rank == 0:
        _truncate_metrics(metrics_path, state["step"])
    start_step = state["step"]
    last: dict[str, Any] = {}
    t_start = time.perf_counter()
    for step in range(start_step, n_steps):
        t0 = time.perf_counter()
        plan = micro_batches(step, len(examples), cfg.seed, rank=rank, world=world,
                             micro=cfg.micro_batch_size, accum=cfg.grad_accum)
        batches = [_to_device(collate(cfg.kind, [examples[i] for i in idx], pad_id), device)
                   for idx in plan]
        local_tokens = sum(count_tokens(cfg.kind, b) for b in batches)
        (global_tokens,) = _all_reduce_sum([local_tokens])
        loss_sum, stat_sums = 0.0, {}
        for batch in batches:
            loss, stats = micro_loss(cfg.kind, engine, batch, cfg, global_tokens)
            engine.backward(loss * (world * cfg.grad_accum))
            engine.step()
            loss_sum += float(loss.detach())
            for k, v in stats.items():
                stat_sums[k] = stat_sums.get(k, 0.0) + v
        keys = sorted(stat_sums)
        reduced = _all_reduce_sum([loss_sum] + [stat_sums[k] for k in keys])
        dt = time.perf_counter() - t0
        done = step + 1
        # SFT micro losses are already shares of the global mean; pair kinds are means to average.
        loss_val = reduced[0] if cfg.kind == "sft" else reduced[0] / (world * cfg.grad_accum)
        # DeepSpeed computes the norm only where it clips inside its optimizer wrapper (ZeRO 1-3,
        # fp16/bf16); elsewhere it returns None, reported as null rather than a fake 0.0.
        grad_norm = engine.get_global_grad_norm()
        last = {"step": done, "loss": loss_val, "lr": scheduler.get_last_lr()[0],
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "tokens_per_s": global_tokens / dt if cfg.kind == "sft" else None,
                "samples_per_s": global_batch / dt, "step_time_s": dt,
                # Wall time since (re)start, including reports and checkpoints of earlier steps.
                "elapsed_s": time.perf_counter() - t_start,
                **{k: v / (world * cfg.grad_accum) for k, v in zip(keys, reduced[1:])}}
        if rank == 0 and (done % cfg.log_every == 0 or done == n_steps):
            with metrics_path.open("a") as f:
                f.write(json.dumps(last) + "\n")
            # Ray Train routes worker logs to the driver's console and the dashboard (a print
            # would appear twice: Ray Train tees it to its logger and the wrapped stdout).
            logging.getLogger("raysys.training").info(progress_line(cfg.name, last, n_steps, start_step))
        # Absolute step: rerunning the same config resumes past it instead of halting again.
        halt = done == cfg.stop_after_steps and done < n_steps
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < n_steps) or halt:
            # Only checkpoints and the end are reported to Ray Train: each report waits for the
            # controller to poll the worker (~1 s measured), 15x a tiny model's step.
            _report_checkpoint(engine, last, {"step": done}, rank)
        if halt:
            return

    _save_output(cfg, engine, tokenizer, rank, metrics_path)
    _report_final(last, rank)


def progress_line(name: str, m: dict[str, Any], n_steps: int, start_step: int) -> str:
    """One human-readable progress line for step metrics ``m`` of an ``n_steps`` run that
    (re)started at ``start_step``; the ETA extrapolates this process's steps so far."""
    done = m["step"] - start_step
    eta = m["elapsed_s"] / done * (n_steps - m["step"]) if done > 0 else float("nan")
    return (f"[{name}] step {m['step']}/{n_steps} loss {m['loss']:.4f} lr {m['lr']:.2e} "
            f"{m['samples_per_s']:.1f} samples/s elapsed {m['elapsed_s']:.0f}s eta {eta:.0f}s")


def _to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines past the checkpoint so the file has one line per step."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    from raysys.data.io import atomic_write_text

    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _report_checkpoint(engine: Any, metrics: dict[str, Any], state: dict[str, Any], rank: int) -> None:
    import ray.train

    with tempfile.TemporaryDirectory(prefix="raysys-ckpt-") as d:
        # Every rank writes its own ZeRO shards; Ray Train merges the per-rank directories.
        engine.save_checkpoint(d, tag=DS_TAG)
        if rank == 0:
            (Path(d) / STATE_FILE).write_text(json.dumps(state))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _report_final(metrics: dict[str, Any], rank: int) -> None:
    """The last report carries a small 'done' checkpoint so Result.metrics is set and a rerun
    of a finished run does nothing."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="raysys-final-") as d:
        ckpt = None
        if rank == 0:
            (Path(d) / STATE_FILE).write_text(json.dumps({"step": metrics.get("step", 0), "done": True}))
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report({**metrics, "done": True}, checkpoint=ckpt)


def _save_output(cfg: TrainConfig, engine: Any, tokenizer: Any, rank: int, metrics_path: Path) -> None:
    """Rank 0 writes the trained model (gathered from ZeRO-3 shards when needed) atomically."""
    import torch.distributed as dist

    from raysys.training.model_setup import save_trained

    state_dict = None
    if cfg.zero_stage == 3:
        # Collective: every rank takes part; only rank 0 receives the full state dict.
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    if rank == 0:
        model = engine.module
        if state_dict is not None:
            # ZeRO-3 leaves only shards in engine.module: load the gathered weights into a copy.
            model = _with_lora(cfg, _load_model(cfg))
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
            if unexpected:
                raise RuntimeError(f"ZeRO-3 gathered weights do not fit the model: {unexpected[:3]}")
        model = model.to("cpu").float()
        merge = cfg.merge_output or not cfg.lora.enabled
        save_trained(model, tokenizer, cfg.out, merge=merge, extra_files=(metrics_path,))
    if dist.is_initialized():
        dist.barrier()
