"""What a training stage lacks beside the live role groups (``roles.missing_resources``)."""

from __future__ import annotations

import pytest

from raysys.distributed.roles import _fmt, missing_resources


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
