"""The CPU trace (planner/profiler/trace.py) on a tiny model: fast, no GPU, no network."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")

from tiny_models import TINY_LLAMA  # noqa: E402

from planner.errors import ConfigError, InvalidSetupError  # noqa: E402
from planner.profiler.trace import Shape, parse_shapes, trace_steps  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "config.json"
    path.write_text(json.dumps(TINY_LLAMA))
    return resolve_model(str(path))


@pytest.fixture(scope="module")
def lora_steps(tiny):
    result = trace_steps(tiny, [Shape(1, 64, 192), Shape(4, 64, 192)], gradient_checkpointing=(True, False))
    return {(s.shape.batch_size, s.gradient_checkpointing): s for s in result.steps}, result


def test_traced_activation_peak_is_positive(lora_steps):
    steps, _ = lora_steps
    assert all(s.activation_peak_bytes > 0 for s in steps.values())


def test_traced_peak_grows_with_batch(lora_steps):
    steps, _ = lora_steps
    for gc in (True, False):
        assert steps[4, gc].activation_peak_bytes > steps[1, gc].activation_peak_bytes


def test_checkpointing_traces_less_than_no_checkpointing(lora_steps):
    steps, _ = lora_steps
    assert steps[4, True].activation_peak_bytes < steps[4, False].activation_peak_bytes


def test_lora_gradients_are_the_fp32_adapters(tiny, lora_steps):
    # 7 projections per layer, r=16: r*(in+out) each, fp32 (PEFT autocast_adapter_dtype)
    steps, _ = lora_steps
    h, kv, inter, r = 64, 32, 128, 16
    per_layer = r * ((h + h) + (h + kv) * 2 + (h + h) + (h + inter) * 2 + (inter + h))
    adapters = 2 * per_layer * 4
    assert steps[1, True].gradients_bytes == pytest.approx(adapters, rel=0.05)


def test_notes_say_what_was_substituted(lora_steps):
    _, result = lora_steps
    text = " ".join(result.notes)
    assert "SDPA traced as the CUDA flash kernel" in text
    assert "TRL fused head traced on its CUDA path" in text


def test_nf4_is_traced_as_bf16_with_dequantisation_transients(tiny):
    result = trace_steps(tiny, [Shape(2, 64, 192)], weights="nf4")
    assert result.steps[0].activation_peak_bytes > 0
    assert any(n.startswith("nf4: bitsandbytes cannot run here") for n in result.notes)


def test_full_finetuning_and_plain_head_trace(tiny):
    full = trace_steps(tiny, [Shape(2, 64, 192)], finetune="full")
    plain = trace_steps(tiny, [Shape(2, 64, 192)], logprob_head="plain")
    assert full.steps[0].gradients_bytes > plain.steps[0].gradients_bytes > 0


def test_parse_shapes():
    assert parse_shapes("1:256:512, 4:256:1024") == (Shape(1, 256, 512), Shape(4, 256, 1024))
    with pytest.raises(InvalidSetupError, match="batch:prompt:completion triples"):
        parse_shapes("1x256x512")
    with pytest.raises(InvalidSetupError, match="must be positive"):
        parse_shapes("0:256:512")


def test_mixture_of_experts_is_refused():
    spec = resolve_model("Qwen/Qwen3-30B-A3B")
    with pytest.raises(ConfigError, match="mixture-of-experts model: its routing is data-dependent"):
        trace_steps(spec, [Shape(1, 16, 16)])


def test_full_finetuning_of_nf4_is_refused(tiny):
    with pytest.raises(InvalidSetupError, match="full fine-tuning of nf4 weights is not possible"):
        trace_steps(tiny, [Shape(1, 16, 16)], weights="nf4", finetune="full")


def test_trace_matches_a_measured_h100_step():
    """Golden row from data/calibration/h100-trl1.16-train.jsonl: Llama-3.2-1B-Instruct, bf16,
    LoRA r16, gradient checkpointing, batch 4 x (256 + 1024): peak_alloc_step_mib - before_mib
    = 3862.6 - 2489.7 = 1372.9 MiB. benchmarks/trace_vs_measured.py shows 1372.9 traced; the
    tolerance allows for allocator effects the trace does not model."""
    result = trace_steps(resolve_model("meta-llama/Llama-3.2-1B-Instruct"), [Shape(4, 256, 1024)])
    traced_mib = result.steps[0].activation_peak_bytes / 2**20
    assert traced_mib == pytest.approx(1372.9, rel=0.02)
