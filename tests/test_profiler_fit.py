"""Fitting (planner/memory/fit.py) on recorded H100 measurements.

The rows below are copied, field subset only, from data/calibration/h100-trl1.16-train.jsonl
(H100 80GB HBM3, torch 2.11, transformers 5.17, TRL 1.16, bitsandbytes 0.50.2): every LoRA step
of Qwen2.5-0.5B-Instruct (bf16) and Llama-3.1-8B-Instruct (NF4), OOM rows included.
"""

import json

import pytest

from planner.memory.fit import LinearFit, ModelFit, fit_family, fit_line, fit_rows, least_squares, row_tokens, steady_rows

MIB = 2**20
ROWS = [json.loads(line) for line in """
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 1, "prompt_len": 256, "completion_len": 512, "ok": true, "before_mib": 983.7470703125, "peak_alloc_step_mib": 1174.41943359375, "peak_reserved_step_mib": 1338.0, "device_used_mib_end": 2104.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 4, "prompt_len": 256, "completion_len": 1024, "ok": true, "before_mib": 1067.61474609375, "peak_alloc_step_mib": 1826.92138671875, "peak_reserved_step_mib": 2078.0, "device_used_mib_end": 2846.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 8, "prompt_len": 256, "completion_len": 1792, "ok": true, "before_mib": 1067.87255859375, "peak_alloc_step_mib": 3491.53173828125, "peak_reserved_step_mib": 3948.0, "device_used_mib_end": 4718.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 16, "prompt_len": 128, "completion_len": 896, "ok": true, "before_mib": 1067.87255859375, "peak_alloc_step_mib": 3491.27392578125, "peak_reserved_step_mib": 3948.0, "device_used_mib_end": 4718.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 2, "prompt_len": 512, "completion_len": 3584, "ok": true, "before_mib": 1067.68505859375, "peak_alloc_step_mib": 2280.28955078125, "peak_reserved_step_mib": 2666.0, "device_used_mib_end": 3436.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 1, "prompt_len": 256, "completion_len": 512, "ok": true, "before_mib": 1067.51513671875, "peak_alloc_step_mib": 2595.06005859375, "peak_reserved_step_mib": 2642.0, "device_used_mib_end": 3412.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 4, "prompt_len": 256, "completion_len": 1024, "ok": true, "before_mib": 1067.61474609375, "peak_alloc_step_mib": 11069.34423828125, "peak_reserved_step_mib": 11438.0, "device_used_mib_end": 12208.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 8, "prompt_len": 256, "completion_len": 1792, "ok": true, "before_mib": 1067.87255859375, "peak_alloc_step_mib": 32226.87451171875, "peak_reserved_step_mib": 33254.0, "device_used_mib_end": 34024.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 16, "prompt_len": 128, "completion_len": 896, "ok": true, "before_mib": 1067.87255859375, "peak_alloc_step_mib": 32226.62451171875, "peak_reserved_step_mib": 33254.0, "device_used_mib_end": 34024.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "Qwen/Qwen2.5-0.5B-Instruct", "weights": "bf16", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 2, "prompt_len": 512, "completion_len": 3584, "ok": true, "before_mib": 1067.68505859375, "peak_alloc_step_mib": 16776.51123046875, "peak_reserved_step_mib": 17434.0, "device_used_mib_end": 18204.8125, "weights_mib": 950.1669921875, "adapter_mib": 33.5625, "opt_state_mib": 86.4013671875}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 1, "prompt_len": 256, "completion_len": 512, "ok": true, "before_mib": 5664.58984375, "peak_alloc_step_mib": 6215.36181640625, "peak_reserved_step_mib": 6636.0, "device_used_mib_end": 7416.8125, "weights_mib": 5438.572265625, "adapter_mib": 160.0, "opt_state_mib": 93.2919921875}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 4, "prompt_len": 256, "completion_len": 1024, "ok": true, "before_mib": 5745.97314453125, "peak_alloc_step_mib": 8989.19384765625, "peak_reserved_step_mib": 9786.0, "device_used_mib_end": 10568.8125, "weights_mib": 5438.572265625, "adapter_mib": 160.0, "opt_state_mib": 93.2919921875}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 8, "prompt_len": 256, "completion_len": 1792, "ok": true, "before_mib": 5746.23095703125, "peak_alloc_step_mib": 16123.51513671875, "peak_reserved_step_mib": 17522.0, "device_used_mib_end": 18304.8125, "weights_mib": 5438.572265625, "adapter_mib": 160.0, "opt_state_mib": 93.2919921875}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 16, "prompt_len": 128, "completion_len": 896, "ok": true, "before_mib": 5746.23095703125, "peak_alloc_step_mib": 16123.00732421875, "peak_reserved_step_mib": 17522.0, "device_used_mib_end": 18304.8125, "weights_mib": 5438.572265625, "adapter_mib": 160.0, "opt_state_mib": 93.2919921875}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": true, "batch": 2, "prompt_len": 512, "completion_len": 3584, "ok": true, "before_mib": 5746.04345703125, "peak_alloc_step_mib": 10936.21044921875, "peak_reserved_step_mib": 11920.0, "device_used_mib_end": 12702.8125, "weights_mib": 5438.572265625, "adapter_mib": 160.0, "opt_state_mib": 93.2919921875}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 1, "prompt_len": 256, "completion_len": 512, "ok": true, "before_mib": 5745.87353515625, "peak_alloc_step_mib": 12844.99169921875, "peak_reserved_step_mib": 13340.0, "device_used_mib_end": 14122.8125, "weights_mib": 5438.572265625, "adapter_mib": 160.0, "opt_state_mib": 93.2919921875}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 4, "prompt_len": 256, "completion_len": 1024, "ok": true, "before_mib": 5745.97314453125, "peak_alloc_step_mib": 52437.92529296875, "peak_reserved_step_mib": 53298.0, "device_used_mib_end": 54080.8125, "weights_mib": 5438.572265625, "adapter_mib": 160.0, "opt_state_mib": 93.2919921875}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 8, "prompt_len": 256, "completion_len": 1792, "ok": false, "error": "OOM", "weights_mib": 5438.572265625, "adapter_mib": 160.0}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 16, "prompt_len": 128, "completion_len": 896, "ok": false, "error": "OOM", "weights_mib": 5438.572265625, "adapter_mib": 160.0}
{"stage": "step", "model": "meta-llama/Llama-3.1-8B-Instruct", "weights": "nf4", "mode": "lora", "rank": 16, "grad_ckpt": false, "batch": 2, "prompt_len": 512, "completion_len": 3584, "ok": false, "error": "OOM", "weights_mib": 5438.572265625, "adapter_mib": 160.0}
""".strip().splitlines()]
QWEN = [r for r in ROWS if r["model"] == "Qwen/Qwen2.5-0.5B-Instruct"]
LLAMA = [r for r in ROWS if r["model"] == "meta-llama/Llama-3.1-8B-Instruct"]


