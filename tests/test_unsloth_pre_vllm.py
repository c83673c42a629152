"""Unsloth's memory in use before vLLM (planner/runtimes/unsloth.py PRE_VLLM_USED_BYTES) against each run's own
figure (from its printed utilisation: the CUDA context of its card), and the vLLM KV cache scored at that figure
(benchmarks/unsloth_pre_vllm.py)."""

import pytest
import unsloth_pre_vllm as upv

from planner.runtimes.unsloth import PRE_VLLM_USED_BYTES
from planner.specs.units import MIB


@pytest.fixture(scope="module")
def runs():
    return upv.runs()


def test_each_runs_own_figure_is_its_cards_cuda_context(runs):
    by_card: dict[str, list[float]] = {}
    for r in runs:
        by_card.setdefault(r["card"], []).append(r["own_used"] / MIB)
    assert len(runs) == 8
    # the context grows with the card: T4 < L4 < RTX 4090 < A100
    assert max(by_card["T4"]) < min(by_card["L4"]) < min(by_card["RTX-4090"]) < min(by_card["A100-80GB"])
    # the shipped figure, read off these runs, is ~110 MiB too high for every T4 run
    assert all(100 <= m <= 150 for m in by_card["T4"]) and PRE_VLLM_USED_BYTES / MIB - max(by_card["T4"]) > 100


def test_the_shipped_figure_keeps_the_kv_cache_inside_the_target(runs):
    # a fit-set figure: these KV errors are scored with a constant read off the same runs
    assert all(abs(r["kv_shipped"]) <= upv.KV_TARGET for r in runs if r["kv_reported"])


@pytest.mark.xfail(strict=True, reason="miss: at each T4 run's own pre-vLLM usage (142-143 MiB) vLLM's KV cache is "
                   "over-predicted by +14.7% (Qwen3-4B) and +11.5% (Llama-3.2-3B); 256 MiB hides it")
def test_kv_cache_within_10_percent_at_each_runs_own_pre_vllm_usage(runs):
    assert all(abs(r["kv_own"]) <= upv.KV_TARGET for r in runs if r["kv_reported"])


def test_leave_one_run_out_gives_the_same_t4_miss(runs):
    t4 = [r for r in runs if r["kv_reported"] and r["card"] == "T4"]
    assert len(t4) == 2 and all(r["kv_loo"] > upv.KV_TARGET for r in t4)
    assert all(abs(r["kv_loo"]) <= upv.KV_TARGET for r in runs if r["kv_reported"] and r["card"] != "T4")
