"""Pre-flight checks (planner/checks/preflight.py) on small hand-made plans, and `plan check`.

Plans are built from ``planner.estimate_layout`` (one fixed setup, no solver) so that each test
controls the config it checks. Installed packages are faked through ``checks._installed``.
"""

from dataclasses import replace

import pytest
from plans import fixed_plan

import planner
from planner.checks import preflight as checks
from planner.checks.preflight import Check, CheckReport, preflight
from planner.cli import main
from planner.errors import PreflightError
from planner.search.results import Plan
from planner.specs.gpu import resolve_gpu

GIB = 1024**3
# a training machine with everything TRL 1.16 wants (its vLLM range is 0.22.0-0.31.0)
GOOD_ENV = {"trl": "1.16.0", "vllm": "0.30.0", "bitsandbytes": "0.48.1", "peft": "0.21.0"}


def make_plan(gpu="L4", **kw) -> Plan:
    return fixed_plan(gpu, **kw)


@pytest.fixture
def env(monkeypatch):
    """Fake the installed packages: ``env({"trl": "1.9.0", ...})``; absent names are not installed."""
    def set_env(packages):
        monkeypatch.setattr(checks, "_installed", lambda dist: packages.get(dist))
    set_env(GOOD_ENV)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    return set_env


def by_id(report: CheckReport, check_id: str) -> Check:
    found = [c for c in report.checks if c.id == check_id]
    assert len(found) == 1, f"expected one {check_id} check, got {found}"
    return found[0]


# -- the report -------------------------------------------------------------------------------

def test_check_to_dict():
    c = Check("gpu-bf16", "error", "no bf16", "set bf16=False")
    assert c.to_dict() == {"id": "gpu-bf16", "severity": "error", "message": "no bf16", "fix": "set bf16=False"}


def test_raise_for_errors_names_every_failed_check_on_one_line():
    report = CheckReport(checks=(Check("a-check", "error", "first broke", "do x"), Check("b-check", "warning", "meh"),
                                 Check("c-check", "error", "second broke", "do y")))
    assert not report.ok
    with pytest.raises(PreflightError, match=r"^2 pre-flight checks failed: a-check: first broke \(fix: do x\); "
                                             r"c-check: second broke \(fix: do y\)$") as info:
        report.raise_for_errors()
    assert [c.id for c in info.value.checks] == ["a-check", "c-check"]


def test_good_plan_on_a_good_machine_passes(env):
    report = preflight(make_plan())
    assert report.ok and not report.warnings, [str(c) for c in report.checks if c.severity != "info"]
    assert report.to_dict()["errors"] == 0
    report.raise_for_errors()  # no exception


def test_preflight_accepts_plan_kwargs(env):
    report = planner.preflight(dict(model="Qwen/Qwen2.5-0.5B-Instruct", gpu="L4", max_completion_length=256))
    assert by_id(report, "trl-generation-batch").severity == "info"


# -- TRL's validation rules -------------------------------------------------------------------

def test_generation_batch_not_divisible_by_num_generations(env):
    c = by_id(preflight(make_plan(B=3, S=1, G=8)), "trl-generation-batch")
    assert c.severity == "error"
    assert c.message == "generation_batch_size (3) must be divisible by num_generations (8)."
    assert "steps_per_generation=8" in c.fix


def test_num_generations_below_two(env):
    c = by_id(preflight(make_plan(B=1, S=1, G=1)), "trl-num-generations")
    assert c.message == ("GRPO requires at least 2 generations per prompt to calculate the advantages. "
                         "You provided 1, which is less than the minimum required.")


def test_generation_batch_size_and_steps_per_generation_together(env):
    c = by_id(preflight(make_plan(generation_batch_size=16)), "trl-generation-batch")
    assert c.message == "'generation_batch_size' and 'steps_per_generation' can not be both configured at the same time"


def test_explicit_generation_batch_size_must_divide_by_global_batch(env):
    c = by_id(preflight(make_plan(B=4, generation_batch_size=18, steps_per_generation=None)), "trl-generation-batch")
    assert c.message == "generation_batch_size (18) must be divisible by the global batch size (4)."


def test_eval_batch_rule_only_when_evaluating(env):
    assert not [c for c in preflight(make_plan()).checks if c.id == "trl-eval-batch"]
    c = by_id(preflight(make_plan(eval_strategy="steps", per_device_eval_batch_size=4)), "trl-eval-batch")
    assert c.message == ("The global eval batch size (4 * 1) must be divisible by the number of generations used "
                         "for evaluation (8).")


def test_tensor_parallel_must_divide_world_size(env):
    p = make_plan(vllm_tensor_parallel_size=2)
    c = by_id(preflight(p), "vllm-tensor-parallel")
    assert c.message == "tensor_parallel_size (2) must divide world size (1) evenly."
    p2 = replace(p, setup=replace(p.setup, world_size=2))
    assert not [c for c in preflight(p2).checks if c.id == "vllm-tensor-parallel"]


