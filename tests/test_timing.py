"""planner.timing: each phase's physics, and the step as their sum."""

import pytest

from planner.timing import phases as ph
from planner.timing.efficiency import Efficiency
from planner.timing.step import StepShape, step_time

EFF = Efficiency(mfu=0.5, bandwidth_efficiency=0.5)
T4ISH = dict(peak_flops_per_s=65e12, bandwidth_bytes_per_s=320e9, host_link_bytes_per_s=16e9)


def shape(**kw):
    base = dict(matmul_params=3e9, num_layers=36, q_dim=2048, quantised_weights=0.0, decode_weight_read_bytes=6e9,
                kv_bytes_per_token=36_864, prompt_tokens=256, completion_tokens=512, generation_rounds=1,
                sequences_per_round=8, concurrency=64, trained_sequences=8, micro_batch=8, trainable_params=3e7,
                completions_per_step=8, **T4ISH)
    base.update(kw)
    return StepShape(**base)


def test_decode_reads_the_weights_once_per_token():
    one = ph.decode_wave_seconds(1, 100, 0, 1e9, 0, 0, 1e9, 1e12, 1.0, 1.0)
    assert one == pytest.approx(100.0)  # 100 token steps x 1 GB at 1 GB/s
    # a larger batch shares the weight read: 8 sequences barely cost more than one while bandwidth-bound
    assert ph.decode_wave_seconds(8, 100, 0, 1e9, 0, 0, 1e9, 1e12, 1.0, 1.0) == pytest.approx(one)
    # the KV cache read grows with the batch and the context
    assert ph.decode_wave_seconds(8, 100, 256, 1e9, 1e5, 0, 1e9, 1e12, 1.0, 1.0) > one


def test_waves_split_the_sequences_at_the_concurrency():
    assert ph.wave_sizes(20, 8) == [8, 8, 4]
    assert ph.wave_sizes(6, 64) == [6]
    assert ph.wave_sizes(0, 8) == []
    few = step_time(shape(concurrency=64), EFF).phases["generation"]
    many = step_time(shape(concurrency=2), EFF).phases["generation"]
    assert many > 3.5 * few  # four waves of 2 instead of one of 8


def test_training_flops_follow_the_6n_rule():
    assert ph.training_flops(1, 2.0, full_finetune=True, recompute=False, extra_forwards=0) == 6.0
    assert ph.training_flops(1, 2.0, full_finetune=False, recompute=False, extra_forwards=0) == 4.0
    assert ph.training_flops(1, 2.0, full_finetune=False, recompute=True, extra_forwards=1) == 8.0


def test_checkpointing_eager_sleep_and_4bit_cost_time():
    base = step_time(shape(), EFF)
    assert step_time(shape(recompute=False), EFF).phases["training"] < base.phases["training"]
    assert step_time(shape(cuda_graphs=False), EFF).phases["generation"] > base.phases["generation"]
    slept = step_time(shape(sleep=True, vllm_weight_bytes=6e9), EFF)
    assert slept.phases["sleep_wake"] == pytest.approx(2 * 6e9 / 16e9)
    assert step_time(shape(quantised_weights=3e9), EFF).phases["training"] > base.phases["training"]
    assert base.step_seconds == pytest.approx(sum(base.phases.values()))
    assert base.completions_per_hour == pytest.approx(8 * 3600 / base.step_seconds)


def test_ring_collectives():
    assert ph.ring_allreduce_seconds(1e9, 1, 1e9) == 0.0
    assert ph.ring_allreduce_seconds(1e9, 4, 1e9) == pytest.approx(1.5)
    assert ph.ring_allgather_seconds(1e9, 4, 1e9) == pytest.approx(0.75)
    ddp = ph.engine_comm_seconds("ddp", 4, 1e9, 1e9, 2, 1e9)
    assert ph.engine_comm_seconds("zero3", 4, 1e9, 1e9, 2, 1e9) == pytest.approx(ddp + 4 * 0.75)


def test_reward_time_is_per_completion():
    assert step_time(shape(reward_seconds_per_completion=0.5), EFF).phases["reward"] == pytest.approx(4.0)
    d = step_time(shape(), EFF).to_dict()
    assert set(d["phases"]) >= {"generation", "training", "optimizer", "communication"} and d["step_seconds"] > 0


