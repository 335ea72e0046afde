"""The per-worker training loop run by Ray Train (or in this process, ``training.in_process``):
DeepSpeed (ZeRO 0-3) + optional PEFT LoRA.

One loop serves every kind: what differs (tokenization, batches, loss, model hooks) is the
kind's :class:`~raysys.training.kinds.TrainingKind` entry. Loss scaling follows the registry's
contract (token-normalised kinds return shares of the global batch's sum; the others return
micro-batch means); DeepSpeed averages gradients over workers and divides by ``grad_accum``, so
each micro loss is pre-multiplied by ``world * accum``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from raysys.distributed.artifacts import (append_text, localize, push_dir, read_text, through_store,
                                          write_text)
from raysys.pipeline.live_metrics import run_name, training_step
from raysys.training.build_locks import clear_stale_build_locks
from raysys.training.config import TrainConfig
from raysys.training.kinds import TrainingKind, get_kind, load_model, register_kind, with_lora
from raysys.training.schedule import example_key, lr_factor, micro_batches, total_steps
from raysys.training.trackers import Trackers, open_trackers

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


def _all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over all workers (float64, in order)."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [float(v) for v in values]      # a world of 1: no tensor, no collective
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


@dataclass
class _Run:
    """What one worker's loop works with, set up once (and again after a restart)."""

    cfg: TrainConfig
    kind: TrainingKind
    engine: Any
    scheduler: Any
    tokenizer: Any
    examples: list[dict[str, Any]]
    pad_id: int
    rank: int
    world: int
    n_steps: int
    metrics_path: Path
    keys: list[bytes] | None      # per-example keys of the ``keyed`` data order, else None
    trackers: Trackers = field(default_factory=Trackers)   # rank 0's experiment trackers

    @property
    def global_batch(self) -> int:
        return self.world * self.cfg.micro_batch_size * self.cfg.grad_accum


class RayTrainSession:
    """What the loop needs from Ray Train: this worker's rank and world, the examples (an
    ObjectRef), the checkpoint Ray Train restored, and ``report`` (metrics + checkpoint dir)."""

    def __init__(self, examples_ref: Any) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self._examples_ref = examples_ref

    def examples(self) -> list[dict[str, Any]]:
        import ray

        return ray.get(self._examples_ref)

    @contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        """The restored checkpoint's directory (None on a fresh run)."""
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config`` holds ``cfg`` (a TrainConfig dict), ``kind`` (its
    :class:`TrainingKind`, shipped so kinds registered outside raysys work too), ``examples`` (an
    ObjectRef of tokenized examples), ``work_dir`` (metrics, reference log-probs) and
    ``torch_extensions_dir``."""
    run_worker(config, RayTrainSession(config["examples"]))


def run_worker(config: dict[str, Any], session: Any) -> None:
    """The training loop of one worker, whoever runs it: Ray Train (:class:`RayTrainSession`)
    or this process (``raysys.training.in_process``). ``session`` gives rank, world, examples,
    the restored checkpoint and ``report``; ``config`` as :func:`train_loop_per_worker`'s."""
    from raysys.config import from_dict

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", config["torch_extensions_dir"])
    if not config["cfg"].get("use_gpu"):
        ensure_compiler()
        # This node's cache may hold a lock a killed build left: DeepSpeed would wait forever.
        clear_stale_build_locks(os.environ["TORCH_EXTENSIONS_DIR"])
    if config.get("kind") is not None:
        register_kind(config["kind"])   # a kind registered outside raysys is known here too
    # This node's copy of the driver's model dir (fetched through Ray when the nodes share no
    # disk) before the config is checked again here; ``out`` stays the driver's path (reached by
    # push_dir in _save_output) and ``data`` is not read here (the examples come by ray.put).
    cfg = from_dict(TrainConfig, {**config["cfg"], "model": localize(config["cfg"]["model"]),
                                  "data": None})
    torch.manual_seed(cfg.seed)
    with session.checkpoint() as ckpt:
        state = _restored_state(ckpt)
        if state.get("done"):
            return
        run = _setup(cfg, config.get("kind") or get_kind(cfg.kind), config, ckpt, session)
    if run.rank == 0:
        _truncate_metrics(run.metrics_path, state["step"])
    start_step = state["step"]
    run.trackers = open_trackers(cfg, Path(config["work_dir"]), run.rank, start_step)
    last: dict[str, Any] = {}
    t_start = time.perf_counter()
    for step in range(start_step, run.n_steps):
        last = _train_step(run, step)
        done = step + 1
        # Wall time since (re)start, including reports and checkpoints of earlier steps.
        last["elapsed_s"] = time.perf_counter() - t_start
        if run.rank == 0 and (done % cfg.log_every == 0 or done == run.n_steps):
            _log_step(run, last, start_step)
        # Absolute step: rerunning the same config resumes past it instead of halting again.
        halt = done == cfg.stop_after_steps and done < run.n_steps
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < run.n_steps) or halt:
            # Only checkpoints and the end are reported to Ray Train: each report waits for the
            # controller to poll the worker (~1 s measured), 15x a tiny model's step.
            _report_checkpoint(session, run.engine, last, {"step": done}, run.rank)
        if halt:
            run.trackers.close()
            return
    run.trackers.close()
    _save_output(run)
    _report_final(session, last, run.rank)


