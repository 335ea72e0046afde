"""Pure scheduling helpers: the learning-rate curve and which examples each worker sees.

The data plan is a function of (dataset size, seed, world size, micro-batch, grad-accum) only,
so a resumed run replays exactly the batches an uninterrupted run would have seen, and the
global batch of step ``s`` holds the same examples however it is split across workers and
accumulation steps (2 workers x 4 == 1 worker x 8 == 2 accum x 4).
"""

from __future__ import annotations

import math
import random


LR_SCHEDULES = ("cosine", "constant")


def lr_factor(step: int, total_steps: int, warmup_ratio: float, schedule: str = "cosine") -> float:
    """Multiplier on the base LR at optimizer step ``step`` (0-based): linear warmup, then
    cosine to 0 (``cosine``) or the peak held to the end (``constant``, as transformers'
    ``constant_with_warmup``)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule: expected one of {LR_SCHEDULES}, got {schedule!r}")
    warmup = int(round(warmup_ratio * total_steps))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def steps_per_epoch(n_examples: int, global_batch: int) -> int:
    """Optimizer steps per epoch; the incomplete last global batch is dropped."""
    return n_examples // global_batch


def total_steps(n_examples: int, global_batch: int, epochs: int, max_steps: int | None) -> int:
    """Optimizer steps of the run: ``max_steps`` when set, else ``epochs`` full passes."""
    if max_steps is not None:
        return max_steps
    return epochs * steps_per_epoch(n_examples, global_batch)


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """A seeded permutation of the example indices for one epoch."""
    order = list(range(n_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def micro_batches(step: int, n_examples: int, seed: int, *, rank: int, world: int,
                  micro: int, accum: int) -> list[list[int]]:
    """Example indices of worker ``rank``'s ``accum`` micro-batches for optimizer step ``step``.

    Steps past one epoch wrap into the next epoch's permutation (so ``max_steps`` may exceed
    an epoch). Micro-batch ``(a, r)`` takes slot ``a * world + r`` of the global batch.
    """
    global_batch = world * micro * accum
    per_epoch = steps_per_epoch(n_examples, global_batch)
    if per_epoch < 1:
        raise ValueError(f"dataset of {n_examples} examples is smaller than one global batch "
                         f"({world} workers x {micro} micro-batch x {accum} accumulation)")
    epoch, in_epoch = divmod(step, per_epoch)
    order = epoch_order(n_examples, seed, epoch)
    batch = order[in_epoch * global_batch:(in_epoch + 1) * global_batch]
    out = []
    for a in range(accum):
        slot = a * world + rank
        out.append(batch[slot * micro:(slot + 1) * micro])
    return out
