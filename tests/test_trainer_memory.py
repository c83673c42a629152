"""Trainer-side memory terms against values derived by hand from their documented formulas."""

import pytest

from planner.errors import InvalidSetupError, VersionError
from planner.memory import activations as act
from planner.memory.allocator import expandable_segments_from_env
from planner.memory.lora import lora_params
from planner.memory.optimizer import optimizer_state_bytes_per_tensor
from planner.memory.trainer import TrainerSetup, trainer_memory
from planner.memory.weights import weights_bytes
from planner.specs.model import resolve_model

MIB = 1024**2


def test_bf16_weights_are_two_bytes_per_parameter():
    spec = resolve_model("Qwen/Qwen2.5-0.5B-Instruct")
    assert weights_bytes(spec, "bf16") == 2 * 494_032_768


def test_nf4_double_quant_llama_8b_matches_measurement():
    spec = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    linear = 32 * (4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14336)
    by_hand = linear * 0.5 + linear / 64 + linear / 64 / 256 * 4 + (8_030_261_248 - linear) * 2
    assert weights_bytes(spec, "nf4") == pytest.approx(by_hand, abs=1)
    # calibration row: weights_mib 5438.57 on the H100
    assert weights_bytes(spec, "nf4") / MIB == pytest.approx(5438.57, rel=0.001)


def test_nf4_without_double_quant_is_larger():
    spec = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    assert weights_bytes(spec, "nf4", double_quant=False) > weights_bytes(spec, "nf4")


def test_lora_parameters_match_peft_count():
    # docs/anchors.md: Llama-3.1-8B, r=16, all 7 projections -> 41,943,040 (= calibration n_trainable)
    assert lora_params(resolve_model("meta-llama/Llama-3.1-8B-Instruct"), 16) == 41_943_040
    assert lora_params(resolve_model("Qwen/Qwen2.5-0.5B-Instruct"), 16) == 8_798_208


def test_lora_rank_scales_linearly():
    spec = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    assert lora_params(spec, 64) == 4 * lora_params(spec, 16)


def test_8bit_adam_blockwise_and_small_tensor_fallback():
    # bitsandbytes Optimizer2State: >= 4096 elements -> 2 uint8 states + 2 fp32 absmax per 256
    assert optimizer_state_bytes_per_tensor(4096 * 4, "adamw_8bit") == 2 * 16384 + 8 * 64
    # below min_8bit_size: two fp32 states
    assert optimizer_state_bytes_per_tensor(4095, "adamw_8bit") == 8 * 4095
    assert optimizer_state_bytes_per_tensor(1000, "adamw_torch") == 8000


@pytest.mark.parametrize("dtype,param_bytes", [("float32", 4), ("bfloat16", 2)])
@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_torch_fused"])
def test_torch_adamw_state_takes_the_parameters_dtype(dtype, param_bytes, optim):
    # torch.optim.AdamW's _init_group: zeros_like(p) -> a bf16 model's states are bf16 (4 B per parameter)
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(4096, dtype=getattr(torch, dtype)))
    p.grad = torch.ones_like(p)
    opt = torch.optim.AdamW([p], fused=optim == "adamw_torch_fused")
    opt.step()
    state = opt.state[p]
    real = sum(state[k].numel() * state[k].element_size() for k in ("exp_avg", "exp_avg_sq"))
    assert optimizer_state_bytes_per_tensor(4096, optim, param_bytes) == real
    # bitsandbytes' 32-bit AdamW keeps fp32 states whatever the parameter
    assert optimizer_state_bytes_per_tensor(4096, "paged_adamw_32bit", param_bytes) == 8 * 4096


def test_checkpointed_activations_grow_linearly_with_tokens():
    spec = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    s1, t1 = act.activation_bytes(spec, 1, 256, 768)
    s4, t4 = act.activation_bytes(spec, 4, 256, 768)
    assert s4 == pytest.approx(4 * s1, rel=1e-6) and t4 == pytest.approx(4 * t1, rel=1e-6)
    # checkpoints: L x 2 bytes x h per token
    assert s1 == 1024 * 28 * 2 * 3584


def test_checkpointing_reduces_activations():
    spec = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    on = trainer_memory(spec, TrainerSetup(batch_size=4, completion_length=1024))
    off = trainer_memory(spec, TrainerSetup(batch_size=4, completion_length=1024, gradient_checkpointing=False))
    assert off.components["activations"] > 5 * on.components["activations"]


