"""Unsloth's memory in use before vLLM (planner/runtimes/unsloth.py pre_vllm_used_bytes: the CUDA context, fixed +
bytes per resident thread) against each run's own figure (from its printed utilisation), held out by leaving one
run out, and vLLM's KV cache scored at those figures (benchmarks/unsloth_pre_vllm.py)."""

import pytest
import unsloth_pre_vllm as upv

from planner.memory import vllm as _vllm
from planner.runtimes.unsloth import (
    CUDA_CONTEXT_BYTES_PER_THREAD,
    CUDA_CONTEXT_FIXED_BYTES,
    PRE_VLLM_USED_BYTES,
    pre_vllm_used_bytes,
    vllm_engine,
)
from planner.specs.gpu import GpuSpec, resolve_gpu
from planner.specs.model import resolve_model
from planner.specs.units import GIB, MIB


@pytest.fixture(scope="module")
def runs():
    return upv.runs()


def test_shipped_constants_are_the_least_squares_fit_of_the_eight_runs(runs):
    assert len(runs) == 8
    a, b = upv.fit([(r["threads"], r["own_used"]) for r in runs])
    assert abs(a - CUDA_CONTEXT_FIXED_BYTES) < 0.1 * MIB and round(b) == CUDA_CONTEXT_BYTES_PER_THREAD


def test_held_out_context_within_32_mib_of_each_runs_own_figure(runs):
    # leave one run out: refitted on the other 7 runs, scored on the eighth
    assert max(abs(r["loo_used"] - r["own_used"]) for r in runs) < 32 * MIB
    # the model orders the cards by resident threads: T4 < L4 < RTX 4090 < A100
    t4, l4, rtx, a100 = (pre_vllm_used_bytes(resolve_gpu(n)) for n in ("T4", "L4", "RTX-4090", "A100-80GB"))
    assert t4 < l4 < rtx < a100


def test_independent_h100_bare_context_within_10_percent():
    measured, modelled = upv.h100_context()
    assert abs(modelled / measured - 1) < 0.10


def test_a_card_without_an_sm_count_keeps_the_old_figure():
    odd = GpuSpec(name="custom", total_bytes=16 * GIB, compute_capability="8.0")
    assert pre_vllm_used_bytes(odd) == PRE_VLLM_USED_BYTES


def test_kv_cache_within_10_percent_at_the_model_at_each_runs_own_and_held_out_figure(runs):
    kv = [r for r in runs if r["kv_reported"]]
    assert len(kv) == 4
    for key in ("kv_model", "kv_own", "kv_loo"):
        assert all(abs(r[key]) <= upv.KV_TARGET for r in kv), key


def test_vllm_085_inside_unsloth_is_v0_on_a_t4_and_with_bitsandbytes():
    t4, l4 = resolve_gpu("T4"), resolve_gpu("L4")
    assert vllm_engine("0.8.5.post1", t4, False) == "v0"
    assert vllm_engine("0.8.5.post1", l4, True) == "v0"
    assert vllm_engine("0.8.5.post1", l4, False) == "v1"
    assert vllm_engine("0.10.2", t4, False) == "v1"


def test_v0_profile_peak_is_the_sort_sampler_without_the_fixed_term():
    # record 5 (Qwen3-4B, T4, 160 sequences, 2048 batched tokens): 0.88 GiB printed
    spec = resolve_model("Qwen/Qwen3-4B")
    v0 = _vllm.activation_peak_bytes(spec, 2048, 160, "0.8.5", engine="v0")
    assert v0 == 160 * spec.vocab_size * 38 + 2048 * spec.hidden_size * 4
    assert abs(v0 / GIB - 0.88) < 0.005
    with pytest.raises(Exception, match="V0 engine is modelled for vLLM 0.8.5 only"):
        _vllm.vllm_capacity(spec, "T4", 0.7, max_model_len=2048, vllm_version="0.10.2", engine="v0")
