"""Unsloth fast_inference runtime: rules read from the unsloth / unsloth_zoo wheels (planner/specs/versions.py)."""

import pytest

from planner.errors import InvalidSetupError, VersionError
from planner.runtimes.unsloth import (
    adjusted_batch_size,
    requested_utilization,
    standby_target,
    unsloth_batch_limits,
    unsloth_estimate,
    vllm_lora_rank,
    vllm_utilization,
)
from planner.specs.model import resolve_model
from planner.specs.units import GIB
from planner.specs.versions import unsloth_facts

T4 = int(14.74 * GIB)
L4 = int(22.16 * GIB)
A100_40 = int(39.5 * GIB)
RTX4090 = int(23.63 * GIB)


def test_standby_tiers_by_release_and_vllm_range():
    # 2025.9.7: a flat 0.9 floor; 2025.10.8: 0.8
    assert standby_target(unsloth_facts("2025.9.7"), T4, "0.10.2") == 0.9
    assert standby_target(unsloth_facts("2025.10.8"), T4, "0.10.2") == 0.8
    # 2025.11.3: L4 (ten_percent 2.216 GiB) -> 0.875, no vLLM split (the shared L4 run printed 86.62%)
    assert standby_target(unsloth_facts("2025.11.3"), L4, "0.11.2") == 0.875
    # 2025.12.1: x0.95 with vLLM >= 0.11 only
    assert standby_target(unsloth_facts("2025.12.1"), L4, "0.11.2") == pytest.approx(0.875 * 0.95)
    assert standby_target(unsloth_facts("2025.12.1"), L4, "0.10.2") == 0.875
    # 2026.10.9: vLLM < 0.11 tiers (A100-40GB: ten_percent 3.95 -> 0.85) and >= 0.11 tiers (0.9 x 0.95)
    newest = unsloth_facts("2026.10.9")
    assert standby_target(newest, A100_40, "0.10.2") == 0.85
    assert standby_target(newest, A100_40, "0.11.0") == pytest.approx(0.9 * 0.95)
    assert standby_target(newest, L4, "0.12.0") == pytest.approx(0.825 * 0.95)  # lowered from 0.875 in 2026.5
    assert standby_target(unsloth_facts("2026.3.1"), L4, "0.12.0") == pytest.approx(0.875 * 0.95)
    assert standby_target(unsloth_facts("2025.6.8"), L4, "0.8.5") is None


def test_standby_raises_then_also_lowers_from_2026_3():
    # 0.95 requested on an RTX 4090: 2025.11.3 keeps it (raise only), 2026.3.1 lowers it to the tier
    assert requested_utilization(unsloth_facts("2025.11.3"), 0.95, True, RTX4090, "0.11.0")[0] == 0.95
    assert requested_utilization(unsloth_facts("2026.3.1"), 0.95, True, RTX4090, "0.11.0")[0] == \
        pytest.approx(0.875 * 0.95)
    assert requested_utilization(unsloth_facts("2025.11.3"), 0.5, False, RTX4090, "0.11.0")[0] == 0.5


def test_rank_rounding():
    assert vllm_lora_rank(unsloth_facts("2025.11.3"), 24) == 32
    assert vllm_lora_rank(unsloth_facts("2026.10.9"), 300) == 320
    assert vllm_lora_rank(unsloth_facts("2026.10.9"), 64) == 64
    assert vllm_lora_rank(unsloth_facts("2025.6.8"), 24) == 24  # no rounding before 2025.11.3
    with pytest.raises(InvalidSetupError):
        vllm_lora_rank(unsloth_facts("2026.10.9"), 1024)


def test_divisibility_rule():
    old, new = unsloth_facts("2025.9.7"), unsloth_facts("2026.10.9")
    assert adjusted_batch_size(old, 1, 1, 6) == 6
    assert adjusted_batch_size(old, 4, 2, 8) == 8   # 4 % 8 != 0
    assert adjusted_batch_size(new, 4, 2, 8) == 4   # 2 x 1 x 4 = 8 is a multiple of 8
    assert adjusted_batch_size(new, 3, 2, 8) == 8
    assert adjusted_batch_size(new, 2, 2, 8, world_size=2) == 2