def test_plain_logits_head_costs_batch_completion_vocab():
    spec = resolve_model("Qwen/Qwen2.5-0.5B-Instruct")
    fused = trainer_memory(spec, TrainerSetup(batch_size=8, completion_length=1024, logprob_head="fused"))
    plain = trainer_memory(spec, TrainerSetup(batch_size=8, completion_length=1024, logprob_head="plain"))
    extra = plain.peak_bytes - fused.peak_bytes
    assert extra > 8 * 1025 * 151_936 * 8  # at least 8 bytes per logit on top


def test_expandable_segments_shrink_the_reserve_and_read_the_environment():
    spec = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    a = trainer_memory(spec, TrainerSetup(batch_size=8, completion_length=1792))
    b = trainer_memory(spec, TrainerSetup(batch_size=8, completion_length=1792, expandable_segments=True))
    assert b.components["allocator_reserve"] < a.components["allocator_reserve"] / 1.5
    assert expandable_segments_from_env({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})
    assert not expandable_segments_from_env({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"})


def test_components_sum_to_peak_and_steady_is_below():
    m = trainer_memory(resolve_model("Qwen/Qwen3-4B"), TrainerSetup(weights="nf4", batch_size=2))
    assert sum(m.components.values()) == m.peak_bytes
    assert m.steady_bytes < m.peak_bytes


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_size=0), r"^--batch-size must be a positive integer, got 0$"),
    (dict(completion_length=-5), r"^--completion-length must be a positive integer, got -5$"),
    (dict(prompt_length=-1), r"^--prompt-length must be a non-negative integer, got -1$"),
    (dict(weights="int3"), r"^--weights must be one of bf16, fp16, fp32, nf4, int8, got 'int3'$"),
    (dict(lora_rank=0), r"^--lora-rank must be a positive integer, got 0$"),
    (dict(finetune="full", weights="nf4"), r"^full fine-tuning of nf4 weights is not possible"),
])
def test_bad_setup_is_one_clear_line(kwargs, message):
    with pytest.raises(InvalidSetupError, match=message):
        TrainerSetup(**kwargs)


def test_rank_above_hidden_size():
    with pytest.raises(InvalidSetupError, match=r"^--lora-rank 1024 is larger than the hidden size \(896\)"):
        trainer_memory(resolve_model("Qwen/Qwen2.5-0.5B-Instruct"), TrainerSetup(lora_rank=1024))


def test_eager_attention_architectures_pay_for_seq_squared_scores():
    # transformers >= 5.21 has no SDPA path for Gemma 2: eager attention keeps batch x heads x seq^2 scores
    from dataclasses import replace

    gemma2 = replace(resolve_model("google/gemma-2-2b-it"), eager_attention=True)
    short = act.activation_bytes(gemma2, 1, 512, 512, gradient_checkpointing=False)
    long = act.activation_bytes(gemma2, 1, 1024, 1024, gradient_checkpointing=False)
    # per-token terms double with the length; the scores (8 heads, 26 layers, 8 B each) quadruple
    per_score_layer = gemma2.num_layers * act.EAGER_SAVED_BYTES_PER_SCORE * gemma2.num_attention_heads
    assert long[0] - 2 * short[0] == per_score_layer * (2048**2 - 2 * 1024**2)


def test_gemma2_attention_backend_follows_the_transformers_release():
    from planner.specs.versions import transformers_eager_attention

    assert not transformers_eager_attention("gemma2", "5.20.0")  # SDPA, soft-cap ignored
    assert transformers_eager_attention("gemma2", "5.21.0")
    assert not transformers_eager_attention("gemma3_text", "5.24.0")
    spec = resolve_model("google/gemma-2-2b-it")
    setup = dict(batch_size=3, prompt_length=1024, completion_length=3072, gradient_checkpointing=False,
                 completion_lengths="fixed")  # one step, as measured
    sdpa = trainer_memory(spec, TrainerSetup(**setup, transformers_version="5.17.0")).peak_bytes
    eager = trainer_memory(spec, TrainerSetup(**setup, transformers_version="5.24.0")).peak_bytes
    # measured with 5.17.0 on an H100 (benchmarks/results/h100_heldout): 69,127 MiB device-level peak
    assert abs(sdpa / 2**20 - 69127) / 69127 < 0.03
    assert eager > 2 * sdpa


def test_unknown_transformers_version_is_one_clear_error():
    line = r"^unknown transformers version 'five': expected a release number like 5\.17\.0$"
    with pytest.raises(VersionError, match=line):
        trainer_memory(resolve_model("google/gemma-2-2b-it"), TrainerSetup(transformers_version="five"))

