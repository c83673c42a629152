"""--reserve GIB / reserve_gib=: memory kept free on every card lowers the budget by exactly its bytes,
and the plan and the estimate record it in their assumptions."""

from __future__ import annotations

import json

import pytest

import planner
from planner.cli import main
from planner.errors import InvalidSetupError
from planner.search.estimation import estimate
from planner.specs.gpu import margin_budget_bytes, resolve_gpu, with_reserve
from planner.specs.units import GIB

SMALL = "Qwen/Qwen2.5-0.5B-Instruct"


def test_reserve_lowers_the_budget_by_exactly_its_bytes():
    card = resolve_gpu("L4")
    kept = with_reserve("L4", 1.5)
    assert card.usable_bytes - kept.usable_bytes == int(1.5 * GIB)
    assert margin_budget_bytes(card, 0.04) - margin_budget_bytes(kept, 0.04) == int(1.5 * GIB)
    assert with_reserve("L4", 0) == "L4" and with_reserve("L4", None) == "L4"  # no reserve: as given


def test_plan_budget_and_assumptions():
    base = planner.plan(SMALL, "L4", margin=0.05)
    kept = planner.plan(SMALL, "L4", margin=0.05, reserve_gib=2)
    assert base.budget_bytes - kept.budget_bytes == 2 * GIB
    assert kept.assumptions["reserve"]["value"] == 2 and kept.assumptions["reserve"]["bytes"] == 2 * GIB
    assert "reserve" not in base.assumptions
    assert kept.peak_bytes <= kept.budget_bytes


def test_estimate_and_fixed_layout_take_the_reserve():
    e0 = estimate(SMALL, "L4")
    e = estimate(SMALL, "L4", reserve_gib=1)
    assert e0.gpu.usable_bytes - e.gpu.usable_bytes == GIB
    assert e.extra["assumptions"]["reserve"]["bytes"] == GIB
    p0 = planner.estimate_layout(SMALL, "L4", num_gpus=2)
    p = planner.estimate_layout(SMALL, "L4", num_gpus=2, reserve_gib=1)
    assert p0.budget_bytes - p.budget_bytes == GIB and p.assumptions["reserve"]["bytes"] == GIB


def test_cli_shows_the_reserve(capsys):
    assert main(["--model", SMALL, "--gpu", "L4", "--reserve", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "budget (card - margin - 1.5 GiB reserve)" in out and "--reserve 1.5" in out
    assert "reserve_gib=1.5" in out
    main(["estimate", "--model", SMALL, "--gpu", "L4", "--reserve", "1", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert d["gpu"]["reserve_bytes"] == GIB and d["assumptions"]["reserve"]["bytes"] == GIB


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), 100, True, "2"])
def test_bad_reserve_is_one_line(bad):
    with pytest.raises(InvalidSetupError) as e:
        planner.plan(SMALL, "L4", reserve_gib=bad)
    assert len(str(e.value).splitlines()) == 1 and "reserve" in str(e.value)