def test_least_squares_recovers_an_exact_line():
    assert least_squares([1, 2, 3, 4], [5, 7, 9, 11]) == pytest.approx((2.0, 3.0))


def test_least_squares_with_one_point_goes_through_the_origin():
    assert least_squares([4], [10]) == pytest.approx((2.5, 0.0))


def test_fit_line_can_forbid_a_negative_intercept():
    line = fit_line([1, 2, 3], [0.5, 2.0, 3.5], nonnegative_intercept=True)
    assert line.intercept == 0.0 and line.slope > 0


def test_first_step_of_a_model_is_left_out():
    # The first row's before_mib (983.7) lacks the optimizer state the later rows hold (1067.5+).
    steady, skipped = steady_rows(QWEN)
    assert skipped == 1
    assert all(r["before_mib"] > 1067 for r in steady)


def test_checkpointed_activation_is_linear_in_tokens():
    fit = fit_family(QWEN)
    line = fit.activation["gc"]
    # 4 steady rows, 5,120-16,384 tokens; the fit reproduces each within 0.1%.
    assert line.n == 4 and line.max_rel_residual < 0.001
    # 0.148 MiB per token: the L=24 bf16 layer inputs (43 KiB) plus one recomputed layer and the head.
    assert line.slope / MIB == pytest.approx(0.1478, rel=0.01)
    for r in QWEN:
        if r["grad_ckpt"] and r["before_mib"] > 1067:
            measured = (r["peak_alloc_step_mib"] - r["before_mib"]) * MIB
            assert line(row_tokens(r)) == pytest.approx(measured, rel=0.001)


def test_no_checkpointing_slope_is_much_larger():
    fit = fit_family(QWEN)
    assert fit.activation["no_gc"].slope > 10 * fit.activation["gc"].slope


def test_reserve_and_non_torch_are_fitted():
    fit = fit_family(QWEN)
    assert 0 < fit.reserve["gc"].slope < 0.5
    assert fit.reserve["gc"].intercept >= 0
    # device_used_mib_end - peak_reserved_step_mib: 768.8-770.8 MiB on the steady rows
    assert fit.non_torch_bytes == pytest.approx(770.8125 * MIB, abs=MIB)


def test_oom_rows_are_skipped_and_families_split():
    fits = fit_rows(ROWS)
    assert [(f.model, f.weights, f.lora_rank) for f in fits] == [
        ("Qwen/Qwen2.5-0.5B-Instruct", "bf16", 16), ("meta-llama/Llama-3.1-8B-Instruct", "nf4", 16)]
    llama = fits[1]
    assert llama.activation["no_gc"].n == 2  # 3 of 5 no-checkpointing shapes ran out of memory


def test_fit_round_trips_through_json():
    fit = fit_family(LLAMA)
    again = ModelFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert again == fit
    assert isinstance(again.activation["gc"], LinearFit)


def test_fit_family_rejects_mixed_rows():
    with pytest.raises(ValueError, match="rows of one family"):
        fit_family(ROWS)
