"""The trainer model (fitted on data/calibration only) against held-out H100 measurements:
models, LoRA ranks, shapes, full fine-tuning and ``expandable_segments`` the fit never saw
(benchmarks/results/h100_heldout, measured by benchmarks/gpu_heldout.sh, one fresh process per model).
HELD-OUT accuracy, with one caveat stated in the README's accuracy table: these steps were seen before the
model's last fix. The fit-set errors are tests/test_fit_set_accuracy.py; the leave-one-model-family-out
held-out errors of the same constants are benchmarks/heldout_fits.py (tests/test_heldout_fits.py).
"""

import pytest
from calibration_data import HELDOUT_DIR, evaluate_heldout, predict_step

MIB = 1024**2


@pytest.fixture(scope="module")
def result():
    return evaluate_heldout()


def test_the_held_out_data_is_what_was_measured(result):
    assert len(result["ran"]) == 77 and len(result["oom"]) == 3
    models = {r["model"] for r, *_ in result["ran"]}
    assert {"Qwen/Qwen3-0.6B", "meta-llama/Llama-3.2-3B-Instruct", "microsoft/Phi-4-mini-instruct",
            "google/gemma-2-2b-it", "mistralai/Mistral-7B-Instruct-v0.3"} <= models
    assert (HELDOUT_DIR / "env.txt").read_text().startswith("NVIDIA H100 80GB HBM3")


def test_median_error_against_the_device_level_peak_at_most_3_percent(result):
    assert result["median_abs_error"] <= 0.03


def test_never_under_predicts_by_more_than_3_percent(result):
    assert result["worst_under"] >= -0.03


def test_oom_rows_are_predicted_above_the_card(result):
    assert result["oom_predicted_above_card"]


def test_rows_with_a_peak_above_8_gib_are_within_8_percent(result):
    # below that the allocator's few hundred MiB of history dominate (see heldout_accuracy.py)
    # (and a model's first step creates the optimizer state after backward: a lower peak than the
    # steps after it, which is what the planner predicts)
    big = [e for r, _, e, _ in result["ran"] if r["device_used_mib_end"] > 8192 and not r["first_step"]]
    assert len(big) >= 45
    assert max(abs(e) for e in big) <= 0.08


def test_expandable_segments_rows_never_under_predicted_and_within_2_5_percent(result):
    # the expandable fractions are derived from the allocator's rules replayed on the calibration streams
    # (planner/memory/allocator.py), safety first; these 10 steps measured with the setting score them
    # (before: -0.72%..+1.04%; benchmarks/results/reserve_by_moment.txt)
    errs = [e for r, _, e, _ in result["ran"] if r.get("expandable_segments")]
    assert len(errs) == 10
    assert min(errs) >= 0
    assert max(errs) <= 0.025


def test_gemma2_measured_with_transformers_5_17_ran_sdpa(result):
    rows = [r for r, *_ in result["ran"] if r["model"] == "google/gemma-2-2b-it" and not r["grad_ckpt"]]
    longest = max(rows, key=lambda r: r["batch"] * (r["prompt_len"] + r["completion_len"]))
    assert longest["transformers"] == "5.17.0"
    assert abs(predict_step(longest) / MIB - longest["device_used_mib_end"]) / longest["device_used_mib_end"] < 0.03
    eager = predict_step({**longest, "transformers": "5.24.0"})
    assert eager > 2 * longest["device_used_mib_end"] * MIB