# -- lengths and allocator --------------------------------------------------------------------

def test_vllm_max_model_length_shorter_than_prompt_plus_completion(env):
    c = by_id(preflight(make_plan(vllm_max_model_length=300)), "context-length")
    assert c.severity == "error"
    assert c.message.startswith("vllm_max_model_length 300 is shorter than prompt + completion (128 + 256 = 384)")


def test_vllm_max_model_length_unset_is_a_warning(env):
    c = by_id(preflight(make_plan(vllm_max_model_length=None)), "context-length")
    assert c.severity == "warning" and "32768" in c.message


def test_completion_beyond_the_model_context(env):
    c = by_id(preflight(make_plan(max_completion_length=40000)), "context-length")
    assert c.message == ("prompt + completion (128 + 40000 = 40128 tokens) exceeds Qwen/Qwen2.5-0.5B-Instruct's "
                         "context of 32768 tokens")


def test_expandable_segments_with_sleep_mode(env, monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    c = by_id(preflight(make_plan(sleep=True)), "alloc-conf-sleep-mode")
    assert c.severity == "error"
    assert "Expandable segments are not compatible with memory pool." in c.message
    assert not [c for c in preflight(make_plan(sleep=False)).checks if c.id == "alloc-conf-sleep-mode"]


# -- the card ---------------------------------------------------------------------------------

def test_bf16_on_a_card_without_it(env):
    c = by_id(preflight(make_plan("T4", weights="fp16", bf16=True)), "gpu-bf16")
    assert (c.severity, c.message) == ("error", "T4 has no bf16 support but the config sets bf16=True")
    assert by_id(preflight(make_plan("T4", weights="fp16")), "gpu-bf16").severity == "info"


def test_free_memory_taken_by_other_processes(env):
    p = make_plan()
    live = replace(p.gpu, free_bytes=12 * GIB, other_process_bytes=10 * GIB)
    report = preflight(p, live_gpu=live)
    c = by_id(report, "gpu-free-memory")
    assert c.severity == "error"
    assert c.message.startswith("12.00 GiB free on L4 now (10.00 GiB held by other processes), but the plan peaks at")
    startup = by_id(report, "vllm-startup-memory")
    assert startup.severity == "error"
    assert "on startup is less than desired GPU memory utilization (0.5, 11.02 GiB)" in startup.message
    assert report.for_training  # a live card means this machine trains


def test_free_memory_enough(env):
    p = make_plan()
    report = preflight(p, live_gpu=replace(p.gpu, free_bytes=p.gpu.total_bytes))
    assert by_id(report, "gpu-free-memory").severity == "info"
    assert by_id(report, "vllm-startup-memory").severity == "info"


def test_no_live_reading_is_info(env):
    c = by_id(preflight(make_plan()), "gpu-free-memory")
    assert c.severity == "info" and "run `plan check --gpu auto`" in c.fix


def test_plan_for_another_card(env):
    p = make_plan()
    live = replace(resolve_gpu("A100-80GB"), free_bytes=resolve_gpu("A100-80GB").total_bytes)
    c = by_id(preflight(p, live_gpu=live), "gpu-match")
    assert c.severity == "warning" and c.message.startswith("the plan is for L4 (22.05 GiB) but this card is A100-80GB")


# -- installed packages -----------------------------------------------------------------------

def test_missing_packages_are_warnings_when_only_planning(env):
    env({})
    report = preflight(make_plan())
    assert report.ok
    assert {c.id for c in report.warnings} == {"trl-installed", "peft-installed", "vllm-installed",
                                              "bitsandbytes-optimizer"}


def test_missing_packages_are_errors_for_training(env):
    env({})
    report = preflight(make_plan(), for_training=True)
    with pytest.raises(PreflightError, match=r"^4 pre-flight checks failed: trl-installed: TRL is not installed"):
        report.raise_for_errors()


def test_trl_without_colocate(env):
    env({**GOOD_ENV, "trl": "0.17.0"})
    c = by_id(preflight(make_plan(), for_training=True), "trl-colocate-version")
    assert c.message == "TRL 0.17.0 has no colocated vLLM (vllm_mode='colocate' needs TRL >= 0.18.0)"


def test_trl_without_sleep_mode(env):
    env({**GOOD_ENV, "trl": "0.22.0"})
    c = by_id(preflight(make_plan(sleep=True), for_training=True), "trl-sleep-mode-version")
    assert (c.severity, c.message) == ("error", "TRL 0.22.0 has no vllm_enable_sleep_mode (needs TRL >= 0.23.0)")


def test_trl_with_broken_sleep_mode_sync(env):
    env({**GOOD_ENV, "trl": "1.9.0"})
    c = by_id(preflight(make_plan(sleep=True)), "trl-sleep-mode-sync")
    assert c.severity == "warning"  # planning only
    assert c.message == ("TRL 1.9.0: colocated sleep mode generates from the checkpoint on disk, not the trained "
                         "weights (trl#5312, fixed in 1.10.0)")
    assert c.fix.startswith("pip install -U 'trl>=1.10.0'")


def test_vllm_outside_the_range_trl_supports(env):
    env({**GOOD_ENV, "vllm": "0.33.0"})
    c = by_id(preflight(make_plan(), for_training=True), "vllm-version-range")
    assert c.severity == "error"
    assert c.message.startswith("vLLM 0.33.0 is outside 0.22.0-0.31.0, the range TRL 1.16.0 supports")
    assert c.fix == "pip install 'vllm>=0.22.0,<=0.31.0'"


def test_int8_weights_with_vllm(env):
    c = by_id(preflight(make_plan(weights="int8")), "vllm-8bit-weights")
    assert c.severity == "error" and "'vLLM does not support in-flight 8-bit quantization.'" in c.message


def test_nf4_needs_a_vllm_with_bitsandbytes(env):
    env({**GOOD_ENV, "vllm": "0.28.0"})
    c = by_id(preflight(make_plan(weights="nf4"), for_training=True), "vllm-bitsandbytes")
    assert c.severity == "error"
    assert c.message.startswith("vLLM 0.28.0 has no quantization='bitsandbytes' (removed in 0.28.0)")
    env({**GOOD_ENV, "vllm": "0.27.0"})
    assert not [c for c in preflight(make_plan(weights="nf4")).checks if c.id == "vllm-bitsandbytes"]


def test_bitsandbytes_for_8bit_optimizer_and_4bit_weights(env):
    env({k: v for k, v in GOOD_ENV.items() if k != "bitsandbytes"})
    report = preflight(make_plan(weights="nf4", vllm_enable_sleep_mode=False), for_training=True)
    assert by_id(report, "bitsandbytes-optimizer").message == ("optim='adamw_8bit' needs bitsandbytes, which is "
                                                               "not installed")
    assert by_id(report, "bitsandbytes-weights").severity == "error"
    ok = preflight(make_plan(optim="adamw_torch"), for_training=True)
    assert not [c for c in ok.checks if c.id.startswith("bitsandbytes")]


def test_no_vllm_checks_without_vllm(env):
    env({})
    report = preflight(make_plan(use_vllm=False, optim="adamw_torch"), for_training=True)
    assert not [c for c in report.checks if c.id.startswith("vllm")]


# -- `plan check` -----------------------------------------------------------------------------

ARGS = ["check", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--max-completion-length", "256"]


def test_cli_check_passes(env, capsys):
    assert main(ARGS) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pre-flight checks for Qwen/Qwen2.5-0.5B-Instruct on L4 (batch ")
    assert out[-1] == "0 errors, 0 warnings"


def test_cli_check_for_training_fails_with_exit_1(env, capsys):
    env({})
    assert main(ARGS) == 0  # planning only: warnings
    capsys.readouterr()
    assert main(ARGS + ["--for-training", "--json"]) == 1
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["errors"] == 4
    assert {"id": "trl-installed", "severity": "error",
            "message": "TRL is not installed: GRPOTrainer and GRPOConfig are unavailable here",
            "fix": "pip install 'trl>=0.18.0' (or pip install 'grpo-vram-planner[train]')"} in report["checks"]


def test_cli_check_bad_input_exits_2(env, capsys):
    assert main(["check", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "nope-gpu"]) == 2
    assert capsys.readouterr().err.startswith("plan: error: unknown GPU 'nope-gpu'")


def test_a_report_is_iterable_sized_and_printable():
    import planner
    from planner.cli._common import check_lines

    report = planner.preflight(planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4"), live_gpu=False)
    ids = [c.id for c in report]
    assert ids == [c.id for c in report.checks] and len(report) == len(ids) > 0
    text = str(report)
    lines = text.splitlines()
    assert lines == check_lines(report)  # what `plan check` prints
    for c in report:  # one line per check: severity, id, message; a failed one's fix under it
        assert any(line.split()[:2] == [c.severity, c.id] and line.endswith(c.message) for line in lines)
    assert lines[-1] == f"{len(report.errors)} errors, {len(report.warnings)} warnings".replace(
        "1 errors", "1 error").replace(" 1 warnings", " 1 warning")
    fixed = [c for c in report if c.fix and c.severity != "info"]
    assert all(f"fix: {c.fix}" in text for c in fixed)
    empty = type(report)(checks=())
    assert len(empty) == 0 and list(empty) == [] and bool(empty) and str(empty) == "0 errors, 0 warnings"
