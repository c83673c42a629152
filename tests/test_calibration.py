"""Calibration profiles (planner/memory/calibration.py): lookup, version warnings, applying the terms."""

import json

import pytest

from planner.memory.calibration import (
    SCHEMA_VERSION,
    Calibration,
    apply_calibration,
    find_calibration,
    fingerprint,
    version_warnings,
)
from planner.memory.fit import LinearFit, ModelFit
from planner.memory.trainer import TrainerSetup
from planner.specs.gpu import resolve_gpu
from planner.specs.model import resolve_model

MIB = 2**20
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
VERSIONS = {"torch": "2.11.0+cu130", "transformers": "5.17.0", "peft": "0.21.0", "trl": "1.16.0",
            "bitsandbytes": "0.50.2"}


def _fit(rank=16, weights="bf16"):
    # Coefficients of the same order as the Qwen2.5-0.5B H100 fit (tests/test_profiler_fit.py).
    return ModelFit(model=QWEN, weights=weights, finetune="lora", lora_rank=rank,
                    activation={"gc": LinearFit(154_945.0, 2.5 * MIB, 4, 5120, 16384, 0.0004),
                                "no_gc": LinearFit(1_984_041.0, 182.7 * MIB, 5, 768, 16384, 0.07)},
                    reserve={"gc": LinearFit(0.106, 207.4 * MIB, 4, 0, 0, 0.15)},
                    non_torch_bytes=int(770.8125 * MIB))


def _write(folder, spec, fits, gpu_name="H100-80GB", device_name="NVIDIA H100 80GB HBM3", versions=VERSIONS,
           name="profile.json"):
    folder.mkdir(parents=True, exist_ok=True)
    profile = {"schema": SCHEMA_VERSION, "created": "2026-11-26T00:00:00+00:00",
               "gpu": {"name": gpu_name, "device_name": device_name, "total_bytes": 81079 * MIB, "driver": ""},
               "versions": versions,
               "models": [{"model_id": spec.model_id, "fingerprint": fingerprint(spec),
                           "fits": [f.to_dict() for f in fits], "rows": []}]}
    path = folder / name
    path.write_text(json.dumps(profile))
    return path


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_CALIBRATION_DIR", str(tmp_path / "cal"))
    _write(tmp_path / "cal", resolve_model(QWEN), [_fit()])
    return tmp_path / "cal"


def test_profile_is_found_for_its_model_and_gpu(store):
    cal = find_calibration(resolve_model(QWEN), resolve_gpu("H100-80GB"), versions=VERSIONS)
    assert isinstance(cal, Calibration)
    assert cal.label == "calibrated (H100-80GB, trl 1.16.0, torch 2.11.0)"
    assert cal.warnings == ()
    assert cal.path.endswith("profile.json")


def test_other_gpu_or_model_finds_nothing(store):
    assert find_calibration(resolve_model(QWEN), resolve_gpu("L4"), versions=VERSIONS) is None
    assert find_calibration(resolve_model("Qwen/Qwen2.5-14B-Instruct"), resolve_gpu("H100-80GB"),
                            versions=VERSIONS) is None


def test_a_finetune_uses_its_base_architecture_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_CALIBRATION_DIR", str(tmp_path))
    _write(tmp_path, resolve_model("Qwen/Qwen2.5-1.5B-Instruct"), [_fit()])
    distill = resolve_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")  # same Qwen2 1.5B architecture
    assert find_calibration(distill, resolve_gpu("H100-80GB"), versions=VERSIONS) is not None


def test_version_difference_is_a_warning(store):
    cal = find_calibration(resolve_model(QWEN), resolve_gpu("H100-80GB"), versions={**VERSIONS, "trl": "1.17.0"})
    assert cal.warnings == ("calibration measured with trl 1.16.0, installed trl 1.17.0: activation memory may "
                            "differ; re-run `plan profile --gpu auto`",)


def test_patch_releases_and_missing_packages_do_not_warn():
    assert version_warnings(VERSIONS, {"torch": "2.11.3", "trl": "1.16.1"}) == []
    assert version_warnings(VERSIONS, {}) == []


def test_files_that_are_not_profiles_are_skipped(store):
    (store / "broken.json").write_text("{not json")
    (store / "other.json").write_text(json.dumps({"schema": 99, "models": []}))
    assert find_calibration(resolve_model(QWEN), resolve_gpu("H100-80GB"), versions=VERSIONS) is not None


