"""The default margin follows the memory model (planner/search/margins.py, MEMORY_MODEL_MARGIN): the
calibrated band when a calibration profile covers the setup, the wider analytic band otherwise; a
user's margin wins; what the measurements do not cover adds on top. Plans say which and why."""

import json

import pytest

import planner
from planner.cli import main
from planner.search.margins import MEMORY_MODEL_MARGIN, UNMEASURED_OPTIMIZER_MARGIN

CALIBRATED, ANALYTIC = MEMORY_MODEL_MARGIN["calibrated"], MEMORY_MODEL_MARGIN["analytic"]
MODEL7 = "Qwen/Qwen2.5-7B-Instruct"


@pytest.fixture(autouse=True)
def shipped_profiles_only(tmp_path, monkeypatch):
    # a profile in the user's cache would change which plans are calibrated
    monkeypatch.setenv("PLANNER_CALIBRATION_DIR", str(tmp_path / "no-profiles"))


def test_a_calibrated_plan_gets_the_calibrated_band():
    p = planner.plan(MODEL7, "H100-80GB", optim="adamw_8bit")
    assert p.memory_model.startswith("calibrated (H100-80GB")
    assert p.margin == CALIBRATED
    assert p.assumptions["margin"] == {
        "value": CALIBRATED, "source": "memory model", "memory_model": "calibrated", "base": CALIBRATED,
        "unmodelled": 0.0, "note": "the calibrated memory model's measured error band (planner/search/margins.py)"}
    assert p.budget_bytes == int(p.gpu.total_bytes * (1 - CALIBRATED)) - (p.gpu.total_bytes - p.gpu.usable_bytes)


def test_an_analytic_plan_gets_the_wider_analytic_band():
    # the same model on a card no profile was measured on
    p = planner.plan(MODEL7, "A100-80GB", optim="adamw_8bit")
    assert p.memory_model == "analytic" and p.margin == ANALYTIC > CALIBRATED
    assert p.assumptions["margin"]["source"] == "memory model"
    assert p.assumptions["margin"]["memory_model"] == "analytic"


def test_the_narrower_band_buys_a_larger_plan_on_the_same_card():
    auto = planner.plan(MODEL7, "H100-80GB", optim="adamw_8bit")
    old = planner.plan(MODEL7, "H100-80GB", optim="adamw_8bit", margin=0.05)
    assert auto.budget_bytes > old.budget_bytes
    assert auto.peak_bytes <= auto.budget_bytes and old.peak_bytes <= old.budget_bytes


@pytest.mark.parametrize("model,gpu,options,kind", [
    (MODEL7, "H100-80GB", {}, "calibrated"),
    (MODEL7, "H100-80GB", dict(gradient_checkpointing=False, max_completion_length=256), "calibrated"),
    ("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB", dict(finetune="full"), "calibrated"),
    ("meta-llama/Llama-3.1-8B-Instruct", "H100-80GB", dict(weights="nf4"), "calibrated"),
    ("meta-llama/Llama-3.1-8B-Instruct", "H100-80GB", {}, "analytic"),    # bf16: only nf4 was measured
    (MODEL7, "H100-80GB", dict(lora_rank=64), "analytic"),                 # outside the measured ranks
    (MODEL7, "H100-80GB", dict(pin={"lora_r": 64}), "analytic"),           # the same rank, pinned
    ("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB", dict(logprob_head="plain"), "analytic"),  # fused head measured
    (MODEL7, "H100-80GB", dict(calibration=None), "analytic"),              # calibration switched off
    (MODEL7, "L4", dict(weights="nf4", max_completion_length=512), "analytic"),
    (MODEL7, "H100-80GB", dict(num_gpus=2), "calibrated"),
])
def test_the_band_chosen_before_solving_is_the_memory_model_the_plan_used(model, gpu, options, kind):
    p = planner.plan(model, gpu, optim="adamw_8bit", **options)
    assert p.memory_model.split(" ")[0] == kind
    assert p.assumptions["margin"]["memory_model"] == kind
    assert p.assumptions["margin"]["base"] == MEMORY_MODEL_MARGIN[kind]  # the plain head adds to it (coverage)


