"""What a training stage or role group lacks beside the live role groups: resources short in
all (``roles.missing_resources``), and whether its bundles fit on the nodes' free resources
as its placement strategy places them (``roles.bundles_fit``)."""

from __future__ import annotations

import pytest

from raysys.distributed.roles import _fmt, bundles_fit, missing_resources, total


@pytest.mark.parametrize(("need", "free", "short"), [
    ({"CPU": 2.0}, {"CPU": 6.0, "memory": 1e9}, {}),
    ({"CPU": 2.0}, {"CPU": 2.0}, {}),                                # exactly enough
    ({"CPU": 2.0}, {"CPU": 1.999999999999}, {}),                     # float dust from 0.1 steps
    ({"CPU": 2.0}, {"CPU": 0.5}, {"CPU": 1.5}),
    ({"CPU": 1.0, "GPU": 1.0}, {"CPU": 4.0}, {"GPU": 1.0}),          # a resource not there at all
    ({"CPU": 0.0, "GPU": 2.0}, {"GPU": 0.5}, {"GPU": 1.5}),          # a zero need is no need
    ({}, {}, {}),
])
def test_missing_resources(need: dict, free: dict, short: dict) -> None:
    assert missing_resources(need, free) == short


def test_fmt_names_amounts_and_only_the_keys_asked() -> None:
    assert _fmt({"GPU": 1.0, "CPU": 2.0}) == "2 CPU, 1 GPU"
    assert _fmt({"CPU": 8.0, "memory": 3e9, "node:1.2.3.4": 1.0}, keys={"CPU": 2.0}) == "8 CPU"
    assert _fmt({}, keys={"CPU": 1.0}) == "none"


C = [{"CPU": 1.0}, {"CPU": 2.0}]


@pytest.mark.parametrize(("bundles", "nodes", "strategy", "fits"), [
    ([{"CPU": 2.0}], [{"CPU": 2.0}], "PACK", True),
    ([{"CPU": 3.0}], [{"CPU": 2.0}, {"CPU": 2.0}], "PACK", False),       # 4 free, none holds 3
    ([{"CPU": 2.0}] * 2, [{"CPU": 2.0}, {"CPU": 2.0}], "PACK", True),     # one per node
    ([{"CPU": 2.0}] * 2, [{"CPU": 2.0}, {"CPU": 2.0}], "STRICT_PACK", False),
    ([{"CPU": 1.0}] * 2, [{"CPU": 4.0}], "STRICT_PACK", True),
    ([{"CPU": 1.0}] * 2, [{"CPU": 4.0}], "STRICT_SPREAD", False),         # needs two nodes
    ([{"CPU": 1.0}] * 2, [{"CPU": 1.0}, {"CPU": 1.0}], "STRICT_SPREAD", True),
    ([{"CPU": 1.0}] * 2, [{"CPU": 1.0}, {"CPU": 1.0}], "SPREAD", True),
    # largest first: in the given order 1, 1 would share node 0 and leave no node for a 2
    ([{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 2.0}, {"CPU": 2.0}], [{"CPU": 3.0}, {"CPU": 3.0}], "PACK", True),
    # GPU bundles first, on the node that has GPUs
    ([{"CPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}], [{"CPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}], "PACK", True),
    ([{"CPU": 4.0, "GPU": 1.0}], [{"CPU": 8.0}, {"GPU": 8.0, "CPU": 2.0}], "PACK", False),
    ([{"CPU": 0.0, "GPU": 1.0}], [{"GPU": 1.0}], "PACK", True),           # a zero need is no need
    ([], [], "PACK", True),
    ([{"CPU": 1.0}], [], "PACK", False),
])
def test_bundles_fit(bundles: list, nodes: list, strategy: str, fits: bool) -> None:
    before = [dict(n) for n in nodes]
    assert bundles_fit(bundles, nodes, strategy) is fits
    assert nodes == before                                       # the caller's view is untouched


def test_total_sums_bundles() -> None:
    assert total(C * 2) == {"CPU": 6.0}
    assert total([{"CPU": 1.0}, {"GPU": 0.5}]) == {"CPU": 1.0, "GPU": 0.5}
    assert total([]) == {}