def test_activation_bytes_follow_the_fitted_line():
    cal = Calibration(model_id=QWEN, gpu_name="H100-80GB", versions=VERSIONS, fits=(_fit(),))
    assert cal.activation_bytes(True, 8 * 2048) == round(154_945.0 * 16384 + 2.5 * MIB)
    assert cal.activation_bytes(False, 768) > cal.activation_bytes(True, 768)
    assert cal.activation_bytes(True, 768, weights="nf4") is None


def _components():
    return {"non_torch": 800 * MIB, "weights": 942 * MIB, "adapters": 34 * MIB, "optimizer_state": 26 * MIB,
            "gradients": 34 * MIB, "activations": 2000 * MIB, "logprob_head": 300 * MIB,
            "allocator_reserve": 500 * MIB}


def test_apply_replaces_the_calibrated_terms_only():
    cal = Calibration(model_id=QWEN, gpu_name="H100-80GB", versions=VERSIONS, fits=(_fit(),))
    setup = TrainerSetup(batch_size=8, prompt_length=256, completion_length=1792)
    before = _components()
    after, label, warnings = apply_calibration(before, cal, setup)
    activation = round(154_945.0 * 16384 + 2.5 * MIB)
    assert label == "calibrated (H100-80GB, trl 1.16.0, torch 2.11.0)" and warnings == []
    assert after["activations"] + after["gradients"] + after["logprob_head"] == activation
    assert after["allocator_reserve"] == round(0.106 * activation + 207.4 * MIB)
    assert after["non_torch"] == int(770.8125 * MIB)
    for kept in ("weights", "adapters", "optimizer_state", "gradients"):
        assert after[kept] == before[kept]
    assert before == _components()  # the caller's dict is not changed


def test_apply_leaves_other_families_alone():
    cal = Calibration(model_id=QWEN, gpu_name="H100-80GB", versions=VERSIONS, fits=(_fit(rank=16),))
    for setup, why in ((TrainerSetup(lora_rank=64), "not bf16/lora r64"),
                       (TrainerSetup(weights="nf4"), "not nf4/lora r16"),
                       (TrainerSetup(finetune="full"), "not bf16/full")):
        after, label, warnings = apply_calibration(_components(), cal, setup)
        assert after == _components() and label is None
        assert why in warnings[-1] and warnings[-1].endswith("analytic terms kept")


def test_apply_keeps_the_analytic_reserve_with_expandable_segments():
    cal = Calibration(model_id=QWEN, gpu_name="H100-80GB", versions=VERSIONS, fits=(_fit(),))
    after, label, warnings = apply_calibration(_components(), cal, TrainerSetup(expandable_segments=True))
    assert label is not None and after["allocator_reserve"] == 500 * MIB
    assert "without expandable_segments" in warnings[0]


def test_apply_warns_when_extrapolating():
    cal = Calibration(model_id=QWEN, gpu_name="H100-80GB", versions=VERSIONS, fits=(_fit(),))
    _, label, warnings = apply_calibration(_components(), cal, TrainerSetup(batch_size=16, completion_length=8192))
    assert label is not None and "extrapolated" in warnings[0]


def test_estimate_uses_a_matching_profile(store):
    from planner.search.estimation import estimate

    e = estimate(model=QWEN, gpu="H100-80GB", batch_size=8, prompt_length=256, completion_length=1792)
    assert e.memory_model.startswith("calibrated (H100-80GB, trl 1.16.0, torch 2.11.0)")


def test_shipped_h100_profiles_are_used_and_named():
    """profiles/calibration ships fits of the H100 measurements (benchmarks/build_shipped_calibration.py)."""
    from planner import estimate

    shape = dict(batch_size=8, prompt_length=256, completion_length=1792)
    e = estimate("Qwen/Qwen2.5-7B-Instruct", "H100-80GB", **shape, completion_lengths="fixed")
    assert e.memory_model.startswith("calibrated (H100-80GB, trl 1.16.0, torch 2.11.0")
    # one isolated step, the measured row: 26,480 MiB reserved + 782.8 MiB non-PyTorch
    assert abs(e.trainer.peak_bytes / 2**20 - 27_262.8) / 27_262.8 < 0.02
    # a run with varied lengths and 4 accumulation steps holds more: its measured device-level peak
    # was 29,565 MiB (benchmarks/results/h100_run_peak); the profile's reserve is raised to the run's
    run = estimate("Qwen/Qwen2.5-7B-Instruct", "H100-80GB", **shape, gradient_accumulation_steps=4)
    assert abs(run.trainer.peak_bytes / 2**20 - 29_565) / 29_565 < 0.03
    assert estimate("Qwen/Qwen2.5-7B-Instruct", "L4").memory_model == "analytic"
