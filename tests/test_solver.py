"""The solver: every phase under the card less the margin, TRL's rules, the objective, and
a clear answer when nothing fits."""

import json
import time

import pytest

from planner import estimate, plan
from planner.cli import main
from planner.errors import InfeasibleError, InvalidSetupError

GIB = 1024**3


@pytest.fixture(scope="module")
def l4_plan():
    return plan("Qwen/Qwen2.5-3B-Instruct", "L4", max_completion_length=1024)


def test_every_phase_fits_under_the_margin(l4_plan):
    p = l4_plan
    budget = p.gpu.total_bytes * (1 - p.margin)
    for phase in p.training_rank.phases:
        assert phase.peak_bytes <= budget, phase.name
    assert p.headroom_bytes >= 0
    assert p.vllm.startup_ok


def test_trl_rules_hold(l4_plan):
    c = l4_plan.config
    assert c["num_generations"] >= 2
    assert c["generation_batch_size"] % c["num_generations"] == 0
    assert c["generation_batch_size"] == c["per_device_train_batch_size"] * c["gradient_accumulation_steps"]
    assert c["vllm_max_model_length"] == 256 + c["max_completion_length"]
    assert 0.3 <= c["vllm_gpu_memory_utilization"] <= 0.7
    assert c["use_vllm"] is True and c["vllm_mode"] == "colocate"


def test_requested_length_is_reached_and_the_wave_fits(l4_plan):
    c = l4_plan.config
    assert c["max_completion_length"] == 1024
    completions = c["generation_batch_size"]
    assert l4_plan.waves == 1
    assert completions <= l4_plan.vllm.max_concurrency


def test_objective_and_reasons_are_stated(l4_plan):
    d = l4_plan.to_dict()
    assert d["objective"][0] == "reach the requested completion length"
    assert any("vllm_gpu_memory_utilization" in r for r in d["reasons"])


def test_a_bigger_card_gives_at_least_as_much(l4_plan):
    big = plan("Qwen/Qwen2.5-3B-Instruct", "H100-80GB", max_completion_length=1024)
    small_n = l4_plan.config["generation_batch_size"]
    big_n = big.config["generation_batch_size"]
    assert big_n >= small_n


def test_fixed_generations_and_utilization_range_are_honoured():
    p = plan("Qwen/Qwen2.5-1.5B-Instruct", "A100-40GB", num_generations=4, utilization_range=(0.4, 0.45),
             max_completion_length=512, sleep_mode="off")
    assert p.config["num_generations"] == 4
    assert 0.4 <= p.config["vllm_gpu_memory_utilization"] <= 0.45
    assert p.config["vllm_enable_sleep_mode"] is False


def test_too_long_a_target_is_shortened_with_a_reason():
    p = plan("meta-llama/Llama-3.1-8B-Instruct", "RTX-4090", weights="nf4", max_completion_length=16384,
             sleep_mode="off")
    assert p.config["max_completion_length"] < 16384
    assert p.reasons[0].startswith("completion length cut to")


def test_nothing_fits_names_the_term_and_the_closest_plan():
    with pytest.raises(InfeasibleError, match=r"vLLM cannot start beside the trainer's .* closest plan that fits: "
                                              r"4-bit weights \(weights='nf4'\)") as info:
        plan("meta-llama/Llama-3.1-8B-Instruct", "L4", max_completion_length=2048)
    assert info.value.closest is not None and info.value.closest.config["max_completion_length"] == 2048


def test_a_model_bigger_than_the_card():
    with pytest.raises(InfeasibleError, match=r"^no configuration fits: the trainer alone needs .* \(largest term: "
                                              r"weights .*L4 allows"):
        plan("meta-llama/Llama-3.3-70B-Instruct", "L4")


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_generations=1), r"^num_generations must be at least 2"),
    (dict(utilization_range=(0.8, 0.3)), r"^utilization_range must satisfy 0 < LO <= HI <= 1, got 0.8,0.3"),
    (dict(margin=0.7), r"^margin must be in \[0, 0.5\), got 0.7"),
    (dict(max_completion_length=40000), r"exceeds Qwen/Qwen2.5-0.5B-Instruct's context of 32768 tokens"),
    (dict(weights="int8"), r"^weights='int8' cannot be colocated with vLLM"),
])
def test_bad_targets(kwargs, message):
    with pytest.raises(InvalidSetupError, match=message):
        plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", **kwargs)


def test_plan_answers_in_well_under_a_second():
    t0 = time.perf_counter()
    plan("Qwen/Qwen2.5-7B-Instruct", "A100-80GB", max_completion_length=2048)
    assert time.perf_counter() - t0 < 1.0


def test_done_when_cli_json(capsys, tmp_path):
    argv = ["--model", "Qwen/Qwen2.5-3B-Instruct", "--gpu", "L4", "--max-completion-length", "1024", "--json",
            "--output", str(tmp_path / "grpo.yaml"), "--plot", str(tmp_path / "memory.png")]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("config", "phases", "headroom_bytes", "checks"):
        assert key in d
    for phase in ("load", "weight_sync", "generation", "training"):
        assert d["phases"][phase]["peak_bytes"] > 0
    assert (tmp_path / "grpo.yaml").stat().st_size > 0
    assert (tmp_path / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_auto_without_a_driver_is_one_line(capsys):
    assert main(["--model", "Qwen/Qwen2.5-0.5B-Instruct"]) == 2  # --gpu defaults to auto
    err = capsys.readouterr().err
    assert err.startswith("plan: error: no NVIDIA GPU found") and err.count("\n") == 1


def test_infeasible_cli_is_one_line(capsys):
    assert main(["--model", "meta-llama/Llama-3.3-70B-Instruct", "--gpu", "L4"]) == 3  # nothing fits: exit 3
    err = capsys.readouterr().err
    assert err.startswith("plan: error: no configuration fits:") and err.count("\n") == 1


# -- the colocated estimate (issue 3, item 5) --------------------------------------------------

def test_colocated_estimate_reports_both_phases_with_and_without_sleep():
    e = estimate("meta-llama/Llama-3.1-8B-Instruct", "H100-80GB", batch_size=4, vllm_gpu_memory_utilization=0.5,
                 vllm_max_model_len=4096)
    d = e.to_dict()
    ph = d["phases"]
    assert ph["generation"]["peak_bytes"] > 0 and ph["training"]["peak_bytes"] > 0
    # without sleep: training holds the whole vLLM share on top of the trainer's step peak
    assert ph["without_sleep_mode"]["training"]["peak_bytes"] >= e.trainer.peak_bytes + d["vllm"]["budget_bytes"]
    # with sleep: training holds far less
    assert ph["with_sleep_mode"]["training"]["peak_bytes"] < ph["without_sleep_mode"]["training"]["peak_bytes"] - 30 * GIB
    assert d["vllm"]["startup_ok"] is True and d["vllm"]["kv_cache_tokens"] > 100_000


def test_vllm_refuses_to_start_beside_a_big_trainer():
    e = estimate("Qwen/Qwen2.5-7B-Instruct", "L4", vllm_gpu_memory_utilization=0.5, vllm_max_model_len=2048)
    assert e.vllm.startup_ok is False
    assert e.fits is False
    assert e.vllm.errors[0].startswith("Free memory on device")
