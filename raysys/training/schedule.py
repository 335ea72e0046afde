"""Pure scheduling helpers: the learning-rate curve and which examples each worker sees.

The data plan is a function of (dataset size, seed, world size, micro-batch, grad-accum) only
(and, for the ``keyed`` order, of the examples' tokens), so a resumed run replays exactly the
batches an uninterrupted run would have seen, and the global batch of step ``s`` holds the same
examples however it is split across workers and accumulation steps (2 workers x 4 == 1 worker
x 8 == 2 accum x 4).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Sequence
from typing import Any


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


def example_key(example: dict[str, Any]) -> bytes:
    """A digest of an example's token fields (its list values, by field name): the same tokens
    give the same key in any data set. ``ValueError`` when it has no list field (every example
    would get one key, and the keyed order would be the file order)."""
    h = hashlib.blake2b(digest_size=16)
    fields = [name for name in sorted(example) if isinstance(example[name], list)]
    if not fields:
        raise ValueError(f"example_key: no token list among the fields {sorted(example)}")
    for name in fields:
        h.update(f"{name}={example[name]!r};".encode())
    return h.digest()


def keyed_order(keys: Sequence[bytes], seed: int, epoch: int) -> list[int]:
    """Example indices sorted by a seeded hash of each example's key and occurrence (the n-th
    copy of a key hashes with n, so identical examples land apart, as in a shuffle).

    Unlike :func:`epoch_order`, adding or dropping examples leaves the others in the same
    relative order within an epoch, so two data sets that share most examples see those in the
    same sequence: a paired comparison of data choices (critique-in-the-loop vs plain
    self-improvement) is then not also a comparison of two unrelated data orders. (An epoch's
    length depends on the data set's size, so the next epoch's order starts at different steps.)
    """
    return list(_keyed_order(tuple(keys), seed, epoch))


@functools.lru_cache(maxsize=2)
def _keyed_order(keys: tuple[bytes, ...], seed: int, epoch: int) -> tuple[int, ...]:
    # cached: a worker asks for the same epoch's order at every step
    salt = f"{seed}:{epoch}:".encode()
    seen: dict[bytes, int] = {}
    rank = []
    for k in keys:
        n = seen[k] = seen.get(k, -1) + 1
        rank.append(hashlib.blake2b(salt + k + n.to_bytes(4, "little"), digest_size=8).digest())
    return tuple(sorted(range(len(keys)), key=lambda i: (rank[i], i)))


def micro_batches(step: int, n_examples: int, seed: int, *, rank: int, world: int,
                  micro: int, accum: int, keys: Sequence[bytes] | None = None) -> list[list[int]]:
    """Example indices of worker ``rank``'s ``accum`` micro-batches for optimizer step ``step``.

    Steps past one epoch wrap into the next epoch's order (so ``max_steps`` may exceed an
    epoch): :func:`epoch_order`, or :func:`keyed_order` of ``keys`` (one per example) when
    given. Micro-batch ``(a, r)`` takes slot ``a * world + r`` of the global batch.
    """
    if keys is not None and len(keys) != n_examples:
        raise ValueError(f"{len(keys)} keys for {n_examples} examples")
    global_batch = world * micro * accum
    per_epoch = steps_per_epoch(n_examples, global_batch)
    if per_epoch < 1:
        raise ValueError(f"dataset of {n_examples} examples is smaller than one global batch "
                         f"({world} workers x {micro} micro-batch x {accum} accumulation)")
    epoch, in_epoch = divmod(step, per_epoch)
    order = epoch_order(n_examples, seed, epoch) if keys is None else keyed_order(keys, seed, epoch)
    batch = order[in_epoch * global_batch:(in_epoch + 1) * global_batch]
    out = []
    for a in range(accum):
        slot = a * world + rank
        out.append(batch[slot * micro:(slot + 1) * micro])
    return out