def _restored_state(ckpt: Path | None) -> dict[str, Any]:
    """The trainer state of the restored checkpoint dir (``{"step": 0}`` on a fresh run)."""
    if ckpt is None:
        return {"step": 0}
    return json.loads((ckpt / STATE_FILE).read_text())


def _setup(cfg: TrainConfig, kind: TrainingKind, config: dict[str, Any], ckpt: Path | None,
           session: Any) -> _Run:
    """Model (with the kind's hooks), optimizer, schedule and DeepSpeed engine for this worker."""
    import deepspeed

    from raysys.models.loading import load_tokenizer

    rank, world = session.rank, session.world
    work_dir = Path(config["work_dir"])
    examples = session.examples()
    # keyed order: from the tokens as loaded, before a kind's prepare adds its own fields
    keys = [example_key(e) for e in examples] if cfg.order == "keyed" else None
    tokenizer = load_tokenizer(cfg.model, padding_side="right",
                               trust_remote_code=cfg.trust_remote_code)
    pad_id = tokenizer.pad_token_id
    model = load_model(kind, cfg)
    if kind.prepare is not None:
        kind.prepare(cfg, model, examples, pad_id, rank, world, work_dir)
    model = with_lora(kind, cfg, model)
    model.train()

    global_batch = world * cfg.micro_batch_size * cfg.grad_accum
    n_steps = total_steps(len(examples), global_batch, cfg.epochs, cfg.max_steps)
    if n_steps < 1 or len(examples) < global_batch:
        raise ValueError(f"{len(examples)} examples after tokenization: fewer than one global "
                         f"batch of {global_batch}")
    params = (kind.param_groups(cfg, model) if kind.param_groups is not None
              else [p for p in model.parameters() if p.requires_grad])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, n_steps, cfg.warmup_ratio, cfg.lr_schedule))
    deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler,
        config=deepspeed_config(cfg, world))
    if ckpt is not None:
        engine.load_checkpoint(str(ckpt), tag=DS_TAG, load_module_strict=False)
    return _Run(cfg, kind, engine, scheduler, tokenizer, examples, pad_id, rank, world, n_steps,
                work_dir / "metrics.jsonl", keys)


def _train_step(run: _Run, step: int) -> dict[str, Any]:
    """One optimizer step over this worker's micro-batches; returns the step's metrics."""
    cfg, kind, engine = run.cfg, run.kind, run.engine
    t0 = time.perf_counter()
    plan = micro_batches(step, len(run.examples), cfg.seed, rank=run.rank, world=run.world,
                         micro=cfg.micro_batch_size, accum=cfg.grad_accum, keys=run.keys)
    batches = [_to_device(kind.collate([run.examples[i] for i in idx], run.pad_id), engine.device)
               for idx in plan]
    (global_units,) = _all_reduce_sum([sum(kind.count(b) for b in batches)])
    # Micro losses are summed as a detached tensor and read once per step: a float() per
    # micro-batch would wait for the accelerator grad_accum times.
    loss_sum: Any = 0.0
    stat_sums: dict[str, float] = {}
    for batch in batches:
        loss, stats = kind.loss(engine, batch, cfg, global_units)
        engine.backward(loss * (run.world * cfg.grad_accum))
        engine.step()
        loss_sum = loss_sum + loss.detach().double()   # float64, as float() summed before
        for k, v in stats.items():
            stat_sums[k] = stat_sums.get(k, 0.0) + v
    keys = sorted(stat_sums)
    reduced = _all_reduce_sum([float(loss_sum)] + [stat_sums[k] for k in keys])
    dt = time.perf_counter() - t0
    parts = run.world * cfg.grad_accum
    # Token-normalised micro losses are already shares of the global mean; others are means.
    loss_val = reduced[0] if kind.token_normalized else reduced[0] / parts
    # DeepSpeed computes the norm only where it clips inside its optimizer wrapper (ZeRO 1-3,
    # fp16/bf16); elsewhere it returns None, reported as null rather than a fake 0.0.
    grad_norm = engine.get_global_grad_norm()
    return {"step": step + 1, "loss": loss_val, "lr": run.scheduler.get_last_lr()[0],
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "tokens_per_s": global_units / dt if kind.token_normalized else None,
            "samples_per_s": run.global_batch / dt, "step_time_s": dt,
            **{k: v / parts for k, v in zip(keys, reduced[1:])}}