def test_shipped_constants_on_the_unsloth_runs():
    """The shipped efficiencies predict each of the 8 Unsloth runs' seconds per step within 2x with the
    fitted lengths (the fit-set error; benchmarks/step_time.py reports the leave-one-out accuracy)."""
    import step_time as st  # benchmarks/ is on sys.path (tests/conftest.py)

    from planner.timing.efficiency import FITTED

    runs = st.load_runs()
    assert len(runs) == 8
    text = (st.ROOT / "benchmarks" / "results" / "step_time.txt").read_text()
    lengths = tuple(float(x) for x in
                    __import__("re").search(r"completion (\d+) tokens \(GSM8K-style\), (\d+)", text).groups())
    factors = [max(p / r.measured_seconds, r.measured_seconds / p)
               for r in runs for p in [st.predict(r, FITTED, lengths)]]
    assert max(factors) < 2.0 and sorted(factors)[3] < 1.35
    assert "held-out (leave-one-out): median 1.25, worst 1.74" in text


def test_transformers_generate_is_one_batch_bounded_by_the_host():
    # a small batch of a small model: the host's launches (per layer and per step) bound the wave
    host = 100 * (36 * ph.GENERATE_SECONDS_PER_LAYER + ph.GENERATE_SECONDS_PER_STEP)
    assert ph.generate_wave_seconds(1, 100, 0, 1e6, 0, 0, 1e12, 1e15, 1.0, 1.0, 36) == pytest.approx(host)
    # a large one: the weights and the cache read per token step (the roofline), no engine cost per step
    gpu = ph.decode_wave_seconds(512, 100, 256, 6e9, 36_864, 0, 320e9, 65e12, 0.5, 0.5)
    assert ph.generate_wave_seconds(512, 100, 256, 6e9, 36_864, 0, 320e9, 65e12, 0.5, 0.5, 36) == pytest.approx(gpu)
    # the whole generation batch at once: the engine's concurrency plays no part, eager adds nothing more
    hf = dict(generator="transformers", sequences_per_round=64)
    one = step_time(shape(concurrency=64, **hf), EFF).phases["generation"]
    assert step_time(shape(concurrency=2, **hf), EFF).phases["generation"] == pytest.approx(one)
    assert step_time(shape(concurrency=2, cuda_graphs=False, **hf), EFF).phases["generation"] == pytest.approx(one)


def test_a_liger_head_replaces_the_heads_share_of_the_6n_rule():
    per = 2.0 * 1000 * 5e8  # 2 x completion tokens x h x V
    assert ph.head_flops("liger-seq", 1000, 5e8, trainable=False) == (3 * per, 0.0)  # 6 x T x h x V, no more
    assert ph.head_flops("liger", 1000, 5e8, trainable=False) == (2 * per, per)  # forward + recompute; fp32 grad
    assert ph.head_flops("chunked", 1000, 5e8, trainable=True) == (2 * per, 2 * per)  # and the weight's gradient
    assert ph.head_flops("fused", 1000, 5e8, trainable=True) == (0.0, 0.0)  # the 6N rule counts it
    # full fine-tuning, no prompt, no recompute: liger-seq's 6 T h V is exactly the rule's share (no change)
    kw = dict(prompt_tokens=0, recompute=False, full_finetune=True, head_params=5e8)
    base = step_time(shape(**kw), EFF).phases["training"]
    assert step_time(shape(logprob_head="liger-seq", **kw), EFF).phases["training"] == pytest.approx(base)
    # the liger / chunked heads' fp32 gradient matmuls run at the fp32 peak: slower than the rule's share
    slow = step_time(shape(logprob_head="liger", fp32_peak_flops_per_s=8e12, **kw), EFF).phases["training"]
    assert slow > base
    # over the completion tokens only: with a prompt the rule counted the head over more tokens than Liger runs
    lora = dict(head_params=5e8, prompt_tokens=2048, recompute=True)
    assert step_time(shape(logprob_head="liger-seq", **lora), EFF).phases["training"] < \
        step_time(shape(**lora), EFF).phases["training"]
