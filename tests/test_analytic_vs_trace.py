"""The analytic activation model against the CPU trace of the real model code, on architectures
the H100 measurements do not cover (benchmarks/trace_vs_analytic.py runs the full grid)."""

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")

from planner.memory.trainer import TrainerSetup, trainer_memory  # noqa: E402
from planner.profiler.trace import Shape, trace_steps  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402


@pytest.mark.parametrize("model,rank,checkpointing", [
    ("microsoft/Phi-4-mini-instruct", 16, True),   # fused qkv_proj / gate_up_proj
    ("google/gemma-2-2b-it", 16, False),           # eager attention: seq^2 scores in every layer
    ("Qwen/Qwen3-8B", 64, True),                   # another size and rank
])
def test_analytic_activation_peak_within_3_percent_of_the_trace(model, rank, checkpointing):
    spec = resolve_model(model)
    shape = Shape(2, 256, 768)
    traced = trace_steps(spec, (shape,), lora_rank=rank, gradient_checkpointing=checkpointing).steps[0]
    c = trainer_memory(spec, TrainerSetup(lora_rank=rank, batch_size=2, prompt_length=256, completion_length=768,
                                          gradient_checkpointing=checkpointing)).components
    analytic = c["activations"] + c["logprob_head"] + c["gradients"]
    assert abs(analytic - traced.activation_peak_bytes) / traced.activation_peak_bytes < 0.03