def _log_step(run: _Run, metrics: dict[str, Any], start_step: int) -> None:
    """Rank 0: one metrics line, a progress line through logging (Ray Train routes worker
    logs to the driver's console and the dashboard; a print would appear twice), and the step's
    live metrics (Prometheus gauges tagged with the stage name and run)."""
    append_text(run.metrics_path, json.dumps(metrics) + "\n")    # on the driver's node
    run.trackers.log(metrics["step"], metrics)
    logging.getLogger("raysys.training").info(
        progress_line(run.cfg.name, metrics, run.n_steps, start_step))
    # The Ray dashboard / Prometheus view of the same step (cluster/grafana-raysys.json).
    training_step(run.cfg.name, metrics["step"], metrics["loss"], metrics["step_time_s"],
                  metrics.get("tokens_per_s"), total_steps=run.n_steps,
                  run=run_name(run.metrics_path.parent))


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
    text = read_text(path)                # the driver's copy (this node may have none)
    if text is None:
        return
    keep = [ln for ln in text.splitlines() if ln and json.loads(ln)["step"] <= step]
    write_text(path, "".join(ln + "\n" for ln in keep))


def _report_checkpoint(session: Any, engine: Any, metrics: dict[str, Any], state: dict[str, Any],
                       rank: int) -> None:
    with tempfile.TemporaryDirectory(prefix="raysys-ckpt-") as d:
        # Every rank writes its own ZeRO shards; Ray Train merges the per-rank directories.
        engine.save_checkpoint(d, tag=DS_TAG)
        if rank == 0:
            (Path(d) / STATE_FILE).write_text(json.dumps(state))
        session.report(metrics, Path(d))


def _report_final(session: Any, metrics: dict[str, Any], rank: int) -> None:
    """The last report carries a small 'done' checkpoint so Result.metrics is set and a rerun
    of a finished run does nothing."""
    with tempfile.TemporaryDirectory(prefix="raysys-final-") as d:
        ckpt = None
        if rank == 0:
            (Path(d) / STATE_FILE).write_text(json.dumps({"step": metrics.get("step", 0), "done": True}))
            ckpt = Path(d)
        session.report({**metrics, "done": True}, ckpt)


def _save_output(run: _Run) -> None:
    """Rank 0 writes the trained model (gathered from ZeRO-3 shards when needed) atomically."""
    import torch.distributed as dist

    from raysys.training.model_setup import save_trained

    cfg, kind, engine = run.cfg, run.kind, run.engine
    state_dict = None
    if cfg.zero_stage == 3:
        # Collective: every rank takes part; only rank 0 receives the full state dict.
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    if run.rank == 0:
        model = engine.module
        if state_dict is not None:
            # ZeRO-3 leaves only shards in engine.module: load the gathered weights into a copy.
            model = with_lora(kind, cfg, load_model(kind, cfg))
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
            if unexpected:
                raise RuntimeError(f"ZeRO-3 gathered weights do not fit the model: {unexpected[:3]}")
        model = model.to("cpu").float()
        merge = cfg.merge_output or not cfg.lora.enabled
        if not through_store():
            save_trained(model, run.tokenizer, cfg.out, merge=merge, extra_files=(run.metrics_path,))
        else:
            # Saved on this node, then sent whole to ``out`` on the driver's node: the driver
            # never sees a half-written model.
            with tempfile.TemporaryDirectory(prefix="raysys-out-") as d:
                metrics = Path(d) / run.metrics_path.name
                metrics.write_text(read_text(run.metrics_path) or "")
                local = save_trained(model, run.tokenizer, Path(d) / "out", merge=merge,
                                     extra_files=(metrics,))
                push_dir(local, cfg.out)
    if dist.is_initialized():
        dist.barrier()