def test_real_step_terms():
    from planner.memory.optimizer import optimizer_step_transient_bytes
    from planner.memory.rollout import rollout_buffer_bytes

    spec = resolve_model("Qwen/Qwen3-1.7B")
    base = dict(weights="fp32", finetune="full", gradient_accumulation_steps=4, batch_size=1,
                prompt_length=512, completion_length=64)
    foreach = trainer_memory(spec, TrainerSetup(optim="adamw_torch", **base))
    fused = trainer_memory(spec, TrainerSetup(optim="adamw_torch_fused", **base))
    # foreach AdamW's sqrt temporary: one fp32 copy of every trainable parameter
    assert foreach.components["optimizer_step"] - fused.components["optimizer_step"] == \
        optimizer_step_transient_bytes(foreach.trainable_params, "adamw_torch", 4) == foreach.trainable_params * 4
    # fused: the forward's autocast cache (bf16 copies, earlier gradients alive) is the peak moment
    assert fused.components["autocast_cache"] > 0 and foreach.components["autocast_cache"] == 0
    # today's default setups keep their numbers; clipping's 0-d norms stay below one small-pool segment
    from planner.memory.optimizer import clip_grad_norm_bytes

    d = trainer_memory(spec, TrainerSetup()).components
    assert d["autocast_cache"] == d["rollout_buffers"] == d["optimizer_step"] == 0
    assert clip_grad_norm_bytes(len(spec.linear_shapes()) * spec.num_layers * 3) < 2 * 2**20
    assert rollout_buffer_bytes(64, 1400, 8) == 64 * (16 * 1408 + 4 * 8 * 3 + 4)


def test_coverage_margin():
    from planner.search.margins import (
        FP32_AUTOCAST_MARGIN,
        OLD_TRL_MISS,
        UNMEASURED_OPTIMIZER_MARGIN,
        coverage_margin,
    )

    assert coverage_margin(TrainerSetup(), "1.16.0") == (0.0, ())
    m, reasons = coverage_margin(TrainerSetup(weights="fp32", finetune="full", optim="adamw_torch_fused",
                                              logprob_head="plain"), "0.26.0")
    # the old-TRL rule adds OLD_TRL_MISS and says so only when it is not 0 (tests/test_trl_notebooks.py)
    assert m == round(OLD_TRL_MISS + FP32_AUTOCAST_MARGIN + UNMEASURED_OPTIMIZER_MARGIN, 4) > 0.1
    assert len(reasons) == 2 + (OLD_TRL_MISS > 0)


# -- issue 23: the step as moments; the peak is the largest --------------------------------------

QWEN3 = "Qwen/Qwen3-1.7B"
FP32_FULL = dict(weights="fp32", finetune="full", batch_size=1, prompt_length=256, completion_length=512)


@pytest.mark.parametrize("kw", [dict(), dict(optim="adamw_torch"), dict(optim="adamw_torch_fused"),
                                dict(FP32_FULL, optim="adamw_torch"), dict(FP32_FULL, optim="adamw_torch_fused"),
                                dict(FP32_FULL, optim="adamw_torch_fused", gradient_accumulation_steps=4),
                                dict(logprob_head="plain", gradient_checkpointing=False),
                                dict(weights="nf4", optim="paged_adamw_8bit", expandable_segments=True)])
def test_the_peak_is_the_largest_moment(kw):
    from planner.memory.trainer import MOMENTS

    t = trainer_memory(resolve_model(QWEN3), TrainerSetup(**kw))
    assert tuple(t.moments) == MOMENTS
    assert t.peak_bytes == max(t.moments.values()) == t.moments[t.binding_moment]
    assert t.components == t.moment(t.binding_moment)  # the binding moment's contents
    d = t.to_dict()
    assert d["moments"] == t.moments and d["binding_moment"] == t.binding_moment


def test_each_moment_holds_what_is_alive_then():
    spec = resolve_model(QWEN3)
    t = trainer_memory(spec, TrainerSetup(**FP32_FULL, optim="adamw_torch"))
    step, backward, clip = (t.moment(m) for m in ("optimizer_step", "backward", "clip_grad"))
    # at the step the micro-batch's activations and the head are freed; every gradient (fp32) is alive
    assert step["activations"] == step["logprob_head"] == step["autocast_cache"] == 0
    assert step["gradients"] == clip["gradients"] == 4 * t.trainable_params
    assert backward["optimizer_step"] == 0 and backward["activations"] > 0
    # clipping's 0-d norms: one 512-byte block per gradient, their stack and the total; Qwen3-1.7B trains
    # 28 x (7 linear + 2 norms + q/k norms) + the embedding + the final norm = 310 tensors
    assert clip["clip_grad"] == (2 * 310 + 2) * 512
    # the resident terms are the same at every moment
    for name in ("non_torch", "weights", "optimizer_state", "cublas_workspace"):
        assert len({t.moment(m)[name] for m in t.moments}) == 1


