"""The LR curve and the data plan: pure functions, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from raysys.training.schedule import (epoch_order, example_key, keyed_order, lr_factor,
                                      micro_batches, total_steps)


def test_lr_warmup_then_cosine_hand_values() -> None:
    # 10 steps, warmup 0.2 -> 2 warmup steps (1/2, 2/2), then cosine over the remaining 8.
    assert lr_factor(0, 10, 0.2) == pytest.approx(0.5)
    assert lr_factor(1, 10, 0.2) == pytest.approx(1.0)
    assert lr_factor(2, 10, 0.2) == pytest.approx(1.0)              # cos(0)
    assert lr_factor(6, 10, 0.2) == pytest.approx(0.5)              # halfway: (1 + cos(pi/2)) / 2
    assert lr_factor(4, 10, 0.2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(10, 10, 0.2) == pytest.approx(0.0)


def test_lr_without_warmup_starts_at_peak() -> None:
    assert lr_factor(0, 4, 0.0) == pytest.approx(1.0)
    assert lr_factor(2, 4, 0.0) == pytest.approx(0.5)


def test_total_steps_drops_incomplete_global_batch() -> None:
    assert total_steps(20, 8, epochs=3, max_steps=None) == 6     # 2 full batches per epoch
    assert total_steps(20, 8, epochs=3, max_steps=5) == 5


def test_epoch_order_is_a_seeded_permutation() -> None:
    a, b = epoch_order(50, seed=1, epoch=0), epoch_order(50, seed=1, epoch=1)
    assert sorted(a) == list(range(50)) and a == epoch_order(50, seed=1, epoch=0)
    assert a != b and a != epoch_order(50, seed=2, epoch=0)


@pytest.mark.parametrize("world,micro,accum", [(2, 4, 1), (1, 8, 1), (1, 4, 2), (2, 2, 2)])
def test_global_batch_is_the_same_however_it_is_split(world: int, micro: int, accum: int) -> None:
    """2 workers x 4 == 1 x 8 == accum 2 x 4: same example set per optimizer step."""
    for step in range(7):   # 3 steps per epoch of 27 examples: crosses two epoch boundaries
        parts = [i for r in range(world)
                 for mb in micro_batches(step, 27, 3, rank=r, world=world, micro=micro, accum=accum)
                 for i in mb]
        ref = micro_batches(step, 27, 3, rank=0, world=1, micro=8, accum=1)[0]
        assert sorted(parts) == sorted(ref) and len(set(parts)) == 8


def test_micro_batches_rejects_dataset_smaller_than_a_global_batch() -> None:
    with pytest.raises(ValueError, match="smaller than one global batch"):
        micro_batches(0, 5, 0, rank=0, world=2, micro=4, accum=1)


def test_constant_schedule_holds_the_peak_after_warmup() -> None:
    assert [lr_factor(s, 10, 0.2, "constant") for s in (0, 1, 2, 9)] == \
        pytest.approx([0.5, 1.0, 1.0, 1.0])
    assert lr_factor(3, 4, 0.0, "constant") == 1.0
    with pytest.raises(ValueError, match="lr_schedule: expected one of"):
        lr_factor(0, 4, 0.0, "linear")


def test_example_key_reads_the_token_fields_only() -> None:
    a = {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}
    assert example_key(a) == example_key({"labels": [-100, 2, 3], "input_ids": [1, 2, 3]})
    assert example_key(a) == example_key({**a, "ref_logp": 0.5})     # a kind's extra scalar
    assert example_key(a) != example_key({"input_ids": [1, 2, 3], "labels": [-100, -100, 3]})
    # the field name is part of the key: the same list under another name is another example
    assert example_key({"input_ids": [1, 2]}) != example_key({"labels": [1, 2]})


def test_keyed_order_keeps_shared_examples_in_order_when_examples_are_added() -> None:
    base = [bytes([i]) for i in range(40)]
    extra = [bytes([100 + i]) for i in range(6)]
    grown = base[:10] + extra[:3] + base[10:30] + extra[3:] + base[30:]     # 46 examples
    for epoch in (0, 1):
        a, b = keyed_order(base, 7, epoch), keyed_order(grown, 7, epoch)
        assert sorted(a) == list(range(40)) and sorted(b) == list(range(46))
        assert [base[i] for i in a] == [grown[i] for i in b if grown[i] in base]
    # a seeded shuffle reorders everything when 6 examples are added
    assert epoch_order(40, 7, 0)[:10] != [i for i in epoch_order(46, 7, 0) if i < 40][:10]
    assert keyed_order(base, 7, 0) != keyed_order(base, 7, 1)
    assert keyed_order(base, 7, 0) != keyed_order(base, 8, 0)


def test_keyed_order_places_copies_of_an_example_apart() -> None:
    """The n-th copy of a key hashes with n: copies land apart (a sort by key alone would put
    them side by side, in one micro-batch, every epoch), and a data set with one more copy keeps
    the others where they were."""
    keys = [bytes([i]) for i in range(30)] + [b"x"] * 4
    order = keyed_order(keys, 0, 0)
    where = sorted(order.index(i) for i in range(30, 34))
    assert where != list(range(where[0], where[0] + 4))          # not four in a row
    more = keys + [b"x"]                                          # a fifth copy, appended
    assert [i for i in keyed_order(more, 0, 0) if i < 34] == order
    assert keyed_order(keys, 0, 0) == keyed_order(list(keys), 0, 0)   # cached or not, the same


def test_example_key_refuses_an_example_without_a_token_list() -> None:
    with pytest.raises(ValueError, match=r"example_key: no token list among the fields \['ids'\]"):
        example_key({"ids": (1, 2, 3)})


def test_micro_batches_with_keys_follow_the_keyed_order() -> None:
    keys = [bytes([i]) for i in range(24)]
    order = keyed_order(keys, 3, 1)       # step 3 of 8-example batches: epoch 1, batch 0
    assert micro_batches(3, 24, 3, rank=0, world=1, micro=8, accum=1, keys=keys) == [order[:8]]
    assert micro_batches(3, 24, 3, rank=1, world=2, micro=4, accum=1, keys=keys) == [order[4:8]]
    with pytest.raises(ValueError, match="23 keys for 24 examples"):
        micro_batches(0, 24, 3, rank=0, world=1, micro=8, accum=1, keys=keys[:23])
