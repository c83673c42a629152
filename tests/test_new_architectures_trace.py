"""The planner's trainer-side terms on the new architectures against a live CPU trace of the real
transformers code (real tensors, shrunken configs: planner/profiler/shrink.py). One small step per
family; benchmarks/trace_new_architectures.py runs the grid."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")

from planner.memory.lora import adapter_bytes  # noqa: E402
from planner.memory.trainer import TrainerSetup, above_resident, trainer_memory  # noqa: E402
from planner.memory.weights import weights_bytes  # noqa: E402
from planner.profiler.shrink import shrunken_spec  # noqa: E402
from planner.profiler.trace import Shape, trace_steps  # noqa: E402

SHAPE = Shape(2, 64, 192)  # the benchmark's smallest shape; at 2x128 tokens DeepSeek's MoE constants put the peak +11% over
PEAK_UNDER, PEAK_OVER = -0.02, 0.10  # the step's activation peak (README: -1.0% to +7.4% on the grid)
LAYERS_UNDER, LAYERS_OVER = -0.05, 0.10  # the decoder layers' backward peak


@pytest.fixture(scope="module", params=[
    "Qwen/Qwen3-30B-A3B",                  # MoE, PEFT's ParamWrappers on the experts and router
    "deepseek-ai/DeepSeek-V2-Lite-Chat",   # MLA, fp32 router, dense first layer, shared experts
    "Qwen/Qwen3-Next-80B-A3B-Instruct",    # gated delta-net hybrid (torch path), gated attention
    "openai/gpt-oss-20b",                  # sliding window + sinks on eager attention, biased experts
    "Qwen/Qwen2.5-VL-7B-Instruct",         # vision tower resident, its linears wrapped by LoRA
])
def traced(request):
    spec = shrunken_spec(request.param)
    return spec, trace_steps(spec, (SHAPE,), gradient_checkpointing=True, device="cpu")


def test_weights_and_adapters_are_the_built_models_bytes(traced):
    spec, result = traced
    assert adapter_bytes(spec, 16) == result.parameter_bytes["adapters"]
    # DeepSeek-V2's router weight is fp32 in transformers (modeling_deepseek_v2.py:92): 2 B per
    # router parameter more than the planner's bf16 count, nothing else differs
    router = sum(s.weight_params for s in spec.linear_shapes() if s.group == "router") \
        if spec.model_type == "deepseek_v2" else 0
    assert weights_bytes(spec, "bf16") + 2 * router == result.parameter_bytes["weights"]


def test_activation_peak_agrees_with_the_trace(traced):
    spec, result = traced
    step = result.steps[0]
    t = trainer_memory(spec, TrainerSetup(batch_size=SHAPE.batch_size, prompt_length=SHAPE.prompt_length,
                                          completion_length=SHAPE.completion_length))
    layers = above_resident(t.moment("backward"))
    peak = max(layers, above_resident(t.moment("logprob_head")))  # the forward and backward's peak
    assert PEAK_UNDER < (peak - step.activation_peak_bytes) / step.activation_peak_bytes < PEAK_OVER
    assert LAYERS_UNDER < (layers - step.layers_peak_bytes) / step.layers_peak_bytes < LAYERS_OVER


def test_moe_refused_on_meta_and_lifted_on_real_tensors():
    from planner.errors import ConfigError

    spec = shrunken_spec("Qwen/Qwen3-30B-A3B")
    with pytest.raises(ConfigError, match="mixture-of-experts"):
        trace_steps(spec, (SHAPE,), device="meta")
