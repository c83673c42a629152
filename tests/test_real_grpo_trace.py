"""The planner against a real TRL GRPOTrainer run traced on the CPU (issue 15).

benchmarks/real_grpo_trace.py ran TRL 0.26.0's GRPOTrainer (transformers 4.57.1, the official
notebooks' stack) for two optimizer steps on shrunken Qwen2/Qwen3 models and on Qwen3-0.6B's config
at full size, and counted live tensor bytes per phase; benchmarks/results/real_grpo_trace.jsonl is that data. These tests fail if a
trainer term drifts away from what the real trainer holds.
"""

import pytest
from calibration_data import evaluate_real_grpo_trace, training_peak

RUNS = evaluate_real_grpo_trace()
MIB = 2**20


CASES = ["qwen2-lora32-bf16", "qwen3-full-fp32", "qwen3-wide-full-fp32", "qwen3-0.6b-full-fp32-noamp"]


def test_the_traced_runs_are_the_notebooks_stack():
    assert {r["case"] for r, *_ in RUNS} == set(CASES)
    for r, *_ in RUNS:
        assert (r["versions"]["trl"], r["versions"]["transformers"]) == ("0.26.0", "4.57.1")
        assert r["optim"].endswith("ADAMW_TORCH_FUSED")
        # bf16 autocast (GRPOConfig's default) but for the real-size run, whose bf16 matmuls this CPU cannot do
        assert r["mixed_precision"] == ("no" if r["case"].endswith("noamp") else "bf16")


@pytest.mark.parametrize("case", CASES)
def test_the_planner_covers_the_real_trainers_training_peak(case):
    row, _, predicted, _ = next(x for x in RUNS if x[0]["case"] == case)
    measured = training_peak(row)
    # never below by more than 1%; above by at most the optimizer's flat 8 MiB of bookkeeping (large on
    # these ~0.1 GiB runs) plus 2%
    assert measured * 0.99 <= predicted <= measured * 1.02 + 8 * MIB, (predicted / measured - 1)


def test_the_tied_heads_pending_gradient_is_counted():
    # full fine-tuning, tied embedding, accumulation 4: the peak is the end of a later micro-batch's
    # backward, where three fp32 V x h tensors besides Adam's are alive (the accumulated .grad, the
    # head's gradient waiting in autograd's input buffer, the embedding lookup's)
    row, comp, predicted, _ = next(x for x in RUNS if x[0]["case"] == "qwen3-full-fp32")
    vh = 151936 * 256 * 4
    at_peak = [t for t in row["largest_at_peak"] if t[1] == [151936, 256] and t[4] == "backward"]
    assert row["peak_phase"] == "backward" and len(at_peak) == 3
    assert comp["gradients"] >= 2 * vh  # the .grad and the pending one (the lookup's in the same moment)
    assert predicted >= training_peak(row)


@pytest.mark.parametrize("case", ["qwen3-full-fp32", "qwen3-wide-full-fp32"])
def test_the_forward_under_autocast_is_within_5_percent(case):
    row, _, _, forward = next(x for x in RUNS if x[0]["case"] == case)
    measured = row["phase_peaks"]["forward"]
    assert forward is not None and abs(forward / measured - 1) < 0.05
