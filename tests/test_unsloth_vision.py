"""Unsloth's vision-model engine (unsloth_zoo vllm_utils.py, ``is_vision_model``): one sequence where
Unsloth forces it, the prefill budget of one image, and the encoder's profile run in vLLM's peak."""

import pytest

import planner
from planner.memory.vllm import vision_profile_bytes
from planner.runtimes.unsloth import unsloth_estimate
from planner.specs.model import resolve_model
from planner.specs.units import GIB
from planner.specs.versions import unsloth_facts

VL = "Qwen/Qwen2.5-VL-7B-Instruct"
# Unsloth's Qwen2.5-VL (7B) vision GRPO notebook, from memory (not in the shared reports): 4-bit, fast_inference,
# max_seq_length 16384, gpu_memory_utilization 0.8, LoRA r 16; GRPOConfig batch 1, accumulation 2,
# 2 generations, prompt 1024, completion 1024.
NOTEBOOK = dict(max_seq_length=16384, load_in_4bit=True, gpu_memory_utilization=0.8, lora_rank=16,
                per_device_train_batch_size=1, gradient_accumulation_steps=2, num_generations=2,
                max_prompt_length=1024, max_completion_length=1024)


@pytest.mark.parametrize("release,rule", [("2025.8.1", "none"), ("2025.9.7", "one"), ("2025.12.1", "one"),
                                          ("2026.9.1", "one"), ("2026.10.9", "by_vllm")])
def test_vision_rule_by_release(release, rule):
    # first wheel with the branch: 2025.9.7 (:1511-1519); vision_max_num_seqs from 2026.10.9 (:2459)
    assert unsloth_facts(release).vision_rule == rule


@pytest.mark.parametrize("release", ["2025.9.7", "2025.12.1", "2026.10.9"])
def test_vision_engine_has_one_sequence_on_a_t4(release):
    e = unsloth_estimate(VL, "T4", unsloth_version=release, **NOTEBOOK)
    assert e.vllm_version == "0.9.2"
    assert e.max_num_seqs == 1
    # "max(8192, max_seq_length)"; 2026.10.9 then caps at seqs x max_seq_length (here the same)
    assert e.max_num_batched_tokens == 16384
    assert e.capacity.max_num_seqs == 1


def test_short_sequences_prefill_budget():
    old = unsloth_estimate(VL, "T4", unsloth_version="2025.12.1", max_seq_length=2048)
    new = unsloth_estimate(VL, "T4", unsloth_version="2026.10.9", max_seq_length=2048)
    assert (old.max_num_seqs, old.max_num_batched_tokens) == (1, 8192)
    assert (new.max_num_seqs, new.max_num_batched_tokens) == (1, 2048)  # reachable-token cap, :4854


def test_newer_vllm_keeps_the_table_with_an_encoder_budget():
    e = unsloth_estimate(VL, "L4", unsloth_version="2026.10.9", vllm_version="0.19.0", **NOTEBOOK)
    text_rule = unsloth_estimate(VL, "L4", unsloth_version="2025.8.1", vllm_version="0.19.0", **NOTEBOOK)
    assert e.max_num_seqs > 1  # from 0.12, V1 caps profiled images by the encoder budget
    assert e.max_num_batched_tokens == 16384
    assert text_rule.max_num_seqs != 1


def test_text_model_engine_unchanged_by_the_vision_rule():
    for release in ("2025.9.7", "2026.10.9"):
        e = unsloth_estimate("Qwen/Qwen2.5-7B-Instruct", "T4", unsloth_version=release, **NOTEBOOK)
        assert e.max_num_seqs > 1
        assert vision_profile_bytes(resolve_model("Qwen/Qwen2.5-7B-Instruct"), 4) == (0, 0)


def test_encoder_profile_in_the_activation_peak():
    spec = resolve_model(VL)
    peak, outputs = vision_profile_bytes(spec, 1)
    # 65536 patches x (2 B x (2 x 1280 + 3 x 3420) + 4 B x 1176 pixels); outputs 16384 x 3584 x 2 B
    assert peak == 65536 * (2 * (2560 + 10260) + 4 * 1176)
    assert outputs == 16384 * 3584 * 2
    assert vision_profile_bytes(spec, 2) == (2 * peak, 2 * outputs)
    e = unsloth_estimate(VL, "T4", **NOTEBOOK)
    assert e.capacity.activation_peak_bytes >= peak
    assert 1.5 * GIB < e.capacity.activation_peak_bytes < 3 * GIB


def test_notebook_plan_fits_with_one_sequence_per_wave():
    e = unsloth_estimate(VL, "T4", **NOTEBOOK)
    assert e.fits is True
    p = planner.plan(VL, "T4", runtime="unsloth", weights="nf4", max_seq_length=16384,
                     vllm_gpu_memory_utilization=0.8, lora_r=16, per_device_train_batch_size=1,
                     gradient_accumulation_steps=2, num_generations=2, max_prompt_length=1024,
                     max_completion_length=1024)
    assert p.option.concurrency == 1
    assert p.config["num_generations"] == 2
    assert p.option.peak_bytes <= p.gpu.total_bytes