def test_a_given_margin_overrides_the_band():
    for margin in (0.0, 0.05, 0.2):
        p = planner.plan(MODEL7, "H100-80GB", optim="adamw_8bit", margin=margin)
        assert p.margin == margin
        a = p.assumptions["margin"]
        assert (a["value"], a["source"], a["memory_model"], a["base"]) == (margin, "option", "calibrated", margin)
    # None is the default: the band
    assert planner.plan(MODEL7, "H100-80GB", optim="adamw_8bit", margin=None).margin == CALIBRATED


def test_unmodelled_setups_add_to_the_band_and_to_a_given_margin():
    auto = planner.plan(MODEL7, "H100-80GB", optim="adamw_torch")
    assert auto.margin == round(CALIBRATED + UNMEASURED_OPTIMIZER_MARGIN, 4)
    a = auto.assumptions["margin"]
    assert (a["base"], a["unmodelled"], a["source"]) == (CALIBRATED, UNMEASURED_OPTIMIZER_MARGIN, "memory model")
    assert "+3% for what the measurements do not cover" in a["note"]
    given = planner.plan(MODEL7, "H100-80GB", optim="adamw_torch", margin=0.1)
    assert given.margin == round(0.1 + UNMEASURED_OPTIMIZER_MARGIN, 4)
    assert given.assumptions["margin"]["source"] == "option"


def test_a_pinned_optimizer_counts_for_the_unmodelled_margin(capsys):
    # --optim is a pin on the command line (and optim in a --config file): it must grow the margin as
    # the Python option does (it did not: the coverage rules read the unpinned optimizer)
    model = "Qwen/Qwen2.5-3B-Instruct"
    as_option = planner.plan(model, "L4", optim="adamw_torch", max_completion_length=512)
    as_pin = planner.plan(model, "L4", pin={"optim": "adamw_torch"}, max_completion_length=512)
    assert as_pin.margin == as_option.margin == round(ANALYTIC + UNMEASURED_OPTIMIZER_MARGIN, 4)
    assert main(["--model", model, "--gpu", "L4", "--optim", "adamw_torch", "--max-completion-length", "512",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["margin"] == as_option.margin


def test_the_table_header_says_the_margin_and_where_it_came_from(capsys):
    assert main(["--model", MODEL7, "--gpu", "H100-80GB", "--optim", "adamw_8bit"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith(f"{MODEL7} on H100-80GB (79.18 GiB); margin {CALIBRATED:.0%}, the calibrated model's "
                           f"error band; memory model: calibrated (H100-80GB")
    assert main(["--model", MODEL7, "--gpu", "H100-80GB", "--optim", "adamw_torch", "--margin", "0.05"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert "; margin 8%: 5% given (--margin) + 3% unmodelled; memory model: calibrated" in head
    assert main(["--model", MODEL7, "--gpu", "A100-80GB", "--optim", "adamw_8bit", "--num-gpus", "2"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert f"; margin {ANALYTIC:.0%}, the analytic model's error band; memory model: analytic" in head


def test_the_assumptions_table_lists_the_margin(capsys):
    assert main(["--model", MODEL7, "--gpu", "A100-80GB", "--optim", "adamw_8bit"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("margin ")]
    assert lines and lines[0][:4] == ["margin", f"{ANALYTIC}", "memory", "model"]


def test_margin_help_names_both_bands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (f"(default: from the memory model: {CALIBRATED:g} calibrated, {ANALYTIC:g} analytic, their measured "
            f"error bands;") in text


def test_a_fixed_multi_gpu_estimate_keeps_the_same_margin():
    d = planner.estimate_layout(MODEL7, "A100-80GB", 2, batch_size=2, optim="adamw_8bit")
    assert d.margin == ANALYTIC