def test_the_optimizer_step_no_longer_stacks_on_the_backward():
    # foreach AdamW on fp32 full fine-tuning of Qwen3-1.7B: one fp32 temporary per parameter,
    # 1,720,574,976 x 4 B = 6.41 GiB, no longer added to the backward's peak
    from planner.memory.optimizer import step_reserve_bound_bytes

    spec = resolve_model(QWEN3)
    foreach = trainer_memory(spec, TrainerSetup(**FP32_FULL, optim="adamw_torch"))
    fused = trainer_memory(spec, TrainerSetup(**FP32_FULL, optim="adamw_torch_fused"))
    assert foreach.trainable_params == 311_164_928 + 352_321_536 + 1_056_964_608 + 123_904 == 1_720_574_976
    temp = foreach.moment("optimizer_step")["optimizer_step"]
    assert temp == 1_720_574_976 * 4 and fused.moment("optimizer_step")["optimizer_step"] == 0
    # the step's moment: resident + every gradient + the temporaries + the allocator's segment rounding (a
    # bound: 2 MiB for each of the 28 x 7 matrices and the embedding, over 1 MiB in fp32, + 20 + 2 MiB)
    resident = sum(foreach.moment("optimizer_step")[k] for k in
                   ("non_torch", "cublas_workspace", "weights", "adapters", "optimizer_state", "rollout_buffers"))
    assert step_reserve_bound_bytes(28 * 7 + 1) == (2 * 197 + 22) * MIB
    assert foreach.moments["optimizer_step"] == resident + 2 * 1_720_574_976 * 4 + (2 * 197 + 22) * MIB
    # the other moments do not depend on the optimizer's implementation
    assert {m: v for m, v in foreach.moments.items() if m != "optimizer_step"} == \
        {m: v for m, v in fused.moments.items() if m != "optimizer_step"}
    # the peak is max(backward, step), not backward + step: 33.3 GiB, where the sum said 34.6
    assert foreach.binding_moment == "optimizer_step"
    assert foreach.peak_bytes == max(fused.peak_bytes, foreach.moments["optimizer_step"])
    assert foreach.peak_bytes < fused.moments["backward"] + temp


def test_step_temporaries_per_optimizer_implementation():
    from planner.memory.optimizer import OPTIMIZERS, optimizer_step_transient_bytes, step_implementation

    n, largest = 1_720_574_976, 151_936 * 2048  # Qwen3-1.7B's parameters; its (tied) embedding
    assert optimizer_step_transient_bytes(n, "adamw_torch", 4, largest) == n * 4  # foreach: every sqrt at once
    assert optimizer_step_transient_bytes(n, "adamw_torch", 2, largest) == n * 2  # bf16 parameters: bf16 states
    # for-loop: the sqrt and the quotient of one tensor at a time, the largest: 2 x 311 M x 4 B = 2.32 GiB
    assert optimizer_step_transient_bytes(n, "adamw_torch_forloop", 4, largest) == 2 * 311_164_928 * 4
    for optim in ("adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"):
        assert optimizer_step_transient_bytes(n, optim, 4, largest) == 0  # in place, in one kernel or per tensor
    assert {step_implementation(o) for o in OPTIMIZERS} == {"foreach", "fused", "bnb"}
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        step_implementation("sgd")


def test_the_binding_moment_is_named():
    spec = resolve_model(QWEN3)
    name = {kw: trainer_memory(spec, TrainerSetup(**dict(kw))).binding_moment for kw in (
        (("optim", "adamw_torch"), *FP32_FULL.items()),
        (("optim", "adamw_torch_fused"), ("gradient_accumulation_steps", 4), *FP32_FULL.items()),
        (("logprob_head", "plain"),),
        (("gradient_checkpointing", True),))}
    assert list(name.values()) == ["optimizer_step", "forward", "logprob_head", "backward"]


def test_calibrated_memory_replaces_the_backward_moments_only():
    from planner.search.estimation import calibrated_trainer_memory, resolve_calibration
    from planner.specs.gpu import resolve_gpu

    spec = resolve_model(QWEN3)
    cal = resolve_calibration(spec, resolve_gpu("H100-80GB"))
    assert cal is not None
    setup = TrainerSetup(batch_size=2, prompt_length=256, completion_length=1024)
    analytic = trainer_memory(spec, setup)
    t, label, _ = calibrated_trainer_memory(spec, setup, cal)
    assert label != "analytic"
    assert t.moment("backward") == t.moment("logprob_head") != analytic.moment("backward")
    assert t.moment("optimizer_step")["gradients"] == analytic.moment("optimizer_step")["gradients"]
    assert t.peak_bytes == max(t.moments.values()) and t.binding_moment == "backward"
