"""The Unsloth search fills the card as the TRL search does: several groups per step when vLLM generates
them in one wave (planner.search.unsloth_solver._generation_batches)."""

import planner
from planner.search.unsloth_solver import _concurrency

LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"


def _plan(gpu="L4", **kw):
    return planner.plan(LLAMA8, gpu, runtime="unsloth", weights="nf4", lora_rank=32, max_seq_length=1024,
                        unsloth_version="2026.10.9", vllm_version="0.26.0", **kw)


def test_several_groups_in_one_wave():
    p = _plan()
    c, e = p.config, p.runtime_details.estimate
    gen = c["generation_batch_size"]
    assert gen == c["per_device_train_batch_size"] * c["gradient_accumulation_steps"]
    assert gen % c["num_generations"] == 0 and gen > c["num_generations"]  # more than one group per step
    assert gen <= _concurrency(e)  # all generated in one vLLM wave
    assert p.fits and p.peak_bytes <= p.budget_bytes


def test_max_completions_per_step_caps_it():
    p = _plan(max_completions_per_step=16)
    assert p.config["generation_batch_size"] <= 16
    assert p.config["generation_batch_size"] % p.config["num_generations"] == 0


def test_pinned_accumulation_is_kept():
    p = _plan(gradient_accumulation_steps=1)
    c = p.config
    assert c["gradient_accumulation_steps"] == 1
    assert c["generation_batch_size"] == c["per_device_train_batch_size"]