def test_utilisation_shrink_and_activation_cap():
    facts = unsloth_facts("2025.5.7")
    spec = resolve_model("Qwen/Qwen3-4B")
    free = T4 - int(0.1 * GIB)
    u, _ = vllm_utilization(facts, 0.7, False, T4, free, spec, 2048, "0.8.5")
    assert u == pytest.approx(0.7 * free / T4)
    # asking for the whole card leaves Unsloth's activation estimate outside vLLM
    u, why = vllm_utilization(facts, 1.0, False, T4, T4, spec, 2048, "0.8.5")
    assert u < 1.0 and "capped" in why


def test_batch_tables():
    # 2025 table: seqs by Unsloth's KV estimate, chunked prefill = max_seq_length
    assert unsloth_batch_limits(unsloth_facts("2025.3.8"), 2.59 * GIB, 1024) == (160, 1024)
    assert unsloth_batch_limits(unsloth_facts("2025.3.8"), 45 * GIB, 512) == (226, 512)  # the source's 226
    # 2026 table: (6144, 64) at <= 16 GiB, capped at seqs x max_seq_length
    assert unsloth_batch_limits(unsloth_facts("2026.10.9"), 15 * GIB, 4096) == (64, 6144)
    assert unsloth_batch_limits(unsloth_facts("2026.10.9"), 1 * GIB, 256) == (8, 2048)


def test_worked_example_llama31_8b_t4():
    """shared/unsloth record 3: unsloth 2025.3.8, Llama-3.1-8B bnb-4bit, T4, request 0.6, rank 32,
    max_seq_length 1024: printed 59.43%, "KV Cache can use up to 2.59 GB", 160 sequences, 1024
    chunked-prefill tokens, batch 1 -> 6."""
    r = unsloth_estimate("meta-llama/Llama-3.1-8B-Instruct", "T4", load_in_4bit=True, gpu_memory_utilization=0.6,
                         max_seq_length=1024, lora_rank=32, per_device_train_batch_size=1,
                         gradient_accumulation_steps=1, num_generations=6, unsloth_version="2025.3.8",
                         vllm_version="0.7.3")
    assert abs(r.vllm_gpu_memory_utilization - 0.5943) <= 0.01
    assert r.unsloth_kv_estimate_bytes / GIB == pytest.approx(2.59, rel=0.05)
    assert (r.max_num_seqs, r.max_num_batched_tokens) == (160, 1024)
    assert r.per_device_train_batch_size == 6
    d = r.to_dict()
    assert d["runtime"] == "unsloth"
    assert d["from_pretrained"]["fast_inference"] is True
    assert d["from_pretrained"]["gpu_memory_utilization"] == 0.6
    assert d["vllm"]["gpu_memory_utilization"] == r.vllm_gpu_memory_utilization
    # vLLM 0.7.3 is not modelled by planner.memory.vllm yet: the Unsloth side only, said so
    assert r.capacity is None and "0.7.3" in d["vllm"]["not_modelled"] and d["fits"] is None


def test_modelled_vllm_shares_weights():
    r = unsloth_estimate("meta-llama/Llama-3.1-8B-Instruct", "T4", load_in_4bit=True, gpu_memory_utilization=0.6,
                         max_seq_length=1024, lora_rank=32, unsloth_version="2025.3.8", vllm_version="0.19.0")
    d = r.to_dict()
    assert d["vllm"]["kv_cache_bytes"] > 0 and d["vllm"]["weights_bytes"] > 0
    assert "weights" not in d["trainer"]["components"]  # the trainer uses vLLM's copy
    assert d["fits"] is True
    # the same setup with two copies of bf16 weights (no 4-bit) does not fit a T4
    big = unsloth_estimate("meta-llama/Llama-3.1-8B-Instruct", "T4", load_in_4bit=False,
                           gpu_memory_utilization=0.6, max_seq_length=1024, lora_rank=32,
                           unsloth_version="2025.3.8", vllm_version="0.19.0")
    assert big.fits is False


def test_unknown_unsloth_version():
    with pytest.raises(VersionError):
        unsloth_facts("2024.8.1")
