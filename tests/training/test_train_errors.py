"""A training stage that ran out of memory ends in one line naming the keys that lower it."""

from __future__ import annotations

import torch
from ray.train.v2.api.exceptions import WorkerGroupError

from raysys.config import from_dict
from raysys.training.config import TrainConfig
from raysys.training.trainer import out_of_memory, out_of_memory_message


def _cfg() -> TrainConfig:
    return from_dict(TrainConfig, {"kind": "sft", "out": "o",
                                   "name": "sft", "micro_batch_size": 16, "max_len": 2048,
                                   "zero_stage": 1})   # no model or data: only the keys the message reads


def test_a_workers_cuda_oom_behind_the_group_error_is_found() -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
    try:
        try:
            raise oom
        except torch.OutOfMemoryError as e:
            raise RuntimeError("worker loop failed") from e
    except RuntimeError as wrapped:
        group = WorkerGroupError("Training failed due to worker errors", {0: wrapped})
    assert out_of_memory(group) is oom
    msg = out_of_memory_message(_cfg(), oom)
    assert msg == ("training 'sft' ran out of GPU memory (CUDA out of memory. Tried to allocate "
                   "2.00 GiB); lower micro_batch_size (16, raise grad_accum to keep the batch) or "
                   "max_len (2048), enable lora, or raise zero_stage (1)")
    assert "\n" not in msg


def test_host_memory_error_says_host_and_other_errors_are_not_memory() -> None:
    assert "out of host memory" in out_of_memory_message(_cfg(), MemoryError())
    group = WorkerGroupError("failed", {0: ValueError("shape mismatch"), 1: KeyError("x")})
    assert out_of_memory(group) is None
    assert out_of_memory(RuntimeError("no cause")) is None
    cyc = RuntimeError("a")
    cyc.__context__ = RuntimeError("b")
    cyc.__context__.__context__ = cyc                      # a cycle ends, it does not hang
    assert out_of_memory(cyc) is None
